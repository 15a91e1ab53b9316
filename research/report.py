"""What optimize.py writes: the report a user cannot misread (issue 21).

- **report.md**: the verdict first, then the warnings; each window's dates, the asset's
  return and volatility; for every study, the chosen configuration beside the base
  config, the median feasible trial and buy-and-hold, in and out of sample; the in/out
  rank correlation, the chosen one's out-of-sample percentile, the deflated Sharpe ratio
  and the probability of backtest overfitting; the walk-forward as one result.
- **trials.csv**: every trial, in-sample and (feasible ones) out-of-sample figures.
- **best_01.txt**: the rule's choice (research/selection.py); best_02… the rest of the
  front in the rule's order, for reference.  For an account (--symbols): one file per
  symbol, best_01_<SYMBOL>.txt, each with the account's figures.
- **pareto.png**, **tearsheet.png** (the choice on the holdout), **tearsheet_in_sample.png**,
  **walk_forward.png** (the folds' tests joined).  An account's tearsheet is the account's
  (`account_tearsheet_figure`): its equity, drawdown, daily returns, margin ratio and each
  symbol's exposure.

A window under 30 days shows its own figures (return, drawdown, their ratio, Sharpe and
Sortino per day); yearly ratios only from 30 days on (research/scoring.py).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from backtest import PortfolioResult, account_of, summarize
from config import GridConfig, format_config
from market.data import Candles
from research.scoring import DAYS_PER_YEAR, MIN_ANNUAL_DAYS, Score, day_ends
from research.selection import Choice, feasible, in_sample, psr_of, scored
from research.study_runner import constraints_of

PBO_OVERFIT = 0.5           # PBO at or above: the in-sample best is below the median out of sample as often as not
DSR_LUCK = 0.5              # DSR below: the chosen Sharpe is likelier luck than skill among this many trials
DSR_SKILL = 0.95            # DSR from: skill shown at 95 %
RHO_WEAK = 0.3              # in/out rank correlation under: the in-sample ranking barely predicts out of sample


# ---------------------------------------------------------------------- the facts of a run
class WindowLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class FoldLike(Protocol):
    number: int
    train: Any
    test: Any
    final: bool


class PlanLike(Protocol):
    """What the report reads of optimize.Plan."""
    args: Any
    objective: Any
    study_base: str
    identity: Any
    folds: Any

    def study_name(self, fold: Any) -> str: ...


@dataclass(frozen=True)
class AssetFigures:
    """A window's dates and what the asset itself did (buy-and-hold, 1×, from the first close)."""
    name: str
    start_ms: int
    end_ms: int
    days: float
    return_pct: float
    max_drawdown_pct: float
    vol_pct: float              # daily volatility; yearly (× √365) from MIN_ANNUAL_DAYS days
    sharpe_day: float
    label: str = "buy-and-hold (1×)"

    @property
    def yearly(self) -> bool:
        return self.days >= MIN_ANNUAL_DAYS


def asset_figures(candles: Candles | Sequence[Candles], w: WindowLike) -> AssetFigures:
    """Buy-and-hold of one symbol, or of an equal-weight basket of several (an account's
    symbols, their candles on the same minutes), from the window's first close."""
    if isinstance(candles, Candles):
        c = candles.slice(w.start, w.end)
        close, low, label = np.asarray(c.close, dtype=float), np.asarray(c.low), "buy-and-hold (1×)"
    else:
        c = candles[0].slice(w.start, w.end)
        close, low = _basket(candles, w)
        label = "buy-and-hold (1×, equal weights)"
    return _figures(c, close, low, w.name, label)


def growth_of(candles: Candles | Sequence[Candles], w: WindowLike) -> np.ndarray:
    """Buy-and-hold's growth of 1 at each close of window `w` (one symbol, or the basket)."""
    if isinstance(candles, Candles):
        close = np.asarray(candles.slice(w.start, w.end).close, dtype=float)
        return close / close[0]
    return _basket(candles, w)[0]


def _basket(candles: Sequence[Candles], w: WindowLike) -> tuple[np.ndarray, np.ndarray]:
    """An equal-weight basket bought at the window's first closes: its value at each close and
    at each minute's lows (every symbol at its low at once: the worst case, as the account's)."""
    cs = [c.slice(w.start, w.end) for c in candles]
    close = np.mean([np.asarray(c.close) / float(c.close[0]) for c in cs], axis=0)
    low = np.mean([np.asarray(c.low) / float(c.close[0]) for c in cs], axis=0)
    return close, low


def _figures(c: Candles, close: np.ndarray, low: np.ndarray, name: str, label: str) -> AssetFigures:
    from research.overfitting import sharpe_estimate
    peak = np.maximum.accumulate(close)
    dd = float(((peak - low) / peak).max() * 100) if len(close) else 0.0
    pts = np.concatenate(([close[0]], close[day_ends(c.open_time)]))
    daily = np.diff(pts) / pts[:-1]
    days = len(c) / 1440.0
    vol = float(np.std(daily, ddof=1)) * 100 if len(daily) > 1 else math.nan
    if days >= MIN_ANNUAL_DAYS:
        vol *= math.sqrt(DAYS_PER_YEAR)
    return AssetFigures(name, int(c.open_time[0]), int(c.open_time[-1]) + 60_000, days,
                        (float(close[-1]) / float(close[0]) - 1) * 100, dd, vol, sharpe_estimate(daily).sr, label)


@dataclass
class StudyResult:
    """One study judged (optimize.judge)."""
    name: str
    fold: Any
    trials: list[FrozenTrial]
    choice: Choice
    train: AssetFigures
    test: AssetFigures | None
    base_in: Score | None = None
    base_out: Score | None = None
    oos: dict[int, Score] = field(default_factory=dict)      # every feasible trial on the test window
    chosen_cfg: Any = None                                   # a GridConfig, or {symbol: GridConfig} (an account)
    dsr: Any = None                                          # overfitting.DeflatedSharpe
    pbo: Any = None                                          # overfitting.Overfitting
    pbo_why: str = ""
    rank_corr: float = math.nan
    percentile: dict[int, float] = field(default_factory=dict)
    verdict: str = ""

    @property
    def complete(self) -> int:
        return sum(t.state == TrialState.COMPLETE for t in self.trials)

    @property
    def feasible(self) -> list[FrozenTrial]:
        return [t for t in self.trials if feasible(t) and scored(t)]

    def median(self, out: bool) -> Score | None:
        scores = [self.oos[t.number] for t in self.feasible if t.number in self.oos] if out \
            else [in_sample(t) for t in self.feasible]
        if not scores:
            return None
        d = {k: float(np.median([getattr(s, k) for s in scores])) for k in Score.__dataclass_fields__}
        return Score.from_dict(d)


def verdict(r: StudyResult) -> str:
    """One line a user cannot miss: LIKELY OVERFIT, NOT SHOWN TO BE SKILL, UNTESTED or no
    sign of overfitting, with the figures that decided it and the chosen one's result out
    of sample against buy-and-hold and the median trial."""
    c = r.choice.chosen
    if c is None:
        return "NOTHING CHOSEN: no feasible configuration"
    overfit, weak, facts = [], [], []
    if r.pbo is not None:
        facts.append(f"PBO {r.pbo.pbo:.2f}")
        if r.pbo.pbo >= PBO_OVERFIT:
            overfit.append(f"PBO {r.pbo.pbo:.2f} ≥ {PBO_OVERFIT}")
    if r.dsr is not None and math.isfinite(r.dsr.dsr):
        facts.append(f"deflated Sharpe {r.dsr.dsr:.2f}")
        if r.dsr.dsr < DSR_LUCK:
            overfit.append(f"deflated Sharpe {r.dsr.dsr:.2f} < {DSR_LUCK}")
        elif r.dsr.dsr < DSR_SKILL:
            weak.append(f"deflated Sharpe {r.dsr.dsr:.2f} < {DSR_SKILL}")
    if math.isfinite(r.rank_corr):
        facts.append(f"in/out rank correlation {r.rank_corr:+.2f}")
        if r.rank_corr < 0:
            overfit.append(f"in/out rank correlation {r.rank_corr:+.2f} < 0")
        elif r.rank_corr < RHO_WEAK:
            weak.append(f"in/out rank correlation {r.rank_corr:+.2f} < {RHO_WEAK}")
    pct = r.percentile.get(c.number)
    if pct is not None and pct < 50:
        weak.append(f"below the median trial out of sample (percentile {pct:.0f})")
    if overfit:
        head = "LIKELY OVERFIT (" + "; ".join(overfit) + "): do not trust the in-sample figures"
    elif r.dsr is None or not math.isfinite(r.dsr.dsr) or r.pbo is None:
        head = "UNTESTED: too few trials or days to tell skill from luck (" + ("; ".join(facts) or "no statistic") + ")"
    elif weak:
        head = "NOT SHOWN TO BE SKILL (" + "; ".join(weak) + ")"
    else:
        head = "no sign of overfitting (" + "; ".join(facts) + ")"
    if c.number in r.oos and r.test is not None:
        o, med = r.oos[c.number], r.median(True)
        head += (f"; out of sample {o.return_pct:+.2f} % against buy-and-hold {r.test.return_pct:+.2f} %"
                 + (f" and the median trial {med.return_pct:+.2f} %" if med is not None else ""))
    return head


# ---------------------------------------------------------------------- figures as text
def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _num(x: float, fmt: str) -> str:
    if x == math.inf:
        return "∞"
    return format(x, fmt) if math.isfinite(x) else "n/a"


def sharpe_text(s: Score) -> str:
    if s.yearly:
        return f"{_num(s.sharpe, '.2f')} ± {_num(s.sharpe_se, '.2f')} /yr"
    return f"{_num(s.sharpe_day, '.3f')} ± {_num(s.sharpe_day_se, '.3f')} /day"


def sortino_text(s: Score) -> str:
    v = s.sortino if s.yearly else s.sortino_day
    if v == math.inf:
        return "∞ (no losing day)"
    return _num(v, ".2f") + (" /yr" if s.yearly else " /day")


def ratio_text(s: Score) -> str:
    return f"Calmar {_num(s.calmar, '.2f')}" if s.yearly else f"{_num(s.return_over_dd, '.2f')}"


def score_row(label: str, window: str, s: Score) -> str:
    return (f"| {label} | {window} | {s.return_pct:+.2f} | {s.max_drawdown_pct:.2f} | {ratio_text(s)} | "
            f"{sharpe_text(s)} | {sortino_text(s)} | {s.round_trips:g} | {s.liquidations:g} |")


def asset_row(window: str, a: AssetFigures) -> str:
    ratio = a.return_pct / max(a.max_drawdown_pct, 0.01)
    return (f"| {a.label} | {window} | {a.return_pct:+.2f} | {a.max_drawdown_pct:.2f} | {ratio:.2f} | "
            f"{_num(a.sharpe_day, '.3f')} /day | | | |")


def figures_line(s: Score) -> str:
    return (f"return {s.return_pct:+.2f} %, max drawdown {s.max_drawdown_pct:.2f} %, "
            f"{'Calmar' if s.yearly else 'return/drawdown'} {ratio_text(s).replace('Calmar ', '')}, "
            f"Sharpe {sharpe_text(s)}, {s.round_trips} round trips, {s.liquidations} liquidations, "
            f"{s.days:.1f} days")


TABLE_HEAD = ["| configuration | window | return % | max DD % | return/DD (Calmar ≥ 30 d) | Sharpe ± SE | Sortino | "
              "round trips | liquidations |", "|---|---|---|---|---|---|---|---|---|"]


# ---------------------------------------------------------------------- the report
def study_section(plan: PlanLike, r: StudyResult) -> list[str]:
    test_name = r.fold.test.name if r.fold.test else None
    lines = [f"## {r.name}: {r.fold.train.name}" + (f" → {test_name}" if test_name else ""), "",
             f"**{r.verdict}**", ""]
    lines += [f"> WARNING: {w}" for w in r.choice.warnings] + ([""] if r.choice.warnings else [])
    lines += [f"{r.complete} complete trials, {len(r.feasible)} feasible.", ""]
    lines += TABLE_HEAD
    c = r.choice.chosen
    train_name = r.fold.train.name
    if c is not None:
        lines.append(score_row(f"**chosen: trial {c.number}**", train_name, in_sample(c)))
        if c.number in r.oos:
            lines.append(score_row(f"**chosen: trial {c.number}**", test_name or "", r.oos[c.number]))
    for label, s_in, s_out in (("base config", r.base_in, r.base_out),
                               ("median feasible trial", r.median(False), r.median(True))):
        if s_in is not None:
            lines.append(score_row(label, train_name, s_in))
        if s_out is not None:
            lines.append(score_row(label, test_name or "", s_out))
    lines.append(asset_row(train_name, r.train))
    if r.test is not None:
        lines.append(asset_row(test_name or "", r.test))
    lines += ["", "Overfitting checks (Bailey & López de Prado):", ""]
    n_scored = sum(scored(t) for t in r.trials)
    if r.dsr is not None:
        lines.append(f"- deflated Sharpe ratio of the chosen one: **{_num(r.dsr.dsr, '.2f')}** (its Sharpe "
                     f"{_num(in_sample(c).sharpe_day, '.3f')} /day against {_num(r.dsr.sr0, '.3f')} /day, the best "
                     f"that {r.dsr.n_trials} trials without skill would show; Sharpe variance across trials "
                     f"{_num(r.dsr.sharpe_variance, '.4f')})" if c is not None else "")
    else:
        lines.append("- deflated Sharpe ratio: n/a (nothing chosen or fewer than 2 scored trials)")
    if r.pbo is not None:
        lines.append(f"- probability of backtest overfitting (CSCV, {r.pbo.blocks} blocks, {r.pbo.combinations} "
                     f"combinations, {n_scored} trials): **{r.pbo.pbo:.2f}**")
    else:
        lines.append(f"- probability of backtest overfitting: n/a ({r.pbo_why})")
    if r.oos:
        lines.append(f"- in-sample vs {test_name} rank correlation of the returns of all {len(r.oos)} feasible "
                     f"trials (Spearman): **{_num(r.rank_corr, '+.2f')}**")
        if c is not None and c.number in r.percentile:
            lines.append(f"- the chosen one's {test_name} return is at percentile **{r.percentile[c.number]:.0f}** "
                         f"of theirs (100: the best)")
    lines += ["", "The front, in the rule's order (the first is chosen):", "",
              f"| trial | PSR | in-sample return % | DD % | Sharpe ± SE | {test_name or 'out of sample'} return % | "
              f"percentile |", "|---|---|---|---|---|---|---|"]
    for t in r.choice.front:
        s = in_sample(t)
        o = r.oos.get(t.number)
        lines.append(f"| {t.number} | {r.choice.psr.get(t.number, math.nan):.3f} | {s.return_pct:+.2f} | "
                     f"{s.max_drawdown_pct:.2f} | {sharpe_text(s)} | {f'{o.return_pct:+.2f}' if o else ''} | "
                     f"{_num(r.percentile.get(t.number, math.nan), '.0f')} |")
    return lines + [""]


def windows_table(results: Sequence[StudyResult]) -> list[str]:
    seen: dict[str, AssetFigures] = {}
    for r in results:
        for a in (r.train, r.test):
            if a is not None:
                seen.setdefault(a.name, a)
    what = "asset" if all(a.label == AssetFigures.label for a in seen.values()) else "basket"
    lines = ["## Windows", "", f"| window | from (UTC) | to (UTC) | days | {what} return % | {what} max DD % | "
             f"{what} volatility % |", "|---|---|---|---|---|---|---|"]
    for a in sorted(seen.values(), key=lambda a: (a.start_ms, a.end_ms)):
        lines.append(f"| {a.name} | {_date(a.start_ms)} | {_date(a.end_ms)} | {a.days:.1f} | {a.return_pct:+.2f} | "
                     f"{a.max_drawdown_pct:.2f} | {_num(a.vol_pct, '.2f')} {'/yr' if a.yearly else '/day'} |")
    return lines + [""]


RULE_TEXT = ("the feasible trials (not liquidated, enough round trips, drawdown under the cap); their front "
             "(return against drawdown, or the best tenth by the single objective); of these, the highest "
             "probabilistic Sharpe ratio of the in-sample daily returns (ties: the lower drawdown). In-sample "
             "figures only; fixed before the run (research/selection.py).")


def report_md(plan: PlanLike, results: Sequence[StudyResult], wf: WalkForward | None, files: list[Path],
              url: str) -> str:
    a, obj = plan.args, plan.objective
    final = results[-1]
    lines = [f"# Optimization report: {plan.study_base}", "", f"**VERDICT: {final.verdict}**", ""]
    lines += [f"> WARNING: {w}" for w in final.choice.warnings] + ([""] if final.choice.warnings else [])
    lines += [f"- {obj.describe()}, objective `{obj.name}`, fill model {obj.fill_model.kind}, seed {a.seed}",
              "- trials the studies hold: " + "; ".join(f"{r.name} {r.complete} complete ({len(r.feasible)} "
                                                         f"feasible)" for r in results),
              f"- constraints: no liquidation, at least {a.min_round_trips} round trips, max drawdown ≤ "
              f"{obj.max_drawdown:g} %",
              f"- choice rule: {RULE_TEXT}",
              f"- study identity {plan.identity.fingerprint}: " + ", ".join(
                  f"{k} {v}" for k, v in plan.identity.parts.items()),
              f"- storage: `{url}`", ""]
    lines += windows_table(results)
    lines += study_section(plan, final)
    if wf is not None:
        lines += wf.section()
        for r in results[:-1]:
            lines += study_section(plan, r)
    lines += ["## Files", ""]
    lines += [f"- `{p.name}`" + (": the rule's choice; `python backtest.py --config "
                                 f"{p} ...`" if p.name == "best_01.txt" else "") for p in files]
    chosen = [p for p in files if p.name.startswith("best_01_")]
    if chosen:
        lines += ["", f"The rule's choice is the account of {', '.join(f'`{p.name}`' for p in chosen)}, run together: "
                      f"`{account_command(plan, chosen)}`"]
    if final.choice.chosen is None:
        lines += ["", "No feasible configuration: widen the space or relax the constraints."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- walk-forward
@dataclass
class WalkForward:
    rows: list[tuple[int, int | None, Score | None, Score | None, AssetFigures | None]]  # fold, trial, in, out, asset
    joined_return_pct: float
    joined_bh_pct: float
    efficiency: float
    days: float

    def section(self) -> list[str]:
        lines = ["## Walk-forward: the folds as one result", "",
                 "Each fold's configuration is chosen by the same rule from its own training window, then run "
                 "on the next segment; the segments' equity curves are joined (walk_forward.png).", "",
                 "| fold | chosen trial | train return % | train DD % | test return % | test DD % | "
                 "test buy-and-hold % |", "|---|---|---|---|---|---|---|"]
        for fold, trial, s_in, s_out, a in self.rows:
            lines.append(f"| {fold} | {trial if trial is not None else 'none'} | "
                         f"{f'{s_in.return_pct:+.2f}' if s_in else ''} | {f'{s_in.max_drawdown_pct:.2f}' if s_in else ''} | "
                         f"{f'{s_out.return_pct:+.2f}' if s_out else 'flat'} | "
                         f"{f'{s_out.max_drawdown_pct:.2f}' if s_out else ''} | {f'{a.return_pct:+.2f}' if a else ''} |")
        lines += ["", f"- joined out of sample over {self.days:.1f} days: **{self.joined_return_pct:+.2f} %** "
                      f"(buy-and-hold {self.joined_bh_pct:+.2f} %)",
                  f"- walk-forward efficiency (out-of-sample growth per day over in-sample growth per day, "
                  f"Pardo): **{_num(self.efficiency, '.2f')}**", ""]
        return lines


def walk_forward(plan: Any, results: Sequence[StudyResult], path: Path) -> WalkForward | None:
    """The folds' choices run on their test segments, joined; None without folds."""
    from research.tearsheet import Segment, joined_equity, write_walk_forward_png
    folds = [r for r in results if not r.fold.final and r.fold.test is not None]
    if not folds:
        return None
    obj = plan.objective
    segs: list[Segment] = []
    bench: list[Segment] = []
    rows: list[tuple[int, int | None, Score | None, Score | None, AssetFigures | None]] = []
    g_in: list[float] = []
    days = 0.0
    for r in folds:
        w = r.fold.test
        times = np.asarray(obj.times[w.start:w.end])
        bench.append(Segment(w.name, times, obj.benchmark(w), 1.0))
        days += len(times) / 1440.0
        chosen = r.choice.chosen
        if chosen is None or r.chosen_cfg is None:       # nothing chosen: the fold stays flat
            segs.append(Segment(w.name, times, np.ones(len(times)), 1.0))
            rows.append((r.fold.number, None, None, None, r.test))
            continue
        res = obj.backtest(r.chosen_cfg, w)
        t, equity, start = obj.curve(res)
        segs.append(Segment(w.name, t, equity, start))
        s_in = in_sample(chosen)
        rows.append((r.fold.number, chosen.number, s_in, obj.score_of(res), r.test))
        g_in.append(math.log(max(1e-9, 1 + s_in.return_pct / 100)) / max(s_in.days, 1e-9))
    _, growth = joined_equity(segs)
    _, bh = joined_equity(bench)
    write_walk_forward_png(segs, path, f"{plan.study_base}: walk-forward, out of sample only", benchmark=bench)
    g_out = math.log(max(1e-9, float(growth[-1]))) / max(days, 1e-9)
    mean_in = float(np.mean(g_in)) if g_in else math.nan
    eff = g_out / mean_in if g_in and mean_in > 0 else math.nan
    return WalkForward(rows, (float(growth[-1]) - 1) * 100, (float(bh[-1]) - 1) * 100, eff, days)


# ---------------------------------------------------------------------- files
def write_outputs(plan: Any, results: Sequence[StudyResult], url: str) -> list[Path]:
    out = Path(plan.args.out)
    out.mkdir(parents=True, exist_ok=True)
    for pattern in ("best_*.txt", "tearsheet*.png", "walk_forward.png"):
        for old in out.glob(pattern):
            old.unlink()            # an earlier run's files are not this one's
    final = results[-1]
    files = write_configs(plan, final, out)
    write_trials_csv(plan, results, out / "trials.csv")
    files.append(out / "trials.csv")
    write_pareto_png(plan, final, out / "pareto.png")
    files.append(out / "pareto.png")
    if final.chosen_cfg is not None and final.choice.chosen is not None:
        from research.tearsheet import write_tearsheet
        for w, name in ((final.fold.test, "tearsheet.png"), (final.fold.train, "tearsheet_in_sample.png")):
            if w is None:
                continue
            res = plan.objective.backtest(final.chosen_cfg, w)
            title = f"{plan.study_base}: chosen trial {final.choice.chosen.number} on the {w.name}"
            sub = "out of sample" if w is final.fold.test else "in sample (what it was tuned on)"
            if isinstance(res, PortfolioResult):
                files.append(write_account_tearsheet(res, out / name, title, sub))
            else:
                files.append(write_tearsheet(res, out / name, title, sub))
    wf = walk_forward(plan, results, out / "walk_forward.png")
    if wf is not None:
        files.append(out / "walk_forward.png")
    (out / "report.md").write_text(report_md(plan, results, wf, files, url), encoding="utf-8")
    return files + [out / "report.md"]


def write_configs(plan: Any, r: StudyResult, out: Path) -> list[Path]:
    paths = []
    for k, t in enumerate(r.choice.front, start=1):
        conf = r.chosen_cfg if k == 1 and r.chosen_cfg is not None else _config(plan, t)
        what = "the rule's choice" if k == 1 else f"front member {k} in the rule's order, NOT the choice"
        header = [f"optimize.py: study {r.name}, trial {t.number}, objective {plan.objective.name}: {what}",
                  f"{r.fold.train.name}: {figures_line(in_sample(t))}"]
        if t.number in r.oos and r.fold.test is not None:
            header.append(f"out-of-sample ({r.fold.test.name}): {figures_line(r.oos[t.number])}")
        if isinstance(conf, dict):
            paths += write_account_configs(plan, r, out, k, conf, header)
            continue
        header.append(f"verdict: {r.verdict}")
        path = out / f"best_{k:02d}.txt"
        path.write_text(format_config(conf, "\n".join(header)), encoding="utf-8")
        paths.append(path)
    return paths


def write_account_configs(plan: Any, r: StudyResult, out: Path, k: int, conf: dict[str, GridConfig],
                          header: list[str]) -> list[Path]:
    """An account's configuration, one file per symbol (best_<k>_<SYMBOL>.txt): each says the
    figures above are the account's, its wallet and capitals, how to run the files together
    and, for the choice, what each symbol did in the account out of sample."""
    paths = [out / f"best_{k:02d}_{sym}.txt" for sym in conf]
    wallet, capitals = account_of(list(conf.values()), plan.objective.wallet)
    caps = ", ".join(f"{sym} {cap:,.2f}" for sym, cap in zip(conf, capitals))
    lines = [f"account: {'+'.join(conf)} on one wallet of {wallet:,.2f} (capitals {caps}); the figures above are "
             f"the account's: {account_command(plan, paths)}"]
    if k == 1 and r.fold.test is not None:
        res = plan.objective.backtest(conf, r.fold.test)
        for sym_res in res.symbols:
            s = summarize(sym_res)
            lines.append(f"account: {s['symbol']} in it ({r.fold.test.name}): net PnL {s['net_pnl']:+,.2f} "
                         f"({s['return_pct']:+.2f} % of its capital), {sym_res.round_trips} round trips, "
                         f"funding {s['funding_paid']:+,.2f}")
    for path, (sym, cfg) in zip(paths, conf.items()):
        own = [f"{header[0]}; {sym}'s config ({len(conf)} files, one per symbol)", *header[1:], *lines,
               f"verdict: {r.verdict}"]
        path.write_text(format_config(cfg, "\n".join(own)), encoding="utf-8")
    return paths


def account_command(plan: Any, paths: Sequence[Path]) -> str:
    """backtest.py --symbols on these files (one per symbol), as the study ran them."""
    a = plan.args
    syms = [p.stem.split("_", 2)[2] for p in paths]
    flags = (f" --wallet {a.wallet!r}" if a.wallet is not None else "") \
        + (f" --fill-model volume --fill-share {a.fill_share!r}" if a.fill_model == "volume" else "") \
        + (" --no-liquidation" if a.no_liquidation else "")
    return (f"python backtest.py --symbols {','.join(syms)} --config "
            + " ".join(f"{sym}={p.name}" for sym, p in zip(syms, paths)) + flags + " --data "
            + " ".join(f"{sym}=..." for sym in syms))


def _config(plan: Any, t: FrozenTrial) -> Any:
    conf, why = plan.objective.build(t.params)
    assert conf is not None, why        # a feasible trial built its config when it ran
    return conf


def write_trials_csv(plan: Any, results: Sequence[StudyResult], path: Path) -> None:
    names = plan.objective.space.names
    single = plan.objective.single
    obj_cols = [plan.objective.name] if single else ["return_pct", "max_drawdown_pct"]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["study", "number", "state", *names, *obj_cols, "constraints", "feasible", "infeasible",
                    "round_trips", "liquidations", "is_return_pct", "is_max_drawdown_pct", "is_sharpe_day",
                    "is_sharpe_day_se", "psr", "oos_window", "oos_return_pct", "oos_max_drawdown_pct",
                    "oos_sharpe_day", "front", "chosen", "worker", "retry_of"])
        for r in results:
            front = {t.number for t in r.choice.front}
            chosen = r.choice.chosen.number if r.choice.chosen else None
            for t in r.trials:
                sc = t.user_attrs.get("score", {})
                o = r.oos.get(t.number)
                ok = feasible(t) and scored(t)
                w.writerow([r.name, t.number, t.state.name, *[t.params.get(n, "") for n in names],
                            *(t.values or [""] * len(obj_cols)), ";".join(f"{c:g}" for c in constraints_of(t)),
                            int(feasible(t)), t.user_attrs.get("infeasible", ""), sc.get("round_trips", ""),
                            sc.get("liquidations", ""), sc.get("return_pct", ""), sc.get("max_drawdown_pct", ""),
                            sc.get("sharpe_day", ""), sc.get("sharpe_day_se", ""),
                            f"{psr_of(t):.4f}" if ok else "", r.fold.test.name if o else "",
                            o.return_pct if o else "", o.max_drawdown_pct if o else "", o.sharpe_day if o else "",
                            int(t.number in front), int(t.number == chosen), t.user_attrs.get("worker", ""),
                            t.user_attrs.get("retry_of", "")])


def write_pareto_png(plan: Any, r: StudyResult, path: Path) -> None:
    """Left: the final study's trials in-sample (return against drawdown, one window);
    right: every feasible trial's in-sample return against its out-of-sample return."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    two = bool(r.oos)
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 8, 5.5), squeeze=False)
    ax = axes[0][0]
    done = [t for t in r.trials if scored(t)]
    for ok, color, label in ((False, "#bbbbbb", "infeasible (liquidated, too few round trips, over the cap)"),
                             (True, "#4575b4", "feasible")):
        pts = [(in_sample(t).max_drawdown_pct, in_sample(t).return_pct) for t in done if feasible(t) == ok]
        if pts:
            xs, ys = zip(*pts)
            ax.scatter(xs, ys, s=10, color=color, label=label, alpha=0.7)
    if r.choice.front:
        xs, ys = zip(*[(in_sample(t).max_drawdown_pct, in_sample(t).return_pct) for t in r.choice.front])
        ax.scatter(xs, ys, s=40, facecolors="none", edgecolors="#1a9850", label="front")
    c = r.choice.chosen
    if c is not None:
        ax.scatter([in_sample(c).max_drawdown_pct], [in_sample(c).return_pct], marker="*", s=180,
                   color="#d73027", zorder=4, label=f"chosen (trial {c.number})")
    if r.base_in is not None:
        ax.scatter([r.base_in.max_drawdown_pct], [r.base_in.return_pct], marker="s", s=40, color="black",
                   label="base config")
    ax.axvline(plan.objective.max_drawdown, color="#d73027", lw=0.8, ls="--", label="drawdown cap")
    ax.set_xlabel("max drawdown %")
    ax.set_ylabel("return %")
    ax.set_title(f"{r.fold.train.name} ({r.train.days:.1f} days)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if two:
        ax2 = axes[0][1]
        nums = [t.number for t in r.feasible if t.number in r.oos]
        xs2 = [in_sample(t).return_pct for t in r.feasible if t.number in r.oos]
        ys2 = [r.oos[n].return_pct for n in nums]
        ax2.scatter(xs2, ys2, s=12, color="#4575b4", label="feasible trials")
        if c is not None and c.number in r.oos:
            ax2.scatter([in_sample(c).return_pct], [r.oos[c.number].return_pct], marker="*", s=180,
                        color="#d73027", zorder=4, label="chosen")
        if r.test is not None:
            ax2.axhline(r.test.return_pct, color="#999999", lw=0.8, ls=":", label="buy-and-hold")
        test_days = r.test.days if r.test is not None else 0.0
        ax2.set_xlabel(f"in-sample return % ({r.train.days:.1f} days)")
        ax2.set_ylabel(f"{r.fold.test.name} return % ({test_days:.1f} days)")
        ax2.set_title(f"in vs out of sample: Spearman ρ = {_num(r.rank_corr, '+.2f')}")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.suptitle(r.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- an account's tearsheet
def account_margin_ratio(res: PortfolioResult) -> np.ndarray:
    """The account's maintenance margin over its equity at each close (1.0: liquidated), every
    symbol's position on its bracket table; nan where the equity is gone or without brackets."""
    from research.tearsheet import position_path
    maint = np.zeros(len(res.times))
    for r in res.symbols:
        if r.brackets is None:
            return np.full(len(res.times), np.nan)
        notional = np.abs(position_path(r).qty) * np.asarray(r.candles.close)
        caps = np.array([b.cap for b in r.brackets.tiers])
        k = np.minimum(np.searchsorted(caps, notional, side="right"), len(caps) - 1)
        mmr = np.array([b.mmr for b in r.brackets.tiers])[k]
        cum = np.array([b.cum for b in r.brackets.tiers])[k]
        maint += np.where(notional > 0, notional * mmr - cum, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(res.equity > 0, maint / res.equity, np.nan)


def account_tearsheet_figure(res: PortfolioResult, title: str, subtitle: str = "") -> Any:
    """The account's tearsheet (five axes): equity beside the equal-weight basket held 1×,
    drawdown, daily or monthly returns, margin ratio, each symbol's exposure."""
    import matplotlib.dates as mdates
    from research.tearsheet import DAILY_BELOW_DAYS, _date_num, _dates, _new_figure, _thin, exposure, period_returns
    fig = _new_figure(11, 15)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.6, 1.6, 1.6, 1.6]})
    t_ms = np.asarray(res.times)
    t = _dates(t_ms)
    basket = res.wallet * np.mean([np.asarray(r.candles.close) / float(r.candles.close[0]) for r in res.symbols],
                                  axis=0)
    ax = axes[0]
    ax.plot(t, _thin(res.equity), color="#2166ac", lw=1.0, label="account equity")
    ax.plot(t, _thin(basket), color="#888", lw=0.8, label="equal-weight basket held 1× (same wallet)")
    ax.axhline(res.wallet, color="#999", lw=0.6, ls="--")
    for x in sorted({x.time for x in res.liquidations}):
        ax.axvline(_date_num(int(x)), color="#67001f", lw=1.2, ls="--")
    ax.set_ylabel("equity")
    ax.legend(loc="upper left", fontsize=8)
    peak = np.maximum.accumulate(res.equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (res.equity_worst - peak) / peak * 100, 0.0)
    axes[1].fill_between(t, _thin(dd, np.fmin), 0.0, color="#d73027", alpha=0.5, lw=0)
    axes[1].set_ylabel("drawdown %")
    axes[1].set_title("the account's drawdown from its running peak (every symbol at its worst point)", fontsize=9)
    unit = "D" if len(t_ms) and int(t_ms[-1] - t_ms[0]) < DAILY_BELOW_DAYS * 86_400_000 else "M"
    start, ret = period_returns(t_ms, res.equity, res.wallet, unit)
    # Each bar spans the part of its period the window covers (as the single tearsheet's).
    left = np.maximum(start.astype("datetime64[ms]").astype(np.int64), t_ms[0])
    right = np.minimum((start + 1).astype("datetime64[ms]").astype(np.int64), t_ms[-1] + 60_000)
    axes[2].bar(left.astype("datetime64[ms]"), ret * 100, width=(right - left) / 86_400_000 * 0.9, align="edge",
                color=np.where(ret >= 0, "#1a9850", "#d73027"))
    axes[2].axhline(0, color="#555", lw=0.6)
    axes[2].set_ylabel("return %")
    axes[2].set_title("the account's daily returns" if unit == "D" else "the account's monthly returns", fontsize=9)
    ratio = account_margin_ratio(res) * 100
    axes[3].plot(t, _thin(ratio, np.fmax), color="#762a83", lw=0.9)
    top = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else math.nan
    if top > 50:                # the liquidation line only where it is within sight (else the curve is flat)
        axes[3].axhline(100, color="#67001f", lw=0.8, ls="--")
    axes[3].set_ylim(bottom=0)
    axes[3].set_ylabel("margin ratio %")
    axes[3].set_title(f"maintenance margin / equity at each close (100 %: the account is liquidated); peak "
                      f"{_num(top, '.2f')} %", fontsize=9)
    for r in res.symbols:
        axes[4].plot(t, _thin(exposure(r) * r.capital / res.wallet, np.fmax), lw=0.9, label=r.filters.symbol)
    axes[4].set_ylabel("notional / wallet")
    axes[4].set_title("each symbol's position at each close against the wallet", fontsize=9)
    axes[4].legend(loc="upper left", fontsize=8)
    s = score_figures(res)
    fig.suptitle("\n".join(x for x in (title, subtitle, s) if x), fontsize=11)
    for a in axes:
        a.grid(alpha=0.3)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[-1].xaxis.get_major_locator()))
    fig.tight_layout()
    return fig


def score_figures(res: PortfolioResult) -> str:
    from research.scoring import score_account
    s = score_account(res)
    basket = np.mean([float(r.candles.close[-1]) / float(r.candles.close[0]) for r in res.symbols]) - 1
    return (f"account {'+'.join(r.filters.symbol for r in res.symbols)}, wallet {res.wallet:,.2f}  "
            f"{_date(int(res.times[0]))} → {_date(int(res.times[-1]))}  ({len(res.times)} minutes)\n"
            f"return {s.return_pct:+.2f} %   max drawdown {s.max_drawdown_pct:.2f} %   basket {basket * 100:+.2f} %   "
            f"{s.fills} fills, {s.round_trips} round trips, {s.liquidations} liquidations")


def write_account_tearsheet(res: PortfolioResult, path: Path, title: str, subtitle: str = "") -> Path:
    """The account's tearsheet as one PNG at `path`; returns `path`."""
    account_tearsheet_figure(res, title, subtitle).savefig(path, dpi=100)
    return path
