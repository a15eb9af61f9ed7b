"""The recorder's memory at rest: RSS and PSS of each process, with its defaults.

    python bench/footprint.py --runs 3

Starts the simulator (live model, journal off) with ``--symbols`` symbols
(BTCUSDT, ETHUSDT by default, as the recorder's own default) at ``--rate``
events per second, then the recorder with its default settings pointed at
it. Once every book is in sync it waits ``--settle`` seconds and reads each
process's /proc/<pid>/smaps_rollup (Linux): RSS (every page the process
maps, shared ones counted in each process) and PSS (shared pages split
between the processes that share them, so the sum is what the machine
gives). ``--env NAME=VALUE`` (repeatable) is added to the recorder's
environment, to compare e.g. MALLOC_ARENA_MAX. Prints one line per run and
role, then the medians of the totals.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

from common import SYMBOLS, read_status, recorder_processes, start_simulator


def smaps_rollup(pid):
    """{"rss": bytes, "pss": bytes} of a process (Linux), or None once it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    out[key.lower()] = int(rest.split()[0]) * 1024
    except OSError:
        return None
    return out


def footprint(manager_pid, run_dir):
    """{role: {"rss": MB, "pss": MB}}; workers keep their own names."""
    role_of = {c["pid"]: c["name"] for c in read_status(run_dir).get("processes", []) if c.get("pid")}
    role_of[manager_pid] = "manager"
    out = {}
    for proc in recorder_processes(manager_pid):
        mem = smaps_rollup(proc.pid)
        if mem:
            out[role_of.get(proc.pid, f"other-{proc.pid}")] = {k: round(v / 2**20, 1) for k, v in mem.items()}
    return out


def one_run(symbols, rate, settle, env, timeout=120):
    sim = start_simulator(symbols, rate)
    work = tempfile.mkdtemp(prefix="bench-footprint-")
    cfg = {"symbols": symbols, **sim.endpoints(), "data_dir": "data", "log_dir": "logs", "run_dir": "run"}
    with open(os.path.join(work, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", "config.yaml"], cwd=work,
                           env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    run_dir = os.path.join(work, "run")
    try:
        deadline = time.monotonic() + timeout
        while read_status(run_dir).get("children", {}).get("orderbook", {}).get("in_sync") != len(symbols):
            if time.monotonic() > deadline or rec.poll() is not None:
                raise SystemExit(f"the books did not all sync within {timeout} s (recorder in {work})")
            time.sleep(0.2)
        time.sleep(settle)
        return footprint(rec.pid, run_dir)
    finally:
        rec.terminate()
        rec.wait(60)
        sim.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=2)
    p.add_argument("--rate", type=float, default=5, help="market events per second per symbol")
    p.add_argument("--settle", type=float, default=10, help="seconds to wait once every book is in sync")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--json", action="store_true", help="print every run as JSON")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    runs = [one_run(SYMBOLS[:args.symbols], args.rate, args.settle, env) for _ in range(args.runs)]
    if args.json:
        print(json.dumps(runs))
        return 0
    for i, run in enumerate(runs):
        print(f"run {i + 1}: " + ", ".join(f"{role} {m['rss']}/{m['pss']}" for role, m in sorted(run.items())))
    for key in ("rss", "pss"):
        totals = [sum(m[key] for m in run.values()) for run in runs]
        print(f"total {key.upper()} MB: median {statistics.median(totals):.1f} of {totals} "
              f"({len(runs[0])} processes{', ' + ' '.join(args.env) if args.env else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
