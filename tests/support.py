"""Helpers shared by the tests: a WebSocket reader thread built on
websocket-client (what the recorder uses), condition waits with timeouts,
and the location of the shared real-data captures."""

import os
import threading
import time

import orjson
import pytest
import websocket

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
