"""A capture replayed in several passes, each continuing the last: ids and
times shifted, each book bridged back to the capture's first snapshot, so a
client synced once keeps an exact book through every pass (played here at
once, no server)."""

import os

import orjson
import pytest

from binance_streamer.book import APPLIED, DepthSync
from binance_streamer.simulator.replay import load_replay
from tests.support import REALDATA, need

CAPTURES = {"spot": ["cryptofeed/BINANCE-b38f7c.0", "cryptofeed/BINANCE-ee25be.0"],
            "usdm": ["cryptofeed/BINANCE_FUTURES-1125a2.0"]}


@pytest.mark.parametrize("market", sorted(CAPTURES))
def test_every_pass_continues_the_last_and_books_meet_every_ticker(market):
    paths = [need(os.path.join(REALDATA, p)) for p in CAPTURES[market]]
    replay = load_replay(",".join(paths), 0, None, 3)
    first_snapshots = {s: replay.symbol(s).snapshots[0] for s in replay.symbols if replay.symbol(s).snapshots}
    replay.start(0.0)
    frames = replay.due(1.0)
    assert replay.finished
    passes = len(frames) / len(replay.frames)
    assert 2.5 < passes < 3.0                 # later passes leave out what came before the snapshot

    tickers = {}
    for stream, payload, _ in frames:
        if stream.endswith("@bookTicker"):
            d = orjson.loads(payload)
            tickers[(stream.split("@")[0].upper(), d["u"])] = d
    syncs, last_agg, tickers_met, kline_times, kline_opens = {}, {}, {}, set(), {}
    for stream, payload, frame in frames:
        assert frame == b'{"stream":"%s","data":%s}' % (stream.encode(), payload)
        symbol, _, key = stream.partition("@")
        sym, d = symbol.upper(), orjson.loads(payload)
        if key == "aggTrade":
            assert d["a"] == last_agg.get(sym, d["a"] - 1) + 1, (sym, d["a"])
            last_agg[sym] = d["a"]
        elif key.startswith("kline"):
            kline_times.add(d["k"]["t"] % 60_000)
            if d["k"]["x"]:
                kline_opens.setdefault(sym, []).append(d["k"]["t"])
        elif key.startswith("depth") and sym in first_snapshots:
            sync = syncs.get(sym)
            if sync is None:
                sync = syncs[sym] = DepthSync(market)
                sync.on_diff(d["U"], d["u"], d.get("pu"), d["b"], d["a"])
                assert sync.on_snapshot(*first_snapshots[sym]) == "synced"
                continue
            outcome = sync.on_diff(d["U"], d["u"], d.get("pu"), d["b"], d["a"])
            if sync.synced:
                assert outcome in (APPLIED, "stale"), (sym, outcome, d["U"], d["u"])
                assert not sync.book.crossed()
            t = tickers.get((sym, sync.book.update_id)) if outcome == APPLIED else None
            if t is not None:
                assert sync.book.best_bid() == (t["b"], t["B"]) and sync.book.best_ask() == (t["a"], t["A"]), (sym, t)
                tickers_met[sym] = tickers_met.get(sym, 0) + 1
    assert all(s.synced for s in syncs.values())
    assert sum(tickers_met.values()) > 30, tickers_met
    assert kline_times <= {0}                  # klines open on whole minutes in every pass
    # Each pass's closed candles continue the last pass's minute by minute
    # (1m klines in these captures): no hole at a pass boundary.
    for sym, opens in kline_opens.items():
        steps = {b - a for a, b in zip(opens, opens[1:])}
        assert steps == {60_000}, (sym, sorted(steps))
