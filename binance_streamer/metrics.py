"""Prometheus metrics and ``/health``, served by the manager (``metrics_port``).

Nothing here runs on a child's hot path. The children already report to the
manager every ``status_interval`` (the status in their Beat); the manager
hands every status snapshot it makes to :class:`Endpoint` (a reference
swapped under a lock), and each scrape turns the latest one into metric
families (:class:`Collector`). Two things are read at scrape time instead:
each process's CPU time and resident memory (psutil, by pid) and the REST
budget in shared memory.

The writer's share is :class:`WriteCounts`: plain counting as it writes
(rows and bytes per stream, gap-ledger rows by reason and action, and the
receive-to-disk latency of rows), reported in its status. Neither it nor
any child imports prometheus_client.

Counters count from the start of the process that reports them: a child that
restarts starts again from zero, which Prometheus's ``rate()`` and
``increase()`` take for a counter reset (``process_restarts_total`` says when).
"""

import bisect
import errno
import json
import logging
import socket
import threading
import time

from . import csvfiles, status

log = logging.getLogger(__name__)

PREFIX = "binance_streamer_"
C, G, H = "counter", "gauge", "histogram"
SYM_STREAM, CONN = ("symbol", "stream"), ("process", "connection")
PROC = ("process", "role")

# Every metric: name (without PREFIX) -> (type, labels, help). The README's
# list and the docs' alert rules and dashboard are checked against it.
METRICS = {
    "messages_received_total": (C, SYM_STREAM, "Events received from the exchange and handled by the worker"),
    "last_message_age_seconds": (G, SYM_STREAM, "Seconds since the stream's last event was received, from the "
                                                     "worker's last report (so up to status_interval too high)"),
    "backfilled_rows_total": (C, SYM_STREAM, "Rows fetched over REST to fill holes in the stream"),
    "rows_written_total": (C, SYM_STREAM, "CSV rows appended to the stream's files by the writer"),
    "bytes_written_total": (C, SYM_STREAM, "Bytes appended to the stream's files by the writer (headers included)"),
    "gaps_total": (C, SYM_STREAM + ("reason", "action"), "Gap-ledger rows written, by reason and action"),
    "receive_to_disk_seconds": (H, ("stream",), "Time from a row's local receive time to its write into its file "
                                                "(each batch of rows counted at its oldest row)"),
    "book_in_sync": (G, ("symbol",), "1 while the symbol's local order book is in sync, else 0"),
    "book_resyncs_total": (C, ("symbol",), "Resyncs of the symbol's order book"),
    "book_snapshots_total": (C, ("symbol",), "REST depth snapshots applied to the symbol's order book"),
    "connected": (G, CONN, "1 while the WebSocket connection is open, else 0"),
    "reconnects_total": (C, CONN, "Reconnects of the WebSocket connection"),
    "connection_failures_total": (C, CONN, "Failed attempts to open the WebSocket connection"),
    "handovers_total": (C, CONN, "Planned switches of the connection to a new socket without a hole"),
    "connection_lag_seconds": (G, CONN, "Receive time less the exchange's event time, at the last read"),
    "connection_lag_max_seconds": (G, CONN, "The largest lag over the last two status intervals"),
    "connection_unread_bytes": (G, CONN, "Bytes received by the kernel and not yet read"),
    "events_dropped_total": (C, ("process", "reason"),
                             "Frames a worker dropped: malformed, unknown, duplicates, errors"),
    "link_unacked_bytes": (G, ("process",), "Bytes a producer keeps until the writer acknowledges them "
                                            "(it stops reading at link_buffer_bytes)"),
    "link_unacked_batches": (G, ("process",), "Batches a producer keeps until the writer acknowledges them"),
    "book_link_pending_bytes": (G, ("process",), "Bytes a worker's link to the book manager has not sent yet"),
    "book_events_dropped_total": (C, ("process",), "Book events a worker dropped while the book manager "
                                                   "did not read"),
    "writer_pending_rows": (G, (), "Rows the writer holds that are not yet in their files"),
    "writer_open_files": (G, (), "Data files the writer holds open"),
    "writer_open_holes": (G, (), "Holes the writer is waiting to see backfilled"),
    "write_errors_total": (C, (), "Writes of data files that failed (the rows are kept and retried)"),
    "duplicates_dropped_total": (C, (), "Rows the writer dropped because their file already holds them"),
    "rest_weight_used_total": (C, (), "REST request weight spent by the whole daemon"),
    "rest_weight_used_minute": (G, (), "REST request weight used in the current minute"),
    "rest_weight_limit": (G, (), "REST request weight allowed per minute"),
    "rest_limited_total": (C, ("code",), "REST answers HTTP 429 (too many requests) and 418 (banned)"),
    "rest_paused_seconds": (G, (), "Seconds every REST call still waits after a 429 or 418 (Retry-After)"),
    "rest_requests_total": (C, ("process",), "REST requests sent by a worker"),
    "rest_failures_total": (C, ("process",), "REST requests of a worker that failed"),
    "process_cpu_seconds_total": (C, PROC, "CPU time (user and system) of the recorder's process"),
    "process_resident_memory_bytes": (G, PROC, "Resident memory of the recorder's process"),
    "process_restarts_total": (C, PROC, "Restarts of the process by the manager"),
    "process_running": (G, PROC, "1 while the process is RUNNING, else 0"),
    "process_heartbeat_age_seconds": (G, PROC, "Seconds since the process's last heartbeat"),
    "health": (G, ("state",), "1 for the health state /health answers with, 0 for the others"),
    "health_problems": (G, (), "Problems behind the health state"),
    "recorder_state": (G, ("state",), "1 for the recorder's state (STARTING, RUNNING, STOPPING, STOPPED)"),
    "status_age_seconds": (G, (), "Seconds since the manager made the status these metrics come from"),
    "logs_dropped_total": (C, (), "Log records of the children the manager could not queue"),
    "disk_free_bytes": (G, (), "Free bytes on the data directory's file system"),
    "collector_buffer_bytes": (G, ("process",), "role collector: bytes of messages NATS has not yet acknowledged"),
    "collector_published_total": (C, ("process",), "role collector: messages JetStream acknowledged"),
    "collector_publish_errors_total": (C, ("process",), "role collector: publishes that failed (sent again)"),
    "collector_dropped_frames_total": (C, ("process",), "role collector: frames dropped from a full buffer"),
    "sink_pending_messages": (G, ("process",), "role sink: messages the consumer has not yet delivered (lag)"),
    "sink_collector_message_age_seconds": (G, ("process", "collector"),
                                           "role sink: seconds since the collector's last message"),
    "sink_holes_filled_total": (C, ("process", "collector"),
                                "role sink: events the collector lacked and another collector supplied"),
}
HEALTH_STATES = (status.OK, status.DEGRADED, status.DOWN)     # always shown; any other state named too
HEALTHY = (status.OK, status.DEGRADED)                        # /health answers 200; anything else 503
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
DROPPED = ("malformed", "unknown", "duplicates", "errors")      # worker counts shown as events_dropped_total


def render_markdown():
    """The README's list of metrics, one row per metric."""
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for name, (kind, labels, doc) in METRICS.items():
        rows.append(f"| `{PREFIX}{name}` | {kind} | {', '.join(labels)} | {doc} |")
    return "\n".join(rows) + "\n"


# -- the writer's counts --------------------------------------------------------------------
class WriteCounts:
    """What the writer counts for the metrics. Per Rows it takes, the receive
    time of the batch (the older of its first and last row: two fields
    parsed); per write of a file, one bisect per Rows written. A batch's rows
    are counted at its oldest row, so the histogram errs high by at most the
    time one batch gathers (read_interval + batch_interval)."""

    def __init__(self, market):
        self.market = market
        self.totals = {}        # (symbol, stream) -> [rows, bytes] written
        self.gaps = {}          # (symbol, stream, reason, action) -> ledger rows
        self.latency = {}       # stream -> [[rows per bucket, the last beyond every bound], sum of seconds]
        self.pending = {}       # file key (symbol, stream, day) -> [(receive time us, rows)] not yet written
        self.columns = {}       # stream -> where its receive time is (receive_column)

    def arrived(self, key, lines):
        """``lines`` joined the pending lines of the file ``key``."""
        stream = key[1]
        where = self.columns.get(stream, False)
        if where is False:
            where = self.columns[stream] = receive_column(self.market, stream)
        if where is None:
            return
        try:
            recv_us = min(receive_time(lines[0], where), receive_time(lines[-1], where))
        except (ValueError, IndexError):
            return
        self.pending.setdefault(key, []).append((recv_us, len(lines)))

    def written(self, key, rows, size, now):
        """The pending rows of the file ``key`` are in it since ``now`` (epoch seconds)."""
        total = self.totals.get(key[:2])
        if total is None:
            total = self.totals[key[:2]] = [0, 0]
        total[0] += rows
        total[1] += size
        batches = self.pending.pop(key, None)
        if not batches:
            return
        hist = self.latency.get(key[1])
        if hist is None:
            hist = self.latency[key[1]] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        counts = hist[0]
        for recv_us, n in batches:
            seconds = max(0.0, now - recv_us / 1e6)
            counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += n
            hist[1] += seconds * n

    def gap(self, symbol, row):
        key = (symbol, row.get("stream", ""), row.get("reason", ""), row.get("action", ""))
        self.gaps[key] = self.gaps.get(key, 0) + 1

    def report(self):
        return {"written_total": {f"{s}/{st}": {"rows": r, "bytes": b} for (s, st), (r, b) in self.totals.items()},
                "gaps_total": [[*key, n] for key, n in self.gaps.items()],
                "disk_latency": {"le": list(LATENCY_BUCKETS),
                                 "streams": {st: {"counts": list(c), "sum": round(s, 6)}
                                             for st, (c, s) in self.latency.items()}}}


def receive_column(market, stream):
    """Where a row of ``stream`` holds its local receive time: -1 for the
    first field, else the number of fields after it; None: no such column."""
    if stream == "gaps":
        return None             # a ledger row's time is when the gap was noticed
    try:
        cols = csvfiles.columns(market, stream)
    except KeyError:
        return None
    name = "local_time_us" if "local_time_us" in cols else "response_time_us" if "response_time_us" in cols else None
    if name is None:
        return None
    i = cols.index(name)
    return -1 if i == 0 else len(cols) - 1 - i


def receive_time(line, where):
    return int(line[:line.index(",")] if where < 0 else line.rsplit(",", where + 1)[1])


# -- the manager's side: snapshot -> metric families -------------------------------------------
def verdict(snapshot, now, status_interval):
    """The health to answer with: the snapshot's own, or DOWN when there is
    no snapshot yet or the newest is too old to be believed (status.stale,
    as ``--daemon status`` judges the status file)."""
    if snapshot is None:
        return {"state": status.DOWN, "problems": ["no status yet: the recorder is starting"]}
    health = snapshot.get("health") or {}
    state, problems = health.get("state", status.DOWN), list(health.get("problems", ()))
    old = status.stale(snapshot, now, snapshot.get("status_interval") or status_interval)
    if old is not None:
        return {"state": status.DOWN, "problems": [old] + problems}
    return {"state": state, "problems": problems}


def health_answer(snapshot, now, status_interval):
    """``(HTTP status, JSON body)`` of ``/health``."""
    v = verdict(snapshot, now, status_interval)
    body = {**v, "recorder": snapshot.get("state") if snapshot else None,
            "status_age_s": round(now - snapshot.get("updated", now), 2) if snapshot else None}
    return (200 if v["state"] in HEALTHY else 503), body


class Families:
    """Metric families made on first use from :data:`METRICS`."""

    def __init__(self):
        from prometheus_client import core
        self.kinds = {C: core.CounterMetricFamily, G: core.GaugeMetricFamily, H: core.HistogramMetricFamily}
        self.made = {}

    def _family(self, name):
        fam = self.made.get(name)
        if fam is None:
            kind, labels, doc = METRICS[name]
            fam = self.made[name] = self.kinds[kind](PREFIX + name, doc, labels=list(labels))
        return fam

    def add(self, name, value, *labels):
        if value is not None:
            self._family(name).add_metric([str(v) for v in labels], float(value))

    def histogram(self, name, labels, bounds, counts, total):
        running, buckets = 0, []
        for bound, n in zip([*map(str, bounds), "+Inf"], counts):
            running += n
            buckets.append((bound, running))
        self._family(name).add_metric(list(labels), buckets, total)


class ProcessUsage:
    """CPU seconds and resident bytes of a process by pid (psutil)."""

    def __init__(self):
        self.known = {}

    def __call__(self, pid):
        import psutil
        if not pid:
            return None
        try:
            p = self.known.get(pid)
            if p is None:
                p = self.known[pid] = psutil.Process(pid)
            with p.oneshot():
                cpu = p.cpu_times()
                return round(cpu.user + cpu.system, 3), p.memory_info().rss
        except psutil.Error:
            self.known.pop(pid, None)
            return None

    def keep(self, pids):
        for pid in set(self.known) - set(pids):
            del self.known[pid]


class Collector:
    """A prometheus_client collector: ``latest()`` gives the newest snapshot
    (or None), turned into families at each scrape."""

    def __init__(self, latest, budget=None, status_interval=2.0, usage=None, clock=time.time):
        self.latest, self.budget, self.status_interval, self.clock = latest, budget, status_interval, clock
        self.usage = usage or ProcessUsage()
        self.lock = threading.Lock()      # scrapes may come in parallel; ProcessUsage is not shared

    def describe(self):
        return []           # nothing collected at registration

    def collect(self):
        snapshot = self.latest()
        if snapshot is None:
            return []
        with self.lock:
            fam, now = Families(), self.clock()
            alive = _processes(fam, snapshot, self.usage)
            for name, report in sorted((snapshot.get("children") or {}).items()):
                role, up = alive.get(name, ("", False))
                if role == "worker":
                    _worker(fam, name, report, up, now)
                elif role == "writer":
                    _writer(fam, report)
                elif role == "orderbook":
                    _books(fam, report, up)
            _rest(fam, snapshot, self.budget)
            _recorder(fam, snapshot, now, self.status_interval)
            for name in METRICS:        # every family, even before its first sample (a gap, a 429)
                fam._family(name)
            return list(fam.made.values())


def _processes(fam, snapshot, usage):
    """Per process; returns ``{name: (role, alive)}`` (the manager names a
    pid only while the process lives: STARTING, RUNNING or STOPPING)."""
    alive = {}
    everyone = [{"name": "manager", "role": "manager", "pid": snapshot.get("pid")}]
    for p in snapshot.get("processes", ()):
        name, role = p["name"], p.get("role", "")
        alive[name] = (role, p.get("pid") is not None)
        fam.add("process_restarts_total", p.get("restarts"), name, role)
        fam.add("process_running", int(p.get("state") == "RUNNING"), name, role)
        fam.add("process_heartbeat_age_seconds", p.get("heartbeat_age_s"), name, role)
        everyone.append(p)
    for p in everyone:
        used = usage(p.get("pid"))
        if used is not None:
            fam.add("process_cpu_seconds_total", used[0], p["name"], p.get("role", ""))
            fam.add("process_resident_memory_bytes", used[1], p["name"], p.get("role", ""))
    if hasattr(usage, "keep"):
        usage.keep([p.get("pid") for p in everyone])
    return alive


def _worker(fam, name, r, up, now):
    for key, s in r.get("streams", {}).items():
        symbol, stream = key.split("/", 1)
        fam.add("messages_received_total", s.get("messages"), symbol, stream)
        fam.add("backfilled_rows_total", s.get("backfilled"), symbol, stream)
        if s.get("last_recv_us"):
            fam.add("last_message_age_seconds", round(max(0.0, now - s["last_recv_us"] / 1e6), 3), symbol, stream)
    for c in r.get("connections", ()):
        conn = c.get("name") or c.get("group") or "?"
        fam.add("connected", int(up and bool(c.get("connected"))), name, conn)
        for metric, key in (("reconnects_total", "reconnects"), ("connection_failures_total", "failures"),
                            ("handovers_total", "handovers")):
            fam.add(metric, c.get(key), name, conn)
        if up:
            fam.add("connection_lag_seconds", c.get("lag_s"), name, conn)
            fam.add("connection_lag_max_seconds", c.get("lag_max_s"), name, conn)
            fam.add("connection_unread_bytes", c.get("unread_bytes"), name, conn)
    counts = r.get("counts", {})
    for reason in DROPPED:
        fam.add("events_dropped_total", counts.get(reason), name, reason)
    link = r.get("link", {})
    fam.add("book_events_dropped_total", link.get("book_events_dropped"), name)
    if up:
        fam.add("link_unacked_bytes", link.get("unacked_bytes"), name)
        fam.add("link_unacked_batches", link.get("unacked_batches"), name)
        fam.add("book_link_pending_bytes", link.get("book_pending_bytes"), name)
    fam.add("rest_requests_total", r.get("rest_requests"), name)
    fam.add("rest_failures_total", r.get("rest_failures"), name)
    pub = r.get("publisher")
    if pub is not None:
        fam.add("collector_buffer_bytes", pub.get("buffer_bytes"), name)
        fam.add("collector_published_total", pub.get("published"), name)
        fam.add("collector_publish_errors_total", pub.get("publish_errors"), name)
        fam.add("collector_dropped_frames_total", pub.get("dropped_frames"), name)
    sink = r.get("sink")
    if sink is not None:
        fam.add("sink_pending_messages", sink.get("num_pending"), name)
        for who, c in sink.get("collectors", {}).items():
            fam.add("sink_collector_message_age_seconds", c.get("last_message_age_s"), name, who)
            fam.add("sink_holes_filled_total", c.get("holes_filled_by_others"), name, who)


def _writer(fam, r):
    for key, w in r.get("written_total", {}).items():
        symbol, stream = key.split("/", 1)
        fam.add("rows_written_total", w.get("rows"), symbol, stream)
        fam.add("bytes_written_total", w.get("bytes"), symbol, stream)
    for symbol, stream, reason, action, n in r.get("gaps_total", ()):
        fam.add("gaps_total", n, symbol, stream, reason, action)
    latency = r.get("disk_latency") or {}
    for stream, h in sorted(latency.get("streams", {}).items()):
        fam.histogram("receive_to_disk_seconds", (stream,), latency["le"], h["counts"], h["sum"])
    for metric, key in (("writer_pending_rows", "pending_rows"), ("writer_open_files", "open_files"),
                        ("writer_open_holes", "open_holes"), ("write_errors_total", "write_errors"),
                        ("duplicates_dropped_total", "duplicates_dropped")):
        fam.add(metric, r.get(key))


def _books(fam, r, up):
    for symbol, b in r.get("books", {}).items():
        fam.add("book_in_sync", int(up and b.get("state") == "synced"), symbol)
        fam.add("book_resyncs_total", b.get("resyncs"), symbol)
        fam.add("book_snapshots_total", b.get("snapshots"), symbol)
    link = r.get("link", {})
    if up:
        fam.add("link_unacked_bytes", link.get("unacked_bytes"), "orderbook")
        fam.add("link_unacked_batches", link.get("unacked_batches"), "orderbook")


def _rest(fam, snapshot, budget):
    if budget is None:
        fam.add("rest_weight_used_total", snapshot.get("rest_weight_spent"))
        return
    u = budget.usage()
    fam.add("rest_weight_used_total", u["spent"])
    fam.add("rest_weight_used_minute", u["used_minute"])
    fam.add("rest_weight_limit", u["limit"])
    for code in ("429", "418"):
        fam.add("rest_limited_total", u[code], code)
    fam.add("rest_paused_seconds", round(budget.paused_for(), 1))


def _recorder(fam, snapshot, now, status_interval):
    v = verdict(snapshot, now, status_interval)
    for state in sorted({*HEALTH_STATES, v["state"]}):
        fam.add("health", int(state == v["state"]), state)
    fam.add("health_problems", len(v["problems"]))
    fam.add("recorder_state", 1, snapshot.get("state", ""))
    fam.add("status_age_seconds", round(max(0.0, now - snapshot.get("updated", now)), 3))
    fam.add("logs_dropped_total", snapshot.get("logs_dropped"))
    fam.add("disk_free_bytes", snapshot.get("disk_free_bytes"))


# -- the HTTP endpoint ---------------------------------------------------------------------------
class Endpoint:
    """``/metrics`` and ``/health`` on ``metrics_host:metrics_port``, from
    prometheus_client's threading WSGI server in a thread of the manager."""

    def __init__(self, cfg, budget=None, clock=time.time):
        from prometheus_client import CollectorRegistry, make_wsgi_app
        self.cfg, self.clock = cfg, clock
        self.lock = threading.Lock()
        self.snapshot = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(self.latest, budget, cfg.status_interval, clock=clock))
        self.metrics_app = make_wsgi_app(self.registry)
        self.httpd = self.thread = None

    def update(self, snapshot):
        """The manager's newest snapshot (its loop calls this; a scrape reads
        it). The children's reports are copied now: the manager's loop
        changes that dict in place."""
        snapshot = {**snapshot, "children": dict(snapshot.get("children") or {})}
        with self.lock:
            self.snapshot = snapshot

    def latest(self):
        with self.lock:
            return self.snapshot

    def start(self):
        """Listen and serve in a thread; False (after one ERROR line) if the
        address cannot be had: the recorder goes on without the endpoint."""
        from wsgiref.simple_server import make_server
        host, port = self.cfg.metrics_host, self.cfg.metrics_port
        try:
            self.httpd = make_server(host, port, self.app, _server_class(host, port),
                                     handler_class=_quiet_handler())
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); recording goes on without /metrics and /health; %s",
                      host, port, exc.strerror or exc, _what_to_do(exc))
            return False
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()
        log.info("metrics: serving http://%s:%d/metrics and /health", _url_host(host), self.port)
        return True

    @property
    def port(self):
        return self.httpd.server_address[1] if self.httpd is not None else None

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(5)
            self.httpd = None

    def app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/health":
            code, body = health_answer(self.latest(), self.clock(), self.cfg.status_interval)
            data = json.dumps(body).encode()
            start_response("200 OK" if code == 200 else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]
        if path in ("/", "/metrics"):
            return self.metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /health\n"]


def _server_class(host, port):
    """prometheus_client's threading WSGI server, for the address family of ``host``."""
    from prometheus_client.exposition import ThreadingWSGIServer
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})


def check_address(cfg):
    """At start, before anything runs: can the endpoint listen where it is
    asked to? A one-line reason (for a ConfigError) when it cannot, else None.
    (A port taken later, between this check and the listen, is logged and the
    recorder runs without the endpoint.)"""
    host, port = cfg.metrics_host, cfg.metrics_port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return f"metrics_host {host!r} cannot be used ({exc.strerror or exc}); {_what_to_do(exc)}"
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        return f"metrics: cannot listen on {_url_host(host)}:{port} ({exc.strerror or exc}); {_what_to_do(exc)}"
    finally:
        probe.close()
    return None


def _what_to_do(exc):
    if exc.errno == errno.EADDRINUSE:
        return "free the port or set another metrics_port"
    if exc.errno == errno.EACCES:
        return "set a metrics_port above 1023 (or run with the right to bind it)"
    return "set metrics_host to an address of this machine, e.g. 127.0.0.1"


def _url_host(host):
    return f"[{host}]" if ":" in host else host


def _quiet_handler():
    from wsgiref.simple_server import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass            # no line per scrape
    return Quiet
