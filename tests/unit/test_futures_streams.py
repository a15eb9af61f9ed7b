"""markPrice and forceOrder (futures only): their rows in streams.KINDS,
parsers, continuity, the worker's handling, config errors, the simulator's
events, and the offline loader and verifier on made-up files."""

import random

import orjson
import pandas as pd
import pytest

from binance_streamer import config, csvfiles, streams
from binance_streamer.analysis.load import load
from binance_streamer.analysis.verify import verify
from binance_streamer.binance import parse
from binance_streamer.config import ConfigError
from binance_streamer.continuity import CONTINUES, DUPLICATE, FIRST, LOST, handed_over, hole_after, periodic
from binance_streamer.messages import Rows, each_line
from binance_streamer.sequence import WITHIN, Sequencer, gap_row
from binance_streamer.simulator.futures import FUNDING_MS, FuturesFeeds
from binance_streamer.simulator.market import SymbolMarket
from binance_streamer.simulator.mutate import mutate
from binance_streamer.status import _silent_streams
from binance_streamer.worker import Worker

# Binance's documented payloads (USD-M "Mark Price Stream", "Liquidation Order Streams")
MARK = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000", "i": "11784.62659091",
        "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}
FORCE = {"e": "forceOrder", "E": 1568014460893, "o": {"s": "BTCUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC",
                                                       "q": "0.014", "p": "9910", "ap": "9910", "X": "FILLED",
                                                       "l": "0.014", "z": "0.014", "T": 1568014460893}}
# COIN-M: ps beside; a dated contract has no funding ("r" "", "T" 0)
MARK_DELIVERY = dict(MARK, s="BTCUSD_200925", ps="BTCUSD", r="", T=0)


def test_mark_price_row_is_the_strings_as_sent():
    ident, line = parse.mark_price("usdm", MARK, 1562305380123456)
    assert ident == 1562305380000
    assert line == "1562305380000,11794.15000000,11784.62659091,11784.25641265,0.00038167,1562306400000," \
                   "1562305380123456\n"
    assert dict(zip(csvfiles.columns("usdm", "markPrice"), line.rstrip().split(","))) == {
        "event_time": "1562305380000", "mark_price": "11794.15000000", "index_price": "11784.62659091",
        "estimated_settle_price": "11784.25641265", "funding_rate": "0.00038167",
        "next_funding_time": "1562306400000", "local_time_us": "1562305380123456"}


def test_delivery_contract_mark_price_keeps_empty_rate_and_zero_time():
    _, line = parse.mark_price("usdm", MARK_DELIVERY, 7)
    assert line.split(",")[4:] == ["", "0", "7\n"]
    assert streams.unexpected_fields(streams.KINDS["markPrice"], MARK_DELIVERY) == []
    assert parse.mark_price("usdm", dict(MARK, r="-0.00010000"), 7)[1].split(",")[4] == "-0.00010000"


def test_force_order_row_is_the_strings_as_sent():
    ident, line = parse.force_order("usdm", FORCE, 99)
    assert ident == 1568014460893
    assert line == "1568014460893,SELL,LIMIT,IOC,0.014,9910,9910,FILLED,0.014,0.014,1568014460893,99\n"
    assert len(line.split(",")) == len(csvfiles.columns("usdm", "forceOrder"))
    coinm = dict(FORCE, o=dict(FORCE["o"], s="BTCUSD_PERP", ps="BTCUSD"))
    assert parse.force_order("usdm", coinm, 99)[1] == line


def test_unknown_fields_are_tolerated_and_found():
    for name, d in (("markPrice", MARK), ("forceOrder", FORCE)):
        kind = streams.KINDS[name]
        assert streams.unexpected_fields(kind, d) == []
        extra = dict(d, zz=1)
        assert streams.unexpected_fields(kind, extra) == ["zz"]
        assert kind.parse("usdm", extra, 0) == kind.parse("usdm", d, 0)
    inner = dict(FORCE, o=dict(FORCE["o"], ps="BTCUSD", new=1))
    assert streams.unexpected_fields(streams.KINDS["forceOrder"], inner) == ["o.new"]


@pytest.mark.parametrize("change", [
    {"p": "abc"}, {"p": "1e5"}, {"p": -1}, {"i": ""}, {"P": None}, {"r": "--1"}, {"r": "0.1.2"}, {"r": "-"},
    {"r": 0.0001}, {"T": -1}, {"T": "0"}, {"E": 1.5}, {"E": "1562305380000"}])
def test_malformed_mark_price_raises_what_callers_count(change):
    with pytest.raises(parse.MALFORMED):
        parse.mark_price("usdm", dict(MARK, **change), 0)


@pytest.mark.parametrize("change", [
    {"S": "SE,LL"}, {"S": ""}, {"o": "LIMIT\n"}, {"f": 1}, {"q": "1,0"}, {"ap": "-1"}, {"X": None}, {"l": "x"},
    {"T": "now"}])
def test_malformed_force_order_raises_what_callers_count(change):
    with pytest.raises(parse.MALFORMED):
        parse.force_order("usdm", dict(FORCE, o=dict(FORCE["o"], **change)), 0)
    for bad in ({"o": "x"}, {"o": [1]}, {"E": -5}):
        with pytest.raises(parse.MALFORMED):
            parse.force_order("usdm", dict(FORCE, **bad), 0)


def test_names_periods_and_groups():
    assert streams.file_stream("markPrice@1s") == "markPrice" == streams.kind_of("markPrice")
    assert [streams.period_ms(s) for s in ("markPrice", "markPrice@1s", "forceOrder")] == [3000, 1000, None]
    assert streams.periods_of("markPrice") == [1000, 3000]
    assert streams.id_step("markPrice") is None and not streams.backfillable("forceOrder")
    assert csvfiles.pandas_dtypes("usdm", "markPrice") == {
        "event_time": "Int64", "mark_price": "string", "index_price": "string", "estimated_settle_price": "string",
        "funding_rate": "string", "next_funding_time": "Int64", "local_time_us": "Int64"}
    dtypes = csvfiles.pandas_dtypes("usdm", "forceOrder", exact=False)
    assert dtypes["side"] == dtypes["order_type"] == dtypes["order_status"] == "string"
    assert dtypes["price"] == dtypes["average_price"] == dtypes["accumulated_fill_quantity"] == "float64"


def test_periodic_continuity():
    assert hole_after(1000) == 1500 and hole_after(3000) == 4500
    assert periodic(None, "start", 5000, 1000) == FIRST          # the writer compares it with the file
    assert periodic(5000, "live", 6000, 1000) == CONTINUES
    assert periodic(5000, "live", 6500, 1000) == CONTINUES       # late, not missing
    assert periodic(5000, "live", 7000, 1000) == LOST            # one event missing
    assert periodic(5000, "reconnected", 6000, 1000) == CONTINUES   # a reconnect that missed nothing
    assert periodic(5000, "reconnected", 11000, 3000) == LOST
    assert periodic(5000, "live", 5000, 1000) == DUPLICATE
    assert periodic(5000, "live", 4000, 1000) == DUPLICATE


def test_handover_overlap():
    mark, force = streams.KINDS["markPrice"].overlap, streams.KINDS["forceOrder"].overlap
    assert handed_over(mark, 6000, 6000) and not handed_over(mark, 6000, 7000)
    assert handed_over(force, 6000, None)       # a liquidation may not come for hours: no overlap to wait for


# -- config -------------------------------------------------------------------------------------------------

def _cfg(market, streams_):
    return config.load(None, {"market": market, "symbols": "BTCUSDT", "streams": streams_})


def test_futures_accept_both_streams():
    cfg = _cfg("usdm", "aggTrade,markPrice@1s,forceOrder")
    assert cfg.streams == ["aggTrade", "markPrice@1s", "forceOrder"]
    assert _cfg("usdm", "markPrice").streams == ["markPrice"]


@pytest.mark.parametrize("streams_, message", [
    ("aggTrade,markPrice", "stream 'markPrice' in --streams: spot has no markPrice stream (futures only); "
                           "remove it or record market usdm"),
    ("markPrice@1s", "stream 'markPrice@1s' in --streams: spot has no markPrice stream"),
    ("forceOrder", "stream 'forceOrder' in --streams: spot has no forceOrder stream"),
])
def test_spot_refuses_them_in_one_line(streams_, message):
    with pytest.raises(ConfigError) as e:
        _cfg("spot", streams_)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_misspelled_names_get_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'markPrice'"):
        _cfg("usdm", "markprice")
    with pytest.raises(ConfigError, match="did you mean 'forceOrder'"):
        _cfg("usdm", "forceOrders")
    with pytest.raises(ConfigError, match="listed twice"):
        _cfg("usdm", "forceOrder,forceOrder")


# -- the worker -------------------------------------------------------------------------------------------

def _frame(stream, d):
    return orjson.dumps({"stream": f"btcusdt@{stream}", "data": d})


def _marks(*times):
    return [_frame("markPrice@1s", dict(MARK, E=t)) for t in times]


def _batch(w):
    return [("rows", m.stream, m.ids) if isinstance(m, Rows) else ("gap", m.row) for m in w.take_batch()]


def test_worker_mark_price_holes_reconnects_and_duplicates():
    w = Worker(_cfg("usdm", "markPrice@1s,forceOrder"), ["BTCUSDT"])
    w.on_frames(_marks(1000, 2000, 3000), 1)
    w.on_frames(_marks(3000, 5000), 2)                  # a repeat (handover) dropped, then 4000 missing
    w.on_connected(list(w.routes))
    w.on_frames(_marks(6000), 3)                        # reconnected, nothing missed
    w.on_frames([_frame("markPrice@1s", dict(MARK, E=7000, p="bad"))], 4)     # malformed: dropped, counted
    w.on_frames(_marks(8000), 5)
    batch = _batch(w)
    assert [i for b in batch if b[0] == "rows" for i in b[2]] == [1000, 2000, 3000, 5000, 6000, 8000]
    gaps = [b[1] for b in batch if b[0] == "gap"]
    assert [(g["stream"], g["reason"], g["last_good_id"], g["first_id_after"], g["action"]) for g in gaps] == [
        ("markPrice", "start", None, 1000, ""),
        ("markPrice", "id jump", 3000, 5000, "lost"),
        ("markPrice", "malformed event", 6000, 8000, "lost")]
    assert w.counts["duplicates"] == 1 and w.counts["malformed"] == 1
    assert gaps[0][WITHIN] == 1500 and WITHIN not in gaps[1]     # the writer's limit for the first event


@pytest.mark.parametrize("first, row", [(4000, None), (4500, None), (3000, None),
                                        (4501, ("start", 3000, 4501, "lost"))])
def test_the_writer_ledgers_a_restart_of_mark_prices_only_when_an_event_fell_in_it(first, row):
    seq = Sequencer("usdm")
    seq.accept("BTCUSDT", "markPrice", [1000, 2000, 3000], False, 0.0)
    report = gap_row(1, "markPrice", "start", None, first, "", first_time=first)
    report[WITHIN] = 1500
    written, request = seq.reported("BTCUSDT", report, 1)
    assert request is None
    got = None if written is None else (written["reason"], written["last_good_id"], written["first_id_after"],
                                        written["action"])
    assert got == row and (written is None or WITHIN not in written)
    # a forceOrder (no limit) restart is always a row: nothing says no liquidation fell in it
    seq.accept("BTCUSDT", "forceOrder", [1000], False, 0.0)
    assert seq.reported("BTCUSDT", gap_row(1, "forceOrder", "start", None, 1001, "lost"), 1)[0]["action"] == "lost"


def test_worker_force_order_reconnect_is_a_ledger_row_and_no_book_is_fed():
    cfg = config.load(None, {"market": "usdm", "symbols": "BTCUSDT", "streams": "forceOrder,depth@100ms",
                             "orderbook": True})
    w = Worker(cfg, ["BTCUSDT"])
    w.on_frames([_frame("forceOrder", dict(FORCE, E=t)) for t in (1000, 9000, 9000)], 1)
    w.on_connected(list(w.routes))
    w.on_frames([_frame("forceOrder", dict(FORCE, E=50_000))], 2)
    w.on_frames([_frame("forceOrder", dict(FORCE, E=60_000, o="broken"))], 3)
    w.on_frames([_frame("forceOrder", dict(FORCE, E=61_000, zz=1))], 4)
    batch = _batch(w)
    ids = [i for b in batch if b[0] == "rows" for i in b[2]]
    assert ids == [1000, 9000, 50_000, 61_000]
    gaps = [(g["reason"], g["last_good_id"], g["first_id_after"], g["action"]) for kind, g in
            [b for b in batch if b[0] == "gap"]]
    assert gaps == [("start", None, 1000, "lost"), ("reconnect", 9000, 50_000, "lost"),
                    ("malformed event", 50_000, 60_000, "lost")]
    assert w.take_book_batch() == []                  # liquidations are not book events
    assert w.counts["malformed"] == 1 and w.counts["duplicates"] == 1


def test_a_quiet_force_order_stream_is_not_called_silent():
    children = {"worker-0": {"streams": {"BTCUSDT/forceOrder": {"usual_gap_s": 1.0, "last_recv_us": 1},
                                         "BTCUSDT/markPrice": {"usual_gap_s": 1.0, "last_recv_us": 1}}}}
    assert [p.split()[0] for p in _silent_streams(children, 10_000)] == ["BTCUSDT/markPrice"]


# -- the simulator -------------------------------------------------------------------------------------------

START_US = 1_700_000_000_000_000


def _events(market="usdm", symbol="BTCUSDT", active=("markPrice", "markPrice@1s", "forceOrder"), seconds=60):
    m = SymbolMarket(market, symbol, 7, 100, START_US)
    return m.advance(START_US + seconds * 1_000_000, set(active))


def test_simulated_mark_prices_parse_tick_by_period_and_follow_the_book():
    out = _events()
    for key, period in (("markPrice", 3000), ("markPrice@1s", 1000)):
        events = [orjson.loads(p) for k, p in out if k == key]
        times = [e["E"] for e in events]
        assert len(events) >= 60_000 // period - 1 and set(b - a for a, b in zip(times, times[1:])) == {period}
        for e in events:
            assert streams.unexpected_fields(streams.KINDS["markPrice"], e) == []
            parse.mark_price("usdm", e, 0)
            assert e["T"] % FUNDING_MS == 0 and 0 < e["T"] - e["E"] <= FUNDING_MS
            assert abs(float(e["p"]) / 30000 - 1) < 0.01 and abs(float(e["i"]) / float(e["p"]) - 1) < 0.002
    both = {}
    for k, p in out:
        if k.startswith("markPrice"):
            both.setdefault(orjson.loads(p)["E"], set()).add(p)
    assert all(len(v) == 1 for v in both.values())     # the two speeds carry the same event at the same time


def test_simulated_liquidations_are_rare_plausible_and_seeded():
    out = _events(seconds=300)
    events = [orjson.loads(p) for k, p in out if k == "forceOrder"]
    assert 20 <= len(events) <= 110                   # about one second in five
    times = [e["E"] for e in events]
    assert times == sorted(set(times)) and all(t % 1000 == 0 for t in times)
    for e in events:
        o = e["o"]
        parse.force_order("usdm", e, 0)
        assert streams.unexpected_fields(streams.KINDS["forceOrder"], e) == []
        assert o["S"] in ("BUY", "SELL") and o["X"] == "FILLED" and o["q"] == o["l"] == o["z"] and o["T"] <= e["E"]
        assert (float(o["p"]) < float(o["ap"])) if o["S"] == "SELL" else (float(o["p"]) > float(o["ap"]))
    assert out == _events(seconds=300)


def test_futures_streams_leave_the_other_streams_of_a_seed_unchanged():
    plain = [x for x in _events(active=("aggTrade", "bookTicker"), seconds=20)]
    mixed = [x for x in _events(active=("aggTrade", "bookTicker", "markPrice@1s", "forceOrder"), seconds=20)
             if not x[0].startswith(("markPrice", "forceOrder"))]
    assert plain == mixed and plain


def test_delivery_and_coinm_mark_prices():
    feeds = FuturesFeeds("coinm", "BTCUSD_200925", 1, 1)
    book = SymbolMarket("usdm", "BTCUSDT", 1, 100, START_US)
    e = feeds.mark_price(book, 1_600_000_000_000)
    assert (e["ps"], e["r"], e["T"]) == ("BTCUSD", "", 0)
    parse.mark_price("coinm", e, 0)
    perp = FuturesFeeds("coinm", "BTCUSD_PERP", 1, 1).mark_price(book, 1_600_000_000_000)
    assert perp["r"] != "" and perp["T"] == 1_600_012_800_000
    order = feeds.force_order(book, 1_600_000_000_000)
    assert order["o"]["ps"] == "BTCUSD"


def test_mutated_futures_frames_never_escape_the_worker_nor_reach_a_number_column():
    rng = random.Random(5)
    w = Worker(_cfg("usdm", "markPrice@1s,forceOrder"), ["BTCUSDT"])
    sent = 0
    for i, (key, payload) in enumerate(_events(seconds=300)):
        if key in ("markPrice@1s", "forceOrder"):
            if rng.random() < 0.3:
                payload = mutate(payload, rng)
            w.on_frames([b'{"stream":"btcusdt@%s","data":%s}' % (key.encode(), payload)], i)
            sent += 1
    assert w.counts["errors"] == 0 and 20 < w.counts["malformed"] < sent
    rows = 0
    for m in w.take_batch():
        if not isinstance(m, Rows):
            continue
        names = csvfiles.columns("usdm", m.stream)
        for _, line in each_line(m):
            rows += 1
            cells = line.rstrip("\n").split(",")
            assert len(cells) == len(names)
            for name, value in zip(names, cells):
                if name in csvfiles.TEXT_COLUMNS:
                    assert parse.word(value)
                elif name in csvfiles.SIGNED_DECIMAL:
                    parse.rate(value)
                elif csvfiles.is_decimal_column(name):
                    parse.num(value)
                else:
                    assert value.isdigit(), (name, value)
    assert rows + w.counts["malformed"] + w.counts["duplicates"] >= sent - 5 and rows > sent // 2


# -- offline: load and verify -------------------------------------------------------------------------------

def _write(root, stream, lines, day="2019-07-05", symbol="BTCUSDT"):
    folder = root / "usdm" / symbol
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{symbol}-{stream}-{day}.csv"
    path.write_bytes(csvfiles.header("usdm", stream) + "".join(lines).encode())
    return path


def _mark_lines(times, r="0.00038167"):
    return [parse.mark_price("usdm", dict(MARK, E=t, r=r), t * 1000 + 5)[1] for t in times]


def test_load_gives_the_documented_dtypes(tmp_path):
    _write(tmp_path, "markPrice", _mark_lines([1562305380000]) + _mark_lines([1562305381000], r=""))
    _write(tmp_path, "forceOrder", [parse.force_order("usdm", FORCE, 5)[1]], day="2019-09-09")
    exact = load(tmp_path, "BTCUSDT", "markPrice", market="usdm", exact=True)
    assert list(exact["mark_price"]) == ["11794.15000000"] * 2
    assert exact["funding_rate"].iloc[0] == "0.00038167" and exact["funding_rate"].isna().iloc[1]
    assert exact.index[0] == pd.Timestamp(1562305380000, unit="ms", tz="UTC")
    loose = load(tmp_path, "BTCUSDT", "markPrice", market="usdm")
    assert loose["funding_rate"].dtype == "float64" and str(loose["next_funding_time"].dtype) == "Int64"
    force = load(tmp_path, "BTCUSDT", "forceOrder", market="usdm", exact="decimal")
    assert force["side"].iloc[0] == "SELL" and str(force["price"].iloc[0]) == "9910"
    assert str(force["trade_time"].dtype) == "Int64"
    empty = load(tmp_path, "BTCUSDT", "forceOrder", market="usdm", start="2020-01-01")
    assert empty.empty and "average_price" in empty.columns


def _ledger(root, rows, day="2019-07-05"):
    lines = [f"1,markPrice,reconnect,{a},{b},{a},{b},lost,0,\n" for a, b in rows]
    _write(root, "gaps", lines, day=day)


def test_verify_finds_a_mark_price_hole_and_accepts_it_when_ledgered(tmp_path):
    t0 = 1562305380000
    times = [t0 + i * 1000 for i in range(10)] + [t0 + i * 1000 for i in range(14, 20)]
    _write(tmp_path, "markPrice", _mark_lines(times))
    _write(tmp_path, "forceOrder", [parse.force_order("usdm", dict(FORCE, E=t0 + 5), 5)[1]])
    report = verify(str(tmp_path), "usdm")
    assert [p.what for p in report.problems] == [f"hole between ids {t0 + 9000} and {t0 + 14000} not in the "
                                                 "gap ledger"]
    _ledger(tmp_path, [(t0 + 9000, t0 + 14000)])
    report = verify(str(tmp_path), "usdm", expected={"markPrice", "forceOrder"})
    assert report.ok, report.problems
    assert next(f for f in report.files if f.stream == "markPrice").breaks == 1


def test_verify_reads_the_three_second_period_from_the_file(tmp_path):
    t0 = 1562305380000
    _write(tmp_path, "markPrice", _mark_lines([t0 + i * 3000 for i in range(20)]))
    assert verify(str(tmp_path), "usdm").ok
    _write(tmp_path, "markPrice", _mark_lines([t0 + i * 3000 for i in range(20)] + [t0 + 20 * 3000 + 3000]))
    assert len(verify(str(tmp_path), "usdm").problems) == 1


def test_verify_force_order_duplicates_and_order_and_a_quiet_day(tmp_path):
    t0 = 1568014460893
    lines = [parse.force_order("usdm", dict(FORCE, E=t), 5)[1] for t in (t0, t0 + 5000, t0 + 5000, t0 + 2000)]
    _write(tmp_path, "forceOrder", lines)
    _write(tmp_path, "markPrice", _mark_lines([t0, t0 + 1000]))
    _write(tmp_path, "markPrice", _mark_lines([t0 + 2000]), day="2019-07-06")
    report = verify(str(tmp_path), "usdm", expected={"markPrice", "forceOrder"})
    whats = sorted(p.what for p in report.problems if p.stream == "forceOrder")
    assert whats == ["1 repeated event_time values", "1 rows out of event_time order"]
    assert not [p for p in report.problems if p.day == "2019-07-06"]     # no liquidation that day: no file, normal
