"""A frame matched whole (parse.frame_reader: depth, bookTicker, aggTrade as
Binance writes them) must give exactly what the general path gives (orjson,
then the kind's parse function): on every real frame of the captures and
every frame the simulator makes (the layouts Binance documents now), and on
frames changed byte by byte, where either it is not matched (None: the
general path reads it, and refuses what is wrong) or both paths make the
same row of it, from the same fields. The captures are cryptofeed's
(../shared/realdata/cryptofeed)."""

import os
import random

import orjson
import pytest

from binance_streamer.binance import parse
from binance_streamer.simulator.market import SymbolMarket
from binance_streamer.streams import kind_of
from tests.support import REALDATA, need

CAPTURES = {"spot": ["BINANCE-b38f7c.0", "BINANCE.ws.1.0"], "usdm": ["BINANCE_FUTURES-1125a2.0",
                                                                    "BINANCE_FUTURES.ws.1.0"]}
KINDS = {"depth": parse.depth, "bookTicker": parse.book_ticker, "aggTrade": parse.agg_trade}


def _frames(market):
    out = []
    for name in CAPTURES.get(market, ()):
        with open(need(os.path.join(REALDATA, "cryptofeed", name)), "rb") as f:
            for line in f:
                if line[:1].isdigit() and b'"data"' in line:
                    out.append(line.rstrip(b"\n").partition(b": ")[2])
    return out + _simulated(market)


def _simulated(market, micros=3_000_000):
    """The simulator's frames (its futures ones as Binance's documentation writes them now: "ps", "st", "nq")."""
    symbol = {"coinm": "BTCUSD_PERP"}.get(market, "BTCUSDT")
    m = SymbolMarket(market, symbol, 1, 5000, 1_700_000_000_000_000)
    return [b'{"stream":"%s@%s","data":%s}' % (symbol.lower().encode(), k.encode(), p)
            for k, p in m.advance(1_700_000_000_000_000 + micros, {"aggTrade", "bookTicker", "depth@100ms"})]


def _general(market, data):
    """What the general path makes of a frame: (kind, stream, the row, the fields) or ("refused", error)."""
    try:
        msg = orjson.loads(data)
        kind = kind_of(msg["stream"].partition("@")[2])
        return kind, msg["stream"], KINDS[kind](market, msg["data"], 7), msg["data"]
    except (orjson.JSONDecodeError, *parse.MALFORMED) as exc:
        return "refused", type(exc).__name__


def _fast(market, data):
    """The same from the stream's frame_reader, as the worker calls it; None when it did not match."""
    text = data.decode("latin-1")
    stream = text[11:text.find('"', 11, 120)]
    kind = kind_of(stream.partition("@")[2])
    read = parse.frame_reader(market, kind) if kind in KINDS else None
    parts = None if read is None else read(text, 7)
    if parts is None:
        return None
    d, ready = parts
    row = parse.depth(market, d, 7, *ready) if kind == "depth" else ready
    return kind, stream, row, d


def _same(fast, general):
    assert fast[:3] == general[:3]
    assert {k: general[3][k] for k in fast[3]} == fast[3]       # every field handed on is the event's


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_every_frame_of_those_kinds_is_read_the_same_both_ways(market):
    matched = 0
    for data in _frames(market):
        general = _general(market, data)
        fast = _fast(market, data)
        if general[0] in KINDS:
            assert fast is not None, data[:200]          # Binance's frames of these kinds are all matched
        if fast is not None:
            matched += 1
            _same(fast, general)
    assert matched > 5000


BYTES = b'0123456789.,"[]{}:-+eEtrufals \\\\x'


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_a_frame_changed_byte_by_byte_is_left_to_the_general_path_or_read_the_same(market):
    rng = random.Random(15)
    frames = [f for f in _frames(market) if _general(market, f)[0] in KINDS]
    matched = 0
    for _ in range(30_000):
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
        matched += 1
        general = _general(market, data)
        # what a reader matches is checked as it is matched: the general
        # path records it too, the same; what is wrong it leaves alone
        assert general[0] != "refused", data
        _same(fast, general)
    assert matched > 3000


def test_what_json_allows_but_binance_does_not_write_takes_the_general_path():
    good = (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":2,"u":3,'
            b'"b":[["1.0","2.0"]],"a":[]}}')
    assert _fast("spot", good) is not None
    for other in (good.replace(b'"b":[', b'"b": ['),                     # a space
                  good.replace(b'"1.0"', b'"1.\\u0030"'),                 # an escape
                  good.replace(b'"1.0"', b'"1e0"'),                        # an exponent
                  good.replace(b'"2.0"', b'"' + b"1" * 20 + b'"'),         # longer than the fast path reads
                  good.replace(b'"E":1', b'"E":01'),                       # a leading zero
                  good.replace(b'"E":1', b'"E":1,"b":[]'),                 # a repeated key
                  good.replace(b'"E":1', b'"x":{"b":1},"E":1'),            # a nested value
                  good.replace(b',"a":[]}}', b',"a":[],"z":1}}'),           # a field more
                  good.replace(b'"e":"depthUpdate",', b'')):               # a field less
        assert _fast("spot", other) is None, other
    ticker = b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1.0","B":"2","a":"1.1","A":"3"}}'
    assert _fast("spot", ticker)[2] == (5, "5,1.0,2,1.1,3,,,7\n")
    assert _fast("spot", ticker.replace(b'"b":"1.0"', b'"b":1.0')) is None
