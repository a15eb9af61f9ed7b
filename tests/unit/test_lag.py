"""How far behind a connection is: the event time of a read's oldest frame,
and the health verdict built from it (pure)."""

import orjson

from binance_streamer.binance.parse import first_event_time
from binance_streamer.status import health


def test_the_oldest_frame_of_a_read_with_an_event_time_gives_it():
    frames = [b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}',
              b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000123,"s":"BTCUSDT","a":5}}',
              b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000999,"s":"BTCUSDT","a":6}}']
    assert first_event_time(frames) == 1700000000123
    assert first_event_time(frames[:1]) is None           # spot bookTickers carry no time
    assert first_event_time([b'{"E":"x"}', b'{"E":7}']) == 7
    assert first_event_time([]) is None


def test_only_the_first_few_frames_are_searched():
    quiet = b'{"u":1,"b":"1"}'
    assert first_event_time([quiet] * 8 + [b'{"E":5}']) is None
    assert first_event_time([quiet] * 7 + [b'{"E":5}']) == 5


def _report(**conn):
    return {"worker-0": {"connections": [{"name": "ws-spot-btcusdt", "group": "spot", "connected": True,
                                          "lag_s": 0.05, "lag_max_s": 0.08, **conn}]}}


RUNNING = [{"name": "writer", "state": "RUNNING"}, {"name": "worker-0", "state": "RUNNING"}]


def test_health_is_ok_when_every_process_runs_and_no_connection_is_behind():
    assert health(RUNNING, _report(), max_lag=3.0) == {"state": "OK", "problems": []}


def test_a_connection_behind_by_more_than_max_lag_makes_it_degraded():
    verdict = health(RUNNING, _report(lag_s=0.1, lag_max_s=4.5), max_lag=3.0)
    assert verdict["state"] == "DEGRADED"
    assert verdict["problems"] == ["worker-0 ws-spot-btcusdt is 4.5 s behind the exchange (max_lag 3 s)"]


def test_a_process_not_running_or_a_connection_down_makes_it_degraded():
    procs = RUNNING[:1] + [{"name": "worker-0", "state": "BACKOFF"}]
    verdict = health(procs, _report(connected=False, lag_s=None, lag_max_s=None), max_lag=3.0)
    assert verdict["state"] == "DEGRADED"
    assert verdict["problems"] == ["worker-0 is BACKOFF", "worker-0 ws-spot-btcusdt is not connected"]
    orjson.dumps(verdict)          # the status file is JSON
