"""Frames of the three kinds parse.frame_reader matches whole (depth,
bookTicker, aggTrade), generated field by field for every market: Binance's
layouts and others (keys in another order, optional fields present or not,
a field twice, one missing), with values Binance writes and values it never
does (JSON's other spellings of a number, -0, 2**63, leading zeros, long
digit runs, escapes, non-ASCII text, strings for numbers). Whatever the frame,
the reader either leaves it to the general path (None) or gives exactly what
the general path gives, and a Worker records the same batch (rows, ledger,
book events) with the fast path as without it."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from binance_streamer import config
from binance_streamer.worker import Worker
from tests.unit.test_whole_frames import _fast, _general, _same

MARKETS = ("spot", "usdm", "coinm")
SYMBOL = {"spot": "BTCUSDT", "usdm": "BTCUSDT", "coinm": "BTCUSD_PERP"}
STREAM = {"depth": "depth@100ms", "bookTicker": "bookTicker", "aggTrade": "aggTrade"}

# JSON texts of ids and times: good ones, and what JSON allows but uint does not
IDS = st.one_of(
    st.integers(0, 10 ** 18).map(str),
    st.sampled_from(["0", "1", "-1", "-0", "1.0", "1E5", "1e5", "01", "00", str(2 ** 63 - 1), str(2 ** 63),
                     str(10 ** 18 - 1), str(10 ** 18), str(2 ** 64), "9" * 19, "9" * 30, '"5"', "true", "null",
                     "[]", "{}", "1.5", "-5"]))
_DIGITS = st.text("0123456789", min_size=1, max_size=22)
# JSON texts of prices and quantities
NUMBERS = st.one_of(
    st.builds(lambda w, f: f'"{w}.{f}"' if f else f'"{w}"', _DIGITS, st.one_of(st.just(""), _DIGITS)),
    st.sampled_from(['"0"', '"0.0"', '"00.1"', '".5"', '"5."', '"."', '""', '"-1"', '"1e5"', '"1E5"', '"+1"',
                     '"1 "', '" 1"', '"1,5"', '"1.2.3"', '"\\u0031"', '"\u0661"', '"\u00bd"', '"1\\n"', "1.5",
                     "1", "null", '"' + "1" * 19 + "." + "2" * 20 + '"', '"' + "1" * 20 + '"',
                     '"' + "1" * 40 + '"', '"' + "1" * 41 + '"', '"0.' + "0" * 38 + '"']))
FLAGS = st.sampled_from(["true", "false", "True", "1", "0", "null", '"true"'])
SYMBOLS = st.sampled_from(['"BTCUSDT"', '"BTCUSD_PERP"', '"btcusdt"', '""', '"B\\u0054C"', '"BTC\u00e9"', "1"])


def _side(levels):
    return "[" + ",".join(f"[{p},{q}]" for p, q in levels) + "]"


SIDES = st.one_of(st.lists(st.tuples(NUMBERS, NUMBERS), max_size=4).map(_side),
                  st.sampled_from(["[]", "null", '[["1"]]', '[["1","2","3"]]', '["1","2"]', "{}", '[[1,2]]']))


def _fields(kind, market):
    """(key, strategy of its JSON text, Binance's order, present always?) of one kind's fields."""
    futures = market != "spot"
    if kind == "depth":
        return [("e", st.sampled_from(['"depthUpdate"', '"bookTicker"', '"x"']), True), ("E", IDS, True),
                ("T", IDS, futures), ("s", SYMBOLS, True), ("ps", SYMBOLS, False), ("U", IDS, True),
                ("u", IDS, True), ("pu", IDS, futures), ("b", SIDES, True), ("a", SIDES, True),
                ("st", IDS, False)]
    if kind == "bookTicker":
        return [("e", st.sampled_from(['"bookTicker"', '"x"']), futures), ("u", IDS, True), ("E", IDS, futures),
                ("T", IDS, futures), ("s", SYMBOLS, True), ("ps", SYMBOLS, False), ("b", NUMBERS, True),
                ("B", NUMBERS, True), ("a", NUMBERS, True), ("A", NUMBERS, True), ("st", IDS, False)]
    return [("e", st.sampled_from(['"aggTrade"', '"x"']), True), ("E", IDS, True), ("s", SYMBOLS, True),
            ("a", IDS, True), ("p", NUMBERS, True), ("q", NUMBERS, True), ("nq", NUMBERS, False),
            ("f", IDS, True), ("l", IDS, True), ("T", IDS, True), ("m", FLAGS, True), ("M", FLAGS, not futures),
            ("st", IDS, False)]


@st.composite
def frames(draw, kind, market):
    """A frame of ``kind`` for ``market`` (sometimes another market's layout)."""
    layout = draw(st.sampled_from(MARKETS)) if draw(st.integers(0, 4)) == 0 else market
    fields = []
    odd = draw(st.sampled_from([0, 0, 0, 1, 5]))     # in 20: how often a value is one Binance does not write
    for key, values, usual in _fields(kind, layout):
        if draw(st.integers(0, 9)) < (9 if usual else 3):
            odd_one = draw(st.integers(0, 19)) < odd
            fields.append((key, draw(values) if odd_one else draw(_good(kind, key, market))))
    how = draw(st.integers(0, 9))
    if how == 0:
        fields = draw(st.permutations(fields))
    elif how == 1 and fields:                        # a field twice, the copy elsewhere
        i, j = draw(st.integers(0, len(fields) - 1)), draw(st.integers(0, len(fields)))
        fields.insert(j, (fields[i][0], draw(_fields_values(kind, layout, fields[i][0]))))
    elif how == 2 and fields:                        # a field less
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif how == 3 and len(fields) > 1:               # two neighbours swapped
        i = draw(st.integers(0, len(fields) - 2))
        fields[i], fields[i + 1] = fields[i + 1], fields[i]
    elif how == 4:                                   # a time pair moved to the end, T first (older bookTickers)
        times = sorted((f for f in fields if f[0] in "ET"), reverse=True)
        fields = [f for f in fields if f[0] not in "ET"] + times
    stream = draw(st.sampled_from([STREAM[kind], STREAM[kind], STREAM[kind], "depth", "aggTrade", "bookTicker",
                                   "kline_1m", "markPrice"]))
    body = ",".join(f'"{k}":{v}' for k, v in fields)
    return f'{{"stream":"{SYMBOL[market].lower()}@{stream}","data":{{{body}}}}}'.encode()


def _fields_values(kind, layout, key):
    return next(values for k, values, _ in _fields(kind, layout) if k == key)


_GOOD_ID = st.one_of(st.integers(0, 2 ** 63 - 1), st.integers(0, 10 ** 13), st.sampled_from([0, 10 ** 18 - 1,
                                                                                            10 ** 18])).map(str)
_GOOD_NUMBER = st.builds(lambda w, f: f'"{w}.{f}"' if f else f'"{w}"', st.text("0123456789", min_size=1, max_size=19),
                         st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=20)))
_GOOD_SIDE = st.lists(st.tuples(_GOOD_NUMBER, _GOOD_NUMBER), max_size=4).map(_side)


def _good(kind, key, market):
    """A strategy of the JSON text of a value Binance writes for ``key``."""
    fixed = {"e": json.dumps(kind if kind != "depth" else "depthUpdate"), "s": f'"{SYMBOL[market]}"',
             "ps": '"BTCUSD"', "m": "true", "M": "false"}
    if key in fixed:
        return st.just(fixed[key]) if key not in "mM" else st.sampled_from(["true", "false"])
    if key in ("b", "a") and kind == "depth":
        return _GOOD_SIDE
    if key in ("b", "a", "B", "A", "p", "q", "nq") and (kind, key) != ("aggTrade", "a"):
        return _GOOD_NUMBER
    if key == "pu":
        return st.one_of(st.just("-1"), _GOOD_ID)
    return _GOOD_ID


def _either(kind, market):
    return st.one_of(*(frames(kind, market) for kind in ("depth", "bookTicker", "aggTrade"))) \
        if kind is None else frames(kind, market)


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("kind", ["depth", "bookTicker", "aggTrade"])
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_generated_frame_is_read_as_the_general_path_reads_it_or_left_to_it(kind, market, data):
    frame = data.draw(frames(kind, market))
    fast = _fast(market, frame)
    if fast is not None:
        general = _general(market, frame)
        assert general[0] != "refused", frame
        _same(fast, general)


def _worker(market, fast):
    cfg = config.load(None, {"market": market, "symbols": SYMBOL[market], "orderbook": True,
                             "streams": "aggTrade,depth@100ms,bookTicker"})
    w = Worker(cfg, [SYMBOL[market]], clock=lambda: 1_700_000_000.0)
    if not fast:
        for route in w.routes.values():
            route.read = None
    return w


@pytest.mark.parametrize("market", MARKETS)
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_worker_records_the_same_with_the_fast_path_as_without(market, data):
    batches = data.draw(st.lists(st.lists(_either(None, market), min_size=1, max_size=4), min_size=1, max_size=8))
    workers = [_worker(market, True), _worker(market, False)]
    results = []
    for w in workers:
        said = [w.on_frames(frames_, 1_700_000_000_000_000 + i) for i, frames_ in enumerate(batches)]
        results.append((said, w.take_batch(), w.take_book_batch(), dict(w.counts),
                        {n: (r.last, r.state, r.messages, r.bad) for n, r in w.routes.items()}))
    assert results[0] == results[1]
