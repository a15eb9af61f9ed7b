"""The production path: real captured Binance traffic over wss:// and
https://, each frame in its own TLS record as a server writing message by
message sends it, recorded with the default settings.

The captures are cryptofeed's (../shared/realdata/cryptofeed). This product
includes software developed by Bryant Moscon (http://www.bryantmoscon.com/)."""

import os
import signal
import time

import pytest

from binance_streamer.settings import BY_NAME
from binance_streamer.simulator.audit import compare, frame_key, frames_by_stream
from tests.support import REALDATA, DiskLatency, Recorder, need, wait_for

pytestmark = pytest.mark.timeout(300)

CAPTURES = os.path.join(REALDATA, "cryptofeed")
SPOT = os.path.join(CAPTURES, "BINANCE-b38f7c.0")           # 10 symbols
USDM = os.path.join(CAPTURES, "BINANCE_FUTURES-1125a2.0")   # 5 symbols
STREAMS = ["aggTrade", "depth@100ms", "bookTicker"]
# The recorder's own defaults, not the suite's faster ones.
DEFAULTS = {k: BY_NAME[k].default for k in ("flush_interval", "status_interval", "read_interval", "batch_interval",
                                             "restart_min_delay", "reconnect_min_delay", "reconnect_max_delay")}


def _sent(sim, symbols):
    """``{stream: number of distinct events}`` the simulator sent for ``symbols``."""
    out = {}
    for _, stream, d in frames_by_stream(sim.journal()):
        if stream.split("@")[0].upper() in symbols and frame_key(stream, d) is not None:
            out.setdefault(stream, set()).add(frame_key(stream, d))
    return {stream: len(keys) for stream, keys in out.items()}


def _all_on_disk(sim, rec, symbols):
    """Every event sent is on disk once, with the strings sent (the report)."""
    sent, report = _sent(sim, symbols), compare(sim, rec, symbols)
    done = sent and all(report.get(s, {}).get("found") == n for s, n in sent.items())
    return report if done else None


def _assert_exact(report, sent):
    assert set(report) == set(sent)
    for stream, r in report.items():
        assert r["expected"] == sent[stream], f"{stream}: {sent[stream] - r['expected']} frames never read"
        assert r["missing"] == [], f"{stream}: {len(r['missing'])} missing, e.g. {r['missing'][:5]}"
        assert r["mismatched"] == [] and r["duplicates"] == 0, stream


def _record_the_replay(sim, rec, symbols, replay_timeout, disk_timeout, at_least):
    """Start ``rec``, wait for the replay to end and for every frame sent
    to be on disk, stop; then every event sent is on disk exactly once."""
    rec.start()
    try:
        wait_for(lambda: sim.call(lambda: sim.exchange.replay.finished), replay_timeout, "the replay to end")
        wait_for(lambda: _all_on_disk(sim, rec, set(symbols)), disk_timeout, "every frame sent to be on disk",
                 interval=0.25)
    finally:
        code = rec.stop(signal.SIGTERM)
    assert code == 0, rec.log_tail()
    sent = _sent(sim, set(symbols))
    assert sum(sent.values()) > at_least
    _assert_exact(compare(sim, rec, set(symbols)), sent)


@pytest.mark.parametrize("per_worker", [1, 10], ids=["a-connection-per-symbol", "one-connection"])
def test_real_traffic_at_real_pace_one_tls_record_per_frame_exactly_once(simulator, tmp_path, per_worker):
    """The default settings, with one worker (so one connection) per symbol,
    and with all ten symbols on one connection (about 100 messages a second),
    far more than one TLS record per read_interval keeps up with."""
    need(SPOT)
    seconds = 15
    sim = simulator(replay=SPOT, replay_speed=1.0, replay_seconds=seconds, replay_connections=10 // per_worker,
                    write_each_frame=True)
    symbols = list(sim.exchange.symbols)
    assert len(symbols) == 10
    rec = Recorder(tmp_path, sim, symbols, streams=STREAMS, symbols_per_worker=per_worker, **DEFAULTS)
    with DiskLatency(tmp_path) as latency:
        # A recorder that keeps pace has everything on disk one flush after the last frame.
        _record_the_replay(sim, rec, symbols, seconds + 90, DEFAULTS["flush_interval"] + 3, at_least=1500)
    p99 = latency.percentile(0.99)
    assert len(latency.latencies) > 1500
    assert p99 <= DEFAULTS["flush_interval"] + 0.1, f"receive-to-disk p99 {p99:.3f} s"


@pytest.mark.parametrize("capture", [SPOT, USDM], ids=["spot", "usdm"])
def test_real_traffic_at_full_speed_over_tls_exactly_once(simulator, tmp_path, capture):
    """The whole capture at once: as fast as the recorder reads."""
    need(capture)
    market = "usdm" if "FUTURES" in capture else "spot"
    sim = simulator(replay=capture, replay_speed=0, replay_connections=1 if market == "spot" else 2,
                    write_each_frame=True)
    symbols = list(sim.exchange.symbols)
    rec = Recorder(tmp_path, sim, symbols, streams=STREAMS, symbols_per_worker=len(symbols), **DEFAULTS)
    _record_the_replay(sim, rec, symbols, 60, 30, at_least=5000)


def _connections(status):
    return [c for name, child in status.get("children", {}).items() if name.startswith("worker")
            for c in child.get("connections", [])]


def test_a_recorder_that_falls_behind_says_so_and_recovers(simulator, tmp_path):
    """A worker paused for 3 s reads a backlog 3 s old: a WARNING, health
    DEGRADED with the lag, then OK again once it has caught up."""
    sim = simulator(symbols=("BTCUSDT",), seed=21, rate=200)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "trade", "depth@100ms"], max_lag=1.0).start()
    try:
        rec.wait_status(lambda s: s["health"]["state"] == "OK" and any(c["lag_s"] is not None
                                                                      for c in _connections(s)),
                        30, "health OK with the lag measured")
        healthy = _connections(rec.status())
        assert all(0 <= c["lag_s"] < 1.0 and c["unread_bytes"] is not None for c in healthy), healthy
        worker = rec.pid_of("worker-0")
        os.kill(worker, signal.SIGSTOP)
        resume_at = time.monotonic() + 3.0          # the fault: a worker that does not run for 3 s
        try:
            wait_for(lambda: time.monotonic() >= resume_at, 5, "the pause to last 3 s", interval=0.1)
        finally:
            os.kill(worker, signal.SIGCONT)
        degraded = rec.wait_status(lambda s: s["health"]["state"] == "DEGRADED", 15, "health DEGRADED")
        rec.wait_status(lambda s: s["health"]["state"] == "OK", 30, "health OK again")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    assert any("behind the exchange" in p for p in degraded["health"]["problems"]), degraded["health"]
    with open(os.path.join(rec.dir, "logs", "binance-streamer.log")) as f:
        log = f.read()
    assert "behind by" in log and "caught up" in log
    for stream, r in compare(sim, rec, {"BTCUSDT"}).items():     # the pause lost nothing
        assert r["expected"] > 0 and r["missing"] == [] and r["duplicates"] == 0, (stream, r["missing"][:5])


def test_real_traffic_over_tls_through_drops_and_three_second_connections(simulator, tmp_path):
    """Binance's connection limit every 3 s (handovers) and a dropped
    connection, on real traffic over TLS: nothing twice, and every event
    that is not on disk is in the gap ledger."""
    need(SPOT)
    seconds = 20
    sim = simulator(replay=SPOT, replay_speed=1.0, replay_seconds=seconds, write_each_frame=True,
                    lifetime=3.0, shutdown_notice=1.0)
    symbols = list(sim.exchange.symbols)
    rec = Recorder(tmp_path, sim, symbols, streams=STREAMS, symbols_per_worker=10).start()
    try:
        wait_for(lambda: sim.call(lambda: sim.exchange.replay.next) > 1000, 30, "a third of the replay")
        sim.faults(drop="abort")                       # cut without a close frame
        wait_for(lambda: sim.call(lambda: sim.exchange.replay.finished), seconds + 60, "the replay to end")
        rec.wait_status(lambda s: sum(c["handovers"] for c in _connections(s)) >= 3, 30, "handovers")
    finally:
        assert rec.stop() == 0, rec.log_tail()
    report = compare(sim, rec, set(symbols))
    assert sum(r["found"] for r in report.values()) > 1500
    for stream, r in report.items():
        assert r["unexplained"] == [], f"{stream}: {len(r['unexplained'])} missing without a ledger row"
        assert r["mismatched"] == [] and r["duplicates"] == 0, stream
    reconnects = [g for s in symbols for g in rec.rows(s, "gaps") if g["reason"] == "reconnect"]
    assert reconnects, "the drop left no ledger row"
