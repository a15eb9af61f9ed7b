"""Shared by the benchmark scripts: symbols, starting the simulator, output."""

import argparse
import json
import os
import re
import subprocess
import sys

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from binance_streamer.simulator import control  # noqa: E402

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


class SimProcess:
    """The simulator as its own process (journal off), and its addresses."""

    def __init__(self, proc, symbols, rest, ws, ca_file):
        self.proc, self.symbols, self.rest, self.ws, self.ca_file = proc, symbols, rest, ws, ca_file

    def stats(self):
        return control(self.rest, "/sim/stats", ca_file=self.ca_file)

    def post(self, path):
        return control(self.rest, path, body={}, ca_file=self.ca_file)

    def endpoints(self):
        """The recorder settings that point it here."""
        return {"ws_url": self.ws, "rest_url": self.rest, "ca_file": self.ca_file}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def start_simulator(symbols=(), rate=1, seed=1, pregenerate=0, tls=True, extra=()):
    """Start the simulator. ``pregenerate`` > 0: that many seconds of market
    are generated first (simulator/tape.py), so the simulator only has to
    send. ``tls``: wss:// and https:// (production), else ws:// and http://."""
    args = ["--pregenerate", str(pregenerate)] if pregenerate else []
    if symbols:
        args += ["--symbols", ",".join(symbols), "--rate", str(rate), "--seed", str(seed)]
    proc = subprocess.Popen([sys.executable, "-m", "binance_streamer.simulator", "--port", "0", "--journal", "off",
                             "--log-level", "WARNING", *args, *([] if tls else ["--plain"]), *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    m = re.search(r"symbols=(\S+) rest=(\S+) ws=(wss?://[^\s/]+)\S*(?: and \S+)?(?: ca=(\S+))?", line)
    if not m:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return SimProcess(proc, m.group(1).split(","), m.group(2), m.group(3), m.group(4))


def recorder_processes(pid):
    """The recorder's manager and every process under it (psutil), or []."""
    try:
        parent = psutil.Process(pid)
        return [parent] + parent.children(recursive=True)
    except psutil.Error:
        return []


def cpu_seconds(procs):
    """User + system CPU seconds of ``procs`` (psutil) so far; one that ended counts nothing."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


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
