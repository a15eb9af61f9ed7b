"""What differs between Binance's markets, in one place. Pure; imports nothing.

``spot``
    Binance spot.
``usdm``
    USD-M futures (``fapi`` / ``fstream``): linear contracts, quantities in
    the base asset.
``coinm``
    COIN-M futures (``dapi`` / ``dstream``): inverse contracts, quantities in
    contracts (``contractSize`` USD each), perpetual (``BTCUSD_PERP``) and
    dated (``BTCUSD_261225``) contracts.

Both futures markets keep their books by the same documented rules
(PROTOCOL.md 4.2: ``pu`` chains the diffs, the first event has
``U <= L <= u``, snapshots of at most 1000 levels), so the rest of the code
asks :func:`futures`, never a market's name, for those rules. Endpoints,
URLs and REST weights are in ``binance/endpoints.py``.
"""

SPOT, USDM, COINM = "spot", "usdm", "coinm"
MARKETS = (SPOT, USDM, COINM)

TITLE = {SPOT: "spot", USDM: "USD-M futures", COINM: "COIN-M futures"}

# Booleans as Binance's own CSV archives write them (data.binance.vision).
BOOLEANS = {SPOT: ("False", "True"), USDM: ("false", "true"), COINM: ("false", "true")}

# Diff-depth subscriptions each market offers.
_FUTURES_DEPTH = ("depth", "depth@100ms", "depth@250ms", "depth@500ms")
DEPTH_SPEEDS = {SPOT: ("depth", "depth@100ms"), USDM: _FUTURES_DEPTH, COINM: _FUTURES_DEPTH}

# Futures have no ``trade`` stream (their trade flow is ``aggTrade``).
DEFAULT_STREAMS = {SPOT: ["aggTrade", "trade", "depth@100ms", "kline_1m", "bookTicker"],
                   USDM: ["aggTrade", "depth@100ms", "kline_1m", "bookTicker"],
                   COINM: ["aggTrade", "depth@100ms", "kline_1m", "bookTicker"]}

# REST depth snapshots: the default size, and the sizes Binance accepts
# (None: any size up to SNAPSHOT_MAX).
SNAPSHOT_DEPTH = {SPOT: 5000, USDM: 1000, COINM: 1000}
SNAPSHOT_MAX = {SPOT: 5000, USDM: 1000, COINM: 1000}
_FUTURES_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
SNAPSHOT_LIMITS = {SPOT: None, USDM: _FUTURES_LIMITS, COINM: _FUTURES_LIMITS}

# exchangeInfo: the key holding a symbol's trading status, and the contract
# types --list-symbols lists (None: every TRADING symbol). COIN-M lists its
# perpetuals and its dated quarterlies, both recordable the same way.
STATUS_KEY = {SPOT: "status", USDM: "status", COINM: "contractStatus"}
LISTED_CONTRACTS = {SPOT: None, USDM: ("PERPETUAL",),
                    COINM: ("PERPETUAL", "CURRENT_QUARTER", "NEXT_QUARTER")}

# data.binance.vision's folder of each market's archives.
VISION_FOLDER = {SPOT: "spot", USDM: "futures/um", COINM: "futures/cm"}

# A symbol name each market accepts, for messages; the symbols recorded when
# none are configured.
EXAMPLE_SYMBOL = {SPOT: "BTCUSDT", USDM: "BTCUSDT", COINM: "BTCUSD_PERP"}
DEFAULT_SYMBOLS = {SPOT: ("BTCUSDT", "ETHUSDT"), USDM: ("BTCUSDT", "ETHUSDT"), COINM: ("BTCUSD_PERP", "ETHUSD_PERP")}


def futures(market):
    """Does ``market`` follow the futures rules (``pu`` chain, ``U <= L <= u``,
    no trade stream, no 1 s klines)?"""
    return market != SPOT


def title(market):
    return TITLE.get(market, market)
