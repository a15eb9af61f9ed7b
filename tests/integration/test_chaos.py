"""Faults of every kind in one recording: every hole is in the ledger,
aggTrades are backfilled, books resync, nothing is duplicated, and the
daemon keeps running."""

import os
import signal

import pytest

from binance_streamer.simulator.audit import compare
from tests.support import Recorder

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker", "kline_1s"]


def _disk(rec):
    """Bytes of data on disk: grows with every flush, whatever restarts."""
    return sum(os.path.getsize(p) for p in rec.files())


def _proc(status, name):
    return next(p for p in status["processes"] if p["name"] == name)


def _settled(status):
    books = status["children"].get("orderbook", {}).get("books", {})
    return (all(p["state"] == "RUNNING" for p in status["processes"])
            and all(books.get(s, {}).get("state") == "synced" for s in SYMBOLS)
            and status["children"].get("writer", {}).get("open_holes", 1) == 0)


def test_chaos(simulator, tmp_path):
    sim = simulator(symbols=tuple(SYMBOLS), seed=61, rate=200, lifetime=6.0, shutdown_notice=1.0)
    rec = Recorder(tmp_path, sim, SYMBOLS, streams=STREAMS, snapshot_depth=1000).start()
    def more(n=30_000):
        base = _disk(rec)
        rec.wait_status(lambda s: _disk(rec) >= base + n, 40, "more data on disk")

    try:
        rec.wait_status(_settled, 30, "a settled start")
        sim.faults(drop="abort")                                  # connections cut without a close frame
        more()
        sim.faults(malformed=3, unknown_event=2)
        sim.faults(stall=1.0)                                     # no data, no pings
        more()
        sim.faults(rest_429=2)                                    # REST refused for a while ...
        sim.faults(drop="close")                                  # ... while reconnects want backfills
        more()
        for name in ("worker-0", "orderbook", "writer"):
            pid = rec.pid_of(name)
            os.kill(pid, signal.SIGKILL)
            rec.wait_status(lambda s, n=name, p=pid: _proc(s, n)["pid"] not in (None, p)
                            and _proc(s, n)["state"] == "RUNNING", 40, f"{name} back")
            more()
        rec.wait_status(_settled, 60, "books in sync and holes filled")
        more()
        status = rec.status()
        assert status["state"] == "RUNNING"
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    assert sum(p["restarts"] for p in status["processes"]) >= 3
    assert sim.stats()["rest_418"] == 0
    report = compare(sim, rec, set(SYMBOLS))
    for stream, r in report.items():
        assert r["unexplained"] == [], f"{stream}: holes not in the ledger: {r['unexplained'][:10]}"
        assert r["duplicates"] == 0 and r["mismatched"] == [], stream
    for symbol in SYMBOLS:
        ids = [int(r["agg_trade_id"]) for r in rec.rows(symbol, "aggTrade")]
        assert len(ids) == len(set(ids)) and sorted(ids) == list(range(min(ids), max(ids) + 1)), symbol
        assert any(r["backfilled"] == "1" for r in rec.rows(symbol, "aggTrade")) or symbol != "BTCUSDT"
