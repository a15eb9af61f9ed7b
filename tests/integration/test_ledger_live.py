"""The gap ledger of a live recording against the simulator: a dropped
connection's aggTrade holes are backfilled, and each has exactly one ledger
row saying so, with the rows it filled and the times of the rows around it;
the ledger file is in time order."""

import pytest

from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(150)

SYMBOL = "BTCUSDT"
STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker"]      # rows from the worker and the book manager


def _runs(ids):
    """Consecutive ids as ``[(first, last)]``."""
    runs = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [tuple(r) for r in runs]


def _backfilled_in_ledger(rec):
    return [g for g in rec.rows(SYMBOL, "gaps") if g["stream"] == "aggTrade" and g["action"] == "backfilled"]


def test_a_dropped_connection_backfills_aggtrades_with_one_ledger_row_per_hole(simulator, tmp_path):
    sim = simulator(symbols=(SYMBOL,), seed=17, rate=300)
    # flush_interval 1 s (the default): ledger rows wait long enough to be written in order on a busy machine
    rec = Recorder(tmp_path, sim, [SYMBOL], streams=STREAMS, flush_interval=1.0).start()
    try:
        rec.wait_status(lambda s: s["children"].get("writer", {}).get("streams", {}).get(f"{SYMBOL}/aggTrade", {})
                        .get("rows", 0) >= 100, 30, "aggTrades on disk")
        sim.faults(drop_every=1.0)                  # until a reconnect leaves an aggTrade hole
        wait_for(lambda: _backfilled_in_ledger(rec), 40, "an aggTrade hole backfilled and ledgered")
        sim.faults(drop_every=0)
        rows_then = len(rec.rows(SYMBOL, "aggTrade"))
        wait_for(lambda: len(rec.rows(SYMBOL, "aggTrade")) >= rows_then + 100, 30, "live aggTrades after the drops")
    finally:
        assert rec.stop() == 0, rec.log_tail()

    trades = {int(r["agg_trade_id"]): r for r in rec.rows(SYMBOL, "aggTrade")}
    ids = sorted(trades)
    assert len(ids) == len(rec.rows(SYMBOL, "aggTrade")) and ids == list(range(ids[0], ids[-1] + 1))
    filled = [i for i in ids if trades[i]["backfilled"] == "1"]
    holes = _runs(filled)
    assert holes, "no aggTrade was backfilled"
    rows = _backfilled_in_ledger(rec)
    # one row per hole, no more: each names the ids around the hole, the rows it filled, and their times
    by_hole = {(int(g["last_good_id"]) + 1, int(g["first_id_after"]) - 1): g for g in rows}
    assert len(by_hole) == len(rows), "a hole ledgered twice"
    assert sorted(by_hole) == holes
    for (lo, hi), g in by_hole.items():
        assert int(g["rows"]) == hi - lo + 1
        assert g["last_good_time"] == trades[lo - 1]["transact_time"] != ""
        assert g["first_time_after"] == trades[hi + 1]["transact_time"] != ""
    assert sum(int(g["rows"]) for g in rows) == len(filled)
    ledger = rec.rows(SYMBOL, "gaps")
    assert {g["stream"] for g in ledger} >= {"aggTrade", "trade", "orderbook"}     # rows of several processes
    times = [int(g["local_time_us"]) for g in ledger]
    assert times == sorted(times), "the ledger is not in time order"
    for g in ledger:                    # every row about a hole between two rows has both times
        if g["last_good_id"] and g["first_id_after"] and g["stream"] != "orderbook":
            assert g["last_good_time"] and g["first_time_after"], g
