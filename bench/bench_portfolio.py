#!/usr/bin/env python3
"""Benchmark the portfolio backtest (several symbols, one wallet) against single-symbol runs.

    python bench/bench_portfolio.py [--data-dir DIR] [--repeat N]

The March 2023 BTC pair of the shared data folder (BTCUSDC and BTCUSD spot, 30,240
one-minute candles each, moving together) with config_btc.txt, the baseline funding and
liquidation on:
1. speed: each symbol alone (its share of the same wallet) and the two together; candles
   per second counted per symbol-candle, and the ratio portfolio / singles (1.00: the same
   speed per candle);
2. memory: the peak RSS of a fresh process that loads and runs each mode, less that of a
   process that only imports, per symbol-candle (bytes).

Every time is the best of --repeat runs (default 5). Figures only, no assertions.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAIR = ("binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv", "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv")


def legs(data_dir: Path) -> list:
    from backtest import PortfolioLeg
    from config import load_config
    from market.data import load_klines
    from market.funding import BASELINE_RATE, constant_funding
    from sim.exchange import DEFAULT_FILTERS
    cfg = load_config(REPO / "config_btc.txt")
    fa = DEFAULT_FILTERS["BTCUSDC"]
    out = []
    for name, f in zip(PAIR, (fa, dataclasses.replace(fa, symbol="BTCUSD"))):
        c = load_klines([data_dir / name])
        out.append(PortfolioLeg(cfg, c, f, constant_funding(BASELINE_RATE, int(c.open_time[0]),
                                                            int(c.open_time[-1]))))
    return out


def run(mode: str, data_dir: Path) -> float:
    """One run of `mode` ('single' or 'portfolio'); its elapsed seconds."""
    from backtest import account_of, run_backtest, run_portfolio
    ls = legs(data_dir)
    t0 = time.perf_counter()
    if mode == "portfolio":
        run_portfolio(ls)
    else:
        wallet, capitals = account_of([leg.config for leg in ls])
        for leg, cap in zip(ls, capitals):
            run_backtest(leg.config, leg.candles, leg.filters, capital=cap, wallet=wallet, funding=leg.funding)
    return time.perf_counter() - t0


def peak_rss(mode: str, data_dir: Path) -> int:
    """Peak RSS (bytes) of a fresh process running `mode` ('import': only the imports)."""
    work = "" if mode == "import" else f"b.run({mode!r}, Path({str(data_dir)!r}))\n"
    code = (f"import sys\nsys.path[:0] = [{str(REPO)!r}, {str(REPO / 'bench')!r}]\nimport resource\n"
            f"from pathlib import Path\nimport bench_portfolio as b\nimport backtest, market.data, optuna\n{work}"
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("GM_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    data_dir = Path(a.data_dir)
    if not all((data_dir / n).is_file() for n in PAIR):
        print(f"bench_portfolio.py: the March 2023 BTC pair is absent from {data_dir}", file=sys.stderr)
        return 2
    n = sum(len(leg.candles) for leg in legs(data_dir))
    best = {m: min(run(m, data_dir) for _ in range(a.repeat)) for m in ("single", "portfolio")}
    base = peak_rss("import", data_dir)
    mem = {m: peak_rss(m, data_dir) - base for m in ("single", "portfolio")}
    print(f"BTCUSDC + BTCUSD, March 2023: {n:,} symbol-candles, best of {a.repeat}")
    print(f"{'mode':<10} {'elapsed s':>10} {'candles/s':>12} {'peak RSS over imports MB':>26} {'bytes/candle':>13}")
    for m in ("single", "portfolio"):
        print(f"{m:<10} {best[m]:>10.3f} {n / best[m]:>12,.0f} {mem[m] / 2**20:>26.1f} {mem[m] / n:>13.0f}")
    print(f"speed per candle, portfolio / singles: {best['single'] / best['portfolio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
