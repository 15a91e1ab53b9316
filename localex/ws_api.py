"""The local exchange's WebSocket API (`/ws-fapi/v1`): Binance's request / response envelope
over the REST handlers, with the same authentication, weight and order limits.

    → {"id": "…", "method": "order.place", "params": {…, "apiKey", "timestamp", "signature"}}
    ← {"id": "…", "status": 200, "result": {…}, "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", …}]}
    ← {"id": "…", "status": 400, "error": {"code": -2011, "msg": "…"}, "rateLimits": […]}

A signed request carries its own `apiKey` and `timestamp`; the signature is HMAC-SHA256
of every other parameter sorted by name as `k=v&k=v`.  `session.logon` needs an Ed25519
key on Binance, which this exchange does not issue: it answers that, and every request
is signed instead.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from exchange_api import ExchangeError
from localex.gateway import GatewayMixin

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

    def __init__(self, ex: GatewayMixin):
        self.ex = ex
        self.routes = {(r.method, r.path): r for r in ex._routes}
        self.connected = 0

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, autoping=True)
        await ws.prepare(request)
        self.connected += 1
        since = self.ex.server_time()
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
            return {"id": None, "status": 400, "error": {"code": -1102, "msg": "Invalid JSON request."}}
        ex = self.ex
        ex.requests[f"WS {method}"] += 1
        if method in SESSION_METHODS:
            return self._session(rid, method, since)
        target = METHODS.get(method)
        if target is None:
            return {"id": rid, "status": 400, "error": {"code": -1020, "msg": f"Unknown method {method!r}."}}
        route = self.routes[target]
        state = ex._ip_state(ip, "fapi")
        str_params = {k: _wire(v, False) for k, v in params.items()}
        status, body = 200, None
        try:
            ex._check_weight(state, ip, "fapi", route, str_params)
            if route.security != "NONE":
                self._check_auth(params, route.security == "SIGNED")
            headers: dict[str, str] = {}
            if route.orders:
                ex._check_order_rate(route.orders, headers)
            body = route.handler({k: v for k, v in str_params.items() if k not in ("apiKey", "signature")})
        except ExchangeError as e:
            status, body = e.http_status, {"code": e.code, "msg": e.msg}
        except Exception as e:      # noqa: BLE001 - _Reply and bad parameters, as REST answers them
            status = getattr(e, "status", 400)
            body = {"code": getattr(e, "code", -1100), "msg": getattr(e, "msg", "Illegal characters found in a "
                                                                          "parameter.")}
        finally:
            ex._flush_events()
        out: dict[str, Any] = {"id": rid, "status": status}
        out["result" if status == 200 else "error"] = body
        out["rateLimits"] = self._rate_limits(state, bool(route.orders))
        return out

    def _check_auth(self, params: dict[str, Any], signed: bool) -> None:
        ex = self.ex
        key = str(params.get("apiKey") or "")
        if not key or not hmac.compare_digest(key.encode(), ex.api_key.encode()):
            raise ExchangeError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if not signed:
            return
        sig = str(params.get("signature") or "")
        if not sig:
            raise ExchangeError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        rest = sorted((k, v) for k, v in params.items() if k != "signature")
        for py_bools in (False, True):
            payload = "&".join(f"{k}={_wire(v, py_bools)}" for k, v in rest)
            expected = hmac.new(ex._secret, payload.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, sig.lower()):
                break
        else:
            raise ExchangeError(-1022, "Signature for this request is not valid.")
        ex._check_timestamp({k: _wire(v, False) for k, v in params.items()})

    def _session(self, rid: Any, method: str, since: int) -> dict[str, Any]:
        if method == "session.logon":
            return {"id": rid, "status": 400, "error": {
                "code": -4056, "msg": "HMAC_SHA256 API key is not supported: session.logon needs an Ed25519 key; "
                                      "sign each request instead."}}
        return {"id": rid, "status": 200, "result": {
            "apiKey": None, "authorizedSince": None, "connectedSince": since, "returnRateLimits": True,
            "serverTime": self.ex.server_time()}}

    def _rate_limits(self, state: Any, orders: bool) -> list[dict[str, Any]]:
        ex, now = self.ex, time.monotonic()
        out = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                "limit": ex.weight_limit, "count": state.weight.used(now)}]
        if orders:
            out += [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": ex.order_limit_10s, "count": ex._orders_10s.used(now)},
                    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                     "limit": ex.order_limit_1m, "count": ex._orders_1m.used(now)}]
        return out
