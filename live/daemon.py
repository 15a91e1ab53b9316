"""The per-symbol daemon shared by trade_btc.py and trade_eth.py (live/launcher.py reads the
command line, keys, lock and logging, then runs it; the demo runs it the same way).

Start-up: one-way mode, cross margin, leverage, capital
(CAPITAL_RATIO × wallet at first start, persisted), restore the state file,
reconcile with the exchange; then three tasks, as the seed runs them:

- websocket_handler: market stream (kline_1m) and user stream; reconnects
  with backoff and reconciles after every reconnect;
- position_sync_task: reconcile every 30 s;
- config_reload_task: re-read the config every 60 s (a bad file keeps the
  last good one and is logged once).

The exchange is the truth and the state file a cache: reconciliation (live/reconciler.py)
recovers missed fills from userTrades (recorded once), cancels orphan orders
of the symbol and re-places missing protective orders.

Test hook: GM_CRASH_AFTER=<event>:<n> makes the process die at the n-th
"place" (an order request answered, before the state save), "fill" (a fill
in the CSV, before its exit order) or "funding" (a settlement in its CSV); see
binance_library.crash_point.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from binance_library import BinanceFuturesClient, crash_point, order_update_from_binance, user_socket
from config import ConfigError, GridConfig, load_config
from errors import ExchangeError, Fatal, Temporary
from exchange_api import BinanceError, OrderStatus, OrderUpdate, Role, fill_role
from grid_strategy import FillRecord, GridMartingaleStrategy
from market.brackets import SHIPPED as SHIPPED_BRACKETS, BracketError, parse_binance
from paths import Paths, short_name
from messages import korean
from live.reconciler import Reconciler, role_of
from ops.history import PriceHistory
from ops.records import FundingRecorder, TradeRecorder
from state_manager import StateManager
from live.stream_dispatch import StreamDispatcher
from ops.events import ACCOUNT_STOP, BE, DEEPEST, LIQUIDATION, SL, TP, Event, EventBus
from live.account_guard import AccountGuard, snapshot_for_state, stop_reason
from ops.metrics import DaemonMetrics
from ops.services import UNREACHABLE_AFTER_S, Connectivity, DayWatch

SYNC_INTERVAL_S = 30.0
FILL_EVENTS: dict[str, str] = {Role.TP: TP, Role.BE: BE, Role.SL: SL}    # a fill's role → its event
FUNDING_CHECK_S = 600.0          # the income history is read at least this often (and on each FUNDING_FEE)
# Refusals of one order (not of the account or the symbol): the daemon runs on and retries.
E = BinanceError
ORDER_REJECTIONS = {E.BAD_PRECISION, E.UNKNOWN_ORDER, E.NO_SUCH_ORDER, E.MARGIN_NOT_SUFFICIENT,
                    E.ORDER_WOULD_IMMEDIATELY_TRIGGER, E.REDUCE_ONLY_REJECT, E.MIN_NOTIONAL,
                    E.PRICE_NOT_INCREASED_BY_TICK_SIZE, E.QTY_NOT_INCREASED_BY_STEP_SIZE, E.QTY_LESS_THAN_MIN_QTY,
                    E.CLIENT_ORDER_ID_DUPLICATED, E.MAX_OPEN_ORDER_EXCEEDED}
CONFIG_INTERVAL_S = 60.0
LISTEN_KEY_KEEPALIVE_S = 30 * 60
STOP_GRACE_S = 5.0
# A stream that came up and stayed up this long was healthy: its drop is a fresh event and the
# reconnect waits 1 s again; only attempts that fail sooner double the wait (up to 60 s).  At
# most one pair of connections every 3 s even on a flapping link (Binance: "IPs that are
# repeatedly disconnected may be banned", USDⓈ-M Websocket Market Streams).
STREAM_HEALTHY_S = 2.0
HELD_RECONCILE_S = 1.0           # levels held for a raced fill: reconcile if its event is this late
# Binance pushes a kline update every 250 ms ("Update Speed: 250ms", Kline/Candlestick Streams);
# a market stream that is connected and brings nothing this long is withheld, not quiet (a
# route change silences old paths without closing them): reconnect and say so.
MARKET_SILENCE_S = 90.0


@dataclass(frozen=True)
class DaemonSettings:
    """What a daemon is started with, but the API keys (kept out of anything with a repr)."""

    symbol: str
    config_path: Path
    paths: Paths
    base_url: str | None = None         # None: Binance's mainnet (or the testnet)
    ws_url: str | None = None
    testnet: bool = False
    demo: bool = False                  # against the embedded exchange (trade.py --demo)
    short: str | None = None            # file-name short form (btc); None: from the symbol
    capital_override: float | None = None
    cancel_on_exit: bool = False
    sync_interval: float = SYNC_INTERVAL_S
    config_interval: float = CONFIG_INTERVAL_S
    market_silence_s: float = MARKET_SILENCE_S
    clear_account_stop: bool = False    # a person's decision: the account stop no longer holds


class Daemon:
    def __init__(self, settings: DaemonSettings, api_key: str, api_secret: str):
        self.settings = settings
        self.symbol = settings.symbol
        self.short = settings.short or short_name(settings.symbol)
        self.demo = settings.demo
        self.config_path = config_path = settings.config_path
        self.paths = paths = settings.paths
        self.log = logging.getLogger("grid")
        self.venue = BinanceFuturesClient(api_key, api_secret, settings.symbol, base_url=settings.base_url,
                                          ws_url=settings.ws_url, testnet=settings.testnet, logger=self.log)
        self.capital_override = settings.capital_override
        self.cancel_on_exit = settings.cancel_on_exit
        self.sync_interval = settings.sync_interval
        self.config_interval = settings.config_interval
        self.market_silence_s = settings.market_silence_s
        self.state_mgr = StateManager(paths.state(self.short))
        self.recorder = TradeRecorder(paths.trades(self.short), self.log)
        self.funding = FundingRecorder(paths.funding(self.short), self.log)
        self._funding_checked = 0.0         # monotonic time of the last income-history read
        self.config: GridConfig = load_config(config_path)
        self._config_mtime = config_path.stat().st_mtime
        self._config_error_logged: str | None = None
        # Built by start() from the state file and the exchange's truth; `started` says so.
        self.strategy: GridMartingaleStrategy
        self.reconciler: Reconciler
        self.started = False
        self.lock = asyncio.Lock()          # one reaction at a time: events, sync, reload
        self.stopping = asyncio.Event()
        self.reconnects = 0
        self.last_price = 0.0
        self.dispatcher: StreamDispatcher | None = None
        self.stream_messages = 0            # taken from the current pair of streams (lockstep_view)
        self._streams_up_at: float | None = None   # when the current pair came up (None: not up)
        self._held_check = False
        # What the services read (ops/services.py): the event stream, the wallet, event times.
        self.bus = EventBus()
        self.account_guard = AccountGuard(paths.account(), settings.symbol, paths.account_history())
        self.prices = PriceHistory(paths.prices(self.short), settings.symbol)   # the dashboard's candles
        self.wallet = 0.0
        self.last_market_at = 0.0
        self.last_user_at = 0.0
        self.connectivity = Connectivity(self, UNREACHABLE_AFTER_S)
        self.market_day = DayWatch()        # the daily summary: when the market's clock passes 00:00 UTC
        self.metrics = DaemonMetrics(self)

    # ------------------------------------------------------------------ start-up
    async def start(self) -> None:
        await self.venue.connect()
        await self.venue.prepare_account(self.config.leverage)
        mode = await self.venue.account_mode()
        if mode.collateral != self.venue.margin_asset:
            self.log.warning("account in %s: capital and margin follow it, not the %s row",
                             mode.describe(), self.venue.margin_asset)
        self.wallet = await self.venue.wallet_balance()
        state = self.state_mgr.load()
        if state is not None and state.symbol != self.symbol:
            aside = self.state_mgr.set_aside()
            self.log.warning("state file belongs to %s, not %s; kept as %s, recovering from the exchange",
                             state.symbol, self.symbol, aside.name)
            state = None
        if state is None:
            capital = self.capital_override
            if capital is None:
                capital = self.config.capital_ratio * self.wallet
            if capital <= 0:
                raise Fatal(f"{self.symbol}: no {mode.collateral} balance to trade with in {mode.describe()} "
                            f"(capital {capital:.2f})")
            self.log.info("운용 자본: $%.2f" if korean() else "Capital: $%.2f", capital)
        self.strategy = GridMartingaleStrategy(self.config, self.venue, state=state,
                                               capital=None if state else capital, logger=self.log,
                                               on_fill=self._on_fill, on_change=self._save)
        self.strategy.state.demo = self.demo
        if self.settings.clear_account_stop:
            self.account_guard.clear_for(self.strategy, self.log)
        self.reconciler = Reconciler(self.symbol, self.venue, self.strategy, self.recorder, self.log,
                                     save=self._save, on_fill=self._on_fill, on_liquidation=self._on_liquidation)
        self.started = True
        if state is None:
            self._save()
        elif state.liquidated_at:
            when = datetime.fromtimestamp(state.liquidated_at / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            self.log.warning("the last liquidation was at %s; started again by hand, trading resumes", when)
        self._warn_if_capital_small()
        await self._read_brackets()
        await self._recover_funding()
        try:
            await self.reconcile(startup=True)
        except ExchangeError as e:
            # An order the mend tried was refused (margin, reduce-only, filters...): the
            # market moved under it. That is no reason not to run; the next sync mends again.
            # Keys, permissions and symbol errors come earlier and still stop the start.
            if e.code not in ORDER_REJECTIONS:
                raise
            self.log.warning("start-up reconciliation: an order was refused (%s); the next sync retries", e)
        try:
            await self.check_account()
        except (Temporary, ExchangeError) as e:
            self.log.warning("account read failed (%s); the next sync reads it", e)

    def _warn_if_capital_small(self) -> None:
        st = self.strategy.state
        price = st.grid_center or self.last_price
        if not price:
            return
        for level in range(1, self.config.max_entry_level + 1):
            p = self.strategy.level_price(price, level)
            q = self.strategy.level_qty(p, level)
            if not self.venue.filters.tradable(p, q):
                self.log.warning("capital %.2f is too small for level %d (%s × %s below the minimum order)",
                                 st.capital, level, self.venue.filters.fmt_qty(q), self.venue.filters.fmt_price(p))

    def _save(self) -> None:
        if self.started and self.reconciler.replaying:
            return          # saved once the replay is done: a crash mid-replay replays again
        try:
            self.state_mgr.save(self.strategy.state)
        except OSError as e:
            self.log.error("state file not writable: %s", e.strerror or e)

    async def _on_algo_update(self, msg: dict[str, Any]) -> None:
        """ALGO_UPDATE: the link from a triggered stop to its order, and a stop that failed when
        it triggered (X=REJECTED / EXPIRED with the reason in `rm`: since 2025-12-15 the only
        report of it, change-log 2025-12-10): the position is unprotected, so act at once."""
        o = msg.get("o") or {}
        if o.get("s") != self.symbol:
            return
        self.reconciler.note_algo_update(o)
        caid, status = o.get("caid") or "", o.get("X")
        if status not in (OrderStatus.REJECTED, OrderStatus.EXPIRED) or caid not in self.strategy.state.orders:
            return
        async with self.lock:
            try:
                done = await self.strategy.on_stop_failed(caid)
            except (ExchangeError, Temporary) as e:
                done = f"re-placing it failed ({e}); the next sync tries again"
                self._reconcile_soon()
            self._save()
        if done:
            self.log.error("stop %s %s when it triggered (%s): %s", caid, status, o.get("rm") or "no reason given",
                           done)

    def _note_wallet(self, msg: dict[str, Any]) -> None:
        """The wallet from an ACCOUNT_UPDATE row of the collateral asset.  Multi-assets mode has
        no one row for it (the USD total is read at the next sync)."""
        mode = self.venue.mode
        asset = mode.collateral if mode else self.venue.margin_asset
        for b in (msg.get("a") or {}).get("B") or []:
            if b.get("a") == asset:
                try:
                    self.wallet = float(b.get("wb"))
                except (TypeError, ValueError):
                    pass

    def _on_fill(self, r: FillRecord) -> None:
        f = self.venue.filters
        self.recorder.record(r, f.fmt_price, f.fmt_qty)      # a row written before a crash is not written again
        crash_point("fill")                                  # test hook (GM_CRASH_AFTER), no-op otherwise
        # The state remembers the newest fill the strategy has acted on; it is
        # saved with the strategy's reaction, so a fill recorded in the CSV but
        # not yet acted on when the process died is replayed at restart.
        if r.trade_id > self.strategy.state.last_trade_id:
            self.strategy.state.last_trade_id = r.trade_id
        self._publish_fill(r)

    def _publish_fill(self, r: FillRecord) -> None:
        """Fills the services care about, as events (a dict and a queue put: no I/O here)."""
        self.metrics.fills.labels(self.symbol, r.role).inc()
        kind = FILL_EVENTS.get(r.role)
        if kind is None and r.role == fill_role(Role.ENTRY, self.config.max_entry_level):
            kind = DEEPEST
        if kind is None:
            return
        f = self.venue.filters
        self.bus.publish(Event(kind, self.symbol, {
            "price_text": f.fmt_price(r.price), "qty_text": f.fmt_qty(r.qty), "pnl": r.realized_pnl - r.fee,
            "level": self.config.max_entry_level, "avg_text": f.fmt_price(r.avg_price_after)}, r.time_ms))

    async def _on_liquidation(self, u: OrderUpdate) -> None:
        """The exchange liquidated the position: recorded (CSV row of role LIQUIDATION), logged
        loudly, then AFTER_LIQUIDATION (the strategy: STOP halts until a restart by hand)."""
        self.log.critical("=" * 72)
        self.log.critical("%s LIQUIDATED by the exchange at %s (%s %s); wallet after it is the exchange's",
                          self.symbol, self.venue.filters.fmt_price(u.last_price), u.side,
                          self.venue.filters.fmt_qty(u.last_qty))
        self.log.critical("=" * 72)
        f = self.venue.filters
        self.bus.publish(Event(LIQUIDATION, self.symbol, {"price_text": f.fmt_price(u.last_price),
                                                          "qty_text": f.fmt_qty(u.last_qty)}))
        await self.strategy.on_order_update(u)
        self._save()
        asyncio.get_running_loop().call_later(0.5, self._reconcile_soon)

    async def _read_brackets(self) -> None:
        """The account's own leverage brackets (GET /fapi/v1/leverageBracket): saved as
        state/brackets_<sym>.json for `backtest.py --brackets`, and compared with the table the
        backtest ships, so a stale shipped table is said at start."""
        try:
            data = await self.venue.leverage_brackets()
            live = parse_binance(data, self.symbol, "GET /fapi/v1/leverageBracket")
        except (ExchangeError, Temporary, OSError, asyncio.TimeoutError, BracketError) as e:
            self.log.warning("leverage brackets unreadable (%s); status and liquidation come from the exchange", e)
            return
        path = self.paths.brackets(self.short)
        try:
            path.write_text(json.dumps([live.to_binance()], indent=1) + "\n", encoding="utf-8")
        except OSError as e:
            self.log.warning("cannot save %s: %s", path, e.strerror or e)
        t1 = live.tiers[0]
        self.log.info("leverage brackets: %d tiers, up to %s notional at %dx with maintenance %.2f %%",
                      len(live.tiers), f"{t1.cap:,.0f}", t1.max_leverage, t1.mmr * 100)
        shipped = SHIPPED_BRACKETS.get(self.symbol)
        if shipped is not None and shipped.tiers != live.tiers:
            self.log.warning("the exchange's leverage brackets differ from the table backtests ship (%s): "
                             "backtest with --brackets %s", shipped.source, path)

    # ------------------------------------------------------------------ funding
    async def _recover_funding(self) -> int:
        """Write the funding settlements of this symbol the CSV does not hold yet, from the
        exchange's income history (after a restart, a missed event, or any downtime); each
        one is logged once.  The CSV is the one record: the total paid shown anywhere
        (metrics, the daily summary, status, the dashboard) is summed from it.  Returns how
        many were new."""
        self._funding_checked = time.monotonic()
        start = self.funding.last_time or None
        new = 0
        try:
            while True:
                page = await self.venue.income_history("FUNDING_FEE", start_ms=start, limit=1000)
                for rec in sorted(page, key=lambda r: (int(r["time"]), int(r["tranId"]))):
                    if self.funding.record(rec):
                        new += 1
                        self._log_funding(rec)
                        crash_point("funding")          # test hook: where the state used to be saved
                if len(page) < 1000:
                    break
                start = max(int(r["time"]) for r in page)
        except (ExchangeError, Temporary, OSError, asyncio.TimeoutError) as e:
            self.log.warning("funding history unreadable (%s); read again at the next sync", e)
        return new

    def _log_funding(self, rec: dict[str, Any]) -> None:
        income = float(rec["income"])
        when = datetime.fromtimestamp(int(rec["time"]) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.log.info(("펀딩비 %s: %+.6f %s (누적 지불 %.6f)" if korean() else
                       "Funding fee %s: %+.6f %s (paid in total %.6f)"),
                      when, income, rec.get("asset", "USDC"), self.funding.paid)

    # ------------------------------------------------------------------ reconciliation
    async def reconcile(self, startup: bool = False) -> None:
        """Make the exchange and the strategy agree (live/reconciler.py), one reaction at a time."""
        async with self.lock:
            await self.reconciler.run(startup)

    # ------------------------------------------------------------------ tasks
    async def run(self) -> None:
        tasks: list[asyncio.Task[Any]] = [
                 asyncio.create_task(self.websocket_handler(), name="websocket_handler"),
                 asyncio.create_task(self.position_sync_task(), name="position_sync_task"),
                 asyncio.create_task(self.config_reload_task(), name="config_reload_task")]
        stop = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        # A socket library that does not honour cancellation must not keep the
        # daemon from stopping: give the tasks a bounded time to unwind.
        _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        if stuck:
            self.log.warning("stopping without waiting for: %s", ", ".join(t.get_name() for t in stuck))
        for t in done:
            failure = None if t is stop else t.exception()
            if failure is not None:
                raise failure

    async def shutdown(self) -> None:
        if self.cancel_on_exit and self.venue.client is not None:
            try:
                await self.venue.cancel_all_orders()
                self.strategy.state.orders.clear()
                self._save()
                self.log.info("종료: 모든 주문 취소" if korean() else "Exit: all orders cancelled")
            except Exception as e:   # noqa: BLE001 - best effort on the way out
                self.log.error("cancel on exit failed: %s", e)
        await self.venue.close()

    async def position_sync_task(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.sync_interval)
            # Close to the minute's request weight, a routine sync gives way to the reactions
            # to fills, which need the budget most; never for longer than SYNC_INTERVAL_S.
            if self.venue.weight_pressed() and time.monotonic() - last < SYNC_INTERVAL_S:
                continue
            last = time.monotonic()
            try:
                await self.reconcile()
                await self.check_account()
                if self.strategy.leverage != self.venue.leverage:
                    async with self.lock:
                        await self.apply_leverage()      # a change that waited for flat
                if self.venue.mode is not None and self.venue.mode.multi_assets:
                    self.wallet = await self.venue.wallet_balance()     # no one row of it streams
                if time.monotonic() - self._funding_checked >= FUNDING_CHECK_S:
                    await self._recover_funding()
                self.connectivity.mark_up("exchange")
            except (Temporary, ExchangeError, OSError, asyncio.TimeoutError) as e:
                # Temporary includes a position that stayed unreadable after its retries: next time.
                self.log.warning("position sync failed: %s", e)
                if not isinstance(e, ExchangeError):
                    self.connectivity.mark_down("exchange", str(e)[:120] or type(e).__name__)

    async def check_account(self) -> None:
        """Read the account's margin, merge it into the account's shared record (peak equity,
        the stop), keep it in the state for status and the dashboard, and stop this symbol
        when the account stop has fired (here or in another daemon of the account)."""
        snap = await self.venue.account_snapshot()
        now = int(time.time() * 1000)
        verdict = self.account_guard.observe(snap, self.config.account_stop_drawdown, now)
        st = self.strategy.state
        st.account = snapshot_for_state(snap, verdict, now)
        if verdict.stop and not (st.account_stopped_at and not st.orders and st.position.qty <= 0):
            first = not st.account_stopped_at
            async with self.lock:
                await self.strategy.stop_for_account(verdict.record.stopped_at or now,
                                                     stop_reason(snap, verdict, self.config.account_stop_drawdown))
            if first:
                self.bus.publish(Event(ACCOUNT_STOP, self.symbol, {
                    "equity": snap.equity, "level": verdict.level, "peak": verdict.record.peak_equity,
                    "by": verdict.record.stopped_by or self.symbol}))
        self._save()

    async def config_reload_task(self) -> None:
        while True:
            await asyncio.sleep(self.config_interval)
            async with self.lock:          # never in the middle of a reaction
                if self.reload_config():
                    await self.apply_leverage()

    def reload_config(self) -> bool:
        try:
            mtime = self.config_path.stat().st_mtime
            if mtime == self._config_mtime:
                return False
            cfg = load_config(self.config_path)
        except (ConfigError, OSError) as e:
            msg = str(e)
            if msg != self._config_error_logged:
                self.log.error("config reload rejected, keeping the last good config: %s", msg)
                self._config_error_logged = msg
            return False
        self._config_mtime = mtime
        self._config_error_logged = None
        self.config = cfg
        self.strategy.update_config(cfg)
        self.log.info("설정 파일 재로드: %s" if korean() else "Config reloaded: %s", self.config_path.name)
        return True

    async def apply_leverage(self) -> bool:
        """Make the exchange's leverage the config's (for the direction traded), and only while
        the position is flat (SPEC §5): sizes follow the config, so the exchange's leverage must
        too, or the margin the ladder counts on is not the margin it gets.  A change that waits
        for flat is applied by the sync that finds the position flat.  True if it was set."""
        want = self.strategy.leverage
        if want == self.venue.leverage or self.strategy.state.position.qty > 0:
            return False
        before = self.venue.leverage
        try:
            await self.venue.set_leverage(want)
        except (ExchangeError, Temporary) as e:
            self.log.error("leverage %dx could not be set (%s); still %dx on the exchange", want, e, before)
            return False
        self.log.info("leverage %dx → %dx on the exchange (config)", before, want)
        return True

    async def _on_account_config(self, msg: dict[str, Any]) -> None:
        """ACCOUNT_CONFIG_UPDATE: a leverage changed outside the daemon (the web UI, another
        program).  Said loudly, and corrected to the config's once flat."""
        ac = msg.get("ac") or {}
        if ac.get("s") != self.symbol or "l" not in ac:
            return
        got = int(ac["l"])
        self.venue.leverage = got
        want = self.strategy.leverage
        if got == want:
            return
        flat = self.strategy.state.position.qty <= 0
        self.log.error("leverage changed on the exchange to %dx, the config says %dx: %s", got, want,
                       "setting it back" if flat else "set back once the position is flat")
        if flat:
            await self.apply_leverage()

    async def websocket_handler(self) -> None:
        backoff = 1.0
        while True:
            self._streams_up_at = None
            try:
                await self._stream_once()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:   # noqa: BLE001 - any stream failure: reconnect
                self.connectivity.mark_down("stream", str(e)[:120] or type(e).__name__)
                up = self._streams_up_at
                if up is not None and time.monotonic() - up >= STREAM_HEALTHY_S:
                    backoff = 1.0   # a stream that came up and ran: a fresh drop, not a flapping venue
                self.log.warning("websocket: %s; reconnecting in %.0f s", str(e)[:200] or type(e).__name__, backoff)
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)
            try:
                await self.reconcile()
            except Exception as e:   # noqa: BLE001
                self.log.warning("reconcile after reconnect failed: %s", e)

    async def _stream_once(self) -> None:
        bsm = self.venue.socket_manager()
        sym = self.symbol.lower()
        market = bsm.futures_multiplex_socket([f"{sym}@kline_1m"], futures_type=_usdm())
        user = user_socket(bsm)         # the documented form, with an explicit `events` list
        for sock in (market, user):
            sock.TIMEOUT = 1.0      # python-binance waits this long on exit; keep shutdown quick
            # Reconnecting is ours (below, with a reconcile).  python-binance's own reconnect
            # would race its exit: a socket that reconnects while being closed sets itself
            # STREAMING again and __aexit__ then waits for its read loop forever.
            sock.MAX_RECONNECTS = 0
        self.stream_messages = 0
        async with market as ms, user as us:
            await self.reconcile()
            # A FUNDING_FEE event sent while no user stream was open (a start, a reconnect) is
            # never sent again: the income history, read once the stream is up, covers it.
            async with self.lock:
                await self._recover_funding()
            self.connectivity.mark_up("stream")
            self._streams_up_at = time.monotonic()
            self.dispatcher = StreamDispatcher(self._on_user, self._on_market)
            pumps = [asyncio.create_task(self._pump(ms, self._put_market)),
                     asyncio.create_task(self._pump(us, self.dispatcher.put_user)),
                     asyncio.create_task(self.dispatcher.run()),
                     asyncio.create_task(self._watch_market_silence())]
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()          # raises what ended the stream: the caller reconnects
            finally:
                for t in pumps:
                    t.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)

    def _put_market(self, msg: dict[str, Any]) -> None:
        self.last_market_at = time.monotonic()      # as it arrives, handled or coalesced
        self.prices.see(msg)                        # every closed candle, before ticks are coalesced
        assert self.dispatcher is not None          # made before the pumps that call this
        self.dispatcher.put_market(msg)

    async def _watch_market_silence(self) -> None:
        """End the streams (the caller reconnects) when the market stream brings nothing for
        market_silence_s while connected; logged as an ERROR, which notifies."""
        start = time.monotonic()
        while True:
            await asyncio.sleep(max(0.2, min(5.0, self.market_silence_s / 5)))
            quiet = time.monotonic() - max(start, self.last_market_at)
            if quiet >= self.market_silence_s:
                self.log.error("market stream connected but silent for %.0f s: reconnecting", quiet)
                raise ConnectionError(f"market stream silent for {quiet:.0f} s")

    async def _pump(self, socket: Any, put: Callable[[dict[str, Any]], None]) -> None:
        """Move a socket's messages to the dispatcher as they come (it decides the order)."""
        me = asyncio.current_task()
        while True:
            msg = await socket.recv()
            self.stream_messages += 1
            # python-binance's recv() waits with asyncio.wait_for, which on Python 3.11 can
            # swallow a cancellation that arrives as a message does (gh-86296): the pump
            # would then read on forever and hold up the stop. Honour the request here.
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            if not isinstance(msg, dict):
                continue
            if msg.get("e") == "error":
                raise ConnectionError(f"{msg.get('type')}: {msg.get('m')}")
            put(msg.get("data", msg) if "stream" in msg else msg)

    async def _on_market(self, msg: dict[str, Any], closed: float | None) -> None:
        """The newest kline update (and the close of the newest closed candle since the last one)."""
        price = float(msg["k"]["c"])
        self.last_price = price
        async with self.lock:
            self._see_market_time(int(msg.get("E", 0) or 0))
            if closed is not None:
                await self.strategy.on_candle_closed(closed)
            await self.strategy.on_price(price)
        self._reconcile_if_held()

    def _see_market_time(self, event_ms: int) -> None:
        """The daily summary's clock.  The day is kept in the state, so a daemon restarted
        across midnight still summarises the day that ended while it was down.  Once stopping,
        the day is left as it is: a midnight seen then would be saved with its summary lost
        (the notifier has ended), so the next start summarises it from the state instead."""
        if self.stopping.is_set():
            return
        st = self.strategy.state
        if self.market_day.day is None and st.market_day:
            self.market_day.day = st.market_day
        self.market_day.see(event_ms)
        if self.market_day.day is not None and self.market_day.day != st.market_day:
            st.market_day = self.market_day.day
            self._save()

    def lockstep_view(self) -> tuple[int, bool]:
        """(messages taken from the open streams, nothing left to act on): what the demo's
        embedded exchange waits on in lockstep, instead of guessing how long a reaction takes."""
        d = self.dispatcher
        return self.stream_messages, d is not None and d.idle() and not self.lock.locked()

    def _reconcile_if_held(self) -> None:
        """Levels held back for a raced fill: if its event does not come within a second
        (a stalled user stream), the trade history brings it."""
        st = self.strategy.state
        if (st.pending_level or st.raced) and not self._held_check:
            self._held_check = True

            def go() -> None:
                self._held_check = False
                if st.pending_level or st.raced:
                    self._reconcile_soon()
            asyncio.get_running_loop().call_later(HELD_RECONCILE_S, go)

    def _reconcile_soon(self) -> None:
        async def go() -> None:
            try:
                await self.reconcile()
            except Exception as e:   # noqa: BLE001 - the periodic sync tries again
                self.log.warning("reconcile after an unexpected fill failed: %s", e)
        self._soon = asyncio.ensure_future(go())     # kept referenced until done

    async def _on_user(self, msg: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self.last_user_at = time.monotonic()
        await self._handle_user(msg)
        if msg.get("e") == "ORDER_TRADE_UPDATE":
            self.metrics.reaction.labels(self.symbol).observe(time.perf_counter() - t0)
        self._reconcile_if_held()

    async def _handle_user(self, msg: dict[str, Any]) -> None:
        e = msg.get("e")
        if e == "ORDER_TRADE_UPDATE":
            u = order_update_from_binance(msg)
            if u.symbol != self.symbol:
                return
            async with self.lock:
                if u.is_liquidation:
                    if not self.recorder.has(self.symbol, u.trade_id):
                        await self._on_liquidation(u)
                    return
                if u.client_id not in self.strategy.state.orders:
                    # The order one of our stops placed as it triggered: linked by `ai`, its
                    # own client id is the exchange's (not promised to be the stop's).
                    stop = await self.reconciler.stop_for_order(u.order_id, u.order_type)
                    if stop is not None:
                        u = dataclasses.replace(u, client_id=stop)
                if u.is_fill and u.trade_id and u.client_id not in self.strategy.state.orders:
                    # A fill of an order the state already forgot (cancelled by us while it
                    # filled): the strategy decides what it is (forgotten_fill_level); one it
                    # does not act on still gets its CSV row, and the position is adopted by
                    # the reconcile scheduled here.
                    if self.recorder.has(self.symbol, u.trade_id):
                        return
                    if self.strategy.forgotten_fill_level(u.client_id, u.side, u.trade_id):
                        await self.strategy.on_order_update(u)
                        self._save()
                    else:
                        self._on_fill(FillRecord(
                            time_ms=u.trade_time or u.event_time, symbol=self.symbol, side=u.side,
                            role=role_of(u.client_id), price=u.last_price, qty=u.last_qty, fee=u.commission,
                            realized_pnl=u.realized_pnl, position_after=0.0, avg_price_after=0.0,
                            client_id=u.client_id, order_id=u.order_id, trade_id=u.trade_id))
                        self._save()
                        asyncio.get_running_loop().call_later(0.5, self._reconcile_soon)
                    return
                if u.is_fill and u.trade_id and u.trade_id <= self.strategy.state.last_trade_id:
                    return      # already acted on, from the trade history after a reconnect
                await self.strategy.on_order_update(u)
        elif e == "ALGO_UPDATE":
            await self._on_algo_update(msg)
        elif e == "ACCOUNT_CONFIG_UPDATE":
            async with self.lock:
                await self._on_account_config(msg)
        elif e == "ACCOUNT_UPDATE":
            self._note_wallet(msg)
        if e == "ACCOUNT_UPDATE" and (msg.get("a") or {}).get("m") == "FUNDING_FEE" \
                and (msg.get("a") or {}).get("S", self.symbol) == self.symbol:
            # Since 2026-08 the update names the symbol settled (a.S): another symbol's
            # settlement is not ours.  Without it, read this symbol's income history anyway.
            async with self.lock:
                await self._recover_funding()
        elif e == "listenKeyExpired":
            raise ConnectionError("listenKey expired")


def _usdm():
    from binance.enums import FuturesType
    return FuturesType.USD_M
