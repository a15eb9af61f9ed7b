"""The order-book manager's CPU per depth diff, in one process, on real traffic.

    python bench/book.py --runs 5

The spot captures bench/peer.py replays (../shared/realdata/cryptofeed:
BINANCE-b38f7c.0 and BINANCE-ee25be.0, 13 symbols), looped ``--loops``
times as the simulator loops them, are parsed as the worker parses them
(binance.parse, outbox.BookFeed) into the BookEvents items the book manager
receives, then fed to orderbook.OrderBooks through the handler of its loop
(orderbook._apply), in three cases:

- synced: each book loaded first from the capture's snapshot, so every diff
  after it is applied (a live market);
- stale: each book's snapshot is the one the simulator answers in
  bench/peer.py (its replay, at speed 0, has played every frame before the
  first request, so the snapshot is at the replay's last id): the diffs
  before it are buffered, then every one is stale;
- buffered: no snapshot comes; every diff is buffered.

Per case: CPU microseconds per diff (time.process_time, the least of
``--runs``), unpickling not included. With ``--case C --runs N`` under
``valgrind --tool=callgrind``, the difference of two runs' instruction
counts (N = 1 and N = 3, say) over 2 x the diffs is the instructions per
diff, which does not move with the machine's load. The captures are
cryptofeed's: this product includes software developed by Bryant Moscon
(http://www.bryantmoscon.com/).
"""

import argparse
import logging
import os
import sys
import time

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from binance_streamer import config  # noqa: E402
from binance_streamer.binance import parse  # noqa: E402
from binance_streamer.messages import Diff, Snapshot  # noqa: E402
from binance_streamer.orderbook import OrderBooks, _apply, orderbook_handlers  # noqa: E402
from binance_streamer.outbox import BookFeed  # noqa: E402
from binance_streamer.simulator.replay import load_replay  # noqa: E402
from replay import CAPTURES  # noqa: E402
from peer import SPOT  # noqa: E402

CASES = ("synced", "stale", "buffered")


def book_events(loops):
    """``(items, first snapshots, last ids)``: what the book manager receives
    for the looped replay, each symbol's capture snapshot, each symbol's last id."""
    replay = load_replay(",".join(os.path.join(CAPTURES, name) for name in SPOT), 0, None, loops)
    replay.start(0.0)
    symbols = replay.symbols
    feed = BookFeed(symbols)
    last = {}
    for stream, payload, _ in replay.due(1.0):
        sym, _, key = stream.partition("@")
        sym, d = sym.upper(), orjson.loads(payload)
        if key.startswith("depth"):
            _, _, _, bids, asks = parse.depth("spot", d, 0)     # each side packed (messages.Diff)
            feed.diff(sym, d["U"], d["u"], d.get("pu"), bids, asks, d["E"])
            last[sym] = d["u"]
        elif key == "bookTicker":
            feed.ticker(sym, d["u"], d["b"], d["B"], d["a"], d["A"])
    snaps = {s: replay.symbol(s).snapshots[0] for s in symbols if replay.symbol(s).snapshots}
    return feed.take(), snaps, last


def case_items(case, items, snaps, ends):
    """The items of one case, snapshots put where they come; ``ends``:
    symbol -> the snapshot at the replay's end (the synced case's books)."""
    if case == "synced":
        return [(Snapshot, s, *snap) for s, snap in snaps.items()] + items
    if case == "buffered":
        return items
    out, seen = [], set()
    for item in items:
        out.append(item)
        if item[0] is Diff and item[1] not in seen:     # asked for once a diff is buffered
            seen.add(item[1])
            out.append((Snapshot, item[1], *ends[item[1]]))
    return out


def end_books(books, depth):
    """symbol -> ``(last id, bids, asks)``: each book as a snapshot of ``depth`` levels."""
    out = {}
    for symbol, sb in books.books.items():
        bids, asks = sb.sync.book.top(depth)
        out[symbol] = (sb.sync.update_id, [list(x) for x in bids], [list(x) for x in asks])
    return out


def run(cfg, items):
    books = OrderBooks(cfg, lambda *a: None, lambda m: None, clock=lambda: 0.0)
    t0 = time.process_time()
    _apply(books, orderbook_handlers(books), items)
    return time.process_time() - t0, books


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--loops", type=int, default=10, help="passes of the captures (default 10, as bench/peer.py)")
    p.add_argument("--case", choices=CASES, action="append", help="only this case (repeatable)")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    items, snaps, last = book_events(args.loops)
    diffs = sum(1 for m in items if m[0] is Diff)
    levels = sum(m[5].count(",") + m[6].count(",") + 2 - (not m[5]) - (not m[6]) for m in items if m[0] is Diff) // 2
    cfg = config.load(None, {"market": "spot", "symbols": ",".join(last)}).replace(book_refresh_interval=0)
    print(f"{diffs} diffs, {levels / diffs:.1f} levels a diff, {len(items)} items")
    ends = end_books(run(cfg, case_items("synced", items, snaps, None))[1], cfg.snapshot_depth)
    for case in args.case or CASES:
        todo = case_items(case, items, snaps, ends)
        times = []
        for _ in range(args.runs):
            seconds, books = run(cfg, todo)
            times.append(seconds)
        st = books.status()
        print(f"{case:9s} {min(times) / diffs * 1e6:6.3f} us/diff (least of {args.runs}; all runs "
              f"{' '.join(f'{t / diffs * 1e6:.3f}' for t in times)})  in_sync {st['in_sync']} "
              f"resyncs {st['resyncs']} bad {st['bad_input']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
