"""How many messages per second the simulator sustains to one local client.

    python bench/simulator_throughput.py --symbols 10 --rate 2000 --seconds 20

Starts the simulator as its own process (journal off), connects one
reader in this process (aiohttp's client, the cheapest reader available, so
that the client is not what limits the figure on a 2-core machine) to every symbol's aggTrade, trade,
bookTicker and depth@100ms streams, and reports frames per second received,
the simulator's CPU use, and the lag between each event's exchange time and
its arrival (a lag that grows means the simulator cannot keep up).
"""

import asyncio
import os
import platform
import statistics
import sys
import time

import aiohttp
import orjson
import psutil

from common import SYMBOLS, load_parser, report, start_simulator


async def _measure(url, symbols, seconds, warmup):
    streams = "/".join(f"{s.lower()}@{k}" for s in symbols
                       for k in ("aggTrade", "trade", "bookTicker", "depth@100ms"))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/stream?streams={streams}", autoping=True,
                                      max_msg_size=1 << 22) as ws:
            end_warmup = time.monotonic() + warmup
            while time.monotonic() < end_warmup:
                await ws.receive()
            count, lags, t0 = 0, [], time.monotonic()
            deadline = t0 + seconds
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise SystemExit(f"connection ended: {msg.type}")
                count += 1
                if count % 200 == 0:
                    if time.monotonic() >= deadline:
                        break
                    data = orjson.loads(msg.data)["data"]
                    if "E" in data:
                        lags.append(time.time() * 1000 - data["E"])
            return count, time.monotonic() - t0, lags


def measure(url, symbols, seconds, warmup):
    return asyncio.run(_measure(url, symbols, seconds, warmup))


def main(argv=None):
    p = load_parser(__doc__, seconds=20)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pregenerate", action="store_true",
                   help="generate the market before sending it (simulator --pregenerate)")
    args = p.parse_args(argv)
    symbols = SYMBOLS[:args.symbols]
    server = start_simulator(symbols, args.rate, args.seed, tls=False,
                             pregenerate=args.warmup + args.seconds + 10 if args.pregenerate else 0)
    url = server.ws
    try:
        sim = psutil.Process(server.proc.pid)
        sim.cpu_percent(None)
        cpu0 = sim.cpu_times()
        me0 = psutil.Process().cpu_times()
        count, elapsed, lags = measure(url, symbols, args.seconds, args.warmup)
        cpu1 = sim.cpu_times()
        me1 = psutil.Process().cpu_times()
    finally:
        server.stop()
    half = len(lags) // 2
    result = {
        "symbols": len(symbols), "rate_per_symbol": args.rate, "seconds": round(elapsed, 2),
        "frames": count, "frames_per_second": round(count / elapsed),
        "simulator_cpu_percent": round(100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed, 1),
        "client_cpu_percent": round(100 * ((me1.user + me1.system) - (me0.user + me0.system)) / elapsed, 1),
        "lag_ms_p50": round(statistics.median(lags), 1) if lags else None,
        "lag_ms_first_half_median": round(statistics.median(lags[:half]), 1) if half else None,
        "lag_ms_second_half_median": round(statistics.median(lags[half:]), 1) if half else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
