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
from ..markets import COINM, SPOT, USDM, futures
from .klines import interval_ms


def market_of(host):
    """The market a captured WebSocket host served: fstream USD-M, dstream COIN-M."""
    if host.startswith("dstream"):
        return COINM
    return USDM if host.startswith("fstream") else SPOT


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


class Loops:
    """What makes pass ``k`` of a capture continue pass ``k - 1``: every id
    and time shifted by ``k`` spans, and per symbol a bridging diff that
    turns the book the last pass left into the capture's first snapshot, so
    the first diff after that snapshot applies again. Diffs and bookTickers
    from before the snapshot are left out of later passes (no book state is
    known for them)."""

    def __init__(self, market, frames, symbols):
        self.market = market
        self.spans = {}             # symbol -> {"a": .., "t": .., "u": .., "ms": ..}
        self.first = {}             # symbol -> (first diff after the snapshot: stream, data), snapshot id
        seen = {}
        for _, stream, payload, _ in frames:
            sym, _, key = stream.partition("@")
            d = orjson.loads(payload)
            b = seen.setdefault(sym.upper(), {"a": [], "t": [], "u": [], "depth": [], "ms": [], "k": []})
            b["ms"] += _times(d)
            if key == "aggTrade":
                b["a"].append(d["a"])
                b["t"] += [d["f"], d["l"]]
            elif key == "trade":
                b["t"].append(d["t"])
            elif key.startswith("depth"):
                b["u"] += [d["U"], d["u"]]
                b["depth"].append((stream, d))
            elif key == "bookTicker":
                b["u"].append(d["u"])
            elif key.startswith("kline") and d["k"].get("x"):
                b["k"].append(d["k"]["t"])
        for sym, b in seen.items():
            span = {k: max(v) - min(v) + 1 for k, v in b.items() if k in ("a", "t") and v}
            # Per symbol (captures of one run may be days apart), in whole
            # minutes so that klines keep opening on the minute.
            ms = b["ms"] or [0]
            span["ms"] = 60_000 * (-(-(max(ms) - min(ms)) // 60_000) + 1)
            # Candles: the next pass's first closed candle follows this
            # pass's last one (a capture of 91 s closes one or two).
            span["k"] = max(b["k"]) - min(b["k"]) + 60_000 if b["k"] else span["ms"]
            snaps = symbols[sym].snapshots
            after = [(st, d) for st, d in b["depth"] if snaps and d["u"] > snaps[0][0]]
            if after:
                stream, d1 = after[0]
                self.first[sym] = (stream, d1, snaps[0])
                span["u"] = max(b["u"]) - self._bridge_top(d1) + 3
            self.spans[sym] = span

    def _bridge_top(self, d1):
        """The update id the bridging diff ends at, before shifting."""
        return d1["pu"] if futures(self.market) else d1["U"] - 1

    def shifted(self, k, stream, payload):
        """Pass ``k``'s payload of a frame, or None when it is left out."""
        sym, _, key = stream.partition("@")
        span, d = self.spans.get(sym.upper(), {}), orjson.loads(payload)
        first = self.first.get(sym.upper())
        if key.startswith("depth") or key == "bookTicker":
            if first is None or d["u"] <= first[2][0]:
                return None
            for f in ("U", "u", "pu"):
                if f in d:
                    d[f] += k * span["u"]
        if key == "aggTrade":
            d["a"] += k * span["a"]
            d["f"] += k * span.get("t", 0)
            d["l"] += k * span.get("t", 0)
        elif key == "trade":
            d["t"] += k * span.get("t", 0)
        elif key.startswith("kline"):
            kl = d["k"]
            kl["t"] += k * span["k"]
            kl["T"] += k * span["k"]
            for f in ("f", "L"):
                if kl.get(f, -1) >= 0:
                    kl[f] += k * span.get("t", 0)
        for f in ("E", "T"):
            if f in d:
                d[f] += k * span["ms"]
        return orjson.dumps(d)

    def bridges(self, k, books):
        """Pass ``k``'s bridging diffs: ``[(stream, payload)]``; ``books``:
        symbol -> the replayed book as the last pass left it."""
        out = []
        for sym, (stream, d1, (_, bids, asks)) in self.first.items():
            book = books[sym]
            top = self._bridge_top(d1) + k * self.spans[sym]["u"]
            d = {"e": "depthUpdate", "E": d1["E"] + k * self.spans[sym]["ms"] - 1, "s": sym, "U": book.update_id + 1, "u": top}
            if futures(self.market):
                d["T"] = d["E"]
                d["pu"] = book.update_id
            now_bids, now_asks = book.top(len(book.bids) + len(book.asks))
            d["b"] = _levels(now_bids, bids)
            d["a"] = _levels(now_asks, asks)
            out.append((stream, orjson.dumps(d)))
        return out


def _levels(now, target):
    """The levels that turn ``now`` into ``target``: each target level, and a
    zero for each level that target lacks."""
    keep = {p for p, _ in target}
    return [[p, "0"] for p, _ in now if p not in keep] + [[p, q] for p, q in target]


def _times(d):
    """The exchange's times in an event (none in a spot bookTicker)."""
    return [d[f] for f in ("E", "T") if isinstance(d.get(f), int)]


class Replay:
    def __init__(self, paths, speed=1.0, seconds=None, loops=1):
        urls, frames, http = parse_capture(paths)
        if not frames:
            raise ValueError(f"no WebSocket frames found in {paths[0]}")
        if seconds is not None:           # only the capture's first ``seconds``
            frames = [f for f in frames if f[0] - frames[0][0] <= seconds]
        host = urlparse(urls[0]).hostname if urls else ""
        self.market = market_of(host)
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
        self.loops, self.loop = loops, 0
        self.duration = self.frames[-1][0] + 0.001
        self.shift = Loops(self.market, self.frames, self._symbols) if loops > 1 else None

    def symbol(self, name):
        return self._symbols.get(name)

    def start(self, now):
        if self.started is None:
            self.started = now

    @property
    def finished(self):
        return self.loop >= self.loops

    def due(self, now):
        """Frames whose captured time has come: ``[(stream, payload, combined frame)]``."""
        if self.started is None or self.finished:
            return []
        elapsed = float("inf") if self.speed == 0 else (now - self.started) * self.speed
        out = []
        while not self.finished:
            if self.next >= len(self.frames):
                self.loop, self.next = self.loop + 1, 0
                if not self.finished:
                    books = {s: r.sync.book for s, r in self._symbols.items()}
                    for stream, payload in self.shift.bridges(self.loop, books):
                        self._send(stream, payload, out)
                continue
            ts, stream, payload, frame = self.frames[self.next]
            if ts + self.loop * self.duration > elapsed:
                break
            self.next += 1
            if self.loop:
                payload = self.shift.shifted(self.loop, stream, payload)
                if payload is None:
                    continue
                frame = None
            self._send(stream, payload, out, frame)
        return out

    def _send(self, stream, payload, out, frame=None):
        symbol, _, key = stream.partition("@")
        self._symbols[symbol.upper()].feed(key, orjson.loads(payload))
        out.append((stream, payload, frame or b'{"stream":"%s","data":%s}' % (stream.encode(), payload)))


def load_replay(path, speed=1.0, seconds=None, loops=1):
    """``path``: a capture, or several of one market separated by commas
    (their frames are merged by receive time; their symbols must differ)."""
    paths = []
    for one in path.split(","):
        if not os.path.exists(one):
            raise FileNotFoundError(f"replay capture {one} does not exist")
        paths += capture_files(one)
    return Replay(paths, speed, seconds, loops)
