"""The ProcessManager: spawns the writer, the order-book manager and one
worker per group of symbols; links them (links.py, one socket pair per pair
of processes); restarts a child that dies or hangs, alone, with capped,
jittered backoff; writes the status file; and shuts down in order so that
every message a worker read from its socket reaches the disk.

Children are tracked with explicit states, as Supervisor does; every change
goes through :meth:`Child.change`, which the log sees:
STARTING -> RUNNING -> (EXITED -> BACKOFF -> STARTING ...) or FATAL when a
child exits with EXIT_CONFIG (restarting would not help); STOPPING while the
daemon shuts down.

A child proves it is alive with a Beat from its main loop (messages.py); one
silent for ``hang_timeout`` is killed and restarted like a crashed one. A
restarted child gets new links to its running peers, and each peer gets its
end (``Attach``): nothing else is touched. The manager's loop never waits on
a disk or a child: the status file and the log are written by their own
threads, and links never block.
"""

import logging
import multiprocessing
import os
import queue
import signal
import time

from . import links, messages, proc, settings, status, statusreport
from .binance.budgets import ConnectBudget, RestBudget, request_budgets
from .binance.endpoints import CONNECT_ATTEMPTS, CONNECT_WINDOW
from .proc import EXIT_CONFIG, backoff_delay

log = logging.getLogger(__name__)

STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL = "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL"
ALIVE = (STARTING, RUNNING, STOPPING)
RUNNING_AFTER = 1.0      # a child alive this long counts as RUNNING
FIRST_BEAT = 60.0        # a child may take this long (or hang_timeout if longer) to start beating
STABLE_AFTER = 60.0      # ... and this long resets its backoff
TRANSITIONS = {STARTING: {RUNNING, EXITED, STOPPING, BACKOFF, FATAL}, RUNNING: {EXITED, STOPPING, BACKOFF, FATAL},
               BACKOFF: {STARTING, STOPPING, EXITED}, STOPPING: {EXITED}, EXITED: {STARTING, BACKOFF, FATAL},
               FATAL: set()}
WHY = {proc.EXIT_THREAD_DIED: "stopped because one of its threads died (see above)"}


class Child:
    def __init__(self, name, role, target, peers, symbols=()):
        self.name, self.role, self.target = name, role, target
        self.peers = peers            # names of the processes it has links with
        self.symbols = list(symbols)
        self.process = None
        self.state = STARTING
        self.restarts = self.failures = 0
        self.started = self.restart_at = self.exitcode = None
        self.link = None              # the manager's end of its control link
        self.last_beat = None         # monotonic time of its last Beat (its spawn before the first)
        self.beating = False          # a Beat came from this process
        self.killed = None            # why the manager killed it (it is reaped, then restarted)

    def change(self, state, why=""):
        """Every state change of a child goes through here."""
        if state != self.state and state not in TRANSITIONS[self.state]:
            raise AssertionError(f"{self.name}: {self.state} -> {state} is not a transition")
        if state != self.state:
            log.debug("%s: %s -> %s %s", self.name, self.state, state, why)
        self.state = state

    @property
    def alive(self):
        return self.state in ALIVE and self.process is not None and self.link is not None

    def info(self, now):
        return {"name": self.name, "role": self.role, "state": self.state, "restarts": self.restarts,
                "pid": self.process.pid if self.process is not None and self.state in ALIVE else None,
                "started": self.started, "exitcode": self.exitcode,
                "heartbeat_age_s": None if self.last_beat is None or self.state not in ALIVE
                else round(now - self.last_beat, 2)}


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
        self.log_queue = None
        self.logs_dropped = 0
        self.budget = self.connect_budget = self.series_budgets = None
        self.status_writer = None
        self.summary_base = None      # (time, messages, rows) at the last summary
        self.summary_health = ()      # the health problems the last summary line named
        self.stream_first = {}        # "SYMBOL/stream" -> (time, messages) when first reported, for its usual gap
        self.metrics = None           # metrics.Endpoint (metrics_port): gets every snapshot too

    # -- wiring ---------------------------------------------------------------------
    def groups(self):
        symbols = self.cfg.symbols
        n = settings.symbols_per_worker(self.cfg.symbols_per_worker, len(symbols))
        return [symbols[i:i + n] for i in range(0, len(symbols), n)]

    def build(self, log_queue=None):
        """Child slots and shared budgets (no process or link is made here).
        ``log_queue``: where the children's log records go (a queue.Queue read
        by the log listener)."""
        # named, imported by the child that runs it (proc.Entry): not here
        orderbook_main = proc.Entry(".orderbook", "orderbook_main")
        worker_main = proc.Entry(".worker", "worker_main")
        writer_main = proc.Entry(".writer", "writer_main")
        cfg = self.cfg
        self.log_queue = log_queue
        lock_dir = cfg.run_dir
        self.budget = RestBudget(self.ctx, self.weight_limit or _default_limit(cfg), cfg.rest_weight_margin,
                                 lock_dir=lock_dir)
        self.connect_budget = ConnectBudget(self.ctx, CONNECT_ATTEMPTS, CONNECT_WINDOW, lock_dir=lock_dir)
        self.series_budgets = request_budgets(self.ctx, lock_dir) if cfg.series and cfg.market == "usdm" else None
        if cfg.series and cfg.market != "usdm":
            log.info("series: the REST series are USD-M only for now; not polling %s on %s",
                     ",".join(cfg.series), cfg.market)
        workers = [f"worker-{i}" for i in range(len(self.groups()))]
        book = ["orderbook"] if cfg.orderbook else []
        if cfg.role == "collector":          # connections only: their frames go to NATS (collector.py)
            collector_main = proc.Entry(".collector", "collector_main")
            self.children = [Child(name, "worker", collector_main, [], symbols)
                             for name, symbols in zip(workers, self.groups())]
            self.by_name = {c.name: c for c in self.children}
            return
        self.children = [Child("writer", "writer", writer_main, workers + book)]
        if cfg.orderbook:
            self.children.append(Child("orderbook", "orderbook", orderbook_main, workers + ["writer"]))
        for name, symbols in zip(workers, self.groups()):
            self.children.append(Child(name, "worker", worker_main, ["writer"] + book, symbols))
        self.by_name = {c.name: c for c in self.children}

    def _args(self, child, control, peers):
        cfg = self.cfg
        groups = {c.name: c.symbols for c in self.children if c.role == "worker"}
        if child.role == "writer":
            return (cfg, control, peers, groups, child.restarts)
        if child.role == "orderbook":
            return (cfg, control, peers, groups, child.restarts)
        index = int(child.name.split("-")[1])
        return (cfg, child.symbols, index, child.restarts, control, peers, self.budget, self.connect_budget,
                self.series_budgets)

    # -- running --------------------------------------------------------------------
    def start(self):
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child):
        """Start ``child`` with new links: to the manager, and to every running
        peer, which gets its end of the new link now (Attach)."""
        mine, theirs = links.pair()
        ends = {}
        attach = []
        for name in child.peers:
            peer = self.by_name[name]
            if peer.alive:
                a, b = links.pair()
                ends[name] = a
                attach.append((peer, b))
        try:
            child.process = self.spawner(child.name, child.target, self._args(child, theirs, ends))
        finally:
            theirs.close()
            for sock in ends.values():
                sock.close()
        for peer, sock in attach:
            peer.link.send(messages.Attach(child.name), socks=[sock])
        if child.link is not None:
            child.link.close()
        child.link = links.Link(mine, f"manager:{child.name}")
        child.change(STARTING, f"pid {child.process.pid}")
        child.started = child.last_beat = self.clock()
        child.exitcode = child.restart_at = child.killed = None
        child.beating = False
        log.info("%s: started (pid %s)", child.name, child.process.pid)

    def step(self):
        """One turn of the main loop: reap, catch hangs, restart what is due."""
        now = self.clock()
        for child in self.children:
            p = child.process
            if child.state in (STARTING, RUNNING) and p is not None and not p.is_alive():
                self._exited(child, now)
            elif child.state in (STARTING, RUNNING) and child.killed is None and \
                    now - child.last_beat > self._allowed(child):
                self._hung(child, now)
            elif child.state == STARTING and now - child.started >= RUNNING_AFTER:
                child.change(RUNNING)
            if child.state == RUNNING and child.failures and now - child.started >= STABLE_AFTER:
                child.failures = 0
            if child.state == BACKOFF and now >= child.restart_at and not self.stopping:
                child.restarts += 1
                self._spawn(child)

    def _allowed(self, child):
        """Seconds without a Beat before ``child`` is taken for hung: its
        start-up (imports, the writer's recovery) gets more."""
        return self.cfg.hang_timeout if child.beating else max(self.cfg.hang_timeout, FIRST_BEAT)

    def _hung(self, child, now):
        silent = now - child.last_beat
        log.error("%s: no heartbeat for %.1f s (hang_timeout %g s); killing it (pid %s) to restart it",
                  child.name, silent, self.cfg.hang_timeout, child.process.pid)
        self._kill(child, f"hung for {silent:.1f} s and was killed")

    def _replace(self, child, by, why):
        """``by`` found its link with ``child`` torn while both live: only a new
        ``child`` (with new links) mends it."""
        if child.state not in (STARTING, RUNNING) or child.killed is not None:
            return
        log.error("%s: its link with %s is torn (%s); killing it (pid %s) to restart it with new links",
                  child.name, by, why, child.process.pid)
        self._kill(child, f"was killed for a torn link with {by}")

    def _kill(self, child, why):
        child.killed = why
        child.process.kill()
        # Reaped by a later step, not waited for here: a process stuck in the
        # kernel (a disk that does not answer) dies only when the call returns,
        # and its replacement must not start before (two writers on one file).

    def _exited(self, child, now):
        child.exitcode = child.process.exitcode
        if child.link is not None:
            child.link.close()
            child.link = None
        if child.exitcode == EXIT_CONFIG:
            child.change(FATAL)
            log.error("%s: exited with a configuration error; not restarting it", child.name)
            if child.role == "writer":
                self.request_stop("the writer cannot run")
            return
        child.failures += 1
        delay = backoff_delay(child.failures, self.cfg.restart_min_delay, self.cfg.restart_max_delay)
        child.restart_at = now + delay
        child.change(BACKOFF)
        why = child.killed or WHY.get(child.exitcode, f"exited unexpectedly (code {child.exitcode})")
        log.error("%s: %s; restarting it alone in %.1f s", child.name, why, delay)

    # -- the control links ------------------------------------------------------------
    def poll(self, timeout):
        """Wait up to ``timeout`` for the children's messages and handle them."""
        open_links = [c.link for c in self.children if c.link is not None]
        ready, writable = links.wait(open_links, [lk for lk in open_links if lk.pending], timeout)
        for link in writable:
            link.flush()
        for child in self.children:
            if child.link is not None and child.link in ready:
                self._receive(child)

    def _receive(self, child):
        try:
            received = child.link.receive()
        except links.Broken:
            child.link.close()      # it is exiting; reaping will see it
            child.link = None
            return
        for msg in received:
            if isinstance(msg, messages.Beat):
                child.last_beat, child.beating = self.clock(), True
                if msg.status is not None:
                    self._status(child, msg.time, msg.status)
            elif isinstance(msg, messages.Log):
                self._log(msg.record)
            elif isinstance(msg, messages.Torn) and msg.peer in self.by_name:
                self._replace(self.by_name[msg.peer], child.name, msg.why)

    def _status(self, child, when, payload):
        prev = self.child_status.get(child.name)
        if prev is not None and when > prev["time"]:
            for key, stream in payload.get("streams", {}).items():
                before = prev.get("streams", {}).get(key)
                if before is not None and "messages" in stream:
                    stream["rate"] = round((stream["messages"] - before["messages"]) / (when - prev["time"]), 1)
        for key, stream in payload.get("streams", {}).items():
            if not stream.get("messages") or not stream.get("last_recv_us"):
                continue
            point = (stream["last_recv_us"] / 1e6, stream["messages"])
            first = self.stream_first.get(key)
            if first is None or point[1] < first[1]:          # new, or its worker restarted
                self.stream_first[key] = first = point
            stream["usual_gap_s"] = status.usual_gap(first, point)
        self.child_status[child.name] = {"pid": child.process.pid, "time": when, **payload}

    def _log(self, record):
        if self.log_queue is None:
            return
        try:
            self.log_queue.put_nowait(record)
        except queue.Full:
            self.logs_dropped += 1

    def request_stop(self, why):
        if not self.stopping:
            log.info("stopping: %s", why)
        self.stopping = True

    def snapshot(self, state):
        cfg, now = self.cfg, self.clock()
        processes = [c.info(now) for c in self.children]
        snap = {"state": state, "pid": os.getpid(), "started": self.started_at, "updated": time.time(),
                "role": cfg.role, "market": cfg.market, "symbols": cfg.symbols, "streams": cfg.streams, "data_dir": cfg.data_dir,
                "status_interval": cfg.status_interval, "processes": processes, "children": self.child_status,
                "disk_free_bytes": self.status_writer.disk_free if self.status_writer is not None else None,
                "restarts": sum(c.restarts for c in self.children), "logs_dropped": self.logs_dropped,
                "rest_weight_spent": self.budget.spent if self.budget is not None else None,
                "rest_paused_s": round(self.budget.paused_for(), 1) if self.budget is not None else 0}
        snap["health"] = status.health(snap, snap["updated"], cfg.max_lag, cfg.min_free_disk * 2**30,
                                       cfg.link_buffer_bytes)
        return snap

    def _summarize(self):
        """The one-line summary the log gets every summary_interval."""
        snap, now = self.snapshot("RUNNING"), self.clock()
        children = snap["children"]
        messages = sum(s.get("messages") or 0 for name, c in children.items() if name.startswith("worker")
                       for s in c.get("streams", {}).values())
        writer = children.get("writer", {})
        rows = sum(f["rows"] for key, f in writer.get("streams", {}).items() if not key.endswith("/gaps"))
        gaps = sum(sum(by.values()) for g in writer.get("gaps", {}).values() for by in g["by_stream"].values())
        last = self.summary_base
        self.summary_base = (now, messages, rows)
        if last is None:
            return
        elapsed = max(1e-9, now - last[0])
        books = children.get("orderbook", {})
        health = snap["health"]
        said, self.summary_health = status.health_news(health, self.summary_health)
        if self.cfg.role == "collector":      # no files, no books: what it read and published
            log.info("summary: %s, health %s%s", statusreport.collector_summary(children, messages - last[1], elapsed),
                     health["state"], said)
            return
        log.info("summary: %.0f msg/s, %d rows written in %.0f s (%d today), %d gap rows today, books in sync %s/%d, "
                 "health %s%s", max(0, messages - last[1]) / elapsed, max(0, rows - last[2]), elapsed, rows, gaps,
                 books.get("in_sync", "-"), len(self.cfg.symbols) if "depth" in ",".join(self.cfg.streams) else 0,
                 health["state"], said)

    def write_status(self, state):
        if self.status_writer is None:
            self.status_writer = status.StatusWriter(self.cfg.run_dir, self.cfg.data_dir)
        snapshot = self.snapshot(state)
        self.status_writer.submit(snapshot)
        if self.metrics is not None:
            self.metrics.update(snapshot)

    def run(self, install_signals=True, duration=None):
        """Run until SIGTERM or SIGINT (or for ``duration`` seconds); returns the
        signal number that stopped it, or None."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
            self.signal = proc.early_signal()    # stopped before it got here: start nothing
        try:
            if self.signal is None:
                self.start()
            self._loop(duration)
        finally:
            self.shutdown()
        return self.signal

    def _loop(self, duration):
        next_status = 0.0
        next_summary = self.clock() + min(5.0, self.cfg.summary_interval)      # the first sets the base
        end = None if duration is None else self.clock() + duration
        while not self.stopping:
            if end is not None and self.clock() >= end:
                self.request_stop(f"ran for {duration:.0f} s")
                break
            self.poll(0.2)
            if self.signal is not None:
                self.request_stop(f"received {signal.Signals(self.signal).name}")
                break
            self.step()
            if self.clock() >= next_status:
                next_status = self.clock() + self.cfg.status_interval
                running = all(c.state in (RUNNING, FATAL) for c in self.children)
                self.write_status("RUNNING" if running else "STARTING")
                proc.trim_memory()
            if self.cfg.summary_interval and self.clock() >= next_summary:
                next_summary = self.clock() + self.cfg.summary_interval
                self._summarize()

    def _on_signal(self, signum, frame):
        self.signal = signum      # only recorded; the main loop acts on it

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self):
        self.stopping = True
        self.write_status("STOPPING")
        self._writer_back(self.cfg.stop_timeout)
        self.stop_children(self.cfg.stop_timeout)
        self.write_status("STOPPED")
        self.status_writer.close(timeout=5.0)
        for child in self.children:
            if child.link is not None:
                child.link.close()
                child.link = None
        log.info("stopped")

    def _writer_back(self, timeout):
        """A writer waiting out its backoff at shutdown starts now: the
        workers' unacknowledged rows are only written if one takes them."""
        if not any(c.process is not None for c in self.children):
            return          # stopped before anything started
        self.step()         # a writer killed a moment ago is reaped (and so in BACKOFF) first
        writer = self.by_name.get("writer") if self.children else None
        if writer is None or writer.state != BACKOFF:
            return
        log.info("writer: restarting it now, before the others stop, to write what they kept for it")
        writer.restarts += 1
        self._spawn(writer)
        deadline = self.clock() + timeout
        while not writer.beating and writer.process.is_alive() and self.clock() < deadline:
            self.poll(0.1)
        if writer.beating:
            end = self.clock() + 1.0        # the workers take their Attach within IDLE_WAIT
            while self.clock() < end:
                self.poll(0.1)

    def stop_children(self, timeout):
        """Producers first while the consumers keep draining, then the book
        manager, then the writer: each stage within ``timeout`` seconds."""
        workers = [c for c in self.children if c.role == "worker"]
        for child in workers:
            if child.state in (STARTING, RUNNING) and child.process.is_alive():
                child.change(STOPPING)
                child.process.terminate()
        self._wait(workers, timeout)
        for role in ("orderbook", "writer"):
            stage = [c for c in self.children if c.role == role]
            for child in stage:
                if child.state in (STARTING, RUNNING) and child.link is not None:
                    child.change(STOPPING)
                    child.link.send(messages.Stop())
            self._wait(stage, timeout)

    def _wait(self, children, timeout):
        """Until ``children`` have exited, reading their messages meanwhile;
        those still alive at the deadline are killed."""
        deadline = self.clock() + timeout
        while any(c.process is not None and c.process.is_alive() for c in children):
            if self.clock() >= deadline:
                break
            self.poll(0.05)
        for child in children:
            p = child.process
            if p is None:
                continue
            if p.is_alive():
                log.error("%s: did not stop within %.0f s; killing it", child.name, timeout)
                p.kill()
                p.join(5)
            if child.state != FATAL:
                child.change(EXITED)
                child.exitcode = p.exitcode
        self.poll(0)


def _default_limit(cfg):
    from .binance.endpoints import DEFAULT_WEIGHT_LIMIT
    return cfg.rest_weight_limit or DEFAULT_WEIGHT_LIMIT[cfg.market]
