"""The offline demo: the daemons, unchanged, against the embedded local exchange (synthetic
market or kline CSVs, accelerated, in lockstep), with throwaway keys — as ONE account (SPEC §7).

    trade_btc.py --demo [options]                          one symbol (the launcher calls run_demo)
    trade.py --demo --symbols BTCUSDC,ETHUSDC [options]    one daemon per symbol, one wallet

One process: one local exchange serving every symbol on one wallet, and one daemon per symbol
(asyncio tasks), each with its own log, state, trades and pid file under <root>/demo/, so a
demo never touches a live state file and the scripts see each symbol as they see a daemon.
The wallet is --wallet, else the largest INITIAL_CAPITAL / CAPITAL_RATIO among the symbols
(backtest.account_of, as the backtest); each daemon's capital is its CAPITAL_RATIO × the wallet.
"""
from __future__ import annotations

import argparse
import asyncio
import contextvars
import csv
import dataclasses
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from config import GridConfig, load_config
from errors import BadInput, Fatal
from paths import ROOT, Paths, short_name

if TYPE_CHECKING:                      # the simulator is loaded by the demo only, at run time
    from local_exchange import LocalExchange
    from live.daemon import Daemon
    from ops.services import ServiceSettings

STOP_WAIT_S = 30.0                     # the daemons stop within seconds; never hang the demo
# Which daemon a log record comes from: set in each daemon's task, inherited by every task and
# callback it starts, so one process writes each symbol's log file apart.
_DEMO_SYMBOL: contextvars.ContextVar[str | None] = contextvars.ContextVar("demo_symbol", default=None)


@dataclass
class DemoSymbol:
    """One symbol of the demo's account: its config and market."""
    symbol: str
    config_path: Path
    config: GridConfig
    data: list[str] | None = None         # kline CSVs; None: the synthetic market
    funding: list[str] | None = None      # funding-rate files; None: the constant --demo-funding-rate

    @property
    def short(self) -> str:
        return short_name(self.symbol)


@dataclass
class DemoAccount:
    """The symbols on one wallet, each with its capital (SPEC §7)."""
    symbols: list[DemoSymbol]
    wallet: float
    capitals: list[float]

    @classmethod
    def of(cls, symbols: list[DemoSymbol], wallet: float | None) -> DemoAccount:
        from backtest import account_of
        if wallet is not None and not wallet > 0:
            raise BadInput(f"--wallet must be a positive amount (got {wallet:g})")
        if len({(s.config.maker_fee, s.config.taker_fee) for s in symbols}) > 1:
            raise BadInput("the configs give different fees: Binance's fee rate is the account's "
                           "(one MAKER_FEE and TAKER_FEE for every symbol)")
        if len({s.data is None for s in symbols}) > 1:
            missing = ", ".join(s.symbol for s in symbols if s.data is None)
            raise BadInput(f"--demo-data: give every symbol its candles (SYMBOL=CSV[,CSV]) or none "
                           f"(the synthetic market); {missing} has none")
        w, capitals = account_of([s.config for s in symbols], wallet)
        return cls(symbols, w, capitals)

    @property
    def synthetic(self) -> bool:
        return self.symbols[0].data is None


# ---------------------------------------------------------------------- the entry points
def run_demo(symbol: str, args: argparse.Namespace, paths: Paths, config_path: Path) -> int:
    """`trade_<sym>.py --demo` / `trade.py SYMBOL --demo` (the launcher's callback): the account
    of one symbol, the wallet live would need to give it INITIAL_CAPITAL."""
    short = short_name(symbol)
    prog = f"trade_{short}.py" if (ROOT / f"trade_{short}.py").exists() else "trade.py"
    try:
        one = DemoSymbol(symbol, config_path, load_config(config_path), args.demo_data, args.demo_funding)
        account = DemoAccount.of([one], getattr(args, "wallet", None))
    except BadInput as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return run_account(account, args, paths, prog)


class _OneLineParser(argparse.ArgumentParser):
    """Bad input is one line naming it (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def account_parser() -> argparse.ArgumentParser:
    from live.daemon import CONFIG_INTERVAL_S, MARKET_SILENCE_S, SYNC_INTERVAL_S
    p = _OneLineParser(prog="trade.py", description="The offline demo of one account: one daemon per symbol "
                       "on one local exchange and one wallet (SPEC §7).  Live: trade.py SYMBOL [options].")
    p.add_argument("--demo", action="store_true", help="the offline demo (required with --symbols)")
    p.add_argument("--symbols", required=True, help="the account's symbols, e.g. BTCUSDC,ETHUSDC")
    p.add_argument("--wallet", type=float, help="the account's wallet (default: the largest INITIAL_CAPITAL / "
                   "CAPITAL_RATIO among the symbols); each symbol's capital is its CAPITAL_RATIO × it")
    p.add_argument("--config", nargs="+", metavar="SYMBOL=FILE", help="a symbol's config (default config_<short>.txt)")
    p.add_argument("--demo-data", nargs="+", metavar="SYMBOL=CSV[,CSV]",
                   help="every symbol's kline CSVs (default: the synthetic market, its symbols correlated)")
    p.add_argument("--demo-funding", nargs="+", metavar="SYMBOL=FILE[,FILE]",
                   help="a symbol's funding rates (Binance dump CSV or REST JSON); default --demo-funding-rate")
    p.add_argument("--demo-funding-rate", type=float, default=0.0001,
                   help="demo funding per 8 h at 00/08/16 UTC (default 0.0001, Binance's baseline; 0: none)")
    p.add_argument("--demo-minutes", type=int, help="stop the demo after N simulated minutes")
    p.add_argument("--demo-speed", type=float, default=50.0, help="demo candles per second (default 50)")
    p.add_argument("--demo-seed", type=int, default=7, help="synthetic market seed (default 7)")
    p.add_argument("--root", default=str(ROOT), help="folder holding demo/ (its state/, logs/, trades/)")
    p.add_argument("--env", default=str(ROOT / ".env"), help="file with NOTIFY_URLS, METRICS_PORT")
    p.add_argument("--cancel-on-exit", action="store_true", help="cancel the orders on SIGINT/SIGTERM")
    p.add_argument("--quiet", action="store_true", help="log to the files only")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve each daemon's metrics from this port on (the first symbol's; then +1 ...)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics pages (default 127.0.0.1)")
    p.add_argument("--sync-interval", type=float, default=SYNC_INTERVAL_S, help=argparse.SUPPRESS)
    p.add_argument("--config-interval", type=float, default=CONFIG_INTERVAL_S, help=argparse.SUPPRESS)
    p.add_argument("--market-silence", type=float, default=MARKET_SILENCE_S, help=argparse.SUPPRESS)
    return p


def main_account(argv: list[str], prog: str = "trade.py") -> int:
    """`trade.py --demo --symbols A,B [options]`: the demo of one account of several symbols."""
    from live.launcher import service_settings
    parser = account_parser()
    parser.prog = prog
    args = parser.parse_args(argv)
    try:
        if not args.demo:
            raise BadInput("--symbols runs the demo of one account: add --demo (live, start one "
                           "trade.py SYMBOL per symbol)")
        account = DemoAccount.of(_demo_symbols(args), args.wallet)
        args.services = service_settings(args, Path(args.env))
    except Fatal as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return run_account(account, args, Paths(Path(args.root)), prog)


def _demo_symbols(args: argparse.Namespace) -> list[DemoSymbol]:
    """Each symbol of --symbols with its config (config_<short>.txt unless --config SYMBOL=FILE),
    its candles and funding files."""
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols or len(set(symbols)) != len(symbols):
        raise BadInput(f"--symbols {args.symbols}: give one or more different symbols, e.g. BTCUSDC,ETHUSDC")
    configs = _items(args.config, "--config", symbols, "FILE")
    data = _items(args.demo_data, "--demo-data", symbols, "CSV[,CSV]")
    funding = _items(args.demo_funding, "--demo-funding", symbols, "FILE[,FILE]")
    out = []
    for sym in symbols:
        if len(configs.get(sym, [])) > 1:
            raise BadInput(f"--config names {sym} twice")
        path = Path(configs[sym][0]) if sym in configs else ROOT / f"config_{short_name(sym)}.txt"
        if not path.is_file():
            raise BadInput(f"{sym}: no config {path} (give --config {sym}=FILE)")
        out.append(DemoSymbol(sym, path, load_config(path), data.get(sym), funding.get(sym)))
    return out


def _items(values: list[str] | None, flag: str, symbols: list[str], what: str) -> dict[str, list[str]]:
    """SYMBOL=VALUE[,VALUE] items of a flag, by symbol."""
    out: dict[str, list[str]] = {}
    for v in values or []:
        sym, eq, rest = v.partition("=")
        sym = sym.strip().upper()
        files = [f.strip() for f in rest.split(",") if f.strip()]
        if not eq or not sym or not files:
            raise BadInput(f"{flag} {v}: with --symbols, give SYMBOL={what}")
        if sym not in symbols:
            raise BadInput(f"{flag} names {sym}, not in --symbols {','.join(symbols)}")
        out.setdefault(sym, []).extend(files)
    return out


# ---------------------------------------------------------------------- the run
def run_account(account: DemoAccount, args: argparse.Namespace, paths: Paths, prog: str) -> int:
    """Start fresh under <root>/demo/, then the exchange and the daemons until the data runs
    out, --demo-minutes were played, or SIGINT / SIGTERM."""
    if not args.demo_speed > 0:
        print(f"{prog}: error: --demo-speed must be a positive number of candles per second "
              f"(got {args.demo_speed:g})", file=sys.stderr)
        return 2
    demo_paths = Paths(paths.root / "demo")
    # Every demo starts fresh: forget these symbols' previous demo and the account's record
    # (only their own files: another root's demo is untouched).
    for s in account.symbols:
        for old in (demo_paths.state(s.short), demo_paths.trades(s.short), demo_paths.funding(s.short),
                    demo_paths.prices(s.short)):
            old.unlink(missing_ok=True)
    demo_paths.account().unlink(missing_ok=True)
    demo_paths.account_history().unlink(missing_ok=True)
    try:
        funding = _funding_series(account)
    except BadInput as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    keys = ("demo-" + secrets.token_hex(16), secrets.token_hex(32))
    _demo_logging(account, demo_paths.logs, keys, args)
    # A running demo is seen by the scripts as a live daemon is (status, stop, logs): a pid file
    # per symbol, under the demo's root (one process: stopping any symbol stops the account).
    pidfiles = [demo_paths.pid(s.short) for s in account.symbols]
    for pidfile in pidfiles:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(_demo(account, funding, keys, demo_paths, args, prog))
    except KeyboardInterrupt:
        return 0
    finally:
        for pidfile in pidfiles:
            pidfile.unlink(missing_ok=True)


def _funding_series(account: DemoAccount) -> dict[str, Any]:
    from market.funding import load_funding
    return {s.symbol: load_funding(s.funding) for s in account.symbols if s.funding}


def _exchange(account: DemoAccount, funding: dict[str, Any], keys: tuple[str, str],
              args: argparse.Namespace) -> LocalExchange:
    """One local exchange serving every symbol on the account's wallet, in lockstep with the
    daemons (so their orders land where the backtest places them)."""
    from local_exchange import ExchangeSettings, LocalExchange
    from market.data import SYNTHETIC_CORRELATION
    first = account.symbols[0].config
    # Rate limits are per real second; the demo's clock runs speed × 60 times faster, so
    # Binance's 300 orders per 10 s, 1,200 a minute and 2,400 weight a minute are scaled with
    # it.  Unscaled, a busy stretch of the market would make a daemon wait for its budget (a
    # 429's Retry-After) while lockstep waits for the daemon, and the fills would drift from
    # the backtest's (two daemons reach 2,000 weight in a real minute of the March 2023 pair).
    accel = max(1.0, args.demo_speed * 60.0)
    several = len(account.symbols) > 1
    return LocalExchange(ExchangeSettings(
        symbols=tuple(s.symbol for s in account.symbols), balance=account.wallet,
        data=None if account.synthetic else {s.symbol: list(s.data or ()) for s in account.symbols},
        synthetic_seed=args.demo_seed if account.synthetic else None,
        synthetic_correlation=SYNTHETIC_CORRELATION if account.synthetic and several else None,
        speed=args.demo_speed, lockstep=True, api_key=keys[0], api_secret=keys[1],
        maker_fee=first.maker_fee, taker_fee=first.taker_fee, leverage=first.leverage,
        order_limit_10s=int(300 * accel), order_limit_1m=int(1200 * accel), weight_limit=int(2400 * accel),
        max_candles=args.demo_minutes or None, funding=funding or None, funding_rate=args.demo_funding_rate))


async def _demo(account: DemoAccount, funding: dict[str, Any], keys: tuple[str, str], demo_paths: Paths,
                args: argparse.Namespace, prog: str) -> int:
    try:
        ex = _exchange(account, funding, keys, args)
    except (BadInput, ValueError, OSError) as e:          # candles missing or unreadable
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    await ex.start(host="127.0.0.1", port=0, clock=False)   # the market starts once the daemons listen
    market = "CSV replay" if not account.synthetic else (
        "synthetic market" + (", the symbols correlated" if len(account.symbols) > 1 else ""))
    capitals = ", ".join(f"{s.symbol} {c:,.2f}" for s, c in zip(account.symbols, account.capitals))
    print(f"demo: local exchange at {ex.rest_url} ({market}, {args.demo_speed:g} candles/s, in lockstep); "
          f"wallet {account.wallet:,.2f}, capital {capitals}; state, logs and trades under {demo_paths.root}/",
          flush=True)
    try:
        failure = await _run_daemons(account, ex, keys, demo_paths, args)
    finally:
        await ex.stop()
    if failure is not None:
        print(f"{prog}: error: {failure}", file=sys.stderr)
        return 2
    print_account_report(account, demo_paths, ex)
    return 0


async def _run_daemons(account: DemoAccount, ex: LocalExchange, keys: tuple[str, str], demo_paths: Paths,
                       args: argparse.Namespace) -> Fatal | None:
    """One daemon per symbol on `ex`; the market starts once every daemon listens and moves
    on only once every daemon has acted (lockstep).  Stops them all when the market ends, a
    signal comes, or any daemon ends.  Returns what stopped a daemon that could not run."""
    from live.launcher import daemon_settings
    started: dict[str, Daemon] = {}
    runs = []
    for i, (s, capital) in enumerate(zip(account.symbols, account.capitals)):
        settings = daemon_settings(s.symbol, s.config_path, demo_paths, args, ex.rest_url, ex.ws_url, False,
                                   capital=capital, demo=True)
        runs.append(asyncio.create_task(_run_one(s.symbol, settings, keys, _services(args.services, i), started)))
    await asyncio.sleep(0)     # each daemon has set its signal handlers: one for the account replaces them
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    n = len(runs)
    while not (stop.is_set() or ex.finished or any(r.done() for r in runs)):
        await asyncio.sleep(0.02 if not ex.clock_started else 0.2)
        if not ex.clock_started and len(started) == n and ex.streams_connected(n):
            ex.lockstep_clients = [d.lockstep_view for d in started.values()]   # what each has done
            ex.start_clock()
    if ex.finished and not stop.is_set():
        await _last_account_read(started)
    for r, s in zip(runs, account.symbols):
        d = started.get(s.symbol)
        if d is not None:
            d.stopping.set()
        elif not r.done():
            r.cancel()                      # still starting: nothing to wind down
    done, pending = await asyncio.wait(runs, timeout=STOP_WAIT_S)
    if pending:
        print(f"demo: {len(pending)} daemon(s) did not stop within {STOP_WAIT_S:.0f} s; stopping the exchange "
              "anyway", file=sys.stderr)
        for r in pending:
            r.cancel()
    for r in done:
        e = None if r.cancelled() else r.exception()
        if isinstance(e, Fatal):
            return e
        if e is not None:
            raise e
    return None


async def _last_account_read(started: dict[str, Daemon]) -> None:
    """The market has ended: each daemon reads the account once more, so its state (what
    status and the dashboard show) holds the account as the demo left it, not as the last
    sync before the end found it (a demo's day passes in seconds, between two syncs)."""
    for symbol, d in started.items():
        _DEMO_SYMBOL.set(symbol)
        try:
            await asyncio.wait_for(d.check_account(), STOP_WAIT_S)
        except Exception as e:      # a report without the last read is still a report
            logging.getLogger("grid").warning("the last account read failed: %s", e)
    _DEMO_SYMBOL.set(None)


async def _run_one(symbol: str, settings: Any, keys: tuple[str, str], services: ServiceSettings,
                   started: dict[str, Daemon]) -> int:
    from live.launcher import run_daemon
    _DEMO_SYMBOL.set(symbol)                # this task's records (and its children's) go to its log
    return await run_daemon(settings, keys, services, logging.getLogger("grid"),
                            on_started=lambda d: started.setdefault(symbol, d))


def _services(services: ServiceSettings, i: int) -> ServiceSettings:
    """The i-th daemon's: its own metrics port (the given one + i; 0 stays any free port)."""
    port = services.metrics_port
    return dataclasses.replace(services, metrics_port=port + i if port else port)


# ---------------------------------------------------------------------- logs
class _OwnRecords(logging.Filter):
    """A symbol's log file takes its daemon's records and the exchange's (no daemon's)."""

    def __init__(self, symbol: str):
        super().__init__()
        self.symbol = symbol

    def filter(self, record: logging.LogRecord) -> bool:
        who = _DEMO_SYMBOL.get()
        return who is None or who == self.symbol


class _Tagged(logging.Filter):
    """The console's lines name the symbol they come from."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.demo_symbol = _DEMO_SYMBOL.get() or "exchange"
        return True


def _demo_logging(account: DemoAccount, logs: Path, keys: tuple[str, str], args: argparse.Namespace) -> None:
    """The launcher's logging (a daily file, the console unless --quiet), and with several
    symbols one file each: a record goes to the file of the daemon whose task logged it."""
    from live.launcher import notify_secrets
    from ops.records import DailyFileHandler, setup_logging
    hidden = keys + notify_secrets(args.services.notify_urls)
    setup_logging(account.symbols[0].short, logs, hidden, console=not args.quiet)
    if len(account.symbols) == 1:
        return
    root = logging.getLogger()
    first = next(h for h in root.handlers if isinstance(h, DailyFileHandler))
    masks = list(first.filters)                      # the secrets' mask
    first.addFilter(_OwnRecords(account.symbols[0].symbol))
    for s in account.symbols[1:]:
        own = DailyFileHandler(logs, s.short)
        own.setFormatter(first.formatter)
        for f in masks + [_OwnRecords(s.symbol)]:
            own.addFilter(f)
        root.addHandler(own)
    tagged = logging.Formatter("%(asctime)s - %(demo_symbol)s - %(levelname)s - %(message)s", "%Y-%m-%d %H:%M:%S")
    tagged.converter = time.gmtime
    for h in root.handlers:
        if not isinstance(h, DailyFileHandler):       # the console
            h.addFilter(_Tagged())
            h.setFormatter(tagged)


# ---------------------------------------------------------------------- the report
def print_account_report(account: DemoAccount, paths: Paths, ex: LocalExchange) -> None:
    """The account first (its wallet at start and at the end, equity, liquidations with the
    positions they closed), then each symbol."""
    sim = ex.sim
    upnl = 0.0
    for s in account.symbols:
        p = sim.position(s.symbol)
        upnl += p.qty * (sim.books[s.symbol].price - p.entry_price)
    paid = sum(x.amount for x in sim.funding)
    print(f"\ndemo report — the account ({', '.join(s.symbol for s in account.symbols)}), "
          f"{ex.candles_played:,} simulated minutes")
    print(f"  wallet at start {account.wallet:.8f}")
    print(f"  final wallet    {sim.wallet:.8f}")
    print(f"  equity          {sim.wallet + upnl:.8f}   (unrealized PnL {upnl:+.2f})")
    print(f"  funding paid    {paid:+.4f} ({len(sim.funding)} settlements)")
    for line in _liquidation_lines(sim.liquidations):
        print(line)
    for s, capital in zip(account.symbols, account.capitals):
        print_report(s.symbol, paths, ex, capital)


def _liquidation_lines(liquidations: list[Any]) -> list[str]:
    """One line per liquidation of the account: when, and every position it closed."""
    if not liquidations:
        return ["  liquidations    none"]
    by_time: dict[int, list[Any]] = {}
    for x in liquidations:
        by_time.setdefault(x.time, []).append(x)
    lines = []
    for t, closed in by_time.items():
        when = datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        what = ", ".join(f"{x.symbol} {x.qty:+g} @ {x.price:.2f}" for x in closed)
        fund = sum(x.clearance for x in closed)
        took = f"insurance fund took {fund:.2f}" if fund >= 0 else f"insurance fund covered {-fund:.2f}"
        lines.append(f"  LIQUIDATED      {when}: closed {what} ({took})")
    return lines


def print_report(symbol: str, paths: Paths, ex: LocalExchange, capital: float | None = None) -> None:
    """One symbol of the account: its fills by role, PnL, position, funding, liquidations."""
    short = short_name(symbol)
    rows = []
    path = paths.trades(short)
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    roles: dict[str, int] = {}
    for r in rows:
        roles[r["role"]] = roles.get(r["role"], 0) + 1
    realized = sum(float(r["realized_pnl"]) for r in rows)
    fees = sum(float(r["fee"]) for r in rows)
    pos = ex.sim.position(symbol)
    print(f"\ndemo report — {symbol}, {ex.candles_played:,} simulated minutes")
    if capital is not None:
        print(f"  capital         {capital:.2f}")
    print(f"  fills           {len(rows)}  " + "  ".join(f"{k}={v}" for k, v in sorted(roles.items())))
    print(f"  realized PnL    {realized:+.2f}   fees {fees:.2f}   net {realized - fees:+.2f}")
    print(f"  position        {pos.qty:g} @ {pos.entry_price:.2f}")
    funding = [x for x in ex.sim.funding if x.symbol == symbol]
    liqs = [x for x in ex.sim.liquidations if x.symbol == symbol]
    print(f"  funding paid    {sum(x.amount for x in funding):+.4f} ({len(funding)} settlements)")
    if liqs:
        print(f"  LIQUIDATED      {len(liqs)}× (first at {liqs[0].price:.2f})")
    print(f"  records         {path}, {paths.logs}/")
