"""BinanceFuturesClient: the strategy's venue on Binance USDⓈ-M (live, testnet,
or any venue speaking the protocol — the local exchange — by base URL).

A thin async wrapper over python-binance's `AsyncClient`:

- prices and quantities leave as decimal strings rounded to the symbol's
  exchangeInfo filters (never a raw float);
- every order carries a deterministic client order id, and an "unknown
  result" (timeout, network error, 5xx / 503 "Unknown error") is settled by
  querying that id before anything is sent again, so a retry never
  duplicates an order;
- request weight is read from `X-MBX-USED-WEIGHT-1M`; a 429 backs off and a
  418 waits out the ban (Retry-After); -1021 re-syncs the clock offset;
- the stop goes through the Algo Order API (`/fapi/v1/algoOrder`).

The -2019 / -2022 retry ladders and the position re-read with retries are
inherited from `exchange_api.FuturesVenue`, shared with the simulator.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException, BinanceRequestException
from binance.ws.keepalive_websocket import KeepAliveWebsocket

from errors import ConfigurationError, RateLimited, UnknownResult, Unreachable
from exchange_api import (
    BinanceError, ENTRY_RETRY_STEP, RUNG_MARGIN, ERR_NO_SUCH_ORDER, ERR_UNKNOWN_ORDER, ExchangeError, FuturesVenue, LimitOrder, OpenOrder,
    AccountSnapshot, OPEN_STATUSES, OrderAck, OrderStatus, OrderUpdate, Position, SymbolFilters,
)

log = logging.getLogger("binance_library")

MAINNET_REST = "https://fapi.binance.com"
WEIGHT_LIMIT_1M = 2400
WEIGHT_SOFT_LIMIT = 0.8          # slow down above 80 % of the minute's weight (and order counts)
ORDER_LIMIT_10S = 300            # Binance USD-M defaults, replaced from exchangeInfo
ORDER_LIMIT_1M = 1200
UNKNOWN_RESULT_TRIES = 5
ERR_DUPLICATE_ID = BinanceError.CLIENT_ORDER_ID_DUPLICATED
BATCH_SIZE = 5
BANNED_UNTIL = re.compile(r"banned until (\d{12,})")
ORDER_WINDOW = re.compile(r"orders per (SECOND|TEN_SECONDS|MINUTE)")     # -1015's message (error-code)
MAX_BAN_WAIT_S = 3 * 24 * 3600.0


def crash_point(event: str) -> None:
    """Test hook for the crash suite (tests/chaos): with GM_CRASH_AFTER=<event>:<n> in the
    environment the process dies (os._exit(137), like SIGKILL) at the n-th <event> of its life.
    Events: "send" (an order request about to go out, its state saved), "place" (an order
    request answered, its state not yet saved), "fill" (a fill written to the CSV, its exit
    order not yet placed), "funding" (a settlement written to funding_<sym>.csv, nothing
    else done yet).  Unset: does nothing."""
    spec = os.environ.get("GM_CRASH_AFTER", "")
    name, _, n = spec.partition(":")
    if not spec or name != event:
        return
    _CRASH_COUNTS[event] = _CRASH_COUNTS.get(event, 0) + 1
    if _CRASH_COUNTS[event] >= int(n or 1):
        os._exit(137)


_CRASH_COUNTS: dict[str, int] = {}


class OrderBudget:
    """Our orders in a sliding window, kept under a share of the exchange's limit.  The
    exchange's own count, on each order's answer, tops the window up with orders this
    process did not send (an earlier life's), taken as sent just now: the safe side."""

    def __init__(self, window_s: float, limit: int) -> None:
        self.window_s, self.limit = window_s, limit
        self.times: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self.times and self.times[0] <= now - self.window_s:
            self.times.popleft()

    def seen(self, count: int, now: float) -> None:
        self._trim(now)
        self.times.extend([now] * max(0, count - len(self.times)))

    def add(self, n: int, now: float) -> None:
        self.times.extend([now] * n)

    def wait_for(self, n: int, now: float) -> float:
        """Seconds until n more orders fit under the soft share of the limit (0: now)."""
        self._trim(now)
        over = len(self.times) + n - int(self.limit * WEIGHT_SOFT_LIMIT)
        if over <= 0 or not self.times:
            return 0.0
        return max(0.01, self.times[min(over, len(self.times)) - 1] + self.window_s - now)


CREDITS_ASSET = "BNFCR"          # the EU (MiCA) credits mode's collateral


@dataclass(frozen=True)
class AccountMode:
    multi_assets: bool
    collateral: str                 # the asset whose row margins the symbol; "USD" in multi-assets mode

    def describe(self) -> str:
        if self.multi_assets:
            return "multi-assets mode (margin: every asset, valued in USD)"
        if self.collateral == CREDITS_ASSET:
            return "credits mode (margin: BNFCR)"
        return f"single-asset mode (margin: {self.collateral})"


def _client_class(base_url: str | None) -> type[AsyncClient]:
    """AsyncClient pointed at another venue by base URL (python-binance builds
    its URLs from class attributes; URLs without '{}' pass through .format)."""
    if not base_url:
        return AsyncClient
    base = base_url.rstrip("/")
    return type("VenueAsyncClient", (AsyncClient,), {"API_URL": base + "/api", "FUTURES_URL": base + "/fapi"})


def socket_manager(client: AsyncClient, ws_url: str | None) -> BinanceSocketManager:
    # A large queue: a burst of market messages while the daemon is busy
    # placing orders must not end python-binance's read loop.
    bsm = BinanceSocketManager(client, user_timeout=300, max_queue_size=5000)
    if ws_url:
        bsm.FSTREAM_URL = ws_url if ws_url.endswith("/") else ws_url + "/"
    return bsm


# What the daemon's user stream asks for.  Binance documents the private route only with an
# explicit list (Important-WebSocket-Change-Notice: /private/ws?listenKey=K&events=A/B), and a
# client library found production withheld events without one (unicorn-binance-websocket-api
# #445); python-binance opens /private/ws?listenKey=K with none.  Naming every event we use is
# right under either reading.  listenKeyExpired is named too: whether it is filtered is not said.
USER_EVENTS = ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ALGO_UPDATE", "ACCOUNT_CONFIG_UPDATE",
               "MARGIN_CALL", "listenKeyExpired")


class DocumentedUserSocket(KeepAliveWebsocket):
    """python-binance's futures user socket (listenKey kept alive, renewed on reconnect),
    opened in Binance's documented form with an explicit `events` list."""

    def _build_path(self) -> None:
        super()._build_path()                 # "?listenKey=K" with prefix "ws"
        self._path += "&events=" + "/".join(USER_EVENTS)


def user_socket(bsm: BinanceSocketManager) -> KeepAliveWebsocket:
    """The futures user-data socket at <FSTREAM>/private/ws?listenKey=K&events=…"""

    async def _no_registry(_path: str) -> None:      # not kept in bsm's table: the caller owns it
        return None

    base = bsm.FSTREAM_URL
    if bsm.demo and base == BinanceSocketManager.FSTREAM_URL.format(bsm._client.tld):
        base = bsm.FSTREAM_DEMO_URL         # the testnet, unless a URL was given
    return DocumentedUserSocket(client=bsm._client, url=base + "private/", keepalive_type="futures", prefix="ws",
                                exit_coro=_no_registry, user_timeout=bsm._user_timeout,
                                https_proxy=bsm._client.https_proxy, max_queue_size=bsm._max_queue_size,
                                **bsm.ws_kwargs)


def client_switches(testnet: bool) -> dict[str, bool]:
    """python-binance's venue switch for BINANCE_TESTNET=1: `demo`, whose hosts are the ones
    Binance's USDⓈ-M General Info page names for the testnet (REST demo-fapi.binance.com,
    streams fstream.binancefuture.com); its `testnet` switch still points REST at
    testnet.binancefuture.com, which other clients report disabled (go-binance #765)."""
    return {"demo": True} if testnet else {}


def venue_urls_from_env(base_url: str | None = None, ws_url: str | None = None) -> tuple[str | None, str | None, bool]:
    """--base-url/--ws-url win over BINANCE_BASE_URL/BINANCE_WS_URL; BINANCE_TESTNET=1 picks the testnet."""
    base_url = base_url or os.environ.get("BINANCE_BASE_URL") or None
    ws_url = ws_url or os.environ.get("BINANCE_WS_URL") or None
    testnet = os.environ.get("BINANCE_TESTNET", "").strip().lower() in ("1", "true", "yes")
    return base_url, ws_url, testnet and not base_url


def _f(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if v not in (None, "") else 0.0


class BinanceFuturesClient(FuturesVenue):
    def __init__(self, api_key: str, api_secret: str, symbol: str, *, base_url: str | None = None,
                 ws_url: str | None = None, testnet: bool = False, logger: logging.Logger | None = None):
        self.symbol = symbol.upper()
        self.base_url = base_url
        self.ws_url = ws_url
        self.testnet = testnet
        self.log = logger or log
        self._key = api_key
        self._secret = api_secret
        self.client: AsyncClient | None = None
        self.filters = SymbolFilters(self.symbol, 0.1, 0.001, 0.001, 5.0)   # replaced from exchangeInfo
        self.leverage = 20
        self.margin_asset = "USDT" if self.symbol.endswith("USDT") else "USDC"   # replaced from exchangeInfo
        self.used_weight = 0
        self.peak_weight = 0
        self.weight_limit = WEIGHT_LIMIT_1M
        # Order-count budgets per 10 s and per minute (X-MBX-ORDER-COUNT-10S / -1M).
        self.order_budgets = {"10S": OrderBudget(10.0, ORDER_LIMIT_10S), "1M": OrderBudget(60.0, ORDER_LIMIT_1M)}
        self._banned_until = 0.0
        self._lock = asyncio.Lock()
        self.mode: AccountMode | None = None     # read by account_mode()

    def __repr__(self) -> str:   # never show the keys
        return f"BinanceFuturesClient({self.symbol}, base_url={self.base_url!r}, testnet={self.testnet})"

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Create the client, read the symbol's filters, learn the clock offset."""
        cls = _client_class(self.base_url)
        try:
            # BINANCE_TESTNET=1: Binance's futures testnet as its General Info page names it
            # (REST https://demo-fapi.binance.com, streams wss://fstream.binancefuture.com), which
            # is python-binance's `demo` switch; its `testnet` switch still sends REST to
            # testnet.binancefuture.com (docs/DECISIONS.md, issue 19).
            self.client = await cls.create(self._key, self._secret, **client_switches(self.testnet))
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            raise Unreachable(f"cannot reach the exchange at {self.base_url or 'Binance'}: "
                              f"{type(e).__name__}") from None
        info = await self.call(self.api.futures_exchange_info)
        for rl in info.get("rateLimits", []):
            if rl.get("rateLimitType") == "REQUEST_WEIGHT" and rl.get("interval") == "MINUTE":
                self.weight_limit = int(rl.get("limit", WEIGHT_LIMIT_1M))
            elif rl.get("rateLimitType") == "ORDERS":
                key = f"{rl.get('intervalNum', 1)}{str(rl.get('interval', ''))[:1]}"
                if key in self.order_budgets:
                    self.order_budgets[key].limit = int(rl.get("limit", self.order_budgets[key].limit))
        sym = next((s for s in info.get("symbols", []) if s.get("symbol") == self.symbol), None)
        if sym is None:
            raise ConfigurationError(f"symbol {self.symbol} is not listed by the exchange")
        self.filters = filters_from_exchange_info(sym)
        self.margin_asset = str(sym.get("marginAsset") or sym.get("quoteAsset") or self.margin_asset)
        await self.resync_time()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close_connection()
            self.client = None

    async def resync_time(self) -> None:
        res = await self.call(self.api.futures_time)     # a 5xx here is an unknown result, not a crash
        self.api.timestamp_offset = int(res["serverTime"]) - int(time.time() * 1000)

    @property
    def api(self) -> AsyncClient:
        """The python-binance client, once connected."""
        if self.client is None:
            raise Unreachable(f"{self.symbol}: not connected to the exchange")
        return self.client

    def socket_manager(self) -> BinanceSocketManager:
        return socket_manager(self.api, self.ws_url)

    # ------------------------------------------------------------------ calls
    async def call(self, fn: Callable[..., Awaitable[Any]], **params: Any) -> Any:
        """One request with rate-limit, clock and unknown-result handling."""
        # What the request costs on the order counts (10 s, 1 min): a batch is 5 and 1.
        cost = (0, 0)
        if fn in (self.api.futures_create_order, self.api.futures_create_algo_order):
            cost = (1, 1)
        elif fn == self.api.futures_place_batch_order:
            cost = (5, 1)
        for attempt in range(4):
            await self._respect_limits(cost)
            try:
                result = await fn(**params)
                self._read_weight()
                return result
            except BinanceAPIException as e:
                self._read_weight()
                status = int(getattr(e, "status_code", 0) or 0)
                if status in (418, 429):
                    self._back_off(e, status, attempt)
                    continue
                if e.code == BinanceError.INVALID_TIMESTAMP and attempt == 0:
                    await self.resync_time()
                    continue
                # 408: the backend timed out and the request may have been executed (general info).
                if status >= 500 or status == 408 or e.code in (BinanceError.UNKNOWN, BinanceError.UNEXPECTED_RESP,
                                                                BinanceError.TIMEOUT):
                    raise UnknownResult(f"HTTP {status} {e.code}: {e.message}") from None
                if e.code in (BinanceError.BAD_API_KEY_FMT, BinanceError.REJECTED_MBX_KEY,
                              BinanceError.INVALID_SIGNATURE):
                    raise ConfigurationError(f"API key rejected by the exchange ({e.code}: {e.message})") from None
                raise ExchangeError(e.code, e.message, status) from None
            except BinanceRequestException as e:
                raise UnknownResult(f"invalid response: {str(e)[:120]}") from None
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as e:
                raise UnknownResult(f"{type(e).__name__}: {str(e)[:120]}") from None
        raise RateLimited("rate limited: gave up after repeated 429/418")

    def _read_weight(self) -> None:
        resp = getattr(self.client, "response", None)
        if resp is None:
            return
        w = resp.headers.get("X-MBX-USED-WEIGHT-1M") or resp.headers.get("x-mbx-used-weight-1m")
        if w and w.isdigit():
            self.used_weight = int(w)
            self.peak_weight = max(self.peak_weight, self.used_weight)
        for key, budget in self.order_budgets.items():
            n = resp.headers.get(f"X-MBX-ORDER-COUNT-{key}")
            if n and n.isdigit():
                budget.seen(int(n), time.monotonic())

    def _back_off(self, e: BinanceAPIException, status: int, attempt: int = 0) -> None:
        """Wait what Binance says: Retry-After if sent (USD-M does not promise it), else the end
        of a ban named in the -1003 message ("IP banned until <ms>").  Neither: a 418 waits
        60 s; a 429 with the minute's weight spent (X-MBX-USED-WEIGHT-1M at the limit) waits a
        whole minute, which is right whether Binance's window is fixed or rolling; an order-count
        429 (-1015, "... orders per TEN_SECONDS") that window; any other 429 doubles from 1 s."""
        retry_after = 0.0
        try:
            retry_after = float(e.response.headers.get("Retry-After", "0"))
        except (AttributeError, ValueError, TypeError):
            pass
        if not retry_after:
            m = BANNED_UNTIL.search(str(getattr(e, "message", "") or ""))
            if m:
                offset = getattr(self.client, "timestamp_offset", 0) or 0
                server_now = time.time() * 1000 + offset
                retry_after = min(MAX_BAN_WAIT_S, max(1.0, (int(m.group(1)) - server_now) / 1000))
        wait = retry_after or (60.0 if status == 418 else self._window_wait(e, attempt))
        self._banned_until = max(self._banned_until, time.monotonic() + wait)
        self.log.warning("rate limited (HTTP %d, code %s): pausing %.1f s", status, e.code, wait)

    def _window_wait(self, e: BinanceAPIException, attempt: int) -> float:
        headers = getattr(getattr(e, "response", None), "headers", None) or {}
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m") or ""
        if used.isdigit() and int(used) >= self.weight_limit:
            return 60.0
        m = ORDER_WINDOW.search(str(getattr(e, "message", "") or ""))
        if m:
            return {"SECOND": 1.0, "TEN_SECONDS": 10.0, "MINUTE": 60.0}.get(m.group(1), 10.0)
        return float(2 ** attempt)

    def weight_pressed(self) -> bool:
        """Above the soft share of the minute's request weight (as of the last answer)."""
        return self.used_weight > self.weight_limit * WEIGHT_SOFT_LIMIT

    async def _respect_limits(self, order_cost: tuple[int, int] = (0, 0)) -> None:
        now = time.monotonic()
        if self._banned_until > now:
            await asyncio.sleep(self._banned_until - now)
        elif self.weight_pressed():
            # Close to the minute's budget: spread the remaining requests out.
            await asyncio.sleep(min(2.0, 60.0 * (self.used_weight / self.weight_limit - WEIGHT_SOFT_LIMIT)))
        if order_cost[0]:
            # Orders have their own budgets: near one, wait for its window to move on
            # rather than run into a 429.
            budgets = list(zip(self.order_budgets.values(), order_cost))
            while True:
                now = time.monotonic()
                wait = max(b.wait_for(n, now) for b, n in budgets)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            for b, n in budgets:
                b.add(n, time.monotonic())

    # ------------------------------------------------------------------ account setup
    async def prepare_account(self, leverage: int) -> None:
        """One-way mode, cross margin, leverage (the "no need to change" codes are fine)."""
        for fn, params, ok in (
            (self.api.futures_change_position_mode, {"dualSidePosition": "false"},
             BinanceError.NO_NEED_TO_CHANGE_POSITION_SIDE),
            (self.api.futures_change_margin_type, {"symbol": self.symbol, "marginType": "CROSSED"},
             BinanceError.NO_NEED_TO_CHANGE_MARGIN_TYPE),
        ):
            try:
                await self.call(fn, **params)
            except ExchangeError as e:
                if e.code != ok:
                    raise
        await self.set_leverage(leverage)

    async def set_leverage(self, leverage: int) -> None:
        """POST /fapi/v1/leverage for this symbol (the exchange answers ACCOUNT_CONFIG_UPDATE)."""
        await self.call(self.api.futures_change_leverage, symbol=self.symbol, leverage=int(leverage))
        self.leverage = int(leverage)

    async def first_rung_to_try(self, side: str, price: float, qty: float, tries: int) -> int:
        """The rung the account's available balance affords, less RUNG_MARGIN rungs."""
        try:
            avail = await self.available_balance()
        except (ExchangeError, UnknownResult, ValueError, TypeError):
            return 1
        affordable = avail * self.leverage / price
        if affordable >= qty:
            return 1
        k = math.floor((1.0 - affordable / qty) / ENTRY_RETRY_STEP) + 1 - RUNG_MARGIN
        return max(1, min(tries, k))

    async def account_mode(self) -> AccountMode:
        """How the account margins this symbol: multi-assets mode (GET /fapi/v1/multiAssetsMargin,
        Get-Current-Multi-Assets-Mode), the EU credits mode (a BNFCR row holding the wallet,
        the symbol's own margin asset empty), or single-asset mode on the margin asset.  Read
        again at every call: a mode switched in the web UI is followed at the next start or sync."""
        multi = bool((await self.call(self.api.futures_get_multi_assets_mode)).get("multiAssetsMargin"))
        if multi:
            self.mode = AccountMode(True, "USD")
            return self.mode
        rows = {b.get("asset"): b for b in await self.call(self.api.futures_account_balance)}
        own, credits = rows.get(self.margin_asset) or {}, rows.get(CREDITS_ASSET) or {}
        if _f(own, "balance") <= 0 and _f(credits, "balance") > 0:
            self.mode = AccountMode(False, CREDITS_ASSET)
        else:
            self.mode = AccountMode(False, self.margin_asset)
        return self.mode

    async def _collateral(self) -> tuple[float, float]:
        """(wallet, available) of what margins this symbol, as the account's mode counts it.
        Single-asset mode: the margin asset's row of GET /fapi/v3/balance, not the top-level
        totals of /fapi/v2/account, which Binance counts "only for USDT asset" in that mode
        (Account-Information-V2 / -V3) while this symbol's margin is USDC.  Multi-assets mode:
        the top-level totals, which there sum every asset in USD (same pages).  Credits mode:
        the BNFCR row."""
        mode = self.mode or await self.account_mode()
        if mode.multi_assets:
            acct = await self.call(self.api.futures_account, version=3)
            return _f(acct, "totalWalletBalance"), _f(acct, "availableBalance")
        for b in await self.call(self.api.futures_account_balance):
            if b.get("asset") == mode.collateral:
                return _f(b, "balance"), _f(b, "availableBalance")
        return 0.0, 0.0

    async def available_balance(self) -> float:
        """What new orders can still use (the -2019 ladder's first rung)."""
        return (await self._collateral())[1]

    async def wallet_balance(self) -> float:
        """The wallet that margins this symbol (capital = CAPITAL_RATIO × this)."""
        return (await self._collateral())[0]

    async def account_snapshot(self) -> AccountSnapshot:
        """The whole account's wallet, equity and maintenance margin (GET /fapi/v3/account,
        Account-Information-V3): in single-asset mode the top-level totals count "only for
        USDT asset", so a USDC (or BNFCR) account's figures are its collateral's row of
        `assets` (walletBalance, marginBalance, maintMargin); in multi-assets mode the
        top-level totals, which sum every asset in USD."""
        mode = self.mode or await self.account_mode()
        acct = await self.call(self.api.futures_account, version=3)
        if mode.multi_assets:
            return AccountSnapshot(_f(acct, "totalWalletBalance"), _f(acct, "totalMarginBalance"),
                                   _f(acct, "totalMaintMargin"))
        for a in acct.get("assets") or []:
            if a.get("asset") == mode.collateral:
                return AccountSnapshot(_f(a, "walletBalance"), _f(a, "marginBalance"), _f(a, "maintMargin"))
        return AccountSnapshot(0.0, 0.0, 0.0)

    # ------------------------------------------------------------------ FuturesVenue primitives
    async def get_position(self) -> Position:
        rows = await self.call(self.api.futures_position_information, symbol=self.symbol)
        qty, entry, liq, mark = 0.0, 0.0, 0.0, 0.0
        for r in rows:
            if r.get("symbol") == self.symbol and r.get("positionSide", "BOTH") == "BOTH":
                qty, entry = _f(r, "positionAmt"), _f(r, "entryPrice")
                liq, mark = _f(r, "liquidationPrice"), _f(r, "markPrice")
        return Position(qty, entry, liq, mark)

    def _order_params(self, o: LimitOrder) -> dict[str, str]:
        f = self.filters
        # Plain strings at the boundary: python-binance writes a batch's orders with their
        # repr, and an enum's repr is not its value.
        return {"symbol": self.symbol, "side": str(o.side), "type": "LIMIT", "timeInForce": "GTX" if o.post_only else "GTC",
                "quantity": f.fmt_qty(o.qty), "price": f.fmt_price(o.price),
                "reduceOnly": "true" if o.reduce_only else "false", "newClientOrderId": o.client_id}

    @staticmethod
    def _ack(r: dict[str, Any]) -> OrderAck:
        return OrderAck(r["clientOrderId"], int(r["orderId"]), _f(r, "price"), _f(r, "origQty"),
                        r.get("status", OrderStatus.NEW))

    async def find_order(self, client_id: str) -> dict[str, Any] | None:
        """The order with this client id, or None if the exchange never had it."""
        try:
            return await self.call(self.api.futures_get_order, symbol=self.symbol,
                                    origClientOrderId=client_id)
        except ExchangeError as e:
            if e.code == ERR_NO_SUCH_ORDER:
                return None
            raise

    async def _place_once_safely(self, send: Callable[[], Awaitable[Any]], client_id: str,
                                 find: Callable[[str], Awaitable[Any]]) -> Any:
        """Send; on an unknown result look the id up before sending again."""
        for attempt in range(UNKNOWN_RESULT_TRIES):
            try:
                crash_point("send")
                r = await send()
                crash_point("place")
                return r
            except RateLimited:
                raise                       # refused, not unknown: no query, no re-send while limited
            except UnknownResult as e:
                self.log.warning("%s %s: result unknown (%s); querying by client id", self.symbol,
                                 client_id, e)
                await asyncio.sleep(min(0.2 * 2 ** attempt, 3.0))
                try:
                    existing = await find(client_id)
                except UnknownResult:
                    continue
                if existing is not None:
                    return existing
            except ExchangeError as e:
                if e.code != ERR_DUPLICATE_ID:
                    raise
                # The id is taken: an earlier send whose answer was lost (a batch answered
                # "unknown", then settled order by order) placed it. It is this order: return it
                # instead of reporting a rejection that would orphan it (and lose the level).
                existing = await find(client_id)
                if existing is None:
                    raise
                return existing
        raise UnknownResult(f"{client_id}: no definite answer after {UNKNOWN_RESULT_TRIES} tries")

    async def place_limit(self, order: LimitOrder) -> OrderAck:
        params = self._order_params(order)
        r = await self._place_once_safely(
            lambda: self.call(self.api.futures_create_order, **params), order.client_id, self.find_order)
        return self._ack(r)

    async def place_limits(self, orders: list[LimitOrder]) -> list[OrderAck | ExchangeError]:
        """The grid in batches of five (one request for a four-level grid)."""
        out: list[OrderAck | ExchangeError] = []
        for i in range(0, len(orders), BATCH_SIZE):
            chunk = orders[i:i + BATCH_SIZE]
            if len(chunk) == 1:
                try:
                    out.append(await self.place_limit(chunk[0]))
                except ExchangeError as e:
                    out.append(e)
                continue
            try:
                crash_point("send")
                rows = await self.call(self.api.futures_place_batch_order,
                                        batchOrders=[self._order_params(o) for o in chunk])
                crash_point("place")
            except RateLimited:
                raise
            except UnknownResult:
                # Settle each order on its own: query, then place what is missing.
                for o in chunk:
                    try:
                        out.append(await self.place_limit(o))
                    except ExchangeError as e:
                        out.append(e)
                continue
            for o, r in zip(chunk, rows):
                if isinstance(r, dict) and "code" in r and "orderId" not in r:
                    out.append(ExchangeError(int(r["code"]), str(r.get("msg", "")), 400))
                else:
                    out.append(self._ack(r))
        return out

    async def find_algo_order(self, client_id: str) -> dict[str, Any] | None:
        try:
            return await self.call(self.api.futures_get_algo_order, clientAlgoId=client_id)
        except ExchangeError as e:
            if e.code in (ERR_NO_SUCH_ORDER, ERR_UNKNOWN_ORDER):
                return None
            raise

    async def place_stop_close(self, client_id: str, side: str, trigger_price: float,
                               working_type: str = "CONTRACT_PRICE") -> OrderAck:
        params = {"symbol": self.symbol, "side": str(side), "type": "STOP_MARKET", "algoType": "CONDITIONAL",
                  "triggerPrice": self.filters.fmt_price(trigger_price), "closePosition": "true",
                  "workingType": working_type, "clientAlgoId": client_id}
        r = await self._place_once_safely(
            lambda: self.call(self.api.futures_create_algo_order, **params), client_id,
            self.find_algo_order)
        return OrderAck(r.get("clientAlgoId", client_id), int(r.get("algoId", 0)),
                        _f(r, "triggerPrice"), 0.0, r.get("algoStatus", OrderStatus.NEW))

    async def place_market_close(self, client_id: str, side: str, qty: float) -> OrderAck:
        params = {"symbol": self.symbol, "side": str(side), "type": "MARKET", "reduceOnly": "true",
                  "quantity": self.filters.fmt_qty(qty), "newClientOrderId": client_id}
        r = await self._place_once_safely(
            lambda: self.call(self.api.futures_create_order, **params), client_id, self.find_order)
        return self._ack(r)

    async def cancel_order(self, client_id: str) -> bool:
        try:
            await self.call(self.api.futures_cancel_order, symbol=self.symbol, origClientOrderId=client_id)
            return True
        except ExchangeError as e:
            if e.code in (ERR_UNKNOWN_ORDER, ERR_NO_SUCH_ORDER):
                return False
            raise
        except RateLimited:
            raise
        except UnknownResult:
            o = await self.find_order(client_id)
            if o is not None and o.get("status") in OPEN_STATUSES:
                return await self.cancel_order(client_id)
            return o is not None

    async def cancel_order_confirmed(self, client_id: str) -> float:
        for _ in range(UNKNOWN_RESULT_TRIES):
            try:
                r = await self.call(self.api.futures_cancel_order, symbol=self.symbol,
                                     origClientOrderId=client_id)
                return _f(r, "executedQty")
            except ExchangeError as e:
                if e.code not in (ERR_UNKNOWN_ORDER, ERR_NO_SUCH_ORDER):
                    raise
            except RateLimited:
                raise
            except UnknownResult:
                pass
            # Not open any more (filled, expired, cancelled), or the answer was lost: ask.
            o = await self.find_order(client_id)
            if o is None:
                return 0.0                      # never placed
            if o.get("status") not in OPEN_STATUSES:
                return _f(o, "executedQty")
        raise UnknownResult(f"{client_id}: cancel not confirmed after {UNKNOWN_RESULT_TRIES} tries")

    async def cancel_orders_confirmed(self, client_ids: list[str]) -> dict[str, float]:
        """The cancels go out together (one round trip for the grid, not four)."""
        done = await asyncio.gather(*(self.cancel_order_confirmed(c) for c in client_ids))
        return dict(zip(client_ids, done))

    async def cancel_algo_order(self, client_id: str) -> bool:
        try:
            await self.call(self.api.futures_cancel_algo_order, clientAlgoId=client_id)
            return True
        except ExchangeError as e:
            if e.code in (ERR_UNKNOWN_ORDER, ERR_NO_SUCH_ORDER):
                return False
            raise

    async def cancel_all_orders(self) -> None:
        # allOpenOrders may not cover algo orders (reference §7.6): cancel both.
        await self.call(self.api.futures_cancel_all_open_orders, symbol=self.symbol)
        await self.call(self.api.futures_cancel_all_algo_open_orders, symbol=self.symbol)

    async def get_open_orders(self) -> list[OpenOrder]:
        out = [OpenOrder(o["clientOrderId"], int(o["orderId"]), o["side"], _f(o, "price"),
                         _f(o, "origQty") - _f(o, "executedQty"), bool(o.get("reduceOnly")))
               for o in await self.call(self.api.futures_get_open_orders, symbol=self.symbol)]
        algos = await self.call(self.api.futures_get_open_algo_orders, symbol=self.symbol)
        out += [OpenOrder(a["clientAlgoId"], int(a["algoId"]), a["side"], _f(a, "triggerPrice"),
                          _f(a, "quantity"), True, True) for a in algos]
        return out

    async def user_trades(self, start_ms: int | None = None, from_id: int | None = None,
                          limit: int = 1000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"symbol": self.symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        elif start_ms is not None:
            params["startTime"] = start_ms
        return await self.call(self.api.futures_account_trades, **params)

    async def income_history(self, income_type: str, start_ms: int | None = None,
                             limit: int = 1000) -> list[dict[str, Any]]:
        """GET /fapi/v1/income of this symbol, oldest first (no startTime: the last 7 days)."""
        params: dict[str, Any] = {"symbol": self.symbol, "incomeType": income_type, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        return await self.call(self.api.futures_income_history, **params)

    async def leverage_brackets(self) -> list[dict[str, Any]] | dict[str, Any]:
        """GET /fapi/v1/leverageBracket of this symbol (the account's own table)."""
        return await self.call(self.api.futures_leverage_bracket, symbol=self.symbol)


# ---------------------------------------------------------------------------- Binance's events, decoded


def order_update_from_binance(event: dict[str, Any]) -> OrderUpdate:
    """Parse a streamed ORDER_TRADE_UPDATE (the live path)."""
    o = event["o"]
    return OrderUpdate(
        symbol=o["s"], client_id=o["c"], order_id=int(o["i"]), side=o["S"],
        order_type=o.get("ot") or o["o"], exec_type=o["x"], status=o["X"],
        price=float(o.get("p", 0) or 0), orig_qty=float(o.get("q", 0) or 0),
        last_qty=float(o.get("l", 0) or 0), last_price=float(o.get("L", 0) or 0),
        cum_qty=float(o.get("z", 0) or 0), avg_price=float(o.get("ap", 0) or 0),
        commission=float(o.get("n", 0) or 0), realized_pnl=float(o.get("rp", 0) or 0),
        is_maker=bool(o.get("m", False)), reduce_only=bool(o.get("R", False)),
        close_position=bool(o.get("cp", False)), stop_price=float(o.get("sp", 0) or 0),
        trade_id=int(o.get("t", 0) or 0), event_time=int(event.get("E", 0)),
        trade_time=int(o.get("T", 0) or 0), commission_asset=o.get("N", "USDC") or "USDC",
    )


def filters_from_exchange_info(sym: dict[str, Any]) -> SymbolFilters:
    by_type = {f["filterType"]: f for f in sym.get("filters", [])}
    price = by_type.get("PRICE_FILTER", {})
    lot = by_type.get("LOT_SIZE", {})
    notional = by_type.get("MIN_NOTIONAL", {})
    return SymbolFilters(sym["symbol"], float(price.get("tickSize", 0.1)), float(lot.get("stepSize", 0.001)),
                         float(lot.get("minQty", lot.get("stepSize", 0.001))),
                         float(notional.get("notional", notional.get("minNotional", 5.0))))
