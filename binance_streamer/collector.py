"""The collector role: the worker's WebSocket connections, without parsing,
files or REST; what they read goes to NATS JetStream (cluster.py).

A :class:`Tap` stands where the worker stands for its connections
(connection.py): it stamps nothing new (the receive time is the reader's),
finds each frame's symbol, remembers each stream's last id (so a connection
handover still waits for the overlap) and gathers the frames per symbol for
``batch_interval``; then each symbol's frames leave as one
:class:`cluster.Frames` message. Connection changes are published as
:class:`cluster.ConnectionEvent` on every symbol subject they concern, after
the frames read before them.

The :class:`Publisher` keeps every message until JetStream acknowledges it
(with ``Nats-Msg-Id``: a resend after a lost acknowledgement is stored once).
While NATS does not take them they wait, up to ``collector_buffer_bytes``;
past it the oldest are dropped and a :class:`cluster.Dropped` note per
symbol takes their place at the head of the queue: it leaves after what was
published before them and before what came after them, so a sink knows
where this collector's frames break off (and ledgers it unless another
collector had those events).
"""

import asyncio
import collections
import logging
import os
import threading
import time


from . import cluster, proc
from .binance.endpoints import connection_plan
from .connection import Connection
from .streams import event_id
from .worker import IDLE_WAIT, Worker

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 2.0
CLOSE_TIMEOUT = 1.0
STOP_SHARE = 0.75        # of stop_timeout the worker's stop may take: the manager kills it at stop_timeout


class Publisher:
    def __init__(self, cfg, collector, stop):
        self.cfg, self.collector, self.stop = cfg, collector, stop
        self.limit = cfg.collector_buffer_bytes
        # message ids of this process differ from a previous run's and from another worker's of this collector
        self.boot = f"{os.getpid()}.{time.time_ns() // 1000}"
        self.seq = 0
        self.queue = collections.deque()            # [msg id, subject, payload, message]
        self.bytes = 0
        self.lock = threading.Lock()
        self.dropped_total = 0
        self.sending = None                         # the queue item being published
        self.published = 0
        self.trouble = cluster.Trouble(cfg, f"collector {collector}")
        self.connected = False
        self.loop = None
        self.wake = None
        self.deadline = None                        # at a stop: what waits may leave until then (monotonic)
        self.last_put = {}                          # symbol -> when a message of it was last queued (monotonic)

    def put(self, msg):
        """Queue a message (any thread)."""
        payload = cluster.encode(msg)
        with self.lock:
            self.seq += 1
            self.queue.append([cluster.message_id(self.collector, self.boot, self.seq), cluster.subject(self.cfg, msg.symbol),
                               payload, msg])
            self.bytes += len(payload)
            self.last_put[msg.symbol] = time.monotonic()
            while self.bytes > self.limit and self._drop_oldest():
                pass
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.wake.set)

    def beat(self, symbols, now):
        """An :class:`cluster.Alive` for each of ``symbols`` nothing was
        queued of for ``HEARTBEAT_S`` (while NATS takes messages: an
        outage's silence is true)."""
        if not self.connected:
            return
        for symbol in symbols:
            if now - self.last_put.get(symbol, float("-inf")) >= cluster.HEARTBEAT_S:
                self.put(cluster.Alive(self.collector, symbol, time.time_ns() // 1000))

    def _drop_oldest(self):
        """Drop the oldest message but the notes ahead of it (lock held); its
        symbol's note at the head says so. False: nothing more to drop."""
        notes = []
        while self.queue and isinstance(self.queue[0][3], cluster.Dropped):
            notes.append(self.queue.popleft())
        if len(self.queue) < 2:                 # the newest message stays
            self.queue.extendleft(reversed(notes))
            return False
        _, _, old, lost = self.queue.popleft()
        self.bytes -= len(old)
        frames = lost.frames if isinstance(lost, cluster.Frames) else []
        self.dropped_total += len(frames)
        first = frames[0][0] if frames else getattr(lost, "time_us", 0)
        last = frames[-1][0] if frames else first
        note = next((x for x in notes if x[3].symbol == lost.symbol and x is not self.sending), None)
        if note is None:
            log.error("collector: %s: dropping the oldest frames (buffer of %d bytes full while NATS does not "
                      "take them)", lost.symbol, self.limit)
            self.seq += 1
            note = [cluster.message_id(self.collector, self.boot, self.seq), cluster.subject(self.cfg, lost.symbol), b"",
                    cluster.Dropped(self.collector, lost.symbol, 0, first, last)]
            notes.append(note)
        d = note[3]
        d.frames += len(frames)
        d.last_us = max(d.last_us, last)
        self.bytes -= len(note[2])
        note[2] = cluster.encode(d)
        self.bytes += len(note[2])
        self.queue.extendleft(reversed(notes))
        return True

    async def run(self):
        self.loop, self.wake = asyncio.get_running_loop(), asyncio.Event()
        nc = js = None
        while not self.stop.is_set() and js is None:
            try:
                if nc is None:           # one connection, however often the stream is asked for
                    nc = await cluster.connect(self.cfg, f"collector {self.collector}", self.trouble, self.stop)
                stream = nc.jetstream()
                await cluster.ensure_stream(stream, self.cfg)
                js = stream
            except cluster.Stopping:     # stopped before NATS answered: what waits is lost (said at the stop)
                break
            except Exception as exc:     # no server yet, or no JetStream: the frames wait in the buffer
                self._failed(exc)
                await asyncio.sleep(cluster.RETRY)
        if js is not None:
            if self.trouble.errors:
                log.info("collector: NATS and stream %s reached; %d messages (%d bytes) wait", self.cfg.nats_stream,
                         len(self.queue), self.bytes)
            self.connected = True
        while js is not None:
            if self.stop.is_set() and (not self.queue or self._stopping_done()):
                break
            with self.lock:
                item = self.sending = self.queue[0] if self.queue else None
            if item is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
                continue
            msg_id, subj, payload, _ = item
            try:
                await js.publish(subj, payload, timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": msg_id})
            except Exception as exc:     # kept and sent again (the same id: stored once)
                self._failed(exc)
                await asyncio.sleep(0.2)
                continue
            if not self.connected and self.trouble.errors:
                log.info("collector: NATS takes messages again; %d messages (%d bytes) wait", len(self.queue),
                         self.bytes)
            self.connected = True
            self.published += 1
            with self.lock:
                self.sending = None
                if self.queue and self.queue[0] is item:
                    self.queue.popleft()
                    self.bytes -= len(payload)
            if isinstance(item[3], cluster.Dropped):
                log.error("collector: %s: %d frames were dropped (buffer of %d bytes full while NATS did not "
                          "take them); the sinks know where", item[3].symbol, item[3].frames, self.limit)
        if nc is not None:           # nothing subscribed, every publish acknowledged: close, within a bound
            try:
                await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT)
            except Exception:        # closing a broken connection may fail or hang; nothing is left to send
                pass

    def _stopping_done(self):
        """At a stop, what waits may leave until ``deadline`` (set by the
        process's stop), else for half of ``stop_timeout``."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.cfg.stop_timeout / 2
        return time.monotonic() > self.deadline

    def _failed(self, exc):
        self.connected = False
        self.trouble.failed(exc, f" ({len(self.queue)} messages, {self.bytes} bytes wait)")

    def status(self):
        with self.lock:
            return {"buffer_messages": len(self.queue), "buffer_bytes": self.bytes, "buffer_limit_bytes": self.limit,
                    "published": self.published,
                    "publish_errors": self.trouble.errors, "nats_connected": self.connected,
                    "dropped_frames": self.dropped_total, **self.trouble.status()}


class Tap(Worker):
    """The connections' worker in a collector: frames go to the publisher."""

    def __init__(self, cfg, symbols, publisher, stop):
        super().__init__(cfg, symbols, rest=None, stop=stop)
        self.publisher = publisher
        self.collector = publisher.collector
        self.frames = {}              # symbol -> [(recv_us, data)]
        self.count = 0

    def on_frames(self, messages, recv_us):
        result = None
        with self.lock:
            for data in messages:
                route, msg = self.decode(data)
                if route is None:
                    result = result or msg
                    continue
                try:
                    ident = event_id(route.spec, msg["data"])
                except (KeyError, TypeError, AttributeError):
                    ident = None
                if ident.__class__ is int and (route.last is None or ident > route.last):
                    route.last = ident
                route.messages += 1
                route.last_recv_us = recv_us
                self.frames.setdefault(route.symbol, []).append((recv_us, bytes(data)))
                self.count += 1
        return result

    def _event(self, names, event):
        by_symbol = collections.defaultdict(list)
        for name in names:
            by_symbol[self.routes[name].symbol].append(name)
        with self.lock:
            self.hand_on(force=True)
            now = time.time_ns() // 1000
            for symbol, streams in by_symbol.items():
                last = {n: self.routes[n].last for n in streams}
                self.publisher.put(cluster.ConnectionEvent(self.collector, symbol, event, streams, now, last))

    def on_connected(self, names):
        self._event(names, "connected")

    def on_disconnected(self, names):
        self._event(names, "disconnected")

    def hand_on(self, force=False):
        with self.lock:
            if not self.frames:
                return
            now = time.monotonic()
            if self.batch_due is None:
                self.batch_due = now + self.cfg.batch_interval
            if not force and now < self.batch_due:
                return
            self.batch_due = None
            frames, self.frames = self.frames, {}
            for symbol, items in frames.items():
                self.publisher.put(cluster.Frames(self.collector, symbol, items))


def collector_main(cfg, symbols, index, restarts, control, peers, budget, connect_budget, series_budgets=None):
    """Process entry point (in a worker's place): connections for ``symbols``,
    their frames to JetStream; stops on SIGTERM, and when its manager is gone."""
    name = f"worker-{index}"
    stop, manager = proc.child_setup(name, control, cfg.log_level)
    threads = proc.Threads(stop)
    collector = cluster.node_id(cfg.collector_id)
    publisher = Publisher(cfg, collector, stop)
    pub_stop = threading.Event()              # set once the connections stopped: what is left may leave
    publisher.stop = pub_stop
    nats_loop = cluster.Loop(f"{name}-nats", threads)
    done = threading.Event()

    async def publish():
        try:
            await publisher.run()
        finally:
            done.set()
    nats_loop.start(publish)
    tap = Tap(cfg, symbols, publisher, stop)
    conns = [Connection(tap, group, url, names, cfg, stop, connect_budget, threads)
             for group, url, names in connection_plan(cfg, symbols)]
    for c in conns:
        c.start()
    log.info("%s: collector %s started for %s (pid %d, %d connections, NATS %s)", name, collector,
             ",".join(symbols), os.getpid(), len(conns), ",".join(map(cluster.shown, cfg.nats_url)))
    status = lambda: {**tap.status(conns), "collector": collector, "publisher": publisher.status()}  # noqa: E731
    while not stop.is_set():
        for _, sock in manager.attachments():     # a collector has no peers; the manager gone sets stop
            sock.close()
        stop.wait(min(IDLE_WAIT, cfg.batch_interval))
        tap.hand_on()
        publisher.beat(symbols, time.monotonic())
        manager.beat(status, cfg.status_interval)
    # one deadline for the whole stop, within the manager's: connections, then what waits for NATS
    deadline = time.monotonic() + cfg.stop_timeout * STOP_SHARE
    for c in conns:
        c.join(timeout=max(0.1, min(5.0, deadline - time.monotonic() - cfg.stop_timeout / 4)))
    tap.hand_on(force=True)
    now = time.time_ns() // 1000
    for symbol in symbols:                    # after every frame: the sinks show this collector stopped, not silent
        publisher.put(cluster.Stopped(collector, symbol, now))
    publisher.deadline = deadline - PUBLISH_TIMEOUT - CLOSE_TIMEOUT
    pub_stop.set()
    done.wait(max(0.1, deadline - time.monotonic()))
    left = publisher.status()["buffer_messages"]
    manager.report(status())
    if left:
        log.error("%s: %d messages were not taken by NATS before the stop; their frames are lost", name, left)
    if threads.failed:
        raise SystemExit(proc.EXIT_THREAD_DIED)
    log.info("%s: stopped", name)
