"""Process isolation: a process that dies or hangs is replaced alone; the
others keep their pids and connections, and the files stay exact against
the simulator's journal."""

import os
import signal
import time

import pytest

from binance_streamer.simulator.audit import compare
from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(300)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
STREAMS = ["aggTrade", "trade", "depth@100ms", "bookTicker", "kline_1s"]
DATA = ("aggTrade", "trade", "depth", "bookTicker", "kline_1s")


def _pids(status):
    return {p["name"]: p["pid"] for p in status["processes"]}


def _proc(status, name):
    return next(p for p in status["processes"] if p["name"] == name)


def _synced(status):
    books = status["children"].get("orderbook", {}).get("books", {})
    return all(p["state"] == "RUNNING" for p in status["processes"]) and \
        all(books.get(s, {}).get("state") == "synced" for s in SYMBOLS)


def _open_connections(sim, symbol):
    return {c["id"] for c in sim.connections() if c["closed"] is None
            and any(s.startswith(symbol.lower()) for s in c["streams"])}


def _disk(rec):
    return sum(os.path.getsize(p) for p in rec.files())


def _more(rec, n=20_000):
    base = _disk(rec)
    rec.wait_status(lambda s: _disk(rec) >= base + n, 40, "more data on disk")


def _replaced(rec, name, old_pid, timeout):
    return rec.wait_status(lambda s: _proc(s, name)["pid"] not in (None, old_pid)
                           and _proc(s, name)["state"] == "RUNNING", timeout, f"{name} replaced")


def _gap_streams(rec, symbol):
    return {g["stream"] for g in rec.rows(symbol, "gaps")}


def test_a_killed_process_is_restarted_alone(simulator, tmp_path):
    sim = simulator(symbols=tuple(SYMBOLS), seed=71, rate=200)
    rec = Recorder(tmp_path, sim, SYMBOLS, streams=STREAMS, snapshot_depth=1000).start()
    try:
        rec.wait_status(_synced, 40, "books in sync")
        eth = _open_connections(sim, "ETHUSDT")
        for name in ("worker-0", "orderbook", "writer"):       # worker-0 records BTCUSDT
            before = _pids(rec.status())
            os.kill(before[name], signal.SIGKILL)
            after = _pids(_replaced(rec, name, before[name], 30))
            assert {n: p for n, p in after.items() if n != name} == \
                {n: p for n, p in before.items() if n != name}, f"more than {name} restarted"
            rec.wait_status(_synced, 40, f"books in sync after {name}")
            _more(rec)
            assert _open_connections(sim, "ETHUSDT") == eth, f"ETHUSDT reconnected after {name} was killed"
        status = rec.status()
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    assert {p["name"]: p["restarts"] for p in status["processes"]} == \
        {"writer": 1, "orderbook": 1, "worker-0": 1, "worker-1": 0}
    report = compare(sim, rec, set(SYMBOLS))
    for stream, r in report.items():
        assert r["unexplained"] == [] and r["duplicates"] == 0 and r["mismatched"] == [], (stream, r)
        if stream.startswith("ethusdt"):       # its worker never stopped: nothing missing at all
            assert r["missing"] == [] and r["found"] > 0, (stream, r["missing"][:5])
    # ETHUSDT's ledger: only its book, rebuilt by the new book manager; BTCUSDT's: its worker's downtime
    assert _gap_streams(rec, "ETHUSDT") == {"orderbook"}
    assert {g["reason"] for g in rec.rows("ETHUSDT", "gaps")} == {"book manager restart"}
    btc = [g for g in rec.rows("BTCUSDT", "gaps") if g["stream"] != "orderbook"]
    assert {g["stream"] for g in btc} >= {"trade", "depth", "bookTicker"}
    assert any(g["stream"] == "aggTrade" and g["action"] == "backfilled" for g in btc) or \
        all(g["stream"] != "aggTrade" for g in btc)
    ids = [int(r["agg_trade_id"]) for r in rec.rows("BTCUSDT", "aggTrade")]
    assert sorted(ids) == list(range(min(ids), max(ids) + 1)) and len(ids) == len(set(ids))


def test_a_hung_process_is_killed_and_replaced_alone(simulator, tmp_path):
    hang = 3.0
    sim = simulator(symbols=tuple(SYMBOLS), seed=72, rate=200)
    rec = Recorder(tmp_path, sim, SYMBOLS, streams=STREAMS, snapshot_depth=1000, hang_timeout=hang).start()
    try:
        rec.wait_status(_synced, 40, "books in sync")
        for name in ("writer", "orderbook", "worker-0"):
            before = _pids(rec.status())
            os.kill(before[name], signal.SIGSTOP)
            stopped = time.monotonic()
            after = _pids(_replaced(rec, name, before[name], hang + 10))
            took = time.monotonic() - stopped
            assert took <= hang + 5, f"{name} replaced {took:.1f} s after it hung"
            assert {n: p for n, p in after.items() if n != name} == \
                {n: p for n, p in before.items() if n != name}, f"more than {name} restarted"
            wait_for(lambda p=before[name]: not _alive(p), 10, f"the hung {name} gone")
            rec.wait_status(_synced, 40, f"books in sync after {name}")
            _more(rec)
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    log = open(os.path.join(rec.dir, "logs", "binance-streamer.log")).read()
    for name in ("writer", "orderbook", "worker-0"):
        assert f"{name}: no heartbeat for" in log
    report = compare(sim, rec, set(SYMBOLS))
    for stream, r in report.items():
        assert r["unexplained"] == [] and r["duplicates"] == 0 and r["mismatched"] == [], (stream, r)
        if stream.startswith("ethusdt"):
            assert r["missing"] == [], (stream, r["missing"][:5])
    assert _gap_streams(rec, "ETHUSDT") == {"orderbook"}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, mounted for the test (skipped where mounting is not allowed)."""
    import subprocess
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path):
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_manager_whose_disk_is_full_still_stops_on_sigterm(simulator, tmp_path, small_disk):
    sim = simulator(symbols=("BTCUSDT",), seed=73, rate=100)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "bookTicker"], orderbook=False,
                   data_dir=str(small_disk / "data"), log_dir=str(small_disk / "logs"),
                   run_dir=str(small_disk / "run"), stop_timeout=5)
    rec.status = lambda: _read_json(small_disk / "run" / "status.json")
    rec.start()
    _fill(small_disk / "filler")                     # data, logs and run directory: all full now
    wait_for(lambda: "the disk is full" in rec.log_tail(200), 30, "the writer to hit the full disk")
    assert rec.proc.poll() is None, rec.log_tail()
    children = [p["pid"] for p in rec.status()["processes"]]
    assert rec.stop(signal.SIGTERM, timeout=60) == 0, rec.log_tail()
    assert not any(_alive(pid) for pid in children)
    assert not os.path.exists(small_disk / "run" / "binance-streamer.pid") or \
        os.path.getsize(small_disk / "run" / "binance-streamer.pid") == 0


def _read_json(path):
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def test_a_paused_worker_reads_what_waited_before_it_judges_its_connection(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), seed=74, rate=300)
    rec = Recorder(tmp_path, sim, ["BTCUSDT"], streams=["aggTrade", "trade", "bookTicker"], orderbook=False,
                   silence_timeout=1.0, hang_timeout=30).start()
    try:
        _more(rec, 5000)
        pid = rec.pid_of("worker-0")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)            # the fault itself: paused three times as long as silence_timeout
        os.kill(pid, signal.SIGCONT)
        _more(rec)
        status = rec.status()
    finally:
        assert rec.stop(signal.SIGTERM) == 0, rec.log_tail()
    assert "no data for" not in rec.log_tail(500)
    assert status["processes"][-1]["pid"] == pid
    assert [c["reconnects"] for c in status["children"]["worker-0"]["connections"]] == [0]
    for stream, r in compare(sim, rec, {"BTCUSDT"}).items():
        assert r["missing"] == [] and r["duplicates"] == 0, (stream, r["missing"][:5])
    assert rec.rows("BTCUSDT", "gaps") == []


def _hold(budget):
    with budget.lock:
        signal.pause()


def _held(path):
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_budget_lock_held_by_a_killed_process_blocks_nobody(tmp_path):
    """A worker killed in the middle of a budget update must not stop the
    others' REST requests (a multiprocessing lock would stay taken)."""
    import multiprocessing
    from binance_streamer.binance.budgets import RestBudget
    ctx = multiprocessing.get_context("spawn")
    budget = RestBudget(ctx, 1200, lock_dir=str(tmp_path))
    holder = ctx.Process(target=_hold, args=(budget,))
    holder.start()
    try:
        wait_for(lambda: _held(budget.lock.path), 30, "the other process to hold the budget's lock")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    assert budget.try_acquire(10) == 0.0 and budget.spent == 10
