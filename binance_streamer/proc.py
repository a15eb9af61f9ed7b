"""What every child process does first, and how it reports to the manager."""

import gc
import importlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from typing import NamedTuple

from . import links, messages


class Entry(NamedTuple):
    """A child process's entry point by name (``Entry(".worker",
    "worker_main")``), imported by the child that calls it: the manager
    never loads what only its children need (the worker's HTTP client alone
    is 16 MB). Picklable, as a spawned process's target must be."""
    module: str
    function: str

    def __call__(self, *args):
        return getattr(importlib.import_module(self.module, __package__), self.function)(*args)


EXIT_OK = 0
EXIT_CONFIG = 2          # a fault restarting will not mend: the manager does not respawn
EXIT_THREAD_DIED = 4     # a long-lived thread died of an exception: restart the process


def child_setup(name, control, level="INFO"):
    """Ignore SIGINT, turn SIGTERM into an Event, and log to the manager over
    the control link (``control``: this child's end of it, a socket).
    Returns ``(stop Event, ManagerLink)``. The manager's death shows as the
    end of the control link, which the child's main loop turns into a stop."""
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    manager = ManagerLink(name, control, stop)
    root = logging.getLogger()
    root.handlers[:] = [links.LinkLogHandler(manager.link, messages.Log)]
    root.setLevel(level)
    threading.current_thread().name = name
    settle_gc()
    return stop, manager


GC_YOUNG = 20_000        # container allocations between young collections (Python's default: 700)


def settle_gc():
    """What start-up imported stays for the process's life: out of the
    collector's sight (``gc.freeze``), so a collection never walks it again.
    A hot loop makes containers by the hundred per message (orjson's dicts,
    a batch's lists) and frees nearly all of them by reference counting; a
    young collection every 700 allocations found nothing to free (on the
    real captures a worker's parsing took about 8.2 µs a message with them,
    7.2 µs without). Cycles are still collected, later."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


class ManagerLink:
    """A child's end of its control link: Beats up (only from the main
    loop, so they prove it turns), Attach and Stop down."""

    def __init__(self, name, sock, stop):
        self.name, self.stop = name, stop
        self.link = links.Link(sock, f"{name}:manager")
        self.next_beat = 0.0
        self.next_status = 0.0
        self.stopping = False         # the manager sent Stop

    def beat(self, status, interval, now=None):
        """Send a Beat if one is due, with ``status()`` when a report is due."""
        now = time.monotonic() if now is None else now
        if now < self.next_beat:
            return
        self.next_beat = now + messages.HEARTBEAT
        report = None
        if now >= self.next_status:
            self.next_status = now + interval
            report = status()
            trim_memory()
        self.link.send(messages.Beat(time.time(), report))

    def report(self, status):
        """A final report, whatever the schedule (at exit)."""
        self.link.send(messages.Beat(time.time(), status))
        self.link.drain(time.monotonic() + 2.0, time.monotonic)

    def read(self, link, report_torn=True):
        """links.read, reporting a link to a peer that broke torn (``torn``)."""
        return links.read(link, self.torn if report_torn else None)

    def torn(self, peer, exc):
        """The link with ``peer`` broke on something that does not decode: if
        ``peer`` still lives, only a new one mends it; the manager decides."""
        logging.getLogger(__name__).error("%s: %s; asking the manager to replace %s", self.name, exc, peer)
        self.link.send(messages.Torn(peer, str(exc)))

    def attachments(self):
        """``[(peer name, socket)]`` the manager sent since the last call;
        a Stop sets ``stopping``. The manager gone: ``stop`` is set."""
        try:
            received = self.link.receive()
        except links.Broken:
            if not self.stop.is_set():
                logging.getLogger(__name__).error("%s: the manager is gone; stopping", self.name)
            self.stop.set()
            return []
        out = []
        for msg in received:
            if isinstance(msg, messages.Attach):
                out.append((msg.peer, socket.socket(fileno=self.link.take_fd())))
            elif isinstance(msg, messages.Stop):
                self.stopping = True
        return out


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


_malloc_trim = []        # [] not looked up yet, [None] not glibc, [function]


def trim_memory():
    """Give the memory the C allocator holds free back to the system
    (glibc's ``malloc_trim(0)``; nothing elsewhere). Python frees a burst's
    objects, but glibc keeps their pages in its arenas, and a process that
    once held a burst's batches stays that large. Called once per status
    report by every long-lived process."""
    if not _malloc_trim:
        _malloc_trim.append(_libc("malloc_trim", "c_size_t"))
    if _malloc_trim[0] is not None:
        _malloc_trim[0](0)


M_MMAP_THRESHOLD = -3      # glibc's mallopt parameter (malloc.h)
LARGE_BLOCK = 128 * 1024   # glibc's initial threshold


def map_large_blocks(threshold=LARGE_BLOCK):
    """Have glibc give blocks of ``threshold`` bytes or more their own pages,
    returned to the system as soon as they are freed (nothing elsewhere).
    By default glibc raises that threshold to the size of each such block
    freed, up to 32 MB: in a worker the batches of a burst (about 1 MB each,
    as pickles and frames) then go into the heaps of its threads, whose free
    space they fragment, and the process keeps the burst's pages. With a
    fixed threshold they come and go whole."""
    mallopt = _libc("mallopt", "c_int", "c_int")
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold) == 1


def _libc(name, *argtypes):
    """The C library's function ``name`` (its arguments' ctypes type names
    ``argtypes``, returning an int), or None off Linux or where the C library
    has none (malloc_trim and mallopt are glibc's: musl has neither)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [getattr(ctypes, t) for t in argtypes], ctypes.c_int
    return function


_early = []


def catch_early_signals():
    """From the moment a recorder holds its pidfile until its manager runs,
    SIGTERM and SIGINT are remembered instead of killing it half set up; the
    manager then stops at once, cleanly (``early_signal``)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _early.append(signum))


def early_signal():
    return _early[0] if _early else None


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


def without_resource_tracker():
    """Keep multiprocessing from starting its resource tracker (a process of
    12 MB, started with the first spawned child): it unlinks the named
    semaphores and shared memory blocks a killed process leaves behind, and
    the recorder makes none (its links are socket pairs, its shared budgets
    anonymous memory with flock). The tracker is given /dev/null to write
    to, which takes every message and starts nothing; children inherit it.
    Call before the first child, and again after closing descriptors
    (detaching as a daemon): a descriptor that is no longer /dev/null is
    opened again. Where the tracker differs from what this knows (one with
    a finalizer, a future Python), nothing is changed. Returns whether the
    tracker writes to /dev/null."""
    global _tracker_null
    from multiprocessing import resource_tracker
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    kind = type(tracker)
    if tracker is None or not hasattr(kind, "_check_alive") or hasattr(kind, "__del__"):
        return False
    fd = getattr(tracker, "_fd", 0)
    if fd is not None and fd == _tracker_null and _is_null(fd):
        return True
    if (fd is not None and fd != _tracker_null) or getattr(tracker, "_pid", 0) is not None:
        return False                # a tracker of its own runs
    _tracker_null = tracker._fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    return True


_tracker_null = None     # the /dev/null descriptor given to the resource tracker


def _is_null(fd):
    try:
        a, b = os.fstat(fd), os.stat(os.devnull)
    except OSError:
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)
