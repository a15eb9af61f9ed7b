"""The futures-only streams of one symbol: markPrice and forceOrder.

Pure, like market.py, which calls :meth:`FuturesFeeds.timed` from its
clock with the symbol's book. A random generator of its own (seeded from the
simulator's seed) drives the premium and the liquidations, so the other
streams of a seed are the same whether these are listened to or not.

* ``markPrice`` / ``markPrice@1s``: every 3 s / 1 s, on the second. The mark
  price is the book's mid (with 8 decimals, as Binance writes it), the index
  price the mark less a premium that wanders between -0.15% and +0.15%, the
  estimated settle price a running mean of the index, the funding rate
  Binance's formula (premium + clamp(0.01% - premium, +-0.05%), negative
  when the premium is), the next funding time the next 00:00, 08:00 or 16:00
  UTC. Dated (delivery) contracts, named ``<PAIR>_<YYMMDD>``, send ``r`` ""
  and ``T`` 0, as Binance does; COIN-M adds ``ps`` (the pair).
* ``forceOrder``: at most one liquidation per second (Binance pushes at most
  the latest per symbol per 1000 ms), in FORCE_ORDER_SHARE of the seconds:
  an IOC limit order beyond the best price on the side it hits, filled at
  the best price.
"""

import random

import orjson

MARK_PERIODS = {"markPrice": 3000, "markPrice@1s": 1000}
FUNDING_MS = 8 * 3_600_000          # funding at 00:00, 08:00 and 16:00 UTC
FORCE_ORDER_SHARE = 0.2             # of the seconds that carry a liquidation
DECIMALS = 8                        # markPrice figures are written with 8 decimals
PREMIUM_PPM = 1500                  # the premium stays within +-0.15%


def eight(units):
    """An integer count of 1e-8 to Binance's ``"123.45000000"`` (signed when negative)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10 ** DECIMALS)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"


def next_funding(ms):
    return (ms // FUNDING_MS + 1) * FUNDING_MS


def funding_rate(premium_units):
    """Binance's funding rate (1e-8 units) from the premium index: premium +
    clamp(interest 0.01% - premium, -0.05%, +0.05%)."""
    return premium_units + max(-50_000, min(50_000, 10_000 - premium_units))


class FuturesFeeds:
    def __init__(self, market, symbol, seed, price_decimals):
        self.market, self.symbol = market, symbol
        self.rng = random.Random(f"{seed}:{market}:{symbol}:futures")
        self.scale = 10 ** (DECIMALS - min(price_decimals, DECIMALS))     # one price tick in 1e-8 units
        self.premium_ppm = self.rng.randrange(-300, 600)
        self.settle = None
        self.mark = None                     # the last markPriceUpdate
        self.delivery = "_" in symbol and not symbol.endswith("_PERP")
        self.pair = symbol.split("_")[0]

    def timed(self, book, now_ms, out, active):
        """Events due by ``now_ms`` for the keys in ``active``, appended to
        ``out`` as ``(key, payload)``; ``book`` is the SymbolMarket (its
        best prices, formatters and timers)."""
        # an event is dated by the tick just passed (not by a tick due while
        # nobody listened: a new subscriber's first event is a current one)
        for key, period in MARK_PERIODS.items():
            if key in active and book._due(key, period, now_ms) is not None:
                out.append((key, orjson.dumps(self.mark_price(book, now_ms // period * period))))
        if "forceOrder" in active and book._due("forceOrder", 1000, now_ms) is not None \
                and self.rng.random() < FORCE_ORDER_SHARE:
            out.append(("forceOrder", orjson.dumps(self.force_order(book, now_ms // 1000 * 1000))))

    def mark_price(self, book, tick):
        """The markPriceUpdate of second ``tick``: the same for both speeds."""
        if self.mark is not None and self.mark["E"] == tick:
            return self.mark
        rng = self.rng
        self.premium_ppm = max(-PREMIUM_PPM, min(PREMIUM_PPM, self.premium_ppm + rng.randrange(-40, 41)))
        mark = (book.best_bid + book.best_ask) * self.scale // 2
        index = mark * 1_000_000 // (1_000_000 + self.premium_ppm)
        self.settle = index if self.settle is None else (7 * self.settle + index) // 8
        msg = {"e": "markPriceUpdate", "E": tick, "s": self.symbol}
        if self.market == "coinm":
            msg["ps"] = self.pair
        msg.update({"p": eight(mark), "i": eight(index), "P": eight(self.settle)})
        if self.delivery:
            msg.update({"r": "", "T": 0})
        else:
            msg.update({"r": eight(funding_rate(self.premium_ppm * 100)), "T": next_funding(tick)})
        self.mark = msg
        return msg

    def force_order(self, book, tick):
        rng = self.rng
        sell = rng.random() < 0.5            # a long liquidated sells into the bids
        best = book.best_bid if sell else book.best_ask
        limit = max(1, best - rng.randrange(1, 30)) if sell else best + rng.randrange(1, 30)
        qty = book.fmt_qty(max(1, int(rng.expovariate(1.0 / book.spec.mean_lots))))
        order = {"s": self.symbol, "S": "SELL" if sell else "BUY", "o": "LIMIT", "f": "IOC", "q": qty,
                 "p": book.fmt_price(limit), "ap": book.fmt_price(best), "X": "FILLED", "l": qty, "z": qty,
                 "T": tick - rng.randrange(0, 200)}
        if self.market == "coinm":
            order["ps"] = self.pair
        return {"e": "forceOrder", "E": tick, "o": order}
