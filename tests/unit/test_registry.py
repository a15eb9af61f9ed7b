"""The registry of running recorders: status and stop find the recorder
from any directory, and say where they looked when they find none."""

import os

import pytest

from binance_streamer import config, daemon


def _cfg(tmp_path, name):
    return config.load(None, {"run_dir": str(tmp_path / name), "data_dir": str(tmp_path / "data")})


def test_one_recorder_anywhere_is_found_and_gone_ones_are_forgotten(tmp_path):
    running = _cfg(tmp_path, "srv/run")
    (tmp_path / "srv/run").mkdir(parents=True)
    here = _cfg(tmp_path, "home/run")
    assert daemon.locate(here, explicit=False) == (here.run_dir, f"looked in {here.run_dir} and in the registry "
                                                                  f"{daemon.registry_dir()}")
    pidfile = daemon.PidFile(running.run_dir, running).acquire()
    try:
        run_dir, note = daemon.locate(here, explicit=False)
        assert run_dir == running.run_dir and "registry" in note
        # a config or run_dir named by the user is where it looks, and only there, naming the other
        run_dir, note = daemon.locate(here, explicit=True)
        assert run_dir == here.run_dir
        assert note == (f"looked in {here.run_dir}; a recorder runs with run_dir {running.run_dir} "
                        f"(pid {os.getpid()}): pass --run-dir {running.run_dir} for it")
    finally:
        pidfile.release()
    assert daemon.locate(here, explicit=False)[0] == here.run_dir
    assert daemon.registered() == []


def test_a_stale_entry_is_removed(tmp_path):
    cfg = _cfg(tmp_path, "run")
    (tmp_path / "run").mkdir()
    daemon.register(cfg.run_dir, cfg)          # as if the recorder died without unregistering
    entries = os.listdir(daemon.registry_dir())
    assert len(entries) == 1
    assert daemon.registered() == []
    assert os.listdir(daemon.registry_dir()) == []


def test_several_recorders_are_named_and_none_is_chosen(tmp_path):
    held = []
    for name in ("a/run", "b/run"):
        (tmp_path / name).mkdir(parents=True)
        held.append(daemon.PidFile(str(tmp_path / name), _cfg(tmp_path, name)).acquire())
    try:
        with pytest.raises(RuntimeError) as err:
            daemon.locate(_cfg(tmp_path, "c/run"), explicit=False)
        message = str(err.value)
        assert message.startswith("2 recorders are running") and "--config or --run-dir" in message
        assert str(tmp_path / "a/run") in message and str(tmp_path / "b/run") in message and "\n" not in message
    finally:
        for p in held:
            p.release()


def test_registry_names_are_the_sha1_hashlib_gives():
    import hashlib
    for run_dir in ("/srv/run", "/home/ünïcode/run", ""):
        assert daemon._sha1(run_dir.encode()) == hashlib.sha1(run_dir.encode()).hexdigest()
