"""WebSocket endpoints: ``/ws/<streams>`` and ``/stream?streams=``, with live
SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.

On USD-M the same paths live under ``/public`` and ``/market``; the legacy
root paths were retired by Binance in 2026 and answer 404 here too. COIN-M
serves them at the root, as dstream does (binance/endpoints.py SPLIT_WS)."""

import asyncio
import logging
import re
import time

import orjson
from aiohttp import WSMsgType, web

from ..binance.endpoints import SPLIT_WS
from .exchange import STREAM_NAME

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9]{1,36}$")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def routes(exchange):
    handler = _Handler(exchange)
    if exchange.cfg.market in SPLIT_WS and exchange.replay is None:
        prefixes = ["/public", "/market"]
    else:
        prefixes = [""] if exchange.cfg.market not in SPLIT_WS else ["", "/public", "/market"]
    out = []
    for prefix in prefixes:
        out += [web.get(prefix + "/ws", handler.raw), web.get(prefix + "/ws/{streams:.*}", handler.raw),
                web.get(prefix + "/stream", handler.combined)]
    return out


class _Handler:
    def __init__(self, exchange):
        self.ex = exchange

    async def raw(self, request):
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=False)

    async def combined(self, request):
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(self, request, names, combined):
        ex, now = self.ex, time.time()
        if now < ex.faults.unreachable_until:
            return cut(request)
        if not ex.admit(request.remote, now):
            return web.json_response({"code": -1003, "msg": "Too many connection attempts."}, status=429)
        bad = [n for n in names if not STREAM_NAME.match(n)]
        if bad:
            return web.json_response({"code": -1100, "msg": f"Invalid stream name {bad[0]!r}."}, status=400)
        if len(names) > ex.cfg.max_streams:
            return web.json_response(
                {"code": -1100, "msg": f"Too many streams: at most {ex.cfg.max_streams} per connection."},
                status=400)
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 16)
        await ws.prepare(request)
        category = request.path.split("/")[1] if ex.cfg.market in SPLIT_WS else None
        if category not in ("public", "market"):
            category = None
        conn = ex.open_conn(ws, str(request.rel_url), category, combined, now)
        conn.transport = request.transport
        ex.subscribe(conn, names)
        sender = asyncio.ensure_future(ex.sender(conn))
        try:
            await self._read(conn)
        finally:
            ex.forget_conn(conn, time.time())
            sender.cancel()
        return ws

    async def _read(self, conn):
        ex, ws = self.ex, conn.ws
        async for msg in ws:
            now = time.time()
            if msg.type in (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG) and not conn.incoming.hit(now):
                ex.close_conn(conn, 1008, "too many incoming messages")
                await ws.close(code=1008, message=b"too many incoming messages")
                break
            if msg.type == WSMsgType.TEXT:
                reply = self.control(conn, msg.data)
                if reply is not None:
                    ex.push(conn, orjson.dumps(reply), now)
            elif msg.type == WSMsgType.PING:
                if not ex.faults.no_pong and not ex.faults.stalled(conn.id, now):
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                conn.pings.pop(bytes(msg.data), None)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break

    def control(self, conn, text):
        """Answer one JSON request from the client (section 1.4 of PROTOCOL.md)."""
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return {"code": 3, "msg": f"Invalid JSON: {exc}"}
        if not isinstance(req, dict) or "method" not in req:
            return {"code": 2, "msg": "Invalid request: missing field method"}
        rid = req.get("id")
        if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool))
                or (isinstance(rid, str) and _ID.match(rid))):
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
        method, params = req["method"], req.get("params", [])
        if method not in METHODS:
            return {"code": 2, "msg": f"Invalid request: unknown variant {method}, expected one of "
                                      + ", ".join(METHODS), "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(conn, method, params, rid)
        if not isinstance(params, list) or not all(isinstance(p, str) and STREAM_NAME.match(p) for p in params):
            return {"code": 2, "msg": "Invalid request: invalid stream name", "id": rid}
        if method == "SUBSCRIBE":
            if len(set(conn.streams) | set(params)) > self.ex.cfg.max_streams:
                return {"code": 2, "msg": "Invalid request: too many parameters", "id": rid}
            self.ex.subscribe(conn, params)
        else:
            self.ex.unsubscribe(conn, params)
        return {"result": None, "id": rid}

    @staticmethod
    def _property(conn, method, params, rid):
        if not params or not isinstance(params[0], str):
            return {"code": 2, "msg": "Invalid request: property name must be a string", "id": rid}
        if params[0] != "combined":
            return {"code": 0, "msg": "Unknown property", "id": rid}
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": rid}
        if len(params) < 2 or not isinstance(params[1], bool):
            return {"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid}
        conn.combined = params[1]
        return {"result": None, "id": rid}


def cut(request):
    """The exchange is unreachable: the TCP connection ends without an answer."""
    request.transport.abort()
    return web.Response(status=503)
