"""The USD-M REST series end to end: the real recorder against the real
simulator. Rows are what the simulator served (exact strings); a restart
after a 20-minute outage of the series (the simulator's series clock moved
forward) leaves no hole; a hole older than the exchange's history is one
ledger row per series."""

import pytest

import os

from binance_streamer import csvfiles
from binance_streamer.analysis import load
from binance_streamer.analysis.verify import verify
from binance_streamer.binance.endpoints import SERIES_ENDPOINTS
from binance_streamer.series import SERIES, file_stream, step_ms
from binance_streamer.simulator.series import values
from tests.support import Recorder, http, wait_for

pytestmark = pytest.mark.timeout(240)

SYMBOL, SEED = "BTCUSDT", 21
HISTORY = [name for name, s in SERIES.items() if s.history]
STREAMS = {name: file_stream(name, "5m") for name in SERIES}


def _sim(simulator, **kw):
    return simulator(market="usdm", symbols=(SYMBOL,), seed=SEED, rate=5, **kw)


def _recorder(tmp_path, sim):
    return Recorder(tmp_path, sim, [SYMBOL], streams=["aggTrade"], orderbook=False, series_poll_interval=0.5)


def _series_status(rec):
    s = rec.status() or {}
    return s.get("children", {}).get("worker-0", {}).get("series", {})


def _times(rec, name):
    column = csvfiles.columns("usdm", STREAMS[name])[0]
    return [int(r[column]) for r in rec.rows(SYMBOL, STREAMS[name])]


def _newest(sim, name):
    """The newest time the simulator serves for a series (its own clock)."""
    params = {"symbol": SYMBOL, "limit": 1}
    if SERIES[name].periodic:
        params["period"] = "5m"
    answer = http(sim).get(sim.rest_url + SERIES_ENDPOINTS[name].path, params=params, timeout=10).json()
    return answer[-1][SERIES[name].time_field]


def _served(sim, name, first, last):
    """What the simulator answers for [first, last], paged as a client would."""
    out, start = [], first
    while start <= last:
        params = {"symbol": SYMBOL, "startTime": start, "endTime": last, "limit": SERIES_ENDPOINTS[name].page_max}
        if SERIES[name].periodic:
            params["period"] = "5m"
        page = http(sim).get(sim.rest_url + SERIES_ENDPOINTS[name].path, params=params, timeout=10).json()
        if not page:
            break
        out += page
        start = page[-1][SERIES[name].time_field] + 1
    return out


def _assert_served(sim, rec, name, since=0):
    """Every row of the series' file (from time ``since``) is the simulator's
    answer, value for value, as sent."""
    spec = SERIES[name]
    cols = csvfiles.columns("usdm", STREAMS[name])
    rows = [r for r in rec.rows(SYMBOL, STREAMS[name]) if int(r[cols[0]]) >= since]
    served = _served(sim, name, int(rows[0][cols[0]]), int(rows[-1][cols[0]]))
    assert len(served) == len(rows), f"{name}: {len(rows)} rows recorded, {len(served)} served"
    for row, obj in zip(rows, served):
        assert int(row[cols[0]]) == obj[spec.time_field]
        assert [row[c] for c in cols[1:1 + len(spec.fields)]] == [obj.get(f, "") for f in spec.fields], name
        assert row["local_time_us"].isdigit()


def _assert_gapless(rec, name):
    times = _times(rec, name)
    step = step_ms(name, "5m")
    assert times == sorted(set(times)), f"{name}: rows out of order or twice"
    assert all(b - a == step for a, b in zip(times, times[1:])), f"{name}: a hole in {times}"


def _verified(tmp_path, breaks):
    """--verify's report of the recording: no problem, and ``breaks`` series
    breaks, each explained by a ledger row."""
    report = verify(os.path.join(str(tmp_path), "data"), "usdm")
    assert report.ok, [str(p) for p in report.problems]
    found = [f for f in report.files if csvfiles.series_kind(f.stream)]
    assert {f.stream for f in found} == set(STREAMS.values())
    assert sum(f.breaks for f in found) == sum(f.explained for f in found) == breaks


def _all_recorded(rec):
    status = _series_status(rec)
    return status if len(status) == len(SERIES) and all(v["rows"] for v in status.values()) else None


def test_series_rows_are_what_the_simulator_served(simulator, tmp_path):
    sim = _sim(simulator)
    rec = _recorder(tmp_path, sim).start()
    try:
        rec.wait_status(lambda s: _all_recorded(rec), 60, "a row of every series")
        wait_for(lambda: all(rec.rows(SYMBOL, STREAMS[n]) for n in SERIES), 20, "every series on disk")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    for name in HISTORY:
        assert len(rec.rows(SYMBOL, STREAMS[name])) == 30, name      # series.FIRST_ROWS, the latest
        _assert_served(sim, rec, name)
        _assert_gapless(rec, name)
    sample = rec.rows(SYMBOL, "openInterest")
    for row in sample:
        assert row["open_interest"] == values(SEED, SYMBOL, "openInterest", int(row["time"]))["openInterest"]
        assert int(row["request_time_us"]) <= int(row["local_time_us"])
    assert rec.rows(SYMBOL, "gaps") == []


def test_restart_after_a_20_minute_outage_backfills_every_series(simulator, tmp_path):
    sim = _sim(simulator)
    control = http(sim)
    rec = _recorder(tmp_path, sim).start()
    try:
        rec.wait_status(lambda s: _all_recorded(rec), 60, "a row of every series")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    before = {name: _times(rec, name) for name in HISTORY}
    # The series go down while 20 minutes pass at the exchange; the recorder
    # restarts during the outage and catches up once they are back.
    control.post(sim.rest_url + "/sim/faults", json={"series_down": 120, "series_clock": 1200}, timeout=10)
    rec.start()
    try:
        rec.wait_status(lambda s: any(v["failures"] for v in _series_status(rec).values()), 60,
                        "a failed poll during the outage")
        control.post(sim.rest_url + "/sim/faults", json={"series_down": 0}, timeout=10)    # the series are back
        newest = {name: _newest(sim, name) for name in HISTORY}
        assert newest["openInterestHist"] >= before["openInterestHist"][-1] + 4 * 300_000     # 20 minutes went by
        wait_for(lambda: all(_times(rec, n)[-1] >= newest[n] for n in HISTORY), 60, "the missed rows backfilled")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    for name in HISTORY:
        _assert_gapless(rec, name)
        _assert_served(sim, rec, name)
        assert _times(rec, name)[:len(before[name])] == before[name]
    assert rec.rows(SYMBOL, "gaps") == []
    _verified(tmp_path, 0)


def test_a_hole_beyond_the_history_is_one_ledger_row_per_series(simulator, tmp_path):
    sim = _sim(simulator, series_history_days=1)
    control = http(sim)
    rec = _recorder(tmp_path, sim).start()
    try:
        rec.wait_status(lambda s: _all_recorded(rec), 60, "a row of every series")
        wait_for(lambda: all(rec.rows(SYMBOL, STREAMS[n]) for n in SERIES), 20, "every series on disk")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    last = {name: _times(rec, name)[-1] for name in HISTORY}
    control.post(sim.rest_url + "/sim/faults", json={"series_clock": 3 * 86_400}, timeout=10)   # 3 days later
    newest = {name: _newest(sim, name) for name in HISTORY}
    rec.start()
    try:
        wait_for(lambda: all(_times(rec, n)[-1] >= newest[n] for n in HISTORY), 90, "the rows still served")
        wait_for(lambda: len(rec.rows(SYMBOL, "gaps")) >= len(HISTORY), 20, "the ledger rows")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    gaps = {g["stream"]: g for g in rec.rows(SYMBOL, "gaps")}
    assert len(rec.rows(SYMBOL, "gaps")) == len(HISTORY) and set(gaps) == {STREAMS[n] for n in HISTORY}
    for name in HISTORY:
        times, gap = _times(rec, name), gaps[STREAMS[name]]
        resumed = times[times.index(last[name]) + 1]
        assert resumed - last[name] > step_ms(name, "5m")
        assert (int(gap["last_good_id"]), int(gap["first_id_after"])) == (last[name], resumed)
        assert (int(gap["last_good_time"]), int(gap["first_time_after"])) == (last[name], resumed)
        assert gap["action"] == "lost"
        assert gap["reason"] == ("not served by the exchange" if name == "fundingRate" else "beyond exchange history")
        after = times[times.index(resumed):]
        assert all(b - a == step_ms(name, "5m") for a, b in zip(after, after[1:])), name
        assert newest[name] - resumed <= 86_400_000          # resumed within the day the simulator keeps
        _assert_served(sim, rec, name, since=resumed)
    _verified(tmp_path, len(HISTORY))
    df = load(os.path.join(str(tmp_path), "data"), SYMBOL, STREAMS["fundingRate"], market="usdm", exact=True)
    assert str(df["funding_rate"].dtype) == "string" and df.index.is_monotonic_increasing
    assert list(df["funding_rate"]) == [r["funding_rate"] for r in rec.rows(SYMBOL, "fundingRate")]


def test_the_simulator_answers_429_past_a_series_request_limit(simulator):
    sim = _sim(simulator)
    session = http(sim)
    url = sim.rest_url + SERIES_ENDPOINTS["fundingRate"].path
    limit = 500                                          # endpoints.REQUEST_POOLS["funding"]
    for _ in range(limit):
        assert session.get(url, params={"symbol": SYMBOL, "limit": 1}, timeout=10).status_code == 200
    refused = session.get(url, params={"symbol": SYMBOL, "limit": 1}, timeout=10)
    assert refused.status_code == 429 and refused.json()["code"] == -1003
    assert 0 < int(refused.headers["Retry-After"]) <= 300
    other = session.get(sim.rest_url + SERIES_ENDPOINTS["openInterestHist"].path,
                        params={"symbol": SYMBOL, "period": "5m"}, timeout=10)
    assert other.status_code == 200 and len(other.json()) == 30     # another pool, another limit
