"""The worker's frame handling, on real captured Binance traffic and on
made-up reconnects, without processes or sockets."""

import os

import orjson
import pytest

from binance_streamer.messages import Gap, Rows, each_line
from binance_streamer import config
from binance_streamer.worker import BATCH_ROWS, Worker
from tests.support import REALDATA, need


def _cfg(market="spot", symbols="BTCUSDT", streams="aggTrade,trade,depth@100ms,kline_1m,bookTicker"):
    return config.load(None, {"market": market, "symbols": symbols, "streams": streams})


def _frames(path):
    with open(path, "rb") as f:
        for line in f:
            if line[:1].isdigit():
                ts, _, text = line.rstrip(b"\n").partition(b": ")
                yield float(ts), text


def _rows(batch, stream=None, symbol=None):
    out = []
    for msg in batch:
        if isinstance(msg, Rows) and (stream is None or msg.stream == stream) and symbol in (None, msg.symbol):
            out.extend(each_line(msg))
    return out


@pytest.mark.parametrize("capture, market", [("cryptofeed/BINANCE.ws.1.0", "spot"),
                                             ("cryptofeed/BINANCE_FUTURES.ws.1.0", "usdm")])
def test_real_capture_parses_exactly(capture, market):
    path = need(os.path.join(REALDATA, capture))
    frames = list(_frames(path))
    symbols = sorted({orjson.loads(t)["stream"].split("@")[0].upper() for _, t in frames})
    cfg = _cfg(market, ",".join(symbols), "aggTrade,depth@100ms,kline_1m,bookTicker")
    w = Worker(cfg, symbols)
    for ts, text in frames:
        assert w.on_frames([text], int(ts * 1e6)) is None
    assert w.counts["malformed"] == 0 and w.counts["unknown"] == 0 and w.counts["unexpected_fields"] == 0
    batch = w.take_batch()
    gaps = [m for m in batch if isinstance(m, Gap)]
    # one "start" report per stream and symbol that had data, nothing else
    assert {g.row["reason"] for g in gaps} <= {"start"}
    events = [orjson.loads(t) for _, t in frames]
    for symbol in symbols:
        mine = [e["data"] for e in events if e["stream"].startswith(symbol.lower() + "@")]
        aggs = [d for d in mine if d.get("e") == "aggTrade"]
        rows = _rows(batch, "aggTrade", symbol)
        assert [r[1].split(",")[1:3] for r in rows] == [[a["p"], a["q"]] for a in aggs]
        depth = [d for d in mine if d.get("e") == "depthUpdate"]
        depth_rows = _rows(batch, "depth", symbol)
        assert len(depth_rows) == sum(max(1, len(d["b"]) + len(d["a"])) for d in depth)
        want = [[side, p, q] for d in depth for side, lv in (("bid", d["b"]), ("ask", d["a"])) for p, q in lv]
        assert [r[1].split(",")[5:8] for r in depth_rows if r[1].split(",")[5]] == want
    tickers = _rows(batch, "bookTicker")
    assert len(tickers) == sum(1 for e in events if e["stream"].endswith("@bookTicker"))


def test_malformed_unknown_and_unexpected_are_counted_not_fatal():
    w = Worker(_cfg(), ["BTCUSDT"])
    w.on_frames([b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"'], 1)
    w.on_frames([b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade"}}'], 2)      # fields missing
    w.on_frames([b'{"stream":"!mystery","data":{"e":"mystery"}}'], 3)
    w.on_frames([b'[1,2,3]'], 4)
    w.on_frames([b'{"result":null,"id":1}'], 5)
    ok = {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 1, "p": "1.0", "q": "2.0", "f": 1, "l": 1,
          "T": 1, "m": True, "M": True, "new": 1}
    w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": ok})], 6)
    assert w.counts["malformed"] == 3 and w.counts["unknown"] == 1 and w.counts["control_replies"] == 1
    assert w.counts["unexpected_fields"] == 1
    assert len(_rows(w.take_batch(), "aggTrade")) == 1
    assert w.on_frames([b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}'], 7) == "shutdown"


class FakeRest:
    requests = failures = 0

    def __init__(self, trades):
        self.trades = trades

    def agg_trades(self, symbol, from_id, limit):
        return [t for t in self.trades if t["a"] >= from_id][:limit]


def _agg(a):
    return {"e": "aggTrade", "E": 1000 + a, "s": "BTCUSDT", "a": a, "p": f"{a}.5", "q": "1", "f": a, "l": a,
            "T": 1000 + a, "m": False, "M": True}


def test_reconnect_hole_backfilled_in_order_before_the_live_rows():
    rest = FakeRest([{k: v for k, v in _agg(a).items() if k not in ("e", "E", "s")} for a in range(1, 20)])
    w = Worker(_cfg(streams="aggTrade,trade"), ["BTCUSDT"], rest=rest)
    for a in (1, 2):
        w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(a)})], 1)
    w.on_connected(["btcusdt@aggTrade", "btcusdt@trade"])      # a reconnect
    for a in (6, 7):
        w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(a)})], 2)
    first = w.take_batch()
    assert [r[0] for r in _rows(first, "aggTrade")] == [1, 2]      # 6, 7 wait for the backfill
    w.do_job(w.jobs.get_nowait())
    batch = w.take_batch()
    assert [r[0] for r in _rows(batch, "aggTrade")] == [3, 4, 5, 6, 7]
    assert [r[1].rstrip().split(",")[-1] for r in _rows(batch, "aggTrade")] == ["1", "1", "1", "0", "0"]
    gap = next(m.row for m in batch if isinstance(m, Gap))
    assert (gap["reason"], gap["last_good_id"], gap["first_id_after"], gap["action"], gap["rows"]) == \
        ("reconnect", 2, 6, "backfilled", 3)


def test_a_burst_leaves_before_batch_interval_once_the_batch_is_large():
    w = Worker(_cfg(streams="aggTrade"), ["BTCUSDT"])
    sent = []
    w.send = lambda batch, book: sent.append(batch)
    frames = [orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(a)}) for a in range(1, BATCH_ROWS + 1)]
    w.on_frames(frames[:-1], 1)
    w.hand_on()
    assert sent == []                 # one row short: it waits for batch_interval (0.1 s)
    w.on_frames(frames[-1:], 1)
    w.hand_on()
    assert [r[0] for r in _rows(sent[0])] == list(range(1, BATCH_ROWS + 1))
    w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(BATCH_ROWS + 1)})], 1)
    w.hand_on()
    assert len(sent) == 1             # the count starts again with the next batch


def test_trade_hole_is_a_ledger_row_before_the_rows_after_it():
    w = Worker(_cfg(streams="trade"), ["BTCUSDT"])
    mk = lambda t: orjson.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": t,
                                                                     "p": "1", "q": "2", "T": 1, "m": True, "M": True}})
    for t in (1, 2, 5):
        w.on_frames([mk(t)], 1)
    batch = w.take_batch()
    kinds = [("rows", m.ids) if isinstance(m, Rows) else ("gap", m.row["action"]) for m in batch]
    assert kinds == [("gap", ""), ("rows", [1, 2]), ("gap", "lost"), ("rows", [5])]
    assert batch[2].row["last_good_id"] == 2 and batch[2].row["first_id_after"] == 5


def test_rows_go_to_the_file_of_their_utc_day():
    w = Worker(_cfg(streams="aggTrade"), ["BTCUSDT"])
    before_midnight, after_midnight = 1_764_115_199_999, 1_764_115_200_001     # 2025-11-25 23:59:59.999 UTC
    for a, t in ((1, before_midnight), (2, after_midnight)):
        d = dict(_agg(a), T=t, E=t)
        w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": d})], 1)
    days = [(m.day, m.ids) for m in w.take_batch() if isinstance(m, Rows)]
    assert days == [("2025-11-25", [1]), ("2025-11-26", [2])]


def test_overlap_of_a_new_connection_is_judged_per_stream():
    w = Worker(_cfg(streams="aggTrade,depth@100ms,kline_1m,bookTicker"), ["BTCUSDT"])
    for a in (1, 2, 3):
        w.on_frames([orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(a)})], 1)
    names = list(w.routes)
    agg = orjson.dumps({"stream": "btcusdt@aggTrade", "data": _agg(4)})
    assert w.identify(agg) == ("btcusdt@aggTrade", 4)
    assert w.identify(b"not json") is None
    assert not w.overlaps(names, {})                      # aggTrade has data: wait for the new connection's
    assert not w.overlaps(names, {"btcusdt@aggTrade": 5})     # 4 would be missing
    assert w.overlaps(names, {"btcusdt@aggTrade": 4, "btcusdt@depth@100ms": 9})   # streams with no data yet: no wait
    assert w.overlaps(names, {"btcusdt@aggTrade": 4})         # the next id: no hole
    assert w.overlaps(names, {"btcusdt@aggTrade": 2})         # an overlap
