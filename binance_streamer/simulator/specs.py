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
    contract_size: str = None    # COIN-M: USD per contract (quantities are contracts)

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


# COIN-M pairs: (price decimals, start ticks, mean contracts per level, USD per contract).
_COINM = {
    "BTCUSD": (1, 900_000, 300, "100"),
    "ETHUSD": (2, 300_000, 2_000, "10"),
    "BNBUSD": (3, 600_000, 500, "10"),
}


def coinm_spec(symbol):
    """A COIN-M contract (``BTCUSD_PERP``, ``BTCUSD_261225``): integer
    contracts of ``contract_size`` USD on the pair's price."""
    pair = symbol.partition("_")[0]
    if pair in _COINM:
        pd, start, lots, size = _COINM[pair]
    else:
        h = zlib.crc32(pair.encode())
        pd, start, lots, size = 3, 10_000 + h % 90_000, 200 + h % 2_000, "10"
    return SymbolSpec(symbol, pair[:-3], pair[-3:], pd, 0, start, lots, contract_size=size)


def split_symbol(symbol):
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


def symbol_spec(symbol):
    """The spec of a known symbol, or a stable made-up one for any other name."""
    if "_" in symbol:
        return coinm_spec(symbol)
    base, quote = split_symbol(symbol)
    if symbol in _KNOWN:
        pd, qd, start, lots = _KNOWN[symbol]
    else:
        h = zlib.crc32(symbol.encode())
        pd, qd = 4, 2
        start, lots = 10_000 + h % 90_000, 500 + h % 5_000
    return SymbolSpec(symbol, base, quote, pd, qd, start, lots)
