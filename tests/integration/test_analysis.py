"""Offline analysis on recordings the recorder made from the simulator:
loaders, book replay, bars, --verify (clean and with injected faults),
--export binance-vision and --plot."""

import csv
import glob
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from binance_streamer import analysis
from binance_streamer.analysis import plot, verify
from binance_streamer.simulator import SimConfig, Simulator
from tests.support import Recorder, wait_for

pytestmark = pytest.mark.timeout(240)

STREAMS = ["aggTrade", "trade", "depth@100ms", "kline_1s", "bookTicker"]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A spot recording with reconnects (so the ledger has holes); the
    simulator stays up for true-book queries."""
    sim = Simulator(SimConfig(market="spot", symbols=tuple(SYMBOLS), seed=31, rate=200)).start()
    rec = Recorder(tmp_path_factory.mktemp("analysis"), sim, SYMBOLS, streams=STREAMS,
                   orderbook_interval=0.25)
    try:
        rec.start()
        candles = lambda: len(rec.rows("BTCUSDT", "kline_1s"))      # noqa: E731
        wait_for(lambda: candles() >= 10, 60, "10 one-second candles")
        sim.faults(drop_every=1.5)
        wait_for(lambda: sum(1 for c in sim.connections() if c["close_reason"] == "fault: drop") >= 4, 30,
                 "two rounds of drops")
        sim.faults(drop_every=0)
        more = candles() + 10
        wait_for(lambda: candles() >= more, 60, "10 more candles")
    finally:
        code = rec.stop()
    assert code == 0, rec.log_tail()
    yield rec, sim
    sim.stop()


def _data(rec):
    return os.path.join(rec.dir, "data")


def _raw(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _cli(rec, data_dir, *args):
    return subprocess.run([sys.executable, "-m", "binance_streamer", "--config", rec.config, "--data-dir", data_dir,
                           *args], capture_output=True, text=True, timeout=120, cwd=rec.dir)


def test_load_returns_exactly_the_rows_written(recording):
    rec, _ = recording
    folder = os.path.join(_data(rec), "spot", "BTCUSDT")
    for name in sorted(os.listdir(folder)):
        symbol, stream = name.split("-")[:2]
        header, rows = _raw(os.path.join(folder, name))
        exact = analysis.load(_data(rec), symbol, stream, market="spot", exact=True)
        assert len(exact) == len(rows), name
        # every value is the string written (sorted the same way: load puts rows in time order)
        got = sorted(tuple("" if v is pd.NA else str(v) for v in r) for r in exact[header].astype(object)
                     .itertuples(index=False))
        want = sorted(tuple(_canonical(c, v) for c, v in zip(header, r)) for r in rows)
        assert got == want, name
        assert str(exact.index.tz) == "UTC" and exact.index.is_monotonic_increasing, name
        if "local_time_us" in header:
            assert (exact["local_time"] == pd.to_datetime(exact["local_time_us"].astype("int64"), unit="us",
                                                          utc=True)).all()
    trades = analysis.load(_data(rec), "BTCUSDT", "aggTrade")
    assert trades["price"].dtype == "float64" and trades["agg_trade_id"].dtype == "Int64"
    assert (trades.index == pd.to_datetime(trades["transact_time"].astype("int64"), unit="ms", utc=True)).all()
    # a time range keeps exactly the rows inside it (end excluded)
    mid = trades.index[len(trades) // 2]
    later = analysis.load(_data(rec), "BTCUSDT", "aggTrade", start=mid)
    assert len(later) == int((trades.index >= mid).sum()) and later.index.min() == mid
    early = analysis.load(_data(rec), "BTCUSDT", "aggTrade", end=mid)
    assert len(early) + len(later) == len(trades)
    assert analysis.load(_data(rec), "BTCUSDT", "aggTrade", start="2001-01-01", end="2001-01-02").empty


def _canonical(column, value):
    """How pandas' boolean dtype reads the file's True/true back."""
    if value in ("True", "true"):
        return "True"
    if value in ("False", "false"):
        return "False"
    return value


def test_gzip_files_load_the_same(recording, tmp_path):
    rec, _ = recording
    src = os.path.join(_data(rec), "spot", "BTCUSDT")
    dst = tmp_path / "spot" / "BTCUSDT"
    dst.mkdir(parents=True)
    name = next(n for n in os.listdir(src) if "-aggTrade-" in n)
    import gzip
    with open(os.path.join(src, name), "rb") as f, gzip.open(dst / (name + ".gz"), "wb") as g:
        g.write(f.read())
    plain = analysis.load(_data(rec), "BTCUSDT", "aggTrade", exact=True)
    packed = analysis.load(str(tmp_path), "BTCUSDT", "aggTrade", exact=True)
    pd.testing.assert_frame_equal(plain, packed)


def test_book_at_equals_the_true_book(recording):
    rec, sim = recording
    for symbol in SYMBOLS:
        depth = analysis.load(_data(rec), symbol, "depth")
        events = depth.drop_duplicates(["first_update_id", "final_update_id"])
        for k in (len(events) // 3, len(events) - 1):
            u = int(events["final_update_id"].iloc[k])
            view = analysis.book_at(_data(rec), symbol, update_id=u, depth=1000)
            uid, bids, asks = sim.true_book(symbol, u)
            assert view.update_id == u == uid
            assert [list(level) for level in view.bids] == bids[:1000], (symbol, u)
            assert [list(level) for level in view.asks] == asks[:1000], (symbol, u)
            by_time = analysis.book_at(_data(rec), symbol, time=events.index[k], depth=20)
            assert by_time.update_id == u and by_time.bids == view.bids[:20]
    with pytest.raises(LookupError):
        analysis.book_at(_data(rec), "BTCUSDT", update_id=1)


def test_replay_yields_every_in_sync_book_matching_the_orderbook_rows(recording):
    rec, _ = recording
    rows = analysis.load(_data(rec), "ETHUSDT", "orderbook", exact=True)
    rows = rows[rows["in_sync"].astype(bool)]
    wanted = {int(r.update_id): r for r in rows.itertuples()}
    matched = 0
    previous = None
    for view in analysis.replay(_data(rec), "ETHUSDT", depth=20):
        assert previous is None or view.update_id > previous
        previous = view.update_id
        row = wanted.get(view.update_id)
        if row is not None:
            assert [p for p, _ in view.bids] == [getattr(row, f"bid_price_{i}") for i in range(1, 21)]
            assert [q for _, q in view.asks] == [getattr(row, f"ask_qty_{i}") for i in range(1, 21)]
            matched += 1
    assert matched >= len(wanted) - 2 and matched >= 10


def test_ohlcv_from_trades_equals_the_recorded_klines(recording):
    rec, _ = recording
    trades = analysis.load(_data(rec), "BTCUSDT", "trade")
    klines = analysis.load(_data(rec), "BTCUSDT", "kline_1s")
    bars = analysis.ohlcv(trades, "1s")
    # candles all of whose trades were recorded (not those cut by the start, the end or a reconnect; a candle
    # fetched over REST after a reconnect, whose close the stream no longer sent, has no trade ids)
    have = set(trades["id"].astype("int64"))
    whole = [not (pd.isna(f) or pd.isna(last)) and all(i in have for i in range(int(f), int(last) + 1))
             for f, last in zip(klines["first_trade_id"], klines["last_trade_id"])]
    inside = klines[whole]
    assert len(inside) >= 10 and len(inside) < len(klines)
    b = bars.loc[inside.index]
    for ours, theirs in (("open", "open"), ("high", "high"), ("low", "low"), ("close", "close"),
                         ("volume", "volume"), ("taker_buy_volume", "taker_buy_volume")):
        assert (b[ours] - inside[theirs]).abs().max() < 1e-6, ours
    assert (b["count"] == inside["count"].astype("int64")).all()
    s = analysis.spread(analysis.load(_data(rec), "BTCUSDT", "bookTicker"))
    assert (s["spread"] > 0).all() and ((s["mid"] > s["bid"]) & (s["mid"] < s["ask"])).all()


def test_verify_passes_on_the_clean_recording(recording):
    rec, _ = recording
    gaps = analysis.gaps(_data(rec), "BTCUSDT")
    assert (gaps["reason"] == "reconnect").any(), "the recording should have ledgered holes"
    out = _cli(rec, _data(rec), "--verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok:" in out.stdout and "in the ledger" in out.stdout
    report = verify.verify(_data(rec), "spot", expected=verify.expected_streams(STREAMS, True))
    assert report.ok and report.tickers_checked > 0
    assert any(f.breaks > 0 and f.explained == f.breaks for f in report.files)
    assert sum(f.checked for f in report.files if f.stream == "orderbook") >= 20


def _path(data_dir, symbol, stream):
    folder = os.path.join(data_dir, "spot", symbol)
    return os.path.join(folder, next(n for n in sorted(os.listdir(folder)) if f"-{stream}-" in n))


def _rewrite(path, keep):
    with open(path, newline="") as f:
        lines = f.readlines()
    with open(path, "w", newline="") as f:
        f.writelines([lines[0]] + [line for i, line in enumerate(lines[1:]) if keep(i, line)])


def _delete_an_aggtrade(data):
    _rewrite(_path(data, "BTCUSDT", "aggTrade"), lambda i, line: i != 100)


def _delete_a_file(data):
    os.remove(_path(data, "BTCUSDT", "bookTicker"))


def _forget_the_trade_holes(data):
    _rewrite(_path(data, "BTCUSDT", "gaps"), lambda i, line: ",trade,reconnect," not in line)


def _alter_an_orderbook_row(data):
    path = _path(data, "BTCUSDT", "orderbook")
    header, rows = _raw(path)
    target = next(i for i, r in enumerate(rows) if r[2] == "true" and i > 5)
    rows[target][4] = str(float(rows[target][4]) + 1.0)          # bid_qty_1
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header] + rows)


@pytest.mark.parametrize("fault, expected", [
    (_delete_an_aggtrade, ["BTCUSDT aggTrade", "not in the gap ledger"]),
    (_delete_a_file, ["BTCUSDT bookTicker", "file missing"]),
    (_forget_the_trade_holes, ["BTCUSDT trade", "not in the gap ledger"]),
    (_alter_an_orderbook_row, ["BTCUSDT orderbook", "differs from the recorded row"]),
])
def test_verify_reports_each_injected_fault(recording, tmp_path, fault, expected):
    rec, _ = recording
    data = str(tmp_path / "data")
    shutil.copytree(_data(rec), data)
    fault(data)
    out = _cli(rec, data, "--verify", "--symbol", "BTCUSDT")
    assert out.returncode == 1, out.stdout
    problems = out.stdout.split("unexplained problem(s):")[1]
    assert all(text in problems for text in expected), out.stdout


def test_export_binance_vision(recording, tmp_path):
    rec, _ = recording
    day = analysis.load(_data(rec), "BTCUSDT", "aggTrade").index[0].strftime("%Y-%m-%d")
    out = _cli(rec, _data(rec), "--export", "binance-vision", "--date", day, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    agg = tmp_path / "spot" / "daily" / "aggTrades" / "BTCUSDT" / f"BTCUSDT-aggTrades-{day}.csv"
    trades = tmp_path / "spot" / "daily" / "trades" / "BTCUSDT" / f"BTCUSDT-trades-{day}.csv"
    klines = tmp_path / "spot" / "daily" / "klines" / "BTCUSDT" / "1s" / f"BTCUSDT-1s-{day}.csv"
    ours = analysis.load(_data(rec), "BTCUSDT", "aggTrade", exact=True)
    with open(agg, newline="") as f:
        lines = list(csv.reader(f))
    assert len(lines) == len(ours)
    first = ours.sort_values("agg_trade_id").iloc[0]
    assert lines[0] == [str(first.agg_trade_id), first.price, first.quantity, str(first.first_trade_id),
                        str(first.last_trade_id), str(first.transact_time * 1000), str(first.is_buyer_maker),
                        str(first.is_best_match)]
    assert [int(r[0]) for r in lines] == sorted(int(r[0]) for r in lines)
    assert trades.exists() and klines.exists()
    with open(klines) as f:
        k = f.readline().split(",")
    assert len(k) == 12 and int(k[6]) - int(k[0]) == 999_999      # microseconds, like Binance's spot archive
    # Binance's own loader view of it: our loader reads the export back to the same rows
    back = analysis.load(str(tmp_path / "spot" / "daily" / "aggTrades" / "BTCUSDT"), "BTCUSDT", "aggTrades",
                         exact=True)
    assert len(back) == len(ours) and (back.index == ours.sort_values("agg_trade_id").index).all()


def test_export_binance_vision_zip_passes_sha256sum(recording, tmp_path):
    """--zip on a real recording: the archive's layout, one CSV per zip equal
    to the plain export's, and sha256sum -c accepts every CHECKSUM file."""
    import zipfile
    if not shutil.which("sha256sum"):
        pytest.skip("sha256sum (coreutils) is not installed")
    rec, _ = recording
    day = analysis.load(_data(rec), "BTCUSDT", "aggTrade").index[0].strftime("%Y-%m-%d")
    plain, zipped = tmp_path / "plain", tmp_path / "zipped"
    for out, extra in ((plain, ()), (zipped, ("--zip",))):
        done = _cli(rec, _data(rec), "--export", "binance-vision", "--date", day, "--symbol", "BTCUSDT",
                    "--out", str(out), *extra)
        assert done.returncode == 0, done.stderr
    zips = sorted(os.path.relpath(p, zipped) for p in glob.glob(str(zipped / "**" / "*.zip"), recursive=True))
    assert zips == [f"data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{day}.zip",
                    f"data/spot/daily/klines/BTCUSDT/1s/BTCUSDT-1s-{day}.zip",
                    f"data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-{day}.zip"]
    for rel in zips:
        folder, name = os.path.split(zipped / rel)
        check = subprocess.run(["sha256sum", "-c", name + ".CHECKSUM"], cwd=folder, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0 and check.stdout == f"{name}: OK\n", (check.stdout, check.stderr)
        with zipfile.ZipFile(zipped / rel) as z:
            (member,) = z.namelist()
            assert member == name[:-len(".zip")] + ".csv"
            with open(plain / os.path.dirname(rel)[len("data/"):] / member, "rb") as f:
                assert z.read(member) == f.read()


def test_plot_draws_price_rates_and_gaps(recording, tmp_path):
    rec, _ = recording
    day = analysis.load(_data(rec), "BTCUSDT", "aggTrade").index[0].strftime("%Y-%m-%d")
    png = tmp_path / "day.png"
    drawn = plot.plot_day(_data(rec), "BTCUSDT", day, str(png))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert drawn["price"] == ["trade price", "mid"] and set(drawn["rate"]) == {"aggTrade", "trade", "depth",
                                                                                 "bookTicker"}
    assert drawn["gaps"] == len(analysis.gaps(_data(rec), "BTCUSDT"))
    out = _cli(rec, _data(rec), "--plot", "--date", day, "--symbol", "BTCUSDT", "--out", str(tmp_path / "c.png"))
    assert out.returncode == 0 and (tmp_path / "c.png").stat().st_size > 10_000, out.stderr
    out = _cli(rec, _data(rec), "--plot", "--date", day)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--symbol" in out.stderr


def test_coinm_recording_loads_verifies_and_exports_to_futures_cm(tmp_path):
    """A COIN-M recording (contracts, one dstream-like root): the loader
    returns the rows written, --verify passes with its books replayed, and
    --export writes futures/cm files with Binance's futures header."""
    symbols = ["BTCUSD_PERP", "BTCUSD_261225"]
    with Simulator(SimConfig(market="coinm", symbols=tuple(symbols), seed=33, rate=200)) as sim:
        rec = Recorder(tmp_path, sim, symbols, streams=["aggTrade", "depth@100ms", "bookTicker"],
                       orderbook_interval=0.25)
        try:
            rec.start()
            wait_for(lambda: len(rec.rows("BTCUSD_261225", "orderbook")) >= 8
                     and len(rec.rows("BTCUSD_PERP", "aggTrade")) >= 200, 60, "orderbook and aggTrade rows")
        finally:
            assert rec.stop() == 0, rec.log_tail()
        _check_coinm_offline(rec, tmp_path)      # the simulator's CA file lives as long as it does


def _check_coinm_offline(rec, tmp_path):
    data = _data(rec)
    folder = os.path.join(data, "coinm", "BTCUSD_PERP")
    name = next(n for n in sorted(os.listdir(folder)) if "-aggTrade-" in n)
    header, rows = _raw(os.path.join(folder, name))
    ours = analysis.load(data, "BTCUSD_PERP", "aggTrade", market="coinm", exact=True)
    assert len(ours) == len(rows) > 0 and "is_best_match" not in ours.columns
    assert sorted(ours["quantity"].astype(str)) == sorted(r[header.index("quantity")] for r in rows)
    assert all(q.isdigit() for q in ours["quantity"].astype(str))          # contracts
    bars = analysis.ohlcv(analysis.load(data, "BTCUSD_PERP", "aggTrade", market="coinm"), "1s", contract_size=100)
    floats = ours.astype({"price": "float64", "quantity": "float64"})
    assert "quote_volume" not in bars.columns and bars["volume"].sum() == floats["quantity"].sum()
    assert abs(bars["base_volume"].sum() - (floats["quantity"] * 100 / floats["price"]).sum()) < 1e-9
    out = _cli(rec, data, "--verify", "--market", "coinm")
    assert out.returncode == 0 and "ok:" in out.stdout, out.stdout + out.stderr
    report = verify.verify(data, "coinm")
    assert report.ok and report.tickers_checked > 0
    assert sum(f.checked for f in report.files if f.stream == "orderbook") >= 8
    day = ours.index[0].strftime("%Y-%m-%d")
    out = _cli(rec, data, "--export", "binance-vision", "--market", "coinm", "--date", day,
               "--out", str(tmp_path / "vision"))
    assert out.returncode == 0, out.stderr
    agg = tmp_path / "vision" / "futures" / "cm" / "daily" / "aggTrades" / "BTCUSD_PERP" / \
        f"BTCUSD_PERP-aggTrades-{day}.csv"
    header, lines = _raw(agg)
    assert header == ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                      "is_buyer_maker"]
    assert len(lines) == len(ours) and {r[6] for r in lines} <= {"true", "false"}
