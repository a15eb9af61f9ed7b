"""Configuration: defaults < YAML file < command-line flags.

The result is a frozen, picklable :class:`Config` with every value checked,
market defaults filled in and paths made absolute (the daemon changes
directory). Errors are :class:`ConfigError` with a one-line message that
names the key or path and says what to do.
"""

import difflib
import ipaddress
import json
import os
import re
import subprocess
import sys

from . import markets, series
from .binance.endpoints import BASE_URLS
from .settings import BY_NAME, DEFAULT_STREAMS, DEPTH_SPEEDS, KLINE_INTERVALS, MARKETS, SETTINGS
from .streams import FUTURES_STREAMS, file_stream

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
_CONTRACT = re.compile(r"^[A-Z0-9]{2,30}_[A-Z0-9]{2,12}$")     # COIN-M: BTCUSD_PERP, BTCUSD_261225
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class ConfigError(ValueError):
    """A setting a user can fix; the message is one line."""


class Config:
    """Read-only settings; attribute access, picklable for child processes."""

    __slots__ = ("_values",)

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Config is read-only")

    def __reduce__(self):
        return (Config, (self._values,))

    def as_dict(self):
        return dict(self._values)

    def replace(self, **changes):
        return Config({**self._values, **changes})


def _coerce(setting, value, where):
    """Check and convert one value; ``where`` names its source for messages."""
    name, kind = setting.name, setting.type
    if value is None:
        return None
    if kind == "list":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} in {where} must be a list of names, e.g. [BTCUSDT, ETHUSDT]")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"{name} in {where} must be true or false, not {value!r}")
        return value
    if kind in ("int", "float"):
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value) if kind == "int" else float(value)
            if kind == "int" and isinstance(value, float) and value != int(value):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{name} in {where} must be a {'whole ' if kind == 'int' else ''}number, "
                              f"not {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} in {where} must be a finite number, not {value!r}")
        if setting.minimum is not None and number < setting.minimum:
            raise ConfigError(f"{name} in {where} must be at least {setting.minimum}, not {number}")
        if setting.maximum is not None and number > setting.maximum:
            raise ConfigError(f"{name} in {where} must be at most {setting.maximum:g}, not {number:g}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{name} in {where} must be text, not {value!r}")
    if kind == "choice":
        if setting.name == "log_level":
            value = value.upper()
        if value not in setting.choices:
            raise ConfigError(f"{name} in {where} must be one of {', '.join(setting.choices)}, not {value!r}")
    if kind == "url" and not re.match(r"^(wss?|https?|socks5h?)://[^\s/]+", value):
        raise ConfigError(f"{name} in {where} must be a URL such as wss://host:port or https://host, "
                          f"not {value!r}")
    return value


def read_yaml(path):
    """The settings in a YAML file, checked for unknown keys."""
    import yaml      # here, not at the top: every child unpickles a Config, none reads YAML
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist; pass --config with an existing file") from None
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{at}; fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must be a mapping of setting: value")
    for key in raw:
        if key not in BY_NAME:
            close = difflib.get_close_matches(str(key), list(BY_NAME), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else "; see the configuration reference in README.md"
            raise ConfigError(f"unknown setting '{key}' in '{path}'{hint}")
    return raw


def load(path=None, overrides=None, base_dir=None):
    """Build the Config: defaults, then the YAML file at ``path``, then ``overrides``."""
    values = {s.name: s.default for s in SETTINGS}
    where = {s.name: "the defaults" for s in SETTINGS}
    if path is not None:
        for key, value in read_yaml(path).items():
            values[key] = _coerce(BY_NAME[key], value, f"'{path}'")
            where[key] = f"'{path}'"
        base_dir = base_dir or os.path.dirname(os.path.abspath(path))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(BY_NAME[key], value, BY_NAME[key].option)
            where[key] = BY_NAME[key].option
    return Config(resolve(values, where, base_dir or os.getcwd()))


def resolve(values, where, base_dir):
    """Fill market defaults, check combinations, make paths absolute."""
    v = dict(values)
    market = v["market"]
    if market not in MARKETS:
        raise ConfigError(f"market must be one of {', '.join(MARKETS)}, not {market!r}")
    example = markets.EXAMPLE_SYMBOL[market]
    symbols = [s.upper() for s in (markets.DEFAULT_SYMBOLS[market] if v["symbols"] is None else v["symbols"])]
    if not symbols:
        raise ConfigError(f"symbols in {where['symbols']} is empty; name at least one symbol, e.g. {example}")
    for s in symbols:
        if not (_CONTRACT if market == markets.COINM else _SYMBOL).match(s):
            raise ConfigError(f"symbol {s!r} in {where['symbols']} is not a Binance symbol name on {market} "
                              f"(e.g. {example})")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"symbols in {where['symbols']} lists a symbol twice")
    v["symbols"] = symbols
    v["streams"] = check_streams(market, v["streams"] or DEFAULT_STREAMS[market], where["streams"])
    v["series"] = check_series(market, v["series"], v["series_period"], where["series"])
    for key in ("ws_url", "rest_url"):
        v[key] = (v[key] or BASE_URLS[market][key]).rstrip("/")
    v["ws_public_url"] = (v["ws_public_url"] or v["ws_url"] + "/public").rstrip("/")
    v["ws_market_url"] = (v["ws_market_url"] or v["ws_url"] + "/market").rstrip("/")
    v["snapshot_depth"] = check_snapshot_depth(market, v["snapshot_depth"], where["snapshot_depth"])
    if v["proxy"] and not re.match(r"^(https?|socks5h?)://", v["proxy"]):
        raise ConfigError(f"proxy in {where['proxy']} must start with http://, https://, socks5:// or socks5h://")
    if v["restart_max_delay"] < v["restart_min_delay"] or v["reconnect_max_delay"] < v["reconnect_min_delay"]:
        raise ConfigError("a *_max_delay setting is smaller than its *_min_delay; raise the maximum")
    for url in v["nats_url"]:
        if not re.match(r"^(nats|tls)://[^\s/]+", url):
            raise ConfigError(f"nats_url in {where['nats_url']} must be a NATS URL such as nats://host:4222 or "
                              f"tls://host:4222 (the NATS protocol, not HTTP), not {url!r}")
    v["metrics_host"] = check_host(v["metrics_host"], where["metrics_host"])
    for key in ("data_dir", "log_dir", "run_dir"):
        v[key] = os.path.abspath(os.path.join(base_dir, os.path.expanduser(v[key])))
    if v["archive_dir"]:
        v["archive_dir"] = check_archive_dir(v, base_dir, where["archive_dir"])
    if v["ca_file"]:
        v["ca_file"] = check_ca_file(os.path.abspath(os.path.join(base_dir, os.path.expanduser(v["ca_file"]))),
                                     where["ca_file"])
    return v


def check_snapshot_depth(market, depth, where):
    """The snapshot size: the market's default, or one Binance accepts."""
    depth = depth or markets.SNAPSHOT_DEPTH[market]
    limits, top = markets.SNAPSHOT_LIMITS[market], markets.SNAPSHOT_MAX[market]
    if limits is None and depth > top:
        raise ConfigError(f"snapshot_depth in {where} is at most {top} on {market}, not {depth}")
    if limits is not None and depth not in limits:
        raise ConfigError(f"snapshot_depth in {where} must be one of "
                          f"{', '.join(map(str, limits))} on {market}, not {depth}")
    return depth


def check_archive_dir(v, base_dir, where):
    """archive_dir made absolute: a folder other than data_dir, used only with retention_days."""
    path = os.path.abspath(os.path.join(base_dir, os.path.expanduser(v["archive_dir"])))
    if not v["retention_days"]:
        raise ConfigError(f"archive_dir in {where} is set but retention_days is 0 (keep every day); "
                          "set retention_days to the days to keep on data_dir")
    if path == v["data_dir"]:
        raise ConfigError(f"archive_dir in {where} is data_dir itself; choose another directory")
    return path


def check_ca_file(path, where):
    """A PEM file that TLS can load certificate authorities from. The file is
    loaded by a short-lived Python process unless ssl is loaded here already:
    ssl maps about 5 MB of OpenSSL into a process for its whole life, and the
    manager (where a recorder's configuration is loaded) never uses TLS."""
    if not os.path.exists(path):
        raise ConfigError(f"ca_file '{path}' in {where} does not exist; give the PEM file of the CA to trust")
    loaded, error = (ca_file_stats if "ssl" in sys.modules else _ca_file_stats_apart)(path)
    if error is not None:
        raise ConfigError(f"ca_file '{path}' in {where} cannot be loaded ({error}); "
                          "give a PEM file of CA certificates")
    if not loaded:
        raise ConfigError(f"ca_file '{path}' in {where} holds no CA certificate; give a PEM file of CA certificates")
    return path


def ca_file_stats(path):
    """``(CA certificates loaded from path, None)``, or ``(0, why it cannot be loaded)``."""
    import ssl
    try:
        return ssl.create_default_context(cafile=path).cert_store_stats()["x509_ca"], None
    except (OSError, ssl.SSLError) as exc:
        return 0, str(getattr(exc, "strerror", None) or exc)


_CA_CHECK = ("import json, sys\n"
             "from binance_streamer.config import ca_file_stats\n"
             "print(json.dumps(ca_file_stats(sys.argv[1])))\n")


def _ca_file_stats_apart(path):
    """:func:`ca_file_stats` in a Python process of its own, which takes OpenSSL with it when it ends."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))
    try:
        out = subprocess.run([sys.executable, "-c", _CA_CHECK, path], capture_output=True, text=True, timeout=60,
                             env=env)
    except (OSError, subprocess.SubprocessError) as exc:
        return 0, f"the check in a new Python process failed: {exc}"
    try:
        loaded, error = json.loads(out.stdout)
    except (ValueError, TypeError):
        why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return 0, f"the check in a new Python process failed: {why}"
    return loaded, error


_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_host(host, where):
    """An IP address or a host name to listen on (the metrics endpoint)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOST.match(host):
        raise ConfigError(f"metrics_host in {where} must be an IP address or a host name, e.g. 127.0.0.1, "
                          f"not {host!r}")
    return host


def check_series(market, entries, period, where):
    """The REST series as ``name:period`` (``fundingRate``: no period): all of
    them by default on usdm, none on spot (where naming one is an error)."""
    if entries is None:
        entries = list(series.SERIES) if market == "usdm" else []
    if entries and market == "spot":
        raise ConfigError(f"series in {where}: the REST series are USD-M only; remove series or set market: usdm")
    try:
        plan = series.parse_setting(entries, period)
    except ValueError as exc:
        raise ConfigError(f"series in {where}: {exc}") from None
    return [name if name == "fundingRate" else f"{name}:{p}" for name, p in plan]


def check_streams(market, streams, where):
    """Known stream names for the market, one depth stream at most."""
    out, depth = [], []
    for s in streams:
        if s.startswith("kline_"):
            if markets.futures(market) and s == "kline_1s":
                raise ConfigError(f"stream 'kline_1s' in {where}: {markets.title(market)} has no 1 s klines; "
                                  "use kline_1m or longer")
            if s[6:] not in KLINE_INTERVALS:
                raise ConfigError(f"stream {s!r} in {where} has an unknown kline interval; "
                                  f"use one of {', '.join(KLINE_INTERVALS)}")
        elif s.startswith("depth"):
            if s not in DEPTH_SPEEDS[market]:
                raise ConfigError(f"stream {s!r} in {where} is not a {market} diff-depth stream; "
                                  f"use one of {', '.join(DEPTH_SPEEDS[market])}")
            depth.append(s)
        elif s == "trade" and markets.futures(market):
            raise ConfigError(f"stream 'trade' in {where}: {markets.title(market)} has no trade stream; "
                              "record aggTrade")
        elif s in FUTURES_STREAMS:
            if not markets.futures(market):
                raise ConfigError(f"stream {s!r} in {where}: spot has no {file_stream(s)} stream (futures only); "
                                  "remove it or record market usdm or coinm")
        elif s not in ("aggTrade", "trade", "bookTicker"):
            close = difflib.get_close_matches(s, ["aggTrade", "trade", "bookTicker", "depth@100ms", "kline_1m",
                                                  *FUTURES_STREAMS], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown stream {s!r} in {where}{hint}")
        if s in out:
            raise ConfigError(f"stream {s!r} is listed twice in {where}")
        out.append(s)
    if len(depth) > 1:
        raise ConfigError(f"{where} lists {len(depth)} depth streams; keep one of {', '.join(depth)}")
    return out
