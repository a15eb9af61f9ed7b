"""WebSocket and REST through a real HTTP or SOCKS5 proxy (pproxy)."""

import socket
import subprocess
import sys

import pytest

from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(120)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_recording_through_a_proxy(simulator, tmp_path, scheme):
    pytest.importorskip("pproxy")
    port = _free_port()
    log = open(tmp_path / "proxy.log", "w")
    proxy = subprocess.Popen([sys.executable, "-m", "pproxy", "-l", f"{scheme}://127.0.0.1:{port}", "-v"],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _listening(port), 20, "the proxy to listen")
        sim = simulator(symbols=("BTCUSDT",), seed=41, rate=100)
        rec = Recorder(tmp_path, sim, ["BTCUSDT"], proxy=f"{scheme}://127.0.0.1:{port}",
                       streams=["aggTrade", "depth@100ms"]).start()
        try:
            rec.wait_status(lambda s: s["children"].get("orderbook", {}).get("in_sync") == 1, 30, "book in sync")
            wait_for(lambda: len(rec.rows("BTCUSDT", "aggTrade")) > 10, 30, "aggTrades on disk")
        finally:
            assert rec.stop() == 0, rec.log_tail()
    finally:
        proxy.terminate()
        proxy.wait(10)
        log.close()
    text = (tmp_path / "proxy.log").read_text()
    # both the WebSocket and the REST traffic went through the proxy
    assert text.count(f"127.0.0.1:{sim.port}") >= 2, text[-2000:]


def _listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
