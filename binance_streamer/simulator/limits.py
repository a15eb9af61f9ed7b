"""Binance's rate limits as pure state machines (the caller passes the clock)."""

from collections import deque
import math

MAX_BAN_SECONDS = 3 * 86_400


class WeightLimiter:
    """REST request weight per IP per clock minute, 429 then 418.

    A request over the minute's budget gets 429 with ``Retry-After`` (seconds
    to the next minute). A client that sends again before that time is up is
    banned: 418 with ``Retry-After`` until the ban ends. Bans double for
    repeat offenders up to three days, as Binance's do. Binance bans for
    "continuing to send requests after receiving 429": a request that
    arrives within ``GRACE`` of the 429 was sent before the client could
    have seen it (another process's request in flight) and gets 429 again,
    not a ban.
    """

    GRACE = 0.05

    def __init__(self, limit, ban_seconds=120.0):
        self.limit = limit
        self.ban_seconds = ban_seconds
        self._ip = {}

    def _state(self, ip):
        st = self._ip.get(ip)
        if st is None:
            st = self._ip[ip] = {"minute": None, "used": 0, "retry_from": 0.0, "retry_until": 0.0,
                                 "banned_until": 0.0, "bans": 0}
        return st

    def used(self, ip, now):
        st = self._state(ip)
        return st["used"] if st["minute"] == int(now // 60) else 0

    def charge(self, ip, weight, now, storm_until=0.0):
        """Returns ``(status, used weight, retry_after seconds or None)``."""
        st = self._state(ip)
        minute = int(now // 60)
        if st["minute"] != minute:
            st["minute"], st["used"] = minute, 0
        if now < st["banned_until"]:
            return 418, st["used"], math.ceil(st["banned_until"] - now)
        if now < st["retry_until"] and now - st["retry_from"] < self.GRACE:
            return 429, st["used"], max(1, math.ceil(st["retry_until"] - now))
        if now < st["retry_until"]:
            ban = min(self.ban_seconds * 2 ** st["bans"], MAX_BAN_SECONDS)
            st["bans"] += 1
            st["banned_until"] = now + ban
            return 418, st["used"], math.ceil(ban)
        if now < storm_until or st["used"] + weight > self.limit:
            end = storm_until if now < storm_until else (minute + 1) * 60
            retry = max(1, math.ceil(end - now))
            st["retry_from"], st["retry_until"] = now, now + retry
            return 429, st["used"], retry
        st["used"] += weight
        return 200, st["used"], None


class SlidingCounter:
    """Events in the last ``window`` seconds (connection attempts, incoming frames)."""

    def __init__(self, limit, window):
        self.limit = limit
        self.window = window
        self.times = deque()

    def hit(self, now):
        """Record one event; True while the count is within the limit."""
        times = self.times
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        return len(times) <= self.limit
