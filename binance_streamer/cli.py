"""Command line: ``binance-streamer`` and ``python -m binance_streamer``.

The options are built from the settings table (settings.py); ``main``
returns an exit code: 0 done, 1 runtime error, 2 usage or configuration
error, 130 stopped with Ctrl-C.
"""

import argparse
import json
import logging
import multiprocessing
import os
import signal
import sys

from . import __version__, settings
from . import config as configmod
from .config import ConfigError

log = logging.getLogger(__name__)

PROG = "binance-streamer"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_CONFIG = "config.yaml"

EXAMPLES = """examples:
  binance-streamer --demo                               see it work against the built-in simulator
  binance-streamer --config config.yaml                 record in the foreground until Ctrl-C
  binance-streamer --daemon start                       record in the background (then status, stop)
  binance-streamer --daemon status --json               machine-readable status (LSB exit codes)
  binance-streamer --list-symbols --quote USDT          TRADING symbols, one per line
  binance-streamer --status                             the configuration and what is on disk
  binance-streamer --symbols BTCUSDT,ETHUSDT --market usdm --data-dir /srv/binance
  binance-streamer --symbols BTCUSD_PERP,BTCUSD_261225 --market coinm --data-dir /srv/binance
  binance-streamer --verify --date 2026-11-25           is every hole in the gap ledger? (exit 1 if not)
  binance-streamer --export binance-vision --date 2026-11-25 --out vision/
  binance-streamer --export binance-vision --zip --date 2026-11-25 --out vision/   Binance's .zip + .CHECKSUM
  binance-streamer --plot --date 2026-11-25 --symbol BTCUSDT
  binance-streamer --merge /data/eu /data/us --out /data/merged   two recorders' files into one, holes filled
"""


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def build_parser():
    p = Parser(prog=PROG, description="Record Binance spot, USD-M and COIN-M futures market data to CSV files, "
                                      "with exact local order books.",
               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH",
                   help=f"YAML settings file (default: ./{DEFAULT_CONFIG} when it exists)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--daemon", choices=("start", "stop", "status"),
                      help="start the recorder in the background, stop it (flushing everything), or show its status")
    what.add_argument("--list-symbols", action="store_true",
                      help="print the market's TRADING symbols, one per line, and exit")
    what.add_argument("--status", action="store_true", help="print the resolved configuration and what is on disk")
    what.add_argument("--demo", action="store_true",
                      help="record from the built-in simulator for --demo-seconds (no network needed)")
    what.add_argument("--verify", action="store_true",
                      help="check the recorded files: id continuity, every hole in the gap ledger, "
                           "books rebuilt from snapshots and diffs; exit 1 on any unexplained problem")
    what.add_argument("--export", choices=("binance-vision",),
                      help="write aggTrades, trades and klines of --date in data.binance.vision's format to --out")
    what.add_argument("--plot", action="store_true",
                      help="draw a PNG of --symbol's --date: price, messages per second, gaps shaded")
    what.add_argument("--merge", nargs=2, metavar=("DIR_A", "DIR_B"),
                      help="merge two recordings of the same symbols (each a recorder's data_dir) into --out DIR: "
                           "the union of their rows, and a gap ledger of only the holes both have")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="with --verify (default: every day), --export, --plot")
    p.add_argument("--symbol", metavar="SYM", help="with --verify (default: all), --export (default: all), --plot")
    p.add_argument("--out", metavar="PATH",
                   help="with --export: output folder; with --merge: the new recording's folder (new or empty); "
                        "with --plot: the PNG (default: SYMBOL-DATE.png)")
    p.add_argument("--zip", action="store_true",
                   help="with --export binance-vision: data.binance.vision's own files: each CSV in a .zip with a "
                        ".zip.CHECKSUM (sha256), under OUT/data/")
    p.add_argument("--quote", metavar="ASSET", help="with --list-symbols: only symbols quoted in ASSET, e.g. USDT")
    p.add_argument("--json", action="store_true", help="with --daemon status or --status: print JSON")
    p.add_argument("--force", action="store_true", help="with --daemon stop: kill at once (unflushed rows are lost)")
    p.add_argument("--check", action="store_true",
                   help="with --daemon status: print the health in one line and exit 0 OK, 1 DEGRADED, 2 DOWN")
    p.add_argument("--demo-seconds", type=float, default=30.0, metavar="N",
                   help="how long --demo records (default 30)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                   help="print the program's version and exit")
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
            probe = os.path.join(path, f".write-test-{os.getpid()}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"{key} '{path}' is not writable ({exc.strerror}); choose another "
                              f"directory with --{key.replace('_', '-')} or fix its permissions") from None


def check_exchange(cfg):
    """check_symbols in a process of its own, which ends with its answer: the
    HTTP client it imports (16 MB) stays out of the recorder's memory for the
    run. Raises what check_symbols raised."""
    from . import proc
    proc.without_resource_tracker()           # before the first child (proc.py)
    ctx = multiprocessing.get_context("spawn")
    answer, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_check_apart, args=(cfg, sender), name="exchange-check")
    child.start()
    sender.close()
    try:
        ok, value = answer.recv()
    except EOFError:
        child.join(10)
        ok, value = False, RuntimeError(f"the exchangeInfo check ended without an answer (exit code "
                                        f"{child.exitcode}); run again, or with validate_symbols: false")
    finally:
        answer.close()
        child.join(10)
    if not ok:
        raise value
    return value


def _check_apart(cfg, sender):
    """check_exchange's child: ``(True, weight limit)`` or ``(False, the exception)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C is the parent's to handle
    try:
        answer = (True, check_symbols(cfg))
    except Exception as exc:        # the parent raises it, as if it had asked itself
        answer = (False, exc if isinstance(exc, (ConfigError, RuntimeError)) else RuntimeError(str(exc)))
    sender.send(answer)
    sender.close()


def check_symbols(cfg):
    """Ask exchangeInfo whether every symbol trades; returns the REST weight limit."""
    from .binance.rest import trading_symbols, weight_limit
    from .commands import read_exchange_info

    info = read_exchange_info(cfg)
    trading = {s["symbol"] for s in trading_symbols(info, cfg.market)}
    for symbol in cfg.symbols:
        if symbol not in trading:
            raise ConfigError(f"symbol '{symbol}' is not a TRADING {cfg.market} symbol according to "
                              f"{cfg.rest_url}; check --symbols or run --list-symbols")
    return weight_limit(info)


def record(cfg, to_stderr=True, duration=None):
    """Run the recorder until SIGTERM or SIGINT (or for ``duration`` seconds),
    holding ``data_dir`` for itself."""
    from .daemon import lock_data_dir
    data_lock = lock_data_dir(cfg.data_dir)
    try:
        return _record(cfg, to_stderr, duration)
    finally:
        data_lock.release(remove=False)


def _record(cfg, to_stderr, duration):
    from . import logs, proc
    from .manager import ProcessManager

    limit = check_exchange(cfg) if cfg.validate_symbols else None
    proc.without_resource_tracker()
    ctx = multiprocessing.get_context("spawn")
    listener, log_queue = logs.start_listener(cfg, to_stderr)
    try:
        manager = ProcessManager(cfg, weight_limit=cfg.rest_weight_limit or limit, ctx=ctx)
        manager.build(log_queue)
        log.info("recording %s %s: %s into %s", cfg.market, ",".join(cfg.streams), ",".join(cfg.symbols),
                 cfg.data_dir)
        endpoint = _metrics(cfg, manager)
        try:
            sig = manager.run(duration=duration)
        finally:
            if endpoint is not None:
                endpoint.stop()
    finally:
        listener.stop()
    return EXIT_INTERRUPTED if sig == 2 else EXIT_OK


def _metrics(cfg, manager):
    """The /metrics and /health endpoint when metrics_port is set; a port it
    cannot have is logged, and the recorder runs without it."""
    if not cfg.metrics_port:
        return None
    from .metrics import Endpoint
    endpoint = Endpoint(cfg, manager.budget)
    if not endpoint.start():
        return None
    manager.metrics = endpoint
    return endpoint


def record_foreground(cfg):
    """Foreground mode holds the same pidfile as the daemon, so --daemon
    status and stop work for it too (systemd, containers)."""
    from . import proc
    from .daemon import AlreadyRunning, PidFile
    proc.catch_early_signals()
    try:
        pidfile = PidFile(cfg.run_dir, cfg).acquire()
    except AlreadyRunning as exc:
        raise RuntimeError(f"another recorder is already running with run_dir {cfg.run_dir} (pid {exc}); "
                           "stop it first or choose another --run-dir") from None
    try:
        return record(cfg)
    finally:
        pidfile.release()


def dispatch(args, cfg):
    from . import commands, daemon, statusreport
    if args.list_symbols:
        n = commands.list_symbols(cfg, args.quote)
        print(f"{n} symbols", file=sys.stderr)
        return EXIT_OK
    if args.status:
        found = commands.inventory(cfg)
        if args.json:
            print(json.dumps({"config": cfg.as_dict(), "files": found}, indent=1, sort_keys=True))
        else:
            print(commands.format_inventory(cfg, found))
        return EXIT_OK
    if args.daemon in ("status", "stop"):
        explicit = args.config is not None or args.run_dir is not None or os.path.exists(DEFAULT_CONFIG)
        run_dir, where = daemon.locate(cfg, explicit)
    if args.daemon == "status":
        code, report = daemon.status(cfg, run_dir, where)
        if args.check:
            code, line = statusreport.check_line(report)
            print(json.dumps(report, indent=1, sort_keys=True) if args.json else line)
            return code
        print(json.dumps(report, indent=1, sort_keys=True) if args.json else statusreport.format_status(code, report))
        return code
    if args.daemon == "stop":
        code, message = daemon.stop(cfg, force=args.force, run_dir=run_dir, where=where)
        print(f"{PROG}: {message}", file=sys.stderr)
        return code
    if args.verify or args.export or args.plot:
        return offline(args, cfg)
    prepare_dirs(cfg)
    if not args.demo:
        _check_disk_floor(cfg)
    if cfg.metrics_port and not args.demo:
        from .metrics import check_address
        problem = check_address(cfg)
        if problem:
            raise ConfigError(problem)
    if args.demo:
        code, found = commands.demo(cfg, record, args.demo_seconds,
                                    data_dir=cfg.data_dir if args.data_dir else None)
        return code if found else EXIT_ERROR
    if args.daemon == "start":
        if cfg.validate_symbols:
            limit = check_exchange(cfg)
            cfg = cfg.replace(validate_symbols=False, rest_weight_limit=cfg.rest_weight_limit or limit)
        code, message = daemon.start(cfg, record)
        print(f"{PROG}: {message}", file=sys.stderr)
        return code
    return record_foreground(cfg)


def _check_disk_floor(cfg):
    from .disk import refuse_start, statvfs_free
    problem = refuse_start(cfg, statvfs_free(cfg.data_dir))
    if problem:
        raise RuntimeError(problem)


def offline(args, cfg):
    """--verify, --export and --plot: read the files, never the network."""
    from .analysis import NotRecorded
    try:
        return _offline(args, cfg)
    except NotRecorded as exc:          # a symbol, day or market the data directory does not hold
        raise RuntimeError(str(exc)) from exc


def _offline(args, cfg):
    from .analysis import export, plot, verify
    from .analysis.load import parse_date
    symbol = args.symbol.upper() if args.symbol else None
    try:
        date = parse_date(args.date) if args.date else None
    except ValueError as exc:
        raise UsageError(f"--date: {exc}") from None
    if not os.path.isdir(os.path.join(cfg.data_dir, cfg.market)):
        others = [m for m in settings.MARKETS if os.path.isdir(os.path.join(cfg.data_dir, m))]
        if others:
            raise RuntimeError(f"no {cfg.market} recordings in {cfg.data_dir}, only {' and '.join(others)}; "
                               f"pass --market {others[0]}")
        raise RuntimeError(f"no {cfg.market} recordings in {cfg.data_dir}; pass --data-dir or --config "
                           f"with the data_dir the recorder used")
    if symbol is not None:
        from .analysis.catalog import symbol_streams
        symbol_streams(cfg.data_dir, symbol, cfg.market)     # NotRecorded names the symbols there are
    if args.verify:
        report = verify.verify(cfg.data_dir, cfg.market, [symbol] if symbol else None, date,
                               verify.expected_streams(cfg.streams, cfg.orderbook), verify.Progress())
        print(verify.format_report(report, cfg.data_dir))
        return EXIT_OK if report.ok else EXIT_ERROR
    if date is None:
        raise UsageError(f"--{'export' if args.export else 'plot'} needs --date YYYY-MM-DD")
    if args.export:
        if not args.out:
            raise UsageError("--export needs --out DIR")
        written = export.export(cfg.data_dir, cfg.market, date, args.out, [symbol] if symbol else None,
                                zipped=args.zip)
        for path, rows in written:
            print(f"{path}  {rows} rows")
        if not written:
            print(f"{PROG}: error: nothing to export: no aggTrade, trade or kline files of {date} in "
                  f"{cfg.data_dir}/{cfg.market}{' for ' + symbol if symbol else ''}", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK
    if symbol is None:
        raise UsageError("--plot needs --symbol SYM")
    out = args.out or f"{symbol}-{date}.png"
    drawn = plot.plot_day(cfg.data_dir, symbol, date, out, cfg.market)
    print(f"{out}: price ({', '.join(drawn['price']) or 'none'}), messages/s ({', '.join(drawn['rate'])}), "
          f"{drawn['gaps']} gaps shaded")
    return EXIT_OK


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}; see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:           # --help and --version have printed what was asked
        return exc.code
    debug = args.debug
    if ((args.quote and not args.list_symbols) or (args.force and args.daemon != "stop")
            or (args.check and args.daemon != "status") or (args.zip and not args.export)):
        print(f"{PROG}: error: --quote goes with --list-symbols, --force with --daemon stop, --check with "
              "--daemon status and --zip with --export; "
              f"see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    if (args.date or args.symbol or args.out) and not (args.verify or args.export or args.plot or args.merge):
        print(f"{PROG}: error: --date, --symbol and --out go with --verify, --export, --merge or --plot; "
              f"see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    if args.merge:
        return merge(args)
    try:
        cfg = load_config(args)
        if args.demo:
            cfg = cfg.replace(validate_symbols=True)
        return dispatch(args, cfg)
    except ConfigError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return _status_unknown(args) if args.daemon == "status" else EXIT_USAGE
    except UsageError as exc:
        print(f"{PROG}: error: {exc}; see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:             # the reader went away (| head): nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except (RuntimeError, OSError) as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return _status_unknown(args) if args.daemon == "status" else EXIT_ERROR


def merge(args):
    """--merge DIR_A DIR_B --out DIR: needs no configuration, reads only the two folders."""
    from .merge import MergeError, format_summary, merge as merge_recordings
    if not args.out or args.date or args.symbol:
        print(f"{PROG}: error: --merge needs --out DIR (and takes no --date or --symbol: whole recordings are "
              f"merged); see {PROG} --help", file=sys.stderr)
        return EXIT_USAGE
    a, b, out = (os.path.abspath(d) for d in (*args.merge, args.out))
    fresh = not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out))
    try:
        summaries = merge_recordings(a, b, out)
    except (MergeError, OSError) as exc:
        if args.debug:
            raise
        started = fresh and os.path.isdir(out) and os.listdir(out)
        print(f"{PROG}: error: merge failed: {exc}"
              f"{f' (remove the unfinished {out} before trying again)' if started else ''}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(format_summary(summaries, {"A": a, "B": b}))
    differ = sum(len(s.differ) for s in summaries)
    if differ:
        print(f"{PROG}: error: {differ} events differ between the two recordings (A's rows were kept, listed "
              f"above); check both recordings with --verify", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _status_unknown(args):
    """The exit code of a status that could not be found out: LSB's 4, or
    3 (UNKNOWN) for a monitor's --check."""
    from .daemon import EXIT_UNKNOWN
    return 3 if args.check else EXIT_UNKNOWN


def run():
    """Console-script entry point."""
    sys.exit(main())
