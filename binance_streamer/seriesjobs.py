"""A worker's REST series thread: polls each series of its symbols
(series.py) when due, inside the daemon's weight budget and the series'
own request limits (budgets.request_budgets), and hands the rows and
ledger rows to the worker's outbox under the worker's lock.

At start each series' last recorded time is read from its files, so the
first poll asks for everything since (paging), and a series is gapless
across restarts and outages as far as the exchange still has the rows.
What it no longer has is one ledger row per hole (``lost``, with the
times around it and the reason).
"""

import logging
import time

from . import series as S
from .binance import parse
from .binance.endpoints import HISTORY_REFUSED
from .binance.rest import RestError
from .messages import Gap, Rows
from .proc import Throttle
from .sequence import gap_row

log = logging.getLogger(__name__)

MAX_REFUSALS = 12       # startTimes refused as too old before a poll gives up
MAX_WAIT = 5.0           # seconds the thread sleeps at most between looks at its schedule


class SeriesPoller:
    def __init__(self, cfg, symbols, rest, pools, lock, outbox, stop, clock=time.time, monotonic=time.monotonic):
        self.cfg, self.symbols, self.rest, self.pools = cfg, symbols, rest, pools or {}
        self.lock, self.outbox, self.stop = lock, outbox, stop
        self.clock, self.monotonic = clock, monotonic
        self.plan = S.parse_setting(cfg.series, cfg.series_period) if cfg.market == "usdm" else []
        self.states = []
        self.throttle = Throttle()

    def load(self):
        """Each series' last recorded time, from the files (the writer's own
        recovery does the same for its de-duplication)."""
        now = self.monotonic()
        self.states = [S.State(symbol, name, period, S.last_recorded(self.cfg.data_dir, self.cfg.market, symbol,
                                                                      S.file_stream(name, period)), now)
                       for symbol in self.symbols for name, period in self.plan]
        resumed = sum(st.last is not None for st in self.states)
        log.info("series: polling %d series of %s (%d resume after their last recorded row)",
                 len(self.states), ",".join(self.symbols), resumed)

    def run(self):
        self.load()
        while not self.stop.is_set():
            now = self.monotonic()
            for st in sorted((st for st in self.states if st.due <= now), key=lambda st: st.due):
                if self.stop.is_set():
                    break
                self.poll(st)
            wait = min((st.due for st in self.states), default=now + MAX_WAIT) - self.monotonic()
            self.stop.wait(min(max(wait, 0.0), MAX_WAIT))

    def poll(self, st):
        """Ask for what is new in one series; schedule the next ask."""
        try:
            new = self._sample(st) if not st.spec.history else self._history(st)
        except (RestError, *parse.MALFORMED) as exc:
            st.failures += 1
            if self.throttle.allow():
                log.warning("%s %s: poll failed (%s); asking again in %.0f s", st.symbol, st.stream, exc,
                            self.cfg.series_poll_interval)
            st.polled(self.monotonic(), 0, self.cfg.series_poll_interval, failed=True)
            return
        st.polled(self.monotonic(), new, self.cfg.series_poll_interval)

    # -- one sample ------------------------------------------------------------------
    def _sample(self, st):
        request_us = int(self.clock() * 1e6)
        obj = self.rest.series(st.name, {"symbol": st.symbol}, self.pools.get(st.endpoint.pool))
        t, line = S.sample_row(obj, request_us, int(self.clock() * 1e6))
        if st.last is not None and t <= st.last:
            return 0                 # the exchange's value has not changed time: nothing new
        self._emit(st, [(t, line)])
        return 1

    # -- a series with history ----------------------------------------------------------
    def _history(self, st):
        """Pages from the last recorded time + 1 until a page is not full;
        returns the rows kept."""
        start = None if st.last is None else st.last + 1
        limit = st.endpoint.page_max if start is not None else min(S.FIRST_ROWS, st.endpoint.page_max)
        refused, newest, new = 0, None, 0
        while not self.stop.is_set():
            try:
                page = self.rest.series(st.name, self._params(st, start, limit), self.pools.get(st.endpoint.pool))
            except RestError as exc:
                if start is None or (exc.status, exc.code) != HISTORY_REFUSED or refused >= MAX_REFUSALS:
                    raise
                refused += 1
                if newest is None:
                    newest = self._newest(st)
                start = _within_history(st, start, newest, refused)
                continue
            recv_us = int(self.clock() * 1e6)
            rows = sorted(S.row(st.spec, obj, recv_us) for obj in page)
            fresh = [r for r in rows if st.last is None or r[0] > st.last]
            if fresh:
                self._emit(st, fresh, refused > 0)
                new += len(fresh)
            if len(page) < limit or not fresh or start is None:      # no startTime: the newest rows came
                return new
            start = st.last + 1
            limit = st.endpoint.page_max
        return new

    def _params(self, st, start, limit):
        params = {"symbol": st.symbol}
        if st.spec.periodic:
            params["period"] = st.period
        if start is not None:
            params["startTime"] = start
        params["limit"] = limit
        return params

    def _newest(self, st):
        """The exchange's newest row time (its own clock, not ours)."""
        page = self.rest.series(st.name, self._params(st, None, 1), self.pools.get(st.endpoint.pool))
        if not page:
            raise RestError(f"{st.name}: the exchange refused startTime {st.last + 1} and has no rows")
        return S.row(st.spec, page[-1], 0)[0]

    # -- hand-on -------------------------------------------------------------------------
    def _emit(self, st, rows, refused=False):
        """Rows in time order to the outbox, after a ledger row for each hole
        before or between them."""
        out, last = [], st.last
        for t, line in rows:
            if last is not None and st.step is not None and not S.spacing_ok(st.step, last, t):
                out.append(Gap(st.symbol, self._hole(st, last, t, refused)))
            out.append((t, line))
            last = t
        with self.lock:
            batch = None
            for item in out:
                if isinstance(item, Gap):
                    self.outbox.put(item)
                    batch = None
                    continue
                t, line = item
                day = st.day(t)
                if batch is None or batch.day != day:
                    batch = Rows(st.symbol, st.stream, day, [], [], False)
                    self.outbox.put(batch)
                batch.ids.append(t)
                batch.lines.append(line)
                self.outbox.rows += 1
        st.last = last
        st.rows += len(rows)

    def _hole(self, st, last, first, refused):
        st.gaps += 1
        missing = (first - last) // st.step - 1
        if refused:
            reason = "beyond exchange history"
            detail = (f"{missing} rows between {_iso(last)} and {_iso(first)} are older than the "
                      f"{st.endpoint.history_ms // 86_400_000} days the exchange keeps")
        else:
            reason = "not served by the exchange"
            detail = f"the exchange's answer skips {missing} rows between {_iso(last)} and {_iso(first)}"
        log.warning("%s %s: %s: %s", st.symbol, st.stream, reason, detail)
        return gap_row(int(self.clock() * 1e6), st.stream, reason, last, first, "lost", 0, detail, last, first)

    def status(self):
        with self.lock:
            return {f"{st.symbol}/{st.stream}": {"rows": st.rows, "gaps": st.gaps, "failures": st.failures,
                                                 "last_time": st.last} for st in self.states}


def _within_history(st, start, newest, refused):
    """A startTime the exchange should accept after it refused ``start`` as
    older than its history: first its documented history back from its
    newest row (with two periods and an hour to spare), then half as far
    back each time it refuses again (it may keep less than documented)."""
    if refused == 1:
        return max(start, newest - st.endpoint.history_ms + 2 * st.step + 3_600_000)
    return newest - (newest - start) // 2


def _iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
