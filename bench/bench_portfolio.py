#!/usr/bin/env python3
"""Benchmark the portfolio backtest (several symbols, one wallet) against single-symbol runs.

    python bench/bench_portfolio.py [--data-dir DIR] [--repeat N] [--years-symbols K] [--work DIR] [--long-repeat R]
                                    [--instructions]

1. Speed, on the March 2023 BTC pair of the shared data folder (BTCUSDC and BTCUSD spot,
   30,240 one-minute candles each, moving together), config_btc.txt, baseline funding and
   liquidation on; each symbol alone (its share of the same wallet) and the two together,
   symbol-candles per second and the ratio portfolio / singles (1.00: the same speed per
   candle), of the best and of the median of --repeat runs (the modes' order alternating, the
   garbage of the run before collected first; a shared machine moves single runs by 10 % and
   more, so the instruction count below is the figure to compare):
   a. CAPITAL_RATIO 0.05, where margin never binds: the portfolio makes exactly the singles'
      fills (the fill counts are printed side by side), so the ratio is the cost of the
      account alone;
   b. the shipped config (a third of the wallet each): margin binds in the de-peg, so the two
      modes do different work (printed for reference);
   c. with --long-repeat R: four years of two symbols (the memory run's files, CAPITAL_RATIO
      0.02, where margin never binds), CPU seconds, best and median of R.
   With --instructions, case a is also counted in machine instructions under valgrind
   (deterministic: a busy or shared machine moves wall time by ±5 %, not instructions).
   Each portfolio line also says how many of its event minutes were played alone (stretches
   where the account provably cannot matter, backtest._Solo).
2. Memory, on four years of 1-minute candles per symbol (2,160,000 from 2022-01-01: the shared
   futures months chained, each symbol starting at another month), written once as CSV files into --work: a
   fresh process loads the files (the backtest's loader), runs one symbol alone and
   --years-symbols symbols as one account, and summarizes; its peak RSS in all, and over a
   process that only imports, per symbol-candle (bytes).

Figures only, no assertions.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAIR = ("binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv", "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv")
FOUR_YEARS = 2_160_000


def legs(data_dir: Path, capital_ratio: float | None = None) -> list:
    from backtest import PortfolioLeg
    from config import load_config
    from market.data import load_klines
    from market.funding import BASELINE_RATE, constant_funding
    from sim.exchange import DEFAULT_FILTERS
    cfg = load_config(REPO / "config_btc.txt")
    if capital_ratio is not None:
        cfg = cfg.with_overrides(capital_ratio=capital_ratio)
    fa = DEFAULT_FILTERS["BTCUSDC"]
    out = []
    for name, f in zip(PAIR, (fa, dataclasses.replace(fa, symbol="BTCUSD"))):
        c = load_klines([data_dir / name])
        out.append(PortfolioLeg(cfg, c, f, constant_funding(BASELINE_RATE, int(c.open_time[0]),
                                                            int(c.open_time[-1]))))
    return out


ALONE: list[int] = [0, 0]      # the last portfolio run's event minutes played alone, and all its event minutes


def run(mode: str, ls: list) -> tuple[float, list[int]]:
    """One run of `mode` ('single' or 'portfolio'): its elapsed seconds and fills per symbol."""
    from backtest import account_of, run_backtest, run_portfolio
    t0 = time.perf_counter()
    if mode == "portfolio":
        res = run_portfolio(ls)
        results = res.symbols
    else:
        wallet, capitals = account_of([leg.config for leg in ls])
        results = [run_backtest(leg.config, leg.candles, leg.filters, capital=cap, wallet=wallet,
                                funding=leg.funding) for leg, cap in zip(ls, capitals)]
    elapsed = time.perf_counter() - t0
    if mode == "portfolio":         # counted outside the timing: the bench's work, not the backtest's
        ALONE[:] = [res.minutes_alone, len({f.time_ms // 60_000 for r in results for f in r.fills})]
    return elapsed, [len(r.fills) for r in results]


def timed(ls: list, repeat: int, clock: Callable[[], float]) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """`repeat` runs of each mode on `clock`, the modes' order alternating and the garbage of the
    run before collected first (neither mode always follows the other); seconds and fills."""
    import gc
    times: dict[str, list[float]] = {"single": [], "portfolio": []}
    fills: dict[str, list[int]] = {}
    for k in range(repeat):
        for m in (("single", "portfolio") if k % 2 == 0 else ("portfolio", "single")):
            gc.collect()
            t0 = clock()
            _, fills[m] = run(m, ls)
            times[m].append(clock() - t0)
    return times, fills


def print_speed(title: str, n: int, times: dict[str, list[float]], fills: dict[str, list[int]], unit: str) -> None:
    import statistics
    best = {m: min(v) for m, v in times.items()}
    print(f"{title}: {n:,} symbol-candles, {unit}, best of {len(times['single'])}")
    print(f"  {'mode':<10} {'seconds':>10} {'candles/s':>12}  fills per symbol")
    for m in ("single", "portfolio"):
        print(f"  {m:<10} {best[m]:>10.3f} {n / best[m]:>12,.0f}  {fills[m]}")
    same = "the same fills" if fills["single"] == fills["portfolio"] else "different fills (margin binds)"
    median = statistics.median(times["single"]) / statistics.median(times["portfolio"])
    print(f"  speed per candle, portfolio / singles: {best['single'] / best['portfolio']:.2f}x best, {median:.2f}x "
          f"median ({same}); {ALONE[0]:,} event minutes played alone of about {ALONE[1]:,} with a fill")


def speed(data_dir: Path, repeat: int) -> None:
    for title, ratio in (("a. margin never binds (CAPITAL_RATIO 0.05)", 0.05), ("b. the shipped config", None)):
        ls = legs(data_dir, ratio)
        times, fills = timed(ls, repeat, time.perf_counter)
        print_speed(title, sum(len(leg.candles) for leg in ls), times, fills, "wall time")


def long_speed(data_dir: Path, work: Path, repeat: int) -> None:
    """Speed on four years of two symbols (the memory run's files) where margin never binds
    (CAPITAL_RATIO 0.02: at 0.05 the chained series' crashes make it bind): CPU seconds,
    best of `repeat`, and the ratio."""
    from backtest import PortfolioLeg
    from config import load_config
    from market.data import load_klines
    from market.funding import BASELINE_RATE, constant_funding
    from sim.exchange import DEFAULT_FILTERS
    files = write_four_years(data_dir, work, 2)
    cfg = load_config(REPO / "config_btc.txt").with_overrides(capital_ratio=0.02)
    ls = []
    for i, f in enumerate(files):
        c = load_klines([f])
        ls.append(PortfolioLeg(cfg, c, dataclasses.replace(DEFAULT_FILTERS["BTCUSDC"], symbol=f"SYM{i:02d}USDC"),
                               constant_funding(BASELINE_RATE, int(c.open_time[0]), int(c.open_time[-1]))))
    times, fills = timed(ls, repeat, time.process_time)
    print_speed("c. four years of two symbols, margin never binds (CAPITAL_RATIO 0.02)", 2 * FOUR_YEARS, times, fills,
                "CPU time")


def instructions(data_dir: Path) -> None:
    """Case a counted in machine instructions under valgrind's callgrind (noise-free where wall
    time on a shared machine is not): a process that runs a mode once and one that runs it
    three times, so the difference / 2 is one run without the imports and the loading."""
    import re
    import shutil
    import tempfile
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); from pathlib import Path; "
            f"import bench_portfolio as b; ls = b.legs(Path({str(data_dir)!r}), 0.05); "
            "[b.run(sys.argv[1], ls) for _ in range(int(sys.argv[2]))]")
    per_run = {}
    # Deterministic: one hash seed (set and dict orders move the count by ±1 %) and one BLAS
    # thread (OpenBLAS's idle workers spin inside the process and are counted).
    env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("single", "portfolio"):
            ir = []
            for k in (1, 3):
                out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg",
                                      sys.executable, "-c", code, mode, str(k)],
                                     capture_output=True, text=True, cwd=REPO, check=True, env=env)
                found = re.search(r"Collected : (\d+)", out.stderr)
                if found is None:
                    print(f"instructions: callgrind printed no count ({out.stderr[-200:]!r}); skipped")
                    return
                ir.append(int(found.group(1)))
            per_run[mode] = (ir[1] - ir[0]) / 2
    print("a. counted in instructions (callgrind, PYTHONHASHSEED 0, one BLAS thread), one run without imports "
          "and loading:")
    for mode, n in per_run.items():
        print(f"  {mode:<10} {n / 1e6:>10,.1f} M instructions")
    print(f"  portfolio / singles, instructions per symbol-candle: {per_run['portfolio'] / per_run['single']:.3f} "
          f"(speed {per_run['single'] / per_run['portfolio']:.2f}x)")


def write_four_years(data_dir: Path, work: Path, k: int) -> list[Path]:
    """k CSV files of FOUR_YEARS candles each (BTCUSDC-like prices at tick 0.1), made once."""
    import numpy as np
    from market.data import Candles, chain_candles, load_klines
    work.mkdir(parents=True, exist_ok=True)
    paths = [work / f"SYM{i:02d}-4y-2022.csv" for i in range(k)]
    todo = [p for p in paths if not p.is_file()]
    if not todo:
        return paths
    months = [load_klines([p]) for p in sorted(data_dir.glob("binance-futures-um-*.csv"))]
    for p in todo:
        i = paths.index(p)
        order = months[i % len(months):] + months[:i % len(months)]
        first = order[0]
        scale = 30_000.0 * (1 + 0.05 * i) / float(first.open[0])
        order[0] = Candles.from_arrays(first.open_time, first.open * scale, first.high * scale,
                                       first.low * scale, first.close * scale, first.volume)
        reps = FOUR_YEARS // sum(len(m) for m in order) + 1
        s = chain_candles(order * reps)
        times = 1_640_995_200_000 + 60_000 * np.arange(len(s), dtype=np.int64)    # every symbol on one axis
        s = Candles.from_arrays(times, s.open, s.high, s.low, s.close, s.volume)
        tmp = p.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write("open_time,open,high,low,close,volume\n")
            for a in range(0, FOUR_YEARS, 100_000):
                b = min(a + 100_000, FOUR_YEARS)
                rows = zip(s.open_time[a:b].tolist(), s.open[a:b].tolist(), s.high[a:b].tolist(),
                           s.low[a:b].tolist(), s.close[a:b].tolist(), s.volume[a:b].tolist())
                fh.writelines(f"{t},{o:.1f},{h:.1f},{lo:.1f},{c:.1f},{v:.3f}\n" for t, o, h, lo, c, v in rows)
        tmp.rename(p)
    return paths


def peak_rss(files: list[Path]) -> int:
    """Peak RSS (bytes) of a fresh process that loads `files` (none: only the imports), runs
    them (one: alone; several: one account) and summarizes."""
    code = f"""
import sys, dataclasses
sys.path.insert(0, {str(REPO)!r})
import backtest, market.data
from backtest import PortfolioLeg, run_backtest, run_portfolio, summarize, summarize_portfolio, account_of
from config import load_config
from market.data import load_klines
from market.funding import BASELINE_RATE, constant_funding
from sim.exchange import DEFAULT_FILTERS
files = {[str(f) for f in files]!r}
cfg = load_config({str(REPO / 'config_btc.txt')!r})
legs = []
for i, f in enumerate(files):
    c = load_klines([f])
    legs.append(PortfolioLeg(cfg.with_overrides(capital_ratio=min(0.33, 1 / len(files))), c,
                             dataclasses.replace(DEFAULT_FILTERS["BTCUSDC"], symbol=f"SYM{{i:02d}}USDC"),
                             constant_funding(BASELINE_RATE, int(c.open_time[0]), int(c.open_time[-1]))))
if len(legs) == 1:
    w, (cap,) = account_of([legs[0].config])
    r = run_backtest(legs[0].config, legs[0].candles, legs[0].filters, capital=cap, wallet=w, funding=legs[0].funding)
    summarize(r)
elif legs:
    summarize_portfolio(run_portfolio(legs))
# VmHWM: this process's own high-water mark (ru_maxrss would carry the forking parent's over exec)
print(next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM:")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def memory(data_dir: Path, work: Path, k: int) -> None:
    t0 = time.perf_counter()
    files = write_four_years(data_dir, work, max(k, 1))
    made = time.perf_counter() - t0
    base = peak_rss([])
    print(f"four years a symbol ({FOUR_YEARS:,} one-minute candles), files in {work} "
          f"({made:.0f} s to make or find); imports alone {base / 2**20:.0f} MB")
    print(f"  {'run':<22} {'symbol-candles':>15} {'peak RSS MB':>12} {'bytes/candle':>13} {'over imports':>13}")
    for files_run in ([files[0]], files[:k]) if k > 1 else ([files[0]],):
        n = FOUR_YEARS * len(files_run)
        peak = peak_rss(files_run)
        name = "one symbol" if len(files_run) == 1 else f"{len(files_run)} symbols, one account"
        print(f"  {name:<22} {n:>15,} {peak / 2**20:>12,.0f} {peak / n:>13.0f} {(peak - base) / n:>13.0f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("GM_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--years-symbols", type=int, default=2, help="symbols of four years in the memory run")
    p.add_argument("--work", default="/tmp/gm-bench-four-years", help="where the four-year CSV files are kept")
    p.add_argument("--instructions", action="store_true",
                   help="also count case a in instructions under valgrind (about three minutes)")
    p.add_argument("--long-repeat", type=int, default=0,
                   help="also time four years of two symbols, best of this many (0: skip; each run takes a minute)")
    a = p.parse_args()
    data_dir = Path(a.data_dir)
    if not all((data_dir / n).is_file() for n in PAIR) or not list(data_dir.glob("binance-futures-um-*.csv")):
        print(f"bench_portfolio.py: the March 2023 BTC pair or the futures months are absent from {data_dir}",
              file=sys.stderr)
        return 2
    speed(data_dir, a.repeat)
    print()
    if a.instructions:
        instructions(data_dir)
        print()
    if a.long_repeat:
        long_speed(data_dir, Path(a.work), a.long_repeat)
        print()
    memory(data_dir, Path(a.work), a.years_symbols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
