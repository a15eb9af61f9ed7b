"""The rows side of ``--merge``: one day file of a stream with exchange ids,
from two recordings, into one, streaming (a busy depth day is gigabytes).

An *event* is ``(key, lines)``: the id of ``streams.KINDS`` (a depth event's
final update id, with all its level rows in their order; an aggTrade's id, a
candle's open time, ...) and its CSV lines as bytes. Each input is read in id
order; a file that is not (backfilled rows written after later ones, a
repeated id) is read twice: once for the few events out of order, which are
held in memory, then again for the rest, merged with them.
"""

import heapq

from . import compression, continuity
from .csvfiles import row_time
from .streams import CHAINED, CONSECUTIVE, id_step, lookup

MAX_OUT_OF_ORDER = 2_000_000      # lines held in memory for a file far out of id order
# Columns that differ between two machines for one exchange event: not compared, not a reason to keep both.
LOCAL_COLUMNS = ("local_time_us", "backfilled")


class MergeError(Exception):
    """Something about the inputs the user must fix: a one-line message."""


class Unsorted(Exception):
    """An input file is not in id order (read again, sorting as it goes)."""


def read_events(path, id_index, per_level):
    """``(key, [line, ...])`` of a day file (plain or compressed), in file order."""
    with compression.open_day(path) as f:
        f.readline()                                   # the header
        key, group = None, []
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            if not line.endswith(b"\n"):
                line += b"\n"
            cell = line.split(b",", id_index + 1)[id_index] if line.count(b",") >= id_index else b""
            if not cell.isdigit():
                raise MergeError(f"{path}: line {n}: id {cell[:40].decode(errors='replace')!r} is not a whole "
                                 f"number; run --verify on that recording to see what is damaged")
            k = int(cell)
            if per_level and k == key:
                group.append(line)
                continue
            if group:
                yield key, group
            key, group = k, [line]
        if group:
            yield key, group


def in_order(events, label):
    """The events, raising ``Unsorted(label)`` at the first one not beyond the last."""
    last = None
    for key, lines in events:
        if last is not None and key <= last:
            raise Unsorted(label)
        last = key
        yield key, lines


def sorted_events(read, counts):
    """The events of ``read()`` (called twice) in id order, each id once
    (``counts["repeated"]`` counts the others)."""
    late, top, held = [], None, 0
    for key, lines in read():
        if top is not None and key <= top:
            late.append((key, lines))
            held += len(lines)
            if held > MAX_OUT_OF_ORDER:
                raise MergeError(f"a day file holds more than {MAX_OUT_OF_ORDER} rows out of id order; "
                                 f"sort it by id first")
        else:
            top = key
    late.sort(key=lambda e: e[0])

    def rest():
        top = None
        for key, lines in read():
            if top is None or key > top:
                top = key
                yield key, lines
    last = None
    for key, lines in heapq.merge(rest(), late, key=lambda e: e[0]):
        if key == last:
            counts["repeated"] = counts.get("repeated", 0) + 1
            continue
        last = key
        yield key, lines


def pairs(a, b):
    """``(key, a_lines or None, b_lines or None)`` of two event iterators in id order."""
    x, y = next(a, None), next(b, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            yield x[0], x[1], None
            x = next(a, None)
        elif x is None or y[0] < x[0]:
            yield y[0], None, y[1]
            y = next(b, None)
        else:
            yield x[0], x[1], y[1]
            x, y = next(a, None), next(b, None)


class Rows:
    """Where the columns of one stream's rows are, and how two copies of an event compare."""

    def __init__(self, columns):
        self.columns = columns
        self.local = {columns.index(c) for c in LOCAL_COLUMNS if c in columns}
        self.backfilled = columns.index("backfilled") if "backfilled" in columns else None

    def same(self, a_lines, b_lines):
        """One exchange event? Every cell but the local ones is equal, an empty
        cell matching any (a REST backfill has no event time)."""
        if a_lines == b_lines:
            return True
        if len(a_lines) != len(b_lines):
            return False
        for la, lb in zip(a_lines, b_lines):
            ca, cb = la.rstrip(b"\r\n").split(b","), lb.rstrip(b"\r\n").split(b",")
            if len(ca) != len(cb):
                return False
            if any(x != y and x and y for i, (x, y) in enumerate(zip(ca, cb)) if i not in self.local):
                return False
        return True

    def is_backfilled(self, lines):
        if self.backfilled is None:
            return False
        cells = lines[0].rstrip(b"\r\n").split(b",")
        return len(cells) > self.backfilled and cells[self.backfilled] == b"1"

    def choose(self, a_lines, b_lines):
        """The copy to keep of an event both have: A's, unless only B's was
        received live (A's was fetched over REST to fill a hole)."""
        if self.is_backfilled(a_lines) and not self.is_backfilled(b_lines):
            return "B", b_lines
        return "A", a_lines


class Chain:
    """The merged rows of one stream as ``--verify`` sees them: its breaks
    (CONSECUTIVE and CHAINED rules), across days; the last id written."""

    def __init__(self, market, stream, columns):
        kind = lookup(stream)
        self.market, self.stream, self.rule = market, stream, kind.rule
        self.step = id_step(stream)
        if self.rule == CHAINED:
            self.first_at = columns.index("first_update_id")
            self.prev_at = columns.index("prev_final_update_id")
        self.last_key = self.last_line = None
        self.breaks = []          # (last id before, first id after, ledger time before, ledger time after)

    def feed(self, key, lines):
        if self.last_key is not None:
            after = self._broken(key, lines[0])
            if after is not None:
                self.breaks.append((self.last_key, after, row_time(self.market, self.stream, self.last_line.decode()),
                                    row_time(self.market, self.stream, lines[0].decode())))
        self.last_key, self.last_line = key, lines[-1]

    def _broken(self, key, line):
        """The id after a break before this event, or None when it continues."""
        if self.rule == CONSECUTIVE:
            return key if self.step is not None and key != self.last_key + self.step else None
        if self.rule == CHAINED:
            cells = line.split(b",")
            first, prev = cells[self.first_at], cells[self.prev_at].strip()
            if not first.isdigit():
                raise MergeError(f"{self.stream}: depth event {key} has first_update_id {first[:40]!r}, not a "
                                 f"whole number; run --verify on the recordings to see what is damaged")
            first = int(first)
            linked = continuity.linked(self.market, self.last_key, first, int(prev) if prev.isdigit() else None)
            return None if linked else first
        return None

