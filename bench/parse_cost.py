"""The worker's cost per frame of real traffic, in-process, by kind.

    python bench/parse_cost.py [--market spot|usdm] [--kind all|depth|bookTicker|aggTrade]
                               [--repeat 5] [--instructions]

A worker (``Worker.on_frames``, no sockets) reads the real captures of the
market (../shared/realdata/cryptofeed: spot BINANCE-b38f7c.0 and
BINANCE-ee25be.0, USD-M BINANCE_FUTURES-1125a2.0), every frame of the kind
(or all), and every 2,000 frames its batches for the writer and the book
manager are taken and pickled as they would travel. Printed: CPU time per
frame (the best of ``--repeat`` passes); with ``--instructions``, the
instructions per frame counted by valgrind's callgrind (installed apart:
they do not move with the machine's load, so a change of a few percent
shows), from the difference between a run that reads the frames and one
that only loads them.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from replay import CAPTURES, MARKETS  # noqa: E402

ONE_PASS = r'''
import os, pickle, sys, time
sys.path.insert(0, {root!r})
import orjson
from binance_streamer import config, messages
from binance_streamer.worker import Worker

frames = []
for path in {paths!r}:
    with open(path, "rb") as f:
        for line in f:
            if line[:1].isdigit():
                ts, _, text = line.rstrip(b"\n").partition(b": ")
                if b'"data"' in text and ({kind!r} == "all" or b"@" + {kind!r}.encode() in text[:80]):
                    frames.append((int(float(ts) * 1e6), text))
symbols = sorted({{orjson.loads(t)["stream"].split("@")[0].upper() for _, t in frames}})
cfg = config.load(None, {{"market": {market!r}, "symbols": ",".join(symbols),
                         "streams": "aggTrade,depth@100ms,kline_1m,bookTicker"}})


def one_pass():
    w = Worker(cfg, symbols)
    for i, (recv_us, text) in enumerate(frames):
        w.on_frames([text], recv_us)
        if i % 2000 == 0:
            pickle.dumps(messages.Batch(1, messages.pack_rows(w.take_batch())), pickle.HIGHEST_PROTOCOL)
            pickle.dumps(messages.BookEvents(w.take_book_batch()), pickle.HIGHEST_PROTOCOL)


if {mode!r} == "time":
    best = None
    for _ in range({repeat}):
        t0 = time.process_time()
        one_pass()
        spent = time.process_time() - t0
        best = spent if best is None else min(best, spent)
    print(len(frames), best)
else:
    if {mode!r} == "count":
        one_pass()
    print(len(frames), 0)
'''


def run(market, kind, mode, repeat=1, under=()):
    paths = [os.path.join(CAPTURES, name) for name in MARKETS[market]]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(ONE_PASS.format(root=ROOT, paths=paths, kind=kind, market=market, mode=mode, repeat=repeat))
    try:
        out = subprocess.run([*under, sys.executable, f.name], capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    frames, seconds = out.stdout.split()
    return int(frames), float(seconds), out.stderr


def instructions(market, kind):
    """Instructions per frame: callgrind's total for a pass less that of loading alone."""
    totals = []
    for mode in ("load", "count"):
        frames, _, err = run(market, kind, mode, under=("valgrind", "--tool=callgrind",
                                                         "--callgrind-out-file=/dev/null"))
        totals.append(int(re.search(r"Collected : (\d+)", err).group(1)))
    return frames, (totals[1] - totals[0]) / frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--market", default="spot", choices=["spot", "usdm"])
    ap.add_argument("--kind", default="all", choices=["all", "depth", "bookTicker", "aggTrade"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    args = ap.parse_args()
    if not all(os.path.exists(os.path.join(CAPTURES, n)) for n in MARKETS[args.market]):
        sys.exit(f"bench/parse_cost.py: the captures are not in {CAPTURES}; put ../shared beside the checkout")
    frames, seconds, _ = run(args.market, args.kind, "time", args.repeat)
    print(f"{args.market} {args.kind}: {frames} frames, {seconds / frames * 1e6:.2f} µs CPU per frame "
          f"(best of {args.repeat})")
    if args.instructions:
        _, per_frame = instructions(args.market, args.kind)
        print(f"{args.market} {args.kind}: {per_frame:,.0f} instructions per frame (callgrind)")


if __name__ == "__main__":
    main()
