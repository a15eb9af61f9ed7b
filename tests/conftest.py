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
