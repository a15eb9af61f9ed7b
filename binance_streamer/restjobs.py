"""A worker's REST thread: depth snapshots and backfills, one job at a time,
within the daemon's weight budget (the RestClient waits for it).

Jobs: ``("snapshot", symbol, limit, priority)`` from the book manager;
``("fill", route, lo, hi, reason, times)`` for a hole the worker saw (its
live rows wait meanwhile; ``times``: the ledger times of the events around
the hole), which gets one ledger row when done; ``("writer", route, lo, hi,
"", None)`` for a hole the writer saw (rows already written: the fetched ones
go straight out, and the writer ledgers the hole).
What a job yields goes into the worker's outbox and book feed under the
worker's lock; the fetching happens outside it.
"""

import logging
import queue

from .binance import parse
from .binance.endpoints import AGG_TRADES_PAGE, KLINES_PAGE
from .binance.rest import RestError
from .csvfiles import DayOf
from .messages import Rows
from .sequence import gap_row

log = logging.getLogger(__name__)

MALFORMED = parse.MALFORMED
EMPTY_PAGES = 5          # empty answers in a row before a backfill gives up
EMPTY_WAIT = 0.5         # seconds between them: the exchange's history lags the stream a little


class RestJobs:
    def __init__(self, rest, market, lock, outbox, book, stop, clock):
        self.rest, self.market, self.lock = rest, market, lock
        self.outbox, self.book, self.stop, self.clock = outbox, book, stop, clock
        self.queue = queue.Queue()

    def fill(self, route, lo, hi, reason, times):
        """Backfill ids ``lo..hi`` of ``route`` (between events of ledger
        times ``times``: (last good, first after)); its live rows wait until then."""
        self.outbox.hold(route)
        route.waiting += 1
        self.queue.put(("fill", route, lo, hi, reason, times))

    def put(self, job):
        self.queue.put(job)

    def run(self):
        while not self.stop.is_set():
            try:
                job = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.do(job)

    def do(self, job):
        if job[0] == "snapshot":
            self._snapshot(*job[1:])
            return
        origin, route, lo, hi, reason, times = job
        recv_us = int(self.clock() * 1e6)
        try:
            rows, error = self._fetch(route, lo, hi, recv_us), ""
        except RestError as exc:
            rows, error = [], str(exc)
        with self.lock:
            # A worker's hole whose rows no longer wait was ledgered when the
            # worker stopped (Worker.shutdown): these rows go without a second row.
            mine = origin == "fill" and route.held is not None
            if mine:
                # The live rows after the hole wait, maybe for other holes too:
                # these join them, and all leave in id order.
                self.outbox.join_held(route, rows)
            else:
                for day, ident, line in rows:
                    self.outbox.add(route, day, ident, line, backfilled=True)
            route.backfilled += len(rows)
            if mine:
                self._filled(route, lo, hi, reason, times, rows, error)
        if error:
            log.warning("%s %s: backfill of %s..%s failed: %s", route.symbol, route.file, lo, hi, error)

    def _filled(self, route, lo, hi, reason, times, rows, error):
        """The one ledger row of a hole the worker saw, written when the
        backfill ends (``backfilled``, or ``lost`` with the rows it did
        fill; the writer then asks for the rest); its held rows go once no
        other backfill runs."""
        done = bool(rows) and rows[-1][1] >= hi
        missing = (hi - lo) // route.step + 1
        detail = error or ("" if done else f"only {len(rows)} of the {missing} missing rows were available")
        route.gaps += 1
        self.outbox.gap(route, gap_row(int(self.clock() * 1e6), route.file, reason, lo - route.step,
                                       hi + route.step, "backfilled" if done else "lost", len(rows), detail,
                                       *times))
        route.waiting -= 1
        if route.waiting == 0:
            self.outbox.release(route)

    def _snapshot(self, symbol, limit, priority):
        """Fetch a depth snapshot: every level to the depthSnapshot file, the
        book to the book manager (after the diffs received before it)."""
        request_us = int(self.clock() * 1e6)
        try:
            snap = self.rest.depth(symbol, limit, priority)
        except RestError as exc:
            self._snapshot_failed(symbol, str(exc))
            return
        response_us = int(self.clock() * 1e6)
        last, bids, asks = snap["lastUpdateId"], snap["bids"], snap["asks"]       # checked by rest.depth
        try:
            tail = f',{request_us},{response_us},{parse.opt_uint(snap, "E")},{parse.opt_uint(snap, "T")}\n'
        except MALFORMED as exc:
            self._snapshot_failed(symbol, f"the snapshot does not parse ({exc})")
            return
        lines = [f"{last},bid,{p},{q}{tail}" for p, q in bids] + [f"{last},ask,{p},{q}{tail}" for p, q in asks]
        with self.lock:
            self.outbox.put(Rows(symbol, "depthSnapshot", DayOf()(response_us // 1000), [response_us] * len(lines),
                                 lines, False))      # key: csvfiles.KEY_COLUMN
            if self.book is not None:
                self.book.snapshot(symbol, last, bids, asks)

    def _snapshot_failed(self, symbol, why):
        with self.lock:
            if self.book is not None:
                self.book.failed(symbol, why)

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
                if empty > EMPTY_PAGES:
                    break
                self.stop.wait(EMPTY_WAIT)
                continue
            for row in got:
                if row[1] != next_id:
                    return rows
                rows.append(row)
                next_id += route.step
        return rows

    def _page(self, route, next_id, hi, recv_us):
        """One REST page of missing rows from ``next_id`` as ``[(day, id, line)]``,
        from the endpoint streams.KINDS names."""
        page = {"aggTrades": self._agg_trades_page, "klines": self._klines_page}[route.spec.backfill]
        return page(route, next_id, hi, recv_us)

    def _agg_trades_page(self, route, next_id, hi, recv_us):
        page = self.rest.agg_trades(route.symbol, next_id, AGG_TRADES_PAGE)
        rows = [parse.agg_trade_rest(self.market, r, recv_us) + (r["T"],) for r in page]
        return [(route.day(t), a, line) for a, line, t in rows if next_id <= a <= hi]

    def _klines_page(self, route, next_id, hi, recv_us):
        page = self.rest.klines(route.symbol, route.stream[6:], next_id, hi + route.step - 1, KLINES_PAGE[self.market])
        return [(route.day(r[0]), *parse.kline_rest(r, recv_us)) for r in page
                if next_id <= r[0] <= hi and r[6] < recv_us // 1000]
