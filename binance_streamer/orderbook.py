"""The order-book manager process: one exact local book per symbol.

Each book follows Binance's documented procedure (book.DepthSync). Diffs
that arrive while a snapshot loads are buffered, never dropped. A gap, a
crossed book, or a bookTicker that disagrees with the book at the same
update id resyncs that symbol alone and writes a gap-ledger row. Snapshots
are fetched by the symbol's worker, inside the daemon's REST budget: a
symbol with no book first, periodic refreshes last. A refresh replays the
recent diffs onto the new snapshot, compares, and swaps, which also clears
levels the diffs alone never correct (the "orphan level" problem).

:class:`OrderBooks` is the pure core (the caller passes the clock);
:func:`orderbook_main` wires it to the queues.
"""

from collections import OrderedDict
from decimal import Decimal
import logging
import os
import time

from . import links, messages, proc
from .messages import Diff, Gap, Rows, Snapshot, SnapshotFailed, Ticker, pack_rows
from .binance.endpoints import depth_weight
from .binance.parse import MALFORMED
from .binance.budgets import ROUTINE, URGENT
from .book import APPLIED, GAP, SNAPSHOT_TOO_OLD, SYNCED, DepthSync
from .csvfiles import DayOf
from .sequence import gap_row

log = logging.getLogger(__name__)

NO_BOOK, REQUESTED, SYNCED_STATE = "no_book", "requested", "synced"
RETRY_DELAY = 2.0
REQUEST_TIMEOUT = 120.0
MAX_TICKERS = 4096
MAX_TIMES = 4096          # event times kept per book, for the ledger rows of a resync


class SymbolBook:
    def __init__(self, market, symbol):
        self.symbol = symbol
        self.sync = DepthSync(market, packed=True)
        self.state = NO_BOOK
        self.next_request = 0.0
        self.requested_at = None
        self.refresh = None           # (DepthSync of the new snapshot) while a refresh is under way
        self.refresh_pending = None   # diffs since a refresh snapshot was asked for
        self.last_snapshot = 0.0
        self.snapshot_range = None    # (lowest bid, highest ask) of the last snapshot
        self.tickers = OrderedDict()
        self.times = OrderedDict()    # final update id -> event time E (ms) of the recent diffs
        self.resyncs = self.compared = self.mismatches = self.snapshots = 0


class OrderBooks:
    def __init__(self, cfg, request_snapshot, emit, clock=time.time):
        self.cfg = cfg
        self.market = cfg.market
        self.request_snapshot = request_snapshot      # (symbol, limit, priority)
        self.emit = emit                              # a writer message
        self.clock = clock
        self.books = {s: SymbolBook(cfg.market, s) for s in cfg.symbols}
        self.day = DayOf()
        self.next_rows = 0.0
        self.snapshot_weight = 0
        self.bad_input = 0
        self.throttle = proc.Throttle()

    # -- input -------------------------------------------------------------------
    def on_diff(self, symbol, first, final, prev, bids, asks, time=""):
        """A depth diff, its sides packed as it travels (messages.Diff): they
        stay packed (buffered, stale) until the book applies them. A side
        with an odd number of cells raises ValueError here, before anything
        changes (messages.unpack_levels' check, inline: every diff passes here)."""
        if (bids and not bids.count(",") & 1) or (asks and not asks.count(",") & 1):
            raise ValueError(f"packed price levels have an odd number of cells: {bids[:40]!r} / {asks[:40]!r}")
        sb = self.books[symbol]
        times = sb.times
        times[final] = time
        if len(times) > MAX_TIMES:
            times.popitem(last=False)
        sync = sb.sync
        fresh = sync.awaiting_first                  # no diff applied yet since the snapshot
        outcome = sync.on_diff(first, final, prev, bids, asks)
        if outcome == GAP:
            before = sync.last_gap[0]
            if fresh:
                # The stream started after the snapshot was taken: nothing is
                # lost, the snapshot is too old (Binance: get a new one).
                log.info("%s: snapshot %s is older than the first diff after it (U=%s); asking again", symbol,
                         before, first)
                sb.state, sb.next_request = NO_BOOK, self.clock()
            else:
                self._resync(sb, "depth gap", before, first, first_time=time)
            return
        if sb.refresh_pending is not None:
            sb.refresh_pending.append((first, final, prev, bids, asks))
        elif sb.refresh is not None:
            if sb.refresh.on_diff(first, final, prev, bids, asks) == GAP:
                sb.refresh = None
        if outcome == APPLIED:
            if sb.state != SYNCED_STATE:
                self._now_synced(sb)
            if sb.sync.book.crossed():
                self._resync(sb, "crossed book", final, "")
                return
            ticker = sb.tickers.pop(final, None)
            while sb.tickers and next(iter(sb.tickers)) < final:
                sb.tickers.popitem(last=False)      # passed: no later diff ends at its u, so never checked
            if ticker is not None:
                self._check_ticker(sb, final, ticker)
            self._finish_refresh(sb)

    def on_ticker(self, symbol, u, bid, bid_qty, ask, ask_qty):
        sb = self.books[symbol]
        current = sb.sync.update_id
        if current is None or u < current:
            return
        if u == current:
            self._check_ticker(sb, u, (bid, bid_qty, ask, ask_qty))
            return
        sb.tickers[u] = (bid, bid_qty, ask, ask_qty)
        while len(sb.tickers) > MAX_TICKERS:
            sb.tickers.popitem(last=False)

    def on_snapshot(self, symbol, last_update_id, bids, asks):
        sb = self.books[symbol]
        sb.snapshots += 1
        self.snapshot_weight += depth_weight(self.market, self.cfg.snapshot_depth) or 0
        sb.last_snapshot = self.clock()
        sb.requested_at = None
        if bids and asks:
            sb.snapshot_range = (Decimal(bids[-1][0]), Decimal(asks[-1][0]))
        if sb.refresh_pending is not None:
            self._start_refresh(sb, last_update_id, bids, asks)
            return
        outcome = sb.sync.on_snapshot(last_update_id, bids, asks)
        if outcome == SYNCED:
            self._now_synced(sb)
        elif outcome == SNAPSHOT_TOO_OLD:
            log.info("%s: snapshot %d is older than the buffered diffs; asking again", symbol, last_update_id)
            sb.state, sb.next_request = NO_BOOK, self.clock() + 0.5
        else:
            self._resync(sb, "depth gap after the snapshot", last_update_id, sb.sync.buffer[0][0],
                         first_time=sb.times.get(sb.sync.buffer[0][1], ""))

    def on_snapshot_failed(self, symbol, error):
        sb = self.books[symbol]
        sb.requested_at = None
        if sb.refresh_pending is not None:
            sb.refresh_pending = None
            sb.last_snapshot = self.clock()
            return
        sb.state, sb.next_request = NO_BOOK, self.clock() + RETRY_DELAY
        log.warning("%s: snapshot failed (%s); asking again in %.0f s", symbol, error, RETRY_DELAY)

    def on_bad_input(self, msg, exc):
        """A message that the book cannot take (the workers check what they
        send, so this is a defect upstream): that symbol's book is rebuilt from
        a new snapshot, with a ledger row; the process goes on."""
        self.bad_input += 1
        kind = getattr(msg[0], "__name__", "?") if isinstance(msg, tuple) and msg else "?"
        symbol = msg[1] if isinstance(msg, tuple) and len(msg) > 1 else None
        sb = self.books.get(symbol) if isinstance(symbol, str) else None
        if self.throttle.allow():
            log.error("orderbook: %s message for %s does not apply (%s: %s); %s", kind,
                      symbol if sb else "?",
                      type(exc).__name__, exc, "resyncing that book" if sb else "dropped")
        if sb is not None:
            sb.sync.buffer.clear()          # it may hold the bad message; _resync discards the book
            self._resync(sb, "malformed event", sb.sync.update_id, "", detail=f"{type(exc).__name__}: {exc}"[:120])

    def worker_replaced(self, symbols):
        """A new worker for ``symbols``: a snapshot asked of the old one will
        not come, so ask the new one."""
        now = self.clock()
        for symbol in symbols:
            sb = self.books.get(symbol)
            if sb is None:
                continue
            if sb.state == REQUESTED:
                sb.state, sb.next_request = NO_BOOK, now
            if sb.refresh_pending is not None:
                sb.refresh_pending, sb.requested_at, sb.last_snapshot = None, None, now
            sb.requested_at = None

    def restarted(self):
        """This process replaces one that died: its books, and the top-of-book
        rows of the time between, are gone; the ledger says so."""
        now_us = int(self.clock() * 1e6)
        for symbol in self.books:
            self.emit(Gap(symbol, gap_row(now_us, "orderbook", "book manager restart", "", "", "resync",
                                              detail="the book manager was restarted; its books are rebuilt")))

    # -- periodic work -------------------------------------------------------------
    def tick(self):
        now = self.clock()
        for sb in self.books.values():
            if sb.state == REQUESTED and sb.requested_at and now - sb.requested_at > REQUEST_TIMEOUT:
                sb.state = NO_BOOK
            if sb.state == NO_BOOK and now >= sb.next_request and not sb.sync.synced and sb.sync.buffer:
                self._ask(sb, URGENT, now)        # Binance's order: buffer a diff first, then the snapshot
            elif (sb.state == SYNCED_STATE and self.cfg.book_refresh_interval and sb.refresh is None
                  and sb.refresh_pending is None and sb.requested_at is None
                  and now - sb.last_snapshot >= self.cfg.book_refresh_interval):
                sb.refresh_pending = []
                self._ask(sb, ROUTINE, now)
        if now >= self.next_rows:
            self.next_rows = now + self.cfg.orderbook_interval
            self._rows(now)

    def _ask(self, sb, priority, now):
        sb.requested_at = now
        if priority == URGENT:
            sb.state = REQUESTED
        self.request_snapshot(sb.symbol, self.cfg.snapshot_depth, priority)

    # -- internals ----------------------------------------------------------------------
    def _now_synced(self, sb):
        sb.state = SYNCED_STATE
        log.info("%s: book in sync at update id %s", sb.symbol, sb.sync.update_id)

    def _check_ticker(self, sb, u, ticker):
        book = sb.sync.book
        bb, ba = book.best_bid(), book.best_ask()
        sb.compared += 1
        if bb is None or ba is None or (Decimal(bb[0]), Decimal(bb[1]), Decimal(ba[0]), Decimal(ba[1])) != \
                tuple(Decimal(x) for x in ticker):
            sb.mismatches += 1
            self._resync(sb, "bookTicker disagrees with the book", u, "",
                         detail=f"book {bb} / {ba}, bookTicker {ticker}")

    def _resync(self, sb, reason, last_good, first_after, detail="", first_time=""):
        """Discard the book; a ledger row with the ids around the break and
        the event times of the diffs with those ids (a snapshot's has none)."""
        sb.resyncs += 1
        sb.state, sb.next_request = NO_BOOK, self.clock()
        sb.refresh = sb.refresh_pending = None
        sb.tickers.clear()
        if sb.sync.synced:
            sb.sync.reset()
        log.warning("%s: %s (last good u=%s, next U=%s); resyncing", sb.symbol, reason, last_good, first_after)
        self.emit(Gap(sb.symbol, gap_row(int(self.clock() * 1e6), "orderbook", reason, last_good, first_after,
                                            "resync", detail=detail, last_time=sb.times.get(last_good, ""),
                                            first_time=first_time)))

    def _start_refresh(self, sb, last_update_id, bids, asks):
        fresh = DepthSync(self.market, packed=True)
        for event in sb.refresh_pending:
            fresh.on_diff(*event)
        sb.refresh_pending = None
        if fresh.on_snapshot(last_update_id, bids, asks) != SYNCED:
            return                      # too old or broken: try at the next interval
        sb.refresh = fresh
        self._finish_refresh(sb)

    def _finish_refresh(self, sb):
        fresh = sb.refresh
        if fresh is None or fresh.update_id is None or fresh.awaiting_first or fresh.update_id != sb.sync.update_id:
            return
        sb.refresh = None
        differ = sb.sync.book.differences(fresh.book, *(sb.snapshot_range or (None, None)))
        if differ:
            sb.mismatches += 1
            at = sb.times.get(sb.sync.update_id, "")
            self.emit(Gap(sb.symbol, gap_row(int(self.clock() * 1e6), "orderbook", "refresh found differences",
                                                sb.sync.update_id, sb.sync.update_id, "replaced",
                                                detail=f"{differ} levels differed", last_time=at,
                                                first_time=at)))
        sb.sync = fresh

    def _rows(self, now):
        n = self.cfg.orderbook_levels
        now_us = int(now * 1e6)
        day = self.day(now_us // 1000)
        for sb in self.books.values():
            if sb.state == SYNCED_STATE:
                bids, asks = sb.sync.book.top(n)
                cells = [f"{p},{q}" for p, q in bids] + [","] * (n - len(bids))
                cells += [f"{p},{q}" for p, q in asks] + [","] * (n - len(asks))
                line = f"{now_us},{sb.sync.update_id},true," + ",".join(cells) + "\n"
                self._prune(sb)
            else:
                line = f"{now_us},,false," + ",".join([","] * (2 * n)) + "\n"
            self.emit(Rows(sb.symbol, "orderbook", day, [now_us], [line], False))      # key: csvfiles.KEY_COLUMN

    def _prune(self, sb):
        """Keep at most the snapshot depth per side (and a little slack)."""
        limit = self.cfg.snapshot_depth
        book = sb.sync.book
        if max(len(book.bids), len(book.asks)) > limit * 1.1:
            book.prune(limit)

    def status(self):
        books = {s: {"state": b.state, "update_id": b.sync.update_id, "resyncs": b.resyncs, "snapshots": b.snapshots,
                     "ticker_compared": b.compared, "ticker_mismatches": b.mismatches,
                     "levels": [len(b.sync.book.bids), len(b.sync.book.asks)]} for s, b in self.books.items()}
        return {"books": books, "in_sync": sum(1 for b in self.books.values() if b.state == SYNCED_STATE),
                "resyncs": sum(b.resyncs for b in self.books.values()),
                "snapshot_weight_spent": self.snapshot_weight,
                "ticker_compared": sum(b.compared for b in self.books.values()),
                "ticker_mismatches": sum(b.mismatches for b in self.books.values()),
                "bad_input": self.bad_input}


def orderbook_main(cfg, control, peers, groups, restarts=0):
    """Process entry point. Stops on Stop from the manager (after the workers)."""
    stop, manager = proc.child_setup("orderbook", control, cfg.log_level)
    owner = {s: name for name, symbols in groups.items() for s in symbols}
    workers = {}                  # worker name -> Link
    writer = links.Producer(cfg.link_buffer_bytes, messages.Batch)
    out = []
    dropped = {}                  # symbol -> orderbook rows not kept while the writer did not take them

    def attach(name, sock):
        link = links.Link(sock, name)
        if name == "writer":
            writer.attach(link)
            return
        if name in workers:
            workers[name].close()
        workers[name] = link
        books.worker_replaced([s for s, n in owner.items() if n == name])

    def request_snapshot(symbol, limit, priority):
        link = workers.get(owner[symbol])
        if link is not None:
            link.send(messages.SnapshotRequest(symbol, limit, priority))

    books = OrderBooks(cfg, request_snapshot, out.append)
    for name, sock in peers.items():
        attach(name, sock)
    if restarts:
        books.restarted()
    log.info("orderbook: started (pid %d) for %d symbols%s", os.getpid(), len(books.books),
             f", restart {restarts}" if restarts else "")
    handlers = orderbook_handlers(books)
    status = lambda: {**books.status(), "link": {"unacked_bytes": writer.outbox.bytes,      # noqa: E731
                                                 "unacked_batches": len(writer.outbox.frames)}}
    next_flush = 0.0
    while True:
        open_links = [lk for lk in workers.values() if not lk.closed]
        out_links = [lk for lk in open_links + [writer.link, manager.link] if lk is not None and lk.pending]
        readers = [manager.link] + open_links + ([writer.link] if writer.link is not None else [])
        ready, writable = links.wait(readers, out_links, 0.05)
        for link in writable:
            link.flush()
        got = 0
        for link in ready:
            if link is manager.link:
                for name, sock in manager.attachments():
                    attach(name, sock)
                continue
            for msg in manager.read(link):
                if isinstance(msg, messages.Ack):
                    writer.outbox.ack(msg.seq)
                elif isinstance(msg, messages.BookEvents):
                    got += 1
                    _apply(books, handlers, msg.items)
        books.tick()
        now = time.monotonic()
        if out and (now >= next_flush or len(out) > 1000):
            _hand_on(writer, out, dropped, books.clock)
            next_flush = now + cfg.batch_interval
        manager.beat(status, cfg.status_interval, now)
        if (manager.stopping or stop.is_set()) and not got:
            break
    if out:
        _hand_on(writer, out, dropped, books.clock)
    if writer.link is not None:
        writer.link.drain(time.monotonic() + 5.0, time.monotonic)
    manager.report(status())
    log.info("orderbook: stopped")


def _hand_on(writer, out, dropped, clock):
    """Send what was gathered. While the writer holds ``link_buffer_bytes``
    unacknowledged, orderbook rows are dropped (counted per symbol) and
    ledger rows still go; once it takes rows again, a ledger row per symbol
    says how many orderbook rows were not recorded."""
    if writer.congested():
        for msg in out:
            if isinstance(msg, Rows):
                dropped[msg.symbol] = dropped.get(msg.symbol, 0) + len(msg.lines)
        out[:] = [msg for msg in out if not isinstance(msg, Rows)]
    elif dropped:
        now_us = int(clock() * 1e6)
        out.extend(Gap(symbol, gap_row(now_us, "orderbook", "writer behind", "", "", "lost", rows=n,
                                       detail="orderbook rows dropped while the writer did not take them"))
                   for symbol, n in sorted(dropped.items()))
        dropped.clear()
    if out:
        writer.send(pack_rows(out))
        out.clear()


def orderbook_handlers(books):
    """BookEvents item kind -> the OrderBooks method that takes its fields."""
    return {Diff: books.on_diff, Ticker: books.on_ticker, Snapshot: books.on_snapshot,
            SnapshotFailed: books.on_snapshot_failed}


def _apply(books, handlers, items):
    for msg in items:
        try:
            handlers[msg[0]](*msg[1:])
        except MALFORMED as exc:
            books.on_bad_input(msg, exc)
