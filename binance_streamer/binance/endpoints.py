"""Binance's endpoints and limits as data (PROTOCOL.md sections 1, 3 and 4).

Shared by the recorder and the simulator, so both charge the same weights."""

from typing import NamedTuple

from ..streams import usdm_group

# Production roots; the ws_url and rest_url settings override them.
BASE_URLS = {
    "spot": {"ws_url": "wss://stream.binance.com:9443", "rest_url": "https://api.binance.com"},
    "usdm": {"ws_url": "wss://fstream.binance.com", "rest_url": "https://fapi.binance.com"},
    "coinm": {"ws_url": "wss://dstream.binance.com", "rest_url": "https://dapi.binance.com"},
}
# Markets whose WebSocket streams are split over two roots (PROTOCOL.md 4.3:
# USD-M's /public for depth and bookTicker, /market for the rest, since
# 2026-04-23). COIN-M is served from one root, <ws_url>/stream: Binance
# documents no split for dstream, and the real COIN-M capture
# (cryptofeed BINANCE_DELIVERY) reads wss://dstream.binance.com/stream. Should
# dstream split too, add "coinm" here; ws_url already overrides the root.
SPLIT_WS = ("usdm",)
REST_PREFIX = {"spot": "/api/v3", "usdm": "/fapi/v1", "coinm": "/dapi/v1"}
DEFAULT_WEIGHT_LIMIT = {"spot": 6000, "usdm": 2400, "coinm": 2400}
WEIGHTS = {
    "spot": {"ping": 1, "time": 1, "exchangeInfo": 20, "aggTrades": 4},
    "usdm": {"ping": 1, "time": 1, "exchangeInfo": 1, "aggTrades": 20},
    "coinm": {"ping": 1, "time": 1, "exchangeInfo": 1, "aggTrades": 20},
}
# Connection attempts per IP: 300 per 5 minutes (spot; applied to futures too).
CONNECT_ATTEMPTS, CONNECT_WINDOW = 300, 300.0
# Binance allows 1024 streams per connection; fewer keeps URLs short and a
# reconnect cheap: a worker opens more connections when it needs them.
STREAMS_PER_CONNECTION = 200
AGG_TRADES_PAGE = 1000
KLINES_PAGE = {"spot": 1000, "usdm": 1500, "coinm": 1500}


def depth_weight(market, limit):
    """Weight of a depth snapshot, or None when Binance rejects the limit."""
    if market == "spot":
        if limit < 1:
            return None
        for top, weight in ((100, 5), (500, 25), (1000, 50)):
            if limit <= top:
                return weight
        return 250
    return {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}.get(limit)     # usdm and coinm


def klines_weight(market, limit):
    if market == "spot":
        return 2
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    return 5 if limit <= 1000 else 10


def stream_group(market, stream):
    """The connection group serving a stream: on spot and COIN-M the market
    itself (one root); USD-M serves each stream on the root streams.KINDS
    names (``public`` or ``market``)."""
    return usdm_group(stream) if market in SPLIT_WS else market


def connection_plan(cfg, symbols):
    """``[(group, url, [stream names])]``: the connections one worker opens."""
    roots = {cfg.market: cfg.ws_url, "public": cfg.ws_public_url, "market": cfg.ws_market_url}
    groups = {}
    for symbol in symbols:
        for stream in cfg.streams:
            groups.setdefault(stream_group(cfg.market, stream), []).append(f"{symbol.lower()}@{stream}")
    plan = []
    for group, names in groups.items():
        for i in range(0, len(names), STREAMS_PER_CONNECTION):
            part = names[i:i + STREAMS_PER_CONNECTION]
            plan.append((group, f"{roots[group]}/stream?streams={'/'.join(part)}", part))
    return plan


# -- REST series (series.py): USD-M only -------------------------------------------------------
# path, request weight (charged to the weight budget), request pool (its own per-IP
# request limit, REQUEST_POOLS; None: none), largest page (None: one object, no paging),
# page when no limit is sent, and the history the exchange keeps (ms; None: since listing).
class SeriesEndpoint(NamedTuple):
    path: str
    weight: int
    pool: object
    page_max: object
    page_default: object
    history_ms: object


FUTURES_DATA_HISTORY_MS = 30 * 86_400_000        # /futures/data keeps the latest 30 days
SERIES_ENDPOINTS = {
    "openInterest": SeriesEndpoint("/fapi/v1/openInterest", 1, None, None, None, None),
    "openInterestHist": SeriesEndpoint("/futures/data/openInterestHist", 0, "futures_data", 500, 30,
                                       FUTURES_DATA_HISTORY_MS),
    "topLongShortAccountRatio": SeriesEndpoint("/futures/data/topLongShortAccountRatio", 0, "futures_data", 500,
                                               30, FUTURES_DATA_HISTORY_MS),
    "topLongShortPositionRatio": SeriesEndpoint("/futures/data/topLongShortPositionRatio", 0, "futures_data",
                                                500, 30, FUTURES_DATA_HISTORY_MS),
    "globalLongShortAccountRatio": SeriesEndpoint("/futures/data/globalLongShortAccountRatio", 0, "futures_data",
                                                  500, 30, FUTURES_DATA_HISTORY_MS),
    "takerlongshortRatio": SeriesEndpoint("/futures/data/takerlongshortRatio", 0, "futures_data", 500, 30,
                                          FUTURES_DATA_HISTORY_MS),
    "fundingRate": SeriesEndpoint("/fapi/v1/fundingRate", 0, "funding", 1000, 100, None),
}
# Per-IP request limits apart from the weight: (requests, window in seconds).
REQUEST_POOLS = {"futures_data": (1000, 300.0), "funding": (500, 300.0)}
SERIES_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
FUNDING_INTERVAL_MS = 8 * 3_600_000              # 00:00, 08:00, 16:00 UTC
# The exchange refuses a /futures/data startTime older than its history with this answer.
HISTORY_REFUSED = (400, -1130)
