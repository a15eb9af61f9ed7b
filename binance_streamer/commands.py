"""The one-shot commands: --list-symbols, --status (what is on disk), --demo."""

import os
import sys
import tempfile
import time

from . import compression, csvfiles
from .binance.endpoints import SPLIT_WS
from .config import ConfigError


def read_exchange_info(cfg):
    """exchangeInfo for a command run once, in this process; one-line errors."""
    from .binance.budgets import RestBudget
    from .binance.endpoints import DEFAULT_WEIGHT_LIMIT
    from .binance.rest import RestClient, RestError, check_exchange_info
    client = RestClient(cfg, RestBudget(None, DEFAULT_WEIGHT_LIMIT[cfg.market]))
    try:
        return client.get("exchangeInfo", {}, 0, attempts=3, quiet=True, check=check_exchange_info)
    except RestError as exc:
        if exc.status == 404:
            raise ConfigError(f"rest_url '{cfg.rest_url}' has no {cfg.market} exchangeInfo (HTTP 404); "
                              f"point rest_url at a {cfg.market} endpoint or change market") from None
        raise RuntimeError(f"cannot read exchangeInfo from {cfg.rest_url}: {exc.reason}; check rest_url, "
                           "the network or the proxy setting") from None


def list_symbols(cfg, quote=None, out=sys.stdout):
    """TRADING symbols of the configured market, one per line on stdout."""
    from .binance.rest import trading_symbols
    info = read_exchange_info(cfg)
    symbols = [s["symbol"] for s in trading_symbols(info, cfg.market)
               if quote is None or s.get("quoteAsset") == quote.upper()]
    for symbol in sorted(symbols):
        out.write(symbol + "\n")
    return len(symbols)


def inventory(cfg):
    """Per symbol and stream: days recorded, files, bytes, time of the last row."""
    found = {}
    for symbol, stream, day, path in csvfiles.day_files(cfg.data_dir, cfg.market):
        entry = found.setdefault(f"{symbol}/{stream}", {"days": [], "files": 0, "bytes": 0, "last": None,
                                                       "compressed": 0})
        if day not in entry["days"][-1:]:
            entry["days"].append(day)       # a compressed day with late rows beside it is one day
        entry["files"] += 1
        entry["compressed"] += csvfiles.codec_of(path) is not None
        entry["bytes"] += os.path.getsize(path)
        entry["last"] = path
    for entry in found.values():
        entry["last_row_time"] = _last_row_time(entry.pop("last"))
        entry["first_day"], entry["last_day"] = entry["days"][0], entry["days"][-1]
        entry["days"] = len(entry["days"])
    return found


def _last_row_time(path):
    """UTC time of the last row's local receive time, or None."""
    try:
        if csvfiles.codec_of(path) is None and compression.siblings(path)[1] is None:
            with open(path, "rb") as f:
                header = f.readline().decode().strip().split(",")
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 65536))
                lines = [line for line in f.read().split(b"\n") if line]
        else:               # compressed: read through (a past day's file, once per --status)
            with compression.open_day(path) as f:
                header = f.readline().decode().strip().split(",")
                tail = b""
                for chunk in iter(lambda: f.read(compression.CHUNK), b""):
                    tail = (tail + chunk)[-65536:]
            lines = [b"header"] + [line for line in tail.split(b"\n") if line]
    except (OSError, EOFError):
        return None
    for col in ("local_time_us", "response_time_us"):
        if col in header and len(lines) > 1:
            value = lines[-1].decode().split(",")[header.index(col)]
            if value.isdigit():
                return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(value) / 1e6)) + "Z"
    return None


def format_inventory(cfg, found):
    lines = [f"market {cfg.market}; symbols {','.join(cfg.symbols)}; streams {','.join(cfg.streams)}",
             f"data_dir {cfg.data_dir}; log_dir {cfg.log_dir}; run_dir {cfg.run_dir}",
             f"endpoints: ws {cfg.ws_public_url + ' and ' + cfg.ws_market_url if cfg.market in SPLIT_WS else cfg.ws_url}"
             f"; rest {cfg.rest_url}", ""]
    if not found:
        return "\n".join(lines + ["nothing recorded yet"])
    lines.append(f"{'symbol/stream':<26} {'days':>4} {'first day':>10} {'last day':>10} {'files':>5} {'MB':>9}  last row")
    for key, e in sorted(found.items()):
        lines.append(f"{key:<26} {e['days']:>4} {e['first_day']:>10} {e['last_day']:>10} {e['files']:>5} "
                     f"{e['bytes'] / 2**20:>9.2f}  {e['last_row_time'] or '-'}")
    return "\n".join(lines)


def demo(cfg, record, seconds, data_dir=None, out=sys.stderr):
    """Start the built-in simulator and record from it for ``seconds``."""
    from .simulator import SimConfig, Simulator
    base = data_dir or tempfile.mkdtemp(prefix="binance-streamer-demo-")
    symbols = tuple(cfg.symbols)
    with Simulator(SimConfig(market=cfg.market, symbols=symbols, seed=1, rate=100, journal="off")) as sim:
        demo_cfg = cfg.replace(ws_url=sim.ws_base, ws_public_url=sim.ws_urls.get("public", ""),
                               ws_market_url=sim.ws_urls.get("market", ""), rest_url=sim.rest_url,
                               ca_file=sim.ca_file,
                               data_dir=os.path.abspath(base), log_dir=os.path.join(os.path.abspath(base), "logs"),
                               run_dir=os.path.join(os.path.abspath(base), "run"), validate_symbols=True)
        for d in (demo_cfg.data_dir, demo_cfg.log_dir, demo_cfg.run_dir):
            os.makedirs(d, exist_ok=True)
        out.write(f"demo: simulated {cfg.market} exchange at {sim.rest_url} and {sim.ws_base} (TLS, its own CA); recording "
                  f"{','.join(symbols)} for {seconds:.0f} s into {demo_cfg.data_dir}\n")
        code = record(demo_cfg, to_stderr=False, duration=seconds)
    found = inventory(demo_cfg)
    out.write(format_inventory(demo_cfg, found) + "\n\n")
    files = sorted(f for f in os.listdir(os.path.join(demo_cfg.data_dir, cfg.market, symbols[0]))
                   if "-aggTrade-" in f) if found else []
    if files:
        path = os.path.join(demo_cfg.data_dir, cfg.market, symbols[0], files[-1])
        out.write(f"load it with pandas:\n  import pandas as pd\n  pd.read_csv({path!r})\n")
    return code, found
