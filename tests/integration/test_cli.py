"""The command line as users drive it: daemon start/status/stop, symbols,
the offline demo, errors and help."""

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import yaml

from binance_streamer import cli
from binance_streamer.simulator.audit import compare
from tests.support import Files, wait_for

pytestmark = pytest.mark.timeout(150)


def run(tmp_path, *args, timeout=90):
    out = subprocess.run([sys.executable, "-m", "binance_streamer", *args], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout, out.stderr


def config_for(tmp_path, sim, **extra):
    cfg = {"market": sim.cfg.market, "symbols": ["BTCUSDT", "ETHUSDT"], "ws_url": sim.ws_base,
           "rest_url": sim.rest_url, "ca_file": sim.ca_file, "data_dir": "data", "log_dir": "logs", "run_dir": "run",
           "flush_interval": 0.2, "status_interval": 0.5, **extra}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def status_json(tmp_path, config):
    code, out, err = run(tmp_path, "--config", config, "--daemon", "status", "--json")
    return code, (json.loads(out) if out.strip() else None)


def processes_using(path):
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(path in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.fixture
def daemon_cleanup(tmp_path):
    configs = []
    yield configs
    for config in configs:
        run(tmp_path, "--config", config, "--daemon", "stop", "--force")


def test_start_status_stop_status(simulator, tmp_path, daemon_cleanup):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), seed=31, rate=150)
    config = config_for(tmp_path, sim, streams=["aggTrade", "trade", "depth@100ms", "bookTicker"])
    daemon_cleanup.append(config)
    code, out, err = run(tmp_path, "--config", config, "--daemon", "start")
    assert code == 0 and "started (pid" in err, err
    wait_for(lambda: all(status_json(tmp_path, config)[1]["streams"].get(f"{s}/aggTrade", {}).get("messages", 0) > 5
                         for s in ("BTCUSDT", "ETHUSDT")), 30, "both symbols receiving")
    code, report = status_json(tmp_path, config)
    assert code == 0 and report["state"] == "running"
    assert {p["name"] for p in report["processes"]} == {"writer", "orderbook", "worker-0", "worker-1"}
    assert all(p["rss_mb"] > 0 for p in report["processes"])
    assert sim.ws_base.startswith("wss://") and sim.rest_url.startswith("https://")   # as production
    wait_for(lambda: status_json(tmp_path, config)[1]["health"]["state"] == "OK", 30, "health OK")
    assert all(c["connected"] and c["lag_s"] is not None for c in status_json(tmp_path, config)[1]["connections"])
    code, text, _ = run(tmp_path, "--config", config, "--daemon", "status")
    assert code == 0 and "BTCUSDT/aggTrade" in text and "is running" in text and "health: OK" in text
    code, out, err = run(tmp_path, "--config", config, "--daemon", "stop")
    assert code == 0 and "every row was flushed" in err, err
    assert status_json(tmp_path, config)[0] == 3
    report = compare(sim, Files(tmp_path, "spot"), {"BTCUSDT", "ETHUSDT"})
    for stream, r in report.items():
        assert r["expected"] > 0 and not r["missing"] and not r["mismatched"], (stream, r["missing"][:5])


def test_second_start_refused_stale_pidfile_and_stop_when_stopped(simulator, tmp_path, daemon_cleanup):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), seed=32, rate=50)
    config = config_for(tmp_path, sim)
    daemon_cleanup.append(config)
    assert run(tmp_path, "--config", config, "--daemon", "start")[0] == 0
    pid = status_json(tmp_path, config)[1]["pid"]
    code, _, err = run(tmp_path, "--config", config, "--daemon", "start")
    assert code == 1 and f"already running (pid {pid})" in err
    assert status_json(tmp_path, config)[0] == 0 and status_json(tmp_path, config)[1]["pid"] == pid
    # kill -9 the whole daemon: its pidfile stays behind
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    wait_for(lambda: status_json(tmp_path, config)[0] == 1, 20, "status to see a dead daemon")
    code, _, err = run(tmp_path, "--config", config, "--daemon", "start")
    assert code == 0, err
    assert status_json(tmp_path, config)[0] == 0
    assert run(tmp_path, "--config", config, "--daemon", "stop")[0] == 0
    code, _, err = run(tmp_path, "--config", config, "--daemon", "stop")
    assert code == 0 and "not running" in err


def test_bad_config_leaves_nothing_behind(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("symbols: [BTCUSDT]\nflush_intervall: 1\n")
    code, out, err = run(tmp_path, "--config", str(config), "--daemon", "start")
    assert code == 2 and err.count("\n") == 1 and "unknown setting 'flush_intervall'" in err
    assert out == ""
    assert processes_using(str(config)) == []
    assert not (tmp_path / "run").exists()


def test_list_symbols_prints_exactly_the_usdt_symbols(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT", "ETHBTC", "BNBBTC"), extra_symbols=("LUNAUSDT",), rate=5)
    config = config_for(tmp_path, sim)
    code, out, err = run(tmp_path, "--config", config, "--list-symbols", "--quote", "USDT")
    assert code == 0 and out == "BTCUSDT\nETHUSDT\n"
    code, out, _ = run(tmp_path, "--config", config, "--list-symbols")
    assert out.split() == ["BNBBTC", "BTCUSDT", "ETHBTC", "ETHUSDT"]


def test_list_symbols_on_coinm_prints_its_trading_perpetual_and_dated_contracts(simulator, tmp_path):
    sim = simulator(market="coinm", symbols=("BTCUSD_PERP", "ETHUSD_PERP", "BTCUSD_261225"),
                    extra_symbols=("XRPUSD_PERP",), rate=5)
    config = config_for(tmp_path, sim, market=None, symbols=["BTCUSD_PERP"])
    code, out, err = run(tmp_path, "--config", config, "--list-symbols", "--market", "coinm")
    assert code == 0 and out == "BTCUSD_261225\nBTCUSD_PERP\nETHUSD_PERP\n", err
    code, out, _ = run(tmp_path, "--config", config, "--list-symbols", "--market", "coinm", "--quote", "USD")
    assert code == 0 and out.split() == ["BTCUSD_261225", "BTCUSD_PERP", "ETHUSD_PERP"]
    code, out, err = run(tmp_path, "--config", config, "--list-symbols", "--market", "usdm")
    assert code == 2 and out == "" and err.count("\n") == 1 and "BTCUSD_PERP" in err, err


def test_a_certificate_nobody_trusts_is_one_line_that_names_ca_file(simulator, tmp_path):
    sim = simulator(symbols=("BTCUSDT",), rate=5)
    config = config_for(tmp_path, sim, ca_file=None)
    code, out, err = run(tmp_path, "--config", config, "--list-symbols")
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "TLS certificate is not trusted" in err and "set ca_file" in err, err
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    code, _, err = run(tmp_path, "--config", config, "--list-symbols", "--ca-file", str(tmp_path / "not-a-ca.pem"))
    assert code == 2 and err.count("\n") == 1 and "ca_file" in err and "PEM" in err, err


def test_demo_records_and_exits_cleanly(tmp_path):
    code, out, err = run(tmp_path, "--demo", "--demo-seconds", "6", "--data-dir", str(tmp_path / "demo"))
    assert code == 0, err
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "demo") for f in fs if f.endswith(".csv")]
    kinds = {os.path.basename(f).split("-")[1] for f in files}
    assert {"aggTrade", "trade", "depth", "bookTicker", "depthSnapshot", "orderbook"} <= kinds
    assert all(sum(1 for _ in open(f)) > 1 for f in files if "-kline_" not in f)
    assert "pd.read_csv(" in err and "wss://127.0.0.1:" in err


def test_status_shows_what_is_on_disk(tmp_path):
    run(tmp_path, "--demo", "--demo-seconds", "4", "--data-dir", str(tmp_path / "d"))
    code, out, _ = run(tmp_path, "--status", "--data-dir", str(tmp_path / "d"), "--json")
    assert code == 0
    files = json.loads(out)["files"]
    assert files["BTCUSDT/aggTrade"]["files"] == 1 and files["BTCUSDT/aggTrade"]["bytes"] > 0
    assert files["BTCUSDT/aggTrade"]["last_row_time"].endswith("Z")


def test_every_option_has_help_and_the_help_has_examples():
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    text = parser.format_help()
    assert "examples:" in text and "--daemon start" in text


def test_version_is_the_package_version(tmp_path, capsys):
    from importlib.metadata import version

    import binance_streamer
    code, out, err = run(tmp_path, "--version")
    assert (code, out, err) == (0, f"binance-streamer {binance_streamer.__version__}\n", "")
    assert version("binance_streamer") == binance_streamer.__version__      # setup.py reads the same line
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out == out  # main returns, never exits


def test_usage_errors_exit_2_with_one_line(tmp_path):
    for args in (["--daemon", "restart"], ["--quote", "USDT"], ["--force"], ["--list-symbols", "--status"],
                 ["--date", "2026-11-25"], ["--verify", "--date", "25/11/2026"], ["--export", "csv"],
                 ["--verify", "--plot"], ["--zip"], ["--verify", "--zip"]):
        code, out, err = run(tmp_path, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("binance-streamer: error:"), (args, err)


def test_check_status_and_stop_from_another_directory_and_down_while_unreachable(simulator, tmp_path,
                                                                                 daemon_cleanup):
    """`--daemon status --check` exits 0 OK, 1 DEGRADED, 2 DOWN; status and
    stop find the daemon from a directory without its config; an exchange
    that cannot be reached is DOWN with its reason, not RUNNING and fine."""
    sim = simulator(symbols=("BTCUSDT", "ETHUSDT"), seed=37, rate=100)
    config = config_for(tmp_path, sim, streams=["aggTrade", "depth@100ms", "bookTicker"])
    daemon_cleanup.append(config)
    code, _, err = run(tmp_path, "--config", config, "--daemon", "start")
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def check():
        code, out, _ = run(elsewhere, "--daemon", "status", "--check")
        return code, out.strip()

    wait_for(lambda: check()[0] == 0, 60, "health OK, seen from another directory")
    assert check()[1].startswith("OK: ")
    code, out, _ = run(elsewhere, "--daemon", "status", "--json")
    report = json.loads(out)
    assert code == 0 and report["run_dir"] == str(tmp_path / "run") and "registry" in report["looked"]

    sim.faults(unreachable=6)
    wait_for(lambda: check()[0] == 2, 20, "DOWN while the exchange cannot be reached")
    code, line = check()
    assert line.startswith("DOWN: no connection to the exchange is up") and "\n" not in line, line
    report = json.loads(run(elsewhere, "--daemon", "status", "--json")[1])
    assert report["health"]["state"] == "DOWN"
    assert not any(c["connected"] for c in report["connections"])
    wait_for(lambda: check()[0] == 0, 90, "OK again once the exchange answers and the books are in sync")

    code, _, err = run(elsewhere, "--daemon", "stop")
    assert code == 0 and "every row was flushed" in err, err
    code, line = check()
    assert code == 2 and line.startswith("DOWN: the recorder is not running (looked in ") and "registry" in line
    code, _, err = run(elsewhere, "--daemon", "stop")
    assert code == 0 and "not running (looked in" in err and str(elsewhere / "run") in err


def test_start_that_cannot_connect_says_why_and_exits_1(simulator, tmp_path, daemon_cleanup):
    """A wrong ws_url (the handshake answered 404) is not a successful start."""
    sim = simulator(symbols=("BTCUSDT",), seed=39, rate=50)
    config = config_for(tmp_path, sim, symbols=["BTCUSDT"], ws_url=sim.ws_base + "/wrong/path")
    daemon_cleanup.append(config)
    code, _, err = run(tmp_path, "--config", config, "--daemon", "start")
    assert code == 1, err
    assert "no connection to the exchange is up" in err and "HTTP 404: check ws_url" in err, err
    assert "keeps trying" in err and err.count("\n") == 1, err
    code, _, err = run(tmp_path, "--config", config, "--daemon", "stop")
    assert code == 0 and "stopped" in err, err
