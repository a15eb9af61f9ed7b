"""Command line: ``binance-streamer`` and ``python -m binance_streamer``.

The options are built from the settings table (settings.py); ``main``
returns an exit code: 0 done, 1 runtime error, 2 usage or configuration
error, 130 stopped with Ctrl-C.
"""

import argparse
import logging
import multiprocessing
import os
import sys

from . import config as configmod
from . import settings
from .config import ConfigError

log = logging.getLogger(__name__)

PROG = "binance-streamer"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONFIG = "config.yaml"

EXAMPLES = """examples:
  binance-streamer --config config.yaml                 record in the foreground until Ctrl-C
  binance-streamer --symbols BTCUSDT,ETHUSDT --market usdm --data-dir /srv/binance
"""


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = Parser(prog=PROG, description="Record Binance spot and USD-M market data to CSV files, "
                                      "with exact local order books.",
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH",
                   help=f"YAML settings file (default: ./{DEFAULT_CONFIG} when it exists)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    group = p.add_argument_group("settings (override the config file)")
    for s in settings.SETTINGS:
        if s.flag:
            kwargs = {"dest": s.name, "help": s.help, "default": None, "metavar": s.metavar}
            if s.choices:
                kwargs["choices"] = s.choices
                kwargs.pop("metavar")
            group.add_argument(s.option, **kwargs)
    return p


def load_config(args):
    path = args.config
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    overrides = {s.name: getattr(args, s.name) for s in settings.SETTINGS if s.flag}
    return configmod.load(path, overrides)


def prepare_dirs(cfg):
    """Create the directories the recorder writes to; a clear error if it cannot."""
    for key in ("data_dir", "log_dir", "run_dir"):
        path = getattr(cfg, key)
        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, ".write-test")
            with open(probe, "w") as f:
                f.write("ok")
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"{key} '{path}' is not writable ({exc.strerror}); choose another "
                              f"directory with --{key.replace('_', '-')} or fix its permissions") from None


def check_exchange(cfg):
    """Ask exchangeInfo whether every symbol trades; returns the REST weight limit."""
    from .binance.endpoints import DEFAULT_WEIGHT_LIMIT
    from .binance.rest import RestBudget, RestClient, RestError, trading_symbols, weight_limit

    budget = RestBudget(multiprocessing.get_context("spawn"), DEFAULT_WEIGHT_LIMIT[cfg.market])
    client = RestClient(cfg, budget)
    try:
        info = client.get("exchangeInfo", {}, 0, attempts=3, quiet=True)
    except RestError as exc:
        if exc.status == 404:
            raise ConfigError(f"rest_url '{cfg.rest_url}' has no {cfg.market} exchangeInfo (HTTP 404); "
                              f"point rest_url at a {cfg.market} endpoint or change market") from None
        raise RuntimeError(f"cannot read exchangeInfo from {cfg.rest_url}: {exc.reason}; check rest_url, "
                           "the network or the proxy setting") from None
    trading = {s["symbol"] for s in trading_symbols(info, cfg.market)}
    for symbol in cfg.symbols:
        if symbol not in trading:
            raise ConfigError(f"symbol '{symbol}' is not a TRADING {cfg.market} symbol according to "
                              f"{cfg.rest_url}; check --symbols or run --list-symbols")
    return weight_limit(info)


def record(cfg, to_stderr=True):
    """Run the recorder in the foreground until SIGTERM or SIGINT."""
    from . import logs
    from .manager import ProcessManager

    limit = check_exchange(cfg) if cfg.validate_symbols else None
    ctx = multiprocessing.get_context("spawn")
    log_q = ctx.Queue()
    listener = logs.start_listener(cfg, log_q, to_stderr)
    try:
        manager = ProcessManager(cfg, weight_limit=cfg.rest_weight_limit or limit, ctx=ctx)
        manager.build(log_q)
        log.info("recording %s %s: %s into %s", cfg.market, ",".join(cfg.streams), ",".join(cfg.symbols),
                 cfg.data_dir)
        sig = manager.run()
    finally:
        listener.stop()
    return EXIT_INTERRUPTED if sig == 2 else EXIT_OK


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}; see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    debug = args.debug
    try:
        cfg = load_config(args)
        prepare_dirs(cfg)
        return record(cfg)
    except ConfigError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError) as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def run():
    """Console-script entry point."""
    sys.exit(main())
