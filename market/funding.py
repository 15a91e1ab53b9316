"""Funding-rate series: Binance's dump CSV, its REST `fundingRate` JSON, or a constant schedule.

One settlement happens at every funding time T on the position held at T:
amount = position × mark × rate (signed position: a long pays a positive
rate and receives a negative one).  `SimulatedExchange.settle_funding`
applies it; the backtest and the local exchange both call it with a series
from here, so the two charge the same.

Formats read:

- Binance's data dump (`…/fundingRate/<SYM>-fundingRate-<month>.csv`):
  ``calc_time,funding_interval_hours,last_funding_rate`` — calc_time may
  carry a few ms of jitter; a settlement counts at its minute.  Intervals of
  8 and 4 hours both occur (a symbol can switch within a month).
- REST ``GET /fapi/v1/fundingRate`` saved to a file: a JSON list of
  ``{"symbol", "fundingTime", "fundingRate", "markPrice"}``.

A file that is truncated, malformed or out of order is refused with one
line naming the file, the line and what is wrong; nothing of it is used.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from errors import BadInput

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
BASELINE_RATE = 0.0001          # Binance's baseline per 8 h (interest 0.03 %/day, premium 0)
DUMP_HEADER = ["calc_time", "funding_interval_hours", "last_funding_rate"]
MAX_ABS_RATE = 0.05             # far beyond any cap Binance sets (±0.3 %…±3 %): a bad number, not a rate


class FundingError(BadInput):
    """A funding file that cannot be used, with where and why."""

    def __init__(self, path: str | Path, what: str, line: int | None = None):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True)
class FundingSeries:
    """Settlement times (ms, on the minute, increasing) and their rates."""

    times: np.ndarray
    rates: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.times)

    def next_after(self, t_ms: int) -> tuple[int, float] | None:
        """The first settlement strictly after `t_ms`."""
        i = int(np.searchsorted(self.times, t_ms, side="right"))
        return (int(self.times[i]), float(self.rates[i])) if i < len(self.times) else None


def constant_funding(rate: float, start_ms: int, end_ms: int, interval_hours: int = 8) -> FundingSeries:
    """A settlement every `interval_hours` at 00:00 UTC and its multiples, in [start_ms, end_ms]."""
    period = interval_hours * HOUR_MS
    first = -(-start_ms // period) * period
    times = np.arange(first, end_ms + 1, period, dtype=np.int64)
    return FundingSeries(times, np.full(len(times), float(rate)), f"constant {rate:g} per {interval_hours} h")


def at_minute(t_ms: int) -> int:
    """A calc_time with a few ms of jitter (either side), settled at its minute."""
    return (t_ms + MINUTE_MS // 2) // MINUTE_MS * MINUTE_MS


def _rate(text: str, path: Path, line: int) -> float:
    try:
        r = float(text)
    except ValueError:
        raise FundingError(path, f"funding rate {text!r} is not a number", line) from None
    if not math.isfinite(r) or abs(r) > MAX_ABS_RATE:
        raise FundingError(path, f"funding rate {text!r} is out of range (|rate| <= {MAX_ABS_RATE})", line)
    return r


def _time(text: str, path: Path, line: int, what: str) -> int:
    try:
        t = int(text)
    except ValueError:
        raise FundingError(path, f"{what} {text!r} is not an integer millisecond time", line) from None
    if not 946_684_800_000 <= t <= 4_102_444_800_000:      # 2000 … 2100
        raise FundingError(path, f"{what} {t} is not a millisecond time between 2000 and 2100", line)
    return t


def _load_dump(path: Path, text: str) -> tuple[list[int], list[float]]:
    times: list[int] = []
    rates: list[float] = []
    if not text.endswith("\n"):
        raise FundingError(path, "the last line has no line end: the file is truncated", text.count("\n") + 1)
    rows = list(csv.reader(text.splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    if header != DUMP_HEADER:
        raise FundingError(path, f"expected the header {','.join(DUMP_HEADER)} (Binance's funding dump)", 1)
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3:
            raise FundingError(path, f"expected 3 fields, found {len(row)}: the file is truncated or not a "
                               "funding dump", n)
        t = at_minute(_time(row[0].strip(), path, n, "calc_time"))
        hours = row[1].strip()
        if hours not in ("1", "2", "4", "8"):
            raise FundingError(path, f"funding_interval_hours {hours!r} is not 1, 2, 4 or 8", n)
        times.append(t)
        rates.append(_rate(row[2].strip(), path, n))
    return times, rates


def _load_json(path: Path, text: str) -> tuple[list[int], list[float]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FundingError(path, f"not valid JSON ({e.msg}): truncated or corrupt", e.lineno) from None
    if not isinstance(data, list):
        raise FundingError(path, "expected a JSON list of fundingRate records")
    times: list[int] = []
    rates: list[float] = []
    for k, rec in enumerate(data):
        if not isinstance(rec, dict) or "fundingTime" not in rec or "fundingRate" not in rec:
            raise FundingError(path, f"record {k} has no fundingTime / fundingRate")
        times.append(at_minute(_time(str(rec["fundingTime"]), path, 0, f"record {k} fundingTime")))
        rates.append(_rate(str(rec["fundingRate"]), path, 0))
    return times, rates


def load_funding(paths: Sequence[str | Path]) -> FundingSeries:
    """One or more funding files (dump CSV or REST JSON), joined in time order."""
    times: list[int] = []
    rates: list[float] = []
    for p in map(Path, paths):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FundingError(p, f"cannot read: {e}") from None
        if not text.strip():
            raise FundingError(p, "the file is empty")
        t, r = _load_json(p, text) if text.lstrip()[:1] in "[{" else _load_dump(p, text)
        if not t:
            raise FundingError(p, "no funding records")
        for i in range(1, len(t)):
            if t[i] <= t[i - 1]:
                raise FundingError(p, f"funding times out of order or repeated at record {i + 1}")
        times += t
        rates += r
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    ts = np.asarray(times, dtype=np.int64)[order]
    if len(ts) > 1 and np.any(np.diff(ts) == 0):
        raise FundingError(", ".join(map(str, paths)), "the files overlap: a funding time appears twice")
    return FundingSeries(ts, np.asarray(rates, dtype=np.float64)[order], ", ".join(map(str, paths)))
