"""What every child process does first, and how it reports to the manager."""

import logging
import logging.handlers
import os
import queue
import random
import signal
import threading
import time

EXIT_OK = 0
EXIT_CONFIG = 2          # a fault restarting will not mend: the manager does not respawn
EXIT_QUEUE_CORRUPT = 3   # an input queue was torn by a killed process: restart the pipeline
EXIT_THREAD_DIED = 4     # a long-lived thread died of an exception: restart the process


def child_setup(name, log_q, level="INFO"):
    """Ignore SIGINT, turn SIGTERM into an Event, log through the manager,
    and stop when the parent dies. Returns the stop Event."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_q)] if log_q is not None else root.handlers
    root.setLevel(level)
    threading.current_thread().name = name
    parent = os.getppid()

    def watch_parent():
        while not stop.wait(1.0):
            if os.getppid() != parent:
                logging.getLogger(__name__).error("%s: the manager died; stopping", name)
                stop.set()

    threading.Thread(target=watch_parent, name=f"{name}-parent-watch", daemon=True).start()
    return stop


class Threads:
    """A process's long-lived threads, supervised: one that dies of an
    exception is logged at ERROR with its traceback, ``failed`` names it and
    ``stop`` is set, so the process ends with EXIT_THREAD_DIED and the
    manager restarts it. A thread must never die silently."""

    def __init__(self, stop):
        self.stop = stop
        self.failed = None

    def guard(self, name, target):
        """``target`` wrapped so that an exception escaping it is handled as above."""
        def run(*args, **kwargs):
            try:
                return target(*args, **kwargs)
            except BaseException:
                logging.getLogger(__name__).exception("thread %s died; stopping the process so that it restarts",
                                                      name)
                if self.failed is None:
                    self.failed = name
                self.stop.set()
        return run

    def start(self, name, target, *args):
        thread = threading.Thread(target=self.guard(name, target), name=name, args=args, daemon=True)
        thread.start()
        return thread


_early = []


def catch_early_signals():
    """From the moment a recorder holds its pidfile until its manager runs,
    SIGTERM and SIGINT are remembered instead of killing it half set up; the
    manager then stops at once, cleanly (``early_signal``)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _early.append(signum))


def early_signal():
    return _early[0] if _early else None


def report(status_q, name, payload):
    """Send a status snapshot to the manager; never blocks the caller."""
    if status_q is None:
        return
    try:
        status_q.put_nowait((name, os.getpid(), time.time(), payload))
    except queue.Full:
        pass


class Throttle:
    """Let a repeated warning through N times a minute, then count the rest."""

    def __init__(self, per_minute=5):
        self.per_minute = per_minute
        self.window = 0
        self.count = 0

    def allow(self, now=None):
        minute = int((now or time.monotonic()) // 60)
        if minute != self.window:
            self.window, self.count = minute, 0
        self.count += 1
        return self.count <= self.per_minute


def backoff_delay(attempt, base, cap, rng=random):
    """Delay before retry number ``attempt`` (1, 2, ...): base * 2^(n-1),
    capped, then scaled by a random factor in [0.5, 1] so that many
    clients that failed together do not retry together."""
    if attempt <= 0 or base <= 0:
        return 0.0
    return min(cap, base * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)
