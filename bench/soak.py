"""Soak the recorder under faults and audit what it wrote.

    python bench/soak.py --minutes 10 --symbols 3 --rate 100

Starts the simulator (in this process, journal in memory) with a connection
lifetime of 10 s (a handover every 10 s, announced by serverShutdown), runs
the recorder as users do (``python -m binance_streamer`` in a subprocess),
and every 30 s injects, in turn: a connection cut without a close frame,
malformed and unknown frames, a 2 s stall, a REST 429 storm with a drop, and
a ``kill -9`` of a worker, the order-book manager or the writer (rotating).
For each kill it reports which processes were replaced, how many
connections were reopened and how many books resynced. It stops the recorder with SIGTERM at the end and compares the files with
the simulator's journal: messages sent, on disk, duplicates, holes in the
ledger and holes not in it, time books were out of sync, restarts.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from binance_streamer.simulator import SimConfig, Simulator  # noqa: E402
from binance_streamer.simulator.audit import Files, compare, handovers  # noqa: E402
from common import SYMBOLS, read_status  # noqa: E402

STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker", "kline_1m"]


def wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def faults(sim, proc_status, step):
    """The fault of schedule step ``step``; returns what it did."""
    kind = step % 5
    if kind == 0:
        sim.faults(drop="abort")
        return "connections cut (no close frame)"
    if kind == 1:
        sim.faults(malformed=5, unknown_event=2)
        return "malformed and unknown frames"
    if kind == 2:
        sim.faults(stall=2.0)
        return "2 s stall"
    if kind == 3:
        sim.faults(rest_429=5.0, drop="close")
        return "REST 429 storm and a drop"
    victim = ["worker-0", "orderbook", "writer"][(step // 5) % 3]
    pid = next((p["pid"] for p in proc_status.get("processes", []) if p["name"] == victim), None)
    if pid:
        os.kill(pid, signal.SIGKILL)
    return f"kill -9 {victim}"


def kill_cost(before, after, symbols):
    """What one kill cost, from the status just before it and just before
    the next fault: processes replaced, connections reopened (every
    connection of a replaced worker, plus reconnects elsewhere), books
    resynced (all of them when the book manager was replaced)."""
    pids = lambda s: {p["name"]: p["pid"] for p in s.get("processes", [])}      # noqa: E731
    replaced = sorted(n for n, pid in pids(before).items() if pids(after).get(n) != pid)
    reopened = 0
    for name, child in after.get("children", {}).items():
        if not name.startswith("worker"):
            continue
        conns = child.get("connections", [])
        if name in replaced:
            reopened += len(conns)
        else:
            old = {c["name"]: c for c in before.get("children", {}).get(name, {}).get("connections", [])}
            reopened += sum(c.get("reconnects", 0) - old.get(c["name"], {}).get("reconnects", 0) for c in conns)
    book = lambda s: s.get("children", {}).get("orderbook", {}).get("resyncs", 0)     # noqa: E731
    resynced = len(symbols) if "orderbook" in replaced else book(after) - book(before)
    return {"replaced": replaced, "connections_reopened": reopened, "books_resynced": resynced}


def out_of_sync_seconds(files, symbols, interval):
    """Seconds books spent out of sync after they first synced."""
    total = 0.0
    for symbol in symbols:
        rows = files.rows(symbol, "orderbook")
        synced = False
        for r in rows:
            synced |= r["in_sync"] == "true"
            if synced and r["in_sync"] == "false":
                total += interval
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--symbols", type=int, default=3)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--period", type=float, default=30.0, help="seconds between faults")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--dir", help="keep the recording here (default: a temporary directory)")
    args = p.parse_args(argv)
    symbols = SYMBOLS[:args.symbols]
    work = args.dir or tempfile.mkdtemp(prefix="soak-")
    os.makedirs(work, exist_ok=True)
    sim = Simulator(SimConfig(symbols=tuple(symbols), seed=args.seed, rate=args.rate, lifetime=10.0,
                              shutdown_notice=1.0, journal="memory")).start()
    cfg = {"symbols": symbols, "streams": STREAMS, "ws_url": sim.ws_base, "rest_url": sim.rest_url,
           "ca_file": sim.ca_file,
           "data_dir": os.path.join(work, "data"), "log_dir": os.path.join(work, "logs"),
           "run_dir": os.path.join(work, "run"), "snapshot_depth": 1000, "flush_interval": 0.5,
           "restart_min_delay": 0.5, "reconnect_min_delay": 0.2, "reconnect_max_delay": 2.0}
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    log = open(os.path.join(work, "recorder.stderr"), "w")
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", config], cwd=work,
                           stderr=log, stdout=subprocess.DEVNULL, start_new_session=True)
    run_dir = cfg["run_dir"]
    if not wait(lambda: read_status(run_dir).get("state") == "RUNNING", 60):
        raise SystemExit(f"the recorder did not start; see {work}/recorder.stderr")
    started = time.monotonic()
    end = started + args.minutes * 60
    done, step, kills, pending = [], 0, [], None
    while time.monotonic() < end:
        time.sleep(min(args.period, max(0.0, end - time.monotonic())))
        if time.monotonic() >= end:
            break
        before = read_status(run_dir)
        if pending is not None:
            kills.append({"victim": pending[0], **kill_cost(pending[1], before, symbols)})
            pending = None
        what = faults(sim, before, step)
        if what.startswith("kill"):
            pending = (what.split()[-1], before)
        done.append(f"{time.monotonic() - started:6.1f} s  {what}")
        print(done[-1], file=sys.stderr, flush=True)
        step += 1
    # settle: books in sync and holes filled, then stop (possibly in the middle of a handover)
    wait(lambda: read_status(run_dir).get("children", {}).get("writer", {}).get("open_holes", 1) == 0, 120)
    last = read_status(run_dir)
    if pending is not None:
        kills.append({"victim": pending[0], **kill_cost(pending[1], last, symbols)})
    rec.send_signal(signal.SIGTERM)
    code = rec.wait(180)
    log.close()
    files = Files(cfg["data_dir"], "spot")
    report = compare(sim, files, set(symbols))
    stats = sim.stats()
    connections = sim.connections()
    sim.stop()
    totals = {k: sum(len(r[k]) if isinstance(r[k], list) else r[k] for r in report.values())
              for k in ("expected", "found", "missing", "unexplained", "mismatched", "duplicates")}
    agg_contiguous = {}
    for symbol in symbols:
        ids = sorted(int(r["agg_trade_id"]) for r in files.rows(symbol, "aggTrade"))
        agg_contiguous[symbol] = bool(ids) and ids == list(range(ids[0], ids[-1] + 1))
    children = last.get("children", {})
    conns = [c for n, w in children.items() if n.startswith("worker") for c in w.get("connections", [])]
    result = {
        "minutes": args.minutes, "symbols": len(symbols), "rate_per_symbol": args.rate, "faults": len(done),
        "exit_code": code,
        "messages_sent": totals["expected"], "messages_on_disk": totals["found"],
        "missing_in_ledger": totals["missing"] - totals["unexplained"],
        "missing_not_in_ledger": totals["unexplained"], "duplicates": totals["duplicates"],
        "rows_differing_from_sent": totals["mismatched"],
        "aggtrades_contiguous": all(agg_contiguous.values()),
        "handovers": handovers(connections),
        "reconnects": sum(c.get("reconnects", 0) for c in conns),
        "process_restarts": last.get("restarts"),
        "kills": kills,
        "book_resyncs": children.get("orderbook", {}).get("resyncs"),
        "books_out_of_sync_seconds": out_of_sync_seconds(files, symbols, 1.0),
        "rest_429": stats["rest_429"], "rest_418": stats["rest_418"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": work,
    }
    for stream, r in sorted(report.items()):
        print(f"{stream:28} sent {r['expected']:7}  on disk {r['found']:7}  missing {len(r['missing']):5}  "
              f"not in ledger {len(r['unexplained']):3}  duplicates {r['duplicates']}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    ok = (code == 0 and totals["unexplained"] == 0 and totals["duplicates"] == 0 and not totals["mismatched"]
          and result["aggtrades_contiguous"] and stats["rest_418"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
