"""The simulator's per-symbol activity (--rates): a few busy symbols, most quiet."""

import pytest

from binance_streamer.simulator.__main__ import parse_rates
from binance_streamer.simulator.config import SimConfig
from binance_streamer.simulator.exchange import Exchange


def test_rates_parse_and_each_symbol_gets_its_own_pace():
    rates = parse_rates("btcusdt=40,S001USDT=0.2")
    assert rates == {"BTCUSDT": 40.0, "S001USDT": 0.2}
    cfg = SimConfig(symbols=("BTCUSDT", "S001USDT", "S002USDT"), rate=5, rates=rates, journal="off",
                    book_levels=50).resolved()
    markets = Exchange(cfg).markets
    assert {s: m.step_us for s, m in markets.items()} == {"BTCUSDT": 25_000, "S001USDT": 5_000_000,
                                                          "S002USDT": 200_000}


@pytest.mark.parametrize("text", ["BTCUSDT", "BTCUSDT=fast", "BTCUSDT=0"])
def test_a_bad_rate_is_refused_with_what_to_write(text):
    with pytest.raises(ValueError, match="SYMBOL=RATE|positive"):
        SimConfig(rates=parse_rates(text)).resolved()
