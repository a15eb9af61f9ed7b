"""``--export binance-vision``: recordings in data.binance.vision's own format.

Tools written for Binance's public archives read the result unchanged:
the archive's columns in its order, its file names and folder layout
(``spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2026-11-25.csv``).
Spot files have no header, ``True``/``False`` booleans and microsecond
timestamps (Binance's spot archives since 2025-01-01); USD-M files (under
``futures/um``) and COIN-M files (``futures/cm``, klines with COIN-M's
``base_volume`` and ``taker_buy_base_volume``) have Binance's header line,
``true``/``false`` and milliseconds.

With ``zipped``, the files are the archive's own form: under ``data/`` (where
Binance's download scripts put them), each CSV alone in a ``.zip`` of the
same stem, beside a ``.zip.CHECKSUM`` that ``sha256sum -c`` accepts.
"""

import hashlib
import os
import re
import shutil
import zipfile

import pandas as pd

from .. import csvfiles
from ..markets import BOOLEANS, VISION_FOLDER
from .catalog import VISION_STREAMS
from .load import load_file
from .seriesexport import export_funding

VISION_COLUMNS = {
    ("spot", "aggTrade"): ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                           "transact_time", "is_buyer_maker", "is_best_match"],
    ("usdm", "aggTrade"): ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                           "transact_time", "is_buyer_maker"],
    ("spot", "trade"): ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"],
    ("coinm", "aggTrade"): ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                            "transact_time", "is_buyer_maker"],
    ("coinm", "kline"): ["open_time", "open", "high", "low", "close", "volume", "close_time", "base_volume",
                         "count", "taker_buy_volume", "taker_buy_base_volume", "ignore"],
    "kline": ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
              "taker_buy_volume", "taker_buy_quote_volume", "ignore"],
}
_TIMES = {"transact_time", "time", "open_time", "close_time"}


def vision_name(stream):
    """Our stream -> the archive's data type: aggTrades, trades or the kline interval."""
    if csvfiles.stream_kind(stream) == "kline":
        return stream[len("kline_"):]
    return next(name for name, ours in VISION_STREAMS.items() if ours == stream)


def vision_path(out_dir, market, symbol, stream, day):
    kind = csvfiles.stream_kind(stream)
    folder = "klines" if kind == "kline" else vision_name(stream)
    parts = [out_dir, *VISION_FOLDER[market].split("/"), "daily", folder, symbol]
    if kind == "kline":
        parts.append(vision_name(stream))
    return os.path.join(*parts, f"{symbol}-{vision_name(stream)}-{day}.csv")


def exportable(stream):
    return csvfiles.stream_kind(stream) in ("aggTrade", "trade", "kline")


def export_file(path, market, stream, out_path):
    """One recorded day file -> one archive-format file; returns the row count."""
    kind = csvfiles.stream_kind(stream)
    columns = VISION_COLUMNS.get((market, kind)) or VISION_COLUMNS[kind]
    df = load_file(path, market, stream, exact=True)
    ident = csvfiles.columns(market, stream)[csvfiles.ID_COLUMN[kind]]
    df = df.sort_values(ident, kind="stable").drop_duplicates(ident)
    out = pd.DataFrame(index=df.index)
    false, true = BOOLEANS[market]
    for c in columns:
        values = df[c]
        if c in _TIMES and market == "spot":
            values = values * 1000 + (999 if c == "close_time" else 0)   # ms -> the archive's microseconds
        if str(values.dtype) == "boolean":
            values = values.map({True: true, False: false})
        out[c] = values.astype("string")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = out_path + ".part"
    out.to_csv(tmp, header=market != "spot", index=False, lineterminator="\n")
    os.replace(tmp, out_path)
    return len(out)


def zip_day_file(csv_path):
    """``X.csv`` -> ``X.zip`` (the CSV alone in it, dated its day at 00:00,
    so the same rows always make the same bytes) and ``X.zip.CHECKSUM``
    (``<sha256 hex>  X.zip``); the CSV is removed. Returns the zip's path."""
    stem = csv_path[:-len(".csv")]
    name, zip_path = os.path.basename(csv_path), stem + ".zip"
    stamp = re.search(r"(\d{4})-(\d{2})(?:-(\d{2}))?\.csv$", name)      # a day, or a month (fundingRate)
    year, month, mday = int(stamp[1]), int(stamp[2]), int(stamp[3] or 1)
    member = zipfile.ZipInfo(name, date_time=(year, month, mday, 0, 0, 0))
    member.compress_type = zipfile.ZIP_DEFLATED
    member.external_attr = 0o644 << 16
    with open(csv_path, "rb") as src, zipfile.ZipFile(zip_path + ".part", "w") as z, \
            z.open(member, "w", force_zip64=os.path.getsize(csv_path) >= 2**31) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)       # a day of trades can be gigabytes: never whole in memory
    digest = hashlib.sha256()
    with open(zip_path + ".part", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    digest = digest.hexdigest()
    os.replace(zip_path + ".part", zip_path)
    with open(zip_path + ".CHECKSUM.part", "w") as f:
        f.write(f"{digest}  {os.path.basename(zip_path)}\n")
    os.replace(zip_path + ".CHECKSUM.part", zip_path + ".CHECKSUM")
    os.unlink(csv_path)
    return zip_path


def export(data_dir, market, day, out_dir, symbols=None, zipped=False):
    """Every aggTrade, trade and kline file of ``day`` -> ``[(path, rows)]``;
    ``zipped``: Binance's zip files under ``out_dir/data/``."""
    if zipped:
        out_dir = os.path.join(out_dir, "data")
    written = []
    root = os.path.join(data_dir, market)
    if not symbols:
        symbols = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for symbol in symbols:
        folder = os.path.join(root, symbol)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            parsed = csvfiles.parse_name(name)
            if not parsed or parsed[2] != day or not exportable(parsed[1]):
                continue
            target = vision_path(out_dir, market, symbol, parsed[1], day)
            rows = export_file(os.path.join(folder, name), market, parsed[1], target)
            written.append((zip_day_file(target) if zipped else target, rows))
        funding = export_funding(folder, symbol, day, out_dir) if market == "usdm" else None
        if funding is not None:       # the REST series: fundingRate (seriesexport.py says why not metrics)
            written.append((zip_day_file(funding[0]) if zipped else funding[0], funding[1]))
    return written
