"""The health verdict (OK / DEGRADED / DOWN) built from a status snapshot,
and the one line and exit code of ``--daemon status --check`` (pure)."""

import orjson
import pytest

from binance_streamer import statusreport
from binance_streamer.status import health, stale, usual_gap

NOW = 1_800_000_000.0
GB = 2**30


def _snap(procs=None, conn=None, streams=None, books=None, disk=50 * GB, **worker):
    conn = {"name": "ws-spot-btcusdt", "group": "spot", "connected": True, "lag_s": 0.05, "lag_max_s": 0.08,
            "failures": 0, **(conn or {})}
    return {"processes": procs or [{"name": "writer", "role": "writer", "state": "RUNNING"},
                                   {"name": "worker-0", "role": "worker", "state": "RUNNING"}],
            "children": {"worker-0": {"connections": [conn], "streams": streams or {}, **worker},
                         "orderbook": {"books": books or {"BTCUSDT": {"state": "synced"}}}},
            "disk_free_bytes": disk, "updated": NOW}


def _health(snap):
    verdict = health(snap, NOW, max_lag=3.0, min_free_disk=2 * GB, link_buffer_bytes=16_000_000)
    orjson.dumps(verdict)          # the status file is JSON
    return verdict


def test_ok_when_every_process_runs_and_everything_flows():
    assert _health(_snap()) == {"state": "OK", "problems": []}


@pytest.mark.parametrize("snap, problem", [
    (_snap(conn={"lag_s": 0.1, "lag_max_s": 4.5}), "worker-0 ws-spot-btcusdt is 4.5 s behind the exchange"),
    (_snap(procs=[{"name": "writer", "role": "writer", "state": "RUNNING"},
                  {"name": "worker-0", "role": "worker", "state": "BACKOFF"}]), "worker-0 is BACKOFF"),
    (_snap(procs=[{"name": "writer", "role": "writer", "state": "RUNNING", "heartbeat_age_s": 12.0},
                  {"name": "worker-0", "role": "worker", "state": "RUNNING"}]),
     "writer has not shown a heartbeat for 12 s"),
    (_snap(books={"BTCUSDT": {"state": "requested"}}), "book BTCUSDT is not in sync (requested)"),
    ({**_snap(), "rest_paused_s": 42.0}, "REST paused for 42 s more by the exchange (HTTP 429/418)"),
    (_snap(link={"unacked_bytes": 12_000_000}), "writer behind: worker-0 holds 11.4 MB"),
    (_snap(disk=GB), "the disk of data_dir has 1.00 GiB free, below min_free_disk (2 GiB)"),
    ({**_snap(), "children": {**_snap()["children"], "writer": {"disk_floor": "below"}}},
     "depth, depthSnapshot and orderbook rows are not written since the disk went below min_free_disk"),
    (_snap(streams={"BTCUSDT/aggTrade": {"last_recv_us": (NOW - 61) * 1e6, "usual_gap_s": 0.5}}),
     "BTCUSDT/aggTrade silent for 61 s (usually a message every 0.5 s)"),
])
def test_each_reason_for_degraded(snap, problem):
    verdict = _health(snap)
    assert verdict["state"] == "DEGRADED"
    assert len(verdict["problems"]) == 1 and verdict["problems"][0].startswith(problem), verdict


def test_a_stream_is_judged_by_its_own_usual_gap():
    quiet = {"last_recv_us": (NOW - 100) * 1e6, "usual_gap_s": 30.0}       # 20 x 30 s = 600 s allowed
    busy = {"last_recv_us": (NOW - 31) * 1e6, "usual_gap_s": 0.01}         # the 30 s floor
    assert _health(_snap(streams={"A/kline_1m": quiet}))["state"] == "OK"
    assert _health(_snap(streams={"A/bookTicker": busy}))["problems"] == [
        "A/bookTicker silent for 31 s (usually a message every 0.01 s)"]
    assert _health(_snap(streams={"A/trade": {"last_recv_us": (NOW - 500) * 1e6, "usual_gap_s": None}}))[
        "state"] == "OK"                                                    # too few messages to judge


def test_usual_gap_needs_enough_messages():
    assert usual_gap((100.0, 5), (110.0, 10)) is None
    assert usual_gap((100.0, 5), (110.0, 105)) == 0.1
    assert usual_gap((100.0, 5), (100.0, 105)) is None


@pytest.mark.parametrize("snap, problem", [
    (_snap(conn={"connected": False, "failures": 7}), "no connection to the exchange is up"),
    (_snap(procs=[{"name": "writer", "role": "writer", "state": "FATAL"},
                  {"name": "worker-0", "role": "worker", "state": "RUNNING"}]), "writer is FATAL"),
    (_snap(disk=4096), "the disk of data_dir is full"),
])
def test_each_reason_for_down(snap, problem):
    verdict = _health(snap)
    assert verdict["state"] == "DOWN"
    assert verdict["problems"][0].startswith(problem), verdict


def test_down_problems_come_first():
    verdict = _health(_snap(conn={"connected": False, "failures": 3}))
    assert verdict["problems"] == ["no connection to the exchange is up",
                                   "worker-0 ws-spot-btcusdt is not connected (3 failed attempts)"]


def test_an_old_status_file_is_not_believed():
    assert stale({"updated": NOW - 5}, NOW, 2.0) is None
    assert "17 s ago" in stale({"updated": NOW - 17}, NOW, 2.0)
    assert stale({}, NOW, 2.0) is not None


@pytest.mark.parametrize("state, code", [("OK", 0), ("DEGRADED", 1), ("DOWN", 2), (None, 3)])
def test_check_exit_codes_follow_monitoring_plugins(state, code):
    report = {"health": {"state": state, "problems": ["x is y"] if state != "OK" else []}} if state else {}
    got, line = statusreport.check_line(report)
    assert got == code
    assert line.startswith(state or "UNKNOWN") and "\n" not in line
