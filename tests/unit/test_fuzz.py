"""Fuzz: mutated real Binance frames and REST answers thrown at the parsers
and the worker. Nothing may raise out of them, a refused event is counted,
and nothing that is not a number reaches a number column.

Bounded in the suite (profile ``ci``: a fixed seed, a few hundred examples);
``python bench/fuzz.py`` runs the same properties with a larger budget.
The captures are cryptofeed's (../shared/realdata/cryptofeed). This product
includes software developed by Bryant Moscon (http://www.bryantmoscon.com/)."""

import json
import os
import random

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from binance_streamer.messages import Rows, each_line
from binance_streamer import config, csvfiles
from binance_streamer.binance import parse, rest
from binance_streamer.simulator.mutate import HOSTILE, mutate
from binance_streamer.worker import Worker
from tests.support import REALDATA

settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=int(os.environ.get("BINANCE_STREAMER_FUZZ_EXAMPLES", 20_000)),
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CAPTURES = {"spot": os.path.join(REALDATA, "cryptofeed", "BINANCE.ws.1.0"),
            "usdm": os.path.join(REALDATA, "cryptofeed", "BINANCE_FUTURES.ws.1.0")}
SNAPSHOTS = os.path.join(REALDATA, "cryptofeed", "BINANCE.http.0.0")


def _frames(market):
    path = CAPTURES[market]
    if not os.path.exists(path):
        return []
    out = []
    with open(path, "rb") as f:
        for line in f:
            if line[:1].isdigit():
                out.append(line.rstrip(b"\n").partition(b": ")[2])
    return out[::7][:300]


FRAMES = {m: _frames(m) for m in CAPTURES}
hostile = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30), st.integers(), st.floats(), st.none(),
                    st.booleans(), st.lists(st.text(max_size=5), max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _mutated(draw, frame):
    """One field of the event (or of a price level) replaced by ``hostile``,
    removed, or the frame cut, as hypothesis chooses."""
    msg = orjson.loads(frame)
    d = msg["data"]
    target = d["k"] if "k" in d and draw(st.booleans()) else d
    key = draw(st.sampled_from(sorted(target)))
    how = draw(st.sampled_from(["replace", "remove", "level", "cut"]))
    if how == "cut":
        return frame[:draw(st.integers(1, len(frame) - 1))]
    if how == "remove":
        del target[key]
    elif how == "level" and isinstance(target.get("b"), list) and target["b"]:
        target["b"][0] = [draw(hostile), target["b"][0][1]]
    else:
        target[key] = draw(hostile)
    try:
        return json.dumps(msg, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return frame[:-1]


def _check_lines(market, batch):
    """Every number column of every line produced holds a number."""
    for m in batch:
        if not isinstance(m, Rows):
            continue
        names = csvfiles.columns(market, m.stream)
        for _, line in each_line(m):
            for name, value in zip(names, line.rstrip("\n").split(",")):
                if value == "" or name in csvfiles.TEXT_COLUMNS:
                    continue
                if csvfiles.is_decimal_column(name):
                    (parse.rate if name in csvfiles.SIGNED_DECIMAL else parse.num)(value)
                elif csvfiles.pandas_dtype(name) == "Int64":
                    assert value.lstrip("-").isdigit(), (name, value, line)


@pytest.mark.parametrize("market", ["spot", "usdm"])
@given(data=st.data())
def test_a_mutated_real_frame_never_escapes_the_worker_and_never_reaches_a_number_column(market, data):
    if not FRAMES[market]:
        pytest.skip("reference material not present")
    frame = data.draw(st.sampled_from(FRAMES[market]))
    symbol = orjson.loads(frame)["stream"].split("@")[0].upper()
    cfg = config.load(None, {"market": market, "symbols": symbol, "streams": "aggTrade,depth@100ms,kline_1m,bookTicker"})
    alone = Worker(cfg, [symbol])
    alone.on_frames([frame], 1)
    w = Worker(cfg, [symbol])
    bad = _mutated(data.draw, frame)
    w.on_frames([frame, bad], 1)                 # must not raise
    assert w.counts["errors"] == 0
    batch = w.take_batch()
    _check_lines(market, batch)
    # the mutated frame was refused and counted, or recorded, or set aside as the original would be
    refused = w.counts["malformed"] + w.counts["unknown"]
    rows = sum(len(each_line(m)) for m in batch if isinstance(m, Rows))
    before = sum(len(each_line(m)) for m in alone.take_batch() if isinstance(m, Rows))
    set_aside = sum(w.counts[k] - alone.counts[k] for k in ("open_klines", "duplicates"))
    assert refused <= 1 and (refused == 1 or rows > before or set_aside == 1)


def _snapshot_answer():
    if not os.path.exists(SNAPSHOTS):
        return None
    with open(SNAPSHOTS, "rb") as f:
        body = f.readline().rstrip(b"\n").partition(b": ")[2]
    d = orjson.loads(body)
    d["bids"], d["asks"] = d["bids"][:5], d["asks"][:5]
    return d


SNAPSHOT = _snapshot_answer()


@given(data=st.data())
def test_a_mutated_rest_snapshot_is_accepted_whole_or_refused_with_a_value_error(data):
    if SNAPSHOT is None:
        pytest.skip("reference material not present")
    d = json.loads(json.dumps(SNAPSHOT))
    key = data.draw(st.sampled_from(["lastUpdateId", "bids", "asks", "level", "side-level"]))
    if key == "level":
        d["bids"][data.draw(st.integers(0, 4))][data.draw(st.integers(0, 1))] = data.draw(hostile)
    elif key == "side-level":
        d["asks"][data.draw(st.integers(0, 4))] = data.draw(hostile)
    else:
        d[key] = data.draw(hostile)
    try:
        last, bids, asks = parse.snapshot(d)
    except (ValueError, TypeError, KeyError):
        return
    assert parse.uint(last) == last
    for price, qty in bids + asks:
        parse.num(price), parse.num(qty)


@given(seed=st.integers(0, 2**32))
def test_the_simulators_mutations_are_refused_or_recorded_never_raised(seed):
    """The live fuzz (simulator ``mutate_every``) uses mutate(); here the same
    mutations go straight to the worker."""
    if not FRAMES["spot"]:
        pytest.skip("reference material not present")
    rng = random.Random(seed)
    frame = rng.choice(FRAMES["spot"])
    msg = orjson.loads(frame)
    bad = b'{"stream":"%s","data":%s}' % (msg["stream"].encode(), mutate(orjson.dumps(msg["data"]), rng))
    symbol = msg["stream"].split("@")[0].upper()
    w = Worker(config.load(None, {"symbols": symbol, "streams": "aggTrade,depth@100ms,kline_1m,bookTicker"}),
               [symbol])
    w.on_frames([bad], 1)
    assert w.counts["errors"] == 0
    _check_lines("spot", w.take_batch())


@given(body=st.one_of(st.binary(max_size=200), st.sampled_from([b"[]", b"{}", b"null", b'{"symbols": 5}',
                                                                 b'{"symbols": [1]}', b'{"rateLimits": "x"}'])))
def test_any_exchange_info_body_is_json_of_the_right_shape_or_a_reason(body):
    class Resp:
        headers = {"Content-Type": "application/json"}
        text = body.decode("utf-8", "replace")

        def json(self):
            return orjson.loads(body)

    answer, why = rest._answer(Resp(), rest.check_exchange_info)
    assert (answer is None) != (why is None)
    if answer is not None:
        rest.trading_symbols(answer, "spot")
        rest.weight_limit(answer)
