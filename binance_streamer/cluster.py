"""Past one machine: the messages collectors publish to NATS JetStream, and
the JetStream facts both roles share. This module is the one home of that
seam (see README "Past one machine").

Subjects: ``<nats_stream>.<market>.<SYMBOL>``, one JetStream stream holds
them all (file storage, ``nats_replicas`` copies). Each NATS message is one
of the named types below, encoded compactly: a kind byte, a JSON header line,
and (for :class:`Frames`) the raw frame bytes as the exchange sent them, each
behind its receive time and length; frames are never re-encoded. Its
``Nats-Msg-Id`` is ``<collector>:<pid>.<start time>:<seq>``, so a message sent again
after a lost acknowledgement is stored once (JetStream's duplicate window).
"""

import asyncio
import logging
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import orjson

log = logging.getLogger(__name__)

FRAME_HEAD = struct.Struct("!qI")      # receive time (us), frame length
DUPLICATE_WINDOW = 120.0               # seconds JetStream remembers message ids


@dataclass
class Frames:
    """Data frames of one symbol, as one collector read them, in order.
    Producer: a collector; consumer: every sink of the symbol; lost: never
    (kept until JetStream acknowledges it, or dropped oldest first with a
    :class:`Dropped` note)."""
    collector: str
    symbol: str
    frames: list = field(default_factory=list)     # [(recv_us, raw frame bytes)]


@dataclass
class ConnectionEvent:
    """A collector's connection carrying ``streams`` (subscription names)
    connected or disconnected; ``last``: the last id it saw per stream."""
    collector: str
    symbol: str
    event: str                 # connected | disconnected
    streams: list
    time_us: int
    last: dict = field(default_factory=dict)


@dataclass
class Dropped:
    """A collector's buffer overflowed while NATS did not take its messages:
    ``frames`` frames of ``symbol`` received between ``first_us`` and
    ``last_us`` were dropped (the oldest first). It takes their place in the
    collector's queue, so it reaches the sinks after what the collector sent
    before them and before what it sent after; sinks ledger the hole unless
    another collector had those events."""
    collector: str
    symbol: str
    frames: int
    first_us: int
    last_us: int


@dataclass
class Stopped:
    """A collector stopped cleanly: after this, it publishes nothing more of
    ``symbol`` (the frames it read were sent before this). A sink shows it
    ``stopped`` rather than silent."""
    collector: str
    symbol: str
    time_us: int


@dataclass
class Alive:
    """A collector publishes ``symbol`` but sent nothing of it for
    ``HEARTBEAT_S`` (a quiet stream: forceOrder): it is not silent."""
    collector: str
    symbol: str
    time_us: int


HEARTBEAT_S = 10.0       # well under status.COLLECTOR_SILENT_S

KINDS = {b"F": Frames, b"E": ConnectionEvent, b"D": Dropped, b"S": Stopped, b"H": Alive}
NAMES = {cls: kind for kind, cls in KINDS.items()}


def encode(msg):
    if isinstance(msg, Frames):
        parts = [b"F", orjson.dumps({"c": msg.collector, "s": msg.symbol}), b"\n"]
        for recv_us, data in msg.frames:
            parts.append(FRAME_HEAD.pack(recv_us, len(data)))
            parts.append(data)
        return b"".join(parts)
    return NAMES[type(msg)] + orjson.dumps(msg.__dict__)


def decode(data):
    """The message of a NATS payload; ValueError when it is not one."""
    kind = data[:1]
    if kind == b"F":
        end = data.index(b"\n")
        head = orjson.loads(data[1:end])
        frames, pos, n = [], end + 1, len(data)
        while pos < n:
            recv_us, size = FRAME_HEAD.unpack_from(data, pos)
            pos += FRAME_HEAD.size
            if pos + size > n:
                raise ValueError("a frame runs past the end of the message")
            frames.append((recv_us, bytes(data[pos:pos + size])))
            pos += size
        return Frames(head["c"], head["s"], frames)
    if kind in KINDS:
        return KINDS[kind](**orjson.loads(data[1:]))
    raise ValueError(f"unknown message kind {kind!r}")


def subject(cfg, symbol):
    return f"{cfg.nats_stream}.{cfg.market}.{symbol.upper()}"


def node_id(value):
    return value or socket.gethostname()


def message_id(collector, boot, seq):
    """The ``Nats-Msg-Id`` of a collector's message: ``boot`` is its
    process's ``<pid>.<start time us>``, so two processes that use one
    collector id are told apart."""
    return f"{collector}:{boot}:{seq}"


def boot_of(msg_id):
    """The ``<pid>.<start time us>`` part of a message id, or None."""
    parts = (msg_id or "").rsplit(":", 2)
    return parts[1] if len(parts) == 3 else None


def describe_boot(boot):
    """``pid 123 started 01:02:03Z`` from a boot string."""
    pid, _, start = boot.partition(".")
    try:
        when = time.strftime("%H:%M:%SZ", time.gmtime(int(start) / 1e6))
    except ValueError:
        when = "?"
    return f"pid {pid} started {when}"


class Stopping(Exception):
    """The role stops while it has not reached NATS yet."""


async def connect(cfg, name, trouble=None, stop=None):
    """A NATS connection that reconnects for ever (the roles outlive a
    server); it does not return before a server answered. ``trouble``
    (a :class:`Trouble`) hears of each failed attempt meanwhile; once
    ``stop`` (a threading.Event) is set, the attempts end (:class:`Stopping`)."""
    import nats

    async def error_cb(exc):
        log.debug("%s: NATS: %s", name, exc)
        if trouble is not None:
            trouble.failed(exc if held else unanswered(exc))
    held = []
    lost, back = watchers(name, held)
    attempt = asyncio.ensure_future(nats.connect(
        servers=list(cfg.nats_url), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
        allow_reconnect=True, error_cb=error_cb, disconnected_cb=lost, reconnected_cb=back))
    while not attempt.done():
        await asyncio.wait({attempt}, timeout=0.2)
        if stop is not None and stop.is_set() and not attempt.done():
            attempt.cancel()
            raise Stopping(name)
    nc = attempt.result()
    held.append(nc)
    log.info("%s: connected to NATS at %s", name, shown(nc.connected_url) if nc.connected_url else "?")
    return nc


def unanswered(exc):
    """A first connection attempt that timed out says why it may have: a
    bare ``TimeoutError`` does not tell the user what to check."""
    if not isinstance(exc, TimeoutError):
        return exc
    return TimeoutError("no NATS server answered within 2 s: check that nats_url names a NATS server's client "
                        "port (4222 by default, not another service's) and that no firewall drops it")


def shown(url):
    """A NATS URL as logs and status show it: without the user, password or token it may carry."""
    if isinstance(url, str):
        url = urllib.parse.urlsplit(url)
    host = f"{url.hostname}:{url.port}" if url.port else (url.hostname or "?")
    return f"{url.scheme}://{host}" if url.scheme else host


def watchers(name, held=()):
    """The callbacks that log a NATS connection lost (WARNING) and back
    (INFO); not when the connection in ``held`` was closed on purpose (a
    clean stop: nats-py reports a disconnect then too)."""
    async def lost():
        if any(nc.is_closed or nc.is_draining for nc in held):
            return
        log.warning("%s: the connection to NATS is lost; reconnecting (nothing is acknowledged meanwhile)", name)

    async def back():
        log.info("%s: the connection to NATS is back", name)
    return lost, back


async def ensure_stream(js, cfg):
    """The JetStream stream of the recording; made if missing."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError
    try:
        return await js.stream_info(cfg.nats_stream)
    except NotFoundError:
        pass
    conf = StreamConfig(name=cfg.nats_stream, subjects=[f"{cfg.nats_stream}.>"], storage=StorageType.FILE,
                        num_replicas=cfg.nats_replicas, duplicate_window=DUPLICATE_WINDOW,
                        max_age=cfg.nats_max_age)
    try:
        return await js.add_stream(conf)
    except Exception as exc:   # another role made it meanwhile, or the server cannot hold it (say why)
        try:
            return await js.stream_info(cfg.nats_stream)
        except NotFoundError:
            raise exc from None


RETRY = 0.5        # seconds between attempts to reach NATS and its stream


def problem(cfg, exc):
    """``(text, fatal)``: what a NATS failure means, as status and logs show
    it. ``fatal``: a server or setting the user must change (JetStream not
    enabled, more replicas than servers): waiting does not help."""
    import nats.errors
    from nats.js.errors import APIError, ServiceUnavailableError
    where = ",".join(map(shown, cfg.nats_url))
    desc = (getattr(exc, "description", None) or str(exc) or "").lower()
    if isinstance(exc, (ServiceUnavailableError, nats.errors.NoRespondersError)):
        return (f"JetStream is not enabled on the NATS server at {where} (it does not answer JetStream requests): "
                "start nats-server with -js (or a jetstream block in its config)"), True
    if isinstance(exc, APIError) and (exc.err_code in (10005, 10074) or "insufficient resources" in desc
                                      or "non-clustered" in desc):
        return (f"NATS at {where} cannot make stream {cfg.nats_stream} with nats_replicas={cfg.nats_replicas} "
                f"({exc.description or exc}): it has fewer JetStream servers than replicas; lower nats_replicas "
                "(1 for a single server) or add servers to the cluster"), True
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__), False


class Trouble:
    """A role's NATS failures: counted, the last one kept with its time, and
    logged once per cause (ERROR for a cause the user must fix, WARNING for
    an outage), never once per retry."""

    def __init__(self, cfg, name, clock=time.time):
        self.cfg, self.name, self.clock = cfg, name, clock
        self.errors = 0
        self.last_error = None
        self.last_error_time = None
        self.fatal = False

    def failed(self, exc, detail=""):
        text, self.fatal = problem(self.cfg, exc)
        self.errors += 1
        self.last_error_time = self.clock()
        if text != self.last_error:
            if self.fatal:
                log.error("%s: cannot use JetStream: %s; retrying every %g s", self.name, text, RETRY)
            else:
                log.warning("%s: NATS: %s%s; trying again", self.name, text, detail)
        self.last_error = text

    def status(self):
        age = None if self.last_error_time is None else round(max(0.0, self.clock() - self.last_error_time), 1)
        return {"last_error": self.last_error, "last_error_age_s": age, "nats_config_error": self.fatal}


class Loop:
    """An asyncio loop in a thread of its own (nats-py is asyncio; the rest of
    the process is threads)."""

    def __init__(self, name, threads=None):
        self.loop = asyncio.new_event_loop()
        self.name = name
        self.threads = threads

    def start(self, main):
        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(main())
        if self.threads is not None:
            self.threads.start(self.name, run)
        else:
            threading.Thread(target=run, name=self.name, daemon=True).start()
