#!/usr/bin/env python3
"""Search the strategy's parameters honestly, on one machine or many (Optuna).

    python optimize.py --config config_btc.txt --data CSV [CSV ...] --space optimize_space.txt
        [--trials N] [--jobs N] [--storage URL] [--study NAME] [--folds K] [--holdout F]
        [--objective NAME] [--seed S] [--out DIR]  + backtest.py's market flags

Every trial is the real backtest (strategy, simulator, funding, liquidation) on the
in-sample candles.  The last `--holdout` of the candles never enters the search;
`--folds K` runs an anchored walk-forward (K studies, fold i tuned on segments 1..i and
tested on segment i+1).  Every reported configuration is re-run on the candles it was not
tuned on, and the report puts in- and out-of-sample side by side.

Objectives: `return-drawdown` (default; NSGA-II: return up, max drawdown down), or one
score with TPE: `calmar`, `sortino`, `sharpe` (daily equity), `return`, each under
`--max-drawdown`.  Always constrained: no liquidation, at least `--min-round-trips`.
"""
from __future__ import annotations

import argparse
import functools
import csv
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from backtest import BacktestResult, Market, add_market_arguments, apply_fee_overrides, load_market, run_backtest
from market.brackets import BracketError
from errors import BadInput, Fatal
from config import ConfigError, GridConfig, format_config, load_config
from market.funding import FundingError
from market.data import DataError
from research.scoring import Score, score
from research.search_space import Space, SpaceError, build_config, load_space
from research.study_runner import (GRACE_S, HEARTBEAT_S, Evaluation, Worker, complete_count, constraints_of, shown_url,
                          storage_for)

OBJECTIVES = ("return-drawdown", "calmar", "sortino", "sharpe", "return")
SINGLE_KEY = {"calmar": "calmar", "sortino": "sortino", "sharpe": "sharpe", "return": "return_pct"}
WORST = {"return_pct": -100.0, "max_drawdown_pct": 100.0}
TRIAL_SLEEP_S = float(os.environ.get("GM_OPTIMIZE_TRIAL_SLEEP_S") or 0)   # test hook, 0 otherwise
MAX_REPORTED = 10                # configurations written (the Pareto set's best by return)


# ---------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Window:
    name: str
    start: int                  # candle indexes [start, end)
    end: int


@dataclass(frozen=True)
class Fold:
    number: int                 # 1..K
    train: Window
    test: Window | None         # None: a single study without folds (its test is the holdout)


def plan_folds(n: int, holdout: float, folds: int) -> tuple[list[Fold], Window | None]:
    """Anchored walk-forward over the first (1 - holdout) of n candles, and the holdout."""
    cut = n - int(round(n * holdout))
    hold = Window("holdout", cut, n) if cut < n else None
    if folds <= 1:
        return [Fold(1, Window("in-sample", 0, cut), None)], hold
    edges = [round(cut * k / (folds + 1)) for k in range(folds + 2)]
    out = [Fold(i, Window(f"fold {i} train", 0, edges[i]), Window(f"fold {i} test", edges[i], edges[i + 1]))
           for i in range(1, folds + 1)]
    return out, hold


# ---------------------------------------------------------------------- evaluation
@dataclass
class Objective:
    """Turns a trial's parameters into the backtest's score on one window."""
    name: str
    base: GridConfig
    space: Space
    market: Market
    min_round_trips: int
    max_drawdown: float

    @property
    def directions(self) -> list[StudyDirection]:
        return [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE] if self.name == "return-drawdown" \
            else [StudyDirection.MAXIMIZE]

    def backtest(self, cfg: GridConfig, w: Window) -> BacktestResult:
        m = self.market
        # Candles.slice is a view: the worker's one copy of the candles serves every trial.
        return run_backtest(cfg, m.candles.slice(w.start, w.end), m.filters, funding=m.funding, mark=m.mark,
                            brackets=m.brackets, liquidation=m.liquidation)

    def values(self, s: Score) -> list[float]:
        if self.name == "return-drawdown":
            return [s.return_pct, s.max_drawdown_pct]
        return [float(getattr(s, SINGLE_KEY[self.name]))]

    def constraints(self, s: Score) -> list[float]:
        c = [0.0, float(s.liquidations), float(self.min_round_trips - s.round_trips)]
        if self.name != "return-drawdown":
            c.append(s.max_drawdown_pct - self.max_drawdown)
        return c

    def evaluate(self, params: dict[str, Any], w: Window) -> Evaluation:
        cfg, why = build_config(self.base, self.space, params)
        if cfg is None:
            return self.infeasible({"infeasible": why})
        s = score(self.backtest(cfg, w))
        values = self.values(s)
        if not all(math.isfinite(v) for v in values):
            return self.infeasible({"infeasible": "a score is not a finite number", "score": s.as_dict()})
        if TRIAL_SLEEP_S:
            time.sleep(TRIAL_SLEEP_S)       # test hook: a trial long enough to kill a worker inside it
        return Evaluation(values, self.constraints(s), {"score": s.as_dict()})

    def infeasible(self, attrs: dict[str, Any]) -> Evaluation:
        """The worst values and the first constraint (the config's own rules) violated."""
        worst = [WORST["return_pct"], WORST["max_drawdown_pct"]] if self.name == "return-drawdown" else [-1e9]
        n = 3 if self.name == "return-drawdown" else 4          # as constraints() gives them
        return Evaluation(worst, [1.0] + [0.0] * (n - 1), attrs)


def feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(c <= 0 for c in constraints_of(t))


def chosen(study: optuna.Study, single: bool) -> list[FrozenTrial]:
    """The reported trials: the feasible Pareto set (best return first), or the best three."""
    ok = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    if single:
        return sorted(ok, key=lambda t: -t.values[0])[:3]
    front = [t for t in ok if not any(_dominates(o, t) for o in ok)]
    seen, out = set(), []
    for t in sorted(front, key=lambda t: (-t.values[0], t.values[1])):
        key = tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:MAX_REPORTED]


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    return (a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
            and (a.values[0] > b.values[0] or a.values[1] < b.values[1]))


# ---------------------------------------------------------------------- studies and workers
class StudyMismatch(BadInput):
    """A --study that exists with another objective or space."""

@dataclass
class Plan:
    args: argparse.Namespace
    objective: Objective
    folds: list[Fold]
    holdout: Window | None
    study_base: str
    root: Path

    def study_name(self, fold: Fold) -> str:
        return self.study_base if len(self.folds) == 1 else f"{self.study_base}-fold{fold.number}"

    def sampler(self, worker: int = 0, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
        """Seeded: one job on a local storage (the journal file, SQLite) reproduces a study
        exactly.  Each local worker takes its own seed (seed + its index), and a worker on a
        database shared by machines mixes in its host and process, so no two workers draw
        the same parameters."""
        seed = self.args.seed
        if seed is not None and (worker or resumed_at):
            # A resumed study must not draw again what its first run drew with the same seed.
            seed = zlib.crc32(f"{seed}:{worker}:{resumed_at}".encode())
        if seed is not None and self.args.storage and not self.args.storage.startswith(("journal:", "sqlite:")):
            seed = zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}".encode())
        if len(self.objective.directions) == 2:
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def open_study(self, fold: Fold, worker: int = 0) -> tuple[optuna.Study, str]:
        """The fold's study, created on first use; a study made for another objective or
        space is refused (its trials would not fit)."""
        storage, url = storage_for(self.args.storage, self.study_name(fold), self.root)
        want = self.objective.directions
        study = optuna.create_study(storage=storage, study_name=self.study_name(fold), load_if_exists=True,
                                    directions=want, sampler=self.sampler(worker))
        if list(study.directions) != want:
            raise StudyMismatch(f"study {study.study_name} was made for another objective "
                                f"({len(study.directions)} objective(s)): give another --study")
        fingerprint = self.objective.space.fingerprint()
        have = study.user_attrs.get("space")
        if have is None:
            study.set_user_attr("space", fingerprint)
        elif have != fingerprint:
            raise StudyMismatch(f"study {study.study_name} was made with another space file: give another --study "
                                f"(or the space it was made with)")
        return study, url


def run_worker(plan: Plan, progress: Any = None, worker: int = 0) -> None:
    """This process's share of every fold's study, fold after fold (as on every machine)."""
    for fold in plan.folds:
        study, _ = plan.open_study(fold, worker)
        study.sampler = plan.sampler(worker, resumed_at=len(study.get_trials(deepcopy=False)))
        Worker(study, plan.args.trials, functools.partial(plan.objective.evaluate, w=fold.train),
               plan.objective.space.distributions(), heartbeat_s=plan.args.heartbeat,
               grace_s=plan.args.heartbeat_grace, on_trial=progress).run()


def _child(plan: Plan, worker: int) -> None:
    # A fresh storage connection per process (none is inherited across the fork).  Ctrl-C
    # is the parent's to handle (it stops the workers): no traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run_worker(plan, worker=worker)
    except Exception as e:      # noqa: BLE001 - one line, not a traceback
        print(f"optimize.py: worker {worker}: {_one_line(e)}", file=sys.stderr)
        sys.exit(1)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {shown_url(' '.join(str(e).split()))}"[:400]


def run_local(plan: Plan) -> None:
    """--jobs N worker processes here (the candles loaded once, shared by fork); a progress
    bar on a terminal, counting complete trials of all folds."""
    from tqdm import tqdm
    total = plan.args.trials * len(plan.folds)
    bar = tqdm(total=total, desc="trials", unit="trial", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    if plan.args.jobs == 1:
        run_worker(plan, progress=lambda: bar.update(1))
        bar.close()
        return
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_child, args=(plan, i), name=f"optimize-worker-{i}") for i in range(plan.args.jobs)]
    for p in procs:
        p.start()
    try:
        studies = [plan.open_study(f)[0] for f in plan.folds] if not bar.disable else []
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            if studies:
                done = sum(complete_count(s) for s in studies)
                bar.update(min(done, total) - bar.n)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()       # their running trials are retried after the grace on resume
        raise
    finally:
        for p in procs:
            p.join()
        bar.close()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise Fatal(f"{len(bad)} worker process(es) failed (exit codes {bad}); run again to resume")


# ---------------------------------------------------------------------- report
@dataclass
class Reported:
    fold: Fold
    trial: FrozenTrial
    cfg: GridConfig
    in_sample: Score
    out_of_sample: dict[str, Score] = field(default_factory=dict)


def reevaluate(plan: Plan) -> list[Reported]:
    out = []
    for fold in plan.folds:
        study, _ = plan.open_study(fold)
        for t in chosen(study, len(plan.objective.directions) == 1):
            cfg, why = build_config(plan.objective.base, plan.objective.space, t.params)
            if cfg is None:                   # a chosen trial was feasible when it ran
                raise StudyMismatch(f"trial {t.number} no longer builds a config ({why}): the space changed")
            r = Reported(fold, t, cfg, score(plan.objective.backtest(cfg, fold.train)))
            for w in ([fold.test] if fold.test else []) + ([plan.holdout] if plan.holdout and fold is plan.folds[-1]
                                                           else []):
                r.out_of_sample[w.name] = score(plan.objective.backtest(cfg, w))
            out.append(r)
    return out


def _in_sample_name(fold: Fold) -> str:
    return "in-sample" if fold.train.name == "in-sample" else f"in-sample ({fold.train.name})"


def _figures(s: Score) -> str:
    return (f"return {s.return_pct:+.2f} %, max drawdown {s.max_drawdown_pct:.2f} %, Calmar {s.calmar:.2f}, "
            f"Sharpe {s.sharpe:.2f}, {s.round_trips} round trips, {s.liquidations} liquidations")


def write_outputs(plan: Plan, reported: list[Reported], url: str) -> list[Path]:
    out = Path(plan.args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("best_*.txt"):
        old.unlink()            # an earlier run's configurations are not this one's
    final = [r for r in reported if r.fold is plan.folds[-1]]
    configs = []
    for k, r in enumerate(final, start=1):
        header = [f"optimize.py: study {plan.study_name(r.fold)}, trial {r.trial.number}, "
                  f"objective {plan.objective.name}", f"{_in_sample_name(r.fold)}: {_figures(r.in_sample)}"]
        header += [f"out-of-sample ({name}): {_figures(s)}" for name, s in r.out_of_sample.items()]
        path = out / f"best_{k:02d}.txt"
        path.write_text(format_config(r.cfg, "\n".join(header)), encoding="utf-8")
        configs.append(path)
    write_trials_csv(plan, out / "trials.csv")
    write_pareto_png(plan, final, out / "pareto.png")
    (out / "report.md").write_text(report_md(plan, reported, configs, url), encoding="utf-8")
    return configs


def write_trials_csv(plan: Plan, path: Path) -> None:
    names = plan.objective.space.names
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        obj_cols = ["return_pct", "max_drawdown_pct"] if plan.objective.name == "return-drawdown" else \
            [plan.objective.name]
        w.writerow(["study", "number", "state", *names, *obj_cols, "constraints", "feasible", "infeasible",
                    "round_trips", "liquidations", "worker", "retry_of"])
        for fold in plan.folds:
            study, _ = plan.open_study(fold)
            for t in study.get_trials(deepcopy=False):
                sc = t.user_attrs.get("score", {})
                w.writerow([study.study_name, t.number, t.state.name, *[t.params.get(n, "") for n in names],
                            *(t.values or [""] * len(obj_cols)), ";".join(f"{c:g}" for c in constraints_of(t)),
                            int(feasible(t)), t.user_attrs.get("infeasible", ""), sc.get("round_trips", ""),
                            sc.get("liquidations", ""), t.user_attrs.get("worker", ""),
                            t.user_attrs.get("retry_of", "")])


def write_pareto_png(plan: Plan, final: list[Reported], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    study, _ = plan.open_study(plan.folds[-1])
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and "score" in t.user_attrs]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for ok, color, label in ((False, "#bbbbbb", "infeasible (liquidated / too few round trips / over the cap)"),
                             (True, "#4575b4", "feasible trials, in-sample")):
        pts = [(t.user_attrs["score"]["max_drawdown_pct"], t.user_attrs["score"]["return_pct"])
               for t in done if feasible(t) == ok]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=10, color=color, label=label, alpha=0.7)
    for r in final:
        ax.scatter([r.in_sample.max_drawdown_pct], [r.in_sample.return_pct], s=40, color="#1a9850", zorder=3)
        for s in r.out_of_sample.values():
            ax.scatter([s.max_drawdown_pct], [s.return_pct], marker="x", s=50, color="#d73027", zorder=4)
            ax.plot([r.in_sample.max_drawdown_pct, s.max_drawdown_pct], [r.in_sample.return_pct, s.return_pct],
                    color="#d73027", lw=0.6, alpha=0.6)
    ax.scatter([], [], s=40, color="#1a9850", label="reported, in-sample")
    ax.scatter([], [], marker="x", s=50, color="#d73027", label="reported, out-of-sample")
    ax.set_xlabel("max drawdown %")
    ax.set_ylabel("return %")
    ax.set_title(f"{plan.study_name(plan.folds[-1])}: return against drawdown")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_md(plan: Plan, reported: list[Reported], configs: list[Path], url: str) -> str:
    a, m = plan.args, plan.objective.market
    lines = [f"# Optimization report: {plan.study_base}", "",
             f"- symbol {m.filters.symbol}, {len(m.candles):,} candles, objective `{plan.objective.name}`, "
             f"{a.trials} trials per study, seed {a.seed}",
             "- windows: " + "; ".join(f"{f.train.name} {f.train.end - f.train.start:,}" +
                                        (f", {f.test.name} {f.test.end - f.test.start:,}" if f.test else "")
                                        for f in plan.folds) +
             (f"; holdout {plan.holdout.end - plan.holdout.start:,} candles" if plan.holdout else "; no holdout"),
             f"- constraints: no liquidation, at least {a.min_round_trips} round trips" +
             (f", max drawdown ≤ {a.max_drawdown} %" if plan.objective.name != "return-drawdown" else ""),
             f"- storage: `{url}`", ""]
    for fold in plan.folds:
        study, _ = plan.open_study(fold)
        trials = study.get_trials(deepcopy=False)
        n_ok = sum(feasible(t) for t in trials)
        lines += [f"## {plan.study_name(fold)}", "",
                  f"{sum(t.state == TrialState.COMPLETE for t in trials)} complete trials, {n_ok} feasible.", "",
                  "| trial | window | return % | max DD % | Calmar | Sharpe | round trips | liquidations |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in (x for x in reported if x.fold is fold):
            for name, s in [(_in_sample_name(fold), r.in_sample), *r.out_of_sample.items()]:
                lines.append(f"| {r.trial.number} | {name} | {s.return_pct:+.2f} | {s.max_drawdown_pct:.2f} | "
                             f"{s.calmar:.2f} | {s.sharpe:.2f} | {s.round_trips} | {s.liquidations} |")
        lines.append("")
    if configs:
        lines += ["## Configurations", ""] + [f"- `{p.name}`: `python backtest.py --config {p} ...`" for p in configs]
    else:
        lines += ["No feasible configuration: widen the space or relax the constraints."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optimize.py", description="Optimize the grid-martingale parameters "
                                "with Optuna, validated out of sample.")
    p.add_argument("--config", required=True, help="base config: keys not in the space come from it")
    p.add_argument("--space", required=True, help="search space file (see optimize_space.txt)")
    p.add_argument("--direction", choices=["LONG", "SHORT"], type=str.upper, help="override TRADE_DIRECTION")
    p.add_argument("--capital", type=float, help="capital (default: INITIAL_CAPITAL)")
    p.add_argument("--trials", type=int, default=200, help="complete trials per study, all workers together "
                   "(default 200)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", help="Optuna storage: postgresql://… (workers on several machines join one study), "
                   "sqlite:///…, or journal:PATH (default: journal file optuna/<study>.log)")
    p.add_argument("--study", help="study name (default: <symbol>-<direction>-<objective>)")
    p.add_argument("--folds", type=int, default=1, help="anchored walk-forward folds (default 1: none)")
    p.add_argument("--holdout", type=float, default=0.25, help="last share of the candles kept out of the search "
                   "(default 0.25)")
    p.add_argument("--objective", choices=OBJECTIVES, default="return-drawdown")
    p.add_argument("--min-round-trips", type=int, default=3, help="constraint (default 3)")
    p.add_argument("--max-drawdown", type=float, default=50.0, help="single objectives: drawdown cap in %% "
                   "(default 50)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (reproducible on one job)")
    p.add_argument("--out", default="optimize_out", help="output folder (default optimize_out)")
    p.add_argument("--heartbeat", type=float, default=HEARTBEAT_S, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-grace", type=float, default=GRACE_S,
                   help=f"seconds a running trial's worker may stay silent before it is retried (default {GRACE_S:g})")
    add_market_arguments(p)
    return p


def check_args(a: argparse.Namespace) -> None:
    if a.trials < 1:
        raise ValueError(f"--trials must be at least 1 (got {a.trials})")
    if not 1 <= a.jobs <= 64:
        raise ValueError(f"--jobs must be 1..64 (got {a.jobs})")
    if not 1 <= a.folds <= 20:
        raise ValueError(f"--folds must be 1..20 (got {a.folds})")
    if not (0 <= a.holdout < 0.9) or not math.isfinite(a.holdout):
        raise ValueError(f"--holdout must be a share in [0, 0.9) (got {a.holdout})")
    if not (a.heartbeat > 0 and a.heartbeat_grace >= 3 * a.heartbeat):
        raise ValueError(f"--heartbeat-grace must be at least 3 heartbeats ({3 * a.heartbeat:g} s; "
                         f"got {a.heartbeat_grace:g})")
    if a.storage and a.storage.startswith("sqlite:") and a.jobs > 1:
        raise ValueError("--storage sqlite: one job only (SQLite cannot lock a trial for several workers); "
                         "use the default journal file or PostgreSQL for --jobs > 1")
    if a.folds == 1 and a.holdout == 0:
        print("optimize.py: note: --holdout 0 and no folds: nothing is tested out of sample", file=sys.stderr)


def make_plan(a: argparse.Namespace) -> Plan:
    check_args(a)
    base = load_config(a.config)
    over = {k: v for k, v in (("trade_direction", a.direction), ("initial_capital", a.capital)) if v is not None}
    base = apply_fee_overrides(base.with_overrides(**over) if over else base, a)
    space = load_space(a.space, base)
    market = load_market(a, prog="optimize.py")
    folds, hold = plan_folds(len(market.candles), a.holdout, a.folds)
    if min(f.train.end - f.train.start for f in folds) < 1440:
        raise ValueError(f"{len(market.candles):,} candles leave under a day to train on: fewer folds or less holdout")
    objective = Objective(a.objective, base, space, market, a.min_round_trips, a.max_drawdown)
    name = a.study or f"{market.filters.symbol}-{base.trade_direction}-{a.objective}"
    return Plan(a, objective, folds, hold, name, Path.cwd())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except (ConfigError, SpaceError, DataError, FundingError, BracketError, ValueError) as e:
        print(f"optimize.py: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        for fold in plan.folds:
            plan.open_study(fold)           # a bad storage or a mismatched study: said before any work
        run_local(plan)
        elapsed = time.perf_counter() - t0
        _, url = plan.open_study(plan.folds[-1])
        reported = reevaluate(plan)
        configs = write_outputs(plan, reported, url)
    except KeyboardInterrupt:
        print("optimize.py: interrupted; the study is kept: run the same command to resume", file=sys.stderr)
        return 130
    except StudyMismatch as e:
        print(f"optimize.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:      # noqa: BLE001 - storage unreachable, a worker failed: one line
        print(f"optimize.py: error: {_one_line(e)}", file=sys.stderr)
        return 1
    print(f"{args.trials * len(plan.folds)} trials in {len(plan.folds)} stud{'y' if len(plan.folds) == 1 else 'ies'} "
          f"({plan.study_base}), {elapsed:.1f} s; {len(configs)} configuration(s) in {args.out}/")
    for r in (x for x in reported if x.fold is plan.folds[-1]):
        oos = "; ".join(f"{n}: {s.return_pct:+.2f} % / DD {s.max_drawdown_pct:.2f} %" for n, s in r.out_of_sample.items())
        print(f"  trial {r.trial.number}: in-sample {r.in_sample.return_pct:+.2f} % / DD "
              f"{r.in_sample.max_drawdown_pct:.2f} %" + (f"; {oos}" if oos else ""))
    print(f"report: {args.out}/report.md   open the study: optuna-dashboard {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
