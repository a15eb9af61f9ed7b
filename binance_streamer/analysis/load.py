"""Read recorded CSV files, and data.binance.vision's, into pandas.

One loader serves both: a file whose first line is a header is read by its
header; a file without one (Binance's public archives) gets the leading
columns of our schema, which follows data.binance.vision's column order.
"""

import datetime as dt
import os
import re
import zipfile
from decimal import Decimal

import pandas as pd

from .. import compression, csvfiles
from ..streams import KINDS, lookup
from .catalog import day_files, file_stem, our_stream
from .catalog import timestamp as _timestamp

# The exchange time a stream is indexed by, in order of preference; spot
# bookTickers and spot snapshots carry no exchange time, so they fall back
# to the local receive (or response) time.
INDEX_COLUMNS = {
    **{name: k.time_columns for name, k in KINDS.items()},
    "depthSnapshot": ("event_time", "response_time_us"),
    "orderbook": ("local_time_us",),
    "gaps": ("local_time_us",),
    **{name: (cols[0],) for name, cols in csvfiles.SERIES_SCHEMAS.items()},     # REST series: the exchange's time
}
_TRUE, _FALSE = ["True", "true"], ["False", "false"]
_US_FROM = 10 ** 14          # an epoch value above this is in microseconds, not milliseconds


class LoadError(RuntimeError):
    """A file that cannot be read as the stream it claims to be."""


def load(data_dir, symbol, stream, start=None, end=None, market="spot", exact=False, columns=None):
    """One stream of one symbol over a time range, as a DataFrame.

    ``start`` and ``end`` (``end`` excluded) are anything ``pandas.Timestamp``
    takes; naive values are UTC. The index is ``time``: a UTC DatetimeIndex
    on the exchange time (see :data:`INDEX_COLUMNS`); ``local_time`` beside
    it is the receive time. Prices and quantities are float64, or with
    ``exact=True`` the strings Binance sent (pandas ``string``), or with
    ``exact="decimal"`` ``decimal.Decimal`` objects. Rows are in time order
    (backfilled rows written after later ones are put back in place).
    ``columns``: read only these (the time columns are always read), which
    saves memory on big depth files.

    A lookup that finds no file of the stream at all (no such directory,
    market, symbol or stream) raises :class:`~.catalog.NotRecorded`, whose
    message lists what the directory holds. A stream that is recorded but
    has no rows from ``start`` to ``end`` is an empty DataFrame with the
    right columns, as is a symbol without a gap ledger (no hole)."""
    stream = our_stream(stream)
    frames = [load_file(path, market, stream, exact, columns)
              for _, path in day_files(data_dir, symbol, stream, start, end, market)]
    if not frames:
        return _empty(market, stream, exact)
    df = frames[0] if len(frames) == 1 else pd.concat(frames)
    df = _in_order(df, stream)
    if start is not None:
        df = df[df.index >= _timestamp(start)]
    if end is not None:
        df = df[df.index < _timestamp(end)]
    return df


def load_file(path, market="spot", stream=None, exact=False, columns=None):
    """One CSV file (plain, gzip or a vision zip), as :func:`load` describes."""
    if stream is None:
        stream = _stream_of(path)
    kind = csvfiles.series_kind(stream) or csvfiles.stream_kind(stream)
    first = _first_line(path)
    has_header = bool(first) and not first[0].isdigit()
    if has_header:
        names = first.strip().split(",")
    else:
        width = first.count(",") + 1 if first else 0
        schema = _schema(market, stream)
        if width > len(schema):
            raise LoadError(f"{path}: {width} columns, more than a {market} {stream} file has ({len(schema)})")
        names = schema[:width]
    if columns is not None:
        wanted = set(columns) | set(INDEX_COLUMNS.get(kind, ())) | {"local_time_us"}
        unknown = set(columns) - set(names)
        if unknown:
            raise LoadError(f"{path}: no column {', '.join(sorted(unknown))} (it has {', '.join(names)})")
        usecols = [c for c in names if c in wanted]
    else:
        usecols = None
    dtypes = {c: csvfiles.pandas_dtype(c, exact=bool(exact)) for c in names}
    try:
        with open_source(path) as source:
            df = pd.read_csv(source, header=0 if has_header else None, names=names, dtype=dtypes,
                             usecols=usecols, true_values=_TRUE, false_values=_FALSE, keep_default_na=False,
                             na_values=[""])
    except (ValueError, pd.errors.ParserError) as exc:
        raise LoadError(f"{path}: not a valid {stream} file: {exc}") from None
    if exact == "decimal":
        for c in df.columns:
            if dtypes[c] == "string" and c not in csvfiles.TEXT_COLUMNS:
                df[c] = df[c].map(lambda v: None if v is pd.NA else Decimal(v), na_action="ignore")
    return _indexed(df, kind)


def _indexed(df, kind):
    index = None
    for column in INDEX_COLUMNS.get(kind, ("local_time_us",)):
        if column not in df.columns:
            continue
        times = _to_time(df[column], column)
        index = times if index is None else index.fillna(times)
        if not index.isna().any():
            break
    if "local_time_us" in df.columns:
        df["local_time"] = pd.to_datetime(df["local_time_us"], unit="us", utc=True)
    if index is not None:
        df.index = pd.DatetimeIndex(index, name="time")
    return df


def _to_time(values, column):
    if column.endswith("_us"):
        unit = "us"
    else:
        top = values.max()
        unit = "us" if pd.notna(top) and top > _US_FROM else "ms"
    return pd.Series(pd.to_datetime(values, unit=unit, utc=True), index=values.index)


def _in_order(df, stream):
    if df.index.is_monotonic_increasing:
        return df
    kind = lookup(stream)
    keys = ["_time"]
    if kind is not None and kind.id_column in df.columns:
        keys.append(kind.id_column)
    df = df.assign(_time=df.index)
    return df.sort_values(keys, kind="stable").drop(columns="_time")


def _empty(market, stream, exact):
    names = _schema(market, stream)
    df = pd.DataFrame({c: pd.Series(dtype=csvfiles.pandas_dtype(c, bool(exact))) for c in names})
    if "local_time_us" in names:
        df["local_time"] = pd.Series(dtype="datetime64[us, UTC]")
    df.index = pd.DatetimeIndex([], tz="UTC", name="time")
    return df


def _schema(market, stream):
    """Our columns of a stream; USD-M trades (Binance's archives have them,
    the recorder does not) take spot's, whose leading columns they share."""
    try:
        return csvfiles.columns(market, stream)
    except KeyError:
        return csvfiles.columns("spot", stream)


def _stream_of(path):
    m = re.match(r"^[A-Z0-9_]+-(.+?)-\d{4}-\d{2}(-\d{2})?", file_stem(os.path.basename(path)) or "")
    if not m:
        raise LoadError(f"{path}: cannot tell the stream from the file name; pass stream=")
    return our_stream(m.group(1))


def open_source(path):
    """A binary reader of a file's CSV bytes: a vision zip's one member, or a
    day file in whatever state it is (compression.open_day)."""
    if path.endswith(".zip"):
        z = zipfile.ZipFile(path)
        return z.open(z.namelist()[0])
    return compression.open_day(path)


def _first_line(path):
    with open_source(path) as f:
        return f.readline().decode()


def parse_date(text):
    """``YYYY-MM-DD`` -> the same string, or ValueError with a readable message."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(f"{text!r} is not a date like 2026-11-25") from None
