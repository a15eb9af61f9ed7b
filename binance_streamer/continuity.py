"""Does an event continue its stream? The rules of streams.KINDS as pure functions.

Given what the worker knows of a stream (its last id and its state:
``start`` before the first event, ``live``, ``reconnected`` after a new
connection) and the ids of a new event, each rule answers with a verdict:

* ``DUPLICATE``: seen already (a handover overlaps two sockets); drop it.
* ``CONTINUES``: nothing was missed.
* ``FIRST``: the stream's first event; reported so the writer can compare
  it with the file on disk.
* ``LOST``: events were missed and cannot be fetched: a ledger row.
* ``BACKFILL``: events were missed and REST can fetch them.

The event is kept in every case but ``DUPLICATE``.
"""

from .markets import futures
from .streams import PERIODIC_HOLE

DUPLICATE, CONTINUES, FIRST, LOST, BACKFILL = "duplicate", "continues", "first", "lost", "backfill"


def consecutive(last, state, ident, step, can_backfill):
    """Ids that count up by ``step`` (None: any larger id continues)."""
    if last is not None and ident <= last:
        return DUPLICATE
    if state == "start":
        return FIRST
    if last is None or step is None or ident == last + step:
        return CONTINUES
    return BACKFILL if can_backfill else LOST


def linked(market, last, first, prev):
    """Does a depth event (first id ``U``, previous final id ``pu``) follow
    the event whose final id was ``last``? Futures name it in ``pu``; spot's
    ids run on, ``U`` being the last ``u`` + 1."""
    return prev == last if futures(market) else first == (last or 0) + 1


def chained(market, last, state, first, final, prev):
    """Depth events: each links to the one before it. The first one of a
    stream is a hole too: the book manager needs a snapshot."""
    if last is not None and final <= last:
        return DUPLICATE
    if state == "start" or (last is not None and not linked(market, last, first, prev)):
        return LOST
    return CONTINUES


def increasing(last, state, ident):
    """Ids that only grow: a hole shows nowhere but after a (re)connect."""
    if last is not None and ident <= last:
        return DUPLICATE
    return CONTINUES if state == "live" else LOST


def hole_after(period):
    """The longest step (ms) between two events of a PERIODIC stream of
    ``period`` ms that is not a hole (streams.PERIODIC_HOLE periods)."""
    return int(period * PERIODIC_HOLE)


def periodic(last, state, ident, period):
    """Events pushed every ``period`` ms, known by their event time: a step
    longer than :func:`hole_after` is a hole, after a reconnect or anywhere;
    a shorter one continues, even just after a reconnect (nothing missed).
    The first event of a stream is reported so the writer can compare it
    with the file on disk, by the same limit."""
    if last is not None and ident <= last:
        return DUPLICATE
    if state == "start" or last is None:
        return FIRST
    if ident - last > hole_after(period):
        return LOST
    return CONTINUES


def backfill_range(last, ident, step):
    """The ids of the hole between ``last`` and ``ident``: ``(lo, hi)``."""
    return last + step, ident - step


def handed_over(rule_overlap, last, first):
    """Has a new connection whose first id is ``first`` caught up with ``last``
    (``rule_overlap``: streams.Kind.overlap; None: no overlap needed)?"""
    if rule_overlap is None or last is None:
        return True
    return first is not None and first <= last + rule_overlap

