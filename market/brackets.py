"""Leverage brackets (maintenance margin tiers) and the cross-margin liquidation price.

Binance's maintenance margin of a position is ``notional × maintMarginRatio
− cum`` with the tier that holds the notional (`GET /fapi/v1/leverageBracket`:
``{notionalFloor, notionalCap, initialLeverage, maintMarginRatio, cum}``).
A cross-margin account is liquidated when its margin balance (wallet + uPnL
at the mark) falls to its maintenance margin.

Shipped tables (``SHIPPED``) are used offline; live mode reads the account's
own table from the endpoint; ``--brackets FILE`` (that endpoint's JSON saved
to a file) serves other symbols.  ``cum`` is derived from the tiers (each
tier's cum makes the margin continuous at its floor), so a table is only
floors, leverages and ratios and cannot carry an inconsistent cum.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from errors import BadInput

# The tables as published on Binance's leverage & margin page for the USDC
# perpetuals; recorded on this date.  Check the live table with
# `GET /fapi/v1/leverageBracket` (live mode reads it at start).
SHIPPED_DATE = "2025-03-13"
# (notionalCap, initialLeverage, maintMarginRatio) per tier; floors are the previous caps.
_BTCUSDC = [(50_000, 125, 0.004), (600_000, 100, 0.005), (3_000_000, 75, 0.0065), (12_000_000, 50, 0.01),
            (70_000_000, 25, 0.02), (100_000_000, 20, 0.025), (230_000_000, 10, 0.05), (480_000_000, 5, 0.10),
            (600_000_000, 4, 0.125), (800_000_000, 3, 0.15), (1_200_000_000, 2, 0.25),
            (1_800_000_000, 1, 0.50)]
_ETHUSDC = [(50_000, 125, 0.004), (500_000, 100, 0.005), (1_000_000, 75, 0.0065), (5_000_000, 50, 0.01),
            (20_000_000, 25, 0.02), (40_000_000, 20, 0.025), (100_000_000, 10, 0.05), (200_000_000, 5, 0.10),
            (300_000_000, 4, 0.125), (400_000_000, 3, 0.15), (600_000_000, 2, 0.25), (800_000_000, 1, 0.50)]


class BracketError(BadInput):
    pass


@dataclass(frozen=True, slots=True)
class Bracket:
    floor: float
    cap: float
    max_leverage: int
    mmr: float
    cum: float

    def maint_margin(self, notional: float) -> float:
        return notional * self.mmr - self.cum


@dataclass(frozen=True)
class BracketTable:
    symbol: str
    tiers: tuple[Bracket, ...]
    source: str

    def tier(self, notional: float) -> Bracket:
        for b in self.tiers:
            if notional < b.cap:
                return b
        return self.tiers[-1]

    def maint_margin(self, notional: float) -> float:
        n = abs(notional)
        return self.tier(n).maint_margin(n) if n else 0.0

    def to_binance(self) -> dict[str, Any]:
        """The `GET /fapi/v1/leverageBracket` element for this symbol."""
        return {"symbol": self.symbol, "brackets": [
            {"bracket": i, "initialLeverage": b.max_leverage, "notionalCap": _num(b.cap),
             "notionalFloor": _num(b.floor), "maintMarginRatio": b.mmr, "cum": _num(b.cum)}
            for i, b in enumerate(self.tiers, 1)]}


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def table_from_tiers(symbol: str, tiers: Sequence[tuple[float, int, float]], source: str) -> BracketTable:
    out: list[Bracket] = []
    floor, cum, prev_mmr = 0.0, 0.0, 0.0
    for cap, lev, mmr in tiers:
        cum += floor * (mmr - prev_mmr)
        out.append(Bracket(float(floor), float(cap), int(lev), float(mmr), round(cum, 8)))
        floor, prev_mmr = cap, mmr
    return BracketTable(symbol, tuple(out), source)


SHIPPED = {
    "BTCUSDC": table_from_tiers("BTCUSDC", _BTCUSDC, f"shipped BTCUSDC table of {SHIPPED_DATE}"),
    "ETHUSDC": table_from_tiers("ETHUSDC", _ETHUSDC, f"shipped ETHUSDC table of {SHIPPED_DATE}"),
}


def parse_binance(data: Any, symbol: str, source: str) -> BracketTable:
    """A `leverageBracket` response (list, or one symbol's object) → the table of `symbol`."""
    items = data if isinstance(data, list) else [data]
    for it in items:
        if isinstance(it, dict) and str(it.get("symbol", "")).upper() == symbol.upper():
            rows = it.get("brackets")
            if not isinstance(rows, list) or not rows:
                raise BracketError(f"{source}: {symbol} has no brackets")
            tiers = []
            try:
                rows = sorted(rows, key=lambda r: float(r["notionalFloor"]))
                for r in rows:
                    tiers.append((float(r["notionalCap"]), int(r["initialLeverage"]), float(r["maintMarginRatio"])))
            except (KeyError, TypeError, ValueError) as e:
                raise BracketError(f"{source}: a bracket of {symbol} lacks a field or a number ({e})") from None
            for cap, lev, mmr in tiers:
                if not (cap > 0 and 1 <= lev <= 200 and 0 < mmr < 1 and math.isfinite(cap)):
                    raise BracketError(f"{source}: bracket of {symbol} out of range: cap {cap}, leverage {lev}, "
                                       f"maintMarginRatio {mmr}")
            return table_from_tiers(symbol.upper(), tiers, source)
    raise BracketError(f"{source}: no brackets for {symbol}")


def load_brackets(path: str | Path, symbol: str) -> BracketTable:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise BracketError(f"{p}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BracketError(f"{p}: not valid JSON ({e}): truncated or corrupt") from None
    return parse_binance(data, symbol, str(p))


def table_for(symbol: str) -> tuple[BracketTable, bool]:
    """The shipped table of `symbol`, or (BTCUSDC's, False) when none is shipped for it."""
    t = SHIPPED.get(symbol.upper())
    return (t, True) if t is not None else (SHIPPED["BTCUSDC"], False)


def liquidation_price(table: BracketTable, qty: float, entry: float, others: float) -> float:
    """The mark price at which the account's margin balance equals its maintenance margin.

    `qty` is the signed position of this symbol, `entry` its entry price,
    `others` = wallet + the other positions' (uPnL − maintenance margin), held
    constant (Binance's positionRisk formula for cross margin):

        LP = (others + cum − qty × entry) / (|qty| × mmr − qty)

    with the tier whose notional range holds |qty| × LP.  0 when no mark
    price liquidates the position (a long covered by the wallet).
    """
    if qty == 0:
        return 0.0
    a = abs(qty)
    for b in table.tiers:
        den = a * b.mmr - qty
        if den == 0:
            continue
        m = (others + b.cum - qty * entry) / den
        if m <= 0:
            if qty > 0:
                return 0.0          # the wallet covers any fall to zero
            continue
        if b.floor <= a * m < b.cap or b is table.tiers[-1]:
            return m
    return 0.0
