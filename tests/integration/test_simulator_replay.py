"""Replay of real captured Binance sessions (../shared/realdata/cryptofeed).

The captured files are cryptofeed's sample data; this product includes
software developed by Bryant Moscon (http://www.bryantmoscon.com/)."""

import os
from urllib.parse import urlparse

import pytest

from binance_streamer.binance.endpoints import REST_PREFIX
from binance_streamer.book import APPLIED, DepthSync
from tests.support import REALDATA, Recorder, WsReader, http, need, wait_for

pytestmark = pytest.mark.timeout(120)

CAPTURES = {
    "spot": "cryptofeed/BINANCE.ws.1.0",
    "usdm": "cryptofeed/BINANCE_FUTURES.ws.1.0",
    "spot-combined": "cryptofeed/BINANCE-b38f7c.0",
    "usdm-combined": "cryptofeed/BINANCE_FUTURES-1125a2.0",
    "coinm": "cryptofeed/BINANCE_DELIVERY.ws.1.0",      # dstream, with BINANCE_DELIVERY.http.0.0
}


def _market(name):
    return name.split("-")[0]


def read_capture(path):
    """Captured WebSocket URL and frames, parsed here independently of the simulator."""
    url, frames = None, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("wss://"):
                url = url or line.split(" <-> ")[0]
            elif line[:1].isdigit():
                ts, _, text = line.partition(": ")
                frames.append((float(ts), text))
    frames.sort(key=lambda r: r[0])
    return url, [t for _, t in frames]


def _connect(sim, url):
    query = urlparse(url).query
    return WsReader(f"{sim.ws_base}/stream?{query}", sim=sim)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_replay_sends_exactly_the_captured_frames_in_order(simulator, name):
    path = need(os.path.join(REALDATA, CAPTURES[name]))
    url, expected = read_capture(path)
    sim = simulator(replay=path, replay_speed=0)
    assert sim.cfg.market == _market(name)
    r = _connect(sim, url)
    r.wait(lambda r: len(r.frames) >= len(expected), 60, f"{len(expected)} frames")
    r.close()
    assert r.texts() == expected


@pytest.mark.parametrize("name", ["spot", "usdm", "spot-combined", "usdm-combined", "coinm"])
def test_book_synced_through_simulator_matches_replayed_book_tickers(simulator, name):
    path = need(os.path.join(REALDATA, CAPTURES[name]))
    url, expected = read_capture(path)
    market = _market(name)
    sim = simulator(replay=path, replay_speed=15)
    prefix = REST_PREFIX[market]
    r = _connect(sim, url)
    snapshots = {}          # symbol -> (frames seen when fetched, snapshot)

    def fetch_due(r):
        for m in r.messages():
            data = m["data"]
            if data.get("e") == "depthUpdate" and data["s"] not in snapshots:
                n = len(r.frames)
                resp = http(sim).get(f"{sim.rest_url}{prefix}/depth",
                                    params={"symbol": data["s"], "limit": 1000}, timeout=10)
                assert resp.status_code == 200
                snapshots[data["s"]] = (n, resp.json())
        return len(r.frames) >= len(expected)

    r.wait(fetch_due, 60, "the whole replay")
    r.close()
    assert r.texts() == expected

    syncs, pending = {}, {s: snap for s, (_, snap) in snapshots.items()}
    tickers = {}
    for m in r.messages():
        d = m["data"]
        if m["stream"].endswith("@bookTicker"):
            tickers[(d["s"], d["u"])] = d
    compared = {s: 0 for s in snapshots}
    for i, m in enumerate(r.messages()):
        d = m["data"]
        if d.get("e") != "depthUpdate":
            continue
        sym = d["s"]
        sync = syncs.setdefault(sym, DepthSync(market))
        outcome = sync.on_diff(d["U"], d["u"], d.get("pu"), d["b"], d["a"])
        if sym in pending and i + 1 >= snapshots[sym][0]:
            snap = pending.pop(sym)
            assert sync.on_snapshot(snap["lastUpdateId"], snap["bids"], snap["asks"]) == "synced"
            outcome = APPLIED if sync.book.update_id == d["u"] else outcome
        if sync.synced:
            assert outcome != "gap"
            assert not sync.book.crossed()
            t = tickers.get((sym, sync.book.update_id))
            if t is not None and outcome == APPLIED:
                assert sync.book.best_bid() == (t["b"], t["B"]), (sym, t)
                assert sync.book.best_ask() == (t["a"], t["A"]), (sym, t)
                compared[sym] += 1
    with_tickers = {s for s, _ in tickers}
    assert sum(compared.values()) > 0
    assert all(compared[s] > 0 for s in with_tickers if s in compared and syncs[s].synced), compared


def _books(status):
    return status.get("children", {}).get("orderbook", {})


def test_coinm_capture_through_the_recorder_keeps_books_equal_to_every_book_ticker(simulator, tmp_path):
    """The real COIN-M capture (dstream, 10 perpetual and dated contracts)
    replayed at twice its pace as coinm, recorded with the defaults: every
    book syncs from the simulator's dapi depth and equals every bookTicker
    it meets; every frame is on disk."""
    path = need(os.path.join(REALDATA, CAPTURES["coinm"]))
    _, expected = read_capture(path)
    sim = simulator(replay=path, replay_speed=2)
    assert sim.cfg.market == "coinm"
    symbols = list(sim.exchange.symbols)
    assert "BTCUSD_211231" in symbols and "BCHUSD_PERP" in symbols
    rec = Recorder(tmp_path, sim, symbols, streams=["aggTrade", "depth@100ms", "kline_1m", "bookTicker"],
                   symbols_per_worker=len(symbols)).start()
    frames = sum(1 for f in expected if '@aggTrade"' in f[:40] or '@bookTicker"' in f[:40])

    def on_disk():
        return sum(len(rec.rows(s, stream)) for s in symbols for stream in ("aggTrade", "bookTicker"))
    try:
        wait_for(lambda: sim.call(lambda: sim.exchange.replay.finished), 60, "the replay to end")
        wait_for(lambda: on_disk() >= frames, 30, f"{frames} aggTrade and bookTicker rows on disk", interval=0.25)
        status = rec.status()
    finally:
        assert rec.stop() == 0, rec.log_tail()
    books = _books(status)
    synced = [s for s, b in books["books"].items() if b["state"] == "synced"]
    assert books["ticker_mismatches"] == 0 and books["ticker_compared"] > 100, books
    assert len(synced) == len(symbols) and all(books["books"][s]["resyncs"] == 0 for s in symbols), books
    assert on_disk() == frames
    row = rec.rows("BCHUSD_PERP", "bookTicker")[0]
    assert row["best_bid_qty"].isdigit()            # contracts
