"""The rules of --merge on small hand-written recordings."""

import csv
import gzip
import os

import pytest

from binance_streamer import cli, csvfiles
from binance_streamer.analysis import verify
from binance_streamer.merge import MergeError, merge

DAY = "2026-11-25"
T0 = 1795564800000          # 2026-11-25 00:00 UTC in ms


def write(root, market, symbol, stream, rows, day=DAY, codec=None):
    """A day file of ``rows`` (lists of cells) under ``root``; ``codec``: gzip it."""
    path = csvfiles.path(str(root), market, symbol, stream, day)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = csvfiles.header(market, stream).decode() + "".join(",".join(map(str, r)) + "\n" for r in rows)
    if codec == "gzip":
        with gzip.open(path + ".gz", "wt") as f:
            f.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)
    return path


def gap(stream, last, first, reason="reconnect", action="lost", local=T0 * 1000 + 5, detail=""):
    return [local, stream, reason, last, first, "", "", action, 0, detail]


def trade(i, local, price="1.0"):
    return [i, price, "2", "", T0 + i, "True", "True", T0 + i, local]


def agg(i, local, backfilled=0, price="1.0"):
    return [i, price, "2", i, i, T0 + i, "True", "True", "" if backfilled else T0 + i, local, backfilled]


def read(root, market, symbol, stream):
    with open(csvfiles.path(str(root), market, symbol, stream, DAY)) as f:
        return list(csv.DictReader(f))


def by_stream(summaries):
    return {(s.symbol, s.stream): s for s in summaries}


def test_trades_union_each_once_in_id_order_and_the_filled_hole_is_gone(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 100 + i) for i in [1, 2, 3, 4, 5, 9, 10]])
    write(a, "spot", "BTCUSDT", "gaps", [gap("trade", 5, 9)])
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 200 + i) for i in range(3, 12)])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "trade")]
    rows = read(out, "spot", "BTCUSDT", "trade")
    assert [int(r["id"]) for r in rows] == list(range(1, 12))
    # A's row where both have the event; B's where only B has it
    assert [int(r["local_time_us"]) for r in rows] == [101, 102, 103, 104, 105, 206, 207, 208, 109, 110, 211]
    assert (s.a_only, s.b_only, s.both, s.filled, s.left, s.differ) == (2, 4, 5, 1, 0, [])
    assert not os.path.exists(csvfiles.path(str(out), "spot", "BTCUSDT", "gaps", DAY))
    assert verify.verify(str(out), "spot").ok


def test_a_hole_both_have_is_one_ledger_row_naming_both(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in [1, 2, 3, 9, 10]])
    write(a, "spot", "BTCUSDT", "gaps", [gap("trade", 3, 9, local=T0 * 1000 + 7)])
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 2) for i in [2, 3, 4, 5, 8, 9]])
    write(b, "spot", "BTCUSDT", "gaps", [gap("trade", 5, 8, reason="start", local=T0 * 1000 + 3)])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "trade")]
    assert [int(r["id"]) for r in read(out, "spot", "BTCUSDT", "trade")] == [1, 2, 3, 4, 5, 8, 9, 10]
    [row] = read(out, "spot", "BTCUSDT", "gaps")
    assert (row["stream"], row["last_good_id"], row["first_id_after"], row["action"]) == ("trade", "5", "8", "lost")
    assert (row["last_good_time"], row["first_time_after"]) == (str(T0 + 5), str(T0 + 8))
    assert row["local_time_us"] == str(T0 * 1000 + 3)                     # the earlier of the two
    assert f"A ({a}): reconnect, lost" in row["detail"] and f"B ({b}): start, lost" in row["detail"]
    assert (s.filled, s.left) == (0, 1)
    assert verify.verify(str(out), "spot").ok


def depth_event(U, u, pu, levels, local):
    """Rows of one depth event: ``levels`` [(side, price, qty)]; none: one bare row."""
    rows = [[T0 + u, T0 + u, U, u, pu, side, p, q, local] for side, p, q in levels]
    return rows or [[T0 + u, T0 + u, U, u, pu, "", "", "", local]]


LEVELS = {3: [("bid", "10", "1"), ("ask", "11", "2")], 6: [("bid", "10", "0")], 9: [("ask", "12", "3")],
          12: [], 15: [("bid", "9", "1"), ("bid", "8", "2"), ("ask", "11", "0")]}


def depth_rows(finals, local, market):
    out = []
    for u in finals:
        out += depth_event(u - 2, u, u - 3 if market == "usdm" else "", LEVELS[u], local)
    return out


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_depth_chain_filled_only_where_b_bridges_it(tmp_path, market):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, market, "BTCUSDT", "depth", depth_rows([3, 6, 15], 1, market))
    write(a, market, "BTCUSDT", "gaps", [gap("depth", 6, 13, reason="depth gap")])
    write(b, market, "BTCUSDT", "depth", depth_rows([3, 6, 9, 15], 2, market))
    write(b, market, "BTCUSDT", "gaps", [gap("depth", 9, 13, reason="depth gap")])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "depth")]
    rows = read(out, market, "BTCUSDT", "depth")
    assert [(int(r["final_update_id"]), r["side"], r["price"]) for r in rows] == \
        [(3, "bid", "10"), (3, "ask", "11"), (6, "bid", "10"), (9, "ask", "12"),
         (15, "bid", "9"), (15, "bid", "8"), (15, "ask", "11")]
    assert [r["local_time_us"] for r in rows] == ["1", "1", "1", "2", "1", "1", "1"]
    [row] = read(out, market, "BTCUSDT", "gaps")          # event 12 is in neither: the hole 9..13 stays
    assert (row["last_good_id"], row["first_id_after"], row["reason"]) == ("9", "13", "depth gap")
    assert (s.a_only, s.b_only, s.both, s.left) == (0, 1, 3, 1)
    assert verify.verify(str(out), market).ok


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_depth_hole_bridged_exactly_leaves_no_ledger_row(tmp_path, market):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, market, "BTCUSDT", "depth", depth_rows([3, 6, 15], 1, market))
    write(a, market, "BTCUSDT", "gaps", [gap("depth", 6, 13, reason="depth gap")])
    write(b, market, "BTCUSDT", "depth", depth_rows([6, 9, 12], 2, market))
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "depth")]
    assert sorted({int(r["final_update_id"]) for r in read(out, market, "BTCUSDT", "depth")}) == [3, 6, 9, 12, 15]
    assert (s.filled, s.left) == (1, 0)
    assert verify.verify(str(out), market).ok


def ticker(u, local):
    return [u, "10", "1", "11", "2", "", "", local]


def test_book_tickers_holes_are_what_neither_covers(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "bookTicker", [ticker(u, 1) for u in (10, 20, 30, 60, 70, 90)])
    write(a, "spot", "BTCUSDT", "gaps", [gap("bookTicker", 30, 60), gap("bookTicker", 70, 90)])
    write(b, "spot", "BTCUSDT", "bookTicker", [ticker(u, 2) for u in (20, 40, 50, 60, 80, 95)])
    write(b, "spot", "BTCUSDT", "gaps", [gap("bookTicker", 60, 80)])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "bookTicker")]
    rows = read(out, "spot", "BTCUSDT", "bookTicker")
    assert [int(r["update_id"]) for r in rows] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    # A's 30..60 is covered by B; A's 70..90 and B's 60..80 overlap in 70..80
    assert [(r["last_good_id"], r["first_id_after"]) for r in read(out, "spot", "BTCUSDT", "gaps")] == [("70", "80")]
    assert (s.filled, s.left) == (1, 1)


def kline(t, local, backfilled=0, close="5"):
    return [T0 + t * 60000, "1", "9", "0.5", close, "3", T0 + t * 60000 + 59999, "3", 4, "1", "1", "0", 1, 4,
            "" if backfilled else T0 + t * 60000 + 59999, local, backfilled]


def test_klines_one_candle_per_open_time_live_over_backfilled(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "usdm", "BTCUSDT", "kline_1m", [kline(0, 1), kline(1, 1, backfilled=1), kline(2, 1)])
    write(a, "usdm", "BTCUSDT", "gaps", [gap("kline_1m", T0, T0 + 120000, action="backfilled")])
    write(b, "usdm", "BTCUSDT", "kline_1m", [kline(1, 2), kline(2, 2), kline(3, 2)])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "kline_1m")]
    rows = read(out, "usdm", "BTCUSDT", "kline_1m")
    assert [(int(r["open_time"]) - T0, r["local_time_us"], r["backfilled"]) for r in rows] == \
        [(0, "1", "0"), (60000, "2", "0"), (120000, "1", "0"), (180000, "2", "0")]
    assert (s.a_only, s.b_only, s.both, s.differ) == (1, 1, 2, [])
    assert not os.path.exists(csvfiles.path(str(out), "usdm", "BTCUSDT", "gaps", DAY))   # nothing backfilled kept
    assert verify.verify(str(out), "usdm").ok


def test_backfilled_rows_kept_keep_their_hole_in_the_ledger(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "aggTrade", [agg(1, 1), agg(2, 1), agg(3, 1, backfilled=1), agg(4, 1)])
    write(a, "spot", "BTCUSDT", "gaps", [gap("aggTrade", 2, 4, action="backfilled")])
    write(b, "spot", "BTCUSDT", "aggTrade", [agg(4, 2), agg(5, 2)])
    merge(str(a), str(b), str(out))
    [row] = read(out, "spot", "BTCUSDT", "gaps")
    assert (row["last_good_id"], row["first_id_after"], row["action"], row["rows"]) == ("2", "4", "backfilled", "1")
    assert row["detail"].startswith(f"A ({a})")
    assert verify.verify(str(out), "spot").ok


def test_compressed_and_out_of_order_inputs(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    # a backfill written after later rows, in a gzip file
    write(a, "spot", "BTCUSDT", "aggTrade", [agg(1, 1), agg(4, 1), agg(2, 1, backfilled=1), agg(3, 1, backfilled=1)],
          codec="gzip")
    write(a, "spot", "BTCUSDT", "gaps", [gap("aggTrade", 1, 4, action="backfilled")])
    write(b, "spot", "BTCUSDT", "aggTrade", [agg(5, 2), agg(6, 2)], codec="gzip")
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "aggTrade")]
    assert [int(r["agg_trade_id"]) for r in read(out, "spot", "BTCUSDT", "aggTrade")] == [1, 2, 3, 4, 5, 6]
    assert (s.a_only, s.b_only) == (4, 2)
    assert os.path.exists(csvfiles.path(str(a), "spot", "BTCUSDT", "aggTrade", DAY) + ".gz")   # inputs untouched
    assert verify.verify(str(out), "spot").ok


def snapshot(u, t):
    return [[u, "bid", "10", "1", t, t, "", ""], [u, "ask", "11", "2", t, t, "", ""]]


def test_snapshots_are_joined_by_last_update_id_each_once_in_order(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "depthSnapshot", snapshot(7, 1) + snapshot(20, 5))
    write(b, "spot", "BTCUSDT", "depthSnapshot", snapshot(7, 2) + snapshot(12, 3) + snapshot(25, 6))
    write(b, "spot", "BTCUSDT", "depthSnapshot", snapshot(30, 7), day=DAY2)
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "depthSnapshot")]
    rows = read(out, "spot", "BTCUSDT", "depthSnapshot")
    assert [(int(r["last_update_id"]), r["side"], r["response_time_us"]) for r in rows] == \
        [(7, "bid", "1"), (7, "ask", "1"), (12, "bid", "3"), (12, "ask", "3"), (20, "bid", "5"), (20, "ask", "5"),
         (25, "bid", "6"), (25, "ask", "6")]
    with open(csvfiles.path(str(out), "spot", "BTCUSDT", "depthSnapshot", DAY2)) as f:
        assert [r["last_update_id"] for r in csv.DictReader(f)] == ["30", "30"]
    assert (s.a_only, s.b_only, s.both) == (1, 3, 1)


def book_row(local, u, in_sync=True):
    return [local, u, "true" if in_sync else "false"] + ["1", "1"] * 40


def test_orderbook_rows_of_b_fill_where_a_lost_its_book(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    # A: in sync at 3 and 6, a depth gap after 6 (its book resynced), in sync again at 15, then 18
    write(a, "spot", "BTCUSDT", "orderbook", [book_row(1, 3), book_row(2, 6), book_row(3, 6, False), book_row(4, 15),
                                              book_row(5, 18)])
    write(a, "spot", "BTCUSDT", "gaps", [[T0 * 1000, "orderbook", "depth gap", 6, 13, "", "", "resync", 0, ""]])
    # B: in sync at 2 (before A's first), 6, 9, 12 (in A's hole), 16 (A had its book then), 21 (after A's last)
    write(b, "spot", "BTCUSDT", "orderbook", [book_row(11, u) for u in (2, 6, 9, 12, 16, 21)] + [book_row(17, 21, False)])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "orderbook")]
    rows = read(out, "spot", "BTCUSDT", "orderbook")
    assert [(int(r["update_id"]), r["in_sync"], int(r["local_time_us"])) for r in rows] == \
        [(2, "true", 11), (3, "true", 1), (6, "true", 2), (6, "false", 3), (9, "true", 11), (12, "true", 11),
         (15, "true", 4), (18, "true", 5), (21, "true", 11)]
    assert (s.a_only, s.b_only) == (5, 4)


def test_orderbook_rows_of_other_depths_are_not_mixed(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "orderbook", [book_row(1, 3)])
    path = write(b, "spot", "BTCUSDT", "orderbook", [])
    with open(path, "w") as f:            # a recorder of 5 levels
        f.write(csvfiles.header("spot", "orderbook", levels=5).decode() + "9,1,true" + ",1" * 20 + "\n")
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "orderbook")]
    assert [r["update_id"] for r in read(out, "spot", "BTCUSDT", "orderbook")] == ["3"]
    assert (s.a_only, s.b_only) == (1, 0)


def test_orderbook_files_of_one_input_only_are_copied_whole(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(1, 1)])
    write(b, "spot", "BTCUSDT", "orderbook", [book_row(1, 3, False), book_row(2, 4)])
    merge(str(a), str(b), str(out))
    assert [r["in_sync"] for r in read(out, "spot", "BTCUSDT", "orderbook")] == ["false", "true"]


def test_a_snapshot_dated_on_either_side_of_midnight_is_written_once(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "depthSnapshot", snapshot(9, 1))       # B's clock put snapshot 8 after midnight
    write(b, "spot", "BTCUSDT", "depthSnapshot", snapshot(9, 1))
    write(b, "spot", "BTCUSDT", "depthSnapshot", snapshot(8, 2) + snapshot(9, 1) + snapshot(12, 3), day=DAY2)
    merge(str(a), str(b), str(out))
    with open(csvfiles.path(str(out), "spot", "BTCUSDT", "depthSnapshot", DAY2)) as f:
        assert [r["last_update_id"] for r in csv.DictReader(f)] == ["8", "8", "12", "12"]


def test_differing_copies_are_reported_and_a_kept(tmp_path, capsys):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "aggTrade", [agg(1, 1), agg(2, 1)])
    write(b, "spot", "BTCUSDT", "aggTrade", [agg(1, 2), agg(2, 2, price="9.9")])
    assert cli.main(["--merge", str(a), str(b), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "BTCUSDT aggTrade: 1 events differ between A and B (A's rows kept), ids 2" in captured.out
    assert captured.err.count("\n") == 1 and "1 events differ" in captured.err
    assert [r["price"] for r in read(out, "spot", "BTCUSDT", "aggTrade")] == ["1.0", "1.0"]


def test_refusals_are_one_line(tmp_path, capsys):
    a, b, c, out = tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(1, 1)])
    write(b, "spot", "BTCUSDT", "trade", [trade(1, 1)])
    write(c, "usdm", "BTCUSDT", "aggTrade", [])
    os.makedirs(out)
    (out / "x").write_text("")
    for args, said in [((a, b), "is not an empty folder"), ((a, c), "only recordings of the same market"),
                       ((a, a), "the same folder"), ((a, tmp_path / "nope"), "no such folder")]:
        assert cli.main(["--merge", *map(str, args), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err and err.startswith("binance-streamer: error: merge failed:")
    assert cli.main(["--merge", str(a), str(b)]) == 2
    assert "--merge needs --out DIR" in capsys.readouterr().err
    with pytest.raises(MergeError, match="inside the input"):
        merge(str(a), str(b), str(a / "merged"))


def test_cli_summary(tmp_path, capsys):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2, 5)])
    write(a, "spot", "BTCUSDT", "gaps", [gap("trade", 2, 5)])
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 2) for i in (2, 3, 4, 5)])
    assert cli.main(["--merge", str(a), str(b), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"A = {a}" and lines[1] == f"B = {b}"
    assert lines[4].split() == ["BTCUSDT", "trade", "1", "1", "2", "2", "0", "1", "0"]


def test_an_event_two_recorders_dated_on_either_side_of_midnight_is_written_once(tmp_path):
    # spot bookTickers are dated by the receive time: one machine's clock put event 50 before midnight, the other's after
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "bookTicker", [ticker(u, 1) for u in (10, 50)])
    write(b, "spot", "BTCUSDT", "bookTicker", [ticker(u, 2) for u in (10,)])
    write(b, "spot", "BTCUSDT", "bookTicker", [ticker(u, 2) for u in (50, 60)], day="2026-11-26")
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "bookTicker")]
    assert [int(r["update_id"]) for r in read(out, "spot", "BTCUSDT", "bookTicker")] == [10, 50]
    with open(csvfiles.path(str(out), "spot", "BTCUSDT", "bookTicker", "2026-11-26")) as f:
        assert [int(r["update_id"]) for r in csv.DictReader(f)] == [60]
    assert (s.days, s.repeated) == (2, 1)


def test_a_break_at_midnight_is_found_across_day_files(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2)])
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (5, 6)], day="2026-11-26")
    write(a, "spot", "BTCUSDT", "gaps", [gap("trade", 2, 5, local=(T0 + 86_400_000) * 1000 + 1)], day="2026-11-26")
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 2) for i in (2, 3)])
    merge(str(a), str(b), str(out))
    with open(csvfiles.path(str(out), "spot", "BTCUSDT", "gaps", "2026-11-26")) as f:
        assert [(r["last_good_id"], r["first_id_after"]) for r in csv.DictReader(f)] == [("3", "5")]
    assert verify.verify(str(out), "spot").ok


def test_ledger_rows_of_the_book_follow_its_file_and_rows_about_no_hole_are_copied(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    day2 = (T0 + 86_400_000) * 1000
    book = [[T0 * 1000 + 9, 7, "false"] + [""] * 80]
    write(a, "spot", "BTCUSDT", "orderbook", book)
    write(b, "spot", "BTCUSDT", "orderbook", book)
    write(b, "spot", "BTCUSDT", "orderbook", [[day2 + 9, 8, "false"] + [""] * 80], day="2026-11-26")
    resync = lambda local: [local, "orderbook", "depth gap", 5, 9, "", "", "resync", 0, ""]     # noqa: E731
    write(a, "spot", "BTCUSDT", "gaps", [resync(T0 * 1000 + 1), [T0 * 1000 + 2, "trade", "torn write", "", "", "",
                                                                   "", "lost", 3, "cut back"]])
    write(b, "spot", "BTCUSDT", "gaps", [resync(T0 * 1000 + 3)])
    write(b, "spot", "BTCUSDT", "gaps", [resync(day2 + 4)], day="2026-11-26")
    merge(str(a), str(b), str(out))
    rows = read(out, "spot", "BTCUSDT", "gaps")
    assert [(r["local_time_us"], r["reason"], r["detail"]) for r in rows] == \
        [(str(T0 * 1000 + 1), "depth gap", f"A ({a})"), (str(T0 * 1000 + 2), "torn write", f"A ({a}): cut back")]
    with open(csvfiles.path(str(out), "spot", "BTCUSDT", "gaps", "2026-11-26")) as f:
        assert [(r["local_time_us"], r["detail"]) for r in csv.DictReader(f)] == [(str(day2 + 4), f"B ({b})")]


def test_files_of_other_columns_are_refused(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "aggTrade", [agg(1, 1)])
    path = write(b, "spot", "BTCUSDT", "aggTrade", [])
    with open(path, "w") as f:                    # a USD-M aggTrade file in a spot folder
        f.write(csvfiles.header("usdm", "aggTrade").decode() + "2,1.0,2,2,2,5,true,5,9,0\n")
    with pytest.raises(MergeError, match="its columns differ from the other aggTrade files"):
        merge(str(a), str(b), str(out))


def test_an_empty_day_file_is_a_day_without_rows(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2)])
    open(write(b, "spot", "BTCUSDT", "trade", []), "w").close()      # a crash left it empty
    merge(str(a), str(b), str(out))
    assert [r["id"] for r in read(out, "spot", "BTCUSDT", "trade")] == ["1", "2"]


def test_a_merge_stopped_by_a_damaged_file_says_to_remove_its_output(tmp_path, capsys):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(1, 1), ["x"] + trade(2, 1)[1:]])
    write(b, "spot", "BTCUSDT", "trade", [trade(1, 1)])
    assert cli.main(["--merge", str(a), str(b), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 3: id 'x' is not a whole number" in err
    assert f"remove the unfinished {out} before trying again" in err


DAY2 = "2026-11-26"
T1 = T0 + 86_400_000        # 2026-11-26 00:00 UTC in ms


def gaps_of(root, day=DAY):
    path = csvfiles.path(str(root), "spot", "BTCUSDT", "gaps", day)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("a_ids, b_ids", [([1, 2, 3], [7, 8, 9]), ([7, 8, 9], [1, 2, 3])])
def test_a_span_between_two_recordings_is_outside_both(tmp_path, a_ids, b_ids):
    # one recorder stopped before the other started: neither ledger names the span between them
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in a_ids])
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 2) for i in b_ids])
    s = by_stream(merge(str(a), str(b), str(out)))[("BTCUSDT", "trade")]
    [row] = gaps_of(out)
    assert (row["stream"], row["reason"], row["action"]) == ("trade", "outside both recordings", "lost")
    assert (row["last_good_id"], row["first_id_after"]) == ("3", "7")
    assert (row["last_good_time"], row["first_time_after"]) == (str(T0 + 3), str(T0 + 7))
    assert (s.left, s.unexplained) == (1, 0)
    assert verify.verify(str(out), "spot").ok


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_depth_of_two_recordings_that_do_not_meet(tmp_path, market):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, market, "BTCUSDT", "depth", depth_rows([12, 15], 1, market))      # A started later than B stopped
    write(b, market, "BTCUSDT", "depth", depth_rows([3, 6], 2, market))
    merge(str(a), str(b), str(out))
    [row] = read(out, market, "BTCUSDT", "gaps")
    assert (row["last_good_id"], row["first_id_after"], row["reason"]) == ("6", "10", "outside both recordings")
    assert verify.verify(str(out), market).ok


def test_a_hole_one_ledger_names_and_the_other_did_not_record_keeps_its_reason(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2, 3, 9, 10)])
    write(a, "spot", "BTCUSDT", "gaps", [gap("trade", 3, 9)])
    write(b, "spot", "BTCUSDT", "trade", [trade(i, 2) for i in (10, 11)])     # B started after the hole
    merge(str(a), str(b), str(out))
    [row] = gaps_of(out)
    assert (row["reason"], row["action"], row["last_good_id"], row["first_id_after"]) == ("reconnect", "lost", "3", "9")
    assert f"B ({b}): no rows there" in row["detail"]


def test_the_span_between_recordings_across_midnight_is_in_the_next_days_ledger(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2)])
    late = lambda i: [i, "1.0", "2", "", T1 + i, "True", "True", T1 + i, (T1 + i) * 1000]   # noqa: E731
    write(b, "spot", "BTCUSDT", "trade", [late(i) for i in (5, 6)], day=DAY2)
    merge(str(a), str(b), str(out))
    assert gaps_of(out) == []
    [row] = gaps_of(out, DAY2)
    assert (row["last_good_id"], row["first_id_after"], row["reason"]) == ("2", "5", "outside both recordings")
    assert int(row["local_time_us"]) // 1000 == T1 + 5
    assert verify.verify(str(out), "spot").ok and verify.verify(str(out), "spot", date=DAY2).ok


def test_a_stream_one_recording_lacks_is_not_recorded_on_the_days_only_the_other_has(tmp_path):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    write(a, "spot", "BTCUSDT", "trade", [trade(i, 1) for i in (1, 2)])
    write(a, "spot", "BTCUSDT", "aggTrade", [agg(i, 1) for i in (1, 2)])
    write(b, "spot", "BTCUSDT", "aggTrade", [agg(i, 1) for i in (2, 3)], day=DAY2)    # B records no trades
    merge(str(a), str(b), str(out))
    rows = gaps_of(out, DAY2)
    assert [(r["stream"], r["action"]) for r in rows] == [("trade", "not recorded")], rows
    assert verify.verify(str(out), "spot").ok


def test_tables_keep_a_space_after_usdms_long_series_names():
    from binance_streamer import merge
    from binance_streamer.analysis import verify
    name = "globalLongShortAccountRatio_5m"
    summary = merge.format_summary([merge.Summary("BTCUSDT", name, days=1, a_only=1, keyed=False),
                                    merge.Summary("BTCUSDT", "trade", days=1, both=3)], {"A": "a", "B": "b"})
    assert f"BTCUSDT     {name}  " in summary
    header, series, trade = summary.splitlines()[3:6]
    end = header.index("days") + len("days")
    assert series[end - 1] == trade[end - 1] == "1" and series[end - 2] == " "      # days under days
    report = verify.Report(files=[verify.FileReport("BTCUSDT", name, "2026-12-06", rows=30)])
    assert f"{name}  2026-12-06" in verify.format_report(report, "/d")
