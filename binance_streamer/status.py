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
