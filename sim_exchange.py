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
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from exchange_api import (
    ENTRY_RETRY_FLOOR, ENTRY_RETRY_STEP, ERR_MARGIN_INSUFFICIENT, ERR_MIN_NOTIONAL, ERR_PRECISION, ERR_REDUCE_ONLY_REJECTED,
    ERR_NO_SUCH_ORDER, ERR_UNKNOWN_ORDER, ERR_USE_ALGO_API, ERR_WOULD_TRIGGER, ExchangeError, FuturesVenue,
    LimitOrder, OpenOrder, OrderAck, OrderUpdate, Position, SymbolFilters, apply_fill,
)
from brackets import BracketTable, liquidation_price, table_for
from fill_model import next_trigger

# Offline defaults (reference §1): coarse on purpose, valid live as well.
DEFAULT_FILTERS = {
    "BTCUSDC": SymbolFilters("BTCUSDC", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0),
    "ETHUSDC": SymbolFilters("ETHUSDC", tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0),
}
DEFAULT_MAKER_FEE = 0.0
DEFAULT_TAKER_FEE = 0.0004
MAX_OPEN_ORDERS = 200
MAX_BATCH_ORDERS = 5
_CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_ALGO_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
_EPS = 1e-9
LIQ_KEY = -1                    # the liquidation trigger's key among a book's resting orders
LIQ_SEQ = 1 << 62               # at the same tick, the account's own stop goes first


def _err(code: int, msg: str, status: int = 400) -> ExchangeError:
    return ExchangeError(code, msg, status)


@dataclass(slots=True, eq=False)
class SimOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    orig_type: str
    price: float
    qty: float
    reduce_only: bool
    time_in_force: str
    time: int
    update_time: int
    status: str = "NEW"
    executed_qty: float = 0.0
    cum_quote: float = 0.0
    close_position: bool = False
    stop_price: float = 0.0
    # fill-model view (fill_model.Resting): the trigger in integer ticks
    trigger: int = 0
    fires_below: bool = False
    is_stop: bool = False
    seq: int = 0

    @property
    def remaining(self) -> float:
        return self.qty - self.executed_qty

    @property
    def avg_price(self) -> float:
        return self.cum_quote / self.executed_qty if self.executed_qty else 0.0


@dataclass(slots=True, eq=False)
class SimAlgoOrder:
    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str
    trigger_price: float
    price: float
    qty: float
    close_position: bool
    reduce_only: bool
    time_in_force: str
    working_type: str
    create_time: int
    update_time: int
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: int = 0
    actual_price: float = 0.0
    limit_t: int = 0            # STOP / TAKE_PROFIT limit price, in ticks
    working_mark: bool = False  # workingType MARK_PRICE: triggered by the mark price
    # fill-model view: the trigger in integer ticks
    trigger: int = 0
    fires_below: bool = False
    is_stop: bool = True
    seq: int = 0


@dataclass(slots=True)
class SimPosition:
    qty: float = 0.0            # signed; always from_steps(steps)
    steps: int = 0              # the truth: signed integer count of stepSize
    entry_price: float = 0.0
    leverage: int = 20
    margin_type: str = "CROSSED"
    update_time: int = 0


@dataclass(slots=True)
class SimTrade:
    id: int
    order_id: int
    client_id: str
    symbol: str
    side: str
    price: float
    qty: float
    realized_pnl: float
    commission: float
    maker: bool
    time: int
    position_after: float
    entry_after: float
    last_order_id: int = 0      # newest order id assigned when this trade happened (orders placed before it)


@dataclass(slots=True)
class AlgoUpdate:
    symbol: str
    client_algo_id: str
    algo_id: int
    side: str
    order_type: str
    status: str
    trigger_price: float
    qty: float
    close_position: bool
    event_time: int
    actual_order_id: int = 0


@dataclass(slots=True, eq=False)
class LiquidationTrigger:
    """The liquidation price as one more resting trigger (fill_model.Resting): a stop that
    closes the whole position when the mark price reaches it."""

    trigger: int                # ticks: long ≤ floor(LP), short ≥ ceil(LP)
    fires_below: bool
    price: float                # the exact liquidation price
    is_stop: bool = True
    seq: int = LIQ_SEQ


@dataclass(slots=True)
class Liquidation:
    time: int
    symbol: str
    mark_price: float           # the mark when it triggered
    price: float                # where the position was closed
    qty: float                  # signed position closed
    clearance: float            # what the insurance fund took (the remaining maintenance margin)
    order_id: int
    client_id: str


@dataclass(slots=True)
class FundingSettlement:
    time: int
    symbol: str
    rate: float
    mark_price: float
    position: float             # signed position held at the funding time
    amount: float               # paid (> 0) or received (< 0)


@dataclass(slots=True)
class Income:
    """One `GET /fapi/v1/income` record (income > 0: received)."""

    tran_id: int
    symbol: str
    income_type: str
    income: float
    asset: str
    time: int
    info: str = ""
    trade_id: str = ""


@dataclass(slots=True)
class AccountUpdate:
    reason: str
    symbol: str
    wallet: float
    position_qty: float
    entry_price: float
    unrealized: float
    realized_cum: float
    event_time: int


Event = Union[OrderUpdate, AlgoUpdate, AccountUpdate]


@dataclass
class SymbolBook:
    """Per-symbol market and order state."""

    filters: SymbolFilters
    price: float = 0.0          # last (contract) price: always from_ticks(price_t)
    price_t: int = 0            # the truth, in integer ticks
    # The mark price: the last price unless a mark series drives it (mark_driven), in which
    # case MARK_PRICE stops and the liquidation trigger rest in mark_resting.
    mark_driven: bool = False
    mark: float = 0.0
    mark_t: int = 0
    mark_resting: dict[int, Any] = field(default_factory=dict)
    brackets: BracketTable | None = None
    liq_price: float = 0.0      # 0: no liquidation price (flat, or covered)
    # The volume fill model (None: SPEC §6's full fills): steps the current leg trades, and
    # what of it resting limits may still take (price-time order along the leg).
    leg_volume: int | None = None
    leg_budget: int | None = None
    position: SimPosition = field(default_factory=SimPosition)
    resting: dict[int, Union[SimOrder, SimAlgoOrder]] = field(default_factory=dict)  # by id
    open_by_client: dict[str, SimOrder] = field(default_factory=dict)
    algo_by_client: dict[str, SimAlgoOrder] = field(default_factory=dict)
    realized_cum: float = 0.0
    # price × remaining of resting non-reduce-only orders, per side (kept up to
    # date as orders rest and leave, so the margin check needs no scan)
    open_buy_notional: float = 0.0
    open_sell_notional: float = 0.0

    def rest(self, o: "SimOrder") -> None:
        self.open_by_client[o.client_id] = o
        self.resting[o.order_id] = o
        if not o.reduce_only:
            if o.side == "BUY":
                self.open_buy_notional += o.price * o.remaining
            else:
                self.open_sell_notional += o.price * o.remaining

    def unrest(self, o: "SimOrder", qty: float, done: bool) -> None:
        """`qty` of a resting order leaves the book (filled or cancelled); `done`: all of it."""
        if not o.reduce_only:
            if o.side == "BUY":
                self.open_buy_notional -= o.price * qty
            else:
                self.open_sell_notional -= o.price * qty
        if done:
            del self.open_by_client[o.client_id]
            self.resting.pop(o.order_id, None)
            if not self.open_by_client:
                self.open_buy_notional = self.open_sell_notional = 0.0   # no drift left behind


class SimulatedExchange:
    """The matching engine and account of one simulated futures account."""

    def __init__(self, filters: Iterable[SymbolFilters] | None = None, balance: float = 10_000.0,
                 maker_fee: float = DEFAULT_MAKER_FEE, taker_fee: float = DEFAULT_TAKER_FEE,
                 asset: str = "USDC", leverage: int = 20):
        self.books: dict[str, SymbolBook] = {}
        for f in (filters if filters is not None else DEFAULT_FILTERS.values()):
            self.books[f.symbol] = SymbolBook(f, position=SimPosition(leverage=leverage),
                                              brackets=table_for(f.symbol)[0])
        self.wallet = float(balance)
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.asset = asset
        self.dual_side = False
        self.now_ms = 0
        self.orders: dict[int, SimOrder] = {}          # every order ever placed, by id
        self.algo_orders: dict[int, SimAlgoOrder] = {}
        self.trades: list[SimTrade] = []
        self.events: list[Event] = []
        self.total_fees = 0.0
        # Placement / requested-cancel acknowledgements, account and algo updates
        # are streamed to user streams; an in-process driver that acts only on
        # fills and expiries turns them off.
        self.ack_events = True
        self._next_id = 1_000_000
        self._next_trade_id = 1
        self._next_tran_id = 1
        self.liquidations: list[Liquidation] = []
        self.funding: list[FundingSettlement] = []      # settlements with a position
        self.income: list[Income] = []                  # FUNDING_FEE and INSURANCE_CLEAR records
        self.liquidation_enabled = True
        self.keep_trades = True         # the trade history (userTrades); the backtest records fills itself
        self._multi = len(self.books) > 1
        self._only = next(iter(self.books.values())) if self.books else None

    # ------------------------------------------------------------------ helpers
    def book(self, symbol: str) -> SymbolBook:
        b = self.books.get(symbol)
        if b is None:
            raise _err(-1121, "Invalid symbol.")
        return b

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def drain_events(self) -> list[Event]:
        ev, self.events = self.events, []
        return ev

    def _parse_price(self, f: SymbolFilters, value: Any, name: str = "price") -> int:
        """A price from a request, as integer ticks: a decimal string exactly, an in-process
        float by its nearest tick (it must be one of the canonical values)."""
        if type(value) is str:
            units = _parse_units(value, name, f.price_decimals, f._price_scale)
            if units <= 0:
                raise _err(-4013, "Price less than min price.")
            if units % f._tick_units:
                raise _err(-4014, "Price not increased by tick size.")
            return units // f._tick_units
        v = value if type(value) is float and math.isfinite(value) else _parse_decimal(value, name, f.price_decimals)
        if v <= 0:
            raise _err(-4013, "Price less than min price.")
        t = round(v / f.tick_size)
        if abs(v / f.tick_size - t) > 1e-6:
            raise _err(-4014, "Price not increased by tick size.")
        return t

    def _parse_qty(self, f: SymbolFilters, value: Any) -> int:
        """A quantity from a request, as integer steps."""
        if type(value) is str:
            units = _parse_units(value, "quantity", f.qty_decimals, f._qty_scale)
            if units <= 0:
                raise _err(-4003, "Quantity less than or equal to zero.")
            if units % f._step_units:
                raise _err(-4023, "Quantity not increased by step size.")
            steps = units // f._step_units
        else:
            v = value if type(value) is float and math.isfinite(value) else _parse_decimal(value, "quantity", f.qty_decimals)
            if v <= 0:
                raise _err(-4003, "Quantity less than or equal to zero.")
            steps = round(v / f.step_size)
            if abs(v / f.step_size - steps) > 1e-6:
                raise _err(-4023, "Quantity not increased by step size.")
        if steps < f.steps_of_min_qty:
            raise _err(-4004, "Quantity less than min quantity.")
        return steps

    def _check_client_id(self, b: SymbolBook, cid: str | None) -> str:
        if cid is None or cid == "":
            return f"sim_{self._next_id + 1}"
        if not _CLIENT_ID_RE.match(cid):
            raise _err(-4015, "Client order id is not valid.")
        if cid in b.open_by_client:
            raise _err(-4116, "ClientOrderId is duplicated.")
        return cid

    # ------------------------------------------------------------------ account
    @staticmethod
    def mark_of(b: SymbolBook) -> float:
        return b.mark if b.mark_driven else b.price

    def unrealized(self) -> float:
        """uPnL at the mark price, all symbols."""
        return sum(b.position.qty * (self.mark_of(b) - b.position.entry_price) for b in self.books.values())

    def maint_margin(self, b: SymbolBook) -> float:
        return b.brackets.maint_margin(b.position.qty * self.mark_of(b)) if b.brackets and b.position.steps else 0.0

    def available_balance(self) -> float:
        """Wallet + uPnL − position margin − open-order margin (cross, one-way)."""
        if not self._multi:         # one symbol (the backtest): the same sum, without the loop
            b = self._only
            p = b.position
            m = b.mark if b.mark_driven else b.price
            return self.wallet + p.qty * (m - p.entry_price) - abs(p.qty) * m / p.leverage \
                - self._open_order_margin(b)
        avail = self.wallet
        for b in self.books.values():
            p = b.position
            lev = p.leverage
            m = self.mark_of(b)
            avail += p.qty * (m - p.entry_price) - abs(p.qty) * m / lev
            avail -= self._open_order_margin(b)
        return avail

    def _open_order_margin(self, b: SymbolBook) -> float:
        """Margin of resting orders that add exposure (both sides while flat)."""
        pos = b.position.qty
        if pos > 0:
            notional = b.open_buy_notional
        elif pos < 0:
            notional = b.open_sell_notional
        else:
            notional = b.open_buy_notional + b.open_sell_notional
        return notional / b.position.leverage

    @staticmethod
    def _order_cost(b: SymbolBook, side: str, price: float, qty: float) -> float:
        """Initial margin of the part that adds exposure, plus the open loss (reference §5)."""
        p = b.position
        pos = p.qty
        buy = side == "BUY"
        if pos == 0 or (pos > 0) == buy:
            adds = qty
        else:
            adds = qty - abs(pos)
            if adds <= 0:
                return 0.0
        last = b.price
        # open loss = adds × |min(0, dir × (last − price))|: a buy above the last, a sell below it
        loss = (price - last if buy else last - price) if last else 0.0
        return adds * price / p.leverage + (adds * loss if loss > 0 else 0.0)

    def change_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        if not 1 <= int(leverage) <= 125:
            raise _err(-4028, "Leverage is not valid.")
        b = self.book(symbol)
        b.position.leverage = int(leverage)
        return {"leverage": int(leverage), "maxNotionalValue": "1000000", "symbol": symbol}

    def change_margin_type(self, symbol: str, margin_type: str) -> dict[str, Any]:
        b = self.book(symbol)
        mt = margin_type.upper().replace("CROSS", "CROSSED").replace("CROSSEDED", "CROSSED")
        if mt not in ("CROSSED", "ISOLATED"):
            raise _err(-1116, "Invalid marginType.")
        if mt == b.position.margin_type:
            raise _err(-4046, "No need to change margin type.")
        if mt == "ISOLATED":
            raise _err(-4046, "The simulator supports cross margin only.")
        b.position.margin_type = mt
        return {"code": 200, "msg": "success"}

    def change_position_mode(self, dual: bool) -> dict[str, Any]:
        if dual == self.dual_side:
            raise _err(-4059, "No need to change position side.")
        if dual:
            raise _err(-4059, "The simulator supports one-way mode only.")
        self.dual_side = dual
        return {"code": 200, "msg": "success"}

    # ------------------------------------------------------------------ orders
    def new_order(self, symbol: str, side: str, type: str = "LIMIT", quantity: Any = None,
                  price: Any = None, timeInForce: str | None = None, reduceOnly: Any = False,
                  newClientOrderId: str | None = None, positionSide: str = "BOTH",
                  **extra: Any) -> SimOrder:
        """POST /fapi/v1/order, with Binance's checks in Binance's order."""
        b = self.book(symbol)
        f = b.filters
        side = (side or "").upper()
        if side not in ("BUY", "SELL"):
            raise _err(-1117, "Invalid side.")
        otype = (type or "").upper()
        if otype in _ALGO_TYPES:
            raise _err(ERR_USE_ALGO_API, "Order type not supported for this endpoint. "
                       "Please use the Algo Order API endpoints instead.")
        if otype not in ("LIMIT", "MARKET"):
            raise _err(-1116, "Invalid orderType.")
        if (positionSide or "BOTH").upper() != "BOTH":
            raise _err(-4061, "Order's position side does not match user's setting.")
        reduce_only = _parse_bool(reduceOnly)
        cid = self._check_client_id(b, newClientOrderId)
        if quantity is None or quantity == "":
            raise _err(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        qty_s = self._parse_qty(f, quantity)
        if otype == "LIMIT":
            if price is None or price == "":
                raise _err(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
            px_t = self._parse_price(f, price)
            tif = (timeInForce or "").upper()
            if tif not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
                raise _err(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        else:
            if not b.price_t:
                raise _err(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
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
        if not reduce_only and px * qty + _EPS < f.min_notional:
            return _err(ERR_MIN_NOTIONAL, f"Order's notional must be no smaller than {f.min_notional:g} "
                        "(unless you choose reduce only).")
        pos = b.position.steps
        if reduce_only and (pos == 0 or (pos > 0) == (side == "BUY") or qty_s > abs(pos)):
            return _err(ERR_REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        if len(b.open_by_client) >= MAX_OPEN_ORDERS:
            return _err(-2025, "Reach max open order limit.")
        if tif == "GTX" and otype == "LIMIT" and b.price_t and (px_t >= b.price_t if side == "BUY"
                                                                 else px_t <= b.price_t):
            return _err(-5022, "Due to the order could not be executed as maker, the Post Only order will be "
                        "rejected.")
        if not reduce_only and self._order_cost(b, side, px, qty) > self.available_balance() + _EPS:
            return ExchangeError(ERR_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        return None

    def accept(self, b: SymbolBook, cid: str, side: str, otype: str, px_t: int, tif: str, reduce_only: bool,
               px: float, qty: float) -> SimOrder:
        """An order that passed the checks: recorded, then matched, rested or expired."""
        symbol = b.filters.symbol
        marketable = otype == "MARKET" or (b.price_t and (px_t >= b.price_t if side == "BUY" else px_t <= b.price_t))
        self._next_id += 1
        oid = self._next_id
        now = self.now_ms
        o = SimOrder(oid, cid, symbol, side, otype, otype, px if otype == "LIMIT" else 0.0, qty, reduce_only,
                     tif, now, now, "NEW", 0.0, 0.0, False, 0.0, px_t, side == "BUY", False, oid)
        self.orders[oid] = o
        if self.ack_events:
            self._emit_order(o, "NEW")
        if marketable:
            # Takes liquidity at the current price (better than or at the limit).
            self._take(b, o, b.price_t, o.qty)
            if o.status != "FILLED":
                self._finish(b, o, "EXPIRED")
        elif tif in ("IOC", "FOK"):
            self._finish(b, o, "EXPIRED")
        else:
            b.rest(o)
        return o

    def batch_orders(self, symbol_orders: list[dict[str, Any]]) -> list[SimOrder | ExchangeError]:
        """POST /fapi/v1/batchOrders: each element succeeds or fails on its own."""
        if not symbol_orders or len(symbol_orders) > MAX_BATCH_ORDERS:
            raise _err(-1130, "Data sent for parameter 'batchOrders' is not valid.")
        out: list[SimOrder | ExchangeError] = []
        for params in symbol_orders:
            try:
                out.append(self.new_order(**params))
            except ExchangeError as e:
                out.append(e)
            except TypeError:
                out.append(_err(-1102, "Mandatory parameter was not sent, was empty/null, or malformed."))
        return out

    def _lookup_open(self, b: SymbolBook, order_id: Any, client_id: str | None) -> SimOrder | None:
        if order_id not in (None, ""):
            o = self.orders.get(int(order_id))
            return o if o is not None and o.symbol == b.filters.symbol and o.client_id in b.open_by_client \
                and b.open_by_client[o.client_id] is o else None
        if client_id:
            return b.open_by_client.get(client_id)
        raise _err(-1102, "Mandatory parameter 'orderid' was not sent, was empty/null, or malformed.")

    def cancel_order(self, symbol: str, orderId: Any = None, origClientOrderId: str | None = None) -> SimOrder:
        b = self.book(symbol)
        o = self._lookup_open(b, orderId, origClientOrderId)
        if o is None:
            raise _err(ERR_UNKNOWN_ORDER, "Unknown order sent.")
        self._finish(b, o, "CANCELED")
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
            raise _err(ERR_NO_SUCH_ORDER, "Order does not exist.")
        if o.type != "LIMIT":
            raise _err(-1116, "Invalid orderType.")
        if (side or "").upper() != o.side:
            raise _err(-1117, "Invalid side.")
        if quantity in (None, "") or price in (None, ""):
            raise _mandatory_err("quantity" if quantity in (None, "") else "price")
        qty_s = self._parse_qty(f, quantity)
        px_t = self._parse_price(f, price)
        if qty_s <= f.to_steps(o.executed_qty):
            self._finish(b, o, "CANCELED")
            return o
        crosses = b.price_t and (px_t >= b.price_t if o.side == "BUY" else px_t <= b.price_t)
        if crosses and o.time_in_force == "GTX":
            self._finish(b, o, "CANCELED")
            return o
        old = (o.price, o.qty, o.trigger)
        b.unrest(o, o.remaining, done=True)
        o.price, o.qty, o.trigger = f.from_ticks(px_t), f.from_steps(qty_s), px_t
        if not o.reduce_only and self._order_cost(b, o.side, o.price, o.remaining) > self.available_balance() + _EPS:
            o.price, o.qty, o.trigger = old
            b.rest(o)
            raise ExchangeError(ERR_MARGIN_INSUFFICIENT, "Margin is insufficient.")
        o.seq = self._new_id()          # the back of the queue at its price
        o.update_time = self.now_ms
        if self.ack_events:
            self.events.append(OrderUpdate(
                o.symbol, o.client_id, o.order_id, o.side, o.orig_type, "AMENDMENT", o.status, o.price, o.qty,
                0.0, 0.0, o.executed_qty, o.avg_price, 0.0, 0.0, False, o.reduce_only, o.close_position,
                o.stop_price, 0, self.now_ms, self.now_ms, self.asset))
        if crosses:
            self._take(b, o, b.price_t, o.remaining)
            if o.status != "FILLED":
                b.rest(o)
        else:
            b.rest(o)
        return o

    def cancel_all_orders(self, symbol: str) -> None:
        b = self.book(symbol)
        for o in list(b.open_by_client.values()):
            self._finish(b, o, "CANCELED")

    def get_order(self, symbol: str, orderId: Any = None, origClientOrderId: str | None = None) -> SimOrder:
        b = self.book(symbol)
        if orderId not in (None, ""):
            o = self.orders.get(int(orderId))
        elif origClientOrderId:
            o = b.open_by_client.get(origClientOrderId) or next(
                (x for x in reversed(list(self.orders.values()))
                 if x.symbol == symbol and x.client_id == origClientOrderId), None)
        else:
            raise _err(-1102, "Mandatory parameter 'orderid' was not sent, was empty/null, or malformed.")
        if o is None or o.symbol != symbol:
            raise _err(-2013, "Order does not exist.")
        return o

    def open_orders(self, symbol: str | None = None) -> list[SimOrder]:
        books = [self.book(symbol)] if symbol else list(self.books.values())
        return [o for b in books for o in b.open_by_client.values()]

    def _finish(self, b: SymbolBook, o: SimOrder, status: str, force: bool = False) -> None:
        o.status = status
        o.update_time = self.now_ms
        if b.open_by_client.get(o.client_id) is o:
            b.unrest(o, o.remaining, done=True)
        self._emit_order(o, status, force)

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
            raise _err(-1117, "Invalid side.")
        if (algoType or "").upper() != "CONDITIONAL":
            raise _err(-1116, "Invalid algoType.")
        otype = (type or "").upper()
        if otype not in ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"):
            raise _err(-1116, "Invalid orderType.")
        if (positionSide or "BOTH").upper() != "BOTH":
            raise _err(-4061, "Order's position side does not match user's setting.")
        if triggerPrice in (None, ""):
            raise _err(-1102, "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.")
        trig_t = self._parse_price(f, triggerPrice, "triggerPrice")
        trig = f.from_ticks(trig_t)
        close_pos = _parse_bool(closePosition)
        reduce_only = _parse_bool(reduceOnly)
        if close_pos and (quantity not in (None, "") or reduce_only):
            raise _err(-1106, "Parameter 'quantity' sent when not required.")
        qty = 0.0 if close_pos else f.from_steps(self._parse_qty(f, quantity))
        limit_t = self._parse_price(f, price) if otype in ("STOP", "TAKE_PROFIT") else 0
        limit = f.from_ticks(limit_t)
        cid = clientAlgoId or f"sim_algo_{self._next_id + 1}"
        if not _CLIENT_ID_RE.match(cid):
            raise _err(-4015, "Client order id is not valid.")
        if cid in b.algo_by_client:
            raise _err(-4116, "ClientOrderId is duplicated.")
        # STOP types fire BUY at price >= trigger, SELL at <=; TAKE_PROFIT types the reverse.
        is_stop_type = otype.startswith("STOP")
        fires_below = (side == "SELL") if is_stop_type else (side == "BUY")
        if b.price_t and (b.price_t <= trig_t if fires_below else b.price_t >= trig_t):
            raise _err(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
        on_mark = (workingType or "CONTRACT_PRICE").upper() == "MARK_PRICE"
        if on_mark and b.mark_driven and b.mark_t and (b.mark_t <= trig_t if fires_below else b.mark_t >= trig_t):
            raise _err(ERR_WOULD_TRIGGER, "Order would immediately trigger.")
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
            raise _err(-1102, "Mandatory parameter 'algoid' was not sent, was empty/null, or malformed.")
        if a is not None and open_only and a.status != "NEW":
            return None
        return a

    def cancel_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup_algo(algoId, clientAlgoId, open_only=True)
        if a is None:
            raise _err(ERR_UNKNOWN_ORDER, "Unknown order sent.")
        self._end_algo(a, "CANCELED")
        return a

    def cancel_all_algo_orders(self, symbol: str) -> None:
        for a in list(self.book(symbol).algo_by_client.values()):
            self._end_algo(a, "CANCELED")

    def get_algo_order(self, algoId: Any = None, clientAlgoId: str | None = None) -> SimAlgoOrder:
        a = self._lookup_algo(algoId, clientAlgoId, open_only=False)
        if a is None:
            raise _err(-2013, "Order does not exist.")
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

    # ------------------------------------------------------------------ market
    @staticmethod
    def _resting_for(b: SymbolBook, r: Any) -> dict[int, Any]:
        """Where a mark-triggered order rests: with the orders of the last price, unless a mark
        series drives this book."""
        return b.mark_resting if b.mark_driven and (isinstance(r, LiquidationTrigger) or
                                                    getattr(r, "working_mark", False)) else b.resting

    def drive_mark(self, symbol: str, driven: bool = True) -> None:
        """A mark series moves this book's mark (`set_mark_ticks` / `advance_mark_ticks`);
        without one the mark is the last price."""
        b = self.book(symbol)
        movers = [r for r in list(b.resting.values()) + list(b.mark_resting.values())
                  if isinstance(r, LiquidationTrigger) or getattr(r, "working_mark", False)]
        for r in movers:
            key = LIQ_KEY if isinstance(r, LiquidationTrigger) else r.algo_id
            b.resting.pop(key, None)
            b.mark_resting.pop(key, None)
        b.mark_driven = driven
        if driven and not b.mark_t:
            b.mark_t, b.mark = b.price_t, b.price
        for r in movers:
            self._resting_for(b, r)[LIQ_KEY if isinstance(r, LiquidationTrigger) else r.algo_id] = r

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

    def _fire(self, b: SymbolBook, r: Any, fill_price: int) -> None:
        if isinstance(r, LiquidationTrigger):
            self._liquidate(b, fill_price)
        elif isinstance(r, SimAlgoOrder):
            self._trigger_algo(b, r, fill_price)
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
        step = -1 if o.side == "SELL" else 1
        k = 0
        while left > 0 and o.status not in ("FILLED", "EXPIRED", "CANCELED"):
            q = min(left, b.leg_volume)
            self._fill(b, o, price_t + step * k, f.from_steps(q), maker=False)
            left -= q
            k += 1

    def _after_move(self) -> None:
        """Cross margin: a move of one symbol moves the others' liquidation prices."""
        if sum(1 for b in self.books.values() if b.position.steps) > 1:
            self.update_liquidation()

    # ------------------------------------------------------------------ liquidation
    def update_liquidation(self) -> None:
        """Recompute every position's liquidation price (after a fill, a funding payment, or a
        move of another symbol's mark) and liquidate at once a position already past it."""
        if not self.liquidation_enabled:
            return
        if not self._multi:
            b = self._only
            if b.position.steps:
                self._place_liquidation(b, self.wallet)
            elif b.liq_price:
                self._drop_liquidation(b)
            return
        books = [b for b in self.books.values() if b.position.steps]
        for b in self.books.values():
            if not b.position.steps and b.liq_price:
                self._drop_liquidation(b)
        for b in books:
            if not b.position.steps or b.brackets is None:
                continue
            others = self.wallet + sum(o.position.qty * (self.mark_of(o) - o.position.entry_price)
                                       - self.maint_margin(o) for o in books if o is not b)
            if self._place_liquidation(b, others):
                return

    @staticmethod
    def _drop_liquidation(b: SymbolBook) -> None:
        """No liquidation price for this book (flat, covered, or being liquidated)."""
        b.liq_price = 0.0
        b.resting.pop(LIQ_KEY, None)
        b.mark_resting.pop(LIQ_KEY, None)

    def _place_liquidation(self, b: SymbolBook, others: float) -> bool:
        """Rest the liquidation trigger of one position (`others`: wallet plus the other
        positions' uPnL − maintenance margin); True when it was already passed and the
        position has just been liquidated."""
        if b.brackets is None:
            return False
        p = b.position
        lp = liquidation_price(b.brackets, p.qty, p.entry_price, others)
        if lp <= 0:
            self._drop_liquidation(b)
            return False
        b.liq_price = lp
        f = b.filters
        long = p.steps > 0
        trig = f.ticks_down(lp) if long else f.ticks_up(lp)
        mark_t = b.mark_t if b.mark_driven else b.price_t
        if (mark_t <= trig) if long else (mark_t >= trig):
            self._drop_liquidation(b)
            self._liquidate(b, mark_t)          # already past it: the engine closes it now
            return True
        t = b.resting.get(LIQ_KEY) or b.mark_resting.get(LIQ_KEY)
        if t is None:
            t = LiquidationTrigger(trig, long, lp)
            self._resting_for(b, t)[LIQ_KEY] = t
        else:                                   # moved in place (one per position, rests where it is)
            t.trigger, t.fires_below, t.price = trig, long, lp
        return False

    def _liquidate(self, b: SymbolBook, price_t: int) -> None:
        """Binance's forced close (cross margin): every open order of the account is cancelled,
        the whole position is closed at the liquidation price (or where a gap put the mark),
        and the insurance fund takes the remaining maintenance margin; the wallet never goes
        below zero (the fund covers a bankrupt account)."""
        for book in self.books.values():
            for o in list(book.open_by_client.values()):
                self._finish(book, o, "CANCELED", force=True)
            for a in list(book.algo_by_client.values()):
                self._end_algo(a, "CANCELED", force=True)
        self._drop_liquidation(b)
        p, f = b.position, b.filters
        qty = abs(p.qty)
        signed = p.qty
        mark = self.mark_of(b)
        mm = b.brackets.maint_margin(qty * f.from_ticks(price_t)) if b.brackets else 0.0
        oid = self._new_id()
        cid = f"autoclose-{self.now_ms}"
        side = "SELL" if p.steps > 0 else "BUY"
        o = SimOrder(oid, cid, b.filters.symbol, side, "LIQUIDATION", "LIQUIDATION", f.from_ticks(price_t), qty, True,
                     "IOC", self.now_ms, self.now_ms, "NEW", 0.0, 0.0, False, 0.0, price_t, side == "BUY", False, oid)
        self.orders[oid] = o
        self._fill(b, o, price_t, qty, maker=False, exec_type="CALCULATED", check_liquidation=False)
        clearance = max(0.0, min(mm, self.wallet))
        bankrupt = min(0.0, self.wallet - clearance)    # the fund brings a negative wallet back to 0
        self.wallet -= clearance + bankrupt
        if clearance or bankrupt:
            self._add_income(b.filters.symbol, "INSURANCE_CLEAR", -(clearance + bankrupt), "LIQUIDATION")
            self._emit_account(b, "INSURANCE_CLEAR", force=True)
        self.liquidations.append(Liquidation(self.now_ms, b.filters.symbol, mark, f.from_ticks(price_t), signed,
                                             clearance + bankrupt, oid, cid))
        self.update_liquidation()

    # ------------------------------------------------------------------ funding
    def settle_funding(self, symbol: str, rate: float, mark: float) -> float:
        """One funding settlement of `symbol` on the position held now, at `mark`:
        amount = position × mark × rate, paid (> 0) by a long at a positive rate, received by a
        short.  Returns the amount paid (0.0 when flat: nothing is recorded)."""
        b = self.book(symbol)
        p = b.position
        if not p.steps:
            return 0.0
        amount = p.qty * mark * rate
        self.wallet -= amount
        self.funding.append(FundingSettlement(self.now_ms, symbol, rate, mark, p.qty, amount))
        self._add_income(symbol, "FUNDING_FEE", -amount, "FUNDING_FEE")
        self._emit_account(b, "FUNDING_FEE")
        self.update_liquidation()
        return amount

    def _add_income(self, symbol: str, kind: str, amount: float, info: str) -> None:
        self.income.append(Income(self._next_tran_id, symbol, kind, amount, self.asset, self.now_ms, info))
        self._next_tran_id += 1

    def _emit_account(self, b: SymbolBook, reason: str, force: bool = False) -> None:
        if not (self.ack_events or force):
            return
        p = b.position
        self.events.append(AccountUpdate(reason, b.filters.symbol, self.wallet, p.qty, p.entry_price,
                                         p.qty * (self.mark_of(b) - p.entry_price), b.realized_cum, self.now_ms))

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
        resting = b.resting.values()
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

    def _trigger_algo(self, b: SymbolBook, a: SimAlgoOrder, fill_price: int) -> None:
        a.status = "TRIGGERED"
        a.trigger_time = a.update_time = self.now_ms
        a.actual_order_id = self._next_id + 1      # the order the trigger is about to place
        b.resting.pop(a.algo_id, None)
        b.mark_resting.pop(a.algo_id, None)
        del b.algo_by_client[a.client_algo_id]
        self._emit_algo(a)
        pos = b.position.qty
        qty = abs(pos) if a.close_position else a.qty
        closes = pos != 0 and (pos > 0) == (a.side == "SELL")
        if (a.close_position or a.reduce_only) and not closes:
            a.status, a.actual_order_id = "EXPIRED", 0   # nothing to close: Binance rejects the triggered order
            self._emit_algo(a)
            return
        if a.reduce_only:
            qty = min(qty, abs(pos))
        oid = self._new_id()
        is_market = a.order_type.endswith("MARKET")
        o = SimOrder(order_id=oid, client_id=a.client_algo_id, symbol=a.symbol, side=a.side,
                     type="MARKET" if is_market else "LIMIT", orig_type=a.order_type,
                     price=0.0 if is_market else a.price, qty=qty,
                     reduce_only=a.reduce_only or a.close_position, time_in_force=a.time_in_force,
                     time=self.now_ms, update_time=self.now_ms, close_position=a.close_position,
                     stop_price=a.trigger_price, trigger=a.limit_t, fires_below=(a.side == "BUY"),
                     seq=oid)
        self.orders[oid] = o
        a.actual_order_id = oid
        self._emit_order(o, "NEW")
        if is_market:
            self._take(b, o, fill_price, qty)
            a.actual_price = b.filters.from_ticks(fill_price)
        elif o.client_id not in b.open_by_client:
            b.rest(o)
        a.status = "FINISHED"
        self._emit_algo(a)

    def _fill(self, b: SymbolBook, o: SimOrder, price_t: int, qty: float, maker: bool,
              exec_type: str = "TRADE", check_liquidation: bool = True) -> None:
        p = b.position
        f = b.filters
        price = f.from_ticks(price_t)
        qty_s = f.to_steps(qty)
        if o.reduce_only:
            closes = p.steps != 0 and (p.steps > 0) == (o.side == "SELL")
            qty_s = min(qty_s, abs(p.steps)) if closes else 0
            if qty_s <= 0:
                self._finish(b, o, "EXPIRED")
                return
            qty = f.from_steps(qty_s)
        signed_s = qty_s if o.side == "BUY" else -qty_s
        before = p.steps
        _, p.entry_price, realized = apply_fill(p.qty, p.entry_price, f.from_steps(signed_s), price)
        p.steps += signed_s
        p.qty = f.from_steps(p.steps)
        if p.steps == 0:
            p.entry_price = 0.0
        p.update_time = self.now_ms
        fee = price * qty * (self.maker_fee if maker else self.taker_fee)
        self.wallet += realized - fee
        self.total_fees += fee
        b.realized_cum += realized
        resting = b.open_by_client.get(o.client_id) is o
        o.executed_qty += qty
        o.cum_quote += price * qty
        o.update_time = self.now_ms
        o.executed_qty = f.qty_round(o.executed_qty)
        o.status = "FILLED" if f.to_steps(o.remaining) <= 0 else "PARTIALLY_FILLED"
        if resting:
            b.unrest(o, qty, done=o.status == "FILLED")
        tid = self._next_trade_id
        self._next_trade_id += 1
        if self.keep_trades:
            self.trades.append(SimTrade(tid, o.order_id, o.client_id, o.symbol, o.side, price, qty,
                                        realized, fee, maker, self.now_ms, p.qty, p.entry_price, self._next_id))
        self.events.append(OrderUpdate(
            o.symbol, o.client_id, o.order_id, o.side, o.orig_type, exec_type, o.status, o.price, o.qty,
            qty, price, o.executed_qty, o.avg_price, fee, realized, maker, o.reduce_only,
            o.close_position, o.stop_price, tid, self.now_ms, self.now_ms, self.asset))
        if self.ack_events:
            self._emit_account(b, "ORDER")
        if p.steps == 0 or (p.steps > 0) != (before > 0):
            self._expire_stale_reduce_only(b)    # flat or flipped: reduce-only orders may be stale
        if check_liquidation:
            self.update_liquidation()

    def _expire_stale_reduce_only(self, b: SymbolBook) -> None:
        """Binance drops reduce-only orders that can no longer reduce the position."""
        pos = b.position.steps
        for o in list(b.open_by_client.values()):
            if o.reduce_only and (pos == 0 or (pos > 0) == (o.side == "BUY")):
                self._finish(b, o, "EXPIRED")

    # ------------------------------------------------------------------ events
    def _emit_order(self, o: SimOrder, status: str, force: bool = False) -> None:
        if not (self.ack_events or force) and status in ("NEW", "CANCELED"):
            return
        self.events.append(OrderUpdate(
            o.symbol, o.client_id, o.order_id, o.side, o.orig_type, status, status, o.price, o.qty,
            0.0, 0.0, o.executed_qty, o.avg_price, 0.0, 0.0, False, o.reduce_only, o.close_position, o.stop_price, 0, self.now_ms, self.now_ms, self.asset))

    def _emit_algo(self, a: SimAlgoOrder, force: bool = False) -> None:
        if not (self.ack_events or force):
            return
        self.events.append(AlgoUpdate(a.symbol, a.client_algo_id, a.algo_id, a.side, a.order_type,
                                      a.status, a.trigger_price, a.qty, a.close_position, self.now_ms,
                                      a.actual_order_id))

    # ------------------------------------------------------------------ queries
    def position(self, symbol: str) -> SimPosition:
        return self.book(symbol).position

    def user_trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                    from_id: int | None = None, limit: int = 500) -> list[SimTrade]:
        out = [t for t in self.trades if t.symbol == symbol
               and (start_ms is None or t.time >= start_ms) and (end_ms is None or t.time <= end_ms)
               and (from_id is None or t.id >= from_id)]
        return out[:limit] if from_id is not None else out[-limit:]


_DECIMAL_RE = re.compile(r"^[+-]?(\d+)(?:\.(\d*))?$|^[+-]?\.(\d+)$")


def _parse_units(text: str, name: str, max_decimals: int, scale: int) -> int:
    """A decimal string as an exact integer count of 10^-max_decimals (no float on the way)."""
    s = text.strip()
    m = _DECIMAL_RE.match(s)
    if m is None:
        raise _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    whole, frac = (m.group(1) or "0"), (m.group(2) if m.group(1) is not None else m.group(3)) or ""
    frac = frac.rstrip("0")
    if len(frac) > max_decimals:
        raise _err(ERR_PRECISION, "Precision is over the maximum defined for this asset.")
    units = int(whole) * scale + (int(frac.ljust(max_decimals, "0")) if frac else 0)
    return -units if s.startswith("-") else units


def _parse_decimal(value: Any, name: str, max_decimals: int) -> float:
    if isinstance(value, str):
        s = value.strip()
        if "." in s and len(s.split(".", 1)[1].rstrip("0")) > max_decimals:
            raise _err(ERR_PRECISION, "Precision is over the maximum defined for this asset.")
        try:
            return float(s)
        except ValueError:
            raise _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.") from None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return v


def _mandatory_err(name: str) -> ExchangeError:
    return _err(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _parse_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


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
        return Position(b.position.qty, b.position.entry_price, b.liq_price, self.exchange.mark_of(b))

    async def get_position_info_with_retry(self, tries: int = 10) -> Position:
        return await self.get_position()          # in process: never fails, no retry loop

    async def cancel_orders_confirmed(self, client_ids: list[str]) -> dict[str, float]:
        ex = self.exchange
        book = ex.books[self.symbol]
        out: dict[str, float] = {}
        for c in client_ids:
            o = book.open_by_client.get(c)
            if o is not None:
                ex._finish(book, o, "CANCELED")
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
            raise ExchangeError(-4014, "Price not increased by tick size.")
        if abs(q - qty_s) > 1e-6:
            raise ExchangeError(-4023, "Quantity not increased by step size.")
        if px_t <= 0:
            raise ExchangeError(-4013, "Price less than min price.")
        if qty_s < f.steps_of_min_qty:
            raise ExchangeError(-4004 if qty_s > 0 else -4003, "Quantity less than min quantity.")
        cid = order.client_id       # the strategy's own id (no pattern check in process)
        if cid in book.open_by_client:
            raise ExchangeError(-4116, "ClientOrderId is duplicated.")
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
        a = self.exchange.new_algo_order(self.symbol, side, "STOP_MARKET", triggerPrice=trigger_price,
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
            self.exchange.cancel_algo_order(clientAlgoId=client_id)
            return True
        except ExchangeError as e:
            if e.code == ERR_UNKNOWN_ORDER:
                return False
            raise

    async def cancel_all_orders(self) -> None:
        self.exchange.cancel_all_orders(self.symbol)
        self.exchange.cancel_all_algo_orders(self.symbol)

    async def get_open_orders(self) -> list[OpenOrder]:
        ex = self.exchange
        out = [OpenOrder(o.client_id, o.order_id, o.side, o.price, o.remaining, o.reduce_only)
               for o in ex.open_orders(self.symbol)]
        out += [OpenOrder(a.client_algo_id, a.algo_id, a.side, a.trigger_price, a.qty, True, True)
                for a in ex.open_algo_orders(self.symbol)]
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
        avail = ex.available_balance() + 1e-9
        tries = round((1.0 - ENTRY_RETRY_FLOOR) / ENTRY_RETRY_STEP)

        def rung(k: int) -> float:
            return f.qty_down(qty * (1.0 - ENTRY_RETRY_STEP * k))

        def fits(q: float) -> bool:
            return ex._order_cost(book, side, price, q) <= avail

        # Feasibility and size are both monotone in k.  The cost is linear in
        # the quantity, so solve for the largest affordable quantity, land on
        # its rung, and step to the exact first rung that fits (bisection if
        # the estimate is off by more than a few rungs).
        if not fits(rung(tries)):
            k_fit = tries + 1
        else:
            # First rung whose floored quantity is within the largest affordable step multiple.
            unit = ex._order_cost(book, side, price, 1.0)
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
