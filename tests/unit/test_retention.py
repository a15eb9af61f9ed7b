"""Retention (retention.py): exactly the days before today - retention_days
leave data_dir, oldest first, removed or moved to archive_dir; today, the kept
days, open files and foreign files stay; compressed names count as their day."""

import logging
import os
import threading

import pytest

from binance_streamer import config, csvfiles, retention
from binance_streamer.config import ConfigError

NOW = 1796342400.0 + 3600        # 2026-12-04 01:00 UTC


def _make(root, market, symbol, names):
    folder = root / market / symbol
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(name + "\n")


def _names(root, market="spot"):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, files in os.walk(root / market) for n in files)


DAYS = ["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]


def _day_files(root):
    for symbol in ("BTCUSDT", "ETHUSDT"):
        _make(root, "spot", symbol, [f"{symbol}-aggTrade-{d}.csv" for d in DAYS]
              + [f"{symbol}-depth-{d}.csv.gz" for d in DAYS[:3]] + [f"{symbol}-gaps-{d}.csv.zst" for d in DAYS[:2]]
              + [f"{symbol}-depth-{DAYS[0]}.csv.gz.part", "notes.txt", f"{symbol}-kline_1m-{DAYS[0]}.csv.tmp"])


def test_first_kept_day():
    assert retention.first_kept_day(NOW, 2) == "2026-12-02"
    assert retention.first_kept_day(NOW, 1) == "2026-12-03"
    assert retention.first_kept_day(1796342400.0 - 1, 1) == "2026-12-02"     # a second before midnight


def test_day_file_names_plain_and_compressed():
    assert csvfiles.parse_name("BTCUSDT-kline_1m-2026-11-25.csv") == ("BTCUSDT", "kline_1m", "2026-11-25")
    assert csvfiles.parse_name("BTCUSDT-depth-2026-11-25.csv.gz") == ("BTCUSDT", "depth", "2026-11-25")
    assert csvfiles.parse_name("BTCUSDT-gaps-2026-11-25.csv.zst") == ("BTCUSDT", "gaps", "2026-11-25")
    for other in ("BTCUSDT-depth-2026-11-25.csv.gz.part", "BTCUSDT-depth-2026-11-25.zip", "notes.txt"):
        assert csvfiles.parse_name(other) is None


def test_sweep_removes_exactly_the_expired_days_oldest_first(tmp_path, caplog):
    root = tmp_path / "data"
    _day_files(root)
    before = _names(root)
    with caplog.at_level(logging.INFO, logger="binance_streamer.retention"):
        done = retention.sweep(str(root), "spot", NOW, 2)
    # keep 2026-12-02, 12-03 and today (12-04); everything of 11-29 .. 12-01 goes, in any of its names
    assert [d for d, _, _ in done] == ["2026-11-29", "2026-11-30", "2026-12-01"]
    assert [n for _, n, _ in done] == [6, 6, 4]
    gone = sorted(set(before) - set(_names(root)))
    assert all(any(d in g for d in DAYS[:3]) for g in gone) and len(gone) == 16
    left = _names(root)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for d in DAYS[3:]:
            assert f"spot/{symbol}/{symbol}-aggTrade-{d}.csv" in left
        for foreign in ("notes.txt", f"{symbol}-depth-{DAYS[0]}.csv.gz.part", f"{symbol}-kline_1m-{DAYS[0]}.csv.tmp"):
            assert f"spot/{symbol}/{foreign}" in left
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("retention: 2026-11-29 removed: 6 files")
    assert retention.sweep(str(root), "spot", NOW, 2) == []          # nothing more to do


def test_sweep_moves_to_archive_dir_keeping_the_layout(tmp_path):
    root, archive = tmp_path / "data", tmp_path / "archive"
    _day_files(root)
    _make(root, "usdm", "BTCUSDT", [f"BTCUSDT-aggTrade-{DAYS[0]}.csv"])     # another market: not ours
    done = retention.sweep(str(root), "spot", NOW, 3, str(archive))
    assert [d for d, _, _ in done] == ["2026-11-29", "2026-11-30"]
    moved = _names(archive)
    assert "spot/BTCUSDT/BTCUSDT-aggTrade-2026-11-29.csv" in moved
    assert "spot/ETHUSDT/ETHUSDT-depth-2026-11-30.csv.gz" in moved
    assert "spot/ETHUSDT/ETHUSDT-gaps-2026-11-30.csv.zst" in moved and len(moved) == 12
    assert (archive / "spot/BTCUSDT/BTCUSDT-aggTrade-2026-11-29.csv").read_text() == \
        "BTCUSDT-aggTrade-2026-11-29.csv\n"
    assert "spot/BTCUSDT/BTCUSDT-aggTrade-2026-12-01.csv" in _names(root)
    assert _names(root, "usdm") == ["usdm/BTCUSDT/BTCUSDT-aggTrade-2026-11-29.csv"]


def test_a_file_already_in_the_archive_is_never_overwritten(tmp_path):
    root, archive = tmp_path / "data", tmp_path / "archive"
    _make(root, "spot", "BTCUSDT", ["BTCUSDT-trade-2026-11-01.csv"])
    _make(archive, "spot", "BTCUSDT", ["BTCUSDT-trade-2026-11-01.csv"])
    (archive / "spot/BTCUSDT/BTCUSDT-trade-2026-11-01.csv").write_text("older\n")
    assert retention.sweep(str(root), "spot", NOW, 1, str(archive)) == []
    assert (archive / "spot/BTCUSDT/BTCUSDT-trade-2026-11-01.csv").read_text() == "older\n"
    assert (root / "spot/BTCUSDT/BTCUSDT-trade-2026-11-01.csv").exists()


def test_a_move_across_disks_copies_then_removes(tmp_path, monkeypatch):
    import errno
    root, archive = tmp_path / "data", tmp_path / "archive"
    _make(root, "spot", "BTCUSDT", ["BTCUSDT-trade-2026-11-01.csv"])

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "rename", cross_device)
    assert [n for _, n, _ in retention.sweep(str(root), "spot", NOW, 1, str(archive))] == [1]
    assert _names(archive) == ["spot/BTCUSDT/BTCUSDT-trade-2026-11-01.csv"]
    assert _names(root) == []


def test_files_the_writer_has_open_stay(tmp_path):
    root = tmp_path / "data"
    _make(root, "spot", "BTCUSDT", ["BTCUSDT-aggTrade-2026-11-01.csv", "BTCUSDT-trade-2026-11-01.csv"])
    busy = {("BTCUSDT", "aggTrade", "2026-11-01")}
    assert [n for _, n, _ in retention.sweep(str(root), "spot", NOW, 1, busy=busy)] == [1]
    assert _names(root) == ["spot/BTCUSDT/BTCUSDT-aggTrade-2026-11-01.csv"]


def test_keeper_sweeps_at_start_and_stops(tmp_path):
    root = tmp_path / "data"
    _make(root, "spot", "BTCUSDT", ["BTCUSDT-aggTrade-2026-11-01.csv", "BTCUSDT-aggTrade-2026-12-04.csv"])
    cfg = config.load(None, {"data_dir": str(root), "symbols": "BTCUSDT", "retention_days": 1})
    swept = threading.Event()
    keeper = retention.Keeper(cfg, busy=lambda: (swept.set(), set())[1], clock=lambda: NOW).start()
    assert swept.wait(10)
    keeper.stop()
    assert not keeper._thread.is_alive()
    assert _names(root) == ["spot/BTCUSDT/BTCUSDT-aggTrade-2026-12-04.csv"]
    assert retention.Keeper(config.load(None, {"data_dir": str(root)})).start()._thread is None   # off


@pytest.mark.parametrize("text, message", [
    ("archive_dir: old", "retention_days is 0"),
    ("retention_days: 3\narchive_dir: data", "is data_dir itself"),
    ("retention_days: -1", "must be at least 0"),
    ("disk_floor_action: panic", "disk_floor_action in"),
])
def test_bad_disk_settings_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        config.load(str(path))


def test_archive_dir_is_made_absolute(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("retention_days: 30\narchive_dir: cold\n")
    cfg = config.load(str(path))
    assert cfg.archive_dir == str(tmp_path / "cold") and cfg.retention_days == 30
