"""The writer process: the only process that opens data files.

It receives batches of ready-made CSV lines from the workers and the
order-book manager, drops duplicates and notices holes (sequence.py),
buffers lines per file and appends them in one ``write`` per file per flush
(by row count, and at least every ``flush_interval``). A crash can at worst
leave a torn last line, which is cut off when the file is next opened. A
full disk or an I/O error is logged loudly and retried; the lines stay in
memory and nothing already written is touched.
"""

import collections
import csv
import errno
import io
import json
import logging
import os
import resource
import signal
import time

from . import compression, csvfiles, disk, links, messages, proc, retention, streams
from .compressor import Compressions
from .messages import Gap, Lines, Rows, unpack_ids
from .daycounts import DayCounts
from .metrics import WriteCounts
from .recovery import last_row, recent_keys, repair_torn_line
from .sequence import Sequencer, gap_row
from .streams import id_step

log = logging.getLogger(__name__)

TRANSFER_ALLOWANCE = 0.1   # seconds a batch may take from a worker to the writer on a busy machine
UNWRITTEN = "unwritten-"
ACK_INTERVAL = 0.5         # seconds between two Acks to one producer   # run_dir/unwritten-<ns>.json: rows a writer could not write before it exited


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
    __slots__ = ("fd", "path", "lines", "rows", "tail", "used", "dirty", "key", "due", "size", "ino",
                 "ids", "written", "batch")

    def __init__(self, path, key):
        self.fd, self.path, self.key = None, path, key     # fd None: not open (yet, or any more)
        self.lines = []          # pending CSV lines (a travelled Rows' lines: one piece)
        self.rows = 0
        self.tail = b""          # the bytes of a write that failed, kept whole for the retry
        self.used = time.monotonic()
        self.dirty = False       # written since the last fsync
        self.due = None          # monotonic time by which the pending lines must be written
        self.size = 0            # bytes in the file: a failed write is cut back to this
        self.ino = None          # (st_dev, st_ino) of the open file, to notice it deleted or replaced
        self.ids = None          # [first, last] id of the pending rows (None: no ids)
        self.written = [0, None, None]   # rows, first id, last id written since the last file check
        self.batch = None        # producer -> number of its oldest input batch with lines pending here


class RecentKeys:
    """The keys of the last rows written to one keyed file (csvfiles.KEY_COLUMN)."""

    LIMIT = 4096

    def __init__(self):
        self.order = collections.deque()
        self.set = set()

    def __contains__(self, key):
        return key in self.set

    def seen(self, keys):
        return not self.set.isdisjoint(keys)

    def extend(self, keys):
        """Remember ``keys`` (a snapshot's thousands of rows share one key:
        each key is looked at once)."""
        order, known = self.order, self.set
        for k in dict.fromkeys(keys):
            if k not in known:
                known.add(k)
                order.append(k)
        while len(order) > self.LIMIT:
            known.discard(order.popleft())


class Writer:
    def __init__(self, cfg, request_backfill=None, clock=time.time, free=None, stop_recorder=None):
        """``free``: () -> bytes free on data_dir's disk (None: no disk floor);
        ``stop_recorder``: asks the whole recorder to stop (disk_floor_action stop)."""
        self.cfg = cfg
        self.clock = clock
        self.floor = disk.Floor(cfg.min_free_disk, free)
        self.shed = disk.Shedding(cfg.market)
        self.stop_recorder = stop_recorder or (lambda: None)
        self.request_backfill = request_backfill or (lambda *req: None)
        self.files = {}
        self.batch = 0           # input batches taken so far: numbers what each file has pending
        self.producer = None     # the process whose batch is being taken
        self.unwritten = {}      # at close: written_below() of the rows that could not be written
        self.seq = Sequencer(cfg.market, replays=getattr(cfg, "role", "all") == "sink")
        self.ledgered = {}       # symbol -> RecentKeys of the producers' ledger rows written (ledger_key)
        self.keys = {}           # (symbol, stream) -> RecentKeys of the files without exchange ids
        self.today = DayCounts()
        self.flushes = 0
        self.flush_seconds_max = 0.0
        self.write_errors = 0
        self.torn_repaired = 0
        self.pending_rows = 0
        self._last_fsync = time.monotonic()
        self.max_open = open_file_limit()
        # Rows reach the writer up to read_interval + batch_interval (and a
        # queue transfer) after they were sent; they wait here the rest of
        # flush_interval, so a row is on disk within about flush_interval.
        self.hold = max(0.0, cfg.flush_interval - cfg.batch_interval - cfg.read_interval - TRANSFER_ALLOWANCE)
        # Ledger rows come from every process, each up to a batch's journey
        # after its time: they wait at least that long, to be written sorted.
        self.gap_hold = max(self.hold, cfg.batch_interval + cfg.read_interval + TRANSFER_ALLOWANCE)
        self.next_due = None     # the earliest OpenFile.due (or a retry time); None: nothing pending
        self._retry_at = 0.0
        self._error_logged = 0.0
        self.metrics = WriteCounts(cfg.market)      # rows, bytes, gaps, latency: for metrics.py
        self.compressions = None if cfg.compression == "none" else Compressions(cfg, clock)

    # -- start-up -------------------------------------------------------------
    def recover(self):
        """Learn the last id of every stream from the newest file on disk."""
        newest = {}
        for symbol, stream, day, path in csvfiles.day_files(self.cfg.data_dir, self.cfg.market, self.cfg.symbols):
            if (symbol, stream) not in newest or day > newest[(symbol, stream)][0]:    # the plain name: either may exist
                folder, name = os.path.split(path)
                newest[(symbol, stream)] = (day, os.path.join(folder, csvfiles.plain_name(name)))
        for (symbol, stream), (day, path) in newest.items():
            column = csvfiles.ID_COLUMN.get(csvfiles.stream_kind(stream),
                                            csvfiles.SERIES_ID_COLUMN.get(csvfiles.series_kind(stream)))
            key_column = csvfiles.KEY_COLUMN.get(stream)
            if column is None and key_column is None:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except FileNotFoundError:
                fd = None                   # compressed (a closed file has no torn line)
            except OSError as exc:
                log.critical("%s: cannot open it to recover the last id (%s); its stream starts afresh",
                             path, exc.strerror)
                continue
            if fd is not None:
                try:       # first the repair: a torn row's key or id must not count as written
                    self._repaired(symbol, stream, repair_torn_line(fd, path, _event_column(stream)))
                finally:
                    os.close(fd)
            if key_column is not None:
                self._keys(symbol, stream).extend(recent_keys(path, key_column))
                continue
            found = last_row(path, column, _backfilled_column(self.cfg.market, stream))
            if found is not None:
                self.seq.last[(symbol, stream)], self.seq.tail[(symbol, stream)] = found
        today = csvfiles.DayOf()(int(self.clock() * 1000))
        for (symbol, stream), (day, path) in newest.items():
            if day == today:            # after the repairs: what the files hold now
                self._count_today(symbol, stream, day, path)
        reopened = 0
        for (symbol, stream), (day, path) in newest.items():
            if stream == "gaps":
                reopened += self._reopen_holes(symbol, path)
        self.ledger_unwritten()
        log.info("writer: recovered the last ids of %d streams; %d unfinished backfills asked for again",
                 len(self.seq.last), reopened)

    def _count_today(self, symbol, stream, day, path):
        """Today's rows on disk count in the status from the start, before
        the stream's first new row opens its file."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            self.today.opened(symbol, stream, day, fd)
        finally:
            os.close(fd)

    def _repaired(self, symbol, stream, cut):
        """A torn line (and its unfinished event) cut at start: in the ledger."""
        size, rows = cut
        if not size:
            return
        self.torn_repaired += 1
        if stream != "gaps":
            self._write_gap(symbol, gap_row(int(self.clock() * 1e6), stream, "torn write", "", "", "lost",
                                            rows=rows, detail=f"a crash left an unfinished write: {size} bytes "
                                                              f"cut ({rows} complete rows of an unfinished event)"))

    def _reopen_holes(self, symbol, path):
        """Backfills requested but never finished (the writer stopped first):
        ask again. The rows of the file also tell which ledger rows a producer
        sending its batches again already has on disk."""
        pending = {}
        written = self._ledgered(symbol)
        with io.TextIOWrapper(compression.open_day(path), encoding="utf-8", newline="") as f:
            for g in csv.DictReader(f):
                if g["local_time_us"].isdigit():
                    written.extend([ledger_key(g)])
                if not (g["last_good_id"].isdigit() and g["first_id_after"].isdigit()):
                    continue
                key = (g["stream"], int(g["last_good_id"]), int(g["first_id_after"]))
                if g["action"] == "backfill_requested":
                    pending[key] = tuple(int(t) if t.isdigit() else "" for t in (g["last_good_time"],
                                                                                g["first_time_after"]))
                elif g["reason"] in ("hole filled", "backfill timeout"):
                    pending.pop(key, None)
        now = self.clock()
        for (stream, last, first), times in pending.items():
            step = id_step(stream)
            if step is None:
                continue
            if self.seq.open_hole((symbol, stream), last + step, first - step, step, now, *times):
                self.request_backfill(symbol, stream, last + step, first - step)
        return len(pending)

    def _ledgered(self, symbol):
        keys = self.ledgered.get(symbol)
        if keys is None:
            keys = self.ledgered[symbol] = RecentKeys()
        return keys

    # -- input -------------------------------------------------------------------
    def take(self, items, producer=None):
        """One input batch from ``producer``; returns its number, written
        once ``written_below()`` says so."""
        self.batch += 1
        self.producer = producer
        try:
            for item in items:
                self.handle(item)
        finally:
            self.producer = None        # rows the writer adds on its own count for nobody's batch
        return self.batch

    def written_below(self):
        """``{producer: the oldest batch number of it with lines still pending
        in some file}``: its batches below that are on disk; a producer not
        named has everything on disk. Per producer, so that one file that
        cannot be written holds back only the producers that sent to it."""
        oldest = {}
        for f in self.files.values():
            for producer, number in f.batch.items() if f.batch else ():
                if number < oldest.get(producer, number + 1):
                    oldest[producer] = number
        return oldest

    def write_for(self, producer):
        """Write now every file with rows of ``producer`` pending (it is
        :func:`pressed`), so that its Ack can follow at once. Not the ledger
        (its rows wait gap_hold to be written in time order), nor a file that
        failed and waits for its retry."""
        if time.monotonic() < self._retry_at:
            return
        for f in list(self.files.values()):
            if f.batch and producer in f.batch and f.fd is not None and not f.tail and f.key[1] != "gaps":
                self._flush_file(f)

    def handle(self, msg):
        kind = type(msg)
        if kind is Rows:
            self.add_rows(*msg)
        elif kind is Gap:
            self.add_gap(msg.symbol, msg.row)
        else:
            log.error("writer: unknown message %s dropped", kind.__name__)

    def _keys(self, symbol, stream):
        keys = self.keys.get((symbol, stream))
        if keys is None:
            keys = self.keys[(symbol, stream)] = RecentKeys()
        return keys

    def add_rows(self, symbol, stream, day, ids, lines, backfilled=False):
        if ids.__class__ is bytes:      # as they travelled (messages.pack_rows)
            ids = unpack_ids(ids)
        if lines.__class__ is str:
            lines = Lines(lines, len(ids) if ids else None)
        if not lines:
            return              # (a snapshot of an empty book): nothing to write, nothing to wait for
        if self.shed.active and disk.sheds(stream):
            self.shed.drop(symbol, stream, lines, self.seq.last.get((symbol, stream)))
            return
        if ids and stream in csvfiles.KEY_COLUMN:       # keys, not exchange ids: only repeats are dropped
            keys = self._keys(symbol, stream)
            if keys.seen(ids):
                keep = [i for i, k in enumerate(ids) if k not in keys]
                self.seq.duplicates += len(ids) - len(keep)
                lines = [lines[i] for i in keep]
                if not lines:
                    return
            keys.extend(ids)
            ids = None
        if ids:
            keep, gaps, requests = self.seq.accept(symbol, stream, ids, backfilled, self.clock(), lines)
            for gap in gaps:
                self._write_gap(symbol, gap)
            for req in requests:
                self.request_backfill(*req)
            if keep is not None:
                lines = [lines[i] for i in keep]
                if not lines:
                    return
        if self.shed.ended:
            self._written_again(symbol, stream, ids[keep[0]] if ids and keep else ids[0] if ids else None, lines[0])
        f = self._file(symbol, stream, day)
        if ids:
            first = ids[keep[0]] if keep else ids[0]
            if f.ids is None:
                f.ids = [first, ids[-1]]
            else:
                f.ids[1] = ids[-1]
        if f.due is None:
            f.due = time.monotonic() + (self.gap_hold if stream == "gaps" else self.hold)
            if self.next_due is None or f.due < self.next_due:
                self.next_due = f.due
        if f.batch is None:
            f.batch = {}
        f.batch.setdefault(self.producer, self.batch)
        if lines.__class__ is Lines and stream != "gaps":
            f.lines.append(lines.text)       # one piece: pending lines are only joined (but a ledger's sorted)
        else:
            f.lines.extend(lines)
        self.metrics.arrived(f.key, lines)
        f.rows += len(lines)
        self.pending_rows += len(lines)
        if f.rows >= self.cfg.batch_size:
            self._flush_file(f)

    def add_gap(self, symbol, gap):
        """A producer's ledger row. One this writer (or the one before it)
        already wrote is dropped: a batch sent again to a new writer."""
        key = ledger_key(gap)
        written = self._ledgered(symbol)
        if key in written:
            return
        written.extend([key])
        if csvfiles.stream_kind(gap["stream"]) not in csvfiles.ID_COLUMN:
            self._write_gap(symbol, gap)        # no ids to compare with the files (the book manager's rows)
            return
        row, request = self.seq.reported(symbol, gap, gap["local_time_us"])
        if row is not None:
            self._write_gap(symbol, row)
        if request is not None:
            self.request_backfill(*request)

    def _write_gap(self, symbol, gap):
        day = csvfiles.DayOf()(gap["local_time_us"] // 1000)
        cols = csvfiles.SCHEMAS["gaps"]
        line = ",".join(_csv_field(gap.get(c, "")) for c in cols) + "\n"
        self.metrics.gap(symbol, gap)
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
            f = self.files[key] = OpenFile(path, key)
            try:
                if not self._being_compressed(f):
                    self._open(f)
            except OSError as exc:      # kept in memory; the flush tries again
                self._write_failed(f, exc)
        f.used = time.monotonic()
        return f

    def _open(self, f):
        """Open (or create) the file, never through a symlink; cut a torn last
        line; a new or empty file gets its header before the pending lines."""
        symbol, stream, _ = f.key
        os.makedirs(os.path.dirname(f.path), exist_ok=True)
        fd = os.open(f.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            self._repaired(symbol, stream, repair_torn_line(fd, f.path, _event_column(stream)))
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        f.fd, f.size, f.ino = fd, st.st_size, (st.st_dev, st.st_ino)
        self.today.opened(*f.key, fd)
        if st.st_size == 0:
            f.lines.insert(0, csvfiles.header(self.cfg.market, stream, self.cfg.orderbook_levels).decode())

    def _flush_file(self, f):
        """Append the pending lines in one write. All or nothing: a write
        that fails part-way (a full disk) is cut back, and the lines stay in
        memory, whole, for the retry; so the file never ends in half an event."""
        if not f.lines and not f.tail:
            f.due = f.batch = None
            return True
        if self._being_compressed(f):
            return False
        if f.fd is None:
            try:
                self._open(f)
            except OSError as exc:
                self.write_errors += 1
                self._write_failed(f, exc)
                return False
        if f.key[1] == "gaps" and len(f.lines) > 1:
            f.lines = in_time_order(f.lines)     # rows of several producers, each row once
        data = f.tail + "".join(f.lines).encode()
        size, rows = len(data), f.rows
        t0 = time.perf_counter()
        try:
            done = 0
            while done < size:
                done += os.write(f.fd, data[done:])
        except OSError as exc:
            f.lines, f.tail, f.due = [], data, time.monotonic()
            self.write_errors += 1
            self._cut_back(f)
            self._write_failed(f, exc)
            return False
        f.lines, f.rows, f.tail, f.due, f.batch = [], 0, b"", None, None
        self.metrics.written(f.key, rows, size, time.time())
        self.pending_rows -= rows
        f.size += size
        if f.ids is not None:
            w = f.written
            w[0], w[1], w[2] = w[0] + rows, w[1] if w[1] is not None else f.ids[0], f.ids[1]
            f.ids = None
        elapsed = time.perf_counter() - t0
        self.flushes += 1
        self.flush_seconds_max = max(self.flush_seconds_max, elapsed)
        f.dirty = True
        if self.cfg.fsync == "always":
            os.fsync(f.fd)
            f.dirty = False
        self.today.written(*f.key, rows, f.size, data.decode() if f.key[1] == "gaps" else None)
        return True

    def _cut_back(self, f):
        try:
            if os.fstat(f.fd).st_size > f.size:
                os.ftruncate(f.fd, f.size)
        except OSError as exc:
            log.critical("%s: a failed write could not be cut back (%s); the file may end in part of an event",
                         f.path, exc.strerror)

    def _write_failed(self, f, exc):
        """A file that cannot be written is tried again in a second; a full
        disk holds back every file for 5 s (each would fail the same way)."""
        now = time.monotonic()
        f.due = now + (5.0 if exc.errno == errno.ENOSPC else 1.0)
        if exc.errno == errno.ENOSPC:
            self._retry_at = f.due
        if self.next_due is None or f.due < self.next_due:
            self.next_due = f.due
        if now - self._error_logged > 10:
            self._error_logged = now
            what = {errno.ENOSPC: "the disk is full", errno.ELOOP: "it is a symlink, which is never followed",
                    errno.EPERM: "the file is immutable or append-only to this user"}.get(exc.errno, exc.strerror)
            log.critical("%s: cannot write: %s; %d rows are held in memory and will be retried; "
                         "fix it to avoid data loss", f.path, what, self.pending_rows)

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
                if self._flush_file(f):
                    continue                # else it waits (_write_failed set when); the others are written
                if now < self._retry_at:    # a full disk: every file would fail the same way
                    following = self._retry_at
                    break
            if following is None or f.due < following:
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

    def check_files(self):
        """A file deleted or replaced while open (its path no longer leads to
        the inode being written) is reopened afresh; the rows written to the
        old one since the last check are gone, and the ledger says so."""
        for f in list(self.files.values()):
            if f.fd is None:
                continue
            try:
                st = os.stat(f.path, follow_symlinks=False)
                same = (st.st_dev, st.st_ino) == f.ino
            except FileNotFoundError:
                same = False
            except OSError:
                continue
            if not same:
                rows, lo, hi = f.written
                os.close(f.fd)
                f.fd, f.dirty = None, False
                log.critical("%s: deleted or replaced while open; reopened; %d rows written since the last "
                             "check went to the old file", f.path, rows)
                symbol, stream, _ = f.key
                self._write_gap(symbol, gap_row(int(self.clock() * 1e6), stream, "file deleted while open",
                                                "" if lo is None else lo - 1, "" if hi is None else hi + 1,
                                                "lost", rows=rows, detail=f"{os.path.basename(f.path)} was "
                                                "deleted or replaced; its rows since the last check are lost"))
            f.written = [0, None, None]

    def housekeeping(self, force=False):
        now = time.monotonic()
        self.check_disk(now)
        self.check_files()
        if self.cfg.fsync == "periodic" and (force or now - self._last_fsync >= self.cfg.fsync_interval):
            self._fsync_all()
        for symbol, gap in self.seq.expire(self.clock()):
            self._write_gap(symbol, gap)
        self._compress_closed()
        self._close_idle(0)

    def _fsync_all(self):
        self._last_fsync = time.monotonic()
        for f in self.files.values():
            if f.dirty and f.fd is not None:
                os.fsync(f.fd)
                f.dirty = False

    def _close_idle(self, at_least):
        now = time.monotonic()
        idle = sorted((f.used, k) for k, f in self.files.items() if not f.lines and not f.tail)
        for n, (used, key) in enumerate(idle):
            if n >= at_least and now - used < 600:
                break
            self._close(key)

    def _close(self, key):
        """Stop keeping the file ``key`` open (fsynced first, unless fsync: never); returns it."""
        f = self.files.pop(key)
        if f.fd is not None:
            if f.dirty and self.cfg.fsync != "never":
                os.fsync(f.fd)
            os.close(f.fd)
        return f

    # -- compression of closed files (compressor.py) ---------------------------------
    def _compress_closed(self):
        """Close the files of past days that no row has come for in
        ``compress_after`` and let the compressor have them, one at a time."""
        if self.compressions is None:
            return
        today = csvfiles.DayOf()(int(self.clock() * 1000))
        quiet = time.monotonic() - self.cfg.compress_after
        for key, f in list(self.files.items()):
            if key[2] < today and f.used <= quiet and not f.lines and not f.tail:
                self.compressions.closed(self._close(key).path)
        self.compressions.tick(today, {f.path for f in self.files.values()})

    def _being_compressed(self, f):
        """A row for the file the compressor works on waits for the end of
        the run, then goes to a new plain file (late rows, folded in later)."""
        if self.compressions is None or self.compressions.busy != f.path:
            return False
        now = time.monotonic()
        f.due = now + 0.5
        if self.next_due is None or f.due < self.next_due:
            self.next_due = f.due
        return True

    def close(self):
        for symbol, gap in self.shed.unfinished(int(self.clock() * 1e6)):
            self._write_gap(symbol, gap)
        if self.compressions is not None:
            self.compressions.stop()
        self.flush(force=True)
        for _ in range(3):
            if not any(f.tail or f.lines for f in self.files.values()):
                break
            time.sleep(1.0)
            self.flush(force=True)
        if self.cfg.fsync != "never":
            self._fsync_all()
        lost = [f for f in self.files.values() if f.rows]
        for f in lost:          # the log is the ledger of last resort: exactly what is missing
            ids = f"ids {f.ids[0]}..{f.ids[1]}" if f.ids else "no ids"
            log.critical("%s: %d rows (%s) could not be written before exit and are lost", f.path, f.rows, ids)
        self.unwritten = self.written_below()
        for f in self.files.values():
            if f.fd is not None:
                os.close(f.fd)
        self.files.clear()
        if lost:
            log.critical("writer: %d rows could not be written before exit", sum(f.rows for f in lost))
            self._note_unwritten(lost)

    def _note_unwritten(self, lost):
        """Rows that never reached their file: noted in run_dir, so that the
        next start puts them in the gap ledger (the data disk may be full now)."""
        entries = [{"symbol": f.key[0], "stream": f.key[1], "rows": f.rows, "first": f.ids[0] if f.ids else None,
                    "last": f.ids[1] if f.ids else None} for f in lost if f.key[1] != "gaps"]
        path = os.path.join(self.cfg.run_dir, f"{UNWRITTEN}{time.time_ns()}.json")
        try:
            with open(path + ".tmp", "w") as out:
                json.dump(entries, out)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.critical("writer: cannot note the unwritten rows in %s either (%s); this log is their only record",
                         path, exc.strerror)

    def ledger_unwritten(self):
        """At start: a ledger row for each stream with rows the last run could not write."""
        for name in sorted(os.listdir(self.cfg.run_dir)) if os.path.isdir(self.cfg.run_dir) else ():
            if not (name.startswith(UNWRITTEN) and name.endswith(".json")):
                continue
            path = os.path.join(self.cfg.run_dir, name)
            try:
                with open(path) as f:
                    entries = json.load(f)
            except (OSError, ValueError):
                continue
            for e in entries:
                first, last = e.get("first"), e.get("last")
                self._write_gap(e["symbol"], gap_row(int(self.clock() * 1e6), e["stream"], "not written before exit",
                                                     "" if first is None else first - 1,
                                                     "" if last is None else last + 1, "lost", rows=e["rows"],
                                                     detail="the disk refused them until the recorder stopped"))
            os.unlink(path)

    # -- the disk floor (disk.py) ------------------------------------------------------
    def check_disk(self, now):
        """Below min_free_disk: shed the bulky streams or stop the recorder;
        above it again (with a margin): write them again."""
        change = self.floor.check(now)
        if change is None:
            return
        free, floor = self.floor.free / 2**30, self.cfg.min_free_disk
        if change == "above":
            log.warning("writer: data_dir's disk has %.3f GiB free again (min_free_disk %g GiB); writing %s again",
                        free, floor, ", ".join(sorted(disk.SHED)))
            self.shed.stop()
        elif self.cfg.disk_floor_action == "stop":
            log.critical("writer: data_dir's disk has %.3f GiB free, below min_free_disk (%g GiB); stopping the "
                         "recorder (disk_floor_action: stop)", free, floor)
            self.stop_recorder()
        else:
            log.critical("writer: data_dir's disk has %.3f GiB free, below min_free_disk (%g GiB); %s rows are not "
                         "written until %.3f GiB are free (disk_floor_action: shed)", free, floor,
                         ", ".join(sorted(disk.SHED)), self.floor.resume / 2**30)
            self.shed.start()

    def _written_again(self, symbol, stream, first_id, first_line):
        """The first rows of a shed stream after the floor: the ledger says what is missing before them."""
        gap = self.shed.written_again(symbol, stream, first_id, first_line, int(self.clock() * 1e6))
        if gap is not None:
            self._write_gap(symbol, gap)

    def status(self):
        streams, gaps = self.today.report()
        return {"pending_rows": self.pending_rows, "disk_floor": "below" if self.floor.below else "ok",
                "rows_not_recorded": self.shed.total, "open_files": len(self.files), "flushes": self.flushes,
                "flush_seconds_max": round(self.flush_seconds_max, 4), "write_errors": self.write_errors,
                "duplicates_dropped": self.seq.duplicates, "torn_lines_repaired": self.torn_repaired,
                "open_holes": sum(len(h) for h in self.seq.holes.values()),
                "streams": streams, "gaps": gaps, **self.metrics.report(),
                **(self.compressions.status() if self.compressions else {})}


def _stop_recorder():
    """disk_floor_action stop: SIGTERM to the manager, which stops every
    process in order (the writer last, writing what the others send)."""
    os.kill(os.getppid(), signal.SIGTERM)


def _event_column(stream):
    """The column whose value the rows of one event share (depth: one row per
    price level, each with the event's final update id); None: a row per event."""
    if stream == "depthSnapshot":
        return csvfiles.KEY_COLUMN[stream]         # a snapshot's levels share its response time
    kind = streams.lookup(stream)
    return csvfiles.ID_COLUMN[kind.name] if kind is not None and kind.per_level else None


def _backfilled_column(market, stream):
    cols = csvfiles.columns(market, stream)
    return cols.index("backfilled") if "backfilled" in cols else None


def ledger_key(row):
    """What tells one of a producer's ledger rows from its others, in the
    row as sent and as read back from the file: the producer's time of it,
    stream, reason and first id after the hole (the writer may fill in the
    last good id)."""
    first = row["first_id_after"]
    return int(row["local_time_us"]), row["stream"], row["reason"], "" if first is None else str(first)


def in_time_order(lines):
    """Ledger lines sorted by ``local_time_us`` (their first cell); a header
    stays first, rows of one time keep their order."""
    head = 0 if lines[0][:1].isdigit() else 1
    return lines[:head] + sorted(lines[head:], key=lambda line: int(line.split(",", 1)[0]))


def _csv_field(value):
    text = "" if value is None else str(value)
    if any(c in text for c in ',"\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


PRESSURE = 0.25   # of link_buffer_bytes: a producer keeping this much has its files written and acknowledged at once
#                   (before the half at which the status reports the writer behind: status.WRITER_BEHIND_SHARE)


def pressed(unacked_bytes, limit):
    """Does a producer keep so many bytes for this writer (``unacked_bytes``
    of the frames it sent, of its ``limit``: link_buffer_bytes) that its
    rows are written now rather than after their hold? At the limit it
    stops reading its sockets; well before it, it hears they are written."""
    return unacked_bytes >= limit * PRESSURE


def ack_due(now, acked_at, unacked_bytes, limit):
    """Is an Ack to a producer due: ACK_INTERVAL after the last one (an Ack
    wakes its main thread), or at once when it is :func:`pressed`."""
    return now - acked_at >= ACK_INTERVAL or pressed(unacked_bytes, limit)


class Producers:
    """The writer's links to its producers (workers and the book manager):
    what each sent, acknowledged once it is written; backfill requests for a
    worker whose link is down wait for its replacement."""

    def __init__(self, peers, groups, read=lambda link, report_torn: links.read(link), limit=16_000_000):
        self.read = read         # read(link, report_torn): ManagerLink.read in the process
        self.links = {name: links.Link(sock, name) for name, sock in peers.items()}
        self.owner = {s: name for name, symbols in groups.items() for s in symbols}
        self.limit = limit       # link_buffer_bytes: what a producer keeps at most
        self.unacked = {}        # name -> deque of (writer batch number, producer seq, frame bytes)
        self.unacked_bytes = {}  # name -> frame bytes of its batches not yet acknowledged
        self.acked_at = {}       # name -> monotonic time of the last Ack sent
        self.requests = {}       # name -> [Backfill] waiting for a link

    def attach(self, name, sock, writer):
        """A link to a new ``name`` process: what its predecessor sent and
        the writer has not read yet is read first (it is all in the socket:
        the predecessor is gone), then the old link closes."""
        old = self.links.get(name)
        if old is not None:
            while not old.closed and self.receive(old, writer, draining=True):
                pass
            old.close()
        self.links[name] = link = links.Link(sock, name)
        self.unacked[name] = collections.deque()
        self.unacked_bytes[name] = 0
        for msg in self.requests.pop(name, ()):
            link.send(msg)

    def request_backfill(self, symbol, stream, first, last):
        name = self.owner.get(symbol)
        if name is None:
            return
        msg = messages.Backfill(symbol, stream, first, last)
        link = self.links.get(name)
        if link is None or link.closed or not link.send(msg):
            self.requests.setdefault(name, []).append(msg)

    def open(self):
        return [link for link in self.links.values() if not link.closed]

    def receive(self, link, writer, draining=False):
        # the old link of a peer already replaced (draining): a torn end needs no mending
        before = link.received
        received = self.read(link, report_torn=not draining)
        batches = [msg for msg in received if isinstance(msg, messages.Batch)]
        size = (link.received - before) // max(1, len(batches))     # the read's bytes, shared out
        for msg in batches:
            number = writer.take(msg.items, link.name)
            self.unacked.setdefault(link.name, collections.deque()).append((number, msg.seq, size))
            self.unacked_bytes[link.name] = self.unacked_bytes.get(link.name, 0) + size
        return len(received)

    def pressed(self):
        """The producers whose files are to be written now (:func:`pressed`)."""
        return [name for name, size in self.unacked_bytes.items() if pressed(size, self.limit)]

    def acknowledge(self, written_below, now, force=False):
        """Tell each producer which of its batches are now on disk
        (``written_below()``, asked only when an Ack may be due: :func:`ack_due`),
        and whatever is due with ``force``."""
        below = None
        for name, pending in self.unacked.items():
            if not pending or not (force or ack_due(now, self.acked_at.get(name, 0.0),
                                                    self.unacked_bytes.get(name, 0), self.limit)):
                continue
            if below is None:
                below = written_below()
            first_pending = below.get(name)
            if first_pending is not None and pending[0][0] >= first_pending:
                continue
            seq = None
            while pending and (first_pending is None or pending[0][0] < first_pending):
                _, seq, size = pending.popleft()
                self.unacked_bytes[name] -= size
            link = self.links.get(name)
            if link is not None and not link.closed:
                link.send(messages.Ack(seq))
                self.acked_at[name] = now


def writer_main(cfg, control, peers, groups, restarts=0):
    """Process entry point. Stops on Stop from the manager (after the
    producers), once every producer's link has ended."""
    stop, manager = proc.child_setup("writer", control, cfg.log_level)
    producers = Producers(peers, groups, manager.read, cfg.link_buffer_bytes)
    writer = Writer(cfg, producers.request_backfill, free=lambda: disk.statvfs_free(cfg.data_dir),
                    stop_recorder=_stop_recorder)
    writer.recover()
    writer.check_disk(time.monotonic())
    keeper = retention.Keeper(cfg, busy=lambda: set(writer.files)).start()
    log.info("writer: started (pid %d)%s", os.getpid(), f", restart {restarts}" if restarts else "")
    next_housekeeping = time.monotonic() + cfg.flush_interval
    stopping_since = None
    while True:
        due = writer.next_due
        wake = min(next_housekeeping, manager.next_beat) if due is None else min(due, next_housekeeping,
                                                                                manager.next_beat)
        open_links = producers.open()
        ready, writable = links.wait([manager.link] + open_links, [lk for lk in open_links if lk.pending],
                                     max(0.0, wake - time.monotonic()))
        for link in writable:
            link.flush()
        got = 0
        for link in ready:                  # what producers sent before an Attach replaces one of them
            if link is not manager.link:
                got += producers.receive(link, writer)
        if manager.link in ready:
            for name, sock in manager.attachments():
                producers.attach(name, sock, writer)
        now = time.monotonic()
        if writer.next_due is not None and now >= writer.next_due:
            writer.flush_due(now)
        if now >= next_housekeeping:
            writer.housekeeping()
            next_housekeeping = now + cfg.flush_interval
        for name in producers.pressed() if got else ():
            writer.write_for(name)
        producers.acknowledge(writer.written_below, now)
        manager.beat(writer.status, cfg.status_interval, now)
        if manager.stopping or stop.is_set():
            # Stop (the producers are gone) or a signal: drain what they sent, then stop.
            if stopping_since is None or got:
                stopping_since = now
            if not producers.open() or now - stopping_since >= 1.0:
                break
    keeper.stop()
    writer.close()          # rows it could not write stay unacknowledged (and are noted in run_dir)
    producers.acknowledge(lambda: writer.unwritten, time.monotonic(), force=True)
    manager.report(writer.status())
    log.info("writer: stopped, every row flushed")
