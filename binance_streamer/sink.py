"""The sink role: a worker whose frames come from NATS JetStream, from every
collector of its symbols, instead of its own connections.

:class:`Merge` puts the collectors' frames of each stream together by the
exchange's id (streams.event_id; with the event time, so that the updates of
one open kline stay distinct) and hands each event on once, in id order, to
the worker's usual handling (parse, continuity, backfill, book feed, rows
for the writer): once every collector connected on the stream has passed it,
or ``redundancy_window`` seconds after it came. A hole one collector has and
another fills is therefore no hole; a hole every collector has reaches the
worker as a jump, ledgered as on one machine. For streams whose holes do not
show in ids (bookTicker, forceOrder), each collector's frames of a stream
come in *runs*: from its first frame after a ``connected`` event (or a
:class:`cluster.Dropped` note) to the next one (a connection's reader may
still hand on what its socket held after its ``disconnected`` event). Two events handed on
one after the other follow each other without a hole only when one run of
one collector holds both; when none does, the worker hears of a reconnect
just before the second (and ledgers it as on one machine). The runs are
judged when the events are handed on, so the order in which the collectors'
messages arrive does not matter.

:class:`Feed` reads a durable pull consumer (one per sink worker, named
``<sink_id>-<market>-<index>-<digest>``, the digest of its filter subjects and
streams, so that sinks of other markets, symbols or streams never share one;
filtered to the worker's symbols; acknowledgements acknowledge everything
before them) and acknowledges a message only once every frame in it was
handed on and the writer acknowledged the rows they made (or the frames were
duplicates). A sink that starts again recreates its consumer at the first
message it had not acknowledged: nothing is lost, and what is read twice the
writer drops by id. The consumer's description names the sink and its data
directory: a sink takes over only its own consumer (after a change of its
symbols or streams, from where the old one was) and refuses another's. A
message whose subject is not one of its own is never handed on.
"""

import asyncio
import collections
import hashlib
import heapq
import logging
import re
import threading
import time

import orjson

from . import cluster
from .roster import Roster
from .status import COLLECTOR_SILENT_S
from .streams import event_id

log = logging.getLogger(__name__)

FETCH = 512
UNKNOWN = object()       # Feed.position before the old consumer was read


class Refused(Exception):
    """The consumer this sink would use belongs to another sink."""


def consumer_name(cfg, index, subjects):
    """The durable consumer of sink worker ``index``: sinks whose market,
    symbols (``subjects``) or streams differ never share one."""
    digest = hashlib.sha1("\n".join(sorted(subjects) + sorted(cfg.streams)).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{cluster.node_id(cfg.sink_id)}-{cfg.market}-{index}-{digest}")


def consumer_owner(cfg, index):
    """The description a sink worker gives its consumer: whose it is."""
    return f"binance-streamer sink {cluster.node_id(cfg.sink_id)} {cfg.market} worker {index}, files in {cfg.data_dir}"


def _filters(conf):
    return sorted(conf.filter_subjects or ([conf.filter_subject] if conf.filter_subject else []))


class Merge:
    """The frames of every collector, per stream, handed on once in id order.
    Called with the worker's lock held."""

    def __init__(self, worker, window, clock=time.monotonic):
        self.worker, self.window, self.clock = worker, window, clock
        self.heaps = collections.defaultdict(list)      # stream name -> heap of [key, n, arrival, recv_us, data, seq]
        self.waiting = {}                                # (name, key) -> (entry, collectors that delivered it,
        #                                                   collectors connected when it came)
        self.released = {}                               # stream name -> key of the last event handed on
        self.high = {}                                   # (collector, name) -> highest key delivered
        self.connected = {}                              # (collector, name) -> connected now
        self.first = {}                                  # (collector, name) -> first key it ever delivered
        self.collectors = {}                             # collector -> {"last": monotonic, "filled": n, ...}
        self.inflight = collections.Counter()            # NATS stream seq -> frames of it still waiting
        self.received = collections.deque()              # NATS stream seqs in the order received
        self.done = 0                                    # every message up to this seq is handed on
        self.runs = collections.defaultdict(dict)        # name -> {collector: [first key, highest key] of its run}
        self.ended = collections.defaultdict(list)       # name -> [(collector, first, last, dropped)] of runs
        #                                                   that ended (dropped: by a Dropped note)
        self.pending = {}                                # (collector, name) -> [events handed on without it
        #                                                   past its highest, key of the last]: its holes once
        #                                                   it delivers a later event, none if it delivers them
        #                                                   late or falls silent (killed) or stops first
        self.cause = {}                                  # name -> collectors whose dropped frames made the hole
        #                                                   the worker is about to ledger there
        self.n = 0
        self.started = clock()
        self.last_any = None                             # when the last message came (any collector)
        self.resumed = -window                           # when messages came again after a pause (a NATS outage)
        self.duplicates = 0
        self.roster = Roster(sorted({r.symbol for r in worker.routes.values()}), clock, COLLECTOR_SILENT_S)

    def _collector(self, name):
        c = self.collectors.get(name)
        if c is None:
            c = self.collectors[name] = {"last": self.clock(), "filled": 0, "frames": 0, "dropped": 0}
        return c

    def add(self, msg, seq, out, boot=None):
        """A decoded message of NATS stream sequence ``seq``, from collector
        process ``boot`` (cluster.boot_of); frames that need no merging (no
        id) go to ``out`` at once."""
        self.received.append(seq)
        said = self.roster.heard(msg.collector, msg.symbol, boot, stopped=isinstance(msg, cluster.Stopped))
        if said:
            log.error("%s", said)
        c = self._collector(msg.collector)
        now = c["last"] = self.clock()
        if self.last_any is not None and now - self.last_any > self.window:
            self.resumed = now               # every collector gets a window to send what waited meanwhile
        self.last_any = now
        if isinstance(msg, cluster.Frames):
            self._frames(msg, seq, out)
        elif isinstance(msg, cluster.ConnectionEvent):
            self._event(msg)
        elif isinstance(msg, cluster.Dropped):
            c["dropped"] += msg.frames
            log.error("sink: collector %s dropped %d frames of %s (its buffer overflowed while NATS was away); "
                      "other collectors may have them", msg.collector, msg.frames, msg.symbol)
            self._end_runs(msg.collector, [n for n, r in self.worker.routes.items() if r.symbol == msg.symbol],
                           dropped=True)

    def _frames(self, msg, seq, out):
        routes, now = self.worker.routes, self.clock()
        who = msg.collector
        self.collectors[who]["frames"] += len(msg.frames)
        for recv_us, data in msg.frames:
            try:
                parsed = orjson.loads(data)
                name = parsed["stream"]
                route = routes[name]
                d = parsed["data"]
                ident = event_id(route.spec, d)
                e = d.get("E", 0)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                out.append((recv_us, data))          # the worker counts and ledgers what it cannot use
                continue
            if ident.__class__ is not int:
                out.append((recv_us, data))
                continue
            key = (ident, e if e.__class__ is int else 0)
            self.connected[(who, name)] = True
            held = self.pending.get((who, name))
            if held is not None:
                if key > held[1]:                  # it went on past them: they were holes of its own
                    self.collectors[who]["filled"] += held[0]
                    del self.pending[(who, name)]
                elif held[0]:                      # one of them, only late
                    held[0] -= 1
            if (who, name) not in self.high or key > self.high[(who, name)]:
                self.high[(who, name)] = key
            if key < self.first.setdefault((who, name), key):
                self.first[(who, name)] = key
            runs = self.runs[name]
            run = runs.get(who)
            if run is None:
                runs[who] = [key, key]
            elif key > run[1]:
                run[1] = key
            last = self.released.get(name)
            if last is not None and key <= last:
                self.duplicates += 1
                continue
            known = self.waiting.get((name, key))
            if known is not None:
                known[1].add(who)
                self.duplicates += 1
                continue
            self.n += 1
            entry = [key, self.n, now, recv_us, data, seq]
            heapq.heappush(self.heaps[name], entry)
            expected = {c for (c, n), on in self.connected.items() if on and n == name}
            self.waiting[(name, key)] = (entry, {who}, expected)
            self.inflight[seq] += 1

    def _missed(self, c, name, key, now):
        """Is an event ``c`` did not deliver a hole of ``c``'s? Not when it came
        before ``c``'s first event of that stream (``c`` started after it) nor
        once ``c`` has been silent long enough to be reported silent (stopped
        or gone: its absence is a health reason, not a count of holes)."""
        first = self.first.get((c, name))
        return first is not None and first <= key and self._recording(c, name, now)

    def _recording(self, c, name, now):
        """Is ``c`` still recording ``name``: neither stopped cleanly nor silent?"""
        route = self.worker.routes.get(name)
        if route is not None and route.symbol in self.roster.stopped.get(c, ()):
            return False                          # it stopped cleanly: it misses nothing since
        return now - self.collectors[c]["last"] < COLLECTOR_SILENT_S

    def _hole(self, c, name, key):
        """``c`` lacked event ``key`` that another collector supplied: a hole of
        ``c``'s once it has passed ``key``; until then it may be late or gone."""
        if self.high[(c, name)] > key:
            self.collectors[c]["filled"] += 1
        else:
            held = self.pending.setdefault((c, name), [0, key])
            held[0] += 1
            held[1] = key

    def _event(self, msg):
        names = [n for n in msg.streams if n in self.worker.routes]
        for name in names:
            self.connected[(msg.collector, name)] = msg.event == "connected"
        if msg.event == "connected":       # frames after a disconnect, before this, are the old connection's last
            self._end_runs(msg.collector, names)

    def _end_runs(self, who, names, dropped=False):
        """``who``'s frames of ``names`` after this may follow a hole."""
        for name in names:
            run = self.runs[name].pop(who, None)
            if run is not None:
                self.ended[name].append((who, run[0], run[1], dropped))

    def _unbroken(self, name, last, key):
        """Does one run of one collector hold both ``last`` and ``key``?"""
        for first, high in self.runs[name].values():
            if first <= last and high >= key:
                return True
        ended = self.ended.get(name)
        if ended:
            ended[:] = [r for r in ended if r[2] >= last]       # runs before what was handed on matter no more
            return any(first <= last and high >= key for _, first, high, _ in ended)
        return False

    def _dropped_in(self, name, last, key):
        """Collectors whose frames broke off between ``last`` and ``key`` because their buffer overflowed."""
        return sorted({c for c, _, high, dropped in self.ended.get(name, ()) if dropped and last <= high < key})

    def release(self, out):
        """Hand on (into ``out``) what every connected collector has passed or
        what waited ``redundancy_window``."""
        now = self.clock()
        if now - self.started < self.window:      # after a start, give every collector's messages time to come
            return
        alive = {c for c, info in self.collectors.items()
                 if now - info["last"] < self.window or now - self.resumed < self.window}
        for c, name in [k for k in self.pending if not self._recording(*k, now)]:
            del self.pending[(c, name)]             # killed or stopped: what it never passed was no hole of its
        for name, heap in self.heaps.items():
            known = [c for c in self.collectors if self.connected.get((c, name))]
            feeding = [c for c in known if c in alive]
            while heap:
                entry = heap[0]
                key = entry[0]
                if now - entry[2] < self.window and \
                        not all(self.high.get((c, name), (-1, 0)) >= key for c in feeding):
                    break
                heapq.heappop(heap)
                _, had, expected = self.waiting.pop((name, key))
                for c in expected.union(known).difference(had):    # connected when it came, yet without it
                    if self._missed(c, name, key, now):
                        self._hole(c, name, key)
                last = self.released.get(name)
                if last is not None and not self._unbroken(name, last, key):
                    out.append((None, (name, self._dropped_in(name, last, key))))   # no collector read both:
                    #                                                the worker hears of a reconnect
                self.released[name] = key
                out.append((entry[3], entry[4]))
                seq = entry[5]
                self.inflight[seq] -= 1
                if not self.inflight[seq]:
                    del self.inflight[seq]
        while self.received and not self.inflight.get(self.received[0]):
            self.done = self.received.popleft()

    def detail(self, route):
        """A hole the worker ledgers is one every collector had: which."""
        name = f"{route.symbol.lower()}@{route.stream}"
        had = sorted(c for (c, n) in self.high if n == name)
        if not had:
            return "no collector has sent this stream yet"
        full = self.cause.get(name)
        return f"in every collector ({', '.join(had)})" + \
            (f"; dropped by {', '.join(full)} (buffer full while NATS was away)" if full else "")

    def status(self, now):
        return {c: {"last_message_age_s": round(now - info["last"], 2), "frames": info["frames"],
                    "holes_filled_by_others": info["filled"], "dropped_frames": info["dropped"],
                    "state": self.roster.state(c, now - info["last"]),
                    **({"duplicate": self.roster.duplicate_of(c)} if c in self.roster.duplicate else {})}
                for c, info in self.collectors.items()}


class Feed:
    """The NATS side of a sink worker (an asyncio loop in a thread)."""

    def __init__(self, cfg, worker, symbols, index, stop, writer):
        self.cfg, self.worker, self.symbols, self.stop = cfg, worker, symbols, stop
        self.writer = writer           # links.Producer: its outbox numbers the batches
        self.subjects = [cluster.subject(cfg, s) for s in symbols]
        self.durable = consumer_name(cfg, index, self.subjects)
        self.owner = consumer_owner(cfg, index)
        self.refused = None              # why this sink may not use its consumer (it stops)
        self.foreign = 0                 # messages of subjects not its own, refused
        self.merge = Merge(worker, cfg.redundancy_window)
        worker.hole_detail = self.merge.detail
        self.marks = collections.deque()     # (batch seq, messages done when it left)
        self.acked_batch = 0
        self.ack_to = 0                  # acknowledge NATS up to this stream seq
        self.acked = 0
        self.messages = {}               # stream seq -> message, until acknowledged
        self.last_seq = 0
        self.pending = None              # the consumer's num_pending at the last fetch
        self.trouble = cluster.Trouble(cfg, f"sink {self.durable}")
        self.nc = None
        self.finished = threading.Event()    # run() ended: its NATS connection is closed
        self.connected = False           # consuming: the last turn reached NATS
        self.read_time = None            # when the newest message read was stored by NATS (epoch s)
        self.position = UNKNOWN          # the stream message the consumer resumes after (None: a new one)

    # -- from the worker's threads ------------------------------------------------------
    def sent(self):
        """A batch left (the worker's lock is held): its rows hold every frame
        handed on so far, unless a backfill holds rows back."""
        self._mark()

    def _mark(self):
        if any(r.held is not None for r in self.worker.routes.values()):
            return
        seq, done = self.writer.outbox.seq, self.merge.done
        if seq <= self.acked_batch:
            self.ack_to = max(self.ack_to, done)
        else:
            self.marks.append((seq, done))

    def written(self, seq):
        """The writer acknowledged batches up to ``seq``."""
        with self.worker.lock:
            self.acked_batch = max(self.acked_batch, seq)
            while self.marks and self.marks[0][0] <= seq:
                self.ack_to = max(self.ack_to, self.marks.popleft()[1])

    # -- the loop ------------------------------------------------------------------------
    async def run(self):
        js = nc = sub = None
        while not self.stop.is_set():
            try:
                if js is None:
                    nc = self.nc = await cluster.connect(self.cfg, f"sink {self.durable}", self.trouble, self.stop)
                    js = nc.jetstream()
                if sub is None:                # again after a failure (a JetStream cluster electing a leader)
                    await cluster.ensure_stream(js, self.cfg)
                    sub = await self._subscribe(js)
                if not nc.is_connected:
                    raise ConnectionError("not connected, reconnecting")
                await self._turn(sub)
                if not self.connected:
                    if self.trouble.errors:
                        log.info("sink %s: consuming from NATS again", self.durable)
                    self.connected = True
            except Refused as exc:
                self.refused = str(exc)
                log.error("%s", exc)
                self.stop.set()
            except cluster.Stopping:      # stopped before NATS answered
                break
            except Exception as exc:      # NATS away (or no JetStream): the consumer keeps our position
                self.connected = False
                self.trouble.failed(exc)
                await asyncio.sleep(cluster.RETRY)
        try:
            await self._ack()
        except Exception:          # not acknowledged: read again at the next start, dropped by id then
            pass
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:      # a broken connection may fail to close; nothing is left to send
                pass
        self.finished.set()

    async def _subscribe(self, js):
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        stream, subjects = self.cfg.nats_stream, self.subjects
        if self.position is UNKNOWN:          # once: the old consumer is gone after it, so a retry must not ask again
            self.position = await self._position(js)
            with self.worker.lock:
                self.worker.resumed = self.position is not None
        floor = self.position
        start = {"deliver_policy": DeliverPolicy.ALL} if floor is None else \
            {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": floor + 1}
        conf = ConsumerConfig(durable_name=self.durable, description=self.owner, ack_policy=AckPolicy.ALL,
                              ack_wait=3600.0, max_ack_pending=-1, max_deliver=-1,
                              **({"filter_subject": subjects[0]} if len(subjects) == 1
                                 else {"filter_subjects": subjects}), **start)
        await js.add_consumer(stream, conf)
        return await js.pull_subscribe_bind(self.durable, stream)

    async def _position(self, js):
        """The stream message this sink's consumer acknowledged up to (the
        consumer is removed, to be made again from there), or None for a new
        consumer. Another sink's consumer of this name is refused."""
        from nats.js.errors import NotFoundError
        stream = self.cfg.nats_stream
        try:
            info = await js.consumer_info(stream, self.durable)
        except NotFoundError:
            info = next((c for c in await js.consumers_info(stream)
                         if c.config.description == self.owner and c.name != self.durable), None)
            if info is None:
                log.info("sink %s: a new consumer, from the first message the stream holds", self.durable)
                return None
            log.info("sink %s: the symbols or streams changed since consumer %s (it read %s): it is replaced by "
                     "this one, from where it was", self.durable, info.name, ",".join(_filters(info.config)))
        else:
            if info.config.description != self.owner:
                raise Refused(
                    f"sink {self.durable}: NATS consumer {self.durable} of stream {stream} belongs to another sink "
                    f"({info.config.description or 'no description'}; it reads {','.join(_filters(info.config))}), "
                    f"so this sink does not take it over; give each sink its own sink_id (config setting sink_id)")
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        await js.delete_consumer(stream, info.name)
        log.info("sink %s: resuming after stream message %d", self.durable, floor)
        return floor

    async def _turn(self, sub):
        import nats.errors
        try:
            msgs = await sub.fetch(FETCH, timeout=0.1)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            msgs = []
        with self.worker.lock:
            self._take(msgs)
        await self._ack()

    def _take(self, msgs):
        """NATS messages into the merge; what may go on, to the worker (its lock held)."""
        out = []
        for m in msgs:
            meta = m.metadata
            seq = meta.sequence.stream
            self.pending = meta.num_pending
            self.read_time = meta.timestamp.timestamp() if meta.timestamp else None
            if seq <= self.last_seq:          # delivered again: already here
                continue
            self.last_seq = seq
            self.messages[seq] = m
            try:
                msg = cluster.decode(m.data)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("sink: stream message %d is not a collector's message (%s); skipped", seq, exc)
                self.merge.received.append(seq)
                continue
            if m.subject not in self.subjects or cluster.subject(self.cfg, msg.symbol) != m.subject:
                self._foreign(seq, m.subject, msg)
                continue
            self.merge.add(msg, seq, out, cluster.boot_of((getattr(m, "headers", None) or {}).get("Nats-Msg-Id")))
        self.merge.release(out)
        self._hand(out)
        self.worker.hand_on()
        if not self.worker.outbox:
            self._mark()

    def _foreign(self, seq, subj, msg):
        """A message not of this sink's market and symbols: never written."""
        self.foreign += 1
        self.merge.received.append(seq)
        if self.foreign == 1:
            log.error("sink %s: stream message %d (subject %s, %s of %s) is not of this sink's market and symbols "
                      "(%s); refused, as every such message will be (counted in status as foreign_messages); "
                      "check that no other sink uses consumer %s", self.durable, seq, subj,
                      type(msg).__name__, msg.symbol, ",".join(self.subjects), self.durable)

    def _hand(self, frames):
        on_frames, on_connected, cause = self.worker.on_frames, self.worker.on_connected, self.merge.cause
        for recv_us, data in frames:
            if recv_us is None:              # Merge: a hole may lie before the next event of (stream, dropped by)
                name, cause[name] = data
                on_connected([name])
            else:
                on_frames((data,), recv_us)
                if cause:
                    cause.clear()            # the event after the hole: the ledger row, if any, is made

    async def _ack(self):
        target = self.ack_to
        if target <= self.acked:
            return
        seqs = [s for s in self.messages if s <= target]
        if not seqs:
            return
        await self.messages[max(seqs)].ack()       # AckPolicy.ALL: everything before it too
        for s in seqs:
            del self.messages[s]
        self.acked = max(seqs)

    def status(self):
        with self.worker.lock:
            lag = round(max(0.0, time.time() - self.read_time), 1) if self.pending and self.read_time else 0.0
            return {"consumer": self.durable, "num_pending": self.pending, "last_stream_seq": self.last_seq,
                    "nats_connected": self.connected, "lag_s": lag,
                    "acked_stream_seq": self.acked, "nats_errors": self.trouble.errors, **self.trouble.status(),
                    "unpublished_symbols": self.merge.roster.unpublished(),
                    "duplicates": self.merge.duplicates, "foreign_messages": self.foreign,
                    "collectors": self.merge.status(time.monotonic())}
