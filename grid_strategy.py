"""GridMartingaleStrategy: the decisions of SPEC §2–3, for LONG and SHORT.

The strategy talks to the exchange only through `exchange_api.FuturesVenue`
and reports through callbacks; it does no file or network I/O of its own.
The same object runs in the backtest (driven synchronously over the
simulator), in the demo and live (awaited by the daemon).

Its entry ladder (where the levels are, their placement, the levels held
back after a raced fill, the grid resets) is a composed part,
`grid_ladder.Ladder`, which calls the strategy back as its `LadderHost`.
This module keeps the reactions to events, the fill bookkeeping, the exits
and the stop, and the one rule for what should rest (`desired_orders`,
`mend`).

Every order is registered in the state *before* it is sent, under a
deterministic client id, so a fill that arrives before the placement
acknowledgement — or after a crash — is still recognised.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from config import GridConfig
from exchange_api import (
    EPS, ERR_REDUCE_ONLY_REJECTED, ERR_WOULD_TRIGGER, ID_TAG, ExchangeError, ExecType, IdTag, OrderStatus, Role, Side, entry_role, fill_role,
    FuturesVenue, OrderUpdate, SymbolFilters, apply_fill, client_order_id, parse_client_order_id,
)
from grid_ladder import Ladder, acknowledge, direction_sign, register
from messages import catalog
from state_manager import GridState, OrderState

log = logging.getLogger("grid")

# Bound once: compared on every order event of a backtest (an enum's attribute costs more).
_TRADE, _FILLED = ExecType.TRADE.value, OrderStatus.FILLED.value    # plain str: the fast compare
# Gone without our asking; EXPIRED_IN_MATCH (self-trade prevention) is X's, accepted as x too.
_GONE = (ExecType.CANCELED.value, ExecType.EXPIRED.value, OrderStatus.EXPIRED_IN_MATCH.value)
MARKET_CLOSE_TRIES = 3           # a market close refused as reduce-only: read the position again


@dataclass(slots=True)
class FillRecord:
    """One fill, as written to trades_<sym>.csv and the backtest's trades.csv."""

    time_ms: int
    symbol: str
    side: str
    role: str
    price: float
    qty: float
    fee: float
    realized_pnl: float
    position_after: float    # signed
    avg_price_after: float
    client_id: str
    order_id: int
    trade_id: int

    @property
    def time_iso(self) -> str:
        return datetime.fromtimestamp(self.time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Intent:
    """One order the current state wants resting (`GridMartingaleStrategy.desired_orders`)."""

    role: str            # entry_role(n), TP, BE, SL
    level: int           # entry level, 0 for exits
    price: float         # limit price, or the stop's trigger
    qty: float           # 0 for the closePosition stop


def _rests_as(o: OrderState, role: str, price: float, qty: float, f: SymbolFilters) -> bool:
    """Whether a resting order is the intended one (same role, tick and step count)."""
    return o.role == role and f.to_ticks(o.price) == f.to_ticks(price) and f.to_steps(o.qty) == f.to_steps(qty)


class GridMartingaleStrategy:
    """The decisions; the entry ladder is its composed part `ladder` (grid_ladder.Ladder), which
    calls it back as its `LadderHost`."""

    def __init__(self, config: GridConfig, venue: FuturesVenue, state: GridState | None = None,
                 capital: float | None = None, logger: logging.Logger | None = None,
                 lang: str | None = None,
                 on_fill: Callable[[FillRecord], None] | None = None,
                 on_change: Callable[[], None] | None = None):
        self.venue = venue
        self.filters = venue.filters
        self.symbol = venue.symbol
        self.log = logger or log
        self.msg = catalog(lang)
        self.on_fill = on_fill
        self.on_change = on_change
        self.config = config
        if state is None:
            state = GridState(symbol=self.symbol, direction=config.trade_direction,
                              capital=float(capital if capital is not None else config.initial_capital))
            state.position.reset(config.max_entry_level)
        self.state = state
        # Position change shown by exchange reads but not yet by fill events: a read
        # right after one fill may include the next fills, whose events follow.
        self._unseen = 0.0
        self._seen_avg = 0.0          # average of the position of the fills seen, while _unseen != 0
        # After a liquidation with AFTER_LIQUIDATION=STOP: no new grid until a person restarts
        # the daemon (in memory on purpose: a restart is that person's decision).
        self.halted = False
        # ACCOUNT_STOP_DRAWDOWN fired: halted for good (the state keeps it across restarts).
        if state.account_stopped_at:
            self.halted = True
        # The INFO lines of the reactions; the backtest turns them off (it reports through its
        # summary), sparing the formatting arguments of every call.
        self.log_info = True
        self.ladder = Ladder(self, state, config, self.filters, self.symbol, self.log, self.msg)
        self._apply_config(config)

    # ------------------------------------------------------------------ config
    def _apply_config(self, config: GridConfig) -> None:
        self.config = config
        self.ladder.apply_config(config)
        self.s = direction_sign(self.state.direction)
        # Plain str values: they travel into every order and are compared on the hot path.
        self.entry_side = (Side.BUY if self.s > 0 else Side.SELL).value
        self.exit_side = (Side.SELL if self.s > 0 else Side.BUY).value
        self.levels = config.max_entry_level
        self.half_range = config.grid_range_pct / 2.0
        pos = self.state.position
        if len(pos.level_filled) < self.levels:
            pos.level_filled += [0.0] * (self.levels - len(pos.level_filled))

    def update_config(self, config: GridConfig) -> None:
        """A reloaded config: distances and ratios apply at the next grid placement, TP/BE
        percentages to the next exit order; direction and leverage only while flat."""
        if config.trade_direction != self.state.direction:
            if self.is_flat_and_unfilled():
                self.state.direction = config.trade_direction
            else:
                self.log.warning("TRADE_DIRECTION change to %s waits until the position is flat",
                                 config.trade_direction)
        self._apply_config(config)

    @property
    def leverage(self) -> int:
        return self.ladder.leverage

    # ------------------------------------------------------------------ the ladder's, for callers
    def level_price(self, center: float, level: int) -> float:
        return self.ladder.level_price(center, level)

    def level_qty(self, price: float, level: int) -> float:
        return self.ladder.level_qty(price, level)

    async def place_entries(self, planned: list[OrderState], log_key: str | None = None) -> None:
        await self.ladder.place_entries(planned, log_key)

    @property
    def grid_refused(self) -> bool:
        return self.ladder.refused

    @grid_refused.setter
    def grid_refused(self, refused: bool) -> None:
        self.ladder.refused = refused

    # ------------------------------------------------------------------ helpers
    # (info, changed, sync_position, forget_lookahead and set_tp_order are public: the ladder
    # calls them back, as its LadderHost.)
    def info(self, key: str, **kw: object) -> None:
        """One INFO line of the message catalog (callers check `log_info` first)."""
        if self.log.isEnabledFor(logging.INFO):
            self.log.info(self.msg[key].format(**kw))

    def changed(self) -> None:
        """The state changed: the daemon saves it."""
        if self.on_change is not None:
            self.on_change()

    def _any_entry_filled(self) -> bool:
        lf = self.state.position.level_filled
        return bool(lf) and max(lf) > 0        # fills are never negative

    def is_flat_and_unfilled(self) -> bool:
        """No position, no entry fill, and no raced fill still to come (levels held back)."""
        st = self.state
        return st.position.qty <= EPS and not self._any_entry_filled() and not st.pending_level \
            and not st.raced and self._unseen <= EPS

    def stop_price(self) -> float:
        return self.filters.price_away_from_market(
            self.state.grid_center * (1.0 - self.s * self.config.sl_distance), self.s)

    def range_band(self) -> float:
        """The price beyond which a flat grid re-centres (favourable side only)."""
        return self.state.grid_center * (1.0 + self.s * self.half_range)

    def _orders_with_role(self, role: Role) -> list[OrderState]:
        return [o for o in self.state.orders.values() if o.role == role]

    def _next_exit_id(self, role: Role) -> str:
        self.state.exit_seq += 1
        return client_order_id(self.symbol, self.state.generation, ID_TAG[role], self.state.exit_seq)

    async def sync_position(self) -> None:
        """Read the exchange's position (up to 10 tries) and adopt it."""
        pos = await self.venue.get_position_info_with_retry()
        p = self.state.position
        qty, avg = abs(pos.qty), pos.entry_price
        if abs(qty - p.qty) > EPS or abs(avg - p.avg_price) > 1e-6 * max(1.0, avg):
            if self.log_info:
                self.info("pos_sync", old_avg=p.avg_price, avg=avg, old_qty=p.qty, qty=qty)
        # Invariant: p.qty = (position from the fill events seen) + _unseen.
        if self._unseen == 0.0:
            self._seen_avg = p.avg_price
        self._unseen += qty - p.qty
        if abs(self._unseen) <= EPS:
            self._unseen = 0.0
        p.qty, p.avg_price = qty, avg

    # ------------------------------------------------------------------ market events
    async def on_candle_closed(self, close: float) -> None:
        """SPEC §3.1: with no grid yet, the first completed candle's close is the centre."""
        if self.state.grid_center <= 0 and not self.halted:
            self.state.grid_center = float(close)
            if self.log_info:
                self.info("grid_center", center=close, reason="first candle")
            await self.ladder.setup_grid_orders()

    async def on_price(self, price: float) -> None:
        """SPEC §3.6: the range exit, flat and with no partial entry fill.

        The range exit is an event where the path crosses the band, so a move
        through several bands re-centres band by band; the result, computed
        here in one step, is the same for a tick stream and a candle path.
        """
        c = self.state.grid_center
        if c <= 0 or self.halted:
            return
        if self.ladder.refused:
            if self.is_flat_and_unfilled() and not any(o.is_entry for o in self.state.orders.values()):
                # Nothing rests and nothing filled (the refused orders never existed): a grid
                # at the market, or the daemon would wait for a price that may never return.
                self.log.warning("no entry rests (the market passed the grid at %s): new grid at %s",
                                 self.filters.fmt_price(c), self.filters.fmt_price(price))
                self.state.grid_center = price
                await self.ladder.setup_grid_orders()
                return
            self.ladder.refused = False
        band = c * (1.0 + self.s * self.half_range)
        if (price <= band if self.s > 0 else price >= band) or not self.is_flat_and_unfilled():
            return
        new_c = band
        while (price > new_c * (1.0 + self.half_range)) if self.s > 0 else (price < new_c * (1.0 - self.half_range)):
            new_c *= 1.0 + self.s * self.half_range
        if self.log_info:
            self.info("range_exit", price=price, old=c, center=new_c)
        # Flat is what the state believes; the cancels' own results confirm it.  An entry that
        # filled before its cancel means the grid is not flat: it stays in force (same centre)
        # and its other levels wait for that fill's event, which the next events bring.
        if self.ladder.note_raced(await self.ladder.cancel_entries()):
            self.log.warning("range exit abandoned: an entry filled before its cancel; the grid stays at %s",
                             self.filters.fmt_price(c))
            self.ladder.defer_entries(1)
            return
        self.state.orders.clear()
        self.state.grid_center = new_c
        await self.ladder.setup_grid_orders()

    # ------------------------------------------------------------------ order events
    async def on_order_update(self, u: OrderUpdate) -> None:
        if u.symbol != self.symbol:
            return
        if u.is_liquidation:
            await self.on_liquidation(u)
            return
        o = self.state.orders.get(u.client_id)
        if o is None:
            if u.exec_type == _TRADE and u.last_qty > 0:
                level = self.forgotten_fill_level(u.client_id, u.side, u.trade_id)
                if level:
                    await self.on_late_entry_fill(level, u)
            return
        if u.exec_type == _TRADE and u.last_qty > 0:
            o.filled_qty += u.last_qty
            self._record_fill(o, u)
            if o.is_entry:
                if u.status == _FILLED:
                    del self.state.orders[o.client_id]
                await self.on_entry_filled(o, u)
            elif o.role == Role.TP:
                if u.status == _FILLED or self.state.position.qty <= EPS:
                    await self.on_tp_filled(u)
            elif o.role == Role.BE:
                if u.status == _FILLED or self.state.position.qty <= EPS:
                    await self.on_be_filled(u)
            elif o.role == Role.SL:
                if u.status == _FILLED or self.state.position.qty <= EPS:
                    await self.on_sl_filled(u)
            self.changed()
        elif u.exec_type in _GONE and u.status != OrderStatus.NEW:
            # Gone without our asking (our own cancels are forgotten when sent);
            # reconciliation re-places what is missing.
            del self.state.orders[o.client_id]
            self.changed()

    def _record_fill(self, o: OrderState, u: OrderUpdate) -> None:
        p = self.state.position
        signed_before = p.qty * self.s
        signed = u.last_qty if u.side == Side.BUY else -u.last_qty
        lookahead = self._unseen != 0.0
        if lookahead:
            # The record shows the position after this very fill: that of the fills seen so
            # far, not that of a position read which already holds the next fills.
            seen_qty, seen_avg, _ = apply_fill((p.qty - self._unseen) * self.s, self._seen_avg, signed,
                                               u.last_price)
            self._seen_avg = seen_avg
        delta = signed * self.s                      # > 0 adds to the position, < 0 reduces it
        if self._unseen * delta > 0:
            # The last position read already counted (part of) this fill: do not count it twice.
            seen = math.copysign(min(abs(delta), abs(self._unseen)), delta)
            self._unseen = 0.0 if abs(self._unseen - seen) <= EPS else self._unseen - seen
            signed = (delta - seen) * self.s
        if abs(signed) > EPS:
            new_qty, new_avg, _ = apply_fill(signed_before, p.avg_price, signed, u.last_price)
        else:
            new_qty, new_avg = signed_before, p.avg_price
        p.qty, p.avg_price = self.filters.qty_round(abs(new_qty)), new_avg   # on the step grid: no float drift
        if not lookahead:
            seen_qty, seen_avg = new_qty, new_avg
        if self.on_fill is not None:
            self.on_fill(FillRecord(
                time_ms=u.trade_time or u.event_time, symbol=self.symbol, side=u.side,
                role=fill_role(o.role, o.level), price=u.last_price, qty=u.last_qty, fee=u.commission,
                realized_pnl=u.realized_pnl, position_after=seen_qty, avg_price_after=seen_avg,
                client_id=u.client_id, order_id=u.order_id, trade_id=u.trade_id))

    async def on_entry_filled(self, o: OrderState, u: OrderUpdate) -> None:
        """SPEC §3.2: TP for level 1 alone, BE from level 2, and the stop at the last level."""
        self._count_entry_fill(o, u)
        await self._protect()

    def _count_entry_fill(self, o: OrderState, u: OrderUpdate) -> None:
        """The level bookkeeping of an entry fill (before anything is saved or sent)."""
        p = self.state.position
        if p.deepest_level == 0:
            if self.log_info:
                self.info("first_entry", direction=self.state.direction)
        p.level_filled[o.level - 1] = self.filters.qty_round(p.level_filled[o.level - 1] + u.last_qty)
        if o.level == 1:
            p.level1_qty = p.level_filled[0]
        p.deepest_level = max(p.deepest_level, o.level)
        if self.log_info:
            self.info("level_fill", level=o.level, price=u.last_price, avg=p.avg_price, qty=p.qty)

    async def _protect(self) -> None:
        """The exit the position needs, and the stop if it needs one."""
        p = self.state.position
        if p.deepest_level == 1:
            await self.set_tp_order()
        else:
            await self._set_be_order()
        if not self._orders_with_role(Role.SL) and self.wants_stop():
            await self._set_stop_order()

    def forgotten_fill_level(self, client_id: str, side: str, trade_id: int) -> int:
        """What a fill of an order the state no longer holds is, decided here for every path
        (the user stream, the trade-history replay, the backtest's events): the level it counts
        as when it is one of our entries, filled while its cancel was on the way and not acted
        on yet; else 0: not the strategy's to act on (acted on already, placed by hand or by a
        lost state), so only its record is kept and the next reconcile adopts the position."""
        if trade_id and trade_id <= self.state.last_trade_id:
            return 0
        return self.late_entry_level(client_id, side)

    def late_entry_level(self, client_id: str, side: str) -> int:
        """The level of one of our entry orders the state no longer holds, else 0."""
        parsed = parse_client_order_id(client_id)
        if (client_id in self.state.orders or side != self.entry_side or not parsed or parsed[0] != self.symbol
                or parsed[2] != IdTag.ENTRY):
            return 0
        return parsed[3] if 1 <= parsed[3] <= self.levels else 0

    async def on_late_entry_fill(self, level: int, u: OrderUpdate) -> None:
        """A fill of one of our entry orders that the state had already dropped: it filled
        while our cancel was on its way, or while the process was down.  The position holds
        it, so it counts as a fill of its level (SPEC §3.2: L is the deepest level with any
        fill) and gets its BE and stop."""
        st = self.state
        o = OrderState(u.client_id, entry_role(level), self.entry_side, u.last_price, u.last_qty, level=level)
        self._record_fill(o, u)
        self._count_entry_fill(o, u)
        self.ladder.raced_fill_seen(u.client_id, u.last_qty)
        # Open entries of this level or a shallower one stand for exposure the position now
        # holds: cancelled, confirmed (one that filled meanwhile is one more raced fill).
        self.ladder.note_raced(await self.ladder.cancel_entries(lambda x: x.level <= level))
        # The levels a reaction held back: once every raced fill is acted on, the ones deeper
        # than the position holds go out, before the stop is decided.
        if st.pending_level and not st.raced:
            await self.ladder.place_pending_entries(st.position.deepest_level + 1)
        await self._protect()
        self.changed()

    def forget_lookahead(self) -> bool:
        """After a position read that holds entry fills whose events are still to come
        (a fill racing our cancel, or a later fill of a trade-history replay), go back to
        the position of the fills seen: those fills are then acted on as they arrive, as
        entries of their level, instead of being folded into the level-1 quantity."""
        if self._unseen > EPS:
            p = self.state.position
            p.qty, p.avg_price = self.seen_position()
            self._unseen = 0.0
            return True
        return False

    def all_fills_seen(self) -> None:
        """Every fill so far has been acted on (the reconciliation just replayed the trade
        history): none is still to come, and a position read adopts what differs."""
        self._unseen = 0.0

    def seen_position(self) -> tuple[float, float]:
        """(quantity, average) of the fills seen so far: the position read less what it
        already held of fills whose events are still to come."""
        p = self.state.position
        qty = max(0.0, p.qty - self._unseen)
        if qty <= EPS:
            return qty, 0.0
        return qty, self._seen_avg if self._unseen else p.avg_price

    async def on_liquidation(self, u: OrderUpdate) -> None:
        """The exchange closed the position by force (every open order was cancelled first).
        Recorded as a LIQUIDATION fill; then AFTER_LIQUIDATION: STOP halts (no new grid until
        a person restarts the daemon), CONTINUE starts a fresh grid at the liquidation price."""
        st = self.state
        side = Side.BUY if u.side == Side.BUY else Side.SELL
        o = OrderState(u.client_id, Role.LIQUIDATION, side, u.last_price, u.last_qty)
        self._record_fill(o, u)
        self._unseen = 0.0
        self.log.critical("LIQUIDATED: %s %s %s at %s (realized %.4f); every open order was cancelled by "
                          "the exchange", self.symbol, u.side, self.filters.fmt_qty(u.last_qty),
                          self.filters.fmt_price(u.last_price), u.realized_pnl)
        st.liquidated_at = u.trade_time or u.event_time
        st.orders.clear()
        self.ladder.forget_held_levels()
        st.position.reset(self.levels)
        st.position.qty, st.position.avg_price = 0.0, 0.0
        if self.config.after_liquidation == "STOP":
            self.halted = True
            self.log.critical("AFTER_LIQUIDATION=STOP: no new grid until the daemon is restarted by hand")
        else:
            self.log.warning("AFTER_LIQUIDATION=CONTINUE: a new grid at %s", self.filters.fmt_price(u.last_price))
            await self.ladder.reset_grid_after_full_close(u.last_price, Role.LIQUIDATION)
        self.changed()

    async def on_tp_filled(self, u: OrderUpdate) -> None:
        if self.log_info:
            self.info("tp_fill", price=u.last_price, pnl=u.realized_pnl)
        await self.ladder.reset_grid_after_full_close(u.last_price, Role.TP)

    async def on_sl_filled(self, u: OrderUpdate) -> None:
        if self.log_info:
            self.info("sl_fill", price=u.last_price, pnl=u.realized_pnl)
        if self.state.account_stopped_at:
            self._flat_after_account_stop()       # the account stop's close: no new grid
            return
        await self.ladder.reset_grid_after_full_close(u.last_price, Role.SL)

    # ------------------------------------------------------------------ the account stop
    async def stop_for_account(self, at_ms: int, why: str) -> None:
        """ACCOUNT_STOP_DRAWDOWN fired: see `stop_for_account` below."""
        await stop_for_account(self, at_ms, why)

    def _flat_after_account_stop(self) -> None:
        flat_after_account_stop(self)

    async def on_be_filled(self, u: OrderUpdate) -> None:
        if self.log_info:
            self.info("be_fill", price=u.last_price, pnl=u.realized_pnl)
        await self.ladder.reset_grid_after_partial_close(u.last_price)

    # ------------------------------------------------------------------ exits
    async def _replace_exit(self, role: Role, price: float, qty: float) -> bool:
        """Keep exactly one exit order of `role` at price × qty; drop every other exit."""
        keep = None
        for o in list(self.state.orders.values()):
            if o.role not in (Role.TP, Role.BE):
                continue
            if keep is None and _rests_as(o, role, price, qty, self.filters):
                keep = o
                continue
            await self.venue.cancel_order(o.client_id)
            self.state.orders.pop(o.client_id, None)
        if keep is not None:
            return True
        if qty <= EPS:
            return False
        order = OrderState(self._next_exit_id(role), role.value, self.exit_side, price, qty)
        register(self.state, order)
        self.changed()
        ack = await self.venue.place_limit_close(order.client_id, self.exit_side, price, qty)
        acknowledge(self.state, order, ack)
        return ack is not None

    async def set_tp_order(self) -> None:
        """The take-profit for the whole position read from the exchange."""
        await self.sync_position()
        p = self.state.position
        if self.log_info:
            self.info("tp_prepare", qty=p.qty, avg=p.avg_price)
        price = self.filters.price_toward_profit(p.avg_price * (1.0 + self.s * self.config.tp_pct), self.s)
        qty = self.filters.qty_down(p.qty)
        if await self._replace_exit(Role.TP, price, qty):
            if self.log_info:
                self.info("tp_set", price=price, qty=qty)

    async def _set_be_order(self) -> None:
        await self.sync_position()
        p = self.state.position
        q1 = p.level_filled[0]
        be_qty = self.filters.qty_down(p.qty - q1)
        if self.log_info:
            self.info("be_prepare", qty=p.qty, q1=q1, be_qty=be_qty)
        price = self.filters.price_toward_profit(p.avg_price * (1.0 + self.s * self.config.be_pct), self.s)
        if await self._replace_exit(Role.BE, price, be_qty):
            if self.log_info:
                self.info("be_set", price=price, qty=be_qty, q1=q1)

    async def on_stop_failed(self, client_id: str) -> str:
        """Our stop triggered and failed (ALGO_UPDATE REJECTED / EXPIRED): the position may be
        unprotected.  Read the position; if it still wants a stop, place it again at once, and
        if the price is already beyond it (the exchange says it would trigger), close at market
        as the stop would have.  Returns what was done: "" (not our stop), "flat",
        "not needed", "replaced" or "closed at market"."""
        o = self.state.orders.get(client_id)
        if o is None or o.role != Role.SL:
            return ""
        del self.state.orders[client_id]
        self.changed()
        await self.sync_position()
        if self.state.position.qty <= EPS:
            return "flat"
        if not self.wants_stop() or self._orders_with_role(Role.SL):
            return "not needed"
        return "closed at market" if await self._set_stop_order() else "replaced"

    async def _set_stop_order(self) -> bool:
        """Place the stop; True when it would have triggered at once and the position was
        closed at market instead."""
        trigger = self.stop_price()
        order = OrderState(self._next_exit_id(Role.SL), Role.SL.value, self.exit_side, trigger, 0.0)
        register(self.state, order)
        self.changed()
        try:
            ack = await self.venue.set_stop_loss(order.client_id, self.exit_side, trigger,
                                                 self.config.sl_working_type)
            acknowledge(self.state, order, ack)
            if self.log_info:
                self.info("sl_set", price=trigger)
        except ExchangeError as e:
            if e.code != ERR_WOULD_TRIGGER:
                self.state.orders.pop(order.client_id, None)
                raise
            # The stop would fire at once: do what it would have done.
            if self.log_info:
                self.info("sl_market")
            for attempt in range(MARKET_CLOSE_TRIES):
                await self.sync_position()
                if self.state.position.qty <= EPS:
                    self.state.orders.pop(order.client_id, None)     # nothing left to protect
                    return True
                try:
                    ack = await self.venue.place_market_close(order.client_id, self.exit_side,
                                                              self.state.position.qty)
                except ExchangeError as e2:
                    # -2022: an exit filled between the position read and the close; read again.
                    if e2.code != ERR_REDUCE_ONLY_REJECTED or attempt == MARKET_CLOSE_TRIES - 1:
                        self.state.orders.pop(order.client_id, None)
                        raise
                    continue
                acknowledge(self.state, order, ack)
                return True
        return False

    # ------------------------------------------------------------------ what should rest
    def desired_orders(self) -> list[Intent]:
        """The one rule for what should rest now (SPEC §3.2), from the state alone: the grid's
        remaining entries (those registered and those held back), the one exit the position
        needs, and the stop.  Reactions and reconciliation both apply it."""
        st, p = self.state, self.state.position
        out = [Intent(o.role, o.level, o.price, o.qty) for o in st.orders.values() if o.is_entry]
        out += [Intent(entry_role(lvl), lvl, price, qty) for lvl, price, qty in self.ladder.pending_levels()]
        if p.qty > EPS:
            exit_ = self._wanted_exit()
            if exit_ is not None:
                out.append(exit_)
            if self.wants_stop():
                out.append(Intent(Role.SL, 0, self.stop_price(), 0.0))
        return out

    def _wanted_exit(self) -> Intent | None:
        p = self.state.position
        if p.deepest_level <= 1:
            return Intent(Role.TP, 0, self.filters.price_toward_profit(
                p.avg_price * (1.0 + self.s * self.config.tp_pct), self.s), self.filters.qty_down(p.qty))
        qty = self.filters.qty_down(p.qty - p.level_filled[0])
        if qty <= 0:
            return None         # only level 1 is left: the BE has filled (its reaction regrids)
        return Intent(Role.BE, 0, self.filters.price_toward_profit(
            p.avg_price * (1.0 + self.s * self.config.be_pct), self.s), qty)

    def wants_stop(self) -> bool:
        """The stop guards the deepest level.  When deeper levels could not be placed (below the
        minimum size, no margin, or the price already beyond them), the deepest level that
        exists has filled: protect the position now rather than never."""
        p = self.state.position
        if p.qty <= EPS or p.deepest_level == 0 or self.state.grid_center <= 0:
            return False        # (no centre: a position recovered without its grid has no stop level)
        deeper = any(o.is_entry and o.level > p.deepest_level for o in self.state.orders.values()) or \
            any(lvl > p.deepest_level for lvl, _, _ in self.ladder.pending_levels())
        return p.deepest_level >= self.levels or not deeper

    async def mend(self) -> None:
        """Apply the difference between desired_orders() and what rests.  Called by the
        reconciliation once the state's orders mirror the exchange's and its position is the
        exchange's: places what is missing, replaces an exit of the wrong role or size,
        cancels a stop nothing needs."""
        st, p = self.state, self.state.position
        if st.account_stopped_at and (p.qty > EPS or st.orders):
            # The account stop holds across restarts: whatever is open is closed again.
            await self.stop_for_account(st.account_stopped_at, "the account stop holds")
            return
        if self.halted and p.qty <= EPS:
            return          # liquidated and stopped: nothing is wanted
        if p.qty > EPS:
            if p.deepest_level == 0:
                # A position whose level was never counted (adopted, or a crash before the
                # bookkeeping): it is level 1 (TP) until a deeper level fills.
                p.deepest_level = 1
                p.level_filled[0] = p.level1_qty = p.qty
            if p.deepest_level >= 2 and not self._orders_with_role(Role.BE) and self._wanted_exit() is None:
                # Only level 1's quantity is left: the BE filled, but its reaction (cancel,
                # re-grid from level 2, TP) was cut short. Finish it.
                await self.ladder.reset_grid_after_partial_close(p.avg_price)
                return
            if st.pending_level:
                await self.ladder.place_pending_entries(p.deepest_level + 1)
            want = self._wanted_exit()
            have = [o for o in st.orders.values() if o.role in (Role.TP, Role.BE)]
            if want is not None and not (len(have) == 1 and _rests_as(have[0], want.role, want.price, want.qty, self.filters)):
                await (self.set_tp_order() if want.role == Role.TP else self._set_be_order())
            stops = self._orders_with_role(Role.SL)
            if self.wants_stop() and not stops:
                await self._set_stop_order()
            elif stops and not self.wants_stop():
                for o in stops:
                    await self.venue.cancel_algo_order(o.client_id)
                    st.orders.pop(o.client_id, None)
        elif st.grid_center > 0:
            if p.deepest_level > 0 or any(q > 0 for q in p.level_filled):
                # Flat now, but the state remembered fills: the exit happened while away.
                p.reset(self.levels)
                for o in [o for o in st.orders.values() if not o.is_entry]:
                    await self._cancel_any(o)
                    st.orders.pop(o.client_id, None)
            if st.pending_level:
                await self.ladder.place_pending_entries(1)
            elif not any(o.is_entry for o in st.orders.values()):
                await self.venue.cancel_all_orders()
                st.orders.clear()
                await self.ladder.setup_grid_orders()
        self.changed()

    async def _cancel_any(self, o: OrderState) -> None:
        if o.role == Role.SL:
            await self.venue.cancel_algo_order(o.client_id)
        else:
            await self.venue.cancel_order(o.client_id)


# ---------------------------------------------------------------------- the account stop
async def stop_for_account(strategy: GridMartingaleStrategy, at_ms: int, why: str) -> None:
    """ACCOUNT_STOP_DRAWDOWN: the account's equity fell below its stop level.  Every order
    of this symbol is cancelled, the position closed at market (a reduce-only order with
    an SL client id, so its fill is recorded as the stop's), and no grid is placed again
    until a person clears the stop.  Idempotent: called again (another daemon's stop,
    a restart) it closes whatever is still open."""
    st = strategy.state
    if not st.account_stopped_at:
        st.account_stopped_at = at_ms
        strategy.log.critical("ACCOUNT STOP: %s: every order cancelled, the position closed at market; no new "
                          "grid until the stop is cleared", why)
    strategy.halted = True
    for o in list(st.orders.values()):
        try:
            await strategy._cancel_any(o)
        except ExchangeError:
            pass            # already gone: the exchange's truth is read below
        st.orders.pop(o.client_id, None)
    await strategy.venue.cancel_all_orders()
    strategy.ladder.forget_held_levels()
    st.pending_level = 0
    await strategy.sync_position()
    for attempt in range(MARKET_CLOSE_TRIES):
        if st.position.qty <= EPS:
            break
        order = OrderState(strategy._next_exit_id(Role.SL), Role.SL.value, strategy.exit_side, 0.0, 0.0)
        register(st, order)
        try:
            ack = await strategy.venue.place_market_close(order.client_id, strategy.exit_side, st.position.qty)
        except ExchangeError as e:
            st.orders.pop(order.client_id, None)
            # -2022: an exit filled between the read and the close; read again.
            if e.code != ERR_REDUCE_ONLY_REJECTED or attempt == MARKET_CLOSE_TRIES - 1:
                raise
            await strategy.sync_position()
            continue
        acknowledge(st, order, ack)
        break
    if st.position.qty <= EPS:
        flat_after_account_stop(strategy)
    strategy.changed()


def flat_after_account_stop(strategy: GridMartingaleStrategy) -> None:
    st = strategy.state
    if st.position.qty <= EPS:
        st.position.reset(strategy.levels)
        st.position.qty, st.position.avg_price = 0.0, 0.0
        for cid in [c for c, o in st.orders.items() if not o.is_entry]:
            st.orders.pop(cid, None)
    strategy.changed()
