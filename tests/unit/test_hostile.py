"""Hostile input and hostile conditions, without processes: values that do
not parse, REST answers that are not what they should be, files the writer
cannot trust, a full disk, settings out of range."""

import errno
import os
import time

import orjson
import pytest

from binance_streamer.messages import Diff, Gap, Rows, event, named
from binance_streamer import config, csvfiles
from binance_streamer.binance import parse
from binance_streamer.binance.rest import RestClient, RestError
from binance_streamer.config import ConfigError
from binance_streamer.orderbook import OrderBooks
from binance_streamer.worker import Worker
from binance_streamer.writer import Writer


def _cfg(**kw):
    return config.load(None, {"symbols": "BTCUSDT", "streams": "aggTrade,trade,depth@100ms,bookTicker", **kw})


def _frame(stream, data):
    return orjson.dumps({"stream": f"btcusdt@{stream}", "data": data})


def _trade(t, p="100.5", q="0.25"):
    return _frame("trade", {"e": "trade", "E": 1000 + t, "s": "BTCUSDT", "t": t, "p": p, "q": q, "T": 1000 + t,
                            "m": True, "M": True})


def _ticker(u, **over):
    d = {"u": u, "s": "BTCUSDT", "b": "100.0", "B": "1.0", "a": "101.0", "A": "2.0", **over}
    return _frame("bookTicker", {k: v for k, v in d.items() if v is not None})


def _gaps(batch):
    return [m.row for m in batch if isinstance(m, Gap)]


def _ids(batch, stream):
    return [i for m in batch if isinstance(m, Rows) and m.stream == stream for i in m.ids]


# -- 1. values that do not parse ------------------------------------------------------------

@pytest.mark.parametrize("bad", ["abc", "1e5", "-1", "", "1.2.3", "NaN", "Infinity", "1" * 50, 5, None, "١٢"])
def test_a_number_that_is_not_one_is_refused_where_it_is_parsed(bad):
    with pytest.raises(ValueError):
        parse.num(bad)
    assert parse.num("0.00100000") == "0.00100000" and parse.num("30000") == "30000"


BAD_NUMBERS = ["abc", "1e5", "-1", "", ".", "1.2.3", "NaN", "1" * 41, 5, 1.5, None, "١٢", ["1"]]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_two_nums_refuses_what_num_refuses_on_either_side(bad):
    assert not parse.two_nums(bad, "1.5") and not parse.two_nums("1.5", bad)
    assert parse.two_nums("0.00100000", "30000") and parse.two_nums(".5", "5.") and parse.two_nums("1" * 40, "0")


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_a_depth_level_with_a_bad_value_raises_what_num_says(bad):
    event = {"E": 1, "U": 2, "u": 3, "b": [["1.0", "2.0"]], "a": [["3.0", bad]]}
    with pytest.raises(ValueError, match="not a decimal number"):
        parse.depth("spot", event, 9)


def test_depth_lines_follow_the_cells_bids_first_each_level_one_line():
    event = {"E": 1, "U": 2, "u": 3, "b": [["1.0", "2.0"], ["0.9", "0"]], "a": [["3.00", "4"]]}
    u, text, rows, bids, asks = parse.depth("spot", event, 9)
    assert (u, rows, bids, asks) == (3, 3, "1.0,2.0,0.9,0", "3.00,4")
    assert text == "1,,2,3,,bid,1.0,2.0,9\n1,,2,3,,bid,0.9,0,9\n1,,2,3,,ask,3.00,4,9\n"
    assert parse.depth("spot", {**event, "b": [], "a": []}, 9)[1:] == ("1,,2,3,,,,,9\n", 1, "", "")


def test_a_trade_priced_abc_is_dropped_counted_and_its_hole_ledgered_and_the_thread_lives():
    w = Worker(_cfg(), ["BTCUSDT"])
    w.on_frames([_trade(1), _trade(2, p="abc"), _trade(3)], 5)
    batch = w.take_batch()
    assert _ids(batch, "trade") == [1, 3]
    assert w.counts["malformed"] == 1
    hole = [g for g in _gaps(batch) if g["reason"] == "malformed event"]
    assert [(g["last_good_id"], g["first_id_after"], g["action"]) for g in hole] == [(1, 3, "lost")]


def test_a_bookticker_without_b_is_ledgered_with_its_id():
    w = Worker(_cfg(), ["BTCUSDT"])
    w.on_frames([_ticker(10), _ticker(11, b=None), _ticker(12)], 5)
    batch = w.take_batch()
    assert _ids(batch, "bookTicker") == [10, 12]
    assert [(g["reason"], g["last_good_id"], g["first_id_after"]) for g in _gaps(batch)
            if g["reason"] != "start"] == [("malformed event", 10, 11)]


def test_a_depth_level_priced_abc_never_reaches_the_book_or_the_file():
    w = Worker(_cfg(), ["BTCUSDT"])
    good = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2, "b": [["100.0", "1.0"]], "a": []}
    bad = {**good, "U": 3, "u": 4, "b": [["abc", "1.0"]]}
    w.on_frames([_frame("depth@100ms", good), _frame("depth@100ms", bad),
                 _frame("depth@100ms", {**good, "U": 5, "u": 6})], 5)
    assert [named(m).first for m in w.take_book_batch() if m[0] is Diff] == [1, 5]
    batch = w.take_batch()
    assert _ids(batch, "depth") == [2, 6]
    assert any(g["reason"] == "malformed event" and g["first_id_after"] == 5 for g in _gaps(batch))


def test_the_book_manager_resyncs_a_book_fed_a_bad_level_instead_of_crashing():
    rows = []
    books = OrderBooks(_cfg(), lambda *a: None, rows.append)
    books.on_snapshot("BTCUSDT", 10, [["100.0", "1.0"]], [["101.0", "1.0"]])
    msg = event(Diff, "BTCUSDT", 11, 11, None, "abc,1", "")
    try:
        books.on_diff(*msg[1:])
    except parse.MALFORMED as exc:     # what orderbook_main catches and hands on
        books.on_bad_input(msg, exc)
    else:
        pytest.fail("a level priced abc was applied")
    assert books.bad_input == 1 and books.books["BTCUSDT"].resyncs == 1
    assert [r.row["reason"] for r in rows if isinstance(r, Gap)] == ["malformed event"]


# -- 2. REST answers that are not the JSON expected -------------------------------------------

class _Resp:
    def __init__(self, status, body, ctype="application/json"):
        self.status_code, self.text = status, body if isinstance(body, str) else orjson.dumps(body).decode()
        self.headers = {"Content-Type": ctype}

    def json(self):
        return orjson.loads(self.text)


class _Session:
    def __init__(self, answers):
        self.answers, self.headers, self.calls = list(answers), {}, 0

    def get(self, url, **kw):
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class _Budget:
    def acquire(self, *a):
        return True

    def observe(self, used):
        pass


def _client(answers):
    session = _Session(answers)
    client = RestClient(_cfg(), _Budget(), session=session)
    client.stop = None
    return client, session


@pytest.mark.parametrize("answer", [_Resp(200, "<html>maintenance</html>", "text/html"),
                                    _Resp(200, '{"lastUpdateId": 1, "bids": [', "application/json"),
                                    _Resp(200, [1, 2, 3]),
                                    _Resp(200, {"lastUpdateId": "x", "bids": [], "asks": []}),
                                    _Resp(200, {"lastUpdateId": 5, "bids": [["abc", "1"]], "asks": []})])
def test_a_depth_answer_that_is_not_a_snapshot_is_retried_then_an_error_never_a_crash(answer, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    client, session = _client([answer])
    with pytest.raises(RestError, match="instead of JSON|does not parse|wrong shape"):
        client.depth("BTCUSDT", 5)
    assert session.calls == 5 and client.malformed == 5


def test_a_bad_answer_then_a_good_one_is_a_retry_that_succeeds(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    good = _Resp(200, {"lastUpdateId": 5, "bids": [["1.0", "2.0"]], "asks": []})
    client, session = _client([_Resp(200, "<html/>", "text/html"), good])
    assert client.depth("BTCUSDT", 5)["lastUpdateId"] == 5 and client.malformed == 1


def test_an_error_answer_that_is_a_json_list_is_described_not_a_crash():
    client, _ = _client([_Resp(400, [1])])
    with pytest.raises(RestError, match="HTTP 400"):
        client.depth("BTCUSDT", 5)


# -- 4. whole events on a full disk -------------------------------------------------------------

def test_a_write_that_fails_part_way_is_cut_back_and_retried_whole(tmp_path, monkeypatch):
    w = Writer(_cfg(data_dir=str(tmp_path)))
    first = [f"1,,1,1,,bid,1.{i},1,5\n" for i in range(3)]
    w.add_rows("BTCUSDT", "depth", "2026-01-01", [1] * 3, first)
    w.flush(force=True)
    path = csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "depth", "2026-01-01")
    before = open(path).read()
    real_write = os.write
    calls = []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[:10])        # part of the event, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    w.add_rows("BTCUSDT", "depth", "2026-01-01", [2] * 24, [f"2,,2,2,,ask,2.{i},1,5\n" for i in range(24)])
    assert w.flush() is None
    assert open(path).read() == before                   # nothing of the event stays on disk
    monkeypatch.setattr(os, "write", real_write)
    w._retry_at = 0
    w.close()
    rows = open(path).read().splitlines()
    assert len(rows) == 1 + 3 + 24 and rows[-1].startswith("2,,2,2,,ask,2.23")


def test_recovery_cuts_a_torn_depth_event_back_to_the_last_complete_one_and_ledgers_it(tmp_path):
    w = Writer(_cfg(data_dir=str(tmp_path)))
    w.add_rows("BTCUSDT", "depth", "2026-01-01", [1, 1], ["1,,1,1,,bid,1.0,1,5\n", "1,,1,1,,ask,2.0,1,5\n"])
    w.add_rows("BTCUSDT", "depth", "2026-01-01", [2, 2], ["2,,2,2,,bid,1.1,1,5\n", "2,,2,2,,ask,2.1,1,5\n"])
    w.close()
    path = csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "depth", "2026-01-01")
    with open(path, "r+") as f:                   # a crash in the middle of event 2's second row
        text = f.read()
        f.seek(0)
        f.truncate()
        f.write(text[:text.rindex("2,,2,2,,ask") + 8])
    w2 = Writer(_cfg(data_dir=str(tmp_path)))
    w2.recover()
    w2.close()
    rows = open(path).read().splitlines()
    assert [r.split(",")[3] for r in rows[1:]] == ["1", "1"]       # event 2 went whole
    gaps = open(csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "gaps", csvfiles.DayOf()(
        int(os.path.getmtime(path) * 1000)))).read()
    assert "torn write" in gaps


# -- 5. the writer trusts the files without limit -------------------------------------------------

def test_an_implausible_last_id_on_disk_is_reported_and_does_not_swallow_live_rows(tmp_path):
    w = Writer(_cfg(data_dir=str(tmp_path)))
    line = "{0},1.0,1.0,{0},{0},1000,True,True,1000,5,0\n"
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [100, 101], [line.format(100), line.format(101)])
    w.close()
    path = csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    with open(path, "a") as f:                      # one row appended by hand, or by a damaged disk
        f.write(line.format(99999999999))
    w2 = Writer(_cfg(data_dir=str(tmp_path)))
    w2.recover()
    now_us = int(time.time() * 1e6)
    w2.add_gap("BTCUSDT", {"local_time_us": now_us, "stream": "aggTrade", "reason": "start", "last_good_id": None,
                           "first_id_after": 102, "last_good_time": "", "first_time_after": "", "action": "",
                           "rows": 0, "detail": ""})
    w2.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [102, 103], [line.format(102), line.format(103)])
    w2.close()
    assert [r.split(",")[0] for r in open(path).read().splitlines()[-2:]] == ["102", "103"]
    assert "implausible id on disk" in _ledger(tmp_path)


def _ledger(tmp_path):
    folder = os.path.join(str(tmp_path), "spot", "BTCUSDT")
    return "".join(open(os.path.join(folder, p)).read() for p in os.listdir(folder) if "-gaps-" in p)


def test_a_file_deleted_while_open_is_reopened_and_the_loss_ledgered(tmp_path):
    w = Writer(_cfg(data_dir=str(tmp_path)))
    line = "{0},1.0,1.0,{0},{0},1000,True,True,1000,5,0\n"
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1, 2], [line.format(1), line.format(2)])
    w.flush(force=True)
    path = csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    os.unlink(path)
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [3], [line.format(3)])
    w.flush_due(time.monotonic() + 60)                # row 3 goes to the deleted file
    w.check_files()
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [4], [line.format(4)])
    w.close()
    rows = open(path).read().splitlines()
    assert rows[0].startswith("agg_trade_id") and [r.split(",")[0] for r in rows[1:]] == ["4"]
    assert ",file deleted while open,2,4,,,lost,1," in _ledger(tmp_path)


def test_a_file_that_cannot_be_opened_keeps_its_rows_and_says_why(tmp_path, caplog):
    cfg = _cfg(data_dir=str(tmp_path))
    path = csvfiles.path(str(tmp_path), "spot", "BTCUSDT", "aggTrade", "2026-01-01")
    os.makedirs(os.path.dirname(path))
    os.symlink(str(tmp_path / "elsewhere.csv"), path)      # a data file that is a symlink
    w = Writer(cfg)
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [1], ["1,1.0,1.0,1,1,1000,True,True,1000,5,0\n"])
    w.flush()
    assert not os.path.exists(tmp_path / "elsewhere.csv")
    assert w.pending_rows == 1 and "symlink" in caplog.text
    os.unlink(path)
    w._retry_at = 0
    w.close()
    assert open(path).read().splitlines()[1].startswith("1,1.0")


# -- 6. settings have maximums -------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("flush_interval", 1e10), ("status_interval", 1e10),
                                        ("link_buffer_bytes", 10**13), ("rest_weight_margin", 1.5),
                                        ("flush_interval", float("nan")), ("read_interval", float("inf"))])
def test_every_number_has_a_range(key, value):
    with pytest.raises(ConfigError, match=f"{key} in .* must be (at most|a finite number)"):
        config.load(None, {key: value})


# -- --verify on damaged files ----------------------------------------------------------------------

def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_verify_reports_damaged_files_with_line_column_and_value_and_never_crashes(tmp_path):
    from binance_streamer.analysis import verify
    root = str(tmp_path)
    day = "2026-01-01"
    agg = csvfiles.path(root, "spot", "BTCUSDT", "aggTrade", day)
    head = ",".join(csvfiles.columns("spot", "aggTrade"))
    _write(agg, [head, "1,100.0,1.0,1,1,1767225600000,True,True,1767225600000,5,0",
                 "2,abc,1.0,2,2,1767225600001,True,True,1767225600001,5,0"])
    depth = csvfiles.path(root, "spot", "BTCUSDT", "depth", day)
    _write(depth, [",".join(csvfiles.columns("spot", "depth")),
                   "1767225600000,,11,11,,bid,1e5,1.0,5", "1767225600100,,12,12,,ask,101.0,1.0,5"])
    snap = csvfiles.path(root, "spot", "BTCUSDT", "depthSnapshot", day)
    _write(snap, [",".join(csvfiles.columns("spot", "depthSnapshot")), "10,bid,100.0,1.0,5,6,,",
                  "10,ask,101.0,1.0,5,6,,"])
    trade = csvfiles.path(root, "spot", "BTCUSDT", "trade", day)
    _write(trade, [",".join(csvfiles.columns("spot", "trade")), "x,1.0,1.0,1.0,1767225600000,True,True,1,5"])
    report = verify.verify(root, "spot", ["BTCUSDT"])
    text = "\n".join(map(str, report.problems))
    assert not report.ok
    assert "line 3, column price: 'abc'" in text
    assert "line 2, column price: '1e5'" in text
    assert "line 2, column id: 'x' is not a whole number" in text
    assert "book not rebuilt" in text


# -- every long-lived thread is supervised -------------------------------------------------------------

def test_a_thread_that_dies_is_logged_at_error_and_stops_its_process(caplog):
    import threading
    from binance_streamer import proc
    stop = threading.Event()
    threads = proc.Threads(stop)

    def broken():
        raise RuntimeError("boom")

    threads.start("worker-0-rest", broken).join(5)
    assert threads.failed == "worker-0-rest" and stop.is_set()
    assert any(r.levelname == "ERROR" and "worker-0-rest died" in r.getMessage() and r.exc_info
               for r in caplog.records)
    assert proc.EXIT_THREAD_DIED not in (proc.EXIT_OK, proc.EXIT_CONFIG)


def test_rows_of_two_holes_filled_one_after_the_other_leave_in_id_order():
    """Two holes in one stream, filled in turn: the rows of the second hole
    must not overtake the live rows between the two (the writer would take
    that for a hole between processes and write rows twice)."""
    class Rest:
        requests = failures = malformed = 0

        def agg_trades(self, symbol, from_id, limit):
            return [{"a": a, "p": "1.0", "q": "1.0", "f": a, "l": a, "T": 1000 + a, "m": True, "M": True}
                    for a in range(from_id, from_id + 3)]

    def agg(a):
        return _frame("aggTrade", {"e": "aggTrade", "E": 1000 + a, "s": "BTCUSDT", "a": a, "p": "1.0", "q": "1.0",
                                   "f": a, "l": a, "T": 1000 + a, "m": True, "M": True})

    w = Worker(_cfg(streams="aggTrade"), ["BTCUSDT"], rest=Rest())
    w.on_frames([agg(1), agg(2), agg(4), agg(5), agg(7), agg(8)], 5)      # 3 and 6 missing
    while not w.jobs.empty():
        w.do_job(w.jobs.get())
    assert _ids(w.take_batch(), "aggTrade") == [1, 2, 3, 4, 5, 6, 7, 8]


def test_rows_the_disk_refused_until_the_stop_reach_the_ledger_at_the_next_start(tmp_path, monkeypatch):
    cfg = _cfg(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"))
    os.makedirs(cfg.run_dir)
    w = Writer(cfg)
    line = "{0},1.0,1.0,{0},{0},1000,True,True,1000,5,0\n"
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    w.add_rows("BTCUSDT", "aggTrade", "2026-01-01", [7, 8], [line.format(7), line.format(8)])
    w.close()
    monkeypatch.setattr(os, "write", real_write)
    w2 = Writer(cfg)
    w2.recover()
    w2.close()
    folder = os.path.join(cfg.data_dir, "spot", "BTCUSDT")
    ledger = "".join(open(os.path.join(folder, p)).read() for p in os.listdir(folder) if "-gaps-" in p)
    assert ",aggTrade,not written before exit,6,9,,,lost,2," in ledger
    assert not [n for n in os.listdir(cfg.run_dir) if n.startswith("unwritten-")]


def test_book_events_of_the_wrong_shape_are_counted_not_fatal():
    from binance_streamer.orderbook import _apply
    books = OrderBooks(_cfg(), lambda *a: None, [].append)
    handlers = {Diff: books.on_diff}
    _apply(books, handlers, [(), ("nonsense",), (Diff, "BTCUSDT"), (Diff, "NOSUCH", 1, 2, None, [], [])])
    assert books.bad_input == 4
