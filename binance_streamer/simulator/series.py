"""USD-M's REST series (open interest, long/short ratios, taker volume
ratio, funding rates) as the exchange serves them: each value comes from a
generator seeded by (seed, symbol, series, timestamp), so the same request
always gets the same answer; the history reaches ``series_history_days``
back (Binance: 30 days for /futures/data; a ``startTime`` older than that is
refused with HTTP 400, as Binance does; fundingRate serves from its oldest
row). The series have a clock of their own, ``time.time()`` plus
``series_clock`` seconds (the fault of that name moves it forward), so a
test can play an outage of hours in a second; the fault ``series_down``
makes them answer HTTP 503 for a while. Their own request limits per IP
(endpoints.REQUEST_POOLS) answer 429 with Retry-After."""

import random
import time

from ..binance.endpoints import FUNDING_INTERVAL_MS, REQUEST_POOLS, SERIES_ENDPOINTS, SERIES_PERIODS
from .limits import SlidingCounter

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
HISTORY_DAYS = 30.0


class SeriesError(Exception):
    """An answer other than 200: ``status``, Binance's ``code`` and ``msg``, maybe Retry-After."""

    def __init__(self, status, code, msg, retry_after=None):
        super().__init__(msg)
        self.status, self.code, self.msg, self.retry_after = status, code, msg, retry_after


def values(seed, symbol, name, t):
    """The payload of series ``name`` at time ``t`` (ms): a dict of exact strings."""
    rng = random.Random(f"{seed}:{symbol}:{name}:{t}")
    if name in ("openInterest", "openInterestHist"):
        oi = rng.uniform(10_000, 90_000)
        if name == "openInterest":
            return {"openInterest": f"{oi:.3f}", "symbol": symbol, "time": t}
        return {"symbol": symbol, "sumOpenInterest": f"{oi:.8f}",
                "sumOpenInterestValue": f"{oi * rng.uniform(20_000, 70_000):.8f}",
                "CMCCirculatingSupply": f"{rng.uniform(19e6, 20e6):.2f}", "timestamp": t}
    if name == "takerlongshortRatio":
        buy, sell = rng.uniform(50, 900), rng.uniform(50, 900)
        return {"buySellRatio": f"{buy / sell:.4f}", "buyVol": f"{buy:.4f}", "sellVol": f"{sell:.4f}",
                "timestamp": t}
    if name == "fundingRate":
        return {"symbol": symbol, "fundingTime": t, "fundingRate": f"{rng.uniform(-0.0005, 0.0005):.8f}",
                "markPrice": f"{rng.uniform(20_000, 70_000):.8f}"}
    long_ = rng.uniform(0.3, 0.7)       # the three long/short ratios
    return {"symbol": symbol, "longShortRatio": f"{long_ / (1 - long_):.4f}", "longAccount": f"{long_:.4f}",
            "shortAccount": f"{1 - long_:.4f}", "timestamp": t}


def period_ms(period):
    return int(period[:-1]) * _UNIT_MS[period[-1]]


class SeriesServer:
    def __init__(self, seed, history_days=HISTORY_DAYS):
        self.seed = seed
        self.history_ms = int(history_days * 86_400_000)
        self.pools = {}                 # (ip, pool) -> SlidingCounter
        self.served = 0

    def charge(self, ip, pool, now):
        """Count a request of ``pool``; SeriesError 429 past its limit."""
        if pool is None:
            return
        counter = self.pools.get((ip, pool))
        if counter is None:
            counter = self.pools[(ip, pool)] = SlidingCounter(*REQUEST_POOLS[pool])
        if not counter.hit(now):
            retry = max(1, int(counter.times[0] + counter.window - now + 0.999))
            raise SeriesError(429, -1003, f"Too many requests; current limit is {counter.limit} requests per "
                                          f"{int(counter.window)} seconds.", retry)

    def answer(self, name, symbol, q, now_ms):
        """The body of one request (``q``: its query), at series time ``now_ms``."""
        self.served += 1
        if name == "openInterest":
            return values(self.seed, symbol, name, now_ms)
        spec = SERIES_ENDPOINTS[name]
        limit = _int(q, "limit", spec.page_default)
        if not 1 <= limit <= spec.page_max:
            raise SeriesError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        if name == "fundingRate":
            step, last = FUNDING_INTERVAL_MS, now_ms // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
        else:
            period = q.get("period")
            if period not in SERIES_PERIODS:
                raise SeriesError(400, -1120, "Invalid period.")
            step = period_ms(period)
            last = now_ms // step * step - step          # the newest closed period
        oldest = -(-(now_ms - self.history_ms) // step) * step
        start, end = _int(q, "startTime"), _int(q, "endTime")
        if start is not None and start < now_ms - self.history_ms and name != "fundingRate":
            raise SeriesError(400, -1130, "parameter 'startTime' is invalid.")
        end = last if end is None else min(end, last)
        if start is None:
            first = max(oldest, (end // step - limit + 1) * step)
        else:
            first = max(oldest, -(-start // step) * step)
        times = range(first, end + 1, step)
        return [values(self.seed, symbol, name, t) for t in times[:limit]]


def _int(q, name, default=None):
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit():
        raise SeriesError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                      "legal range is '^[0-9]{1,20}$'.")
    return int(raw)


def series_now_ms(faults):
    """The series' clock: real time moved forward by the ``series_clock`` fault."""
    return int((time.time() + faults.series_clock) * 1000)
