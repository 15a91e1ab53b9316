"""The simulation fill model of SPEC §6 — one module, used by the in-process
simulated exchange (and so by the backtest and the local exchange).

- A candle's path: close ≥ open moves open → low → high → close, otherwise
  open → high → low → close; each leg is monotone.
- Along a leg, resting orders trigger in the order the price reaches them.
  A limit fills completely at its limit price when touched; a stop fills at
  its trigger.  An order the leg starts beyond (a gap) fills at once: a stop
  at the leg's start price, a limit at its limit price.

Prices here are integer ticks (`candle_ticks` converts a candle series once,
at the boundary), so a touch is an integer comparison: a level at 3.816 and a
high of 3.816 are the same tick, whatever their binary floats.

`FillModel` is how much of a touched limit fills: whole (SPEC §6, `FULL`), or
a share of each leg's volume (the volume model); the backtest and the local
exchange take it as one small setting.

`TriggerScanner` is the backtest's fast path: between events it finds, with
numpy, the next candle whose range reaches any resting trigger, so quiet
candles cost no Python at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Protocol, TypeVar

import numpy as np


LEG_MS = 20_000     # leg k (1, 2, 3) of a candle is stamped open_time + (k − 1) × 20 s, everywhere


def leg_volume_steps(volume: float, share: float, step_size: float) -> int:
    """The volume fill model: the steps a resting limit may take on one leg of a candle —
    `share` of the third of the candle's volume that leg trades."""
    return math.floor(volume * share / 3.0 / step_size + 1e-9)


@dataclass(frozen=True, slots=True)
class FillModel:
    """How much of a resting limit the price touches fills.

    - ``full``: all of it, at its price (SPEC §6; the default, `FULL`);
    - ``volume``: at most `share` of what each leg of the candle trades (a third of its
      volume), in price-time order; the rest stays open, and a market order sweeps a thin
      book (`SimulatedExchange.set_leg_volume`).
    """

    kind: Literal["full", "volume"] = "full"
    share: float = 1.0          # the volume model's share of a leg's volume (0 < share <= 1)

    def __post_init__(self) -> None:
        if self.kind not in ("full", "volume"):
            raise ValueError(f"fill model must be full or volume (got {self.kind!r})")
        if self.kind == "volume" and not (0 < self.share <= 1):
            raise ValueError(f"fill share must be in (0, 1] (got {self.share})")

    @classmethod
    def by_volume(cls, share: float) -> FillModel:
        """The volume model with `share` of each leg's volume."""
        return cls("volume", share)

    @classmethod
    def from_cli(cls, model: str, share: float) -> FillModel:
        """From the command line's --fill-model and --fill-share (backtest.py, local_exchange.py):
        the share counts only with the volume model; a share out of range is a ValueError
        naming the flag."""
        if model == "full":
            return FULL
        if model != "volume":
            raise ValueError(f"--fill-model must be full or volume (got {model!r})")
        if not (0 < share <= 1):
            raise ValueError(f"--fill-share must be in (0, 1] (got {share})")
        return cls.by_volume(share)

    @property
    def is_full(self) -> bool:
        return self.kind == "full"

    def leg_steps(self, volume: float, step_size: float) -> int | None:
        """The steps resting limits may take on each leg of a candle of `volume` (None: no
        limit, full fills) — what `sim.replay.play_candle` takes as `leg_steps`."""
        return None if self.kind == "full" else leg_volume_steps(volume, self.share, step_size)

    def leg_steps_of(self, volumes: np.ndarray, step_size: float) -> list[int] | None:
        """`leg_steps` of every candle of a series at once (None: full fills)."""
        if self.kind == "full":
            return None
        share = self.share
        return [leg_volume_steps(v, share, step_size) for v in volumes.tolist()]


FULL = FillModel()


# "No threshold" for the scanner: integer sentinels keep the comparisons in int64.
NO_UP = 1 << 62
NO_DOWN = -(1 << 62)


TICK_CHUNK = 1 << 16     # candles converted at a time: no series-sized temporaries


def tick_dtype(high: np.ndarray, tick_size: float) -> type[np.signedinteger]:
    """int32 when every tick of the series fits with room to spare (halving the engine's
    arrays: four years of BTC at 0.1 are ~10^6 ticks), else int64."""
    top = float(np.max(high)) / tick_size if len(high) else 0.0
    return np.int32 if top < np.iinfo(np.int32).max // 2 else np.int64


def candle_ticks(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                 tick_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A candle series as integer ticks of `tick_size` (int32 where they fit, see tick_dtype).

    A file whose prices sit on the tick converts exactly.  A finer-ticked file
    (spot data backtested at the futures tick) keeps every touch honest: the
    high rounds down and the low up (an order fills only if the real range
    reached its tick), open and close to the nearest tick inside that range.
    """
    eps = 1e-9
    n = len(close)
    dtype = tick_dtype(np.asarray(high), tick_size)
    o, h, l, c = (np.empty(n, dtype) for _ in range(4))
    for a in range(0, n, TICK_CHUNK):
        b = min(a + TICK_CHUNK, n)
        hh = np.floor(np.asarray(high[a:b], np.float64) / tick_size + eps)
        ll = np.ceil(np.asarray(low[a:b], np.float64) / tick_size - eps)
        np.minimum(ll, hh, out=ll)      # a range narrower than one tick collapses to it
        h[a:b] = hh
        l[a:b] = ll
        o[a:b] = np.clip(np.rint(np.asarray(open_[a:b], np.float64) / tick_size), ll, hh)
        c[a:b] = np.clip(np.rint(np.asarray(close[a:b], np.float64) / tick_size), ll, hh)
    return o, h, l, c


class Resting(Protocol):
    """What the fill model needs to know about a resting order."""

    trigger: int        # limit price, or stop trigger price, in integer ticks
    fires_below: bool   # True: triggers when price <= trigger (buy limit, sell stop)
    is_stop: bool       # stops fill at the trigger (or the gapped leg start); limits at the limit
    seq: int            # placement order, to break ties between equal prices


def candle_path(o: int, h: int, l: int, c: int) -> tuple[int, int, int, int]:
    """The four vertices of a candle's intrabar path (three monotone legs)."""
    return (o, l, h, c) if c >= o else (o, h, l, c)


def candle_legs(o: int, h: int, l: int, c: int, open_time: int) -> tuple[tuple[int, int], ...]:
    """The three monotone legs of a candle as every replay plays them (backtest, local exchange):
    (the leg's end price, the time its fills are stamped with).  The candle starts at its open
    (a jump from the previous close that fills nothing)."""
    p = candle_path(o, h, l, c)
    return (p[1], open_time), (p[2], open_time + LEG_MS), (p[3], open_time + 2 * LEG_MS)


R = TypeVar("R", bound=Resting)


def next_trigger(cur: int, end: int, resting: Iterable[R]) -> tuple[R, int, int] | None:
    """The first resting order the leg cur → end reaches.

    Returns (order, fill price, price where the leg stands after the fill) or
    None when the leg completes without touching any order.
    """
    best: R | None = None
    best_dist = 0
    down = end < cur
    up = end > cur
    for r in resting:
        x = r.trigger
        # dist <= 0: the leg starts at or beyond the order (a gap).  The price
        # passed the farthest-beyond order first (the best bid / ask matches
        # first), so more negative distances come first.
        if r.fires_below:
            if x >= cur or (down and x >= end):
                dist = cur - x
            else:
                continue
        else:
            if x <= cur or (up and x <= end):
                dist = x - cur
            else:
                continue
        if best is None or dist < best_dist or (dist == best_dist and r.seq < best.seq):
            best, best_dist = r, dist
    if best is None:
        return None
    if best_dist <= 0:
        # Already at or beyond the order where the leg starts.
        return best, (cur if best.is_stop else best.trigger), cur
    return best, best.trigger, best.trigger


class TriggerScanner:
    """Find the next candle whose high/low reaches a threshold, in numpy.

    Two levels: candles, and blocks of `block` candles with their max high
    and min low.  A query scans the rest of the current block, then gallops
    over block summaries in growing windows, so its cost follows the distance
    to the next event rather than the length of the series.
    """

    def __init__(self, high: np.ndarray, low: np.ndarray, block: int = 256):
        dtype = high.dtype if high.dtype in (np.int32, np.int64) and low.dtype == high.dtype else np.int64
        self.high = np.ascontiguousarray(high, dtype=dtype)
        self.low = np.ascontiguousarray(low, dtype=dtype)
        # Thresholds beyond the dtype's range reach nothing: clamped to it, the comparisons
        # stay in the arrays' own integer type.
        info = np.iinfo(dtype)
        self.top, self.bottom = int(info.max), int(info.min)
        self.n = len(self.high)
        self.block = block
        nblocks = (self.n + block - 1) // block
        pad = nblocks * block - self.n
        hp = np.concatenate([self.high, np.full(pad, self.bottom, dtype)]) if pad else self.high
        lp = np.concatenate([self.low, np.full(pad, self.top, dtype)]) if pad else self.low
        self.bmax = hp.reshape(nblocks, block).max(axis=1)
        self.bmin = lp.reshape(nblocks, block).min(axis=1)
        self.nblocks = nblocks

    def _first_in(self, start: int, stop: int, up: int, down: int) -> int:
        hit = (self.high[start:stop] >= up) | (self.low[start:stop] <= down)
        k = int(hit.argmax())
        return start + k if hit[k] else -1

    def find(self, start: int, up: int, down: int) -> int:
        """First index i >= start with high[i] >= up or low[i] <= down, else -1."""
        if start >= self.n:
            return -1
        up = min(up, self.top)
        down = max(down, self.bottom)
        b = start // self.block
        i = self._first_in(start, min((b + 1) * self.block, self.n), up, down)
        if i >= 0:
            return i
        b += 1
        window = 16
        while b < self.nblocks:
            stop = min(b + window, self.nblocks)
            hit = (self.bmax[b:stop] >= up) | (self.bmin[b:stop] <= down)
            k = int(hit.argmax())
            if hit[k]:
                s = (b + k) * self.block
                return self._first_in(s, min(s + self.block, self.n), up, down)
            b = stop
            window *= 4
        return -1
