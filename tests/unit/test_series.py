"""The REST series' pure parts (series.py) and the poller (seriesjobs.py)
against a fake exchange: rows as sent, the schedule, paging from the last
time recorded, one ledger row per hole, the history refusal."""

import gzip
import threading

import pytest

from binance_streamer import csvfiles, series
from binance_streamer.binance import parse
from binance_streamer.binance.budgets import request_budgets
from binance_streamer.binance.endpoints import REQUEST_POOLS, SERIES_ENDPOINTS
from binance_streamer.binance.rest import RestError
from binance_streamer.config import ConfigError, load
from binance_streamer.messages import Gap, Rows
from binance_streamer.outbox import Outbox
from binance_streamer.seriesjobs import SeriesPoller
from binance_streamer.simulator.series import SeriesError, SeriesServer, values

STEP = 300_000


def test_every_series_has_a_schema_an_endpoint_and_its_fields_in_order():
    assert set(series.SERIES) == set(csvfiles.SERIES_SCHEMAS) == set(SERIES_ENDPOINTS)
    for name, spec in series.SERIES.items():
        cols = csvfiles.columns("usdm", series.file_stream(name, "5m"))
        assert cols[-1] == "local_time_us" and len(cols) == 2 + len(spec.fields) + (not spec.history)
        assert SERIES_ENDPOINTS[name].pool in (None, *REQUEST_POOLS)
        assert csvfiles.series_kind(series.file_stream(name, "1h")) == name


def test_a_row_keeps_every_value_as_the_exact_string_sent():
    obj = {"symbol": "BTCUSDT", "sumOpenInterest": "20403.63700000", "sumOpenInterestValue": "150570784.07809979",
           "timestamp": 1583127900000, "somethingNew": "1"}
    assert series.row(series.SERIES["openInterestHist"], obj, 7) == \
        (1583127900000, "1583127900000,20403.63700000,150570784.07809979,,7\n")
    sample = {"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}
    assert series.sample_row(sample, 5, 9) == (1589437530011, "1589437530011,10659.509,5,9\n")


@pytest.mark.parametrize("obj", [
    {"timestamp": "1583127900000", "buySellRatio": "1", "buyVol": "1", "sellVol": "1"},
    {"timestamp": 1583127900000, "buySellRatio": 1.5, "buyVol": "1", "sellVol": "1"},
    {"timestamp": 1583127900000, "buyVol": "1", "sellVol": "1"},
    {"timestamp": 1583127900000, "buySellRatio": "1,5", "buyVol": "1", "sellVol": "1"},
    ["not", "an", "object"],
])
def test_a_row_of_the_wrong_shape_is_refused(obj):
    with pytest.raises(parse.MALFORMED):
        series.row(series.SERIES["takerlongshortRatio"], obj, 0)


def test_settings_name_series_and_periods_and_spot_refuses_them():
    assert load(overrides={"market": "usdm"}).series == [
        "openInterest:5m", "openInterestHist:5m", "topLongShortAccountRatio:5m", "topLongShortPositionRatio:5m",
        "globalLongShortAccountRatio:5m", "takerlongshortRatio:5m", "fundingRate"]
    cfg = load(overrides={"market": "usdm", "series": ["fundingRate", "takerlongshortRatio:1h"],
                          "series_period": "15m"})
    assert series.parse_setting(cfg.series, cfg.series_period) == [("fundingRate", "15m"),
                                                                   ("takerlongshortRatio", "1h")]
    assert load(overrides={"market": "spot"}).series == []
    with pytest.raises(ConfigError, match="USD-M only"):
        load(overrides={"market": "spot", "series": ["fundingRate"]})
    for bad, why in ((["openInterestHist:7m"], "period"), (["fundingRate:1h"], "no period"),
                     (["openInterestHistory"], "unknown series"), (["fundingRate", "fundingRate"], "twice")):
        with pytest.raises(ConfigError, match=why):
            load(overrides={"market": "usdm", "series": bad})


def test_the_last_time_is_read_from_the_newest_complete_row_compressed_days_included(tmp_path):
    stream = "openInterestHist_5m"
    folder = tmp_path / "usdm" / "BTCUSDT"
    folder.mkdir(parents=True)
    head = csvfiles.header("usdm", stream)
    with gzip.open(folder / f"BTCUSDT-{stream}-2026-12-01.csv.gz", "wb") as f:
        f.write(head + b"1764547200000,1,2,,5\n1764547500000,1,2,,5\n")
    torn = folder / f"BTCUSDT-{stream}-2026-12-02.csv"
    torn.write_bytes(head + b"1764633900")        # a crash left half a row: it is not recorded
    assert series.last_recorded(str(tmp_path), "usdm", "BTCUSDT", stream) == 1764547500000
    torn.write_bytes(head + b"1764633900000,1,2,,5\n")
    assert series.last_recorded(str(tmp_path), "usdm", "BTCUSDT", stream) == 1764633900000
    assert series.last_recorded(str(tmp_path), "usdm", "ETHUSDT", stream) is None


def test_the_schedule_settles_one_period_after_each_row_without_the_exchange_clock():
    st = series.State("BTCUSDT", "openInterestHist", "5m", None, now=100.0)
    assert st.due == 100.0                              # at once at start
    st.polled(100.0, 30, 10.0)                          # rows were there: when they came is not known
    assert st.due == 100.0 + 300 - 10                   # so the next ask comes earlier
    st.polled(390.0, 0, 10.0)                           # nothing new yet: again soon
    assert st.due == 400.0
    st.polled(400.0, 1, 10.0)                           # seen within 10 s of its arrival
    assert st.due == 700.0 and st.locked
    st.polled(700.0, 1, 10.0)
    assert st.due == 1000.0
    st.polled(1000.0, 0, 10.0, failed=True)
    assert st.due == 1010.0
    sample = series.State("BTCUSDT", "openInterest", "15m", None, now=0.0)
    sample.polled(5.0, 1, 10.0)
    assert sample.due == 905.0


class FakeExchange:
    """The simulator's series answers, called in-process, with a clock we set."""

    def __init__(self, now_ms, history_days=30.0):
        self.server = SeriesServer(seed=3, history_days=history_days)
        self.now_ms = now_ms
        self.requests = []

    def series(self, name, params, pool=None):
        self.requests.append((name, dict(params)))
        q = {k: str(v) for k, v in params.items()}
        try:
            return self.server.answer(name, params["symbol"], q, self.now_ms)
        except SeriesError as err:
            raise RestError(err.msg, err.status, err.code) from None


class Cfg:
    market, data_dir, series_period, series_poll_interval = "usdm", "/nonexistent", "5m", 1.0

    def __init__(self, names):
        self.series = names


def _poller(exchange, names, last=None):
    outbox, stop = Outbox(), threading.Event()
    poller = SeriesPoller(Cfg(names), ["BTCUSDT"], exchange, {}, threading.RLock(), outbox, stop,
                          clock=lambda: 1.0, monotonic=lambda: 0.0)
    poller.states = [series.State("BTCUSDT", n, p, last, 0.0) for n, p in poller.plan]
    return poller, outbox


def _rows(outbox):
    return [(ident, line) for m in outbox.out if isinstance(m, Rows) for ident, line in zip(m.ids, m.lines)]


NOW = 1_796_447_751_107


def test_a_first_poll_takes_the_latest_rows_then_only_what_is_new():
    ex = FakeExchange(NOW)
    poller, outbox = _poller(ex, ["takerlongshortRatio:5m"])
    st = poller.states[0]
    poller.poll(st)
    rows = _rows(outbox)
    assert len(rows) == series.FIRST_ROWS and "startTime" not in ex.requests[0][1]
    assert [t for t, _ in rows] == list(range(rows[0][0], rows[-1][0] + STEP, STEP))
    v = values(3, "BTCUSDT", "takerlongshortRatio", rows[-1][0])
    assert rows[-1][1] == f"{rows[-1][0]},{v['buySellRatio']},{v['buyVol']},{v['sellVol']},1000000\n"
    outbox.take()
    poller.poll(st)                                     # nothing new: nothing written, nothing twice
    assert _rows(outbox) == [] and ex.requests[-1][1]["startTime"] == rows[-1][0] + 1
    ex.now_ms += 20 * 60_000                            # 20 minutes later: four new rows, at once
    poller.poll(st)
    assert [t for t, _ in _rows(outbox)] == [rows[-1][0] + i * STEP for i in range(1, 5)]


def test_a_long_outage_is_paged_and_has_no_hole():
    last = (NOW - 3 * 86_400_000) // STEP * STEP
    ex = FakeExchange(NOW)
    poller, outbox = _poller(ex, ["openInterestHist:5m"], last=last)
    poller.poll(poller.states[0])
    times = [t for t, _ in _rows(outbox)]
    assert times[0] == last + STEP and all(b - a == STEP for a, b in zip(times, times[1:]))
    assert len(ex.requests) == -(-len(times) // 500) + (len(times) % 500 == 0)
    assert not any(isinstance(m, Gap) for m in outbox.out)


def test_a_hole_older_than_the_history_is_one_ledger_row_before_the_rows_after_it():
    last = (NOW - 3 * 86_400_000) // STEP * STEP
    ex = FakeExchange(NOW, history_days=1)
    poller, outbox = _poller(ex, ["openInterestHist:5m", "fundingRate"], last=last)
    for st in poller.states:
        poller.poll(st)
    gaps = [m.row for m in outbox.out if isinstance(m, Gap)]
    assert [(g["stream"], g["reason"], g["action"]) for g in gaps] == [
        ("openInterestHist_5m", "beyond exchange history", "lost"),
        ("fundingRate", "not served by the exchange", "lost")]
    first_after = {m.stream: m.ids[0] for m in reversed(outbox.out) if isinstance(m, Rows)}
    for g in gaps:
        assert g["last_good_id"] == g["last_good_time"] == last
        assert g["first_id_after"] == g["first_time_after"] == first_after[g["stream"]]
        assert NOW - g["first_id_after"] <= 86_400_000
    index = {id(m): i for i, m in enumerate(outbox.out)}
    gap_at = next(i for i, m in enumerate(outbox.out) if isinstance(m, Gap))
    assert all(index[id(m)] > gap_at for m in outbox.out if isinstance(m, Rows) and m.stream == "openInterestHist_5m")


def test_an_answer_that_does_not_parse_writes_nothing_and_is_asked_again():
    class Garbled(FakeExchange):
        def series(self, name, params, pool=None):
            page = super().series(name, params, pool)
            page[3] = {"timestamp": page[3]["timestamp"]}
            return page
    poller, outbox = _poller(Garbled(NOW), ["globalLongShortAccountRatio:5m"])
    st = poller.states[0]
    poller.poll(st)
    assert outbox.out == [] and st.failures == 1 and st.last is None and st.due == 1.0


def test_the_simulator_refuses_a_start_older_than_its_history_and_limits_requests():
    server = SeriesServer(seed=1, history_days=2)
    q = {"period": "5m", "startTime": str(NOW - 3 * 86_400_000)}
    with pytest.raises(SeriesError) as err:
        server.answer("openInterestHist", "BTCUSDT", q, NOW)
    assert (err.value.status, err.value.code) == (400, -1130)
    funding = server.answer("fundingRate", "BTCUSDT", {"startTime": "0", "limit": "1000"}, NOW)
    assert funding[0]["fundingTime"] >= NOW - 2 * 86_400_000 and funding[-1]["fundingTime"] <= NOW
    assert server.answer("topLongShortPositionRatio", "BTCUSDT", {"period": "1h"}, NOW) == \
        server.answer("topLongShortPositionRatio", "BTCUSDT", {"period": "1h"}, NOW)
    limit, window = REQUEST_POOLS["funding"]
    for i in range(limit):
        server.charge("ip", "funding", 1000.0 + i * 0.01)
    with pytest.raises(SeriesError) as err:
        server.charge("ip", "funding", 1010.0)
    assert err.value.status == 429 and 0 < err.value.retry_after <= window
    server.charge("other ip", "funding", 1010.0)


def test_request_budgets_keep_a_margin_under_each_limit():
    budgets = request_budgets(None, clock=lambda: 50.0)
    assert set(budgets) == set(REQUEST_POOLS)
    pool = budgets["futures_data"]
    taken = 0
    while pool.try_acquire() == 0.0:
        taken += 1
    assert taken == int(REQUEST_POOLS["futures_data"][0] * 0.9)


def test_export_writes_the_months_funding_in_the_archives_format(tmp_path):
    from binance_streamer.analysis.export import export
    folder = tmp_path / "usdm" / "BTCUSDT"
    folder.mkdir(parents=True)
    head = csvfiles.header("usdm", "fundingRate")
    day = 86_400_000
    nov30, dec1 = 1764460800000, 1764460800000 + day          # 2025-11-30, 2025-12-01 (UTC midnight)
    (folder / "BTCUSDT-fundingRate-2025-11-30.csv").write_bytes(
        head + f"{nov30 + 16 * 3_600_000},-0.00010000,90000.1,1\n".encode())
    with gzip.open(folder / "BTCUSDT-fundingRate-2025-12-01.csv.gz", "wb") as f:
        f.write(head + f"{dec1},0.00005000,,1\n{dec1 + 8 * 3_600_000},-0.00002500,90001.2,1\n".encode())
    (folder / "BTCUSDT-fundingRate-2025-12-02.csv").write_bytes(
        head + f"{dec1 + day + 8 * 3_600_000},0.00010000,90002.3,1\n".encode())
    written = export(str(tmp_path), "usdm", "2025-12-01", str(tmp_path / "out"))
    path = str(tmp_path / "out" / "futures" / "um" / "monthly" / "fundingRate" / "BTCUSDT" /
               "BTCUSDT-fundingRate-2025-12.csv")
    assert written == [(path, 3)]
    with open(path) as f:
        assert f.read() == ("calc_time,funding_interval_hours,last_funding_rate\n"
                            f"{dec1},8,0.00005000\n{dec1 + 8 * 3_600_000},8,-0.00002500\n"
                            f"{dec1 + day + 8 * 3_600_000},24,0.00010000\n")
    zipped = export(str(tmp_path), "usdm", "2025-12-02", str(tmp_path / "zipped"), zipped=True)
    assert zipped[0][0].endswith("BTCUSDT-fundingRate-2025-12.zip") and zipped[0][1] == 3


def test_the_hourly_cost_is_one_request_per_row():
    plan = [(name, "5m") for name in series.SERIES]
    assert series.hourly_cost(plan, 10) == {"weight": 120.0, "futures_data": 600.0, "funding": 1.25}
    assert series.hourly_cost([("takerlongshortRatio", "1h")], 1) == {"weight": 0.0, "futures_data": 1.0,
                                                                     "funding": 0.0}


def test_a_request_of_no_weight_waits_only_for_a_pause():
    from binance_streamer.binance.budgets import ROUTINE, RestBudget
    now = [120.0]
    budget = RestBudget(None, 100, margin=0.2, clock=lambda: now[0])
    assert budget.try_acquire(80, ROUTINE) == 0.0
    assert budget.try_acquire(1, ROUTINE) > 0            # the routine share of the minute is used up
    assert budget.try_acquire(0, ROUTINE) == 0.0         # a /futures/data request costs no weight
    budget.pause(5, 429)
    assert budget.try_acquire(0, ROUTINE) == 5.0


def test_verify_finds_an_unexplained_hole_and_funding_off_its_grid():
    import pandas as pd
    from binance_streamer.analysis import seriescheck
    from binance_streamer.analysis.verify import FileReport, Ledger
    no_ledger = Ledger(pd.DataFrame({"stream": [], "last_good_id": [], "first_id_after": [], "action": []}))
    t0 = 1764460800000
    fr = FileReport("BTCUSDT", "openInterestHist_5m", "2025-11-30")
    df = pd.DataFrame({"timestamp": [t0, t0 + STEP, t0 + 3 * STEP, t0 + 3 * STEP]})
    problems = seriescheck.check(fr, df, "openInterestHist_5m", no_ledger, previous=t0 - STEP)
    assert problems == ["1 times recorded twice",
                        f"hole between times {t0 + STEP} and {t0 + 3 * STEP} not in the gap ledger"]
    assert (fr.breaks, fr.explained, fr.first_id, fr.last_id) == (1, 0, t0, t0 + 3 * STEP)
    ledger = Ledger(pd.DataFrame({"stream": ["openInterestHist_5m"], "last_good_id": [t0 + STEP],
                                  "first_id_after": [t0 + 3 * STEP], "action": ["lost"]}))
    fr = FileReport("BTCUSDT", "openInterestHist_5m", "2025-11-30")
    assert seriescheck.check(fr, df.iloc[:3], "openInterestHist_5m", ledger, previous=t0 - 2 * STEP) == [
        f"hole between times {t0 - 2 * STEP} and {t0} not in the gap ledger"]
    assert fr.explained == 1
    funding = pd.DataFrame({"funding_time": [t0, t0 + 8 * 3_600_000 + 3, t0 + 16 * 3_600_000 + 600_000]})
    fr = FileReport("BTCUSDT", "fundingRate", "2025-11-30")
    assert seriescheck.check(fr, funding, "fundingRate", no_ledger, None) == [      # a few ms late is on the grid
        f"1 funding times off the 8-hour grid, e.g. {t0 + 16 * 3_600_000 + 600_000}",
        f"hole between times {t0 + 8 * 3_600_000 + 3} and {t0 + 16 * 3_600_000 + 600_000} not in the gap ledger"]
    samples = pd.DataFrame({"time": [t0, t0 + 7, t0 + 9_999_999]})
    assert seriescheck.check(FileReport("BTCUSDT", "openInterest", "d"), samples, "openInterest", no_ledger, None) == []
