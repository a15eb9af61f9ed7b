"""Real captured Binance traffic at full speed, over TLS and over plain sockets.

    python bench/replay.py --runs 3

The simulator replays real captures (../shared/realdata/cryptofeed: spot
BINANCE-b38f7c.0 + BINANCE-ee25be.0, 13 symbols; USD-M
BINANCE_FUTURES-1125a2.0, 5 symbols; with --market coinm the COIN-M
BINANCE_DELIVERY.ws.1.0, 10 contracts) as fast as the recorder reads, each
frame in its own write (so over TLS its own record, as a server writing
message by message sends it). The recorder runs with its defaults, all
symbols in one worker. Per run:

- the replay starts once the recorder is connected and idle (POST
  /sim/replay/start); the idle CPU of the same processes, measured just
  before, is subtracted;
- messages per second: the messages / (the last row's receive time, from the
  files' local_time_us, less the start);
- CPU microseconds per message, all recorder processes together (psutil);
- peak RSS of all recorder processes together (sampled every 50 ms), and per
  role (the largest worker, the writer, the order-book manager, the manager;
  the kernel's high-water mark, so no peak is missed); RSS at rest, once
  connected and before the replay starts;
- exact: every aggTrade, bookTicker and depth event of the capture is on
  disk once.

Runs alternate TLS and plain (the first transport swaps each run); the table
shows medians. ``--json`` prints every run. The captures are cryptofeed's:
this product includes software developed by Bryant Moscon
(http://www.bryantmoscon.com/).
"""

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import yaml

from common import ROOT, cpu_seconds, read_status, recorder_processes, start_simulator

CAPTURES = os.path.join(os.path.dirname(ROOT), "shared", "realdata", "cryptofeed")
MARKETS = {"spot": ["BINANCE-b38f7c.0", "BINANCE-ee25be.0"], "usdm": ["BINANCE_FUTURES-1125a2.0"],
           "coinm": ["BINANCE_DELIVERY.ws.1.0"]}      # with its BINANCE_DELIVERY.http.0.0 snapshots
STREAMS = ["aggTrade", "depth@100ms", "bookTicker", "kline_1m"]
ID_COLUMN = {"aggTrade": "agg_trade_id", "bookTicker": "update_id", "depth": "final_update_id"}


def expected_events(paths):
    """{stream kind: number of frames} in the captures (what must reach the disk)."""
    counts = {}
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                i = line.find(b'{"stream":"')
                if i < 0:
                    continue
                kind = line[i + 11:line.index(b'"', i + 11)].split(b"@", 1)[1].decode()
                kind = "depth" if kind.startswith("depth") else kind
                counts[kind] = counts.get(kind, 0) + 1
    return {k: v for k, v in counts.items() if k in ID_COLUMN}


def on_disk(data_dir):
    """{stream kind: distinct ids on disk}, rows of those streams, the last receive time (us)."""
    ids, rows, last = {}, 0, 0
    for path in glob.glob(os.path.join(data_dir, "*", "*", "*.csv")):
        kind = os.path.basename(path).split("-")[1]
        with open(path, "rb") as f:
            header = f.readline().rstrip().split(b",")
            body = f.read()
        if (kind not in ID_COLUMN and not kind.startswith("kline_")) or b"local_time_us" not in header:
            continue
        lines = body.splitlines()
        rows += len(lines)
        recv = header.index(b"local_time_us")
        col = header.index(ID_COLUMN[kind].encode()) if kind in ID_COLUMN else None
        for line in lines:
            cells = line.split(b",")
            if len(cells) <= recv:
                continue                # a line still being written
            last = max(last, int(cells[recv]))
            if col is not None:
                ids.setdefault(kind, set()).add(cells[col])
    return {k: len(v) for k, v in ids.items()}, rows, last


ROLES = ("worker", "writer", "orderbook", "manager")


def high_water_mark(pid):
    """The kernel's peak RSS of a process in bytes (Linux: VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_by_role(procs, run_dir, manager_pid, peak=False):
    """{role: RSS in bytes} of the living processes (``peak``: the largest
    each ever had, where the kernel tells): the largest worker, the writer,
    the order-book manager, the manager, and ``other`` (what multiprocessing
    starts itself, e.g. its resource tracker)."""
    role_of = {c["pid"]: c["role"] for c in read_status(run_dir).get("processes", []) if c.get("pid")}
    role_of[manager_pid] = "manager"
    out = {}
    for p in procs:
        try:
            rss = (peak and high_water_mark(p.pid)) or p.memory_info().rss
        except psutil.Error:
            continue
        role = role_of.get(p.pid, "other")
        out[role] = max(out.get(role, 0), rss)
    return out


def mb(by_role):
    return {role: round(v / 2**20, 1) for role, v in sorted(by_role.items())}


def connected(status):
    conns = [c for n, ch in status.get("children", {}).items() if n.startswith("worker")
             for c in ch.get("connections", [])]
    return status.get("state") == "RUNNING" and conns and all(c["connected"] for c in conns)


def one_run(market, tls, idle_seconds=2.0, env=None):
    paths = [os.path.join(CAPTURES, name) for name in MARKETS[market]]
    expected = expected_events(paths)
    sim = start_simulator(tls=tls, extra=["--replay", ",".join(paths), "--replay-speed", "0",
                                          "--replay-connections", "1000000", "--write-each-frame"])
    work = tempfile.mkdtemp(prefix="bench-replay-")
    cfg = {"market": market, "symbols": sim.symbols, "streams": STREAMS, **sim.endpoints(),
           "symbols_per_worker": len(sim.symbols), "data_dir": "data", "log_dir": "logs", "run_dir": "run"}
    with open(os.path.join(work, "config.yaml"), "w") as f:
        yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}, f)
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", "config.yaml"], cwd=work, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir, data_dir = os.path.join(work, "run"), os.path.join(work, "data")
    try:
        wait(lambda: connected(read_status(run_dir)), 60, "the recorder to connect")
        procs = recorder_processes(rec.pid)
        rest = rss_by_role(procs, run_dir, rec.pid)
        idle0, i0 = cpu_seconds(procs), time.monotonic()
        time.sleep(idle_seconds)
        idle_rate = (cpu_seconds(procs) - idle0) / (time.monotonic() - i0)
        cpu0, m0 = cpu_seconds(procs), time.monotonic()
        start_us = time.time_ns() // 1000
        sim.post("/sim/replay/start")
        rss, peak, stable, last_rows = 0, {}, None, -1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = rss_by_role(procs, run_dir, rec.pid, peak=True)
            rss = max(rss, sum(p.memory_info().rss for p in procs if p.is_running()))
            peak = {role: max(v, peak.get(role, 0)) for role, v in now.items()}
            if not sim.stats()["replay"]["finished"]:
                continue
            time.sleep(0.2)
            _, rows, _ = on_disk(data_dir)
            if rows != last_rows:
                last_rows, stable = rows, time.monotonic()
            elif time.monotonic() - stable > 2.0:       # no new row for a flush and more
                break
        else:
            raise SystemExit("the recording did not settle within 120 s")
        cpu = cpu_seconds(procs) - cpu0 - idle_rate * (time.monotonic() - m0)
        found, _, last_us = on_disk(data_dir)
    finally:
        rec.terminate()
        rec.wait(60)
        sim.stop()
    messages = sum(expected.values())
    return {"market": market, "transport": "tls" if tls else "plain", "messages": messages,
            "messages_per_second": round(messages / ((last_us - start_us) / 1e6)),
            "cpu_us_per_message": round(cpu / messages * 1e6, 2), "peak_rss_mb_total": round(rss / 2**20, 1),
            "peak_rss_mb": mb(peak), "rest_rss_mb": mb(rest), "exact": found == expected,
            "missing": {k: expected[k] - found.get(k, 0) for k in expected}}


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--market", default="spot,usdm", help="spot, usdm, coinm, or a list (default: spot,usdm)")
    p.add_argument("--transport", default="tls,plain", help="tls, plain or both (default)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in the recorder's environment (its children inherit it), e.g. MALLOC_ARENA_MAX=2")
    p.add_argument("--json", action="store_true", help="print every run as JSON")
    args = p.parse_args(argv)
    env = dict(os.environ, **dict(e.split("=", 1) for e in args.env))
    names = [t for t in ("tls", "plain") if t in args.transport.split(",")]
    transports = [t == "tls" for t in names]
    if not os.path.isdir(CAPTURES):
        raise SystemExit(f"the captures are not here: {CAPTURES}")
    runs = []
    for i in range(args.runs):
        order = transports if i % 2 == 0 else transports[::-1]
        for market in args.market.split(","):
            for tls in order:
                runs.append(one_run(market, tls, env=env))
                print(json.dumps(runs[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(runs))
        return 0
    print(f"{'market':<6} {'transport':<9} {'msg/s':>8} {'CPU us/msg':>10} {'peak RSS MB':>11}  exact (runs)")
    medians = {}
    for market in args.market.split(","):
        for transport in names:
            mine = [r for r in runs if r["market"] == market and r["transport"] == transport]
            med = {k: statistics.median(r[k] for r in mine)
                   for k in ("messages_per_second", "cpu_us_per_message", "peak_rss_mb_total")}
            medians[market, transport] = med
            print(f"{market:<6} {transport:<9} {med['messages_per_second']:>8.0f} {med['cpu_us_per_message']:>10.2f} "
                  f"{med['peak_rss_mb_total']:>11.1f}  {sum(r['exact'] for r in mine)} of {len(mine)}")
        if len(names) < 2:
            continue
        tls, plain = medians[market, "tls"], medians[market, "plain"]
        print(f"{market:<6} tls/plain {tls['messages_per_second'] / plain['messages_per_second']:>8.2f} "
              f"{tls['cpu_us_per_message'] / plain['cpu_us_per_message']:>10.2f}")
    print_roles(args.market.split(","), names, runs)
    sizes = {r["market"]: r["messages"] for r in runs}
    print(f"messages per run: {', '.join(f'{m} {n}' for m, n in sizes.items())}; medians of {args.runs}; "
          f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    return 0


def print_roles(markets, transports, runs):
    """Median RSS (MB) per process role: peak during the replay, and at rest."""
    print(f"{'RSS MB':<16} " + " ".join(f"{r:>9}" for r in ROLES) + "  (peak during the replay / at rest)")
    for market in markets:
        for transport in transports:
            mine = [r for r in runs if r["market"] == market and r["transport"] == transport]
            for when in ("peak", "rest"):
                cells = [statistics.median(r[f"{when}_rss_mb"].get(role, 0) for r in mine) for role in ROLES]
                print(f"{market + ' ' + transport + ' ' + when:<16} " + " ".join(f"{c:>9.1f}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
