"""Many symbols at a low rate: start-up, memory, sync time and the REST budget.

    python bench/scale.py --symbols 200 --symbols-per-worker 1
    python bench/scale.py --symbols 200 --symbols-per-worker 10

Starts the simulator (live model, journal off) with ``--symbols`` made-up
symbols, then the recorder (``python -m binance_streamer``) recording
aggTrade, trade, depth@100ms and bookTicker for all of them, and measures:

- seconds until every process runs, until every symbol's streams deliver,
  and until every book is in sync (snapshots are spread over minutes by the
  daemon-wide REST weight budget: this is the figure to expect on Binance);
- peak RSS of the largest worker, of the writer and order-book manager, and
  in total; CPU of all recorder processes per second;
- REST weight the recorder spent, requests the simulator answered 429 or
  418 (both must stay 0), and whether every symbol has rows on disk.

Exits 0 when every book is in sync, no request was answered 429 or 418,
and (``--activity flat``) every symbol has an aggTrade file; at real rates
a quiet symbol may not have traded yet, so that last check is left out.

Prints a table, or JSON with ``--json``.
"""

import argparse
import glob
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

import psutil
import yaml

from common import SYMBOLS, read_status, recorder_processes, report, start_simulator
from binance_streamer import settings      # after common, which puts the repository on sys.path

STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker"]


def symbols(n):
    """The usual names first, then made-up ones (S001USDT ...)."""
    return (SYMBOLS + [f"S{i:03d}USDT" for i in range(1, n + 1)])[:n]


def real_rates(names, seed, top=40.0, floor=0.05):
    """A seeded heavy tail: the symbol of rank r (a seeded shuffle) gets
    ``top / r**1.2`` events per second, at least ``floor``: with 400 symbols
    a few at tens per second, about 40 above 1/s, most well under 1/s."""
    ranks = list(range(1, len(names) + 1))
    random.Random(seed).shuffle(ranks)
    return {s: round(max(floor, top / r ** 1.2), 3) for s, r in zip(names, ranks)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=200)
    p.add_argument("--symbols-per-worker", type=int, default=None, help="default: the recorder's own")
    p.add_argument("--rate", type=float, default=5, help="market events per second per symbol")
    p.add_argument("--activity", choices=("flat", "real"), default="flat",
                   help="flat: every symbol at --rate; real: a seeded heavy tail (real_rates)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--snapshot-depth", type=int, default=1000, help="levels per REST snapshot (weight 50 on spot)")
    p.add_argument("--record", type=float, default=30, help="seconds to record once every book is in sync")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    names = symbols(args.symbols)
    work = tempfile.mkdtemp(prefix="bench-scale-")
    rates = real_rates(names, args.seed) if args.activity == "real" else {}
    sim = start_simulator(names, args.rate, args.seed,
                          extra=["--rates", ",".join(f"{s}={r}" for s, r in rates.items())] if rates else ())
    cfg = {"symbols": names, "streams": STREAMS, **sim.endpoints(),
           "data_dir": os.path.join(work, "data"), "log_dir": os.path.join(work, "logs"),
           "run_dir": os.path.join(work, "run"), "snapshot_depth": args.snapshot_depth}
    if args.symbols_per_worker:
        cfg["symbols_per_worker"] = args.symbols_per_worker
    with open(os.path.join(work, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    t0 = time.monotonic()
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", os.path.join(work, "config.yaml")],
                           cwd=work, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    per_worker = settings.symbols_per_worker(args.symbols_per_worker, len(names))
    marks, rss, workers = {}, {}, -(-len(names) // per_worker)
    try:
        while time.monotonic() - t0 < args.timeout and "synced" not in marks:
            time.sleep(0.5)
            st = read_status(cfg["run_dir"])
            children = st.get("children", {})
            procs = recorder_processes(rec.pid)
            for proc in procs:
                try:
                    rss[proc.pid] = max(rss.get(proc.pid, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass
            now = round(time.monotonic() - t0, 1)
            if "running" not in marks and sum(1 for k in children if k.startswith("worker-")) == workers:
                marks["running"] = now
            busy = [v for c in children.values() if "connections" in c
                    for k, v in c.get("streams", {}).items() if k.endswith(("/depth", "/bookTicker"))]
            if "delivering" not in marks and len(busy) == 2 * len(names) and all(v["messages"] for v in busy):
                marks["delivering"] = now
            if children.get("orderbook", {}).get("in_sync") == len(names):
                marks["synced"] = now
        if "synced" not in marks:
            raise SystemExit(f"not every book synced within {args.timeout:.0f} s: {marks}")
        procs = recorder_processes(rec.pid)
        roles = {pi["pid"]: pi["name"] for pi in read_status(cfg["run_dir"]).get("processes", [])}
        cpu0, c0 = sum(p.cpu_times().user + p.cpu_times().system for p in procs), time.monotonic()
        time.sleep(args.record)
        cpu1 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        cpu_percent = 100 * (cpu1 - cpu0) / (time.monotonic() - c0)
        for proc in procs:
            try:
                rss[proc.pid] = max(rss.get(proc.pid, 0), proc.memory_info().rss)
            except psutil.Error:
                pass
        st = read_status(cfg["run_dir"])
        sim_stats = sim.stats()
    finally:
        rec.terminate()
        rec.wait(300)
        sim.stop()
    missing = [s for s in names if not glob.glob(os.path.join(cfg["data_dir"], "spot", s, f"{s}-aggTrade-*.csv"))]
    worker_rss = [v for pid, v in rss.items() if roles.get(pid, "").startswith("worker-")]
    result = {
        "symbols": len(names), "symbols_per_worker": per_worker, "worker_processes": workers,
        "rate_per_symbol": args.rate if not rates else f"real: {min(rates.values())} to {max(rates.values())}, "
                                                         f"total {sum(rates.values()):.0f}/s", "snapshot_depth": args.snapshot_depth,
        "seconds_until_all_processes_run": marks.get("running"),
        "seconds_until_all_streams_deliver": marks.get("delivering"),
        "seconds_until_all_books_in_sync": marks.get("synced"),
        "peak_rss_mb_largest_worker": round(max(worker_rss) / 2**20, 1) if worker_rss else None,
        "peak_rss_mb_writer": round(max([v for pid, v in rss.items() if roles.get(pid) == "writer"] or [0]) / 2**20, 1),
        "peak_rss_mb_orderbook": round(max([v for pid, v in rss.items() if roles.get(pid) == "orderbook"] or [0])
                                       / 2**20, 1),
        "peak_rss_mb_total": round(sum(rss.values()) / 2**20, 1),
        "cpu_percent_while_recording": round(cpu_percent, 1),
        "rest_weight_spent": st.get("rest_weight_spent"),
        "rest_429": sim_stats.get("rest_429"), "rest_418": sim_stats.get("rest_418"),
        "symbols_without_aggtrade_file": len(missing),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    report(result, args.json)
    # Every book is in sync (or it ended above) and no REST limit was hit. At
    # real rates a quiet symbol may have no trade yet: its missing file is
    # what the market allows, not a fault; at a flat rate every symbol trades.
    limits_kept = not result["rest_429"] and not result["rest_418"]
    return 0 if limits_kept and (args.activity == "real" or not missing) else 1


if __name__ == "__main__":
    sys.exit(main())
