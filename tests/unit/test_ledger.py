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
    return config.load(None, {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                              "log_dir": str(tmp_path / "logs"), "symbols": "BTCUSDT", **kw})


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


def test_a_hole_not_filled_in_time_keeps_its_ids_counts_what_was_filled_and_is_not_asked_again(tmp_path):
    now = [1000.0]
    w = Writer(_cfg(tmp_path), clock=lambda: now[0])
    w.add_rows("BTCUSDT", "aggTrade", DAY, [1], [_agg(1)])
    w.add_rows("BTCUSDT", "aggTrade", DAY, [6], [_agg(6)])                 # hole 2..5
    w.add_rows("BTCUSDT", "aggTrade", DAY, [2, 3], [_agg(2, 1), _agg(3, 1)], backfilled=True)
    now[0] += 500
    w.flush(force=True)
    w.close()
    found, lost = _ledger(tmp_path)
    assert (lost["reason"], lost["action"], lost["rows"]) == ("backfill timeout", "lost", "2")
    assert _ids_times(lost) == _ids_times(found) == ("1", "6", str(_t(1)), str(_t(6)))
    assert "4..5" in lost["detail"]
    requests = []
    w2 = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w2.recover()
    assert requests == []               # the hole is closed: its rows would be written twice


def test_a_partly_backfilled_hole_is_asked_for_again_and_each_filled_row_counted_once(tmp_path):
    requests = []
    w = Writer(_cfg(tmp_path), request_backfill=lambda *r: requests.append(r))
    w.add_rows("BTCUSDT", "aggTrade", DAY, [1, 2], [_agg(1), _agg(2)])
    # the worker's backfill of 3..6 got 3 and 4 only: its row, then those rows, then the live ones
    w.take([Gap("BTCUSDT", gap_row(5, "aggTrade", "reconnect", 2, 7, "lost", 2,
                                   "only 2 of the 4 missing rows were available", _t(2), _t(7))),
            Rows("BTCUSDT", "aggTrade", DAY, [3, 4], [_agg(3, 1), _agg(4, 1)], True),
            Rows("BTCUSDT", "aggTrade", DAY, [7], [_agg(7)], False)], "worker-0")
    assert requests == [("BTCUSDT", "aggTrade", 3, 6)]
    w.add_rows("BTCUSDT", "aggTrade", DAY, [3, 4, 5, 6], [_agg(a, 1) for a in (3, 4, 5, 6)], backfilled=True)
    w.close()
    gaps = _ledger(tmp_path)
    assert [(g["reason"], g["action"], g["rows"]) for g in gaps] == [
        ("reconnect", "backfill_requested", "0"), ("hole filled", "backfilled", "4")]
    assert all(_ids_times(g) == ("2", "7", str(_t(2)), str(_t(7))) for g in gaps)
    assert sum(int(g["rows"]) for g in gaps) == len(_backfilled_rows(tmp_path)) == 4


def _reconnect_batch():
    """A worker's batch: a hole 3..5 it backfilled itself, and the book manager's row."""
    return [Rows("BTCUSDT", "aggTrade", DAY, [1, 2], [_agg(1), _agg(2)], False),
            Gap("BTCUSDT", gap_row(T0 * 1000 + 7, "aggTrade", "reconnect", 2, 6, "backfilled", 3, "", _t(2), _t(6))),
            Rows("BTCUSDT", "aggTrade", DAY, [3, 4, 5], [_agg(a, 1) for a in (3, 4, 5)], True),
            Rows("BTCUSDT", "aggTrade", DAY, [6], [_agg(6)], False)]


def _killed(w, *written):
    """The writer dies having written only the files of ``written`` streams."""
    for key, f in list(w.files.items()):
        if key[1] in written:
            w._flush_file(f)
        if f.fd is not None:
            os.close(f.fd)
    w.files.clear()


def test_a_batch_sent_again_to_a_new_writer_brings_its_ledger_row_exactly_once(tmp_path):
    # the old writer wrote the rows but not the ledger row: the new one writes it
    w = Writer(_cfg(tmp_path))
    w.take(_reconnect_batch(), "worker-0")
    w.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 9, "orderbook", "depth gap", 10, 12, "resync"))], "orderbook")
    _killed(w, "aggTrade")
    w2 = Writer(_cfg(tmp_path))
    w2.recover()
    w2.take(_reconnect_batch(), "worker-0")
    w2.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 9, "orderbook", "depth gap", 10, 12, "resync"))], "orderbook")
    w2.close()
    assert [(g["stream"], g["action"]) for g in _ledger(tmp_path)] == [("aggTrade", "backfilled"),
                                                                       ("orderbook", "resync")]
    # and a third writer, to which both are sent again, has them on disk already
    w3 = Writer(_cfg(tmp_path))
    w3.recover()
    w3.take(_reconnect_batch(), "worker-0")
    w3.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 9, "orderbook", "depth gap", 10, 12, "resync"))], "orderbook")
    w3.close()
    assert len(_ledger(tmp_path)) == 2
    assert [int(r["agg_trade_id"]) for r in _backfilled_rows(tmp_path)] == [3, 4, 5]


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


def test_ledger_rows_are_written_in_time_order_and_a_late_one_is_still_written(tmp_path):
    cfg = _cfg(tmp_path)
    w = Writer(cfg)
    w.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 300, "orderbook", "depth gap", 10, 12, "resync"))], "orderbook")
    w.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 100, "trade", "reconnect", 1, 5, "lost")),
            Gap("BTCUSDT", gap_row(T0 * 1000 + 200, "depth", "reconnect", 3, 9, "lost"))], "worker-0")
    w.flush(force=True)
    w.take([Gap("BTCUSDT", gap_row(T0 * 1000 + 50, "bookTicker", "reconnect", 4, 8, "lost"))], "worker-0")
    w.close()
    assert [int(g["local_time_us"]) - T0 * 1000 for g in _ledger(tmp_path)] == [100, 200, 300, 50]
    assert w.gap_hold >= cfg.batch_interval + cfg.read_interval        # they wait a batch's journey, at least


def test_the_loaded_ledger_is_in_time_order(tmp_path):
    from binance_streamer import analysis
    folder = tmp_path / "data" / "spot" / "BTCUSDT"
    folder.mkdir(parents=True)
    rows = [gap_row(T0 * 1000 + t, "trade", "reconnect", 1, 5, "lost", last_time=T0 + 1, first_time=T0 + 9)
            for t in (300, 100, 200)]
    with open(folder / f"BTCUSDT-gaps-{DAY}.csv", "w", newline="") as f:
        out = csv.DictWriter(f, csvfiles.SCHEMAS["gaps"])
        out.writeheader()
        out.writerows(rows)
    df = analysis.gaps(str(tmp_path / "data"), "BTCUSDT")
    assert list(df["local_time_us"] - T0 * 1000) == [100, 200, 300]
    assert df["last_good_time"].iloc[0].value // 10**6 == T0 + 1          # ms, as written


def test_verify_finds_rows_backfilled_in_no_hole_of_the_ledger(tmp_path):
    from binance_streamer.analysis import verify
    folder = tmp_path / "data" / "spot" / "BTCUSDT"
    folder.mkdir(parents=True)
    with open(folder / f"BTCUSDT-aggTrade-{DAY}.csv", "w") as f:
        f.write(csvfiles.header("spot", "aggTrade").decode())
        f.writelines(_agg(a, backfilled=int(3 <= a <= 5)) for a in (1, 2, 6, 7, 3, 4, 5))

    def ledger(*rows):
        with open(folder / f"BTCUSDT-gaps-{DAY}.csv", "w", newline="") as f:
            out = csv.DictWriter(f, csvfiles.SCHEMAS["gaps"])
            out.writeheader()
            out.writerows(rows)
        return verify.verify(str(tmp_path / "data"), "spot")

    filled = gap_row(T0 * 1000, "aggTrade", "reconnect", 2, 6, "backfilled", 3, "", _t(2), _t(6))
    assert ledger(filled).ok
    report = ledger(gap_row(T0 * 1000, "trade", "reconnect", 2, 6, "lost"))         # filled silently
    assert [str(p) for p in report.problems] == [
        f"BTCUSDT aggTrade {DAY}: backfilled rows 3..5 (3) are in no hole of the gap ledger"]


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


def test_a_hole_the_worker_can_fill_only_in_part_says_how_much():
    batch = _reconnect_hole(_worker("aggTrade", FakeRest([1, 2, 3, 4, 6, 7])), None)
    (g,) = _gaps(batch)
    assert (g["action"], g["rows"], g["last_good_time"], g["first_time_after"]) == ("lost", 2, _t(2), _t(6))
    assert g["detail"] == "only 2 of the 3 missing rows were available"


def test_a_backfill_that_ends_after_the_stop_adds_no_second_row():
    w = _worker("aggTrade", FakeRest(range(1, 20)))
    for a, when in ((1, 1), (2, 1)):
        w.on_frames([_frame("aggTrade", _agg_event(a))], when)
    w.on_connected(["btcusdt@aggTrade"])
    w.on_frames([_frame("aggTrade", _agg_event(6))], 2)
    w.shutdown()                                        # the hole is ledgered; the rows after it go
    w.do_job(w.jobs.get_nowait())                       # the REST thread finishes its fetch after that
    batch = w.take_batch()
    (g,) = _gaps(batch)
    assert (g["first_id_after"], g["first_time_after"], g["action"]) == (6, _t(6), "lost")
    assert sorted(i for m in batch if isinstance(m, Rows) and m.backfilled for i in m.ids) == [3, 4, 5]


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
    books.on_diff("BTCUSDT", 5, 10, None, "1.0,1", "2.0,1", T0 + 10)
    books.on_snapshot("BTCUSDT", 9, [["1.0", "1"]], [["2.0", "1"]])
    books.on_diff("BTCUSDT", 11, 12, None, "", "", T0 + 12)
    books.on_diff("BTCUSDT", 20, 25, None, "", "", T0 + 25)          # 13..19 missing
    (g,) = [m.row for m in out if isinstance(m, Gap)]
    assert (g["reason"], g["last_good_id"], g["first_id_after"]) == ("depth gap", 12, 20)
    assert (g["last_good_time"], g["first_time_after"]) == (T0 + 12, T0 + 25)
