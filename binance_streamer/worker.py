"""The symbol worker process: WebSocket connections for its symbols, parsing,
id continuity, REST backfills, and batches of CSV lines for the writer.

Per subscribed stream (a :class:`Route`) the worker remembers the last id
and judges each event by its kind's continuity rule (streams.KINDS,
continuity.py). A jump after a reconnect, or anywhere, is a gap: what REST
can fetch (aggTrades, klines) is backfilled while the live rows of that
stream wait, so files stay in id order; what it cannot becomes a gap-ledger
row. Rows leave in one ordered list per batch (one queue put per
``batch_interval``), never one put per message.

The :class:`Worker` wires the parts and holds the lock the reader, REST and
main threads share: the ordered outbox and the book feed (outbox.py), the
REST jobs (restjobs.py) and the connections (connection.py).
"""

import logging
import os
import threading
import time

import orjson

from . import continuity, links, messages, proc
from .binance import parse
from .binance.endpoints import connection_plan
from .binance.rest import RestClient
from .connection import Connection
from .continuity import BACKFILL, DUPLICATE, FIRST, LOST
from .csvfiles import DayOf, row_time
from .markets import futures
from .outbox import BookFeed, Outbox
from .restjobs import RestJobs
from .seriesjobs import SeriesPoller
from .sequence import RESUMED, WITHIN, gap_row
from .streams import (CHAINED, CONSECUTIVE, INCREASING, KINDS, PERIODIC, day_getter, event_id, file_stream,
                      id_step, kind_of, ledger_time, period_ms, unexpected_fields)

log = logging.getLogger(__name__)

IDLE_WAIT = 0.5          # seconds the main thread sleeps when no batch is waiting
BATCH_ROWS = 5000        # a batch this large leaves before batch_interval: a burst is not held whole
MALFORMED = parse.MALFORMED


class Route:
    """One stream of one symbol, as this worker receives it."""

    __slots__ = ("symbol", "stream", "kind", "spec", "file", "last", "state", "held", "waiting", "day",
                 "messages", "last_recv_us", "gaps", "backfilled", "step", "bad", "day_of", "last_event",
                 "last_event_us", "read")

    def __init__(self, symbol, stream, market="spot"):
        self.symbol, self.stream = symbol, stream
        self.file = file_stream(stream)
        self.kind = kind_of(self.file)
        self.spec = KINDS[self.kind]      # what streams.py knows of this kind
        self.read = parse.frame_reader(market, self.kind)    # its frames as Binance writes them, or None
        self.step = id_step(self.file)
        self.last = None
        self.last_event = None        # the event of ``last`` and its receive time: a hole's start
        self.last_event_us = 0
        self.state = "start"          # start | live | reconnected
        self.held = None              # rows waiting for a backfill, in order
        self.waiting = 0              # backfills in progress
        self.day = DayOf()
        self.day_of = day_getter(self.spec, self.day)      # (event, recv_us) -> the day of its rows
        self.messages = self.gaps = self.backfilled = 0
        self.last_recv_us = None
        self.bad = False              # a malformed event was dropped since the last good one


    def last_time(self):
        """The ledger time (ms) of the last event kept ("" before the first)."""
        return "" if self.last_event is None else ledger_time(self.spec, self.last_event, self.last_event_us)


class Worker:
    def __init__(self, cfg, symbols, rest=None, stop=None, clock=time.time):
        self.cfg, self.market, self.clock = cfg, cfg.market, clock
        self.rest = rest
        self.stop = stop or threading.Event()
        self.routes = {f"{s.lower()}@{st}": Route(s, st, cfg.market) for s in symbols for st in cfg.streams}
        self.lock = threading.RLock()
        self.outbox = Outbox()
        self.book = BookFeed(symbols) if cfg.orderbook else None    # for the book manager
        self.rest_jobs = RestJobs(rest, self.market, self.lock, self.outbox, self.book, self.stop, clock)
        self.jobs = self.rest_jobs.queue
        self.batch_due = None         # monotonic time the rows gathered so far must be handed on
        self.send = None              # send(rows batch, book batch): set by worker_main
        self.hole_detail = None       # route -> what a ledger row adds (a sink: which collectors had the hole)
        self.resumed = False          # a sink that resumed after its consumer's position (sequence.RESUMED)
        self.counts = {"malformed": 0, "unknown": 0, "unexpected_fields": 0, "duplicates": 0,
                       "open_klines": 0, "control_replies": 0, "errors": 0}
        self.throttle = proc.Throttle()
        self.throttle_connect = proc.Throttle()
        # one handler per continuity rule (streams.KINDS): the chained stream
        # is depth, which feeds the book, as the increasing kinds with feeds_book do
        self.handlers = {CONSECUTIVE: self._consecutive, CHAINED: self._depth, INCREASING: self._increasing,
                         PERIODIC: self._periodic}

    # -- frames ------------------------------------------------------------------
    def on_connected(self, names):
        """A new connection carries ``names``: the next gap there is a reconnect."""
        with self.lock:
            for name in names:
                route = self.routes[name]
                if route.state == "live":
                    route.state = "reconnected"

    def on_disconnected(self, names):
        """The connection carrying ``names`` ended (a collector publishes it)."""

    def identify(self, data):
        """``(stream, id)`` of a data frame, for matching two connections; or None."""
        try:
            msg = orjson.loads(data)
            route = self.routes.get(msg.get("stream"))
            if route is None:
                return None
            ident = event_id(route.spec, msg["data"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            return None
        return (msg["stream"], ident) if ident.__class__ is int else None

    def overlaps(self, names, first_ids):
        """Has a new connection, whose first ids per stream are ``first_ids``,
        caught up with what was already received on every stream with data?"""
        return all(continuity.handed_over(self.routes[n].spec.overlap, self.routes[n].last, first_ids.get(n))
                   for n in names)

    def on_frames(self, messages, recv_us):
        """Handle the text frames of one socket read (all received at
        ``recv_us``); returns "shutdown" if one was a serverShutdown event."""
        result = None
        routes, handlers = self.routes, self.handlers
        with self.lock:
            for data in messages:
                # A frame as Binance writes it (most of them) is matched whole
                # and its rows made from its text (parse.frame_reader); any
                # other frame, or one that is not quite that, is decoded whole.
                text = data.decode("latin-1")
                route = routes.get(text[11:text.find('"', 11, 120)])
                parts = None if route is None or route.read is None else route.read(text, recv_us)
                if parts is not None:
                    d, ready = parts
                else:
                    route, msg = self.decode(data)
                    if route is None:
                        result = result or msg
                        continue
                    d, ready = msg.get("data"), None
                try:
                    handlers[route.spec.rule](route, d, recv_us, ready)
                except MALFORMED as exc:
                    self._malformed(route, d, data, exc, recv_us)
                    continue
                except Exception:       # a bug; it must not stop the reader thread
                    self.counts["errors"] += 1
                    if self.throttle.allow():
                        log.exception("%s %s: the event could not be handled (dropped): %r", route.symbol,
                                      route.stream, data[:160])
                    continue
                route.messages += 1
                route.last_recv_us = recv_us
                if route.messages & 1023 == 1:
                    extra = unexpected_fields(route.spec, d)
                    if extra:
                        self._odd("unexpected_fields", f"{route.symbol} {route.stream}: unexpected fields", extra)
        return result

    def decode(self, data):
        """A frame decoded whole: ``(route, msg)``; ``(None, "shutdown")`` for
        the server's notice of a shutdown; ``(None, None)`` for anything else
        that is not an event of a subscribed stream (counted and logged)."""
        try:
            msg = orjson.loads(data)
            route = self.routes.get(msg.get("stream"))
        except (orjson.JSONDecodeError, AttributeError):
            return None, self._odd("malformed", "malformed frame", data[:120])
        if route is None:
            return None, self._not_data(msg)
        return route, msg

    def _not_data(self, msg):
        if not isinstance(msg, dict):
            return self._odd("malformed", "frame is not an object", str(msg)[:120])
        data = msg.get("data") if isinstance(msg.get("data"), dict) else msg
        if msg.get("stream") == "!serverShutdown" or data.get("e") == "serverShutdown":
            log.info("server announced a shutdown (E=%s); reconnecting", data.get("E"))
            return "shutdown"
        if "result" in msg and "id" in msg:
            self.counts["control_replies"] += 1
            return None
        if "code" in msg and "msg" in msg:
            return self._odd("unknown", "the server reported an error", msg)
        return self._odd("unknown", "unknown event", str(msg)[:160])

    def _malformed(self, route, d, data, exc, recv_us):
        """An event that does not parse is dropped, counted and logged. It
        never changed the stream's state, so the next good event shows the
        hole, which the ledger then explains as a malformed event; a stream
        whose ids do not count one by one (bookTicker) gets its row now."""
        self._odd("malformed", f"{route.symbol} {route.stream}: malformed event dropped ({exc})", data[:160])
        route.bad = True
        if route.spec.rule == INCREASING:
            u = d.get(route.spec.id_field) if isinstance(d, dict) else None
            t = d.get(route.spec.time_field) if isinstance(d, dict) else None
            self._report(route, route.last, u if u.__class__ is int else "", "lost",
                         t if t.__class__ is int else recv_us // 1000, detail=str(exc)[:120])

    def _odd(self, counter, what, detail):
        self.counts[counter] += 1
        if self.throttle.allow():
            log.warning("%s: %s (%d so far)", what, detail, self.counts[counter])
        return None

    # -- per-rule handlers (called with the lock held) ----------------------------
    # Each parses (and so checks) the whole event first: a malformed one
    # raises before it changes any state, so the next good event sees the hole.
    # ``ready``: what the route's parse.frame_reader already made of the frame.
    def _consecutive(self, route, d, recv_us, ready=None):
        spec = route.spec
        row = ready or spec.parse(self.market, d, recv_us)
        if row is None:               # not a row: the candle is still open
            self.counts["open_klines"] += 1
            return
        ident, line = row
        last = route.last
        verdict = continuity.consecutive(last, route.state, ident, route.step,
                                         spec.backfill is not None and self.rest is not None)
        if verdict == DUPLICATE:
            self.counts["duplicates"] += 1
            return
        if verdict == FIRST:
            self._report(route, None, ident, "", ledger_time(spec, d, recv_us))
        elif verdict == BACKFILL:
            self.rest_jobs.fill(route, *continuity.backfill_range(last, ident, route.step), self._reason(route),
                                (route.last_time(), ledger_time(spec, d, recv_us)))
        elif verdict == LOST:
            self._report(route, last, ident, "lost", ledger_time(spec, d, recv_us))
        route.last, route.state, route.last_event, route.last_event_us = ident, "live", d, recv_us
        self.outbox.add(route, route.day_of(d, recv_us), ident, line)

    def _depth(self, route, d, recv_us, ready=None):
        spec = route.spec
        uid, text, rows, bids, asks = spec.parse(self.market, d, recv_us, *(ready or ()))
        first, final = d["U"], d["u"]
        prev = d["pu"] if futures(self.market) else None
        verdict = continuity.chained(self.market, route.last, route.state, first, final, prev)
        if verdict == DUPLICATE:
            self.counts["duplicates"] += 1
            return
        if verdict == LOST:
            self._report(route, route.last, first, "lost", ledger_time(spec, d, recv_us), prev=prev)
        route.last, route.state, route.last_event, route.last_event_us = final, "live", d, recv_us
        if self.book is not None:
            self.book.diff(route.symbol, first, final, d.get("pu"), bids, asks, d["E"])
        self.outbox.add(route, route.day_of(d, recv_us), uid, text, rows=rows)

    def _increasing(self, route, d, recv_us, ready=None):
        spec = route.spec
        u, line = ready or spec.parse(self.market, d, recv_us)
        verdict = continuity.increasing(route.last, route.state, u)
        if verdict == DUPLICATE:
            self.counts["duplicates"] += 1
            return
        if verdict == LOST:
            self._report(route, route.last, u, "lost", ledger_time(spec, d, recv_us))
        route.last, route.state, route.last_event, route.last_event_us = u, "live", d, recv_us
        if self.book is not None and spec.feeds_book:
            self.book.ticker(route.symbol, u, d["b"], d["B"], d["a"], d["A"])
        self.outbox.add(route, route.day_of(d, recv_us), u, line)

    def _periodic(self, route, d, recv_us, ready=None):
        spec = route.spec
        e, line = spec.parse(self.market, d, recv_us)
        period = period_ms(route.stream)
        verdict = continuity.periodic(route.last, route.state, e, period)
        if verdict == DUPLICATE:
            self.counts["duplicates"] += 1
            return
        if verdict == FIRST:          # the writer compares it with the last row on disk, by the same limit
            self._report(route, None, e, "", ledger_time(spec, d, recv_us), within=continuity.hole_after(period))
        elif verdict == LOST:
            self._report(route, route.last, e, "lost", ledger_time(spec, d, recv_us))
        route.last, route.state, route.last_event, route.last_event_us = e, "live", d, recv_us
        self.outbox.add(route, route.day_of(d, recv_us), e, line)

    def _reason(self, route):
        """Why a gap happened, from the route's state (call before it changes)."""
        bad, route.bad = route.bad, False
        if route.state == "start":
            return "start"
        return "malformed event" if bad else {"reconnected": "reconnect"}.get(route.state, "id jump")

    def _report(self, route, last, first, action, first_time="", detail="", within=None, prev=None):
        """A ledger row of a hole between ids ``last`` (the route's last
        event: its time goes with it) and ``first`` (of time ``first_time``);
        ``within``: see sequence.WITHIN."""
        if route.state != "start":
            route.gaps += 1
        last_time = route.last_time() if last is not None else ""
        if not detail and self.hole_detail is not None and route.state != "start":
            detail = self.hole_detail(route)
        row = gap_row(int(self.clock() * 1e6), route.file, self._reason(route), last, first, action, 0, detail,
                      last_time, first_time)
        if within is not None:
            row[WITHIN] = within
        if route.state == "start" and self.resumed:
            row[RESUMED] = prev
        self.outbox.gap(route, row)

    # -- hand-on ------------------------------------------------------------------------
    def hand_on(self, force=False):
        """Send what was gathered once it is ``batch_interval`` old (or now).
        The first call that finds rows starts the batch's clock: the reader
        threads call it after every read (and wake up for ``batch_due``), the
        main thread at least every IDLE_WAIT. Any thread may call it; the lock
        is held while sending so batches leave in the order they were gathered."""
        with self.lock:
            if not (self.outbox or self.book):
                return
            now = time.monotonic()
            if self.batch_due is None:
                self.batch_due = now + self.cfg.batch_interval
            if not force and now < self.batch_due and self.outbox.rows < BATCH_ROWS:
                return
            self.batch_due = None
            batch, book = self.take_batch(), self.take_book_batch()
            if self.send is not None:
                self.send(batch, book)

    def take_batch(self):
        with self.lock:
            return self.outbox.take()

    def take_book_batch(self):
        with self.lock:
            return self.book.take() if self.book is not None else []

    # -- requests and REST ---------------------------------------------------------------
    def command(self, msg):
        """A request from another process: a Backfill from the writer or a
        SnapshotRequest from the book manager (messages.py)."""
        if isinstance(msg, messages.SnapshotRequest):
            self.rest_jobs.put(("snapshot", msg.symbol, msg.limit, msg.priority))
        elif isinstance(msg, messages.Backfill):
            route = next((r for r in self.routes.values() if r.symbol == msg.symbol and r.file == msg.stream), None)
            if route is not None and route.spec.backfill is not None:
                self.rest_jobs.put(("writer", route, msg.first, msg.last, "", None))
        else:
            log.error("worker: unknown request %s", type(msg).__name__)

    def run_jobs(self):
        """REST thread: one job at a time, within the daemon's weight budget."""
        self.rest_jobs.run()

    def do_job(self, job):
        self.rest_jobs.do(job)

    def shutdown(self):
        """Let held rows go (their backfill will not finish) with a gap row;
        a malformed event just before the stop gets its ledger row too."""
        with self.lock:
            for route in self.routes.values():
                if route.bad and route.spec.rule != INCREASING:
                    self._report(route, route.last, "", "lost", detail="malformed event just before the stop")
                if route.held is not None:
                    first = min(route.held, key=lambda r: r[1], default=None)
                    self._report(route, None, None if first is None else first[1], "lost",
                                 "" if first is None else row_time(self.market, route.file, first[2]),
                                 detail="stopped before the backfill finished")
                    route.waiting = 0
                    self.outbox.release(route)

    def status(self, conns):
        with self.lock:
            streams = {f"{r.symbol}/{r.file}": {"messages": r.messages, "last_recv_us": r.last_recv_us,
                                                 "gaps": r.gaps, "backfilled": r.backfilled,
                                                 "last_id": r.last}
                       for r in self.routes.values()}
        return {"streams": streams, "counts": dict(self.counts),
                "connections": [c.info() for c in conns],
                "rest_requests": self.rest.requests if self.rest else 0,
                "rest_failures": self.rest.failures if self.rest else 0,
                "rest_malformed": self.rest.malformed if self.rest else 0}


def worker_main(cfg, symbols, index, restarts, control, peers, budget, connect_budget, series_budgets=None):
    """Process entry point: one worker for ``symbols``; stops on SIGTERM.
    ``peers``: its ends of the links to the writer and the book manager
    (absent while that process is down: an Attach brings it later);
    ``series_budgets``: the REST series' request limits (budgets.request_budgets)."""
    name = f"worker-{index}"
    stop, manager = proc.child_setup(name, control, cfg.log_level)
    proc.map_large_blocks()       # a burst's batches leave no pages behind (proc.map_large_blocks)
    threads = proc.Threads(stop)
    wake = links.Waker()
    writer = links.Producer(cfg.link_buffer_bytes, messages.Batch)
    book = BookLink()
    for peer, sock in peers.items():
        _attach(writer, book, peer, sock, wake)
    rest = RestClient(cfg, budget, stop)
    worker = Worker(cfg, symbols, rest, stop)
    worker.send = _sender(writer, book)
    feed = None
    if cfg.role == "sink":            # frames from NATS, from every collector (sink.py)
        from .cluster import Loop
        from .sink import Feed
        feed = Feed(cfg, worker, symbols, index, stop, writer)
        worker.send = _sender(writer, book, feed.sent)
        conns = []
        Loop(f"{name}-nats", threads).start(feed.run)
    else:
        conns = [Connection(worker, group, url, names, cfg, stop, connect_budget, threads, writer.congested)
                 for group, url, names in connection_plan(cfg, symbols)]
    for c in conns:
        c.start()
    threads.start(f"{name}-rest", worker.run_jobs)
    poller = None
    if cfg.market == "usdm" and cfg.series:      # the REST series: USD-M only (series.py)
        poller = SeriesPoller(cfg, symbols, RestClient(cfg, budget, stop), series_budgets, worker.lock,
                              worker.outbox, stop)
        threads.start(f"{name}-series", poller.run)
    log.info("%s: started for %s (pid %d, %d connections%s)", name, ",".join(symbols), os.getpid(), len(conns),
             f", restart {restarts}" if restarts else "")
    status = lambda: {**worker.status(conns), "link": _link_status(writer, book),      # noqa: E731
                      **({"series": poller.status()} if poller is not None else {}),
                      **({"sink": feed.status()} if feed is not None else {})}
    while not stop.is_set():
        # Rows are handed on by the reader threads, which wake up when their
        # batch is due (worker.hand_on); this thread takes the other
        # processes' requests, sends what a busy link left behind, beats,
        # and hands on what the REST thread added while the sockets were
        # quiet. Waking no thread when nothing happens keeps an idle worker cheap.
        _serve(worker, writer, book, manager, wake, IDLE_WAIT, feed)
        worker.hand_on()
        manager.beat(status, cfg.status_interval)
    for c in conns:
        c.join(timeout=5)
    if feed is not None:              # its last acknowledgement sent and NATS closed before the process ends
        feed.finished.wait(5.0)
    worker.shutdown()
    worker.hand_on(force=True)
    deadline = time.monotonic() + 5.0
    for link in (writer.link, book.link):
        if link is not None:
            link.drain(deadline, time.monotonic)
    manager.report(status())
    handed = _handed_on(name, writer)
    if feed is not None and feed.refused:         # another sink's consumer: starting again would not mend it
        raise SystemExit(proc.EXIT_CONFIG)
    if threads.failed:
        log.error("%s: exiting because thread %s died%s", name, threads.failed, handed)
        raise SystemExit(proc.EXIT_THREAD_DIED)
    log.info("%s: stopped%s", name, handed)


def _handed_on(name, writer):
    """What the exit log line can truthfully say of the rows this worker read."""
    link = writer.link
    if not writer.outbox.frames or (link is not None and not link.closed and not link.pending):
        return "; every row read was handed to the writer"
    kept = len(writer.outbox.frames)
    log.critical("%s: the writer did not take %d batches (%d bytes) before this worker stopped; their rows "
                 "are missing unless it wrote them, and the next start ledgers the hole", name, kept,
                 writer.outbox.bytes)
    return "; some rows were not handed to the writer (see above)"


class BookLink:
    """The link to the book manager: events are not kept for a new one (it
    starts its books afresh); while the book manager does not read, at most
    BOOK_BACKLOG bytes wait and the rest is dropped (its diff chains break
    and it resyncs those books, with a ledger row)."""

    def __init__(self):
        self.link = None
        self.dropped = 0

    def send(self, events):
        link = self.link
        if link is None or link.closed or link.pending > BOOK_BACKLOG:
            self.dropped += len(events)
            return
        link.send(messages.BookEvents(events))


BOOK_BACKLOG = 8_000_000


def _attach(writer, book, peer, sock, wake):
    link = links.Link(sock, f"{peer}", on_pending=wake)
    if peer == "writer":
        resent = writer.attach(link)
        if resent:
            log.info("writer link: sent %d unacknowledged batches again to the new writer", resent)
    else:
        if book.link is not None:
            book.link.close()
        book.link = link


def _serve(worker, writer, book, manager, wake, timeout, feed=None):
    """Wait up to ``timeout`` for requests, acknowledgements and link changes."""
    readers = [manager.link, wake] + [lk for lk in (writer.link, book.link) if lk is not None and not lk.closed]
    pending = [lk for lk in readers[2:] + [manager.link] if lk.pending]
    ready, writable = links.wait(readers, pending, timeout)
    for link in writable:
        link.flush()
    if wake in ready:
        wake.clear()
    if manager.link in ready:
        for peer, sock in manager.attachments():
            _attach(writer, book, peer, sock, wake)
    for link in ready:
        if link is manager.link or link is wake:
            continue
        for msg in manager.read(link):
            if isinstance(msg, messages.Ack):
                writer.outbox.ack(msg.seq)
                if feed is not None:
                    feed.written(msg.seq)
            elif isinstance(msg, (messages.Backfill, messages.SnapshotRequest)):
                worker.command(msg)


def _link_status(writer, book):
    return {"unacked_bytes": writer.outbox.bytes, "unacked_batches": len(writer.outbox.frames),
            "resent_batches": writer.resent, "writer_connected": writer.link is not None and not writer.link.closed,
            "book_events_dropped": book.dropped,
            "book_pending_bytes": book.link.pending if book.link is not None and not book.link.closed else 0}


def _sender(writer, book, sent=None):
    """One message per link per batch; ``sent()`` after each (a sink's feed)."""
    def send(batch, events):
        if batch:
            writer.send(messages.pack_rows(batch))
        if events:
            book.send(events)
        if sent is not None:
            sent()
    return send
