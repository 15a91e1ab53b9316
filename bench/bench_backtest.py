#!/usr/bin/env python3
"""Benchmark the backtest on the real 1-minute klines of the shared data folder.

    python bench/bench_backtest.py [--quick] [--data-dir DIR]

1. Loads every CSV of the data folder (<repo>/../shared/data, or $GM_DATA_DIR,
   or --data-dir) separately, then joins them with `market_data.chain_candles`
   into one continuous series rescaled so the first open is 30000, traded with
   the BTCUSDC filters (tick 0.1, step 0.001, minNotional 5) and config_btc.txt.
2. LONG and SHORT over that series, each twice: without funding and
   liquidation, and with both on (Binance's baseline funding, 0.01 % per 8 h,
   and cross-margin liquidation with the shipped BTCUSDC brackets): candles,
   fills, replayed candles, elapsed, candles/s, fills/s, and the ratio of the
   two speeds.
3. Linearity: the series chained to itself 1×, 2×, 4×; candles/s of each and
   the time per candle of 4× relative to 1× (1.00 = perfectly linear).
   --quick runs only 1×.  "last fill" shows how far into the series the
   strategy still trades: with config_btc.txt the fixed capital is spent
   before the end, and later candles are only scanned.

Every time is the best of 5 runs (time.perf_counter): the machine's noise is ±10 %.  Figures only, no
assertions.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backtest import BacktestResult, run_backtest  # noqa: E402
from market.funding import BASELINE_RATE, constant_funding  # noqa: E402
from config import load_config  # noqa: E402
from exchange_api import SymbolFilters  # noqa: E402
from market.data import Candles, chain_candles, load_klines  # noqa: E402

T = TypeVar("T")
REPEAT = 5
START_PRICE = 30000.0
FILTERS = SymbolFilters("BTCUSDC", tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0)


def best_of(fn: Callable[[], T], repeat: int = REPEAT) -> tuple[float, T]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result  # type: ignore[return-value]


def rescaled(c: Candles, first_open: float) -> Candles:
    k = first_open / float(c.open[0])
    return Candles.from_arrays(c.open_time, c.open * k, c.high * k, c.low * k, c.close * k, c.volume)


def fills_digest(res: BacktestResult) -> str:
    """A short hash of every fill (time, side, role, price, qty, fee, PnL, position after): two
    builds that trade alike print the same digest."""
    h = hashlib.sha256()
    for f in res.fills:
        h.update(f"{f.time_ms}|{f.side}|{f.role}|{f.price!r}|{f.qty!r}|{f.fee!r}|{f.realized_pnl!r}|"
                 f"{f.position_after!r}|{f.avg_price_after!r}\n".encode())
    return h.hexdigest()[:16]


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print(line)
    for r in rows:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="linearity at 1× only")
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("GM_DATA_DIR") or REPO.parent / "shared" / "data"))
    ap.add_argument("--config", type=Path, default=REPO / "config_btc.txt")
    args = ap.parse_args(argv)
    files = sorted(args.data_dir.glob("*.csv")) if args.data_dir.is_dir() else []
    if not files:
        print(f"bench_backtest: no kline CSVs in {args.data_dir} (the shared data folder is absent); "
              "set GM_DATA_DIR or pass --data-dir", file=sys.stderr)
        return 2
    cfg = load_config(args.config)

    # 1. Loading ------------------------------------------------------------------------------
    print(f"data: {args.data_dir}  config: {args.config.name}  (best of {REPEAT})")
    rows = []
    parts: list[Candles] = []
    total_load = 0.0
    for p in files:
        dt, c = best_of(functools.partial(load_klines, [p]))
        total_load += dt
        parts.append(c)
        rows.append([p.name, f"{len(c):,}", f"{dt * 1000:.1f}", f"{len(c) / dt / 1e6:.2f}"])
    dt_chain, series = best_of(lambda: chain_candles([rescaled(parts[0], START_PRICE), *parts[1:]]))
    rows.append(["all files (sum of loads)", f"{sum(len(c) for c in parts):,}", f"{total_load * 1000:.1f}",
                 f"{sum(len(c) for c in parts) / total_load / 1e6:.2f}"])
    rows.append(["chain_candles + rescale", f"{len(series):,}", f"{dt_chain * 1000:.1f}", ""])
    table(["load", "rows", "ms", "Mrows/s"], rows)
    print(f"chained series: {series.time_iso(0)} → {series.time_iso(len(series) - 1)}, open "
          f"{series.open[0]:,.1f}, close {series.close[-1]:,.1f}, low {series.low.min():,.1f}, "
          f"high {series.high.max():,.1f}; filters tick {FILTERS.tick_size:g} step {FILTERS.step_size:g} "
          f"minNotional {FILTERS.min_notional:g}")
    print()

    # 2. LONG and SHORT -----------------------------------------------------------------------
    def run(direction: str, candles: Candles, costs: bool = True) -> tuple[float, BacktestResult]:
        c = cfg.with_overrides(trade_direction=direction)
        funding = constant_funding(BASELINE_RATE, int(candles.open_time[0]), int(candles.open_time[-1])) \
            if costs else None
        return best_of(lambda: run_backtest(c, candles, FILTERS, funding=funding, liquidation=costs))

    def active(res: BacktestResult) -> str:
        """Where the last fill falls in the series: after it the run only scans."""
        if not res.fills:
            return "0 %"
        c = res.candles
        last = int(c.open_time.searchsorted(res.fills[-1].time_ms, side="right")) - 1
        return f"{(last + 1) / len(c) * 100:.0f} %"

    exhausted: list[str] = []

    rows = []
    speeds: dict[tuple[str, bool], float] = {}
    for direction in ("LONG", "SHORT"):
        for costs in (False, True):
            dt, res = run(direction, series, costs)
            speeds[direction, costs] = len(series) / dt
            paid = sum(x.amount for x in res.funding)
            net = sum(f.realized_pnl for f in res.fills) - res.fees - paid - sum(x.clearance for x in res.liquidations)
            rows.append([f"{direction} {'funding+liq' if costs else 'plain'}", f"{len(series):,}",
                         f"{len(res.fills):,}", f"{res.replayed_candles:,}", f"{dt:.3f}", f"{len(series) / dt:,.0f}",
                         f"{len(res.fills) / dt:,.0f}", f"{paid:,.2f}", str(len(res.liquidations)), f"{net:+,.2f}",
                         f"{res.final_wallet:,.2f}", active(res), fills_digest(res)])
            if costs and res.fills and active(res) != "100 %":
                exhausted.append(f"{direction} at {res.fills[-1].time_iso} (wallet {res.final_wallet:,.2f})")
    table(["run", "candles", "fills", "replayed", "elapsed s", "candles/s", "fills/s", "funding", "liq.",
           "net PnL", "wallet", "last fill", "fills digest"], rows)
    print("speed with funding+liquidation / plain: " + ", ".join(
        f"{d} {speeds[d, True] / speeds[d, False]:.2f}" for d in ("LONG", "SHORT")) +
        "  (the two runs trade differently: funding moves the wallet, and with it which levels the "
        "margin admits; fills/s compares the cost per event)")
    if exhausted:
        print("note: no fill after " + "; ".join(exhausted) + ": the fixed capital no longer covers a "
              "level's margin, so the rest of the series is only scanned (cheap) and candles/s there "
              "measures the scan, not the strategy.")
    print()

    # 3. Linearity ----------------------------------------------------------------------------
    reps = (1,) if args.quick else (1, 2, 4)
    rows = []
    per_candle: dict[tuple[str, int], float] = {}
    per_replay: dict[tuple[str, int], float] = {}
    for k in reps:
        longer = series if k == 1 else chain_candles([series] * k)
        for direction in ("LONG", "SHORT"):
            dt, res = run(direction, longer)
            per_candle[direction, k] = dt / len(longer)
            per_replay[direction, k] = dt / max(res.replayed_candles, 1)
            rows.append([f"{k}× {direction}", f"{len(longer):,}", f"{len(res.fills):,}",
                         f"{res.replayed_candles:,}", f"{dt:.3f}", f"{len(longer) / dt:,.0f}",
                         f"{len(res.fills) / dt:,.0f}", active(res)])
    table(["chain", "candles", "fills", "replayed", "elapsed s", "candles/s", "fills/s", "last fill"], rows)
    if not args.quick:
        ratios = ", ".join(f"{d} {per_candle[d, 4] / per_candle[d, 1]:.2f}" for d in ("LONG", "SHORT"))
        print(f"time per candle, 4× vs 1×: {ratios}  (1.00 = linear)")
        ratios = ", ".join(f"{d} {per_replay[d, 4] / per_replay[d, 1]:.2f}" for d in ("LONG", "SHORT"))
        print(f"time per replayed candle, 4× vs 1×: {ratios}  (the cost of an event does not grow with "
              "the series when this stays near 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
