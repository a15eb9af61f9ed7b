"""Hostile input and hostile conditions against a live recorder: mutated
real traffic, REST answers that are not JSON, a second recorder on the same
data_dir, symlinks, a pidfile naming someone else, a stop racing a start.

The captures are cryptofeed's (../shared/realdata/cryptofeed). This product
includes software developed by Bryant Moscon (http://www.bryantmoscon.com/)."""

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from binance_streamer.simulator.audit import compare
from tests.support import REALDATA, Recorder, need, wait_for

pytestmark = pytest.mark.timeout(180)

SPOT = os.path.join(REALDATA, "cryptofeed", "BINANCE-b38f7c.0")
STREAMS = ["aggTrade", "depth@100ms", "bookTicker"]


def _worker_counts(status):
    total = {}
    for name, child in status.get("children", {}).items():
        for key, value in child.get("counts", {}).items() if name.startswith("worker") else ():
            total[key] = total.get(key, 0) + value
    return total


def _no_restarts(status):
    return all(p["state"] == "RUNNING" and p["restarts"] == 0 for p in status["processes"])


def test_mutated_real_traffic_is_refused_counted_and_ledgered_and_nothing_dies(simulator, tmp_path):
    """Every 7th frame of real traffic gets a hostile value, loses a field or
    is cut short (seeded): no process or thread dies, every refused event is
    counted, and every other event is on disk exactly as sent, or its hole
    is in the ledger."""
    need(SPOT)
    sim = simulator(replay=SPOT, replay_speed=8.0, replay_seconds=60, write_each_frame=True, seed=5,
                    faults={"mutate_every": 7})
    symbols = list(sim.exchange.symbols)
    rec = Recorder(tmp_path, sim, symbols, streams=STREAMS, symbols_per_worker=10).start()
    try:
        wait_for(lambda: sim.call(lambda: sim.exchange.replay.finished), 60, "the replay to end")
        rec.wait_status(lambda s: s["children"].get("writer", {}).get("pending_rows") == 0, 20, "rows on disk")
        status = rec.status()
        assert _no_restarts(status), status["processes"]
    finally:
        assert rec.stop() == 0, rec.log_tail()
    report = compare(sim, rec, set(symbols))
    rejected = sum(r["rejected"] for r in report.values())
    assert rejected > 100 and sim.stats()["frames_mutated"] > rejected / 2
    for stream, r in report.items():
        assert r["unexplained"] == [], f"{stream}: {len(r['unexplained'])} missing without a ledger row"
        assert r["mismatched"] == [] and r["duplicates"] == 0, (stream, r["mismatched"][:3], _explain(
            sim, rec, stream, r["mismatched"][:1]))
    assert _worker_counts(status)["malformed"] >= rejected - 10       # the last few may come after the report
    assert _worker_counts(status)["errors"] == 0
    ledger = [g for s in symbols for g in rec.rows(s, "gaps")]
    assert any(g["reason"] == "malformed event" for g in ledger)
    with open(os.path.join(rec.dir, "logs", "binance-streamer.log")) as f:
        assert "Traceback" not in f.read()


def test_rest_answers_that_are_not_json_are_retried_and_recording_goes_on(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=71, rate=200)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "depth@100ms", "bookTicker"]).start()
    try:
        rec.wait_status(lambda s: s["children"].get("orderbook", {}).get("in_sync") == 1, 30, "book in sync")
        sim.faults(rest_garbage=4, drop="abort")      # the resync's snapshot and the backfills get garbage first
        rec.wait_status(lambda s: s["children"].get("orderbook", {}).get("resyncs", 0) >= 1, 30, "a resync")
        rec.wait_status(lambda s: s["children"].get("orderbook", {}).get("in_sync") == 1, 60, "in sync again")
        status = rec.status()
    finally:
        assert rec.stop() == 0, rec.log_tail()
    assert sim.stats()["rest_garbage"] == 4
    assert _no_restarts(status), status["processes"]
    worker = status["children"]["worker-0"]
    assert worker["rest_failures"] >= 4
    with open(os.path.join(rec.dir, "logs", "binance-streamer.log")) as f:
        log = f.read()
    assert "Traceback" not in log and ("instead of JSON" in log or "wrong shape" in log or "does not parse" in log)
    ids = [int(r["agg_trade_id"]) for r in rec.rows("BTCUSDT", "aggTrade")]
    assert ids == list(range(ids[0], ids[0] + len(ids)))      # the hole after the drop was backfilled


def _explain(sim, rec, stream, keys):
    """The frames sent and the rows on disk of a mismatched event, for the failure message."""
    from binance_streamer.simulator.audit import disk_index, frame_key, frames_by_stream
    sent = []
    for _, s, d in frames_by_stream(sim.journal()):
        try:
            if s == stream and keys and frame_key(s, d) == keys[0]:
                sent.append(d)
        except (KeyError, TypeError):
            pass
    symbol, kind = stream.split("@", 1)
    return sent, disk_index(rec, symbol.upper(), kind).get(keys[0]) if keys else None


def _cli(cwd, *args, timeout=60):
    out = subprocess.run([sys.executable, "-m", "binance_streamer", *args], cwd=str(cwd), capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return out.returncode, out.stdout, out.stderr


def test_exchange_info_that_is_a_json_list_is_one_line_at_start(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), rate=5, faults={"rest_garbage": 3})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"rest_url": sim.rest_url, "ws_url": sim.ws_base, "ca_file": sim.ca_file}))
    code, out, err = _cli(tmp_path, "--config", str(config), "--list-symbols")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "cannot read exchangeInfo" in err and "JSON" in err


def test_a_second_recorder_on_the_same_data_dir_is_refused_naming_the_first(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=72, rate=50)
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    first = Recorder(tmp_path / "a", sim, ["BTCUSDT"], streams=["aggTrade"], data_dir=str(tmp_path / "data"))
    first.start()
    try:
        second = Recorder(tmp_path / "b", sim, ["BTCUSDT"], streams=["aggTrade"], data_dir=str(tmp_path / "data"))
        code, _, err = _cli(second.dir, "--config", second.config)
        assert code == 1 and err.count("\n") == 1, err
        assert f"data_dir '{tmp_path / 'data'}' is in use by another recorder (pid {first.proc.pid})" in err
        code, _, err = _cli(second.dir, "--config", second.config, "--daemon", "start")
        assert code == 1 and "is in use by another recorder" in err and err.count("\n") == 1, err
    finally:
        assert first.stop() == 0, first.log_tail()


def test_a_pidfile_that_is_a_symlink_is_refused_and_its_target_untouched(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=73, rate=20)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade"])
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.makedirs(tmp_path / "run")
    os.symlink(target, tmp_path / "run" / "binance-streamer.pid")
    code, _, err = _cli(tmp_path, "--config", rec.config)
    assert code == 1 and "is a symlink" in err and err.count("\n") == 1, err
    assert target.read_text() == "keep me\n"


def test_stop_signals_only_a_process_it_can_prove_is_the_recorder(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("symbols: [BTCUSDT]\n")
    os.makedirs(tmp_path / "run")
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        import psutil
        pidfile = tmp_path / "run" / "binance-streamer.pid"
        pidfile.write_text(f"{bystander.pid} {psutil.Process(bystander.pid).create_time():.2f}\n")
        with open(pidfile) as held:
            fcntl.flock(held, fcntl.LOCK_EX)           # as a live recorder would hold it
            code, _, err = _cli(tmp_path, "--config", str(config), "--daemon", "stop", "--force")
        assert code == 1 and "nothing was signalled" in err, err
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(5)


def test_stop_force_of_a_foreground_recorder_spares_the_script_that_started_it(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=74, rate=20)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade"])
    script = tmp_path / "run.sh"
    script.write_text(f"{sys.executable} -m binance_streamer --config {rec.config}\necho after > {tmp_path}/after\n")
    shell = subprocess.Popen(["sh", str(script)], cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (rec.status() or {}).get("state") == "RUNNING", 30, "the recorder to run")
        code, _, err = _cli(tmp_path, "--config", rec.config, "--daemon", "stop", "--force")
        assert code == 0 and "killed" in err, err
        wait_for(lambda: (tmp_path / "after").exists(), 20, "the script to go on after its recorder")
        assert shell.wait(10) == 0
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)


def test_a_stop_that_races_the_start_is_a_clean_stop_and_the_next_start_works(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=75, rate=20)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade"])
    pidfile = tmp_path / "run" / "binance-streamer.pid"
    starting = subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--daemon",
                                 "start"], cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the pidfile", interval=0.002)
        code, _, err = _cli(tmp_path, "--config", rec.config, "--daemon", "stop")
        assert code in (0, 1) and "killed" not in err, err
        starting.wait(90)
        t0 = time.monotonic()
        code, _, err = _cli(tmp_path, "--config", rec.config, "--daemon", "start", timeout=90)
        assert code == 0 and "started" in err, err
        assert time.monotonic() - t0 < 30
    finally:
        _cli(tmp_path, "--config", rec.config, "--daemon", "stop", "--force")
        if starting.poll() is None:
            starting.kill()
