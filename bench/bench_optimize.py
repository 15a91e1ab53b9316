#!/usr/bin/env python3
"""Optimizer throughput: trials/s on one month of 1-minute candles for 1 and 2 jobs, the
scaling ratio, and peak memory per worker.

Both runs evaluate the same trials: the parameter sets are drawn once (seeded) from
optimize_space.txt and queued in each study, so the ratio compares equal work (trials of
a grid martingale differ a lot in cost with their parameters).  Each run uses optimize.py's
own workers and its default storage (the journal file).

    python bench/bench_optimize.py [--data CSV] [--trials N]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

import optimize  # noqa: E402
from research.study_runner import complete_count  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "binance-futures-um-NEARUSDT-1m-2024-09.csv"
MARKET = ["--symbol", "NEARUSDT", "--tick-size", "0.001", "--step-size", "0.1"]


def draws(plan: optimize.Plan, n: int) -> list[dict]:
    """n parameter sets from the space, seeded, the same for every run."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11),
                                directions=plan.objective.directions)
    dist = plan.objective.space.distributions()
    return [study.ask(dist).params for _ in range(n)]


def peak_rss_mb(child: bool) -> float:
    who = resource.RUSAGE_CHILDREN if child else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def run(jobs: int, trials: int, data: Path, work: Path) -> tuple[float, float]:
    argv = ["--config", str(ROOT / "config_btc.txt"), "--space", str(ROOT / "optimize_space.txt"),
            "--data", str(data), *MARKET, "--trials", str(trials), "--jobs", str(jobs),
            "--study", f"bench-{jobs}", "--out", str(work / f"out{jobs}"),
            "--storage", f"journal:{work}/bench-{jobs}.log"]
    plan = optimize.make_plan(optimize.build_parser().parse_args(argv))
    plan.root = work
    study, _ = plan.open_study(plan.folds[0])
    for p in draws(plan, trials):
        study.enqueue_trial(p)
    t0 = time.perf_counter()
    optimize.run_local(plan)
    elapsed = time.perf_counter() - t0
    assert complete_count(study) == trials
    return trials / elapsed, elapsed


def _measure(jobs: int, trials: int, data: str, work: str, q) -> None:
    rate, elapsed = run(jobs, trials, Path(data), Path(work))
    q.put((rate, elapsed, peak_rss_mb(child=jobs > 1), peak_rss_mb(child=False)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--trials", type=int, default=400)
    a = p.parse_args()
    if not a.data.is_file():
        print(f"bench_optimize.py: {a.data} is absent", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for jobs in (1, 2):
            # Each measurement in a fresh process, so peak memory is that run's own.
            q = mp.get_context("fork").Queue()
            proc = mp.get_context("fork").Process(target=_measure, args=(jobs, a.trials, str(a.data), work, q))
            proc.start()
            results[jobs] = q.get()
            proc.join()
    print(f"optimizer on {a.data.name} ({a.trials} trials, the same parameter sets in both runs; "
          f"in-sample = the first 75 % of the month, return-drawdown, NSGA-II)")
    print(f"{'jobs':>4}  {'trials/s':>9}  {'elapsed s':>9}  {'peak RSS per worker MB':>23}")
    for jobs, (rate, elapsed, worker_mb, self_mb) in results.items():
        mb = worker_mb if jobs > 1 else self_mb
        print(f"{jobs:>4}  {rate:>9.1f}  {elapsed:>9.2f}  {mb:>23.0f}")
    print(f"scaling 2 jobs / 1 job: {results[2][0] / results[1][0]:.2f}x  (target >= 1.8x; target >= 30 trials/s "
          f"with 2 jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
