"""A lookup of something a data directory does not hold says so, and what it
holds, in one line; the right lookup of an empty range is an empty frame.
Recordings are written by hand through csvfiles, small and fixed."""

import os

import pandas as pd
import pytest

from binance_streamer import analysis, cli, csvfiles
from binance_streamer.analysis import plot

DAY = "2026-11-25"
T0 = int(pd.Timestamp(f"{DAY} 12:00", tz="UTC").value // 1_000_000)      # ms
NEXT_DAY = "2026-11-26"
PNG = b"\x89PNG\r\n\x1a\n"


def _t(text):
    return pd.Timestamp(text, tz="UTC")


def _ms(text):
    return int(_t(text).value // 1_000_000)


def _write(root, market, symbol, stream, rows, day=DAY):
    path = csvfiles.path(str(root), market, symbol, stream, day)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(csvfiles.header(market, stream))
        f.writelines((",".join(map(str, r)) + "\n").encode() for r in rows)
    return path


def _spot_agg(n, t0=T0):
    return [[i, f"{100 + i % 5}.5", "0.01", i, i, t0 + i * 1000, "False", "True", t0 + i * 1000,
             (t0 + i * 1000) * 1000 + 70, 0] for i in range(n)]


def _spot_trades(n, t0=T0):
    return [[i, f"{100 + i % 5}.5", "0.01", "1.005", t0 + i * 1000, "False", "True", t0 + i * 1000,
             (t0 + i * 1000) * 1000 + 70] for i in range(n)]


def _spot(root):
    """spot BTCUSDT: every stream and a book; spot ETHUSDT: trades only."""
    _write(root, "spot", "BTCUSDT", "aggTrade", _spot_agg(30))
    _write(root, "spot", "BTCUSDT", "trade", _spot_trades(30))
    _write(root, "spot", "BTCUSDT", "bookTicker",
           [[10 + i, "100.0", "1", "101.0", "1", "", "", (T0 + i * 500) * 1000] for i in range(60)])
    _write(root, "spot", "BTCUSDT", "depthSnapshot",
           [[100, "bid", "100.0", "1", T0 * 1000, T0 * 1000 + 5000, "", ""],
            [100, "ask", "101.0", "1", T0 * 1000, T0 * 1000 + 5000, "", ""]])
    _write(root, "spot", "BTCUSDT", "depth",
           [[T0 + 1000, "", 101, 101, "", "bid", "100.5", "2", (T0 + 1000) * 1000 + 90],
            [T0 + 2000, "", 102, 103, "", "ask", "101.0", "0", (T0 + 2000) * 1000 + 90],
            [T0 + 2000, "", 102, 103, "", "ask", "101.5", "3", (T0 + 2000) * 1000 + 90]])
    _write(root, "spot", "ETHUSDT", "aggTrade", _spot_agg(5))
    _write(root, "spot", "ETHUSDT", "trade", _spot_trades(5))


def _usdm(root, symbol="BTCUSDT"):
    """USD-M as the recorder writes it by default: no trade stream."""
    _write(root, "usdm", symbol, "aggTrade",
           [[i, "30000.1", "0.002", i, i, T0 + i * 1000, "true", T0 + i * 1000, (T0 + i * 1000) * 1000 + 70, 0]
            for i in range(30)])
    _write(root, "usdm", symbol, "bookTicker",
           [[10 + i, "30000.0", "1", "30000.2", "1", T0 + i * 500, T0 + i * 500 + 1, (T0 + i * 500) * 1000 + 80]
            for i in range(60)])
    _write(root, "usdm", symbol, "depthSnapshot",
           [[100, "bid", "30000.0", "1", T0 * 1000, T0 * 1000 + 5000, T0 + 4, T0 + 3],
            [100, "ask", "30000.2", "1", T0 * 1000, T0 * 1000 + 5000, T0 + 4, T0 + 3]])
    _write(root, "usdm", symbol, "depth",
           [[T0 + 1000 * i, T0 + 1000 * i - 1, 100 + i, 101 + i, 100 + i if i else 90, "bid", "30000.0",
             str(i + 1), (T0 + 1000 * i) * 1000 + 90] for i in range(20)])


def _gap(written, stream, last_time="", first_time=""):
    return [_ms(written) * 1000, stream, "reconnect", "", "", last_time and _ms(last_time),
            first_time and _ms(first_time), "lost", 0, ""]


def _ledger(root):
    """Holes with both times, one, none; begun the day before; ledgered the next morning."""
    _write(root, "usdm", "BTCUSDT", "gaps", [
        _gap(f"{DAY} 00:30", "aggTrade", "2026-11-24 20:00", f"{DAY} 00:20"),
        _gap(f"{DAY} 12:00:10", "aggTrade", f"{DAY} 12:00:05", f"{DAY} 12:00:09"),
        _gap(f"{DAY} 12:00:20", "depth", first_time=f"{DAY} 12:00:15"),
        _gap(f"{DAY} 12:00:30", "orderbook"),
        _gap(f"{DAY} 12:00:40", "bookTicker", last_time=f"{DAY} 12:00:35")])
    _write(root, "usdm", "BTCUSDT", "gaps", [
        _gap(f"{NEXT_DAY} 03:00", "aggTrade", f"{DAY} 22:00", f"{NEXT_DAY} 02:59"),
        _gap(f"{NEXT_DAY} 05:00", "aggTrade", f"{NEXT_DAY} 04:00", f"{NEXT_DAY} 04:30")], day=NEXT_DAY)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """``both``: spot BTCUSDT, ETHUSDT and usdm BTCUSDT (with a gap ledger), SOLUSDT;
    ``usdm``: usdm BTCUSDT only."""
    both, usdm = tmp_path_factory.mktemp("both"), tmp_path_factory.mktemp("usdm-only")
    _spot(both)
    _usdm(both)
    _ledger(both)
    _usdm(both, "SOLUSDT")
    _usdm(usdm)
    return str(both), str(usdm)


def _message(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and isinstance(excinfo.value, LookupError)
    return text


def test_a_forgotten_market_names_the_market_recorded(dirs):
    _, usdm = dirs
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(usdm, "BTCUSDT", "aggTrade")
    text = _message(e)
    assert text.startswith(f"no spot BTCUSDT aggTrade files in '{usdm}'")
    assert "only usdm (BTCUSDT)" in text and "market='usdm'" in text
    assert len(analysis.load(usdm, "BTCUSDT", "aggTrade", market="usdm")) == 30


def test_a_wrong_symbol_lists_the_symbols_and_the_closest(dirs):
    both, _ = dirs
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(both, "BTCUSDX", "aggTrade")
    assert _message(e).endswith(": spot has BTCUSDT, ETHUSDT (did you mean 'BTCUSDT'?)")
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(both, "SOLUSDT", "aggTrade")          # recorded, but on the other market
    assert _message(e).endswith("spot has BTCUSDT, ETHUSDT; usdm has SOLUSDT: pass market='usdm'")
    assert len(analysis.load(both, "btcusdt", "aggTrade")) == 30        # symbols are not case-sensitive


def test_a_misspelled_or_unrecorded_stream_lists_the_streams(dirs):
    both, _ = dirs
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(both, "BTCUSDT", "aggTrad")
    assert _message(e).endswith(": BTCUSDT has aggTrade, bookTicker, depth, depthSnapshot, trade "
                                "(did you mean 'aggTrade'?)")
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(both, "BTCUSDT", "trade", market="usdm")      # USD-M records no trade stream
    assert "BTCUSDT has aggTrade, bookTicker, depth, depthSnapshot" in _message(e)
    # Binance's names and subscription names are the same streams
    assert len(analysis.load(both, "BTCUSDT", "aggTrades")) == 30
    assert len(analysis.load(both, "BTCUSDT", "depth@100ms")) == 3


def test_a_missing_or_empty_directory_is_named(dirs, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(missing, "BTCUSDT", "aggTrade")
    assert _message(e) == f"no spot BTCUSDT aggTrade files in '{missing}': no such directory"
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.load(str(tmp_path), "BTCUSDT", "aggTrade")
    assert _message(e).endswith("no recordings there (no spot/, usdm/ or coinm/ folder, no day files)")


def test_a_recorded_stream_without_rows_in_the_range_is_an_empty_frame(dirs):
    both, _ = dirs
    empty = analysis.load(both, "BTCUSDT", "aggTrade", start="2026-11-20", end="2026-11-21")
    assert empty.empty and "agg_trade_id" in empty.columns and str(empty.index.tz) == "UTC"
    assert analysis.gaps(both, "ETHUSDT").empty          # no ledger file: no hole
    with pytest.raises(analysis.NotRecorded):
        analysis.gaps(both, "ETHUSDX")


def test_book_at_and_replay_say_what_is_wrong_with_the_lookup(dirs):
    both, usdm = dirs
    at = pd.Timestamp(T0 + 1500, unit="ms", tz="UTC")
    book = analysis.book_at(both, "BTCUSDT", time=at)
    assert book.update_id == 101 and book.bids == [("100.5", "2"), ("100.0", "1")]
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.book_at(usdm, "BTCUSDT", time=at)
    assert "only usdm (BTCUSDT)" in _message(e)
    assert analysis.book_at(usdm, "BTCUSDT", time=at, market="usdm").update_id == 102
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.book_at(both, "BTCUSDX", update_id=101)
    assert "(did you mean 'BTCUSDT'?)" in _message(e)
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.book_at(both, "ETHUSDT", time=at)
    assert _message(e).endswith(": ETHUSDT has aggTrade, trade")
    with pytest.raises(analysis.NotRecorded) as e:
        analysis.book_at(both, "BTCUSDT", time="2026-11-20 12:00")
    assert _message(e).endswith("depth files for 2026-11-19..2026-11-20 in '%s': depth was recorded on %s"
                                % (both, DAY))
    with pytest.raises(analysis.NotRecorded) as e:
        next(analysis.replay(both, "ETHUSD"))
    assert "(did you mean 'ETHUSDT'?)" in _message(e)
    # the lookup is right, the book is not there yet: a plain LookupError that says why
    with pytest.raises(LookupError, match="no in-sync book at .*no diff before it bridged a snapshot") as e:
        analysis.book_at(both, "BTCUSDT", time=f"{DAY} 11:00")
    assert not isinstance(e.value, analysis.NotRecorded)


def test_plot_draws_what_usdm_recorded_and_shades_each_hole(dirs, tmp_path):
    both, _ = dirs
    png = tmp_path / "usdm.png"
    drawn = plot.plot_day(both, "BTCUSDT", DAY, str(png), market="usdm")
    assert png.read_bytes()[:8] == PNG
    assert drawn["price"] == ["trade price", "mid"] and drawn["rate"] == ["aggTrade", "depth", "bookTicker"]
    second = pd.Timedelta(seconds=1)            # 30 s of rows: 1 s buckets, the narrowest span drawn
    assert drawn["holes"] == [
        (_t(DAY), _t(f"{DAY} 00:20")),                              # begun the day before: from midnight
        (_t(f"{DAY} 12:00:05"), _t(f"{DAY} 12:00:09")),             # last_good_time .. first_time_after
        (_t(f"{DAY} 12:00:15") - second, _t(f"{DAY} 12:00:15")),    # only its end is known: a mark to there
        (_t(f"{DAY} 12:00:30") - second, _t(f"{DAY} 12:00:30")),    # no times: up to when the row was written
        (_t(f"{DAY} 12:00:35"), _t(f"{DAY} 12:00:40")),             # no end: until the row was written
        (_t(f"{DAY} 22:00"), _t(NEXT_DAY))]                         # ledgered the next morning, cut at midnight
    assert drawn["gaps"] == 6


def test_hole_spans_read_microsecond_times_too():
    ledger = pd.DataFrame({"last_good_time": pd.array([_ms(f"{DAY} 12:00") * 1000], dtype="Int64"),
                           "first_time_after": pd.array([pd.NA], dtype="Int64")},
                          index=pd.DatetimeIndex([_t(f"{DAY} 12:01")], name="time"))
    assert plot.hole_spans(ledger, _t(DAY), _t(NEXT_DAY), pd.Timedelta(seconds=1)) == [
        (_t(f"{DAY} 12:00"), _t(f"{DAY} 12:01"))]


def _main(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_plot_command_says_in_one_line_what_is_not_there(dirs, tmp_path, monkeypatch, capsys):
    both, usdm = dirs
    monkeypatch.chdir(tmp_path)             # no config.yaml
    code, out, err = _main(capsys, "--plot", "--date", DAY, "--symbol", "BTCUSDT", "--market", "usdm",
                           "--data-dir", usdm, "--out", str(tmp_path / "day.png"))
    assert code == 0 and (tmp_path / "day.png").read_bytes()[:8] == PNG, err
    assert out.startswith(f"{tmp_path / 'day.png'}: price (trade price, mid), messages/s (aggTrade, depth, bookTicker)")
    code, out, err = _main(capsys, "--plot", "--date", "2026-11-24", "--symbol", "BTCUSDT", "--market", "usdm",
                           "--data-dir", usdm)
    assert code == 1 and err == (f"binance-streamer: error: no usdm BTCUSDT aggTrade, depth, bookTicker rows on "
                                 f"2026-11-24 in '{os.path.join(usdm, 'usdm', 'BTCUSDT')}': it has them on {DAY}\n")
    code, out, err = _main(capsys, "--plot", "--date", DAY, "--symbol", "BTCUSDX", "--market", "usdm",
                           "--data-dir", both)
    assert code == 1 and err.count("\n") == 1 and err.endswith("(did you mean 'BTCUSDT'?)\n")
    code, out, err = _main(capsys, "--plot", "--date", DAY, "--symbol", "BTCUSDT", "--data-dir", usdm)
    assert code == 1 and err == (f"binance-streamer: error: no spot recordings in {usdm}, only usdm; "
                                 f"pass --market usdm\n")


def test_verify_and_export_name_the_symbols_there_are(dirs, tmp_path, monkeypatch, capsys):
    both, _ = dirs
    monkeypatch.chdir(tmp_path)             # no config.yaml
    for command in (["--verify"], ["--export", "binance-vision", "--out", str(tmp_path / "v")]):
        code, out, err = _main(capsys, *command, "--date", DAY, "--symbol", "BTCUSDX", "--market", "usdm",
                               "--data-dir", both)
        assert code == 1 and out == "" and err.count("\n") == 1, (command, out, err)
        assert err.startswith("binance-streamer: error: no usdm BTCUSDX files") and "did you mean 'BTCUSDT'?" in err


def test_a_market_that_does_not_exist_is_named(dirs):
    both, _ = dirs
    with pytest.raises(ValueError, match="market must be one of spot, usdm, coinm, not 'futures'"):
        analysis.load(both, "BTCUSDT", "aggTrade", market="futures")
