"""The simulated Algo Order API: conditional orders (STOP_MARKET and kin) held apart from the
book until their trigger, as Binance does since 2025-12-09.

A part of `sim_exchange.SimulatedExchange` (a mixin: it uses the attributes that class sets up)."""
from __future__ import annotations

from typing import Any

from exchange_api import ERR_UNKNOWN_ORDER, ERR_WOULD_TRIGGER

from sim.model import CLIENT_ID_RE, sim_error, SimAlgoOrder, parse_bool


class AlgoMixin:
    """Algo orders: placement, lookup, cancel and their end."""

    # ------------------------------------------------------------------ algo orders
    def new_algo_order(self, symbol: str, side: str, type: str, triggerPrice: Any = None,
                       algoType: str = "CONDITIONAL", quantity: Any = None, price: Any = None,
                       closePosition: Any = False, reduceOnly: Any = False,
                       clientAlgoId: str | None = None, workingType: str = "CONTRACT_PRICE",
                       timeInForce: str = "GTC", positionSide: str = "BOTH", **extra: Any) -> SimAlgoOrder:
        """POST /fapi/v1/algoOrder (CONDITIONAL: STOP/TAKE_PROFIT[_MARKET])."""
        b = self.book(symbol)
        f = b.filters
        side = (side or "").upper()
        if side not in ("BUY", "SELL"):
            raise sim_error(-1117, "Invalid side.")
        if (algoType or "").upper() != "CONDITIONAL":
            raise sim_error(-1116, "Invalid algoType.")
        otype = (type or "").upper()
        if otype not in ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            raise sim_error(-1116, "Invalid orderType.")
        if (positionSide or "BOTH").upper() != "BOTH" or self.dual_side:
            raise sim_error(-4061, "Order's position side does not match user's setting.")
        if triggerPrice in (None, ""):
            raise sim_error(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        trig_t = self._parse_price(f, triggerPrice, "triggerPrice")
        trig = f.from_ticks(trig_t)
        close_pos = parse_bool(closePosition)
        reduce_only = parse_bool(reduceOnly)
        if close_pos and (quantity not in (None, "") or reduce_only):
            raise sim_error(-1106, "Parameter 'quantity' sent when not required.")
        qty = 0.0 if close_pos else f.from_steps(self._parse_qty(f, quantity))
        limit_t = self._parse_price(f, price) if otype in ("STOP", "TAKE_PROFIT") else 0
        limit = f.from_ticks(limit_t)
        cid = clientAlgoId or f"sim_algo_{self._next_id + 1}"
        if not CLIENT_ID_RE.match(cid):
            raise sim_error(-4015, "Client order id is not valid.")
        if cid in b.algo_by_client:
            raise sim_error(-4116, "ClientOrderId is duplicated.")
        # STOP types fire BUY at price >= trigger, SELL at <=; TAKE_PROFIT types the reverse.
        is_stop_type = otype.startswith("STOP")
        fires_below = (side == "SELL") if is_stop_type else (side == "BUY")
        if b.price_t and (b.price_t <= trig_t if fires_below else b.price_t >= trig_t):
            raise sim_error(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        on_mark = (workingType or "CONTRACT_PRICE").upper() == "MARK_PRICE"
        if on_mark and b.mark_driven and b.mark_t and (b.mark_t <= trig_t if fires_below else b.mark_t >= trig_t):
            raise sim_error(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        aid = self._new_id()
        a = SimAlgoOrder(algo_id=aid, client_algo_id=cid, symbol=symbol, side=side, order_type=otype,
                         trigger_price=trig, price=limit, qty=qty, close_position=close_pos,
                         reduce_only=reduce_only, time_in_force=timeInForce or "GTC",
                         working_type=(workingType or "CONTRACT_PRICE").upper(), create_time=self.now_ms,
                         update_time=self.now_ms, limit_t=limit_t, working_mark=on_mark, trigger=trig_t,
                         fires_below=fires_below, seq=aid)
        self.algo_orders[aid] = a
        b.algo_by_client[cid] = a
        self._resting_for(b, a)[aid] = a
        self._emit_algo(a)
        return a

    def _lookup_algo(self, algoId: Any, clientAlgoId: str | None, open_only: bool) -> SimAlgoOrder | None:
        if algoId not in (None, ""):
            a = self.algo_orders.get(int(algoId))
        elif clientAlgoId:
            a = next((b.algo_by_client[clientAlgoId] for b in self.books.values()
                      if clientAlgoId in b.algo_by_client), None)
            if a is None and not open_only:
                a = next((x for x in reversed(list(self.algo_orders.values()))
                          if x.client_algo_id == clientAlgoId), None)
        else:
            raise sim_error(-1102, "Mandatory parameter 'algoid' was not sent, was empty/null, or malformed.")
        if a is not None and open_only and a.status != "NEW":
            return None
        return a

    def cancel_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup_algo(algoId, clientAlgoId, open_only=True)
        if a is None:
            raise sim_error(ERR_UNKNOWN_ORDER, "Unknown order sent.")
        self._end_algo(a, "CANCELED")
        return a

    def cancel_all_algo_orders(self, symbol: str) -> None:
        for a in list(self.book(symbol).algo_by_client.values()):
            self._end_algo(a, "CANCELED")

    def get_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup_algo(algoId, clientAlgoId, open_only=False)
        if a is None:
            raise sim_error(-2013, "Order does not exist.")
        return a

    def open_algo_orders(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        books = [self.book(symbol)] if symbol else list(self.books.values())
        return [a for b in books for a in b.algo_by_client.values()]

    def _end_algo(self, a: SimAlgoOrder, status: str, force: bool = False) -> None:
        b = self.books[a.symbol]
        a.status = status
        a.update_time = self.now_ms
        if b.algo_by_client.get(a.client_algo_id) is a:
            del b.algo_by_client[a.client_algo_id]
        b.resting.pop(a.algo_id, None)
        b.mark_resting.pop(a.algo_id, None)
        self._emit_algo(a, force)

