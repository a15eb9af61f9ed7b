"""A depth frame read without decoding its levels (parse.split_depth) must
give exactly what the general path gives (orjson, then parse.depth): on
every real frame, and on frames changed byte by byte, where either it is not
taken (None: the general path reads it, and refuses what is wrong) or both
paths make the same rows of it. The captures are cryptofeed's (../shared/realdata/cryptofeed)."""

import os
import random

import orjson
import pytest

from binance_streamer.binance import parse
from tests.support import REALDATA, need

CAPTURES = {"spot": ["BINANCE-b38f7c.0", "BINANCE.ws.1.0"], "usdm": ["BINANCE_FUTURES-1125a2.0",
                                                                    "BINANCE_FUTURES.ws.1.0"]}


def _depth_frames(market):
    out = []
    for name in CAPTURES[market]:
        with open(need(os.path.join(REALDATA, "cryptofeed", name)), "rb") as f:
            for line in f:
                if line[:1].isdigit() and b'"depthUpdate"' in line:
                    out.append(line.rstrip(b"\n").partition(b": ")[2])
    return out


def _general(market, data):
    """What the general path makes of a frame: ("rows", ...) or ("refused", the error type)."""
    try:
        msg = orjson.loads(data)
        return "rows", msg["stream"], parse.depth(market, msg["data"], 7)
    except (orjson.JSONDecodeError, *parse.MALFORMED) as exc:
        return "refused", type(exc).__name__


def _fast(market, data):
    parts = parse.split_depth(data)
    if parts is None:
        return None
    stream, d, head, sides = parts
    try:
        return "rows", stream, parse.depth(market, d, 7, sides, head)
    except parse.MALFORMED as exc:
        return "refused", type(exc).__name__


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_every_real_depth_frame_is_read_the_same_both_ways(market):
    frames = _depth_frames(market)
    assert len(frames) > 1000
    for data in frames:
        fast = _fast(market, data)
        assert fast is not None, data[:200]          # Binance's frames all take the fast path
        assert fast == _general(market, data)


BYTES = b'0123456789.,"[]{}:-+eE \\\\ax'


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_a_frame_changed_byte_by_byte_is_refused_or_read_the_same_both_ways(market):
    rng = random.Random(15)
    frames = _depth_frames(market)
    taken = refused = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            how = rng.random()
            if how < 0.4:
                data[i:i + 1] = bytes([rng.choice(BYTES)])
            elif how < 0.7:
                del data[i]
            else:
                data[i:i] = bytes([rng.choice(BYTES)])
        data = bytes(data)
        fast = _fast(market, data)
        if fast is None:
            continue
        taken += 1
        refused += fast[0] == "refused"
        assert fast == _general(market, data), data
    # every value the fast path takes is checked as it is matched: what it
    # takes, the general path records the same; what is wrong, it leaves
    assert taken > 2000 and refused == 0


def test_what_json_allows_but_binance_does_not_write_takes_the_general_path():
    good = (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":2,"u":3,'
            b'"b":[["1.0","2.0"]],"a":[]}}')
    assert parse.split_depth(good) is not None
    for other in (good.replace(b'"b":[', b'"b": ['),                     # a space
                  good.replace(b'"1.0"', b'"1.\\u0030"'),                 # an escape
                  good.replace(b'"1.0"', b'"1e0"'),                        # an exponent
                  good.replace(b'"2.0"', b'"' + b"1" * 20 + b'"'),         # longer than the fast path reads
                  good.replace(b'"E":1', b'"E":1,"b":[]'),                 # a repeated key
                  good.replace(b'"E":1', b'"x":{"b":1},"E":1'),            # a nested value
                  good.replace(b'"data":{', b'"data":{"x":1,').replace(b',"a":[]}}', b',"a":[],"z":1}}'),
                  good.replace(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate",', b'{"data":{')):
        assert parse.split_depth(other) is None, other
