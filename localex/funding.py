"""Funding on the local exchange's clock: each symbol's series (given, or a constant rate per
8 h from its first candle on), the last funding time settled, and the settlements made.

A part of `local_exchange.LocalExchange`: the clock settles what is due at each candle's open;
the mark-price stream, the premium index and the funding-rate history read it."""
from __future__ import annotations

from typing import Mapping, Sequence

from market.funding import FundingSeries, constant_funding
from sim.account import mark_of
from sim.exchange import SimulatedExchange
from localex.base import Series

FUNDING_PERIOD_MS = 8 * 3600 * 1000
CONSTANT_SPAN_MS = 10 * 365 * 86_400_000   # how far a constant rate's series reaches


class FundingLedger:
    """Funding times, rates and settlements of every symbol."""

    def __init__(self, sim: SimulatedExchange, symbols: Sequence[str], series: Mapping[str, Series],
                 given: FundingSeries | Mapping[str, FundingSeries] | None, rate: float):
        self.sim = sim
        by_symbol: Mapping[str, FundingSeries] = given if isinstance(given, Mapping) else \
            {s: given for s in symbols} if given is not None else {}
        self.rate = float(rate)
        self.history: dict[str, list[tuple[int, float, float]]] = {s: [] for s in symbols}  # (time, rate, mark)
        self.series: dict[str, FundingSeries | None] = {}
        self.done: dict[str, int] = {}       # last funding time settled, per symbol
        for sym, ser in series.items():
            own = by_symbol.get(sym)
            self.series[sym] = own if own is not None else (
                constant_funding(self.rate, ser.t[0], ser.t[0] + CONSTANT_SPAN_MS) if self.rate else None)
            self.done[sym] = ser.t[0] - 1

    def settle_next_due(self, symbol: str, candle_t: int) -> bool:
        """Settle the first funding time T in (last settled, candle_t], if there is one, on the
        position held at T (nothing has traded since the previous candle closed)."""
        ser = self.series.get(symbol)
        if ser is None:
            return False
        nxt = ser.next_after(self.done[symbol])
        if nxt is None or nxt[0] > candle_t:
            return False
        t, rate = nxt
        self.done[symbol] = t
        sim = self.sim
        mark = mark_of(sim.books[symbol])
        now = sim.now_ms
        sim.now_ms = t
        sim.settle_funding(symbol, rate, mark)
        sim.now_ms = now
        self.history[symbol].append((t, rate, mark))
        return True

    def next_funding(self, symbol: str) -> tuple[int, float]:
        """(next funding time, its rate) of a symbol."""
        ser = self.series.get(symbol)
        nxt = ser.next_after(self.done.get(symbol, self.sim.now_ms)) if ser is not None else None
        if nxt is not None:
            return nxt
        return (self.sim.now_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS, 0.0
