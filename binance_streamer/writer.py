"""The writer process: the only process that opens data files.

It receives batches of ready-made CSV lines from the workers and the
order-book manager, drops duplicates and notices holes (sequence.py),
buffers lines per file and appends them in one ``write`` per file per flush
(by row count, and at least every ``flush_interval``). A crash can at worst
leave a torn last line, which is cut off when the file is next opened. A
full disk or an I/O error is logged loudly and retried; the lines stay in
memory and nothing already written is touched.
"""

import csv
import errno
import logging
import os
import queue
import resource
import time

from . import csvfiles, proc
from .sequence import Sequencer, gap_row, id_step

log = logging.getLogger(__name__)

TRANSFER_ALLOWANCE = 0.1   # seconds a batch may take from a worker to the writer on a busy machine


def open_file_limit():
    """Data files the writer keeps open: every stream of every symbol when the
    process may open that many (the soft limit is raised to the hard one),
    else fewer, least recently used closed first."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = 65536 if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    except (ValueError, OSError):
        soft = 1024
    return max(64, min(soft - 128, 16384))


class OpenFile:
    __slots__ = ("fd", "path", "lines", "rows", "tail", "used", "dirty", "key", "due")

    def __init__(self, fd, path, key):
        self.fd, self.path, self.key = fd, path, key
        self.lines = []          # pending CSV lines
        self.rows = 0
        self.tail = b""          # bytes of a write that failed part-way
        self.used = time.monotonic()
        self.dirty = False       # written since the last fsync
        self.due = None          # monotonic time by which the pending lines must be written


def repair_torn_line(fd, path):
    """Cut an unfinished last line (a crash mid-write). Returns bytes removed."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            keep = start + nl + 1
            break
        pos = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    log.warning("%s: cut a torn last line (%d bytes) left by a crash", path, size - keep)
    return size - keep


def last_id(path, column, backfilled_column=None):
    """The largest id in ``column``: that of the last row that was not
    backfilled (backfilled rows can follow later rows), or None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            span = 65536
            while True:
                start = max(0, size - span)
                f.seek(start)
                lines = f.read(size - start).split(b"\n")
                body = lines[1:]            # the first piece is partial, or the header
                for line in reversed(body):
                    cells = line.split(b",")
                    if len(cells) <= column or not cells[column].lstrip(b"-").isdigit():
                        continue
                    if backfilled_column is not None and cells[backfilled_column] == b"1":
                        continue
                    return int(cells[column])
                if start == 0:
                    return None
                span *= 16
    except OSError:
        return None


class Writer:
    def __init__(self, cfg, request_backfill=None, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.request_backfill = request_backfill or (lambda *req: None)
        self.files = {}
        self.seq = Sequencer()
        self.stats = {}          # (symbol, stream) -> [rows, bytes, last day]
        self.flushes = 0
        self.flush_seconds_max = 0.0
        self.write_errors = 0
        self.torn_repaired = 0
        self.pending_rows = 0
        self.recovered = set()   # streams whose first rows after a restart are still to be checked
        self._last_fsync = time.monotonic()
        self.max_open = open_file_limit()
        # Rows reach the writer up to read_interval + batch_interval (and a
        # queue transfer) after they were sent; they wait here the rest of
        # flush_interval, so a row is on disk within about flush_interval.
        self.hold = max(0.0, cfg.flush_interval - cfg.batch_interval - cfg.read_interval - TRANSFER_ALLOWANCE)
        self.next_due = None     # the earliest OpenFile.due (or a retry time); None: nothing pending
        self._retry_at = 0.0
        self._error_logged = 0.0

    # -- start-up -------------------------------------------------------------
    def recover(self):
        """Learn the last id of every stream from the newest file on disk."""
        root = os.path.join(self.cfg.data_dir, self.cfg.market)
        newest = {}
        for symbol in self.cfg.symbols:
            folder = os.path.join(root, symbol)
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                parsed = csvfiles.parse_name(name)
                if parsed and parsed[0] == symbol:
                    key = (symbol, parsed[1])
                    if key not in newest or parsed[2] > newest[key][0]:
                        newest[key] = (parsed[2], os.path.join(folder, name))
        for (symbol, stream), (day, path) in newest.items():
            column = csvfiles.ID_COLUMN.get(csvfiles.stream_kind(stream))
            if column is None:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                self.torn_repaired += bool(repair_torn_line(fd, path))
            finally:
                os.close(fd)
            found = last_id(path, column, _backfilled_column(self.cfg.market, stream))
            if found is not None:
                self.seq.last[(symbol, stream)] = found
                self.recovered.add((symbol, stream))
        reopened = 0
        for (symbol, stream), (day, path) in newest.items():
            if stream == "gaps":
                reopened += self._reopen_holes(symbol, path)
        log.info("writer: recovered the last ids of %d streams; %d unfinished backfills asked for again",
                 len(self.seq.last), reopened)

    def _reopen_holes(self, symbol, path):
        """Backfills requested but never finished (the writer stopped first): ask again."""
        pending = {}
        with open(path, newline="") as f:
            for g in csv.DictReader(f):
                if not (g["last_good_id"].isdigit() and g["first_id_after"].isdigit()):
                    continue
                key = (g["stream"], int(g["last_good_id"]), int(g["first_id_after"]))
                if g["action"] == "backfill_requested":
                    pending[key] = True
                elif g["reason"] in ("hole filled", "backfill timeout"):
                    pending.pop(key, None)
        now = self.clock()
        for stream, last, first in pending:
            step = id_step(stream)
            if step is None:
                continue
            if self.seq.open_hole((symbol, stream), last + step, first - step, step, now):
                self.request_backfill(symbol, stream, last + step, first - step)
        return len(pending)

    # -- input -------------------------------------------------------------------
    def handle(self, msg):
        kind = msg[0]
        if kind == "rows":
            _, symbol, stream, day, ids, lines, backfilled = msg
            self.add_rows(symbol, stream, day, ids, lines, backfilled)
        elif kind == "gap":
            self.add_gap(msg[1], msg[2])
        else:
            log.error("writer: unknown message %r dropped", kind)

    def add_rows(self, symbol, stream, day, ids, lines, backfilled=False):
        if ids and self.recovered and (symbol, stream) in self.recovered:
            self.recovered.discard((symbol, stream))
            self._after_restart(symbol, stream, ids, lines)
        if ids:
            keep, gaps, requests = self.seq.accept(symbol, stream, ids, backfilled, self.clock())
            for gap in gaps:
                self._write_gap(symbol, gap)
            for req in requests:
                self.request_backfill(*req)
            if keep is not None:
                lines = [lines[i] for i in keep]
                if not lines:
                    return
        f = self._file(symbol, stream, day)
        if f.due is None:
            f.due = time.monotonic() + self.hold
            if self.next_due is None or f.due < self.next_due:
                self.next_due = f.due
        f.lines.extend(lines)
        f.rows += len(lines)
        self.pending_rows += len(lines)
        if f.rows >= self.cfg.batch_size:
            self._flush_file(f)

    def _after_restart(self, symbol, stream, ids, lines):
        """The first rows of a stream after this writer started, when no worker
        explained the gap: rows a killed writer had not flushed are gone, and
        for streams whose ids do not count one by one only a ledger row says so."""
        kind = csvfiles.stream_kind(stream)
        last = self.seq.last.get((symbol, stream))
        if kind not in ("depth", "bookTicker") or last is None or ids[0] <= last:
            return      # consecutive ids: the sequencer's jump check sees any hole
        first = ids[0]
        if kind == "depth":
            cells = lines[0].split(",")
            first = int(cells[2])
            linked = cells[4] == str(last) if self.cfg.market == "usdm" else first == last + 1
            if linked:
                return
        self._write_gap(symbol, gap_row(int(self.clock() * 1e6), stream, "writer restart", last, first, "lost",
                                        detail="rows not flushed before the writer stopped may be missing"))

    def add_gap(self, symbol, gap):
        self.recovered.discard((symbol, gap["stream"]))
        row, request = self.seq.reported(symbol, gap, gap["local_time_us"])
        if row is not None:
            self._write_gap(symbol, row)
        if request is not None:
            self.request_backfill(*request)

    def _write_gap(self, symbol, gap):
        day = csvfiles.DayOf()(gap["local_time_us"] // 1000)
        cols = csvfiles.SCHEMAS["gaps"]
        line = ",".join(_csv_field(gap.get(c, "")) for c in cols) + "\n"
        log.warning("%s %s: gap (%s): last good %s, next %s; %s", symbol, gap["stream"], gap["reason"],
                    gap["last_good_id"], gap["first_id_after"], gap["action"])
        self.add_rows(symbol, "gaps", day, None, [line])

    # -- files ---------------------------------------------------------------------
    def _file(self, symbol, stream, day):
        key = (symbol, stream, day)
        f = self.files.get(key)
        if f is None:
            if len(self.files) >= self.max_open:
                self._close_idle(len(self.files) - self.max_open + 1)
            path = csvfiles.path(self.cfg.data_dir, self.cfg.market, symbol, stream, day)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self.torn_repaired += bool(repair_torn_line(fd, path))
            f = self.files[key] = OpenFile(fd, path, key)
            if os.fstat(fd).st_size == 0:
                f.lines.append(csvfiles.header(self.cfg.market, stream, self.cfg.orderbook_levels).decode())
        f.used = time.monotonic()
        return f

    def _flush_file(self, f):
        if not f.lines and not f.tail:
            return True
        data = f.tail + "".join(f.lines).encode()
        size, rows = len(data), f.rows
        f.lines, f.rows, f.tail, f.due = [], 0, b"", None
        self.pending_rows -= rows
        t0 = time.perf_counter()
        try:
            while data:
                n = os.write(f.fd, data)
                data = data[n:]
        except OSError as exc:
            f.tail, f.due = data, time.monotonic()
            self.write_errors += 1
            self._write_failed(f, exc)
            self.pending_rows += rows
            f.rows = rows   # counted again until they reach the disk
            return False
        elapsed = time.perf_counter() - t0
        self.flushes += 1
        self.flush_seconds_max = max(self.flush_seconds_max, elapsed)
        f.dirty = True
        if self.cfg.fsync == "always":
            os.fsync(f.fd)
            f.dirty = False
        st = self.stats.setdefault(f.key[:2], [0, 0, f.key[2]])
        if f.key[2] > st[2]:            # a new UTC day: today's counts start again
            st[0], st[1], st[2] = 0, 0, f.key[2]
        if st[2] == f.key[2]:
            st[0] += rows
            st[1] += size
        return True

    def _write_failed(self, f, exc):
        now = time.monotonic()
        self._retry_at = now + (5.0 if exc.errno == errno.ENOSPC else 1.0)
        if now - self._error_logged > 10:
            self._error_logged = now
            what = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            log.critical("%s: cannot write: %s; %d rows are held in memory and will be retried; "
                         "free space or fix the disk to avoid data loss", f.path, what, self.pending_rows)

    def flush_due(self, now):
        """Write the files whose lines are due, and those due within the next
        fraction of the interval (one wake-up serves many files); then
        ``next_due`` is the next deadline."""
        if now < self._retry_at:
            self.next_due = self._retry_at
            return
        soon = now + min(0.2, self.cfg.flush_interval / 5)
        following = None
        for f in list(self.files.values()):
            if f.due is None:
                continue
            if f.due <= soon:
                if not self._flush_file(f):
                    self.next_due = self._retry_at
                    return
            elif following is None or f.due < following:
                following = f.due
        self.next_due = following

    def flush(self, force=False):
        """Write every pending line, then the periodic work (on stop, and
        in tests; the running writer uses flush_due and housekeeping)."""
        now = time.monotonic()
        if not force and now < self._retry_at:
            return
        for f in list(self.files.values()):
            if not self._flush_file(f) and not force:
                return
        self.housekeeping(force)

    def housekeeping(self, force=False):
        now = time.monotonic()
        if self.cfg.fsync == "periodic" and (force or now - self._last_fsync >= self.cfg.fsync_interval):
            self._fsync_all()
        for symbol, gap in self.seq.expire(self.clock()):
            self._write_gap(symbol, gap)
        self._close_idle(0)

    def _fsync_all(self):
        self.recovered = set()   # streams whose first rows after a restart are still to be checked
        self._last_fsync = time.monotonic()
        for f in self.files.values():
            if f.dirty:
                os.fsync(f.fd)
                f.dirty = False

    def _close_idle(self, at_least):
        now = time.monotonic()
        idle = sorted((f.used, k) for k, f in self.files.items() if not f.lines and not f.tail)
        for n, (used, key) in enumerate(idle):
            if n >= at_least and now - used < 600:
                break
            f = self.files.pop(key)
            if f.dirty and self.cfg.fsync != "never":
                os.fsync(f.fd)
            os.close(f.fd)

    def close(self):
        self.flush(force=True)
        for _ in range(3):
            if not any(f.tail or f.lines for f in self.files.values()):
                break
            time.sleep(1.0)
            self.flush(force=True)
        if self.cfg.fsync != "never":
            self._fsync_all()
        lost = sum(f.rows for f in self.files.values())
        for f in self.files.values():
            os.close(f.fd)
        self.files.clear()
        if lost:
            log.critical("writer: %d rows could not be written before exit", lost)

    def status(self):
        return {"pending_rows": self.pending_rows, "open_files": len(self.files), "flushes": self.flushes,
                "flush_seconds_max": round(self.flush_seconds_max, 4), "write_errors": self.write_errors,
                "duplicates_dropped": self.seq.duplicates, "torn_lines_repaired": self.torn_repaired,
                "open_holes": sum(len(h) for h in self.seq.holes.values()),
                "streams": {f"{s}/{st}": {"day": v[2], "rows": v[0], "bytes": v[1]}
                            for (s, st), v in self.stats.items()}}


def _backfilled_column(market, stream):
    cols = csvfiles.columns(market, stream)
    return cols.index("backfilled") if "backfilled" in cols else None


def _csv_field(value):
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def writer_main(cfg, inbox, control_queues, status_q, log_q):
    """Process entry point. Stops on the ``None`` sentinel (after the producers)."""
    stop = proc.child_setup("writer", log_q, cfg.log_level)
    by_symbol = {s: q for symbols, q in control_queues for s in symbols}

    def request_backfill(symbol, stream, first, last):
        q = by_symbol.get(symbol)
        if q is not None:
            q.put(("backfill", symbol, stream, first, last))

    writer = Writer(cfg, request_backfill)
    writer.recover()
    log.info("writer: started (pid %d)", os.getpid())
    next_housekeeping = time.monotonic() + cfg.flush_interval
    next_status = 0.0
    idle_since = None
    while True:
        due = writer.next_due
        timeout = max(0.0, (next_housekeeping if due is None else min(due, next_housekeeping)) - time.monotonic())
        try:
            msg = inbox.get(timeout=timeout)
        except queue.Empty:
            msg = ()
        except Exception as exc:   # a message torn by a process killed mid-transfer
            log.error("writer: its input queue is corrupt (%s); exiting so the pipeline restarts", exc)
            writer.close()
            raise SystemExit(proc.EXIT_QUEUE_CORRUPT)
        if msg is None:
            break
        for item in msg:
            writer.handle(item)
        now = time.monotonic()
        if writer.next_due is not None and now >= writer.next_due:
            writer.flush_due(now)
        if now >= next_housekeeping:
            writer.housekeeping()
            next_housekeeping = now + cfg.flush_interval
        if now >= next_status:
            next_status = now + cfg.status_interval
            proc.report(status_q, "writer", writer.status())
        if stop.is_set():
            # Signalled directly (not by the manager's sentinel): drain what is
            # queued, then stop.
            if msg:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since >= 1.0:
                log.warning("writer: stopped by a signal; the queue was drained and flushed")
                break
    writer.close()
    proc.report(status_q, "writer", writer.status())
    log.info("writer: stopped, every row flushed")
