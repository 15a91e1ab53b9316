"""The entry ladder of the grid-martingale strategy: where a grid's levels are, placing them in
one batch, holding levels back while a fill that raced a cancel is unseen, and the grid resets
after a full close (SPEC §3.3 / §3.5) and after BE (§3.4).

`Ladder` is a part that `grid_strategy.GridMartingaleStrategy` composes (its `ladder`).  What it
keeps of its own: the level arithmetic, the generation counter, the held-back levels and the
raced fills (in the `GridState`, which is saved) and whether the last fresh grid was refused.
It calls the strategy back only through `LadderHost`: the venue in force, the halt, the INFO
lines, the position read and the TP placed after a reset.  The order bookkeeping both share
(`register`, `acknowledge`) is here as plain functions."""
from __future__ import annotations

import logging
import weakref
from typing import Callable, Protocol

from config import GridConfig
from exchange_api import (
    EPS, ERR_MARGIN_INSUFFICIENT, ERR_POST_ONLY_REJECTED, ExchangeError, IdTag, Role, Side, entry_role, FuturesVenue, LimitOrder,
    OrderAck, SymbolFilters, client_order_id,
)
from state_manager import GridState, OrderState

PlannedLevel = tuple[int, float, float]         # (level, price, qty)


def direction_sign(direction: str) -> int:
    """+1 for LONG, -1 for SHORT: the sign of the strategy's price arithmetic."""
    return 1 if direction == "LONG" else -1


def register(state: GridState, o: OrderState) -> None:
    """Every order is registered in the state before it is sent: a fill that arrives before
    the acknowledgement, or after a crash, is then recognised."""
    state.orders[o.client_id] = o


def acknowledge(state: GridState, o: OrderState, ack: OrderAck | None) -> None:
    """The venue's answer to a registered order: none (refused), or its id and quantity."""
    if ack is None:
        state.orders.pop(o.client_id, None)
        return
    o.order_id, o.qty = ack.order_id, ack.qty or o.qty


class LadderHost(Protocol):
    """What the ladder calls back in the strategy."""

    @property
    def venue(self) -> FuturesVenue:
        """The venue in force, read at every call: the reconciler swaps it while it replays
        missed fills (their placements are held back)."""

    @property
    def halted(self) -> bool:
        """Liquidated with AFTER_LIQUIDATION=STOP: no new grid."""

    @property
    def log_info(self) -> bool:
        """Whether the INFO lines are wanted (the backtest turns them off)."""

    def info(self, key: str, **kw: object) -> None: ...

    def changed(self) -> None:
        """The state changed (the daemon saves it)."""

    async def sync_position(self) -> None: ...

    def forget_lookahead(self) -> bool: ...

    async def set_tp_order(self) -> None: ...


class Ladder:
    """The grid's entry levels: placement, deferral, resets."""

    def __init__(self, host: LadderHost, state: GridState, config: GridConfig, filters: SymbolFilters,
                 symbol: str, log: logging.Logger, msg: dict[str, str]):
        # A weak reference: the strategy holds the ladder, and a strong one back would make a
        # cycle that leaves the strategy, its venue and a whole backtest's simulator to the
        # cyclic collector, which a backtest turns off while it runs.
        self.host: LadderHost = weakref.proxy(host)
        self.state = state
        self.filters = filters
        self.symbol = symbol
        self.log = log
        self.msg = msg
        # The last fresh grid had every entry refused as post-only (the market had passed its
        # levels while none rested): flat with nothing resting, it is placed again at the market.
        self.refused = False
        self.apply_config(config)

    def apply_config(self, config: GridConfig) -> None:
        """The config in force, and the direction the state holds (it changes only while flat)."""
        self.config = config
        self.s = direction_sign(self.state.direction)
        self.entry_side = (Side.BUY if self.s > 0 else Side.SELL).value     # plain str (hot path)
        self.levels = config.max_entry_level

    # ------------------------------------------------------------------ levels
    @property
    def leverage(self) -> int:
        return self.config.leverage_long if self.s > 0 else self.config.leverage_short

    def level_price(self, center: float, level: int) -> float:
        d = self.config.level_distances[level - 1]
        return self.filters.price_away_from_market(center * (1.0 - self.s * d), self.s)

    def level_qty(self, price: float, level: int) -> float:
        notional = self.config.entry_ratios[level - 1] * self.state.capital * self.leverage
        return self.filters.qty_down(notional / price)

    def pending_levels(self) -> list[PlannedLevel]:
        """The held-back levels still to place: those deeper than the position holds."""
        st = self.state
        if not st.pending_level or st.grid_center <= 0:
            return []
        out = []
        for level in range(max(st.pending_level, st.position.deepest_level + 1), self.levels + 1):
            price = self.level_price(st.grid_center, level)
            qty = self.level_qty(price, level)
            if self.filters.tradable(price, qty):
                out.append((level, price, qty))
        return out

    # ------------------------------------------------------------------ cancels and raced fills
    async def cancel_entries(self, which: Callable[[OrderState], bool] = lambda o: True) -> dict[str, float]:
        """Cancel the state's entries (those `which` selects), each confirmed by its own result,
        and forget them.  Returns the ones that had filled beyond what their fill events showed,
        with that quantity: fills that raced the cancel, whose events (or trade history) are
        still to come."""
        entries = [o for o in self.state.orders.values() if o.is_entry and which(o)]
        if not entries:
            return {}
        executed = await self.host.venue.cancel_orders_confirmed([o.client_id for o in entries])
        raced: dict[str, float] = {}
        for o in entries:
            self.state.orders.pop(o.client_id, None)
            extra = executed.get(o.client_id, 0.0) - o.filled_qty
            if extra > EPS:
                raced[o.client_id] = extra
                self.log.warning("level %d (%s) filled %s before its cancel", o.level, o.client_id,
                                 self.filters.fmt_qty(executed[o.client_id]))
        return raced

    def note_raced(self, raced: dict[str, float]) -> bool:
        """Remember raced fills until their events are acted on; True if there were any."""
        for cid, q in raced.items():
            self.state.raced[cid] = self.state.raced.get(cid, 0.0) + q
        return bool(raced)

    def defer_entries(self, first_level: int) -> None:
        """Hold the entry levels first_level..N of the grid in force until the raced fill is
        acted on (its event, or the reconciliation's trade history): the position then says
        which levels are left to place."""
        self.state.pending_level = first_level
        self.log.warning("entry levels %d-%d held back until the fill that raced the cancel is seen",
                         first_level, self.levels)
        self.host.changed()

    def raced_fill_seen(self, client_id: str, qty: float) -> None:
        """A fill of a dropped entry was acted on: that much of its raced quantity is seen."""
        raced = self.state.raced
        left = raced.get(client_id, 0.0) - qty
        if left > EPS:
            raced[client_id] = left
        else:
            raced.pop(client_id, None)

    def forget_held_levels(self) -> None:
        """No level is held back and no raced fill awaited (a liquidation ended the grid)."""
        self.state.raced.clear()
        self.state.pending_level = 0

    async def place_pending_entries(self, first_level: int) -> None:
        """Place the held-back levels from first_level on (a new generation, same centre)."""
        st = self.state
        st.pending_level = max(st.pending_level, first_level)
        levels = self.pending_levels()
        st.pending_level = 0
        st.raced.clear()
        if levels:
            await self.setup_grid_orders(first_level=levels[0][0])
        else:
            self.host.changed()

    # ------------------------------------------------------------------ placement
    async def setup_grid_orders(self, first_level: int = 1) -> None:
        """Place entry levels first_level..N around the current centre, in one batch."""
        st = self.state
        if self.host.halted:
            return          # liquidated, AFTER_LIQUIDATION=STOP: nothing new until restarted
        st.generation += 1
        st.pending_level = 0
        planned: list[OrderState] = []
        for level in range(first_level, self.levels + 1):
            price = self.level_price(st.grid_center, level)
            qty = self.level_qty(price, level)
            if not self.filters.tradable(price, qty):
                self.log.warning(self.msg["level_skip"].format(level=level, qty=qty, price=price))
                continue
            o = OrderState(client_order_id(self.symbol, st.generation, IdTag.ENTRY, level),
                           entry_role(level), self.entry_side, price, qty, level=level)
            planned.append(o)
            register(st, o)
        self.host.changed()
        await self.place_entries(planned, "level_reset" if first_level > 1 else "level_set")

    async def place_entries(self, planned: list[OrderState], log_key: str | None = None) -> None:
        """Send registered entry orders in one batch; -2019 goes down the margin ladder."""
        st, host = self.state, self.host
        # Post-only: an entry the market already passed (the daemon lagged it) is refused, never
        # filled at once as taker; the level is given up for this grid.
        results = await host.venue.place_limits(
            [LimitOrder(o.client_id, o.side, o.price, o.qty, False, True) for o in planned])
        for o, r in zip(planned, results):
            if isinstance(r, ExchangeError):
                acknowledge(st, o, await self._after_refusal(o, r))
            else:
                acknowledge(st, o, r)
            if o.client_id in st.orders and log_key and host.log_info:
                host.info(log_key, level=o.level, price=o.price, qty=o.qty)
        refused = any(isinstance(r, ExchangeError) and r.code == ERR_POST_ONLY_REJECTED for r in results)
        self.refused = refused and not any(o.is_entry for o in st.orders.values())
        host.changed()

    async def _after_refusal(self, o: OrderState, r: ExchangeError) -> OrderAck | None:
        """An entry the batch refused: -2019 goes down the margin ladder (its acknowledgement,
        or None when it gives up); any other refusal is logged and the level given up."""
        ack = None
        if r.code == ERR_MARGIN_INSUFFICIENT:
            try:      # the ladder logs its own give-up
                ack = await self.host.venue.retry_entry_after_margin_error(o.client_id, o.side, o.price, o.qty)
            except ExchangeError as e:
                r = e            # e.g. -5022: the price passed the level during the ladder
        if ack is None and r.code == ERR_POST_ONLY_REJECTED:
            self.log.warning("Level %d not placed: the price is already beyond %s (post-only)",
                             o.level, self.filters.fmt_price(o.price))
        elif ack is None and r.code != ERR_MARGIN_INSUFFICIENT:
            self.log.error("Level %d order rejected: %s", o.level, r)
        return ack

    # ------------------------------------------------------------------ resets
    async def _cancel_everything(self) -> bool:
        """Cancel the entries (confirmed), then the exits and the stop; True if an entry had
        filled before its cancel (remembered as raced)."""
        raced = self.note_raced(await self.cancel_entries())
        await self.host.venue.cancel_all_orders()        # the exits and the stop
        self.state.orders.clear()
        return raced

    async def reset_grid_after_full_close(self, exit_price: float, reason: str) -> None:
        """SPEC §3.3 / §3.5: flat again: cancel everything, re-centre at the exit, all levels."""
        st, host = self.state, self.host
        raced = await self._cancel_everything()
        st.round_trips += 1
        await host.sync_position()
        raced = host.forget_lookahead() or raced
        if st.position.qty > EPS:
            # Not flat after all (a partial exit live): protect what is left.
            self.log.warning("%s exit left %.6f open; re-placing its exit", reason, st.position.qty)
            await host.set_tp_order()
            return
        st.position.reset(self.levels)
        st.grid_center = exit_price
        if host.log_info:
            host.info("full_close", reason=reason, center=exit_price)
        if raced:
            # An entry of the old grid filled before its cancel: the new grid waits for that
            # fill's event (it counts as its level), so no level is placed on top of it.
            self.defer_entries(1)
            return
        await self.setup_grid_orders()

    async def reset_grid_after_partial_close(self, exit_price: float) -> None:
        """SPEC §3.4: the level-1 quantity remains at the unchanged average."""
        st, host = self.state, self.host
        raced = await self._cancel_everything()
        if host.log_info:
            host.info("be_cancelled")
        await host.sync_position()
        raced = host.forget_lookahead() or raced
        p = st.position
        if p.qty <= EPS:
            await self.reset_grid_after_full_close(exit_price, Role.BE)
            return
        p.level_filled = [p.qty] + [0.0] * (self.levels - 1)
        p.level1_qty = p.qty
        p.deepest_level = 1
        if host.log_info:
            host.info("level1_update", qty=p.qty)
            # The seed's "open orders" line, from the state (every cancel above was confirmed):
            # no REST call in the reaction, with INFO logging on or off alike.
            host.info("open_orders", n=len(st.orders))
            host.info("be_state", avg=p.avg_price, qty=p.qty)
        st.grid_center = p.avg_price / (1.0 - self.s * self.config.level_distances[0])
        if host.log_info:
            host.info("be_regrid", center=st.grid_center)
        if raced:
            self.defer_entries(2)      # as after a full close: they wait for the raced fill
        else:
            await self.setup_grid_orders(first_level=2)
        await host.set_tp_order()
