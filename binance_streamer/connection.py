"""One WebSocket connection kept alive: connect, read, reconnect with capped
exponential backoff and jitter, and a watchdog that treats silence as a
disconnect. Frames go to the worker with their local receive time (us),
taken as soon as the frame is read."""

import logging
import threading
import time
from urllib.parse import urlparse

import websocket

from .proc import backoff_delay

log = logging.getLogger(__name__)

STABLE_AFTER = 30.0      # a connection that lived this long resets the backoff


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


class Connection(threading.Thread):
    def __init__(self, worker, group, url, names, cfg, stop):
        super().__init__(name=f"ws-{group}-{names[0].split('@')[0]}", daemon=True)
        self.worker = worker
        self.group = group
        self.url = url
        self.names = names
        self.cfg = cfg
        self.stop = stop
        self.connects = 0
        self.reconnects = 0
        self.failures = 0
        self.connected_since = None
        self.shutdown_announced = False
        self.ws = None

    def run(self):
        attempt = 0
        while not self.stop.is_set():
            try:
                self.ws = websocket.create_connection(
                    self.url, timeout=self.cfg.rest_timeout, skip_utf8_validation=True,
                    enable_multithread=False, **proxy_options(self.cfg.proxy))
            except Exception as exc:   # any failure to connect is retried
                attempt += 1
                self.failures += 1
                delay = backoff_delay(attempt, self.cfg.reconnect_min_delay, self.cfg.reconnect_max_delay)
                if self.worker.throttle_connect.allow():
                    log.warning("%s: cannot connect to %s (%s); retrying in %.1f s", self.name,
                                self.url.split("?")[0], exc, delay)
                self.stop.wait(delay)
                continue
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            self.connected_since = time.monotonic()
            self.shutdown_announced = False
            self.worker.on_connected(self)
            reason = self._read()
            lived = time.monotonic() - self.connected_since
            self.connected_since = None
            self._close()
            if self.stop.is_set():
                break
            attempt = 0 if lived >= STABLE_AFTER or self.shutdown_announced else attempt + 1
            delay = backoff_delay(attempt, self.cfg.reconnect_min_delay, self.cfg.reconnect_max_delay)
            log.warning("%s: disconnected (%s) after %.0f s; reconnecting in %.1f s", self.name, reason, lived, delay)
            self.stop.wait(delay)
        self._close()

    def _read(self):
        ws, worker = self.ws, self.worker
        ws.settimeout(1.0)
        silence = self.cfg.silence_timeout
        last_data = time.monotonic()
        text = websocket.ABNF.OPCODE_TEXT
        while not self.stop.is_set():
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_data > silence:
                    return f"no data for {silence:.0f} s"
                continue
            except (websocket.WebSocketException, OSError) as exc:
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            recv_us = time.time_ns() // 1000
            if opcode == text:
                last_data = time.monotonic()
                if worker.on_frame(self, data, recv_us) == "shutdown":
                    self.shutdown_announced = True
                    return "the server announced a shutdown"
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                return f"closed by the server (code {code})"
        return "stopping"

    def _close(self):
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=1)
            except Exception:   # closing a broken socket may fail in many ways; it is closed either way
                pass
