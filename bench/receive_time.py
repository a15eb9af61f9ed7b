"""How close each row's ``local_time_us`` is to the moment its frame left the
exchange, and what a closer time costs in CPU.

    python bench/receive_time.py --seconds 20 --read-intervals 0,0.01,0.05,0.1

For each ``read_interval`` it starts the simulator (TLS, as production; its
journal records the time it wrote each frame to its socket) and a recorder
with that setting, records ``--seconds`` after the books are in sync, and
matches every aggTrade and bookTicker row to its frame by id. The error is
the recorded receive time less the simulator's send time: on loopback that
is the time the frame waited in the recorder's socket, plus scheduling.
Also: the share of rows whose time equals the previous row's (frames read
together share one), and the recorder's CPU per message (all processes).
"""

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

import orjson
import psutil
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import SYMBOLS, read_status, recorder_processes, start_simulator  # noqa: E402

KEYS = {"aggTrade": ("a", "agg_trade_id"), "bookTicker": ("u", "update_id")}


def sent_times(journal_path):
    """``{(symbol, stream, id): send time us}`` from the simulator's journal."""
    out = {}
    with open(journal_path, "rb") as f:
        for line in f:
            _, send_us, frame = line.rstrip(b"\n").split(b" ", 2)
            msg = orjson.loads(frame)
            stream = msg.get("stream", "")
            for name, (field, _) in KEYS.items():
                if stream.endswith("@" + name):
                    d = msg["data"]
                    out[(d["s"], name, int(d[field]))] = int(send_us)
    return out


def errors(data_dir, sent, since_us):
    errs, shared, rows = [], 0, 0
    for name, (_, column) in KEYS.items():
        for path in sorted(glob.glob(os.path.join(data_dir, "spot", "*", f"*-{name}-*.csv"))):
            symbol = os.path.basename(os.path.dirname(path))
            prev = None
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    local = int(row["local_time_us"])
                    if local < since_us:
                        continue
                    send = sent.get((symbol, name, int(row[column])))
                    if send is None:
                        continue
                    errs.append(local - send)
                    rows += 1
                    shared += local == prev
                    prev = local
    return errs, shared, rows


def one(read_interval, seconds, symbols, rate):
    with tempfile.TemporaryDirectory(prefix="bs-recv-") as tmp:
        journal = os.path.join(tmp, "journal.txt")
        sim = start_simulator(symbols, rate=rate, seed=5, extra=["--journal", journal])
        cfg = {"market": "spot", "symbols": symbols, "streams": ["aggTrade", "depth@100ms", "bookTicker"],
               "ws_url": sim.ws, "rest_url": sim.rest, "ca_file": sim.ca_file, "read_interval": read_interval,
               "data_dir": os.path.join(tmp, "data"), "log_dir": os.path.join(tmp, "logs"),
               "run_dir": os.path.join(tmp, "run"), "log_level": "WARNING"}
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
        rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", os.path.join(tmp, "config.yaml")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while (read_status(cfg["run_dir"]).get("children", {}).get("orderbook", {}).get("in_sync") != len(symbols)
                   and time.monotonic() < deadline):
                time.sleep(0.2)
            procs = recorder_processes(rec.pid)
            cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
            since_us = time.time_ns() // 1000
            frames0 = sim.stats()["frames_sent"]
            time.sleep(seconds)
            cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
            frames = sim.stats()["frames_sent"] - frames0
        finally:
            rec.terminate()
            rec.wait(120)
            sim.stop()
        errs, shared, rows = errors(cfg["data_dir"], sent_times(journal), since_us)
    errs.sort()
    q = statistics.quantiles(errs, n=100) if len(errs) > 100 else [float("nan")] * 99
    return {"read_interval_s": read_interval, "rows": rows, "p50_ms": round(q[49] / 1000, 1),
            "p99_ms": round(q[98] / 1000, 1), "max_ms": round(errs[-1] / 1000, 1) if errs else None,
            "shared_time_pct": round(100 * shared / max(1, rows), 1),
            "cpu_us_per_msg": round(cpu * 1e6 / max(1, frames), 1), "msgs_per_s": round(frames / seconds)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--read-intervals", default="0,0.01,0.05,0.1")
    p.add_argument("--symbols", type=int, default=2)
    p.add_argument("--rate", type=float, default=300.0, help="simulator events per second per symbol")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = [one(float(r), args.seconds, SYMBOLS[:args.symbols], args.rate)
               for r in args.read_intervals.split(",")]
    if args.json:
        print(orjson.dumps(results).decode())
        return
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"{args.symbols} symbols, rate {args.rate:g}, {args.seconds:g} s each, TLS")
    print("| read_interval | rows | error p50 | p99 | max | rows sharing a time | CPU µs/msg | msg/s |")
    print("| --: | --: | --: | --: | --: | --: | --: | --: |")
    for r in results:
        print(f"| {r['read_interval_s']:g} s | {r['rows']} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms | "
              f"{r['shared_time_pct']} % | {r['cpu_us_per_msg']} | {r['msgs_per_s']} |")


if __name__ == "__main__":
    main()
