"""Deterministic market model: one order book per symbol, random level
changes, and taker orders that walk the book.

Pure: no I/O and no clock. The server calls :meth:`SymbolMarket.advance`
with a virtual time and gets back ``(stream key, payload bytes)`` pairs, in the
order Binance would send them. For a given seed the sequence of book changes,
trades and ids is always the same; only the wall-clock origin differs.

Prices and quantities are integers (ticks and lots) inside, formatted to
Binance's strings on the way out, so every figure is exact:

* spot sends 8 decimals for prices and quantities (``"0.35130000"``),
* USD-M sends the symbol's own precision (``"7.6110"``),
* COIN-M too, with quantities in whole contracts (``"24"``) and the kline's
  ``q``/``Q`` in the base asset (contracts x contractSize / price, 8 decimals);
  its payloads carry ``ps`` (the pair) where Binance's dstream does and no
  ``st``/``nq`` (as the real capture BINANCE_DELIVERY shows).

Ids follow Binance: aggregate trade ids ``a`` are consecutive and each covers
trade ids ``f..l``; every book change takes the next update id (USD-M skips
ids now and then, as its hidden updates do, so only ``pu`` chains; COIN-M
the same); a
bookTicker carries the update id of the change that moved the top.
"""

import bisect
from collections import deque
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
import heapq
import random

import orjson

from .futures import FuturesFeeds
from .klines import CandleSeries, interval_ms
from .specs import symbol_spec
from ..markets import COINM, USDM, futures

DEPTH_SPEEDS = {"spot": {"depth": 1000, "depth@100ms": 100},
                "usdm": {"depth": 250, "depth@100ms": 100, "depth@500ms": 500},
                "coinm": {"depth": 250, "depth@100ms": 100, "depth@500ms": 500}}
PARTIAL_SPEEDS = {"spot": {"": 1000, "@100ms": 100},
                  "usdm": {"": 250, "@100ms": 100, "@500ms": 500},
                  "coinm": {"": 250, "@100ms": 100, "@500ms": 500}}
KLINE_PUSH_MS = {"spot": 2000, "usdm": 250, "coinm": 250}
_BASE_PLACES = Decimal("0.00000001")


def base_amount(value):
    """A COIN-M base-asset amount (a Fraction) as dapi writes it: 8 decimals."""
    return str((Decimal(value.numerator) / Decimal(value.denominator)).quantize(_BASE_PLACES, ROUND_HALF_EVEN)) \
        if value else "0"


class Formatter:
    """Integer ticks/lots to Binance's decimal strings, cached."""

    def __init__(self, decimals, wire_decimals):
        self.decimals = decimals
        self.pad = "0" * (wire_decimals - decimals)
        self.scale = 10 ** decimals
        self.cache = {}

    def __call__(self, n):
        s = self.cache.get(n)
        if s is None:
            whole, frac = divmod(n, self.scale)
            s = f"{whole}.{frac:0{self.decimals}d}{self.pad}" if self.decimals else f"{n}{self.pad and '.' + self.pad}"
            if len(self.cache) < 200_000:
                self.cache[n] = s
        return s


class SymbolMarket:
    """The exchange side of one symbol."""

    def __init__(self, market, symbol, seed, rate, start_us, levels=7500,
                 history=500_000, trade_history=200_000):
        self.market = market
        self.symbol = symbol
        self.lower = symbol.lower()
        self.spec = symbol_spec(symbol)
        self.rng = random.Random(f"{seed}:{market}:{symbol}")
        self.step_us = 1_000_000 / rate
        self.start_us = start_us
        self.steps = 0
        wire = 8 if market == "spot" else None
        self.fmt_price = Formatter(self.spec.price_decimals, wire or self.spec.price_decimals)
        self.fmt_qty = Formatter(self.spec.qty_decimals, wire or self.spec.qty_decimals)
        self.fmt_quote = Formatter(self.spec.price_decimals + self.spec.qty_decimals,
                                   max(wire or 0, self.spec.price_decimals + self.spec.qty_decimals))
        self.update_id = 1_000_000 + self.rng.randrange(1_000_000)
        self.agg_id = 5_000_000 + self.rng.randrange(1_000_000)
        self.trade_id = 20_000_000 + self.rng.randrange(1_000_000)
        self.bids, self.asks = {}, {}
        self.depth_ticks = levels
        self._seed_book(levels)
        self.best_bid = max(self.bids)
        self.best_ask = min(self.asks)
        self.changes = deque(maxlen=history)     # (update id, is_bid, tick, old lots)
        self.agg_trades = []                     # REST history, trimmed in blocks
        self.agg_trade_base = self.agg_id + 1     # id of agg_trades[0]
        self.trade_history = trade_history
        if market == COINM:     # kline q and Q: the base asset, contracts x size / price
            self.fmt_quote = base_amount
            worth = Fraction(int(self.spec.contract_size) * 10 ** self.spec.price_decimals)
            self.candles = CandleSeries(self.spec.start_ticks, value=lambda tick, lots: worth * lots / tick)
        else:
            self.candles = CandleSeries(self.spec.start_ticks)
        self._last_top = None
        self._depth_pending = {k: ({}, {}) for k in DEPTH_SPEEDS[market]}
        self._depth_first = {k: None for k in DEPTH_SPEEDS[market]}
        self._depth_prev_u = {k: self.update_id for k in DEPTH_SPEEDS[market]}
        self._partial_prev_u = {}
        self._timers = {}
        self._kline_last = {}
        self.now_ms = -1
        # markPrice and forceOrder (futures only), from a generator of their own
        self.futures = FuturesFeeds(market, symbol, seed, self.spec.price_decimals) if market != "spot" else None

    # -- initial state -------------------------------------------------------
    def _seed_book(self, levels):
        mid = self.spec.start_ticks
        rng = self.rng
        for i in range(1, levels + 1):
            # Dense near the top, a few empty ticks deeper in.
            if i < 50 or rng.random() < 0.85:
                lots = self._random_lots(), self._random_lots()
                if mid - i > 0:             # no bids at or below a zero price
                    self.bids[mid - i] = lots[0]
                self.asks[mid + i] = lots[1]

    def _random_lots(self):
        return max(1, int(self.rng.expovariate(1.0 / self.spec.mean_lots)))

    # -- time ----------------------------------------------------------------
    def advance(self, until_us, active):
        """Run the market up to virtual time ``until_us``.

        ``active`` is the set of stream keys someone listens to (``trade``,
        ``depth5@100ms``, ``kline_1m`` ...). Returns ``[(key, payload bytes)]``.
        """
        out = []
        while True:
            t_us = self.start_us + int(self.steps * self.step_us)
            if t_us > until_us:
                break
            if t_us // 1000 != self.now_ms:
                self._timed(t_us // 1000, out, active)
            self.steps += 1
            if self.rng.random() < self.spec.trade_share:
                self._taker_order(out, active)
            else:
                self._level_change(out, active)
        self._timed(until_us // 1000, out, active)
        return out

    def _due(self, key, period_ms, now_ms):
        """Has the period ``key`` ticked by ``now_ms``? Returns the tick time or None."""
        due = self._timers.get(key)
        if due is None:
            self._timers[key] = due = (now_ms // period_ms + 1) * period_ms
        if now_ms < due:
            return None
        self._timers[key] = (now_ms // period_ms + 1) * period_ms
        return due

    def _timed(self, now_ms, out, active):
        self.now_ms = max(self.now_ms, now_ms)
        for key, period in DEPTH_SPEEDS[self.market].items():
            tick = self._due(key, period, now_ms)
            if tick is not None:
                self._flush_depth(key, tick, out, key in active)
        for key in [k for k in self._kline_last if k not in active]:
            del self._kline_last[key]       # nobody listens: a later listener starts at the current candle
            self._timers.pop(key, None)
        for key in active:
            if key.startswith("depth") and key[5:6].isdigit():
                self._partial(key, now_ms, out)
            elif key.startswith("kline_"):
                self._kline(key, now_ms, out)
        if self.futures is not None:
            self.futures.timed(self, now_ms, out, active)
        self.candles.roll(now_ms)

    # -- book changes ----------------------------------------------------------
    def _next_update_id(self):
        self.update_id += 1 if self.market == "spot" else self.rng.choice((1, 1, 1, 2, 3))
        return self.update_id

    def _set_level(self, is_bid, tick, lots):
        side = self.bids if is_bid else self.asks
        old = side.get(tick, 0)
        uid = self._next_update_id()
        if lots:
            side[tick] = lots
        else:
            side.pop(tick, None)
        self.changes.append((uid, is_bid, tick, old))
        for key, (pb, pa) in self._depth_pending.items():
            (pb if is_bid else pa)[tick] = lots
            if self._depth_first[key] is None:
                self._depth_first[key] = uid
        if is_bid:
            if lots and tick > self.best_bid:
                self.best_bid = tick
            elif not lots and tick == self.best_bid:
                self.best_bid = self._next_best(self.bids, tick, -1)
        else:
            if lots and tick < self.best_ask:
                self.best_ask = tick
            elif not lots and tick == self.best_ask:
                self.best_ask = self._next_best(self.asks, tick, 1)

    @staticmethod
    def _next_best(side, tick, step):
        for _ in range(256):
            tick += step
            if tick in side:
                return tick
        return max(side) if step < 0 else min(side)

    def _level_change(self, out, active):
        rng = self.rng
        is_bid = rng.random() < 0.5
        if rng.random() < 0.02:
            distance = rng.randrange(self.depth_ticks)
        else:
            distance = int(rng.expovariate(1 / 12.0))
        # Quotes are placed from the other side's best, as market makers
        # quote around the price: the spread refills however fast takers
        # eat it, and a bid never crosses the best ask (nor an ask the bid).
        tick = self.best_ask - 1 - distance if is_bid else self.best_bid + 1 + distance
        if is_bid and tick < 1:
            tick = 1
        side = self.bids if is_bid else self.asks
        if tick in side and rng.random() < 0.3 and len(side) > 100:
            lots = 0
        else:
            lots = self._random_lots()
        self._set_level(is_bid, tick, lots)
        self._book_ticker(out, active)

    def _taker_order(self, out, active):
        rng = self.rng
        # A pull back towards the opening price keeps prices positive and
        # plausible however long the market runs (a pure random walk drifts).
        drift = (self.best_bid + self.best_ask) / (2 * self.spec.start_ticks) - 1
        taker_buys = rng.random() < min(0.9, max(0.1, 0.5 - 0.5 * drift))
        side = self.asks if taker_buys else self.bids
        want = max(1, int(rng.expovariate(1.0 / (0.7 * self.spec.mean_lots))))
        for _ in range(4):
            if want <= 0 or len(side) <= 100:
                break
            tick = self.best_ask if taker_buys else self.best_bid
            avail = side[tick]
            take = min(want, avail)
            want -= take
            self._fill(tick, take, taker_buys, out, active)
            self._set_level(not taker_buys, tick, avail - take)
            self._book_ticker(out, active)

    def _fill(self, tick, lots, taker_buys, out, active):
        """One aggregate trade at one price: 1-3 maker fills."""
        n = min(lots, 1 + self.rng.randrange(3))
        first = self.trade_id + 1
        self.trade_id += n
        self.agg_id += 1
        t = self.now_ms
        price = self.fmt_price(tick)
        buyer_maker = not taker_buys
        row = (self.agg_id, tick, lots, first, self.trade_id, t, buyer_maker)
        self.agg_trades.append(row)
        if len(self.agg_trades) > 2 * self.trade_history:
            del self.agg_trades[:self.trade_history]
            self.agg_trade_base += self.trade_history
        self.candles.add_trade(t, tick, lots, first, self.trade_id, taker_buys)
        if "aggTrade" in active:
            out.append(("aggTrade", orjson.dumps(self.agg_trade_event(row))))
        if "trade" in active and self.market == "spot":
            parts = self._split(lots, n)
            for i, part in enumerate(parts):
                out.append(("trade", orjson.dumps({
                    "e": "trade", "E": t, "s": self.symbol, "t": first + i,
                    "p": price, "q": self.fmt_qty(part), "T": t,
                    "m": buyer_maker, "M": True})))

    def _split(self, lots, n):
        if n == 1:
            return [lots]
        cuts = sorted(self.rng.sample(range(1, lots), n - 1))
        return [b - a for a, b in zip([0] + cuts, cuts + [lots])]

    def agg_trade_event(self, row):
        a, tick, lots, f, l, t, m = row
        if self.market == "spot":
            return {"e": "aggTrade", "E": t, "s": self.symbol, "a": a,
                    "p": self.fmt_price(tick), "q": self.fmt_qty(lots),
                    "f": f, "l": l, "T": t, "m": m, "M": True}
        q = self.fmt_qty(lots)
        if self.market == COINM:
            return {"e": "aggTrade", "E": t, "a": a, "s": self.symbol, "p": self.fmt_price(tick), "q": q,
                    "f": f, "l": l, "T": t, "m": m}
        return {"e": "aggTrade", "E": t, "s": self.symbol, "a": a,
                "p": self.fmt_price(tick), "q": q, "nq": q,
                "f": f, "l": l, "T": t, "m": m, "st": 1}

    def agg_trade_rest(self, row):
        a, tick, lots, f, l, t, m = row
        q = self.fmt_qty(lots)
        if self.market == "spot":
            return {"a": a, "p": self.fmt_price(tick), "q": q, "f": f, "l": l, "T": t, "m": m, "M": True}
        if self.market == COINM:
            return {"a": a, "p": self.fmt_price(tick), "q": q, "f": f, "l": l, "T": t, "m": m}
        return {"a": a, "p": self.fmt_price(tick), "q": q, "nq": q, "f": f, "l": l, "T": t, "m": m}

    def _book_ticker(self, out, active):
        bb, ba = self.best_bid, self.best_ask
        top = (bb, self.bids[bb], ba, self.asks[ba])
        if top == self._last_top:
            return
        self._last_top = top
        if "bookTicker" not in active:
            return
        fp, fq = self.fmt_price, self.fmt_qty
        if self.market == "spot":
            msg = {"u": self.update_id, "s": self.symbol, "b": fp(bb), "B": fq(top[1]),
                   "a": fp(ba), "A": fq(top[3])}
        elif self.market == COINM:
            msg = {"u": self.update_id, "e": "bookTicker", "s": self.symbol, "ps": self.spec.base + "USD",
                   "b": fp(bb), "B": fq(top[1]), "a": fp(ba), "A": fq(top[3]), "T": self.now_ms, "E": self.now_ms}
        else:
            msg = {"e": "bookTicker", "u": self.update_id, "E": self.now_ms, "T": self.now_ms,
                   "s": self.symbol, "ps": self.symbol, "b": fp(bb), "B": fq(top[1]),
                   "a": fp(ba), "A": fq(top[3]), "st": 1}
        out.append(("bookTicker", orjson.dumps(msg)))

    # -- periodic streams -------------------------------------------------------
    def _levels(self, changes, reverse):
        fp, fq = self.fmt_price, self.fmt_qty
        return [[fp(t), fq(q)] for t, q in sorted(changes.items(), reverse=reverse)]

    def _flush_depth(self, key, tick_ms, out, listening):
        pending_bids, pending_asks = self._depth_pending[key]
        first = self._depth_first[key]
        if first is None:
            return
        msg = {"e": "depthUpdate", "E": tick_ms}
        if futures(self.market):
            msg["T"] = self.now_ms
        msg["s"] = self.symbol
        if self.market == COINM:
            msg["ps"] = self.spec.base + "USD"
        msg.update({"U": first, "u": self.update_id})
        if futures(self.market):
            msg["pu"] = self._depth_prev_u[key]
        msg["b"] = self._levels(pending_bids, True)
        msg["a"] = self._levels(pending_asks, False)
        if self.market == USDM:
            msg["ps"] = self.symbol
            msg["st"] = 1
        self._depth_prev_u[key] = self.update_id
        self._depth_pending[key] = ({}, {})
        self._depth_first[key] = None
        if listening:
            out.append((key, orjson.dumps(msg)))

    def _partial(self, key, now_ms, out):
        name, _, speed = key.partition("@")
        speeds = PARTIAL_SPEEDS[self.market]
        period = speeds.get("@" + speed if speed else "")
        n = int(name[5:])
        if period is None or n not in (5, 10, 20):
            return
        tick = self._due(key, period, now_ms)
        if tick is None:
            return
        bids, asks = self.top(n)
        if self.market == "spot":
            msg = {"lastUpdateId": self.update_id, "bids": bids, "asks": asks}
        else:
            prev = self._partial_prev_u.get(key, self.update_id)
            msg = {"e": "depthUpdate", "E": tick, "T": self.now_ms, "s": self.symbol,
                   "U": prev + 1 if prev < self.update_id else self.update_id,
                   "u": self.update_id, "pu": prev, "b": bids, "a": asks,
                   "ps": self.symbol, "st": 1}
            if self.market == COINM:
                msg["ps"] = self.spec.base + "USD"
                del msg["st"]
            self._partial_prev_u[key] = self.update_id
        out.append((key, orjson.dumps(msg)))

    def _kline(self, key, now_ms, out):
        interval = key[6:]
        try:
            span = interval_ms(interval)
        except ValueError:
            return
        if futures(self.market) and interval == "1s":
            return
        open_ms = now_ms // span * span
        last_open = self._kline_last.get(key)
        if last_open is not None and open_ms > last_open:
            # The candle that just ended, once, with x: true.
            self._kline_last[key] = open_ms
            out.append((key, orjson.dumps(self.kline_event(interval, last_open, now_ms, True))))
        elif last_open is None:
            self._kline_last[key] = open_ms
        tick = self._due(key, KLINE_PUSH_MS[self.market], now_ms)
        if tick is not None:
            out.append((key, orjson.dumps(self.kline_event(interval, open_ms, now_ms, False))))

    def kline_event(self, interval, open_ms, event_ms, closed):
        return {"e": "kline", "E": event_ms, "s": self.symbol,
                "k": self.kline_body(interval, open_ms, closed)}

    def kline_body(self, interval, open_ms, closed):
        span = interval_ms(interval)
        c = self.candles.aggregate(open_ms, open_ms + span)
        fp, fq, fqq = self.fmt_price, self.fmt_qty, self.fmt_quote
        return {"t": open_ms, "T": open_ms + span - 1, "s": self.symbol, "i": interval,
                "f": c.first_id, "L": c.last_id, "o": fp(c.open), "c": fp(c.close),
                "h": fp(c.high), "l": fp(c.low), "v": fq(c.volume), "n": c.count,
                "x": closed, "q": fqq(c.quote), "V": fq(c.taker_volume),
                "Q": fqq(c.taker_quote), "B": "0"}

    def kline_row(self, interval, open_ms):
        """A REST ``klines`` row (12 columns)."""
        k = self.kline_body(interval, open_ms, True)
        return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"],
                k["n"], k["V"], k["Q"], "0"]

    # -- views -----------------------------------------------------------------
    def snapshot(self, limit):
        """A REST depth snapshot: ``(lastUpdateId, bids, asks)``."""
        return (self.update_id, *self.top(limit))

    def agg_trades_rest(self, from_id, start_ms, end_ms, limit):
        return [self.agg_trade_rest(r) for r in self.agg_trades_from(from_id, start_ms, end_ms, limit)]

    def klines(self, interval, start_ms, end_ms, limit, now_ms):
        """REST klines rows, oldest first, the open candle last."""
        span = interval_ms(interval)
        current = now_ms // span * span
        earliest = (self.start_us // 1000) // span * span
        if start_ms is not None:
            first = max(start_ms // span * span, earliest)
            last = current if end_ms is None else min(end_ms // span * span, current)
            opens = range(first, last + 1, span)[:limit]
        else:
            last = current if end_ms is None else min(end_ms // span * span, current)
            opens = range(max(earliest, last - (limit - 1) * span), last + 1, span)
        return [self.kline_row(interval, t) for t in opens]

    def top(self, n):
        fp, fq = self.fmt_price, self.fmt_qty
        bids = [[fp(t), fq(self.bids[t])] for t in heapq.nlargest(n, self.bids)]
        asks = [[fp(t), fq(self.asks[t])] for t in heapq.nsmallest(n, self.asks)]
        return bids, asks

    def book_at(self, update_id=None):
        """The true full book after every change with id <= ``update_id``.

        Returns ``(update id, bids, asks)`` with bids high to low; raises
        ``LookupError`` when the id is older than the kept history.
        """
        bids, asks = dict(self.bids), dict(self.asks)
        if update_id is None or update_id >= self.update_id:
            uid = self.update_id
        else:
            if not self.changes or update_id < self.changes[0][0] - 1:
                raise LookupError(f"update id {update_id} is older than the kept history")
            for cid, is_bid, tick, old in reversed(self.changes):
                if cid <= update_id:
                    break
                side = bids if is_bid else asks
                if old:
                    side[tick] = old
                else:
                    side.pop(tick, None)
            uid = update_id
        fp, fq = self.fmt_price, self.fmt_qty
        return (uid,
                [[fp(t), fq(bids[t])] for t in sorted(bids, reverse=True)],
                [[fp(t), fq(asks[t])] for t in sorted(asks)])

    def agg_trades_from(self, from_id=None, start_ms=None, end_ms=None, limit=500):
        rows = self.agg_trades
        if from_id is not None:
            i = max(0, from_id - self.agg_trade_base)
            return rows[i:i + limit]
        if start_ms is None and end_ms is None:
            return rows[-limit:]
        lo = 0 if start_ms is None else bisect.bisect_left(rows, start_ms, key=lambda r: r[5])
        hi = len(rows) if end_ms is None else bisect.bisect_right(rows, end_ms, key=lambda r: r[5])
        if start_ms is None:
            return rows[max(lo, hi - limit):hi]
        return rows[lo:min(hi, lo + limit)]
