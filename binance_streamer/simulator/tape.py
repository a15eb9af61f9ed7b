"""A market generated before serving, for load tests beyond what one
process can simulate live (``--pregenerate SECONDS``).

The live model costs tens of microseconds per frame, so one asyncio process
cannot both simulate and send 50,000 frames a second. Here every symbol's
market is run ahead of time in a pool of processes, for a start time ``t0``
in the near future chosen so that generation ends before it; the server then
only sends each frame when its time comes. Frames carry the same exchange
times as a live run would (the time they are sent), so send-to-disk latency
is measured the same way. REST answers come from the generated stream as in
a replay (replay.ReplaySymbol): depth from the book rebuilt from the opening
snapshot plus the diffs sent so far, aggTrades and klines from the frames."""

import logging
import multiprocessing
import os
import time

import orjson

from .market import SymbolMarket
from .replay import ReplaySymbol

log = logging.getLogger(__name__)

TICK_US = 2000          # the live clock's step (exchange.run sleeps 2 ms)
KEYS = ("aggTrade", "trade", "bookTicker", "depth@100ms", "kline_1m", "markPrice@1s", "forceOrder")   # the last two: futures


def generate(job):
    """One symbol's market from ``start_us`` for ``seconds``:
    ``(symbol, snapshot, [(send time us, key, payload)])``."""
    market, symbol, seed, rate, start_us, seconds, keys, levels = job
    m = SymbolMarket(market, symbol, seed, rate, start_us, levels=levels)
    snapshot = m.snapshot(5000)
    active = set(keys)
    frames = []
    end = start_us + int(seconds * 1e6)
    t = start_us + TICK_US
    while t <= end:
        for key, payload in m.advance(t, active):
            frames.append((t, key, payload))
        t += TICK_US
    return symbol, snapshot, frames


def _calibrate(cfg, keys):
    """Seconds to build one symbol's market, and to run one second of it."""
    t0 = time.perf_counter()
    m = SymbolMarket(cfg.market, cfg.symbols[0], cfg.seed, cfg.rate, 1_700_000_000_000_000, levels=cfg.book_levels)
    t1 = time.perf_counter()
    active, t = set(keys), 1_700_000_000_000_000
    while t < 1_700_000_000_500_000:
        t += TICK_US
        m.advance(t, active)
    return t1 - t0, (time.perf_counter() - t1) * 2


class Tape:
    """The Replay interface (see exchange.Exchange) over generated frames."""

    def __init__(self, cfg, seconds, keys=KEYS, processes=None):
        self.market = cfg.market
        self.symbols = list(cfg.symbols)
        processes = processes or min(os.cpu_count() or 1, len(self.symbols))
        build, per_second = _calibrate(cfg, keys)
        estimate = (build + per_second * seconds) * len(self.symbols) / processes
        started = time.time()
        self.t0_us = int((started + estimate * 1.2 + 3.0) * 1e6)
        log.warning("generating %.0f s of market for %d symbols (about %.0f s); it starts at %s",
                    seconds, len(self.symbols), estimate,
                    time.strftime("%H:%M:%S", time.localtime(self.t0_us / 1e6)))
        jobs = [(cfg.market, s, cfg.seed, cfg.rate_of(s), self.t0_us, seconds, keys, cfg.book_levels) for s in self.symbols]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(generate, jobs, chunksize=1)
        self._symbols = {}
        merged = []
        for symbol, snapshot, frames in results:
            self._symbols[symbol] = ReplaySymbol(self.market, symbol, [snapshot])
            stream = symbol.lower() + "@"
            merged += [(t, stream + key, key, payload) for t, key, payload in frames]
        merged.sort(key=lambda f: f[0])
        self.frames = merged
        self.next = 0
        late = time.time() * 1e6 - self.t0_us
        log.warning("generated %d frames in %.0f s", len(merged), time.time() - started)
        if late > 0:
            log.warning("generation ended %.1f s after the start time: the first frames go out late", late / 1e6)

    def symbol(self, name):
        return self._symbols.get(name)

    def start(self, now):
        pass

    @property
    def finished(self):
        return self.next >= len(self.frames)

    def due(self, now):
        """Frames whose time has come: ``[(stream, payload, None)]``."""
        now_us = now * 1e6
        frames, i, out = self.frames, self.next, []
        symbols = self._symbols
        while i < len(frames) and frames[i][0] <= now_us:
            _, stream, key, payload = frames[i]
            i += 1
            if key[0] in "adk":     # aggTrade, depth, kline: the REST side needs them
                symbols[stream[:stream.index("@")].upper()].feed(key, orjson.loads(payload))
            out.append((stream, payload, None))
        self.next = i
        return out
