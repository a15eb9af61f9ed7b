"""The recorder beside its peers on the same real traffic: CPU, throughput, memory.

    python bench/peer.py --runs 3 --peer-python /path/to/python3.12

The simulator replays real captured spot traffic (../shared/realdata/
cryptofeed: BINANCE-b38f7c.0 and BINANCE-ee25be.0) as fast as each client
reads (over TLS unless ``--plain``), one TLS record per frame, looped
``--loops`` times (each pass continuing the last: every id and time
shifted, each book bridged back to the capture's first snapshot, so id
chains, books and bookTicker checkpoints stay valid), to three clients in
turn (alternating order each run), each subscribed to aggTrade,
bookTicker, depth@100ms and kline_1m of every symbol in the captures:

- binance_streamer (every process: workers, writer, order-book manager,
  manager), writing its CSV files, books, snapshots and top-N rows;
- cryptofeed (its Binance feed subclassed with the simulator's endpoints;
  its own books; one CSV line per callback);
- unicorn-binance-websocket-api (``websocket_base_uri`` set to the
  simulator; a callback writing one CSV line per event).

The peers run under ``--peer-python`` (an interpreter with cryptofeed,
unicorn-binance-websocket-api and orjson installed; cryptofeed 3 needs
Python 3.12 or newer); a peer that cannot be imported there is skipped with
a line that says why. The replay starts once a client's subscriptions are
all open. Per run and client: CPU microseconds per message (all its
processes, idle CPU subtracted), messages per second (messages / time from
the replay's start to the client's last event), peak RSS (all processes
together, and the largest process; for the recorder, each process by
name), and whether it received every message.
The table shows medians and each system's ratio to the recorder.

``--plain`` serves everything over ws:// and http:// instead of TLS, for
the cost beside it: the recorder gets the simulator's plain addresses,
UBWA its ``websocket_base_uri`` as ws://, and cryptofeed, whose websocket
connection refuses any address not starting wss://, gets that check
wrapped at run time by bench/peers/cryptofeed_client.py (only with
``--plain``; cryptofeed itself is not changed). The footer line says which
transport was used.

``--only NAME`` runs one system alone (``binance_streamer``, ``cryptofeed``
or ``ubwa``); ``--set NAME=VALUE`` overrides one of the recorder's settings
(the value read as YAML, repeatable); ``--keep DIR`` records into
``DIR/run-N`` and leaves the data there.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from common import recorder_processes, start_simulator
from replay import CAPTURES, connected, cpu_seconds, high_water_mark, on_disk, read_status, wait

SPOT = ["BINANCE-b38f7c.0", "BINANCE-ee25be.0"]
CHANNELS = ["aggTrade", "bookTicker", "depth@100ms", "kline_1m"]
PEERS = {"cryptofeed": "cryptofeed_client.py", "ubwa": "ubwa_client.py"}
IMPORTS = {"cryptofeed": "cryptofeed", "ubwa": "unicorn_binance_websocket_api"}
HERE = os.path.dirname(os.path.abspath(__file__))


class Sampler:
    """Peak RSS of a process tree: the sum, sampled, and each process's own
    high-water mark from the kernel."""

    def __init__(self, procs):
        self.procs, self.total, self.largest = procs, 0, 0
        self.each = {}                  # pid -> its high-water mark
        self.cpu0 = {p.pid: cpu_seconds([p]) for p in procs}       # pid -> CPU seconds when the replay starts

    def sample(self):
        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
                self.each[p.pid] = high_water_mark(p.pid) or self.each.get(p.pid, 0)
            except psutil.Error:
                pass
        self.total = max(self.total, total)
        self.largest = max(self.each.values(), default=0)

    def by_name(self, names):
        """Each process's peak in MB, by its name in ``names`` (pid -> name)."""
        return {names.get(pid, str(pid)): round(peak / 2**20, 1) for pid, peak in sorted(self.each.items())}


def subscribed(sim, symbols):
    """Are all the client's streams subscribed on open connections?"""
    from binance_streamer.simulator.server import control
    conns = control(sim.rest, "/sim/connections", ca_file=sim.ca_file)
    streams = {s for c in conns if not c.get("closed") for s in c.get("streams", ())}
    return len(streams) >= len(symbols) * len(CHANNELS)


def measure(procs, sim, done, idle_seconds=2.0):
    """Idle CPU rate, then the replay until ``done()``: ``(idle rate, CPU
    seconds at the start, start time, sampler)``."""
    idle0, i0 = cpu_seconds(procs), time.time()
    time.sleep(idle_seconds)
    idle_rate = (cpu_seconds(procs) - idle0) / (time.time() - i0)
    sampler = Sampler(procs)
    cpu0, start = cpu_seconds(procs), time.time()
    sim.post("/sim/replay/start")
    deadline = time.monotonic() + 180
    while not done() and time.monotonic() < deadline:
        sampler.sample()
        time.sleep(0.05)
    sampler.sample()
    return idle_rate, cpu0, start, sampler


def replay_args(paths, loops):
    return ["--replay", ",".join(paths), "--replay-speed", "0", "--replay-loops", str(loops),
            "--replay-connections", "1000000", "--write-each-frame"]


def expected_frames(paths, loops):
    """{stream kind: frames} the looped replay sends (played here, at once)."""
    from binance_streamer.simulator.replay import load_replay
    replay = load_replay(",".join(paths), 0, None, loops)
    replay.start(0.0)
    counts = {}
    for stream, _, _ in replay.due(1.0):
        kind = stream.split("@")[1]
        kind = "depth" if kind.startswith("depth") else kind
        if kind in ("aggTrade", "bookTicker", "depth"):
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def run_ours(paths, expected, loops, keep=None, settings=None, plain=False):
    """One run of the recorder; ``keep``: record into this folder and leave
    it; ``settings``: overrides of the recorder's configuration; ``plain``:
    ws:// and http:// instead of TLS."""
    sim = start_simulator(tls=not plain, extra=replay_args(paths, loops))
    work = keep or tempfile.mkdtemp(prefix="bench-peer-")
    os.makedirs(work, exist_ok=True)
    cfg = {"market": "spot", "symbols": sim.symbols, "streams": CHANNELS, **sim.endpoints(),
           "symbols_per_worker": len(sim.symbols), "data_dir": "data", "log_dir": "logs", "run_dir": "run",
           **(settings or {})}
    with open(os.path.join(work, "config.yaml"), "w") as f:
        json.dump({k: v for k, v in cfg.items() if v is not None}, f)         # JSON is YAML
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", "config.yaml"], cwd=work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir, data_dir = os.path.join(work, "run"), os.path.join(work, "data")
    state = {"rows": -1, "since": None}

    def done():
        if not sim.stats()["replay"]["finished"]:
            return False
        _, rows, _ = on_disk(data_dir)
        if rows != state["rows"]:
            state["rows"], state["since"] = rows, time.monotonic()
        return time.monotonic() - state["since"] > 2.0          # no new row for a flush and more
    try:
        wait(lambda: connected(read_status(run_dir)), 60, "the recorder to connect")
        procs = recorder_processes(rec.pid)
        idle_rate, cpu0, start, sampler = measure(procs, sim, done)
        cpu = cpu_seconds(procs) - cpu0 - idle_rate * (time.time() - start)
        each = {p.pid: cpu_seconds([p]) - sampler.cpu0.get(p.pid, 0.0) for p in procs}
        found, _, last_us = on_disk(data_dir)
        children = read_status(run_dir).get("children", {})
        books = children.get("orderbook", {})
        names = {c.get("pid"): name for name, c in children.items() if isinstance(c, dict)}
    finally:
        rec.terminate()
        rec.wait(60)
        sim.stop()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    out = result("binance_streamer", expected, found, cpu, last_us / 1e6 - start, sampler, len(procs))
    out["ticker_checks"] = [books.get("ticker_compared"), books.get("ticker_mismatches")]
    out["peak_rss_mb_each"] = sampler.by_name({rec.pid: "manager", **names})
    out["cpu_us_per_message_each"] = {names.get(pid, "manager" if pid == rec.pid else str(pid)):
                                      round(seconds / out["messages"] * 1e6, 2) for pid, seconds in sorted(each.items())}
    return out


def run_peer(name, python, paths, expected, loops, plain=False):
    sim = start_simulator(tls=not plain, extra=replay_args(paths, loops))
    work = tempfile.mkdtemp(prefix=f"bench-peer-{name}-")
    cfg = {"ws": sim.ws, "rest": sim.rest, "symbols": sim.symbols, "channels": CHANNELS, "out": work,
           "expected": {k: v for k, v in expected.items()}, "timeout": 240, "quiet": 5.0, "plain": plain}
    env = dict(os.environ) if plain else dict(os.environ, SSL_CERT_FILE=sim.ca_file, REQUESTS_CA_BUNDLE=sim.ca_file)
    client = subprocess.Popen([python, os.path.join(HERE, "peers", PEERS[name]), json.dumps(cfg)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    report = {}
    try:
        if client.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name} did not start (run it by hand: {python} bench/peers/{PEERS[name]})")
        wait(lambda: subscribed(sim, sim.symbols), 60, f"{name} to subscribe")
        procs = [psutil.Process(client.pid)]
        idle_rate, cpu0, start, sampler = measure(procs, sim, lambda: client.poll() is not None)
        report = json.loads(client.stdout.readline() or "{}")     # its own CPU time, taken as it finished
        cpu = report["cpu"] - cpu0 - idle_rate * (report["time"] - start)
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(30)
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    found = {k: report.get("counts", {}).get(k, 0) for k in expected}
    return result(name, expected, found, cpu, (report.get("last") or start) - start, sampler, 1)


def result(system, expected, found, cpu, seconds, sampler, processes):
    messages = sum(expected.values())
    return {"system": system, "messages": messages, "cpu_us_per_message": round(cpu / messages * 1e6, 2),
            "messages_per_second": round(messages / seconds) if seconds > 0 else None,
            "peak_rss_mb_total": round(sampler.total / 2**20, 1),
            "peak_rss_mb_largest": round(sampler.largest / 2**20, 1), "processes": processes,
            "every_message": found == expected, "missing": {k: expected[k] - found.get(k, 0) for k in expected}}


def setting(text):
    """``NAME=VALUE`` -> (name, value read as YAML)."""
    import yaml
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, yaml.safe_load(value)


def available(python, name):
    """None when the peer imports under ``python``, else why not."""
    if not python:
        return "no --peer-python given"
    probe = subprocess.run([python, "-c", f"import {IMPORTS[name]}, orjson"], capture_output=True, text=True)
    if probe.returncode:
        return (probe.stderr.strip().splitlines() or ["it does not import"])[-1]
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--loops", type=int, default=10,
                   help="passes of the captures, each continuing the last (default 10: about 160,000 messages)")
    p.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON"),
                   help="a Python with cryptofeed and unicorn-binance-websocket-api (env PEER_PYTHON)")
    p.add_argument("--json", action="store_true", help="print every run as JSON")
    p.add_argument("--plain", action="store_true",
                   help="serve every system over ws:// and http:// instead of TLS (wss://, https://)")
    p.add_argument("--only", choices=["binance_streamer", *PEERS], help="run this system alone")
    p.add_argument("--keep", metavar="DIR", help="record into DIR/run-N and keep the data (the recorder's runs)")
    p.add_argument("--set", metavar="NAME=VALUE", action="append", default=[], type=setting,
                   help="override a recorder setting (VALUE read as YAML; repeatable)")
    args = p.parse_args(argv)
    paths = [os.path.join(CAPTURES, name) for name in SPOT]
    if not all(os.path.exists(path) for path in paths):
        raise SystemExit(f"the captures are not here: {CAPTURES}")
    expected = expected_frames(paths, args.loops)
    systems = ["binance_streamer"] if args.only in (None, "binance_streamer") else []
    for name in PEERS:
        if args.only not in (None, name):
            continue
        why = available(args.peer_python, name)
        if why:
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            systems.append(name)
    runs = []
    for i in range(args.runs):
        for system in systems[i % len(systems):] + systems[:i % len(systems)]:
            keep = os.path.join(os.path.abspath(args.keep), f"run-{i + 1}") if args.keep else None
            one = (run_ours(paths, expected, args.loops, keep, dict(args.set), args.plain)
                   if system == "binance_streamer"
                   else run_peer(system, args.peer_python, paths, expected, args.loops, args.plain))
            runs.append(one)
            print(json.dumps(one), file=sys.stderr)
    if args.json:
        print(json.dumps(runs))
        return 0
    if not systems:
        return 1
    med = {s: {k: statistics.median(r[k] for r in runs if r["system"] == s and r[k] is not None)
               for k in ("cpu_us_per_message", "messages_per_second", "peak_rss_mb_total", "peak_rss_mb_largest")}
           for s in systems}
    ours = med.get("binance_streamer", med[systems[0]])
    print("| system | CPU µs/msg | msg/s | peak RSS MB (all / largest process) | every message | CPU vs ours |")
    print("| --- | --: | --: | --: | --- | --: |")
    for s in systems:
        m = med[s]
        exact = sum(r["every_message"] for r in runs if r["system"] == s)
        print(f"| {s} | {m['cpu_us_per_message']:.1f} | {m['messages_per_second']:.0f} | "
              f"{m['peak_rss_mb_total']:.0f} / {m['peak_rss_mb_largest']:.0f} | {exact} of {args.runs} | "
              f"{m['cpu_us_per_message'] / ours['cpu_us_per_message']:.2f} |")
    print(f"{sum(expected.values())} messages per run ({', '.join(f'{k} {v}' for k, v in expected.items())}); "
          f"medians of {args.runs}; {'plain ws:// + http://' if args.plain else 'TLS wss:// + https://'}; "
          f"{platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()} (ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
