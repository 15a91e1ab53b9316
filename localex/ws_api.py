"""The local exchange's WebSocket API (`/ws-fapi/v1`): Binance's request / response envelope
over the REST handlers, with the same authentication, weight and order limits.

    → {"id": "…", "method": "order.place", "params": {…, "apiKey", "timestamp", "signature"}}
    ← {"id": "…", "status": 200, "result": {…}, "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", …}]}
    ← {"id": "…", "status": 400, "error": {"code": -2011, "msg": "…"}, "rateLimits": […]}

A signed request carries its own `apiKey` and `timestamp`; the signature is HMAC-SHA256
of every other parameter sorted by name as `k=v&k=v`.  `session.logon` needs an Ed25519
key on Binance, which this exchange does not issue: it answers that, and every request
is signed instead.

A part of `local_exchange.LocalExchange`: it answers through the REST gateway's routes, limits and
authentication, and publishes what each request made the engine do (`Publisher`).
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from exchange_api import BinanceError, ExchangeError
from localex.base import MSG_BAD_KEY, IpState, Publisher, Route, mandatory
from localex.gateway import MSG_BAD_SIGNATURE, Gateway

# WebSocket API method → the REST route it answers like (Binance documents them as twins).
METHODS: dict[str, tuple[str, str]] = {
    "order.place": ("POST", "/fapi/v1/order"),
    "order.status": ("GET", "/fapi/v1/order"),
    "order.cancel": ("DELETE", "/fapi/v1/order"),
    "order.modify": ("PUT", "/fapi/v1/order"),
    "algoOrder.place": ("POST", "/fapi/v1/algoOrder"),
    "algoOrder.cancel": ("DELETE", "/fapi/v1/algoOrder"),
    "account.position": ("GET", "/fapi/v3/positionRisk"),
    "v2/account.position": ("GET", "/fapi/v2/positionRisk"),
    "account.balance": ("GET", "/fapi/v3/balance"),
    "v2/account.balance": ("GET", "/fapi/v2/balance"),
    "account.status": ("GET", "/fapi/v3/account"),
    "v2/account.status": ("GET", "/fapi/v2/account"),
    "userDataStream.start": ("POST", "/fapi/v1/listenKey"),
    "userDataStream.ping": ("PUT", "/fapi/v1/listenKey"),
    "userDataStream.stop": ("DELETE", "/fapi/v1/listenKey"),
    "ticker.price": ("GET", "/fapi/v2/ticker/price"),
    "ticker.book": ("GET", "/fapi/v1/ticker/bookTicker"),
    "depth": ("GET", "/fapi/v1/depth"),
}
SESSION_METHODS = ("session.logon", "session.status", "session.logout")


def _wire(v: Any, py_bools: bool) -> str:
    """A JSON parameter as the signer wrote it: Binance's clients send `true`, python-binance
    stringifies Python's `True`."""
    if isinstance(v, bool):
        return ("True" if v else "False") if py_bools else ("true" if v else "false")
    return str(v)


class WsApi:
    """One gateway for every /ws-fapi/v1 connection of a `LocalExchange` (its REST gateway's
    auth, weight and order limits, and its REST handlers)."""

    def __init__(self, gateway: Gateway, publisher: Publisher):
        self.gateway = gateway
        self.publisher = publisher
        self.routes: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in gateway.routes}
        self.connected = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, autoping=True)
        await ws.prepare(request)
        self.connected += 1
        since = self.gateway.server_time()
        ip = request.remote or "127.0.0.1"
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                reply = self.answer(msg.data, ip, since)
                await ws.send_str(json.dumps(reply, separators=(",", ":")))
        finally:
            self.connected -= 1
        return ws

    def answer(self, text: str, ip: str, since: int) -> dict[str, Any]:
        try:
            req = json.loads(text)
            rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError
        except (ValueError, AttributeError):
            return {"id": None, "status": 400, "error": {"code": BinanceError.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                                                         "msg": "Invalid JSON request."}}
        gw = self.gateway
        gw.requests[f"WS {method}"] += 1
        if method in SESSION_METHODS:
            return self._session(rid, method, since)
        target = METHODS.get(method)
        if target is None:
            return {"id": rid, "status": 400, "error": {"code": BinanceError.UNSUPPORTED_OPERATION,
                                                         "msg": f"Unknown method {method!r}."}}
        route = self.routes[target]
        state = gw.ip_state(ip, "fapi")
        str_params = {k: _wire(v, False) for k, v in params.items()}
        status, body = 200, None
        try:
            gw.check_weight(state, ip, "fapi", route, str_params)
            if route.security != "NONE":
                self._check_auth(params, route.security == "SIGNED")
            if route.orders:
                gw.check_order_rate(route.orders)
            body = route.handler({k: v for k, v in str_params.items() if k not in ("apiKey", "signature")})
        except ExchangeError as e:
            status, body = e.http_status, {"code": e.code, "msg": e.msg}
        except Exception as e:      # noqa: BLE001 - Reply and bad parameters, as REST answers them
            status = getattr(e, "status", 400)
            body = {"code": getattr(e, "code", BinanceError.ILLEGAL_CHARS),
                    "msg": getattr(e, "msg", "Illegal characters found in a parameter.")}
        finally:
            self.publisher.flush_events()
        out: dict[str, Any] = {"id": rid, "status": status}
        out["result" if status == 200 else "error"] = body
        out["rateLimits"] = self._rate_limits(state, bool(route.orders))
        return out

    def _check_auth(self, params: dict[str, Any], signed: bool) -> None:
        gw = self.gateway
        if not gw.key_matches(str(params.get("apiKey") or "")):
            raise ExchangeError(BinanceError.REJECTED_MBX_KEY, MSG_BAD_KEY, 401)
        if not signed:
            return
        sig = str(params.get("signature") or "")
        if not sig:
            raise mandatory("signature")
        rest = sorted((k, v) for k, v in params.items() if k != "signature")
        if not any(gw.signature_matches("&".join(f"{k}={_wire(v, py_bools)}" for k, v in rest), sig)
                   for py_bools in (False, True)):
            raise ExchangeError(BinanceError.INVALID_SIGNATURE, MSG_BAD_SIGNATURE)
        gw.check_timestamp({k: _wire(v, False) for k, v in params.items()})

    def _session(self, rid: Any, method: str, since: int) -> dict[str, Any]:
        if method == "session.logon":
            return {"id": rid, "status": 400, "error": {
                "code": BinanceError.INVALID_API_KEY_TYPE,
                "msg": "HMAC_SHA256 API key is not supported: session.logon needs an Ed25519 key; "
                       "sign each request instead."}}
        return {"id": rid, "status": 200, "result": {
            "apiKey": None, "authorizedSince": None, "connectedSince": since, "returnRateLimits": True,
            "serverTime": self.gateway.server_time()}}

    def _rate_limits(self, state: IpState, orders: bool) -> list[dict[str, Any]]:
        gw, now = self.gateway, time.monotonic()
        out = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": gw.limits.weight_limit, "count": state.weight.used(now)}]
        if orders:
            out += [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": gw.limits.order_limit_10s, "count": gw.orders_10s.used(now)},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                     "limit": gw.limits.order_limit_1m, "count": gw.orders_1m.used(now)}]
        return out
