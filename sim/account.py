"""The simulated account: the wallet, margin, leverage, margin type and the account's modes,
liquidation as Binance does it (cross margin, maintenance brackets, triggered by the mark),
and funding settlements.

`Account` is a part of `sim.exchange.SimulatedExchange`, the simulator's centre: it owns the
wallet and the account's records and reads the positions and open-order notionals of the
books it is given.  What it needs from the matching engine (the clock, the user stream, and
the two acts of a forced close: cancel every order, close the position) is `AccountEngine`."""
from __future__ import annotations

import weakref
from typing import Any, Protocol

from exchange_api import BinanceError
from market.brackets import liquidation_price
from sim.model import (
    BUY,   # enum members bound to names once (the hot path)
    LIQ_KEY, sim_error, SimOrder, LiquidationTrigger, Liquidation, FundingSettlement, Income, AccountUpdate,
    ConfigUpdate, SymbolBook, UserStream, book_of,
)


class AccountEngine(UserStream, Protocol):
    """What the account needs from the matching engine it is part of."""

    def cancel_every_order(self) -> None:
        """Cancel every open order and algo order of the account, each reported even with
        acknowledgements off (a liquidation's first step)."""

    def force_close(self, b: SymbolBook, price_t: int) -> SimOrder:
        """Close `b`'s whole position at `price_t` with Binance's liquidation order (a
        CALCULATED trade); the order, filled."""


def mark_of(b: SymbolBook) -> float:
    """The book's mark price: its own series when one drives it, else the last price."""
    return b.mark if b.mark_driven else b.price


def order_cost(b: SymbolBook, side: str, price: float, qty: float) -> float:
    """Initial margin of the part that adds exposure, plus the open loss (reference §5)."""
    p = b.position
    pos = p.qty
    buy = side == BUY
    if pos == 0 or (pos > 0) == buy:
        adds = qty
    else:
        adds = qty - abs(pos)
        if adds <= 0:
            return 0.0
    last = b.price
    # open loss = adds × |min(0, dir × (last − price))|: a buy above the last, a sell below it
    loss = (price - last if buy else last - price) if last else 0.0
    return adds * price / p.leverage + (adds * loss if loss > 0 else 0.0)


def open_order_margin(b: SymbolBook) -> float:
    """Margin of resting orders that add exposure (both sides while flat)."""
    pos = b.position.qty
    if pos > 0:
        notional = b.open_buy_notional
    elif pos < 0:
        notional = b.open_sell_notional
    else:
        notional = b.open_buy_notional + b.open_sell_notional
    return notional / b.position.leverage


def drop_liquidation(b: SymbolBook) -> None:
    """No liquidation price for this book (flat, covered, or being liquidated)."""
    b.liq_price = 0.0
    b.resting.pop(LIQ_KEY, None)
    b.mark_resting.pop(LIQ_KEY, None)


class Account:
    """One futures account: its wallet in the margin asset, its modes, margin, liquidation and
    funding over the books (one per symbol) it is given."""

    def __init__(self, books: dict[str, SymbolBook], engine: AccountEngine, balance: float, asset: str) -> None:
        self.books = books
        # Weakly: the engine owns the account, and a strong reference back would make a cycle
        # that only the cyclic collector frees (off during a backtest): every run's orders
        # and events would outlive it.
        self._engine: AccountEngine = weakref.proxy(engine)
        self.wallet = float(balance)
        self.total_fees = 0.0
        self.asset = asset
        # The asset whose row holds the wallet: the margin asset, or BNFCR in the EU credits
        # mode, or USDT held to margin USDC symbols in multi-assets mode.
        self.collateral = asset
        self.multi_assets = False
        self.dual_side = False
        self.liquidation_enabled = True
        self.liquidations: list[Liquidation] = []
        self.funding: list[FundingSettlement] = []      # settlements with a position
        self.income: list[Income] = []                  # FUNDING_FEE and INSURANCE_CLEAR records
        self._next_tran_id = 1
        # The one book of a one-symbol account (the backtest): the margin and liquidation
        # paths below use it without a loop.  None with several books.
        self._single = next(iter(books.values())) if len(books) == 1 else None

    # ------------------------------------------------------------------ margin
    def unrealized(self) -> float:
        """uPnL at the mark price, all symbols."""
        return sum(b.position.qty * (mark_of(b) - b.position.entry_price) for b in self.books.values())

    def maint_margin(self, b: SymbolBook) -> float:
        return b.brackets.maint_margin(b.position.qty * mark_of(b)) if b.brackets and b.position.steps else 0.0

    def available_balance(self) -> float:
        """Wallet + uPnL − position margin − open-order margin (cross, one-way)."""
        b = self._single
        if b is not None:           # one symbol (the backtest): the same sum, without the loop
            p = b.position
            m = b.mark if b.mark_driven else b.price
            return self.wallet + p.qty * (m - p.entry_price) - abs(p.qty) * m / p.leverage \
                - open_order_margin(b)
        avail = self.wallet
        for b in self.books.values():
            p = b.position
            lev = p.leverage
            m = b.mark if b.mark_driven else b.price      # mark_of, inline (every placement)
            avail += p.qty * (m - p.entry_price) - abs(p.qty) * m / lev
            avail -= open_order_margin(b)
        return avail

    # ------------------------------------------------------------------ settings
    def change_leverage(self, symbol: str, leverage: int) -> dict[str, Any]:
        if not 1 <= int(leverage) <= 125:
            raise sim_error(BinanceError.INVALID_LEVERAGE, "Leverage is not valid.")
        b = book_of(self.books, symbol)
        b.position.leverage = int(leverage)
        engine = self._engine
        if engine.ack_events:
            engine.events.append(ConfigUpdate(symbol, int(leverage), engine.now_ms))
        return {"leverage": int(leverage), "maxNotionalValue": "1000000", "symbol": symbol}

    def change_multi_assets(self, on: bool) -> dict[str, Any]:
        """POST /fapi/v1/multiAssetsMargin (Change-Multi-Assets-Mode)."""
        if on == self.multi_assets:
            # codes as other clients report them; the daemon never switches the mode
            raise sim_error(BinanceError.ASSET_MODE_NO_NEED_TO_CHANGE,
                            "Adjusted asset mode is currently set and does not need to be adjusted.")
        if any(b.position.steps or b.open_by_client or b.algo_by_client for b in self.books.values()):
            raise sim_error(BinanceError.ASSET_MODE_CHANGE_EXISTS_ORDERS_OR_POSITION,
                            "Unable to adjust asset mode with open orders or positions.")
        self.multi_assets = on
        return {"code": 200, "msg": "success"}

    def change_margin_type(self, symbol: str, margin_type: str) -> dict[str, Any]:
        b = book_of(self.books, symbol)
        mt = margin_type.upper().replace("CROSS", "CROSSED").replace("CROSSEDED", "CROSSED")
        if mt not in ("CROSSED", "ISOLATED"):
            raise sim_error(BinanceError.INVALID_ORDER_TYPE, "Invalid marginType.")
        if mt == b.position.margin_type:
            raise sim_error(BinanceError.NO_NEED_TO_CHANGE_MARGIN_TYPE, "No need to change margin type.")
        if mt == "ISOLATED":
            raise sim_error(BinanceError.NO_NEED_TO_CHANGE_MARGIN_TYPE, "The simulator supports cross margin only.")
        b.position.margin_type = mt
        return {"code": 200, "msg": "success"}

    def change_position_mode(self, dual: bool) -> dict[str, Any]:
        """POST /fapi/v1/positionSide/dual: Binance switches an account holding no position and
        no open order (-4068 / -4067 otherwise), so a user can leave one in hedge mode.  The
        engine trades one-way only: in hedge mode every order is refused (-4061, as Binance
        refuses positionSide BOTH there); a daemon switches back at start."""
        if dual == self.dual_side:
            raise sim_error(BinanceError.NO_NEED_TO_CHANGE_POSITION_SIDE, "No need to change position side.")
        if any(b.position.steps for b in self.books.values()):
            raise sim_error(BinanceError.POSITION_SIDE_CHANGE_EXISTS_QUANTITY,
                            "Position side cannot be changed if there exists position.")
        if any(b.open_by_client or b.algo_by_client for b in self.books.values()):
            raise sim_error(BinanceError.POSITION_SIDE_CHANGE_EXISTS_OPEN_ORDERS,
                            "Position side cannot be changed if there exists open orders.")
        self.dual_side = dual
        return {"code": 200, "msg": "success"}

    # ------------------------------------------------------------------ liquidation
    def update_liquidation(self) -> None:
        """Recompute every position's liquidation price (after a fill, a funding payment, or a
        move of another symbol's mark) and liquidate at once a position already past it."""
        if not self.liquidation_enabled:
            return
        b = self._single
        if b is not None:
            if b.position.steps:
                self._place_liquidation(b, self.wallet)
            elif b.liq_price:
                drop_liquidation(b)
            return
        # Each position's term (uPnL − maintenance margin, as `unrealized` and `maint_margin`
        # give them, inline: this runs at every move of a symbol while two are held); a
        # position's "others" is the wallet plus every other term, summed in the books' order.
        books, terms = [], []
        for b in self.books.values():
            p = b.position
            if p.steps:
                books.append(b)
                m = b.mark if b.mark_driven else b.price
                mm = b.brackets.maint_margin(p.qty * m) if b.brackets else 0.0
                terms.append(p.qty * (m - p.entry_price) - mm)
            elif b.liq_price:
                drop_liquidation(b)
        for k, b in enumerate(books):
            if b.brackets is None:
                continue
            others = self.wallet + sum(terms[:k] + terms[k + 1:])
            if self._place_liquidation(b, others):
                return

    def _place_liquidation(self, b: SymbolBook, others: float) -> bool:
        """Rest the liquidation trigger of one position (`others`: wallet plus the other
        positions' uPnL − maintenance margin); True when it was already passed and the
        position has just been liquidated."""
        if b.brackets is None:
            return False
        p = b.position
        lp = liquidation_price(b.brackets, p.qty, p.entry_price, others)
        if lp <= 0:
            drop_liquidation(b)
            return False
        b.liq_price = lp
        f = b.filters
        long = p.steps > 0
        trig = f.ticks_down(lp) if long else f.ticks_up(lp)
        mark_t = b.mark_t if b.mark_driven else b.price_t
        if (mark_t <= trig) if long else (mark_t >= trig):
            drop_liquidation(b)
            self.liquidate(b, mark_t)           # already past it: the engine closes it now
            return True
        t = b.resting.get(LIQ_KEY) or b.mark_resting.get(LIQ_KEY)     # LIQ_KEY holds the trigger only
        if t is None:
            t = LiquidationTrigger(trig, long, lp)
            b.resting_for(t)[LIQ_KEY] = t
        else:                                   # moved in place (one per position, rests where it is)
            t.trigger, t.fires_below, t.price = trig, long, lp
        return False

    def liquidate(self, b: SymbolBook, price_t: int) -> None:
        """Binance's forced close (cross margin, SPEC §7): the account's margin balance has
        reached its maintenance margin, so every open order of the account is cancelled and
        every cross position is closed: `b`'s at the liquidation price (or where a gap put
        the mark), the others at their marks.  The insurance fund takes the remaining
        maintenance margin; the wallet never goes below zero (the fund covers a bankrupt
        account)."""
        engine = self._engine
        engine.cancel_every_order()
        closing = [(b, price_t)] + [(o, o.mark_t if o.mark_driven else o.price_t)
                                    for o in self.books.values() if o is not b and o.position.steps]
        for book, _ in closing:
            drop_liquidation(book)
        # Every position closed first (their PnL realised), then the fund's share taken from
        # what the wallet holds: the order of the closes changes nothing.
        closed = [self._close_for_liquidation(book, at) for book, at in closing]
        for k, (book, mark, at, signed, mm, o) in enumerate(closed):
            f = book.filters
            clearance = max(0.0, min(mm, self.wallet))
            # the fund brings a negative wallet back to 0, once, on the last record
            bankrupt = min(0.0, self.wallet - clearance) if k == len(closed) - 1 else 0.0
            self.wallet -= clearance + bankrupt
            if clearance or bankrupt:
                self._add_income(f.symbol, "INSURANCE_CLEAR", -(clearance + bankrupt), "LIQUIDATION")
                self.emit_update(book, "INSURANCE_CLEAR", force=True)
            self.liquidations.append(Liquidation(engine.now_ms, f.symbol, mark, f.from_ticks(at), signed,
                                                 clearance + bankrupt, o.order_id, o.client_id))
        self.update_liquidation()

    def _close_for_liquidation(self, b: SymbolBook, price_t: int) -> tuple[SymbolBook, float, int, float, float, SimOrder]:
        """One position closed by Binance's liquidation order; (book, mark, price, position,
        maintenance margin at that price, the order)."""
        p, f = b.position, b.filters
        qty = abs(p.qty)
        signed = p.qty
        mark = mark_of(b)
        mm = b.brackets.maint_margin(qty * f.from_ticks(price_t)) if b.brackets else 0.0
        o = self._engine.force_close(b, price_t)
        return b, mark, price_t, signed, mm, o

    # ------------------------------------------------------------------ funding
    def settle_funding(self, symbol: str, rate: float, mark: float) -> float:
        """One funding settlement of `symbol` on the position held now, at `mark`:
        amount = position × mark × rate, paid (> 0) by a long at a positive rate, received by a
        short.  Returns the amount paid (0.0 when flat: nothing is recorded)."""
        b = book_of(self.books, symbol)
        p = b.position
        if not p.steps:
            return 0.0
        amount = p.qty * mark * rate
        self.wallet -= amount
        self.funding.append(FundingSettlement(self._engine.now_ms, symbol, rate, mark, p.qty, amount))
        self._add_income(symbol, "FUNDING_FEE", -amount, "FUNDING_FEE")
        self.emit_update(b, "FUNDING_FEE")
        self.update_liquidation()
        return amount

    def _add_income(self, symbol: str, kind: str, amount: float, info: str) -> None:
        self.income.append(Income(self._next_tran_id, symbol, kind, amount, self.asset, self._engine.now_ms, info))
        self._next_tran_id += 1

    # ------------------------------------------------------------------ events
    def emit_update(self, b: SymbolBook, reason: str, force: bool = False) -> None:
        """Queue an ACCOUNT_UPDATE of the wallet and `b`'s position (`force`: even with
        acknowledgements off)."""
        engine = self._engine
        if not (engine.ack_events or force):
            return
        p = b.position
        engine.events.append(AccountUpdate(reason, b.filters.symbol, self.wallet, p.qty, p.entry_price,
                                           p.qty * (mark_of(b) - p.entry_price), b.realized_cum, engine.now_ms,
                                           self.collateral))
