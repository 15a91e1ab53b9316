"""The offline demo: the whole daemon, unchanged, against the embedded local
exchange (synthetic market or kline CSVs, accelerated), with throwaway keys.

Its state, logs and trades go under <root>/demo/ so a demo never touches a
live state file.
"""
from __future__ import annotations

import asyncio
import csv
import os
import secrets
import sys
from pathlib import Path

from config import ConfigError, load_config
from paths import ROOT



def run_demo(symbol: str, args, paths, config_path: Path) -> int:
    from paths import Paths
    from ops.records import setup_logging

    from paths import short_name
    short = short_name(symbol)
    prog = "trade.py" if not (ROOT / f"trade_{short}.py").exists() else f"trade_{short}.py"
    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    demo_paths = Paths(paths.root / "demo")
    # Every demo starts fresh: forget this symbol's previous demo (only its own
    # files, so `start_all.sh --demo` can run both symbols side by side).
    for old in (demo_paths.state(short), demo_paths.trades(short), demo_paths.funding(short)):
        old.unlink(missing_ok=True)
    funding = None
    if args.demo_funding:
        from market.funding import FundingError, load_funding
        try:
            funding = {symbol: load_funding(args.demo_funding)}
        except FundingError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
    args.funding_series = funding
    key, secret = "demo-" + secrets.token_hex(16), secrets.token_hex(32)
    from live.launcher import notify_secrets
    log = setup_logging(short, demo_paths.logs, (key, secret) + notify_secrets(args.services.notify_urls),
                        console=not args.quiet)
    # A running demo is seen by the scripts as a live daemon is (status, stop, logs): its pid
    # file, under the demo's root.
    pidfile = demo_paths.pid(short)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(_demo(symbol, cfg, config_path, key, secret, demo_paths, args, log))
    except KeyboardInterrupt:
        return 0
    finally:
        pidfile.unlink(missing_ok=True)


async def _demo(symbol, cfg, config_path, key, secret, demo_paths, args, log) -> int:
    from live.launcher import daemon_settings, run_daemon as _run
    from local_exchange import ExchangeSettings, LocalExchange

    # The wallet is the capital, as in the backtest; replaying CSVs runs in
    # lockstep so the daemon's orders land where the backtest places them.
    # Order-count limits are per real second; the demo's clock runs speed × 60 times faster,
    # so Binance's 300 per 10 s and 1,200 a minute are scaled with it.  Unscaled, a busy
    # stretch of the market would make the daemon wait for its order budget while lockstep
    # waits for the daemon, and the fills would drift from the backtest's.
    accel = max(1.0, args.demo_speed * 60.0)
    ex = LocalExchange(ExchangeSettings(
        symbols=(symbol,), balance=cfg.initial_capital, data=args.demo_data,
        synthetic_seed=None if args.demo_data else args.demo_seed,
        speed=args.demo_speed, lockstep=bool(args.demo_data), api_key=key, api_secret=secret,
        maker_fee=cfg.maker_fee, taker_fee=cfg.taker_fee, leverage=cfg.leverage,
        order_limit_10s=int(300 * accel), order_limit_1m=int(1200 * accel),
        max_candles=args.demo_minutes or None, funding=args.funding_series,
        funding_rate=args.demo_funding_rate))
    await ex.start(host="127.0.0.1", port=0, clock=False)   # the market starts once the daemon listens
    print(f"demo: local exchange at {ex.rest_url} ({'CSV replay' if args.demo_data else 'synthetic market'}, "
          f"{args.demo_speed:g} candles/s); state, logs and trades under {demo_paths.root}/", flush=True)
    daemon_box: dict = {}
    settings = daemon_settings(symbol, config_path, demo_paths, args, ex.rest_url, ex.ws_url, False,
                               capital=cfg.initial_capital, demo=True)
    run = asyncio.create_task(_run(settings, (key, secret), args.services, log,
                                   on_started=lambda d: daemon_box.setdefault("d", d)))
    try:
        while not run.done():
            await asyncio.sleep(0.02 if not ex.clock_started else 0.2)
            d = daemon_box.get("d")
            if d is None:
                continue
            if not ex.clock_started and ex.streams_connected():
                if ex.lockstep:
                    ex.lockstep_client = d.lockstep_view     # the market waits on what it has done
                ex.start_clock()
            if ex.finished:         # the data ran out, or --demo-minutes candles were played
                d.stopping.set()
                break
        try:
            await asyncio.wait_for(run, timeout=30)   # the daemon stops within seconds; never hang the demo
        except asyncio.TimeoutError:
            print("demo: the daemon did not stop within 30 s; stopping the exchange anyway", file=sys.stderr)
    finally:
        await ex.stop()
    print_report(symbol, demo_paths, ex)
    return 0


def print_report(symbol: str, paths, ex) -> None:
    from paths import short_name
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
    print(f"  fills           {len(rows)}  " + "  ".join(f"{k}={v}" for k, v in sorted(roles.items())))
    print(f"  realized PnL    {realized:+.2f}   fees {fees:.2f}   net {realized - fees:+.2f}")
    print(f"  position        {pos.qty:g} @ {pos.entry_price:.2f}")
    funding = sum(x.amount for x in ex.sim.funding if x.symbol == symbol)
    liqs = [x for x in ex.sim.liquidations if x.symbol == symbol]
    print(f"  funding paid    {funding:+.4f} ({sum(1 for x in ex.sim.funding if x.symbol == symbol)} settlements)")
    if liqs:
        print(f"  LIQUIDATED      {len(liqs)}× (first at {liqs[0].price:.2f})")
    print(f"  wallet          {ex.sim.wallet:.8f}")
    print(f"  records         {path}, {paths.logs}/")
