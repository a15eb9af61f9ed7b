"""A websocket-client + requests client syncs books from the simulator by
Binance's documented procedure and ends equal to the simulator's true book."""

from decimal import Decimal

import pytest

from binance_streamer.binance.endpoints import REST_PREFIX
from binance_streamer.book import APPLIED, DepthSync
from tests.support import WsReader, http


def _levels(levels):
    return {Decimal(p): Decimal(q) for p, q in levels}


def _check_continuity(market, depth, agg, trades):
    for prev, cur in zip(depth, depth[1:]):
        if market == "spot":
            assert cur["U"] == prev["u"] + 1, (prev, cur)
        else:
            assert cur["pu"] == prev["u"], (prev, cur)
    for prev, cur in zip(agg, agg[1:]):
        assert cur["a"] == prev["a"] + 1
        assert cur["f"] == prev["l"] + 1
    for prev, cur in zip(trades, trades[1:]):
        assert cur["t"] == prev["t"] + 1
    if trades:
        # every raw trade id lies inside the aggTrade ranges
        covered = {t for a in agg for t in range(a["f"], a["l"] + 1)}
        assert {t["t"] for t in trades if agg[0]["f"] <= t["t"] <= agg[-1]["l"]} <= covered


def _sync_and_compare(sim, market, symbol, limit, depth_stream):
    lower = symbol.lower()
    if market == "spot":
        readers = [WsReader(f"{sim.ws_url}/stream?streams={lower}@{depth_stream}/"
                            f"{lower}@bookTicker/{lower}@aggTrade/{lower}@trade", sim=sim)]
    elif market == "coinm":         # one root, as dstream
        readers = [WsReader(f"{sim.ws_url}/stream?streams={lower}@{depth_stream}/{lower}@bookTicker/"
                            f"{lower}@aggTrade", sim=sim)]
    else:
        readers = [WsReader(f"{sim.ws_urls['public']}/stream?streams={lower}@{depth_stream}/{lower}@bookTicker", sim=sim),
                   WsReader(f"{sim.ws_urls['market']}/stream?streams={lower}@aggTrade", sim=sim)]
    prefix = REST_PREFIX[market]
    book_reader = readers[0]
    book_reader.wait(lambda r: len(r.data("@" + depth_stream)) >= 2, 10, "first depth events")
    resp = http(sim).get(f"{sim.rest_url}{prefix}/depth", params={"symbol": symbol, "limit": limit}, timeout=10)
    assert resp.status_code == 200
    snap = resp.json()
    assert len(snap["bids"]) == limit and len(snap["asks"]) == limit
    def enough(r):
        after = {d["u"] for d in r.data("@" + depth_stream) if d["u"] > snap["lastUpdateId"]}
        return len(after) >= 15 and any(t["u"] in after for t in r.data("@bookTicker"))
    book_reader.wait(enough, 30, "depth events after the snapshot, one of them matched by a bookTicker")
    for r in readers:
        r.close()
    depth = book_reader.data("@" + depth_stream)
    tickers = {t["u"]: t for t in book_reader.data("@bookTicker")}
    agg = [d for r in readers for d in r.data("@aggTrade")]
    trades = book_reader.data("@trade")
    _check_continuity(market, depth, agg, trades)
    assert len(agg) > 10

    sync = DepthSync(market)
    compared = 0
    sync.on_diff(depth[0]["U"], depth[0]["u"], depth[0].get("pu"), depth[0]["b"], depth[0]["a"])
    assert sync.on_snapshot(snap["lastUpdateId"], snap["bids"], snap["asks"]) == "synced"
    for ev in depth[1:]:
        outcome = sync.on_diff(ev["U"], ev["u"], ev.get("pu"), ev["b"], ev["a"])
        assert outcome in (APPLIED, "stale"), outcome
        assert not sync.book.crossed()
        t = tickers.get(ev["u"]) if outcome == APPLIED else None
        if t is not None:
            assert sync.book.best_bid() == (t["b"], t["B"])
            assert sync.book.best_ask() == (t["a"], t["A"])
            compared += 1
    assert compared > 0, "no bookTicker shared an update id with a depth event"

    uid, true_bids, true_asks = sim.true_book(symbol, sync.book.update_id)
    assert uid == sync.book.update_id
    assert len(true_bids) >= 5000 and len(true_asks) >= 5000
    truth_bids, truth_asks = _levels(true_bids), _levels(true_asks)
    mine = sync.book.as_dict()
    # Every level the client holds is the exchange's level, to the digit ...
    assert {k: v for k, v in mine["bids"].items()} == {k: truth_bids[k] for k in mine["bids"]}
    assert {k: v for k, v in mine["asks"].items()} == {k: truth_asks[k] for k in mine["asks"]}
    # ... and inside the snapshot's price range it holds every level there is.
    low, high = Decimal(snap["bids"][-1][0]), Decimal(snap["asks"][-1][0])
    assert {k for k in truth_bids if k >= low} <= set(mine["bids"])
    assert {k for k in truth_asks if k <= high} <= set(mine["asks"])
    return sync


@pytest.mark.timeout(60)
def test_spot_book_sync_with_5000_level_snapshot(simulator):
    sim = simulator(market="spot", symbols=("BTCUSDT", "ETHUSDT"), seed=7, rate=400)
    _sync_and_compare(sim, "spot", "BTCUSDT", 5000, "depth@100ms")


FUTURES = {"usdm": ("BTCUSDT", "ETHUSDT"), "coinm": ("BTCUSD_PERP", "ETHUSD_PERP")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("market", ["usdm", "coinm"])
def test_futures_book_sync(simulator, market):
    sim = simulator(market=market, symbols=FUTURES[market], seed=7, rate=400)
    _sync_and_compare(sim, market, FUTURES[market][1], 1000, "depth@100ms")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("market", ["usdm", "coinm"])
def test_futures_update_ids_skip_so_only_pu_chains(simulator, market):
    symbol = FUTURES[market][0]
    sim = simulator(market=market, symbols=(symbol,), seed=3, rate=400)
    root = sim.ws_urls["public"] if market == "usdm" else sim.ws_url
    r = WsReader(f"{root}/stream?streams={symbol.lower()}@depth@100ms", sim=sim)
    r.wait(lambda r: len(r.data("@depth@100ms")) >= 20, 15, "depth events")
    r.close()
    depth = r.data("@depth@100ms")
    assert all(b["pu"] == a["u"] for a, b in zip(depth, depth[1:]))
    assert any(b["U"] != a["u"] + 1 for a, b in zip(depth, depth[1:]))
