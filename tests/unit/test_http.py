"""The REST client's HTTP on urllib3 alone (binance/http.py): answers, the
weight header, and one-line reasons for requests that got no answer."""

import http.server
import json
import socket
import threading

import pytest

from binance_streamer import config
from binance_streamer.binance.rest import RestClient, RestError


class _Budget:
    def __init__(self):
        self.observed = []

    def acquire(self, *a):
        return True

    def observe(self, used):
        self.observed.append(used)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"lastUpdateId": 7, "bids": [["1.5", "2"]], "asks": [], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("x-mbx-used-weight-1m", "42")        # lower case: headers are case-insensitive
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _client(rest_url):
    budget = _Budget()
    cfg = config.load(None, {"symbols": "BTCUSDT", "rest_url": rest_url, "rest_timeout": 2})
    return RestClient(cfg, budget), budget


def test_an_answer_is_parsed_with_its_query_and_its_weight_header(server):
    client, budget = _client(server)
    body = client.depth("BTCUSDT", 5)
    assert body["lastUpdateId"] == 7 and body["bids"] == [["1.5", "2"]]
    assert body["path"] == "/api/v3/depth?symbol=BTCUSDT&limit=5"
    assert budget.observed == [42] and client.requests == 1 and client.failures == 0


def test_a_refused_connection_is_one_short_reason_not_a_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    client, _ = _client(f"http://127.0.0.1:{port}")
    with pytest.raises(RestError) as err:
        client.get("depth", {"symbol": "BTCUSDT"}, 1, attempts=1)
    assert err.value.reason == "connection refused" and client.failures == 1


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)                 # accepts the connection, never answers
        client, _ = _client(f"http://127.0.0.1:{listener.getsockname()[1]}")
        client.timeout = 0.3
        with pytest.raises(RestError) as err:
            client.get("depth", {"symbol": "BTCUSDT"}, 1, attempts=1)
    assert err.value.reason == "timed out"
