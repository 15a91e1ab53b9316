"""An in-process simulated Binance USDⓈ-M futures exchange.

One-way mode, cross margin, one wallet in the margin asset (USDC), leverage
per symbol; LIMIT (GTC/IOC/FOK/GTX) and MARKET orders with reduceOnly, batch
placement, and conditional orders only through the Algo Order API (a
STOP_MARKET sent to the plain order call gets -4120, as on Binance since
2025-12-09).  Filters and error codes follow Binance; fills follow SPEC §6
through `fill_model`.  Every change is queued as a typed event
(`OrderUpdate`, `AlgoUpdate`, `AccountUpdate`) that `to_binance_event`
turns into the ORDER_TRADE_UPDATE / ALGO_UPDATE / ACCOUNT_UPDATE payloads a
Binance user stream carries.

Prices move only when a driver calls `advance` (one monotone leg at a time,
stopping after each fill so the strategy can react before the leg goes on)
or `set_price` (a jump that fills nothing).  The backtest drives it
directly; `local_exchange.py` puts Binance's REST and WebSocket protocol in
front of it.

`SimulatedExchange` is the matching engine (orders, books, fills, the user
stream) composed with two parts: the `Account` (sim/account.py: wallet,
margin, modes, liquidation, funding), the simulator's centre, and the
`AlgoBook` (sim/algo.py: conditional orders).  Each part states what it needs
from the engine as a Protocol (`AccountEngine`, `AlgoEngine`), which this class
implements and passes to them; it keeps the whole public surface (the parts'
methods and attributes delegate), so callers still see one object.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Generic, Iterable, TypeVar, overload

from exchange_api import (
    EPS, ENTRY_RETRY_FLOOR, ENTRY_RETRY_STEP, ERR_MARGIN_INSUFFICIENT, ERR_MIN_NOTIONAL, ERR_REDUCE_ONLY_REJECTED,
    ERR_NO_SUCH_ORDER, ERR_POST_ONLY_REJECTED, ERR_UNKNOWN_ORDER, ERR_USE_ALGO_API, BinanceError, ExchangeError, ExecType,
    FuturesVenue, LimitOrder, OpenOrder, OrderAck, OrderUpdate, Position, SymbolFilters, apply_fill,
)
from market.brackets import table_for
from sim.fill_model import next_trigger
from sim.model import (
    BUY, CALCULATED, CANCELED, EXPIRED, FILLED, NEW, PARTIALLY_FILLED, SELL, TRADE,   # enum members bound to names once (the hot path)
    DEFAULT_FILTERS, DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE, MAX_OPEN_ORDERS, MAX_BATCH_ORDERS, CLIENT_ID_RE,
    ALGO_TYPES, sim_error, SimOrder, SimAlgoOrder, SimPosition, SimTrade, AlgoUpdate,
    LiquidationTrigger, Liquidation, FundingSettlement, Income, AccountUpdate, Event, SymbolBook, RestingOrder,
    follows_mark, resting_key, mandatory_error, parse_bool, parse_price, parse_qty,
)
from sim.account import Account, mark_of, order_cost
from sim.algo import AlgoBook, TriggerFault

# The records and the typed events are sim.model's; importers take them from here too.
__all__ = ["SimulatedExchange", "SimVenue", "DEFAULT_FILTERS", "DEFAULT_MAKER_FEE", "DEFAULT_TAKER_FEE",
           "MAX_BATCH_ORDERS", "SimOrder", "SimAlgoOrder", "SimPosition", "SimTrade", "AlgoUpdate",
           "AccountUpdate", "LiquidationTrigger", "Liquidation", "FundingSettlement", "Income", "Event",
           "SymbolBook"]


T = TypeVar("T")


class PartAttribute(Generic[T]):
    """An attribute of the exchange that lives on one of its parts (`part`: the exchange's
    attribute holding it; `name`: the part's attribute, by default the same name): read and
    set on the exchange, kept on the part, so callers see one object."""

    def __init__(self, part: str, name: str = "") -> None:
        self.part = part
        self.name = name

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = self.name or name

    @overload
    def __get__(self, obj: None, owner: type) -> PartAttribute[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...

    def __get__(self, obj: object | None, owner: type) -> PartAttribute[T] | T:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, self.part), self.name)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class SimulatedExchange:
    """One simulated futures account: the matching engine, composed with its `Account` and
    its `AlgoBook` (it is the `AccountEngine` and the `AlgoEngine` they are given)."""

    def __init__(self, filters: Iterable[SymbolFilters] | None = None, balance: float = 10_000.0,
                 maker_fee: float = DEFAULT_MAKER_FEE, taker_fee: float = DEFAULT_TAKER_FEE,
                 asset: str = "USDC", leverage: int = 20):
        self.books: dict[str, SymbolBook] = {}
        for f in (filters if filters is not None else DEFAULT_FILTERS.values()):
            self.books[f.symbol] = SymbolBook(f, position=SimPosition(leverage=leverage),
                                              brackets=table_for(f.symbol)[0])
        self.maker_fee, self.taker_fee = maker_fee, taker_fee
        self.now_ms = 0
        self.orders: dict[int, SimOrder] = {}          # every order ever placed, by id
        self.trades: list[SimTrade] = []
        self.events: list[Event] = []
        # Placement / requested-cancel acknowledgements, account and algo updates are streamed
        # to user streams; an in-process driver that acts only on fills and expiries turns them off.
        self.ack_events = True
        self._next_id = 1_000_000
        self._next_trade_id = 1
        self.keep_trades = True         # the trade history (userTrades); the backtest records fills itself
        self._multi = len(self.books) > 1
        # The parts, each given the books and this engine (their AccountEngine / AlgoEngine).
        self.account = Account(self.books, self, balance, asset)
        self.algos = AlgoBook(self.books, self)
        # Bound once: `rejection` asks for the free margin at every placement (the backtest's
        # hot path); not at all while the checks are suspended (no order's margin computed).
        self._available_balance = self.account.available_balance
        self._margin_checked = True

    # ------------------------------------------------------------------ the account (delegated)
    mark_of = staticmethod(mark_of)
    wallet = PartAttribute[float]("account")
    total_fees = PartAttribute[float]("account")
    asset = PartAttribute[str]("account")
    collateral = PartAttribute[str]("account")
    multi_assets = PartAttribute[bool]("account")
    dual_side = PartAttribute[bool]("account")
    liquidation_enabled = PartAttribute[bool]("account")
    liquidations = PartAttribute[list[Liquidation]]("account")
    funding = PartAttribute[list[FundingSettlement]]("account")
    income = PartAttribute[list[Income]]("account")

    def available_balance(self) -> float:
        return self.account.available_balance()

    def unrealized(self) -> float:
        return self.account.unrealized()

    def maint_margin(self, b: SymbolBook) -> float:
        return self.account.maint_margin(b)

    def change_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        return self.account.change_leverage(symbol, leverage)

    def change_multi_assets(self, on: bool) -> dict[str, Any]:
        return self.account.change_multi_assets(on)

    def change_margin_type(self, symbol: str, margin_type: str) -> dict[str, Any]:
        return self.account.change_margin_type(symbol, margin_type)

    def change_position_mode(self, dual: bool) -> dict[str, Any]:
        return self.account.change_position_mode(dual)

    def settle_funding(self, symbol: str, rate: float, mark: float) -> float:
        return self.account.settle_funding(symbol, rate, mark)

    # ------------------------------------------------------------------ algo orders (delegated)
    algo_orders = PartAttribute[dict[int, SimAlgoOrder]]("algos", "orders")
    own_triggered_ids = PartAttribute[bool]("algos")
    trigger_fault = PartAttribute[TriggerFault | None]("algos")

    def new_algo_order(self, symbol: str, side: str, type: str, triggerPrice: Any = None,
                       algoType: str = "CONDITIONAL", quantity: Any = None, price: Any = None,
                       closePosition: Any = False, reduceOnly: Any = False,
                       clientAlgoId: str | None = None, workingType: str = "CONTRACT_PRICE",
                       timeInForce: str = "GTC", positionSide: str = "BOTH", **extra: Any) -> SimAlgoOrder:
        """POST /fapi/v1/algoOrder (CONDITIONAL: STOP/TAKE_PROFIT[_MARKET])."""
        return self.algos.new_order(symbol, side, type, triggerPrice, algoType, quantity, price, closePosition,
                                    reduceOnly, clientAlgoId, workingType, timeInForce, positionSide, **extra)

    def cancel_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        return self.algos.cancel(algoId, clientAlgoId)

    def cancel_all_algo_orders(self, symbol: str) -> None:
        self.algos.cancel_all(symbol)

    def get_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        return self.algos.get(algoId, clientAlgoId)

    def open_algo_orders(self, symbol: str | None = None) -> list[SimAlgoOrder]:
        return self.algos.open_orders(symbol)

    # ------------------------------------------------------------------ what the parts need
    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def upcoming_id(self) -> int:
        return self._next_id + 1

    def cancel_every_order(self) -> None:
        """Every open order and algo order of the account cancelled, each reported even with
        acknowledgements off (a liquidation's first step), book by book."""
        for book in self.books.values():
            for o in list(book.open_by_client.values()):
                self.end_order(book, o, CANCELED, force=True)
            for a in list(book.algo_by_client.values()):
                self.algos.end(a, CANCELED, force=True)

    def force_close(self, b: SymbolBook, price_t: int) -> SimOrder:
        """Binance's liquidation order: `b`'s whole position closed at `price_t` (a CALCULATED
        trade that checks no liquidation: the account settles it)."""
        p, f = b.position, b.filters
        qty = abs(p.qty)
        oid = self.new_id()
        cid = f"autoclose-{self.now_ms}"
        side = SELL if p.steps > 0 else BUY
        o = SimOrder(order_id=oid, client_id=cid, symbol=f.symbol, side=side, type="LIQUIDATION",
                     orig_type="LIQUIDATION", price=f.from_ticks(price_t), qty=qty, reduce_only=True,
                     time_in_force="IOC", time=self.now_ms, update_time=self.now_ms, trigger=price_t,
                     fires_below=side == BUY, seq=oid)
        self.orders[oid] = o
        self._fill(b, o, price_t, qty, maker=False, exec_type=CALCULATED, check_liquidation=False)
        return o

    def place_triggered(self, b: SymbolBook, a: SimAlgoOrder, client_id: str, qty: float,
                        fill_price: int) -> SimOrder:
        """The order a triggered algo order places: a market order takes at once from
        `fill_price`, a limit rests at its price."""
        oid = self.new_id()
        is_market = a.order_type.endswith("MARKET")
        o = SimOrder(order_id=oid, client_id=client_id, symbol=a.symbol, side=a.side,
                     type="MARKET" if is_market else "LIMIT", orig_type=a.order_type,
                     price=0.0 if is_market else a.price, qty=qty,
                     reduce_only=a.reduce_only or a.close_position, time_in_force=a.time_in_force,
                     time=self.now_ms, update_time=self.now_ms, close_position=a.close_position,
                     stop_price=a.trigger_price, trigger=a.limit_t, fires_below=(a.side == BUY),
                     seq=oid)
        self.orders[oid] = o
        self._emit_order(o, NEW)
        if is_market:
            self._take(b, o, fill_price, qty)
        elif o.client_id not in b.open_by_client:
            b.rest(o)
        return o

    # ------------------------------------------------------------------ helpers
    def book(self, symbol: str) -> SymbolBook:
        # model.book_of, inline: every request looks its book up (one call less per request)
        b = self.books.get(symbol)
        if b is None:
            raise sim_error(BinanceError.INVALID_SYMBOL, "Invalid symbol.")
        return b

    def drain_events(self) -> list[Event]:
        ev, self.events = self.events, []
        return ev

    def _check_client_id(self, b: SymbolBook, cid: str | None) -> str:
        if cid is None or cid == "":
            return f"sim_{self._next_id + 1}"
        if not CLIENT_ID_RE.match(cid):
            raise sim_error(BinanceError.INVALID_CLIENT_ORDER_ID, "Client order id is not valid.")
        if cid in b.open_by_client:
            raise sim_error(BinanceError.CLIENT_ORDER_ID_DUPLICATED, "ClientOrderId is duplicated.")
        return cid

    # ------------------------------------------------------------------ orders
    def new_order(self, symbol: str, side: str, type: str = "LIMIT", quantity: Any = None,
                  price: Any = None, timeInForce: str | None = None, reduceOnly: Any = False,
                  newClientOrderId: str | None = None, positionSide: str = "BOTH",
                  **extra: Any) -> SimOrder:
        """POST /fapi/v1/order, with Binance's checks in Binance's order."""
        b = self.book(symbol)
        f = b.filters
        side = (side or "").upper()
        if side not in (BUY, SELL):
            raise sim_error(BinanceError.INVALID_SIDE, "Invalid side.")
        otype = (type or "").upper()
        if otype in ALGO_TYPES:
            raise sim_error(ERR_USE_ALGO_API, "Order type not supported for this endpoint. "
                       "Please use the Algo Order API endpoints instead.")
        if otype not in ("LIMIT", "MARKET"):
            raise sim_error(BinanceError.INVALID_ORDER_TYPE, "Invalid orderType.")
        if (positionSide or "BOTH").upper() != "BOTH" or self.account.dual_side:
            raise sim_error(BinanceError.POSITION_SIDE_NOT_MATCH,
                            "Order's position side does not match user's setting.")
        reduce_only = parse_bool(reduceOnly)
        cid = self._check_client_id(b, newClientOrderId)
        if quantity is None or quantity == "":
            raise mandatory_error("quantity")
        qty_s = parse_qty(f, quantity)
        if otype == "LIMIT":
            if price is None or price == "":
                raise mandatory_error("price")
            px_t = parse_price(f, price)
            tif = (timeInForce or "").upper()
            if tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
                raise mandatory_error("timeInForce")
        else:
            if not b.price_t:
                raise mandatory_error("price")
            px_t, tif = b.price_t, "GTC"
        return self.place_checked(b, cid, side, otype, px_t, qty_s, tif, reduce_only)

    def place_checked(self, b: SymbolBook, cid: str, side: str, otype: str, px_t: int, qty_s: int, tif: str,
                      reduce_only: bool, px: float | None = None, qty: float | None = None) -> SimOrder:
        """The order checks and matching once the request is parsed into ticks and steps (the
        in-process venue enters here with the strategy's canonical values, `px` and `qty`)."""
        f = b.filters
        if px is None:
            px = f.from_ticks(px_t)
        if qty is None:
            qty = f.from_steps(qty_s)
        err = self.rejection(b, side, otype, px_t, qty_s, tif, reduce_only, px, qty)
        if err is not None:
            raise err
        return self.accept(b, cid, side, otype, px_t, tif, reduce_only, px, qty)

    def rejection(self, b: SymbolBook, side: str, otype: str, px_t: int, qty_s: int, tif: str, reduce_only: bool,
                  px: float, qty: float) -> ExchangeError | None:
        """Binance's order checks, in Binance's order: the first refusal, or None."""
        f = b.filters
        if not reduce_only and px * qty + EPS < f.min_notional:
            return sim_error(ERR_MIN_NOTIONAL, f"Order's notional must be no smaller than {f.min_notional:g} "
                        "(unless you choose reduce only).")
        pos = b.position.steps
        if reduce_only and (pos == 0 or (pos > 0) == (side == BUY) or qty_s > abs(pos)):
            return sim_error(ERR_REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        if len(b.open_by_client) >= MAX_OPEN_ORDERS:
            return sim_error(BinanceError.MAX_OPEN_ORDER_EXCEEDED, "Reach max open order limit.")
        if tif == "GTX" and otype == "LIMIT" and b.price_t and (px_t >= b.price_t if side == BUY
                                                                 else px_t <= b.price_t):
            return sim_error(ERR_POST_ONLY_REJECTED, "Due to the order could not be executed as maker, the Post "
                             "Only order will be rejected.")
        if not reduce_only and self._margin_checked and order_cost(b, side, px, qty) > self._available_balance() + EPS:
            return ExchangeError(ERR_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        return None

    def accept(self, b: SymbolBook, cid: str, side: str, otype: str, px_t: int, tif: str, reduce_only: bool,
               px: float, qty: float) -> SimOrder:
        """An order that passed the checks: recorded, then matched, rested or expired."""
        symbol = b.filters.symbol
        marketable = otype == "MARKET" or (b.price_t and (px_t >= b.price_t if side == BUY else px_t <= b.price_t))
        self._next_id += 1
        oid = self._next_id
        now = self.now_ms
        # Positional: the record of every placement, on the backtest's hot path.
        o = SimOrder(oid, cid, symbol, side, otype, otype, px if otype == "LIMIT" else 0.0, qty, reduce_only,
                     tif, now, now, NEW, 0.0, 0.0, False, 0.0, px_t, side == BUY, False, oid)
        self.orders[oid] = o
        if self.ack_events:
            self._emit_order(o, NEW)
        if marketable:
            # Takes liquidity at the current price (better than or at the limit).
            self._take(b, o, b.price_t, o.qty)
            if o.status != FILLED:
                self.end_order(b, o, EXPIRED)
        elif tif in ("IOC", "FOK"):
            self.end_order(b, o, EXPIRED)
        else:
            b.rest(o)
        return o

    def batch_orders(self, symbol_orders: list[dict[str, Any]]) -> list[SimOrder | ExchangeError]:
        """POST /fapi/v1/batchOrders: each element succeeds or fails on its own."""
        if not symbol_orders or len(symbol_orders) > MAX_BATCH_ORDERS:
            raise sim_error(BinanceError.INVALID_PARAMETER, "Data sent for parameter 'batchOrders' is not valid.")
        out: list[SimOrder | ExchangeError] = []
        for params in symbol_orders:
            try:
                out.append(self.new_order(**params))
            except ExchangeError as e:
                out.append(e)
            except TypeError:
                out.append(sim_error(BinanceError.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                                     "Mandatory parameter was not sent, was empty/null, or malformed."))
        return out

    def _lookup_open(self, b: SymbolBook, order_id: Any, client_id: str | None) -> SimOrder | None:
        if order_id not in (None, ""):
            o = self.orders.get(int(order_id))
            return o if o is not None and o.symbol == b.filters.symbol and o.client_id in b.open_by_client \
                and b.open_by_client[o.client_id] is o else None
        if client_id:
            return b.open_by_client.get(client_id)
        raise mandatory_error("orderid")

    def cancel_order(self, symbol: str, orderId: Any = None, origClientOrderId: str | None = None) -> SimOrder:
        b = self.book(symbol)
        o = self._lookup_open(b, orderId, origClientOrderId)
        if o is None:
            raise sim_error(ERR_UNKNOWN_ORDER, "Unknown order sent.")
        self.end_order(b, o, CANCELED)
        return o

    def modify_order(self, symbol: str, side: str, quantity: Any, price: Any, orderId: Any = None,
                     origClientOrderId: str | None = None, **extra: Any) -> SimOrder:
        """PUT /fapi/v1/order: a new price and quantity for an open LIMIT order, which keeps its
        ids and goes to the back of its price's queue.  A new value the filters refuse leaves the
        order as it was; the order is cancelled when the new quantity is not above what has
        filled, or when a post-only order's new price would execute at once."""
        b = self.book(symbol)
        f = b.filters
        o = self._lookup_open(b, orderId, origClientOrderId)
        if o is None:
            raise sim_error(ERR_NO_SUCH_ORDER, "Order does not exist.")
        if o.type != "LIMIT":
            raise sim_error(BinanceError.INVALID_ORDER_TYPE, "Invalid orderType.")
        if (side or "").upper() != o.side:
            raise sim_error(BinanceError.INVALID_SIDE, "Invalid side.")
        if quantity in (None, "") or price in (None, ""):
            raise mandatory_error("quantity" if quantity in (None, "") else "price")
        qty_s = parse_qty(f, quantity)
        px_t = parse_price(f, price)
        if qty_s <= f.to_steps(o.executed_qty):
            self.end_order(b, o, CANCELED)
            return o
        crosses = b.price_t and (px_t >= b.price_t if o.side == BUY else px_t <= b.price_t)
        if crosses and o.time_in_force == "GTX":
            self.end_order(b, o, CANCELED)
            return o
        old = (o.price, o.qty, o.trigger)
        b.unrest(o, o.remaining, done=True)
        o.price, o.qty, o.trigger = f.from_ticks(px_t), f.from_steps(qty_s), px_t
        if not o.reduce_only and self._margin_checked \
                and order_cost(b, o.side, o.price, o.remaining) > self._available_balance() + EPS:
            o.price, o.qty, o.trigger = old
            b.rest(o)
            raise ExchangeError(ERR_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        o.seq = self.new_id()           # the back of the queue at its price
        o.update_time = self.now_ms
        if self.ack_events:
            # Positional: built once per order event of a backtest (22 fields by keyword cost more).
            self.events.append(OrderUpdate(
                o.symbol, o.client_id, o.order_id, o.side, o.orig_type, ExecType.AMENDMENT, o.status, o.price, o.qty,
                0.0, 0.0, o.executed_qty, o.avg_price, 0.0, 0.0, False, o.reduce_only, o.close_position,
                o.stop_price, 0, self.now_ms, self.now_ms, self.account.asset))
        if crosses:
            self._take(b, o, b.price_t, o.remaining)
            if o.status != FILLED:
                b.rest(o)
        else:
            b.rest(o)
        return o

    def cancel_all_orders(self, symbol: str) -> None:
        b = self.book(symbol)
        for o in list(b.open_by_client.values()):
            self.end_order(b, o, CANCELED)

    def get_order(self, symbol: str, orderId: Any = None, origClientOrderId: str | None = None) -> SimOrder:
        b = self.book(symbol)
        if orderId not in (None, ""):
            o = self.orders.get(int(orderId))
        elif origClientOrderId:
            o = b.open_by_client.get(origClientOrderId) or next(
                (x for x in reversed(list(self.orders.values()))
                 if x.symbol == symbol and x.client_id == origClientOrderId), None)
        else:
            raise mandatory_error("orderid")
        if o is None or o.symbol != symbol:
            raise sim_error(BinanceError.NO_SUCH_ORDER, "Order does not exist.")
        return o

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        books = [self.book(symbol)] if symbol else list(self.books.values())
        return [o for b in books for o in b.open_by_client.values()]

    def end_order(self, b: SymbolBook, o: SimOrder, status: str, force: bool = False) -> None:
        """`o` leaves its book as `status` (CANCELED, EXPIRED; `force`: reported even with
        acknowledgements off)."""
        o.status = status
        o.update_time = self.now_ms
        if b.open_by_client.get(o.client_id) is o:
            b.unrest(o, o.remaining, done=True)
        self._emit_order(o, status, force)

    # ------------------------------------------------------------------ market
    def drive_mark(self, symbol: str, driven: bool = True) -> None:
        """A mark series moves this book's mark (`set_mark_ticks` / `advance_mark_ticks`);
        without one the mark is the last price."""
        b = self.book(symbol)
        movers = [r for r in list(b.resting.values()) + list(b.mark_resting.values()) if follows_mark(r)]
        for r in movers:
            key = resting_key(r)
            b.resting.pop(key, None)
            b.mark_resting.pop(key, None)
        b.mark_driven = driven
        if driven and not b.mark_t:
            b.mark_t, b.mark = b.price_t, b.price
        for r in movers:
            b.resting_for(r)[resting_key(r)] = r

    def set_mark_ticks(self, symbol: str, ticks: int) -> None:
        """Move the mark (a jump: triggers nothing until the next leg)."""
        b = self.books[symbol]
        b.mark_t = ticks
        b.mark = b.filters.from_ticks(ticks)

    def advance_mark_ticks(self, symbol: str, end: int) -> bool:
        """Move a driven mark along a monotone leg; stops after the first mark-triggered event."""
        b = self.books[symbol]
        hit = next_trigger(b.mark_t, end, b.mark_resting.values()) if b.mark_resting else None
        if hit is None:
            b.mark_t = end
            b.mark = b.filters.from_ticks(end)
            return False
        r, fill_price, b.mark_t = hit
        b.mark = b.filters.from_ticks(b.mark_t)
        self._fire(b, r, fill_price)
        return True

    def _fire(self, b: SymbolBook, r: RestingOrder, fill_price: int) -> None:
        """A trigger the price (or the mark) reached: a liquidation, an algo order, or a
        resting limit's (maker) fill."""
        if isinstance(r, LiquidationTrigger):
            self.account.liquidate(b, fill_price)
        elif isinstance(r, SimAlgoOrder):
            self.algos.trigger(b, r, fill_price)
        elif b.leg_budget is None:
            self._fill(b, r, fill_price, r.remaining, maker=True)
        else:
            # Volume-limited: the order takes what the leg has left; the rest stays open.
            f = b.filters
            q = min(f.to_steps(r.remaining), b.leg_budget)
            b.leg_budget -= q
            self._fill(b, r, fill_price, f.from_steps(q), maker=True)

    def set_leg_volume(self, symbol: str, steps: int | None) -> None:
        """The volume fill model: the next leg trades `steps` (None: full fills, SPEC §6)."""
        b = self.books[symbol]
        b.leg_volume = b.leg_budget = steps

    def _take(self, b: SymbolBook, o: SimOrder, price_t: int, qty: float) -> None:
        """A taker fill (a market order, a triggered stop, a marketable limit).  Under the
        volume model it sweeps a thin book: trades of one leg's volume each, every one a tick
        worse than the last, until the order is filled."""
        if not b.leg_volume or b.leg_volume <= 0 or o.type != "MARKET":
            self._fill(b, o, price_t, qty, maker=False)     # a limit never trades beyond its price
            return
        f = b.filters
        left = f.to_steps(qty)
        step = -1 if o.side == SELL else 1
        k = 0
        while left > 0 and o.status not in (FILLED, EXPIRED, CANCELED):
            q = min(left, b.leg_volume)
            self._fill(b, o, price_t + step * k, f.from_steps(q), maker=False)
            left -= q
            k += 1

    def suspend_account_checks(self) -> bool:
        """-2019 checks and liquidation off (a bound shows neither can bind); returns liquidation's."""
        on, self.account.liquidation_enabled = self.account.liquidation_enabled, False
        self._margin_checked, self._multi = False, False
        return on

    def resume_account_checks(self, liquidation: bool) -> None:
        self.account.liquidation_enabled = liquidation     # the caller places the liquidation prices
        self._margin_checked, self._multi = True, len(self.books) > 1

    def _after_move(self) -> None:
        """Cross margin: a move of one symbol moves the others' liquidation prices."""
        if not self.account.liquidation_enabled:
            return
        held = 0
        for b in self.books.values():
            if b.position.steps:
                held += 1
                if held > 1:
                    self.account.update_liquidation()
                    return

    def set_position(self, symbol: str, qty: float, entry_price: float) -> None:
        """Put a position in place (tests and the local exchange's admin call), on the step grid."""
        b = self.book(symbol)
        p = b.position
        p.steps = b.filters.to_steps(qty)
        p.qty = b.filters.from_steps(p.steps)
        p.entry_price = float(entry_price) if p.steps else 0.0

    def set_price(self, symbol: str, price: float) -> None:
        """Move the last price (its nearest tick) without filling anything (a jump between candles)."""
        b = self.book(symbol)
        self.set_price_ticks(symbol, b.filters.to_ticks(float(price)))

    def set_price_ticks(self, symbol: str, ticks: int) -> None:
        b = self.books[symbol]
        b.price_t = ticks
        b.price = b.filters.from_ticks(ticks)
        if self._multi:
            self._after_move()

    def advance(self, symbol: str, end: float) -> bool:
        """`advance_ticks` to the nearest tick of a price."""
        return self.advance_ticks(symbol, self.books[symbol].filters.to_ticks(float(end)))

    def advance_ticks(self, symbol: str, end: int) -> bool:
        """Move the price along a monotone leg toward `end` (integer ticks).

        Stops after the first fill (returns True, price at the fill) so the
        caller can let the strategy react; returns False once at `end`.
        """
        b = self.books[symbol]
        resting: Iterable[RestingOrder] = b.resting.values()
        if b.leg_budget is not None and b.leg_budget <= 0:
            resting = [r for r in resting if r.is_stop]     # the leg's volume is taken: stops only
        hit = next_trigger(b.price_t, end, resting)
        if hit is None:
            b.price_t = end
            b.price = b.filters.from_ticks(end)
            if self._multi:
                self._after_move()
            return False
        r, fill_price, b.price_t = hit
        b.price = b.filters.from_ticks(b.price_t)
        self._fire(b, r, fill_price)
        return True

    def _fill(self, b: SymbolBook, o: SimOrder, price_t: int, qty: float, maker: bool,
              exec_type: str = TRADE, check_liquidation: bool = True) -> None:
        p = b.position
        f = b.filters
        price = f.from_ticks(price_t)
        qty_s = f.to_steps(qty)
        if o.reduce_only:
            closes = p.steps != 0 and (p.steps > 0) == (o.side == SELL)
            qty_s = min(qty_s, abs(p.steps)) if closes else 0
            if qty_s <= 0:
                self.end_order(b, o, EXPIRED)
                return
            qty = f.from_steps(qty_s)
        signed_s = qty_s if o.side == BUY else -qty_s
        before = p.steps
        _, p.entry_price, realized = apply_fill(p.qty, p.entry_price, f.from_steps(signed_s), price)
        p.steps += signed_s
        p.qty = f.from_steps(p.steps)
        if p.steps == 0:
            p.entry_price = 0.0
        p.update_time = self.now_ms
        fee = price * qty * (self.maker_fee if maker else self.taker_fee)
        acct = self.account         # the wallet is the account's: one lookup per fill
        acct.wallet += realized - fee
        acct.total_fees += fee
        b.realized_cum += realized
        resting = b.open_by_client.get(o.client_id) is o
        o.executed_qty += qty
        o.cum_quote += price * qty
        o.update_time = self.now_ms
        o.executed_qty = f.qty_round(o.executed_qty)
        o.status = FILLED if f.to_steps(o.remaining) <= 0 else PARTIALLY_FILLED
        if resting:
            b.unrest(o, qty, done=o.status == FILLED)
        tid = self._next_trade_id
        self._next_trade_id += 1
        # Positional records: one trade and one event per fill, the backtest's hot path.
        if self.keep_trades:
            self.trades.append(SimTrade(tid, o.order_id, o.client_id, o.symbol, o.side, price, qty,
                                        realized, fee, maker, self.now_ms, p.qty, p.entry_price, self._next_id))
        # Positional: built once per order event of a backtest (22 fields by keyword cost more).
        self.events.append(OrderUpdate(
            o.symbol, o.client_id, o.order_id, o.side, o.orig_type, exec_type, o.status, o.price, o.qty,
            qty, price, o.executed_qty, o.avg_price, fee, realized, maker, o.reduce_only,
            o.close_position, o.stop_price, tid, self.now_ms, self.now_ms, acct.asset))
        if self.ack_events:
            acct.emit_update(b, "ORDER")
        if p.steps == 0 or (p.steps > 0) != (before > 0):
            self._expire_stale_reduce_only(b)    # flat or flipped: reduce-only orders may be stale
        if check_liquidation:
            acct.update_liquidation()

    def _expire_stale_reduce_only(self, b: SymbolBook) -> None:
        """Binance drops reduce-only orders that can no longer reduce the position."""
        pos = b.position.steps
        for o in list(b.open_by_client.values()):
            if o.reduce_only and (pos == 0 or (pos > 0) == (o.side == BUY)):
                self.end_order(b, o, EXPIRED)

    # ------------------------------------------------------------------ events
    def _emit_order(self, o: SimOrder, status: str, force: bool = False) -> None:
        if not (self.ack_events or force) and status in (NEW, CANCELED):
            return
        # Positional: built once per order event of a backtest (22 fields by keyword cost more).
        self.events.append(OrderUpdate(
            o.symbol, o.client_id, o.order_id, o.side, o.orig_type, status, status, o.price, o.qty,
            0.0, 0.0, o.executed_qty, o.avg_price, 0.0, 0.0, False, o.reduce_only, o.close_position, o.stop_price,
            0, self.now_ms, self.now_ms, self.account.asset))

    # ------------------------------------------------------------------ queries
    def position(self, symbol: str) -> SimPosition:
        return self.book(symbol).position

    def user_trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                    from_id: int | None = None, limit: int = 500) -> list[SimTrade]:
        out = [t for t in self.trades if t.symbol == symbol
               and (start_ms is None or t.time >= start_ms) and (end_ms is None or t.time <= end_ms)
               and (from_id is None or t.id >= from_id)]
        return out[:limit] if from_id is not None else out[-limit:]


# ---------------------------------------------------------------------- the venue adapter


class SimVenue(FuturesVenue):
    """`FuturesVenue` over a `SimulatedExchange`, called directly in-process.

    Its coroutines never suspend, so the backtest can drive the strategy
    with `exchange_api.run_sync`.
    """

    def __init__(self, exchange: SimulatedExchange, symbol: str):
        self.exchange = exchange
        self.symbol = symbol
        self.filters = exchange.book(symbol).filters

    async def get_position(self) -> Position:
        b = self.exchange.books[self.symbol]
        return Position(b.position.qty, b.position.entry_price, b.liq_price, mark_of(b))

    async def get_position_info_with_retry(self, tries: int = 10) -> Position:
        return await self.get_position()          # in process: never fails, no retry loop

    async def cancel_orders_confirmed(self, client_ids: list[str]) -> dict[str, float]:
        ex = self.exchange
        book = ex.books[self.symbol]
        out: dict[str, float] = {}
        for c in client_ids:
            o = book.open_by_client.get(c)
            if o is not None:
                ex.end_order(book, o, CANCELED)
                out[c] = o.executed_qty
            else:
                out[c] = await self.cancel_order_confirmed(c)
        return out

    def _place(self, order: LimitOrder) -> SimOrder:
        r = self._place_or_refusal(order)
        if isinstance(r, ExchangeError):
            raise r
        return r

    def _place_or_refusal(self, order: LimitOrder) -> SimOrder | ExchangeError:
        """An in-process limit order: the strategy's prices and sizes are canonical values of the
        tick and step grid, so they go to the engine as integers without a decimal round trip
        (the same checks and errors as `new_order` from there on); a refusal is returned, not
        raised (a batch reports it per element)."""
        ex, f = self.exchange, self.filters
        book = ex.books[self.symbol]
        t, q = order.price / f.tick_size, order.qty / f.step_size
        px_t, qty_s = round(t), round(q)
        if abs(t - px_t) > 1e-6:
            raise ExchangeError(BinanceError.PRICE_NOT_INCREASED_BY_TICK_SIZE, "Price not increased by tick size.")
        if abs(q - qty_s) > 1e-6:
            raise ExchangeError(BinanceError.QTY_NOT_INCREASED_BY_STEP_SIZE, "Quantity not increased by step size.")
        if px_t <= 0:
            raise ExchangeError(BinanceError.PRICE_LESS_THAN_MIN_PRICE, "Price less than min price.")
        if qty_s < f.steps_of_min_qty:
            raise ExchangeError(BinanceError.QTY_LESS_THAN_MIN_QTY if qty_s > 0 else BinanceError.QTY_LESS_THAN_ZERO,
                                "Quantity less than min quantity.")
        cid = order.client_id       # the strategy's own id (no pattern check in process)
        if cid in book.open_by_client:
            raise ExchangeError(BinanceError.CLIENT_ORDER_ID_DUPLICATED, "ClientOrderId is duplicated.")
        tif = "GTX" if order.post_only else "GTC"
        px, qty = f.from_ticks(px_t), f.from_steps(qty_s)
        err = ex.rejection(book, order.side, "LIMIT", px_t, qty_s, tif, order.reduce_only, px, qty)
        if err is not None:
            return err
        return ex.accept(book, cid, order.side, "LIMIT", px_t, tif, order.reduce_only, px, qty)

    async def place_limit(self, order: LimitOrder) -> OrderAck:
        o = self._place(order)
        return OrderAck(o.client_id, o.order_id, o.price, o.qty, o.status)

    async def place_limits(self, orders: list[LimitOrder]) -> list[OrderAck | ExchangeError]:
        """A batch: each order placed or refused on its own (batch_orders without the dicts)."""
        out: list[OrderAck | ExchangeError] = []
        place = self._place_or_refusal
        for o in orders:
            try:
                r = place(o)
            except ExchangeError as e:     # the grid checks before the engine's (tick, step, id)
                r = e
            out.append(r if isinstance(r, ExchangeError) else OrderAck(r.client_id, r.order_id, r.price, r.qty,
                                                                      r.status))
        return out

    async def place_stop_close(self, client_id: str, side: str, trigger_price: float,
                               working_type: str = "CONTRACT_PRICE") -> OrderAck:
        a = self.exchange.algos.new_order(self.symbol, side, "STOP_MARKET", triggerPrice=trigger_price,
                                          closePosition=True, clientAlgoId=client_id, workingType=working_type)
        return OrderAck(a.client_algo_id, a.algo_id, a.trigger_price, 0.0, a.status)

    async def place_market_close(self, client_id: str, side: str, qty: float) -> OrderAck:
        o = self.exchange.new_order(self.symbol, side, "MARKET", quantity=qty, reduceOnly=True,
                                    newClientOrderId=client_id)
        return OrderAck(o.client_id, o.order_id, o.avg_price, o.executed_qty, o.status)

    async def cancel_order(self, client_id: str) -> bool:
        try:
            self.exchange.cancel_order(self.symbol, origClientOrderId=client_id)
            return True
        except ExchangeError as e:
            if e.code == ERR_UNKNOWN_ORDER:
                return False
            raise

    async def cancel_order_confirmed(self, client_id: str) -> float:
        ex = self.exchange
        try:
            return ex.cancel_order(self.symbol, origClientOrderId=client_id).executed_qty
        except ExchangeError as e:
            if e.code != ERR_UNKNOWN_ORDER:
                raise
        try:
            return ex.get_order(self.symbol, origClientOrderId=client_id).executed_qty
        except ExchangeError as e:
            if e.code != ERR_NO_SUCH_ORDER:
                raise
            return 0.0

    async def cancel_algo_order(self, client_id: str) -> bool:
        try:
            self.exchange.algos.cancel(clientAlgoId=client_id)
            return True
        except ExchangeError as e:
            if e.code == ERR_UNKNOWN_ORDER:
                return False
            raise

    async def cancel_all_orders(self) -> None:
        self.exchange.cancel_all_orders(self.symbol)
        self.exchange.algos.cancel_all(self.symbol)

    async def get_open_orders(self) -> list[OpenOrder]:
        ex = self.exchange
        out = [OpenOrder(o.client_id, o.order_id, o.side, o.price, o.remaining, o.reduce_only)
               for o in ex.open_orders(self.symbol)]
        out += [OpenOrder(a.client_algo_id, a.algo_id, a.side, a.trigger_price, a.qty, True, True)
                for a in ex.algos.open_orders(self.symbol)]
        return out

    async def retry_pause(self, attempt: int) -> None:
        return None

    async def retry_entry_after_margin_error(self, client_id: str, side: str, price: float,
                                             qty: float) -> OrderAck | None:
        """The -2019 ladder of `FuturesVenue`, found by bisection instead of ~700 tries.

        The simulator's margin check is deterministic and monotone in the
        quantity, so the first accepted rung of the 0.1 % ladder is the same;
        tests check both give the same order.
        """
        f = self.filters
        ex = self.exchange
        book = ex.books[self.symbol]
        avail = ex.account.available_balance() + 1e-9
        tries = round((1.0 - ENTRY_RETRY_FLOOR) / ENTRY_RETRY_STEP)

        def rung(k: int) -> float:
            return f.qty_down(qty * (1.0 - ENTRY_RETRY_STEP * k))

        def fits(q: float) -> bool:
            return order_cost(book, side, price, q) <= avail

        # Feasibility and size are both monotone in k.  The cost is linear in
        # the quantity, so solve for the largest affordable quantity, land on
        # its rung, and step to the exact first rung that fits (bisection if
        # the estimate is off by more than a few rungs).
        if not fits(rung(tries)):
            k_fit = tries + 1
        else:
            # First rung whose floored quantity is within the largest affordable step multiple.
            unit = order_cost(book, side, price, 1.0)
            q_fit = f.qty_down(avail / unit) if unit > 0 else qty
            k = math.floor((1.0 - (q_fit + f.step_size) / qty) / ENTRY_RETRY_STEP) + 1
            k = max(1, min(tries, k))
            for _ in range(8):
                if not fits(rung(k)):
                    k += 1
                elif k > 1 and fits(rung(k - 1)):
                    k -= 1
                else:
                    break
            else:
                lo, hi = 1, tries
                while lo < hi:
                    mid = (lo + hi) // 2
                    if fits(rung(mid)):
                        hi = mid
                    else:
                        lo = mid + 1
                k = lo
            k_fit = k
        if k_fit > tries or not f.tradable(price, rung(k_fit)):
            if self.log.isEnabledFor(logging.ERROR):
                self.log.error("%s entry %s: margin insufficient down to %.0f%% of %s; level skipped",
                               self.symbol, client_id, ENTRY_RETRY_FLOOR * 100, self.filters.fmt_qty(qty))
            return None
        q = rung(k_fit)
        o = self._place(LimitOrder(client_id, side, price, q, False, True))     # the entry, post-only
        return OrderAck(o.client_id, o.order_id, o.price, o.qty, o.status)
