"""The REST gateway: routes, authentication, IP weight and order-count limits, bans, and the
injected faults of the HTTP layer (5xx, unknown status, 408, 429, delay).

A part of `local_exchange.LocalExchange`: it serves the route table (localex/routes.py) over
the endpoint parts, publishes what each request made the engine do (`Publisher`), and tells
the lockstep clock when requests come and go (`RequestActivity`)."""
from __future__ import annotations
import asyncio
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl
from aiohttp import web
from exchange_api import BinanceError, ExchangeError
from localex.base import (JSON_SEP, MAX_BAN_S, MSG_BAD_KEY, MSG_UNAVAILABLE, MSG_UNKNOWN, SPOT_WEIGHT_LIMIT, Faults,
    IpState, Publisher, Reply, RequestActivity, Route, ServerTime, Window, mandatory, split_signature, log)
from localex.settings import RateLimits

MSG_BAD_SIGNATURE = "Signature for this request is not valid."


class Gateway:
    """The REST gateway: routes, authentication, IP weight and order-count limits, bans, injected faults."""

    def __init__(self, routes: list[Route], limits: RateLimits, api_key: str, api_secret: str, faults: Faults,
                 fault_seed: int | None, publisher: Publisher, activity: RequestActivity, server_time: ServerTime):
        self.routes = routes
        self.limits = limits
        self.api_key = api_key
        self._secret = api_secret.encode()       # never logged, never printed, not in repr
        self.faults = faults
        self._fault_rng = random.Random(fault_seed)  # the dice of the rate faults (5xx, unknown)
        self.publisher = publisher
        self.activity = activity
        self.server_time = server_time
        self.ips: dict[tuple[str, str], IpState] = {}      # (ip, "api" / "fapi") -> its weight and bans
        self.orders_10s = Window(10.0)
        self.orders_1m = Window(60.0)
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.not_found: Counter[str] = Counter()     # requests for paths the exchange does not serve

    # ------------------------------------------------------------------ HTTP plumbing
    def add_routes(self, app: web.Application) -> None:
        """Every REST route, then the catch-all that answers (and counts) what is not served."""
        r = app.router
        for route in self.routes:
            r.add_route(route.method, route.path, self._endpoint(route))
        r.add_route("*", "/{tail:.*}", self._not_found)

    async def _not_found(self, request: web.Request) -> web.Response:
        # Counted, so a client asking for what the exchange lacks shows up in /_sim/stats.
        self.not_found[f"{request.method} {request.path}"] += 1
        self.responses[404] += 1
        return web.json_response({"code": BinanceError.INVALID_PATH,
                                  "msg": f"Path {request.path}, Method {request.method} is invalid"}, status=404)

    def _endpoint(self, route: Route) -> Callable[[web.Request], Any]:
        key = f"{route.method} {route.path}"
        bucket = "api" if route.path.startswith("/api/") else "fapi"
        activity = self.activity

        async def handle(request: web.Request) -> web.Response:
            activity.begin()
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
                activity.end()
            self.responses[status] += 1
            return web.Response(text=json.dumps(payload, separators=JSON_SEP), status=status, headers=headers,
                                content_type="application/json")

        return handle

    def _serve(self, route: Route, bucket: str, request: web.Request, params: dict[str, str], raw_qs: str,
               body: str) -> tuple[int, Any, dict[str, str]]:
        ip = request.remote or "127.0.0.1"
        state = self.ip_state(ip, bucket)
        headers: dict[str, str] = {}
        try:
            try:
                self.check_weight(state, ip, bucket, route, params)
                if bucket == "fapi" and self.faults.http_5xx_rate > 0 and self._fault_rng.random() < self.faults.http_5xx_rate:
                    raise Reply(503, BinanceError.DISCONNECTED, MSG_UNAVAILABLE)
                if route.security != "NONE":
                    self._check_auth(request, params, raw_qs, body, route.security == "SIGNED")
                if route.orders:
                    self.check_order_rate(route.orders)
                placed_unknown = self._unknown_fault(route)
                result = route.handler(params)
                if placed_unknown is not None:
                    raise placed_unknown
                return 200, result, headers
            except ExchangeError as e:
                return e.http_status, {"code": e.code, "msg": e.msg}, headers
            except Reply as r:
                headers.update(r.headers)
                return r.status, {"code": r.code, "msg": r.msg}, headers
            except (ValueError, TypeError, KeyError):
                return 400, {"code": BinanceError.ILLEGAL_CHARS, "msg": "Illegal characters found in a parameter."}, \
                    headers
            except Exception:  # a bug here must not look like a network failure to the client
                log.exception("%s %s failed", route.method, route.path)
                return 500, {"code": BinanceError.UNKNOWN,
                             "msg": "An unknown error occured while processing the request."}, headers
        finally:
            self.publisher.flush_events()
            headers["X-MBX-USED-WEIGHT-1M"] = str(state.weight.used(time.monotonic()))
            if route.orders:
                now = time.monotonic()
                headers["X-MBX-ORDER-COUNT-10S"] = str(self.orders_10s.used(now))
                headers["X-MBX-ORDER-COUNT-1M"] = str(self.orders_1m.used(now))

    # ------------------------------------------------------------------ limits (the WebSocket API shares them)
    def ip_state(self, ip: str, bucket: str) -> IpState:
        state = self.ips.get((ip, bucket))
        if state is None:
            state = self.ips[(ip, bucket)] = IpState(Window(60.0))
        return state

    def check_weight(self, state: IpState, ip: str, bucket: str, route: Route, params: dict[str, str]) -> None:
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
            raise Reply(429, BinanceError.TOO_MANY_REQUESTS, self._too_many_msg(ip), self._retry_after(wait))
        state.fault_429s = 0
        w = route.weight(params) if callable(route.weight) else route.weight
        limit = self.limits.weight_limit if bucket == "fapi" else SPOT_WEIGHT_LIMIT
        if state.weight.used(now) + w > limit:
            state.strikes += 1
            if state.strikes > self.limits.ban_after_429s:
                self.ban(self.limits.ban_s * 2 ** state.bans, ip, bucket, now=now)  # escalates: 2 min, 4, 8, ...
                raise self._ban_reply(state, ip, now)
            retry = state.weight.retry_after(now, w, limit)
            state.retry_until = max(state.retry_until, now + float(retry))
            raise Reply(429, BinanceError.TOO_MANY_REQUESTS, self._too_many_msg(ip), self._retry_after(retry))
        state.strikes = 0
        state.weight.add(now, w)

    def _retry_after(self, seconds: Any) -> dict[str, str]:
        """The Retry-After header, only when the fault asks for it: the USD-M general-info page
        does not promise one on 429/418 (the -1003 message of a ban names its end instead)."""
        return {"Retry-After": str(seconds)} if self.faults.retry_after else {}

    def _too_many_msg(self, ip: str) -> str:
        return (f"Too many requests; current limit of IP({ip}) is {self.limits.weight_limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API.")

    def _ban_reply(self, state: IpState, ip: str, now: float) -> Reply:
        until_ms = self.server_time() + int((state.ban_until - now) * 1000)
        return Reply(418, BinanceError.TOO_MANY_REQUESTS, f"Way too many requests; IP({ip}) banned until {until_ms}. "
                     "Please use the websocket for live updates to avoid bans.",
                     self._retry_after(max(1, round(state.ban_until - now))))  # whole seconds, no jitter

    def ban(self, seconds: float, ip: str = "127.0.0.1", bucket: str = "fapi", now: float | None = None) -> None:
        """Ban an IP for `seconds` (418, "banned until <ms>", until then)."""
        state = self.ips.setdefault((ip, bucket), IpState(Window(60.0)))
        state.ban_until = (time.monotonic() if now is None else now) + min(seconds, MAX_BAN_S)
        state.bans += 1
        state.strikes = 0

    def client_wait_until(self) -> float:
        """When the last Retry-After (429) or ban (418) this exchange gave ends (monotonic; 0: none)."""
        return max((max(s.ban_until, s.retry_until) for s in self.ips.values()), default=0.0)

    def check_order_rate(self, cost: tuple[int, int]) -> None:
        """The order-count limits (10 s and 1 min windows): 429 -1015 past either."""
        now = time.monotonic()
        limits = self.limits
        if self.orders_10s.used(now) + cost[0] > limits.order_limit_10s:
            raise Reply(429, BinanceError.TOO_MANY_ORDERS,
                        f"Too many new orders; current limit is {limits.order_limit_10s} orders per TEN_SECONDS.",
                        self._retry_after(self.orders_10s.retry_after(now, cost[0], limits.order_limit_10s)))
        if self.orders_1m.used(now) + cost[1] > limits.order_limit_1m:
            raise Reply(429, BinanceError.TOO_MANY_ORDERS,
                        f"Too many new orders; current limit is {limits.order_limit_1m} orders per MINUTE.",
                        self._retry_after(self.orders_1m.retry_after(now, cost[1], limits.order_limit_1m)))
        self.orders_10s.add(now, cost[0])
        self.orders_1m.add(now, cost[1])

    # ------------------------------------------------------------------ authentication
    def key_matches(self, key: str | None) -> bool:
        return bool(key) and hmac.compare_digest(str(key).encode(), self.api_key.encode())

    def signature_matches(self, payload: str, signature: str) -> bool:
        """HMAC-SHA256 of `payload` with the secret, against a hex signature (any case)."""
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature.lower())

    def _check_auth(self, request: web.Request, params: dict[str, str], raw_qs: str, body: str, signed: bool) -> None:
        if not self.key_matches(request.headers.get("X-MBX-APIKEY")):
            raise ExchangeError(BinanceError.REJECTED_MBX_KEY, MSG_BAD_KEY, 401)
        if not signed:
            return
        if not params.get("timestamp"):
            raise mandatory("timestamp")
        qs_payload, qs_sig = split_signature(raw_qs)
        body_payload, body_sig = split_signature(body)
        sig = qs_sig or body_sig
        if not sig:
            raise mandatory("signature")
        if not self.signature_matches(qs_payload + body_payload, sig):
            raise ExchangeError(BinanceError.INVALID_SIGNATURE, MSG_BAD_SIGNATURE)
        self.check_timestamp(params)

    def check_timestamp(self, params: Mapping[str, str]) -> None:
        """A signed request's timestamp against the server clock and its recvWindow."""
        if not params.get("timestamp"):
            raise mandatory("timestamp")
        ts, recv = int(params["timestamp"]), int(params.get("recvWindow") or 5000)
        if recv > 60_000:
            raise ExchangeError(BinanceError.BAD_RECV_WINDOW, "recvWindow must be less than 60000")
        now = self.server_time()
        if ts >= now + 1000:
            raise ExchangeError(BinanceError.INVALID_TIMESTAMP,
                                "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > recv:
            raise ExchangeError(BinanceError.INVALID_TIMESTAMP, "Timestamp for this request is outside of the recvWindow.")

    # ------------------------------------------------------------------ faults
    def _unknown_fault(self, route: Route) -> Reply | None:
        """503 "Unknown error": raised now (not placed) or returned to raise after placing."""
        if not route.placement:
            return None
        fl = self.faults
        if fl.http_408_next > 0:
            # General Info: 408 is a backend timeout; the request may have been executed. Here
            # it always was, so a client that takes 408 for a refusal leaves an order behind.
            fl.http_408_next -= 1
            return Reply(408, BinanceError.TIMEOUT, "Timeout waiting for response from backend server. "
                                                    "Send status unknown; execution status unknown.")
        hit = fl.unknown_next > 0 or (fl.unknown_rate > 0 and self._fault_rng.random() < fl.unknown_rate)
        if not hit:
            return None
        if fl.unknown_next > 0:
            fl.unknown_next -= 1
        reply = Reply(503, BinanceError.UNKNOWN, MSG_UNKNOWN)
        if self._fault_rng.random() >= fl.unknown_placed:
            raise reply
        return reply
