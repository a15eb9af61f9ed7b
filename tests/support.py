"""Helpers shared by the tests: a WebSocket reader thread built on
websocket-client (what the recorder uses), condition waits with timeouts,
and the location of the shared real-data captures."""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pytest
import websocket
import yaml

from binance_streamer.simulator import audit

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("BINANCE_STREAMER_SHARED",
                        os.path.normpath(os.path.join(HERE, "..", "..", "shared")))
REALDATA = os.path.join(SHARED, "realdata")
PAYLOADS = os.path.join(SHARED, "binance", "payload_examples.json")


def need(path):
    """Skip the calling test cleanly when shared reference material is absent."""
    if not os.path.exists(path):
        pytest.skip(f"reference material not present: {path}")
    return path


def wait_for(predicate, timeout=10.0, what="condition", interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


class WsReader:
    """Reads one WebSocket in a thread; keeps text frames and control frames."""

    def __init__(self, url, timeout=10.0):
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.frames = []          # (monotonic receive time, text)
        self.control = []         # (monotonic time, opcode, payload bytes)
        self.closed = threading.Event()
        self.close_code = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=True)
                now = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self.frames.append((now, data.decode()))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    return
                else:
                    self.control.append((now, opcode, data))
        except (websocket.WebSocketException, OSError):
            return
        finally:
            self.closed.set()

    def texts(self):
        return [t for _, t in self.frames]

    def messages(self):
        """Parsed frames; malformed ones are returned as None."""
        out = []
        for text in self.texts():
            try:
                out.append(orjson.loads(text))
            except orjson.JSONDecodeError:
                out.append(None)
        return out

    def data(self, suffix):
        """Payloads of combined-stream frames whose stream ends with ``suffix``."""
        return [m["data"] for m in self.messages()
                if isinstance(m, dict) and m.get("stream", "").endswith(suffix)]

    def wait(self, predicate, timeout=10.0, what="frames"):
        return wait_for(lambda: predicate(self), timeout, what)

    def send(self, obj):
        self.ws.send(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    def close(self):
        try:
            self.ws.close(timeout=2)
        except (websocket.WebSocketException, OSError):
            pass
        self.closed.wait(5)


# -- the recorder as a user runs it ---------------------------------------------------


class Files(audit.Files):
    """The CSV files under ``<dir>/data/<market>``."""

    def __init__(self, directory, market):
        super().__init__(os.path.join(str(directory), "data"), market)
        self.dir = str(directory)

    def files(self):
        return sorted(glob.glob(os.path.join(self.dir, "data", "**", "*.csv"), recursive=True))


class Recorder(Files):
    """``python -m binance_streamer`` in a subprocess, pointed at a simulator."""

    def __init__(self, tmp_path, sim, symbols, **settings):
        super().__init__(tmp_path, sim.cfg.market)
        cfg = {"market": self.market, "symbols": list(symbols), "ws_url": f"ws://127.0.0.1:{sim.port}",
               "rest_url": sim.rest_url, "data_dir": "data", "log_dir": "logs", "run_dir": "run",
               "flush_interval": 0.2, "status_interval": 0.5, "restart_min_delay": 0.2,
               "reconnect_min_delay": 0.1, "reconnect_max_delay": 1.0}
        cfg.update(settings)
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        self.proc = None

    def start(self, *extra):
        self.stderr = open(os.path.join(self.dir, "stderr.txt"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", self.config, *extra],
                                     cwd=self.dir, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     start_new_session=True)
        self.wait_status(lambda s: s["state"] == "RUNNING", 30, "the recorder to run")
        return self

    def status(self):
        try:
            with open(os.path.join(self.dir, "run", "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_status(self, predicate, timeout, what):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"the recorder exited ({self.proc.returncode}): {self.log_tail()}")
            s = self.status()
            return s is not None and predicate(s)
        return wait_for(check, timeout, what, interval=0.1)

    def stop(self, sig=signal.SIGTERM, timeout=90):
        """Signal the recorder and return its exit code; kill it (and fail) if it hangs."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the recorder did not stop within {timeout} s: {self.log_tail()}") from None
        finally:
            self.stderr.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "stderr.txt")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def pid_of(self, name):
        s = self.status()
        return next(p["pid"] for p in s["processes"] if p["name"] == name)
