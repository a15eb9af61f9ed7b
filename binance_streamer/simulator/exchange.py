"""The simulated exchange's live state: markets (or a replay), connections,
subscriptions, faults and the journal. Runs inside one asyncio loop."""

import asyncio
import logging
import random
import re
import struct
import time

from .faults import Faults
from .journal import Journal
from .limits import SlidingCounter, WeightLimiter
from .market import SymbolMarket
from .mutate import mutate
from .series import SeriesServer

log = logging.getLogger(__name__)

STREAM_NAME = re.compile(r"^(?:[a-z0-9_]+@[A-Za-z0-9_@:+]+|![A-Za-z0-9_@]+)$")
SHUTDOWN_STREAM = "!serverShutdown"
WRITE_BUFFER_LIMIT = 4 * 2**20      # bytes a connection's socket may have unsent before its sender waits


def text_frame(payload):
    """An unmasked final text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def stream_category(key):
    """USD-M routes depth and bookTicker to ``/public``, the rest to ``/market``."""
    return "public" if key.startswith(("depth", "bookTicker", "rpiDepth")) else "market"


class Conn:
    """One client WebSocket connection."""

    def __init__(self, conn_id, ws, path, category, combined, now):
        self.id = conn_id
        self.ws = ws
        self.path = path
        self.category = category        # None (spot), "public" or "market" (usdm)
        self.combined = combined
        self.streams = []
        self.opened = now
        self.closed_at = None
        self.close_reason = None
        self.pending = []
        self.transport = None           # the socket's asyncio transport, once the upgrade is done
        self.wake = asyncio.Event()
        self.sent = 0
        self.dropped_while_stalled = 0
        self.next_ping = None
        self.pings = {}                 # outstanding ping payload -> time sent
        self.shutdown_sent = False
        self.planned_close = None
        self.incoming = None

    def info(self):
        return {"id": self.id, "path": self.path, "streams": list(self.streams),
                "combined": self.combined, "opened": self.opened,
                "closed": self.closed_at, "close_reason": self.close_reason,
                "sent": self.sent, "dropped_while_stalled": self.dropped_while_stalled}


class Exchange:
    def __init__(self, cfg, replay=None):
        self.cfg = cfg
        self.faults = Faults()
        self.journal = Journal(cfg.journal)
        self.limiter = WeightLimiter(cfg.weight_limit, cfg.ban_seconds)
        self.connect_attempts = {}
        self.replay = replay
        start_us = time.time_ns() // 1000
        if replay is None:
            self.symbols = list(cfg.symbols)
            self.markets = {s: SymbolMarket(cfg.market, s, cfg.seed, cfg.rate_of(s), start_us,
                                            levels=cfg.book_levels) for s in self.symbols}
        else:
            self.symbols = replay.symbols
            self.markets = {}
        self.conns = {}
        self.all_conns = []
        self.subs = {}                  # stream name -> set of Conn
        self.active = {}                # symbol -> set of stream keys
        self.next_conn_id = 1
        self.stats = {"frames_sent": 0, "rest_requests": 0, "rest_429": 0, "rest_418": 0,
                      "connections_opened": 0, "connections_refused": 0, "frames_mutated": 0, "rest_garbage": 0}
        self.rng = random.Random(cfg.seed)      # for the hostile faults
        self.series = SeriesServer(cfg.seed, cfg.series_history_days)     # usdm's REST series
        self._published = 0
        self._periodic = {}
        self.faults.apply(cfg.faults, time.time())
        self._startup_actions = [(k, v) for k, v in cfg.faults.items() if k in Faults.ONE_SHOT]

    def source(self, symbol):
        """The market (or replayed symbol) behind REST calls for ``symbol``, or None."""
        if self.replay is not None:
            return self.replay.symbol(symbol)
        return self.markets.get(symbol)

    # -- connections ---------------------------------------------------------
    def admit(self, ip, now):
        """Count a connection attempt; False when the IP is over Binance's limit."""
        counter = self.connect_attempts.get(ip)
        if counter is None:
            counter = self.connect_attempts[ip] = SlidingCounter(self.cfg.connect_limit, 300.0)
        if counter.hit(now):
            return True
        self.stats["connections_refused"] += 1
        return False

    def open_conn(self, ws, path, category, combined, now):
        conn = Conn(self.next_conn_id, ws, path, category, combined, now)
        self.next_conn_id += 1
        conn.next_ping = now + self.cfg.ping_interval
        conn.incoming = SlidingCounter(self.cfg.incoming_limit, 1.0)
        self.conns[conn.id] = conn
        self.all_conns.append(conn)
        self.stats["connections_opened"] += 1
        if self.replay is not None and len(self.conns) >= self.cfg.replay_connections:
            self.replay.start(now)
        return conn

    def forget_conn(self, conn, now):
        if conn.closed_at is None:
            conn.closed_at = now
            conn.close_reason = conn.close_reason or "client closed"
        self.unsubscribe(conn, list(conn.streams))
        self.conns.pop(conn.id, None)
        conn.wake.set()

    def close_conn(self, conn, code, reason, abort=False):
        if conn.closed_at is not None:
            return
        conn.closed_at = time.time()
        conn.close_reason = reason
        log.info("conn %d: closing (%s)", conn.id, reason)
        if abort:
            transport = conn.ws._req.transport if conn.ws._req else None
            if transport is not None:
                transport.abort()
        else:
            asyncio.ensure_future(conn.ws.close(code=code, message=reason.encode()[:120]))
        self.unsubscribe(conn, list(conn.streams))
        conn.wake.set()

    # -- subscriptions -----------------------------------------------------------
    def subscribe(self, conn, names):
        for name in names:
            if name in conn.streams:
                continue
            conn.streams.append(name)
            symbol, _, key = name.partition("@")
            if conn.category and self.replay is None and stream_category(key) != conn.category:
                log.info("conn %d: %s belongs on /%s, not /%s; it will carry no data",
                         conn.id, name, stream_category(key), conn.category)
                continue
            self.subs.setdefault(name, set()).add(conn)
        self._recount()

    def unsubscribe(self, conn, names):
        for name in names:
            if name in conn.streams:
                conn.streams.remove(name)
            members = self.subs.get(name)
            if members:
                members.discard(conn)
                if not members:
                    del self.subs[name]
        self._recount()

    def _recount(self):
        active = {}
        for name in self.subs:
            symbol, _, key = name.partition("@")
            active.setdefault(symbol.upper(), set()).add(key)
        self.active = active

    # -- data ----------------------------------------------------------------------
    def publish(self, name, payload, combined=None):
        members = self.subs.get(name)
        if not members:
            return
        if self.faults.mutate_every:
            self._published += 1
            if self._published % self.faults.mutate_every == 0:
                payload, combined = mutate(payload, self.rng), None
                self.stats["frames_mutated"] += 1
        for conn in members:
            if conn.combined:
                if combined is None:
                    combined = b'{"stream":"%s","data":%s}' % (name.encode(), payload)
                self.push(conn, combined)
            else:
                self.push(conn, payload)

    def push(self, conn, frame, now=None):
        if conn.closed_at is not None:
            return
        if self.faults.stalled(conn.id, now or time.time()):
            conn.dropped_while_stalled += 1
            return
        conn.pending.append(frame)
        if len(conn.pending) > self.cfg.max_pending:
            self.close_conn(conn, 1008, "client too slow: send buffer full")
        elif len(conn.pending) == 1:
            conn.wake.set()

    def broadcast(self, name, payload):
        """A frame to every open connection, subscribed or not (serverShutdown, faults)."""
        for conn in list(self.conns.values()):
            if conn.combined:
                self.push(conn, b'{"stream":"%s","data":%s}' % (name.encode(), payload))
            else:
                self.push(conn, payload)

    async def sender(self, conn):
        """Write a connection's queued frames in order and journal each one.

        Everything queued since the last write goes out in one write (like a
        server flushing its buffer), or with ``write_each_frame`` one write
        per frame (so over TLS one record per frame); a client that
        does not read makes the sender wait, and its queue grows until
        ``max_pending`` closes the connection."""
        record = self.journal.record if self.journal.enabled else None
        while conn.closed_at is None:
            await conn.wake.wait()
            conn.wake.clear()
            transport = conn.transport
            if transport is None:
                return
            while transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT and conn.closed_at is None:
                await asyncio.sleep(0.005)
            frames, conn.pending = conn.pending, []
            if conn.closed_at is not None or transport.is_closing():
                return
            if self.cfg.write_each_frame:
                for frame in frames:
                    transport.write(text_frame(frame))
            else:
                transport.write(b"".join(map(text_frame, frames)))
            conn.sent += len(frames)
            if record is not None:
                now_us = time.time_ns() // 1000
                for frame in frames:
                    record(conn.id, now_us, frame)
            self.stats["frames_sent"] += len(frames)

    # -- the clock -------------------------------------------------------------------
    async def run(self):
        """Drive the market (or replay) and the connection housekeeping forever."""
        last_housekeeping = 0.0
        for key, value in self._startup_actions:
            self.one_shot(key, value, time.time())
        while True:
            now = time.time()
            now_us = int(now * 1_000_000)
            if self.replay is not None:
                for name, payload, combined in self.replay.due(now):
                    self.publish(name, payload, combined)
            else:
                for symbol, market in self.markets.items():
                    active = self.active.get(symbol)
                    if active is None:
                        market.advance(now_us, ())
                        continue
                    prefix = market.lower + "@"
                    for key, payload in market.advance(now_us, active):
                        self.publish(prefix + key, payload)
            if now - last_housekeeping >= 0.05:
                last_housekeeping = now
                self.housekeeping(now)
            await asyncio.sleep(0.002)

    def housekeeping(self, now):
        cfg, faults = self.cfg, self.faults
        for key in ("drop_every", "malformed_every", "unknown_every"):
            period = getattr(faults, key)
            due = self._periodic.get(key)
            if not period:
                self._periodic.pop(key, None)
            elif due is None:
                self._periodic[key] = now + period
            elif now >= due:
                self._periodic[key] = now + period
                action = {"drop_every": ("drop", "close"), "malformed_every": ("malformed", 1),
                          "unknown_every": ("unknown_event", 1)}[key]
                self.one_shot(*action, now)
        lifetime = faults.lifetime or cfg.lifetime
        notice = min(cfg.shutdown_notice, lifetime / 2)
        for conn in list(self.conns.values()):
            if conn.closed_at is not None:
                continue
            end = conn.opened + lifetime
            if conn.planned_close is not None:
                end = min(end, conn.planned_close)
            if not conn.shutdown_sent and now >= end - notice:
                self.server_shutdown(conn, now)
            if now >= end:
                self.close_conn(conn, 1001, "connection lifetime reached")
                continue
            if faults.stalled(conn.id, now):
                continue
            if conn.pings and now - min(conn.pings.values()) > cfg.pong_timeout:
                self.close_conn(conn, 1008, "no pong within %.0f s" % cfg.pong_timeout)
                continue
            if now >= conn.next_ping:
                conn.next_ping = now + cfg.ping_interval
                payload = b"%d" % int(now * 1000)
                conn.pings[payload] = now
                asyncio.ensure_future(_quiet(conn.ws.ping(payload)))

    def server_shutdown(self, conn, now):
        conn.shutdown_sent = True
        payload = b'{"e":"serverShutdown","E":%d}' % int(now * 1000)
        if conn.combined:
            payload = b'{"stream":"%s","data":%s}' % (SHUTDOWN_STREAM.encode(), payload)
        self.push(conn, payload, now)

    def one_shot(self, key, value, now):
        if key == "drop":
            for conn in list(self.conns.values()):
                self.close_conn(conn, 1001, "fault: drop", abort=value == "abort")
        elif key == "drop_conn":
            how, conn_id = value
            if conn_id in self.conns:
                self.close_conn(self.conns[conn_id], 1001, "fault: drop", abort=how == "abort")
        elif key == "shutdown":
            for conn in list(self.conns.values()):
                conn.planned_close = now + value
                if not conn.shutdown_sent:
                    self.server_shutdown(conn, now)
        elif key == "malformed":
            for _ in range(int(value)):
                for conn in list(self.conns.values()):
                    self.push(conn, b'{"stream":"broken","data":{"e":"aggTrade","E":', now)
        elif key == "unknown_event":
            for _ in range(int(value)):
                payload = b'{"e":"mysteryEvent","E":%d,"x":"unannounced"}' % int(now * 1000)
                self.broadcast("!mysteryEvent", payload)

    def apply_faults(self, spec):
        now = time.time()
        for key, value in self.faults.apply(spec, now):
            self.one_shot(key, value, now)
        return self.faults.as_dict(now)


async def _quiet(coro):
    try:
        await coro
    except (ConnectionError, RuntimeError):
        pass
