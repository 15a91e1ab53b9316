"""The rule that picks the configuration to run, fixed before any result is seen (issue 21).

1. **Feasible:** complete, never liquidated, at least `--min-round-trips` round trips, and
   an in-sample max drawdown under `--max-drawdown` (on by default, for every objective).
2. **Front:** for `return-drawdown`, the feasible trials no other feasible trial beats on
   both return and drawdown; for one score, the best tenth of the feasible trials by it
   (at least 3, at most `MAX_FRONT`).
3. **Choice:** the front member whose in-sample daily returns give the highest
   probabilistic Sharpe ratio (Bailey & López de Prado 2012: the probability that its
   true Sharpe ratio is above 0, given how many days it was seen, their skew and fat
   tails), ties to the lower drawdown.  The highest return on a short window is mostly
   the deepest drawdown and the luckiest draw; the PSR favours a record that is steady
   for long enough to mean something.

Everything here reads in-sample figures only: the holdout and the fold tests judge the
choice, they never make it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from research.scoring import Score
from research.study_runner import constraints_of

MAX_FRONT = 10


def scored(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and "score" in t.user_attrs


def feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(c <= 0 for c in constraints_of(t))


def in_sample(t: FrozenTrial) -> Score:
    return Score.from_dict(t.user_attrs["score"])


def daily_of(t: FrozenTrial) -> np.ndarray:
    text = t.user_attrs.get("daily") or ""
    return np.array([float(x) for x in text.split(",")] if text else [], dtype=float)


def psr_of(t: FrozenTrial) -> float:
    from research.overfitting import probabilistic_sharpe_ratio, sharpe_estimate
    p = probabilistic_sharpe_ratio(sharpe_estimate(daily_of(t)))
    return p if math.isfinite(p) else 0.0


def _dominates(a: Score, b: Score) -> bool:
    return (a.return_pct >= b.return_pct and a.max_drawdown_pct <= b.max_drawdown_pct
            and (a.return_pct > b.return_pct or a.max_drawdown_pct < b.max_drawdown_pct))


def pareto(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials no other beats on both in-sample return and drawdown (one per parameter set)."""
    scores = {t.number: in_sample(t) for t in trials}
    front = [t for t in trials if not any(_dominates(scores[o.number], scores[t.number]) for o in trials)]
    seen: set[tuple] = set()
    out = []
    for t in sorted(front, key=lambda t: (-scores[t.number].return_pct, t.number)):
        key = tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def front_of(trials: Sequence[FrozenTrial], single: bool) -> list[FrozenTrial]:
    ok = [t for t in trials if feasible(t) and scored(t)]
    if not single:
        return pareto(ok)[:MAX_FRONT * 3]
    best = sorted(ok, key=lambda t: (-t.values[0], t.number))
    return best[:min(MAX_FRONT, max(3, len(best) // 10))]


@dataclass
class Choice:
    """The rule's outcome for one study: the front in the rule's order (the choice first)
    and the warnings a user must not miss."""
    front: list[FrozenTrial]
    psr: dict[int, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> FrozenTrial | None:
        return self.front[0] if self.front else None


def choose(trials: Sequence[FrozenTrial], single: bool, max_drawdown: float) -> Choice:
    front = front_of(trials, single)
    psr = {t.number: psr_of(t) for t in front}
    ordered = sorted(front, key=lambda t: (-psr[t.number], in_sample(t).max_drawdown_pct, t.number))
    c = Choice(ordered[:MAX_FRONT], psr)
    c.warnings = warnings_for(trials, c, max_drawdown)
    return c


def warnings_for(trials: Sequence[FrozenTrial], c: Choice, max_drawdown: float) -> list[str]:
    out = []
    ok = [t for t in trials if feasible(t) and scored(t)]
    if not ok:
        over = [t for t in trials if scored(t) and in_sample(t).liquidations == 0
                and in_sample(t).max_drawdown_pct > max_drawdown]
        out.append(f"no configuration is feasible: {len(over)} of {sum(scored(t) for t in trials)} scored ones "
                   f"exceeded the {max_drawdown:g} % drawdown cap, the others were liquidated or closed too few "
                   f"round trips; nothing was chosen" if over else
                   "no configuration is feasible (liquidated, too few round trips or rules broken): nothing was chosen")
        return out
    if all(in_sample(t).return_pct <= 0 for t in ok):
        out.append(f"every feasible configuration ({len(ok)}) lost money in-sample: the chosen one is the least bad, "
                   f"not a good one")
    elif c.chosen is not None and in_sample(c.chosen).return_pct <= 0:
        out.append("the chosen configuration lost money in-sample")
    unconstrained = pareto([t for t in trials if scored(t) and in_sample(t).liquidations == 0])
    deep = [t for t in unconstrained if in_sample(t).max_drawdown_pct > max_drawdown]
    if deep:
        out.append(f"{len(deep)} of the {len(unconstrained)} unconstrained front members had a drawdown over the "
                   f"{max_drawdown:g} % cap (up to {max(in_sample(t).max_drawdown_pct for t in deep):.1f} %) and "
                   f"were not considered")
    return out
