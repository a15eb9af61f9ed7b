"""The simulator as a server: build the aiohttp app, run it in the
foreground (``python -m binance_streamer.simulator``) or in a background
thread for tests and benchmarks (:class:`Simulator`)."""

import asyncio
import logging
import ssl
import threading
import urllib.request

import orjson
from aiohttp import web

from . import ws
from ..binance.endpoints import SPLIT_WS
from .config import SimConfig
from .exchange import Exchange
from .replay import load_replay
from .tape import Tape
from .rest import Rest
from .tls import Certificates

log = logging.getLogger(__name__)

EXCHANGE = web.AppKey("exchange", Exchange)
CLOCK = web.AppKey("clock", asyncio.Future)


def build_app(cfg):
    if cfg.pregenerate:
        replay = Tape(cfg, cfg.pregenerate)
    else:
        replay = load_replay(cfg.replay, cfg.replay_speed, cfg.replay_seconds, cfg.replay_loops) if cfg.replay else None
    if replay is not None and replay.market != cfg.market:
        cfg.market = replay.market
        cfg = SimConfig(**{**cfg.__dict__, "ping_interval": None, "pong_timeout": None,
                           "incoming_limit": None, "weight_limit": None}).resolved()
    exchange = Exchange(cfg, replay)
    app = web.Application()
    app[EXCHANGE] = exchange
    app.add_routes(ws.routes(exchange) + Rest(exchange).routes())

    async def start_clock(app):
        app[CLOCK] = asyncio.ensure_future(exchange.run())

    async def stop_clock(app):
        app[CLOCK].cancel()
        for conn in list(exchange.conns.values()):
            exchange.close_conn(conn, 1001, "server stopping")
        exchange.journal.close()

    app.on_startup.append(start_clock)
    app.on_shutdown.append(stop_clock)
    return app


def make_site(runner, cfg):
    """The listening site, over TLS unless ``cfg.tls`` is off; and its
    :class:`~.tls.Certificates` (None without TLS)."""
    certs = Certificates(cfg.certfile, cfg.keyfile, directory=cfg.ca_dir) if cfg.tls else None
    site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=certs.context if certs else None)
    return site, certs


def ws_root(cfg, port):
    """The WebSocket root URL: what the recorder's ``ws_url`` setting takes."""
    return f"ws{'s' if cfg.tls else ''}://{cfg.host}:{port}"


def urls(cfg, port):
    """``(rest url, {root: ws url})`` of a simulator listening on ``port``."""
    rest, base = f"http{'s' if cfg.tls else ''}://{cfg.host}:{port}", ws_root(cfg, port)
    if cfg.market in SPLIT_WS:
        return rest, {"public": base + "/public", "market": base + "/market"}
    return rest, {cfg.market: base}


class Simulator:
    """A simulated exchange on 127.0.0.1, in a background thread.

    >>> with Simulator(SimConfig(symbols=("BTCUSDT",), seed=1)) as sim:
    ...     sim.rest_url, sim.ws_url
    """

    def __init__(self, cfg=None, **overrides):
        cfg = cfg or SimConfig()
        if overrides:
            cfg = SimConfig(**{**cfg.__dict__, **overrides})
        self.cfg = cfg.resolved()
        self.port = None
        self._thread = None
        self._loop = None
        self._runner = None
        self._ready = threading.Event()
        self._error = None
        self.exchange = None
        self.certs = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout=30.0):
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start within %.0f s" % timeout)
        if self._error is not None:
            raise self._error
        return self

    def _main(self):
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            app = build_app(self.cfg)
            self.exchange = app[EXCHANGE]
            self.cfg = self.exchange.cfg
            self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site, self.certs = make_site(self._runner, self.cfg)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
        except Exception as exc:  # reported to the thread that called start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self, timeout=15.0):
        if self._loop is None or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self.certs is not None:
            self.certs.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- addresses -----------------------------------------------------------------
    @property
    def rest_url(self):
        return urls(self.cfg, self.port)[0]

    @property
    def ws_url(self):
        """WebSocket base; on USD-M the ``/public`` root (see :attr:`ws_urls`)."""
        return self.ws_urls["public" if self.cfg.market in SPLIT_WS else self.cfg.market]

    @property
    def ws_base(self):
        """The root URL: what the recorder's ``ws_url`` setting takes."""
        return ws_root(self.cfg, self.port)

    @property
    def ws_urls(self):
        return urls(self.cfg, self.port)[1]

    @property
    def ca_file(self):
        """The PEM file a client must trust (None without TLS)."""
        return self.certs.ca_file if self.certs else None

    @property
    def sslopt(self):
        """websocket-client's ``sslopt`` for this simulator."""
        return {"ca_certs": self.ca_file} if self.certs else {}

    # -- ground truth and control (thread-safe) ----------------------------------------
    def call(self, fn, *args, timeout=30.0):
        """Run ``fn(*args)`` on the simulator's loop and return its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def true_book(self, symbol, update_id=None):
        """``(update id, bids, asks)`` of the exchange's full book."""
        return self.call(lambda: self.exchange.source(symbol).book_at(update_id))

    def journal(self, conn_id=None):
        return self.call(self.exchange.journal.entries, conn_id)

    def connections(self):
        return self.call(lambda: [c.info() for c in self.exchange.all_conns])

    def faults(self, **spec):
        return self.call(self.exchange.apply_faults, spec)

    def stats(self):
        return self.call(lambda: dict(self.exchange.stats))


def control(rest_url, path, body=None, timeout=10.0, ca_file=None):
    """Call a ``/sim/*`` endpoint of a simulator (``ca_file``: the PEM to
    trust over https)."""
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(rest_url + path, data=data, method="POST" if data else "GET")
    context = ssl.create_default_context(cafile=ca_file) if rest_url.startswith("https") else None
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        raw = resp.read()
    return orjson.loads(raw) if resp.headers.get_content_type() == "application/json" else raw
