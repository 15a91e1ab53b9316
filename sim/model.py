"""The simulated exchange's records and parsing: orders, algo orders, the position, trades,
the typed events it queues, a symbol's book, Binance's parameter parsing (exact decimals),
and `UserStream`, what every part of the simulator needs to report an event."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from exchange_api import ERR_PRECISION, BinanceError, ExchangeError, ExecType, OrderStatus, OrderUpdate, Side, SymbolFilters
from market.brackets import BracketTable

# The enums' values bound once to names as plain str: the matching loop compares them per order
# and fill; a name costs a seventh of an enum attribute, and CPython's fast string compare takes
# exact str only, not a str subclass (DECISIONS, issue 20).
BUY, SELL = Side.BUY.value, Side.SELL.value
NEW, PARTIALLY_FILLED, FILLED = OrderStatus.NEW.value, OrderStatus.PARTIALLY_FILLED.value, OrderStatus.FILLED.value
CANCELED, EXPIRED = OrderStatus.CANCELED.value, OrderStatus.EXPIRED.value
TRADE, CALCULATED = ExecType.TRADE.value, ExecType.CALCULATED.value

# Offline defaults (reference §1): coarse on purpose, valid live as well.
DEFAULT_FILTERS = {
    "BTCUSDC": SymbolFilters("BTCUSDC", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0),
    "ETHUSDC": SymbolFilters("ETHUSDC", tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0),
}


def generic_filters(symbol: str) -> SymbolFilters:
    """Filters for a symbol the offline venue knows nothing about (a synthetic market at ~100)."""
    return SymbolFilters(symbol, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)


def infer_filters(symbol: str, candles: Any) -> SymbolFilters:
    """Filters read off a symbol's candles: the tick is the finest price decimal they use, the
    step the finest volume decimal (both at most 8 places)."""
    def finest(values: Any, most: int) -> float:
        import numpy as np
        v = np.asarray(values[: 20_000], dtype=np.float64)
        for k in range(most + 1):
            scaled = v * 10.0 ** k
            if np.all(np.abs(scaled - np.rint(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))):
                return 10.0 ** -k
        return 10.0 ** -most
    tick = min(finest(candles.close, 8), finest(candles.low, 8), finest(candles.high, 8))
    step = finest(candles.volume, 3)
    return SymbolFilters(symbol, tick_size=tick, step_size=step, min_qty=step, min_notional=5.0)


DEFAULT_MAKER_FEE = 0.0
DEFAULT_TAKER_FEE = 0.0004
MAX_OPEN_ORDERS = 200
MAX_BATCH_ORDERS = 5
CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
ALGO_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
LIQ_KEY = -1                    # the liquidation trigger's key among a book's resting orders
LIQ_SEQ = 1 << 62               # at the same tick, the account's own stop goes first


def sim_error(code: int, msg: str, status: int = 400) -> ExchangeError:
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
    status: str = NEW
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
    status: str = NEW
    trigger_time: int = 0
    actual_order_id: int = 0
    actual_price: float = 0.0
    reason: str = ""            # why it failed when it triggered (ALGO_UPDATE `rm`)
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
    reason: str = ""                # `rm`: why a triggered stop failed (REJECTED / EXPIRED)


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
    asset: str = "USDC"             # the balance row's asset: the account's collateral


@dataclass
class ConfigUpdate:
    """ACCOUNT_CONFIG_UPDATE: a symbol's leverage changed (Event-User-Data-Stream ... Account
    Configuration Update)."""
    symbol: str
    leverage: int
    event_time: int


Event = Union[OrderUpdate, AlgoUpdate, AccountUpdate, ConfigUpdate]

# What rests on a book's trigger list: a limit order, an algo order, or the liquidation trigger.
RestingOrder = Union[SimOrder, SimAlgoOrder, LiquidationTrigger]


def follows_mark(r: RestingOrder) -> bool:
    """Triggered by the mark price: the liquidation trigger, and algo orders on MARK_PRICE."""
    return isinstance(r, LiquidationTrigger) or (isinstance(r, SimAlgoOrder) and r.working_mark)


def resting_key(r: RestingOrder) -> int:
    """The key `r` rests under in a book's trigger lists."""
    if isinstance(r, LiquidationTrigger):
        return LIQ_KEY
    return r.algo_id if isinstance(r, SimAlgoOrder) else r.order_id


class UserStream(Protocol):
    """What a part of the simulator needs to report a change: the exchange's clock and the
    queue of user-stream events (`ack_events` off: acknowledgements are not queued)."""

    now_ms: int
    ack_events: bool
    events: list[Event]


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
    mark_resting: dict[int, RestingOrder] = field(default_factory=dict)
    brackets: BracketTable | None = None
    liq_price: float = 0.0      # 0: no liquidation price (flat, or covered)
    # The volume fill model (None: SPEC §6's full fills): steps the current leg trades, and
    # what of it resting limits may still take (price-time order along the leg).
    leg_volume: int | None = None
    leg_budget: int | None = None
    position: SimPosition = field(default_factory=SimPosition)
    resting: dict[int, RestingOrder] = field(default_factory=dict)  # by id (LIQ_KEY: liquidation)
    open_by_client: dict[str, SimOrder] = field(default_factory=dict)
    algo_by_client: dict[str, SimAlgoOrder] = field(default_factory=dict)
    realized_cum: float = 0.0
    # price × remaining of resting non-reduce-only orders, per side (kept up to
    # date as orders rest and leave, so the margin check needs no scan)
    open_buy_notional: float = 0.0
    open_sell_notional: float = 0.0

    def resting_for(self, r: RestingOrder) -> dict[int, RestingOrder]:
        """Where `r` rests: with the orders of the last price, unless a mark series drives
        this book and `r` follows the mark."""
        return self.mark_resting if self.mark_driven and follows_mark(r) else self.resting

    def rest(self, o: "SimOrder") -> None:
        self.open_by_client[o.client_id] = o
        self.resting[o.order_id] = o
        if not o.reduce_only:
            if o.side == BUY:
                self.open_buy_notional += o.price * o.remaining
            else:
                self.open_sell_notional += o.price * o.remaining

    def unrest(self, o: "SimOrder", qty: float, done: bool) -> None:
        """`qty` of a resting order leaves the book (filled or cancelled); `done`: all of it."""
        if not o.reduce_only:
            if o.side == BUY:
                self.open_buy_notional -= o.price * qty
            else:
                self.open_sell_notional -= o.price * qty
        if done:
            del self.open_by_client[o.client_id]
            self.resting.pop(o.order_id, None)
            if not self.open_by_client:
                self.open_buy_notional = self.open_sell_notional = 0.0   # no drift left behind


def book_of(books: dict[str, SymbolBook], symbol: str) -> SymbolBook:
    """The book of `symbol`, or Binance's -1121."""
    b = books.get(symbol)
    if b is None:
        raise sim_error(BinanceError.INVALID_SYMBOL, "Invalid symbol.")
    return b


DECIMAL_RE = re.compile(r"^[+-]?(\d+)(?:\.(\d*))?$|^[+-]?\.(\d+)$")


def parse_units(text: str, name: str, max_decimals: int, scale: int) -> int:
    """A decimal string as an exact integer count of 10^-max_decimals (no float on the way)."""
    s = text.strip()
    m = DECIMAL_RE.match(s)
    if m is None:
        raise mandatory_error(name)
    whole, frac = (m.group(1) or "0"), (m.group(2) if m.group(1) is not None else m.group(3)) or ""
    frac = frac.rstrip("0")
    if len(frac) > max_decimals:
        raise sim_error(ERR_PRECISION, "Precision is over the maximum defined for this asset.")
    units = int(whole) * scale + (int(frac.ljust(max_decimals, "0")) if frac else 0)
    return -units if s.startswith("-") else units


def parse_decimal(value: Any, name: str, max_decimals: int) -> float:
    if isinstance(value, str):
        s = value.strip()
        if "." in s and len(s.split(".", 1)[1].rstrip("0")) > max_decimals:
            raise sim_error(ERR_PRECISION, "Precision is over the maximum defined for this asset.")
        try:
            return float(s)
        except ValueError:
            raise mandatory_error(name) from None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise mandatory_error(name) from None
    if v != v or v in (float("inf"), float("-inf")):
        raise mandatory_error(name)
    return v


def mandatory_error(name: str) -> ExchangeError:
    return sim_error(BinanceError.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                     f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def parse_price(f: SymbolFilters, value: Any, name: str = "price") -> int:
    """A price from a request, as integer ticks: a decimal string exactly, an in-process
    float by its nearest tick (it must be one of the canonical values)."""
    if type(value) is str:
        units = parse_units(value, name, f.price_decimals, f._price_scale)
        if units <= 0:
            raise sim_error(BinanceError.PRICE_LESS_THAN_MIN_PRICE, "Price less than min price.")
        if units % f._tick_units:
            raise sim_error(BinanceError.PRICE_NOT_INCREASED_BY_TICK_SIZE, "Price not increased by tick size.")
        return units // f._tick_units
    v = value if type(value) is float and math.isfinite(value) else parse_decimal(value, name, f.price_decimals)
    if v <= 0:
        raise sim_error(BinanceError.PRICE_LESS_THAN_MIN_PRICE, "Price less than min price.")
    t = round(v / f.tick_size)
    if abs(v / f.tick_size - t) > 1e-6:
        raise sim_error(BinanceError.PRICE_NOT_INCREASED_BY_TICK_SIZE, "Price not increased by tick size.")
    return t


def parse_qty(f: SymbolFilters, value: Any) -> int:
    """A quantity from a request, as integer steps."""
    if type(value) is str:
        units = parse_units(value, "quantity", f.qty_decimals, f._qty_scale)
        if units <= 0:
            raise sim_error(BinanceError.QTY_LESS_THAN_ZERO, "Quantity less than or equal to zero.")
        if units % f._step_units:
            raise sim_error(BinanceError.QTY_NOT_INCREASED_BY_STEP_SIZE, "Quantity not increased by step size.")
        steps = units // f._step_units
    else:
        v = value if type(value) is float and math.isfinite(value) else parse_decimal(value, "quantity", f.qty_decimals)
        if v <= 0:
            raise sim_error(BinanceError.QTY_LESS_THAN_ZERO, "Quantity less than or equal to zero.")
        steps = round(v / f.step_size)
        if abs(v / f.step_size - steps) > 1e-6:
            raise sim_error(BinanceError.QTY_NOT_INCREASED_BY_STEP_SIZE, "Quantity not increased by step size.")
    if steps < f.steps_of_min_qty:
        raise sim_error(BinanceError.QTY_LESS_THAN_MIN_QTY, "Quantity less than min quantity.")
    return steps


def parse_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


