"""The symbol worker process: WebSocket connections for its symbols, parsing,
id continuity, REST backfills, and batches of CSV lines for the writer.

Per subscribed stream (a :class:`Route`) the worker remembers the last id.
A jump after a reconnect, or anywhere, is a gap: aggTrades and klines are
fetched over REST while the live rows of that stream wait, so files stay in
id order; what cannot be fetched (trades, depth, bookTicker) becomes a
gap-ledger row. Rows leave in one ordered list per batch (one queue put per
``batch_interval``), never one put per message.
"""

import logging
import os
import queue
import threading
import time

import orjson

from . import proc
from .binance import parse
from .binance.endpoints import AGG_TRADES_PAGE, KLINES_PAGE, connection_plan
from .binance.rest import RestClient, RestError
from .connection import Connection
from .csvfiles import DayOf
from .sequence import gap_row
from .streams import INCREASING, KINDS, day_ms, event_id, event_time, file_stream, id_step, kind_of, unexpected_fields

log = logging.getLogger(__name__)

IDLE_WAIT = 0.5          # seconds the main thread sleeps when no batch is waiting
MALFORMED = parse.MALFORMED


class Route:
    """One stream of one symbol, as this worker receives it."""

    __slots__ = ("symbol", "stream", "kind", "spec", "file", "last", "state", "held", "waiting", "day",
                 "messages", "last_recv_us", "gaps", "backfilled", "step", "bad")

    def __init__(self, symbol, stream):
        self.symbol, self.stream = symbol, stream
        self.file = file_stream(stream)
        self.kind = kind_of(self.file)
        self.spec = KINDS[self.kind]      # what streams.py knows of this kind
        self.step = id_step(self.file)
        self.last = None
        self.state = "start"          # start | live | reconnected
        self.held = None              # rows waiting for a backfill, in order
        self.waiting = 0              # backfills in progress
        self.day = DayOf()
        self.messages = self.gaps = self.backfilled = 0
        self.last_recv_us = None
        self.bad = False              # a malformed event was dropped since the last good one


class Worker:
    def __init__(self, cfg, symbols, rest=None, stop=None, clock=time.time):
        self.cfg, self.market, self.clock = cfg, cfg.market, clock
        self.rest = rest
        self.stop = stop or threading.Event()
        self.routes = {f"{s.lower()}@{st}": Route(s, st) for s in symbols for st in cfg.streams}
        self.lock = threading.RLock()
        self.out = []                 # ordered messages for the writer
        self.open = {}                # (symbol, file, day, backfilled) -> open "rows" message
        self.jobs = queue.Queue()
        self.batch_due = None         # monotonic time the rows gathered so far must be handed on
        self.send = None              # send(rows batch, book batch): set by worker_main
        self.book_out = [] if cfg.orderbook else None     # diffs, tickers, snapshots for the book manager
        # The book manager can only compare a bookTicker with its book when the
        # ticker's u is the final id of the diff it applies next or applied
        # last; only those tickers are sent.
        self.tickers = {s: {} for s in symbols}   # u -> ticker not yet matched with a diff, in u order
        self.last_final = dict.fromkeys(symbols)  # final id of the last diff sent
        self.counts = {"malformed": 0, "unknown": 0, "unexpected_fields": 0, "duplicates": 0,
                       "open_klines": 0, "control_replies": 0, "errors": 0}
        self.throttle = proc.Throttle()
        self.throttle_connect = proc.Throttle()
        self.handlers = {"aggTrade": self._agg_trade, "trade": self._trade, "depth": self._depth,
                         "bookTicker": self._book_ticker, "kline": self._kline}

    # -- frames ------------------------------------------------------------------
    def on_connected(self, names):
        """A new connection carries ``names``: the next gap there is a reconnect."""
        with self.lock:
            for name in names:
                route = self.routes[name]
                if route.state == "live":
                    route.state = "reconnected"

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
        for name in names:
            route = self.routes[name]
            if route.last is None or route.spec.overlap is None:
                continue        # no data yet, or none needed (closed candles are matched by open time)
            first = first_ids.get(name)
            if first is None or first > route.last + route.spec.overlap:
                return False
        return True

    def on_frames(self, messages, recv_us):
        """Handle the text frames of one socket read (all received at
        ``recv_us``); returns "shutdown" if one was a serverShutdown event."""
        result = None
        routes, handlers, loads = self.routes, self.handlers, orjson.loads
        with self.lock:
            for data in messages:
                try:
                    msg = loads(data)
                    route = routes.get(msg.get("stream"))
                except (orjson.JSONDecodeError, AttributeError):
                    self._odd("malformed", "malformed frame", data[:120])
                    continue
                if route is None:
                    if self._not_data(msg) == "shutdown":
                        result = "shutdown"
                    continue
                d = msg.get("data")
                try:
                    handlers[route.kind](route, d, recv_us)
                except MALFORMED as exc:
                    self._malformed(route, d, data, exc)
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

    def _malformed(self, route, d, data, exc):
        """An event that does not parse is dropped, counted and logged. It
        never changed the stream's state, so the next good event shows the
        hole, which the ledger then explains as a malformed event; a
        bookTicker (whose ids do not count one by one) gets its row now."""
        self._odd("malformed", f"{route.symbol} {route.stream}: malformed event dropped ({exc})", data[:160])
        route.bad = True
        if route.spec.rule == INCREASING:
            u = d.get(route.spec.id_field) if isinstance(d, dict) else None
            self._report(route, route.last, u if u.__class__ is int else "", "lost", detail=str(exc)[:120])

    def _odd(self, counter, what, detail):
        self.counts[counter] += 1
        if self.throttle.allow():
            log.warning("%s: %s (%d so far)", what, detail, self.counts[counter])
        return None

    # -- per-stream handlers (called with the lock held) --------------------------
    # Each parses (and so checks) the whole event first: a malformed one
    # raises before it changes any state, so the next good event sees the hole.
    def _agg_trade(self, route, d, recv_us):
        ident, line = parse.agg_trade(self.market, d, recv_us)
        if self._continues(route, ident, d["T"]):
            self._add(route, route.day(d["T"]), ident, line)

    def _trade(self, route, d, recv_us):
        ident, line = parse.trade(self.market, d, recv_us)
        if self._continues(route, ident, d["T"]):
            self._add(route, route.day(d["T"]), ident, line)

    def _kline(self, route, d, recv_us):
        row = parse.kline(self.market, d, recv_us)
        if row is None:
            self.counts["open_klines"] += 1
            return
        if self._continues(route, row[0], d["E"]):
            self._add(route, route.day(row[0]), *row)

    def _depth(self, route, d, recv_us):
        uid, lines = parse.depth(self.market, d, recv_us)
        last, first, final = route.last, d["U"], d["u"]
        if last is not None and final <= last:
            self.counts["duplicates"] += 1
            return
        linked = d["pu"] == last if self.market == "usdm" else first == (last or 0) + 1
        if route.state == "start" or (last is not None and not linked):
            self._report(route, last, first, "lost", d["E"])
        route.last, route.state = final, "live"
        if self.book_out is not None:
            symbol = route.symbol
            pending = self.tickers[symbol]
            if pending:
                ticker = pending.pop(final, None)
                if ticker is not None:
                    self.book_out.append(ticker)
                for u in [u for u in pending if u <= final]:     # can no longer match a diff
                    del pending[u]
            self.book_out.append(("d", symbol, first, final, d.get("pu"), d["b"], d["a"]))
            self.last_final[symbol] = final
        self._add(route, route.day(d["E"]), uid, lines)

    def _book_ticker(self, route, d, recv_us):
        u, line = parse.book_ticker(self.market, d, recv_us)
        if route.last is not None and u <= route.last:
            self.counts["duplicates"] += 1
            return
        if route.state != "live":
            self._report(route, route.last, u, "lost", event_time(route.spec, d))
        route.last, route.state = u, "live"
        if self.book_out is not None:
            ticker = ("t", route.symbol, u, d["b"], d["B"], d["a"], d["A"])
            if u == self.last_final[route.symbol]:
                self.book_out.append(ticker)
            else:
                pending = self.tickers[route.symbol]
                pending[u] = ticker
                if len(pending) > 10_000:
                    del pending[next(iter(pending))]
        self._add(route, route.day(day_ms(route.spec, d, recv_us)), u, line)

    def _continues(self, route, ident, when):
        """Check a consecutive id; start a backfill or report a gap. False: drop it."""
        last = route.last
        if last is not None and ident <= last:
            self.counts["duplicates"] += 1
            return False
        if route.state == "start":
            self._report(route, None, ident, "", when)
        elif last is not None and ident != last + route.step:
            if route.spec.backfill is not None and self.rest is not None:
                self._start_backfill(route, last + route.step, ident - route.step, when)
            else:
                self._report(route, last, ident, "lost", when)
        route.last, route.state = ident, "live"
        return True

    def _reason(self, route):
        """Why a gap happened, from the route's state (call before it changes)."""
        bad, route.bad = route.bad, False
        if route.state == "start":
            return "start"
        return "malformed event" if bad else {"reconnected": "reconnect"}.get(route.state, "id jump")

    def _report(self, route, last, first, action, when="", rows=0, detail=""):
        if route.state != "start":
            route.gaps += 1
        self._seal(route)
        self.out.append(("gap", route.symbol, gap_row(int(self.clock() * 1e6), route.file, self._reason(route),
                                                      last, first, action, rows, detail, first_time=when)))

    # -- outbox --------------------------------------------------------------------------
    def _add(self, route, day, ident, line, backfilled=False):
        if route.held is not None and not backfilled:
            route.held.append((day, ident, line, False))
            return
        key = (route.symbol, route.file, day, backfilled)
        msg = self.open.get(key)
        if msg is None:
            msg = self.open[key] = ["rows", route.symbol, route.file, day, [], [], backfilled]
            self.out.append(msg)
        if isinstance(line, list):
            msg[4].extend([ident] * len(line))
            msg[5].extend(line)
        else:
            msg[4].append(ident)
            msg[5].append(line)

    def _seal(self, route):
        """Rows added after this go to new messages (keeps gap rows in order)."""
        for key in [k for k in self.open if k[0] == route.symbol and k[1] == route.file]:
            del self.open[key]

    def hand_on(self, force=False):
        """Send what was gathered once it is ``batch_interval`` old (or now).
        The first call that finds rows starts the batch's clock: the reader
        threads call it after every read (and wake up for ``batch_due``), the
        main thread at least every IDLE_WAIT. Any thread may call it; the lock
        is held while sending so batches leave in the order they were gathered."""
        with self.lock:
            if not (self.out or self.book_out):
                return
            now = time.monotonic()
            if self.batch_due is None:
                self.batch_due = now + self.cfg.batch_interval
            if not force and now < self.batch_due:
                return
            self.batch_due = None
            batch, book = self.take_batch(), self.take_book_batch()
            if self.send is not None:
                self.send(batch, book)

    def take_batch(self):
        with self.lock:
            out, self.out = self.out, []
            self.open.clear()
        return [tuple(m) for m in out]

    def take_book_batch(self):
        with self.lock:
            out = self.book_out
            if out:                      # stays None when there is no book manager
                self.book_out = []
        return out or []

    # -- backfills -------------------------------------------------------------------------
    def _start_backfill(self, route, lo, hi, when):
        if route.held is None:
            route.held = []
        route.waiting += 1
        self.jobs.put(("fill", route, lo, hi, self._reason(route), when))

    def command(self, msg):
        """A request from another process: ("backfill", symbol, stream, first, last)
        from the writer, or ("snapshot", symbol, limit, priority) from the book manager."""
        if msg[0] == "snapshot":
            self.jobs.put(msg)
        elif msg[0] == "backfill":
            _, symbol, stream, lo, hi = msg
            route = next((r for r in self.routes.values() if r.symbol == symbol and r.file == stream), None)
            if route is not None and route.spec.backfill is not None:
                self.jobs.put(("writer", route, lo, hi, "", ""))
        else:
            log.error("worker: unknown command %r", msg[0])

    def run_jobs(self):
        """REST thread: one job at a time, within the daemon's weight budget."""
        while not self.stop.is_set():
            try:
                job = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            self.do_job(job)

    def do_job(self, job):
        if job[0] == "snapshot":
            self._snapshot(*job[1:])
            return
        origin, route, lo, hi, reason, when = job
        recv_us = int(self.clock() * 1e6)
        try:
            rows, error = self._fetch(route, lo, hi, recv_us), ""
        except RestError as exc:
            rows, error = [], str(exc)
        with self.lock:
            if origin == "fill" and route.held is not None:
                # The live rows after the hole wait, maybe for other holes too:
                # these join them, and all leave in id order.
                route.held.extend((day, ident, line, True) for day, ident, line in rows)
            else:
                for day, ident, line in rows:
                    self._add(route, day, ident, line, backfilled=True)
            route.backfilled += len(rows)
            if origin == "fill":
                done = bool(rows) and rows[-1][1] >= hi
                action = "backfilled" if done else "lost"
                detail = error or ("" if done else f"only {len(rows)} of the missing rows were available")
                route.gaps += 1
                self._seal(route)
                self.out.append(("gap", route.symbol, gap_row(recv_us, route.file, reason, lo - route.step,
                                                              hi + route.step, action, len(rows), detail,
                                                              first_time=when)))
                route.waiting -= 1
                if route.waiting == 0:
                    self._release(route)
        if error:
            log.warning("%s %s: backfill of %s..%s failed: %s", route.symbol, route.file, lo, hi, error)

    def _snapshot(self, symbol, limit, priority):
        """Fetch a depth snapshot: every level to the depthSnapshot file, the
        book to the book manager (after the diffs received before it)."""
        request_us = int(self.clock() * 1e6)
        try:
            snap = self.rest.depth(symbol, limit, priority)
        except RestError as exc:
            with self.lock:
                if self.book_out is not None:
                    self.book_out.append(("f", symbol, str(exc)))
            return
        response_us = int(self.clock() * 1e6)
        last, bids, asks = snap["lastUpdateId"], snap["bids"], snap["asks"]       # checked by rest.depth
        try:
            tail = f',{request_us},{response_us},{parse.opt_uint(snap, "E")},{parse.opt_uint(snap, "T")}\n'
        except MALFORMED as exc:
            with self.lock:
                if self.book_out is not None:
                    self.book_out.append(("f", symbol, f"the snapshot does not parse ({exc})"))
            return
        lines = [f"{last},bid,{p},{q}{tail}" for p, q in bids] + [f"{last},ask,{p},{q}{tail}" for p, q in asks]
        with self.lock:
            self.out.append(("rows", symbol, "depthSnapshot", DayOf()(response_us // 1000), [], lines, False))
            if self.book_out is not None:
                self.book_out.append(("s", symbol, last, bids, asks))

    def _fetch(self, route, lo, hi, recv_us):
        """Missing rows ``lo..hi`` from REST as ``[(day, id, line)]``, in order."""
        rows, next_id, empty = [], lo, 0
        while next_id <= hi and not self.stop.is_set():
            try:
                got = self._page(route, next_id, hi, recv_us)
            except MALFORMED as exc:
                raise RestError(f"{route.file} backfill: the exchange's answer does not parse ({exc})") from None
            if not got:
                empty += 1
                if empty > 5:       # the exchange's history lags the stream a little; give it time
                    break
                self.stop.wait(0.5)
                continue
            for row in got:
                if row[1] != next_id:
                    return rows
                rows.append(row)
                next_id += route.step
        return rows

    def _page(self, route, next_id, hi, recv_us):
        """One REST page of missing rows from ``next_id`` as ``[(day, id, line)]``."""
        if route.spec.backfill == "aggTrades":
            page = self.rest.agg_trades(route.symbol, next_id, AGG_TRADES_PAGE)
            rows = [parse.agg_trade_rest(self.market, r, recv_us) + (r["T"],) for r in page]
            return [(route.day(t), a, line) for a, line, t in rows if next_id <= a <= hi]
        page = self.rest.klines(route.symbol, route.stream[6:], next_id, hi + route.step - 1, KLINES_PAGE[self.market])
        return [(route.day(r[0]), *parse.kline_rest(r, recv_us)) for r in page
                if next_id <= r[0] <= hi and r[6] < recv_us // 1000]

    def _release(self, route):
        """The rows held while a stream's holes were filled, in id order."""
        held, route.held = route.held, None
        kind = None
        for day, ident, line, filled in sorted(held or (), key=lambda r: r[1]):
            if filled != kind:           # a new message whenever live and backfilled rows alternate
                self._seal(route)
                kind = filled
            self._add(route, day, ident, line, backfilled=filled)

    def shutdown(self):
        """Let held rows go (their backfill will not finish) with a gap row;
        a malformed event just before the stop gets its ledger row too."""
        with self.lock:
            for route in self.routes.values():
                if route.bad and route.spec.rule != INCREASING:
                    self._report(route, route.last, "", "lost", detail="malformed event just before the stop")
                if route.held is not None:
                    first = min((r[1] for r in route.held), default=None)
                    self._report(route, None, first, "lost", detail="stopped before the backfill finished")
                    route.waiting = 0
                    self._release(route)

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


def worker_main(cfg, symbols, index, writer_q, book_q, control_q, status_q, log_q, budget, connect_budget):
    """Process entry point: one worker for ``symbols``; stops on SIGTERM."""
    name = f"worker-{index}"
    stop = proc.child_setup(name, log_q, cfg.log_level)
    threads = proc.Threads(stop)
    rest = RestClient(cfg, budget, stop)
    worker = Worker(cfg, symbols, rest, stop)
    worker.send = _sender(writer_q, book_q)
    conns = [Connection(worker, group, url, names, cfg, stop, connect_budget, threads)
             for group, url, names in connection_plan(cfg, symbols)]
    for c in conns:
        c.start()
    threads.start(f"{name}-rest", worker.run_jobs)
    log.info("%s: started for %s (pid %d, %d connections)", name, ",".join(symbols), os.getpid(), len(conns))
    next_status = 0.0
    while not stop.is_set():
        # Rows are handed on by the reader threads, which wake up when their
        # batch is due (worker.hand_on); this thread takes commands, reports,
        # and hands on what the REST thread added while the sockets were
        # quiet. Waking no thread when nothing happens is what keeps an idle
        # worker cheap.
        try:
            worker.command(control_q.get(timeout=IDLE_WAIT))
        except queue.Empty:
            pass
        worker.hand_on()
        now = time.monotonic()
        if now >= next_status:
            next_status = now + cfg.status_interval
            proc.report(status_q, name, worker.status(conns))
    for c in conns:
        c.join(timeout=5)
    worker.shutdown()
    worker.hand_on(force=True)
    proc.report(status_q, name, worker.status(conns))
    if threads.failed:
        log.error("%s: exiting because thread %s died; every row read was handed to the writer", name,
                  threads.failed)
        raise SystemExit(proc.EXIT_THREAD_DIED)
    log.info("%s: stopped; every row read was handed to the writer", name)


def _sender(writer_q, book_q):
    """One put per queue per batch."""
    def send(batch, book):
        if batch:
            writer_q.put(batch)
        if book:
            book_q.put(book)
    return send
