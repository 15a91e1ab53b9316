"""The local exchange's admin API, loopback only and without auth: /_sim/state, /stats, /clock,
/step, /price, /faults, /plan, /ws_drop, /listen_key/expire, /ban.

A part of `local_exchange.LocalExchange`: it drives the exchange through its public surface
(`Controls`) and reads prices and symbols from the market part."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Protocol
from urllib.parse import parse_qsl

from aiohttp import web

from exchange_api import ExchangeError
from sim.exchange import SimulatedExchange
from localex.base import Faults, PlannedFault, Series, parse_plan_entry
from localex.market_api import MarketApi


class Controls(Protocol):
    """What the admin API reads and drives (the exchange's public surface)."""

    @property
    def sim(self) -> SimulatedExchange: ...

    @property
    def series(self) -> Mapping[str, Series]: ...

    @property
    def clock_started(self) -> bool: ...

    @property
    def finished(self) -> bool: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def fault_plan(self) -> list[PlannedFault]: ...

    @property
    def ban_s(self) -> float: ...

    def state(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    async def step(self, n: int = 1) -> int: ...

    async def set_price(self, symbol: str, price: float, fill: bool = True) -> None: ...

    def plan_fault(self, entry: PlannedFault) -> None: ...

    def drop_websockets(self, kind: str = "all", mode: str = "abort") -> int: ...

    def expire_listen_keys(self) -> int: ...

    def ban(self, seconds: float, ip: str = "127.0.0.1") -> None: ...


async def _admin_params(request: web.Request) -> dict[str, str]:
    if request.remote not in ("127.0.0.1", "::1"):
        raise web.HTTPForbidden(text="admin API is loopback only")
    params = dict(parse_qsl((await request.read()).decode())) if request.body_exists else {}
    params.update(request.query)
    return params


class AdminApi:
    """The /_sim/... endpoints."""

    def __init__(self, ex: Controls, market: MarketApi):
        self.ex = ex
        self.market = market

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        for path, handler in (("/_sim/state", self.state), ("/_sim/stats", self.stats),
                              ("/_sim/faults", self.faults), ("/_sim/clock", self.clock)):
            r.add_route("GET", path, handler)
        for path, handler in (("/_sim/step", self.step), ("/_sim/price", self.price),
                              ("/_sim/faults", self.faults), ("/_sim/ws_drop", self.ws_drop),
                              ("/_sim/listen_key/expire", self.expire), ("/_sim/ban", self.ban),
                              ("/_sim/plan", self.plan)):
            r.add_route("POST", path, handler)

    async def state(self, request: web.Request) -> web.Response:
        await _admin_params(request)
        return web.json_response(self.ex.state())

    async def clock(self, request: web.Request) -> web.Response:
        """The market's clock alone (cheap to poll, unlike /_sim/state which lists every order)."""
        await _admin_params(request)
        ex = self.ex
        return web.json_response({"simTime": ex.sim.now_ms, "started": ex.clock_started,
                                  "finished": ex.finished,
                                  "candleIndex": {s: ser.cursor for s, ser in ex.series.items()}})

    async def stats(self, request: web.Request) -> web.Response:
        await _admin_params(request)
        return web.json_response(self.ex.stats())

    async def step(self, request: web.Request) -> web.Response:
        p = await _admin_params(request)
        played = await self.ex.step(int(p.get("candles", 1)))
        return web.json_response({"played": played, "prices": self.market.prices(), "simTime": self.ex.sim.now_ms})

    async def price(self, request: web.Request) -> web.Response:
        p = await _admin_params(request)
        try:
            sym = self.market.symbol(p)
            await self.ex.set_price(sym, float(p["price"]), fill=p.get("fill", "true").lower() != "false")
        except (ExchangeError, KeyError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"prices": self.market.prices()})

    async def faults(self, request: web.Request) -> web.Response:
        p = await _admin_params(request)
        if request.method == "POST":
            try:
                self.ex.faults.update(p)
            except ValueError as e:
                return web.json_response({"error": str(e)}, status=400)
        return web.json_response(asdict(self.ex.faults))

    async def plan(self, request: web.Request) -> web.Response:
        """One plan entry: `at_minute=N` and faults or actions (ban_s, expire_listen_keys, ws_drop)."""
        p = await _admin_params(request)
        try:
            self.ex.plan_fault(parse_plan_entry(p))
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response({"plan": [asdict(x) for x in self.ex.fault_plan]})

    async def ws_drop(self, request: web.Request) -> web.Response:
        p = await _admin_params(request)
        return web.json_response({"dropped": self.ex.drop_websockets(p.get("kind", "all"), p.get("mode", "abort"))})

    async def expire(self, request: web.Request) -> web.Response:
        await _admin_params(request)
        return web.json_response({"expired": self.ex.expire_listen_keys()})

    async def ban(self, request: web.Request) -> web.Response:
        p = await _admin_params(request)
        self.ex.ban(float(p.get("seconds", self.ex.ban_s)), p.get("ip", "127.0.0.1"))
        return web.json_response({"banned": True})
