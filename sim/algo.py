"""The simulated Algo Order API: conditional orders (STOP_MARKET and kin) held apart from the
book until their trigger, as Binance does since 2025-12-09.

`AlgoBook` is a part of `sim.exchange.SimulatedExchange`: it owns the algo orders and their
life (placement, lookup, cancel, trigger, end) and rests them on the books it is given.  What
it needs from the matching engine (the clock and user stream, order ids, the account's
position mode, and placing the order a trigger sends) is `AlgoEngine`."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Protocol

from exchange_api import ERR_UNKNOWN_ORDER, ERR_WOULD_TRIGGER, BinanceError

from sim.model import (
    BUY, CANCELED, EXPIRED, NEW, SELL,   # enum members bound to names once (the hot path)
    CLIENT_ID_RE, sim_error, SimAlgoOrder, SimOrder, AlgoUpdate, SymbolBook, UserStream, book_of, mandatory_error,
    parse_bool, parse_price, parse_qty,
)

# A stop whose trigger fails (local exchange faults): () -> ("REJECTED"|"EXPIRED", rm) or None.
TriggerFault = Callable[[], tuple[str, str] | None]


class AlgoEngine(UserStream, Protocol):
    """What the algo orders need from the matching engine they are part of."""

    @property
    def dual_side(self) -> bool:
        """The account is in hedge mode (the engine refuses every order there)."""

    def new_id(self) -> int:
        """The next id of the exchange's one sequence (orders and algo orders)."""

    def upcoming_id(self) -> int:
        """The id `new_id` will hand out next (not taken)."""

    def place_triggered(self, b: SymbolBook, a: SimAlgoOrder, client_id: str, qty: float,
                        fill_price: int) -> SimOrder:
        """Place the order a triggered `a` sends (`qty`, as `client_id`): a market order fills
        at once from `fill_price`, a limit rests."""


class AlgoBook:
    """The account's algo orders: placement, lookup, cancel, trigger and their end."""

    def __init__(self, books: dict[str, SymbolBook], engine: AlgoEngine) -> None:
        self.books = books
        self._engine: AlgoEngine = weakref.proxy(engine)     # weakly, as the account (no cycle)
        self.orders: dict[int, SimAlgoOrder] = {}      # every algo order ever placed, by id
        # Binance links a triggered algo order to the order it places by `ai` (that order's id)
        # and promises nothing about that order's client id: on the Binance-protocol exchange
        # it gets one of its own (the daemon must link by `ai`); in process it keeps the algo's.
        self.own_triggered_ids = False
        self.trigger_fault: TriggerFault | None = None

    # ------------------------------------------------------------------ requests
    def new_order(self, symbol: str, side: str, type: str, triggerPrice: Any = None,
                  algoType: str = "CONDITIONAL", quantity: Any = None, price: Any = None,
                  closePosition: Any = False, reduceOnly: Any = False,
                  clientAlgoId: str | None = None, workingType: str = "CONTRACT_PRICE",
                  timeInForce: str = "GTC", positionSide: str = "BOTH", **extra: Any) -> SimAlgoOrder:
        """POST /fapi/v1/algoOrder (CONDITIONAL: STOP/TAKE_PROFIT[_MARKET])."""
        engine = self._engine
        b = book_of(self.books, symbol)
        f = b.filters
        side = (side or "").upper()
        if side not in (BUY, SELL):
            raise sim_error(BinanceError.INVALID_SIDE, "Invalid side.")
        if (algoType or "").upper() != "CONDITIONAL":
            raise sim_error(BinanceError.INVALID_ORDER_TYPE, "Invalid algoType.")
        otype = (type or "").upper()
        if otype not in ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            raise sim_error(BinanceError.INVALID_ORDER_TYPE, "Invalid orderType.")
        if (positionSide or "BOTH").upper() != "BOTH" or engine.dual_side:
            raise sim_error(BinanceError.POSITION_SIDE_NOT_MATCH,
                            "Order's position side does not match user's setting.")
        if triggerPrice in (None, ""):
            raise mandatory_error("triggerPrice")
        trig_t = parse_price(f, triggerPrice, "triggerPrice")
        trig = f.from_ticks(trig_t)
        close_pos = parse_bool(closePosition)
        reduce_only = parse_bool(reduceOnly)
        if close_pos and (quantity not in (None, "") or reduce_only):
            raise sim_error(BinanceError.PARAM_NOT_REQUIRED, "Parameter 'quantity' sent when not required.")
        qty = 0.0 if close_pos else f.from_steps(parse_qty(f, quantity))
        limit_t = parse_price(f, price) if otype in ("STOP", "TAKE_PROFIT") else 0
        limit = f.from_ticks(limit_t)
        cid = clientAlgoId or f"sim_algo_{engine.upcoming_id()}"
        if not CLIENT_ID_RE.match(cid):
            raise sim_error(BinanceError.INVALID_CLIENT_ORDER_ID, "Client order id is not valid.")
        if cid in b.algo_by_client:
            raise sim_error(BinanceError.CLIENT_ORDER_ID_DUPLICATED, "ClientOrderId is duplicated.")
        # STOP types fire BUY at price >= trigger, SELL at <=; TAKE_PROFIT types the reverse.
        is_stop_type = otype.startswith("STOP")
        fires_below = (side == SELL) if is_stop_type else (side == BUY)
        if b.price_t and (b.price_t <= trig_t if fires_below else b.price_t >= trig_t):
            raise sim_error(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        on_mark = (workingType or "CONTRACT_PRICE").upper() == "MARK_PRICE"
        if on_mark and b.mark_driven and b.mark_t and (b.mark_t <= trig_t if fires_below else b.mark_t >= trig_t):
            raise sim_error(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        aid = engine.new_id()
        now = engine.now_ms
        a = SimAlgoOrder(algo_id=aid, client_algo_id=cid, symbol=symbol, side=side, order_type=otype,
                         trigger_price=trig, price=limit, qty=qty, close_position=close_pos,
                         reduce_only=reduce_only, time_in_force=timeInForce or "GTC",
                         working_type=(workingType or "CONTRACT_PRICE").upper(), create_time=now,
                         update_time=now, limit_t=limit_t, working_mark=on_mark, trigger=trig_t,
                         fires_below=fires_below, seq=aid)
        self.orders[aid] = a
        b.algo_by_client[cid] = a
        b.resting_for(a)[aid] = a
        self._emit(a)
        return a

    def _lookup(self, algoId: Any, clientAlgoId: str | None, open_only: bool) -> SimAlgoOrder | None:
        a: SimAlgoOrder | None
        if algoId not in (None, ""):
            a = self.orders.get(int(algoId))
        elif clientAlgoId:
            a = next((b.algo_by_client[clientAlgoId] for b in self.books.values()
                      if clientAlgoId in b.algo_by_client), None)
            if a is None and not open_only:
                a = next((x for x in reversed(list(self.orders.values()))
                          if x.client_algo_id == clientAlgoId), None)
        else:
            raise mandatory_error("algoid")
        if a is not None and open_only and a.status != NEW:
            return None
        return a

    def cancel(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup(algoId, clientAlgoId, open_only=True)
        if a is None:
            raise sim_error(ERR_UNKNOWN_ORDER, "Unknown order sent.")
        self.end(a, CANCELED)
        return a

    def cancel_all(self, symbol: str) -> None:
        for a in list(book_of(self.books, symbol).algo_by_client.values()):
            self.end(a, CANCELED)

    def get(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup(algoId, clientAlgoId, open_only=False)
        if a is None:
            raise sim_error(BinanceError.NO_SUCH_ORDER, "Order does not exist.")
        return a

    def open_orders(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        books = [book_of(self.books, symbol)] if symbol else list(self.books.values())
        return [a for b in books for a in b.algo_by_client.values()]

    # ------------------------------------------------------------------ life
    def end(self, a: SimAlgoOrder, status: str, force: bool = False) -> None:
        """`a` leaves its book as `status` (`force`: reported even with acknowledgements off)."""
        b = self.books[a.symbol]
        a.status = status
        a.update_time = self._engine.now_ms
        if b.algo_by_client.get(a.client_algo_id) is a:
            del b.algo_by_client[a.client_algo_id]
        b.resting.pop(a.algo_id, None)
        b.mark_resting.pop(a.algo_id, None)
        self._emit(a, force)

    def trigger(self, b: SymbolBook, a: SimAlgoOrder, fill_price: int) -> None:
        """The price (or the mark) reached `a`: it leaves the book and places its order, unless
        there is nothing to close or the trigger fails (reported only as ALGO_UPDATE)."""
        engine = self._engine
        a.status = "TRIGGERED"
        a.trigger_time = a.update_time = engine.now_ms
        a.actual_order_id = engine.upcoming_id()       # the order the trigger is about to place
        b.resting.pop(a.algo_id, None)
        b.mark_resting.pop(a.algo_id, None)
        del b.algo_by_client[a.client_algo_id]
        self._emit(a)
        pos = b.position.qty
        qty = abs(pos) if a.close_position else a.qty
        closes = pos != 0 and (pos > 0) == (a.side == SELL)
        if (a.close_position or a.reduce_only) and not closes:
            a.status, a.actual_order_id = EXPIRED, 0   # nothing to close: Binance rejects the triggered order
            a.reason = "Reduce Only reject"
            self._emit(a)
            return
        failed = self.trigger_fault() if self.trigger_fault is not None else None
        if failed is not None:
            # Since 2025-12-15 a stop that fails when it triggers is reported only as
            # ALGO_UPDATE X=REJECTED/EXPIRED with the reason in `rm` (change-log 2025-12-10).
            a.status, a.reason = failed
            a.actual_order_id = 0
            self._emit(a)
            return
        if a.reduce_only:
            qty = min(qty, abs(pos))
        cid = f"algo_{a.algo_id}" if self.own_triggered_ids else a.client_algo_id
        o = engine.place_triggered(b, a, cid, qty, fill_price)
        a.actual_order_id = o.order_id
        if o.type == "MARKET":
            a.actual_price = b.filters.from_ticks(fill_price)
        a.status = "FINISHED"
        self._emit(a)

    def _emit(self, a: SimAlgoOrder, force: bool = False) -> None:
        engine = self._engine
        if not (engine.ack_events or force):
            return
        engine.events.append(AlgoUpdate(a.symbol, a.client_algo_id, a.algo_id, a.side, a.order_type,
                                        a.status, a.trigger_price, a.qty, a.close_position, engine.now_ms,
                                        a.actual_order_id, a.reason))
