"""The order-book manager's core on real captured Binance traffic (spot,
USD-M and COIN-M, from ../shared/realdata/cryptofeed) and on made-up faults.

The captures are cryptofeed's sample data; this product includes software
developed by Bryant Moscon (http://www.bryantmoscon.com/)."""

import os
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from binance_streamer.messages import Gap, pack_levels
from binance_streamer import config
from binance_streamer.orderbook import SYNCED_STATE, OrderBooks
from tests.support import REALDATA, need

CAPTURES = [("cryptofeed/BINANCE.ws.1.0", "cryptofeed/BINANCE.http.0.0", "spot"),
            ("cryptofeed/BINANCE_FUTURES.ws.1.0", "cryptofeed/BINANCE_FUTURES.http.0.0", "usdm"),
            ("cryptofeed/BINANCE-b38f7c.0", None, "spot"),
            ("cryptofeed/BINANCE-ee25be.0", None, "spot"),
            ("cryptofeed/BINANCE_FUTURES-1125a2.0", None, "usdm"),
            ("cryptofeed/BINANCE_DELIVERY.ws.1.0", "cryptofeed/BINANCE_DELIVERY.http.0.0", "coinm")]


def timeline(*paths):
    """(time, kind, payload) from capture files, in time order."""
    events = []
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\n")
                if line[:1].isdigit():
                    ts, _, text = line.partition(b": ")
                    events.append((float(ts), "ws", orjson.loads(text)))
                elif line.startswith(b"http"):
                    head, _, body = line.partition(b": ")
                    url, _, ts = head.decode().partition(" -> ")
                    symbol = parse_qs(urlparse(url).query)["symbol"][0]
                    events.append((float(ts), "snap", (symbol, orjson.loads(body))))
    return sorted(events, key=lambda e: e[0])


@pytest.mark.parametrize("ws, http, market", CAPTURES, ids=[c[0].split("/")[1] for c in CAPTURES])
def test_capture_books_align_never_cross_and_match_every_book_ticker(ws, http, market):
    paths = [need(os.path.join(REALDATA, ws))] + ([need(os.path.join(REALDATA, http))] if http else [])
    events = timeline(*paths)
    symbols = sorted({e[2]["stream"].split("@")[0].upper() for e in events if e[1] == "ws"})
    cfg = config.load(None, {"market": market, "symbols": ",".join(symbols)}).replace(book_refresh_interval=0)
    out = []
    books = OrderBooks(cfg, lambda *a: None, out.append)
    snapshotted = set()
    applied_after_snapshot = 0
    for _, kind, payload in events:
        if kind == "snap":
            symbol, snap = payload
            if symbol not in snapshotted:
                snapshotted.add(symbol)
                books.on_snapshot(symbol, snap["lastUpdateId"], snap["bids"], snap["asks"])
            continue
        d, stream = payload["data"], payload["stream"]
        symbol = stream.split("@")[0].upper()
        if "@depth" in stream:
            books.on_diff(symbol, d["U"], d["u"], d.get("pu"), pack_levels(d["b"]), pack_levels(d["a"]))
            applied_after_snapshot += symbol in snapshotted
            assert not books.books[symbol].sync.book.crossed()
        elif stream.endswith("@bookTicker"):
            books.on_ticker(symbol, d["u"], d["b"], d["B"], d["a"], d["A"])
    status = books.status()
    assert snapshotted, "the capture has no snapshot"
    for symbol in snapshotted:
        b = status["books"][symbol]
        assert b["state"] == SYNCED_STATE and b["resyncs"] == 0, (symbol, b)
    assert status["ticker_mismatches"] == 0
    has_tickers = any(e[1] == "ws" and e[2]["stream"].endswith("@bookTicker") for e in events)
    assert status["ticker_compared"] > 0 or not has_tickers
    assert not [m for m in out if isinstance(m, Gap)]


def _cfg(**kw):
    return config.load(None, {"symbols": "BTCUSDT,ETHUSDT", **kw})


def test_gap_resyncs_only_that_symbol_and_is_ledgered():
    asked, out = [], []
    now = [100.0]
    books = OrderBooks(_cfg(), lambda *a: asked.append(a), out.append, clock=lambda: now[0])
    books.tick()
    assert asked == []                         # Binance's order: a diff buffered first, then the snapshot
    for s in ("BTCUSDT", "ETHUSDT"):
        books.on_diff(s, 10, 12, None, "1.0,1", "2.0,1")
    books.tick()
    assert sorted(a[0] for a in asked) == ["BTCUSDT", "ETHUSDT"]
    for s in ("BTCUSDT", "ETHUSDT"):
        books.on_snapshot(s, 11, [["1.0", "5"]], [["2.0", "5"]])
    assert all(b.state == SYNCED_STATE for b in books.books.values())
    books.on_diff("ETHUSDT", 13, 14, None, "", "")
    books.on_diff("ETHUSDT", 17, 18, None, "", "")          # 15..16 missing
    assert books.books["ETHUSDT"].state != SYNCED_STATE and books.books["BTCUSDT"].state == SYNCED_STATE
    gap = [m.row for m in out if isinstance(m, Gap)]
    assert [(g["stream"], g["reason"], g["last_good_id"], g["first_id_after"]) for g in gap] == \
        [("orderbook", "depth gap", 14, 17)]
    asked.clear()
    books.tick()
    assert asked == [("ETHUSDT", 5000, 0)]


def test_crossed_book_and_disagreeing_ticker_resync():
    out = []
    books = OrderBooks(_cfg(), lambda *a: None, out.append)
    books.on_snapshot("BTCUSDT", 10, [["1.0", "5"]], [["2.0", "5"]])
    books.on_diff("BTCUSDT", 11, 11, None, "1.5,1", "")
    books.on_ticker("BTCUSDT", 11, "1.5", "1", "2.0", "5")        # agrees
    assert books.books["BTCUSDT"].compared == 1 and books.books["BTCUSDT"].mismatches == 0
    books.on_ticker("BTCUSDT", 12, "1.5", "9", "2.0", "5")        # kept for u=12
    books.on_diff("BTCUSDT", 12, 12, None, "1.5,1", "")
    assert books.books["BTCUSDT"].mismatches == 1
    books.on_snapshot("ETHUSDT", 10, [["1.0", "5"]], [["2.0", "5"]])
    books.on_diff("ETHUSDT", 11, 11, None, "3.0,1", "")    # bid above the ask
    reasons = [m.row["reason"] for m in out if isinstance(m, Gap)]
    assert reasons == ["bookTicker disagrees with the book", "crossed book"]


def test_book_tickers_a_diff_has_passed_are_dropped_not_held():
    books = OrderBooks(_cfg(), lambda *a: None, [].append)
    books.on_snapshot("BTCUSDT", 10, [["1.0", "5"]], [["2.0", "5"]])
    for u in (12, 13, 15, 17):                                    # ahead of the book: kept for their diff
        books.on_ticker("BTCUSDT", u, "1.0", "5", "2.0", "5")
    books.on_diff("BTCUSDT", 11, 14, None, "", "")               # ends at 14: 12 and 13 can never be checked
    sb = books.books["BTCUSDT"]
    assert list(sb.tickers) == [15, 17] and sb.compared == 0
    books.on_diff("BTCUSDT", 15, 15, None, "", "")               # ends at 15: checked, then gone
    assert list(sb.tickers) == [17] and (sb.compared, sb.mismatches) == (1, 0)


def test_periodic_refresh_replaces_the_book_and_drops_orphans():
    now = [0.0]
    asked, out = [], []
    books = OrderBooks(_cfg(book_refresh_interval=60), lambda *a: asked.append(a), out.append, clock=lambda: now[0])
    books.on_snapshot("BTCUSDT", 10, [["1.0", "5"], ["0.9", "1"]], [["2.0", "5"]])
    books.on_diff("BTCUSDT", 11, 11, None, "0.5,3", "")    # a level outside the snapshot: an orphan
    now[0] = 61.0
    books.tick()
    assert ("BTCUSDT", 5000, 1) in asked                            # a routine refresh
    books.on_diff("BTCUSDT", 12, 12, None, "1.0,6", "")
    books.on_snapshot("BTCUSDT", 12, [["1.0", "6"], ["0.9", "1"]], [["2.0", "5"]])
    sb = books.books["BTCUSDT"]
    assert sb.refresh is not None            # the new book waits for a diff that bridges its snapshot
    books.on_diff("BTCUSDT", 13, 13, None, "", "2.1,1")
    assert sb.state == SYNCED_STATE and sb.sync.update_id == 13 and sb.refresh is None
    assert sorted(p for p, _ in sb.sync.book.bids.values()) == ["0.9", "1.0"]       # orphan gone
    assert sb.resyncs == 0


def test_a_snapshot_taken_before_the_stream_began_is_asked_again_without_a_ledger_row():
    asked, out = [], []
    books = OrderBooks(_cfg(symbols="BTCUSDT"), lambda *a: asked.append(a), out.append, clock=lambda: 100.0)
    books.on_diff("BTCUSDT", 20, 21, None, "", "")
    books.tick()
    books.on_snapshot("BTCUSDT", 25, [["1.0", "5"]], [["2.0", "5"]])    # newer than every buffered diff
    books.on_diff("BTCUSDT", 30, 31, None, "", "")                      # 26..29 came before we listened
    assert [m for m in out if isinstance(m, Gap)] == [] and books.books["BTCUSDT"].resyncs == 0
    asked.clear()
    books.tick()
    assert asked == [("BTCUSDT", 5000, 0)]
    books.on_snapshot("BTCUSDT", 30, [["1.0", "5"]], [["2.0", "5"]])
    assert books.books["BTCUSDT"].state == SYNCED_STATE


def test_the_book_manager_applies_a_diff_as_it_travels_packed():
    from binance_streamer.messages import Diff
    from binance_streamer.orderbook import _apply, orderbook_handlers
    books = OrderBooks(_cfg(), lambda *a: None, [].append)
    books.on_snapshot("BTCUSDT", 10, [["1.0", "5"], ["0.9", "1"]], [["2.0", "5"]])
    diff = (Diff, "BTCUSDT", 11, 11, None, pack_levels([["1.5", "1"], ["0.9", "0"]]), pack_levels([]), 1700)
    _apply(books, orderbook_handlers(books), [diff])
    book = books.books["BTCUSDT"].sync.book
    assert books.bad_input == 0 and book.update_id == 11
    assert book.top(5) == ([("1.5", "1"), ("1.0", "5")], [("2.0", "5")])


def test_buffered_diffs_stay_packed_and_a_malformed_side_is_dropped_as_it_arrives():
    from binance_streamer.messages import Diff
    from binance_streamer.orderbook import _apply, orderbook_handlers
    out = []
    books = OrderBooks(_cfg(), lambda *a: None, out.append)
    handlers = orderbook_handlers(books)
    _apply(books, handlers, [(Diff, "BTCUSDT", 9, 11, None, "1.5,1,0.9,0", "", 1700),
                             (Diff, "BTCUSDT", 12, 12, None, "1.6,1,0.9", "", 1701),     # odd: not a side
                             (Diff, "ETHUSDT", 12, 12, None, "", "2.1", 1701)])
    assert books.bad_input == 2 and [m.row["reason"] for m in out] == ["malformed event"] * 2
    _apply(books, handlers, [(Diff, "BTCUSDT", 13, 14, None, "1.5,2", "2.0,0", 1702)])
    assert books.books["BTCUSDT"].sync.buffer == [(13, 14, None, "1.5,2", "2.0,0")]     # as it travelled
    books.on_snapshot("BTCUSDT", 13, [["1.0", "5"], ["0.9", "1"]], [["2.0", "5"], ["2.1", "1"]])
    book = books.books["BTCUSDT"].sync.book
    assert book.update_id == 14 and book.top(5) == ([("1.5", "2"), ("1.0", "5"), ("0.9", "1")], [("2.1", "1")])
