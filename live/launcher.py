"""The launcher: command line, keys, lock and pid file, logging, then the daemon's run
loop — used by trade_btc.py / trade_eth.py (live) and by the offline demo (which hands it the
embedded exchange's URLs), so no module imports the demo and the daemon imports neither."""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import re
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable

from dotenv import dotenv_values

from binance_library import venue_urls_from_env
from config import load_config
from live.daemon import CONFIG_INTERVAL_S, MARKET_SILENCE_S, SYNC_INTERVAL_S, Daemon, DaemonSettings
from errors import ExchangeError, Fatal, Temporary
from messages import korean
from paths import ROOT, Paths, short_name
from ops.notify import NotifyConfigError, settings_from as notify_settings
from live.preflight import CHECK_TIMEOUT_S, main_check
from ops.records import setup_logging
from ops.services import ServiceSettings, Services

START_BACKOFF_MAX_S = 60


def acquire_lock(path: Path) -> Any:
    """One instance per symbol: an exclusive flock held for the process's life."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise Fatal(f"another instance already runs for this symbol (lock {path})") from None
    return fh


def env_permission_warning(env_path: Path) -> str | None:
    """The start-up warning for a .env readable by others, or None."""
    try:
        mode = env_path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"{env_path} is readable by other users; run: chmod 600 {env_path}"
    return None


def _mask_keys(text: str, env_path: Path) -> str:
    """`text` with the API key and secret (from the environment or .env) replaced by ***."""
    try:
        values = dotenv_values(env_path) if env_path.is_file() else {}
    except (OSError, ValueError):
        values = {}
    for k in ("BINANCE_API_KEY", "BINANCE_API_SECRET"):
        v = (os.environ.get(k) or values.get(k) or "").strip()
        if len(v) >= 6:
            text = text.replace(v, "***")
    return text


def read_keys(env_path: Path, log: logging.Logger | None = None, warn: bool = True) -> tuple[str, str]:
    msg = env_permission_warning(env_path) if warn else None
    if msg:
        (log.warning(msg) if log else print(f"warning: {msg}", file=sys.stderr))
    values = dotenv_values(env_path) if env_path.exists() else {}
    key = os.environ.get("BINANCE_API_KEY") or values.get("BINANCE_API_KEY") or ""
    secret = os.environ.get("BINANCE_API_SECRET") or values.get("BINANCE_API_SECRET") or ""
    for k in ("BINANCE_BASE_URL", "BINANCE_WS_URL", "BINANCE_TESTNET", "LOG_LANGUAGE"):
        given = values.get(k)
        if given and not os.environ.get(k):
            os.environ[k] = given
    if not key or not secret:
        raise Fatal(f"BINANCE_API_KEY and BINANCE_API_SECRET must be set in {env_path} (see .env.example)")
    return key.strip(), secret.strip()


def service_settings(args: argparse.Namespace, env_path: Path) -> ServiceSettings:
    """NOTIFY_URLS, NOTIFY_EVENTS and METRICS_PORT (environment, else .env) and the flags."""
    try:
        values = dotenv_values(env_path) if env_path.is_file() else {}
    except (OSError, ValueError):
        values = {}

    def get(k: str) -> str | None:
        return os.environ.get(k) or values.get(k)
    try:
        urls, events = notify_settings({"NOTIFY_URLS": get("NOTIFY_URLS"), "NOTIFY_EVENTS": get("NOTIFY_EVENTS")})
    except NotifyConfigError as e:
        raise Fatal(str(e)) from None
    port = args.metrics_port
    if port is None and get("METRICS_PORT"):
        try:
            port = int(str(get("METRICS_PORT")).strip())
        except ValueError:
            raise Fatal(f"METRICS_PORT must be a port number (got {get('METRICS_PORT')!r})") from None
    if port is not None and not 0 <= port <= 65535:
        raise Fatal(f"the metrics port must be 0..65535 (got {port})")
    return ServiceSettings(urls, events, port, args.metrics_host)


def notify_secrets(urls: list[str]) -> tuple[str, ...]:
    """What of the notification URLs must never be logged: each URL and its parts (tokens)."""
    out = []
    for u in urls:
        out.append(u)
        body = u.split("://", 1)[-1]
        out += [p for p in re.split(r"[/:@?&=,]", body) if len(p) >= 6]
    return tuple(out)


def build_parser(short: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"trade_{short}.py",
                                description=f"Grid-martingale daemon for {short.upper()}USDC perpetual futures.")
    p.add_argument("--config", help=f"config file (default config_{short}.txt)")
    p.add_argument("--base-url", help="REST base URL of another venue (e.g. the local exchange)")
    p.add_argument("--ws-url", help="WebSocket base URL of another venue")
    p.add_argument("--env", default=str(ROOT / ".env"), help="file with BINANCE_API_KEY / BINANCE_API_SECRET")
    p.add_argument("--cancel-on-exit", action="store_true", help="cancel this symbol's orders on SIGINT/SIGTERM")
    p.add_argument("--clear-account-stop", action="store_true",
                   help="the account stop (ACCOUNT_STOP_DRAWDOWN) fired: clear it and trade again")
    p.add_argument("--root", default=str(ROOT), help="folder holding state/, logs/, trades/")
    p.add_argument("--demo", action="store_true", help="offline demo on the embedded local exchange")
    p.add_argument("--demo-data", nargs="+", metavar="CSV", help="demo over these kline CSVs instead of synthetic")
    p.add_argument("--demo-minutes", type=int, help="stop the demo after N simulated minutes")
    p.add_argument("--demo-speed", type=float, default=50.0, help="demo candles per second (default 50)")
    p.add_argument("--demo-seed", type=int, default=7, help="synthetic market seed (default 7)")
    p.add_argument("--demo-funding", nargs="+", metavar="FILE",
                   help="demo funding rates (Binance dump CSV or REST JSON); default a constant --demo-funding-rate")
    p.add_argument("--demo-funding-rate", type=float, default=0.0001,
                   help="demo funding per 8 h at 00/08/16 UTC (default 0.0001, Binance's baseline; 0: none)")
    p.add_argument("--wallet", type=float, help="--demo: the account's wallet (default INITIAL_CAPITAL / "
                   "CAPITAL_RATIO, the wallet live would need to give the symbol its capital; SPEC §7)")
    p.add_argument("--sync-interval", type=float, default=SYNC_INTERVAL_S, help=argparse.SUPPRESS)
    p.add_argument("--config-interval", type=float, default=CONFIG_INTERVAL_S, help=argparse.SUPPRESS)
    p.add_argument("--market-silence", type=float, default=MARKET_SILENCE_S, metavar="SECONDS",
                   help="reconnect when the market stream, connected, brings nothing this long "
                        f"(default {MARKET_SILENCE_S:g})")
    p.add_argument("--quiet", action="store_true", help="log to the file only")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port (default: METRICS_PORT in .env, else none)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics page (default 127.0.0.1)")
    p.add_argument("--check", action="store_true", help="read-only pre-flight against the venue instead of trading: "
                   "one OK / WARN / FAIL line per check, exit 1 on a FAIL (live/preflight.py)")
    p.add_argument("--check-timeout", type=float, default=CHECK_TIMEOUT_S, metavar="SECONDS",
                   help=f"--check: how long each stream check waits (default {CHECK_TIMEOUT_S:g})")
    return p


def main(symbol: str, argv: list[str] | None = None,
         demo: Callable[..., int] | None = None, prog: str | None = None) -> int:
    """The entry point of trade_<sym>.py and trade.py; `demo` runs `--demo` (the entry scripts
    pass demo.run_demo, so the launcher itself never imports the demo)."""
    short = short_name(symbol)
    parser = build_parser(short)
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    prog = parser.prog
    root = Path(args.root)
    paths = Paths(root)
    config_path = Path(args.config) if args.config else ROOT / f"config_{short}.txt"
    if args.check:                                     # the pre-flight: read-only, no lock, no log file
        return main_check(symbol, args, paths, config_path, read_keys)
    try:
        args.services = service_settings(args, Path(args.env))
        if args.demo:
            if demo is None:
                raise Fatal("--demo is run by trade.py, trade_btc.py and trade_eth.py")
            return demo(symbol, args, paths, config_path)
        load_config(config_path)                       # fail fast, one line
        env_warning = env_permission_warning(Path(args.env))
        key, secret = read_keys(Path(args.env), warn=False)   # the warning goes to the log below
        lock = acquire_lock(paths.lock(short))
    except Fatal as e:                                 # the config (BadInput), keys, the lock
        # The config is checked before the keys are read: mask them in case a value quotes one.
        print(f"{prog}: error: {_mask_keys(str(e), Path(args.env))}", file=sys.stderr)
        return 2
    except OSError as e:                               # e.g. state/ under a regular file
        print(f"{prog}: error: cannot use {paths.root / 'state'}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        log = setup_logging(short, paths.logs, (key, secret) + notify_secrets(args.services.notify_urls),
                            console=not args.quiet)
    except OSError as e:                               # logs/ not a writable directory: one line, exit 2
        lock.close()
        print(f"{prog}: error: cannot write logs in {paths.logs}: {e.strerror or e}", file=sys.stderr)
        return 2
    if env_warning:
        log.warning("%s", env_warning)
    base_url, ws_url, testnet = venue_urls_from_env(args.base_url, args.ws_url)
    try:
        paths.pid(short).write_text(f"{os.getpid()}\n")
        return asyncio.run(run_daemon(daemon_settings(symbol, config_path, paths, args, base_url, ws_url, testnet),
                                      (key, secret), args.services, log))
    except Fatal as e:                                 # keys, permissions, account mode
        log.error("%s", e)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    finally:
        try:
            paths.pid(short).unlink()
        except OSError:
            pass
        lock.close()


async def run_daemon(settings: DaemonSettings, keys: tuple[str, str], services: ServiceSettings,
                     log: logging.Logger, on_started: Callable[[Daemon], Any] | None = None) -> int:
    """Start the daemon (waiting an unreachable exchange out) and run it until stopped."""
    key, secret = keys
    d = Daemon(settings, key, secret)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, d.stopping.set)
    watch = Services(d, services, log, secrets=(key, secret) + notify_secrets(services.notify_urls))
    started = False
    try:
        if not await _start_when_reachable(d, log):
            return 0                                   # stopped while waiting
        started = True
        log.info("시작: %s %s" if korean() else "Started: %s %s", settings.symbol, d.config.trade_direction)
        await watch.start()
        if on_started is not None:
            on_started(d)
        await d.run()
        return 0
    except ExchangeError as e:
        raise Fatal(f"exchange rejected a start-up request: {e}") from None
    finally:
        if started:
            await watch.stop()
        await d.shutdown()
        log.info("종료" if korean() else "Stopped")


def daemon_settings(symbol: str, config_path: Path, paths: Paths, args: argparse.Namespace,
                    base_url: str | None, ws_url: str | None, testnet: bool, *,
                    capital: float | None = None, demo: bool = False) -> DaemonSettings:
    """The daemon's settings from the command line's flags."""
    return DaemonSettings(symbol, config_path, paths, base_url=base_url, ws_url=ws_url, testnet=testnet,
                          demo=demo, capital_override=capital, cancel_on_exit=args.cancel_on_exit,
                          sync_interval=args.sync_interval, config_interval=args.config_interval,
                          market_silence_s=args.market_silence,
                          clear_account_stop=bool(getattr(args, "clear_account_stop", False)))


async def _start_when_reachable(d: Daemon, log: logging.Logger) -> bool:
    """d.start(), retried for as long as the exchange is unreachable or answers 5xx / times
    out (a reboot or a network blip at start), with backoff up to a minute and a log line at
    most once a minute; False if stopped meanwhile.  Bad keys, permissions or a bad symbol
    still end it at once (ConfigurationError, ExchangeError)."""
    first = time.monotonic()
    logged = -1e9
    attempt = 0
    while True:
        try:
            await d.start()
            if attempt:
                log.info("the exchange answers again after %.0f s: starting", time.monotonic() - first)
            return True
        except (Temporary, OSError, asyncio.TimeoutError) as e:
            pause = min(2 ** attempt, START_BACKOFF_MAX_S)
            if time.monotonic() - logged >= 60.0:
                logged = time.monotonic()
                log.warning("cannot reach the exchange at start-up (%s); retrying with backoff (up to %d s), "
                            "SIGTERM stops", str(e)[:200] or type(e).__name__, START_BACKOFF_MAX_S)
            attempt += 1
            await d.venue.close()
            try:
                await asyncio.wait_for(d.stopping.wait(), pause)
                return False
            except asyncio.TimeoutError:
                pass
