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

Each socket has its own reader thread (frames.FrameReader); frames get their
local receive time (us) as soon as they are read, and every frame of one read
is handed to the worker at once.
"""

import logging
import socket
import ssl
import threading
import time
from urllib.parse import urlparse

import websocket

from .binance.parse import first_event_time
from .frames import Closed, FrameReader, unread_bytes
from .proc import backoff_delay
from .tls import client_context

log = logging.getLogger(__name__)

STABLE_AFTER = 30.0      # a connection that lived this long resets the backoff
POLL = 0.25             # seconds between the supervisor's checks of its sockets


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


def tls_options(cfg):
    """websocket-client's ``sslopt``: TLS read many records at a time
    (tls.py); certificates are always verified; ``ca_file`` replaces the
    system's authorities."""
    return {"context": client_context(cfg.ca_file)}


class Socket:
    """One open WebSocket and the thread that reads it into its slot."""

    def __init__(self, slot, ws):
        self.slot, self.ws = slot, ws
        self.opened = time.monotonic()
        self.last_data = self.opened
        self.reader = FrameReader(ws)
        self.ended = None            # why reading stopped
        self.buffer = []             # frames received while it waits to take over
        self.first_ids = {}          # stream -> first id it delivered
        self.announced = False       # the server announced it will close this socket
        self.lag_us = None           # receive time less the event time of the oldest frame of the last read
        self.lag_max_us = None       # the largest since the last status report
        read = slot.threads.guard(f"{slot.name}-read", self._read) if slot.threads else self._read
        self.thread = threading.Thread(target=read, name=f"{slot.name}-read", daemon=True)

    def _read(self):
        """Read until the socket ends. A read that comes less than
        ``read_interval`` after the previous one waits out the rest of the
        interval first, so a busy socket is read in batches (waking a thread
        costs far more than handling a frame) while a quiet one is read as
        each frame arrives."""
        slot, stop, interval = self.slot, self.slot.stop, self.slot.cfg.read_interval
        worker, max_lag = slot.worker, slot.cfg.max_lag * 1e6
        reader = self.reader
        last_read = 0.0
        congested = slot.congested
        try:
            while not stop.is_set() and self.ended is None:
                if congested is not None and congested():
                    # The writer is not taking rows: leave the frames in the
                    # socket (the exchange's own back-pressure) until its Ack
                    # makes room (at most 50 ms between two looks at ``stop``).
                    worker.hand_on()
                    congested(0.05)
                    continue
                if interval and not reader.full:
                    wait = last_read + interval - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                # Wake up when the worker's batch is due if no frame comes first.
                due = worker.batch_due
                try:
                    messages = reader.read(1.0 if due is None else min(1.0, max(0.001, due - time.monotonic())))
                except socket.timeout:
                    worker.hand_on()
                    continue
                if messages:
                    recv_us = time.time_ns() // 1000
                    self.last_data = last_read = time.monotonic()
                    event_ms = first_event_time(messages)
                    if event_ms is not None:
                        lag = self.lag_us = recv_us - event_ms * 1000
                        if self.lag_max_us is None or lag > self.lag_max_us:
                            self.lag_max_us = lag
                        if (lag > max_lag) != slot.behind and self is slot.active:
                            slot.lag_changed(self, lag)
                    slot.deliver(self, messages, recv_us)
                    worker.hand_on()
            if self.ended is None:
                self._last_read(reader)
        except Closed as exc:
            self.ended = str(exc)
        except (websocket.WebSocketException, OSError) as exc:
            self.ended = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.ended is None:
            self.ended = "stopping"
        self.ws.shutdown()

    def _last_read(self, reader):
        """On stop: what the socket already holds is read and handed on before
        the slot switches or closes (else a successor that started later
        than those frames leaves a hole between them)."""
        try:
            messages = reader.read(0.05)
        except socket.timeout:
            return
        if messages:
            self.slot.deliver(self, messages, time.time_ns() // 1000)
            self.slot.worker.hand_on()

    def heard(self):
        """When bytes last came in: the reader takes the time as soon as
        its recv returns, before parsing and handing on what it read (after
        a pause the socket is empty while those frames are still being
        parsed; they count as heard)."""
        return max(self.last_data, self.reader.received)

    def unread_bytes(self):
        """Bytes received by the kernel (and, over TLS, decrypted) but not yet
        read: what waits behind the reader. None when the socket is gone."""
        try:
            return unread_bytes(self.ws.sock)
        except (OSError, AttributeError, ValueError):
            return None

    def close(self, why="closed"):
        """Send a close frame and end the reading. Not websocket-client's
        close(): it waits for the server's reply by reading the socket
        itself, which would take frames away from the reader thread."""
        if self.ended is None:
            self.ended = why
        for step in (self.ws.send_close, lambda: self.ws.sock.shutdown(socket.SHUT_RDWR)):
            try:
                step()
            except Exception:   # a broken socket may fail in many ways; it is closed either way
                pass


class Connection(threading.Thread):
    def __init__(self, worker, group, url, names, cfg, stop, connect_budget=None, threads=None, congested=None):
        super().__init__(name=f"ws-{group}-{names[0].split('@')[0]}", daemon=True)
        self.congested = congested   # (wait=0) -> True while the rows cannot be handed on: reading waits
        self.worker, self.group, self.url, self.names = worker, group, url, names
        self.cfg, self.stop, self.connect_budget = cfg, stop, connect_budget
        self.threads = threads       # proc.Threads: a thread that dies restarts the process
        self.lock = threading.Lock()
        self.active = None
        self.pending = []            # successors, oldest first, buffering until one takes over
        self.handover_started = None
        self.connects = self.reconnects = self.failures = self.handovers = 0
        self.last_error = None       # why the last attempt to connect failed (None: it did not)
        self.connected_since = None
        self.behind = False          # the active socket's lag is beyond max_lag (warned once per episode)
        self.lag_max_before = None   # the worst lag of the previous status interval

    # -- frames (from the reader threads) -----------------------------------------
    def deliver(self, sock, messages, recv_us):
        """The messages of one socket read, in order."""
        with self.lock:
            if sock is self.active:
                if self.worker.on_frames(messages, recv_us) == "shutdown":
                    sock.announced = True
            elif sock in self.pending:
                for data in messages:
                    sock.buffer.append((data, recv_us))
                    ident = self.worker.identify(data)
                    if ident is not None:
                        sock.first_ids.setdefault(ident[0], ident[1])
                    elif b'"serverShutdown"' in data:
                        sock.announced = True

    # -- the supervisor --------------------------------------------------------------
    def run(self):
        if self.threads is not None:
            self.threads.guard(self.name, self._run)()
        else:
            self._run()

    def _run(self):
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
            self.worker.on_disconnected(self.names)
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
                                             enable_multithread=False, sslopt=tls_options(self.cfg),
                                             **proxy_options(self.cfg.proxy))
        except Exception as exc:   # any failure to connect is retried
            self.last_error = connect_error(exc)
            if self.worker.throttle_connect.allow():
                log.warning("%s: cannot connect to %s (%s)", self.name, self.url.split("?")[0], self.last_error)
            return None
        self.last_error = None
        return Socket(self, ws)

    def _supervise(self):
        """Watch the active socket until it ends with no successor to take over."""
        silence, max_age = self.cfg.silence_timeout, self.cfg.connection_max_age
        while not self.stop.wait(POLL):
            sock, now = self.active, time.monotonic()
            if sock.ended is None and now - sock.heard() > silence and not self._waiting(sock):
                sock.close(f"no data for {silence:.0f} s")
            self._drop_failed()
            if sock.ended is not None:
                if self.pending:
                    self._switch(self.pending[0], complete=False)    # the one that has buffered longest
                    continue
                return sock.ended, now - sock.opened
            newest = self.pending[-1] if self.pending else sock
            if newest.announced or (newest is sock and now - sock.opened >= max_age):
                if len(self.pending) < 3:
                    self._begin_handover(now, newest.announced)
            for candidate in reversed(self.pending):
                if self.worker.overlaps(self.names, candidate.first_ids):
                    self._switch(candidate, complete=True)
                    break
            else:
                if self.pending and now - self.handover_started > self.cfg.handover_timeout:
                    self._switch(self.pending[0], complete=False)
        return "stopping", time.monotonic() - self.active.opened

    def _waiting(self, sock):
        """Is data waiting for the reader (a process that was paused, or a
        reader held back while the writer catches up)? Then the connection
        is not silent: what is in the socket is read before it is judged."""
        if self.congested is not None and self.congested():
            return True
        return bool(sock.unread_bytes())

    def lag_changed(self, sock, lag):
        """From the active socket's reader, when its lag crosses ``max_lag``:
        a WARNING when it falls behind, an INFO when it has caught up."""
        self.behind = not self.behind
        if self.behind:
            log.warning("%s: behind by %.1f s (exchange event time to receipt; %s bytes unread); the recorder "
                        "is not keeping up, or this machine's clock is off", self.name, lag / 1e6,
                        sock.unread_bytes())
        else:
            log.info("%s: caught up (%.2f s behind)", self.name, lag / 1e6)

    def _begin_handover(self, now, announced):
        why = "the server announced a shutdown" if announced else "the connection is due for renewal"
        log.info("%s: %s; opening a new connection beside the old one", self.name, why)
        sock = self._open()
        if sock is None:
            return
        with self.lock:
            self.pending.append(sock)
        if self.handover_started is None:
            self.handover_started = now
        sock.thread.start()

    def _drop_failed(self):
        with self.lock:
            failed = [s for s in self.pending if s.ended is not None]
            self.pending = [s for s in self.pending if s.ended is None]
        for sock in failed:
            log.warning("%s: a new connection failed (%s); trying again", self.name, sock.ended)
            sock.close()

    def _switch(self, target, complete):
        """Make ``target`` the active socket; older sockets close."""
        with self.lock:
            old = self.active
            index = self.pending.index(target)
            older, self.pending = self.pending[:index], self.pending[index + 1:]
            if not complete:
                # streams the new socket was not matched on: a jump there is a reconnect gap
                self.worker.on_connected([n for n in self.names if not self.worker.overlaps([n], target.first_ids)])
            for data, recv_us in target.buffer:
                if self.worker.on_frames((data,), recv_us) == "shutdown":
                    target.announced = True
            target.buffer, target.first_ids = [], {}
            self.active = target
        took = (time.monotonic() - self.handover_started) * 1000
        self.handover_started = time.monotonic() if self.pending else None
        for sock in [old] + older:
            sock.close("replaced")
        self.handovers += 1
        self.connected_since = target.opened
        log.info("%s: handover %s after %.0f ms", self.name,
                 "complete, streams overlapped" if complete else "forced, continuity checked by id", took)

    def _finish(self):
        """On stop: every socket's reader takes what its socket already holds
        (it stops after that), then what a successor received still goes to
        the files, and the sockets close."""
        for sock in [self.active] + self.pending:
            if sock is not None and sock.thread.is_alive():
                sock.thread.join(timeout=2)
        if self.pending and self.active is not None:
            self._switch(self.pending[-1] if self.pending[-1].buffer else self.pending[0], complete=False)
        for sock in [self.active] + self.pending:
            if sock is not None:
                sock.close("stopping")
                if sock.thread.is_alive():
                    sock.thread.join(timeout=2)

    def info(self):
        """For the status report: also how far behind the active socket is
        (``lag_s`` at its last read, ``lag_max_s`` the worst over this report's
        interval and the one before, so that the manager, which keeps only
        each child's latest report, cannot miss a peak) and the bytes
        waiting unread."""
        sock = self.active
        lag = unread = None
        worst, self.lag_max_before = self.lag_max_before, None
        if sock is not None and sock.ended is None:
            lag, unread = sock.lag_us, sock.unread_bytes()
            self.lag_max_before, sock.lag_max_us = sock.lag_max_us, None
        lag_max = max((v for v in (worst, self.lag_max_before) if v is not None), default=None)
        return {"group": self.group, "connected": self.connected_since is not None,
                "reconnects": self.reconnects, "failures": self.failures, "handovers": self.handovers,
                "last_error": self.last_error,
                "lag_s": None if lag is None else round(lag / 1e6, 3),
                "lag_max_s": None if lag_max is None else round(lag_max / 1e6, 3),
                "unread_bytes": unread, "behind": self.behind, "name": self.name}


def connect_error(exc):
    """What a failed connection attempt means, in a line: a refused
    handshake names its HTTP status and the setting to check."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, websocket.WebSocketBadStatusException) and status is not None:
        hint = "check ws_url (and ws_public_url / ws_market_url on usdm)" if status == 404 else "the exchange refused it"
        return f"the WebSocket handshake was answered with HTTP {status}: {hint}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens at that address (check ws_url)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's certificate is not trusted ({exc.verify_message}): set ca_file to the PEM file of "
                "its certificate authority")
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
