"""Every message between the recorder's processes, on one screen.

Links (links.py; one socket pair per pair of processes, created by the manager):

======================  =====================================  =====================================
link                    up (producer -> consumer)              down (consumer -> producer)
======================  =====================================  =====================================
control: child-manager  Beat, Log, Torn                        Attach (+ a descriptor), Stop
rows: worker-writer     Batch of Rows and Gap (kept until      Ack, Backfill
                        acknowledged; sent again to a new
                        writer)
rows: orderbook-writer  Batch of Rows and Gap (same)           Ack
book: worker-orderbook  BookEvents of Diff, Ticker, Snapshot,  SnapshotRequest
                        SnapshotFailed
======================  =====================================  =====================================

Between machines (role collector -> NATS JetStream -> role sink): Frames,
ConnectionEvent and Dropped, whose one home is cluster.py.

What the loss of each costs (and so what guards it):

- Batch: rows. Never lost while the producer lives: it keeps each Batch
  until an Ack says the writer wrote it, and sends them all again to a
  restarted writer, which drops by id what it already has. A producer that
  dies loses what it had not yet sent; its replacement's first events put
  that in the ledger (``start``) and aggTrades and klines are backfilled.
- Ack: none; the next one covers it. Unacknowledged batches are only sent
  again, and the writer drops rows it already wrote.
- Backfill: a hole stays open until the writer's timeout ledgers it as lost.
- BookEvents, SnapshotRequest: a book goes out of sync; the book manager
  sees the broken diff chain, or times the request out, and resyncs with a
  ledger row.
- Beat: the manager takes the child for hung after ``hang_timeout`` and
  replaces it. Log: a log line (dropped ones are counted).
- Attach: the two processes stay unlinked; the manager only sends it on a
  fresh link, so it is lost only with the process it was for.
"""

import struct
from typing import NamedTuple, Optional


# -- control link ---------------------------------------------------------------------
class Beat(NamedTuple):
    """child -> manager, from the child's main loop only, at least every
    HEARTBEAT seconds: proof that the loop turns. ``status`` is the child's
    report (every ``status_interval``) or None."""
    time: float
    status: Optional[dict]


class Log(NamedTuple):
    """child -> manager: a log record, formatted, for the one log file."""
    record: object


class Torn(NamedTuple):
    """child -> manager: what arrived from ``peer`` does not decode while both
    live; the manager replaces ``peer`` (new links mend it)."""
    peer: str
    why: str


class Attach(NamedTuple):
    """manager -> child: the descriptor sent with this message is a new link
    to ``peer`` (a process name), replacing any link to it."""
    peer: str


class Stop(NamedTuple):
    """manager -> orderbook or writer: finish once the producers are gone."""


# -- rows links ---------------------------------------------------------------------------
class Batch(NamedTuple):
    """producer -> writer: ``items`` (Rows and Gap) numbered ``seq`` (1, 2, ...
    per producer process) for acknowledgement. A worker's REST series rows
    (seriesjobs.py) travel in its Batches too, their ids the exchange's times."""
    seq: int
    items: list


class Ack(NamedTuple):
    """writer -> producer: every Batch up to ``seq`` is written."""
    seq: int


class Backfill(NamedTuple):
    """writer -> worker: fetch ids ``first..last`` of ``stream`` over REST
    (a hole seen only by the writer: rows lost between processes)."""
    symbol: str
    stream: str
    first: int
    last: int


# -- book link ---------------------------------------------------------------------------------
class BookEvents(NamedTuple):
    """worker -> orderbook: Diff, Ticker, Snapshot, SnapshotFailed, in arrival
    order, each as a plain tuple: its class, then its fields in order
    (``event(Diff, ...)``; ``named(item)`` gives the NamedTuple back). There is
    one per depth event, and a NamedTuple costs about three times as much to
    pickle and unpickle as a tuple."""
    items: list


class SnapshotRequest(NamedTuple):
    """orderbook -> worker: fetch a depth snapshot of ``limit`` levels."""
    symbol: str
    limit: int
    priority: int


# -- what a Batch carries ---------------------------------------------------------------------
class Rows(NamedTuple):
    """CSV ``lines`` of one file (symbol, stream, UTC day), with each line's
    id in ``ids`` (the writer drops ids it has written; empty: no ids).
    ``backfilled``: fetched over REST to fill a hole. A worker extends the
    lists of its open Rows until the batch leaves (an element of ``lines``
    may hold several lines; ``ids`` has one id per line). On a link the
    lines travel joined in one string and the ids as one bytes object, 8
    bytes an id (``pack_rows``; the writer reads them through ``Lines`` and
    ``unpack_ids``): one string and one bytes object pickle as one copy
    each, a list as one object per line or id."""
    symbol: str
    stream: str
    day: str
    ids: list
    lines: list
    backfilled: bool


def each_line(rows):
    """``(id, line)`` of every line of a Rows as a worker builds it, one line each."""
    lines = rows.lines if rows.lines.__class__ is str else "".join(rows.lines)
    return list(zip(rows.ids, lines.splitlines(keepends=True)))


_new_rows = tuple.__new__


def pack_rows(items):
    """A Batch's items as they travel: each Rows' lines joined in one
    string, its ids packed (``pack_ids``)."""
    return [_new_rows(Rows, (m[0], m[1], m[2], pack_ids(m[3]),
                             m[4] if m[4].__class__ is str else "".join(m[4]), m[5])) if m.__class__ is Rows else m
            for m in items]


def pack_ids(ids):
    """A list of ids as one bytes object, each id a signed 64-bit integer in
    the machine's byte order (a link joins two processes of one machine);
    ids that are not all such integers stay as they are."""
    if ids.__class__ is not list or not ids:
        return ids
    try:
        return struct.pack(f"{len(ids)}q", *ids)
    except struct.error:
        return ids


def unpack_ids(ids):
    """Packed ids (``pack_ids``) as a sequence of ints, without a copy; other ids as they are."""
    return memoryview(ids).cast("q") if ids.__class__ is bytes else ids


class Lines:
    """The lines of a Rows as it travelled (``text``: ``count`` lines, each
    ending with a newline; counted when not given), read as a sequence of
    lines; split only when a line other than the first or the last is asked
    for (a hole, a repeat: rare)."""

    __slots__ = ("text", "count", "_split")

    def __init__(self, text, count=None):
        self.text, self.count, self._split = text, text.count("\n") if count is None else count, None

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if i.__class__ is int and self.count:
            text = self.text
            if i == 0 or i == -self.count:
                return text[:text.index("\n") + 1]
            if i == -1 or i == self.count - 1:
                return text[text.rfind("\n", 0, len(text) - 1) + 1:]
        return self.lines()[i]

    def __iter__(self):
        return iter(self.lines())

    def lines(self):
        if self._split is None:
            self._split = [line + "\n" for line in self.text.split("\n")[:self.count]]
        return self._split


class Gap(NamedTuple):
    """A gap-ledger row (``sequence.gap_row``) for ``symbol``; a PERIODIC
    stream's first-event report also carries ``sequence.WITHIN``, and a
    resumed sink's first-event reports ``sequence.RESUMED``, read by the
    writer and not written."""
    symbol: str
    row: dict


# -- what BookEvents carries -------------------------------------------------------------------
class Diff(NamedTuple):
    """A depth diff: ids ``first`` (U) .. ``final`` (u), ``prev`` (pu, USD-M);
    ``time``: its event time E in ms (for the ledger rows of a resync).
    ``bids`` and ``asks`` travel packed (``pack_levels``: one string per
    side, each price and quantity as sent): one string pickles and unpickles
    about thirty times faster than a list of ``[price, quantity]`` lists,
    and depth diffs are most of what this link carries."""
    symbol: str
    first: int
    final: int
    prev: Optional[int]
    bids: str
    asks: str
    time: object = ""


class Ticker(NamedTuple):
    """A bookTicker whose ``u`` is some diff's final id (so it can be checked)."""
    symbol: str
    u: int
    bid: str
    bid_qty: str
    ask: str
    ask_qty: str


class Snapshot(NamedTuple):
    """A REST depth snapshot, after the diffs received before it."""
    symbol: str
    last: int
    bids: list
    asks: list


class SnapshotFailed(NamedTuple):
    symbol: str
    error: str


def pack_levels(side):
    """``[[price, quantity], ...]`` (checked strings, no commas) as one string
    ``"price,quantity,price,quantity"`` ("" for none)."""
    return pack_cells(map(",".join, side))


def pack_cells(cells):
    """A side already as ``"price,quantity"`` cells (binance.parse.cells), packed."""
    return ",".join(cells)


def levels_of(text):
    """A packed side's levels as ``(price, quantity)`` pairs, read where
    they lie (no list is built); the count of cells is not checked."""
    cells = iter(text.split(",") if text else ())
    return zip(cells, cells)


def unpack_levels(text):
    """A packed side back as ``[(price, quantity), ...]``; ValueError if it
    has an odd number of cells (the check orderbook.OrderBooks.on_diff
    makes of every diff as it arrives)."""
    if text and not text.count(",") & 1:
        raise ValueError(f"packed price levels have an odd number of cells: {text[:80]!r}")
    return list(levels_of(text))


def event(kind, *fields):
    """A BookEvents item: ``(kind, *fields)``."""
    return (kind, *fields)


def named(item):
    """A BookEvents item as its NamedTuple (for reading it by name)."""
    return item[0]._make(item[1:])


HEARTBEAT = 1.0      # seconds between a child's Beats
