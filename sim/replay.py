"""The one candle clock: a 1-minute candle of one symbol played on the simulated exchange
along its SPEC §6 legs.  The backtest (backtest.py) and the local exchange's clock
(localex/clock.py) both play candles through `play_candle`, so the same candle moves the
same prices at the same times and fills the same orders in both.

`play_candle` is a generator: the caller reacts between its steps (the backtest runs the
strategy synchronously, the local exchange publishes the event and waits for its client).
It yields

- `FILL` after each event a leg triggered (a fill, an expiry, a liquidation): the price
  stands at that event;
- the vertex number k after the price reached the candle's k-th vertex: 0 is the open
  (a jump from the previous close: it fills nothing), 1 and 2 the extremes, 3 the close.
"""
from __future__ import annotations

from typing import Iterator

from sim.fill_model import candle_legs
from sim.exchange import SimulatedExchange

FILL = -1       # yielded after each event a leg triggered; 0..3 are the candle's vertices
OPEN, CLOSE = 0, 3


def play_candle(sim: SimulatedExchange, symbol: str, o: int, h: int, l: int, c: int, t: int, *,
                leg_steps: int | None = None,
                mark: tuple[int, int, int, int] | None = None) -> Iterator[int]:
    """Play one candle (integer ticks, open time `t` in ms).  `leg_steps`: the volume fill
    model's budget of each leg (None: full fills).  `mark`: the mark price's own candle,
    played first after the open (liquidation and MARK_PRICE stops are not deferred behind
    the last price's path); without it the mark is not driven separately."""
    sim.now_ms = t
    sim.set_price_ticks(symbol, o)
    yield OPEN
    if mark is not None:
        sim.set_mark_ticks(symbol, mark[0])
        for end, leg_ms in candle_legs(*mark, t):
            sim.now_ms = leg_ms
            while sim.advance_mark_ticks(symbol, end):
                yield FILL
    for k, (end, leg_ms) in enumerate(candle_legs(o, h, l, c, t), start=1):
        sim.now_ms = leg_ms
        if leg_steps is not None:
            sim.set_leg_volume(symbol, leg_steps)
        yield from play_leg(sim, symbol, end)
        yield k


def play_leg(sim: SimulatedExchange, symbol: str, end: int) -> Iterator[int]:
    """Move the price along one monotone leg to `end` ticks, yielding FILL after each event."""
    while sim.advance_ticks(symbol, end):
        yield FILL
