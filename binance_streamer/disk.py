"""The disk floor: what the writer does when data_dir's disk runs low.

``min_free_disk`` GiB must stay free. Below it the writer, as
``disk_floor_action`` says, either stops writing the bulkiest files (depth
diffs, snapshot levels and orderbook rows: most of the bytes) or stops the
recorder in order. It writes them again once 10% more than the floor is
free (so a disk hovering at the floor does not switch at every check), and
the gap ledger gets one row per stream saying what was not recorded: the
rows, their span of time and, for depth, the update ids around the hole.

Only what is written is shed: the book manager keeps its books from the
diffs the workers send it, whatever the writer does with their rows.

Pure but for :func:`statvfs_free`; the writer passes the times.
"""

import os
import time

from .csvfiles import KEY_COLUMN, row_time
from .sequence import gap_row
from .streams import kind_of

SHED = frozenset({"depth", "depthSnapshot", "orderbook"})   # the file kinds shed below the floor
RESUME_MARGIN = 0.1        # written again once the floor plus this share of it is free
CHECK_INTERVAL = 1.0       # seconds between two measurements of the free space, at least
REASON = "disk below min_free_disk"
ACTION = "not recorded"


def statvfs_free(path):
    """Bytes an unprivileged process may still write on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def refuse_start(cfg, free):
    """With ``disk_floor_action: stop``, a disk already below the floor
    would stop the recorder as it starts: the reason, or None."""
    if cfg.disk_floor_action != "stop" or not cfg.min_free_disk or free >= cfg.min_free_disk * 2**30:
        return None
    return (f"data_dir's disk has {free / 2**30:.2f} GiB free, below min_free_disk ({cfg.min_free_disk:g} GiB), "
            f"and disk_floor_action is stop; free some space, lower min_free_disk or use disk_floor_action: shed")


def sheds(stream):
    return kind_of(stream) in SHED


def line_time(market, stream, line):
    """The time (ms) of a row for the ledger: the exchange's time, or the
    recorder's own key time for files without exchange ids."""
    column = KEY_COLUMN.get(stream)
    if column is None:
        return row_time(market, stream, line)
    cell = line.split(",", column + 1)[column]
    return int(cell) // 1000 if cell.isdigit() else ""


class Floor:
    """Is data_dir's disk below ``min_free_disk``? With hysteresis, and
    measured at most every ``interval`` seconds."""

    def __init__(self, min_free_gib, free, interval=CHECK_INTERVAL):
        self.floor = int(min_free_gib * 2**30)
        self.resume = int(self.floor * (1 + RESUME_MARGIN))
        self.free_fn = free          # () -> bytes free; None: never measured (no floor)
        self.interval = interval
        self.below = False
        self.free = None             # bytes free at the last measurement
        self._checked = None

    def check(self, now):
        """Measure when due; returns ``"below"`` or ``"above"`` when the
        side changes, else None. A measurement that fails changes nothing."""
        if self.free_fn is None or not self.floor:
            return None
        if self._checked is not None and now - self._checked < self.interval:
            return None
        self._checked = now
        try:
            self.free = self.free_fn()
        except OSError:
            return None
        if not self.below and self.free < self.floor:
            self.below = True
            return "below"
        if self.below and self.free >= self.resume:
            self.below = False
            return "above"
        return None


class Span:
    """The rows of one file stream not written while below the floor."""

    __slots__ = ("before", "rows", "first_time", "last_time")

    def __init__(self, before):
        self.before = before         # the last id written before the hole (None: none, or no ids)
        self.rows = 0
        self.first_time = self.last_time = ""    # ms of the first and last row not written


class Shedding:
    """What the writer did not write, per ``(symbol, stream)``. A span is
    ledgered when its stream's first row is written again (that row's id
    closes the hole), or at close when none came."""

    def __init__(self, market):
        self.market = market
        self.active = False
        self.spans = {}          # (symbol, stream) -> Span, rows are being shed
        self.ended = {}          # the same after the floor, waiting for the stream's next row
        self.total = 0           # rows not written since the writer started

    def start(self):
        """Below the floor: from now on rows of the shed kinds are dropped;
        a stream not yet written again since the last time continues its span."""
        self.active = True
        self.spans.update(self.ended)
        self.ended.clear()

    def stop(self):
        self.active = False
        self.ended.update(self.spans)
        self.spans.clear()

    def drop(self, symbol, stream, lines, last_id):
        """Rows not written; ``last_id``: the stream's last id written so far."""
        span = self.spans.get((symbol, stream))
        if span is None:
            span = self.spans[(symbol, stream)] = Span(last_id)
        if span.rows == 0:
            span.first_time = line_time(self.market, stream, lines[0])
        span.rows += len(lines)
        span.last_time = line_time(self.market, stream, lines[-1]) or span.last_time
        self.total += len(lines)

    def written_again(self, symbol, stream, first_id, first_line, now_us):
        """The stream's first rows after the floor: the ledger row of its
        span, or None when it had none."""
        span = self.ended.pop((symbol, stream), None)
        if span is None:
            return None
        return self._row(stream, span, first_id, line_time(self.market, stream, first_line), now_us)

    def unfinished(self, now_us):
        """At close: ``[(symbol, ledger row)]`` of every span not yet ledgered."""
        rows = [(symbol, self._row(stream, span, None, "", now_us))
                for spans in (self.spans, self.ended) for (symbol, stream), span in spans.items() if span.rows]
        self.spans.clear()
        self.ended.clear()
        return rows

    @staticmethod
    def _row(stream, span, first_id, first_time, now_us):
        when = f" from {_utc(span.first_time)} to {_utc(span.last_time)}" if span.first_time != "" else ""
        return gap_row(now_us, stream, REASON, "" if span.before is None else span.before,
                       "" if first_id is None else first_id, ACTION, rows=span.rows,
                       detail=f"free disk below min_free_disk: {span.rows} rows{when} were not written",
                       last_time=span.first_time, first_time=first_time)


def _utc(ms):
    if ms == "":
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
