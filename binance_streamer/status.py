"""The status file: atomic JSON written by the manager, read by
``--daemon status`` and by tests."""

import json
import os
import tempfile

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
    for name, child in sorted(children.items()):
        for c in child.get("connections", ()):
            label = f"{name} {c.get('name') or c.get('group')}"
            if not c.get("connected"):
                problems.append(f"{label} is not connected")
            worst = max((v for v in (c.get("lag_s"), c.get("lag_max_s")) if v is not None), default=None)
            if worst is not None and worst > max_lag:
                problems.append(f"{label} is {worst:.1f} s behind the exchange (max_lag {max_lag:g} s)")
    return {"state": "DEGRADED" if problems else "OK", "problems": problems}
