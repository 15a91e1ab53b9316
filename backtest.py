#!/usr/bin/env python3
"""Backtest the grid-martingale strategy over 1-minute candles.

    python backtest.py --config FILE --data CSV [CSV ...] [--direction LONG|SHORT]
        [--capital X] [--tick-size X] [--step-size X] [--min-qty X]
        [--min-notional X] [--maker-fee X] [--taker-fee X] [--out DIR] [--no-chart]

The real `GridMartingaleStrategy` trades against the in-process
`SimulatedExchange` (SPEC §6 fill model).  Between events a numpy scan
(`fill_model.TriggerScanner`) jumps to the next candle whose range reaches a
resting order or the range band; only that candle's path is replayed in
Python, so quiet candles cost nothing.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Callable

import numpy as np

from config import ConfigError, GridConfig, load_config
from exchange_api import ExecType, OrderUpdate, Role, SymbolFilters, run_sync
from sim.fill_model import FULL, NO_DOWN, NO_UP, FillModel, TriggerScanner, candle_ticks
from grid_strategy import FillRecord, GridMartingaleStrategy
from market.data import Candles, DataError, load_klines
from sim.replay import FILL, OPEN, play_candle
from market.brackets import BracketError, BracketTable, load_brackets, table_for
from market.funding import BASELINE_RATE, FundingError, FundingSeries, constant_funding, load_funding
from sim.account import drop_liquidation
from sim.exchange import DEFAULT_FILTERS, FundingSettlement, Liquidation, SimulatedExchange, SimVenue


_NEW = ExecType.NEW.value         # bound once, plain str: compared on every event of a run
TRADE_COLUMNS = ["time", "role", "side", "price", "qty", "fee", "realized_pnl", "position_after",
                 "avg_price_after", "client_order_id", "order_id"]


@dataclass
class BacktestResult:
    config: GridConfig
    filters: SymbolFilters
    candles: Candles
    capital: float
    fills: list[FillRecord]
    equity: np.ndarray            # at each candle's close
    equity_worst: np.ndarray      # at each candle's adverse extreme
    final_wallet: float
    final_qty: float
    final_avg: float
    fees: float
    replayed_candles: int
    elapsed_s: float
    summary: dict = field(default_factory=dict)
    funding: list[FundingSettlement] = field(default_factory=list)
    liquidations: list[Liquidation] = field(default_factory=list)
    brackets: BracketTable | None = None
    halted: bool = False          # liquidated with AFTER_LIQUIDATION=STOP
    grids: int = 0                # grids placed (the strategy's generation count)
    round_trips: int = 0          # full closes (TP, SL, a BE that closed all): the grid started over
    wallet: float = 0.0           # the account's wallet at the start (SPEC §7); 0: the capital alone
    account_stopped_at: int = 0   # ACCOUNT_STOP_DRAWDOWN fired at this time (ms); 0: never


def funding_schedule(series: FundingSeries, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candle index (the 1-minute candle that starts at T, or the first after it when that
    minute is missing), time and rate of every settlement T inside the candles."""
    if len(series) == 0 or len(times) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    k = np.searchsorted(times, series.times, side="left")
    keep = (series.times >= times[0]) & (k < len(times))
    return k[keep].astype(np.int64), series.times[keep], series.rates[keep]


Ticks = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]     # open, high, low, close (int64)


def align_mark(mark: Candles, candles: Candles, filters: SymbolFilters, contract: Ticks) -> Ticks:
    """Mark-price klines in ticks, aligned to the candles' minutes (a missing mark minute
    takes the contract candle's prices)."""
    mo, mh, ml, mc = candle_ticks(mark.open, mark.high, mark.low, mark.close, filters.tick_size)
    idx = np.searchsorted(mark.open_time, candles.open_time)
    idx_c = np.minimum(idx, len(mark) - 1)
    found = (idx < len(mark)) & (mark.open_time[idx_c] == candles.open_time)
    o, h, l, c = (np.where(found, m[idx_c], k) for m, k in zip((mo, mh, ml, mc), contract))
    return o, h, l, c


def run_backtest(config: GridConfig, candles: Candles, filters: SymbolFilters,
                 capital: float | None = None, maker_fee: float | None = None,
                 taker_fee: float | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 funding: FundingSeries | None = None, mark: Candles | None = None,
                 brackets: BracketTable | None = None, liquidation: bool = True,
                 fill_model: FillModel = FULL, wallet: float | None = None) -> BacktestResult:
    """Drive the strategy over `candles`; the first candle's close is the first centre.

    `capital`: the symbol's capital (default INITIAL_CAPITAL); `wallet`: the account's
    (default: the capital alone).  `account_of` gives SPEC §7's: the wallet live would need
    to give the config its capital.

    `funding`: settlements charged on the position held at each funding time, at the mark
    (the `mark` klines' open of that minute, else the candle's open).  `liquidation`: the
    account is liquidated as Binance does it (cross margin, `brackets` or the symbol's
    shipped table), triggered by the mark price (`mark` klines, else the last price).
    `fill_model`: how much of a touched limit fills (SPEC §6's full fills by default).
    """
    # The cyclic garbage collector finds nothing to free in a run (its objects live until
    # the end) yet walks them at every allocation burst: off for the run, restored after.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        return _run_backtest(config, candles, filters, capital, maker_fee, taker_fee, progress, funding, mark,
                             brackets, liquidation, fill_model, wallet)
    finally:
        if gc_was_on:
            gc.enable()


def _run_backtest(config: GridConfig, candles: Candles, filters: SymbolFilters, capital: float | None,
                  maker_fee: float | None, taker_fee: float | None, progress: Callable[[int, int], None] | None,
                  funding: FundingSeries | None, mark: Candles | None, brackets: BracketTable | None,
                  liquidation: bool, fill_model: FillModel, wallet: float | None = None) -> BacktestResult:
    t0 = time.perf_counter()
    if len(candles) == 0:
        raise DataError("candles", "no candles to backtest")
    if config.account_stop_drawdown > 0:
        # The account stop watches the account's equity minute by minute: the account engine.
        cap = float(capital if capital is not None else config.initial_capital)
        w = float(wallet if wallet is not None else cap)
        cfg = config.with_overrides(capital_ratio=min(1.0, cap / w)) if w else config
        cfg = cfg.with_overrides(**{k: v for k, v in (("maker_fee", maker_fee), ("taker_fee", taker_fee))
                                    if v is not None})
        port = run_portfolio([PortfolioLeg(cfg, candles, filters, funding, mark, brackets)], w,
                             liquidation=liquidation, fill_model=fill_model)
        res = port.symbols[0]
        res.account_stopped_at = port.account_stopped_at
        res.elapsed_s = time.perf_counter() - t0
        return res
    run = _Replay(config, candles, filters, float(capital if capital is not None else config.initial_capital),
                  config.maker_fee if maker_fee is None else maker_fee,
                  config.taker_fee if taker_fee is None else taker_fee, funding, mark, brackets, liquidation,
                  fill_model, wallet=wallet)
    run.play(progress)
    return run.result(time.perf_counter() - t0)


class _Replay:
    """One backtest: the strategy on a SimulatedExchange, candles played by the one candle
    clock (sim.replay.play_candle) only where something can happen.

    Equity is piecewise: constant wallet / position between replayed candles.  A replayed
    candle starts a segment with the state after its fills (its close), and its worst
    equity is tracked exactly along its path."""

    def __init__(self, config: GridConfig, candles: Candles, filters: SymbolFilters, capital: float,
                 maker_fee: float, taker_fee: float, funding: FundingSeries | None, mark: Candles | None,
                 brackets: BracketTable | None, liquidation: bool, fill_model: FillModel,
                 wallet: float | None = None, sim: SimulatedExchange | None = None) -> None:
        self.config, self.candles, self.filters = config, candles, filters
        self.capital, self.liquidation = capital, liquidation
        # The account's wallet (SPEC §7): the symbol's capital is its share of it.
        self.wallet = float(wallet if wallet is not None else capital)
        if sim is None:
            sim = SimulatedExchange([filters], balance=self.wallet, maker_fee=maker_fee, taker_fee=taker_fee,
                                    leverage=config.leverage)
            sim.ack_events = False      # the strategy acts on fills and expiries only
            sim.liquidation_enabled = liquidation
            sim.keep_trades = False     # the strategy's fill records are the backtest's trades
        else:                           # a leg of a portfolio: the account is shared
            sim.books[filters.symbol].position.leverage = config.leverage
        self.sim = sim
        self.symbol = filters.symbol
        self.book = sim.books[self.symbol]
        self.acct = sim.account     # the wallet's owner, bound once: `account()` reads it at every event
        if brackets is not None:
            self.book.brackets = brackets
        self.pos = self.book.position
        self.fills: list[FillRecord] = []
        quiet = logging.getLogger("grid.backtest")
        quiet.setLevel(logging.CRITICAL + 10)  # a backtest reports through its summary, not logs
        venue = SimVenue(sim, self.symbol)
        venue.log = quiet
        self.strategy = GridMartingaleStrategy(config, venue, capital=capital, logger=quiet,
                                               on_fill=self.fills.append)
        self.strategy.log_info = False
        # The engine works in integer ticks: the candles are converted once, here.
        self.ticks = candle_ticks(candles.open, candles.high, candles.low, candles.close, filters.tick_size)
        self.times = candles.open_time
        self.mark_ticks = align_mark(mark, candles, filters, self.ticks) if mark is not None else None
        if self.mark_ticks is not None:
            sim.drive_mark(self.symbol)
        schedule: tuple[np.ndarray, np.ndarray, np.ndarray] = (
            funding_schedule(funding, self.times) if funding is not None
            else (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)))
        f_idx, self.f_time, self.f_rate = schedule
        self.f_idx = f_idx.tolist()
        self.fi = 0
        # The volume fill model: a resting limit takes at most its share of what each leg trades
        # (a third of the candle's volume), in price-time order; the rest stays open.
        self.leg_steps = fill_model.leg_steps_of(candles.volume, filters.step_size)
        self.seg_start: list[int] = [0]
        self.seg_state: list[tuple[float, float, float]] = [(self.wallet, 0.0, 0.0)]
        self.worst_at: dict[int, float] = {}
        self.replayed = 0
        self.scanner = TriggerScanner(self.ticks[1], self.ticks[2])
        self._last_find: tuple[int, int, int, int] | None = None
        self.band = (NO_UP, NO_DOWN)    # the thresholds of the last next_event (ticks)
        self.mark_scanner = (TriggerScanner(self.mark_ticks[1], self.mark_ticks[2])
                             if self.mark_ticks is not None else None)

    def deliver(self) -> None:
        sim, strategy = self.sim, self.strategy
        while sim.events:
            for ev in sim.drain_events():
                # NEW acknowledgements carry nothing the strategy acts on.
                if type(ev) is OrderUpdate and ev.exec_type != _NEW:
                    run_sync(strategy.on_order_update(ev))

    def mark_segment(self, i: int) -> None:
        self.seg_start.append(i)
        self.seg_state.append((self.acct.wallet, self.pos.qty, self.pos.entry_price))

    def account(self) -> float:
        pos = self.pos
        return self.acct.wallet + pos.qty * (self.book.price - pos.entry_price)

    def play(self, progress: Callable[[int, int], None] | None) -> None:
        sim, symbol, closes = self.sim, self.symbol, self.ticks[3]
        n = len(closes)
        sim.now_ms = int(self.times[0])
        sim.set_price_ticks(symbol, int(closes[0]))
        if self.mark_ticks is not None:
            sim.set_mark_ticks(symbol, int(self.mark_ticks[3][0]))
        run_sync(self.strategy.on_candle_closed(self.filters.from_ticks(int(closes[0]))))
        self.deliver()
        self.mark_segment(1)
        i = 1
        next_report = n // 100 if progress else n + 1
        while i < n:
            j = self.next_event(i)
            if j == -2:
                break           # liquidated and stopped: nothing more can happen
            k = self.funding_due(j if j >= 0 else n - 1)
            if k is not None:
                i = k           # the wallet moved the liquidation price: scan again from T
                continue
            if j < 0:
                break
            self.play_event_candle(j)
            i = j + 1
            if j >= next_report and progress is not None:
                progress(j, n)
                next_report = j + n // 100
        if progress:
            progress(n, n)

    def next_event(self, i: int) -> int:
        """The next candle from i whose range reaches a resting trigger or the range band
        (-1: none; -2: halted with nothing resting)."""
        book, strategy = self.book, self.strategy
        up, down = NO_UP, NO_DOWN
        for r in book.resting.values():
            if r.fires_below:
                if r.trigger > down:
                    down = r.trigger
            elif r.trigger < up:
                up = r.trigger
        if strategy.is_flat_and_unfilled():
            if strategy.halted and not book.resting:
                return -2
            # The range exit fires strictly beyond the band: the first tick past it.
            band = strategy.range_band() / self.filters.tick_size
            if strategy.s > 0:
                up = min(up, math.floor(band + 1e-9) + 1)
            else:
                down = max(down, math.ceil(band - 1e-9) - 1)
        self.band = (up, down)      # every candle from i up to j (exclusive) lies strictly inside
        j = self._find(i, up, down)
        if self.mark_scanner is not None and book.mark_resting:
            mup, mdown = NO_UP, NO_DOWN
            for r in book.mark_resting.values():
                if r.fires_below:
                    mdown = max(mdown, r.trigger)
                else:
                    mup = min(mup, r.trigger)
            jm = self.mark_scanner.find(i, mup, mdown)
            if jm >= 0 and (j < 0 or jm < j):
                j = jm
        return j

    def _find(self, i: int, up: int, down: int) -> int:
        """scanner.find, remembered: the first candle from i reaching (up, down) is still the
        answer found from an earlier start for the same thresholds, if it lies at or after i
        (or there was none).  A portfolio asks every leg at every step; most have not moved."""
        last = self._last_find
        if last is not None and last[0] == up and last[1] == down and last[2] <= i and (last[3] < 0 or last[3] >= i):
            return last[3]
        j = self.scanner.find(i, up, down)
        self._last_find = (up, down, i, j)
        return j

    def funding_due(self, lim: int) -> int | None:
        """Settle the next funding due at or before candle `lim` (at its candle's open,
        before its path); returns that candle, or None when nothing is due with a position."""
        f_idx, nf = self.f_idx, len(self.f_idx)
        if self.fi >= nf or f_idx[self.fi] > lim:
            return None
        if not self.pos.steps:
            while self.fi < nf and f_idx[self.fi] <= lim:
                self.fi += 1     # flat until this event: nothing to settle
            return None
        k = f_idx[self.fi]
        sim, symbol = self.sim, self.symbol
        sim.now_ms = int(self.f_time[self.fi])
        rate = float(self.f_rate[self.fi])
        self.fi += 1
        sim.set_price_ticks(symbol, int(self.ticks[0][k]))
        if self.mark_ticks is not None:
            sim.set_mark_ticks(symbol, int(self.mark_ticks[0][k]))
        self.acct.settle_funding(symbol, rate, sim.mark_of(self.book))
        self.deliver()
        self.mark_segment(k)
        return k

    def play_event_candle(self, j: int) -> None:
        """Candle j along its path, the strategy reacting to each event; between events the
        position is constant and each leg monotone, so the equity is linear there and its
        minimum is at a vertex or an event."""
        self.replayed += 1
        strategy, book, deliver, account = self.strategy, self.book, self.deliver, self.account
        flat = strategy.is_flat_and_unfilled
        o, h, l, c = (int(a[j]) for a in self.ticks)
        mt = self.mark_ticks
        mark = (int(mt[0][j]), int(mt[1][j]), int(mt[2][j]), int(mt[3][j])) if mt is not None else None
        worst_eq = 0.0
        for step in play_candle(self.sim, self.symbol, o, h, l, c, int(self.times[j]),
                                leg_steps=None if self.leg_steps is None else int(self.leg_steps[j]), mark=mark):
            if step == FILL:
                deliver()
                eq = account()
                if eq < worst_eq:
                    worst_eq = eq
                continue
            if step == OPEN:
                worst_eq = account()
            else:
                eq = account()
                if eq < worst_eq:
                    worst_eq = eq
            if flat():          # the range exit is the only thing on_price does
                run_sync(strategy.on_price(book.price))
                deliver()
        self.worst_at[j] = max(0.0, worst_eq) if self.liquidation else worst_eq
        self.mark_segment(j)

    def result(self, elapsed_s: float) -> BacktestResult:
        f = self.filters
        equity, worst = _equity_curves(f, self.ticks, self.seg_start, self.seg_state)
        if self.worst_at:
            worst[np.fromiter(self.worst_at.keys(), np.int64, len(self.worst_at))] = np.fromiter(
                self.worst_at.values(), np.float64, len(self.worst_at))
        if self.liquidation:
            # A cross account's loss stops at its wallet (the insurance fund covers the rest).
            np.maximum(equity, 0.0, out=equity)
            np.maximum(worst, 0.0, out=worst)
        # The account holds the wallet; the symbol's figures are on its capital (the rest of
        # the wallet is the reserve and the other symbols' share).
        rest = self.wallet - self.capital
        if rest:
            equity -= rest
            worst -= rest
        p, sim = self.book.position, self.sim
        return BacktestResult(self.config, f, self.candles, self.capital, self.fills, equity, worst,
                              sim.wallet - rest, p.qty, p.entry_price, sim.total_fees, self.replayed, elapsed_s,
                              funding=list(sim.funding), liquidations=list(sim.liquidations),
                              brackets=self.book.brackets, halted=self.strategy.halted,
                              grids=self.strategy.state.generation,
                              round_trips=self.strategy.state.round_trips, wallet=self.wallet)


# ---------------------------------------------------------------------- several symbols, one account
@dataclass
class PortfolioLeg:
    """One symbol of a portfolio backtest: its config, candles and market."""
    config: GridConfig
    candles: Candles
    filters: SymbolFilters
    funding: FundingSeries | None = None
    mark: Candles | None = None
    brackets: BracketTable | None = None


@dataclass
class PortfolioResult:
    """The account (one wallet, SPEC §7) and each symbol on its capital."""
    wallet: float
    times: np.ndarray               # the joined minutes
    equity: np.ndarray              # the account's, at each minute's close
    equity_worst: np.ndarray        # at each minute's adverse extremes
    final_equity: float
    symbols: list[BacktestResult]   # each on its capital; `equity` its capital + its own PnL
    liquidations: list[Liquidation]
    elapsed_s: float
    summary: dict = field(default_factory=dict)
    account_stopped_at: int = 0     # ACCOUNT_STOP_DRAWDOWN fired at this time (ms); 0: never
    minutes_alone: int = 0          # event minutes played in `_Solo` stretches (each symbol alone)
    stretches: int = 0              # how many such stretches


def align_candles(legs: list[PortfolioLeg]) -> tuple[np.ndarray, list[Candles]]:
    """Every symbol's candles on the union of their minutes: a minute missing in one
    symbol's data is a flat candle at its last close with no volume (nothing trades)."""
    times = union_minutes(legs)
    return times, [align_to(leg.candles, times) for leg in legs]


def union_minutes(legs: list[PortfolioLeg]) -> np.ndarray:
    times = legs[0].candles.open_time
    if all(np.array_equal(leg.candles.open_time, times) for leg in legs[1:]):
        return times                    # the same minutes (the usual case)
    for leg in legs[1:]:
        times = np.union1d(times, leg.candles.open_time)
    return times


def align_to(c: Candles, times: np.ndarray) -> Candles:
    """`c` on the minutes `times` (a superset of its own): as it is when they are its own."""
    if len(c.open_time) == len(times) and (c.open_time is times or np.array_equal(c.open_time, times)):
        return c
    src = np.searchsorted(c.open_time, times, side="right") - 1      # its last candle at or before
    have = (src >= 0) & (c.open_time[np.maximum(src, 0)] == times)
    flat = np.where(src >= 0, c.close[np.maximum(src, 0)], c.open[0])  # before its first: its first open
    k = np.maximum(src, 0)
    return Candles(times.copy(), np.where(have, c.open[k], flat), np.where(have, c.high[k], flat),
                   np.where(have, c.low[k], flat), np.where(have, c.close[k], flat),
                   np.where(have, c.volume[k], 0.0))


def align_legs(legs: list[PortfolioLeg]) -> list[PortfolioLeg]:
    """The legs on the union of their minutes, one leg at a time in place, each original
    dropped as its aligned copy replaces it (a command line's load: the peak is one
    symbol's copy, not every symbol twice)."""
    times = union_minutes(legs)
    for n in range(len(legs)):
        leg = legs[n]
        legs[n] = dataclasses.replace(leg, candles=align_to(leg.candles, times))
        del leg
    return legs


def run_portfolio(legs: list[PortfolioLeg], wallet: float | None = None, *, liquidation: bool = True,
                  fill_model: FillModel = FULL) -> PortfolioResult:
    """Several symbols on one cross-margin wallet (SPEC §7): each symbol's capital is its
    CAPITAL_RATIO × the wallet (default: the largest INITIAL_CAPITAL / CAPITAL_RATIO);
    margin (-2019), funding and liquidation are the account's."""
    t0 = time.perf_counter()
    if len({leg.filters.symbol for leg in legs}) != len(legs):
        raise ValueError("a symbol is given twice")
    fees = {(leg.config.maker_fee, leg.config.taker_fee) for leg in legs}
    if len(fees) > 1:
        raise ValueError("the configs give different fees: Binance's fee rate is the account's (one MAKER_FEE "
                         "and TAKER_FEE for every symbol)")
    w, capitals = account_of([leg.config for leg in legs], wallet)
    times, candles = align_candles(legs)
    maker, taker = next(iter(fees))
    sim = SimulatedExchange([leg.filters for leg in legs], balance=w, maker_fee=maker, taker_fee=taker)
    sim.ack_events = False
    sim.liquidation_enabled = liquidation
    sim.keep_trades = False
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        port = _Portfolio(sim, w, [_Replay(leg.config, c, leg.filters, cap, maker, taker, leg.funding, leg.mark,
                                           leg.brackets, liquidation, fill_model, wallet=w, sim=sim)
                                   for leg, c, cap in zip(legs, candles, capitals)], times)
        port.play()
        res = port.result(time.perf_counter() - t0)
        for leg in port.legs:       # the legs point back at the portfolio: freed now, not at the next gc
            del leg.deliver, leg.account
        return res
    finally:
        if gc_was_on:
            gc.enable()


class _Portfolio:
    """The legs (one `_Replay` each, on one simulator) played minute by minute in time
    order, skipping minutes where no leg can act.  With two or more positions open, every
    skipped minute is checked for the account's liquidation with each symbol at its
    adverse extreme of that minute at once (1-minute candles cannot tell the order within
    a minute; the worst case is the safe answer)."""

    solo = True     # stretches played as `_Solo` (False: minute by minute throughout, for tests)

    def __init__(self, sim: SimulatedExchange, wallet: float, legs: list[_Replay], times: np.ndarray) -> None:
        self.sim, self.wallet, self.legs, self.times = sim, wallet, legs, times
        self.by_symbol = {leg.symbol: leg for leg in legs}
        self.held = [(leg.pos, leg.book) for leg in legs]      # the books' own objects, for life
        # Every fill paid at the dearer of the two rates, on the way in and out.
        self.fee2 = 2 * max(sim.maker_fee, sim.taker_fee)
        self.bounds = [self._bound_of(leg) for leg in legs]        # `leg_term` of each
        for leg in legs:
            leg.deliver = self.deliver              # type: ignore[method-assign]
            leg.account = self.equity_now           # type: ignore[method-assign]
        self.w_start: list[int] = [0]
        self.w_state: list[float] = [wallet]
        self.worst_at: dict[int, float] = {}
        for leg in legs:
            # a symbol's candle writes its worst equity (the account's) where the account's
            # curve reads it: each minute that plays several reads each right after its candle
            leg.worst_at = self.worst_at
        # ACCOUNT_STOP_DRAWDOWN: the strictest of the symbols' (every daemon watches the same
        # account; the first to see its level stops them all).
        shares = [leg.config.account_stop_drawdown for leg in legs if leg.config.account_stop_drawdown > 0]
        self.stop_share = min(shares) if shares else 0.0
        self.peak = wallet
        self.stopped_at = 0
        self.minutes_alone = self.stretches = 0

    def deliver(self) -> None:
        """Each event to the strategy of its symbol."""
        sim, legs = self.sim, self.by_symbol
        while sim.events:
            for ev in sim.drain_events():
                if type(ev) is OrderUpdate and ev.exec_type != _NEW:
                    run_sync(legs[ev.symbol].strategy.on_order_update(ev))

    def equity_now(self) -> float:
        upnl = 0.0                      # summed apart, then added: the same float as before
        for p, b in self.held:
            if p.steps:
                upnl += p.qty * (b.price - p.entry_price)
        return self.sim.account.wallet + upnl

    def open_positions(self) -> int:
        return sum(1 for leg in self.legs if leg.pos.steps)

    def mark_all(self, i: int) -> None:
        """From candle i on: each symbol's position (its curve needs only that, its cash is
        stepped from its own fills) and the account's wallet, where they changed."""
        for leg in self.legs:
            _, qty, avg = leg.seg_state[-1]
            p = leg.pos
            if p.qty != qty or p.entry_price != avg:
                leg.mark_segment(i)
        wallet = self.sim.account.wallet
        if wallet != self.w_state[-1]:
            self.w_start.append(i)
            self.w_state.append(wallet)

    def move(self, leg: _Replay, i: int, which: int = 3) -> None:
        """Put a leg's price (and mark) at candle i's open (0) or close (3) without playing it:
        only where that candle reaches none of its triggers."""
        self.sim.set_price_ticks(leg.symbol, int(leg.ticks[which][i]))
        if leg.mark_ticks is not None:
            self.sim.set_mark_ticks(leg.symbol, int(leg.mark_ticks[which][i]))

    def play(self) -> None:
        sim, legs, n = self.sim, self.legs, len(self.times)
        sim.now_ms = int(self.times[0])
        for leg in legs:
            self.move(leg, 0)
            if leg.mark_ticks is not None:
                sim.drive_mark(leg.symbol)
        for leg in legs:
            run_sync(leg.strategy.on_candle_closed(leg.filters.from_ticks(int(leg.ticks[3][0]))))
            self.deliver()
        self.mark_all(1)
        solo = _Solo(self)
        i = 1
        while i < n:
            if self.solo and i >= solo.retry_at and not self.stop_share:
                r = solo.run(i)
                if r is not None:
                    i = r
                    continue
            js = [leg.next_event(i) for leg in legs]
            if all(j == -2 for j in js):
                break
            live = [j for j in js if j >= 0]
            j = min(live) if live else -1
            lim = j if j >= 0 else n - 1
            due = self.next_funding(lim)
            # A settlement ends the stretch checked for the account's liquidation and stop: the
            # minutes before it are checked on the wallet before it.
            last = due - 1 if due is not None else (j - 1 if j >= 0 else n - 1)
            hit = self.breach(i, last) if self.open_positions() >= 2 else None
            stop = self.stop_due(i, last if hit is None else hit - 1) if self.stop_share and not self.stopped_at \
                else None
            if stop is not None:
                self.stop_at(stop)
                i = stop + 1
                continue
            if hit is not None:
                self.play_together(hit, [leg for leg in legs if leg.pos.steps])
                i = hit + 1
                continue
            if due is not None:
                k = self.funding_due(lim)
                i = k if k is not None else i       # None: only flat legs were due; scan again
                continue
            if j < 0:
                break
            self.play_minute(j, [leg for leg, x in zip(legs, js) if x == j])
            if self.stop_share and not self.stopped_at:
                level = (1 - self.stop_share) * self.peak
                if self.worst_at.get(j, math.inf) < level:
                    self.stop_at(j, after_path=True)
                else:
                    self.peak = max(self.peak, self.equity_now())
            i = j + 1

    def next_funding(self, lim: int) -> int | None:
        """The candle of the earliest settlement of any leg at or before candle `lim`."""
        return min((leg.f_idx[leg.fi] for leg in self.legs if leg.fi < len(leg.f_idx) and leg.f_idx[leg.fi] <= lim),
                   default=None)

    def funding_due(self, lim: int) -> int | None:
        """The earliest settlement of any leg at or before candle `lim`, settled at that
        candle's open (the other legs at their last close); None when none is due."""
        while True:
            due = [(leg.f_idx[leg.fi], n) for n, leg in enumerate(self.legs) if leg.fi < len(leg.f_idx)
                   and leg.f_idx[leg.fi] <= lim]
            if not due:
                return None
            k, which = min(due)
            leg = self.legs[which]
            for other in self.legs:
                if other is not leg and k > 0 and other.pos.steps:
                    self.move(other, k - 1)
            if leg.funding_due(k) is not None:
                self.mark_all(k)
                return k

    def breach(self, i: int, last: int) -> int | None:
        """The first minute in [i, last] (no trigger of any leg inside) where the account's
        margin balance, every symbol at its adverse extreme, reaches the positions'
        maintenance margin.  A window of minutes at a time (no stretch-sized temporaries)."""
        if self._band_cannot_breach():
            return None
        return _first_in_windows(i, last, self._breach_in)

    def _band_cannot_breach(self) -> bool:
        """The bound of `_cannot_breach` without reading the candles: no leg reaches a trigger
        before the stretch ends, so each held symbol's price stays strictly between the
        thresholds its last `next_event` scanned for (its band).  Needs a band on both sides
        of every position, and prices (not marks) driving the liquidation."""
        def band(leg: _Replay) -> tuple[int, int] | None:
            up, down = leg.band
            if leg.mark_ticks is not None or up >= NO_UP or down <= NO_DOWN:
                return None
            return down + 1, up - 1
        return self._held_cannot_breach(band)

    def _held_cannot_breach(self, range_of: Callable[[_Replay], tuple[int, int] | None]) -> bool:
        """Every held position at the low (long) or high (short) of its range of ticks for its
        equity and at the high for its maintenance margin: the margin balance still above the
        maintenance margin.  False where a range is unknown (None)."""
        eq = self.sim.account.wallet
        maint = 0.0
        for leg in self.legs:
            p = leg.pos
            if not p.steps or leg.book.brackets is None:
                continue
            r = range_of(leg)
            if r is None:
                return False
            f = leg.filters
            top = f.from_ticks(r[1])
            adverse = f.from_ticks(r[0]) if p.qty > 0 else top
            eq += p.qty * (adverse - p.entry_price)
            maint += leg.book.brackets.maint_margin(abs(p.qty) * top)
        return eq > maint

    def _breach_in(self, i: int, last: int) -> int | None:
        if self._cannot_breach(i, last):
            return None
        eq = np.full(last + 1 - i, self.sim.account.wallet)
        maint = np.zeros(last + 1 - i)
        for leg in self.legs:
            p = leg.pos
            if not p.steps or leg.book.brackets is None:
                continue
            src = leg.mark_ticks if leg.mark_ticks is not None else leg.ticks
            adverse = leg.filters.prices_of_ticks(src[2][i:last + 1] if p.qty > 0 else src[1][i:last + 1])
            eq += p.qty * (adverse - p.entry_price)
            maint += _maint_margins(leg.book.brackets, np.abs(p.qty) * adverse)
        hit = np.flatnonzero(eq <= maint)
        return i + int(hit[0]) if len(hit) else None

    def _cannot_breach(self, i: int, last: int) -> bool:
        """A bound over the whole stretch first: every position at the stretch's adverse
        extreme for its equity and at its highest price for its maintenance margin."""
        def extremes(leg: _Replay) -> tuple[int, int]:
            src = leg.mark_ticks if leg.mark_ticks is not None else leg.ticks
            return int(src[2][i:last + 1].min()), int(src[1][i:last + 1].max())
        return self._held_cannot_breach(extremes)

    def stop_due(self, i: int, last: int) -> int | None:
        """The first minute in [i, last] (no trigger inside) whose worst equity falls below
        (1 − ACCOUNT_STOP_DRAWDOWN) × the peak of the closes before it; the peak moves on
        to the stretch's closes otherwise.  A window of minutes at a time."""
        return _first_in_windows(i, last, self._stop_in)

    def _stop_in(self, i: int, last: int) -> int | None:
        held = [leg for leg in self.legs if leg.pos.steps]
        wallet = self.sim.account.wallet
        if not held:
            self.peak = max(self.peak, wallet)
            return None
        close = np.full(last + 1 - i, wallet)
        worst = close.copy()
        for leg in held:
            p, f = leg.pos, leg.filters
            close += p.qty * (f.prices_of_ticks(leg.ticks[3][i:last + 1]) - p.entry_price)
            adverse = leg.ticks[2] if p.qty > 0 else leg.ticks[1]
            worst += p.qty * (f.prices_of_ticks(adverse[i:last + 1]) - p.entry_price)
        peak_before = np.maximum(self.peak, np.concatenate(([self.peak], np.maximum.accumulate(close)[:-1])))
        hit = np.flatnonzero(worst < (1 - self.stop_share) * peak_before)
        if len(hit):
            return i + int(hit[0])
        self.peak = max(self.peak, float(close.max()))
        return None

    def stop_at(self, k: int, after_path: bool = False) -> None:
        """ACCOUNT_STOP_DRAWDOWN fired in minute k: every symbol at its adverse extreme of
        the minute (the worst case the candle allows; after a played minute, where it ended),
        then every strategy stops as live (orders cancelled, position closed at market, no
        new grid)."""
        sim = self.sim
        t = int(self.times[k])
        sim.now_ms = t + 59_999 if after_path else t
        if not after_path:
            for leg in self.legs:
                if leg.pos.steps:
                    which = 2 if leg.pos.qty > 0 else 1
                    sim.set_price_ticks(leg.symbol, int(leg.ticks[which][k]))
                    if leg.mark_ticks is not None:
                        sim.set_mark_ticks(leg.symbol, int(leg.mark_ticks[which][k]))
                else:
                    self.move(leg, k - 1 if k > 0 else 0)
        level = (1 - self.stop_share) * self.peak
        why = f"the account's equity fell below {level:,.2f} ({self.stop_share:.0%} under its peak {self.peak:,.2f})"
        self.stopped_at = sim.now_ms
        for leg in self.legs:
            run_sync(leg.strategy.stop_for_account(sim.now_ms, why))
            self.deliver()
        if not after_path:
            for leg in self.legs:
                self.move(leg, k)
            self.deliver()
        self.worst_at[k] = min(self.worst_at.get(k, math.inf), max(0.0, self.equity_now()))
        self.mark_all(k)

    def play_minute(self, j: int, acting: list[_Replay]) -> None:
        """Minute j: the legs with an event play their candle's path in turn; the others
        stand at their last close, then move to this minute's close.  Where the order of the
        symbols' paths can matter (two legs act, or one acts while another holds a position,
        and the margin could bind), they are played together as the local exchange plays them."""
        together = [leg for leg in self.legs if leg in acting or leg.pos.steps]
        bounded = len(together) >= 2
        if bounded and not self.order_cannot_matter(j, acting):
            self.play_together(j, together)
            return
        sim = self.sim
        # Bounded: no liquidation and no -2019 can fall in this minute (order_cannot_matter),
        # so the account's checks are suspended and the liquidation prices set once at its
        # end, not after every move of every symbol (the triggers resting now lie beyond the
        # minute's ranges).
        on = sim.suspend_account_checks() if bounded else True
        # Only a held position's price counts for the others (its uPnL and margin); a flat
        # symbol's book price matters to nothing until it acts (its open is set then).
        idle = [leg for leg in self.legs if leg not in acting and leg.pos.steps]
        for leg in idle:
            self.move(leg, j - 1)
        if bounded:             # an acting symbol waits at its previous close too (its path opens it)
            for leg in acting:
                if leg.pos.steps:
                    self.move(leg, j - 1)
        if not bounded and self.open_positions() >= 2:
            sim.account.update_liquidation()            # the others' marks have moved since
            self.deliver()
        worst = math.inf
        for leg in acting:
            leg.play_event_candle(j)
            worst = min(worst, leg.worst_at.get(j, math.inf))
        for leg in idle:
            self.move(leg, j)
        if bounded:
            sim.resume_account_checks(on)
            sim.account.update_liquidation()
        self.deliver()
        self.worst_at[j] = worst if math.isfinite(worst) else self.equity_now()
        self.mark_all(j)

    def order_cannot_matter(self, j: int, acting: list[_Replay]) -> bool:
        """True when minute j cannot meet a margin refusal (-2019) or the account's liquidation
        whatever the order of the symbols' paths, so each acting leg may play its candle alone
        (as a single-symbol run does) and give the same fills as played together.

        A bound, not a simulation: every symbol at the far ends of its minute (and of its
        previous close), each position grown by every resting order that adds exposure and,
        for a symbol that acts, a whole new ladder on top; the wallet less what all of that
        could lose and pay in taker fees must still cover all of its initial margin.  The
        margin balance then stays above the initial margin, hence above the maintenance
        margin, and no order can find the available balance short.  The account stop's
        minute-by-minute path keeps the exact play."""
        if self.stop_share:
            return False
        free = self.sim.account.wallet
        for k, leg in enumerate(self.legs):
            p, b = leg.pos, leg.book
            if not p.steps and not (b.open_buy_notional or b.open_sell_notional) and leg not in acting:
                continue                # nothing held, nothing resting, nothing to place
            # The minute's range and the previous close (where the others stand until it).
            src = leg.ticks
            lo_t, hi_t = int(src[2][j]), int(src[1][j])
            if j:
                prev = int(src[3][j - 1])
                lo_t, hi_t = min(lo_t, prev), max(hi_t, prev)
            if leg.mark_ticks is not None:
                mk = leg.mark_ticks
                lo_t, hi_t = min(lo_t, int(mk[2][j]), int(mk[3][j - 1]) if j else lo_t), \
                    max(hi_t, int(mk[1][j]), int(mk[3][j - 1]) if j else hi_t)
            if leg in acting:
                free += self.leg_term(k, lo_t, hi_t, int(src[1][j]), int(src[2][j]))
            else:
                free += self.leg_term(k, lo_t, hi_t)
        return free > 0

    def _bound_of(self, leg: _Replay) -> Callable[..., float]:
        """`leg_term` of one symbol, its constants bound once (a closure: this runs after every
        event of a stretch played alone): its price units, tick, leverage, a whole ladder's
        share of the capital and 1 − its farthest level, its brackets (None where the initial
        margin covers the maintenance margin at every notional) and the notional below which it
        does anyway, the fee rate, and the stops a wide minute allows."""
        f, lev = leg.filters, leg.pos.leverage
        brackets = leg.book.brackets
        if brackets is not None and not 1.0 / lev < max((t.mmr for t in brackets.tiers), default=0.0):
            brackets = None
        units, scale, tick = f._tick_units, f._price_scale, f.tick_size
        ratios, reach = sum(leg.config.entry_ratios), 1.0 - max(leg.config.level_distances)
        covered = _covered_notional(brackets, lev) if brackets is not None else 0.0
        fee2, per_stop = self.fee2, _stops_per_width(leg.config)
        p, b = leg.pos, leg.book
        # a whole ladder's notional at its levels (the capital is the symbol's for the run)
        ladder_at_levels = ratios * leg.strategy.state.capital * lev

        def bound(lo_t: int, hi_t: int, act_hi: int, act_lo: int, more: int = 0) -> float:
            lo, hi = lo_t * units / scale, hi_t * units / scale          # SymbolFilters.from_ticks
            lo_safe = lo if lo > tick else tick
            orders = (b.open_buy_notional + b.open_sell_notional) * hi / lo_safe
            again = 0.0         # ladders that could be stopped out after the first, in that minute
            if act_hi >= 0:
                ladder = ladder_at_levels * hi / lo_safe / reach
                orders += ladder if not more else ladder * (1 + more)      # `more` ladders resting too
                stops = int(per_stop * (act_hi / max(act_lo, 1) - 1.0))
                if stops:
                    again = stops * ladder
            qty = p.qty
            held = abs(qty) * hi
            worst = qty * ((lo if qty > 0 else hi) - p.entry_price)
            margin = (held + orders) / lev
            if brackets is not None and held + orders >= covered:
                margin = max(margin, brackets.maint_margin(held + orders))
            if again:
                return worst - (orders + again) * (hi - lo) / lo_safe - margin - fee2 * (held + orders + again)
            return worst - orders * (hi - lo) / lo_safe - margin - fee2 * (held + orders)
        return bound

    def leg_term(self, k: int, lo_t: int, hi_t: int, act_hi: int = -1, act_lo: int = 1) -> float:
        """Symbol k's share of `order_cannot_matter`'s bound with its price (and mark) within
        [lo_t, hi_t] ticks: what its position could lose, its resting orders (and, acting in a
        minute whose high and low are act_hi and act_lo ticks (act_hi -1: not acting), a whole
        new ladder, more where that minute is wide enough to stop out more than one) could lose
        and pay in fees, less their initial margin (negative: what it takes from the wallet)."""
        return self.bounds[k](lo_t, hi_t, act_hi, act_lo)

    def play_together(self, j: int, legs: list[_Replay]) -> None:
        """Minute j as the local exchange plays it (localex/clock.py): every leg at the previous
        close, each one's open in turn, then the first leg of every symbol's path, the second,
        the closes; the strategies react to their events at once and to the price at each
        vertex.  The account's liquidation falls where this path crosses it (the sim's
        triggers, moved with the other symbols' marks at each vertex)."""
        sim, t = self.sim, int(self.times[j])
        self.move_quietly(legs, j - 1)      # a flat symbol's price matters to nothing until it acts
        paths = []
        for leg in legs:
            leg.replayed += 1
            o, h, l, c = (int(a[j]) for a in leg.ticks)
            mt = leg.mark_ticks
            mark = (int(mt[0][j]), int(mt[1][j]), int(mt[2][j]), int(mt[3][j])) if mt is not None else None
            path = play_candle(sim, leg.symbol, o, h, l, c, t,
                               leg_steps=None if leg.leg_steps is None else int(leg.leg_steps[j]), mark=mark)
            next(path)                                  # the open: a jump that fills nothing
            self.deliver()
            paths.append(path)
        worst = self.equity_now()
        self.react_to_price(legs)
        for _ in (1, 2, 3):
            for path in paths:
                for step in path:
                    if step != FILL:
                        break                           # at this leg's vertex
                    self.deliver()
                    worst = min(worst, self.equity_now())
            worst = min(worst, self.equity_now())
            self.react_to_price(legs)
        self.worst_at[j] = max(0.0, worst) if self.legs[0].liquidation else worst
        self.mark_all(j)

    def react_to_price(self, legs: list[_Replay]) -> None:
        """A flat strategy's range exit at a vertex (the only thing on_price does)."""
        for leg in legs:
            if leg.strategy.is_flat_and_unfilled():
                run_sync(leg.strategy.on_price(leg.book.price))
                self.deliver()

    def move_quietly(self, legs: list[_Replay], i: int) -> None:
        """Every leg to candle i's close at once: the account's liquidation is checked on
        where they all stand, not on each step of getting there."""
        if i < 0:
            return
        sim = self.sim
        on = sim.liquidation_enabled
        sim.liquidation_enabled = False
        for leg in legs:
            self.move(leg, i)
        sim.liquidation_enabled = on
        sim.account.update_liquidation()
        self.deliver()

    def result(self, elapsed_s: float) -> PortfolioResult:
        """The account's curves and each symbol's, filled a chunk of minutes at a time: the
        curves cost their own bytes, no series-sized temporaries beside them."""
        n, legs = len(self.times), self.legs
        w_start = np.asarray(self.w_start, dtype=np.int64)
        w_state = np.asarray(self.w_state, dtype=np.float64)
        equity, worst = np.empty(n), np.empty(n)
        curves = [_SymbolCurves(leg, [x for x in self.sim.funding if x.symbol == leg.symbol],
                                [x for x in self.sim.liquidations if x.symbol == leg.symbol]) for leg in legs]
        for a in range(0, n, CURVE_CHUNK):
            b = min(a + CURVE_CHUNK, n)
            equity[a:b] = worst[a:b] = w_state[_counts_upto(w_start, a, b) - 1]
            for c in curves:
                c.fill(a, b, equity, worst)
        if self.worst_at:
            at = np.fromiter(self.worst_at.keys(), np.int64, len(self.worst_at))
            worst[at] = np.minimum(worst[at], np.fromiter(self.worst_at.values(), np.float64, len(at)))
        if legs[0].liquidation:
            np.maximum(equity, 0.0, out=equity)
            np.maximum(worst, 0.0, out=worst)
        sim = self.sim
        final = sim.account.wallet + sum(leg.pos.qty * (float(leg.candles.close[-1]) - leg.pos.entry_price)
                                         for leg in legs)
        return PortfolioResult(self.wallet, self.times, equity, worst, final,
                               [c.result(self.wallet, elapsed_s) for c in curves], list(sim.liquidations),
                               elapsed_s, account_stopped_at=self.stopped_at,
                               minutes_alone=self.minutes_alone, stretches=self.stretches)


class _Solo:
    """Stretches of a portfolio where the account provably cannot matter, played as a
    single-symbol run plays them: each symbol from its event to its next, in time order,
    with no margin check, no liquidation trigger and no account-wide step in between.

    Each symbol gets an allowance of the wallet at the start: its own need (`leg_term`)
    plus a share, by capital, of what the wallet holds beyond every symbol's need.  After
    each of its events it must still fit that allowance, less the cash it has realised
    since, for everything up to and including its next event: its price anywhere in its
    band (strictly between the triggers its scan stopped at) and in that event's minute,
    its resting orders and a whole new ladder.  The allowances sum to less than the wallet,
    so `order_cannot_matter`'s bound holds at every moment: no -2019, no liquidation, no
    order of the symbols' paths that matters.  The first symbol that no longer fits ends
    the stretch after its minute (or funding) and the minute-by-minute play resumes there,
    on a wallet that moved in the same order as it would have there."""

    MIN_BACKOFF, MAX_BACKOFF = 1, 4096      # minutes before the next try (doubled after each short stretch)

    def __init__(self, port: _Portfolio) -> None:
        self.port = port
        total = sum(leg.capital for leg in port.legs)
        self.share = [leg.capital / total if total > 0 else 1.0 / len(port.legs) for leg in port.legs]
        # The other symbols' uPnL while one plays its minute: the sum of those before it (in
        # the legs' order) and the terms after it, so its equity adds them as equity_now does.
        # A box, not attributes: the equity functions hold it, not this object (no cycle).
        self.others: list = [0.0, ()]
        self.accounts = [self._equity_for(leg, len(port.legs) == 2) for leg in port.legs]
        # Read at every event: each symbol's highs, lows and closes by index (`item` gives a
        # Python int, twice as fast as int(array[i])) and its price units (from_ticks inline).
        self.high_at = [leg.ticks[1].item for leg in port.legs]
        self.low_at = [leg.ticks[2].item for leg in port.legs]
        self.close_at = [leg.ticks[3].item for leg in port.legs]
        self.units = [(leg.filters._tick_units, leg.filters._price_scale) for leg in port.legs]
        self.ks = range(len(port.legs))
        self.term_fns, self.forget_fns = map(list, zip(*(self._term_of(k) for k in self.ks)))
        self.rest = [tuple(m for m in self.ks if m != k) for k in self.ks]      # the others of each
        self.retry_at = 0
        self.backoff = self.MIN_BACKOFF
        # The volume fill model lets a market stop sweep beyond a candle's range (a thin
        # book): the bound's ranges would not hold, so such runs play minute by minute.
        self.playable = all(leg.leg_steps is None for leg in port.legs)

    def _equity_for(self, leg: _Replay, pair: bool) -> Callable[[], float]:
        """The account's equity as `_Portfolio.equity_now` sums it (exactly so for two
        symbols), with the others' uPnL fixed for the minute this symbol plays."""
        acct, p, b, others = self.port.sim.account, leg.pos, leg.book, self.others
        if pair:                # two symbols: the other's uPnL is others[0], never a list
            def equity_of_pair() -> float:
                return acct.wallet + (others[0] + p.qty * (b.price - p.entry_price))
            return equity_of_pair

        def equity() -> float:
            upnl = others[0] + p.qty * (b.price - p.entry_price)
            if others[1]:
                for x in others[1]:
                    upnl += x
            return acct.wallet + upnl
        return equity

    @staticmethod
    def _range(leg: _Replay, a: int, j: int) -> tuple[int, int]:
        """Ticks that hold the symbol's price (and mark) from where it stands now through
        candle j (its next event; -1: the series' end), read from the candles from a: where
        a mark drives it or its band is open on one side (`term` reads a closed band itself)."""
        b = leg.book
        end = j if j >= 0 else len(leg.times) - 1
        lo_t = hi_t = b.price_t
        if a <= end:
            lo_t = min(lo_t, int(leg.ticks[2][a:end + 1].min()))
            hi_t = max(hi_t, int(leg.ticks[1][a:end + 1].max()))
        if leg.mark_ticks is not None:
            mk = leg.mark_ticks
            lo_t, hi_t = min(lo_t, b.mark_t), max(hi_t, b.mark_t)
            if a <= end:
                lo_t = min(lo_t, int(mk[2][a:end + 1].min()))
                hi_t = max(hi_t, int(mk[1][a:end + 1].max()))
        return lo_t, hi_t

    WIDE = 1.0      # a wide range spans at most this many times a grid's reach (its farthest level or stop) each side

    def _term_of(self, k: int) -> tuple[Callable[[int, int, float], float], Callable[[], None]]:
        """Symbol k's term from where it stands through its next event j (scanned from candle a;
        -1: none to the series' end; -2: halted), given `room` (what it may take from the wallet
        beside its term), and a function that forgets the wide range (at a stretch's start).

        The exact term is `leg_term` over its band (strictly between the triggers its scan
        stopped at, read without the candles) and the next event's minute.  Computed after every
        event, it would cost more than the event.  So the term is first taken over a wide range
        of prices around where the symbol stands, with one more whole ladder; while each later
        band and event minute lie inside that range, the term still holds and is not computed
        again.  It holds because nothing the symbol can do there needs more on that range:
        - a resting entry that fills turns notional valued at hi / lo into a position valued at
          hi, bought inside the range (less margin, fees and loss on the same range);
        - an exit (reduce-only, not counted) realises at most what the position could lose, and
          the realised cash is counted in the allowance as it comes;
        - a new grid is placed only once the one before is flat or cancelled (a break-even
          regrid keeps at most one ladder in all): its ladder is the one more counted, as
          resting orders with their margin, and the grid after it the one `leg_term` counts
          for acting, with the stops the range's width allows in a minute (any minute inside
          it is narrower); so even a term taken with nothing resting covers a grid placed later.
        Quantities round down to the step (a grid's notional is at most its ladder's), the
        capital and leverage are the run's, the direction the config's.
        Where the wide term does not fit the room, the exact term is taken.
        A closure, not a method (it holds the leg and its bound, not this object)."""
        leg, bound, high_at, low_at = self.port.legs[k], self.port.bounds[k], self.high_at[k], self.low_at[k]
        book, marks, span = leg.book, leg.mark_ticks is not None, self._range
        cfg = leg.config
        widest = self.WIDE * max(max(cfg.level_distances), cfg.sl_distance)
        per_stop = _stops_per_width(cfg)
        # the wide range's lowest and highest ticks (w_lo > w_hi: none), its term, the ratio of
        # a minute's high to its low below which that term counts enough stops, and the share of
        # the price the next wide range spans each side (a fifth narrower after one that does
        # not fit the room, 5 % wider after one that does, up to `widest`: it finds the width
        # that fits this symbol's allowance, which only moves the cost, never the results)
        w_lo, w_hi, w_term, w_ratio, pad = 1, 0, 0.0, 1.0, widest

        def term(a: int, j: int, room: float) -> float:
            nonlocal w_lo, w_hi, w_term, w_ratio, pad
            if j >= 0 and not marks:
                # inside the wide range (band, price and the event's minute), a minute no wider:
                # its term holds (an open band's NO_UP / NO_DOWN lies outside any range)
                up, down = leg.band
                x_lo, x_hi = low_at(j), high_at(j)
                if w_lo <= down + 1 and up - 1 <= w_hi and w_lo <= x_lo and x_hi <= w_hi \
                        and w_lo <= book.price_t <= w_hi and x_hi < x_lo * w_ratio:
                    return w_term
            if j == -2:
                w_lo, w_hi = 1, 0
                return 0.0          # halted, flat, nothing resting: takes nothing
            up, down = leg.band
            pt = book.price_t
            if marks or up >= NO_UP or down <= NO_DOWN:
                lo_t, hi_t = span(leg, a, j)
                if j >= 0:
                    x_hi, x_lo = high_at(j), low_at(j)
                    if w_lo <= lo_t and hi_t <= w_hi and x_hi < x_lo * w_ratio:
                        return w_term   # the range read from the candles lies inside: it holds
                else:
                    x_hi = x_lo = -1
            else:
                lo_t, hi_t = down + 1, up - 1
                if pt < lo_t:
                    lo_t = pt
                elif pt > hi_t:
                    hi_t = pt
                if j >= 0:
                    x_lo, x_hi = low_at(j), high_at(j)
                    if x_lo < lo_t:
                        lo_t = x_lo
                    if x_hi > hi_t:
                        hi_t = x_hi
                else:
                    x_hi = x_lo = -1
            if j < 0:
                w_lo, w_hi = 1, 0
                return bound(lo_t, hi_t, -1, 1)     # no event to the series' end: no new grid
            lo_w, hi_w = min(lo_t, int(pt * (1.0 - pad))), max(hi_t, math.ceil(pt * (1.0 + pad)))
            wide_term = bound(lo_w, hi_w, x_hi, x_lo, 1)
            if room + wide_term > 0:
                # the widest minute whose stops the term counts: high / low below this
                stops = int(per_stop * (x_hi / max(x_lo, 1) - 1.0))
                w_lo, w_hi, w_term = lo_w, hi_w, wide_term
                w_ratio = 1.0 + (stops + 1) / per_stop * (1.0 - 1e-9) if per_stop else math.inf
                pad = min(pad * 1.05, widest)       # fits: try wider next time
                return wide_term
            w_lo, w_hi, pad = 1, 0, pad * 0.8       # does not fit: narrower next time
            return bound(lo_t, hi_t, x_hi, x_lo)

        def forget() -> None:
            nonlocal w_lo, w_hi
            w_lo, w_hi = 1, 0
        return term, forget

    def run(self, i: int) -> int | None:
        """Play from minute i while every symbol fits its allowance; returns the minute where
        the minute-by-minute play resumes, or None when no stretch can start at i."""
        port = self.port
        sim, legs, n = port.sim, port.legs, len(port.times)
        acct = sim.account
        for leg in legs:
            drop_liquidation(leg.book)      # a resting trigger would be stale: none can be reached
        nxt = [leg.next_event(i) for leg in legs]
        for forget in self.forget_fns:
            forget()            # the state changed since the last stretch, by another play
        terms = [self.term_fns[k](i, j, -math.inf) for k, j in enumerate(nxt)]       # exact
        slack = acct.wallet + sum(terms)
        if not (acct.wallet > 0 and slack > 1e-4 * acct.wallet) or not self.playable:
            acct.update_liquidation()       # put back as they were
            port.deliver()
            self._tried(i, 0)
            return None
        # fits[k]: what symbol k may still take from the wallet, its allowance less its need
        # and plus its realised cash (> 0 to go on)
        fits = [slack * share * (1.0 - 1e-6) for share in self.share]
        on = sim.suspend_account_checks()
        for leg, equity in zip(legs, self.accounts):
            leg.account = equity        # type: ignore[method-assign]
            del leg.deliver             # its own: only the symbol that plays has events
        fund = [self._funding_at(leg, n) for leg in legs]
        events, ks = 0, self.ks
        while True:
            when, funded, who = n, -1, -1       # who: the one symbol acting then (-2: several)
            for k in ks:
                f = fund[k]
                if f < when or (f == when and funded < 0):
                    when, funded = f, k         # a settlement comes before the candles of its minute
                j = nxt[k]
                if 0 <= j < when:
                    when, funded, who = j, -1, k
                elif j == when and funded < 0:
                    who = -2
            if when >= n:
                self._leave(n, n - 1, None, on)
                break
            wallet = acct.wallet
            if funded >= 0:
                leg = legs[funded]
                leg.funding_due(when)
                fund[funded] = self._funding_at(leg, n)
                self._mark_wallet(when)
                fits[funded] += acct.wallet - wallet
                if not fits[funded] > 0:
                    self._leave(when, when - 1, leg, on)
                    break
                continue
            if who >= 0:
                when, ok, played = self._play_leg(who, when, nxt, fits, terms, fund)
            else:
                ok, played = self._play_minute(when, [k for k in ks if nxt[k] == when], nxt, fits, terms, fund), 1
            events += played
            if not ok:
                self._leave(when + 1, when, None, on)
                break
        self._tried(when, events)
        port.minutes_alone += events
        port.stretches += 1
        return when + 1 if funded < 0 else when

    @staticmethod
    def _funding_at(leg: _Replay, n: int) -> int:
        """The candle of the symbol's next settlement while it holds a position (n: none)."""
        return leg.f_idx[leg.fi] if leg.pos.steps and leg.fi < len(leg.f_idx) else n

    def _play_leg(self, k: int, j: int, nxt: list[int], fits: list[float], terms: list[float],
                  fund: list[int]) -> tuple[int, bool, int]:
        """Symbol k alone from its event in minute j through its next events while they come
        before every other symbol's next event and every settlement (the others' positions do
        not change meanwhile): `_play_minute` for one symbol, without choosing the next minute
        between events.  Of a pair, the other symbol's run follows at once where it acts next,
        alone and before any settlement (as `run` would choose it).  Returns the last minute
        played, whether the last symbol that played still fits its allowance after it, and how
        many minutes were played."""
        port, others = self.port, self.others
        legs, acct, n = port.legs, port.sim.account, len(port.times)
        w_start, w_state = port.w_start, port.w_state
        pair, played = len(legs) == 2, 0
        while True:
            leg, term_of, rest = legs[k], self.term_fns[k], self.rest[k]
            until = n           # the others' next event or any settlement ends the run
            for m in rest:
                x = nxt[m]
                if 0 <= x < until:
                    until = x
                x = fund[m]
                if x < until:
                    until = x
            # the others held: one (the usual pair) has its uPnL read inline at each minute
            held = [m for m in rest if legs[m].pos.steps]
            one = len(held) == 1
            if len(held) <= 1:
                others[0], others[1] = 0.0, ()      # nobody else holds; or one, set below
            if one:
                p_one = legs[held[0]].pos
                qty, entry, close_at = p_one.qty, p_one.entry_price, self.close_at[held[0]]
                tick_units, scale = self.units[held[0]]
            f_idx, nf = leg.f_idx, len(leg.f_idx)
            fit, term = fits[k], terms[k]
            while True:
                if not leg.pos.steps:
                    leg.funding_due(j)          # flat until now: settlements up to here pass it by
                if one:
                    others[0] = qty * (close_at(j - 1) * tick_units / scale - entry)     # from_ticks inline
                elif held:
                    self._set_others(k, j, nxt)     # no other plays in minute j: all at j - 1
                wallet = acct.wallet
                leg.play_event_candle(j)
                fit += acct.wallet - wallet
                wallet = acct.wallet
                if wallet != w_state[-1]:
                    w_start.append(j)
                    w_state.append(wallet)
                played += 1
                j2 = leg.next_event(j + 1)
                new = term_of(j + 1, j2, fit - term)
                fit += new - term
                term = new
                f = f_idx[leg.fi] if leg.pos.steps and leg.fi < nf else n          # _funding_at
                if not fit > 0 or j2 < 0 or j2 >= until or f <= j2:
                    break
                j = j2
            nxt[k], fund[k], fits[k], terms[k] = j2, f, fit, term
            if not (pair and fit > 0):
                break
            o = rest[0]
            jo = nxt[o]
            if not (0 <= jo < f and jo < fund[o] and (jo < j2 or j2 < 0)):
                break           # a settlement, both in one minute, or the end: `run` chooses
            k, j = o, jo
        return j, fit > 0, played

    def _play_minute(self, j: int, acting: list[int], nxt: list[int], fits: list[float], terms: list[float],
                     fund: list[int]) -> bool:
        """Minute j: each symbol with an event there (`acting`, two or more) plays its candle, in
        order, the others standing at their previous close (those that played, at their close);
        then each of them scans for its next event and must still fit its allowance (False:
        one does not)."""
        port = self.port
        legs, acct = port.legs, port.sim.account
        worst = math.inf
        for k in acting:
            leg = legs[k]
            if not leg.pos.steps:
                leg.funding_due(j)          # flat until now: settlements up to here pass it by
            self._set_others(k, j, nxt)
            wallet = acct.wallet
            leg.play_event_candle(j)
            fits[k] += acct.wallet - wallet
            w = leg.worst_at[j]
            if w < worst:
                worst = w
        port.worst_at[j] = worst
        self._mark_wallet(j)
        ok, n = True, len(port.times)
        for k in acting:
            leg = legs[k]
            nxt[k] = j2 = leg.next_event(j + 1)
            term = self.term_fns[k](j + 1, j2, fits[k] - terms[k])
            fits[k] += term - terms[k]
            terms[k] = term
            fund[k] = self._funding_at(leg, n)
            if not fits[k] > 0:
                ok = False
        return ok

    def _set_others(self, k: int, j: int, nxt: list[int]) -> None:
        """The others' uPnL while symbol k plays minute j, into the box its equity reads: each
        held one at its previous close, or at this minute's close where it played before k;
        summed before k in the legs' order, listed after it (as `equity_now` sums them)."""
        before, after = 0.0, []
        for m, o in enumerate(self.port.legs):
            p = o.pos
            if m != k and p.steps:
                tick_units, scale = self.units[m]       # SymbolFilters.from_ticks, inline
                close = self.close_at[m](j if m < k and nxt[m] == j else j - 1) * tick_units / scale
                u = p.qty * (close - p.entry_price)
                if m < k:
                    before += u
                else:
                    after.append(u)
        if len(after) == 1 and before == 0.0:
            before, after = after[0], []        # 0.0 + own + x is x + own: one sum, no loop
        self.others[0], self.others[1] = before, after

    def _mark_wallet(self, i: int) -> None:
        port = self.port
        wallet = port.sim.account.wallet
        if wallet != port.w_state[-1]:
            port.w_start.append(i)
            port.w_state.append(wallet)

    def _leave(self, resume: int, stand: int, funded: _Replay | None, on: bool) -> None:
        """Back to the minute-by-minute play at `resume`: every held symbol where that play
        would have it (the close of `stand`; a symbol just funded at its open), the checks on,
        the liquidation prices placed."""
        port, sim = self.port, self.port.sim
        for leg in port.legs:
            leg.account = port.equity_now       # type: ignore[method-assign]
            leg.deliver = port.deliver          # type: ignore[method-assign]
            if not leg.pos.steps:
                # settlements passed while it was flat pass it by, as the minute-by-minute play
                # skips them at their minute (not later, with the others moved back to then)
                while leg.fi < len(leg.f_idx) and leg.f_idx[leg.fi] < resume:
                    leg.fi += 1
        sim.resume_account_checks(on)
        if resume >= len(port.times) or stand < 0:
            return
        for leg in port.legs:
            if leg.pos.steps and leg is not funded:
                port.move(leg, stand)
        sim.account.update_liquidation()
        port.deliver()
        port.mark_all(stand + 1 if funded is not None else stand)

    def _tried(self, i: int, events: int) -> None:
        """When to try again: soon after a long stretch, later and later after short ones."""
        self.backoff = self.MIN_BACKOFF if events >= 32 else min(self.backoff * 2, self.MAX_BACKOFF)
        self.retry_at = i + self.backoff


class _SymbolCurves:
    """One symbol of a portfolio on its capital: its own realised PnL, fees, funding and
    liquidation clearance, stepped at the minute they happened, plus its open PnL; its open
    PnL is also added to the account's curves, chunk by chunk."""

    def __init__(self, leg: _Replay, funding: list[FundingSettlement], liqs: list[Liquidation]) -> None:
        self.leg, self.funding, self.liqs = leg, funding, liqs
        n = len(leg.times)
        self.equity, self.worst = np.empty(n), np.empty(n)
        self.seg_start = np.asarray(leg.seg_start, dtype=np.int64)
        # qty and average of each segment, the first repeated in front: index k is the k-th
        # segment's state for a minute with k segments started at or before it (0: the first's)
        states = _rows(leg.seg_state[:1] + leg.seg_state)         # (wallet, qty, avg) rows
        self.qty, self.avg = states[:, 1].copy(), states[:, 2].copy()
        del states
        # the cash moves (fills net of fees, funding, liquidation clearance) in time order, ties
        # by amount (as sorted tuples), summed in that order; 0.0 in front (none yet)
        fills, k = leg.fills, len(leg.fills)
        t = np.concatenate((np.fromiter(map(attrgetter("time_ms"), fills), np.int64, k),
                            np.array([x.time for x in funding] + [x.time for x in liqs], dtype=np.int64)))
        v = np.concatenate((np.fromiter(map(attrgetter("realized_pnl"), fills), np.float64, k)
                            - np.fromiter(map(attrgetter("fee"), fills), np.float64, k),
                            np.array([-x.amount for x in funding] + [-x.clearance for x in liqs], dtype=np.float64)))
        order = np.lexsort((v, t))
        self.move_t = t[order]
        self.move_cum = np.concatenate(([0.0], np.cumsum(v[order])))
        # each move's minute: the first whose end (open + 59,999 ms) is at or after it
        self.move_at = np.searchsorted(leg.times, self.move_t - 59_999, side="left")

    def fill(self, a: int, b: int, equity: np.ndarray, worst: np.ndarray) -> None:
        """Minutes [a, b): this symbol's curves, and its open PnL added to the account's (few
        passes, in place: this runs over every minute of every symbol)."""
        leg, f = self.leg, self.leg.filters
        _, highs, lows, closes = leg.ticks
        seg = _counts_upto(self.seg_start, a, b)
        q, p = self.qty[seg], self.avg[seg]
        open_close = f.prices_of_ticks(closes[a:b])
        open_close -= p
        open_close *= q
        open_worst = f.prices_of_ticks(np.where(q > 0, lows[a:b], highs[a:b]))
        open_worst -= p
        open_worst *= q
        equity[a:b] += open_close
        worst[a:b] += open_worst
        cash = self.move_cum[_counts_upto(self.move_at, a, b)]      # the moves up to each minute's end
        cash += leg.capital
        np.add(cash, open_close, out=self.equity[a:b])
        np.add(cash, open_worst, out=self.worst[a:b])

    def result(self, wallet: float, elapsed_s: float) -> BacktestResult:
        leg = self.leg
        cap, p = leg.capital, leg.pos
        final_cash = float(self.move_cum[-1])
        return BacktestResult(leg.config, leg.filters, leg.candles, cap, leg.fills, self.equity, self.worst,
                              cap + final_cash, p.qty, p.entry_price, sum(map(attrgetter("fee"), leg.fills)),
                              leg.replayed, elapsed_s, funding=self.funding, liquidations=self.liqs,
                              brackets=leg.book.brackets, halted=leg.strategy.halted,
                              grids=leg.strategy.state.generation, round_trips=leg.strategy.state.round_trips,
                              wallet=wallet)


def _rows(states: list[tuple[float, float, float]]) -> np.ndarray:
    """Segment states as an array of rows (read flat: half the time of np.array on tuples)."""
    return np.fromiter(chain.from_iterable(states), np.float64, 3 * len(states)).reshape(-1, 3)


def _stops_per_width(config: GridConfig) -> float:
    """A grid placed in a minute after one stopped out there is stopped out in turn only after
    another move of SL_DISTANCE the wrong way; a candle's legs move at most twice its range
    (down, up, down): this × (high / low − 1) more ladders can be lost in a minute (0 without
    a stop loss)."""
    return 2.0 / config.sl_distance if config.sl_distance > 0 else 0.0


def _covered_notional(brackets: BracketTable, lev: int) -> float:
    """The notional below which the initial margin (1 / lev) covers the maintenance margin
    (every tier up to it at a lower rate, cum ≥ 0), so the bracket lookup can be skipped."""
    cap = 0.0
    for t in brackets.tiers:
        if not (t.mmr < (1.0 / lev) * (1 - 1e-9) and t.cum >= 0):
            break
        cap = t.cap
    return cap


def _counts_upto(starts: np.ndarray, a: int, b: int) -> np.ndarray:
    """For each x in [a, b): how many of the sorted `starts` are at or before x, i.e.
    np.searchsorted(starts, np.arange(a, b), side="right"), in one pass (no binary search
    per candle): each count repeated from its start to the next (a tenth of the time of a
    bincount's cumulative sum)."""
    lo = int(np.searchsorted(starts, a, side="right"))
    hi = int(np.searchsorted(starts, b - 1, side="right"))
    edges = np.empty(hi - lo + 2, np.int64)
    edges[0], edges[-1] = a, b
    edges[1:-1] = starts[lo:hi]
    return np.repeat(np.arange(lo, hi + 1), np.diff(edges))


def _first_in_windows(i: int, last: int, find: Callable[[int, int], int | None]) -> int | None:
    """`find` over [i, last] in windows of CURVE_CHUNK minutes, in order: the first hit."""
    for a in range(i, last + 1, CURVE_CHUNK):
        hit = find(a, min(a + CURVE_CHUNK - 1, last))
        if hit is not None:
            return hit
    return None


def _maint_margins(table: BracketTable, notional: np.ndarray) -> np.ndarray:
    """BracketTable.maint_margin over an array of notionals."""
    caps = np.array([b.cap for b in table.tiers])
    k = np.minimum(np.searchsorted(caps, notional, side="right"), len(caps) - 1)
    mmr = np.array([b.mmr for b in table.tiers])[k]
    cum = np.array([b.cum for b in table.tiers])[k]
    return np.where(notional > 0, notional * mmr - cum, 0.0)


CURVE_CHUNK = 1 << 16       # candles per step when curves and drawdowns are computed


def _equity_curves(filters: SymbolFilters, ticks: Ticks, starts: list[int],
                   states: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Equity at each candle's close and at its adverse extreme (the candles as the engine
    played them).  Filled a chunk of candles at a time: a four-year run's curves cost their
    own 16 bytes a candle, no series-sized temporaries."""
    _, highs, lows, closes = ticks
    n = len(closes)
    st = np.minimum(np.asarray(starts, dtype=np.int64), n)
    arr = _rows(states)
    wallet, qty, avg = arr[:, 0], arr[:, 1], arr[:, 2]
    equity, worst = np.empty(n), np.empty(n)
    for a in range(0, n, CURVE_CHUNK):
        b = min(a + CURVE_CHUNK, n)
        seg = _counts_upto(st, a, b) - 1     # each candle's segment
        q, p = qty[seg], avg[seg]
        adverse = np.where(q < 0, highs[a:b], lows[a:b])
        equity[a:b] = wallet[seg] + q * (filters.prices_of_ticks(closes[a:b]) - p)
        worst[a:b] = wallet[seg] + q * (filters.prices_of_ticks(adverse) - p)
    return equity, worst


def drawdown_of(equity: np.ndarray, worst: np.ndarray, offset: float = 0.0) -> tuple[float, float, float]:
    """(max drawdown, the peak it falls from, min of worst) of curves shifted by `offset`
    (the rest of the wallet beside a symbol's capital): the drawdown at a candle is the peak
    of the closes so far less its adverse extreme.  A chunk at a time, the running peak
    carried over: no series-sized temporaries."""
    max_dd, dd_peak, low, peak = 0.0, 0.0, math.inf, -math.inf
    for a in range(0, len(equity), CURVE_CHUNK):
        b = min(a + CURVE_CHUNK, len(equity))
        run = np.maximum.accumulate(equity[a:b])
        np.maximum(run, peak, out=run)
        peak = float(run[-1])
        dd = run - worst[a:b]
        k = int(dd.argmax())
        if a == 0 or dd[k] > max_dd:
            max_dd, dd_peak = float(dd[k]), float(run[k])
        low = min(low, float(worst[a:b].min()))
    if not len(equity):
        return 0.0, 0.0, math.inf
    return max_dd, dd_peak + offset, low + offset


def summarize(res: BacktestResult) -> dict:
    fills = res.fills
    roles: dict[str, int] = {}
    for f in fills:
        roles[f.role] = roles.get(f.role, 0) + 1
    realized = sum(f.realized_pnl for f in fills)
    max_dd, dd_peak, min_equity = drawdown_of(res.equity, res.equity_worst)
    max_notional = max((abs(f.position_after) * f.price for f in fills), default=0.0)
    last_close = float(res.candles.close[-1])
    unrealized = res.final_qty * (last_close - res.final_avg)
    n = len(res.candles)
    funding_paid = sum(x.amount for x in res.funding)
    clearance = sum(x.clearance for x in res.liquidations)
    wallet = res.wallet or res.capital
    rest = wallet - res.capital
    final_equity = res.final_wallet + unrealized
    return {
        "wallet": round(wallet, 8),
        "capital": round(res.capital, 8),
        "account": account_figures(res.equity, res.equity_worst, wallet, final_equity + rest, res.liquidations,
                                   offset=rest),
        "account_stop": _iso(res.account_stopped_at) if res.account_stopped_at else None,
        "candles": n,
        "replayed_candles": res.replayed_candles,
        "fills": len(fills),
        "roles": dict(sorted(roles.items())),
        "net_pnl": round(realized - res.fees - funding_paid - clearance, 8),
        "funding_paid": round(funding_paid, 8),
        "funding_settlements": len(res.funding),
        "liquidations": [{"time": _iso(x.time), "mark_price": round(x.mark_price, 8), "qty": round(x.qty, 12),
                          "price": round(x.price, 8), "insurance_clearance": round(x.clearance, 8)}
                         for x in res.liquidations],
        "min_equity": round(min_equity, 8) if len(res.equity_worst) else res.capital,
        "brackets": res.brackets.source if res.brackets else None,
        "realized_pnl": round(realized, 8),
        "fees": round(res.fees, 8),
        "unrealized_pnl": round(unrealized, 8),
        "final_equity": round(res.final_wallet + unrealized, 8),
        "initial_capital": res.capital,
        "return_pct": round((res.final_wallet + unrealized - res.capital) / res.capital * 100, 4),
        "max_drawdown": round(max_dd, 8),
        "max_drawdown_pct": round(max_dd / dd_peak * 100, 4) if dd_peak else 0.0,
        "max_position_notional": round(max_notional, 8),
        "final_open_qty": round(res.final_qty, 12),
        "final_avg_price": round(res.final_avg, 8),
        "direction": res.config.trade_direction,
        "symbol": res.filters.symbol,
        "start": res.candles.time_iso(0),
        "end": res.candles.time_iso(n - 1),
        "elapsed_s": round(res.elapsed_s, 6),
        "candles_per_s": round(n / res.elapsed_s) if res.elapsed_s > 0 else None,
    }


def account_figures(equity: np.ndarray, worst: np.ndarray, wallet: float, final_equity: float,
                    liquidations: list[Liquidation], offset: float = 0.0) -> dict:
    """The account's line of a summary: its wallet, equity, drawdown and liquidations (the
    curves + `offset`: a symbol's curves on its capital, offset by the rest of the wallet)."""
    max_dd, dd_peak, min_equity = drawdown_of(equity, worst, offset)
    return {
        "wallet": round(wallet, 8),
        "final_equity": round(final_equity, 8),
        "net_pnl": round(final_equity - wallet, 8),
        "return_pct": round((final_equity - wallet) / wallet * 100, 4) if wallet else 0.0,
        "max_drawdown": round(max_dd, 8),
        "max_drawdown_pct": round(max_dd / dd_peak * 100, 4) if dd_peak else 0.0,
        "min_equity": round(min_equity, 8) if len(worst) else wallet,
        "liquidations": [{"time": _iso(x.time), "symbol": x.symbol, "qty": round(x.qty, 12),
                          "price": round(x.price, 8)} for x in liquidations],
    }


def account_of(configs: list[GridConfig], wallet: float | None = None) -> tuple[float, list[float]]:
    """SPEC §7: the account's wallet (`wallet`, else the largest INITIAL_CAPITAL /
    CAPITAL_RATIO among the symbols: the wallet live would need to give each its
    INITIAL_CAPITAL) and each symbol's capital, CAPITAL_RATIO × the wallet."""
    w = float(wallet) if wallet is not None else max(c.initial_capital / c.capital_ratio for c in configs)
    if not (w > 0 and math.isfinite(w)):
        raise ValueError(f"--wallet must be a positive amount (got {wallet})")
    return w, [c.capital_ratio * w for c in configs]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


FUNDING_COLUMNS = ["time", "rate", "mark_price", "position", "amount"]


def write_funding_csv(res: BacktestResult, path: Path) -> None:
    """One row per settlement with a position: amount > 0 paid, < 0 received."""
    f = res.filters
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(FUNDING_COLUMNS)
        for x in res.funding:
            w.writerow([_iso(x.time), f"{x.rate:.8f}", f"{x.mark_price:.8f}", f.fmt_qty(x.position),
                        f"{x.amount:.8f}"])


def write_trades_csv(res: BacktestResult, path: Path) -> None:
    f = res.filters
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(TRADE_COLUMNS)
        for r in res.fills:
            w.writerow([r.time_iso, r.role, r.side, f.fmt_price(r.price), f.fmt_qty(r.qty), f"{r.fee:.8f}",
                        f"{r.realized_pnl:.8f}", f.fmt_qty(r.position_after), f"{r.avg_price_after:.8f}",
                        r.client_id, r.order_id])


def write_chart(res: BacktestResult, path: Path) -> None:
    """Price with entries and exits marked, the equity curve below."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    c = res.candles
    n = len(c)
    step = max(1, n // 4000)
    t = (c.open_time[::step].astype("datetime64[ms]"))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.4]})
    ax1.plot(t, c.close[::step], color="#555", lw=0.7, label=f"{res.filters.symbol} close")
    styles = {Role.ENTRY: ("^" if res.config.side_sign > 0 else "v", "#1a9850", "entries"),
              Role.TP: ("o", "#2166ac", Role.TP), Role.BE: ("D", "#f39c12", Role.BE), Role.SL: ("X", "#d73027", Role.SL)}
    for key, (marker, color, label) in styles.items():
        pts = [(f.time_ms, f.price) for f in res.fills if f.role.startswith(key)]
        if pts:
            arr = np.asarray(pts)
            ax1.scatter(arr[:, 0].astype("datetime64[ms]"), arr[:, 1], marker=marker, s=18, color=color,
                        label=f"{label} ({len(pts)})", zorder=3, alpha=0.8)
    for x in res.liquidations:
        ax1.scatter([np.datetime64(int(x.time), "ms")], [x.price], marker="X", s=160, color="#67001f", zorder=5,
                    label="LIQUIDATION")
        ax1.annotate("liquidated", (np.datetime64(int(x.time), "ms"), x.price), textcoords="offset points",
                     xytext=(6, -14), color="#67001f", fontsize=9, weight="bold")
        ax2.axvline(np.datetime64(int(x.time), "ms"), color="#67001f", lw=1.2, ls="--")
    if res.account_stopped_at:
        at = np.datetime64(int(res.account_stopped_at), "ms")
        ax2.axvline(at, color="#762a83", lw=1.4, ls="-.")
        ax2.annotate("account stop", (at, float(res.capital)), textcoords="offset points", xytext=(6, 6),
                     color="#762a83", fontsize=9, weight="bold")
    ax1.set_ylabel("price")
    ax1.legend(loc="upper left", fontsize=8, ncol=6)
    ax1.grid(alpha=0.3)
    s = res.summary
    liq = f", LIQUIDATED ×{len(res.liquidations)}" if res.liquidations else ""
    ax1.set_title(f"{res.filters.symbol} {res.config.trade_direction} grid martingale  —  net PnL "
                  f"{s.get('net_pnl', 0):+.2f} (funding {-s.get('funding_paid', 0):+.2f}), max drawdown "
                  f"{s.get('max_drawdown', 0):.2f} ({s.get('max_drawdown_pct', 0):.1f} %), "
                  f"{s.get('fills', 0)} fills{liq}")
    ax2.plot(t, res.equity[::step], color="#2166ac", lw=0.9, label="equity")
    ax2.axhline(res.capital, color="#999", lw=0.6, ls="--")
    ax2.set_ylabel("equity")
    ax2.grid(alpha=0.3)
    ax2.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress_bar(done: int, total: int) -> None:
    width = 40
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done * 100 // max(total, 1):3d}%")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def print_summary(s: dict, out: Path | None) -> None:
    a = s.get("account") or {}
    rows = [
        ("account: wallet / capital", f"{s.get('wallet', s['initial_capital']):,.2f} / {s['initial_capital']:,.2f}"),
        ("account: final equity", f"{a.get('final_equity', 0):,.2f} ({a.get('return_pct', 0):+.2f} %), max drawdown "
                                  f"{a.get('max_drawdown_pct', 0):.2f} %"
                                  + (f", ACCOUNT STOP at {s['account_stop']}" if s.get("account_stop") else "")),
        ("symbol / direction", f"{s['symbol']} {s['direction']}"),
        ("period", f"{s['start']} → {s['end']}"),
        ("candles", f"{s['candles']:,} ({s['replayed_candles']:,} replayed)"),
        ("fills", f"{s['fills']:,}  " + "  ".join(f"{k}={v}" for k, v in s["roles"].items())),
        ("net PnL (realized − fees − funding − liq.)", f"{s['net_pnl']:+,.2f}"),
        ("fees", f"{s['fees']:,.2f}"),
        ("funding paid", f"{s['funding_paid']:+,.2f} ({s['funding_settlements']:,} settlements with a position)"),
        ("liquidations", "none" if not s["liquidations"] else "  ".join(
            f"{x['time']} at {x['price']:g} (mark {x['mark_price']:g})" for x in s["liquidations"])),
        ("min equity", f"{s['min_equity']:,.2f}"),
        ("final equity", f"{s['final_equity']:,.2f} ({s['return_pct']:+.2f} %)"),
        ("max drawdown", f"{s['max_drawdown']:,.2f} ({s['max_drawdown_pct']:.2f} %)"),
        ("max position notional", f"{s['max_position_notional']:,.2f}"),
        ("open at end", f"{s['final_open_qty']:g} @ {s['final_avg_price']:g}"),
        ("speed", f"{s['candles_per_s']:,} candles/s ({s['elapsed_s']:.3f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if out is not None:
        print(f"  {'output':<{width}}  {out}/")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backtest.py", description="Backtest the grid-martingale strategy "
                                "over Binance 1-minute kline CSVs.")
    p.add_argument("--config", nargs="+", metavar="FILE",
                   help="config file (config_btc.txt format); with --symbols, SYMBOL=FILE for any symbol whose "
                        "config is not config_<short>.txt (as live finds it)")
    p.add_argument("--symbols", help="several symbols on one account (SPEC §7), e.g. BTCUSDC,ETHUSDC: --data "
                   "SYMBOL=CSV[,CSV...] for each, or --from/--to")
    p.add_argument("--direction", choices=["LONG", "SHORT"], type=str.upper)
    p.add_argument("--capital", type=float, help="capital (default: INITIAL_CAPITAL)")
    p.add_argument("--wallet", type=float, help="the account's wallet (default: INITIAL_CAPITAL / CAPITAL_RATIO, "
                   "the wallet live would need to give the symbol its capital; SPEC §7)")
    add_market_arguments(p)
    p.add_argument("--fill-model", choices=["full", "volume"], default="full",
                   help="full: a touched limit fills whole (SPEC §6, default); volume: at most --fill-share of "
                        "each leg's traded volume, the rest stays open")
    p.add_argument("--fill-share", type=float, default=0.1,
                   help="with --fill-model volume: the share of a leg's volume a resting limit may take "
                        "(default 0.1)")
    p.add_argument("--out", default="backtest_out", help="output folder (default backtest_out)")
    p.add_argument("--no-chart", action="store_true", help="skip equity.png")
    return p


def add_market_arguments(p: argparse.ArgumentParser) -> None:
    """The market a backtest runs on: data (files or months to download), the symbol's
    filters, fees, funding, mark price, brackets (optimize.py takes the same flags)."""
    p.add_argument("--data", nargs="+", help="kline CSV file(s), joined in time order")
    p.add_argument("--from", dest="first", metavar="YYYY-MM",
                   help="instead of --data: the first month of --symbol, downloaded when missing (download.py) "
                        "with its funding rates and mark-price klines")
    p.add_argument("--to", dest="last", metavar="YYYY-MM", help="with --from: the last month (default --from)")
    p.add_argument("--data-dir", default="data", help="with --from: where download.py keeps the data (default data/)")
    p.add_argument("--data-url", default=None, help="with --from: the data dump's URL (default Binance's)")
    p.add_argument("--rest-url", default=None, help="with --from: REST for days not dumped yet (default Binance's)")
    p.add_argument("--symbol", default="BTCUSDC", help="the symbol (default BTCUSDC); BTCUSDC's and ETHUSDC's "
                   "filters and brackets are the defaults for those symbols")
    p.add_argument("--tick-size", type=float, default=None, help="default: the symbol's (BTCUSDC's if unknown)")
    p.add_argument("--step-size", type=float, default=None, help="default: the symbol's (BTCUSDC's if unknown)")
    p.add_argument("--min-qty", type=float, default=None, help="default: the step size")
    p.add_argument("--min-notional", type=float, default=None, help="default: the symbol's (5 if unknown)")
    p.add_argument("--maker-fee", type=float, help="default: MAKER_FEE of the config")
    p.add_argument("--taker-fee", type=float, help="default: TAKER_FEE of the config")
    p.add_argument("--funding", nargs="+", metavar="FILE",
                   help="funding rates: Binance's dump CSV (calc_time,funding_interval_hours,last_funding_rate) "
                        "or REST fundingRate JSON; default: a constant --funding-rate")
    p.add_argument("--funding-rate", type=float, default=BASELINE_RATE,
                   help=f"constant rate per 8 h at 00/08/16 UTC when no --funding (default {BASELINE_RATE}, "
                        "Binance's baseline; 0 turns funding off)")
    p.add_argument("--mark", nargs="+", metavar="CSV", help="mark-price 1m klines (default: the last price)")
    p.add_argument("--brackets", metavar="FILE", help="leverage brackets: GET /fapi/v1/leverageBracket JSON "
                   "(default: the shipped BTCUSDC/ETHUSDC table)")
    p.add_argument("--no-liquidation", action="store_true", help="do not liquidate (for comparison only)")


@dataclass
class Market:
    """What add_market_arguments describes, loaded: everything but the strategy's config."""
    filters: SymbolFilters
    candles: Candles
    funding: FundingSeries | None
    mark: Candles | None
    brackets: BracketTable
    liquidation: bool
    load_s: float


def apply_fee_overrides(cfg: GridConfig, args: argparse.Namespace) -> GridConfig:
    fees = {k: v for k, v in (("maker_fee", args.maker_fee), ("taker_fee", args.taker_fee)) if v is not None}
    return cfg.with_overrides(**fees) if fees else cfg


def load_market(args: argparse.Namespace, prog: str = "backtest.py") -> Market:
    """Raises ConfigError, DataError, FundingError, BracketError or ValueError (one line each)."""
    symbol = args.symbol.strip().upper()
    known = DEFAULT_FILTERS.get(symbol, DEFAULT_FILTERS["BTCUSDC"])
    for name in ("tick_size", "step_size", "min_notional"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(known, name))
        v = getattr(args, name)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number (got {v})")
    filters = SymbolFilters(symbol, args.tick_size, args.step_size,
                            args.min_qty if args.min_qty is not None else args.step_size, args.min_notional)
    if args.first:
        _download_inputs(args, symbol)
    elif not args.data:
        raise ValueError("give --data CSV [CSV ...] or --from YYYY-MM [--to YYYY-MM]")
    t0 = time.perf_counter()
    candles = load_klines(args.data)
    load_s = time.perf_counter() - t0
    if not math.isfinite(args.funding_rate) or abs(args.funding_rate) > 0.05:
        raise ValueError(f"--funding-rate must be a rate per 8 h such as 0.0001 (got {args.funding_rate})")
    if args.funding:
        funding = load_funding(args.funding)
    elif args.funding_rate:
        funding = constant_funding(args.funding_rate, int(candles.open_time[0]), int(candles.open_time[-1]))
    else:
        funding = None
    mark = load_klines(args.mark) if args.mark else None
    if args.brackets:
        brackets = load_brackets(args.brackets, filters.symbol)
    else:
        brackets, shipped = table_for(filters.symbol)
        if not shipped:
            print(f"{prog}: note: no leverage brackets shipped for {filters.symbol}: using "
                  f"{brackets.symbol}'s (pass --brackets FILE for its own)", file=sys.stderr)
    return Market(filters, candles, funding, mark, brackets, not args.no_liquidation, load_s)


def _download_inputs(args: argparse.Namespace, symbol: str) -> None:
    """--from / --to: download what is missing (download.py) and use its klines, funding
    rates and mark-price klines as --data, --funding and --mark."""
    import download
    if args.data:
        raise ValueError("give either --data or --from, not both")
    first = download.Month.parse(args.first, "--from")
    last = download.Month.parse(args.last, "--to") if args.last else first
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    res = download.ensure(symbol, first, last, Path(args.data_dir),
                          base_url=args.data_url or download.DUMP_URL, rest_url=args.rest_url or download.REST_URL,
                          progress=sys.stderr.isatty())
    for line in res.gaps.values():
        print(f"backtest.py: data: {symbol} {line}", file=sys.stderr)
    if res.errors:
        raise ValueError("; ".join(res.errors))
    if not res.files.get("klines"):
        raise ValueError(f"no klines of {symbol} for {first}..{last}")
    args.data = [str(p) for p in res.files["klines"]]
    if res.files.get("fundingRate") and not args.funding:
        args.funding = [str(p) for p in res.files["fundingRate"]]
    if res.files.get("markPriceKlines") and not args.mark:
        args.mark = [str(p) for p in res.files["markPriceKlines"]]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.symbols:
        return main_portfolio(args)
    try:
        if not args.config or len(args.config) != 1 or "=" in args.config[0]:
            raise ValueError("give one --config FILE (SYMBOL=FILE is for --symbols)")
        cfg = _symbol_config(load_config(args.config[0]), args)
        wallet, (capital,) = account_of([cfg], args.wallet)
        fill_model = FillModel.from_cli(args.fill_model, args.fill_share)
        m = load_market(args)
    except (ConfigError, DataError, FundingError, BracketError, ValueError) as e:
        print(f"backtest.py: error: {e}", file=sys.stderr)
        return 2
    candles = m.candles
    progress = _progress_bar if sys.stderr.isatty() and len(candles) > 100_000 else None
    res = run_backtest(cfg, candles, m.filters, capital=capital, progress=progress, funding=m.funding, mark=m.mark,
                       brackets=m.brackets, liquidation=m.liquidation, fill_model=fill_model, wallet=wallet)
    res.summary = summarize(res)
    res.summary["load_s"] = round(m.load_s, 6)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_trades_csv(res, out / "trades.csv")
    write_funding_csv(res, out / "funding.csv")
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2) + "\n", encoding="utf-8")
    if not args.no_chart:
        write_chart(res, out / "equity.png")
    print_summary(res.summary, out)
    return 0


def _symbol_config(cfg: GridConfig, args: argparse.Namespace) -> GridConfig:
    """The command line's overrides (direction, capital, fees) applied to a config."""
    overrides = {k: v for k, v in (("trade_direction", args.direction), ("initial_capital", args.capital))
                 if v is not None}
    return apply_fee_overrides(cfg.with_overrides(**overrides) if overrides else cfg, args)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """SYMBOL=VALUE items of a --symbols run's flag, by upper-case symbol."""
    out: dict[str, str] = {}
    for v in values or []:
        sym, eq, rest = v.partition("=")
        if not eq or not sym.strip() or not rest.strip():
            raise ValueError(f"{flag} {v}: with --symbols, give SYMBOL={'CSV[,CSV...]' if flag == '--data' else 'FILE'}")
        out[sym.strip().upper()] = rest.strip()
    return out


def load_portfolio(args: argparse.Namespace, prog: str = "backtest.py") -> tuple[list[PortfolioLeg], bool]:
    """Each symbol's config (config_<short>.txt unless --config SYMBOL=FILE) and market
    (--data SYMBOL=CSV,... or --from/--to), as a single-symbol run loads them."""
    from paths import ROOT, short_name
    symbols = [x.strip().upper() for x in args.symbols.split(",") if x.strip()]
    if len(symbols) < 2 or len(set(symbols)) != len(symbols):
        raise ValueError(f"--symbols {args.symbols}: give two or more different symbols, e.g. BTCUSDC,ETHUSDC")
    configs, data = _pairs(args.config, "--config"), _pairs(args.data, "--data")
    for flag, given in (("--config", configs), ("--data", data)):
        extra = sorted(set(given) - set(symbols))
        if extra:
            raise ValueError(f"{flag} names {', '.join(extra)}, not in --symbols {','.join(symbols)}")
    if args.funding or args.mark or args.brackets or args.tick_size or args.step_size or args.min_qty \
            or args.min_notional:
        raise ValueError("with --symbols, each symbol's filters, brackets, funding and mark are its own: "
                         "--funding, --mark, --brackets and the filter flags are for one symbol")
    legs = []
    liquidation = not args.no_liquidation
    for sym in symbols:
        path = Path(configs[sym]) if sym in configs else ROOT / f"config_{short_name(sym)}.txt"
        if not path.is_file():
            raise ValueError(f"{sym}: no config {path} (give --config {sym}=FILE)")
        cfg = _symbol_config(load_config(path), args)
        if not args.first and sym not in data:
            raise ValueError(f"{sym}: no data (give --data {sym}=CSV[,CSV...] or --from YYYY-MM)")
        one = argparse.Namespace(**vars(args))
        one.symbol, one.data = sym, (data[sym].split(",") if sym in data else None)
        m = load_market(one, prog=prog)
        legs.append(PortfolioLeg(cfg, m.candles, m.filters, m.funding, m.mark, m.brackets))
    return align_legs(legs), liquidation


def main_portfolio(args: argparse.Namespace) -> int:
    try:
        legs, liquidation = load_portfolio(args)
        fill_model = FillModel.from_cli(args.fill_model, args.fill_share)
        res = run_portfolio(legs, args.wallet, liquidation=liquidation, fill_model=fill_model)
    except (ConfigError, DataError, FundingError, BracketError, ValueError) as e:
        print(f"backtest.py: error: {e}", file=sys.stderr)
        return 2
    res.summary = summarize_portfolio(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_portfolio_csvs(res, out)
    (out / "summary.json").write_text(json.dumps(res.summary, indent=2) + "\n", encoding="utf-8")
    if not args.no_chart:
        write_portfolio_chart(res, out / "equity.png")
    print_portfolio_summary(res.summary, out)
    return 0


def summarize_portfolio(res: PortfolioResult) -> dict:
    for r in res.symbols:
        r.summary = summarize(r)
    account = account_figures(res.equity, res.equity_worst, res.wallet, res.final_equity, [])
    # The account's liquidations: one moment each, with every position it closed.
    by_time: dict[int, list[Liquidation]] = {}
    for x in res.liquidations:
        by_time.setdefault(x.time, []).append(x)
    account["liquidations"] = [{"time": _iso(t), "positions_closed": [
        {"symbol": x.symbol, "qty": round(x.qty, 12), "price": round(x.price, 8), "mark_price": round(x.mark_price, 8),
         "insurance_clearance": round(x.clearance, 8)} for x in xs]} for t, xs in sorted(by_time.items())]
    account["capitals"] = {r.filters.symbol: round(r.capital, 8) for r in res.symbols}
    account["funding_paid"] = round(sum(r.summary["funding_paid"] for r in res.symbols), 8)
    account["fees"] = round(sum(r.summary["fees"] for r in res.symbols), 8)
    account["account_stop"] = _iso(res.account_stopped_at) if res.account_stopped_at else None
    account["start"] = _iso(int(res.times[0]))
    account["end"] = _iso(int(res.times[-1]))
    account["elapsed_s"] = round(res.elapsed_s, 6)
    return {"account": account, "symbols": {r.filters.symbol: r.summary for r in res.symbols}}


def write_portfolio_csvs(res: PortfolioResult, out: Path) -> None:
    """trades.csv and funding.csv of every symbol in time order, each row naming its symbol."""
    rows = sorted(((r.time_ms, k, r, res.symbols[k].filters) for k in range(len(res.symbols))
                   for r in res.symbols[k].fills), key=lambda x: (x[0], x[1]))
    with open(out / "trades.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol"] + TRADE_COLUMNS)
        for _, _, r, f in rows:
            w.writerow([f.symbol, r.time_iso, r.role, r.side, f.fmt_price(r.price), f.fmt_qty(r.qty), f"{r.fee:.8f}",
                        f"{r.realized_pnl:.8f}", f.fmt_qty(r.position_after), f"{r.avg_price_after:.8f}",
                        r.client_id, r.order_id])
    settlements = sorted(((x.time, k, x) for k in range(len(res.symbols)) for x in res.symbols[k].funding),
                         key=lambda x: (x[0], x[1]))
    with open(out / "funding.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["symbol"] + FUNDING_COLUMNS)
        for _, k, x in settlements:
            f = res.symbols[k].filters
            w.writerow([f.symbol, _iso(x.time), f"{x.rate:.8f}", f"{x.mark_price:.8f}", f.fmt_qty(x.position),
                        f"{x.amount:.8f}"])


def write_portfolio_chart(res: PortfolioResult, path: Path) -> None:
    """The account's equity and each symbol's (on its capital), liquidations marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    n = len(res.times)
    step = max(1, n // 4000)
    t = res.times[::step].astype("datetime64[ms]")
    fig, ax = plt.subplots(figsize=(13, 6))
    ax.plot(t, res.equity[::step], color="black", lw=1.2, label=f"account (wallet {res.wallet:,.2f})")
    for r in res.symbols:
        ax.plot(t, r.equity[::step], lw=0.8, label=f"{r.filters.symbol} (capital {r.capital:,.2f})")
    for x in sorted({x.time for x in res.liquidations}):
        ax.axvline(np.datetime64(int(x), "ms"), color="#67001f", lw=1.4, ls="--")  # type: ignore[arg-type]  # matplotlib converts datetimes
        ax.annotate("account liquidated", (np.datetime64(int(x), "ms"), float(res.wallet)), color="#67001f",
                    fontsize=9, weight="bold", xytext=(6, 0), textcoords="offset points")
    if res.account_stopped_at:
        at = np.datetime64(int(res.account_stopped_at), "ms")
        ax.axvline(at, color="#762a83", lw=1.4, ls="-.")  # type: ignore[arg-type]  # matplotlib converts datetimes
        ax.annotate("account stop", (at, float(res.wallet)), color="#762a83", fontsize=9, weight="bold",
                    xytext=(6, -12), textcoords="offset points")
    a = res.summary.get("account", {})
    ax.set_title(f"one account, {len(res.symbols)} symbols: net PnL {a.get('net_pnl', 0):+,.2f} "
                 f"({a.get('return_pct', 0):+.2f} %), max drawdown {a.get('max_drawdown_pct', 0):.1f} %"
                 + (f", LIQUIDATED ×{len(a.get('liquidations', []))}" if a.get("liquidations") else ""))
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_portfolio_summary(s: dict, out: Path | None) -> None:
    a = s["account"]
    liqs = a["liquidations"]
    rows = [("account: wallet", f"{a['wallet']:,.2f}  capitals " + ", ".join(f"{k} {v:,.2f}"
                                                                         for k, v in a["capitals"].items())),
            ("account: period", f"{a['start']} → {a['end']}"),
            ("account: final equity", f"{a['final_equity']:,.2f} ({a['return_pct']:+.2f} %)"),
            ("account: max drawdown", f"{a['max_drawdown']:,.2f} ({a['max_drawdown_pct']:.2f} %), min equity "
                                      f"{a['min_equity']:,.2f}"),
            ("account: stop", a.get("account_stop") or "did not fire"),
            ("account: liquidations", "none" if not liqs else "  ".join(
                f"{x['time']} closed " + ", ".join(f"{p['symbol']} {p['qty']:g} @ {p['price']:g}"
                                                   for p in x["positions_closed"]) for x in liqs))]
    for sym, x in s["symbols"].items():
        rows.append((f"{sym} {x['direction']}", f"net PnL {x['net_pnl']:+,.2f} ({x['return_pct']:+.2f} % of its "
                                                f"capital), {x['fills']:,} fills, funding {x['funding_paid']:+,.2f}, "
                                                f"max position {x['max_position_notional']:,.2f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if out is not None:
        print(f"  {'output':<{width}}  {out}/")


if __name__ == "__main__":
    sys.exit(main())
