"""The ProcessManager: spawns the writer, the order-book manager and one
worker per group of symbols; restarts what crashes with capped, jittered
backoff; writes the status file; and shuts down in order so that every
message a worker read from its socket reaches the disk.

Children are tracked with explicit states, as Supervisor does:
STARTING -> RUNNING -> (EXITED -> BACKOFF -> STARTING ...) or FATAL when a
child exits with EXIT_CONFIG (restarting would not help); STOPPING while
the daemon shuts down.

A process killed while it holds one of a multiprocessing queue's locks (a
consumer in ``get``, a producer's feeder thread in ``put``) leaves that queue
blocked for everyone else, and the others hold references to it. So when any
child dies unexpectedly, the manager restarts the whole pipeline on fresh
queues: the survivors are stopped in order (a healthy writer still flushes
everything it has), then every process starts again. The workers' first
events after the restart put the downtime in the gap ledger, and aggTrades
and klines are backfilled, exactly as after a restart of the daemon.
"""

import logging
import logging.handlers
import multiprocessing
import os
import queue
import shutil
import signal
import time

from . import proc, status
from .binance.budgets import ConnectBudget, RestBudget
from .binance.endpoints import CONNECT_ATTEMPTS, CONNECT_WINDOW
from .proc import EXIT_CONFIG, EXIT_QUEUE_CORRUPT, backoff_delay

log = logging.getLogger(__name__)

STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL = "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"
RUNNING_AFTER = 1.0      # a child alive this long counts as RUNNING
STABLE_AFTER = 60.0      # ... and this long resets its backoff


class Child:
    def __init__(self, name, role, target, make_args):
        self.name, self.role, self.target, self.make_args = name, role, target, make_args
        self.process = None
        self.state = STARTING
        self.restarts = 0
        self.started = None
        self.exitcode = None

    def info(self):
        return {"name": self.name, "role": self.role, "state": self.state, "restarts": self.restarts,
                "pid": self.process.pid if self.process is not None and self.state in (STARTING, RUNNING, STOPPING)
                else None, "started": self.started, "exitcode": self.exitcode}


def spawn(ctx, name, target, args):
    p = ctx.Process(target=target, name=name, args=args)
    p.start()
    return p


class ProcessManager:
    def __init__(self, cfg, weight_limit=None, spawner=None, ctx=None, clock=time.monotonic):
        self.cfg = cfg
        self.ctx = ctx or multiprocessing.get_context("spawn")
        self.spawner = spawner or (lambda name, target, args: spawn(self.ctx, name, target, args))
        self.clock = clock
        self.weight_limit = weight_limit
        self.children = []
        self.stopping = False
        self.signal = None
        self.child_status = {}
        self.started_at = time.time()
        self.log_q = None
        self.pipeline_restarts = 0
        self.restart_at = None        # when the pipeline is due to restart after a crash
        self.failures = 0
        self.running_since = None

    # -- wiring -------------------------------------------------------------------
    def groups(self):
        n = self.cfg.symbols_per_worker
        symbols = self.cfg.symbols
        return [symbols[i:i + n] for i in range(0, len(symbols), n)]

    def build(self, log_q, listener=None):
        """Create queues and child slots (no process is started here).

        ``listener`` is the log QueueListener reading ``log_q``; on a pipeline
        restart it is pointed at a fresh queue."""
        from .orderbook import orderbook_main
        from .worker import worker_main
        from .writer import writer_main
        cfg = self.cfg
        self.log_q, self.listener = log_q, listener
        self.budget = self.connect_budget = None
        self._make_queues()
        self.children = [Child("writer", "writer", writer_main,
                               lambda: (cfg, self.writer_q, self.control, self.status_q, self.log_q))]
        if cfg.orderbook:
            self.children.append(Child("orderbook", "orderbook", orderbook_main,
                                       lambda: (cfg, self.book_q, self.writer_q, self.control, self.status_q,
                                                self.log_q)))
        for i, symbols in enumerate(self.groups()):
            self.children.append(Child(f"worker-{i}", "worker", worker_main,
                                       lambda i=i, symbols=symbols: (cfg, symbols, i, self.writer_q, self.book_q,
                                                                     self.control[i][1], self.status_q,
                                                                     self.log_q, self.budget,
                                                                     self.connect_budget)))

    def _make_queues(self):
        """Fresh queues and shared budgets (a process killed while holding one
        of their locks would block them for everyone); budgets keep their counts."""
        ctx, cfg = self.ctx, self.cfg
        old_rest, old_connect = self.budget, self.connect_budget
        self.budget = RestBudget(ctx, self.weight_limit or _default_limit(cfg), cfg.rest_weight_margin)
        self.connect_budget = ConnectBudget(ctx, CONNECT_ATTEMPTS, CONNECT_WINDOW)
        for new, old in ((self.budget, old_rest), (self.connect_budget, old_connect)):
            if old is not None:
                new.array.get_obj()[:] = old.array.get_obj()[:]
        self.status_q = ctx.Queue(maxsize=10_000)
        if self.listener is not None and self.log_q is not None:
            # A new listener on a new queue; stopping the old one could wait forever
            # on a lock a dead child holds, and its thread is a daemon thread.
            self.log_q = ctx.Queue()
            self.listener = logging.handlers.QueueListener(self.log_q, *self.listener.handlers,
                                                           respect_handler_level=True)
            self.listener.start()
        self.writer_q = self.ctx.Queue(maxsize=self.cfg.queue_size)
        self.book_q = self.ctx.Queue(maxsize=self.cfg.queue_size) if self.cfg.orderbook else None
        self.control = [(symbols, self.ctx.Queue()) for symbols in self.groups()]

    def _abandon_queues(self):
        """Let this process exit without flushing what it put on the current
        queues: after a crash a dead child may hold a queue's write lock, and a
        feeder thread waiting on it would be joined at exit, forever."""
        queues = [self.status_q, self.writer_q, self.book_q, self.log_q]
        for q in queues + [q for _, q in self.control]:
            if q is not None:
                q.cancel_join_thread()

    # -- running --------------------------------------------------------------------
    def start(self):
        for child in self.children:
            self._spawn(child)
        self.running_since = self.clock()

    def _spawn(self, child):
        child.process = self.spawner(child.name, child.target, child.make_args())
        child.state, child.started, child.exitcode = STARTING, self.clock(), None
        log.info("%s: started (pid %s)", child.name, child.process.pid)

    def step(self):
        """One turn of the main loop: reap, restart what is due, collect status."""
        now = self.clock()
        for child in self.children:
            p = child.process
            if child.state in (STARTING, RUNNING) and p is not None and not p.is_alive():
                self._exited(child, now)
            elif child.state == STARTING and now - child.started >= RUNNING_AFTER:
                child.state = RUNNING
        if self.failures and self.restart_at is None and now - self.running_since >= STABLE_AFTER:
            self.failures = 0
        if self.restart_at is not None and now >= self.restart_at and not self.stopping:
            self.restart_pipeline()
        self.drain_status()

    def _exited(self, child, now):
        child.exitcode = child.process.exitcode
        if child.exitcode == EXIT_CONFIG:
            child.state = FATAL
            log.error("%s: exited with a configuration error; not restarting it", child.name)
            if child.role == "writer":
                self.request_stop("the writer cannot run")
            return
        child.state = BACKOFF
        if self.restart_at is None:
            self.failures += 1
            delay = backoff_delay(self.failures, self.cfg.restart_min_delay, self.cfg.restart_max_delay)
            self.restart_at = now + delay
            why = {EXIT_QUEUE_CORRUPT: "found its input queue corrupt",
                   proc.EXIT_THREAD_DIED: "stopped because one of its threads died (see above)"}.get(
                child.exitcode, f"exited unexpectedly (code {child.exitcode})")
            log.error("%s: %s; restarting every process in %.1f s", child.name, why, delay)

    def restart_pipeline(self):
        """Stop the survivors in order, then start every process on fresh queues."""
        self.pipeline_restarts += 1
        writer = next(c for c in self.children if c.role == "writer")
        # With the writer alive, the others stop in order and it flushes what they hand it;
        # with the writer dead their puts would block, so they get little time.
        alive = writer.process is not None and writer.process.is_alive()
        self.stop_children(timeout=min(self.cfg.stop_timeout, 5.0 if alive else 1.0))
        self._abandon_queues()
        self._make_queues()
        for child in self.children:
            if child.state != FATAL:
                child.restarts += 1
                self._spawn(child)
        self.restart_at = None
        self.running_since = self.clock()

    def drain_status(self):
        while True:
            try:
                name, pid, when, payload = self.status_q.get_nowait()
            except queue.Empty:
                return
            prev = self.child_status.get(name)
            if prev is not None and when > prev["time"]:
                for key, stream in payload.get("streams", {}).items():
                    before = prev.get("streams", {}).get(key)
                    if before is not None and "messages" in stream:
                        stream["rate"] = round((stream["messages"] - before["messages"]) / (when - prev["time"]), 1)
            self.child_status[name] = {"pid": pid, "time": when, **payload}

    def request_stop(self, why):
        if not self.stopping:
            log.info("stopping: %s", why)
        self.stopping = True

    def snapshot(self, state):
        cfg = self.cfg
        try:
            free = shutil.disk_usage(cfg.data_dir).free
        except OSError:
            free = None
        processes = [c.info() for c in self.children]
        queues = {"writer": _qsize(self.writer_q), "orderbook": _qsize(self.book_q) if self.book_q else None}
        return {"state": state, "pid": os.getpid(), "started": self.started_at, "updated": time.time(),
                "market": cfg.market, "symbols": cfg.symbols, "streams": cfg.streams, "data_dir": cfg.data_dir,
                "processes": processes, "children": self.child_status,
                "health": status.health(processes, self.child_status, cfg.max_lag),
                "queues": queues, "disk_free_bytes": free, "pipeline_restarts": self.pipeline_restarts,
                "rest_weight_spent": self.budget.spent}

    def write_status(self, state):
        status.write_status(self.cfg.run_dir, self.snapshot(state))

    def run(self, install_signals=True, duration=None):
        """Run until SIGTERM or SIGINT (or for ``duration`` seconds); returns the
        signal number that stopped it, or None."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            self.signal = proc.early_signal()    # stopped before it got here: start nothing
        if self.signal is None:
            self.start()
        next_status = 0.0
        end = None if duration is None else self.clock() + duration
        while not self.stopping:
            if end is not None and self.clock() >= end:
                self.request_stop(f"ran for {duration:.0f} s")
                break
            time.sleep(0.2)
            if self.signal is not None:
                self.request_stop(f"received {signal.Signals(self.signal).name}")
                break
            self.step()
            if self.clock() >= next_status:
                next_status = self.clock() + self.cfg.status_interval
                running = all(c.state == RUNNING for c in self.children)
                self.write_status("RUNNING" if running else "STARTING")
        self.shutdown()
        return self.signal

    def _on_signal(self, signum, frame):
        self.signal = signum      # only recorded; the main loop acts on it

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self):
        self.stopping = True
        self.write_status("STOPPING")
        self.stop_children(self.cfg.stop_timeout)
        self.drain_status()
        self._abandon_queues()      # every child is gone; nothing is left to read them
        self.write_status("STOPPED")
        log.info("stopped")

    def stop_children(self, timeout):
        """Producers first while the writer keeps draining, then the writer."""
        workers = [c for c in self.children if c.role == "worker"]
        for child in workers:
            p = child.process
            if p is not None and p.is_alive():
                child.state = STOPPING
                p.terminate()
        self._wait(workers, timeout)
        for child in [c for c in self.children if c.role == "orderbook"]:
            self._finish(child, self.book_q, timeout)
        for child in [c for c in self.children if c.role == "writer"]:
            self._finish(child, self.writer_q, timeout)

    def _finish(self, child, inbox, timeout):
        if child.process is not None and child.process.is_alive():
            child.state = STOPPING
            try:
                inbox.put(None, timeout=1.0)
            except queue.Full:
                pass
        self._wait([child], timeout)

    def _wait(self, children, timeout):
        deadline = self.clock() + timeout
        for child in children:
            p = child.process
            if p is None:
                continue
            p.join(max(0.0, deadline - self.clock()))
            if p.is_alive():
                log.error("%s: did not stop within %.0f s; killing it", child.name, timeout)
                p.kill()
                p.join(5)
            child.state, child.exitcode = EXITED, p.exitcode
        self.drain_status()


def _qsize(q):
    try:
        return q.qsize()
    except (NotImplementedError, AttributeError):
        return None


def _default_limit(cfg):
    from .binance.endpoints import DEFAULT_WEIGHT_LIMIT
    return cfg.rest_weight_limit or DEFAULT_WEIGHT_LIMIT[cfg.market]
