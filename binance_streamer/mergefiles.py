"""The files of ``--merge`` that the recorder makes itself, without one
exchange id a row: depth snapshots and the book manager's top-N rows.

* depthSnapshot: a snapshot is its rows of one ``last_update_id``; the
  output holds each snapshot of either input once (A's copy when both have
  it), in ``last_update_id`` order;
* orderbook: every row of A, and B's in-sync rows where A had no book: before
  A's first in-sync row, after its last, and between two of A's in-sync rows
  when A lost its book between them (a ledger row of its depth or book with
  a ``last_good_id`` there, or an out-of-sync row of A between them). A row
  in sync is the exchange's book at its ``update_id`` whoever rebuilt it, so
  ``--verify`` compares B's rows with the merged diffs as it does A's. B's
  rows are only taken when both inputs write as many levels.
"""

import bisect
import heapq
import os

from . import compression
from .mergerows import read_events, sorted_events, pairs

BOOK_STREAMS = ("depth", "orderbook")     # ledger rows that say a recorder lost its book
IN_SYNC = 2                               # orderbook columns: local_time_us, update_id, in_sync, levels...


def _header(path):
    with compression.open_day(path) as f:
        return f.readline()


def _replace(target, lines):
    with open(target + ".partial", "wb") as out:
        for line in lines:
            out.write(line if line.endswith(b"\n") else line + b"\n")
    os.replace(target + ".partial", target)


def snapshots(by_src, target_of, summary):
    """Each snapshot once, A's copy first, in ``last_update_id`` order, day by day."""
    written = set()                                 # snapshot ids written (a day before's included)
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        paths = {src: by_src[src].get(day) for src in ("A", "B")}
        header = _header(paths["A"] or paths["B"])
        counts = {}
        events = [sorted_events(lambda p=p: read_events(p, 0, True), counts) if p else iter(())
                  for p in paths.values()]
        lines = [header]
        for key, a, b in pairs(*events):
            if key in written:              # in an earlier day's file (two clocks either side of midnight)
                continue
            summary.both += a is not None and b is not None
            summary.a_only += b is None
            summary.b_only += a is None
            lines += a if a is not None else b
            written.add(key)
        _replace(target_of(day), lines)


def _book_rows(path):
    """``(update id, in sync, line)`` of an orderbook day file."""
    with compression.open_day(path) as f:
        f.readline()
        for line in f:
            cells = line.split(b",", IN_SYNC + 1)
            if len(cells) > IN_SYNC and cells[1].strip().isdigit():
                yield int(cells[1]), cells[IN_SYNC].strip() == b"true", line


def _lost_between(a_paths, a_ledger):
    """A's in-sync update ids, sorted, and the set of indexes ``i`` such
    that A lost its book between its i-th and (i+1)-th in-sync rows."""
    ids, lost = [], set()
    for day in sorted(a_paths):
        for u, in_sync, _ in _book_rows(a_paths[day]):
            if in_sync:
                ids.append(u)
            elif ids:
                lost.add(len(ids) - 1)        # an out-of-sync row after A's last in-sync one
    ids_sorted = sorted(ids)
    if ids_sorted != ids:                     # rows out of order: only the ledger says where A lost its book
        lost = set()
    for r in a_ledger:
        if r["stream"] in BOOK_STREAMS and r["last_good_id"].isdigit():
            i = bisect.bisect_right(ids_sorted, int(r["last_good_id"])) - 1
            lost.add(i)                          # -1: before A's first row, already B's
    return ids_sorted, lost


def _b_fills(u, ids, lost):
    """Is B's in-sync row at update id ``u`` where A had no book?"""
    i = bisect.bisect_left(ids, u)
    if i < len(ids) and ids[i] == u:
        return False
    return i == 0 or i == len(ids) or (i - 1) in lost


def orderbook(by_src, a_ledger, target_of, summary):
    """A's rows, with B's in-sync rows where A had no book (module doc);
    False, writing nothing, when one input has no orderbook file or the
    inputs write different numbers of levels (a day is then taken whole)."""
    if not by_src["A"] or not by_src["B"] or \
            len({_header(p) for src in ("A", "B") for p in by_src[src].values()}) != 1:
        return False
    summary.keyed, summary.unit = False, "rows"
    ids, lost = _lost_between(by_src["A"], a_ledger)
    last = None                                     # A's last in-sync id so far: where its other rows go

    def a_rows(path):
        nonlocal last
        for u, in_sync, line in _book_rows(path) if path else ():
            last = u if in_sync or last is None else last
            summary.a_only += 1
            yield (last, 0), line

    def b_rows(path):
        for u, in_sync, line in _book_rows(path) if path else ():
            if in_sync and _b_fills(u, ids, lost):
                summary.b_only += 1
                yield (u, 1), line
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        paths = {src: by_src[src].get(day) for src in ("A", "B")}
        rows = [line for _, line in heapq.merge(a_rows(paths["A"]), b_rows(paths["B"]), key=lambda r: r[0])]
        if rows or paths["A"]:
            _replace(target_of(day), [_header(paths["A"] or paths["B"])] + rows)
    return True
