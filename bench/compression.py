"""What compression of closed day files saves and costs.

    python bench/compression.py --symbols 2 --rate 500 --seconds 30 --depth-mb 300

1. Records ``--seconds`` from the simulator (compression none) and reports, per
   stream, bytes on disk per million messages: plain, gzip and zstd (each day
   file compressed by compressor.compress, the recorder's own procedure).
2. Writes a ``--depth-mb`` synthetic depth file of a past day and times one
   compressor run on it per codec (a process at nice 19, as the writer starts
   it): MB/s of plain input and the CPU seconds it used.
3. Records again (compression gzip, then zstd, compress_after 0), puts that
   file in place as a past day's once the measurement runs (the writer's
   next scan hands it to the compressor) and compares the receive-to-disk
   latency of live aggTrade rows (the time a row is readable in its file less
   its exchange event time, as bench/run.py measures it) while the
   compressor runs with the rest of the recording.
"""

import glob
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
import yaml

from common import SYMBOLS, load_parser, recorder_processes, report, start_simulator  # noqa: E402
from run import Tail, percentile  # noqa: E402
from binance_streamer import compressor, csvfiles  # noqa: E402

PAST = "2026-01-01"


def record(args, work, compression, big=None, target=None):
    """Run the recorder for ``--seconds``; with ``big``, that file is put in
    place as a past day's plain file once the measurement runs (the writer's
    next scan, within 60 s, hands it to the compressor), and the run lasts
    until it is compressed. Returns (latencies ms while no compression
    runs, latencies while it runs, messages/s)."""
    symbols = SYMBOLS[:args.symbols]
    os.makedirs(work, exist_ok=True)
    sim = start_simulator(symbols, args.rate, tls=False)
    cfg = {"symbols": symbols, **sim.endpoints(), "data_dir": os.path.join(work, "data"),
           "log_dir": os.path.join(work, "logs"), "run_dir": os.path.join(work, "run"), "snapshot_depth": 1000,
           "compression": compression, "compress_after": 0}
    with open(os.path.join(work, "config.yaml"), "w") as f:
        yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}, f)
    rec = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", os.path.join(work, "config.yaml")],
                           cwd=work, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    quiet, busy = [], []
    try:
        deadline = time.monotonic() + 120
        while not glob.glob(os.path.join(cfg["data_dir"], "spot", "*", "*-aggTrade-*.csv")):
            if time.monotonic() > deadline:
                raise SystemExit("no aggTrade file within 120 s")
            time.sleep(0.2)
        time.sleep(1)
        today = time.strftime('%Y-%m-%d', time.gmtime())
        tail = Tail(sorted(glob.glob(os.path.join(cfg["data_dir"], "spot", "*", f"*-aggTrade-{today}.csv"))))
        if big is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(big, target + ".part")
            os.replace(target + ".part", target)
        sent0, t0 = sim.stats()["frames_sent"], time.monotonic()
        while time.monotonic() - t0 < args.seconds or (big is not None and os.path.exists(target)):
            time.sleep(0.02)
            running = big is not None and os.path.exists(target) and _compressor_running(rec.pid)
            n = len(tail.latencies)
            tail.poll()
            (busy if running else quiet).extend(tail.latencies[n:])
            if time.monotonic() - t0 > 900:
                raise SystemExit("the big file was not compressed within 900 s")
        elapsed, sent = time.monotonic() - t0, sim.stats()["frames_sent"] - sent0
    finally:
        rec.terminate()
        rec.wait(120)
        sim.stop()
    return quiet, busy, sent / elapsed


def _compressor_running(pid):
    for p in recorder_processes(pid):
        try:
            if "binance_streamer.compressor" in " ".join(p.cmdline()):
                return True
        except psutil.Error:
            pass
    return False


def messages_in(path, stream):
    """Messages a file holds: rows, or depth events (one per final update id)."""
    with open(path, "rb") as f:
        next(f, None)
        if stream != "depth":
            return sum(1 for _ in f)
        return len({line.split(b",")[3] for line in f})


def sizes_per_million(work):
    out = {}
    for path in sorted(glob.glob(os.path.join(work, "data", "spot", "*", "*.csv"))):
        stream = csvfiles.parse_name(os.path.basename(path))[1]
        n = messages_in(path, stream) if stream not in ("orderbook", "depthSnapshot", "gaps") else None
        entry = out.setdefault(stream, {"messages": 0, "plain": 0, "gzip": 0, "zstd": 0})
        entry["messages"] += n or 0
        entry["plain"] += os.path.getsize(path)
        for codec in ("gzip", "zstd"):
            copy = os.path.join(work, "copy", os.path.basename(path))
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copy(path, copy)
            entry[codec] += os.path.getsize(compressor.compress(copy, codec))
            os.unlink(copy + csvfiles.COMPRESSED[codec])
    result = {}
    for stream, e in out.items():
        if e["messages"]:
            per = 1e6 / e["messages"]
            result[stream] = {k: f"{e[k] * per / 2**20:.1f} MB" for k in ("plain", "gzip", "zstd")}
        else:
            result[stream] = {k: f"{e[k] / 2**20:.2f} MB in all" for k in ("plain", "gzip", "zstd")}
        result[stream]["ratio gzip/zstd"] = f"{e['plain'] / e['gzip']:.1f}x / {e['plain'] / e['zstd']:.1f}x"
    return result


def write_depth(path, megabytes, seed=1):
    """Depth rows shaped like the recorder's (events of ~10 levels) until the file has ``megabytes``."""
    rng = random.Random(seed)
    uid, t = 0, 1767225600000            # ids stay below the simulator's (from 1,000,000): no false "damage"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(csvfiles.header("spot", "depth").decode())
        while f.tell() < megabytes * 2**20:
            chunk = []
            for _ in range(2000):
                first = final = uid + 1
                t += 100
                for _ in range(10):
                    side = rng.choice(("bid", "ask"))
                    p = 30000 + (-1 if side == "bid" else 1) * rng.randint(1, 300) * 0.01
                    q = "0.00000000" if rng.random() < 0.3 else f"{rng.random():.8f}"
                    chunk.append(f"{t},,{first},{final},,{side},{p:.8f},{q},{t * 1000 + rng.randint(100, 9000)}\n")
                uid = final
            f.write("".join(chunk))


def time_run(path, codec, work):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    size = os.path.getsize(path)
    t0 = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "binance_streamer.compressor", "--codec", codec,
                            "--lock", os.path.join(work, "bench.lock"), path])
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    packed = path + csvfiles.COMPRESSED[codec]
    result = {"exit": code, "MB/s": round(size / 2**20 / wall, 1), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
              "ratio": round(size / os.path.getsize(packed), 1)}
    return result, packed


def _pct(values):
    if not values:
        return "no rows"
    return f"{percentile(values, 50):.0f} / {percentile(values, 99):.0f} ({len(values)} rows)"


def real(args):
    """Disk per million messages of real traffic, plain and compressed."""
    from peer import CAPTURES, SPOT, expected_frames, run_ours
    paths = [os.path.join(CAPTURES, name) for name in SPOT]
    work = tempfile.mkdtemp(prefix="bench-compress-real-")
    try:
        run = run_ours(paths, expected_frames(paths, args.real), args.real, keep=work)
        out = {"messages recorded": run["messages"], "every message on disk": run["every_message"],
               "disk per million messages (plain, gzip, zstd)": sizes_per_million(work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(out, args.json)


def main(argv=None):
    p = load_parser(__doc__, 30)
    p.add_argument("--depth-mb", type=int, default=300)
    p.add_argument("--real", type=int, metavar="LOOPS", default=0,
                   help="instead: disk per million messages of real captured spot traffic (the captures of "
                        "bench/peer.py, played LOOPS times) recorded by the recorder, then compressed")
    args = p.parse_args(argv)
    if args.real:
        return real(args)
    args.symbols = min(args.symbols, len(SYMBOLS))
    work = tempfile.mkdtemp(prefix="bench-compress-")
    out = {}
    try:
        base = os.path.join(work, "sizes")
        os.makedirs(base)
        quiet, _, rate = record(args, base, "none")
        out["disk per million messages (plain, gzip, zstd)"] = sizes_per_million(base)
        big = os.path.join(work, "big", "BTCUSDT-depth-" + PAST + ".csv")
        write_depth(big, args.depth_mb)
        size = os.path.getsize(big)
        for codec in ("gzip", "zstd"):
            keep = big + ".orig"
            shutil.copy(big, keep)
            out[f"compressor {codec} on {size / 2**20:.0f} MB depth"], packed = time_run(big, codec, work)
            os.unlink(packed)
            os.replace(keep, big)
        for codec in ("gzip", "zstd"):
            rec = os.path.join(work, f"while-{codec}")
            target = os.path.join(rec, "data", "spot", SYMBOLS[0], os.path.basename(big))
            quiet, busy, rate = record(args, rec, codec, big, target)
            out[f"receive-to-disk ms p50/p99, {codec}"] = \
                f"no run: {_pct(quiet)}; while the {size / 2**20:.0f} MB file is compressed: {_pct(busy)} " \
                f"({rate:.0f} msg/s)"
            shutil.rmtree(rec, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(out, args.json)


if __name__ == "__main__":
    main()
