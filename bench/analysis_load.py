"""How fast the offline tools read a recording, against a plain pandas read.

    python bench/analysis_load.py --rows 1000000

Writes a synthetic aggTrade day file (and a depth + snapshot pair) shaped
like the recorder's, then times:
- ``pandas.read_csv(path)`` with no options (the floor a user would try first),
- ``analysis.load`` (documented dtypes, UTC index, local_time column), float and exact,
- ``analysis.book_at`` replaying the depth file (diff events per second).
The target (issue: analysis) is load within a small factor of the plain read.
"""

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402

from common import report  # noqa: E402
from binance_streamer import analysis, csvfiles  # noqa: E402


def write_agg_trades(path, rows, rng):
    t, trade = 1795600000000, 21000000
    price = 30000.0
    with open(path, "w") as f:
        f.write(csvfiles.header("spot", "aggTrade").decode())
        for a in range(5000000, 5000000 + rows):
            t += rng.randint(0, 40)
            price += rng.choice((-0.01, 0, 0.01))
            n = rng.randint(1, 4)
            f.write(f"{a},{price:.8f},{rng.random():.8f},{trade},{trade + n - 1},{t},"
                    f"{rng.choice(('True', 'False'))},True,{t},{t * 1000 + rng.randint(1000, 90000)},0\n")
            trade += n


def write_depth(folder, events, rng, levels=1000):
    """A snapshot of ``levels`` a side and ``events`` diffs of ~10 levels each."""
    uid, t = 1000000, 1795600000000
    with open(os.path.join(folder, "BTCUSDT-depthSnapshot-2026-11-25.csv"), "w") as f:
        f.write(csvfiles.header("spot", "depthSnapshot").decode())
        for side, sign in (("bid", -1), ("ask", 1)):
            for i in range(levels):
                f.write(f"{uid},{side},{30000 + sign * (0.01 + i * 0.01):.8f},{rng.random():.8f},"
                        f"{t * 1000},{t * 1000 + 50000},,\n")
    with open(os.path.join(folder, "BTCUSDT-depth-2026-11-25.csv"), "w") as f:
        f.write(csvfiles.header("spot", "depth").decode())
        for _ in range(events):
            first, final = uid + 1, uid + rng.randint(1, 20)
            t += 100
            for _ in range(10):
                side = rng.choice(("bid", "ask"))
                sign = -1 if side == "bid" else 1
                p = 30000 + sign * rng.randint(1, 200) * 0.01
                q = "0.00000000" if rng.random() < 0.3 else f"{rng.random():.8f}"
                f.write(f"{t},,{first},{final},,{side},{p:.8f},{q},{t * 1000 + 700}\n")
            uid = final
    return uid


def timed(fn, repeat=3):
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="aggTrade rows in the synthetic day file")
    ap.add_argument("--events", type=int, default=100_000, help="depth diff events to replay")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "spot", "BTCUSDT")
        os.makedirs(folder)
        path = os.path.join(folder, "BTCUSDT-aggTrade-2026-11-25.csv")
        write_agg_trades(path, args.rows, rng)
        plain, df = timed(lambda: pd.read_csv(path))
        ours, loaded = timed(lambda: analysis.load(tmp, "BTCUSDT", "aggTrade"))
        exact, _ = timed(lambda: analysis.load(tmp, "BTCUSDT", "aggTrade", exact=True))
        assert len(df) == len(loaded) == args.rows
        last = write_depth(folder, args.events, rng)
        replay_s, view = timed(lambda: analysis.book_at(tmp, "BTCUSDT", update_id=last, depth=20), repeat=1)
        assert view.update_id == last
    result = {
        "rows": args.rows, "plain_read_csv_s": round(plain, 3), "load_float_s": round(ours, 3),
        "load_exact_s": round(exact, 3), "factor_float": round(ours / plain, 2),
        "factor_exact": round(exact / plain, 2), "rows_per_s_load": int(args.rows / ours),
        "replay_events": args.events, "replay_s": round(replay_s, 2),
        "replay_events_per_s": int(args.events / replay_s),
    }
    report(result, args.json)


if __name__ == "__main__":
    main()
