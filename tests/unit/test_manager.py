"""The ProcessManager's states and restarts, with fake processes and a fake clock."""

import random

from binance_streamer import config, manager as m
from binance_streamer.proc import EXIT_CONFIG, backoff_delay


class FakeProcess:
    pids = iter(range(1000, 100000))

    def __init__(self, name):
        self.name, self.pid, self.alive, self.exitcode = name, next(self.pids), True, None
        self.signals = []

    def is_alive(self):
        return self.alive

    def die(self, code):
        self.alive, self.exitcode = False, code

    def kill(self):
        self.die(-9)

    def terminate(self):
        self.die(-15)

    def join(self, timeout=None):
        pass


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _manager(tmp_path, **kw):
    cfg = config.load(None, {"symbols": "BTCUSDT,ETHUSDT,BNBUSDT", "run_dir": str(tmp_path), **kw})
    spawned = []

    def spawner(name, target, args):
        p = FakeProcess(name)
        spawned.append(p)
        return p
    clock = Clock()
    pm = m.ProcessManager(cfg, spawner=spawner, clock=clock)
    pm.build(None)
    pm.start()
    return pm, spawned, clock


def _child(pm, name):
    return next(c for c in pm.children if c.name == name)


def test_one_worker_per_symbol_group(tmp_path):
    pm, spawned, _ = _manager(tmp_path, symbols_per_worker=2)
    assert [c.name for c in pm.children] == ["writer", "orderbook", "worker-0", "worker-1"]
    assert pm.groups() == [["BTCUSDT", "ETHUSDT"], ["BNBUSDT"]]


def test_a_crash_restarts_every_process_after_a_backoff(tmp_path):
    pm, spawned, clock = _manager(tmp_path)
    clock.t = 2.0
    pm.step()
    assert all(c.state == m.RUNNING for c in pm.children)
    first = {c.name: c.process for c in pm.children}
    w0 = _child(pm, "worker-0")
    w0.process.die(-9)
    pm.step()
    assert w0.state == m.BACKOFF and pm.restart_at > clock.t
    assert all(c.process.alive for c in pm.children if c is not w0)     # the others go on meanwhile
    clock.t = pm.restart_at + 0.01
    pm.step()
    assert all(c.state == m.STARTING and c.restarts == 1 for c in pm.children)
    assert all(not first[c.name].alive and c.process is not first[c.name] for c in pm.children)
    assert pm.pipeline_restarts == 1
    # repeated crashes wait longer, up to the cap
    delays = []
    for _ in range(8):
        _child(pm, "writer").process.die(1)
        pm.step()
        delays.append(pm.restart_at - clock.t)
        clock.t = pm.restart_at + 0.01
        pm.step()
    assert delays[-1] <= pm.cfg.restart_max_delay and max(delays) > delays[0]


def test_config_failure_is_fatal_and_a_fatal_writer_stops_the_daemon(tmp_path):
    pm, spawned, clock = _manager(tmp_path)
    w1 = _child(pm, "worker-1")
    w1.process.die(EXIT_CONFIG)
    pm.step()
    assert w1.state == m.FATAL and not pm.stopping
    clock.t = pm.restart_at + 0.01 if pm.restart_at else clock.t + 100
    pm.step()
    assert w1.state == m.FATAL and w1.restarts == 0
    _child(pm, "writer").process.die(EXIT_CONFIG)
    pm.step()
    assert pm.stopping


def test_backoff_delay_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30, rng) for n in range(1, 12)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert delays[0] <= 0.5 and delays[-1] >= 15
    assert backoff_delay(0, 0.5, 30, rng) == 0.0


_LOCKED_QUEUE_EXIT = r"""
import multiprocessing, os, signal, sys
sys.path.insert(0, sys.argv[1])
from binance_streamer import config, manager as m
from tests.unit.test_manager import FakeProcess, Clock

cfg = config.load(None, {"symbols": "BTCUSDT", "run_dir": sys.argv[2]})
pm = m.ProcessManager(cfg, spawner=lambda name, target, args: FakeProcess(name), clock=Clock())
pm.build(None)
pm.start()
# a child dies holding the writer queue's write lock, as a SIGKILLed worker can
holder = multiprocessing.get_context("fork").Process(
    target=lambda: (pm.writer_q._wlock.acquire(), signal.pause()))
holder.start()
while pm.writer_q._wlock.acquire(block=False):     # until the holder has it
    pm.writer_q._wlock.release()
os.kill(holder.pid, signal.SIGKILL)
holder.join()
pm.writer_q.put(b"rows")            # its feeder thread now waits on the lock forever
pm.restart_pipeline()
pm.shutdown()
print("exiting")
"""


def test_a_queue_locked_by_a_killed_child_does_not_hold_up_exit(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", _LOCKED_QUEUE_EXIT, root, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)   # a hang fails the test
    assert proc.returncode == 0 and "exiting" in proc.stdout, proc.stderr
