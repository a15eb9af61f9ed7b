"""The ProcessManager's states and restarts, with fake processes and a fake clock."""

import random
import socket
import sys
import threading

import pytest

from binance_streamer import config, links, manager as m, messages, proc, settings
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
        p.args = args
        # the child's ends, as a spawned child would inherit them (the manager closes its copies)
        control, peers = (args[1], args[2]) if name in ("writer", "orderbook") else (args[4], args[5])
        p.control = links.Link(control.dup(), f"{name}:manager")
        p.peers = {peer: links.Link(sock.dup(), peer) for peer, sock in peers.items()}
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
    # every pair of processes that talk has a link of its own
    assert _child(pm, "writer").peers == ["worker-0", "worker-1", "orderbook"]
    assert _child(pm, "worker-1").peers == ["writer", "orderbook"]


def test_by_default_few_symbols_get_a_worker_each_and_many_share_a_bounded_number(tmp_path):
    pm, _, _ = _manager(tmp_path)
    assert pm.groups() == [["BTCUSDT"], ["ETHUSDT"], ["BNBUSDT"]]
    many = [f"S{i:03d}USDT" for i in range(400)]
    pm, _, _ = _manager(tmp_path, symbols=",".join(many), validate_symbols=False)
    groups = pm.groups()
    assert len(groups) == settings.AUTO_WORKERS and all(len(g) == 50 for g in groups)
    assert [s for g in groups for s in g] == many
    pm, _, _ = _manager(tmp_path, symbols=",".join(many[:9]), validate_symbols=False)
    assert [len(g) for g in pm.groups()] == [2, 2, 2, 2, 1]
    pm, _, _ = _manager(tmp_path, symbols=",".join(many), validate_symbols=False, symbols_per_worker=1)
    assert len(pm.groups()) == 400                   # set: as set


def test_a_crash_restarts_that_process_alone_after_a_backoff(tmp_path):
    pm, spawned, clock = _manager(tmp_path, hang_timeout=3600)
    clock.t = 2.0
    pm.step()
    assert all(c.state == m.RUNNING for c in pm.children)
    first = {c.name: c.process for c in pm.children}
    w0 = _child(pm, "worker-0")
    w0.process.die(-9)
    pm.step()
    assert w0.state == m.BACKOFF and w0.restart_at > clock.t
    clock.t = w0.restart_at + 0.01
    pm.step()
    assert w0.state == m.STARTING and w0.restarts == 1 and w0.process is not first["worker-0"]
    others = [c for c in pm.children if c is not w0]
    assert all(c.process is first[c.name] and c.process.alive and c.restarts == 0 for c in others)
    # the new worker got links to the writer and the book manager at spawn
    assert sorted(w0.process.args[5]) == ["orderbook", "writer"]
    # repeated crashes of one child wait longer, up to the cap
    delays = []
    writer = _child(pm, "writer")
    for _ in range(8):
        writer.process.die(1)
        pm.step()
        delays.append(writer.restart_at - clock.t)
        clock.t = writer.restart_at + 0.01
        pm.step()
    assert delays[-1] <= pm.cfg.restart_max_delay and max(delays) > delays[0]
    assert w0.restarts == 1 and all(c.restarts == 0 for c in pm.children if c.role == "worker" and c is not w0)


def _received(link, n):
    from tests.support import wait_for
    got = []
    wait_for(lambda: got.extend(link.receive()) or len(got) >= n, 5, f"{n} messages")
    return got


def test_a_restarted_worker_is_linked_to_the_running_writer_and_book_manager(tmp_path):
    pm, spawned, clock = _manager(tmp_path)
    writer, book, w0 = _child(pm, "writer"), _child(pm, "orderbook"), _child(pm, "worker-0")
    pm.poll(0)
    # at the start, each process is linked to those spawned before it
    assert _received(writer.process.control, 4) == [messages.Attach(n) for n in
                                                    ("orderbook", "worker-0", "worker-1", "worker-2")]
    assert _received(book.process.control, 3) == [messages.Attach(n) for n in ("worker-0", "worker-1", "worker-2")]
    for consumer in (writer, book):
        consumer.process.control.fds.clear()
    w0.process.die(-9)
    pm.step()
    clock.t = w0.restart_at + 0.01
    pm.step()
    pm.poll(0)                                  # sends what waits on the control links
    for consumer in (writer, book):
        assert _received(consumer.process.control, 1) == [messages.Attach("worker-0")]
        end = links.from_fd(consumer.process.control.take_fd(), "worker-0")
        # the descriptor is the far end of the new worker's link to that consumer
        w0.process.peers[consumer.name].send(("hello", consumer.name))
        assert _received(end, 1) == [("hello", consumer.name)]
    assert not _child(pm, "worker-1").process.control.receive()     # nothing for the others


def test_a_child_without_heartbeat_is_killed_and_restarted_alone(tmp_path):
    pm, spawned, clock = _manager(tmp_path, hang_timeout=10)
    clock.t = 2.0
    pm.step()
    for c in pm.children:
        c.last_beat, c.beating = clock.t, True
    clock.t = 11.0
    pm.step()
    assert all(c.state == m.RUNNING for c in pm.children)     # 9 s silent: not yet
    for c in pm.children:
        if c.name != "writer":
            c.last_beat = clock.t
    clock.t = 12.5                                          # the writer: 10.5 s
    old = _child(pm, "writer").process
    old.kill = lambda: old.signals.append("KILL")       # a process in the kernel outlives SIGKILL a while
    pm.step()
    writer = _child(pm, "writer")
    assert old.signals == ["KILL"] and writer.state == m.RUNNING and writer.killed == "hung for 10.5 s and was killed"
    pm.step()
    assert old.signals == ["KILL"] and writer.state == m.RUNNING     # killed once; not replaced while alive
    old.die(-9)
    pm.step()
    assert writer.state == m.BACKOFF
    assert all(c.state == m.RUNNING for c in pm.children if c is not writer)
    clock.t = writer.restart_at + 0.01
    pm.step()
    assert writer.state == m.STARTING and writer.process is not old and writer.last_beat == clock.t
    # before its first Beat a process gets a minute to start (imports, the writer's recovery)
    clock.t += 30
    pm.step()
    assert writer.state == m.RUNNING
    clock.t += m.FIRST_BEAT
    pm.step()                                           # killed ...
    pm.step()                                           # ... and reaped
    assert writer.state == m.BACKOFF and writer.restarts == 1


def test_a_torn_link_between_two_live_processes_replaces_the_sender(tmp_path):
    pm, spawned, clock = _manager(tmp_path)
    writer, w1 = _child(pm, "writer"), _child(pm, "worker-1")
    old = w1.process
    writer.process.control.send(messages.Torn("worker-1", "worker-1: a message does not decode"))
    from tests.support import wait_for
    wait_for(lambda: pm.poll(0.05) or w1.killed, 5, "the Torn message")
    pm.step()
    assert not old.alive and w1.state == m.BACKOFF and "torn link with writer" in w1.killed
    assert writer.process.alive and _child(pm, "worker-0").process.alive
    writer.process.control.send(messages.Torn("worker-1", "again"))     # nothing to replace while it is down
    pm.poll(0.05)
    assert w1.state == m.BACKOFF


def test_config_failure_is_fatal_and_a_fatal_writer_stops_the_daemon(tmp_path):
    pm, spawned, clock = _manager(tmp_path)
    w1 = _child(pm, "worker-1")
    w1.process.die(EXIT_CONFIG)
    pm.step()
    assert w1.state == m.FATAL and not pm.stopping
    clock.t += 5
    pm.step()
    assert w1.state == m.FATAL and w1.restarts == 0
    _child(pm, "writer").process.die(EXIT_CONFIG)
    pm.step()
    assert pm.stopping


def test_a_state_change_outside_the_table_is_refused(tmp_path):
    pm, _, _ = _manager(tmp_path)
    w1 = _child(pm, "worker-1")
    w1.change(m.FATAL)
    try:
        w1.change(m.STARTING)
    except AssertionError as exc:
        assert "FATAL -> STARTING" in str(exc)
    else:
        raise AssertionError("a FATAL child was restarted")


def test_backoff_delay_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30, rng) for n in range(1, 12)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert delays[0] <= 0.5 and delays[-1] >= 15
    assert backoff_delay(0, 0.5, 30, rng) == 0.0


def test_a_child_gives_freed_memory_back_once_per_status_report(monkeypatch):
    trims = []
    monkeypatch.setattr(proc, "trim_memory", lambda: trims.append(1))
    ours, theirs = socket.socketpair()
    try:
        link = proc.ManagerLink("writer", ours, threading.Event())
        for now in (0.0, 1.0, 2.0, 3.0, 4.0):        # a beat every second, a report every 2 s
            link.beat(dict, 2.0, now)
        assert len(trims) == 3
    finally:
        ours.close()
        theirs.close()


def test_trim_memory_finds_glibc_malloc_trim_or_does_nothing():
    proc.trim_memory()
    proc.trim_memory()
    assert len(proc._malloc_trim) == 1
    import platform
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert proc._malloc_trim[0] is not None


MAPPED_AFTER_A_FREE = """
import ctypes, sys
from binance_streamer import proc
fixed = sys.argv[1] == "fixed"
if fixed:
    assert proc.map_large_blocks()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
info = ctypes.CDLL(None).mallinfo2
info.restype = Info
first = bytes(4 * 2**20)      # mapped, then freed: glibc's own threshold rises past 4 MB
del first
before = info().hblks
block = bytes(2**20)
print(info().hblks - before)
"""


def test_map_large_blocks_keeps_blocks_mapped_after_a_large_free():
    import platform
    import subprocess
    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc only")
    mapped = {how: subprocess.run([sys.executable, "-c", MAPPED_AFTER_A_FREE, how], capture_output=True, text=True,
                                  timeout=60, check=True).stdout.strip() for how in ("fixed", "glibc")}
    assert mapped == {"fixed": "1", "glibc": "0"}
