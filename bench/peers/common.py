"""What both peer clients share (they run under their own Python, with
only the peer library and orjson installed): one CSV line per event, the
counts, and the stop rule. Arguments come as one JSON object in argv[1]."""

import json
import os
import sys
import threading
import time

KINDS = ("aggTrade", "bookTicker", "depth", "kline")


def kind_of(stream):
    kind = stream.split("@", 1)[1]
    return "depth" if kind.startswith("depth") else "kline" if kind.startswith("kline") else kind


class Sink:
    """One CSV file per stream kind; counts events; knows when to stop."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(KINDS, 0)
        self.files = {k: open(os.path.join(cfg["out"], f"{k}.csv"), "w", buffering=1 << 20) for k in KINDS}
        self.first = self.last = None

    def write(self, kind, line, count=True):
        """One CSV line; ``count``: it is also one message received (a
        client that counts frames elsewhere passes False)."""
        with self.lock:
            self.files[kind].write(line)
        if count:
            self.received(kind)

    def received(self, kind):
        now = time.time()
        with self.lock:
            self.counts[kind] += 1
            self.last = now
            if self.first is None:
                self.first = now

    def wait(self):
        """Until every expected event came, or nothing came for ``quiet``
        seconds after the first, or ``timeout``."""
        expected, deadline = self.cfg["expected"], time.time() + self.cfg["timeout"]
        while time.time() < deadline:
            time.sleep(0.05)
            with self.lock:
                done = all(self.counts.get(k, 0) >= n for k, n in expected.items())
                quiet = self.last is not None and time.time() - self.last > self.cfg["quiet"]
            if done or quiet:
                break

    def report(self):
        for f in self.files.values():
            f.close()
        t = os.times()
        print(json.dumps({"counts": self.counts, "first": self.first, "last": self.last,
                          "cpu": t.user + t.system, "time": time.time()}), flush=True)


def config():
    return json.loads(sys.argv[1])


def ready():
    print("ready", flush=True)
