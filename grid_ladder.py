"""The entry ladder of the grid-martingale strategy: placing a grid's levels in one batch,
holding levels back while a fill that raced a cancel is unseen, and the grid resets after a
full close (SPEC §3.3 / §3.5) and after BE (§3.4).

A part of `grid_strategy.GridMartingaleStrategy` (a mixin: it uses the strategy's state,
venue, config and exit orders)."""
from __future__ import annotations

from typing import Callable

from exchange_api import (
    EPS, ERR_MARGIN_INSUFFICIENT, ERR_POST_ONLY_REJECTED, ROLE_ENTRY, ExchangeError, LimitOrder,
    client_order_id,
)
from state_manager import OrderState


class LadderMixin:
    """The grid's entry levels: placement, deferral, resets."""

    # ------------------------------------------------------------------ grids
    async def _cancel_entries(self, which: Callable[[OrderState], bool] = lambda o: True) -> dict[str, float]:
        """Cancel the state's entries (those `which` selects), each confirmed by its own result,
        and forget them.  Returns the ones that had filled beyond what their fill events showed,
        with that quantity: fills that raced the cancel, whose events (or trade history) are
        still to come."""
        entries = [o for o in self.state.orders.values() if o.is_entry and which(o)]
        if not entries:
            return {}
        executed = await self.venue.cancel_orders_confirmed([o.client_id for o in entries])
        raced: dict[str, float] = {}
        for o in entries:
            self.state.orders.pop(o.client_id, None)
            extra = executed.get(o.client_id, 0.0) - o.filled_qty
            if extra > EPS:
                raced[o.client_id] = extra
                self.log.warning("level %d (%s) filled %s before its cancel", o.level, o.client_id,
                                 self.filters.fmt_qty(executed[o.client_id]))
        return raced

    def _note_raced(self, raced: dict[str, float]) -> bool:
        """Remember raced fills until their events are acted on; True if there were any."""
        for cid, q in raced.items():
            self.state.raced[cid] = self.state.raced.get(cid, 0.0) + q
        return bool(raced)

    def _defer_entries(self, first_level: int) -> None:
        """Hold the entry levels first_level..N of the grid in force until the raced fill is
        acted on (its event, or the reconciliation's trade history): the position then says
        which levels are left to place."""
        self.state.pending_level = first_level
        self.log.warning("entry levels %d-%d held back until the fill that raced the cancel is seen",
                         first_level, self.levels)
        self._changed()

    def _pending_levels(self) -> list[tuple[int, float, float]]:
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

    async def place_pending_entries(self, first_level: int) -> None:
        """Place the held-back levels from first_level on (a new generation, same centre)."""
        st = self.state
        st.pending_level = max(st.pending_level, first_level)
        levels = self._pending_levels()
        st.pending_level = 0
        st.raced.clear()
        if levels:
            await self.setup_grid_orders(first_level=levels[0][0])
        else:
            self._changed()

    async def setup_grid_orders(self, first_level: int = 1) -> None:
        """Place entry levels first_level..N around the current centre, in one batch."""
        st = self.state
        if self.halted:
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
            o = OrderState(client_order_id(self.symbol, st.generation, ROLE_ENTRY, level),
                           f"ENTRY_{level}", self.entry_side, price, qty, level=level)
            planned.append(o)
            self._register(o)
        self._changed()
        await self.place_entries(planned, "level_reset" if first_level > 1 else "level_set")

    async def place_entries(self, planned: list[OrderState], log_key: str | None = None) -> None:
        """Send registered entry orders in one batch; -2019 goes down the margin ladder."""
        st = self.state
        # Post-only: an entry the market already passed (the daemon lagged it) is refused, never
        # filled at once as taker; the level is given up for this grid.
        results = await self.venue.place_limits(
            [LimitOrder(o.client_id, o.side, o.price, o.qty, False, True) for o in planned])
        for o, r in zip(planned, results):
            if isinstance(r, ExchangeError):
                ack = None
                if r.code == ERR_MARGIN_INSUFFICIENT:
                    try:      # the ladder logs its own give-up
                        ack = await self.venue.retry_entry_after_margin_error(o.client_id, o.side, o.price, o.qty)
                    except ExchangeError as e:
                        r = e            # e.g. -5022: the price passed the level during the ladder
                if ack is None and r.code == ERR_POST_ONLY_REJECTED:
                    self.log.warning("Level %d not placed: the price is already beyond %s (post-only)",
                                     o.level, self.filters.fmt_price(o.price))
                elif ack is None and r.code != ERR_MARGIN_INSUFFICIENT:
                    self.log.error("Level %d order rejected: %s", o.level, r)
                self._acknowledge(o, ack)
            else:
                self._acknowledge(o, r)
            if o.client_id in st.orders and log_key:
                self.log_info and self._info(log_key, level=o.level, price=o.price, qty=o.qty)
        refused = any(isinstance(r, ExchangeError) and r.code == ERR_POST_ONLY_REJECTED for r in results)
        self.grid_refused = refused and not any(o.is_entry for o in st.orders.values())
        self._changed()

    async def reset_grid_after_full_close(self, exit_price: float, reason: str) -> None:
        """SPEC §3.3 / §3.5: flat again: cancel everything, re-centre at the exit, all levels."""
        st = self.state
        raced = self._note_raced(await self._cancel_entries())
        await self.venue.cancel_all_orders()        # the exits and the stop
        st.orders.clear()
        st.round_trips += 1
        await self._sync_position()
        raced = self._forget_lookahead() or raced
        if st.position.qty > EPS:
            # Not flat after all (a partial exit live): protect what is left.
            self.log.warning("%s exit left %.6f open; re-placing its exit", reason, st.position.qty)
            await self._set_tp_order()
            return
        st.position.reset(self.levels)
        st.grid_center = exit_price
        self.log_info and self._info("full_close", reason=reason, center=exit_price)
        if raced:
            # An entry of the old grid filled before its cancel: the new grid waits for that
            # fill's event (it counts as its level), so no level is placed on top of it.
            self._defer_entries(1)
            return
        await self.setup_grid_orders()

    async def reset_grid_after_partial_close(self, exit_price: float) -> None:
        """SPEC §3.4: the level-1 quantity remains at the unchanged average."""
        st = self.state
        raced = self._note_raced(await self._cancel_entries())
        await self.venue.cancel_all_orders()        # the exits and the stop
        st.orders.clear()
        self.log_info and self._info("be_cancelled")
        await self._sync_position()
        raced = self._forget_lookahead() or raced
        p = st.position
        if p.qty <= EPS:
            await self.reset_grid_after_full_close(exit_price, "BE")
            return
        p.level_filled = [p.qty] + [0.0] * (self.levels - 1)
        p.level1_qty = p.qty
        p.deepest_level = 1
        self.log_info and self._info("level1_update", qty=p.qty)
        # The seed's "open orders" line, from the state (every cancel above was confirmed): no
        # REST call in the reaction, with INFO logging on or off alike.
        self.log_info and self._info("open_orders", n=len(st.orders))
        self.log_info and self._info("be_state", avg=p.avg_price, qty=p.qty)
        st.grid_center = p.avg_price / (1.0 - self.s * self.config.level_distances[0])
        self.log_info and self._info("be_regrid", center=st.grid_center)
        if raced:
            self._defer_entries(2)      # as after a full close: they wait for the raced fill
        else:
            await self.setup_grid_orders(first_level=2)
        await self._set_tp_order()
