"""The REST gateway: routes, authentication, IP weight and order-count limits, bans, injected faults, and the loopback admin API.

A part of `local_exchange.LocalExchange` (a mixin: it uses the attributes the façade sets up)."""
from __future__ import annotations
import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import asdict
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl
from aiohttp import web
from exchange_api import ExchangeError
from localex.base import (JSON_SEP, MAX_BAN_S, MSG_BAD_KEY, MSG_UNAVAILABLE, MSG_UNKNOWN, SPOT_WEIGHT_LIMIT, parse_plan_entry,
    _IpState, _Reply, _Route, _Window, _mandatory, _split_signature, log)


class GatewayMixin:
    """The REST gateway: routes, authentication, IP weight and order-count limits, bans, injected faults, and the loopback admin API."""

    # ------------------------------------------------------------------ HTTP plumbing
    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        for path, handler in (("/_sim/state", self._admin_state), ("/_sim/stats", self._admin_stats),
                              ("/_sim/faults", self._admin_faults), ("/_sim/clock", self._admin_clock)):
            r.add_route("GET", path, handler)
        for path, handler in (("/_sim/step", self._admin_step), ("/_sim/price", self._admin_price),
                              ("/_sim/faults", self._admin_faults), ("/_sim/ws_drop", self._admin_ws_drop),
                              ("/_sim/listen_key/expire", self._admin_expire), ("/_sim/ban", self._admin_ban),
                              ("/_sim/plan", self._admin_plan)):
            r.add_route("POST", path, handler)
        r.add_get("/{category:market|public}/stream", self._ws_market)
        r.add_get("/{category:market|public}/ws/{stream:[^/]+}", self._ws_market)
        r.add_get("/private/ws", self._ws_user)
        r.add_get("/private/stream", self._ws_user_stream)
        r.add_get("/ws-fapi/v1", self.ws_api.handle)
        r.add_get("/private/ws/{key:[^/]+}", self._ws_user)
        for route in self._routes:
            r.add_route(route.method, route.path, self._endpoint(route))
        r.add_route("*", "/{tail:.*}", self._not_found)

    async def _not_found(self, request: web.Request) -> web.Response:
        # Counted, so a client asking for what the exchange lacks shows up in /_sim/stats.
        self.not_found[f"{request.method} {request.path}"] += 1
        self.responses[404] += 1
        return web.json_response({"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"},
                                 status=404)

    def _endpoint(self, route: _Route) -> Callable[[web.Request], Any]:
        key = f"{route.method} {route.path}"
        bucket = "api" if route.path.startswith("/api/") else "fapi"

        async def handle(request: web.Request) -> web.Response:
            self._inflight += 1
            self._request_seq += 1
            self._last_activity = time.monotonic()
            try:
                self.requests[key] += 1
                raw_qs = request.raw_path.partition("?")[2]
                body = (await request.read()).decode("utf-8", "replace") if request.body_exists else ""
                params = dict(parse_qsl(body, keep_blank_values=True))
                params.update(parse_qsl(raw_qs, keep_blank_values=True))  # the query string wins
                status, payload, headers = self._serve(route, bucket, request, params, raw_qs, body)
                if self.faults.delay_ms > 0:
                    await asyncio.sleep(self.faults.delay_ms / 1000)
            finally:
                self._inflight -= 1
                self._last_activity = time.monotonic()
            self.responses[status] += 1
            return web.Response(text=json.dumps(payload, separators=JSON_SEP), status=status, headers=headers,
                                content_type="application/json")

        return handle

    def _serve(self, route: _Route, bucket: str, request: web.Request, params: dict[str, str], raw_qs: str,
               body: str) -> tuple[int, Any, dict[str, str]]:
        ip = request.remote or "127.0.0.1"
        state = self._ip_state(ip, bucket)
        headers: dict[str, str] = {}
        try:
            try:
                self._check_weight(state, ip, bucket, route, params)
                if bucket == "fapi" and self.faults.http_5xx_rate > 0 and self._fault_rng.random() < self.faults.http_5xx_rate:
                    raise _Reply(503, -1001, MSG_UNAVAILABLE)
                if route.security != "NONE":
                    self._check_auth(request, params, raw_qs, body, route.security == "SIGNED")
                if route.orders:
                    self._check_order_rate(route.orders, headers)
                placed_unknown = self._unknown_fault(route)
                result = route.handler(params)
                if placed_unknown is not None:
                    raise placed_unknown
                return 200, result, headers
            except ExchangeError as e:
                return e.http_status, {"code": e.code, "msg": e.msg}, headers
            except _Reply as r:
                headers.update(r.headers)
                return r.status, {"code": r.code, "msg": r.msg}, headers
            except (ValueError, TypeError, KeyError):
                return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}, headers
            except Exception:  # a bug here must not look like a network failure to the client
                log.exception("%s %s failed", route.method, route.path)
                return 500, {"code": -1000, "msg": "An unknown error occured while processing the request."}, headers
        finally:
            self._flush_events()
            headers["X-MBX-USED-WEIGHT-1M"] = str(state.weight.used(time.monotonic()))
            if route.orders:
                now = time.monotonic()
                headers["X-MBX-ORDER-COUNT-10S"] = str(self._orders_10s.used(now))
                headers["X-MBX-ORDER-COUNT-1M"] = str(self._orders_1m.used(now))

    def _ip_state(self, ip: str, bucket: str) -> _IpState:
        state = self._ips.get((ip, bucket))
        if state is None:
            state = self._ips[(ip, bucket)] = _IpState(_Window(60.0))
        return state

    def _check_weight(self, state: _IpState, ip: str, bucket: str, route: _Route, params: dict[str, str]) -> None:
        """Binance's IP weight limit: 429 past it, 418 (a ban, escalating) when the client keeps going."""
        now = time.monotonic()
        if state.ban_until > now:
            raise self._ban_reply(state, ip, now)
        if bucket == "fapi" and self.faults.http_429_next > 0:
            self.faults.http_429_next -= 1
            # No Retry-After (unless the fault asks): a client doubles its wait from 1 s, and the
            # market stands still that long under --pause-on-retry-after.
            wait = 2 ** min(state.fault_429s, 6)
            state.fault_429s += 1
            state.retry_until = max(state.retry_until, now + float(wait))
            raise _Reply(429, -1003, self._too_many_msg(ip), self._retry_after(wait))
        state.fault_429s = 0
        w = route.weight(params) if callable(route.weight) else route.weight
        limit = self.weight_limit if bucket == "fapi" else SPOT_WEIGHT_LIMIT
        if state.weight.used(now) + w > limit:
            state.strikes += 1
            if state.strikes > self.ban_after_429s:
                self.ban(self.ban_s * 2 ** state.bans, ip, bucket, now=now)  # escalates: 2 min, 4, 8, ...
                raise self._ban_reply(state, ip, now)
            retry = state.weight.retry_after(now, w, limit)
            state.retry_until = max(state.retry_until, now + float(retry))
            raise _Reply(429, -1003, self._too_many_msg(ip), self._retry_after(retry))
        state.strikes = 0
        state.weight.add(now, w)

    def _retry_after(self, seconds: Any) -> dict[str, str]:
        """The Retry-After header, only when the fault asks for it: the USD-M general-info page
        does not promise one on 429/418 (the -1003 message of a ban names its end instead)."""
        return {"Retry-After": str(seconds)} if self.faults.retry_after else {}

    def _too_many_msg(self, ip: str) -> str:
        return (f"Too many requests; current limit of IP({ip}) is {self.weight_limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.")

    def _ban_reply(self, state: _IpState, ip: str, now: float) -> _Reply:
        until_ms = self.server_time() + int((state.ban_until - now) * 1000)
        return _Reply(418, -1003, f"Way too many requests; IP({ip}) banned until {until_ms}. "
                      "Please use the websocket for live updates to avoid bans.",
                      self._retry_after(max(1, round(state.ban_until - now))))  # whole seconds, no jitter

    def ban(self, seconds: float, ip: str = "127.0.0.1", bucket: str = "fapi", now: float | None = None) -> None:
        """Ban an IP for `seconds` (418, "banned until <ms>", until then)."""
        state = self._ips.setdefault((ip, bucket), _IpState(_Window(60.0)))
        state.ban_until = (time.monotonic() if now is None else now) + min(seconds, MAX_BAN_S)
        state.bans += 1
        state.strikes = 0

    def _check_auth(self, request: web.Request, params: dict[str, str], raw_qs: str, body: str, signed: bool) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ExchangeError(-2015, MSG_BAD_KEY, 401)
        if not signed:
            return
        if not params.get("timestamp"):
            raise _mandatory("timestamp")
        qs_payload, qs_sig = _split_signature(raw_qs)
        body_payload, body_sig = _split_signature(body)
        sig = qs_sig or body_sig
        if not sig:
            raise _mandatory("signature")
        expected = hmac.new(self._secret, (qs_payload + body_payload).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ExchangeError(-1022, "Signature for this request is not valid.")
        self._check_timestamp(params)

    def _check_timestamp(self, params: Mapping[str, str]) -> None:
        """A signed request's timestamp against the server clock and its recvWindow."""
        if not params.get("timestamp"):
            raise _mandatory("timestamp")
        ts, recv = int(params["timestamp"]), int(params.get("recvWindow") or 5000)
        if recv > 60_000:
            raise ExchangeError(-1131, "recvWindow must be less than 60000")
        now = self.server_time()
        if ts >= now + 1000:
            raise ExchangeError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > recv:
            raise ExchangeError(-1021, "Timestamp for this request is outside of the recvWindow.")

    def _check_order_rate(self, cost: tuple[int, int], headers: dict[str, str]) -> None:
        now = time.monotonic()
        if self._orders_10s.used(now) + cost[0] > self.order_limit_10s:
            raise _Reply(429, -1015, f"Too many new orders; current limit is {self.order_limit_10s} orders per TEN_SECONDS.",
                         self._retry_after(self._orders_10s.retry_after(now, cost[0], self.order_limit_10s)))
        if self._orders_1m.used(now) + cost[1] > self.order_limit_1m:
            raise _Reply(429, -1015, f"Too many new orders; current limit is {self.order_limit_1m} orders per MINUTE.",
                         self._retry_after(self._orders_1m.retry_after(now, cost[1], self.order_limit_1m)))
        self._orders_10s.add(now, cost[0])
        self._orders_1m.add(now, cost[1])

    def _unknown_fault(self, route: _Route) -> _Reply | None:
        """503 "Unknown error": raised now (not placed) or returned to raise after placing."""
        if not route.placement:
            return None
        fl = self.faults
        if fl.http_408_next > 0:
            # General Info: 408 is a backend timeout; the request may have been executed. Here
            # it always was, so a client that takes 408 for a refusal leaves an order behind.
            fl.http_408_next -= 1
            return _Reply(408, -1007, "Timeout waiting for response from backend server. "
                                      "Send status unknown; execution status unknown.")
        hit = fl.unknown_next > 0 or (fl.unknown_rate > 0 and self._fault_rng.random() < fl.unknown_rate)
        if not hit:
            return None
        if fl.unknown_next > 0:
            fl.unknown_next -= 1
        reply = _Reply(503, -1000, MSG_UNKNOWN)
        if self._fault_rng.random() >= fl.unknown_placed:
            raise reply
        return reply

    # ------------------------------------------------------------------ routes
    def _route_table(self) -> list[_Route]:
        def per_symbol(with_sym: int, without: int) -> Callable[[dict[str, str]], int]:
            return lambda p: with_sym if p.get("symbol") else without

        def depth_weight(p: dict[str, str]) -> int:
            n = int(p.get("limit") or 500) if str(p.get("limit") or "500").isdigit() else 500
            return 2 if n <= 50 else 5 if n <= 100 else 10 if n <= 500 else 20

        def klines_weight(p: dict[str, str]) -> int:
            n = int(p.get("limit") or 500)
            return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10

        R = _Route
        return [
            R("GET", "/api/v3/ping", lambda p: {}),
            R("GET", "/api/v3/time", lambda p: {"serverTime": self.server_time()}),
            R("GET", "/fapi/v1/ping", lambda p: {}),
            R("GET", "/fapi/v1/time", lambda p: {"serverTime": self.server_time()}),
            R("GET", "/fapi/v1/exchangeInfo", self._exchange_info),
            R("GET", "/fapi/v1/klines", self._klines, weight=klines_weight),
            R("GET", "/fapi/v1/markPriceKlines", self._mark_price_klines, weight=klines_weight),
            R("GET", "/fapi/v1/ticker/price", self._ticker_price, weight=per_symbol(1, 2)),
            R("GET", "/fapi/v2/ticker/price", self._ticker_price, weight=per_symbol(1, 2)),
            R("GET", "/fapi/v1/premiumIndex", self._premium_index, weight=per_symbol(1, 10)),
            R("GET", "/fapi/v1/ticker/24hr", self._ticker_24hr, weight=per_symbol(1, 40)),
            R("GET", "/fapi/v1/ticker/bookTicker", self._book_ticker, weight=per_symbol(2, 5)),
            R("GET", "/fapi/v1/depth", self._depth, weight=depth_weight),
            R("GET", "/fapi/v1/multiAssetsMargin", lambda p: {"multiAssetsMargin": self.sim.multi_assets}, "SIGNED", 30),
            R("POST", "/fapi/v1/multiAssetsMargin", self._multi_assets, "SIGNED"),
            R("GET", "/fapi/v1/fundingRate", self._funding_rate_history),
            R("GET", "/fapi/v1/income", self._income, "SIGNED", 30),
            R("GET", "/fapi/v1/leverageBracket", self._leverage_bracket, "SIGNED", 1),
            R("GET", "/fapi/v2/balance", self._balance, "SIGNED", 5),
            R("GET", "/fapi/v3/balance", self._balance, "SIGNED", 5),
            R("GET", "/fapi/v2/account", lambda p: self._account(2), "SIGNED", 5),
            R("GET", "/fapi/v3/account", lambda p: self._account(3), "SIGNED", 5),
            R("GET", "/sapi/v1/account/apiRestrictions", self._api_restrictions, "SIGNED", 1),
            R("GET", "/fapi/v2/positionRisk", lambda p: self._position_risk(p, 2), "SIGNED", 5),
            R("GET", "/fapi/v3/positionRisk", lambda p: self._position_risk(p, 3), "SIGNED", 5),
            R("POST", "/fapi/v1/leverage", self._leverage, "SIGNED"),
            R("POST", "/fapi/v1/marginType", self._margin_type, "SIGNED"),
            R("GET", "/fapi/v1/positionSide/dual", lambda p: {"dualSidePosition": self.sim.dual_side}, "SIGNED", 30),
            R("POST", "/fapi/v1/positionSide/dual", self._position_mode, "SIGNED"),
            R("GET", "/fapi/v1/commissionRate", self._commission, "SIGNED", 20),
            R("POST", "/fapi/v1/order", self._new_order, "SIGNED", 0, (1, 1), True),
            R("POST", "/fapi/v1/order/test", self._test_order, "SIGNED", 1),
            R("GET", "/fapi/v1/order", self._get_order, "SIGNED"),
            R("DELETE", "/fapi/v1/order", self._cancel_order, "SIGNED"),
            R("PUT", "/fapi/v1/order", self._modify_order, "SIGNED", 1, (1, 1)),
            R("POST", "/fapi/v1/batchOrders", self._batch_orders, "SIGNED", 5, (5, 1), True),
            R("DELETE", "/fapi/v1/allOpenOrders", self._cancel_all, "SIGNED"),
            R("GET", "/fapi/v1/openOrders", self._open_orders, "SIGNED", per_symbol(1, 40)),
            R("GET", "/fapi/v1/allOrders", self._all_orders, "SIGNED", 5),
            R("GET", "/fapi/v1/userTrades", self._user_trades, "SIGNED", 5),
            R("POST", "/fapi/v1/algoOrder", self._new_algo, "SIGNED", 0, (1, 1), True),
            R("GET", "/fapi/v1/algoOrder", self._get_algo, "SIGNED"),
            R("DELETE", "/fapi/v1/algoOrder", self._cancel_algo, "SIGNED"),
            R("GET", "/fapi/v1/openAlgoOrders", self._open_algos, "SIGNED", per_symbol(1, 40)),
            R("GET", "/fapi/v1/allAlgoOrders", self._all_algos, "SIGNED", 5),
            R("DELETE", "/fapi/v1/algoOpenOrders", self._cancel_all_algos, "SIGNED"),
            R("POST", "/fapi/v1/listenKey", self._listen_key_new, "KEY"),
            R("PUT", "/fapi/v1/listenKey", self._listen_key_keepalive, "KEY"),
            R("DELETE", "/fapi/v1/listenKey", self._listen_key_close, "KEY"),
        ]

    # ------------------------------------------------------------------ admin API (loopback only, no auth)
    @staticmethod
    async def _admin_params(request: web.Request) -> dict[str, str]:
        if request.remote not in ("127.0.0.1", "::1"):
            raise web.HTTPForbidden(text="admin API is loopback only")
        params = dict(parse_qsl((await request.read()).decode())) if request.body_exists else {}
        params.update(request.query)
        return params

    async def _admin_state(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response(self.state())

    async def _admin_clock(self, request: web.Request) -> web.Response:
        """The market's clock alone (cheap to poll, unlike /_sim/state which lists every order)."""
        await self._admin_params(request)
        return web.json_response({"simTime": self.sim.now_ms, "started": self.clock_started,
                                  "finished": self.finished,
                                  "candleIndex": {s: ser.cursor for s, ser in self.series.items()}})

    async def _admin_stats(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response(self.stats())

    async def _admin_step(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        played = await self.step(int(p.get("candles", 1)))
        return web.json_response({"played": played, "prices": self._prices(), "simTime": self.sim.now_ms})

    async def _admin_price(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        try:
            sym = self._symbol(p)
            await self.set_price(sym, float(p["price"]), fill=p.get("fill", "true").lower() != "false")
        except (ExchangeError, KeyError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"prices": self._prices()})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        if request.method == "POST":
            try:
                self.faults.update(p)
            except ValueError as e:
                return web.json_response({"error": str(e)}, status=400)
        return web.json_response(asdict(self.faults))

    async def _admin_plan(self, request: web.Request) -> web.Response:
        """One plan entry: `at_minute=N` and faults or actions (ban_s, expire_listen_keys, ws_drop)."""
        p = await self._admin_params(request)
        try:
            self.plan_fault(parse_plan_entry(p))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"plan": [asdict(x) for x in self.fault_plan]})

    async def _admin_ws_drop(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        return web.json_response({"dropped": self.drop_websockets(p.get("kind", "all"), p.get("mode", "abort"))})

    async def _admin_expire(self, request: web.Request) -> web.Response:
        await self._admin_params(request)
        return web.json_response({"expired": self.expire_listen_keys()})

    async def _admin_ban(self, request: web.Request) -> web.Response:
        p = await self._admin_params(request)
        self.ban(float(p.get("seconds", self.ban_s)), p.get("ip", "127.0.0.1"))
        return web.json_response({"banned": True})
