"""REST endpoints: Binance's public market data (``/api/v3`` on spot,
``/fapi/v1`` on USD-M, ``/dapi/v1`` on COIN-M) with request weights, 429/418 and Binance-shaped
errors; and the simulator's own ``/sim/*`` control endpoints (no weight)."""

import asyncio
import calendar
import time

import orjson
from aiohttp import web

from .faults import FaultError
from .ws import cut
from .klines import INTERVALS
from .mutate import garbage
from .replay import Replay
from ..binance.endpoints import KLINES_PAGE, REST_PREFIX, SERIES_ENDPOINTS, WEIGHTS, depth_weight, klines_weight
from ..markets import COINM, SNAPSHOT_MAX, futures
from .series import SeriesError, series_now_ms
from .specs import symbol_spec


class ApiError(Exception):
    def __init__(self, code, msg, status=400, retry_after=None):
        super().__init__(msg)
        self.code, self.msg, self.status, self.retry_after = code, msg, status, retry_after


def _json(body, status=200, headers=None):
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def _int_param(q, name, default=None):
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    if not raw.lstrip("-").isdigit():
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; "
                              "legal range is '^[0-9]{1,20}$'.")
    return int(raw)


CATCH_UP_S = 1.0          # the longest a REST answer waits for the market to reach its request time


async def _caught_up(source, now_ms):
    """Wait until the market has run up to ``now_ms`` (at most CATCH_UP_S):
    Binance answers as of the request time, but on a busy machine the
    market's loop lags the clock, and a candle that looks closed would miss
    the trades of its last moments (a backfilled copy differing from the live one)."""
    deadline = time.monotonic() + CATCH_UP_S
    while getattr(source, "now_ms", now_ms) < now_ms and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


class Rest:
    def __init__(self, exchange):
        self.ex = exchange
        self.market = exchange.cfg.market
        self.weights = WEIGHTS[self.market]

    def routes(self):
        prefix = REST_PREFIX[self.market]
        api = [("ping", self.ping), ("time", self.time), ("exchangeInfo", self.exchange_info),
               ("depth", self.depth), ("aggTrades", self.agg_trades), ("klines", self.klines)]
        out = [web.get(f"{prefix}/{name}", self._endpoint(name, fn)) for name, fn in api]
        out += [web.get("/sim/book", self.sim_book), web.get("/sim/journal", self.sim_journal),
                web.get("/sim/connections", self.sim_connections), web.get("/sim/faults", self.sim_faults),
                web.post("/sim/faults", self.sim_set_faults), web.get("/sim/stats", self.sim_stats),
                web.post("/sim/replay/start", self.sim_replay_start)]
        if self.market == "usdm":       # the REST series (series.py)
            out += [web.get(spec.path, self._series(name)) for name, spec in SERIES_ENDPOINTS.items()]
        return out

    # -- weight, limits, errors ---------------------------------------------------
    def _endpoint(self, name, fn, whole_request=False):
        """``fn`` gets the query (or, with ``whole_request``, the request)."""
        async def handler(request):
            ex, now = self.ex, time.time()
            if now < ex.faults.unreachable_until:
                return cut(request)
            ex.stats["rest_requests"] += 1
            try:
                weight = self._weight(name, request.query)
                if now < ex.faults.rest_418_until:
                    return self._limited(418, ex.limiter.used(request.remote, now),
                                         ex.faults.rest_418_until - now)
                status, used, retry = ex.limiter.charge(request.remote, weight, now,
                                                        storm_until=ex.faults.rest_429_until)
                if status != 200:
                    return self._limited(status, used, retry)
                if ex.faults.rest_garbage:
                    ex.faults.rest_garbage -= 1
                    ex.stats["rest_garbage"] += 1
                    code, ctype, raw = garbage(ex.rng)
                    return web.Response(body=raw, status=code, headers={"X-MBX-USED-WEIGHT-1M": str(used),
                                                                        "Content-Type": ctype})
                body = await fn(request if whole_request else request.query)
            except ApiError as err:
                headers = {"X-MBX-USED-WEIGHT-1M": str(ex.limiter.used(request.remote, now))}
                if err.retry_after is not None:
                    headers["Retry-After"] = str(err.retry_after)
                return _json({"code": err.code, "msg": err.msg}, status=err.status, headers=headers)
            return _json(body, headers={"X-MBX-USED-WEIGHT-1M": str(used)})
        return handler

    def _weight(self, name, q):
        if name in SERIES_ENDPOINTS:
            return SERIES_ENDPOINTS[name].weight
        if name == "depth":
            limit = _int_param(q, "limit", 100 if self.market == "spot" else 500)
            weight = depth_weight(self.market, limit)
            if weight is None:
                raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
            return weight
        if name == "klines":
            return klines_weight(self.market, _int_param(q, "limit", 500))
        return self.weights[name]

    def _limited(self, status, used, retry_after):
        ex = self.ex
        retry_after = max(1, int(retry_after + 0.999))
        if status == 429:
            ex.stats["rest_429"] += 1
            msg = (f"Too much request weight used; current limit is {ex.cfg.weight_limit} request "
                   "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                   "polling the API.")
        else:
            ex.stats["rest_418"] += 1
            until = int((time.time() + retry_after) * 1000)
            msg = (f"Way too much request weight used; IP banned until {until}. Please use "
                   "WebSocket Streams for live updates to avoid bans.")
        return _json({"code": -1003, "msg": msg}, status=status,
                     headers={"Retry-After": str(retry_after), "X-MBX-USED-WEIGHT-1M": str(used)})

    def _symbol(self, q):
        symbol = q.get("symbol")
        if not symbol:
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        source = self.ex.source(symbol)
        if source is None:
            raise ApiError(-1121, "Invalid symbol.")
        return source

    # -- market data ----------------------------------------------------------------
    async def ping(self, q):
        return {}

    async def time(self, q):
        return {"serverTime": int(time.time() * 1000)}

    async def exchange_info(self, q):
        return exchange_info(self.ex, int(time.time() * 1000))

    async def depth(self, q):
        source = self._symbol(q)
        limit = min(_int_param(q, "limit", 100 if self.market == "spot" else 500), SNAPSHOT_MAX[self.market])
        faults = self.ex.faults
        if faults.depth_fail:
            faults.depth_fail -= 1
            raise ApiError(-1001, "Internal error; unable to process your request. Please try again.", 503)
        if faults.depth_delay:
            # The book is read after the delay, as a slow server would.
            await asyncio.sleep(faults.depth_delay)
        last_id, bids, asks = source.snapshot(limit)
        if self.market == "spot":
            return {"lastUpdateId": last_id, "bids": bids, "asks": asks}
        now = int(time.time() * 1000)
        if self.market == COINM:        # as dapi answers: the symbol and its pair too
            return {"lastUpdateId": last_id, "E": now, "T": now, "symbol": source.symbol,
                    "pair": source.symbol.partition("_")[0], "bids": bids, "asks": asks}
        return {"lastUpdateId": last_id, "E": now, "T": now, "bids": bids, "asks": asks}

    async def agg_trades(self, q):
        source = self._symbol(q)
        limit = _int_param(q, "limit", 500)
        if not 1 <= limit <= 1000:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        from_id = _int_param(q, "fromId")
        start, end = _int_param(q, "startTime"), _int_param(q, "endTime")
        if futures(self.market) and start is not None and end is not None and end - start >= 3_600_000:
            raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
        return source.agg_trades_rest(from_id, start, end, limit)

    async def klines(self, q):
        source = self._symbol(q)
        interval = q.get("interval")
        if not interval:
            raise ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in INTERVALS or (futures(self.market) and interval == "1s"):
            raise ApiError(-1120, "Invalid interval.")
        limit = _int_param(q, "limit", 500)
        if not 1 <= limit <= KLINES_PAGE[self.market]:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        now_ms = int(time.time() * 1000)
        await _caught_up(source, now_ms)
        return source.klines(interval, _int_param(q, "startTime"), _int_param(q, "endTime"), limit, now_ms)

    def _series(self, name):
        """A REST series endpoint: the weight and faults of every endpoint, then
        its own request limit, the ``series_down`` fault and the answer at the
        series' clock."""
        async def answer(request):
            ex, now, q = self.ex, time.time(), request.query
            symbol = self._symbol(q) and q["symbol"]
            try:
                ex.series.charge(request.remote, SERIES_ENDPOINTS[name].pool, now)
                if now < ex.faults.series_down_until:
                    raise SeriesError(503, -1001, "Internal error; unable to process your request. Please try again.")
                return ex.series.answer(name, symbol, q, series_now_ms(ex.faults))
            except SeriesError as err:
                ex.stats["series_refused"] = ex.stats.get("series_refused", 0) + 1
                raise ApiError(err.code, err.msg, err.status, err.retry_after) from None
        return self._endpoint(name, answer, whole_request=True)

    # -- control ----------------------------------------------------------------------
    async def sim_book(self, request):
        q = request.query
        source = self.ex.source(q.get("symbol", ""))
        if source is None:
            return _json({"error": "unknown symbol"}, status=404)
        try:
            uid, bids, asks = source.book_at(_int_param(q, "update_id"))
        except (LookupError, ApiError) as exc:
            return _json({"error": str(exc)}, status=410)
        return _json({"lastUpdateId": uid, "bids": bids, "asks": asks})

    async def sim_journal(self, request):
        conn = request.query.get("conn")
        rows = self.ex.journal.entries(int(conn) if conn else None)
        body = b"".join(b"%d %d %s\n" % row for row in rows)
        return web.Response(body=body, content_type="text/plain")

    async def sim_connections(self, request):
        return _json([c.info() for c in self.ex.all_conns])

    async def sim_faults(self, request):
        return _json(self.ex.faults.as_dict(time.time()))

    async def sim_set_faults(self, request):
        try:
            spec = orjson.loads(await request.read())
            if not isinstance(spec, dict):
                raise FaultError("the body must be a JSON object of fault settings")
            return _json(self.ex.apply_faults(spec))
        except (FaultError, orjson.JSONDecodeError) as exc:
            return _json({"error": str(exc)}, status=400)

    async def sim_stats(self, request):
        stats = dict(self.ex.stats)
        stats["open_connections"] = len(self.ex.conns)
        replay = self.ex.replay
        if isinstance(replay, Replay):          # not a pregenerated tape
            stats["replay"] = {"frames": len(replay.frames), "sent": replay.next, "started": replay.started,
                               "finished": replay.finished}
        return _json(stats)

    async def sim_replay_start(self, request):
        """Start a replay now (with ``replay_connections`` set too high for
        it to start by itself: benchmarks start it once the client is idle)."""
        if not isinstance(self.ex.replay, Replay):
            return _json({"code": -1, "msg": "not replaying a capture"}, 400)
        self.ex.replay.start(time.time())
        return _json({"started": self.ex.replay.started})


def exchange_info(ex, now_ms):
    market = ex.cfg.market
    listed = [(s, "TRADING") for s in ex.symbols] + [(s, "BREAK") for s in ex.cfg.extra_symbols]
    limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
               "limit": ex.cfg.weight_limit}]
    if market == "spot":
        limits += [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 10},
                   {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}]
        by_base = {}
        for s in ex.symbols:
            by_base.setdefault(symbol_spec(s).base, []).append(s)
        # Smart order routing is offered where a base asset trades against several quotes.
        sors = [{"baseAsset": b, "symbols": syms} for b, syms in by_base.items() if len(syms) > 1]
        return {"timezone": "UTC", "serverTime": now_ms, "rateLimits": limits, "exchangeFilters": [],
                "symbols": [_spot_symbol(s, status) for s, status in listed], "sors": sors}
    if market == COINM:
        return {"exchangeFilters": [], "rateLimits": limits, "serverTime": now_ms,
                "symbols": [_coinm_symbol(s, status) for s, status in listed], "timezone": "UTC"}
    return {"exchangeFilters": [], "rateLimits": limits, "serverTime": now_ms,
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [_usdm_symbol(s, status) for s, status in listed], "timezone": "UTC"}


def _filters(spec):
    return [{"filterType": "PRICE_FILTER", "minPrice": spec.tick_size, "maxPrice": "1000000",
             "tickSize": spec.tick_size},
            {"filterType": "LOT_SIZE", "minQty": spec.step_size, "maxQty": "9000",
             "stepSize": spec.step_size}]


def _spot_symbol(symbol, status):
    spec = symbol_spec(symbol)
    return {"symbol": symbol, "status": status, "baseAsset": spec.base, "baseAssetPrecision": 8,
            "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
            "ocoAllowed": True, "otoAllowed": True, "opoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
            "cancelReplaceAllowed": True, "amendAllowed": True, "pegInstructionsAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": _filters(spec), "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]}


def _usdm_symbol(symbol, status):
    spec = symbol_spec(symbol)
    return {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": status,
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": spec.quote,
            "pricePrecision": spec.price_decimals, "quantityPrecision": spec.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
            "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
            "filters": _filters(spec), "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC"],
            "liquidationFee": "0.012500", "marketTakeBound": "0.05"}


# COIN-M's contract types by the name's suffix, and its quarterly delivery time (08:00 UTC).
def _coinm_contract(symbol):
    pair, _, suffix = symbol.partition("_")
    if suffix == "PERP" or not suffix.isdigit():
        return pair, "PERPETUAL", 4133404800000
    delivery = calendar.timegm(time.strptime("20" + suffix + " 08", "%Y%m%d %H")) * 1000
    return pair, "CURRENT_QUARTER" if delivery - time.time() * 1000 < 92 * 86_400_000 else "NEXT_QUARTER", delivery


def _coinm_symbol(symbol, status):
    """A dapi exchangeInfo row: COIN-M names the status ``contractStatus`` and
    has ``contractSize`` (USD per contract) where USD-M has none."""
    spec = symbol_spec(symbol)
    pair, contract_type, delivery = _coinm_contract(symbol)
    return {"symbol": symbol, "pair": pair, "contractType": contract_type, "deliveryDate": delivery,
            "onboardDate": 1597042800000, "contractStatus": status, "contractSize": spec.contract_size,
            "marginAsset": spec.base, "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base, "quoteAsset": spec.quote, "pricePrecision": spec.price_decimals,
            "quantityPrecision": 0, "baseAssetPrecision": 8, "quotePrecision": 8, "equalQtyPrecision": 4,
            "maxMoveOrderLimit": 10000, "triggerProtect": "0.0500", "underlyingType": "COIN",
            "underlyingSubType": [], "filters": _filters(spec), "orderTypes": ["LIMIT", "MARKET"],
            "timeInForce": ["GTC"], "liquidationFee": "0.010000", "marketTakeBound": "0.05"}
