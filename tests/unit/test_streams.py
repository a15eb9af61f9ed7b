"""streams.KINDS: every stream has one complete entry, and its facts agree
with Binance's own example payloads and with our parsers and schemas."""

import json

import pytest

from binance_streamer import csvfiles, streams
from binance_streamer.binance.endpoints import stream_group
from tests.support import PAYLOADS, need

# payload example -> (market, file stream, the id Binance's example carries)
EXAMPLES = {
    "spot_aggTrade": ("spot", "aggTrade", 12345),
    "spot_trade": ("spot", "trade", 12345),
    "spot_kline": ("spot", "kline_1m", 1672515780000),
    "spot_bookTicker": ("spot", "bookTicker", 400900217),
    "spot_depthUpdate": ("spot", "depth", 160),
    "futures_aggTrade_sdk": ("usdm", "aggTrade", 5933014),
    "futures_kline_sdk": ("usdm", "kline_1m", 1638747660000),
    "futures_bookTicker_sdk": ("usdm", "bookTicker", 400900217),
    "futures_depthUpdate_sdk": ("usdm", "depth", 160),
}


def _stream_schemas():
    kinds = {key[1] if isinstance(key, tuple) else key for key in csvfiles.SCHEMAS}
    return kinds - {"depthSnapshot", "gaps"} - set(csvfiles.SERIES_SCHEMAS)      # REST series: series.py


def test_every_stream_with_a_schema_has_an_entry_and_no_entry_lacks_a_schema():
    assert _stream_schemas() == set(streams.KINDS)


@pytest.mark.parametrize("name", sorted(streams.KINDS))
def test_the_columns_an_entry_names_are_in_its_files(name):
    kind = streams.KINDS[name]
    cols = csvfiles.columns("spot", name)
    assert kind.id_column in cols
    assert set(kind.link_columns) <= set(cols)
    assert set(kind.time_columns) <= set(cols)
    assert kind.rule in (streams.CONSECUTIVE, streams.CHAINED, streams.INCREASING, streams.PERIODIC)
    assert (kind.step is not None) == (kind.rule == streams.CONSECUTIVE)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_ids_of_real_payloads(example):
    payloads = json.load(open(need(PAYLOADS)))
    market, stream, expected = EXAMPLES[example]
    d = payloads[example]
    kind = streams.lookup(stream)
    assert streams.event_id(kind, d) == expected
    assert streams.unexpected_fields(kind, d) == []
    if kind.recorded_if:                       # the example's candle is still open: not a row
        assert not streams.recorded(kind, d) and kind.parse(market, d, 0) is None
        d = dict(d, k=dict(d["k"], x=True))
    assert streams.recorded(kind, d)
    ident = kind.parse(market, d, 0)[0]
    assert ident == expected                   # the parser and the table agree on the id


def test_day_of_a_spot_book_ticker_without_time_is_the_receive_time():
    payloads = json.load(open(need(PAYLOADS)))
    kind = streams.KINDS["bookTicker"]
    assert streams.day_ms(kind, payloads["spot_bookTicker"], 5_000_000) == 5_000
    assert streams.day_ms(kind, payloads["futures_bookTicker_sdk"], 5_000_000) == 1568014460893
    assert streams.event_time(kind, payloads["spot_bookTicker"]) == ""


def test_id_steps():
    assert [streams.id_step(s) for s in ("aggTrade", "trade", "kline_1s", "kline_1m", "kline_4h", "kline_1w")] == \
        [1, 1, 1000, 60_000, 4 * 3_600_000, 604_800_000]
    assert [streams.id_step(s) for s in ("kline_1M", "depth", "bookTicker", "gaps")] == [None] * 4


def test_names():
    assert [streams.kind_of(s) for s in ("kline_5m", "depth@100ms", "depth", "aggTrade", "orderbook")] == \
        ["kline", "depth", "depth", "aggTrade", "orderbook"]
    assert streams.file_stream("depth@500ms") == "depth" and streams.lookup("gaps") is None
    assert [s for s in streams.KINDS if streams.backfillable(s)] == ["aggTrade", "kline"]
    assert csvfiles.ID_COLUMN == {"aggTrade": 0, "trade": 0, "kline": 0, "depth": 3, "bookTicker": 0,
                                  "markPrice": 0, "forceOrder": 0}


def test_usdm_connection_groups():
    groups = {s: stream_group("usdm", s) for s in ("aggTrade", "kline_1m", "depth@100ms", "depth", "bookTicker",
                                                   "markPrice", "markPrice@1s", "forceOrder")}
    assert groups == {"aggTrade": "market", "kline_1m": "market", "depth@100ms": "public", "depth": "public",
                      "bookTicker": "public", "markPrice": "market", "markPrice@1s": "market",
                      "forceOrder": "market"}
    assert stream_group("spot", "depth@100ms") == "spot"
