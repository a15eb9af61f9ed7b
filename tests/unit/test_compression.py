"""Compression of closed day files: the writer picks them, the compressor
makes them crash-safely, every reader reads them (the run of the compressor
is done in this process here; tests/integration/test_compression.py kills real runs)."""

import gzip
import os

import pandas as pd
import pytest

from binance_streamer import compression, compressor, config, csvfiles
from binance_streamer.analysis import load
from binance_streamer.analysis.verify import verify
from binance_streamer.commands import inventory
from binance_streamer.writer import Writer

DAY1, DAY2 = "2026-01-01", "2026-01-02"
MS1 = 1767225600000               # 2026-01-01T00:00:00Z
MS2 = MS1 + 86_400_000


def _cfg(tmp_path, **kw):
    return config.load(None, {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                              "log_dir": str(tmp_path / "logs"), "symbols": "BTCUSDT", "compress_after": 0,
                              **kw})


class Done:
    """A finished run, as subprocess.Popen shows it."""

    def __init__(self, code):
        self.code = code

    def poll(self):
        return self.code

    def terminate(self):
        pass

    wait = kill = terminate


def in_process(w, codec="gzip"):
    """Runs of the compressor done at once, in this process (unit tests never fork)."""
    def start(path):
        compressor.compress(path, codec)
        return Done(0)
    w.compressions.start = start
    os.makedirs(w.cfg.run_dir, exist_ok=True)


def _agg(a, ms, backfilled=0):
    return f"{a},1.{a % 97:02d},0.{a:05d},{a * 2},{a * 2 + 1},{ms},True,True,{ms},{ms * 1000 + 7},{backfilled}\n"


def _trade(t, ms):
    return f"{t},2.{t % 89:02d},0.5,1.0,{ms},False,True,{ms},{ms * 1000 + 9}\n"


def _record(w, start_id, ms0, n, day):
    ids = list(range(start_id, start_id + n))
    w.add_rows("BTCUSDT", "aggTrade", day, ids, [_agg(a, ms0 + 1000 * (a - start_id)) for a in ids])
    w.add_rows("BTCUSDT", "trade", day, ids, [_trade(t, ms0 + 1000 * (t - start_id)) for t in ids])


def _path(tmp_path, stream, day, suffix=""):
    return csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", stream, day) + suffix


def _tick(w, times=3):
    for _ in range(times):
        w.housekeeping()


def _midnight(tmp_path, codec="gzip"):
    """A recording across midnight: day 1 written and closed, day 2 open."""
    now = [MS1 / 1000 + 3600]
    w = Writer(_cfg(tmp_path), clock=lambda: now[0])
    in_process(w, codec)
    _record(w, 1, MS1 + 3_600_000, 200, DAY1)
    w.flush(force=True)
    before = {s: load(str(tmp_path / "data"), "BTCUSDT", s, exact=True) for s in ("aggTrade", "trade")}
    assert not os.path.exists(_path(tmp_path, "aggTrade", DAY1, ".gz"))       # today's file: never
    now[0] = MS2 / 1000 + 60
    _record(w, 201, MS2 + 1000, 50, DAY2)
    w.flush(force=True)
    _tick(w)
    return w, before, now


@pytest.mark.parametrize("codec,suffix", [("gzip", ".gz"), ("zstd", ".zst")])
def test_a_day_is_compressed_after_midnight_and_loads_the_same(tmp_path, codec, suffix):
    w, before, _ = _midnight(tmp_path, codec)
    for stream in ("aggTrade", "trade"):
        assert os.path.exists(_path(tmp_path, stream, DAY1, suffix))
        assert not os.path.exists(_path(tmp_path, stream, DAY1))
        assert os.path.exists(_path(tmp_path, stream, DAY2))               # today's stays plain and open
        after = load(str(tmp_path / "data"), "BTCUSDT", stream, exact=True, end=DAY2)
        pd.testing.assert_frame_equal(before[stream], after)              # every value, every dtype
    w.close()
    report = verify(str(tmp_path / "data"), "spot")
    assert report.ok, [str(p) for p in report.problems]
    assert {(f.stream, f.day): f.rows for f in report.files}[("aggTrade", DAY1)] == 200
    entry = inventory(w.cfg)["BTCUSDT/aggTrade"]
    assert entry["days"] == 2 and entry["compressed"] == 1 and entry["last_row_time"] is not None


def test_recovery_reads_the_last_ids_of_a_compressed_yesterday(tmp_path):
    now = [MS1 / 1000 + 3600]
    w = Writer(_cfg(tmp_path), clock=lambda: now[0])
    in_process(w)
    _record(w, 1, MS1 + 3_600_000, 120, DAY1)
    w.add_rows("BTCUSDT", "orderbook", DAY1, [MS1 * 1000 + 5, MS1 * 1000 + 6],
               [f"{MS1 * 1000 + 5},11,true\n", f"{MS1 * 1000 + 6},12,true\n"])
    now[0] = MS2 / 1000 + 60                 # the next day, before any row of it
    w.flush(force=True)
    _tick(w)
    w.close()
    assert os.path.exists(_path(tmp_path, "aggTrade", DAY1, ".gz")) and not os.path.exists(_path(tmp_path, "aggTrade", DAY2))
    w2 = Writer(_cfg(tmp_path), clock=lambda: now[0])
    w2.recover()
    assert w2.seq.last[("BTCUSDT", "aggTrade")] == 120 and w2.seq.last[("BTCUSDT", "trade")] == 120
    assert MS1 * 1000 + 6 in w2.keys[("BTCUSDT", "orderbook")]
    w2.add_rows("BTCUSDT", "aggTrade", DAY2, [119, 120, 121],           # a batch sent again: only 121 is new
                [_agg(a, MS2 + a) for a in (119, 120, 121)])
    w2.close()
    assert w2.seq.duplicates == 2
    with open(_path(tmp_path, "aggTrade", DAY2)) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["121"]


def test_a_late_row_goes_to_a_new_plain_file_then_joins_the_compressed_one(tmp_path):
    w, before, now = _midnight(tmp_path)
    w.add_rows("BTCUSDT", "aggTrade", DAY1, [1000], [_agg(1000, MS1 + 86_000_000)])
    w.flush_due(float("inf"))                                             # written, not yet quiet
    assert os.path.exists(_path(tmp_path, "aggTrade", DAY1))              # the late row's own plain file
    late = load(str(tmp_path / "data"), "BTCUSDT", "aggTrade", exact=True, end=DAY2)
    assert len(late) == 201 and late["agg_trade_id"].iloc[-1] == 1000     # both read, each row once
    _tick(w)                                                              # quiet again: folded in
    assert not os.path.exists(_path(tmp_path, "aggTrade", DAY1))
    text = compression.read_all(_path(tmp_path, "aggTrade", DAY1, ".gz")).decode()
    assert text.count("agg_trade_id") == 1 and text.endswith(_agg(1000, MS1 + 86_000_000))
    pd.testing.assert_frame_equal(late, load(str(tmp_path / "data"), "BTCUSDT", "aggTrade", exact=True, end=DAY2))
    w.close()


def test_a_row_for_the_file_being_compressed_waits_for_the_run(tmp_path):
    w, _, _ = _midnight(tmp_path)
    running = []
    w.compressions.start = lambda path: running.append(path) or Done(None)    # a run that goes on
    w.compressions.queue[_path(tmp_path, "trade", DAY1)] = 0.0
    w.compressions.tick(DAY2, set())
    assert w.compressions.busy == _path(tmp_path, "trade", DAY1)
    w.add_rows("BTCUSDT", "trade", DAY1, [5000], [_trade(5000, MS1 + 5)])
    w.flush_due(float("inf"))
    assert w.pending_rows == 1 and not os.path.exists(_path(tmp_path, "trade", DAY1))   # not written meanwhile
    w.compressions.run = Done(0)
    w.compressions.tick(DAY2, set())
    w.close()
    assert os.path.exists(_path(tmp_path, "trade", DAY1)) and w.pending_rows == 0


def _plain(tmp_path, rows=50):
    path = _path(tmp_path, "aggTrade", DAY1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = csvfiles.header("spot", "aggTrade") + "".join(_agg(a, MS1 + a) for a in range(1, rows + 1)).encode()
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def test_leftovers_of_a_stopped_run_are_resolved_without_losing_a_row(tmp_path):
    path, data = _plain(tmp_path)
    with open(path + ".gz.tmp", "wb") as f:           # stopped while writing the temporary file
        f.write(gzip.compress(data)[:40])
    compressor.compress(path, "gzip")
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path) + ".gz"]
    assert compression.read_all(path + ".gz") == data

    path, data = _plain(tmp_path)                     # stopped after the rename: both hold every row
    os.unlink(path + ".gz")
    with open(path + ".gz", "wb") as f:
        f.write(gzip.compress(data))
    with compression.open_day(path) as f:
        assert f.read() == data                       # read once, not twice
    assert compressor.resolve(path) == (path + ".gz", True) and not os.path.exists(path)

    path, data = _plain(tmp_path)                     # a compressed file that does not decompress
    with open(path + ".gz", "wb") as f:
        f.write(gzip.compress(data)[:-9])
    compressor.compress(path, "gzip")
    assert compression.read_all(path + ".gz") == data and os.path.exists(path + ".gz.damaged")


def test_a_plain_file_changed_during_the_run_is_not_used(tmp_path, monkeypatch):
    path, data = _plain(tmp_path)
    real = compressor._digest_of

    def and_append(reader):
        with open(path, "ab") as f:
            f.write(_agg(999, MS1).encode())
        return real(reader)

    monkeypatch.setattr(compressor, "_digest_of", and_append)
    with pytest.raises(compressor.VerifyError):
        compressor.compress(path, "gzip")
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    assert open(path, "rb").read() == data + _agg(999, MS1).encode()


def test_names():
    assert csvfiles.parse_name("BTCUSDT-depth-2026-01-01.csv.zst") == ("BTCUSDT", "depth", "2026-01-01")
    assert csvfiles.parse_name("BTCUSDT-depth-2026-01-01.csv.gz.tmp") is None
    assert csvfiles.compressed_name("x.csv", "gzip") == "x.csv.gz"
    assert csvfiles.codec_of("x.csv.zst") == "zstd" and csvfiles.codec_of("x.csv") is None


def test_compression_none_starts_nothing(tmp_path):
    w = Writer(_cfg(tmp_path, compression="none"), clock=lambda: MS2 / 1000)
    _record(w, 1, MS1, 5, DAY1)
    w.flush(force=True)
    _tick(w)
    w.close()
    assert w.compressions is None and os.path.exists(_path(tmp_path, "aggTrade", DAY1))


def test_at_start_what_a_stopped_run_left_is_resolved_at_once_and_the_rest_waits(tmp_path):
    path, data = _plain(tmp_path)                     # a past day, written just now
    with open(path + ".gz.tmp", "wb") as f:
        f.write(b"part of a run")
    other = _path(tmp_path, "trade", DAY1)
    with open(other, "wb") as f:
        f.write(csvfiles.header("spot", "trade") + _trade(1, MS1).encode())
    w = Writer(_cfg(tmp_path, compress_after=600))
    in_process(w)
    w.recover()
    _tick(w)
    assert compression.read_all(path + ".gz") == data and not os.path.exists(path + ".gz.tmp")
    assert not os.path.exists(path)
    assert os.path.exists(other) and not os.path.exists(other + ".gz")   # quiet for less than compress_after
    w.close()


def test_a_compressor_that_cannot_start_is_tried_again_later(tmp_path):
    w, _, now = _midnight(tmp_path)

    def refuse(path):
        raise OSError(11, "Resource temporarily unavailable")

    w.compressions.start = refuse
    w.compressions.closed(_path(tmp_path, "trade", DAY2), 0.0)
    w.compressions.tick(DAY2, set())                  # logged, not raised into the writer's loop
    assert w.compressions.busy is None and w.compressions.failed == 1
    assert w.compressions.queue[_path(tmp_path, "trade", DAY2)] == now[0] + w.compressions.RETRY
    w.close()


def test_verify_of_the_second_day_reads_the_first_days_ids_and_skips_files_without_ids(tmp_path):
    """--verify --date DAY2 checks the boundary with DAY1's last id; an
    orderbook file (no exchange ids) the day before is no reason to fail."""
    now = [MS1 / 1000 + 3600]
    w = Writer(_cfg(tmp_path, compression="none"), clock=lambda: now[0])
    _record(w, 1, MS1 + 3_600_000, 20, DAY1)
    w.add_rows("BTCUSDT", "orderbook", DAY1, [MS1 * 1000 + 5], [f"{MS1 * 1000 + 5},11,true\n"])
    now[0] = MS2 / 1000 + 60
    _record(w, 21, MS2 + 1000, 20, DAY2)
    w.add_rows("BTCUSDT", "orderbook", DAY2, [MS2 * 1000 + 5], [f"{MS2 * 1000 + 5},12,true\n"])
    w.close()
    report = verify(str(tmp_path / "data"), "spot", None, DAY2)
    assert report.ok, [str(p) for p in report.problems]
    assert {(f.stream, f.day) for f in report.files} >= {("aggTrade", DAY2), ("orderbook", DAY2)}


def test_a_stream_the_disk_floor_kept_off_disk_all_day_is_not_a_missing_file(tmp_path):
    from binance_streamer.sequence import gap_row
    now = [MS1 / 1000 + 3600]
    w = Writer(_cfg(tmp_path, compression="none"), clock=lambda: now[0])
    _record(w, 1, MS1 + 3_600_000, 20, DAY1)
    w._write_gap("BTCUSDT", gap_row(int(now[0] * 1e6), "depthSnapshot", "disk below min_free_disk", "", "",
                                    "not recorded", rows=10000))
    w.close()
    report = verify(str(tmp_path / "data"), "spot", None, DAY1, expected=["aggTrade", "depthSnapshot"])
    assert report.ok, [str(p) for p in report.problems]
    w2 = Writer(_cfg(tmp_path / "other", compression="none"), clock=lambda: now[0])
    _record(w2, 1, MS1 + 3_600_000, 20, DAY1)                  # no ledger row: the missing file is a problem
    w2.close()
    report = verify(str(tmp_path / "other" / "data"), "spot", None, DAY1, expected=["aggTrade", "depthSnapshot"])
    assert [p.what for p in report.problems] == ["file missing (other streams were recorded that day)"]
