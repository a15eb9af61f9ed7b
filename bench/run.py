"""What the recorder costs: throughput, CPU, memory, disk and latency.

    python bench/run.py --symbols 10 --rate 2000 --seconds 30

Starts the simulator (its own process, journal off) and the recorder
(``python -m binance_streamer``), waits until every book is in sync, then
measures over ``--seconds``. The simulator first generates the market in
every core (``--pregenerate``; it takes a while) and then only sends it, so
that it can feed more than its live model could (``--live`` for that one).
Measured:

- messages per second delivered by the simulator and rows written;
- CPU seconds per million messages, all recorder processes together and per
  process (psutil), and peak RSS per process;
- bytes on disk per million messages, per stream;
- latency from an event's exchange time (the simulator stamps it when it
  sends) to the row being on disk, found by tailing the aggTrade files:
  p50, p99, max; and whether the receive lag grows (first vs second half);
- the writer's time to flush 5,000 depth rows, and the floor: the same parse,
  format and write work in one loop with no processes or queues.

Prints a table, or JSON with ``--json``.
"""

import glob
import json
import os
import platform
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

from binance_streamer import config as configmod  # noqa: E402
from binance_streamer.binance import parse  # noqa: E402
from binance_streamer.simulator.market import SymbolMarket  # noqa: E402
from binance_streamer.writer import Writer  # noqa: E402
from common import SYMBOLS, load_parser, read_status, recorder_processes, report, start_simulator  # noqa: E402

STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker", "kline_1m"]
SYNC_ALLOWANCE = 30         # seconds of generated market for the recorder to start and sync


_ROLES = {}     # pid -> process name from the recorder's status file


def _label(procs, p):
    return "manager" if p is procs[0] else _ROLES.get(p.pid, "other")


def cpu_by_name(procs):
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[_label(procs, p)] = t.user + t.system
        except psutil.Error:
            pass
    return out


class Tail:
    """New complete lines of the aggTrade files, to time rows reaching the disk."""

    def __init__(self, paths):
        self.pos = {p: os.path.getsize(p) for p in paths}
        self.latencies = []

    def poll(self):
        now_ms = time.time() * 1000
        for path, pos in self.pos.items():
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.pos[path] = pos + end
            for line in data[:end].splitlines():
                cells = line.split(b",")
                if cells[-1] == b"0":                  # live rows only; event_time is column 8 (spot)
                    self.latencies.append(now_ms - int(cells[8]))


def floor_us_per_message(n=50_000):
    """Parse + format + write of the same traffic in one loop, no processes."""
    m = SymbolMarket("spot", "BTCUSDT", 1, 5000, 1_700_000_000_000_000)
    frames = [(k, b'{"stream":"btcusdt@%s","data":%s}' % (k.encode(), p))
              for k, p in m.advance(1_700_000_000_000_000 + 20_000_000, {"aggTrade", "trade", "bookTicker",
                                                                          "depth@100ms"})][:n]
    handlers = {"aggTrade": parse.agg_trade, "trade": parse.trade, "bookTicker": parse.book_ticker,
                "depth@100ms": parse.depth}
    with tempfile.TemporaryFile() as f:
        t0 = time.perf_counter()
        out = []
        for _, frame in frames:
            msg = orjson.loads(frame)
            kind = msg["stream"].split("@", 1)[1]
            line = handlers[kind]("spot", msg["data"], 1)[1]
            out.append("".join(line) if isinstance(line, list) else line)
            if len(out) >= 5000:
                f.write("".join(out).encode())
                out.clear()
        f.write("".join(out).encode())
        elapsed = time.perf_counter() - t0
    return elapsed / len(frames) * 1e6


def depth_flush_ms(tmp):
    cfg = configmod.load(None, {"data_dir": tmp, "symbols": "BTCUSDT"}).replace(batch_size=10**9)
    w = Writer(cfg)
    lines = [f"1700000000000,,{i},{i},,bid,30000.{i % 100:02d}000000,0.{i:08d},1700000000000000\n" for i in range(5000)]
    w.add_rows("BTCUSDT", "depth", "2026-01-01", list(range(5000)), lines)
    f = next(iter(w.files.values()))
    t0 = time.perf_counter()
    w._flush_file(f)
    elapsed = time.perf_counter() - t0
    w.close()
    return elapsed * 1000


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def measure(args, tls):
    """One run over wss:// + https:// (``tls``) or ws:// + http://."""
    symbols = SYMBOLS[:args.symbols]
    work = tempfile.mkdtemp(prefix="bench-")
    sim = start_simulator(symbols, args.rate, tls=tls, pregenerate=0 if args.live else args.seconds + SYNC_ALLOWANCE)
    cfg = {"symbols": symbols, "streams": STREAMS, **sim.endpoints(),
           "data_dir": os.path.join(work, "data"), "log_dir": os.path.join(work, "logs"),
           "run_dir": os.path.join(work, "run"), "snapshot_depth": 1000, "symbols_per_worker": args.symbols_per_worker}
    with open(os.path.join(work, "config.yaml"), "w") as f:
        yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}, f)
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", os.path.join(work, "config.yaml")],
                           cwd=work, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = read_status(cfg["run_dir"])
            if (st.get("children", {}).get("orderbook", {}).get("in_sync") == len(symbols)
                    and sim.stats()["frames_sent"] > 0):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("books did not sync within 120 s")
        time.sleep(2)
        for proc_info in st["processes"]:
            _ROLES[proc_info["pid"]] = proc_info["name"]
        procs = recorder_processes(rec.pid)
        tail = Tail(sorted(glob.glob(os.path.join(cfg["data_dir"], "spot", "*", "*-aggTrade-*.csv"))))
        disk0 = {path: os.path.getsize(path) for path in glob.glob(os.path.join(cfg["data_dir"], "spot", "*", "*.csv"))}
        cpu0, stats0, t0 = cpu_by_name(procs), sim.stats(), time.monotonic()
        rss, polls, lag = {}, 0, []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(0.02)
            tail.poll()
            polls += 1
            for proc in procs if polls % 10 == 0 else ():
                try:
                    label = _label(procs, proc)
                    rss[label] = max(rss.get(label, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass
            if polls % 50 == 0:
                lag += connection_lags(read_status(cfg["run_dir"]))
        elapsed = time.monotonic() - t0
        cpu1, stats1 = cpu_by_name(procs), sim.stats()
        disk1 = {path: os.path.getsize(path) for path in glob.glob(os.path.join(cfg["data_dir"], "spot", "*", "*.csv"))}
    finally:
        rec.terminate()
        rec.wait(120)
        sim.stop()
    messages = stats1["frames_sent"] - stats0["frames_sent"]
    cpu = {k: cpu1.get(k, 0) - cpu0.get(k, 0) for k in cpu1}
    by_stream = {}
    for path, size in disk1.items():
        stream = os.path.basename(path).split("-")[1]
        by_stream[stream] = by_stream.get(stream, 0) + size - disk0.get(path, 0)
    half = len(tail.latencies) // 2
    result = {
        "transport": "wss:// + https://" if tls else "ws:// + http://",
        "symbols": len(symbols), "rate_per_symbol": args.rate, "seconds": round(elapsed, 1),
        "messages_per_second": round(messages / elapsed),
        "cpu_us_per_message": round(sum(cpu.values()) / messages * 1e6, 2) if messages else None,
        "cpu_seconds_per_million_messages": {k: round(v / messages * 1e6, 1) for k, v in sorted(cpu.items())},
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sorted(rss.items())},
        "peak_rss_mb_total": round(sum(rss.values()) / 2**20, 1),
        "disk_bytes_per_million_messages": {k: round(v / messages * 1e6) for k, v in sorted(by_stream.items())},
        "latency_ms_p50": percentile(tail.latencies, 50), "latency_ms_p99": percentile(tail.latencies, 99),
        "latency_ms_max": max(tail.latencies) if tail.latencies else None,
        "latency_ms_median_first_half": statistics.median(tail.latencies[:half]) if half else None,
        "latency_ms_median_second_half": statistics.median(tail.latencies[half:]) if half else None,
        "recorder_lag_s_p50": percentile(lag, 50), "recorder_lag_s_max": max(lag) if lag else None,
    }
    return result, work


def connection_lags(status):
    """Each connection's worst lag since its last report (status file)."""
    return [c["lag_max_s"] for name, child in status.get("children", {}).items() if name.startswith("worker")
            for c in child.get("connections", []) if c.get("lag_max_s") is not None]


def main(argv=None):
    p = load_parser(__doc__, seconds=30)
    p.add_argument("--symbols-per-worker", type=int, default=1)
    p.add_argument("--live", action="store_true",
                   help="simulate the market while sending it (one process: about 22,000 messages/s at most) "
                        "instead of generating it first")
    p.add_argument("--transport", default="tls,plain",
                   help="tls (wss:// + https://, production), plain (ws:// + http://), or both in that order")
    args = p.parse_args(argv)
    results, work = [], None
    for transport in args.transport.split(","):
        if transport not in ("tls", "plain"):
            raise SystemExit(f"--transport: tls or plain, not {transport!r}")
        result, work = measure(args, transport == "tls")
        results.append(result)
    extra = {"depth_flush_ms_per_5000_rows": round(depth_flush_ms(work), 2),
             "floor_us_per_message": round(floor_us_per_message(), 2),
             "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    for result in results:
        if result["cpu_us_per_message"]:
            result["ratio_to_floor"] = round(result["cpu_us_per_message"] / extra["floor_us_per_message"], 1)
    if args.json:
        print(json.dumps({"runs": results, **extra}))
    else:
        for key in results[0]:
            print(f"{key:34} " + "   |   ".join(str(r[key]) for r in results))
        report(extra, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
