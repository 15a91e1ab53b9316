"""The venue interface the strategy talks to, and the pieces every venue shares.

`GridMartingaleStrategy` never imports a venue: it calls the methods of
`FuturesVenue`.  Two classes implement the primitives — `SimVenue`
(in-process simulated exchange: backtest) and `BinanceFuturesClient`
(python-binance: Binance, testnet, the local exchange) — and inherit the
retry ladders of SPEC §4 from here, so backtest and live cannot drift.

Prices and quantities cross this boundary as floats that are exact multiples
of tickSize / stepSize (`SymbolFilters` rounds them in integer ticks); venues
that speak HTTP format them as decimal strings with `fmt_price` / `fmt_qty`.
"""
from __future__ import annotations

import asyncio
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any, Coroutine, TypeVar

from errors import ExchangeError, PositionUnreadable

log = logging.getLogger(__name__)

T = TypeVar("T")

class BinanceError(IntEnum):
    """Binance's error codes, by their documented names (reference §3): one list for the whole
    project.  An IntEnum: it compares equal to the integer code an answer carries."""

    UNKNOWN = -1000
    DISCONNECTED = -1001
    UNAUTHORIZED = -1002
    TOO_MANY_REQUESTS = -1003
    UNEXPECTED_RESP = -1006
    TIMEOUT = -1007
    TOO_MANY_ORDERS = -1015
    UNSUPPORTED_OPERATION = -1020
    INVALID_TIMESTAMP = -1021
    INVALID_SIGNATURE = -1022
    ILLEGAL_CHARS = -1100
    MANDATORY_PARAM_EMPTY_OR_MALFORMED = -1102
    BAD_PRECISION = -1111
    INVALID_ORDER_TYPE = -1116
    INVALID_SIDE = -1117
    INVALID_SYMBOL = -1121
    INVALID_LISTEN_KEY = -1125
    INVALID_PARAMETER = -1130
    UNKNOWN_ORDER = -2011            # CANCEL_REJECTED: the order is not open
    NO_SUCH_ORDER = -2013
    BAD_API_KEY_FMT = -2014
    REJECTED_MBX_KEY = -2015
    MARGIN_NOT_SUFFICIENT = -2019
    ORDER_WOULD_IMMEDIATELY_TRIGGER = -2021
    REDUCE_ONLY_REJECT = -2022
    MAX_OPEN_ORDER_EXCEEDED = -2025
    QTY_LESS_THAN_ZERO = -4003
    QTY_LESS_THAN_MIN_QTY = -4004
    PRICE_LESS_THAN_MIN_PRICE = -4013
    PRICE_NOT_INCREASED_BY_TICK_SIZE = -4014
    INVALID_CLIENT_ORDER_ID = -4015
    QTY_NOT_INCREASED_BY_STEP_SIZE = -4023
    NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
    NO_NEED_TO_CHANGE_POSITION_SIDE = -4059
    CLIENT_ORDER_ID_DUPLICATED = -4116
    USE_ALGO_API = -4120
    MIN_NOTIONAL = -4164
    POST_ONLY_REJECTED = -5022       # a GTX (post-only) order that would have taken liquidity
    PARAM_NOT_REQUIRED = -1106
    INVALID_LEVERAGE = -4028
    POSITION_SIDE_NOT_MATCH = -4061
    POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS = -4067
    POSITION_SIDE_CHANGE_EXISTS_QUANTITY = -4068
    ASSET_MODE_NO_NEED_TO_CHANGE = -4171               # -4171 / -4172: as other clients report them,
    ASSET_MODE_CHANGE_EXISTS_ORDERS_OR_POSITION = -4172  # not verified (DECISIONS, issue 19)
    BAD_INTERVAL = -1120
    BAD_RECV_WINDOW = -1131                            # recvWindow must be less than 60000
    INVALID_API_KEY_TYPE = -4056                       # the WebSocket API's session.logon with an HMAC key
    INVALID_PATH = -5000                               # undocumented: "Path …, Method … is invalid"


# The names the code reacts to (kept as module constants: shorter at the call sites).
ERR_PRECISION = BinanceError.BAD_PRECISION
ERR_UNKNOWN_ORDER = BinanceError.UNKNOWN_ORDER
ERR_NO_SUCH_ORDER = BinanceError.NO_SUCH_ORDER
ERR_MARGIN_INSUFFICIENT = BinanceError.MARGIN_NOT_SUFFICIENT
ERR_WOULD_TRIGGER = BinanceError.ORDER_WOULD_IMMEDIATELY_TRIGGER
ERR_REDUCE_ONLY_REJECTED = BinanceError.REDUCE_ONLY_REJECT
ERR_MIN_NOTIONAL = BinanceError.MIN_NOTIONAL
ERR_USE_ALGO_API = BinanceError.USE_ALGO_API
ERR_POST_ONLY_REJECTED = BinanceError.POST_ONLY_REJECTED

ENTRY_RETRY_STEP = 0.001   # -2019: shrink by 0.1 % of the original per try ...
ENTRY_RETRY_FLOOR = 0.30   # ... down to 30 % of it (SPEC §4)
CLOSE_RETRY_STEP = 0.001   # -2022: shrink by 0.1 % per try ...
CLOSE_RETRY_FLOOR = 0.50   # ... down to 50 %
POSITION_READ_TRIES = 10
RUNG_MARGIN = 10           # rungs of headroom above a venue's free-margin estimate

EPS = 1e-9


# --------------------------------------------------------------------------
# Symbol filters and exact rounding


def _decimals(step: Decimal) -> int:
    exponent = step.normalize().as_tuple().exponent
    if not isinstance(exponent, int):                  # 'n', 'N', 'F': NaN or infinity
        raise ValueError(f"not a finite step: {step}")
    return max(0, -exponent)


def format_units(units: int, decimals: int) -> str:
    """An integer count of 10^-decimals as a decimal string, with no float in between."""
    if decimals == 0:
        return str(units)
    q, r = divmod(abs(units), 10 ** decimals)
    return f"{'-' if units < 0 else ''}{q}.{r:0{decimals}d}"


@dataclass(frozen=True)
class SymbolFilters:
    """PRICE_FILTER / LOT_SIZE / MIN_NOTIONAL of one symbol, and its integer grid.

    Inside the engine a price is an integer count of ticks and a quantity an
    integer count of steps: orders are matched and compared as integers.
    Floats appear only as the *canonical* value of a tick count — the double
    nearest to its exact decimal, the same double `float("3.816")` gives — so
    a price read from a file or a decimal string compares equal to the level
    computed by the strategy.  `ticks_down` / `ticks_up` carry a tiny epsilon
    so float noise (0.3 / 0.1 = 2.9999999999999996) never moves a price by a
    whole tick.
    """

    symbol: str
    tick_size: float
    step_size: float
    min_qty: float
    min_notional: float
    price_decimals: int = field(init=False)
    qty_decimals: int = field(init=False)
    _tick_units: int = field(init=False, repr=False)    # tick size in units of 10^-price_decimals
    _price_scale: int = field(init=False, repr=False)   # 10^price_decimals
    _step_units: int = field(init=False, repr=False)
    _qty_scale: int = field(init=False, repr=False)
    steps_of_min_qty: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tick, step = Decimal(repr(self.tick_size)), Decimal(repr(self.step_size))
        pd, qd = _decimals(tick), _decimals(step)
        set_ = object.__setattr__
        set_(self, "price_decimals", pd)
        set_(self, "qty_decimals", qd)
        set_(self, "_price_scale", 10 ** pd)
        set_(self, "_tick_units", int(tick * 10 ** pd))
        set_(self, "_qty_scale", 10 ** qd)
        set_(self, "_step_units", int(step * 10 ** qd))
        set_(self, "steps_of_min_qty", math.ceil(self.min_qty / self.step_size - EPS))

    # integer grid ---------------------------------------------------------
    def to_ticks(self, price: float) -> int:
        """The tick count of a price that is on the grid (a boundary value)."""
        return round(price / self.tick_size)

    def ticks_down(self, price: float) -> int:
        return math.floor(price / self.tick_size + EPS)

    def ticks_up(self, price: float) -> int:
        return math.ceil(price / self.tick_size - EPS)

    def from_ticks(self, ticks: int) -> float:
        # int / int is correctly rounded: the double nearest to ticks × tickSize.
        return ticks * self._tick_units / self._price_scale

    def prices_of_ticks(self, ticks: "Any") -> "Any":
        """`from_ticks` of a numpy int64 array (exact below 2^53 units: one correctly rounded division)."""
        return ticks.astype("float64") * self._tick_units / self._price_scale

    def fmt_ticks(self, ticks: int) -> str:
        return format_units(ticks * self._tick_units, self.price_decimals)

    def ticks_of_decimal(self, text: str) -> int | None:
        """Exact tick count of a decimal string, or None when it is not a multiple of tickSize."""
        units = Decimal(text) * self._price_scale
        if units != units.to_integral_value() or int(units) % self._tick_units:
            return None
        return int(units) // self._tick_units

    def to_steps(self, qty: float) -> int:
        return round(qty / self.step_size)

    def steps_down(self, qty: float) -> int:
        return math.floor(qty / self.step_size + EPS)

    def from_steps(self, steps: int) -> float:
        return steps * self._step_units / self._qty_scale

    def fmt_steps(self, steps: int) -> str:
        return format_units(steps * self._step_units, self.qty_decimals)

    def qty_round(self, qty: float) -> float:
        """The canonical value of a quantity that sums fills (drops the float noise of the sum)."""
        return self.from_steps(self.to_steps(qty))

    # prices -------------------------------------------------------------
    def price_down(self, price: float) -> float:
        return self.from_ticks(self.ticks_down(price))

    def price_up(self, price: float) -> float:
        return self.from_ticks(self.ticks_up(price))

    def price_away_from_market(self, price: float, side_sign: int) -> float:
        """Entries and stop triggers: LONG rounds down, SHORT up (never more aggressive)."""
        return self.price_down(price) if side_sign > 0 else self.price_up(price)

    def price_toward_profit(self, price: float, side_sign: int) -> float:
        """TP / BE: LONG rounds up, SHORT down."""
        return self.price_up(price) if side_sign > 0 else self.price_down(price)

    def qty_down(self, qty: float) -> float:
        return self.from_steps(self.steps_down(qty))

    def fmt_price(self, price: float) -> str:
        return self.fmt_ticks(self.to_ticks(price))

    def fmt_qty(self, qty: float) -> str:
        return self.fmt_steps(self.to_steps(qty))

    def tradable(self, price: float, qty: float) -> bool:
        """Whether a non-reduce-only order passes minQty and minNotional."""
        return qty + EPS >= self.min_qty and price * qty + EPS >= self.min_notional


# --------------------------------------------------------------------------
# Position accounting, shared by the simulator (the truth) and the strategy
# (its own running view), as Binance computes it (reference §5).


def apply_fill(pos_qty: float, avg: float, fill_qty_signed: float, price: float) -> tuple[float, float, float]:
    """Return (new signed qty, new entry price, realized PnL before fees)."""
    if pos_qty == 0 or (pos_qty > 0) == (fill_qty_signed > 0):
        new_qty = pos_qty + fill_qty_signed
        new_avg = (abs(pos_qty) * avg + abs(fill_qty_signed) * price) / abs(new_qty)
        return new_qty, new_avg, 0.0
    closed = min(abs(pos_qty), abs(fill_qty_signed))
    realized = closed * (price - avg) * (1.0 if pos_qty > 0 else -1.0)
    new_qty = pos_qty + fill_qty_signed
    if abs(new_qty) < EPS * max(1.0, abs(pos_qty)):
        return 0.0, 0.0, realized
    if (new_qty > 0) == (pos_qty > 0):
        return new_qty, avg, realized
    return new_qty, price, realized  # flipped: the remainder opens at the fill price


# --------------------------------------------------------------------------
# What venues report


@dataclass(slots=True)
class Position:
    qty: float          # signed: > 0 long, < 0 short (one-way mode)
    entry_price: float
    liquidation_price: float = 0.0   # as the venue reports it (0: none / not reported)
    mark_price: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The account's margin as the exchange reports it (GET /fapi/v3/account): its wallet,
    its equity (margin balance: wallet + every position's unrealised PnL) and the
    maintenance margin of all its positions (liquidated when equity reaches it)."""
    wallet: float
    equity: float
    maint_margin: float

    @property
    def margin_ratio(self) -> float:
        return self.maint_margin / self.equity if self.equity > 0 else 1.0


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderStatus(StrEnum):
    """An order's status (`X` of ORDER_TRADE_UPDATE, `status` of the order endpoints)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"
    REJECTED = "REJECTED"


class ExecType(StrEnum):
    """What happened to an order (`x` of ORDER_TRADE_UPDATE)."""

    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    CALCULATED = "CALCULATED"      # a liquidation or ADL fill
    EXPIRED = "EXPIRED"
    AMENDMENT = "AMENDMENT"


OPEN_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
FILL_EXEC_TYPES = (ExecType.TRADE, ExecType.CALCULATED)


@dataclass(slots=True)
class OrderAck:
    client_id: str
    order_id: int
    price: float
    qty: float
    status: str = OrderStatus.NEW


@dataclass(slots=True)
class OpenOrder:
    client_id: str
    order_id: int
    side: str
    price: float        # limit price, or trigger price for an algo order
    qty: float          # 0 for closePosition algo orders
    reduce_only: bool
    is_algo: bool = False


@dataclass(slots=True)
class OrderUpdate:
    """The fields of an ORDER_TRADE_UPDATE the daemon uses (reference §4)."""

    symbol: str
    client_id: str
    order_id: int
    side: str
    order_type: str
    exec_type: str      # x: NEW, TRADE, CANCELED, EXPIRED, ...
    status: str         # X: NEW, PARTIALLY_FILLED, FILLED, CANCELED, ...
    price: float
    orig_qty: float
    last_qty: float = 0.0
    last_price: float = 0.0
    cum_qty: float = 0.0
    avg_price: float = 0.0
    commission: float = 0.0
    realized_pnl: float = 0.0
    is_maker: bool = False
    reduce_only: bool = False
    close_position: bool = False
    stop_price: float = 0.0
    trade_id: int = 0
    event_time: int = 0
    trade_time: int = 0
    commission_asset: str = "USDC"

    @property
    def is_fill(self) -> bool:
        return self.exec_type in FILL_EXEC_TYPES and self.last_qty > 0

    @property
    def is_liquidation(self) -> bool:
        """The exchange's forced close (`autoclose-` id; x=CALCULATED on Binance)."""
        return self.client_id.startswith("autoclose-") and self.last_qty > 0


# --------------------------------------------------------------------------
# Deterministic client order ids: GM-<SYMBOL>-<generation>-<ROLE><n>
# The generation changes with every new grid, the sequence with every exit
# order re-placed, so an id names one intended order and a retry after a
# timeout can query it before placing it again.

class Role(StrEnum):
    """An order's job in the grid.  An entry's role carries its level, spelt as the files on
    users' disks already spell it: `entry_role` (the state file) and `fill_role` (the trade
    records); `role_kind` reads either back."""

    ENTRY = "ENTRY"
    TP = "TP"
    BE = "BE"
    SL = "SL"
    LIQUIDATION = "LIQUIDATION"    # the exchange's autoclose-… order
    EXTERNAL = "EXTERNAL"          # not ours: placed by hand, or by another program


EXIT_ROLES = (Role.TP, Role.BE, Role.SL)


def entry_role(level: int) -> str:
    """An entry's role in the state (OrderState.role): ENTRY_3."""
    return f"ENTRY_{level}"


def fill_role(role: str, level: int) -> str:
    """The role a trade record shows (trades CSV, FillRecord): ENTRY3, TP, BE, SL."""
    return f"ENTRY{level}" if role.startswith(Role.ENTRY) else role


def role_kind(role: str) -> Role:
    """The role without its level: Role.ENTRY for ENTRY_3 or ENTRY3."""
    return Role.ENTRY if role.startswith(Role.ENTRY) else Role(role)


class IdTag(StrEnum):
    """A role as a client order id spells it (GM-BTCUSDC-7-E3, …-TP2)."""

    ENTRY = "E"
    TP = "TP"
    BE = "BE"
    SL = "SL"


ID_TAG = {Role.ENTRY: IdTag.ENTRY, Role.TP: IdTag.TP, Role.BE: IdTag.BE, Role.SL: IdTag.SL}


def client_order_id(symbol: str, generation: int, tag: IdTag, n: int) -> str:
    return f"GM-{symbol}-{generation}-{tag}{n}"


def parse_client_order_id(cid: str) -> tuple[str, int, IdTag, int] | None:
    """Return (symbol, generation, tag, n), or None for an id not ours."""
    parts = cid.split("-")
    if len(parts) != 4 or parts[0] != "GM":
        return None
    tag = parts[3]
    code = tag[:2] if tag[:2] in (IdTag.TP, IdTag.BE, IdTag.SL) else tag[:1]
    try:
        return parts[1], int(parts[2]), IdTag(code), int(tag[len(code):])
    except ValueError:
        return None


# --------------------------------------------------------------------------
# The venue interface


@dataclass(slots=True)
class LimitOrder:
    client_id: str
    side: str
    price: float
    qty: float
    reduce_only: bool = False
    post_only: bool = False     # GTX: refused (-5022) instead of filled at once as taker


class FuturesVenue(ABC):
    """One symbol on one USDⓈ-M futures venue, as the strategy sees it."""

    symbol: str
    filters: SymbolFilters
    log: logging.Logger = log

    # primitives every venue implements ----------------------------------
    @abstractmethod
    async def get_position(self) -> Position: ...

    @abstractmethod
    async def place_limit(self, order: LimitOrder) -> OrderAck: ...

    @abstractmethod
    async def place_limits(self, orders: list[LimitOrder]) -> list[OrderAck | ExchangeError]:
        """Place several orders in as few requests as the venue allows."""

    @abstractmethod
    async def place_stop_close(self, client_id: str, side: str, trigger_price: float,
                               working_type: str = "CONTRACT_PRICE") -> OrderAck:
        """A STOP_MARKET closePosition order through the Algo Order API, triggered by the last
        price (CONTRACT_PRICE, Binance's default) or the mark price (MARK_PRICE)."""

    @abstractmethod
    async def place_market_close(self, client_id: str, side: str, qty: float) -> OrderAck: ...

    @abstractmethod
    async def cancel_order(self, client_id: str) -> bool:
        """Cancel a plain order; False when the venue no longer knows it (-2011)."""

    @abstractmethod
    async def cancel_algo_order(self, client_id: str) -> bool: ...

    @abstractmethod
    async def cancel_order_confirmed(self, client_id: str) -> float:
        """Cancel a plain order and return how much of it had filled by then (0.0: none).
        An order the venue no longer has open is looked up for its executed quantity; an id
        the venue never had counts as 0.0."""

    async def cancel_orders_confirmed(self, client_ids: list[str]) -> dict[str, float]:
        """cancel_order_confirmed for several orders (concurrently where the venue allows)."""
        return {c: await self.cancel_order_confirmed(c) for c in client_ids}

    @abstractmethod
    async def cancel_all_orders(self) -> None:
        """Cancel every open order of the symbol, plain and algo."""

    @abstractmethod
    async def get_open_orders(self) -> list[OpenOrder]:
        """Open plain orders and open algo orders of the symbol."""

    # the seed's methods, shared by all venues ---------------------------
    async def place_limit_entry(self, client_id: str, side: str, price: float, qty: float) -> OrderAck:
        # Entries are post-only: one the market has already passed is refused, never taken.
        return await self.place_limit(LimitOrder(client_id, side, price, qty, False, True))

    async def place_limit_entry_with_retry(self, client_id: str, side: str, price: float,
                                           qty: float) -> OrderAck | None:
        """Place an entry; on -2019 shrink by 0.1 % of the original per try down to 30 %."""
        try:
            return await self.place_limit_entry(client_id, side, price, qty)
        except ExchangeError as e:
            if e.code != ERR_MARGIN_INSUFFICIENT:
                raise
        return await self.retry_entry_after_margin_error(client_id, side, price, qty)

    async def retry_entry_after_margin_error(self, client_id: str, side: str, price: float,
                                             qty: float) -> OrderAck | None:
        f = self.filters
        tries = round((1.0 - ENTRY_RETRY_FLOOR) / ENTRY_RETRY_STEP)
        last_qty = qty
        # Up to 700 rungs would break Binance's order-rate limit (300 / 10 s):
        # start a little above the rung the venue's free margin points at.
        # The rungs above k0 are skipped, not tried: the first one tried is rung k0's quantity
        # even when a skipped rung floors to it (a small order spans few steps).
        k0 = await self.first_rung_to_try(side, price, qty, tries)
        for k in range(k0, tries + 1):
            q = f.qty_down(qty * (1.0 - ENTRY_RETRY_STEP * k))
            if q >= last_qty:        # the step is finer than stepSize: no smaller order yet
                continue
            last_qty = q
            if not f.tradable(price, q):
                break
            try:
                return await self.place_limit_entry(client_id, side, price, q)
            except ExchangeError as e:
                if e.code != ERR_MARGIN_INSUFFICIENT:
                    raise
        self.log.error("%s entry %s: margin insufficient down to %.0f%% of %s; level skipped",
                  self.symbol, client_id, ENTRY_RETRY_FLOOR * 100, f.fmt_qty(qty))
        return None

    async def first_rung_to_try(self, side: str, price: float, qty: float, tries: int) -> int:
        """Where the -2019 ladder starts: 1 tries every rung; venues that can
        estimate their free margin start RUNG_MARGIN rungs above its estimate."""
        return 1

    async def place_limit_close(self, client_id: str, side: str, price: float, qty: float) -> OrderAck | None:
        """Reduce-only exit; on -2022 re-read the position and shrink by 0.1 % per try to 50 %."""
        f = self.filters
        try:
            return await self.place_limit(LimitOrder(client_id, side, price, qty, True))
        except ExchangeError as e:
            if e.code != ERR_REDUCE_ONLY_REJECTED:
                raise
        pos = await self.get_position_info_with_retry()
        base = min(qty, abs(pos.qty)) if pos.qty else 0.0
        if base <= 0:
            self.log.error("%s exit %s rejected as reduce-only and no position is open", self.symbol, client_id)
            return None
        tries = round((1.0 - CLOSE_RETRY_FLOOR) / CLOSE_RETRY_STEP)
        last_qty = math.inf
        for k in range(0, tries + 1):
            q = f.qty_down(base * (1.0 - CLOSE_RETRY_STEP * k))
            if q >= last_qty:
                continue
            last_qty = q
            if q <= 0:
                break
            try:
                return await self.place_limit(LimitOrder(client_id, side, price, q, True))
            except ExchangeError as e:
                if e.code != ERR_REDUCE_ONLY_REJECTED:
                    raise
        self.log.error("%s exit %s: reduce-only rejected down to %.0f%%", self.symbol, client_id,
                  CLOSE_RETRY_FLOOR * 100)
        return None

    async def get_position_info_with_retry(self, tries: int = POSITION_READ_TRIES) -> Position:
        last: Exception | None = None
        for attempt in range(tries):
            try:
                return await self.get_position()
            except (ExchangeError, OSError, asyncio.TimeoutError) as e:
                last = e
                await self.retry_pause(attempt)
        raise PositionUnreadable(f"{self.symbol}: position unreadable after {tries} tries: {last}")

    async def set_stop_loss(self, client_id: str, side: str, trigger_price: float,
                            working_type: str = "CONTRACT_PRICE") -> OrderAck:
        return await self.place_stop_close(client_id, side, trigger_price, working_type)

    async def retry_pause(self, attempt: int) -> None:
        """Pause between retries; the simulator overrides it with no pause."""
        await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the simulator's venue) without an event loop.

    The backtest drives the async strategy this way: each call costs a
    generator step instead of an event-loop round trip.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("run_sync: the coroutine suspended; only non-blocking venues may be driven synchronously")
