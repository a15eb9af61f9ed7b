"""Pure local order book and Binance's documented depth sequencing rules.

No I/O and no clock: the order-book manager, the simulator's replay and the
offline tools all drive this module with parsed events.

Prices and quantities are kept exactly as Binance sent them (strings); levels
are keyed by a number (``Book``: a float where that is exact, else
``Decimal``) so ``"0.10"`` and ``"0.1000"`` are the same level and ordering
is numeric; no price or quantity is ever written from a number.

The rules, from PROTOCOL.md section 4 (``L`` = snapshot ``lastUpdateId``,
``id`` = the book's update id):

spot
    drop buffered events with ``u <= L``; the first applied event has
    ``U <= L + 1 <= u``; afterwards ignore ``u <= id``, a gap is ``U > id + 1``.
usdm, coinm (futures)
    drop buffered events with ``u < L``; the first applied event has
    ``U <= L <= u``; afterwards an event continues the chain when
    ``pu == id``; ``u <= id`` is a stale repeat; anything else is a gap.
"""

from bisect import bisect_left, insort
from decimal import Decimal
from operator import itemgetter

from . import markets
from .messages import levels_of

SPOT, USDM, COINM, MARKETS = markets.SPOT, markets.USDM, markets.COINM, markets.MARKETS

# Outcomes of DepthSync.on_diff / on_snapshot.
BUFFERED = "buffered"      # no book yet; kept for when the snapshot arrives
APPLIED = "applied"        # the event moved the book forward
STALE = "stale"            # already covered by the book; ignored
GAP = "gap"                # an event is missing: the book was discarded
SYNCED = "synced"          # snapshot accepted, buffered events applied
SNAPSHOT_TOO_OLD = "snapshot_too_old"  # snapshot precedes the buffer: fetch again

FLOAT_DIGITS = 15             # DBL_DIG: decimals of this many significant digits have distinct floats
SHORT_PRICE = FLOAT_DIGITS        # characters: a plain decimal this long has at most FLOAT_DIGITS digits
                                  # (16 could be 16 digits without a point: 2**53 + 1 has no float of its own)


class Book:
    """One side-pair of price levels: key -> ``(price, qty)`` strings as sent.

    Beside each dict a sorted list of its keys (bids negated, so both lists
    run best first) keeps the best level, the crossed check and the top N
    cheap: a diff moves a few levels, while the books hold thousands.

    Prices and quantities are plain decimals (digits and at most one point,
    as binance.parse.num checks every level the recorder takes in). A key
    is the price's float while every price the book has seen has at most
    15 significant digits (any string of at most 15 characters): below
    DBL_DIG digits distinct decimals have distinct floats, in the same
    order, and equal ones (``"0.10"``, ``"0.1000"``) the same float, so the
    levels and their order are exact. A longer price turns the book's keys
    into ``Decimal`` (exact at any length) for good. A quantity is zero when
    its float is (exact for a plain decimal)."""

    __slots__ = ("bids", "asks", "update_id", "_bid_keys", "_ask_keys", "_exact")

    def __init__(self):
        self._clear()

    def _clear(self):
        self.bids = {}
        self.asks = {}
        self._bid_keys = []
        self._ask_keys = []
        self._exact = False           # keys are Decimal, not float
        self.update_id = None

    def load(self, last_update_id, bids, asks):
        """The book as a snapshot gives it (sides of ``(price, qty)``)."""
        self._clear()
        prices = [p for side in (bids, asks) for p in map(itemgetter(0), side)]
        if max(map(len, prices), default=0) > SHORT_PRICE:
            self._exact = any(not _float_exact(p) for p in prices)
        if self._exact:
            self.bids = {Decimal(p).copy_negate(): (p, q) for p, q in bids if float(q)}
            self.asks = {Decimal(p): (p, q) for p, q in asks if float(q)}
        else:
            self.bids = {-float(p): (p, q) for p, q in bids if float(q)}
            self.asks = {float(p): (p, q) for p, q in asks if float(q)}
        self._bid_keys = sorted(self.bids)
        self._ask_keys = sorted(self.asks)
        self.update_id = last_update_id

    def apply(self, bids, asks, update_id):
        """Set absolute quantities; a zero quantity removes the level. Each
        side a sequence of ``(price, qty)``."""
        self._side(bids, self.bids, self._bid_keys, True)
        self._side(asks, self.asks, self._ask_keys, False)
        self.update_id = update_id

    def apply_packed(self, bids, asks, update_id):
        """``apply`` with each side packed as a diff travels (messages.Diff),
        read pairwise where it lies."""
        self._side(levels_of(bids), self.bids, self._bid_keys, True)
        self._side(levels_of(asks), self.asks, self._ask_keys, False)
        self.update_id = update_id

    def _side(self, levels, side, keys, bid):
        fast = not self._exact
        for p, q in levels:
            if fast and len(p) <= SHORT_PRICE:
                key = -float(p) if bid else float(p)
            else:
                key = self._key(p, bid)
                fast = not self._exact
            if float(q):
                if key not in side:
                    insort(keys, key)
                side[key] = (p, q)
            elif side.pop(key, None) is not None:
                del keys[bisect_left(keys, key)]

    def _key(self, price, bid):
        """The key of a level at ``price`` (bids negated, exactly)."""
        if not self._exact:
            if _float_exact(price):
                return -float(price) if bid else float(price)
            self._exact = True
            for side, keys, negate in ((self.bids, self._bid_keys, True), (self.asks, self._ask_keys, False)):
                levels = list(side.values())
                side.clear()                  # in place: a diff being applied holds them
                side.update((self._key(p, negate), (p, q)) for p, q in levels)
                keys[:] = sorted(side)
        return Decimal(price).copy_negate() if bid else Decimal(price)

    def best_bid(self):
        return self.bids[self._bid_keys[0]] if self._bid_keys else None

    def best_ask(self):
        return self.asks[self._ask_keys[0]] if self._ask_keys else None

    def top(self, n):
        """The best ``n`` levels a side, as lists of ``(price, qty)`` strings."""
        bids, asks = self.bids, self.asks
        return [bids[k] for k in self._bid_keys[:n]], [asks[k] for k in self._ask_keys[:n]]

    def crossed(self):
        if not (self._bid_keys and self._ask_keys):
            return False
        bid = self._bid_keys[0]
        return (bid.copy_negate() if self._exact else -bid) >= self._ask_keys[0]

    def prune(self, limit):
        """Keep only the best ``limit`` levels a side."""
        for side, keys in ((self.bids, self._bid_keys), (self.asks, self._ask_keys)):
            for k in keys[limit:]:
                del side[k]
            del keys[limit:]

    def as_dict(self):
        """Full book as ``{"lastUpdateId", "bids", "asks"}`` with Decimal keys."""
        return {
            "lastUpdateId": self.update_id,
            "bids": {Decimal(p): Decimal(q) for p, q in self.bids.values()},
            "asks": {Decimal(p): Decimal(q) for p, q in self.asks.values()},
        }

    def differences(self, other, low=None, high=None):
        """How many levels priced ``low`` to ``high`` (Decimal; None: no
        bound) have another quantity string in ``other`` (or only one has them)."""
        low = Decimal("-Infinity") if low is None else low
        high = Decimal("Infinity") if high is None else high
        n = 0
        for mine, theirs in ((self.bids, other.bids), (self.asks, other.asks)):
            a = {Decimal(p): q for p, q in mine.values()}
            b = {Decimal(p): q for p, q in theirs.values()}
            n += sum(1 for k in a.keys() | b.keys() if low <= k <= high and a.get(k, "0") != b.get(k, "0"))
        return n


def _float_exact(price):
    """Has ``price`` (a plain decimal) at most FLOAT_DIGITS significant digits?"""
    return len(price) <= SHORT_PRICE or len(price.replace(".", "").strip("0")) <= FLOAT_DIGITS


def first_event_fits(market, last_update_id, first_id, final_id):
    """Does the first event after a snapshot bridge it (section 4.1 / 4.2)?"""
    if market == SPOT:
        return first_id <= last_update_id + 1 <= final_id
    return first_id <= last_update_id <= final_id


def drop_before_snapshot(market, last_update_id, final_id):
    """Is a buffered event entirely covered by the snapshot?"""
    if market == SPOT:
        return final_id <= last_update_id
    return final_id < last_update_id


def classify_next(market, book_id, first_id, final_id, prev_final_id):
    """Steady-state decision for one event: APPLIED, STALE or GAP.

    ``prev_final_id`` is the event's ``pu`` (futures only; ignored on spot).
    """
    if final_id <= book_id:
        return STALE
    if market == SPOT:
        return GAP if first_id > book_id + 1 else APPLIED
    return APPLIED if prev_final_id == book_id else GAP


class DepthSync:
    """Binance's documented local-book procedure for one symbol.

    Feed every diff to :meth:`on_diff` and the REST snapshot to
    :meth:`on_snapshot`. While :attr:`synced` is false the caller should fetch
    a snapshot (once; ``needs_snapshot`` says when to ask again). Diffs that
    arrive before the snapshot are buffered, never dropped. ``packed``: the
    diffs' sides come packed (messages.Diff) and stay so until applied.
    """

    def __init__(self, market, max_buffer=100_000, packed=False):
        if market not in MARKETS:
            raise ValueError(f"unknown market {market!r}")
        self.market = market
        self.max_buffer = max_buffer
        self.packed = packed
        self.book = Book()
        self.buffer = []
        self.synced = False
        self.awaiting_first = False     # synced from a snapshot, and no diff applied to it yet
        self.last_gap = None     # (book id, first id of the offending event)

    @property
    def update_id(self):
        return self.book.update_id if self.synced else None

    def on_diff(self, first_id, final_id, prev_final_id, bids, asks):
        if not self.synced:
            self.buffer.append((first_id, final_id, prev_final_id, bids, asks))
            if len(self.buffer) > self.max_buffer:
                del self.buffer[0]
            return BUFFERED
        return self._step(first_id, final_id, prev_final_id, bids, asks)

    def on_snapshot(self, last_update_id, bids, asks):
        # Both procedures: a snapshot older than the first buffered event
        # cannot be bridged; fetch another.
        if self.buffer and last_update_id < self.buffer[0][0]:
            return SNAPSHOT_TOO_OLD
        self.book.load(last_update_id, bids, asks)
        self.synced = True
        self.awaiting_first = True
        pending, self.buffer = self.buffer, []
        for i, event in enumerate(pending):
            if self._step(*event) == GAP:
                self.buffer.extend(pending[i + 1:])
                return GAP
        return SYNCED

    def reset(self):
        """Discard the book (after a gap); diffs are buffered again."""
        self.book = Book()
        self.synced = False
        self.awaiting_first = False

    def _step(self, first_id, final_id, prev_final_id, bids, asks):
        book_id = self.book.update_id
        if self.awaiting_first:
            if drop_before_snapshot(self.market, book_id, final_id):
                return STALE
            if not first_event_fits(self.market, book_id, first_id, final_id):
                return self._gap(book_id, (first_id, final_id, prev_final_id, bids, asks))
            self.awaiting_first = False
            self._apply(bids, asks, final_id)
            return APPLIED
        outcome = classify_next(self.market, book_id, first_id, final_id, prev_final_id)
        if outcome == APPLIED:
            self._apply(bids, asks, final_id)
        elif outcome == GAP:
            return self._gap(book_id, (first_id, final_id, prev_final_id, bids, asks))
        return outcome

    def _apply(self, bids, asks, final_id):
        if self.packed:
            self.book.apply_packed(bids, asks, final_id)
        else:
            self.book.apply(bids, asks, final_id)

    def _gap(self, book_id, event):
        self.last_gap = (book_id, event[0])
        self.reset()
        # The event that revealed the gap starts the next buffer.
        self.buffer.append(event)
        return GAP
