"""Settings of one simulated exchange, with Binance's figures as defaults."""

from dataclasses import dataclass, field, replace

# Binance's documented figures per market (PROTOCOL.md sections 1.2, 1.3, 3, 4.3).
MARKET_DEFAULTS = {
    "spot": {"ping_interval": 20.0, "pong_timeout": 60.0, "incoming_limit": 5,
             "weight_limit": 6000},
    "usdm": {"ping_interval": 180.0, "pong_timeout": 600.0, "incoming_limit": 10,
             "weight_limit": 2400},
    "coinm": {"ping_interval": 180.0, "pong_timeout": 600.0, "incoming_limit": 10,
              "weight_limit": 2400},
}


@dataclass
class SimConfig:
    market: str = "spot"
    symbols: tuple = ("BTCUSDT", "ETHUSDT")
    seed: int = 1
    rate: float = 50.0                 # book changes + taker orders per second per symbol
    rates: dict = field(default_factory=dict)   # {symbol: rate} for symbols whose activity differs from rate
    host: str = "127.0.0.1"
    port: int = 0                      # 0: any free port
    ping_interval: float = None        # None: the market's Binance default
    pong_timeout: float = None
    lifetime: float = 86_400.0         # maximum connection lifetime, seconds
    shutdown_notice: float = 1.0       # serverShutdown this long before a planned close
    max_streams: int = 1024
    incoming_limit: int = None         # incoming messages per second per connection
    connect_limit: int = 300           # connection attempts per 5 minutes per IP
    weight_limit: int = None           # REST request weight per minute per IP
    ban_seconds: float = 120.0         # first 418 ban; doubles per repeat, capped at 3 days
    book_levels: int = 7500            # ticks a side seeded at start
    journal: str = "memory"            # memory | off | a file path
    replay: str = None                 # path of a captured session to serve instead
    replay_speed: float = 1.0          # 2.0 = twice as fast; 0 = as fast as possible
    replay_seconds: float = None       # replay only the capture's first seconds (None: all of it)
    replay_connections: int = 1        # the replay starts once this many connections are open
    replay_loops: int = 1              # passes of the capture, each continuing the last (ids and times shifted)
    pregenerate: float = 0.0           # > 0: generate this many seconds of market first (tape.Tape)
    max_pending: int = 200_000         # frames queued for a slow client before it is dropped
    tls: bool = True                   # wss:// and https:// (as Binance); False: ws:// and http://
    certfile: str = None               # the server's certificate chain (PEM); None: a throw-away CA makes one
    keyfile: str = None                # its private key (PEM), when not in certfile
    ca_dir: str = None                 # where the throw-away CA's PEM is written; None: a temporary directory
    write_each_frame: bool = False     # one transport write (so one TLS record) per frame, as a server
                                       # writing message by message; False: one write per wake-up
    faults: dict = field(default_factory=dict)
    extra_symbols: tuple = ()          # listed in exchangeInfo but not TRADING
    series_history_days: float = 30.0  # usdm REST series: days of history served (Binance: 30)

    def resolved(self):
        """A copy with the market's defaults filled in and values checked."""
        if self.market not in MARKET_DEFAULTS:
            raise ValueError(f"market must be one of {', '.join(MARKET_DEFAULTS)}, not {self.market!r}")
        if self.rate <= 0 or any(r <= 0 for r in self.rates.values()):
            raise ValueError("rate must be positive")
        defaults = MARKET_DEFAULTS[self.market]
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        symbols = tuple(s.upper() for s in self.symbols)
        rates = {s.upper(): r for s, r in self.rates.items()}
        return replace(self, symbols=symbols, rates=rates, **changes)

    def rate_of(self, symbol):
        """Book changes + taker orders per second of one symbol."""
        return self.rates.get(symbol, self.rate)
