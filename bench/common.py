"""Shared by the benchmark scripts: symbols, starting the simulator, output."""

import argparse
import json
import os
import re
import subprocess
import sys

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT", "LINKUSDT",
           "DOTUSDT", "LTCUSDT", "AVAXUSDT", "ATOMUSDT", "UNIUSDT", "ETCUSDT", "XLMUSDT"]


def load_parser(doc, seconds):
    """The options every load benchmark takes: --symbols, --rate, --seconds, --json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--rate", type=float, default=2000, help="market events per second per symbol")
    p.add_argument("--seconds", type=float, default=seconds)
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    return p


def start_simulator(symbols, rate, seed=1, pregenerate=0):
    """The simulator as its own process (journal off): ``(process, rest url, ws url)``.

    ``pregenerate`` > 0: that many seconds of market are generated first
    (simulator/tape.py), so the simulator only has to send."""
    extra = ["--pregenerate", str(pregenerate)] if pregenerate else []
    proc = subprocess.Popen([sys.executable, "-m", "binance_streamer.simulator", "--port", "0", "--symbols",
                             ",".join(symbols), "--rate", str(rate), "--seed", str(seed), "--journal", "off",
                             "--log-level", "WARNING", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    m = re.search(r"rest=(\S+) ws=(ws://\S+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, m.group(1), m.group(2)


def recorder_processes(pid):
    """The recorder's manager and every process under it (psutil), or []."""
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.Error:
        return []


def read_status(run_dir):
    """A recorder's status file, or {} while there is none."""
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def report(result, as_json):
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34} {value}")
