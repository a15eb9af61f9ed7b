"""Every fault the simulator offers, observed from the client side."""

import os
import re
import subprocess
import sys
import time

import orjson
import pytest
import websocket

from tests.support import WsReader, http, wait_for

pytestmark = pytest.mark.timeout(60)

STREAMS = "btcusdt@aggTrade/btcusdt@bookTicker/btcusdt@depth@100ms"


def _open(sim, streams=STREAMS):
    r = WsReader(f"{sim.ws_url}/stream?streams={streams}", sim=sim)
    r.wait(lambda r: len(r.frames) >= 3, 10, "first frames")
    return r


def test_drop_closes_every_connection(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=200)
    a, b = _open(sim), _open(sim)
    sim.faults(drop="close")
    assert a.closed.wait(5) and b.closed.wait(5)
    assert a.close_code == 1001


def test_drop_abort_cuts_tcp_without_close_frame(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=200)
    a = _open(sim)
    sim.faults(drop="abort")
    assert a.closed.wait(5)
    assert a.close_code is None


def test_drop_every_keeps_closing_new_connections(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=200)
    sim.faults(drop_every=0.5)
    for _ in range(2):
        r = _open(sim)
        assert r.closed.wait(5)


def test_stall_silences_data_and_pings_then_resumes(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=500, ping_interval=0.1)
    r = _open(sim)
    r.wait(lambda r: len(r.control) >= 2, 5, "pings before the stall")
    sim.faults(stall=1.5)
    t_stall = time.monotonic()
    r.wait(lambda r: r.frames[-1][0] > t_stall + 1.4, 10, "data after the stall")
    times = [t for t, _ in r.frames]
    longest_gap = max(b - a for a, b in zip(times, times[1:]))
    assert longest_gap >= 1.2
    pings = [t for t, op, _ in r.control if op == websocket.ABNF.OPCODE_PING]
    assert not [t for t in pings if t_stall + 0.2 < t < t_stall + 1.3]
    conn = sim.connections()[0]
    assert conn["dropped_while_stalled"] > 0
    r.close()


def test_server_pings_and_pong_deadline(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=50, ping_interval=0.2, pong_timeout=0.8)
    # A client that reads (and so answers pings, as websocket-client does) stays.
    good = _open(sim)
    good.wait(lambda r: sum(1 for _, op, _ in r.control if op == websocket.ABNF.OPCODE_PING) >= 3, 5, "pings")
    assert not good.closed.is_set()
    # A client that never reads never answers: it is closed after the deadline.
    silent = websocket.create_connection(f"{sim.ws_url}/ws/btcusdt@aggTrade", timeout=10, sslopt=sim.sslopt)
    wait_for(lambda: any(c["close_reason"] and "no pong" in c["close_reason"] for c in sim.connections()),
             10, "the silent client to be dropped")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        for _ in range(100_000):
            opcode, _ = silent.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("closed")
    good.close()


def test_no_pong_fault(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=50)
    r = _open(sim)
    r.ws.ping(b"before")
    r.wait(lambda r: any(op == websocket.ABNF.OPCODE_PONG and d == b"before" for _, op, d in r.control), 5, "pong")
    sim.faults(no_pong=True)
    r.ws.ping(b"after")
    n = len(r.frames)
    r.wait(lambda r: len(r.frames) > n + 20, 10, "more data")     # time passes, data flows
    assert not any(d == b"after" for _, op, d in r.control if op == websocket.ABNF.OPCODE_PONG)
    r.close()


def test_malformed_and_unknown_events(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=50)
    r = _open(sim)
    sim.faults(malformed=2, unknown_event=1)
    r.wait(lambda r: r.messages().count(None) >= 2, 5, "malformed frames")
    unknown = r.wait(lambda r: [m for m in r.messages() if m and m.get("stream") == "!mysteryEvent"], 5, "unknown")
    assert unknown[0]["data"]["e"] == "mysteryEvent"
    r.close()


def test_periodic_malformed_and_unknown_events(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=50)
    r = _open(sim)
    sim.faults(malformed_every=0.2, unknown_every=0.2)
    r.wait(lambda r: r.messages().count(None) >= 3, 5, "periodic malformed frames")
    r.wait(lambda r: sum(1 for m in r.messages() if m and m.get("stream") == "!mysteryEvent") >= 3, 5,
           "periodic unknown events")
    r.close()


def test_rest_429_storm_then_418_for_a_client_that_keeps_going(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10)
    api = sim.rest_url + "/api/v3/depth"
    assert http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5).status_code == 200
    sim.faults(rest_429=3)
    first = http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5)
    assert first.status_code == 429 and 1 <= int(first.headers["Retry-After"]) <= 3
    assert first.json()["code"] == -1003
    time.sleep(0.1)         # the client saw the 429 and did not wait Retry-After
    second = http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5)
    assert second.status_code == 418 and int(second.headers["Retry-After"]) >= 60


def test_rest_418_storm(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10)
    sim.faults(rest_418=2)
    resp = http(sim).get(sim.rest_url + "/api/v3/time", timeout=5)
    assert resp.status_code == 418 and int(resp.headers["Retry-After"]) in (1, 2)


def test_weight_budget_and_header(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10, weight_limit=12)
    wait_for(lambda: time.time() % 60 < 55, 10, "a fresh minute")   # keep the calls in one minute
    api = sim.rest_url + "/api/v3/depth"
    used = [http(sim).get(api, params={"symbol": "BTCUSDT", "limit": 100}, timeout=5) for _ in range(3)]
    assert [r.status_code for r in used] == [200, 200, 429]
    assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in used] == ["5", "10", "10"]


def test_slow_and_failing_snapshots(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10)
    api = sim.rest_url + "/api/v3/depth"
    sim.faults(depth_fail=1)
    failed = http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5)
    assert failed.status_code == 503 and failed.json()["code"] == -1001
    assert http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5).status_code == 200
    sim.faults(depth_delay=0.6)
    t = time.monotonic()
    assert http(sim).get(api, params={"symbol": "BTCUSDT"}, timeout=5).status_code == 200
    assert time.monotonic() - t >= 0.6


def _shutdown_then_close(r):
    r.wait(lambda r: any(m and m.get("stream") == "!serverShutdown" for m in r.messages()), 10, "serverShutdown")
    assert r.closed.wait(10)
    msgs = r.messages()
    i = next(i for i, m in enumerate(msgs) if m and m.get("stream") == "!serverShutdown")
    when = r.frames[i][0]
    return when


def test_planned_close_announced_by_server_shutdown(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=100)
    r = _open(sim)
    sim.faults(shutdown=0.5)
    announced = _shutdown_then_close(r)
    assert r.close_code == 1001
    assert announced < time.monotonic()


def test_connection_lifetime(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=100, shutdown_notice=0.4)
    sim.faults(lifetime=1.2)
    t0 = time.monotonic()
    r = _open(sim)
    _shutdown_then_close(r)
    lived = time.monotonic() - t0
    assert 0.9 < lived < 5


def test_incoming_message_limit(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10)
    r = _open(sim, "btcusdt@aggTrade")
    for i in range(8):
        r.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
    assert r.closed.wait(5)
    assert r.close_code == 1008


def test_stream_limits(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10, max_streams=3)
    too_many = "/".join(["btcusdt@aggTrade", "btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth"])
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{sim.ws_url}/stream?streams={too_many}", timeout=5, sslopt=sim.sslopt)
    assert err.value.status_code == 400
    r = _open(sim, "btcusdt@aggTrade/btcusdt@trade")
    r.send({"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker", "btcusdt@depth"], "id": 9})
    reply = r.wait(lambda r: [m for m in r.messages() if m and m.get("id") == 9], 5, "reply")[0]
    assert reply["code"] == 2
    r.close()


def test_connection_attempt_limit(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10, connect_limit=2)
    a, b = _open(sim), _open(sim)
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"{sim.ws_url}/ws/btcusdt@trade", timeout=5, sslopt=sim.sslopt)
    assert err.value.status_code == 429
    a.close()
    b.close()


def test_live_subscribe_unsubscribe_and_bad_json(simulator):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), rate=200)
    r = _open(sim, "btcusdt@aggTrade")
    r.send({"method": "SUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": "sub1"})
    r.wait(lambda r: r.data("ethusdt@bookTicker"), 10, "subscribed data")
    r.send({"method": "UNSUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 2})
    r.wait(lambda r: any(m and m.get("id") == 2 for m in r.messages()), 5, "unsubscribe reply")
    n = len(r.data("ethusdt@bookTicker"))
    r.wait(lambda r: len(r.data("btcusdt@aggTrade")) > 30, 10, "more data")
    assert len(r.data("ethusdt@bookTicker")) == n
    r.send("{not json")
    bad = r.wait(lambda r: [m for m in r.messages() if m and m.get("code") == 3], 5, "error reply")
    assert bad[0]["msg"].startswith("Invalid JSON")
    r.close()


def test_usdm_routes_streams_by_category(simulator):
    sim = simulator(market="usdm", symbols=("BTCUSDT",), rate=300)
    wrong = WsReader(f"{sim.ws_urls['public']}/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker", sim=sim)
    wrong.wait(lambda r: len(r.data("@bookTicker")) > 20, 10, "bookTicker on /public")
    assert wrong.data("@aggTrade") == []
    wrong.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(sim.ws_url.rsplit("/", 1)[0] + "/stream?streams=btcusdt@aggTrade", timeout=5, sslopt=sim.sslopt)
    assert err.value.status_code == 404


def test_faults_given_at_start_on_the_command_line():
    proc = subprocess.Popen([sys.executable, "-m", "binance_streamer.simulator", "--port", "0",
                             "--symbols", "BTCUSDT", "--rate", "100", "--fault", "malformed_every=0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        line = proc.stdout.readline()
        m = re.search(r"ws=(wss://\S+) ca=(\S+)", line)
        assert m, f"no ready line; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        r = WsReader(m.group(1) + "/stream?streams=btcusdt@aggTrade", ca_file=m.group(2))
        r.wait(lambda r: r.messages().count(None) >= 2, 10, "malformed frames")
        assert any(m and "data" in m for m in r.messages())
        r.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_bad_fault_on_command_line_is_one_line_error():
    out = subprocess.run([sys.executable, "-m", "binance_streamer.simulator", "--fault", "stal=3"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown fault 'stal'" in out.stderr


def test_control_endpoint_rejects_unknown_fault(simulator):
    sim = simulator(symbols=("BTCUSDT",), rate=10)
    resp = http(sim).post(sim.rest_url + "/sim/faults", data=orjson.dumps({"lifetyme": 3}), timeout=5)
    assert resp.status_code == 400 and "unknown fault" in resp.json()["error"]
    resp = http(sim).post(sim.rest_url + "/sim/faults", data=orjson.dumps({"lifetime": 30}), timeout=5)
    assert resp.status_code == 200 and resp.json()["lifetime"] == 30


def test_control_endpoints_over_http(simulator):
    from binance_streamer.simulator import control
    sim = simulator(symbols=("BTCUSDT",), rate=300)
    r = _open(sim)
    r.wait(lambda r: len(r.frames) > 50, 10, "frames")
    book = control(sim.rest_url, "/sim/book?symbol=BTCUSDT", ca_file=sim.ca_file)
    assert len(book["bids"]) >= 5000 and book["bids"][0][0] < book["asks"][0][0]
    older = control(sim.rest_url, f"/sim/book?symbol=BTCUSDT&update_id={book['lastUpdateId'] - 5}", ca_file=sim.ca_file)
    assert older["lastUpdateId"] == book["lastUpdateId"] - 5
    journal = control(sim.rest_url, "/sim/journal", ca_file=sim.ca_file).decode().splitlines()
    conn_id = sim.connections()[0]["id"]
    assert len(journal) >= 50 and all(line.split(" ", 2)[0] == str(conn_id) for line in journal)
    assert journal[0].split(" ", 2)[2] == r.texts()[0]
    stats = control(sim.rest_url, "/sim/stats", ca_file=sim.ca_file)
    assert stats["frames_sent"] >= 50 and stats["open_connections"] == 1
    r.close()
