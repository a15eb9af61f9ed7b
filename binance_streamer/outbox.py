"""What leaves a worker, in the order it must arrive. Pure; the worker holds the lock.

:class:`Outbox` gathers the writer's messages (messages.py): ``Rows``
(one open message per symbol, stream, day and origin, extended row by row)
and ``Gap``. A gap row seals the stream's open messages, so rows received after
the hole go into a new message behind it. While a stream's hole is being
backfilled its live rows wait in ``route.held``; when the backfill is done
they leave with the fetched rows, all in id order.

:class:`BookFeed` gathers the book manager's events (messages.BookEvents:
plain ``(Diff, ...)`` tuples, a diff's sides packed as parse.depth packs them): diffs, snapshots,
failed snapshots, and the bookTickers it can compare with its book (those
whose ``u`` is the final id of a diff).
"""

from .messages import Diff, Gap, Rows, Snapshot, SnapshotFailed, Ticker, event

MAX_UNMATCHED_TICKERS = 10_000


class Outbox:
    __slots__ = ("out", "open", "rows")

    def __init__(self):
        self.out = []           # ordered messages for the writer
        self.open = {}          # (symbol, file, day, backfilled) -> open "rows" message
        self.rows = 0           # lines in ``out``

    def __bool__(self):
        return bool(self.out)

    def add(self, route, day, ident, line, backfilled=False, rows=1):
        """A row of ``route``, or the ``rows`` rows of one event (a depth
        event's levels) in one string ``line``: a Rows' ``lines`` hold
        strings of whole lines, its ``ids`` one id per line."""
        if route.held is not None and not backfilled:
            route.held.append((day, ident, line, False, rows))
            return
        key = (route.symbol, route.file, day, backfilled)
        msg = self.open.get(key)
        if msg is None:
            msg = self.open[key] = Rows(route.symbol, route.file, day, [], [], backfilled)
            self.out.append(msg)
        if rows == 1:
            msg.ids.append(ident)
        else:
            msg.ids.extend([ident] * rows)
        msg.lines.append(line)
        self.rows += rows

    def seal(self, route):
        """Rows added after this go to new messages (keeps gap rows in order)."""
        for key in [k for k in self.open if k[0] == route.symbol and k[1] == route.file]:
            del self.open[key]

    def gap(self, route, row):
        """A gap-ledger row, after every row of ``route`` added so far."""
        self.seal(route)
        self.out.append(Gap(route.symbol, row))

    def put(self, msg):
        """A message complete in itself (a snapshot's rows)."""
        self.out.append(msg)

    @staticmethod
    def hold(route):
        """The stream's live rows wait from now on (a backfill started)."""
        if route.held is None:
            route.held = []

    @staticmethod
    def join_held(route, rows):
        """Backfilled ``[(day, id, line)]`` join the rows that wait."""
        route.held.extend((day, ident, line, True, 1) for day, ident, line in rows)

    def release(self, route):
        """The rows held while a stream's holes were filled, in id order."""
        held, route.held = route.held, None
        filled_before = None
        for day, ident, line, filled, rows in sorted(held or (), key=lambda r: r[1]):
            if filled != filled_before:      # a new message whenever live and backfilled rows alternate
                self.seal(route)
                filled_before = filled
            self.add(route, day, ident, line, backfilled=filled, rows=rows)

    def take(self):
        """Everything gathered; the outbox is empty after."""
        out, self.out = self.out, []
        self.open.clear()
        self.rows = 0
        return out


class BookFeed:
    __slots__ = ("out", "tickers", "last_final")

    def __init__(self, symbols):
        self.out = []
        # A bookTicker can only be compared with the book when its u is the
        # final id of the diff applied next or last; only those are sent.
        self.tickers = {s: {} for s in symbols}   # u -> ticker not yet matched with a diff, in u order
        self.last_final = dict.fromkeys(symbols)  # final id of the last diff sent

    def __bool__(self):
        return bool(self.out)

    def diff(self, symbol, first, final, prev, bids, asks, time=""):
        """A depth event; its sides packed (``"price,quantity,price,quantity"``, messages.Diff)."""
        pending = self.tickers[symbol]
        if pending:
            ticker = pending.pop(final, None)
            if ticker is not None:
                self.out.append(ticker)
            for u in [u for u in pending if u <= final]:     # can no longer match a diff
                del pending[u]
        # messages.event, inline (one per depth event); the sides packed (messages.Diff)
        self.out.append((Diff, symbol, first, final, prev, bids, asks, time))
        self.last_final[symbol] = final

    def ticker(self, symbol, u, bid, bid_qty, ask, ask_qty):
        ticker = (Ticker, symbol, u, bid, bid_qty, ask, ask_qty)
        if u == self.last_final[symbol]:
            self.out.append(ticker)
            return
        pending = self.tickers[symbol]
        pending[u] = ticker
        if len(pending) > MAX_UNMATCHED_TICKERS:
            del pending[next(iter(pending))]

    def snapshot(self, symbol, last, bids, asks):
        self.out.append(event(Snapshot, symbol, last, bids, asks))

    def failed(self, symbol, why):
        self.out.append(event(SnapshotFailed, symbol, why))

    def take(self):
        out, self.out = self.out, []
        return out
