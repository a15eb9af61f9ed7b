"""Pure facts about the CSV files: where a file lives, its header, which
column holds its sequence id. The README's data-format section is checked
against :data:`SCHEMAS` by a test.

Layout: ``<data_dir>/<market>/<SYMBOL>/<SYMBOL>-<stream>-<YYYY-MM-DD>.csv``,
one file per stream per UTC day of the event time; once closed, the same
name with ``.gz`` or ``.zst`` (compression.py).
"""

import functools
import os
import re
import time

from .streams import KINDS, kind_of, lookup

# stream -> (columns, index of the id column or None, what the id is)
_AGG_SPOT = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
             "is_buyer_maker", "is_best_match", "event_time", "local_time_us", "backfilled"]
_AGG_USDM = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
             "is_buyer_maker", "event_time", "local_time_us", "backfilled"]
_KLINE = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
          "taker_buy_volume", "taker_buy_quote_volume", "ignore", "first_trade_id", "last_trade_id",
          "event_time", "local_time_us", "backfilled"]
# COIN-M klines: volume in contracts, column 8 the base asset volume (the
# kline's q), column 11 the taker buy base asset volume (Q); PROTOCOL.md 5.2.
_KLINE_COINM = [{"quote_volume": "base_volume", "taker_buy_quote_volume": "taker_buy_base_volume"}.get(c, c)
                for c in _KLINE]

SCHEMAS = {
    ("spot", "aggTrade"): _AGG_SPOT,
    ("usdm", "aggTrade"): _AGG_USDM,
    ("coinm", "aggTrade"): _AGG_USDM,
    ("coinm", "kline"): _KLINE_COINM,
    ("spot", "trade"): ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match",
                        "event_time", "local_time_us"],
    "kline": _KLINE,
    "bookTicker": ["update_id", "best_bid_price", "best_bid_qty", "best_ask_price", "best_ask_qty",
                   "transaction_time", "event_time", "local_time_us"],
    "depth": ["event_time", "transaction_time", "first_update_id", "final_update_id",
              "prev_final_update_id", "side", "price", "quantity", "local_time_us"],
    "markPrice": ["event_time", "mark_price", "index_price", "estimated_settle_price", "funding_rate",
                  "next_funding_time", "local_time_us"],
    "forceOrder": ["event_time", "side", "order_type", "time_in_force", "original_quantity", "price",
                   "average_price", "order_status", "last_fill_quantity", "accumulated_fill_quantity",
                   "trade_time", "local_time_us"],
    "depthSnapshot": ["last_update_id", "side", "price", "quantity", "request_time_us",
                      "response_time_us", "event_time", "transaction_time"],
    "gaps": ["local_time_us", "stream", "reason", "last_good_id", "first_id_after", "last_good_time",
             "first_time_after", "action", "rows", "detail"],
}

stream_kind = kind_of       # ``kline_1m`` -> ``kline``; other file streams are their own kind

# REST series (series.py): one row per exchange time, which leads the row and is its id
# (the writer writes each time once); values exactly as the exchange sent them.
_RATIO = ["timestamp", "long_short_ratio", "long_account", "short_account", "local_time_us"]
SERIES_SCHEMAS = {
    "openInterest": ["time", "open_interest", "request_time_us", "local_time_us"],
    "openInterestHist": ["timestamp", "sum_open_interest", "sum_open_interest_value", "cmc_circulating_supply",
                         "local_time_us"],
    "topLongShortAccountRatio": _RATIO,
    "topLongShortPositionRatio": _RATIO,
    "globalLongShortAccountRatio": _RATIO,
    "takerlongshortRatio": ["timestamp", "buy_sell_ratio", "buy_vol", "sell_vol", "local_time_us"],
    "fundingRate": ["funding_time", "funding_rate", "mark_price", "local_time_us"],
}
SCHEMAS.update(SERIES_SCHEMAS)
SERIES_ID_COLUMN = dict.fromkeys(SERIES_SCHEMAS, 0)


def series_kind(stream):
    """``openInterestHist_5m`` -> ``openInterestHist``: the series a file stream
    records, or None for a file that is not a REST series."""
    name = stream.partition("_")[0]
    return name if name in SERIES_SCHEMAS else None



def columns(market, stream):
    kind = stream_kind(stream)
    if kind == "orderbook":
        return orderbook_columns(20)
    return SCHEMAS.get((market, kind)) or SCHEMAS.get(kind) or SCHEMAS[series_kind(stream)]


# Index of the column holding the sequence id (streams.KINDS names it).
ID_COLUMN = {name: columns("spot", name).index(k.id_column) for name, k in KINDS.items()}

# Files the recorder derives itself, without exchange ids: each row's key is
# a time that only one process writes (the book manager's orderbook rows, a
# worker's snapshot levels, which share their snapshot's). The writer drops a
# row whose key it wrote recently: a batch sent again to a new writer.
KEY_COLUMN = {"orderbook": 0, "depthSnapshot": SCHEMAS["depthSnapshot"].index("response_time_us")}


@functools.lru_cache(maxsize=None)
def _time_cells(market, stream):
    k = lookup(stream)
    cols = columns(market, stream) if k is not None else ()
    return tuple((cols.index(c), c.endswith("_us")) for c in (k.time_columns if k else ()) if c in cols)


def row_time(market, stream, line):
    """The gap-ledger time (ms) of a CSV row: the first of the stream's
    ``time_columns`` with a value (the exchange's time; spot bookTicker's
    receive time), as ``streams.ledger_time`` gives it for the event; ""
    when there is no row or it has no time."""
    if not line:
        return ""
    cells = line.rstrip("\n").split(",")
    for index, micro in _time_cells(market, stream):
        value = cells[index] if index < len(cells) else ""
        if value.isdigit():
            return int(value) // 1000 if micro else int(value)
    return ""


def orderbook_columns(levels):
    cols = ["local_time_us", "update_id", "in_sync"]
    for side in ("bid", "ask"):
        for i in range(1, levels + 1):
            cols += [f"{side}_price_{i}", f"{side}_qty_{i}"]
    return cols


def header(market, stream, levels=None):
    cols = orderbook_columns(levels) if stream == "orderbook" and levels else columns(market, stream)
    return (",".join(cols) + "\n").encode()


def path(data_dir, market, symbol, stream, day):
    return os.path.join(data_dir, market, symbol, f"{symbol}-{stream}-{day}.csv")


# A closed day file compressed (compression.py): its name is the plain one plus the codec's suffix.
COMPRESSED = {"gzip": ".gz", "zstd": ".zst"}


def compressed_name(plain, codec):
    """``X.csv`` -> ``X.csv.gz`` (gzip) or ``X.csv.zst`` (zstd)."""
    return plain + COMPRESSED[codec]


def plain_name(name):
    """``X.csv.gz`` / ``X.csv.zst`` / ``X.csv`` -> ``X.csv``; None for other names."""
    for suffix in COMPRESSED.values():
        if name.endswith(".csv" + suffix):
            return name[:-len(suffix)]
    return name if name.endswith(".csv") else None


def codec_of(name):
    """The codec of a compressed day file's name; None for a plain one."""
    return next((codec for codec, suffix in COMPRESSED.items() if name.endswith(".csv" + suffix)), None)


def day_files(data_dir, market, symbols=None):
    """``(symbol, stream, day, path)`` of every day file, plain or
    compressed, in ``<data_dir>/<market>/<SYMBOL>/`` (``symbols``: only
    theirs; else every symbol folder), in name order; other files are left
    out."""
    root = os.path.join(data_dir, market)
    if symbols is None:
        symbols = sorted(os.listdir(root)) if os.path.isdir(root) else ()
    for symbol in symbols:
        folder = os.path.join(root, symbol)
        try:
            names = sorted(os.listdir(folder))
        except OSError:          # absent, or not a folder
            continue
        for name in names:
            parsed = parse_name(name)
            if parsed is not None and parsed[0] == symbol:
                yield (*parsed, os.path.join(folder, name))


def parse_name(filename):
    """``BTCUSDT-kline_1m-2026-11-25.csv`` (or ``.csv.gz``, ``.csv.zst``) -> (symbol, stream, day) or None."""
    plain = plain_name(filename)
    if plain is None:
        return None
    stem = plain[:-4]
    parts = stem.rsplit("-", 3)
    if len(parts) != 4:
        return None
    rest, y, m, d = parts
    symbol, sep, stream = rest.partition("-")
    if not sep or not (y.isdigit() and m.isdigit() and d.isdigit()):
        return None
    return symbol, stream, f"{y}-{m}-{d}"


class DayOf:
    """UTC day (``YYYY-MM-DD``) of a millisecond timestamp, cached per day."""

    __slots__ = ("start", "end", "key")

    def __init__(self):
        self.start = self.end = 0
        self.key = None

    def __call__(self, ms):
        if self.start <= ms < self.end:
            return self.key
        day = ms // 86_400_000
        self.start, self.end = day * 86_400_000, (day + 1) * 86_400_000
        self.key = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
        return self.key


_DECIMAL = {"price", "quantity", "qty", "quote_qty", "open", "high", "low", "close", "volume", "quote_volume",
            "taker_buy_volume", "taker_buy_quote_volume", "best_bid_price", "best_bid_qty", "best_ask_price",
            "best_ask_qty", "base_volume", "taker_buy_base_volume", "mark_price", "index_price",
            "estimated_settle_price", "original_quantity", "average_price", "last_fill_quantity",
            "accumulated_fill_quantity"}
# Decimal columns whose numbers may be negative: the funding rate ("" on
# delivery contracts, which have none)
SIGNED_DECIMAL = {"funding_rate"}
_BOOL = {"is_buyer_maker", "is_best_match", "in_sync"}
TEXT_COLUMNS = {"side", "stream", "reason", "action", "detail", "ignore", "order_type", "time_in_force",
                "order_status"}
# REST series values (exact strings as sent)
_DECIMAL |= {"open_interest", "sum_open_interest", "sum_open_interest_value", "cmc_circulating_supply",
             "long_short_ratio", "long_account", "short_account", "buy_sell_ratio", "buy_vol", "sell_vol",
             "funding_rate", "mark_price"}
_LEVEL = re.compile(r"^(bid|ask)_(price|qty)_\d+$")


def is_decimal_column(column):
    """A price or quantity column: the text must be a decimal number (in
    :data:`SIGNED_DECIMAL`, maybe with a minus sign)."""
    return column in _DECIMAL or column in SIGNED_DECIMAL or bool(_LEVEL.match(column))


def pandas_dtype(column, exact=True):
    """The documented pandas dtype of a column: prices and quantities are
    ``string`` (exact, as Binance sent them) or ``float64``; booleans
    ``boolean``; ids and times ``Int64`` (empty where a row has no value)."""
    if column in _DECIMAL or column in SIGNED_DECIMAL or _LEVEL.match(column):
        return "string" if exact else "float64"
    if column in _BOOL:
        return "boolean"
    if column in TEXT_COLUMNS:
        return "string"
    return "Int64"


def pandas_dtypes(market, stream, exact=True, levels=20):
    cols = orderbook_columns(levels) if stream == "orderbook" else columns(market, stream)
    return {c: pandas_dtype(c, exact) for c in cols}
