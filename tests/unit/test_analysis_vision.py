"""Binance's own data.binance.vision files (../shared/realdata) through our
loaders, and our export in their format. Skips when the folder is absent."""

import csv
import os
import re

import pandas as pd
import pytest

from binance_streamer import analysis
from binance_streamer.analysis import export
from tests.support import REALDATA, need

AGG = os.path.join(REALDATA, "HJB-PDE-TEAM-PROJECT")
KLINES = os.path.join(REALDATA, "nautilus_trader")
TICKER = os.path.join(REALDATA, "cross-market-analysis", "BTCUSDT-bookTicker-2023-10-02-short.csv")


def _raw(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_spot_aggtrades_archive_loads_exactly():
    raw = _raw(need(os.path.join(AGG, "BTCUSDT-aggTrades-2026-01-01.csv")))
    df = analysis.load(AGG, "BTCUSDT", "aggTrades", exact=True)
    assert len(df) == len(raw) == 5000
    assert list(df.columns[:8]) == ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
                                    "transact_time", "is_buyer_maker", "is_best_match"]
    assert list(df["price"]) == [r[1] for r in raw] and list(df["quantity"]) == [r[2] for r in raw]
    assert [str(v) for v in df["is_buyer_maker"]] == [r[6] for r in raw]
    # the archive's microsecond times become the index, to the microsecond
    assert df.index[0] == pd.Timestamp(int(raw[0][5]), unit="us", tz="UTC")
    assert df.index[0] == pd.Timestamp("2026-01-01 00:00:00.039409", tz="UTC")
    floats = analysis.load(AGG, "BTCUSDT", "aggTrade", start="2026-01-01", end="2026-01-02")
    assert floats["price"].dtype == "float64" and len(floats) == 5000
    assert analysis.ohlcv(floats, "1min")["count"].sum() == sum(int(r[4]) - int(r[3]) + 1 for r in raw)
    # only some columns (the time column always comes along for the index)
    slim = analysis.load(AGG, "BTCUSDT", "aggTrades", columns=["price"])
    assert list(slim.columns) == ["price", "transact_time"] and (slim.index == df.index).all()
    with pytest.raises(analysis.LoadError, match="no column volume"):
        analysis.load(AGG, "BTCUSDT", "aggTrades", columns=["volume"])


def test_spot_klines_archive_loads_over_two_days():
    days = [_raw(need(os.path.join(KLINES, f"ADABTC-1m-2021-11-2{d}.csv"))) for d in (7, 8)]
    df = analysis.load(KLINES, "ADABTC", "kline_1m", exact=True)
    assert len(df) == sum(len(d) for d in days)
    assert list(df.columns[:12]) == ["open_time", "open", "high", "low", "close", "volume", "close_time",
                                     "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                                     "ignore"]
    rows = days[0] + days[1]
    assert list(df["close"]) == [r[4] for r in rows]
    assert df.index[0] == pd.Timestamp(int(rows[0][0]), unit="ms", tz="UTC") == pd.Timestamp("2021-11-27", tz="UTC")
    one = analysis.load(KLINES, "ADABTC", "1m", start="2021-11-28", end="2021-11-28 01:00")
    in_hour = [r for r in days[1] if int(r[0]) < 1638057600000 + 3_600_000]
    assert len(one) == len(in_hour) > 0 and one.index.min() == pd.Timestamp("2021-11-28", tz="UTC")


def test_usdm_bookticker_archive_loads_by_its_header():
    raw = _raw(need(TICKER))
    df = analysis.load_file(TICKER, "usdm", "bookTicker", exact=True)
    assert len(df) == len(raw) - 1
    assert list(df.columns[:7]) == raw[0]
    assert df.index[0] == pd.Timestamp(int(raw[1][6]), unit="ms", tz="UTC")
    s = analysis.spread(analysis.load_file(TICKER, "usdm", "bookTicker"))
    assert (s["spread"] >= 0).all()


def _shape(value):
    """What kind of value a CSV field is, as a format: digits are digits."""
    if value in ("True", "False", "true", "false"):
        return value.lower() + "-style" if value[0].islower() else "Capitalised bool"
    m = re.fullmatch(r"-?\d+\.(\d+)", value)
    if m:
        return f"decimal with {len(m.group(1))} places"
    if re.fullmatch(r"\d{16}", value):
        return "microseconds"
    if re.fullmatch(r"\d{13}", value):
        return "milliseconds"
    return "integer" if value.isdigit() else value


def test_our_aggtrade_export_has_the_archive_format(tmp_path):
    sample = _raw(need(os.path.join(AGG, "BTCUSDT-aggTrades-2026-01-01.csv")))
    # a recorded day file, written the way the recorder writes it (parse.agg_trade lines)
    from binance_streamer import csvfiles
    from binance_streamer.binance import parse
    folder = tmp_path / "spot" / "BTCUSDT"
    folder.mkdir(parents=True)
    lines = [csvfiles.header("spot", "aggTrade").decode()]
    for i in range(3):
        event = {"e": "aggTrade", "E": 1795636887402 + i, "s": "BTCUSDT", "a": 100 + i, "p": "87648.21000000",
                 "q": "0.08185000", "f": 200 + 2 * i, "l": 201 + 2 * i, "T": 1795636887401 + i, "m": i == 1,
                 "M": True}
        lines.append(parse.agg_trade("spot", event, 1795636887500000 + i)[1])
    (folder / "BTCUSDT-aggTrade-2026-11-25.csv").write_text("".join(lines))
    written = export.export(str(tmp_path), "spot", "2026-11-25", str(tmp_path / "out"))
    assert [os.path.basename(p) for p, _ in written] == ["BTCUSDT-aggTrades-2026-11-25.csv"]
    ours = _raw(written[0][0])
    assert len(ours) == 3                         # no header, like the archive
    for mine, theirs in zip(ours, sample[:3]):
        assert len(mine) == len(theirs) == 8
        assert [_shape(v) for v in mine] == [_shape(v) for v in theirs]
    assert ours[1][6] == "True" and ours[0][5] == "1795636887401000"


def _recorded_day(tmp_path):
    """A recorded aggTrade and kline_1m day, written as the recorder writes them."""
    from binance_streamer import csvfiles
    from binance_streamer.binance import parse
    folder = tmp_path / "data" / "spot" / "BTCUSDT"
    folder.mkdir(parents=True)
    lines = [csvfiles.header("spot", "aggTrade").decode()]
    for i in (2, 0, 1):                           # out of order: the export sorts by id
        event = {"e": "aggTrade", "E": 1795636887402 + i, "s": "BTCUSDT", "a": 100 + i, "p": "87648.21000000",
                 "q": "0.08185000", "f": 200 + 2 * i, "l": 201 + 2 * i, "T": 1795636887401 + i, "m": i == 1,
                 "M": True}
        lines.append(parse.agg_trade("spot", event, 1795636887500000 + i)[1])
    (folder / "BTCUSDT-aggTrade-2026-11-25.csv").write_text("".join(lines))
    kline = {"e": "kline", "E": 1795636860001, "s": "BTCUSDT",
             "k": {"t": 1795636800000, "T": 1795636859999, "s": "BTCUSDT", "i": "1m", "f": 200, "L": 205,
                   "o": "87648.21000000", "c": "87650.00000000", "h": "87651.00000000", "l": "87640.00000000",
                   "v": "1.50000000", "n": 6, "x": True, "q": "131472.31500000", "V": "0.50000000",
                   "Q": "43824.10500000", "B": "0"}}
    (folder / "BTCUSDT-kline_1m-2026-11-25.csv").write_text(
        csvfiles.header("spot", "kline_1m").decode() + parse.kline("spot", kline, 1795636860100000)[1])
    return str(tmp_path / "data")


def test_zip_export_is_the_archive_form_with_checksums(tmp_path, monkeypatch, capsys):
    """--zip: data/spot/daily/<type>/<SYMBOL>/[<interval>/]<name>.zip, one CSV
    inside named as Binance names it, equal to the plain export's CSV, and a
    .zip.CHECKSUM that sha256sum -c accepts."""
    import hashlib
    import zipfile
    data = _recorded_day(tmp_path)
    plain = dict(export.export(data, "spot", "2026-11-25", str(tmp_path / "plain")))
    from binance_streamer import cli
    monkeypatch.chdir(tmp_path)                   # no config.yaml
    out = str(tmp_path / "zip")
    assert cli.main(["--export", "binance-vision", "--zip", "--date", "2026-11-25", "--data-dir", data,
                     "--out", out]) == 0
    zipped = [(p, int(r.split()[0])) for p, r in (line.split("  ") for line in capsys.readouterr().out.splitlines())]
    assert sorted(os.path.relpath(p, out) for p, _ in zipped) == [
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2026-11-25.zip",
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2026-11-25.zip"]
    assert sorted(r for _, r in zipped) == [1, 3]
    for path, rows in zipped:
        folder, name = os.path.split(path)
        assert sorted(os.listdir(folder)) == [name, name + ".CHECKSUM"]      # no CSV or .part left
        with zipfile.ZipFile(path) as z:
            assert z.namelist() == [name[:-len(".zip")] + ".csv"]
            inside = z.read(z.namelist()[0])
        twin = next(p for p in plain if os.path.basename(p) == z.namelist()[0])
        with open(twin, "rb") as f:
            assert inside == f.read() and inside.count(b"\n") == rows
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with open(path + ".CHECKSUM") as f:
            assert f.read() == f"{digest}  {name}\n"          # what sha256sum -c reads (the integration test runs it)
    again = export.export(data, "spot", "2026-11-25", str(tmp_path / "zip2"), zipped=True)
    for (a, _), (b, _) in zip(zipped, again):      # the same rows make the same bytes
        with open(a + ".CHECKSUM") as f, open(b + ".CHECKSUM") as g:
            assert f.read() == g.read()


def test_coinm_kline_recorded_and_exported_with_coin_m_columns(tmp_path):
    """A COIN-M kline (the real capture's payload, closed): our file names its
    8th and 11th columns base_volume and taker_buy_base_volume, and the
    export is futures/cm with Binance's COIN-M header."""
    from binance_streamer import csvfiles
    from binance_streamer.binance import parse
    event = {"e": "kline", "E": 1626916440054, "s": "ETHUSD_210924", "k": {
        "t": 1626916380000, "T": 1626916439999, "s": "ETHUSD_210924", "i": "1m", "f": 11380855, "L": 11380895,
        "o": "1992.70", "c": "1992.17", "h": "1993.71", "l": "1992.17", "v": "1893", "n": 41, "x": True,
        "q": "9.49653573", "V": "1368", "Q": "6.86228695", "B": "0"}}
    _, line = parse.kline("coinm", event, 1626916440100000)
    day = "2021-07-22"
    path = csvfiles.path(str(tmp_path / "data"), "coinm", "ETHUSD_210924", "kline_1m", day)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(csvfiles.header("coinm", "kline_1m") + line.encode())
    df = analysis.load(str(tmp_path / "data"), "ETHUSD_210924", "kline_1m", market="coinm", exact=True)
    assert df["base_volume"].tolist() == ["9.49653573"] and df["taker_buy_base_volume"].tolist() == ["6.86228695"]
    assert df["volume"].tolist() == ["1893"] and "quote_volume" not in df.columns
    written = export.export(str(tmp_path / "data"), "coinm", day, str(tmp_path / "out"))
    out = tmp_path / "out" / "futures" / "cm" / "daily" / "klines" / "ETHUSD_210924" / "1m" / \
        f"ETHUSD_210924-1m-{day}.csv"
    assert [p for p, _ in written] == [str(out)]
    assert _raw(out) == [["open_time", "open", "high", "low", "close", "volume", "close_time", "base_volume",
                          "count", "taker_buy_volume", "taker_buy_base_volume", "ignore"],
                         ["1626916380000", "1992.70", "1993.71", "1992.17", "1992.17", "1893", "1626916439999",
                          "9.49653573", "41", "1368", "6.86228695", "0"]]
