"""Static facts about simulated symbols: precision, start price, activity."""

from dataclasses import dataclass
import zlib

QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    base: str
    quote: str
    price_decimals: int      # tick = 10 ** -price_decimals
    qty_decimals: int        # lot = 10 ** -qty_decimals
    start_ticks: int
    mean_lots: int
    trade_share: float = 0.15

    @property
    def tick_size(self):
        return _step(self.price_decimals)

    @property
    def step_size(self):
        return _step(self.qty_decimals)


def _step(decimals):
    return "1" if decimals == 0 else "0." + "0" * (decimals - 1) + "1"


_KNOWN = {
    "BTCUSDT": (2, 5, 3_000_000, 20_000),
    "ETHUSDT": (2, 4, 200_000, 5_000),
    "BNBUSDT": (2, 3, 30_000, 500),
    "SOLUSDT": (2, 3, 15_000, 2_000),
    "XRPUSDT": (4, 1, 5_000, 5_000),
    "ETHBTC": (5, 4, 5_000, 2_000),
    "BNBBTC": (6, 3, 8_000, 1_000),
}


def split_symbol(symbol):
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


def symbol_spec(symbol):
    """The spec of a known symbol, or a stable made-up one for any other name."""
    base, quote = split_symbol(symbol)
    if symbol in _KNOWN:
        pd, qd, start, lots = _KNOWN[symbol]
    else:
        h = zlib.crc32(symbol.encode())
        pd, qd = 4, 2
        start, lots = 10_000 + h % 90_000, 500 + h % 5_000
    return SymbolSpec(symbol, base, quote, pd, qd, start, lots)
