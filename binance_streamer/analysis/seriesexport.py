"""``--export binance-vision`` of the REST series: ``fundingRate`` as
data.binance.vision's monthly USD-M file
(``futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2026-12.csv``,
header ``calc_time,funding_interval_hours,last_funding_rate``): ``calc_time``
is the funding time (ms), ``last_funding_rate`` the rate exactly as the
exchange sent it, ``funding_interval_hours`` the hours since the funding
before it in the recording (8, USD-M's usual interval, for a first row with
none before it). The month is the one of ``--date``; a month recorded in
part gives a file of the fundings recorded.

The archive's daily ``metrics`` file is not exported: Binance documents
neither which REST series each of its columns comes from
(``count_toptrader_long_short_ratio``, ``sum_toptrader_long_short_ratio``,
``count_long_short_ratio``, ``sum_taker_long_short_vol_ratio``) nor how its
``create_time`` lines up with the REST ``timestamp``, so a file written from
a guess could put a value in the wrong column or the wrong 5 minutes of a
file its readers trust. The series stay in our own files.
"""

import os

import pandas as pd

from .. import csvfiles
from ..binance.endpoints import FUNDING_INTERVAL_MS
from .load import load_file

FUNDING_COLUMNS = ["calc_time", "funding_interval_hours", "last_funding_rate"]


def funding_path(out_dir, symbol, month):
    return os.path.join(out_dir, "futures", "um", "monthly", "fundingRate", symbol,
                        f"{symbol}-fundingRate-{month}.csv")


def export_funding(folder, symbol, day, out_dir):
    """The monthly fundingRate file of ``day``'s month from the symbol's
    recorded days (``folder``); ``(path, rows)`` or None when none was recorded."""
    month = day[:7]
    paths = {}
    for name in sorted(os.listdir(folder)):
        parsed = csvfiles.parse_name(name)
        if parsed and parsed[0] == symbol and parsed[1] == "fundingRate" and parsed[2] < f"{month}-32":
            if parsed[2] not in paths or csvfiles.codec_of(name):       # a compressed day over its plain name
                paths[parsed[2]] = os.path.join(folder, name)
    if not any(d.startswith(month) for d in paths):
        return None
    earlier = [d for d in paths if d < f"{month}-01"]
    days = ([max(earlier)] if earlier else []) + sorted(d for d in paths if d.startswith(month))
    df = pd.concat([load_file(paths[d], "usdm", "fundingRate", exact=True) for d in days])
    df = df.sort_values("funding_time", kind="stable").drop_duplicates("funding_time")
    times = df["funding_time"].astype("int64")
    hours = (times.diff() / 3_600_000).round().fillna(FUNDING_INTERVAL_MS // 3_600_000).astype("int64")
    out = pd.DataFrame({"calc_time": times.astype("string"), "funding_interval_hours": hours.astype("string"),
                        "last_funding_rate": df["funding_rate"]})
    out = out[pd.to_datetime(times, unit="ms", utc=True).dt.strftime("%Y-%m") == month]
    target = funding_path(out_dir, symbol, month)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    out.to_csv(target + ".part", index=False, lineterminator="\n")
    os.replace(target + ".part", target)
    return target, len(out)
