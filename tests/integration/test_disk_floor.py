"""The disk floor on a real small disk: data_dir is a tmpfs the test mounts,
min_free_disk sits just under its free space, and a filler file pushes it
below. Shed: depth, snapshots and orderbook rows stop, the rest goes on,
every file stays whole, the ledger says what was not written, and freeing
the space resumes recording. Stop: the recorder stops in order by itself."""

import csv
import os
import signal
import subprocess

import pytest

from binance_streamer.simulator.audit import compare
from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(300)

MiB = 2**20
SIZE = 32 * MiB
FLOOR = 12 * MiB                     # min_free_disk: well under the empty tmpfs's 32 MiB
SYMBOL = "BTCUSDT"
STREAMS = ["aggTrade", "depth@100ms", "bookTicker"]


@pytest.fixture
def small_data_dir(tmp_path):
    """``tmp_path/data`` is a 32 MiB tmpfs for the test (skipped where mounting is not allowed)."""
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE // MiB}m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill_to(path, free_left):
    """A filler file that leaves ``free_left`` bytes free."""
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, _free(os.path.dirname(path)) - free_left))


def _size(rec, stream):
    return sum(os.path.getsize(p) for p in rec.files() if f"-{stream}-" in os.path.basename(p))


def _writer(status):
    return status["children"].get("writer", {})


def _synced(status):
    return status["children"].get("orderbook", {}).get("books", {}).get(SYMBOL, {}).get("state") == "synced"


def _whole(rec):
    """Every file ends in a newline and every row has its header's columns."""
    for path in rec.files():
        with open(path, "rb") as f:
            data = f.read()
        assert data.endswith(b"\n"), path
        rows = list(csv.reader(data.decode().splitlines()))
        assert all(len(r) == len(rows[0]) for r in rows), path


def _start(tmp_path, sim, **settings):
    return Recorder(tmp_path, sim, [SYMBOL], streams=STREAMS, snapshot_depth=100,
                    min_free_disk=FLOOR / 2**30, **settings).start()


def test_below_the_floor_the_bulky_streams_are_shed_and_come_back(simulator, tmp_path, small_data_dir):
    sim = simulator(symbols=(SYMBOL,), seed=81, rate=100)
    rec = _start(tmp_path, sim)
    filler = small_data_dir / "filler"
    try:
        rec.wait_status(lambda s: _synced(s) and _size(rec, "orderbook") > 0 and _size(rec, "depth") > 0, 40,
                        "the book in sync and on disk")
        _fill_to(str(filler), FLOOR - 2 * MiB)             # 10 MiB left: below the floor
        rec.wait_status(lambda s: _writer(s).get("disk_floor") == "below", 20, "the writer below the floor")
        agg = _size(rec, "aggTrade")
        rec.wait_status(lambda s: _size(rec, "aggTrade") > agg, 20, "aggTrades still written")
        shed = {stream: _size(rec, stream) for stream in ("depth", "orderbook", "depthSnapshot")}
        agg = _size(rec, "aggTrade")
        rec.wait_status(lambda s: _size(rec, "aggTrade") > agg + 2000 and _writer(s)["rows_not_recorded"] > 100,
                        30, "more aggTrades, more rows not recorded")
        assert {stream: _size(rec, stream) for stream in shed} == shed, "a shed file grew below the floor"
        os.unlink(filler)
        rec.wait_status(lambda s: _writer(s).get("disk_floor") == "ok" and _size(rec, "depth") > shed["depth"]
                        and _size(rec, "orderbook") > shed["orderbook"], 30, "depth and orderbook written again")
        rec.wait_status(lambda s: {"depth", "orderbook"} <= {g["stream"] for g in rec.rows(SYMBOL, "gaps")
                                                           if g["action"] == "not recorded"}, 20,
                        "the ledger rows of the floor")
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    _whole(rec)
    log = open(tmp_path / "logs" / "binance-streamer.log").read()
    assert "below min_free_disk" in log and "CRITICAL" in log and "free again" in log
    floor_rows = {g["stream"]: g for g in rec.rows(SYMBOL, "gaps") if g["reason"] == "disk below min_free_disk"}
    assert set(floor_rows) == {"depth", "orderbook"}       # aggTrade and bookTicker were never shed
    depth = floor_rows["depth"]
    assert depth["action"] == "not recorded" and int(depth["rows"]) > 0
    assert int(depth["last_good_id"]) < int(depth["first_id_after"])
    assert int(depth["last_good_time"]) <= int(depth["first_time_after"])
    # the depth file has exactly one break, and it is the ledger row's hole
    events, breaks = [], []
    for r in rec.rows(SYMBOL, "depth"):
        event = (int(r["first_update_id"]), int(r["final_update_id"]))
        if not events or events[-1] != event:
            events.append(event)
    for (_, u), (U, _) in zip(events, events[1:]):
        if U != u + 1:
            breaks.append((u, U))
    assert breaks == [(int(depth["last_good_id"]), breaks[0][1])] and int(depth["first_id_after"]) >= breaks[0][1]
    # against what the simulator sent: every missing event is in the ledger; nothing else is missing
    for stream, r in compare(sim, rec, {SYMBOL}).items():
        assert r["unexplained"] == [] and r["duplicates"] == 0 and r["mismatched"] == [], (stream, r)
        if not stream.endswith("@depth@100ms"):
            assert r["missing"] == [], (stream, r["missing"][:5])
    book = [r for r in rec.rows(SYMBOL, "orderbook")]
    assert book[-1]["in_sync"] == "true"                  # the books lived on in memory


def test_stop_action_stops_the_recorder_in_order(simulator, tmp_path, small_data_dir):
    sim = simulator(symbols=(SYMBOL,), seed=82, rate=100)
    rec = _start(tmp_path, sim, disk_floor_action="stop")
    try:
        rec.wait_status(lambda s: _size(rec, "aggTrade") > 0 and _size(rec, "depth") > 0, 40, "data on disk")
        _fill_to(str(small_data_dir / "filler"), FLOOR - 2 * MiB)
        wait_for(lambda: rec.proc.poll() is not None, 60, "the recorder to stop by itself")
    finally:
        if rec.proc.poll() is None:
            rec.kill()
        rec.stderr.close()
    assert rec.proc.returncode == 0, rec.log_tail()
    log = open(tmp_path / "logs" / "binance-streamer.log").read()
    assert "stopping the recorder (disk_floor_action: stop)" in log
    _whole(rec)
    assert rec.status()["state"] == "STOPPED"
    for stream, r in compare(sim, rec, {SYMBOL}).items():
        assert r["unexplained"] == [] and r["duplicates"] == 0, (stream, r)


def test_retention_at_start_moves_the_old_days_to_the_archive(simulator, tmp_path):
    """The running writer sweeps at start: days before today - retention_days
    go to archive_dir, the kept days and today's files stay."""
    import time
    sim = simulator(symbols=(SYMBOL,), seed=83, rate=50)
    folder = tmp_path / "data" / "spot" / SYMBOL
    folder.mkdir(parents=True)
    today = time.time()
    old, kept = (time.strftime("%Y-%m-%d", time.gmtime(today - d * 86_400)) for d in (3, 1))
    for name in (f"{SYMBOL}-aggTrade-{old}.csv", f"{SYMBOL}-depth-{old}.csv.gz", f"{SYMBOL}-aggTrade-{kept}.csv"):
        (folder / name).write_text("x\n")
    rec = Recorder(tmp_path, sim, [SYMBOL], streams=["aggTrade"], orderbook=False, retention_days=1,
                   archive_dir="archive").start()
    archived = tmp_path / "archive" / "spot" / SYMBOL
    try:
        wait_for(lambda: archived.is_dir() and sorted(os.listdir(archived)) == [
            f"{SYMBOL}-aggTrade-{old}.csv", f"{SYMBOL}-depth-{old}.csv.gz"], 30, "the old day in the archive")
        rec.wait_status(lambda s: _size(rec, "aggTrade") > 0, 30, "today's rows")
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    assert sorted(os.listdir(folder))[0] == f"{SYMBOL}-aggTrade-{kept}.csv"
    assert not any(old in name for name in os.listdir(folder))
    log = open(tmp_path / "logs" / "binance-streamer.log").read()
    assert f"retention: {old} moved to {tmp_path / 'archive'}: 2 files" in log
