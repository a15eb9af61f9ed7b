"""kill -9 of the compressor at each step of a run; then a writer starts (as
after a restart), resolves what the run left and compresses the rest: every
row exists once, in exactly one file, and --verify passes."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from binance_streamer import compression, compressor, config, csvfiles
from binance_streamer.analysis import load
from binance_streamer.analysis.verify import verify
from binance_streamer.analysis.load import load_file
from binance_streamer.writer import Writer
from tests.support import Recorder, wait_for

DAY1 = "2026-01-01"
MS1 = 1767225600000


def _cfg(tmp_path, **kw):
    return config.load(None, {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                              "log_dir": str(tmp_path / "logs"), "symbols": "BTCUSDT", "compress_after": 0,
                              **kw})


def _record_day1(tmp_path, rows=20000):
    """A past day written by the writer itself (compression off meanwhile)."""
    w = Writer(_cfg(tmp_path, compression="none"))
    ids = list(range(1, rows + 1))
    w.add_rows("BTCUSDT", "aggTrade", DAY1, ids,
               [f"{a},1.{a % 97:02d},0.{a:05d},{2 * a},{2 * a + 1},{MS1 + a},True,True,{MS1 + a},"
                f"{(MS1 + a) * 1000 + 3},0\n" for a in ids])
    w.close()
    return csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", DAY1)


def _waits_for_a_lock(pid):
    """/proc/locks lists a blocked waiter as '-> FLOCK ... <pid> ...'."""
    with open("/proc/locks") as f:
        return any("->" in line and f" {pid} " in line for line in f)


def _files(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("step", ["compressed", "renamed", "unlinking"])
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_kill_9_at_each_step_loses_nothing_and_doubles_nothing(tmp_path, step, codec):
    plain = _record_day1(tmp_path)
    with open(plain, "rb") as f:
        original = f.read()
    before = load(str(tmp_path / "data"), "BTCUSDT", "aggTrade", exact=True)
    os.makedirs(tmp_path / "run", exist_ok=True)
    run = subprocess.Popen([sys.executable, "-m", "binance_streamer.compressor", "--codec", codec,
                            "--lock", str(tmp_path / "run" / compressor.LOCK), "--stop-at", step, plain],
                           stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(plain + ".step") or run.poll() is not None, 30, f"step {step}")
        assert run.poll() is None, run.stderr.read().decode()
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
    os.unlink(plain + ".step")
    folder = os.path.dirname(plain)
    suffix = csvfiles.COMPRESSED[codec]
    left = {"compressed": [plain, plain + suffix + ".tmp"], "renamed": [plain, plain + suffix],
            "unlinking": [plain, plain + suffix]}[step]
    assert _files(folder) == sorted(os.path.basename(p) for p in left)
    # what was left reads as the day, each row once (readers may run before any restart)
    with compression.open_day(plain) as f:
        assert f.read() == original

    w = Writer(_cfg(tmp_path, compression=codec))       # the restart
    w.recover()
    assert w.seq.last[("BTCUSDT", "aggTrade")] == 20000

    def settled():
        w.housekeeping()
        return _files(folder) == [os.path.basename(plain) + suffix] and w.compressions.run is None

    wait_for(settled, 60, "the day compressed after the restart", interval=0.05)
    w.close()
    assert compression.read_all(plain + suffix) == original       # every row once, in one file
    pd.testing.assert_frame_equal(before, load(str(tmp_path / "data"), "BTCUSDT", "aggTrade", exact=True))
    report = verify(str(tmp_path / "data"), "spot")
    assert report.ok, [str(p) for p in report.problems]


def test_a_run_of_a_dead_writer_holds_the_lock_and_the_next_waits(tmp_path):
    plain = _record_day1(tmp_path, rows=2000)
    os.makedirs(tmp_path / "run", exist_ok=True)
    cmd = [sys.executable, "-m", "binance_streamer.compressor", "--codec", "gzip",
           "--lock", str(tmp_path / "run" / compressor.LOCK), plain]
    first = subprocess.Popen(cmd[:-1] + ["--stop-at", "renamed", plain])
    second = None
    try:
        wait_for(lambda: os.path.exists(plain + ".step"), 30, "the first run at its rename")
        second = subprocess.Popen(cmd)
        wait_for(lambda: _waits_for_a_lock(second.pid), 30, "the second run waiting for the lock")
        assert os.path.exists(plain) and second.poll() is None
    finally:
        first.kill()
        first.wait(10)
    assert second.wait(30) == compressor.DONE
    os.unlink(plain + ".step")
    assert _files(os.path.dirname(plain)) == [os.path.basename(plain) + ".gz"]


def test_the_recorder_compresses_a_past_day_and_every_reader_gets_it_back(simulator, tmp_path):
    """A day recorded from the simulator becomes yesterday's (its files are
    renamed); the recorder started again compresses it by itself while it
    records today, and the day reads back value for value and verifies."""
    sim = simulator(market="spot", symbols=("BTCUSDT",), seed=7, rate=200)
    streams = ["aggTrade", "trade", "depth@100ms", "bookTicker"]
    first = Recorder(tmp_path, sim, ["BTCUSDT"], streams=streams, compression="none").start()
    first.wait_status(lambda st: all(st.get("children", {}).get("writer", {}).get("streams", {})
                                     .get(f"BTCUSDT/{k}", {}).get("rows", 0) > least
                                     for k, least in (("aggTrade", 100), ("trade", 100), ("depth", 100),
                                                      ("bookTicker", 100), ("orderbook", 2))),
                      60, "rows of every stream (orderbook: one a second)")
    assert first.stop() == 0
    folder = tmp_path / "data" / "spot" / "BTCUSDT"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    before = {}
    for name in os.listdir(folder):
        if name.endswith(f"-{today}.csv"):
            old = str(folder / name.replace(today, yesterday))
            os.rename(folder / name, old)
            stream = csvfiles.parse_name(name)[1]
            before[stream] = (old, load_file(old, "spot", stream, exact=True))
    assert {"aggTrade", "trade", "depth", "depthSnapshot", "orderbook", "bookTicker"} <= set(before)

    second = Recorder(tmp_path, sim, ["BTCUSDT"], streams=streams, compression="zstd", compress_after=0).start()
    try:
        second.wait_status(lambda st: not any(os.path.exists(p) for p, _ in before.values())
                           and st.get("children", {}).get("writer", {}).get("streams", {})
                           .get("BTCUSDT/aggTrade", {}).get("rows", 0) > 100, 60,
                           "yesterday compressed while today is recorded")
    finally:
        assert second.stop() == 0
    for stream, (old, frame) in before.items():
        assert not os.path.exists(old) and os.path.exists(old + ".zst")
        pd.testing.assert_frame_equal(frame, load_file(old + ".zst", "spot", stream, exact=True))
    assert os.path.exists(folder / f"BTCUSDT-aggTrade-{today}.csv")          # today's stays plain
    log = "".join(open(p, errors="replace").read() for p in (tmp_path / "logs").glob("*.log"))
    assert f"compressor: INFO BTCUSDT-aggTrade-{yesterday}.csv.zst:" in log     # the runs' lines in the log
    report = verify(str(tmp_path / "data"), "spot")
    assert report.ok, [str(p) for p in report.problems]
    assert {f.day for f in report.files} == {yesterday, today}
