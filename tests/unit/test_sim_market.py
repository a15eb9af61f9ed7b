"""The simulator's market model: deterministic, exact, and consistent ids."""

from decimal import Decimal

import orjson
import pytest

from binance_streamer.simulator.market import Formatter, SymbolMarket

T0 = 1_700_000_000_000_000
ALL = {"aggTrade", "trade", "bookTicker", "depth@100ms", "depth", "kline_1s", "kline_1m", "depth5"}


def run(market="spot", seed=1, rate=1000, seconds=2.0, symbol=None, active=ALL):
    symbol = symbol or ("BTCUSD_PERP" if market == "coinm" else "BTCUSDT")
    m = SymbolMarket(market, symbol, seed, rate, T0)
    return m, [(k, orjson.loads(p)) for k, p in m.advance(T0 + int(seconds * 1e6), active)]


def test_same_seed_same_market_other_seed_other_market():
    _, a = run(seed=5)
    _, b = run(seed=5)
    _, c = run(seed=6)
    assert a == b
    assert a != c


def test_formatter_is_exact():
    f = Formatter(2, 8)
    assert f(3_000_001) == "30000.01000000"
    assert f(5) == "0.05000000"
    assert Formatter(4, 4)(12345) == "1.2345"


def test_book_has_5000_levels_a_side_and_never_crosses():
    m, _ = run(rate=5000, seconds=4.0)
    assert len(m.bids) >= 5000 and len(m.asks) >= 5000
    assert max(m.bids) == m.best_bid < m.best_ask == min(m.asks)


@pytest.mark.parametrize("market", ["spot", "usdm", "coinm"])
def test_ids_are_consistent(market):
    m, out = run(market=market)
    agg = [d for k, d in out if k == "aggTrade"]
    assert all(b["a"] == a["a"] + 1 and b["f"] == a["l"] + 1 for a, b in zip(agg, agg[1:]))
    if market == "spot":
        trades = [d for k, d in out if k == "trade"]
        assert [t["t"] for t in trades] == list(range(agg[0]["f"], agg[-1]["l"] + 1))
        # the trades of one aggTrade add up to its quantity, at its price
        for a in agg[:50]:
            parts = [t for t in trades if a["f"] <= t["t"] <= a["l"]]
            assert sum(Decimal(t["q"]) for t in parts) == Decimal(a["q"])
            assert {t["p"] for t in parts} == {a["p"]}
    depth = [d for k, d in out if k == "depth@100ms"]
    for a, b in zip(depth, depth[1:]):
        assert (b["U"] == a["u"] + 1) if market == "spot" else (b["pu"] == a["u"])
    tickers = [d for k, d in out if k == "bookTicker"]
    assert all(b["u"] > a["u"] for a, b in zip(tickers, tickers[1:]))


def test_true_book_at_an_old_update_id_is_rebuilt_exactly():
    m = SymbolMarket("spot", "ETHUSDT", 3, 2000, T0)
    m.advance(T0 + 500_000, ())
    uid, bids, asks = m.book_at()
    m.advance(T0 + 2_000_000, ())
    assert m.update_id > uid
    assert m.book_at(uid) == (uid, bids, asks)
    with pytest.raises(LookupError):
        m.book_at(1)


def test_closed_klines_once_per_candle_and_built_from_trades():
    m, out = run(rate=500, seconds=4.5)
    closed = [d["k"] for k, d in out if k == "kline_1s" and d["k"]["x"]]
    assert [k["t"] for k in closed] == sorted({k["t"] for k in closed})
    agg = [d for k, d in out if k == "aggTrade"]
    for k in closed:
        inside = [a for a in agg if k["t"] <= a["T"] <= k["T"]]
        assert Decimal(k["v"]) == sum(Decimal(a["q"]) for a in inside)
        if inside:
            assert (k["o"], k["c"]) == (inside[0]["p"], inside[-1]["p"])
            assert (k["f"], k["L"]) == (inside[0]["f"], inside[-1]["l"])


@pytest.mark.parametrize("rate", [1, 5000])
def test_rates_from_one_to_five_thousand_per_second(rate):
    m, out = run(rate=rate, seconds=3.0, active={"aggTrade", "bookTicker"})
    assert m.steps == pytest.approx(rate * 3, abs=1)
    assert out


def test_agg_trades_history_by_id_and_time():
    m, out = run(rate=1000, seconds=2.0)
    agg = [d for k, d in out if k == "aggTrade"]
    got = m.agg_trades_rest(agg[10]["a"], None, None, 5)
    assert [g["a"] for g in got] == [a["a"] for a in agg[10:15]]
    assert got[0]["p"] == agg[10]["p"] and got[0]["q"] == agg[10]["q"]
    t = agg[20]["T"]
    by_time = m.agg_trades_rest(None, t, None, 3)
    assert by_time[0]["T"] >= t and by_time[0]["a"] <= agg[20]["a"]


def test_coinm_speaks_contracts_with_dstream_shapes():
    """COIN-M as the real capture (BINANCE_DELIVERY) shows it: whole contracts,
    ``ps`` the pair on depth and bookTicker, no ``nq``/``st``; the kline's
    ``q`` is the base asset: contracts x 100 USD / price."""
    m, out = run(market="coinm", active={"aggTrade", "bookTicker", "depth@100ms", "kline_1m"}, seconds=61.0,
                 rate=200)
    by_key = {}
    for k, d in out:
        by_key.setdefault(k, []).append(d)
    agg, ticker, depth = by_key["aggTrade"][0], by_key["bookTicker"][0], by_key["depth@100ms"][0]
    assert list(agg) == ["e", "E", "a", "s", "p", "q", "f", "l", "T", "m"] and agg["q"].isdigit()
    assert list(ticker) == ["u", "e", "s", "ps", "b", "B", "a", "A", "T", "E"] and ticker["ps"] == "BTCUSD"
    assert list(depth) == ["e", "E", "T", "s", "ps", "U", "u", "pu", "b", "a"] and depth["ps"] == "BTCUSD"
    assert all(q.isdigit() for _, q in depth["b"] + depth["a"])
    closed = [d["k"] for d in by_key["kline_1m"] if d["k"]["x"]]
    assert closed, "no closed candle in 61 s"
    k = closed[0]
    trades = [d for d in by_key["aggTrade"] if k["t"] <= d["T"] <= k["T"]]
    base = sum(Decimal(d["q"]) * 100 / Decimal(d["p"]) for d in trades)
    assert k["v"] == str(sum(int(d["q"]) for d in trades))
    assert abs(Decimal(k["q"]) - base) <= Decimal("0.00000001") and len(k["q"].split(".")[1]) == 8


def test_a_kline_stream_without_listeners_forgets_its_open_candle():
    m = SymbolMarket("spot", "BTCUSDT", 1, 500, T0)
    m.advance(T0 + 1_500_000, {"kline_1s"})                    # a listener sees the candle of second 1 open
    m.advance(T0 + 5_500_000, set())                           # nobody listens for four seconds
    out = [orjson.loads(p) for k, p in m.advance(T0 + 6_200_000, {"kline_1s"}) if k == "kline_1s"]
    # a new listener gets the current candle, not the close of the one open when the last listener left
    assert out and all(d["k"]["t"] >= (T0 // 1000 // 1000 + 5) * 1000 for d in out), [d["k"]["t"] for d in out]


def test_rest_klines_answer_as_of_the_request_time_when_the_market_lags():
    # a busy machine: the market's loop is 1.5 s behind the clock when a candle is asked for over REST;
    # an answer from the lagging market holds candles that look closed but miss trades
    import asyncio
    import time
    import types
    from binance_streamer.simulator.rest import Rest
    now_us = int(time.time() * 1e6)
    m = SymbolMarket("spot", "BTCUSDT", 1, 500, now_us - 3_000_000)
    m.advance(now_us - 1_500_000, set())
    rest = Rest(types.SimpleNamespace(cfg=types.SimpleNamespace(market="spot"), source=lambda s: m))

    async def ask():
        asyncio.get_running_loop().call_soon(lambda: m.advance(int(time.time() * 1e6) + 100_000, set()))
        return await rest.klines({"symbol": "BTCUSDT", "interval": "1s", "limit": "10"})
    rows = asyncio.run(ask())
    assert len(rows) >= 3 and rows == [m.kline_row("1s", r[0]) for r in rows]
