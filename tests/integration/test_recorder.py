"""The recording pipeline end to end, against the simulator: exactly-once
files, crash recovery with backfill, reconnects, bad frames, bad config."""

import os
import signal
import subprocess
import sys

import pytest

from binance_streamer.simulator.audit import compare
from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(150)

SPOT_STREAMS = ["aggTrade", "trade", "depth@100ms", "kline_1s", "bookTicker"]
USDM_STREAMS = ["aggTrade", "depth@100ms", "kline_1m", "bookTicker"]
SYMBOLS = {"spot": ("BTCUSDT", "ETHUSDT"), "usdm": ("BTCUSDT", "ETHUSDT"), "coinm": ("BTCUSD_PERP", "ETHUSD_PERP")}


def _rows_written(status):
    w = status.get("children", {}).get("writer", {})
    return sum(v["rows"] for v in w.get("streams", {}).values())


def _record(rec, rows, timeout=60, streams=()):
    """Until ``rows`` rows are written, and some of each of ``streams``
    (``SYMBOL/stream`` keys of the writer's status)."""
    def enough(status):
        written = status.get("children", {}).get("writer", {}).get("streams", {})
        return _rows_written(status) >= rows and all(written.get(k, {}).get("rows") for k in streams)
    rec.wait_status(enough, timeout, f"{rows} rows written, with {', '.join(streams) or 'any streams'}")


def _assert_exact(report, streams_expected):
    for stream in streams_expected:
        r = report.get(stream)
        assert r is not None and r["expected"] > 0, f"{stream}: nothing was sent or recorded"
    for stream, r in report.items():
        assert r["missing"] == [], f"{stream}: {len(r['missing'])} frames missing, e.g. {r['missing'][:5]}"
        assert r["mismatched"] == [], f"{stream}: rows differ from the frames sent: {r['mismatched'][:5]}"
        assert r["duplicates"] == 0, f"{stream}: duplicated rows"


def _ids(rec, symbol, stream="aggTrade", column="agg_trade_id"):
    return [int(r[column]) for r in rec.rows(symbol, stream)]


def _gaps(rec, symbol):
    return rec.rows(symbol, "gaps")


@pytest.mark.parametrize("market,tls", [("spot", True), ("usdm", True), ("coinm", True), ("spot", False)],
                         ids=["spot", "usdm", "coinm", "spot-plain-ws"])
def test_sigterm_mid_stream_every_message_on_disk_exactly_once(simulator, tmp_path, market, tls):
    symbols = SYMBOLS[market]
    sim = simulator(market=market, symbols=symbols, seed=11, rate=200, tls=tls)
    streams = SPOT_STREAMS if market == "spot" else USDM_STREAMS
    rec = Recorder(tmp_path, sim, list(symbols), streams=streams).start()
    try:
        _record(rec, 4000, streams=[f"{s}/{k}" for s in symbols for k in streams
                                    if k != "kline_1m" and not k.startswith("depth")])
    finally:
        code = rec.stop(signal.SIGTERM)
    assert code == 0, rec.log_tail()
    expected = [f"{s.lower()}@{k}" for s in symbols for k in streams if not k.startswith("kline_1m")]
    _assert_exact(compare(sim, rec, set(symbols)), expected)
    assert rec.rows(symbols[0], "gaps") == [] and rec.rows(symbols[1], "gaps") == []
    assert rec.status()["state"] == "STOPPED"


def test_killed_worker_is_respawned_and_aggtrades_backfilled(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), seed=12, rate=300)
    rec = Recorder(tmp_path, sim, ["BTCUSDT", "ETHUSDT"], streams=SPOT_STREAMS).start()
    try:
        _record(rec, 2000)
        os.kill(rec.pid_of("worker-0"), signal.SIGKILL)
        rec.wait_status(lambda s: next(p for p in s["processes"] if p["name"] == "worker-0")["restarts"] >= 1
                        and all(p["state"] == "RUNNING" for p in s["processes"]), 30, "worker-0 respawned")
        wait_for(lambda: any(g["stream"] == "aggTrade" and g["action"] == "backfilled"
                             for g in _gaps(rec, "BTCUSDT")), 30, "the aggTrade hole to be backfilled")
        _record(rec, _rows_written(rec.status()) + 500)
    finally:
        assert rec.stop() == 0, rec.log_tail()
    # only worker-0 (BTCUSDT) restarted: its downtime is ledgered; ETHUSDT has no hole at all
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = _ids(rec, symbol)
        assert len(ids) == len(set(ids)), "duplicate aggTrades"
        assert sorted(ids) == list(range(min(ids), max(ids) + 1)), "aggTrade ids are not contiguous"
    gaps = _gaps(rec, "BTCUSDT")
    for stream in ("trade", "depth", "bookTicker"):
        assert any(g["stream"] == stream and g["reason"] == "start" and g["action"] == "lost" for g in gaps), stream
    assert [g for g in _gaps(rec, "ETHUSDT") if g["stream"] != "orderbook"] == []
    assert any(r["backfilled"] == "1" for r in rec.rows("BTCUSDT", "aggTrade"))
    for stream, r in compare(sim, rec, {"BTCUSDT", "ETHUSDT"}).items():
        assert r["unexplained"] == [] and r["duplicates"] == 0 and r["mismatched"] == [], stream


def test_dropped_connections_leave_no_silent_hole(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), seed=13, rate=300)
    rec = Recorder(tmp_path, sim, ["BTCUSDT", "ETHUSDT"], streams=SPOT_STREAMS).start()
    try:
        _record(rec, 1000)
        sim.faults(drop_every=2.0)
        wait_for(lambda: sum(1 for c in sim.connections() if c["close_reason"] == "fault: drop") >= 6, 30,
                 "three rounds of drops")
        sim.faults(drop_every=0)
        _record(rec, _rows_written(rec.status()) + 1000)
    finally:
        assert rec.stop() == 0, rec.log_tail()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = _ids(rec, symbol)
        assert sorted(ids) == ids == list(range(ids[0], ids[-1] + 1)), f"{symbol}: aggTrades not contiguous"
        trades = _ids(rec, symbol, "trade", "id")
        gaps = _gaps(rec, symbol)
        reconnects = [g for g in gaps if g["reason"] == "reconnect"]
        assert reconnects, f"{symbol}: no reconnect in the gap ledger"
        # every jump in the trade ids is a ledger row
        for a, b in zip(trades, trades[1:]):
            if b != a + 1:
                assert any(g["stream"] == "trade" and int(g["last_good_id"]) == a and int(g["first_id_after"]) == b
                           for g in gaps), f"{symbol}: trade hole {a}..{b} not in the ledger"
    workers = rec.status()["children"]
    assert sum(c["reconnects"] for w in workers.values() if "connections" in w for c in w["connections"]) >= 4
    # A dropped connection still delivered everything sent before its close frame.
    _assert_exact(compare(sim, rec, {"BTCUSDT", "ETHUSDT"}), ["btcusdt@aggTrade"])


def test_malformed_frames_and_unknown_events_are_counted(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=14, rate=100)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=SPOT_STREAMS).start()
    try:
        sim.faults(malformed_every=0.3, unknown_every=0.3)
        rec.wait_status(lambda s: s["children"].get("worker-0", {}).get("counts", {}).get("malformed", 0) >= 3
                        and s["children"]["worker-0"]["counts"]["unknown"] >= 3, 30, "bad frames counted")
        sim.faults(malformed_every=0, unknown_every=0)
        _record(rec, _rows_written(rec.status()) + 300)
        assert all(p["restarts"] == 0 for p in rec.status()["processes"])
    finally:
        assert rec.stop() == 0, rec.log_tail()
    _assert_exact(compare(sim, rec, {"BTCUSDT"}), ["btcusdt@aggTrade", "btcusdt@bookTicker"])


def _run_cli(tmp_path, *args):
    out = subprocess.run([sys.executable, "-m", "binance_streamer", *args], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60)
    return out.returncode, out.stderr


def _one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("binance-streamer: error: "), err
    for n in needles:
        assert n in err, err


def test_bad_config_one_line_and_exit_2(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), rate=10)
    base = ["--rest-url", sim.rest_url, "--ws-url", sim.ws_base, "--ca-file", sim.ca_file]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("flush_intervall: 2\n")
    _one_line_error(*_run_cli(tmp_path, "--config", str(cfg), *base), "unknown setting 'flush_intervall'",
                    "did you mean 'flush_interval'")
    cfg.write_text("batch_size: many\n")
    _one_line_error(*_run_cli(tmp_path, "--config", str(cfg), *base), "batch_size", "whole number")
    _one_line_error(*_run_cli(tmp_path, "--symbols", "BTCUSDT,FOOUSDT", *base), "'FOOUSDT'", "--list-symbols")
    _one_line_error(*_run_cli(tmp_path, "--data-dir", "/proc/nope", *base), "data_dir '/proc/nope'",
                    "not writable")
    _one_line_error(*_run_cli(tmp_path, "--market", "usdm", "--symbols", "BTCUSDT", *base),
                    "has no usdm exchangeInfo")
    _one_line_error(*_run_cli(tmp_path, "--frobnicate"), "unrecognized arguments")
    # nothing was started: no data, no status file
    assert not (tmp_path / "data" / "spot").exists()
    assert not (tmp_path / "run" / "status.json").exists()


def test_files_load_with_pandas_into_documented_dtypes(simulator, tmp_path):
    pd = pytest.importorskip("pandas")
    from binance_streamer import csvfiles
    from binance_streamer.simulator.audit import frames_by_stream

    sim = simulator(symbols=("BTCUSDT",), seed=15, rate=200)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=SPOT_STREAMS).start()
    try:
        rec.wait_status(lambda s: "BTCUSDT/kline_1s" in s["children"].get("writer", {}).get("streams", {})
                        and _rows_written(s) >= 1500, 30, "rows of every stream")
    finally:
        assert rec.stop() == 0
    kinds = set()
    for path in rec.files():
        symbol, stream, day = csvfiles.parse_name(os.path.basename(path))
        kinds.add(stream)
        dtypes = csvfiles.pandas_dtypes("spot", stream)
        df = pd.read_csv(path, dtype=dtypes)
        assert list(df.columns) == csvfiles.columns("spot", stream)
        assert {c: str(t) for c, t in df.dtypes.items()} == dtypes
        assert len(df) > 0
        plain = pd.read_csv(path)          # no arguments: numbers come out numeric
        assert all(str(plain[c].dtype) in ("int64", "float64", "bool") for c in plain.columns
                   if dtypes[c] in ("Int64",) and plain[c].notna().all())
    assert kinds == {"aggTrade", "trade", "depth", "kline_1s", "bookTicker", "depthSnapshot", "orderbook"}
    sent = {d["a"]: (d["p"], d["q"]) for _, stream, d in frames_by_stream(sim.journal()) if stream.endswith("@aggTrade")}
    agg_path = next(p for p in rec.files() if "-aggTrade-" in p)
    df = pd.read_csv(agg_path, dtype=csvfiles.pandas_dtypes("spot", "aggTrade"))
    assert [(p, q) for p, q in zip(df["price"], df["quantity"])] == [sent[a] for a in df["agg_trade_id"]]


def test_silent_connection_is_replaced(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=16, rate=100)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "bookTicker"], silence_timeout=1.5).start()
    try:
        _record(rec, 100)
        sim.faults(stall=5)       # connected, but no data and no pings
        rec.wait_status(lambda s: s["children"]["worker-0"]["connections"][0]["reconnects"] >= 1, 20,
                        "a reconnect after the silence")
        closed = [c for c in sim.connections() if c["closed"]]
        assert closed and closed[0]["close_reason"] == "client closed"
        # once data flows again (the stall ends), the hole is in the ledger
        wait_for(lambda: any(g["reason"] == "reconnect" for g in _gaps(rec, "BTCUSDT")), 20, "a reconnect row")
    finally:
        assert rec.stop() == 0, rec.log_tail()
