"""Binance's per-IP limits as budgets shared by every process of the daemon.

:class:`RestBudget` follows the exchange's own count of REST weight
(``X-MBX-USED-WEIGHT-1M``), keeps a safety margin, waits out ``Retry-After``
after a 429 so that no request ever provokes a 418, and lets urgent requests
(a symbol with no book, a backfill) use more of the minute than routine ones
(refreshes). :class:`ConnectBudget` keeps WebSocket connection attempts under
300 per 5 minutes, so a restart of hundreds of symbols does not trip it.

Create them in the manager with the multiprocessing context and pass them to
the children; without a context they live in one process only and create no
multiprocessing state that a later fork would inherit. Between processes the
counts live in shared memory guarded by an ``flock`` on a file in
``lock_dir``: the kernel releases it when its holder dies, so a worker killed
in the middle of an update blocks nobody (a semaphore would stay taken).
"""

import fcntl
import math
import os
import tempfile
import threading
import time

URGENT, ROUTINE = 0, 1
# Share of the usable weight each priority may fill within a minute.
_PRIORITY_SHARE = {URGENT: 1.0, ROUTINE: 0.5}
_MINUTE, _USED, _PAUSED_UNTIL, _LIMIT, _SPENT, _TOO_MANY, _BANNED = range(7)
_LIMITED = {429: _TOO_MANY, 418: _BANNED}


class _FileLock:
    """A lock between threads (a mutex) and between processes (``flock`` on
    ``path``, which dies with its holder)."""

    def __init__(self, path):
        self.path = path
        self.mutex = threading.Lock()
        self.fd = None

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __enter__(self):
        self.mutex.acquire()
        if self.path is not None:
            try:
                if self.fd is None:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except BaseException:
                self.mutex.release()
                raise
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.mutex.release()


def _shared(ctx, values, lock_dir, name):
    """``(array, lock)``: shared memory and a file lock with a context, else a list and a mutex."""
    if ctx is None:
        return list(values), _FileLock(None)
    if lock_dir:
        os.makedirs(lock_dir, exist_ok=True)
        path = os.path.join(lock_dir, f".{name}.lock")
    else:           # no run directory (tests, tools): a lock file of this budget's own
        fd, path = tempfile.mkstemp(prefix=f".{name}-", suffix=".lock")
        os.close(fd)
    return ctx.RawArray("d", values), _FileLock(path)


class RestBudget:
    """Request weight per minute for the whole daemon; ``array`` holds
    minute, used, paused-until, limit, spent, 429s, 418s."""

    def __init__(self, ctx, limit, margin=0.2, clock=time.time, lock_dir=None):
        values = [0.0, 0.0, 0.0, float(limit), 0.0, 0.0, 0.0]
        self.array, self.lock = _shared(ctx, values, lock_dir, "rest-budget")
        self.margin = margin
        self.clock = clock

    def __getstate__(self):
        return {"array": self.array, "lock": self.lock, "margin": self.margin}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.clock = time.time

    @property
    def spent(self):
        return int(self.array[_SPENT])

    def usage(self):
        """For the metrics: ``{"spent", "used_minute", "limit", "429", "418"}``,
        read without the lock (each value is one aligned double)."""
        a = self.array
        used = a[_USED] if a[_MINUTE] == math.floor(self.clock() / 60) else 0.0
        return {"spent": a[_SPENT], "used_minute": used, "limit": a[_LIMIT], "429": a[_TOO_MANY],
                "418": a[_BANNED]}

    def try_acquire(self, weight, priority=URGENT):
        """Take ``weight`` now if the budget allows; else seconds to wait."""
        a, now = self.array, self.clock()
        with self.lock:
            minute = math.floor(now / 60)
            if a[_MINUTE] != minute:
                a[_MINUTE], a[_USED] = minute, 0.0
            if now < a[_PAUSED_UNTIL]:
                return a[_PAUSED_UNTIL] - now
            usable = a[_LIMIT] * (1.0 - self.margin) * _PRIORITY_SHARE[priority]
            if weight and a[_USED] + weight > usable and a[_USED] > 0:     # no weight: only a pause waits
                return (minute + 1) * 60 - now + 0.05
            a[_USED] += weight
            a[_SPENT] += weight
            return 0.0

    def acquire(self, weight, priority=URGENT, stop=None):
        """Wait until ``weight`` fits; False if ``stop`` (an Event) was set first."""
        while True:
            wait = self.try_acquire(weight, priority)
            if wait <= 0:
                return True
            if stop is not None:
                if stop.wait(min(wait, 1.0)):
                    return False
            else:
                time.sleep(min(wait, 1.0))

    def observe(self, used):
        """The exchange's count for this minute is the truth when it is higher."""
        a = self.array
        with self.lock:
            minute = math.floor(self.clock() / 60)
            if a[_MINUTE] != minute:
                a[_MINUTE], a[_USED] = minute, float(used)
            else:
                a[_USED] = max(a[_USED], float(used))

    def paused_for(self):
        """Seconds until REST calls may go again after a 429 or 418 (0: not paused)."""
        return max(0.0, self.array[_PAUSED_UNTIL] - self.clock())

    def pause(self, seconds, status=None):
        """Nobody sends until ``seconds`` from now (after a 429 or 418: ``status``, counted)."""
        a = self.array
        with self.lock:
            a[_PAUSED_UNTIL] = max(a[_PAUSED_UNTIL], self.clock() + seconds)
            if status in _LIMITED:
                a[_LIMITED[status]] += 1




class ConnectBudget:
    """At most ``limit`` connection attempts in any ``window`` seconds, daemon-wide.

    ``array`` is a ring of the attempt times; the oldest slot is reused.
    """

    def __init__(self, ctx, limit=300, window=300.0, margin=0.1, clock=time.time, lock_dir=None,
                 name="connect-budget"):
        self.size = max(1, int(limit * (1.0 - margin)))
        values = [0.0] * (self.size + 1)            # the last slot is the ring's next index
        self.array, self.lock = _shared(ctx, values, lock_dir, name)
        self.window = window
        self.clock = clock

    def __getstate__(self):
        return {"array": self.array, "lock": self.lock, "size": self.size, "window": self.window}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.clock = time.time

    def try_acquire(self):
        """Record an attempt now if allowed; else seconds until one is."""
        a, now = self.array, self.clock()
        with self.lock:
            i = int(a[self.size])
            oldest = a[i]
            if oldest and now - oldest < self.window:
                return self.window - (now - oldest) + 0.01
            a[i] = now
            a[self.size] = (i + 1) % self.size
            return 0.0

    def acquire(self, stop=None):
        """Wait for an attempt; False if ``stop`` was set first."""
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return True
            if stop is not None and stop.wait(min(wait, 1.0)):
                return False
            if stop is None:
                time.sleep(min(wait, 1.0))


def request_budgets(ctx, lock_dir=None, clock=time.time):
    """One budget per per-IP request limit of the REST series
    (endpoints.REQUEST_POOLS: /futures/data, fundingRate), each shared
    daemon-wide like the weight: ``{pool: ConnectBudget}`` (a ring of request
    times, 10% kept unused)."""
    from .endpoints import REQUEST_POOLS
    return {pool: ConnectBudget(ctx, limit, window, clock=clock, lock_dir=lock_dir, name=f"{pool}-requests")
            for pool, (limit, window) in REQUEST_POOLS.items()}
