"""Order books kept by the recorder against the simulator's true book."""

import pytest

from tests.support import Recorder, book_levels, wait_for

pytestmark = pytest.mark.timeout(150)


def _books(status):
    return status.get("children", {}).get("orderbook", {}).get("books", {})


def _all_synced(symbols):
    return lambda s: all(_books(s).get(x, {}).get("state") == "synced" for x in symbols)


SYMBOLS = {"spot": ("BTCUSDT", "ETHUSDT"), "usdm": ("BTCUSDT", "ETHUSDT"), "coinm": ("BTCUSD_PERP", "ETHUSD_PERP")}


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_every_orderbook_row_equals_the_true_book(simulator, tmp_path, market):
    symbols = SYMBOLS[market]
    sim = simulator(market=market, symbols=symbols, seed=21, rate=300)
    rec = Recorder(tmp_path, sim, list(symbols), orderbook_interval=0.25,
                   streams=["aggTrade", "depth@100ms", "bookTicker"]).start()
    try:
        rec.wait_status(_all_synced(list(symbols)), 30, "books in sync")
        wait_for(lambda: len([r for r in rec.rows(symbols[1], "orderbook") if r["in_sync"] == "true"]) >= 12,
                 30, "orderbook rows")
        status = rec.status()
    finally:
        assert rec.stop() == 0, rec.log_tail()
    books = status["children"]["orderbook"]
    assert books["ticker_compared"] > 0 and books["ticker_mismatches"] == 0 and books["resyncs"] == 0
    checked = 0
    for symbol in symbols:
        for row in [r for r in rec.rows(symbol, "orderbook") if r["in_sync"] == "true"]:
            uid, bids, asks = sim.true_book(symbol, int(row["update_id"]))
            assert book_levels(row, "bid", 20) == bids[:20], (symbol, row["update_id"])
            assert book_levels(row, "ask", 20) == asks[:20], (symbol, row["update_id"])
            checked += 1
    assert checked >= 20
    snap = rec.rows(symbols[0], "depthSnapshot")
    first = snap[0]["last_update_id"]
    sides = [r["side"] for r in snap if r["last_update_id"] == first]
    depth = 5000 if market == "spot" else 1000
    assert sides.count("bid") == depth and sides.count("ask") == depth


def test_a_gap_on_one_symbol_resyncs_it_alone_and_429_delays_without_418(simulator, tmp_path):
    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    sim = simulator(symbols=tuple(symbols), seed=22, rate=200)
    rec = Recorder(tmp_path, sim, symbols, streams=["depth@100ms", "bookTicker"], snapshot_depth=1000).start()
    try:
        rec.wait_status(_all_synced(symbols), 30, "books in sync")
        eth = next(c["id"] for c in sim.connections() if "ethusdt" in c["path"] and c["closed"] is None)
        sim.faults(rest_429=3)
        sim.faults(stall=1.0, stall_conn=eth)
        rec.wait_status(lambda s: _books(s)["ETHUSDT"]["resyncs"] >= 1, 30, "ETHUSDT resync")
        rec.wait_status(_all_synced(symbols), 30, "ETHUSDT back in sync")
        status = rec.status()
    finally:
        assert rec.stop() == 0, rec.log_tail()
    books = _books(status)
    assert books["BTCUSDT"]["resyncs"] == 0 and books["BNBUSDT"]["resyncs"] == 0
    assert books["ETHUSDT"]["snapshots"] >= 2
    stats = sim.stats()
    assert stats["rest_429"] >= 1 and stats["rest_418"] == 0
    gaps = rec.rows("ETHUSDT", "gaps")
    assert any(g["stream"] == "orderbook" and g["action"] == "resync" for g in gaps)
    assert any(g["stream"] == "depth" and g["action"] == "lost" for g in gaps)
    assert not [g for g in rec.rows("BTCUSDT", "gaps") + rec.rows("BNBUSDT", "gaps") if g["stream"] == "orderbook"]
