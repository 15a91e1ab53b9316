"""A one-page PNG tearsheet of one backtest (the configuration an optimizer chose) and a chart
of a walk-forward's out-of-sample segments joined into one compounded curve.

The series behind the panels (position path, distance to liquidation, exposure, joined
growth) are plain functions so tests and reports can check them without drawing.
matplotlib is imported inside the drawing functions (importing this module stays cheap).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from backtest import BacktestResult, summarize
from market.brackets import liquidation_price
from market.data import MINUTE_MS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DAY_MS = 86_400_000
DAILY_BELOW_DAYS = 60           # under ~2 months, monthly bars say too little: daily returns instead
MAX_POINTS = 3000               # per line: a year of minutes would make a slow, unreadable PNG


@dataclass(frozen=True)
class PositionPath:
    qty: np.ndarray             # signed position after each candle
    avg: np.ndarray             # its entry (average) price; 0 while flat


@dataclass(frozen=True)
class Segment:
    name: str                   # "fold 1 test", "holdout", ...
    times_ms: np.ndarray
    equity: np.ndarray          # the segment's own equity curve, starting from its own capital
    capital: float


def position_path(res: BacktestResult) -> PositionPath:
    """The position after each candle: the last fill stamped at or before the candle's close
    time (open + 59 999 ms; a replay stamps a candle's fills within its minute)."""
    close_ms = res.candles.open_time + (MINUTE_MS - 1)
    t = np.fromiter((f.time_ms for f in res.fills), np.int64, len(res.fills))
    order = np.argsort(t, kind="stable")        # fills come in time order; equal stamps keep theirs
    q = np.r_[0.0, np.fromiter((f.position_after for f in res.fills), np.float64, len(res.fills))[order]]
    a = np.r_[0.0, np.fromiter((f.avg_price_after for f in res.fills), np.float64, len(res.fills))[order]]
    k = np.searchsorted(t[order], close_ms, side="right")       # 0: no fill yet (the flat slot)
    return PositionPath(q[k], a[k])


def liquidation_distance(res: BacktestResult) -> np.ndarray:
    """Per candle, how far the close may move against the position before the liquidation
    price (a fraction of the close); nan while flat, when no price liquidates, or without brackets."""
    close = res.candles.close
    out = np.full(len(close), np.nan)
    if res.brackets is None:
        return out
    p = position_path(res)
    wallet = res.equity - p.qty * (close - p.avg)
    # Qty, entry and wallet are constant between events: one liquidation_price per run of
    # candles that share them (re-deriving the wallet leaves rounding noise, hence the tolerance).
    changed = (np.diff(p.qty) != 0) | (np.diff(p.avg) != 0) | (np.abs(np.diff(wallet)) > 1e-9 * res.capital)
    starts = np.flatnonzero(np.r_[True, changed])
    ends = np.r_[starts[1:], len(close)]
    for s, e in zip(starts.tolist(), ends.tolist()):
        q = float(p.qty[s])
        if q == 0:
            continue
        lp = liquidation_price(res.brackets, q, float(p.avg[s]), float(wallet[s]))
        if lp > 0:
            c = close[s:e]
            out[s:e] = (c - lp) / c if q > 0 else (lp - c) / c
    return out


def exposure(res: BacktestResult) -> np.ndarray:
    """The position's notional at each close against the starting capital."""
    return np.abs(position_path(res).qty) * res.candles.close / res.capital


def buy_and_hold(close: np.ndarray, capital: float) -> np.ndarray:
    """The asset held 1x from the first close, in the same capital."""
    return capital * close / close[0]


def drawdown_pct(res: BacktestResult) -> np.ndarray:
    """Each candle's worst equity below the running peak of equity, in % (≤ 0), as summarize counts it."""
    peak = np.maximum.accumulate(res.equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (res.equity_worst - peak) / peak * 100, 0.0)


def period_returns(times_ms: np.ndarray, equity: np.ndarray, capital: float,
                   unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(period start as datetime64[unit], return) per calendar period `unit` ("M" or "D", UTC),
    from the last equity of the previous period (the capital for the first)."""
    key = times_ms.astype("datetime64[ms]").astype(f"datetime64[{unit}]")
    last = np.flatnonzero(np.r_[key[1:] != key[:-1], True])
    end = equity[last]
    start = np.r_[capital, end[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return key[last], np.where(start > 0, end / start - 1, np.nan)


def joined_equity(segments: Sequence[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """The segments in time order, compounded into one growth curve from 1.0: each segment's
    equity / its capital, scaled by where the previous segment ended.  Overlaps are refused."""
    ordered = sorted(segments, key=lambda s: int(s.times_ms[0]) if len(s.times_ms) else 0)
    times: list[np.ndarray] = [np.zeros(0, np.int64)]
    growth: list[np.ndarray] = [np.zeros(0)]
    level = 1.0
    for i, s in enumerate(ordered):
        if len(s.times_ms) == 0 or len(s.times_ms) != len(s.equity) or not s.capital > 0:
            raise ValueError(f"segment {s.name!r}: needs as many equity points as times (≥ 1) and a capital > 0")
        if i and int(s.times_ms[0]) <= int(ordered[i - 1].times_ms[-1]):
            raise ValueError(f"segments {ordered[i - 1].name!r} and {s.name!r} overlap in time")
        g = level * np.asarray(s.equity, np.float64) / s.capital
        times.append(np.asarray(s.times_ms, np.int64))
        growth.append(g)
        level = float(g[-1])
    return np.concatenate(times), np.concatenate(growth)


def _thin(y: np.ndarray, reduce: np.ufunc | None = None) -> np.ndarray:
    """At most ~MAX_POINTS values: each bucket's `reduce` (fmin / fmax keep the extremes a
    stride would skip), or its first value."""
    step = max(1, len(y) // MAX_POINTS)
    if step == 1:
        return y
    starts = np.arange(0, len(y), step)
    return reduce.reduceat(y, starts) if reduce is not None else y[starts]


def _dates(times_ms: np.ndarray) -> np.ndarray:
    return _thin(times_ms).astype("datetime64[ms]")     # each bucket's first time


def _new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot: nothing global, safe from several threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _thinned_at(t: np.ndarray, i: int, n: int) -> np.ndarray:
    return t[min(i // max(1, n // MAX_POINTS), len(t) - 1)]


def _date_num(ms: int) -> float:
    """A time as matplotlib's date number (for axvline / text, typed as floats)."""
    import matplotlib.dates as mdates
    return float(mdates.date2num(np.datetime64(ms, "ms")))


def tearsheet_figure(res: BacktestResult, title: str, subtitle: str = "") -> Figure:
    """The tearsheet's figure (five axes), on an Agg canvas."""
    import matplotlib.dates as mdates

    fig = _new_figure(11, 15)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.6, 1.6, 1.6, 1.6]})
    t_ms, close = res.candles.open_time, res.candles.close
    t = _dates(t_ms)
    _equity_panel(axes[0], t, res)
    axes[1].fill_between(t, _thin(drawdown_pct(res), np.fmin), 0.0, color="#d73027", alpha=0.5, lw=0)
    axes[1].set_ylabel("drawdown %")
    axes[1].set_title("drawdown from the running peak (worst point of each candle)", fontsize=9)
    _returns_panel(axes[2], t_ms, res)
    _liquidation_panel(axes[3], t, liquidation_distance(res))
    _exposure_panel(axes[4], t, exposure(res))
    s = summarize(res)
    stats = (f"{s['symbol']} {s['direction']}  {s['start']} → {s['end']}  ({len(close)} candles)\n"
             f"return {s['return_pct']:+.2f} %   max drawdown {s['max_drawdown_pct']:.2f} %   "
             f"buy & hold {(close[-1] / close[0] - 1) * 100:+.2f} %   {s['fills']} fills, "
             f"{res.round_trips} round trips, {len(res.liquidations)} liquidations")
    fig.suptitle("\n".join(x for x in (title, subtitle, stats) if x), fontsize=11)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes[-1].xaxis.get_major_locator()))
    fig.tight_layout()
    return fig


def _equity_panel(ax: Axes, t: np.ndarray, res: BacktestResult) -> None:
    ax.plot(t, _thin(res.equity), color="#2166ac", lw=1.0, label="equity")
    ax.plot(t, _thin(buy_and_hold(res.candles.close, res.capital)), color="#888", lw=0.8,
            label=f"{res.filters.symbol} buy & hold (1x)")
    ax.axhline(res.capital, color="#999", lw=0.6, ls="--")
    for x in res.liquidations:
        ax.axvline(_date_num(int(x.time)), color="#67001f", lw=1.2, ls="--")
    ax.set_ylabel("equity")
    ax.legend(loc="upper left", fontsize=8)


def _returns_panel(ax: Axes, t_ms: np.ndarray, res: BacktestResult) -> None:
    daily = bool(len(t_ms)) and int(t_ms[-1] - t_ms[0]) < DAILY_BELOW_DAYS * DAY_MS
    unit = "D" if daily else "M"
    start, r = period_returns(t_ms, res.equity, res.capital, unit)
    # Each bar spans the part of its period the run covers (a partial first month stays partial).
    left = np.maximum(start.astype("datetime64[ms]").astype(np.int64), t_ms[0])
    right = np.minimum((start + 1).astype("datetime64[ms]").astype(np.int64), t_ms[-1] + MINUTE_MS)
    colors = np.where(r >= 0, "#1a9850", "#d73027")
    ax.bar(left.astype("datetime64[ms]"), r * 100, width=(right - left) / DAY_MS * 0.9, align="edge", color=colors)
    ax.axhline(0, color="#555", lw=0.6)
    ax.set_ylabel("return %")
    what = "daily returns (the run spans under 2 months)" if daily else "monthly returns (calendar months, UTC)"
    ax.set_title(what, fontsize=9)


def _liquidation_panel(ax: Axes, t: np.ndarray, dist: np.ndarray) -> None:
    ax.set_ylabel("to liquidation %")
    if np.all(np.isnan(dist)):
        ax.set_title("distance to liquidation", fontsize=9)
        ax.text(0.5, 0.5, "no liquidation price (wallet covers the position)", transform=ax.transAxes,
                ha="center", va="center", color="#555")
        return
    # Markers too: a position held for a minute or two between flat stretches is a lone point.
    ax.plot(t, _thin(dist * 100, np.fmin), color="#762a83", lw=0.9, marker=".", ms=2)
    ax.set_ylim(bottom=0)           # 0: the liquidation price is reached
    i = int(np.nanargmin(dist))
    ax.set_title(f"distance to liquidation (% of price against the position); minimum {dist[i] * 100:.2f} %",
                 fontsize=9)
    ax.annotate(f"min {dist[i] * 100:.2f} %", (_thinned_at(t, i, len(dist)), dist[i] * 100), xytext=(8, 10),
                textcoords="offset points", fontsize=8, color="#762a83", arrowprops={"arrowstyle": "->"})


def _exposure_panel(ax: Axes, t: np.ndarray, x: np.ndarray) -> None:
    ax.plot(t, _thin(x, np.fmax), color="#e08214", lw=0.9, label="position notional / capital")
    ax.plot(t, _thin(np.maximum.accumulate(x), np.fmax), color="#7f3b08", lw=0.8, ls="--", label="running peak")
    i = int(np.argmax(x))
    ax.annotate(f"peak {x[i]:.2f}x", (_thinned_at(t, i, len(x)), x[i]), xytext=(8, -12),
                textcoords="offset points", fontsize=8, color="#7f3b08")
    ax.set_ylabel("notional / capital")
    ax.set_title("exposure at each close", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)


def write_tearsheet(res: BacktestResult, path: Path, title: str, subtitle: str = "") -> Path:
    """The tearsheet as one PNG at `path`; returns `path`."""
    tearsheet_figure(res, title, subtitle).savefig(path, dpi=100)
    return path


def walk_forward_figure(segments: Sequence[Segment], title: str, benchmark: Sequence[Segment] = ()) -> Figure:
    """The joined out-of-sample growth, segment boundaries marked and named, and the joined benchmark."""
    fig = _new_figure(11, 5)
    ax = fig.subplots()
    t, g = joined_equity(segments)
    ax.plot(_dates(t), _thin(g), color="#2166ac", lw=1.0, label="strategy, out of sample (compounded)")
    if benchmark:
        bt, bg = joined_equity(benchmark)
        ax.plot(_dates(bt), _thin(bg), color="#888", lw=0.8, label="benchmark (same segments)")
    ax.axhline(1.0, color="#999", lw=0.6, ls="--")
    for s in sorted(segments, key=lambda s: int(s.times_ms[0])):
        x = _date_num(int(s.times_ms[0]))
        ax.axvline(x, color="#555", lw=0.7, ls=":")
        ax.text(x, 0.98, f" {s.name}", transform=ax.get_xaxis_transform(), rotation=90, va="top", fontsize=8)
    ax.set_ylabel("growth of 1")
    ax.set_title(f"{title}\nend {g[-1]:.4f}" if len(g) else title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def write_walk_forward_png(segments: Sequence[Segment], path: Path, title: str,
                           benchmark: Sequence[Segment] = ()) -> Path:
    """The walk-forward chart as one PNG at `path`; returns `path`."""
    walk_forward_figure(segments, title, benchmark).savefig(path, dpi=100)
    return path
