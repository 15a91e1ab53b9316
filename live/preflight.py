"""The pre-flight check a user runs before going live (issue 19):

    python trade_btc.py --check        python trade.py SOLUSDC --check        scripts/check.sh btc

Read-only against the configured venue (live Binance, or whatever --base-url / --ws-url name):
it reads the account and the symbol, validates the first entry order with Binance's order-test
endpoint (POST /fapi/v1/order/test: checked, "not submitted to matching engine"), opens the
daemon's two streams and closes them.  It never places an order and never changes a setting
(position mode, margin type, leverage, multi-assets mode are read, not set), and never prints
the API key or secret.

One line per check, `OK`, `WARN` or `FAIL` then what was found, and a summary line; exit code 0
without a FAIL, 1 with one.  WARN is what the daemon copes with (it says how); FAIL is what
stops it or makes it trade other than configured.  docs/DECISIONS.md, "The pre-flight check",
says what each check reads and why it is a WARN or a FAIL.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from binance_library import CREDITS_ASSET, AccountMode, BinanceFuturesClient, user_socket, venue_urls_from_env
from errors import ConfigurationError, ExchangeError, Fatal, Temporary
from market.brackets import BracketError, parse_binance
from config import ConfigError, GridConfig, load_config
from exchange_api import IdTag, LimitOrder, client_order_id
from grid_strategy import GridMartingaleStrategy
from paths import Paths, short_name
from state_manager import GridState

log = logging.getLogger("preflight")

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CHECK_TIMEOUT_S = 15.0          # each stream check waits this long (--check-timeout)
SKEW_WARN_MS = 500.0
SKEW_FAIL_MS = 1000.0           # Binance refuses a timestamp 1000 ms ahead of its clock
READ_ERRORS = (ExchangeError, Temporary, ConfigurationError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Check:
    status: str                 # OK, WARN or FAIL
    text: str

    def line(self) -> str:
        return f"{self.status:<6}{self.text}"


@dataclass
class Context:
    """What the checks share: the venue (connected), the config, and what earlier checks read."""

    symbol: str
    config: GridConfig
    venue: BinanceFuturesClient
    paths: Paths
    env_path: Path
    timeout: float = CHECK_TIMEOUT_S
    short: str = ""
    mode: AccountMode | None = None
    wallet: float = 0.0
    capital: float = 0.0
    price: float = 0.0
    state: GridState | None = None          # the state file as the daemon would restore it
    state_problem: str = ""                 # why it would not be restored ("": none, or no file)
    first_level: tuple[int, float, float] | None = None    # (level, price, qty) the daemon would place first
    strategy: GridMartingaleStrategy | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.short = self.short or short_name(self.symbol)


# ---------------------------------------------------------------------------- the checks


async def check_keys(ctx: Context) -> Check:
    """GET /fapi/v3/account (v2 where v3 is not served): the keys sign a request the exchange takes."""
    v, c = ctx.venue, ctx.venue.api
    try:
        try:
            await v.call(c.futures_account, version=3)
        except ExchangeError as e:
            if e.http_status != 404:
                raise
            await v.call(c.futures_account, version=2)
    except ConfigurationError as e:
        return Check(FAIL, f"keys do not authenticate: {e}; check BINANCE_API_KEY and BINANCE_API_SECRET in "
                           f"{ctx.env_path}, the key's IP restriction, and that it may use futures (the other checks "
                           "need working keys: not run)")
    return Check(OK, "keys authenticate (futures account readable)")


async def check_key_permissions(ctx: Context) -> Check:
    """GET /sapi/v1/account/apiRestrictions (wallet: Get-API-Key-Permission), on the spot host
    (api.binance.com), or at --base-url when one is given."""
    v, c = ctx.venue, ctx.venue.api
    saved = c.MARGIN_API_URL
    if v.base_url:
        c.MARGIN_API_URL = v.base_url.rstrip("/") + "/sapi"
    try:
        r = await v.call(c.get_account_api_permissions)
    except READ_ERRORS as e:
        return Check(WARN, f"key restrictions not readable ({_short(e)}): check in API Management that futures "
                           "trading is on and withdrawals are off")
    finally:
        c.MARGIN_API_URL = saved
    futures, withdrawals = r.get("enableFutures"), r.get("enableWithdrawals")
    ip = "restricted to listed IPs" if r.get("ipRestrict") else "no IP restriction"
    if futures is False:
        return Check(FAIL, "key permissions: futures trading NOT enabled on this key (enableFutures false): enable "
                           "it in API Management (a key made before the futures account was opened cannot)")
    if withdrawals:
        return Check(WARN, "key permissions: WITHDRAWALS ENABLED on this key (enableWithdrawals true): whoever "
                           "gets it can move the funds out; the daemon never withdraws, turn it off in API "
                           f"Management ({ip})")
    return Check(OK, f"key permissions: futures trading on, withdrawals off ({ip})")


async def check_clock(ctx: Context) -> Check:
    """GET /fapi/v1/time against this machine's clock, at the middle of the round trip."""
    t0 = time.time() * 1000
    r = await ctx.venue.call(ctx.venue.api.futures_time)
    t1 = time.time() * 1000
    skew = float(r["serverTime"]) - (t0 + t1) / 2
    text = f"clock skew {skew:+.0f} ms (server time minus this machine's; round trip {t1 - t0:.0f} ms)"
    fix = ": sync this machine's clock (chrony / systemd-timesyncd)"
    if abs(skew) > SKEW_FAIL_MS:
        return Check(FAIL, text + fix + "; Binance refuses requests stamped 1000 ms ahead of it")
    if abs(skew) > SKEW_WARN_MS:
        return Check(WARN, text + fix)
    return Check(OK, text)


async def check_position_mode(ctx: Context) -> Check:
    """GET /fapi/v1/positionSide/dual: the daemon trades in one-way mode."""
    r = await ctx.venue.call(ctx.venue.api.futures_get_position_mode)
    if r.get("dualSidePosition") in (True, "true"):
        return Check(FAIL, "position mode is hedge (dualSidePosition true): the daemon trades one-way; it switches "
                           "the mode at start only when the account holds no position and no open order (any "
                           "symbol), else it stops: switch to one-way in the futures preferences")
    return Check(OK, "position mode one-way")


async def check_account_mode(ctx: Context) -> Check:
    """GET /fapi/v1/multiAssetsMargin and the balance rows (BinanceFuturesClient.account_mode)."""
    v = ctx.venue
    ctx.mode = mode = await v.account_mode()
    if mode.multi_assets or mode.collateral == CREDITS_ASSET:
        return Check(WARN, f"account in {mode.describe()}: the daemon supports it, capital and margin follow the "
                           f"mode (not the {v.margin_asset} row)")
    return Check(OK, f"account in {mode.describe()}")


async def check_margin_type(ctx: Context) -> Check:
    """GET /fapi/v2/positionRisk of the symbol: its marginType."""
    rows = await ctx.venue.call(ctx.venue.api.futures_position_information, symbol=ctx.symbol, version=2)
    kinds = {str(r.get("marginType", "")).lower() for r in rows if r.get("symbol") == ctx.symbol}
    if "isolated" in kinds:
        return Check(WARN, f"margin type isolated on {ctx.symbol}: the daemon sets cross at start (Binance refuses "
                           "the change while a position or an order is open: then switch it by hand)")
    if not kinds:
        return Check(WARN, f"margin type of {ctx.symbol} not reported; the daemon sets cross at start")
    return Check(OK, f"margin type cross on {ctx.symbol}")


async def check_capital(ctx: Context) -> Check:
    """The wallet that margins the symbol (mode-aware) and the capital it gives: CAPITAL_RATIO ×
    wallet at a first start, or the capital kept in the state file."""
    v = ctx.venue
    mode = ctx.mode or await v.account_mode()
    ctx.mode = mode
    ctx.wallet = wallet = await v.wallet_balance()
    ratio = ctx.config.capital_ratio
    if ctx.state is not None:
        ctx.capital = ctx.state.capital
        how = f"kept in the state file; wallet {wallet:.2f}"
    else:
        ctx.capital = ratio * wallet
        how = f"ratio {ratio:g} of wallet {wallet:.2f}"
    if wallet <= 0 or ctx.capital <= 0:
        return Check(FAIL, f"no {mode.collateral} to trade with: wallet {wallet:.2f} in {mode.describe()} "
                           f"(capital {ctx.capital:.2f}); transfer funds to the futures wallet")
    return Check(OK, f"capital {ctx.capital:.2f} {mode.collateral} ({how})")


async def check_leverage_bracket(ctx: Context) -> Check:
    """GET /fapi/v1/leverageBracket: the tier holding the ladder's full notional (every level
    filled) must allow the configured leverage."""
    cfg, v = ctx.config, ctx.venue
    if ctx.capital <= 0:
        return Check(FAIL, "leverage bracket not checked: no capital to size the ladder with")
    lev = cfg.leverage
    full = sum(cfg.entry_ratios[:cfg.max_entry_level]) * ctx.capital * lev
    try:
        table = parse_binance(await v.leverage_brackets(), ctx.symbol, "GET /fapi/v1/leverageBracket")
    except BracketError as e:
        return Check(WARN, f"leverage brackets unreadable ({e})")
    tier = table.tier(full)
    where = f"at the ladder's full notional {full:,.2f} {v.margin_asset} (bracket {tier.floor:,.0f}–{tier.cap:,.0f})"
    if tier.max_leverage < lev:
        return Check(FAIL, f"leverage {lev}x above the bracket's maximum {tier.max_leverage}x {where}: lower "
                           f"LEVERAGE_{cfg.trade_direction} to {tier.max_leverage} or less, or the capital")
    return Check(OK, f"leverage {lev}x allowed {where}: up to {tier.max_leverage}x")


async def check_levels(ctx: Context) -> Check:
    """Every level's order above minQty and minNotional at the current price (GET
    /fapi/v1/ticker/price), sized by the strategy's own level_price / level_qty."""
    v, cfg = ctx.venue, ctx.config
    if ctx.capital <= 0:
        return Check(FAIL, "levels not checked: no capital to size them with")
    ctx.price = float((await v.call(v.api.futures_symbol_ticker, symbol=ctx.symbol))["price"])
    # As the daemon builds it: from the state file when there is one (an in-memory copy: nothing is saved).
    ctx.strategy = s = GridMartingaleStrategy(cfg, v, state=ctx.state, capital=None if ctx.state else ctx.capital,
                                              logger=log)
    f = v.filters
    small = []
    for level in range(1, cfg.max_entry_level + 1):
        p = s.level_price(ctx.price, level)
        q = s.level_qty(p, level)
        if f.tradable(p, q):
            ctx.first_level = ctx.first_level or (level, p, q)
        else:
            small.append(f"level {level} {f.fmt_qty(q)} × {f.fmt_price(p)} = {p * q:.2f}")
    rules = f"min qty {f.fmt_qty(f.min_qty)}, min notional {f.min_notional:g} {v.margin_asset}"
    if small:
        return Check(FAIL, f"below the exchange's minimum order ({rules}) at capital {ctx.capital:.2f}: "
                           f"{'; '.join(small)}: the daemon would skip them; raise CAPITAL_RATIO or the wallet")
    assert ctx.first_level is not None          # no level was small, so the first was tradable
    level, p, q = ctx.first_level
    return Check(OK, f"all {cfg.max_entry_level} levels above {rules} at price {f.fmt_price(ctx.price)} "
                     f"(level {level}: {f.fmt_qty(q)} × {f.fmt_price(p)})")


async def check_test_order(ctx: Context) -> Check:
    """POST /fapi/v1/order/test with the first entry order exactly as the daemon sends it (LIMIT
    GTX, decimal strings, its client order id): validated by the exchange, not placed."""
    v, s = ctx.venue, ctx.strategy
    if ctx.first_level is None or s is None:
        return Check(FAIL, "order test not run: no level is large enough to place")
    level, p, q = ctx.first_level
    generation = (ctx.state.generation if ctx.state is not None else 0) + 1
    cid = client_order_id(ctx.symbol, generation, IdTag.ENTRY, level)
    params = v._order_params(LimitOrder(cid, s.entry_side, p, q, False, True))
    what = f"{params['side']} {params['quantity']} @ {params['price']} LIMIT GTX ({cid})"
    try:
        await v.call(v.api.futures_create_test_order, **params)
    except ExchangeError as e:
        return Check(FAIL, f"order test refused ({e.code}: {e.msg}): {what}")
    return Check(OK, f"order test passes: {what}, validated by the exchange, not placed")


async def check_market_stream(ctx: Context) -> Check:
    """The daemon's market socket (<sym>@kline_1m, multiplexed) brings a kline within the timeout."""
    from binance.enums import FuturesType
    stream = f"{ctx.symbol.lower()}@kline_1m"
    sock = ctx.venue.socket_manager().futures_multiplex_socket([stream], futures_type=FuturesType.USD_M)
    _quick(sock)
    start = time.monotonic()
    try:
        async with asyncio.timeout(ctx.timeout):
            async with sock as s:
                while True:
                    msg = await s.recv()
                    if not isinstance(msg, dict):
                        continue
                    if msg.get("e") == "error":
                        return Check(FAIL, f"market stream {stream} broke: {msg.get('type')}: {msg.get('m')}")
                    data = msg.get("data", msg)
                    if isinstance(data, dict) and data.get("e") == "kline":
                        break
    except TimeoutError:
        return Check(FAIL, f"market stream {stream}: no kline within {ctx.timeout:g} s (connected or not: a "
                           "proxy or firewall may withhold it)")
    except Exception as e:       # noqa: BLE001 - any failure to connect is the finding
        return Check(FAIL, f"market stream {stream} not opened: {_short(e)}")
    return Check(OK, f"market stream delivers klines ({stream}, first after {time.monotonic() - start:.1f} s)")


async def check_user_stream(ctx: Context) -> Check:
    """The daemon's user socket (binance_library.user_socket: a listenKey, then the documented
    route with its explicit events) connects.  The listenKey is left as it is: a running daemon
    may share it (Binance hands out the active key again)."""
    sock = user_socket(ctx.venue.socket_manager())
    _quick(sock)
    try:
        async with asyncio.timeout(ctx.timeout):
            async with sock:
                pass
    except TimeoutError:
        return Check(FAIL, f"user stream: no connection within {ctx.timeout:g} s")
    except Exception as e:       # noqa: BLE001 - a refused handshake or listenKey is the finding
        return Check(FAIL, f"user stream refused its subscription: {_short(e)}")
    return Check(OK, "user stream accepts its subscription (listenKey, documented route with explicit events)")


async def check_state_file(ctx: Context) -> Check:
    """state/state_<sym>.json against the exchange's position and open orders (read only: a file
    the daemon would set aside is left where it is)."""
    path = ctx.paths.state(ctx.short)
    if ctx.state is None and not ctx.state_problem:
        return Check(OK, f"no state file (a fresh start: {path})")
    if ctx.state is None:
        return Check(WARN, f"state file {path} {ctx.state_problem}: kept aside at start; the exchange's truth "
                           "will be used")
    st, v, f = ctx.state, ctx.venue, ctx.venue.filters
    pos = await v.get_position()
    orders = await v.get_open_orders()
    signed = st.position.qty * (1 if st.direction == "LONG" else -1)
    diffs = []
    if f.to_steps(signed) != f.to_steps(pos.qty):
        diffs.append(f"position {f.fmt_qty(signed)} in the file, {f.fmt_qty(pos.qty)} on the exchange")
    mine, theirs = set(st.orders), {o.client_id for o in orders}
    if mine - theirs:
        diffs.append(f"orders only in the file: {', '.join(sorted(mine - theirs))}")
    if theirs - mine:
        diffs.append(f"orders only on the exchange: {', '.join(sorted(theirs - mine))}")
    if diffs:
        return Check(WARN, f"state file differs from the exchange: {'; '.join(diffs)} (the daemon mends this at "
                           "start: the exchange is the truth)")
    return Check(OK, f"state file matches the exchange (position {f.fmt_qty(pos.qty)}, {len(orders)} open orders)")


# ---------------------------------------------------------------------------- running them

CHECKS: tuple[Callable[[Context], Awaitable[Check]], ...] = (
    check_key_permissions, check_clock, check_position_mode, check_account_mode, check_margin_type,
    check_capital, check_leverage_bracket, check_levels, check_test_order, check_market_stream,
    check_user_stream, check_state_file)


def read_state(ctx: Context) -> None:
    """The state file as StateManager.load would restore it, without its side effect (a file
    it cannot read is moved aside there; here it stays)."""
    path = ctx.paths.state(ctx.short)
    if not path.exists():
        return
    try:
        st = GridState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        ctx.state_problem = f"unreadable ({(str(e).splitlines() or [type(e).__name__])[0][:120]})"
        return
    if st.symbol != ctx.symbol:
        ctx.state_problem = f"belongs to {st.symbol}, not {ctx.symbol}"
        return
    ctx.state = st


async def run_checks(ctx: Context, report: Callable[[Check], None] = lambda c: None) -> list[Check]:
    """Every check in turn, each reported as it ends; after failing keys only that one (the
    rest need them).  A check whose reads fail is a FAIL naming the error."""
    read_state(ctx)
    out: list[Check] = []

    def emit(c: Check) -> None:
        out.append(c)
        report(c)

    emit(await _guarded(check_keys, ctx))
    if out[-1].status == FAIL:
        return out
    for fn in CHECKS:
        emit(await _guarded(fn, ctx))
    return out


async def _guarded(fn: Callable[[Context], Awaitable[Check]], ctx: Context) -> Check:
    try:
        return await fn(ctx)
    except (*READ_ERRORS, KeyError, ValueError, TypeError) as e:
        name = fn.__name__.removeprefix("check_").replace("_", " ")
        return Check(FAIL, f"{name}: could not be read ({_short(e)})")


async def check_venue(symbol: str, config: GridConfig, key: str, secret: str, base_url: str | None,
                      ws_url: str | None, testnet: bool, paths: Paths, env_path: Path, timeout: float,
                      report: Callable[[Check], None]) -> list[Check]:
    """Connect (exchangeInfo, server time: nothing signed yet), run the checks, close."""
    venue = BinanceFuturesClient(key, secret, symbol, base_url=base_url, ws_url=ws_url, testnet=testnet, logger=log)
    where = base_url or ("Binance's futures testnet" if testnet else "Binance")
    try:
        try:
            await venue.connect()
        except READ_ERRORS as e:
            c = Check(FAIL, f"exchange not usable at {where}: {_short(e)}")
            report(c)
            return [c]
        ctx = Context(symbol, config, venue, paths, env_path, timeout)
        return await run_checks(ctx, report)
    finally:
        await venue.close()


def summary(checks: list[Check]) -> str:
    n = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)}
    verdict = "fix the FAIL lines before going live" if n[FAIL] else "ready to start"
    return f"{len(checks)} check{'' if len(checks) == 1 else 's'}: {n[OK]} OK, {n[WARN]} WARN, {n[FAIL]} FAIL: {verdict}"


def main_check(symbol: str, args: argparse.Namespace, paths: Paths, config_path: Path,
               read_keys: Callable[..., tuple[str, str]]) -> int:
    """`--check` of trade_<sym>.py / trade.py (launcher.main hands over its parsed arguments and
    its key reader): print the checks and the summary; 0 without a FAIL, else 1."""
    logging.getLogger().addHandler(logging.NullHandler())     # library log lines stay out of the report
    secrets: list[str] = []
    checks: list[Check] = []

    def report(c: Check) -> None:
        checks.append(c)
        text = c.line()
        for s in secrets:
            text = text.replace(s, "***")
        print(text, flush=True)

    try:
        config = load_config(config_path)
        key, secret = read_keys(Path(args.env))
    except ConfigError as e:
        report(Check(FAIL, f"config: {e}"))
    except Fatal as e:
        report(Check(FAIL, f"keys: {e}"))
    else:
        secrets += [s for s in (key, secret) if len(s) >= 6]
        base_url, ws_url, testnet = venue_urls_from_env(args.base_url, args.ws_url)
        timeout = getattr(args, "check_timeout", None) or CHECK_TIMEOUT_S
        asyncio.run(check_venue(symbol, config, key, secret, base_url, ws_url, testnet, paths, Path(args.env),
                                timeout, report))
    print(summary(checks), flush=True)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _quick(sock: Any) -> None:
    """As the daemon opens its sockets: no reconnects of python-binance's own, a quick exit."""
    sock.TIMEOUT = 1.0
    sock.MAX_RECONNECTS = 0


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
