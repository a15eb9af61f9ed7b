"""Rebuild the order book offline from depthSnapshot and depth files.

The same sequencing rules as the live order-book manager (book.py): a
snapshot is taken up by the first diff that bridges it, diffs then chain by
``U``/``u`` (spot) or ``pu`` (usdm, coinm), and a break discards the book until the
next snapshot that a later diff bridges. Prices and quantities stay the
strings Binance sent; levels are ordered by their Decimal value.
"""

import bisect
import csv
import io
from dataclasses import dataclass, field

import pandas as pd

from .. import compression
from ..book import APPLIED, GAP, Book, classify_next, drop_before_snapshot, first_event_fits
from .catalog import NotRecorded, day_files, days_text
from .catalog import timestamp as _timestamp


@dataclass
class BookView:
    """The book after the diff with final update id ``update_id``.

    ``bids`` and ``asks`` are ``[(price, qty)]`` strings, best first;
    ``time`` is the diff's exchange event time and ``local_time`` when it was
    received (both UTC)."""
    update_id: int
    time: pd.Timestamp
    local_time: pd.Timestamp
    bids: list = field(default_factory=list)
    asks: list = field(default_factory=list)

    def to_frame(self, exact=False):
        """side, level (1 = best), price, quantity."""
        rows = [("bid", i + 1, p, q) for i, (p, q) in enumerate(self.bids)]
        rows += [("ask", i + 1, p, q) for i, (p, q) in enumerate(self.asks)]
        df = pd.DataFrame(rows, columns=["side", "level", "price", "quantity"])
        if not exact:
            df[["price", "quantity"]] = df[["price", "quantity"]].astype("float64")
        return df


@dataclass
class Snapshot:
    last_update_id: int
    response_time_us: int
    bids: list
    asks: list


class Replayer:
    """Feeds diffs through the documented procedure, taking snapshots as needed."""

    def __init__(self, market, snapshots):
        self.market = market
        self.snapshots = sorted(snapshots, key=lambda s: s.last_update_id)
        self._ids = [s.last_update_id for s in self.snapshots]
        self.book = Book()         # the live manager's book: sorted levels, exact strings
        self.update_id = None
        self.resyncs = 0          # times the book was (re)built from a snapshot
        self.breaks = 0           # diffs that did not chain: the book was discarded

    @property
    def synced(self):
        return self.update_id is not None

    def step(self, first, final, prev, bids, asks):
        """Apply one diff; True when it moved an in-sync book forward."""
        if self.update_id is not None:
            outcome = classify_next(self.market, self.update_id, first, final, prev)
            if outcome == APPLIED:
                self._apply(bids, asks, final)
                return True
            if outcome != GAP:
                return False
            self.update_id = None
            self.breaks += 1
        snap = self._bridging(first, final)
        if snap is None:
            return False
        self.book.load(snap.last_update_id, snap.bids, snap.asks)
        self.resyncs += 1
        self._apply(bids, asks, final)
        return True

    def _bridging(self, first, final):
        """The newest snapshot this diff is the first one after, if any."""
        lo = first - 1 if self.market == "spot" else first
        i = bisect.bisect_right(self._ids, final) - 1
        while i >= 0 and self._ids[i] >= lo:
            snap = self.snapshots[i]
            if first_event_fits(self.market, snap.last_update_id, first, final) and \
                    not drop_before_snapshot(self.market, snap.last_update_id, final):
                return snap
            i -= 1
        return None

    def _apply(self, bids, asks, final):
        self.book.apply(bids, asks, final)
        self.update_id = final

    def top(self, depth=None):
        """``(bids, asks)``: the best ``depth`` levels a side (all when None)."""
        return self.book.top(depth)

    def view(self, depth, event_time_ms, local_us):
        return BookView(self.update_id, pd.Timestamp(event_time_ms, unit="ms", tz="UTC"),
                        pd.Timestamp(local_us, unit="us", tz="UTC"), *self.top(depth))


def _open(path):
    return io.TextIOWrapper(compression.open_day(path), encoding="utf-8", newline="")


def read_snapshots(paths):
    """depthSnapshot files -> [Snapshot], one per ``last_update_id`` block."""
    out = []
    for path in paths:
        with _open(path) as f:
            rows = csv.reader(f)
            next(rows, None)
            current = None
            for row in rows:
                uid = int(row[0])
                if current is None or current.last_update_id != uid:
                    current = Snapshot(uid, int(row[5]) if row[5] else 0, [], [])
                    out.append(current)
                (current.bids if row[1] == "bid" else current.asks).append((row[2], row[3]))
    return out


def read_diffs(paths, from_id=None):
    """depth files -> ``(event_time, U, u, pu, bids, asks, local_us)`` per
    event, in file order; events with ``u < from_id`` are skipped unparsed."""
    for path in paths:
        with _open(path) as f:
            rows = csv.reader(f)
            next(rows, None)
            key = event = None
            for row in rows:
                if from_id is not None and int(row[3]) < from_id:
                    continue
                if (row[2], row[3]) != key:
                    if event is not None:
                        yield event
                    key = (row[2], row[3])
                    event = (int(row[0]), int(row[2]), int(row[3]), int(row[4]) if row[4] else None,
                             [], [], int(row[8]))
                if row[5] == "bid":
                    event[4].append((row[6], row[7]))
                elif row[5] == "ask":
                    event[5].append((row[6], row[7]))
            if event is not None:
                yield event


def _sources(data_dir, symbol, market, start, end):
    """The depth paths and the snapshots of the days from ``start`` to ``end``;
    NotRecorded when the symbol has no depth or snapshot files at all."""
    diffs = [p for _, p in day_files(data_dir, symbol, "depth", start, end, market)]
    snaps = read_snapshots([p for _, p in day_files(data_dir, symbol, "depthSnapshot", start, end, market)])
    return diffs, snaps


def _no_depth_then(data_dir, symbol, market, start, end):
    """NotRecorded for a time with no depth file around it: which days have one."""
    days = [d for d, _ in day_files(data_dir, symbol, "depth", market=market)]
    first, last = start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d")
    return NotRecorded(f"no {market} {symbol.upper()} depth files for {first}..{last} in '{data_dir}': "
                       f"depth was recorded on {days_text(days)}")


def walk(market, diffs, snaps, start_ok=None, until=None):
    """``(replayer, event, applied)`` after every diff from the newest
    snapshot ``start_ok`` accepts (earlier diffs are skipped unparsed), or
    from the first diff; stops before the first event ``until`` accepts."""
    start_ids = [s.last_update_id for s in snaps if start_ok is not None and start_ok(s)]
    r = Replayer(market, snaps)
    for event in read_diffs(diffs, max(start_ids, default=None)):
        if until is not None and until(event):
            return
        yield r, event, r.step(*event[1:6])


def replay(data_dir, symbol, start=None, end=None, market="spot", depth=20):
    """Iterate the book through time: a :class:`BookView` after every diff
    applied to an in-sync book whose event time is in ``[start, end)``.

    ``depth`` levels a side (None: every level). While the book is out of
    sync (a break in the diffs, until a later snapshot is bridged) nothing
    is yielded; the gap ledger says why. The day before ``start`` is read
    too: its last snapshot may be the one the book starts from. A wrong
    directory, market or symbol raises :class:`~.catalog.NotRecorded` at
    the first step; a range without depth files yields nothing."""
    before = None if start is None else _timestamp(start) - pd.Timedelta(days=1)
    t0 = None if start is None else int(_timestamp(start).value // 1_000_000)
    t1 = None if end is None else int(_timestamp(end).value // 1_000_000)
    taken_before_start = None if t0 is None else (lambda s: 0 < s.response_time_us // 1000 <= t0)
    at_end = None if t1 is None else (lambda event: event[0] >= t1)
    for r, (e_time, *_, local_us), applied in walk(market, *_sources(data_dir, symbol, market, before, end),
                                                   taken_before_start, at_end):
        if applied and (t0 is None or e_time >= t0):
            yield r.view(depth, e_time, local_us)


def book_at(data_dir, symbol, time=None, update_id=None, market="spot", depth=None):
    """The book as of ``time`` (after the last diff with an event time at or
    before it) or as of ``update_id`` (after the last diff whose final id is
    at or below it). Raises :class:`~.catalog.NotRecorded` when the lookup
    is wrong (no such directory, market or symbol, no depth recorded, or
    for ``time`` no depth file on its day or the day before), and
    LookupError when the recording has depth then but no in-sync book."""
    if (time is None) == (update_id is None):
        raise ValueError("book_at needs exactly one of time= or update_id=")
    if time is not None:
        when = _timestamp(time)
        ms = int(when.value // 1_000_000)
        window = when - pd.Timedelta(days=1), when + pd.Timedelta(milliseconds=1)
        sources = _sources(data_dir, symbol, market, *window)
        if not sources[0]:
            raise _no_depth_then(data_dir, symbol, market, *window)
        usable = lambda s: 0 < s.response_time_us // 1000 <= ms                        # noqa: E731
        past = lambda event: event[0] > ms                                             # noqa: E731
    else:
        sources = _sources(data_dir, symbol, market, None, None)
        usable = lambda s: s.last_update_id <= update_id                                # noqa: E731
        past = lambda event: event[2] > update_id                                      # noqa: E731
    r = last = None
    for r, (e_time, *_, local_us), applied in walk(market, *sources, usable, past):
        if applied:
            last = (e_time, local_us)
    if last is None or not r.synced:
        what = f"time {time}" if time is not None else f"update id {update_id}"
        why = ("no diff before it bridged a snapshot" if last is None else
               "the diffs broke before it and no snapshot was bridged since; see analysis.gaps")
        raise LookupError(f"{symbol.upper()}: no in-sync book at {what}: {why}")
    return r.view(depth, *last)
