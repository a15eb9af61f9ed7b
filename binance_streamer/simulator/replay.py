"""Replay of a real captured Binance session (cryptofeed's capture formats,
described in ../shared/realdata/README.md).

Frames are sent byte for byte as captured, in captured order, at the
captured pace divided by ``speed`` (0: as fast as possible). REST ``depth``
is answered from the book rebuilt from the capture's first snapshot plus the
diffs replayed so far, so a client that syncs through the simulator sees the
same book Binance had."""

import os
import re
from urllib.parse import parse_qs, urlparse

import orjson

from ..book import APPLIED, GAP, DepthSync
from .klines import interval_ms


def capture_files(path):
    """The files of one capture: ``NAME.ws.C.N`` pairs with ``NAME.http.*``."""
    folder, name = os.path.split(os.path.abspath(path))
    m = re.match(r"^(.*)\.(ws|http)\.\d+\.\d+$", name)
    if not m:
        return [path]
    siblings = sorted(f for f in os.listdir(folder)
                      if re.match(re.escape(m.group(1)) + r"\.(ws|http)\.\d+\.\d+$", f))
    return [os.path.join(folder, f) for f in siblings]


def parse_capture(paths):
    """``(ws urls, [(ts, 'ws', text bytes)], [(ts, 'http', url, body bytes)])``."""
    urls, frames, snapshots = [], [], []
    for path in paths:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.rstrip(b"\r\n")
                if not line or line.startswith(b"configuration:"):
                    continue
                if line.startswith(b"wss://"):
                    urls.append(line.split(b" <-> ")[0].decode())
                elif line.startswith(b"http"):
                    head, _, body = line.partition(b": ")
                    url, _, ts = head.decode().partition(" -> ")
                    snapshots.append((float(ts), url, body))
                else:
                    ts, _, text = line.partition(b": ")
                    frames.append((float(ts), text))
    frames.sort(key=lambda r: r[0])
    snapshots.sort(key=lambda r: r[0])
    return urls, frames, snapshots


class ReplaySymbol:
    """REST answers for one replayed symbol."""

    def __init__(self, market, symbol, snapshots):
        self.market = market
        self.symbol = symbol
        self.snapshots = snapshots      # [(lastUpdateId, bids, asks)] in capture order
        self.sync = DepthSync(market)
        self.agg_trades = []
        self.closed_klines = {}
        if snapshots:
            self.sync.on_snapshot(*snapshots[0])

    def feed(self, key, data):
        if key.startswith("depth") and not key[5:6].isdigit() and "U" in data:
            outcome = self.sync.on_diff(data["U"], data["u"], data.get("pu"), data["b"], data["a"])
            if outcome == GAP:
                later = [s for s in self.snapshots if s[0] >= data["U"]]
                if later:
                    self.sync.on_snapshot(*later[0])
            return outcome == APPLIED
        if key == "aggTrade":
            row = {k: data[k] for k in ("a", "p", "q", "f", "l", "T", "m") if k in data}
            if self.market == "spot":
                row["M"] = data.get("M", True)
            self.agg_trades.append(row)
        elif key.startswith("kline_") and data["k"].get("x"):
            k = data["k"]
            self.closed_klines.setdefault(k["i"], {})[k["t"]] = [
                k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"],
                k["V"], k["Q"], "0"]
        return False

    def snapshot(self, limit):
        if not self.sync.synced:
            return self.snapshots[-1][0], [], []
        bids, asks = self.sync.book.top(limit)
        return self.sync.book.update_id, [list(x) for x in bids], [list(x) for x in asks]

    def book_at(self, update_id=None):
        book = self.sync.book
        if update_id is not None and update_id != book.update_id:
            raise LookupError("a replay keeps only its current book")
        bids, asks = book.top(len(book.bids) + len(book.asks))
        return book.update_id, [list(x) for x in bids], [list(x) for x in asks]

    def agg_trades_rest(self, from_id, start_ms, end_ms, limit):
        rows = self.agg_trades
        if from_id is not None:
            rows = [r for r in rows if r["a"] >= from_id]
        if start_ms is not None:
            rows = [r for r in rows if r["T"] >= start_ms]
        if end_ms is not None:
            rows = [r for r in rows if r["T"] <= end_ms]
        return rows[:limit] if from_id is not None or start_ms is not None else rows[-limit:]

    def klines(self, interval, start_ms, end_ms, limit, now_ms):
        interval_ms(interval)
        rows = sorted(self.closed_klines.get(interval, {}).values())
        rows = [r for r in rows if (start_ms is None or r[0] >= start_ms) and (end_ms is None or r[0] <= end_ms)]
        return rows[:limit]


class Replay:
    def __init__(self, paths, speed=1.0, seconds=None):
        urls, frames, http = parse_capture(paths)
        if not frames:
            raise ValueError(f"no WebSocket frames found in {paths[0]}")
        if seconds is not None:           # only the capture's first ``seconds``
            frames = [f for f in frames if f[0] - frames[0][0] <= seconds]
        host = urlparse(urls[0]).hostname if urls else ""
        self.market = "usdm" if host.startswith(("fstream", "dstream")) else "spot"
        self.speed = speed
        self.origin = frames[0][0]
        self.frames = []
        symbols = []
        for ts, text in frames:
            stream = orjson.loads(text)["stream"]
            start = len(b'{"stream":"%s","data":' % stream.encode())
            self.frames.append((ts - self.origin, stream, text[start:-1], text))
            sym = stream.split("@")[0].upper()
            if sym not in symbols:
                symbols.append(sym)
        snaps = {}
        for ts, url, body in http:
            sym = parse_qs(urlparse(url).query)["symbol"][0]
            d = orjson.loads(body)
            snaps.setdefault(sym, []).append((d["lastUpdateId"], d["bids"], d["asks"]))
        self.symbols = symbols
        self._symbols = {s: ReplaySymbol(self.market, s, snaps.get(s, [])) for s in symbols}
        self.started = None
        self.next = 0

    def symbol(self, name):
        return self._symbols.get(name)

    def start(self, now):
        if self.started is None:
            self.started = now

    @property
    def finished(self):
        return self.next >= len(self.frames)

    def due(self, now):
        """Frames whose captured time has come: ``[(stream, payload, combined frame)]``."""
        if self.started is None or self.finished:
            return []
        elapsed = float("inf") if self.speed == 0 else (now - self.started) * self.speed
        out = []
        while self.next < len(self.frames) and self.frames[self.next][0] <= elapsed:
            _, stream, payload, frame = self.frames[self.next]
            self.next += 1
            symbol, _, key = stream.partition("@")
            self._symbols[symbol.upper()].feed(key, orjson.loads(payload))
            out.append((stream, payload, frame))
        return out


def load_replay(path, speed=1.0, seconds=None):
    """``path``: a capture, or several of one market separated by commas
    (their frames are merged by receive time; their symbols must differ)."""
    paths = []
    for one in path.split(","):
        if not os.path.exists(one):
            raise FileNotFoundError(f"replay capture {one} does not exist")
        paths += capture_files(one)
    return Replay(paths, speed, seconds)
