"""markPrice@1s and forceOrder recorded live from the simulator's usdm
market, beside the default streams, through a handover (serverShutdown) and
an outage: every row is an event the simulator sent, exactly once and as
sent, every event missing is in a hole of the gap ledger, and --verify
finds every break explained."""

import os
import time

import pytest

from binance_streamer.analysis.verify import verify
from binance_streamer.continuity import hole_after
from binance_streamer.simulator.audit import compare, frames_by_stream, handovers, row_matches
from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
STREAMS = ["aggTrade", "depth@100ms", "kline_1m", "bookTicker", "markPrice@1s", "forceOrder"]
FUTURES = {"markPrice@1s": "markPrice", "forceOrder": "forceOrder"}


def _written(rec, stream):
    """Rows of ``stream`` on disk per symbol (the files themselves, not the status)."""
    return {s: len(rec.rows(s, stream)) for s in SYMBOLS}


def _more(rec, before, at_least, what, timeout=60):
    """Until every symbol has ``at_least`` more rows of each stream than ``before``."""
    def enough():
        return all(n >= before[stream][s] + at_least[stream] for stream in before
                   for s, n in _written(rec, stream).items())
    wait_for(enough, timeout, what, interval=0.2)


def _sent(sim):
    """(symbol, file stream) -> {E: event} of every markPrice and forceOrder event sent to anyone."""
    out = {}
    for _, name, d in frames_by_stream(sim.journal()):
        symbol, _, sub = name.partition("@")
        if sub in FUTURES:
            out.setdefault((symbol.upper(), FUTURES[sub]), {})[d["E"]] = (name, d)
    return out


def test_mark_price_and_liquidations_exactly_once_through_a_handover_and_an_outage(simulator, tmp_path):
    sim = simulator(market="usdm", symbols=SYMBOLS, seed=21, rate=150)
    rec = Recorder(tmp_path, sim, list(SYMBOLS), streams=STREAMS, flush_interval=0.5).start()
    zero = {"markPrice": dict.fromkeys(SYMBOLS, 0), "forceOrder": dict.fromkeys(SYMBOLS, 0)}
    try:
        _more(rec, zero, {"markPrice": 3, "forceOrder": 1}, "markPrice and forceOrder rows of both symbols")
        sim.faults(shutdown=2.0)                    # each connection is replaced by a new one beside it
        wait_for(lambda: handovers(sim.connections()) >= 2, 30, "the public and market connections handed over")
        before = {k: _written(rec, k) for k in zero}
        _more(rec, before, {"markPrice": 3, "forceOrder": 0}, "markPrice rows after the handover")
        before = {k: _written(rec, k) for k in zero}
        sim.faults(unreachable=3.0)                 # every connection cut; none for 3 s: a markPrice hole
        _more(rec, before, {"markPrice": 6, "forceOrder": 1}, "rows of both streams after the outage", 90)
    finally:
        assert rec.stop() == 0, rec.log_tail()

    # every row is an event sent, as sent, once; no event of the stream kept from disk without a ledger row
    report = compare(sim, rec, set(SYMBOLS))
    for stream, r in report.items():
        assert r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:3])
        assert r["unexplained"] == [], f"{stream}: events missing with no ledger row: {r['unexplained'][:5]}"
    sent = _sent(sim)
    for symbol in SYMBOLS:
        for sub in FUTURES:
            assert report[f"{symbol.lower()}@{sub}"]["found"] > 0, (symbol, sub)
        for stream in FUTURES.values():
            rows = rec.rows(symbol, stream)
            times = [int(r["event_time"]) for r in rows]
            assert times == sorted(set(times)), f"{symbol} {stream}: rows repeated or out of order"
            for row, t in zip(rows, times):
                assert t in sent[(symbol, stream)], f"{symbol} {stream}: row {t} was never sent"
                name, d = sent[(symbol, stream)][t]
                assert row_matches(name, d, [row]), f"{symbol} {stream}: row {t} differs from what was sent"

        gaps = rec.rows(symbol, "gaps")
        marks = [int(r["event_time"]) for r in rec.rows(symbol, "markPrice")]
        holes = [(a, b) for a, b in zip(marks, marks[1:]) if b - a > hole_after(1000)]
        assert holes, f"{symbol}: the 3 s outage left no markPrice hole"
        for a, b in holes:          # each hole, exactly as in the file, is a ledger row
            assert any(g["stream"] == "markPrice" and g["reason"] == "reconnect" and g["action"] == "lost"
                       and int(g["last_good_id"]) == a
                       and int(g["first_id_after"]) == b for g in gaps), f"{symbol}: markPrice hole {a}..{b}"
        assert any(g["stream"] == "forceOrder" and g["reason"] == "reconnect" for g in gaps), symbol
        # the handover, unlike the outage, cost nothing: one reconnect row per stream, none more
        assert sum(g["stream"] == "markPrice" and g["reason"] != "start" for g in gaps) == len(holes)

    result = verify(os.path.join(rec.dir, "data"), "usdm", expected={"markPrice", "forceOrder"})
    assert not [p for p in result.problems if p.stream in ("markPrice", "forceOrder")], result.problems
    checked = [f for f in result.files if f.stream == "markPrice"]
    assert checked and all(f.breaks == f.explained >= 1 for f in checked)


def test_restarts_keep_mark_prices_once_and_ledger_only_a_downtime_that_lost_one(simulator, tmp_path):
    symbol = "BTCUSDT"
    sim = simulator(market="usdm", symbols=(symbol,), seed=22, rate=100)
    rec = Recorder(tmp_path, sim, [symbol], streams=["aggTrade", "markPrice", "forceOrder"], flush_interval=0.5)
    marks = lambda: [int(r["event_time"]) for r in rec.rows(symbol, "markPrice")]      # noqa: E731
    lasts = []
    for rows, downtime_ms in ((2, 0), (4, 0), (6, 6000)):    # the last restart misses two 3 s events
        if lasts:
            wait_for(lambda: time.time() * 1000 > lasts[-1] + downtime_ms, 10, "the downtime")
        rec.start()
        try:
            wait_for(lambda: len(marks()) >= rows, 30, f"{rows} markPrice rows", interval=0.2)
        finally:
            assert rec.stop() == 0, rec.log_tail()
        lasts.append(marks()[-1])

    times = marks()
    assert times == sorted(set(times)), "markPrice rows repeated or out of order across the restarts"
    boundaries = [(last, times[times.index(last) + 1]) for last in lasts[:-1]]
    expected = [("start", a, b, "lost") for a, b in boundaries if b - a > hole_after(3000)]
    gaps = [g for g in rec.rows(symbol, "gaps") if g["stream"] == "markPrice"]
    assert [(g["reason"], int(g["last_good_id"]), int(g["first_id_after"]), g["action"]) for g in gaps] == expected
    assert expected and expected[-1][1] == lasts[1]         # the long downtime is in the ledger
    report = compare(sim, rec, {symbol})
    assert report[f"{symbol.lower()}@markPrice"]["found"] == len(times)
    for stream, r in report.items():
        assert r["unexplained"] == [] and r["mismatched"] == [] and r["duplicates"] == 0, stream
    result = verify(os.path.join(rec.dir, "data"), "usdm")
    assert not [p for p in result.problems if p.stream in ("markPrice", "forceOrder")], result.problems


def test_mutated_mark_prices_and_liquidations_are_refused_and_ledgered_and_nothing_dies(simulator, tmp_path):
    """Every 3rd frame sent gets a hostile value, loses a field or is cut
    short (seeded): refused events are counted, a refused markPrice leaves
    a hole the ledger explains, the rest is on disk exactly as sent."""
    symbol = "BTCUSDT"
    sim = simulator(market="usdm", symbols=(symbol,), seed=23, rate=20, faults={"mutate_every": 3})
    rec = Recorder(tmp_path, sim, [symbol], streams=["markPrice@1s", "forceOrder"]).start()
    try:
        wait_for(lambda: len(rec.rows(symbol, "markPrice")) >= 12 and len(rec.rows(symbol, "forceOrder")) >= 3,
                 90, "markPrice and forceOrder rows", interval=0.2)
        status = rec.status()
        assert all(p["state"] == "RUNNING" and p["restarts"] == 0 for p in status["processes"])
    finally:
        assert rec.stop() == 0, rec.log_tail()
    report = compare(sim, rec, {symbol})
    for stream, r in report.items():
        assert r["unexplained"] == [] and r["mismatched"] == [] and r["duplicates"] == 0, (stream, r)
    assert report[f"{symbol.lower()}@markPrice@1s"]["rejected"] > 0
    counts = status["children"]["worker-0"]["counts"]
    assert counts["malformed"] > 0 and counts["errors"] == 0
    gaps = rec.rows(symbol, "gaps")
    assert any(g["stream"] == "markPrice" and g["reason"] == "malformed event" for g in gaps)
    result = verify(os.path.join(rec.dir, "data"), "usdm")
    assert not [p for p in result.problems if p.stream in ("markPrice", "forceOrder")], result.problems
    with open(os.path.join(rec.dir, "logs", "binance-streamer.log")) as f:
        assert "Traceback" not in f.read()
