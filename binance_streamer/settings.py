"""THE declaration of every setting.

One table drives the YAML loader, the command-line flags, ``--help``, the
README's configuration reference and validation. To add a setting, add a
row here; nothing else reads the YAML or the environment.
"""

from typing import NamedTuple

from . import markets

# The market facts settings and config check against (their home: markets.py).
MARKETS, DEPTH_SPEEDS, DEFAULT_STREAMS = markets.MARKETS, markets.DEPTH_SPEEDS, markets.DEFAULT_STREAMS

KLINE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h",
                   "12h", "1d", "3d", "1w", "1M")


# symbols_per_worker unset: a worker process costs about 30 MB at rest and
# one core serves hundreds of quiet symbols, so many symbols share a few
# workers (400 spot symbols one per worker do not fit in 2 GB), while a few
# symbols keep a worker each (a crash or a hang costs one symbol only).
AUTO_WORKERS = 8


class Setting(NamedTuple):
    name: str
    type: str            # str | int | float | bool | list | path | choice | url
    default: object
    help: str
    section: str
    choices: tuple = ()
    minimum: float = None
    maximum: float = None
    flag: bool = False   # also a command-line flag (--name-with-dashes)
    metavar: str = None

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")


def _s(name, type_, default, help_, section, **kw):
    return Setting(name, type_, default, help_, section, **kw)


SETTINGS = [
    # -- what to record
    _s("market", "choice", "spot", "Binance market: spot, usdm (USD-M futures) or coinm (COIN-M futures)",
       "recording",
       choices=MARKETS, flag=True),
    _s("symbols", "list", None, "symbols to record, e.g. BTCUSDT,ETHUSDT (default: BTCUSDT,ETHUSDT; "
       "coinm BTCUSD_PERP,ETHUSD_PERP)", "recording", flag=True, metavar="SYM,SYM"),
    _s("streams", "list", None,
       "streams per symbol: aggTrade, trade, depth or depth@100ms (futures also depth@250ms, depth@500ms), "
       "kline_<interval>, bookTicker; futures only: markPrice (every 3 s) or markPrice@1s, and forceOrder "
       "(liquidations), on USD-M from the /market root "
       "(default: spot aggTrade,trade,depth@100ms,kline_1m,bookTicker; usdm and coinm the same without trade)",
       "recording", flag=True, metavar="S,S"),
    _s("validate_symbols", "bool", True, "check symbols against exchangeInfo before starting", "recording"),
    _s("series", "list", None,
       "USD-M REST series per symbol, each in its own file: openInterest, openInterestHist, "
       "topLongShortAccountRatio, topLongShortPositionRatio, globalLongShortAccountRatio, takerlongshortRatio, "
       "fundingRate; name:period sets one series' period (e.g. takerlongshortRatio:1h); [] for none "
       "(default: all of them on usdm; spot has none)", "recording", flag=True, metavar="S,S"),
    _s("series_period", "choice", "5m",
       "period of the REST series that have one, unless the series names its own: 5m, 15m, 30m, 1h, 2h, 4h, 6h, "
       "12h or 1d (openInterest is sampled this often)", "recording",
       choices=("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")),
    _s("series_poll_interval", "float", 30.0,
       "seconds between asks for a REST series row that is due but not there yet, or after a failed ask", "recording",
       minimum=0.1),
    # -- where from
    _s("ws_url", "url", None,
       "WebSocket base URL (default: wss://stream.binance.com:9443 for spot, wss://fstream.binance.com for usdm, "
       "wss://dstream.binance.com for coinm)",
       "endpoints", flag=True, metavar="URL"),
    _s("ws_public_url", "url", None,
       "usdm: WebSocket root for depth and bookTicker (default: <ws_url>/public)", "endpoints", metavar="URL"),
    _s("ws_market_url", "url", None,
       "usdm: WebSocket root for aggTrade and klines (default: <ws_url>/market)", "endpoints", metavar="URL"),
    _s("rest_url", "url", None,
       "REST base URL (default: https://api.binance.com for spot, https://fapi.binance.com for usdm, "
       "https://dapi.binance.com for coinm)",
       "endpoints", flag=True, metavar="URL"),
    _s("proxy", "url", None,
       "proxy for WebSocket and REST: http://host:port, socks5://host:port or socks5h://host:port",
       "endpoints", flag=True, metavar="URL"),
    _s("ca_file", "path", None,
       "PEM file of the certificate authorities to trust for wss:// and https:// (a private CA, a TLS-inspecting "
       "proxy, the simulator's CA; default: the system's)", "endpoints", flag=True, metavar="FILE"),
    # -- where to
    _s("data_dir", "path", "data", "directory for the CSV files", "files", flag=True, metavar="DIR"),
    _s("log_dir", "path", "logs", "directory for log files", "files", flag=True, metavar="DIR"),
    _s("run_dir", "path", "run", "directory for the pidfile and the status file", "files", flag=True,
       metavar="DIR"),
    _s("min_free_disk", "float", 2.0,
       "gigabytes (GiB) that must stay free on data_dir's disk; below this the health is DEGRADED and the writer "
       "does what disk_floor_action says until 10% more than this is free again (0: no floor)", "files",
       minimum=0.0, maximum=1e6),
    _s("disk_floor_action", "choice", "shed",
       "below min_free_disk: shed (stop writing depth, depthSnapshot and orderbook rows, with a gap-ledger row; "
       "the other streams go on) or stop (stop the recorder cleanly)", "files", choices=("shed", "stop")),
    _s("retention_days", "int", 0,
       "remove (or move to archive_dir) the day files older than this many days before today (UTC), at start and "
       "hourly (0: keep every day)", "files", minimum=0, maximum=36500),
    _s("archive_dir", "path", None,
       "with retention_days: move expired day files here, under the same <market>/<SYMBOL>/ folders, instead of "
       "removing them", "files", metavar="DIR"),
    _s("batch_size", "int", 5000, "rows buffered per file before a flush", "files", minimum=1),
    _s("flush_interval", "float", 1.0, "seconds from a row's arrival to its write: the writer holds rows this long less the time they "
       "spent in the worker", "files",
       minimum=0.01),
    _s("fsync", "choice", "periodic",
       "fsync data files: never, periodic (every fsync_interval) or always (after every flush)", "files",
       choices=("never", "periodic", "always")),
    _s("fsync_interval", "float", 10.0, "seconds between fsyncs when fsync is periodic", "files", minimum=0.1),
    _s("compression", "choice", "gzip",
       "compress a day's file once it is closed: gzip (.csv.gz), zstd (.csv.zst) or none; every reader "
       "reads the compressed files", "files", choices=("gzip", "zstd", "none")),
    _s("compress_after", "float", 600.0,
       "seconds a file of a past day must go without a row before it is compressed (late rows: a backfill "
       "across midnight may take 120 s, a restarted writer gets batches sent again)", "files", minimum=0.0),
    # -- processes
    _s("symbols_per_worker", "int", None, "symbols that share one worker process (default: one worker per symbol up "
       f"to {AUTO_WORKERS} symbols; beyond, as many per worker as keep the workers at {AUTO_WORKERS})", "processes", minimum=1),
    _s("link_buffer_bytes", "int", 16_000_000,
       "bytes a worker (or the book manager) keeps for the writer until it acknowledges them as written; beyond "
       "this the worker stops reading its sockets until the writer catches up", "processes", minimum=100_000),
    _s("batch_interval", "float", 0.1, "seconds a worker gathers rows before it hands them on", "processes",
       minimum=0.001),
    _s("restart_min_delay", "float", 0.5, "first delay before a crashed process is restarted, seconds",
       "processes", minimum=0.0),
    _s("restart_max_delay", "float", 30.0, "longest delay between restarts of a crashing process, seconds",
       "processes", minimum=0.0),
    _s("stop_timeout", "float", 20.0, "seconds each shutdown stage may take before processes are killed",
       "processes", minimum=1.0),
    _s("status_interval", "float", 2.0, "seconds between status file updates", "processes", minimum=0.1),
    _s("summary_interval", "float", 60.0,
       "seconds between the log's one-line summaries (messages/s, rows, gaps, books in sync, health); 0: none",
       "processes", minimum=0.0, maximum=86400.0),
    _s("hang_timeout", "float", 30.0,
       "seconds a process may go without a heartbeat (one a second from its main loop) before it is taken for "
       "hung, killed and restarted alone", "processes", minimum=2.0),
    # -- connections
    _s("reconnect_min_delay", "float", 0.5, "first reconnect delay, seconds (doubles, with jitter)",
       "connections", minimum=0.0),
    _s("reconnect_max_delay", "float", 30.0, "longest reconnect delay, seconds", "connections", minimum=0.0),
    _s("read_interval", "float", 0.05,
       "least seconds between two reads of one busy socket: frames that arrive meanwhile are read and handed "
       "on together, which saves CPU per message (0: read each frame as it arrives)", "connections",
       minimum=0.0),
    _s("max_lag", "float", 3.0,
       "seconds between an event's exchange time and its receipt beyond which a connection is behind: a WARNING, "
       "and health DEGRADED in the status (includes the clock difference to Binance's)", "connections",
       minimum=0.1),
    _s("silence_timeout", "float", 30.0, "reconnect when a connection delivers nothing for this long, seconds",
       "connections", minimum=1.0),
    _s("connection_max_age", "float", 84_600.0,
       "seconds after which a connection is replaced without a hole (Binance closes at 24 h)", "connections",
       minimum=5.0),
    _s("handover_timeout", "float", 30.0,
       "seconds a replacement connection may take to catch up before the switch is forced", "connections",
       minimum=0.5),
    _s("rest_timeout", "float", 10.0, "timeout of one REST request, seconds", "connections", minimum=0.5),
    _s("rest_weight_limit", "int", None,
       "REST weight per minute for the whole daemon (default: exchangeInfo's REQUEST_WEIGHT limit)",
       "connections", minimum=1),
    _s("rest_weight_margin", "float", 0.2, "share of the weight limit kept unused as a safety margin",
       "connections", minimum=0.0),
    # -- order books
    _s("orderbook", "bool", True, "keep local order books and write snapshot and top-of-book files",
       "orderbook"),
    _s("snapshot_depth", "int", None, "levels per side of REST snapshots (default: spot 5000, usdm and coinm 1000)",
       "orderbook", minimum=5),
    _s("orderbook_levels", "int", 20, "levels per side in the orderbook files", "orderbook", minimum=1),
    _s("orderbook_interval", "float", 1.0, "seconds between orderbook rows", "orderbook", minimum=0.05),
    _s("book_refresh_interval", "float", 3600.0,
       "seconds between snapshot refreshes of a book in sync (0: never)", "orderbook", minimum=0.0),
    # -- monitoring
    _s("metrics_port", "int", 0,
       "port of the Prometheus metrics (/metrics) and health (/health) HTTP endpoint the manager serves "
       "(0: off)", "monitoring", minimum=0, flag=True, metavar="PORT"),
    _s("metrics_host", "str", "127.0.0.1",
       "address the metrics endpoint listens on (127.0.0.1: this machine only; 0.0.0.0 or :: every interface, "
       "readable by anyone who reaches the port)", "monitoring", metavar="ADDR"),
    # -- past one machine (NATS JetStream; README "Past one machine")
    _s("role", "choice", "all", "all: record on this machine alone (no NATS); collector: read the exchange and "
       "publish the frames to NATS JetStream; sink: consume them from every collector, merge and write the files",
       "cluster", choices=("all", "collector", "sink"), flag=True),
    _s("nats_url", "list", ["nats://127.0.0.1:4222"], "NATS server URLs of the cluster, comma separated "
       "(collector and sink)", "cluster", flag=True, metavar="URL,URL"),
    _s("nats_stream", "str", "BINANCE", "JetStream stream name; its subjects are <stream>.<market>.<SYMBOL>",
       "cluster"),
    _s("nats_replicas", "int", 1, "copies JetStream keeps of each message (1, or 3 on a 3-node cluster)",
       "cluster", minimum=1, maximum=5),
    _s("nats_max_age", "float", 86_400.0, "seconds JetStream keeps a message (how long a sink may be away)",
       "cluster", minimum=60.0, maximum=31_536_000.0),
    _s("collector_id", "str", None, "this collector's name in the messages and the sinks' status "
       "(default: the host name)", "cluster"),
    _s("sink_id", "str", None, "this sink's durable consumer name (default: the host name); a sink that starts "
       "again under the same name resumes where it stopped", "cluster"),
    _s("redundancy_window", "float", 2.0, "seconds a sink waits for every connected collector to pass an event "
       "before it hands the event on anyway", "cluster", minimum=0.0, maximum=600.0),
    _s("collector_buffer_bytes", "int", 256_000_000, "bytes a collector keeps while NATS does not take them; "
       "past it the oldest are dropped, and the sinks ledger it", "cluster", minimum=1_000_000,
       maximum=64_000_000_000),
    # -- logging
    _s("log_level", "choice", "INFO", "DEBUG, INFO, WARNING or ERROR", "logging",
       choices=("DEBUG", "INFO", "WARNING", "ERROR"), flag=True),
    _s("log_max_bytes", "int", 20_000_000, "rotate the log file at this size (0: let logrotate do it)",
       "logging", minimum=0),
    _s("log_backups", "int", 10, "rotated log files kept", "logging", minimum=0),
]

# The largest value each number may take: beyond it a value is a mistake
# (seconds written as milliseconds, a setting pasted into the wrong key) that
# would overflow a timer or a buffer, or defeat the setting's purpose.
MAXIMA = {"series_poll_interval": 3600.0, "batch_size": 1_000_000, "flush_interval": 60.0, "fsync_interval": 3600.0, "compress_after": 86_400.0, "symbols_per_worker": 1024,
          "link_buffer_bytes": 4_000_000_000, "hang_timeout": 3600.0, "batch_interval": 5.0, "restart_min_delay": 600.0, "restart_max_delay": 3600.0,
          "stop_timeout": 600.0, "status_interval": 3600.0, "reconnect_min_delay": 600.0,
          "reconnect_max_delay": 3600.0, "read_interval": 1.0, "max_lag": 86_400.0, "silence_timeout": 3600.0,
          "connection_max_age": 86_400.0, "handover_timeout": 600.0, "rest_timeout": 300.0,
          "rest_weight_limit": 1_000_000, "rest_weight_margin": 0.9, "snapshot_depth": 5000,
          "orderbook_levels": 5000, "orderbook_interval": 3600.0, "book_refresh_interval": 2_592_000.0,
          "log_max_bytes": 10**12, "log_backups": 1000,
          "metrics_port": 65535}
SETTINGS = [s._replace(maximum=MAXIMA[s.name]) if s.name in MAXIMA else s for s in SETTINGS]
BY_NAME = {s.name: s for s in SETTINGS}


def symbols_per_worker(setting, symbols):
    """Symbols per worker process for ``symbols`` symbols: the setting, or
    when it is unset 1 up to AUTO_WORKERS symbols, beyond that as many as
    keep the workers at AUTO_WORKERS."""
    return setting or max(1, -(-symbols // AUTO_WORKERS))


def render_yaml():
    """config.yaml as shipped: every setting, its help, its default."""
    out = ["# binance_streamer configuration. Every setting is listed with its default;",
           "# command-line flags override this file. Reference: README.md, section Configuration.", ""]
    section = None
    for s in SETTINGS:
        if s.section != section:
            section = s.section
            out += ["", f"# --- {section}"]
        out.append(f"# {s.help}")
        if s.default is None:
            out.append(f"# {s.name}:")
        elif s.type == "list":
            out.append(f"{s.name}: [{', '.join(s.default)}]")
        elif s.type == "bool":
            out.append(f"{s.name}: {'true' if s.default else 'false'}")
        else:
            out.append(f"{s.name}: {s.default}")
    return "\n".join(out).strip() + "\n"


def render_markdown():
    """The README's configuration reference, one row per setting."""
    rows = ["| setting | flag | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "(see meaning)" if s.default is None else (
            ", ".join(s.default) if s.type == "list" else str(s.default).lower() if s.type == "bool" else s.default)
        flag = f"`{s.option}`" if s.flag else ""
        span = f"{s.minimum:g} to {s.maximum:g}" if s.maximum is not None else ""
        rows.append(f"| `{s.name}` | {flag} | `{default}` | {span} | {s.help} |")
    return "\n".join(rows) + "\n"
