from binance_streamer.simulator.faults import FaultError, Faults, parse_cli
from binance_streamer.binance.endpoints import depth_weight
from binance_streamer.simulator.limits import SlidingCounter, WeightLimiter

import pytest


def test_weight_per_minute_then_429_then_418_with_escalating_bans():
    lim = WeightLimiter(10, ban_seconds=120)
    assert lim.charge("ip", 6, 60.0) == (200, 6, None)
    status, used, retry = lim.charge("ip", 6, 70.0)
    assert (status, used, retry) == (429, 6, 50)
    assert lim.charge("ip", 1, 70.01) == (429, 6, 50)     # sent before the 429 could be seen: no ban
    assert lim.charge("ip", 1, 71.0) == (418, 6, 120)
    assert lim.charge("ip", 1, 150.0)[0] == 418          # still banned
    assert lim.charge("ip", 1, 192.0)[0] == 200          # ban over, new minute
    lim.charge("ip", 20, 193.0)                          # 429 again
    assert lim.charge("ip", 1, 194.0) == (418, 1, 240)   # the second ban is twice as long


def test_a_client_that_waits_out_retry_after_is_not_banned():
    lim = WeightLimiter(5)
    lim.charge("ip", 5, 0.0)
    assert lim.charge("ip", 1, 30.0)[0] == 429
    assert lim.charge("ip", 1, 60.0)[0] == 200


def test_depth_weights_as_binance_charges():
    assert [depth_weight("spot", n) for n in (1, 100, 101, 500, 1000, 1001, 5000)] == [5, 5, 25, 25, 50, 250, 250]
    assert [depth_weight("usdm", n) for n in (5, 50, 100, 500, 1000)] == [2, 2, 5, 10, 20]
    assert depth_weight("usdm", 7) is None
    assert [depth_weight("coinm", n) for n in (5, 10, 20, 50, 100, 500, 1000)] == [2, 2, 2, 2, 5, 10, 20]
    assert depth_weight("coinm", 5000) is None


def test_sliding_counter():
    c = SlidingCounter(2, 1.0)
    assert c.hit(0.0) and c.hit(0.5) and not c.hit(0.9)
    assert c.hit(1.6)


def test_fault_settings_are_checked():
    assert parse_cli(["stall=2.5", "no_pong=true", "drop=abort"]) == {"stall": 2.5, "no_pong": True, "drop": "abort"}
    for bad in (["stall"], ["stal=1"], ["stall=-1"], ["drop=maybe"], ["no_pong=perhaps"]):
        with pytest.raises(FaultError):
            parse_cli(bad)
    f = Faults()
    actions = f.apply({"shutdown": 2, "lifetime": 10, "stall": 1, "stall_conn": 4}, now=100.0)
    assert actions == [("shutdown", 2.0)]
    assert f.lifetime == 10 and f.stalled(4, 100.5) and not f.stalled(5, 100.5) and not f.stalled(4, 101.5)
    assert f.apply({"drop": "abort", "drop_conn": 7}, now=100.0) == [("drop_conn", ("abort", 7))]
    assert f.apply({"drop": "close"}, now=100.0) == [("drop", "close")]


def test_journal_file_mode_round_trips(tmp_path):
    from binance_streamer.simulator.journal import Journal
    j = Journal(str(tmp_path / "journal.txt"))
    j.record(1, 100, b'{"a":1}')
    j.record(2, 101, b'{"stream":"x","data":{"b":"1 2"}}')
    assert j.entries() == [(1, 100, b'{"a":1}'), (2, 101, b'{"stream":"x","data":{"b":"1 2"}}')]
    assert j.entries(2) == [(2, 101, b'{"stream":"x","data":{"b":"1 2"}}')]
    j.close()
    assert Journal("off").entries() == [] and not Journal("off").enabled


def test_drop_conn_alone_drops_that_connection_and_stall_conn_needs_stall():
    f = Faults()
    assert f.apply({"drop_conn": 7}, now=100.0) == [("drop_conn", ("close", 7))]
    with pytest.raises(FaultError, match="stall_conn only with stall"):
        f.apply({"stall_conn": 4}, now=100.0)
    assert f.stall_conn is None and not f.stalled(4, 100.5)
    with pytest.raises(FaultError, match="stall_conn only with stall"):
        parse_cli(["stall_conn=4"])
