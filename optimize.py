#!/usr/bin/env python3
"""Search the strategy's parameters honestly, on one machine or many (Optuna).

    python optimize.py --config config_btc.txt --data CSV [CSV ...] --space optimize_space.txt
        [--trials N] [--jobs N] [--storage URL] [--study NAME] [--folds K] [--holdout F]
        [--objective NAME] [--max-drawdown PCT] [--seed S] [--out DIR]  + backtest.py's market flags
    python optimize.py --symbols BTCUSDC,ETHUSDC --data BTCUSDC=CSV[,CSV...] ETHUSDC=CSV[,...]
        [--config SYMBOL=FILE ...] --space FILE [--wallet W] ...   (the same flags)

Every trial is the real backtest (strategy, simulator, funding, liquidation) on the
in-sample candles.  The last `--holdout` of the candles never enters the search.  The
configuration written as `best_01.txt` is picked by a rule fixed in advance
(research/selection.py) from in-sample figures only, and then judged out of sample beside
every other feasible trial, the base config and buy-and-hold, with the deflated Sharpe
ratio and the probability of backtest overfitting (research/overfitting.py).

`--folds K` adds an anchored walk-forward: K studies, fold i tuned on segments 1..i and
tested on segment i+1, each fold's choice by the same rule, their tests joined into one
out-of-sample equity curve; the final study re-fits on all the in-sample candles.

Objectives: `return-drawdown` (default; NSGA-II: return up, max drawdown down), or one
score with TPE: `calmar` (return over drawdown), `sortino`, `sharpe` (daily equity),
`return`.  Always constrained: no liquidation, at least `--min-round-trips`, max
drawdown under `--max-drawdown` (default 30 %).

`--symbols` optimizes the ACCOUNT (SPEC §7): every trial is backtest.run_portfolio of the
symbols on one cross-margin wallet, on windows of their minutes joined once; the score is the
account's (return and drawdown of its equity against the wallet, its daily returns, any
liquidation infeasible).  The space may name a key for one symbol (`BTCUSDC.TP_PCT=...`); an
unprefixed key is one value shared by every symbol.  The choice is written one file per
symbol (best_01_<SYMBOL>.txt).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import math
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from backtest import (BacktestResult, Market, PortfolioLeg, PortfolioResult, account_of, add_market_arguments,
                      align_candles, apply_fee_overrides, load_market, load_portfolio, run_backtest, run_portfolio)
from config import ConfigError, GridConfig, format_config, load_config
from errors import Fatal
from market.brackets import BracketError
from market.data import DataError
from market.funding import FundingError
from research import identity
from research.identity import Identity, StudyMismatch
from research.report import AssetFigures, StudyResult, asset_figures, growth_of, verdict, write_outputs
from research.scoring import Score, account_daily_returns, daily_returns, score, score_account
from research.search_space import Space, SpaceError, build_config, build_configs, load_space
from research.selection import choose, feasible, in_sample, scored
from research.study_runner import GRACE_S, HEARTBEAT_S, Evaluation, Worker, complete_count, shown_url, storage_for
from sim.fill_model import FULL, FillModel

OBJECTIVES = ("return-drawdown", "calmar", "sortino", "sharpe", "return")
SINGLE_KEY = {"calmar": "return_over_dd", "sortino": "sortino_day", "sharpe": "sharpe_day", "return": "return_pct"}
WORST = {"return_pct": -100.0, "max_drawdown_pct": 100.0}
TRIAL_SLEEP_S = float(os.environ.get("GM_OPTIMIZE_TRIAL_SLEEP_S") or 0)   # test hook, 0 otherwise
DEFAULT_MAX_DRAWDOWN = 30.0


# ---------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Window:
    name: str
    start: int                  # candle indexes [start, end)
    end: int


@dataclass(frozen=True)
class Fold:
    number: int                 # 1..K, and K+1 for the final study
    train: Window
    test: Window | None         # the fold's next segment; the holdout for the final study (None without one)
    final: bool = False         # the study over all the in-sample candles: its choice is best_01


def plan_folds(n: int, holdout: float, folds: int) -> tuple[list[Fold], Window | None]:
    """The anchored walk-forward over the first (1 - holdout) of n candles, then the final
    study on all of them (tested on the holdout), and the holdout."""
    cut = n - int(round(n * holdout))
    hold = Window("holdout", cut, n) if cut < n else None
    out: list[Fold] = []
    if folds > 1:
        edges = [round(cut * k / (folds + 1)) for k in range(folds + 2)]
        out = [Fold(i, Window(f"fold {i} train", 0, edges[i]), Window(f"fold {i} test", edges[i], edges[i + 1]))
               for i in range(1, folds + 1)]
    out.append(Fold(len(out) + 1, Window("in-sample", 0, cut), hold, final=True))
    return out, hold


# ---------------------------------------------------------------------- evaluation
C = TypeVar("C")        # a trial's configuration: a GridConfig, or {symbol: GridConfig} for an account
R = TypeVar("R")        # what its backtest returns: a BacktestResult, or a PortfolioResult


class Scoring(ABC, Generic[C, R]):
    """What both objectives share: turning a trial's parameters into the backtest's Score on
    one window, its values and constraints.  Objective runs one symbol, AccountObjective the
    account of several (--symbols)."""
    name: str
    space: Space
    min_round_trips: int
    max_drawdown: float
    fill_model: FillModel

    @property
    def directions(self) -> list[StudyDirection]:
        return [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE] if self.name == "return-drawdown" \
            else [StudyDirection.MAXIMIZE]

    @property
    def single(self) -> bool:
        return self.name != "return-drawdown"

    def values(self, s: Score) -> list[float]:
        if self.name == "return-drawdown":
            return [s.return_pct, s.max_drawdown_pct]
        return [float(getattr(s, SINGLE_KEY[self.name]))]

    def constraints(self, s: Score) -> list[float]:
        """≤ 0 satisfied: the config's rules, no liquidation, enough round trips, the drawdown cap."""
        return [0.0, float(s.liquidations), float(self.min_round_trips - s.round_trips),
                s.max_drawdown_pct - self.max_drawdown]

    def evaluate(self, params: dict[str, Any], w: Window) -> Evaluation:
        conf, why = self.build(params)
        if conf is None:
            return self.infeasible({"infeasible": why})
        res = self.backtest(conf, w)
        s = self.score_of(res)
        values = self.values(s)
        # +inf is a real Sortino (no losing day); NaN or -inf is a broken run.
        if not all(math.isfinite(v) or v == math.inf for v in values):
            return self.infeasible({"infeasible": "a score is not a number", "score": s.as_dict()})
        if TRIAL_SLEEP_S:
            time.sleep(TRIAL_SLEEP_S)       # test hook: a trial long enough to kill a worker inside it
        # The daily returns let the report test the whole study for overfitting (PBO, DSR).
        # One string, not a list: samplers deep-copy every trial's attributes at each ask.
        daily = ",".join(f"{x:.10g}" for x in self.daily(res))
        return Evaluation(values, self.constraints(s), {"score": s.as_dict(), "daily": daily})

    def infeasible(self, attrs: dict[str, Any]) -> Evaluation:
        """The worst values and the first constraint (the config's own rules) violated."""
        worst = [WORST["return_pct"], WORST["max_drawdown_pct"]] if self.name == "return-drawdown" else [-1e9]
        return Evaluation(worst, [1.0, 0.0, 0.0, 0.0], attrs)

    # What each objective defines.
    @abstractmethod
    def build(self, params: dict[str, Any]) -> tuple[C | None, str]:
        """The trial's configuration; (None, the rule broken) when the draw breaks a config's rules."""

    @property
    @abstractmethod
    def base_conf(self) -> C:
        """The base configuration (--config; each symbol's with --symbols): a benchmark."""

    @abstractmethod
    def backtest(self, conf: C, w: Window) -> R:
        """The real backtest of `conf` on window `w` (started fresh: capital reset, grid centred)."""

    @abstractmethod
    def score_of(self, res: R) -> Score:
        """What the trial scored (research/scoring.py)."""

    @abstractmethod
    def daily(self, res: R) -> np.ndarray:
        """The equity's return over each whole day of the window."""

    @abstractmethod
    def curve(self, res: R) -> tuple[np.ndarray, np.ndarray, float]:
        """(minutes, equity, what it started from) of a backtest: the walk-forward joins these."""

    @property
    @abstractmethod
    def times(self) -> np.ndarray:
        """The open time of every candle the windows index."""

    @abstractmethod
    def asset_figures(self, w: Window) -> AssetFigures:
        """Buy-and-hold on window `w`: the benchmark every figure is read against."""

    @abstractmethod
    def benchmark(self, w: Window) -> np.ndarray:
        """Buy-and-hold's growth of 1 from the window's first close."""

    @abstractmethod
    def describe(self) -> str:
        """What is traded, for the report's first lines."""


@dataclass
class Objective(Scoring[GridConfig, BacktestResult]):
    """One symbol: each trial is run_backtest of its config on the window."""
    name: str
    base: GridConfig
    space: Space
    market: Market
    min_round_trips: int
    max_drawdown: float
    fill_model: FillModel = FULL
    wallet: float | None = None     # the account's (SPEC §7); None: the capital alone

    def build(self, params: dict[str, Any]) -> tuple[GridConfig | None, str]:
        return build_config(self.base, self.space, params)

    @property
    def base_conf(self) -> GridConfig:
        return self.base

    def backtest(self, conf: GridConfig, w: Window) -> BacktestResult:
        m = self.market
        # Candles.slice is a view: the worker's one copy of the candles serves every trial.
        return run_backtest(conf, m.candles.slice(w.start, w.end), m.filters, funding=m.funding, mark=m.mark,
                            brackets=m.brackets, liquidation=m.liquidation, fill_model=self.fill_model,
                            wallet=self.wallet)

    def score_of(self, res: BacktestResult) -> Score:
        return score(res)

    def daily(self, res: BacktestResult) -> np.ndarray:
        return daily_returns(res)

    def curve(self, res: BacktestResult) -> tuple[np.ndarray, np.ndarray, float]:
        return np.asarray(res.candles.open_time), np.asarray(res.equity), res.capital

    @property
    def times(self) -> np.ndarray:
        return self.market.candles.open_time

    def asset_figures(self, w: Window) -> AssetFigures:
        return asset_figures(self.market.candles, w)

    def benchmark(self, w: Window) -> np.ndarray:
        return growth_of(self.market.candles, w)

    def describe(self) -> str:
        return f"symbol {self.market.filters.symbol}, {len(self.market.candles):,} candles"


Configs = dict[str, GridConfig]         # an account's configuration: each symbol's, in --symbols order


@dataclass
class AccountObjective(Scoring[Configs, PortfolioResult]):
    """Several symbols on one wallet (--symbols, SPEC §7): each trial is run_portfolio of
    their configs on the window, scored as the account."""
    name: str
    bases: Configs
    space: Space
    legs: list[PortfolioLeg]        # each symbol's market, its candles on the joined minutes (align_candles)
    min_round_trips: int
    max_drawdown: float
    fill_model: FillModel
    wallet: float                   # the account's: --wallet, or the base configs' (account_of)
    liquidation: bool

    @property
    def symbols(self) -> list[str]:
        return list(self.bases)

    def build(self, params: dict[str, Any]) -> tuple[Configs | None, str]:
        return build_configs(self.bases, self.space, params)

    @property
    def base_conf(self) -> Configs:
        return self.bases

    def backtest(self, conf: Configs, w: Window) -> PortfolioResult:
        # Every leg is sliced at the same indexes of the joined minutes (views, no copy).
        legs = [dataclasses.replace(leg, config=conf[leg.filters.symbol], candles=leg.candles.slice(w.start, w.end))
                for leg in self.legs]
        return run_portfolio(legs, self.wallet, liquidation=self.liquidation, fill_model=self.fill_model)

    def score_of(self, res: PortfolioResult) -> Score:
        return score_account(res)

    def daily(self, res: PortfolioResult) -> np.ndarray:
        return account_daily_returns(res)

    def curve(self, res: PortfolioResult) -> tuple[np.ndarray, np.ndarray, float]:
        return np.asarray(res.times), np.asarray(res.equity), res.wallet

    @property
    def times(self) -> np.ndarray:
        return self.legs[0].candles.open_time

    def asset_figures(self, w: Window) -> AssetFigures:
        return asset_figures([leg.candles for leg in self.legs], w)

    def benchmark(self, w: Window) -> np.ndarray:
        return growth_of([leg.candles for leg in self.legs], w)

    def describe(self) -> str:
        _, capitals = account_of(list(self.bases.values()), self.wallet)
        caps = ", ".join(f"{sym} {cap:,.2f}" for sym, cap in zip(self.bases, capitals))
        return (f"account {'+'.join(self.bases)} on one cross-margin wallet of {self.wallet:,.2f} (capitals {caps}; "
                f"SPEC §7), {len(self.times):,} joined minutes")


# ---------------------------------------------------------------------- studies and workers
@dataclass
class Plan:
    args: argparse.Namespace
    objective: Scoring[Any, Any]    # Objective, or AccountObjective with --symbols
    folds: list[Fold]           # the walk-forward folds, then the final study
    holdout: Window | None
    study_base: str
    root: Path
    identity: Identity          # the parts every study of this run shares

    @property
    def final(self) -> Fold:
        return self.folds[-1]

    def study_name(self, fold: Fold) -> str:
        return self.study_base if fold.final else f"{self.study_base}-fold{fold.number}"

    def study_identity(self, fold: Fold) -> Identity:
        own = identity.window_dates(self.objective.times,
                                    [(fold.train.name, fold.train.start, fold.train.end)])
        return Identity({**self.identity.parts, "window": identity.digest(own)})

    def sampler(self, fold: Fold, worker: int = 0, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
        """Seeded: one job on a local storage (the journal file, SQLite) reproduces a study
        exactly.  Each fold draws from its own seed (the same seed would try the same
        candidates in every fold); each local worker takes its own (seed + its index), and
        a worker on a database shared by machines mixes in its host and process, so no two
        workers draw the same parameters."""
        seed = self.args.seed
        if seed is not None and not fold.final:
            seed = zlib.crc32(f"{seed}:fold{fold.number}".encode())
        if seed is not None and (worker or resumed_at):
            # A resumed study must not draw again what its first run drew with the same seed.
            seed = zlib.crc32(f"{seed}:{worker}:{resumed_at}".encode())
        if seed is not None and self.args.storage and not self.args.storage.startswith(("journal:", "sqlite:")):
            seed = zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}".encode())
        if len(self.objective.directions) == 2:
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def open_study(self, fold: Fold, worker: int = 0) -> tuple[optuna.Study, str]:
        """The fold's study, created on first use; a study made with other data, windows,
        settings or space is refused, naming what differs (its trials would not fit)."""
        storage, url = storage_for(self.args.storage, self.study_name(fold), self.root)
        want = self.objective.directions
        study = optuna.create_study(storage=storage, study_name=self.study_name(fold), load_if_exists=True,
                                    directions=want, sampler=self.sampler(fold, worker))
        if list(study.directions) != want:
            raise StudyMismatch(f"study {study.study_name} was made for another objective "
                                f"({len(study.directions)} objective(s)): give another --study")
        me = self.study_identity(fold)
        have = study.user_attrs.get(identity.ATTR)
        legacy = identity.OLD_ATTR in study.user_attrs or bool(study.get_trials(deepcopy=False))
        identity.check(study.study_name, have, me, legacy)
        if have is None:
            study.set_user_attr(identity.ATTR, me.parts)
        return study, url


def run_worker(plan: Plan, progress: Any = None, worker: int = 0) -> None:
    """This process's share of every fold's study, fold after fold (as on every machine)."""
    for fold in plan.folds:
        study, _ = plan.open_study(fold, worker)
        study.sampler = plan.sampler(fold, worker, resumed_at=len(study.get_trials(deepcopy=False)))
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


# ---------------------------------------------------------------------- judging the studies
_POOL_OBJECTIVE: Scoring[Any, Any] | None = None        # the forked pool's objective (set before the fork)


def _score_on(job: tuple[int, dict[str, Any], Window]) -> tuple[int, Score | None]:
    number, params, w = job
    obj = _POOL_OBJECTIVE
    assert obj is not None
    conf, _ = obj.build(params)
    return number, (obj.score_of(obj.backtest(conf, w)) if conf is not None else None)


def scores_on(plan: Plan, trials: list[FrozenTrial], w: Window) -> dict[int, Score]:
    """Every given trial re-run on window `w` (one backtest each), on --jobs processes."""
    global _POOL_OBJECTIVE
    _POOL_OBJECTIVE = plan.objective
    jobs = [(t.number, dict(t.params), w) for t in trials]
    if plan.args.jobs == 1 or len(jobs) < 8:
        done = [_score_on(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(plan.args.jobs) as pool:
            done = pool.map(_score_on, jobs, chunksize=max(1, len(jobs) // (4 * plan.args.jobs)))
    return {n: s for n, s in done if s is not None}


def config_of(plan: Plan, t: FrozenTrial) -> Any:
    """The trial's configuration (a GridConfig, or each symbol's)."""
    conf, why = plan.objective.build(t.params)
    if conf is None:                  # a feasible trial built its config when it ran
        raise StudyMismatch(f"trial {t.number} no longer builds a config ({why}): the space changed")
    return conf


def judge(plan: Plan, fold: Fold) -> StudyResult:
    """One study judged: the rule's choice, every feasible trial out of sample, the
    benchmarks on both windows, and the overfitting statistics."""
    from research import overfitting as ofit
    study, _ = plan.open_study(fold)
    trials = study.get_trials(deepcopy=False)
    obj = plan.objective
    choice = choose(trials, obj.single, obj.max_drawdown)
    ok = [t for t in trials if feasible(t) and scored(t)]
    r = StudyResult(name=study.study_name, fold=fold, trials=trials, choice=choice,
                    train=obj.asset_figures(fold.train), test=obj.asset_figures(fold.test) if fold.test else None)
    r.base_in = obj.score_of(obj.backtest(obj.base_conf, fold.train))
    if fold.test:
        r.base_out = obj.score_of(obj.backtest(obj.base_conf, fold.test))
        r.oos = scores_on(plan, ok, fold.test)
    if choice.chosen is not None:
        r.chosen_cfg = config_of(plan, choice.chosen)
    # Multiple testing: the chosen Sharpe against what this many unskilled trials would
    # show (DSR), and how often the in-sample best is below the median out of sample (PBO).
    with_daily = [t for t in trials if scored(t) and t.user_attrs.get("daily")]
    sharpes = [in_sample(t).sharpe_day for t in with_daily]
    if choice.chosen is not None and len(sharpes) >= 2:
        from research.selection import daily_of
        r.dsr = ofit.deflated_sharpe_ratio(ofit.sharpe_estimate(daily_of(choice.chosen)), sharpes)
    r.pbo, r.pbo_why = _pbo(with_daily)
    if r.oos:
        nums = [t.number for t in ok if t.number in r.oos]
        r.rank_corr = ofit.rank_correlation([in_sample(t).return_pct for t in ok if t.number in r.oos],
                                            [r.oos[n].return_pct for n in nums])
        pop = [r.oos[n].return_pct for n in nums]
        r.percentile = {t.number: ofit.percentile_of(r.oos[t.number].return_pct, pop)
                        for t in choice.front if t.number in r.oos}
    r.verdict = verdict(r)
    return r


def _pbo(trials: list[FrozenTrial]) -> tuple[Any, str]:
    """CSCV over the in-sample daily returns of every scored trial: as many blocks of at
    least two days as fit (an even number, 4 to 16)."""
    from research import overfitting as ofit
    from research.selection import daily_of
    if len(trials) < 2:
        return None, "fewer than 2 scored trials"
    m = np.column_stack([daily_of(t) for t in trials])
    blocks = min(16, (len(m) // 2) // 2 * 2)
    if blocks < 4:
        return None, f"{len(m)} whole days in-sample (CSCV needs 4 blocks of 2 days)"
    return ofit.pbo_cscv(m, blocks=blocks), ""


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optimize.py", description="Optimize the grid-martingale parameters "
                                "with Optuna, validated out of sample.")
    p.add_argument("--config", nargs="+", metavar="FILE", help="base config: keys not in the space come from it; "
                   "with --symbols, SYMBOL=FILE for any symbol whose config is not config_<short>.txt")
    p.add_argument("--symbols", help="optimize the account of several symbols on one wallet (SPEC §7), e.g. "
                   "BTCUSDC,ETHUSDC: --data SYMBOL=CSV[,CSV...] for each, or --from/--to")
    p.add_argument("--wallet", type=float, help="the account's wallet (default: INITIAL_CAPITAL / CAPITAL_RATIO, "
                   "the largest among the symbols; SPEC §7)")
    p.add_argument("--space", required=True, help="search space file (see optimize_space.txt)")
    p.add_argument("--direction", choices=["LONG", "SHORT"], type=str.upper, help="override TRADE_DIRECTION")
    p.add_argument("--capital", type=float, help="capital (default: INITIAL_CAPITAL)")
    p.add_argument("--trials", type=int, default=200, help="complete trials per study, all workers together "
                   "(default 200)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", help="Optuna storage: postgresql://… (workers on several machines join one study), "
                   "sqlite:///…, or journal:PATH (default: journal file optuna/<study>.log)")
    p.add_argument("--study", help="study name (default: <symbol>-<direction>-<objective>-<fingerprint of the data "
                   "and settings>; <SYM1>+<SYM2>-<objective>-<fingerprint> with --symbols)")
    p.add_argument("--folds", type=int, default=1, help="anchored walk-forward folds (default 1: none)")
    p.add_argument("--holdout", type=float, default=0.25, help="last share of the candles kept out of the search "
                   "(default 0.25)")
    p.add_argument("--objective", choices=OBJECTIVES, default="return-drawdown")
    p.add_argument("--min-round-trips", type=int, default=3, help="constraint (default 3)")
    p.add_argument("--max-drawdown", type=float, default=DEFAULT_MAX_DRAWDOWN, help="drawdown cap in %% for every "
                   f"objective: a trial over it is infeasible (default {DEFAULT_MAX_DRAWDOWN:g})")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (reproducible on one job)")
    p.add_argument("--out", default="optimize_out", help="output folder (default optimize_out)")
    p.add_argument("--fill-model", choices=["full", "volume"], default="full",
                   help="as backtest.py: full (default) or volume (at most --fill-share of each leg's volume)")
    p.add_argument("--fill-share", type=float, default=0.1)
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
    if not (0 < a.max_drawdown <= 100):
        raise ValueError(f"--max-drawdown must be a percentage in (0, 100] (got {a.max_drawdown:g})")
    if not (a.heartbeat > 0 and a.heartbeat_grace >= 3 * a.heartbeat):
        raise ValueError(f"--heartbeat-grace must be at least 3 heartbeats ({3 * a.heartbeat:g} s; "
                         f"got {a.heartbeat_grace:g})")
    if a.storage and a.storage.startswith("sqlite:") and a.jobs > 1:
        raise ValueError("--storage sqlite: one job only (SQLite cannot lock a trial for several workers); "
                         "use the default journal file or PostgreSQL for --jobs > 1")
    if a.folds == 1 and a.holdout == 0:
        print("optimize.py: note: --holdout 0 and no folds: nothing is tested out of sample", file=sys.stderr)


def run_identity(a: argparse.Namespace, base: GridConfig, space: Space, market: Market, fill: FillModel,
                 folds: list[Fold]) -> Identity:
    """The fingerprint of everything that decides a trial's score."""
    c, f = market.candles, market.filters
    wins = [(w.name, w.start, w.end) for fold in folds for w in (fold.train, fold.test) if w is not None]
    d = identity.digest
    return Identity({
        "data": d(c.open_time, c.open, c.high, c.low, c.close, c.volume, f.symbol, f.tick_size, f.step_size,
                  f.min_qty, f.min_notional),
        "windows": d(identity.window_dates(c.open_time, wins)),
        "base": d(format_config(base.with_overrides(maker_fee=0.0, taker_fee=0.0), "")),
        "fees": f"maker {base.maker_fee:g}, taker {base.taker_fee:g}",
        "funding": d(market.funding.times, market.funding.rates) if market.funding is not None else "none",
        "mark": d(market.mark.open_time, market.mark.high, market.mark.low, market.mark.close)
        if market.mark is not None else "none",
        "brackets": d(repr(market.brackets), market.liquidation),
        "constraints": f"min round trips {a.min_round_trips}, max drawdown {a.max_drawdown:g} %",
        "objective": a.objective,
        "space": d(space.fingerprint()),
        "fill_model": f"{fill.kind} {fill.share:g}",
        "wallet": f"{account_of([base], a.wallet)[0]:.8g}",
    })


def make_plan(a: argparse.Namespace) -> Plan:
    check_args(a)
    if a.symbols:
        return make_account_plan(a)
    if not a.config or len(a.config) != 1 or "=" in a.config[0]:
        raise ValueError("give one --config FILE (SYMBOL=FILE is for --symbols)")
    base = load_config(a.config[0])
    over = {k: v for k, v in (("trade_direction", a.direction), ("initial_capital", a.capital)) if v is not None}
    base = apply_fee_overrides(base.with_overrides(**over) if over else base, a)
    space = load_space(a.space, base)
    fill = FillModel.from_cli(a.fill_model, a.fill_share)
    market = load_market(a, prog="optimize.py")
    folds, hold = plan_folds(len(market.candles), a.holdout, a.folds)
    if min(f.train.end - f.train.start for f in folds) < 1440:
        raise ValueError(f"{len(market.candles):,} candles leave under a day to train on: fewer folds or less holdout")
    _import_scoring_libraries()
    wallet, _ = account_of([base], a.wallet)    # SPEC §7: the wallet live would need to give the base its capital
    objective = Objective(a.objective, base, space, market, a.min_round_trips, a.max_drawdown, fill, wallet)
    ident = run_identity(a, base, space, market, fill, folds)
    name = a.study or f"{market.filters.symbol}-{base.trade_direction}-{a.objective}-{ident.fingerprint}"
    return Plan(a, objective, folds, hold, name, Path.cwd(), ident)


def _import_scoring_libraries() -> None:
    for module in ("empyrical", "research.overfitting"):     # scoring's libraries (~1.8 s): imported once
        importlib.import_module(module)                    # here, shared by the forked workers


def make_account_plan(a: argparse.Namespace) -> Plan:
    """--symbols: each symbol's config and market as backtest.py --symbols loads them, their
    minutes joined once; every window is an index range of the joined minutes."""
    legs, liquidation = load_portfolio(a)
    bases = {leg.filters.symbol: leg.config for leg in legs}
    if len({(c.maker_fee, c.taker_fee) for c in bases.values()}) > 1:
        raise ValueError("the configs give different fees: Binance's fee rate is the account's (one MAKER_FEE "
                         "and TAKER_FEE for every symbol)")
    wallet, _ = account_of(list(bases.values()), a.wallet)
    space = load_space(a.space, bases)
    fill = FillModel.from_cli(a.fill_model, a.fill_share)
    times, joined = align_candles(legs)
    legs = [dataclasses.replace(leg, candles=c) for leg, c in zip(legs, joined)]
    folds, hold = plan_folds(len(times), a.holdout, a.folds)
    if min(f.train.end - f.train.start for f in folds) < 1440:
        raise ValueError(f"{len(times):,} minutes leave under a day to train on: fewer folds or less holdout")
    _import_scoring_libraries()
    objective = AccountObjective(a.objective, bases, space, legs, a.min_round_trips, a.max_drawdown, fill, wallet,
                                 liquidation)
    ident = account_identity(a, objective, folds)
    name = a.study or f"{'+'.join(bases)}-{a.objective}-{ident.fingerprint}"
    return Plan(a, objective, folds, hold, name, Path.cwd(), ident)


def account_identity(a: argparse.Namespace, obj: AccountObjective, folds: list[Fold]) -> Identity:
    """An account's fingerprint: run_identity's parts over every symbol, and the symbols."""
    d = identity.digest
    wins = [(w.name, w.start, w.end) for fold in folds for w in (fold.train, fold.test) if w is not None]
    first = next(iter(obj.bases.values()))
    return Identity({
        "symbols": ",".join(obj.bases),
        "data": d(*[x for leg in obj.legs for x in (
            leg.candles.open_time, leg.candles.open, leg.candles.high, leg.candles.low, leg.candles.close,
            leg.candles.volume, leg.filters.symbol, leg.filters.tick_size, leg.filters.step_size,
            leg.filters.min_qty, leg.filters.min_notional)]),
        "windows": d(identity.window_dates(obj.times, wins)),
        "base": d([[sym, format_config(c.with_overrides(maker_fee=0.0, taker_fee=0.0), "")]
                   for sym, c in obj.bases.items()]),
        "fees": f"maker {first.maker_fee:g}, taker {first.taker_fee:g}",
        "funding": d([d(leg.funding.times, leg.funding.rates) if leg.funding is not None else "none"
                      for leg in obj.legs]),
        "mark": d([d(leg.mark.open_time, leg.mark.high, leg.mark.low, leg.mark.close) if leg.mark is not None
                   else "none" for leg in obj.legs]),
        "brackets": d([repr(leg.brackets) for leg in obj.legs], obj.liquidation),
        "constraints": f"min round trips {a.min_round_trips}, max drawdown {a.max_drawdown:g} %",
        "objective": a.objective,
        "space": d(obj.space.fingerprint()),
        "fill_model": f"{obj.fill_model.kind} {obj.fill_model.share:g}",
        "wallet": f"{obj.wallet:.8g}",
    })


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
        _, url = plan.open_study(plan.final)
        results = [judge(plan, fold) for fold in plan.folds]
        written = write_outputs(plan, results, url)
    except KeyboardInterrupt:
        print("optimize.py: interrupted; the study is kept: run the same command to resume", file=sys.stderr)
        return 130
    except StudyMismatch as e:
        print(f"optimize.py: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:      # noqa: BLE001 - storage unreachable, a worker failed: one line
        print(f"optimize.py: error: {_one_line(e)}", file=sys.stderr)
        return 1
    print_headline(plan, results, written, elapsed, url)
    return 0


def print_headline(plan: Plan, results: list[StudyResult], written: list[Path], elapsed: float, url: str) -> None:
    held = sum(r.complete for r in results)
    final = results[-1]
    print(f"{held} complete trials held by {len(results)} stud{'y' if len(results) == 1 else 'ies'} "
          f"({plan.study_base}), {elapsed:.1f} s")
    print(f"VERDICT: {final.verdict}")
    for w in final.choice.warnings:
        print(f"WARNING: {w}")
    c = final.choice.chosen
    if c is not None:
        s = in_sample(c)
        line = f"chosen: trial {c.number} (rule: highest in-sample PSR under the {plan.objective.max_drawdown:g} % cap): " \
               f"in-sample {s.return_pct:+.2f} % / DD {s.max_drawdown_pct:.2f} %"
        if c.number in final.oos and final.test:
            o = final.oos[c.number]
            line += f"; {final.fold.test.name if final.fold.test else ''} {o.return_pct:+.2f} % / DD " \
                    f"{o.max_drawdown_pct:.2f} % (buy-and-hold {final.test.return_pct:+.2f} %)"
        print(line)
    out = plan.args.out
    print(f"{len(written)} file(s) in {out}/; report: {out}/report.md   open the study: optuna-dashboard {url}")


if __name__ == "__main__":
    sys.exit(main())
