"""What a local exchange is built from: `ExchangeSettings`, one parameter object for
`LocalExchange(settings)` (local_exchange.py's command line, the demo, the tests and the
benches fill it), and the `RateLimits` group its gateway enforces and its exchangeInfo
publishes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from exchange_api import SymbolFilters
from market.brackets import BracketTable
from market.funding import BASELINE_RATE, FundingSeries
from sim.exchange import DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE
from sim.fill_model import FULL, FillModel
from localex.base import DEFAULT_API_KEY, DEFAULT_API_SECRET, Faults, PlannedFault

DataFiles = Sequence[str | Path] | Mapping[str, Sequence[str | Path]]


@dataclass(frozen=True)
class RateLimits:
    """Binance's IP weight and order-count limits, and how a client that keeps going is banned."""

    weight_limit: int                  # request weight per minute and IP
    order_limit_10s: int
    order_limit_1m: int
    ban_after_429s: int                # 429s in a row past the limit before the IP is banned (418)
    ban_s: float                       # the first ban; each next one doubles


@dataclass(frozen=True, kw_only=True)
class ExchangeSettings:
    """Every choice a `LocalExchange` is built with; the defaults are Binance's (or the
    backtest's) where there is one."""

    # The market: symbols, their data (CSVs, or a seeded synthetic market), filters and brackets.
    symbols: Sequence[str] = ("BTCUSDC", "ETHUSDC")
    data: DataFiles | None = None
    synthetic_seed: int | None = None
    # None: each symbol's synthetic path its own; a value (market.data.SYNTHETIC_CORRELATION):
    # the symbols share that part of one market's shocks, and its jumps (the demo's account).
    synthetic_correlation: float | None = None
    filters: Mapping[str, SymbolFilters] | None = None
    brackets: Mapping[str, BracketTable] | None = None
    # Funding: a series per symbol (or one for all), else a constant rate per 8 h.
    funding: FundingSeries | Mapping[str, FundingSeries] | None = None
    funding_rate: float = BASELINE_RATE
    # The account.
    balance: float = 10_000.0
    maker_fee: float = DEFAULT_MAKER_FEE
    taker_fee: float = DEFAULT_TAKER_FEE
    leverage: int = 20
    # The volume fill model (as backtest.py --fill-model volume): None = full fills (SPEC §6).
    fill_model: FillModel = FULL        # SPEC §6 full fills, or the volume model
    # The clock: candles per second (0 = manual), lockstep with a client, when to start and stop.
    speed: float = 0.0
    lockstep: bool = False
    quiet_ms: float = 100.0
    grace_ms: float = 5.0
    max_hold_s: float = 10.0
    max_candles: int | None = None
    hold_clock: bool = False              # start once a market and a user stream are open
    pause_on_retry_after: bool = False    # stand still while a client waits out a 429 / 418
    # The key (the secret is never logged, printed or shown in repr).
    api_key: str = DEFAULT_API_KEY
    api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    # Rate limits.
    weight_limit: int = 2400
    order_limit_10s: int = 300
    order_limit_1m: int = 1200
    ban_after_429s: int = 3
    ban_s: float = 120.0
    # Faults: at start, on the market's clock, and the seed of the rate faults' dice.
    faults: Faults | Mapping[str, Any] | str | None = None
    fault_plan: Sequence[PlannedFault] = ()
    fault_seed: int | None = None
    # A user stream naming no `events` gets nothing (the strict reading of Binance's forms).
    strict_user_stream: bool = True

    @property
    def limits(self) -> RateLimits:
        return RateLimits(self.weight_limit, self.order_limit_10s, self.order_limit_1m, self.ban_after_429s,
                          self.ban_s)
