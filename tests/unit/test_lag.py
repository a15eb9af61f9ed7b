"""How far behind a connection is: the event time of a read's oldest frame
(pure; the health verdict built from it is in test_health.py)."""

from binance_streamer.binance.parse import first_event_time


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
