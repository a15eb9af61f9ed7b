"""The worker's ordered outbox and book feed, without a worker."""

import pytest

from binance_streamer.binance.parse import cells
from binance_streamer.messages import Diff, Rows, Ticker, each_line, named, pack_levels, unpack_levels
from binance_streamer.outbox import BookFeed, Outbox
from binance_streamer.sequence import gap_row
from binance_streamer.worker import Route

DAY = "2026-01-01"


def _route():
    return Route("BTCUSDT", "aggTrade")


def _ids(batch):
    return [("rows", m.ids, m.backfilled) if isinstance(m, Rows) else ("gap", m.row["action"], None) for m in batch]


def test_rows_of_a_stream_share_one_message_until_a_gap_seals_it():
    box, r = Outbox(), _route()
    box.add(r, DAY, 1, "1\n")
    box.add(r, DAY, 2, "2\n")
    box.gap(r, gap_row(0, "aggTrade", "id jump", 2, 5, "lost"))
    box.add(r, DAY, 5, "5\n")
    assert _ids(box.take()) == [("rows", [1, 2], False), ("gap", "lost", None), ("rows", [5], False)]
    assert box.take() == [] and not box


def test_the_rows_of_one_event_share_its_id():
    box, r = Outbox(), Route("BTCUSDT", "depth@100ms")
    box.add(r, DAY, 9, "a\nb\n", rows=2)
    box.add(r, DAY, 10, "c\n")
    (msg,) = box.take()
    assert msg == Rows("BTCUSDT", "depth", DAY, [9, 9, 10], ["a\nb\n", "c\n"], False)
    assert each_line(msg) == [(9, "a\n"), (9, "b\n"), (10, "c\n")]


def test_held_rows_leave_in_id_order_with_the_backfilled_ones():
    box, r = Outbox(), _route()
    box.add(r, DAY, 1, "1\n")
    box.hold(r)
    box.add(r, DAY, 6, "6\n")                   # live rows after the hole wait
    box.add(r, DAY, 7, "7\n")
    assert _ids(box.take()) == [("rows", [1], False)]
    box.join_held(r, [(DAY, 3, "3\n"), (DAY, 4, "4\n")])
    box.join_held(r, [(DAY, 2, "2\n")])        # a second page, or a second hole, out of order
    box.release(r)
    assert r.held is None
    assert _ids(box.take()) == [("rows", [2, 3, 4], True), ("rows", [6, 7], False)]
    box.add(r, DAY, 8, "8\n")                  # not held any more
    assert _ids(box.take()) == [("rows", [8], False)]


def test_backfilled_and_live_rows_that_alternate_get_a_message_each():
    box, r = Outbox(), _route()
    box.hold(r)
    box.add(r, DAY, 5, "5\n")
    box.join_held(r, [(DAY, 3, "3\n"), (DAY, 6, "6\n")])
    box.release(r)
    assert _ids(box.take()) == [("rows", [3], True), ("rows", [5], False), ("rows", [6], True)]


def test_a_ticker_waits_for_the_diff_whose_final_id_it_names():
    feed = BookFeed(["BTCUSDT"])
    feed.ticker("BTCUSDT", 12, "1", "1", "2", "1")            # before its diff
    feed.ticker("BTCUSDT", 11, "1", "1", "2", "1")            # no diff ends at 11
    feed.diff("BTCUSDT", 5, 10, None, "", "")
    feed.diff("BTCUSDT", 11, 12, None, "", "")
    feed.ticker("BTCUSDT", 12, "1", "1", "3", "1")            # names the last diff: sent at once
    out = feed.take()
    assert [(m[0], m[2], m[3]) for m in out] == [(Diff, 5, 10), (Ticker, 12, "1"), (Diff, 11, 12), (Ticker, 12, "1")]
    assert named(out[1]) == Ticker("BTCUSDT", 12, "1", "1", "2", "1")
    assert feed.tickers["BTCUSDT"] == {} and feed.take() == []


def test_a_diff_travels_with_its_sides_packed_and_unpacks_to_the_strings_sent():
    feed = BookFeed(["BTCUSDT"])
    bids, asks = [["97123.45000000", "0.01230000"], ["97123.44000000", "0.00000000"]], []
    feed.diff("BTCUSDT", 5, 10, None, ",".join(cells(bids)), ",".join(cells(asks)), 1700)   # packed as parse.depth packs
    (msg,) = feed.take()
    diff = named(msg)
    assert diff.bids == "97123.45000000,0.01230000,97123.44000000,0.00000000" and diff.asks == ""
    assert unpack_levels(diff.bids) == [tuple(level) for level in bids] and unpack_levels(diff.asks) == []


def test_a_packed_side_with_an_odd_number_of_cells_is_refused():
    with pytest.raises(ValueError):
        unpack_levels("1.0,2.0,3.0")
    assert unpack_levels(pack_levels([["1.0", "2.0"]])) == [("1.0", "2.0")]
