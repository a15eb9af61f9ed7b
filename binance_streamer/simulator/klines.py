"""Candles built from the simulator's trades: 1-second candles kept for two
days, any Binance interval aggregated from them on demand. Pure."""

import bisect

_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
             "12h", "1d", "3d", "1w", "1M")


def interval_ms(interval):
    """Length of a kline interval in ms; ``1M`` is taken as 30 days."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown kline interval {interval!r}")
    if interval == "1M":
        return 30 * _UNIT_MS["d"]
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


class Candle:
    __slots__ = ("open", "high", "low", "close", "volume", "quote", "taker_volume",
                 "taker_quote", "count", "first_id", "last_id")

    def __init__(self, price):
        self.open = self.high = self.low = self.close = price
        self.volume = self.quote = self.taker_volume = self.taker_quote = self.count = 0
        self.first_id = self.last_id = -1

    def merge(self, other):
        if not other.count:
            return
        if not self.count:
            self.open, self.high, self.low = other.open, other.high, other.low
            self.first_id = other.first_id
        else:
            self.high = max(self.high, other.high)
            self.low = min(self.low, other.low)
        self.close = other.close
        self.last_id = other.last_id
        self.volume += other.volume
        self.quote += other.quote
        self.taker_volume += other.taker_volume
        self.taker_quote += other.taker_quote
        self.count += other.count


class CandleSeries:
    """Per-second candles of one symbol, oldest first."""

    def __init__(self, start_price=0, keep_seconds=2 * 86_400, value=None):
        self.seconds = []      # second numbers (ms // 1000), ascending
        self.value = value     # (tick, lots) -> a trade's quote amount; None: lots * tick
        self.candles = []
        self.keep = keep_seconds
        self.start_price = start_price

    def add_trade(self, t_ms, tick, lots, first_id, last_id, taker_buys):
        sec = t_ms // 1000
        if not self.seconds or self.seconds[-1] != sec:
            self.seconds.append(sec)
            self.candles.append(Candle(tick))
            c = self.candles[-1]
            c.first_id = first_id
        else:
            c = self.candles[-1]
            c.high = max(c.high, tick)
            c.low = min(c.low, tick)
        c.close = tick
        c.last_id = last_id
        worth = lots * tick if self.value is None else self.value(tick, lots)
        c.volume += lots
        c.quote += worth
        c.count += last_id - first_id + 1
        if taker_buys:
            c.taker_volume += lots
            c.taker_quote += worth

    def roll(self, now_ms):
        excess = len(self.seconds) - self.keep
        if excess > self.keep // 10:
            del self.seconds[:excess]
            del self.candles[:excess]

    def aggregate(self, start_ms, end_ms):
        """One candle over ``[start_ms, end_ms)``; empty ones carry the last close."""
        lo = bisect.bisect_left(self.seconds, start_ms // 1000)
        hi = bisect.bisect_left(self.seconds, -(-end_ms // 1000))
        prev = self.candles[lo - 1].close if lo else self.start_price
        out = Candle(prev)
        for c in self.candles[lo:hi]:
            out.merge(c)
        return out
