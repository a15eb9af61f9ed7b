"""python -m binance_streamer.simulator: a local Binance-protocol exchange."""

import argparse
import asyncio
import logging
import signal
import sys

from aiohttp import web

from ..markets import DEFAULT_SYMBOLS, MARKETS
from .config import SimConfig
from .faults import FAULTS, FaultError, parse_cli
from .server import EXCHANGE, build_app, make_site, urls

EPILOG = """examples:
  python -m binance_streamer.simulator --port 8765 --market spot --symbols BTCUSDT,ETHUSDT --seed 1 --rate 50
  python -m binance_streamer.simulator --market usdm --fault drop_every=5 --fault malformed_every=2
  python -m binance_streamer.simulator --market coinm --symbols BTCUSD_PERP,ETHUSD_PERP,BTCUSD_261225
  python -m binance_streamer.simulator --replay ../shared/realdata/cryptofeed/BINANCE.ws.1.0
  python -m binance_streamer.simulator --ca-dir run/sim    # then: binance-streamer ... --ca-file run/sim/simulator-ca.pem

TLS: wss:// and https:// by default, with a throw-away certificate authority made at start; its
PEM file is printed as ca=PATH (give it to the recorder's ca_file). --plain serves ws:// and http://.

faults (--fault KEY=VALUE here, or POST /sim/faults with {"KEY": VALUE} at run time):
""" + "\n".join(f"  {k:16} {v[1]}" for k, v in FAULTS.items())


def parser():
    p = argparse.ArgumentParser(prog="python -m binance_streamer.simulator",
                                description="Serve Binance's public market-data protocol on 127.0.0.1.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port for WebSocket and REST (0: any free port)")
    p.add_argument("--market", choices=MARKETS, default="spot", help="which Binance market to imitate")
    p.add_argument("--symbols", help="comma-separated symbols to trade (default: BTCUSDT,ETHUSDT; "
                                     "coinm BTCUSD_PERP,ETHUSD_PERP)")
    p.add_argument("--extra-symbols", default="", help="symbols listed in exchangeInfo with status BREAK")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same market")
    p.add_argument("--rate", type=float, default=50.0,
                   help="book changes and taker orders per second per symbol (1 to 5000 and more)")
    p.add_argument("--rates", default="", metavar="SYM=RATE,...",
                   help="the rate of single symbols, e.g. BTCUSDT=40,S001USDT=0.2 (others: --rate)")
    p.add_argument("--lifetime", type=float, default=86_400.0, help="maximum connection lifetime, seconds")
    p.add_argument("--shutdown-notice", type=float, default=1.0,
                   help="seconds between serverShutdown and a planned close")
    p.add_argument("--ping-interval", type=float, help="seconds between server pings (Binance: spot 20, futures 180)")
    p.add_argument("--pong-timeout", type=float, help="seconds to wait for a pong (Binance: spot 60, futures 600)")
    p.add_argument("--weight-limit", type=int, help="REST weight per minute (Binance: spot 6000, usdm and coinm 2400)")
    p.add_argument("--journal", default="off", help="record sent frames: off, memory, or a file path")
    p.add_argument("--replay", help="serve a captured session (cryptofeed capture file) instead of a simulated market")
    p.add_argument("--replay-speed", type=float, default=1.0, help="replay pace: 1 original, 2 twice as fast, 0 at once")
    p.add_argument("--replay-seconds", type=float, help="replay only the capture's first SECONDS")
    p.add_argument("--replay-loops", type=int, default=1,
                   help="play the capture this many times, each pass continuing the last: ids and times shifted, "
                        "the book bridged back to the capture's first snapshot (for longer benchmarks)")
    p.add_argument("--replay-connections", type=int, default=1,
                   help="start the replay once this many connections are open (default 1)")
    p.add_argument("--pregenerate", type=float, default=0.0, metavar="SECONDS",
                   help="generate SECONDS of market before serving, in several processes, then send it on time "
                        "(for load tests faster than the live model)")
    p.add_argument("--plain", action="store_true", help="serve ws:// and http:// instead of wss:// and https://")
    p.add_argument("--cert", help="the server's certificate chain (PEM) instead of a throw-away one")
    p.add_argument("--key", help="the private key of --cert (PEM), when not in the same file")
    p.add_argument("--ca-dir", help="directory for the throw-away CA's PEM file (default: a temporary one)")
    p.add_argument("--write-each-frame", action="store_true",
                   help="one write (so one TLS record) per frame, as a server writing message by message")
    p.add_argument("--series-history-days", type=float, default=30.0,
                   help="usdm: days of history of the REST series (Binance: 30)")
    p.add_argument("--fault", action="append", default=[], metavar="KEY=VALUE", help="a fault to inject from the start")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return p


def parse_rates(text):
    """``"BTCUSDT=40,S001USDT=0.2"`` -> {symbol: rate}; ValueError on a bad item."""
    rates = {}
    for item in filter(None, text.split(",")):
        symbol, sep, rate = item.partition("=")
        try:
            rates[symbol.strip().upper()] = float(rate)
        except ValueError:
            raise ValueError(f"--rates: {item!r} is not SYMBOL=RATE (e.g. BTCUSDT=40)") from None
        if not sep:
            raise ValueError(f"--rates: {item!r} is not SYMBOL=RATE (e.g. BTCUSDT=40)")
    return rates


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s simulator %(name)s: %(message)s")
    try:
        faults = parse_cli(args.fault)
        names = args.symbols or ",".join(DEFAULT_SYMBOLS[args.market])
        cfg = SimConfig(market=args.market, symbols=tuple(s for s in names.split(",") if s),
                        extra_symbols=tuple(s for s in args.extra_symbols.split(",") if s),
                        series_history_days=args.series_history_days,
                        seed=args.seed, rate=args.rate, rates=parse_rates(args.rates), host=args.host, port=args.port,
                        lifetime=args.lifetime, shutdown_notice=args.shutdown_notice,
                        ping_interval=args.ping_interval, pong_timeout=args.pong_timeout,
                        weight_limit=args.weight_limit, journal=args.journal, replay=args.replay,
                        replay_speed=args.replay_speed, replay_seconds=args.replay_seconds,
                        replay_connections=args.replay_connections, replay_loops=args.replay_loops, pregenerate=args.pregenerate, faults=faults,
                        tls=not args.plain, certfile=args.cert, keyfile=args.key, ca_dir=args.ca_dir,
                        write_each_frame=args.write_each_frame).resolved()
        app = build_app(cfg)
    except (FaultError, ValueError, OSError) as exc:
        print(f"simulator: error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(app, cfg))
    except OSError as exc:          # the port is taken, or the address is not this machine's
        print(f"simulator: error: cannot listen on {cfg.host}:{cfg.port} ({exc.strerror or exc}); "
              "choose another --port (0: any free port)", file=sys.stderr)
        return 1
    return 0


async def _serve(app, cfg):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site, certs = make_site(runner, cfg)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    ex = app[EXCHANGE]
    rest, ws = urls(ex.cfg, port)
    ca = f" ca={certs.ca_file}" if certs else ""
    print(f"simulator ready: market={ex.cfg.market} symbols={','.join(ex.symbols)} "
          f"rest={rest} ws={' and '.join(ws.values())}{ca}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    if certs is not None:
        certs.close()


if __name__ == "__main__":
    sys.exit(main())
