"""The status file: atomic JSON written by the manager, read by
``--daemon status`` and by tests."""

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time

from .streams import lookup

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
PID_FILE = "binance-streamer.pid"


def status_path(run_dir):
    return os.path.join(run_dir, STATUS_FILE)


def write_status(run_dir, data):
    """Write ``data`` so that readers never see half a file."""
    os.makedirs(run_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
        os.replace(tmp, status_path(run_dir))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class StatusWriter:
    """Writes the newest status in a thread of its own, so that a full, slow
    or hung disk never stops the manager's loop: a write that fails is
    logged (once a minute) and the next status tries again."""

    def __init__(self, run_dir, data_dir):
        self.run_dir, self.data_dir = run_dir, data_dir
        self.cond = threading.Condition()
        self.latest = None
        self.written = 0           # snapshots written
        self.failures = 0
        self._logged = 0.0
        self.closing = False
        self.disk_free = None      # bytes free on data_dir's disk, as last measured here
        self.thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self.thread.start()

    def submit(self, data):
        with self.cond:
            self.latest = data
            self.cond.notify()

    def _run(self):
        while True:
            with self.cond:
                while self.latest is None and not self.closing:
                    self.cond.wait()
                data, self.latest = self.latest, None
                if data is None:
                    return
            self._write(data)

    def _write(self, data):
        try:
            self.disk_free = shutil.disk_usage(self.data_dir).free
        except OSError:
            self.disk_free = None
        try:
            write_status(self.run_dir, data)
            self.written += 1
        except OSError as exc:
            self.failures += 1
            if time.monotonic() - self._logged > 60:
                self._logged = time.monotonic()
                log.error("status: cannot write %s (%s); the recorder goes on and tries again",
                          status_path(self.run_dir), exc.strerror or exc)

    def close(self, timeout):
        """Write what was submitted last, waiting at most ``timeout`` seconds."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self.thread.join(timeout)


def read_status(run_dir):
    """The last status written, or None when there is none."""
    try:
        with open(status_path(run_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


OK, DEGRADED, DOWN = "OK", "DEGRADED", "DOWN"
CHECK_CODES = {OK: 0, DEGRADED: 1, DOWN: 2}       # --daemon status --check, as monitoring plugins expect
# A stream is silent when nothing came for this many times its usual gap
# between messages (and at least SILENT_FLOOR_S seconds); judged once it
# has shown SILENT_MIN_MESSAGES messages.
SILENT_FACTOR, SILENT_FLOOR_S, SILENT_MIN_MESSAGES = 20, 30.0, 20
WRITER_BEHIND_SHARE = 0.5   # of link_buffer_bytes not yet acknowledged by the writer
COLLECTOR_SILENT_S = 30.0   # a sink heard nothing from a collector for this long
BUFFER_FULL_SHARE = 0.9     # of collector_buffer_bytes: the oldest frames are about to be dropped


def health(snap, now, max_lag, min_free_disk, link_buffer_bytes):
    """The recorder's verdict from its status snapshot: ``{"state": OK |
    DEGRADED | DOWN, "problems": [...]}``.

    DOWN: nothing is being recorded (no connection up, the writer not
    running, the disk full). DEGRADED: something is recorded, but not all of
    it as it should be: a process restarting or hung, a connection down or
    behind, a stream silent for much longer than its usual gap, a book out
    of sync, REST paused by a 429/418, the disk below ``min_free_disk`` (or
    the writer still shedding rows after it), the writer behind. A sink has no
    exchange connections: DOWN when NATS is unreachable, DEGRADED when its
    consumer is more than ``max_lag`` behind, a collector is silent (not
    one that stopped cleanly), a collector id is used by two processes at
    once, or no collector publishes one of its symbols. A
    collector: DEGRADED while NATS does not take its messages, DOWN once its
    buffer is (nearly) full."""
    down, degraded = [], []
    processes, children = snap.get("processes", []), snap.get("children", {})
    for p in processes:
        if p.get("state") != "RUNNING":
            where = down if p.get("role") == "writer" and p.get("state") == "FATAL" else degraded
            where.append(f"{p['name']} is {p['state']}")
        elif (p.get("heartbeat_age_s") or 0) > 5:
            degraded.append(f"{p['name']} has not shown a heartbeat for {p['heartbeat_age_s']:.0f} s")
    conns = [(name, c) for name, child in sorted(children.items()) for c in child.get("connections", ())]
    workers = [p for p in processes if p.get("role") == "worker"]
    if workers and snap.get("role") != "sink" and not any(c.get("connected") for _, c in conns):
        down.append("no connection to the exchange is up")
    _nats(children, max_lag, down, degraded)
    for name, c in conns:
        label = f"{name} {c.get('name') or c.get('group')}"
        if not c.get("connected"):
            degraded.append(f"{label} is not connected ({c.get('failures', 0)} failed attempts)")
        worst = max((v for v in (c.get("lag_s"), c.get("lag_max_s")) if v is not None), default=None)
        if worst is not None and worst > max_lag:
            degraded.append(f"{label} is {worst:.1f} s behind the exchange (max_lag {max_lag:g} s)")
    degraded += _silent_streams(children, now)
    book = children.get("orderbook", {})
    for symbol, b in sorted(book.get("books", {}).items()):
        if b.get("state") != "synced":
            degraded.append(f"book {symbol} is not in sync ({b.get('state')})")
    if snap.get("rest_paused_s"):       # the budget is daemon-wide: one pause for every process
        degraded.append(f"REST paused for {snap['rest_paused_s']:.0f} s more by the exchange (HTTP 429/418)")
    for name, child in sorted(children.items()):
        unacked = child.get("link", {}).get("unacked_bytes") or 0
        if unacked > WRITER_BEHIND_SHARE * link_buffer_bytes:
            degraded.append(f"writer behind: {name} holds {unacked / 2**20:.1f} MB it has not acknowledged")
    free = snap.get("disk_free_bytes")
    if free is not None and free < 2**20:
        down.append(f"the disk of data_dir is full ({free} bytes free)")
    elif free is not None and free < min_free_disk:
        degraded.append(f"the disk of data_dir has {free / 2**30:.2f} GiB free, below min_free_disk "
                        f"({min_free_disk / 2**30:g} GiB)")
    if children.get("writer", {}).get("disk_floor") == "below":
        degraded.append("depth, depthSnapshot and orderbook rows are not written since the disk went below "
                        "min_free_disk (disk_floor_action shed; written again at 10% above it)")
    state = DOWN if down else DEGRADED if degraded else OK
    return {"state": state, "problems": down + degraded}


def _nats(children, max_lag, down, degraded):
    """The roles past one machine: a sink's health is its NATS consumer's
    (DOWN when no worker reaches NATS); a collector's, besides its
    connections, whether NATS takes its messages."""
    sinks = {name: child["sink"] for name, child in sorted(children.items()) if "sink" in child}
    if sinks and not any(s.get("nats_connected") for s in sinks.values()):
        outage = not all(s.get("nats_config_error") for s in sinks.values())
        down.append(("NATS is unreachable (" if outage else "NATS is not usable (") + "; ".join(
            f"{name}: {s.get('last_error') or 'not connected yet'}" for name, s in sinks.items()) + ")")
    for name, s in sinks.items():
        if not s.get("nats_connected") and len(sinks) > 1:
            degraded.append(f"{name}: NATS is unreachable ({s.get('last_error') or 'not connected yet'})")
        if (s.get("lag_s") or 0) > max_lag:
            degraded.append(f"{name}: consumer {s.get('consumer')} is {s['lag_s']:.0f} s behind NATS "
                            f"({s.get('num_pending')} messages pending; max_lag {max_lag:g} s)")
        for who, c in sorted(s.get("collectors", {}).items()):
            if c.get("state") == "DUPLICATE":
                degraded.append(f"{name}: collector id {who} is used by two processes at once "
                                f"({' and '.join(c.get('duplicate') or ['?'])}); give each its own collector_id")
            elif c.get("state") != "stopped" and (c.get("last_message_age_s") or 0) > COLLECTOR_SILENT_S:
                degraded.append(f"{name}: collector {who} silent for {c['last_message_age_s']:.0f} s")
        for symbol, age in sorted((s.get("unpublished_symbols") or {}).items()):
            degraded.append(f"{name}: no collector publishes {symbol} (nothing for {age:.0f} s)")
    for name, child in sorted(children.items()):
        p = child.get("publisher")
        if p is None:
            continue
        limit, held = p.get("buffer_limit_bytes"), p.get("buffer_bytes") or 0
        share = f"{held / 2**20:.1f} MB" + (f", {100 * held / limit:.0f}% of collector_buffer_bytes" if limit else "")
        why = p.get("last_error") or "no acknowledgement yet"
        if limit and held >= BUFFER_FULL_SHARE * limit:
            down.append(f"{name}: NATS does not take its messages ({why}) and its buffer is full ({share}): "
                        "the oldest frames are dropped")
        elif not p.get("nats_connected") and p.get("buffer_messages"):
            degraded.append(f"{name}: NATS does not take its messages ({why}); {p['buffer_messages']} messages "
                            f"({share}) wait")


def health_news(health, before):
    """``(text, problems)``: what the summary line says of ``health``'s
    problems: each named once, when it appears (``before``: the problems
    named so far); a problem that persists is not repeated every interval
    (its figures may change: they are not compared)."""
    problems = tuple(re.sub(r"\d+(\.\d+)?", "#", p) for p in health.get("problems") or ())
    new = [shown for p, shown in zip(problems, health.get("problems") or ()) if p not in before]
    if not problems:
        return "", problems
    if not new:
        return f" ({len(problems)} problem{'s' if len(problems) > 1 else ''} as reported before)", problems
    old = len(problems) - len(new)
    return f" ({'; '.join(new[:3])}{f'; and {old} as reported before' if old else ''})", problems


def _silent_streams(children, now):
    out = []
    for name, child in sorted(children.items()):
        for key, s in sorted(child.get("streams", {}).items()):
            gap, last = s.get("usual_gap_s"), s.get("last_recv_us")
            if gap is None or not last or _quiet(key):
                continue
            silent = now - last / 1e6
            if silent > max(SILENT_FLOOR_S, SILENT_FACTOR * gap):
                out.append(f"{key} silent for {silent:.0f} s (usually a message every {gap:.2g} s)")
    return out


def _quiet(key):
    """Is ``SYMBOL/stream`` a stream whose silence means nothing (forceOrder: no liquidation)?"""
    kind = lookup(key.partition("/")[2])
    return kind is not None and kind.quiet


def usual_gap(first, latest):
    """Mean seconds between messages from two ``(time, messages)`` points, or
    None before SILENT_MIN_MESSAGES messages."""
    (t0, n0), (t1, n1) = first, latest
    if n1 - n0 < SILENT_MIN_MESSAGES or t1 <= t0:
        return None
    return round((t1 - t0) / (n1 - n0), 3)


def stale(snap, now, status_interval):
    """Why the status file is too old to be believed, or None: a manager that
    writes no status is hung (or its disk is)."""
    age = now - (snap.get("updated") or 0)
    if age > 3 * status_interval + 10:
        return f"the status file was last updated {age:.0f} s ago: the manager is hung or cannot write it"
    return None
