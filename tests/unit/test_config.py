import os
import pickle

import pytest

from binance_streamer import config, settings
from binance_streamer.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_then_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("market: usdm\nsymbols: [btcusdt]\nbatch_size: 10\n")
    cfg = config.load(str(path), {"batch_size": 20, "data_dir": None})
    assert cfg.market == "usdm" and cfg.symbols == ["BTCUSDT"] and cfg.batch_size == 20
    assert cfg.streams == settings.DEFAULT_STREAMS["usdm"]
    assert cfg.ws_public_url == "wss://fstream.binance.com/public"
    assert cfg.ws_market_url == "wss://fstream.binance.com/market"
    assert cfg.snapshot_depth == 1000
    assert cfg.data_dir == os.path.join(str(tmp_path), "data")   # relative to the config file


def test_config_is_frozen_and_picklable():
    cfg = config.load(None, {})
    with pytest.raises(AttributeError):
        cfg.market = "usdm"
    assert pickle.loads(pickle.dumps(cfg)).as_dict() == cfg.as_dict()


@pytest.mark.parametrize("text, message", [
    ("flush_intervall: 2", "unknown setting 'flush_intervall' in"),
    ("batch_size: many", "batch_size in"),
    ("batch_size: 0", "must be at least 1"),
    ("market: margin", "market in"),
    ("symbols: BTCUSDT", None),
    ("symbols: []", "is empty"),
    ("symbols: [BTC-USDT]", "is not a Binance symbol name"),
    ("streams: [aggTrades]", "did you mean 'aggTrade'"),
    ("streams: [depth, depth@100ms]", "lists 2 depth streams"),
    ("streams: [kline_2m]", "unknown kline interval"),
    ("market: usdm\nstreams: [kline_1s]", "USD-M futures has no 1 s klines"),
    ("market: usdm\nstreams: [trade]", "no trade stream"),
    ("snapshot_depth: 6000", "at most 5000"),
    ("market: usdm\nsnapshot_depth: 300", "must be one of"),
    ("market: coinm\nstreams: [kline_1s]", "COIN-M futures has no 1 s klines"),
    ("market: coinm\nstreams: [trade]", "COIN-M futures has no trade stream"),
    ("market: coinm\nsnapshot_depth: 5000", "must be one of 5, 10, 20, 50, 100, 500, 1000 on coinm"),
    ("market: coinm\nsymbols: [BTCUSDT]", "is not a Binance symbol name on coinm (e.g. BTCUSD_PERP)"),
    ("market: coinm\nstreams: [depth@1s]", "is not a coinm diff-depth stream"),
    ("proxy: ftp://x", "must be a URL"),
    ("ws_url: stream.binance.com", "must be a URL"),
    ("validate_symbols: maybe", "true or false"),
    ("metrics_port: 65536", "metrics_port in"),
    ("metrics_port: -1", "must be at least 0"),
    ("metrics_host: 'http://0.0.0.0'", "metrics_host in"),
    ("metrics_host: ''", "must be an IP address or a host name"),
    ("metrics_host: 9410", "must be text"),
    ("- a list", "must be a mapping"),
    ("market: [", "not valid YAML"),
])
def test_bad_settings_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    if message is None:
        assert config.load(str(path)).symbols == ["BTCUSDT"]
        return
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/c.yaml")


def test_shipped_config_yaml_documents_every_setting():
    with open(os.path.join(REPO, "config.yaml")) as f:
        assert f.read() == settings.render_yaml()
    cfg = config.load(os.path.join(REPO, "config.yaml"))
    assert cfg.market == "spot"


def test_every_setting_has_help_and_a_valid_default():
    for s in settings.SETTINGS:
        assert s.help and s.section
        if s.default is not None:
            config._coerce(s, s.default, "the defaults")


def test_ca_file_must_be_a_pem_file_of_certificate_authorities(tmp_path, monkeypatch):
    # checked here, not in a new process (tests/integration/test_footprint.py runs that one)
    monkeypatch.setattr(config, "_ca_file_stats_apart", config.ca_file_stats)
    with pytest.raises(ConfigError, match="ca_file .* does not exist; give the PEM file"):
        config.load(None, {"ca_file": str(tmp_path / "missing.pem")})
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="ca_file .* cannot be loaded .*; give a PEM file of CA certificates"):
        config.load(None, {"ca_file": str(tmp_path / "junk.pem")})
    import trustme
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "c.yaml").write_text("ca_file: ca.pem\n")
    assert config.load(str(tmp_path / "c.yaml")).ca_file == str(tmp_path / "ca.pem")     # relative to the file


def test_metrics_endpoint_is_off_unless_a_port_is_given():
    cfg = config.load(None, {})
    assert cfg.metrics_port == 0 and cfg.metrics_host == "127.0.0.1"
    for host in ("::1", "0.0.0.0", "localhost", "recorder-1.example.com"):
        assert config.load(None, {"metrics_host": host, "metrics_port": "9410"}).metrics_host == host


def test_coinm_defaults_endpoints_and_one_websocket_root(tmp_path):
    """COIN-M: dapi and dstream, its own default symbols, 1000-level
    snapshots; every stream on one root (<ws_url>/stream), as dstream serves them."""
    from binance_streamer.binance.endpoints import connection_plan
    cfg = config.load(None, {"market": "coinm"}, base_dir=str(tmp_path))
    assert (cfg.rest_url, cfg.ws_url) == ("https://dapi.binance.com", "wss://dstream.binance.com")
    assert cfg.symbols == ["BTCUSD_PERP", "ETHUSD_PERP"] and cfg.snapshot_depth == 1000
    assert cfg.streams == settings.DEFAULT_STREAMS["coinm"] and "trade" not in cfg.streams
    plan = connection_plan(cfg.replace(symbols=["BTCUSD_PERP", "BTCUSD_261225"]), ["BTCUSD_PERP", "BTCUSD_261225"])
    assert [(group, url.split("?")[0]) for group, url, _ in plan] == [("coinm", "wss://dstream.binance.com/stream")]
    assert "btcusd_261225@depth@100ms" in plan[0][2]
    mine = config.load(None, {"market": "coinm", "symbols": ["btcusd_261225"], "ws_url": "wss://example.org/x/"},
                       base_dir=str(tmp_path))
    assert mine.symbols == ["BTCUSD_261225"] and connection_plan(mine, mine.symbols)[0][1].startswith(
        "wss://example.org/x/stream?streams=")
    usdm = config.load(None, {"market": "usdm"}, base_dir=str(tmp_path))
    assert usdm.symbols == ["BTCUSDT", "ETHUSDT"] and {g for g, _, _ in connection_plan(usdm, usdm.symbols)} == \
        {"public", "market"}
