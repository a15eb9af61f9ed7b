"""The status file: atomic JSON written by the manager, read by
``--daemon status`` and by tests."""

import json
import logging
import os
import shutil
import tempfile
import threading
import time

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
            data["disk_free_bytes"] = shutil.disk_usage(self.data_dir).free
        except OSError:
            data["disk_free_bytes"] = None
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


def health(processes, children, max_lag):
    """``{"state": "OK" | "DEGRADED", "problems": [...]}`` from the manager's
    view of its processes and the children's last reports: a process not
    RUNNING, a connection down, or a connection behind by more than
    ``max_lag`` seconds makes the recorder DEGRADED."""
    problems = [f"{p['name']} is {p['state']}" for p in processes if p.get("state") != "RUNNING"]
    problems += [f"{p['name']} has not shown a heartbeat for {p['heartbeat_age_s']:.0f} s" for p in processes
                 if p.get("state") == "RUNNING" and (p.get("heartbeat_age_s") or 0) > 5]
    for name, child in sorted(children.items()):
        for c in child.get("connections", ()):
            label = f"{name} {c.get('name') or c.get('group')}"
            if not c.get("connected"):
                problems.append(f"{label} is not connected")
            worst = max((v for v in (c.get("lag_s"), c.get("lag_max_s")) if v is not None), default=None)
            if worst is not None and worst > max_lag:
                problems.append(f"{label} is {worst:.1f} s behind the exchange (max_lag {max_lag:g} s)")
    return {"state": "DEGRADED" if problems else "OK", "problems": problems}
