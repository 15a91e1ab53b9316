"""Reconciliation: the exchange is the truth, the state a cache.

Trade-history replay acts on the fills the daemon did not see (down, stream lost, raced),
each once and in order, with the orders their reactions place held back; then the open
orders and the position are read, orphans cancelled, vanished orders dropped or re-sent,
the exchange's position adopted, and what should rest (the strategy's desired_orders)
mended.  The daemon (the supervisor) calls it under its one reaction lock.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, cast

from binance_library import BinanceFuturesClient
from exchange_api import (
    ExchangeError, ExecType, FuturesVenue, IdTag, LimitOrder, OrderAck, OrderStatus, OrderUpdate, Position, Role,
    fill_role, parse_client_order_id,
)
from grid_strategy import FillRecord, GridMartingaleStrategy
from messages import korean
from ops.records import TradeRecorder

TRADE_PAGE = 1000                # userTrades' largest page


class Reconciler:
    def __init__(self, symbol: str, venue: BinanceFuturesClient, strategy: GridMartingaleStrategy,
                 recorder: TradeRecorder, log: logging.Logger, *, save: Callable[[], None],
                 on_fill: Callable[[FillRecord], None],
                 on_liquidation: Callable[[OrderUpdate], Awaitable[None]]) -> None:
        self.symbol, self.venue, self.strategy, self.recorder, self.log = symbol, venue, strategy, recorder, log
        self.save, self.on_fill, self.on_liquidation = save, on_fill, on_liquidation
        self.replaying = False          # the daemon saves the state once a replay is done, not during it
        # The order a stop placed when it triggered → the stop's clientAlgoId.  Binance links
        # them by ALGO_UPDATE `ai` and GET /fapi/v1/algoOrder `actualOrderId` (New-Algo-Order,
        # Event-Algo-Order-Update); the triggered order's own client id is not promised.
        self.stop_links: dict[int, str] = {}

    def note_algo_update(self, o: dict[str, Any]) -> None:
        """Remember an ALGO_UPDATE's link from the triggered order (`ai`) to its stop (`caid`)."""
        ai, caid = str(o.get("ai") or ""), o.get("caid")
        if ai.isdigit() and int(ai) and caid:
            self.stop_links[int(ai)] = caid
            if len(self.stop_links) > 64:                    # a month of stops: keep the newest
                del self.stop_links[next(iter(self.stop_links))]

    async def stop_for_order(self, order_id: int, order_type: str) -> str | None:
        """The client id of our stop that placed order `order_id`, or None.  From the link an
        ALGO_UPDATE brought, else (the fill came first: events arrive in any order) from the
        stops the state holds, asked by id (GET /fapi/v1/algoOrder → actualOrderId)."""
        if order_id in self.stop_links:
            return self.stop_links[order_id]
        if order_type and not order_type.startswith(("STOP", "TAKE_PROFIT")):
            return None
        for o in [o for o in self.strategy.state.orders.values() if o.role == Role.SL]:
            a = await self.venue.find_algo_order(o.client_id)
            actual = str((a or {}).get("actualOrderId") or "")
            if actual.isdigit() and int(actual) == order_id:
                self.stop_links[order_id] = o.client_id
                return o.client_id
        return None

    async def run(self, startup: bool = False) -> None:
        """Make the exchange and the strategy agree; the exchange wins."""
        self.recorder.flush()      # rows kept by a failed CSV write (full disk) go out once it is writable
        await self.recover_missed_fills(check_csv=startup)
        await self.reconcile_orders()

    async def recover_missed_fills(self, check_csv: bool = False) -> int:
        """Act on fills after the last one acted on; with check_csv (at start) also
        write the CSV rows a previous life acted on but could not write (full disk).
        Returns how many trades were new (0: the history holds nothing not acted on)."""
        st = self.strategy.state
        trades = await self._trade_history(check_csv)
        new = sum(int(t["id"]) > st.last_trade_id for t in trades)
        if not new:
            await self._replay_fills(trades)            # only rows to write, nothing to act on
            return 0
        # Missed fills are acted on in order, each against the position of the fills before
        # it, with the orders their reactions place held back: a reaction to an old fill must
        # not put an order where the market has been since (it would fill at once, beside
        # the later fills still to replay).  Held entries are sent at the end; the exits and
        # the stop the final position needs are re-placed by the reconcile that follows.
        held = HeldPlacements(self.venue, self.strategy)
        # A proxy of the venue (what it does not override goes to the real one): typed as one.
        self.strategy.venue, self.replaying = cast(FuturesVenue, held), True
        try:
            await self._replay_fills(trades)
        finally:
            self.strategy.venue, self.replaying = self.venue, False
        for c in held.ids:
            if c in st.orders and not st.orders[c].is_entry:
                del st.orders[c]
        entries = [o for c, o in st.orders.items() if c in held.ids]
        self.save()
        if entries:
            await self.strategy.place_entries(entries)
        return new

    async def _trade_history(self, check_csv: bool) -> list[dict[str, Any]]:
        """The trades after the last one acted on (at start: after the last one in the CSV, if
        that is older), paged by fromId: no 1,000-trade or 7-day window.  With no trade acted
        on yet, the exchange's last 7 days (no startTime from the local clock, which may
        disagree with the exchange's trade times)."""
        st = self.strategy.state
        last = st.last_trade_id
        if check_csv and last:
            last = min(last, self.recorder.last_id(self.symbol))
        if not last:
            return await self.venue.user_trades()
        out: list[dict[str, Any]] = []
        from_id = last + 1
        while True:
            page = await self.venue.user_trades(from_id=from_id, limit=TRADE_PAGE)
            out += page
            if len(page) < TRADE_PAGE:
                return out
            from_id = max(int(t["id"]) for t in page) + 1

    async def _replay_fills(self, trades: list[dict[str, Any]]) -> None:
        st = self.strategy.state
        by_order: dict[int, str] = {o.order_id: cid for cid, o in st.orders.items() if o.order_id}
        for t in sorted(trades, key=lambda t: int(t["id"])):
            tid = int(t["id"])
            if tid <= st.last_trade_id and self.recorder.has(self.symbol, tid):
                continue
            cid = by_order.get(int(t["orderId"]))
            if cid is None:
                try:
                    o = await self.venue.call(self.venue.api.futures_get_order, symbol=self.symbol,
                                               orderId=int(t["orderId"]))
                    cid = o.get("clientOrderId", "")
                    if cid not in st.orders:        # placed by one of our stops as it triggered?
                        cid = await self.stop_for_order(int(t["orderId"]), o.get("origType") or "") or cid
                except ExchangeError:     # the exchange does not know the order: recorded without a role
                    cid = ""
                # A failed lookup (5xx, timeout) ends this replay: taking one of our fills for a
                # stranger's would lose its reaction.  The next reconcile replays it.
            if cid.startswith("autoclose-") and tid > st.last_trade_id:
                # Liquidated while away (or while the stream was down): the same reaction.
                await self.on_liquidation(OrderUpdate(
                    symbol=self.symbol, client_id=cid, order_id=int(t["orderId"]), side=t["side"],
                    order_type="LIQUIDATION", exec_type=ExecType.CALCULATED, status=OrderStatus.FILLED,
                    price=float(t["price"]), orig_qty=float(t["qty"]), last_qty=float(t["qty"]),
                    last_price=float(t["price"]), cum_qty=float(t["qty"]), avg_price=float(t["price"]),
                    commission=float(t["commission"]), realized_pnl=float(t["realizedPnl"]), reduce_only=True,
                    trade_id=tid, event_time=int(t["time"]), trade_time=int(t["time"])))
                continue
            acts = tid > st.last_trade_id if cid in st.orders else \
                bool(self.strategy.forgotten_fill_level(cid, t["side"], tid))
            if not acts:
                # Acted on already but its row was lost, or an order the strategy does not
                # know (placed by hand, or by a lost state): record it; the position is
                # adopted below.
                self.on_fill(FillRecord(
                    time_ms=int(t["time"]), symbol=self.symbol, side=t["side"], role=role_of(cid),
                    price=float(t["price"]), qty=float(t["qty"]), fee=float(t["commission"]),
                    realized_pnl=float(t["realizedPnl"]), position_after=0.0, avg_price_after=0.0,
                    client_id=cid, order_id=int(t["orderId"]), trade_id=tid))
                continue
            self.log.info("놓친 체결 복구: %s %s @ %s" if korean() else "Recovered missed fill: %s %s @ %s",
                          cid, t["qty"], t["price"])
            o = st.orders.get(cid)
            price, qty = (o.price, o.qty) if o else (float(t["price"]), float(t["qty"]))
            filled = o is None or _order_filled(o, t)
            u = OrderUpdate(
                symbol=self.symbol, client_id=cid, order_id=int(t["orderId"]), side=t["side"], order_type="LIMIT",
                exec_type=ExecType.TRADE, status=OrderStatus.FILLED if filled else OrderStatus.PARTIALLY_FILLED,
                price=price, orig_qty=qty, last_qty=float(t["qty"]), last_price=float(t["price"]),
                cum_qty=float(t["qty"]), avg_price=float(t["price"]), commission=float(t["commission"]),
                realized_pnl=float(t["realizedPnl"]), is_maker=bool(t.get("maker")),
                reduce_only=o is not None and o.role in (Role.TP, Role.BE),
                close_position=o is not None and o.role == Role.SL,
                trade_id=tid, event_time=int(t["time"]), trade_time=int(t["time"]))
            await self.strategy.on_order_update(u)

    async def reconcile_orders(self) -> None:
        strat = self.strategy
        st = strat.state
        # Every fill so far was just recovered from the trade history: none is still to come,
        # and what the position differs by (a trade by hand) is adopted below.
        strat.all_fills_seen()
        open_orders = await self.venue.get_open_orders()
        on_exchange = {o.client_id: o for o in open_orders}
        known = set(st.orders)
        orphans = [o for o in open_orders if o.client_id not in known]     # orders the state does not know
        vanished = [c for c in known if c not in on_exchange]               # known, but gone from the book
        # Orphans go first, each cancel confirmed: one that filled meanwhile is then in the
        # trade history read next, and the position read after it holds it.
        for o in orphans:
            self.log.warning("orphan order %s (%s %s) cancelled", o.client_id, o.side, o.price)
            if o.is_algo:
                await self.venue.cancel_algo_order(o.client_id)
            else:
                await self.venue.cancel_order_confirmed(o.client_id)
        # A fill between the trade-history read above and this open-orders read took its order
        # off the book: read the history again, so that the order is acted on as filled rather
        # than dropped below as vanished (its fill would then be ignored and never recorded).
        # Orders the strategy places meanwhile are not in the snapshot: only the lists above count.
        await self.recover_missed_fills()
        # The position read must hold exactly the fills acted on: a fill between the history
        # read and the position read would be adopted here and counted again by its event.
        # Read the history after the position until it brings nothing new.
        for _ in range(5):
            pos = await self.venue.get_position_info_with_retry()
            if not await self.recover_missed_fills():
                break
        st.liquidation_price, st.mark_price = pos.liquidation_price, pos.mark_price   # for status.sh
        never_sent = []
        for cid in vanished:
            saved = st.orders.get(cid)
            # An entry saved before its request went out, and never acknowledged: if the
            # exchange never had its id, the process died before sending it. Send it now (the
            # same id: were it in flight after all, the exchange refuses it as a duplicate).
            if saved is not None and saved.is_entry and not saved.order_id and await self.venue.find_order(cid) is None:
                never_sent.append(saved)
                continue
            st.orders.pop(cid, None)
        # Orders placed just before a crash, never acknowledged: learn their exchange ids.
        for cid, saved in st.orders.items():
            if not saved.order_id and cid in on_exchange:
                saved.order_id = on_exchange[cid].order_id
        if never_sent:
            self.log.warning("%d entry order(s) saved but never sent (a crash before the request); sending them",
                             len(never_sent))
            await strat.place_entries(never_sent)
        # Adopt the exchange's position.
        p = st.position
        qty = abs(pos.qty)
        if qty > 0 and (pos.qty > 0) != (strat.s > 0):
            self.log.error("exchange position %.6f is against the configured direction; leaving it alone", pos.qty)
            return
        if abs(qty - p.qty) > 1e-12 or abs(pos.entry_price - p.avg_price) > 1e-9 * max(1.0, pos.entry_price):
            self.log.info("포지션 동기화: 평단가 $%.2f → $%.2f, 수량 %.6f → %.6f" if korean() else
                          "Position sync: average $%.2f → $%.2f, quantity %.6f → %.6f",
                          p.avg_price, pos.entry_price, p.qty, qty)
            p.qty, p.avg_price = qty, pos.entry_price
            if qty > 0 and p.deepest_level == 0:
                p.deepest_level = 1
                p.level_filled[0] = p.level1_qty = qty
        # Mend the difference between what the strategy wants resting and what rests: the same
        # rule (desired_orders) the strategy's reactions follow.
        await strat.mend()
        self.save()


def _order_filled(o, t: dict[str, Any]) -> bool:
    return o.qty <= 0 or float(t["qty"]) >= o.qty - 1e-12


class HeldPlacements:
    """The venue as the strategy sees it while missed fills are replayed: cancels go out,
    new orders are only acknowledged (the state keeps them, the daemon sends or drops them
    afterwards), and the position read is that of the fills replayed so far."""

    def __init__(self, venue: BinanceFuturesClient, strategy: GridMartingaleStrategy) -> None:
        self._venue, self._strategy = venue, strategy
        self.ids: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)

    def _hold(self, client_id: str, price: float, qty: float) -> OrderAck:
        self.ids.add(client_id)
        return OrderAck(client_id, 0, price, qty)

    async def place_limits(self, orders: list[LimitOrder]) -> list[OrderAck]:
        return [self._hold(o.client_id, o.price, o.qty) for o in orders]

    async def place_limit_close(self, client_id: str, side: str, price: float, qty: float) -> OrderAck:
        return self._hold(client_id, price, qty)

    async def set_stop_loss(self, client_id: str, side: str, trigger_price: float,
                            working_type: str = "CONTRACT_PRICE") -> OrderAck:
        return self._hold(client_id, trigger_price, 0.0)

    async def cancel_order(self, client_id: str) -> bool:
        if client_id in self.ids:
            return True
        return await self._venue.cancel_order(client_id)

    async def cancel_orders_confirmed(self, client_ids: list[str]) -> dict[str, float]:
        held = {c: 0.0 for c in client_ids if c in self.ids}          # never sent: nothing filled
        sent = [c for c in client_ids if c not in self.ids]
        return {**held, **(await self._venue.cancel_orders_confirmed(sent) if sent else {})}

    async def get_position_info_with_retry(self, tries: int = 10) -> Position:
        qty, avg = self._strategy.seen_position()
        return Position(qty * self._strategy.s, avg)


def role_of(cid: str) -> str:
    """The role a trade record shows for an order known by its client id alone."""
    if cid.startswith("autoclose-"):
        return Role.LIQUIDATION
    parsed = parse_client_order_id(cid)
    if not parsed:
        return Role.EXTERNAL
    _, _, tag, n = parsed
    return fill_role(Role.ENTRY, n) if tag == IdTag.ENTRY else Role(tag.value)
