"""One logical WebSocket connection kept alive without holes.

A :class:`Connection` (one thread) supervises the socket that feeds the
worker. It reconnects with capped exponential backoff and jitter, treats
silence as a disconnect, and never lets a planned close cost data: before the
socket reaches ``connection_max_age`` (Binance closes at 24 h), and at once
when the server announces ``serverShutdown``, it opens a successor. The
successor's frames are buffered until, for every stream that has data, the
successor has delivered an id the old socket already delivered (or the next
one). Then the slot switches: the buffer goes through the worker's usual
de-duplication by id, and the old socket is closed. Files stay exactly once
and the handover is counted, not ledgered.

Each socket has its own reader thread; frames get their local receive time
(us) as soon as they are read.
"""

import logging
import threading
import time
from urllib.parse import urlparse

import websocket

from .proc import backoff_delay

log = logging.getLogger(__name__)

STABLE_AFTER = 30.0      # a connection that lived this long resets the backoff
POLL = 0.05


def proxy_options(proxy):
    """websocket-client keyword arguments for a proxy URL."""
    if not proxy:
        return {}
    u = urlparse(proxy)
    opts = {"http_proxy_host": u.hostname, "http_proxy_port": u.port or (1080 if u.scheme.startswith("socks") else 8080),
            "proxy_type": "http" if u.scheme in ("http", "https") else u.scheme}
    if u.username:
        opts["http_proxy_auth"] = (u.username, u.password or "")
    return opts


class Socket:
    """One open WebSocket and the thread that reads it into its slot."""

    def __init__(self, slot, ws):
        self.slot, self.ws = slot, ws
        self.opened = time.monotonic()
        self.last_data = self.opened
        self.ended = None            # why reading stopped
        self.thread = threading.Thread(target=self._read, name=f"{slot.name}-read", daemon=True)

    def _read(self):
        ws, slot, stop = self.ws, self.slot, self.slot.stop
        ws.settimeout(1.0)
        text = websocket.ABNF.OPCODE_TEXT
        try:
            while not stop.is_set() and self.ended is None:
                try:
                    opcode, data = ws.recv_data(control_frame=True)
                except websocket.WebSocketTimeoutException:
                    continue
                recv_us = time.time_ns() // 1000
                if opcode == text:
                    self.last_data = time.monotonic()
                    slot.deliver(self, data, recv_us)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    self.ended = f"closed by the server (code {code})"
        except (websocket.WebSocketException, OSError) as exc:
            self.ended = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.ended is None:
            self.ended = "stopping"

    def close(self, why="closed"):
        if self.ended is None:
            self.ended = why
        try:
            self.ws.close(timeout=1)
        except Exception:   # closing a broken socket may fail in many ways; it is closed either way
            pass


class Connection(threading.Thread):
    def __init__(self, worker, group, url, names, cfg, stop, connect_budget=None):
        super().__init__(name=f"ws-{group}-{names[0].split('@')[0]}", daemon=True)
        self.worker, self.group, self.url, self.names = worker, group, url, names
        self.cfg, self.stop, self.connect_budget = cfg, stop, connect_budget
        self.lock = threading.Lock()
        self.active = None
        self.successor = None
        self.buffer = []             # the successor's frames until the switch
        self.first_ids = {}          # stream -> first id the successor delivered
        self.handover_started = None
        self.shutdown_announced = False
        self.connects = self.reconnects = self.failures = self.handovers = 0
        self.connected_since = None

    # -- frames (from the reader threads) -----------------------------------------
    def deliver(self, sock, data, recv_us):
        with self.lock:
            if sock is self.active:
                if self.worker.on_frame(self, data, recv_us) == "shutdown":
                    self.shutdown_announced = True
            elif sock is self.successor:
                self.buffer.append((data, recv_us))
                ident = self.worker.identify(data)
                if ident is not None and ident[0] not in self.first_ids:
                    self.first_ids[ident[0]] = ident[1]

    # -- the supervisor --------------------------------------------------------------
    def run(self):
        attempt = 0
        while not self.stop.is_set():
            sock = self._open()
            if sock is None:
                if self.stop.is_set():
                    break
                attempt += 1
                self.failures += 1
                self.stop.wait(backoff_delay(attempt, self.cfg.reconnect_min_delay, self.cfg.reconnect_max_delay))
                continue
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            with self.lock:
                self.active = sock
            self.connected_since = time.monotonic()
            self.worker.on_connected(self.names)
            sock.thread.start()
            reason, lived = self._supervise()
            self.connected_since = None
            if self.stop.is_set():
                break
            attempt = 0 if lived >= STABLE_AFTER else attempt + 1
            delay = backoff_delay(attempt, self.cfg.reconnect_min_delay, self.cfg.reconnect_max_delay)
            log.warning("%s: disconnected (%s) after %.0f s; reconnecting in %.1f s", self.name, reason, lived, delay)
            self.stop.wait(delay)
        self._finish()

    def _open(self):
        if self.connect_budget is not None and not self.connect_budget.acquire(self.stop):
            return None
        try:
            ws = websocket.create_connection(self.url, timeout=self.cfg.rest_timeout, skip_utf8_validation=True,
                                             enable_multithread=False, **proxy_options(self.cfg.proxy))
        except Exception as exc:   # any failure to connect is retried
            if self.worker.throttle_connect.allow():
                log.warning("%s: cannot connect to %s (%s)", self.name, self.url.split("?")[0], exc)
            return None
        return Socket(self, ws)

    def _supervise(self):
        """Watch the active socket until it ends with no successor to take over."""
        silence, max_age = self.cfg.silence_timeout, self.cfg.connection_max_age
        while not self.stop.wait(POLL):
            sock, now = self.active, time.monotonic()
            if sock.ended is None and now - sock.last_data > silence:
                sock.close(f"no data for {silence:.0f} s")
            if sock.ended is not None:
                if self.successor is not None and self.successor.ended is None:
                    self._switch(complete=False)
                    continue
                self._drop_successor()
                return sock.ended, now - sock.opened
            if self.successor is None and (self.shutdown_announced or now - sock.opened >= max_age):
                self._begin_handover(now)
            elif self.successor is not None:
                if self.successor.ended is not None:
                    log.warning("%s: the new connection failed (%s); trying again", self.name, self.successor.ended)
                    self._drop_successor()
                elif self._overlapped():
                    self._switch(complete=True)
                elif now - self.handover_started > self.cfg.handover_timeout:
                    self._switch(complete=False)
        return "stopping", time.monotonic() - self.active.opened

    def _begin_handover(self, now):
        why = "the server announced a shutdown" if self.shutdown_announced else "the connection is due for renewal"
        log.info("%s: %s; opening a new connection beside the old one", self.name, why)
        sock = self._open()
        if sock is None:
            return
        with self.lock:
            self.successor, self.buffer, self.first_ids = sock, [], {}
        self.handover_started = now
        sock.thread.start()

    def _overlapped(self):
        """Has the successor caught up with the old socket on every stream with data?"""
        with self.lock:
            return self.worker.overlaps(self.names, self.first_ids)

    def _switch(self, complete):
        with self.lock:
            old, new = self.active, self.successor
            if not complete:
                # streams the successor could not be matched on: a jump there is a reconnect gap
                self.worker.on_connected([n for n in self.names if n not in self.first_ids
                                          or not self.worker.overlaps([n], self.first_ids)])
            announced = False
            for data, recv_us in self.buffer:
                announced |= self.worker.on_frame(self, data, recv_us) == "shutdown"
            self.active, self.successor, self.buffer, self.first_ids = new, None, [], {}
            self.shutdown_announced = announced
        took = (time.monotonic() - self.handover_started) * 1000
        old.close("replaced")
        self.handovers += 1
        self.connected_since = new.opened
        log.info("%s: handover %s after %.0f ms", self.name,
                 "complete, streams overlapped" if complete else "forced, continuity checked by id", took)

    def _drop_successor(self):
        with self.lock:
            sock, self.successor, self.buffer, self.first_ids = self.successor, None, [], {}
        if sock is not None:
            sock.close("handover abandoned")

    def _finish(self):
        """On stop: what the successor already received still goes to the files."""
        if self.successor is not None and self.active is not None:
            self._switch(complete=False)
        for sock in (self.active, self.successor):
            if sock is not None:
                sock.close("stopping")
                if sock.thread.is_alive():
                    sock.thread.join(timeout=2)

    def info(self):
        return {"group": self.group, "connected": self.connected_since is not None,
                "reconnects": self.reconnects, "failures": self.failures, "handovers": self.handovers}

