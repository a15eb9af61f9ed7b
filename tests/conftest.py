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
