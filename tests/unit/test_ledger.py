"""The gap ledger: one row for every hole, backfilled ones included, with the
times of the rows around it, written in time order. The worker's routes, the
writer's sequencer and the book manager, without processes or sockets."""

import csv
import os

import orjson

from binance_streamer import config, csvfiles
from binance_streamer.messages import Gap, Rows
from binance_streamer.orderbook import OrderBooks
from binance_streamer.sequence import gap_row
from binance_streamer.worker import Worker
from binance_streamer.writer import Writer

T0 = 1_767_225_600_000          # 2026-01-01 00:00:00 UTC, in ms
DAY = "2026-01-01"


def _t(a):
    """The transact time (ms) of made-up aggTrade ``a``."""
    return T0 + 10 * a


def _agg(a, backfilled=0):
    return f"{a},1.00,2.00,{a},{a},{_t(a)},True,True,{_t(a) + 1},{_t(a) * 1000 + 5},{backfilled}\n"


def _cfg(tmp_path, **kw):
    return config.load(None, {"data_dir": str(tmp_path / "data"), "symbols": "BTCUSDT", **kw})


def _ledger(tmp_path, symbol="BTCUSDT"):
    rows = []
    folder = os.path.join(str(tmp_path / "data"), "spot", symbol)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if "-gaps-" in name:
            with open(os.path.join(folder, name), newline="") as f:
                rows += list(csv.DictReader(f))
    return rows


def _ids_times(g):
    return g["last_good_id"], g["first_id_after"], g["last_good_time"], g["first_time_after"]


def _backfilled_rows(tmp_path):
    with open(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "aggTrade", DAY)) as f:
        return [r for r in csv.DictReader(f) if r["backfilled"] == "1"]


# -- the writer's sequencer -----------------------------------------------------------------


def test_a_hole_the_writer_finds_has_the_same_ids_and_times_when_found_and_when_filled(tmp_path):
    requests = []
    w = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w.add_rows("BTCUSDT", "aggTrade", DAY, [1, 2], [_agg(1), _agg(2)])
    w.add_rows("BTCUSDT", "aggTrade", DAY, [6, 7], [_agg(6), _agg(7)])
    assert requests == [("BTCUSDT", "aggTrade", 3, 5)]
    w.add_rows("BTCUSDT", "aggTrade", DAY, [3, 4, 5], [_agg(a, 1) for a in (3, 4, 5)], backfilled=True)
    w.close()
    gaps = _ledger(tmp_path)
    assert [(g["action"], g["rows"]) for g in gaps] == [("backfill_requested", "0"), ("backfilled", "3")]
    for g in gaps:
        assert _ids_times(g) == ("2", "6", str(_t(2)), str(_t(6)))


def test_a_stream_that_resumes_after_a_restart_gets_the_time_of_the_last_row_on_disk(tmp_path):
    w = Writer(_cfg(tmp_path))
    w.add_rows("BTCUSDT", "aggTrade", DAY, [1, 2], [_agg(1), _agg(2)])
    w.close()
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    now_us = int(w2.clock() * 1e6)        # the hole waits for its backfill from then
    w2.add_gap("BTCUSDT", gap_row(now_us, "aggTrade", "start", None, 6, "", first_time=_t(6)))
    w2.close()
    (g,) = _ledger(tmp_path)
    assert g["action"] == "backfill_requested" and _ids_times(g) == ("2", "6", str(_t(2)), str(_t(6)))


def test_spot_bookticker_rows_are_timed_by_their_receipt_the_others_by_the_exchange(tmp_path):
    assert csvfiles.row_time("spot", "bookTicker", "7,1,2,3,4,,,1767225600123456\n") == 1767225600123
    assert csvfiles.row_time("usdm", "bookTicker", "7,1,2,3,4,1767225600100,1767225600101,1767225600123456\n") \
        == 1767225600101
    assert csvfiles.row_time("spot", "aggTrade", _agg(3)) == _t(3)
    assert csvfiles.row_time("spot", "depth", "1767225600200,,8,10,,bid,1.0,2.0,5\n") == 1767225600200
    assert csvfiles.row_time("spot", "kline_1m", "1767225540000" + ",1" * 14 + ",,5,1\n") == 1767225540000
    assert csvfiles.row_time("spot", "trade", "x\n") == "" and csvfiles.row_time("spot", "trade", None) == ""


# -- the worker ------------------------------------------------------------------------------


class FakeRest:
    requests = failures = malformed = 0

    def __init__(self, ids):
        self.trades = [{"a": a, "p": f"{a}.5", "q": "1", "f": a, "l": a, "T": _t(a), "m": False, "M": True}
                       for a in ids]

    def agg_trades(self, symbol, from_id, limit):
        return [t for t in self.trades if t["a"] >= from_id][:limit]


def _worker(streams, rest=None, market="spot"):
    cfg = config.load(None, {"market": market, "symbols": "BTCUSDT", "streams": streams})
    return Worker(cfg, ["BTCUSDT"], rest=rest)


def _frame(stream, d):
    return orjson.dumps({"stream": f"btcusdt@{stream}", "data": d})


def _agg_event(a):
    return {"e": "aggTrade", "E": _t(a) + 1, "s": "BTCUSDT", "a": a, "p": f"{a}.5", "q": "1", "f": a, "l": a,
            "T": _t(a), "m": False, "M": True}


def _gaps(batch):
    """The ledger rows of a batch, but the first event's report (``start``)."""
    return [m.row for m in batch if isinstance(m, Gap) and m.row["reason"] != "start"]


def _reconnect_hole(w, available):
    for a in (1, 2):
        w.on_frames([_frame("aggTrade", _agg_event(a))], 1)
    w.on_connected(["btcusdt@aggTrade"])
    for a in (6, 7):
        w.on_frames([_frame("aggTrade", _agg_event(a))], 2)
    w.take_batch()
    w.do_job(w.jobs.get_nowait())
    return w.take_batch()


def test_a_reconnect_hole_the_worker_backfills_is_one_row_with_the_times_around_it():
    batch = _reconnect_hole(_worker("aggTrade", FakeRest(range(1, 20))), None)
    (g,) = _gaps(batch)
    assert (g["reason"], g["last_good_id"], g["first_id_after"], g["action"], g["rows"]) == \
        ("reconnect", 2, 6, "backfilled", 3)
    assert (g["last_good_time"], g["first_time_after"]) == (_t(2), _t(6))


def test_holes_in_streams_rest_cannot_fill_carry_the_times_of_the_events_around_them():
    w = _worker("trade,bookTicker,depth@100ms,kline_1m")
    trade = lambda t: {"e": "trade", "E": T0 + t + 1, "s": "BTCUSDT", "t": t, "p": "1", "q": "2", "T": T0 + t,  # noqa: E731
                       "m": True, "M": True}
    ticker = lambda u: {"u": u, "s": "BTCUSDT", "b": "1", "B": "1", "a": "2", "A": "1"}      # noqa: E731 (spot: no time)
    depth = lambda U, u: {"e": "depthUpdate", "E": T0 + u, "s": "BTCUSDT", "U": U, "u": u,  # noqa: E731
                          "b": [["1", "1"]], "a": []}
    kline = lambda m: {"e": "kline", "E": T0 + m * 60_000 + 60_001, "s": "BTCUSDT",  # noqa: E731
                       "k": {"t": T0 + m * 60_000, "T": T0 + m * 60_000 + 59_999, "s": "BTCUSDT", "i": "1m",
                             "f": 1, "L": 2, "o": "1", "c": "1", "h": "1", "l": "1", "v": "1", "n": 2, "x": True,
                             "q": "1", "V": "1", "Q": "1", "B": "0"}}
    before = [("trade", trade(1)), ("bookTicker", ticker(10)), ("depth@100ms", depth(5, 10)), ("kline_1m", kline(0))]
    after = [("trade", trade(4)), ("bookTicker", ticker(20)), ("depth@100ms", depth(15, 20)), ("kline_1m", kline(3))]
    for stream, d in before:
        w.on_frames([_frame(stream, d)], T0 * 1000 + 111_000)
    w.on_connected(list(w.routes))
    for stream, d in after:
        w.on_frames([_frame(stream, d)], T0 * 1000 + 999_000)
    rows = {g["stream"]: g for g in _gaps(w.take_batch()) if g["reason"] == "reconnect"}
    assert {s: (g["last_good_time"], g["first_time_after"]) for s, g in rows.items()} == {
        "trade": (T0 + 1, T0 + 4),
        "bookTicker": (T0 + 111, T0 + 999),             # spot bookTickers: the receive time
        "depth": (T0 + 10, T0 + 20),
        "kline_1m": (T0, T0 + 3 * 60_000)}               # a candle's open time, its id


# -- the book manager ----------------------------------------------------------------------


def test_a_resync_row_has_the_event_times_of_the_diffs_around_the_break():
    cfg = config.load(None, {"market": "spot", "symbols": "BTCUSDT"}).replace(book_refresh_interval=0)
    out = []
    books = OrderBooks(cfg, lambda *a: None, out.append)
    books.on_diff("BTCUSDT", 5, 10, None, [["1.0", "1"]], [["2.0", "1"]], T0 + 10)
    books.on_snapshot("BTCUSDT", 9, [["1.0", "1"]], [["2.0", "1"]])
    books.on_diff("BTCUSDT", 11, 12, None, [], [], T0 + 12)
    books.on_diff("BTCUSDT", 20, 25, None, [], [], T0 + 25)          # 13..19 missing
    (g,) = [m.row for m in out if isinstance(m, Gap)]
    assert (g["reason"], g["last_good_id"], g["first_id_after"]) == ("depth gap", 12, 20)
    assert (g["last_good_time"], g["first_time_after"]) == (T0 + 12, T0 + 25)
