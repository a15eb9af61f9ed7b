"""The disk floor (disk.py, Writer.check_disk) with a fake free-space
function: what is shed, what goes on, what the ledger says, hysteresis,
the stop action."""

import csv
import os

from binance_streamer import config, csvfiles, disk
from binance_streamer.messages import Rows
from binance_streamer.writer import Writer

GiB = 2**30
DAY = "2026-01-01"


def _cfg(tmp_path, **kw):
    return config.load(None, {"data_dir": str(tmp_path / "data"), "run_dir": str(tmp_path / "run"),
                              "log_dir": str(tmp_path / "logs"), "symbols": "BTCUSDT", "min_free_disk": 1.0, **kw})


class FakeDisk:
    def __init__(self, free):
        self.free = free
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.free


def _writer(tmp_path, free, **kw):
    stops = []
    w = Writer(_cfg(tmp_path, **kw), clock=lambda: 1767225600.0, free=free, stop_recorder=lambda: stops.append(1))
    w.floor.interval = 0.0           # measured at every housekeeping here
    return w, stops


def _depth(U, u, E):
    return f"{E},,{U},{u},{U - 1},bid,1.0,2.0,{E * 1000 + 5}\n"


def _depth_rows(U, u, E):
    return Rows("BTCUSDT", "depth", DAY, [u, u], [_depth(U, u, E), _depth(U, u, E).replace("bid", "ask")], False)


def _agg(a):
    return Rows("BTCUSDT", "aggTrade", DAY, [a], [f"{a},1.00,2.00,{a},{a},{1767225600000 + a},True,True,1,5,0\n"],
                False)


def _book(t_us):
    return Rows("BTCUSDT", "orderbook", DAY, [t_us], [f"{t_us},,false" + ",,," * 40 + "\n"], False)


def _rows(tmp_path, stream, day=DAY):
    path = csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", stream, day)
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_floor_has_hysteresis_and_measures_at_most_once_per_interval():
    fake = FakeDisk(5 * GiB)
    floor = disk.Floor(2.0, fake, interval=1.0)
    assert floor.check(0.0) is None and fake.calls == 1
    fake.free = int(1.9 * GiB)
    assert floor.check(0.5) is None and fake.calls == 1          # not yet due: not measured
    assert floor.check(1.0) == "below" and floor.below
    fake.free = int(2.1 * GiB)                                   # above the floor, below floor + 10%
    assert floor.check(2.0) is None and floor.below
    fake.free = int(2.2 * GiB) + 1
    assert floor.check(3.0) == "above" and not floor.below
    assert disk.Floor(0.0, fake).check(10.0) is None            # 0: no floor


def test_a_failed_measurement_changes_nothing():
    def broken():
        raise OSError(5, "I/O error")
    floor = disk.Floor(1.0, broken, interval=0.0)
    assert floor.check(0.0) is None and not floor.below


def test_below_the_floor_only_the_bulky_streams_are_shed_and_the_ledger_says_what(tmp_path):
    fake = FakeDisk(5 * GiB)
    w, stops = _writer(tmp_path, fake)
    w.take([_depth_rows(1, 2, 1767225600100), _agg(1), _book(1767225600200000)], "worker-0")
    w.flush()
    fake.free = GiB // 2
    w.flush()                                                     # housekeeping measures: below
    assert w.floor.below and w.shed.active and stops == []
    w.take([_depth_rows(3, 4, 1767225601100), _depth_rows(5, 6, 1767225602100), _agg(2),
            _book(1767225601200000), _book(1767225602200000)], "worker-0")
    w.flush()
    assert w.written_below() == {}                                # shed rows are acknowledged, not held
    assert [r["agg_trade_id"] for r in _rows(tmp_path, "aggTrade")] == ["1", "2"]
    assert [r["final_update_id"] for r in _rows(tmp_path, "depth")] == ["2", "2"]
    assert len(_rows(tmp_path, "orderbook")) == 1
    assert w.status()["disk_floor"] == "below" and w.status()["rows_not_recorded"] == 6
    fake.free = int(1.05 * GiB)
    w.flush()
    assert w.shed.active                                          # within the margin: still shed
    w.take([_depth_rows(7, 8, 1767225603100)])
    fake.free = 3 * GiB
    w.flush()
    assert not w.shed.active
    w.take([_depth_rows(9, 10, 1767225604100), _book(1767225604200000)], "worker-0")
    w.close()
    assert [r["final_update_id"] for r in _rows(tmp_path, "depth")] == ["2", "2", "10", "10"]
    gaps = {g["stream"]: g for g in _rows(tmp_path, "gaps")}
    assert set(gaps) == {"depth", "orderbook"}
    depth = gaps["depth"]
    assert (depth["reason"], depth["action"]) == ("disk below min_free_disk", "not recorded")
    assert (depth["last_good_id"], depth["first_id_after"], depth["rows"]) == ("2", "10", "6")
    assert (depth["last_good_time"], depth["first_time_after"]) == ("1767225601100", "1767225604100")
    assert "6 rows from 2026-01-01T00:00:01.100Z to 2026-01-01T00:00:03.100Z" in depth["detail"]
    book = gaps["orderbook"]
    assert (book["last_good_id"], book["first_id_after"], book["rows"]) == ("", "", "2")
    assert (book["last_good_time"], book["first_time_after"]) == ("1767225601200", "1767225604200")


def test_the_ledger_explains_the_hole_as_verify_reads_it(tmp_path):
    """verify.Ledger.explains(stream, last id before, first id after): the
    depth break around the shed rows is explained by the ledger row."""
    import pandas as pd
    from binance_streamer.analysis.verify import Ledger
    fake = FakeDisk(5 * GiB)
    w, _ = _writer(tmp_path, fake)
    w.take([_depth_rows(1, 2, 1767225600100)])
    fake.free = 0
    w.flush()
    w.take([_depth_rows(3, 4, 1767225601100)])
    fake.free = 5 * GiB
    w.flush()
    w.take([_depth_rows(5, 6, 1767225602100)])
    w.close()
    ledger = Ledger(pd.read_csv(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "gaps", DAY),
                                dtype={"last_good_id": "Int64", "first_id_after": "Int64", "stream": "string",
                                       "action": "string"}))
    assert ledger.explains("depth", 2, 5)            # last u written 2, next event's U 5
    assert not ledger.explains("depth", 6, 7)


def test_a_span_still_open_at_close_is_ledgered_without_a_first_id_after(tmp_path):
    fake = FakeDisk(0)
    w, _ = _writer(tmp_path, fake)
    w.flush()
    w.take([_depth_rows(3, 4, 1767225601100)])
    w.close()
    (gap,) = _rows(tmp_path, "gaps", "2026-01-01")
    assert (gap["stream"], gap["first_id_after"], gap["rows"], gap["action"]) == ("depth", "", "2", "not recorded")
    assert not os.path.exists(csvfiles.path(str(tmp_path / "data"), "spot", "BTCUSDT", "depth", DAY))


def test_falling_below_again_before_a_stream_came_back_continues_its_span(tmp_path):
    fake = FakeDisk(0)
    w, _ = _writer(tmp_path, fake)
    w.flush()
    w.take([_depth_rows(3, 4, 1767225601100)])
    fake.free = 5 * GiB
    w.flush()
    fake.free = 0
    w.flush()
    w.take([_depth_rows(5, 6, 1767225602100)])
    fake.free = 5 * GiB
    w.flush()
    w.take([_depth_rows(7, 8, 1767225603100)])
    w.close()
    (gap,) = _rows(tmp_path, "gaps")
    assert (gap["rows"], gap["first_id_after"], gap["last_good_time"]) == ("4", "8", "1767225601100")


def test_stop_action_asks_the_recorder_to_stop_once_and_sheds_nothing(tmp_path):
    fake = FakeDisk(0)
    w, stops = _writer(tmp_path, fake, disk_floor_action="stop")
    w.flush()
    w.flush()
    assert stops == [1] and not w.shed.active
    w.take([_depth_rows(1, 2, 1767225600100)])
    w.close()
    assert len(_rows(tmp_path, "depth")) == 2            # what reaches it while it stops is written


def test_without_a_free_function_there_is_no_floor(tmp_path):
    w = Writer(_cfg(tmp_path, min_free_disk=1e6))
    w.flush()
    assert not w.floor.below and not w.shed.active


def test_shed_kinds():
    assert [s for s in ("depth", "depthSnapshot", "orderbook", "aggTrade", "trade", "bookTicker", "kline_1m",
                        "gaps") if disk.sheds(s)] == ["depth", "depthSnapshot", "orderbook"]


def test_a_writer_restarted_while_below_the_floor_names_the_whole_hole(tmp_path):
    """The spans of a killed writer are gone with it; its successor starts
    its own from the last id on disk, so the ledger row still spans the hole."""
    fake = FakeDisk(5 * GiB)
    first, _ = _writer(tmp_path, fake)
    first.take([_depth_rows(1, 2, 1767225600100)])
    first.flush()
    fake.free = 0
    first.flush()
    first.take([_depth_rows(3, 4, 1767225601100)])          # shed; then the writer is killed (no close)
    second, _ = _writer(tmp_path, fake)
    second.recover()
    second.flush()
    second.take([_depth_rows(5, 6, 1767225602100)])
    fake.free = 5 * GiB
    second.flush()
    second.take([_depth_rows(7, 8, 1767225603100)])
    second.close()
    (gap,) = _rows(tmp_path, "gaps")
    assert (gap["last_good_id"], gap["first_id_after"], gap["rows"]) == ("2", "8", "2")
    assert [r["final_update_id"] for r in _rows(tmp_path, "depth")] == ["2", "2", "8", "8"]


def test_a_start_below_the_floor_with_the_stop_action_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from binance_streamer import cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("min_free_disk: 1000000\ndisk_floor_action: stop\nvalidate_symbols: false\n")
    assert cli.main(["--config", "c.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "below min_free_disk (1e+06 GiB), and disk_floor_action is stop" in err
    cfg = _cfg(tmp_path, disk_floor_action="stop")
    assert disk.refuse_start(cfg, 2 * GiB) is None and disk.refuse_start(cfg, GiB // 2)
    assert disk.refuse_start(_cfg(tmp_path), 0) is None                  # shed starts and sheds
