"""Where the day files of a stream are, and what a data directory holds.

Three layouts are looked at, in this order: ``data_dir/<market>/<SYMBOL>/``
(the recorder's), ``data_dir/<SYMBOL>/`` and ``data_dir`` itself
(downloaded archives). A lookup that finds no file of the stream at all is
a mistake in the lookup (a forgotten ``market="usdm"``, a misspelled symbol
or stream, the wrong directory), never an empty result: :class:`NotRecorded`
says what the directory does hold.
"""

import difflib
import os
import re

import pandas as pd

from ..settings import MARKETS
from ..streams import file_stream

# data.binance.vision file names -> our stream names (klines are named by interval)
VISION_STREAMS = {"aggTrades": "aggTrade", "trades": "trade", "bookTicker": "bookTicker"}
_INTERVAL = re.compile(r"^\d+[smhdwM]$")
_SUFFIX = re.compile(r"\.(csv\.gz|csv\.zst|csv|zip)$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SYMBOL = re.compile(r"^[A-Z0-9]+(_[A-Z0-9]+)?$")      # BTCUSDT; COIN-M BTCUSD_PERP
# Files written only when there is something to say: a clean recording has no gap ledger.
ONLY_WHEN_NEEDED = {"gaps"}
_LISTED = 12                  # names shown in a message before "... (N in all)"
_SYMBOL_CUTOFF = 0.8          # symbols share their quote asset: ETHUSDT is not a typo of BTCUSDT


class NotRecorded(LookupError):
    """Nothing in the data directory matches a lookup: no such directory,
    market, symbol or stream (for ``book_at`` and ``--plot``: day). The
    one-line message names what was looked for and what the directory holds,
    with the closest name for a misspelled symbol or stream."""


def our_stream(name):
    """``aggTrades`` -> ``aggTrade``, ``1m`` -> ``kline_1m``, ``depth@100ms`` -> ``depth``; ours pass through."""
    if name in VISION_STREAMS:
        return VISION_STREAMS[name]
    if _INTERVAL.match(name):
        return f"kline_{name}"
    return file_stream(name)


def file_stem(name):
    """``X-aggTrade-2026-11-25.csv.gz`` -> ``X-aggTrade-2026-11-25``; None for other files."""
    stem = _SUFFIX.sub("", name)
    return None if stem == name else stem


def day_name(name):
    """``BTCUSDT-1m-2021-11-27.zip`` -> ``("BTCUSDT", "kline_1m", "2021-11-27")``; None for other files."""
    stem = file_stem(name)
    if stem is None or len(stem) < 14 or stem[-11] != "-" or not _DAY.match(stem[-10:]):
        return None
    symbol, sep, stream = stem[:-11].partition("-")
    return (symbol, our_stream(stream), stem[-10:]) if sep and stream else None


def folders(data_dir, market, symbol):
    """Where a symbol's files may be, in the order they are looked at."""
    if market not in MARKETS:
        raise ValueError(f"market must be one of {', '.join(MARKETS)}, not {market!r}")
    return os.path.join(data_dir, market, symbol), os.path.join(data_dir, symbol), data_dir


def scan(folder, symbol):
    """``{stream: {day: path}}`` of ``symbol``'s day files in ``folder``."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    found = {}
    for name in names:
        parsed = day_name(name)
        if parsed is not None and parsed[0] == symbol:
            days = found.setdefault(parsed[1], {})
            # one entry per day: a compressed day file over its plain name (compression.open_day
            # reads late rows in a plain file beside it too)
            if parsed[2] not in days or name.endswith((".csv.gz", ".csv.zst")):
                days[parsed[2]] = os.path.join(folder, name)
    return found


def symbol_streams(data_dir, symbol, market="spot"):
    """``(folder, {stream: {day: path}})`` from the first layout holding any
    of ``symbol``'s files; :class:`NotRecorded` when none does."""
    symbol = symbol.upper()
    for folder in folders(data_dir, market, symbol):
        found = scan(folder, symbol)
        if found:
            return folder, found
    raise NotRecorded(explain(data_dir, symbol, "", market))


def day_files(data_dir, symbol, stream, start=None, end=None, market="spot"):
    """``[(day, path)]`` of the day files of one stream from ``start`` to
    ``end`` (``end`` excluded), oldest first; ``[]`` when none is in that
    range. :class:`NotRecorded` when the stream has no file at all (the
    gap ledger excepted: no ledger file means no hole).

    ``.csv``, ``.csv.gz``, ``.csv.zst`` and data.binance.vision's ``.zip`` are
    read; a day compressed with late rows beside it is one entry."""
    symbol, stream = symbol.upper(), our_stream(stream)
    for folder in folders(data_dir, market, symbol):
        days = scan(folder, symbol).get(stream)
        if days:
            break
    else:
        if stream in ONLY_WHEN_NEEDED and _holds(data_dir, symbol, market):
            return []
        raise NotRecorded(explain(data_dir, symbol, stream, market))
    first = _day(start) if start is not None else None
    last = _day(end, inclusive_end=True) if end is not None else None
    return sorted((day, path) for day, path in days.items()
                  if not (first and day < first) and not (last and day > last))


def timestamp(value):
    """Anything ``pandas.Timestamp`` takes, as a UTC time; naive values are UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _day(value, inclusive_end=False):
    ts = timestamp(value)
    if inclusive_end and ts == ts.normalize():
        ts -= pd.Timedelta(microseconds=1)     # end is excluded: midnight belongs to the day before
    return ts.strftime("%Y-%m-%d")


def _holds(data_dir, symbol, market):
    return any(scan(folder, symbol) for folder in folders(data_dir, market, symbol))


def explain(data_dir, symbol, stream, market):
    """Why nothing of ``symbol``'s ``stream`` (any stream when empty) is in
    ``data_dir``, and what is there instead, in one line."""
    want = f"no {market} {symbol}{' ' + stream if stream else ''} files in '{data_dir}'"
    if not os.path.isdir(data_dir):
        return f"{want}: no such directory"
    for folder in folders(data_dir, market, symbol):
        streams = scan(folder, symbol)
        if streams:
            return f"{want}: {symbol} has {listing(streams)}{did_you_mean(stream, streams)}"
    markets = {m: _symbols(os.path.join(data_dir, m)) for m in MARKETS if os.path.isdir(os.path.join(data_dir, m))}
    if market in markets:
        where = markets.pop(market)
        other = next((m for m, symbols in markets.items() if symbol in symbols), None)
        guess = did_you_mean(symbol, where, _SYMBOL_CUTOFF)
        hint = f"; {other} has {symbol}: pass market={other!r}" if other else ""
        return f"{want}: {market} has {listing(where) or 'no symbols'}{guess}{hint}"
    if markets:
        has = "; ".join(f"{m} ({listing(symbols) or 'no symbols'})" for m, symbols in markets.items())
        return f"{want}: it has no {market} recordings, only {has}; pass market={next(iter(markets))!r}"
    here = _symbols(data_dir) | {p[0] for p in map(day_name, os.listdir(data_dir)) if p is not None}
    if here:
        return f"{want}: it has {listing(here)}{did_you_mean(symbol, here, _SYMBOL_CUTOFF)}"
    names = ", ".join(m + "/" for m in MARKETS[:-1]) + f" or {MARKETS[-1]}/"
    return f"{want}: no recordings there (no {names} folder, no day files)"


def _symbols(folder):
    """The symbol folders in ``folder``."""
    try:
        return {n for n in os.listdir(folder) if _SYMBOL.match(n) and os.path.isdir(os.path.join(folder, n))}
    except OSError:
        return set()


def listing(names, limit=_LISTED):
    """``a, b, c`` sorted; ``a, b, ... (40 in all)`` beyond ``limit``."""
    names = sorted(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, ... ({len(names)} in all)"


def days_text(days):
    """Days as a reader takes them in: a few listed, many as a range."""
    days = sorted(days)
    if len(days) <= 3:
        return ", ".join(days)
    return f"{len(days)} days from {days[0]} to {days[-1]}"


def did_you_mean(name, candidates, cutoff=0.6):
    """`` (did you mean 'aggTrade'?)`` for the closest candidate, or ``""``."""
    if not name:
        return ""
    same = [c for c in candidates if c.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
