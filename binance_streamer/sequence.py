"""The writer's safety net for sequence ids. Pure: the caller passes times.

Workers already keep their streams in order, backfill the holes they see
and report every gap. What they cannot see is rows lost *between*
processes: a worker killed with rows in memory, a writer killed with an
unflushed batch, a restart of the daemon. Per ``(symbol, stream)`` this
module therefore

* drops rows whose id is not beyond the last one written (exactly once),
* notices a jump in a stream with consecutive ids (aggTrade, trade, klines)
  that no gap report explained, and opens a *hole* to be backfilled
  (aggTrade, klines) or records it as lost (trade),
* accepts backfilled rows inside an open hole and closes the hole when
  it is full, or as lost when it is not filled in time.

Every decision that matters to a user becomes a gap-ledger row (a dict),
with the times of the rows around the hole (``csvfiles.row_time``). A hole
the writer finds gets a ``backfill_requested`` row when found (what a
restarted writer asks for again) and one row when it is done: ``backfilled``
with every row filled, or ``lost`` with the rows that were filled; both
name the hole by the same ids.
"""

from .csvfiles import row_time
from .continuity import linked
from .streams import CHAINED, backfillable, id_step, lookup

HOLE_TIMEOUT = 120.0
# A key a worker's report of a stream's first event may carry (not a ledger
# column): the largest step from the last id on disk that is no hole (a
# PERIODIC stream, whose ids are event times: continuity.hole_after).
WITHIN = "within"
# Another such key: the report comes from a sink that resumed after its
# consumer's position, where every message before it is on disk; its value is
# the event's ``pu`` (a futures depth event; None otherwise).
RESUMED = "resumed"
# How far behind the last id written an incoming id may be and still be a
# duplicate (a handover overlaps by seconds); further is an implausible id on disk.
PLAUSIBLE_STEPS = 100_000
PLAUSIBLE_IDS = 10**10


def gap_row(now_us, stream, reason, last_id, first_id, action, rows=0, detail="",
            last_time="", first_time=""):
    return {"local_time_us": now_us, "stream": stream, "reason": reason, "last_good_id": last_id,
            "first_id_after": first_id, "last_good_time": last_time, "first_time_after": first_time,
            "action": action, "rows": rows, "detail": detail}


class Hole:
    __slots__ = ("lo", "hi", "next", "step", "opened", "rows", "last_time", "first_time")

    def __init__(self, lo, hi, step, opened, last_time="", first_time=""):
        self.lo, self.hi, self.next, self.step, self.opened, self.rows = lo, hi, lo, step, opened, 0
        self.last_time, self.first_time = last_time, first_time     # of the rows around it (ms)

    def row(self, now_us, stream, reason, action, detail=""):
        """The ledger row of this hole, named by the ids around it."""
        return gap_row(now_us, stream, reason, self.lo - self.step, self.hi + self.step, action, self.rows,
                       detail, self.last_time, self.first_time)


class Sequencer:
    def __init__(self, market="spot", replays=False):
        self.market = market
        self.replays = replays    # a sink: a run's first events may be ones already written (its consumer's position)
        self.last = {}        # (symbol, stream) -> last id written
        self.tail = {}        # (symbol, stream) -> the line of that id (its time starts the next hole)
        self.expected = {}    # (symbol, stream) -> first id after a gap a worker reported
        self.holes = {}       # (symbol, stream) -> [Hole]
        self.duplicates = 0

    def accept(self, symbol, stream, ids, backfilled, now, lines=()):
        """Which rows to write: returns ``(keep, gap rows, backfill requests)``.

        ``keep`` is None for "all of them", else a list of row indexes.
        A backfill request is ``(symbol, stream, first id, last id)``.
        ``lines``: the CSV lines of ``ids``, read only for the times of a hole.
        """
        key = (symbol, stream)
        gaps, requests = [], []
        step = id_step(stream)
        if not backfilled:
            self._check_plausible(key, step, ids[-1], gaps, int(now * 1e6))
        last = self.last.get(key)
        if backfilled and self.holes.get(key):
            keep = self._fill(key, ids, last, gaps, now)
            return keep, gaps, requests
        if last is not None and ids[0] <= last:
            keep = [i for i, x in enumerate(ids) if x > last]
            self.duplicates += len(ids) - len(keep)
            if not keep:
                return keep, gaps, requests
            first = ids[keep[0]]
        else:
            keep, first = None, ids[0]
        start = keep[0] if keep else 0
        if step is not None:
            if last is not None and first != last + step:
                self._jump(key, last, first, step, now, gaps, requests, self.tail.get(key), _line(lines, start))
            if ids[-1] - first != (len(ids) - 1 - start) * step:
                prev = first
                for j in range(start + 1, len(ids)):
                    x = ids[j]
                    if x != prev + step:
                        self._jump(key, prev, x, step, now, gaps, requests, _line(lines, j - 1), _line(lines, j))
                    prev = x
        self.last[key] = ids[-1]
        self.tail[key] = _line(lines, len(ids) - 1)
        exp = self.expected.get(key)
        if exp is not None and ids[-1] >= exp:
            del self.expected[key]
        return keep, gaps, requests

    def _check_plausible(self, key, step, newest, gaps, now_us):
        """An id on disk far beyond what the exchange now sends (a damaged or
        edited file, files of another market) would make every new row look
        like a duplicate: it is reported, and ids start again from the
        exchange's."""
        last = self.last.get(key)
        if last is None or newest >= last - (step * PLAUSIBLE_STEPS if step else PLAUSIBLE_IDS):
            return
        gaps.append(gap_row(now_us, key[1], "implausible id on disk", last, newest, "ignored",
                            detail=f"the last id on disk is {last}, far beyond the exchange's {newest}; "
                                   "recording goes on from the exchange's ids",
                            last_time=self.time_of(key[1], self.tail.get(key))))
        del self.last[key]
        self.tail.pop(key, None)
        self.holes.pop(key, None)
        self.expected.pop(key, None)

    def time_of(self, stream, line):
        """The ledger time (ms) of a row written or about to be ("" if none)."""
        return row_time(self.market, stream, line)

    def reported(self, symbol, gap, now_us):
        """A worker's gap report. Returns the row to write, or None when there
        is nothing to report, and maybe a backfill request; or the row saying
        the last id on disk is implausible (the report is then not needed).

        A stream's first event (action "") is compared with the last row
        written: no row when it resumes where that ended. A report the worker
        decided (``backfilled``, ``lost``) is written whatever the ids on disk
        say: the worker saw the ids missing. A ``lost`` hole that REST can
        fill becomes a hole here, ``backfill_requested``."""
        key = (symbol, gap["stream"])
        first = gap["first_id_after"]
        if isinstance(first, int):
            implausible = []
            self._check_plausible(key, id_step(gap["stream"]), first, implausible, now_us)
            if implausible:
                return implausible[0], None
        last = self.last.get(key)
        from_disk = gap["last_good_id"] in (None, "")      # the stream's first event of this run
        if from_disk:
            if last is None:
                return None, None           # nothing recorded before: no gap
            gap["last_good_id"] = last
            if gap.get("last_good_time", "") == "":
                gap["last_good_time"] = self.time_of(gap["stream"], self.tail.get(key))
        step = id_step(gap["stream"])
        within = gap.pop(WITHIN, None)
        if self._resumed(gap, from_disk, step, last, first):
            return None, None               # a sink's own restart: it missed nothing the collectors sent
        if within is not None and gap["action"] == "" and isinstance(first, int) and last is not None \
                and first - last <= within:
            return None, None               # a periodic stream resumed within its period
        if self.replays and step is None and from_disk and gap["action"] in ("", "lost") \
                and isinstance(first, int) and last is not None and first <= last:
            return None, None               # a sink resuming at its consumer's position: it overlaps the disk
        if step is not None and first not in (None, "") and last is not None:
            if first <= last + step:
                if gap["action"] == "":
                    return None, None       # resumed exactly where we were
            elif gap["action"] in ("", "lost", "unknown") and backfillable(gap["stream"]):
                return self._hole_reported(symbol, key, gap, last, first, step, now_us)
        if gap["action"] == "":
            gap["action"] = "lost"
        if first not in (None, ""):
            self.expected[key] = first
        return gap, None

    def _resumed(self, gap, from_disk, step, last, first):
        """Is this a stream's first event at a sink that resumed after its
        consumer's position, following the last row on disk? Ids without a
        step (bookTicker) cannot show it: the consumer's position does (a hole
        the collectors had comes as a reconnect, not as a start); depth events
        must link to the last one written."""
        if RESUMED not in gap:
            return False
        prev = gap.pop(RESUMED)
        if not (self.replays and from_disk and step is None and gap["action"] in ("", "lost")
                and isinstance(first, int) and last is not None):
            return False
        return lookup(gap["stream"]).rule != CHAINED or linked(self.market, last, first, prev)

    def _hole_reported(self, symbol, key, gap, last, first, step, now_us):
        """A hole a worker reported and did not fill: the writer asks for it
        (the rows a worker did fetch come after this row and count in the
        hole's final row)."""
        if gap["last_good_id"] != last:     # the hole begins after the last row on disk
            gap["last_good_id"] = last
            gap["last_good_time"] = self.time_of(gap["stream"], self.tail.get(key))
        opened = self.open_hole(key, last + step, first - step, step, now_us / 1e6, gap.get("last_good_time", ""),
                                gap.get("first_time_after", ""))
        if gap.get("rows"):
            gap["detail"] = f"{gap.get('detail') or 'partly backfilled'}; asked for again"
        gap["action"], gap["rows"] = "backfill_requested", 0
        self.expected[key] = first
        return gap, ((symbol, gap["stream"], last + step, first - step) if opened else None)

    def expire(self, now):
        """Holes not filled in time: gap rows saying what was lost (and how
        many rows were filled)."""
        gaps = []
        for key, holes in list(self.holes.items()):
            for hole in list(holes):
                if now - hole.opened >= HOLE_TIMEOUT:
                    holes.remove(hole)
                    filled = f"; the {hole.rows} before them were" if hole.rows else ""
                    gaps.append((key[0], hole.row(int(now * 1e6), key[1], "backfill timeout", "lost",
                                                  f"ids {hole.next}..{hole.hi} were not backfilled in time{filled}")))
            if not holes:
                del self.holes[key]
        return gaps

    # -- internals -----------------------------------------------------------------
    def _jump(self, key, last, first, step, now, gaps, requests, last_line, first_line):
        if self.expected.get(key) == first:
            del self.expected[key]
            return
        symbol, stream = key
        times = self.time_of(stream, last_line), self.time_of(stream, first_line)
        if backfillable(stream):
            if self.open_hole(key, last + step, first - step, step, now, *times):
                requests.append((symbol, stream, last + step, first - step))
            action = "backfill_requested"
        else:
            action = "lost"
        gaps.append(gap_row(int(now * 1e6), stream, "id jump", last, first, action,
                            detail="rows lost between processes (crash or restart)",
                            last_time=times[0], first_time=times[1]))

    def open_hole(self, key, lo, hi, step, now, last_time="", first_time=""):
        """Expect backfilled rows ``lo..hi`` (between rows of times
        ``last_time`` and ``first_time``); False when an open hole already
        covers part of that range (its backfill is on the way: asking twice
        would write rows twice)."""
        holes = self.holes.setdefault(key, [])
        if any(lo <= h.hi and hi >= h.next for h in holes):
            return False
        holes.append(Hole(lo, hi, step, now, last_time, first_time))
        return True

    def _fill(self, key, ids, last, gaps, now):
        keep = []
        holes = self.holes[key]
        for i, x in enumerate(ids):
            hole = next((h for h in holes if h.next <= x <= h.hi), None)
            if hole is None or (x - hole.lo) % hole.step:
                if last is None or x > last:
                    keep.append(i)
                else:
                    self.duplicates += 1
                continue
            keep.append(i)
            hole.next, hole.rows = x + hole.step, hole.rows + 1
            if hole.next > hole.hi:
                holes.remove(hole)
                gaps.append(hole.row(int(now * 1e6), key[1], "hole filled", "backfilled"))
        if not holes:
            del self.holes[key]
        return keep


def _line(lines, i):
    return lines[i] if i < len(lines) else None
