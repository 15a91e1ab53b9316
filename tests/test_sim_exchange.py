"""Tests for the in-process simulated Binance USDⓈ-M exchange: filters and
Binance error codes, Binance-style position accounting and fees, event
streams and their Binance payloads, user trades, and the SimVenue adapter
(batching, the SimVenue -2019 entry-ladder override vs the base class's linear
ladder, and the -2022 close ladder).  Expected numbers are worked out by
hand in each test."""

from __future__ import annotations

import dataclasses
import logging
import random

import pytest

import exchange_api
from exchange_api import (ExchangeError, FuturesVenue, LimitOrder, OrderAck, OrderUpdate, SymbolFilters,
                          run_sync)
from sim.exchange import AccountUpdate, AlgoUpdate, SimulatedExchange, SimVenue
from binance_library import order_update_from_binance
from localex.wire import order_update_to_binance, to_binance_event

SYM = "BTCUSDC"
BTC = SymbolFilters(SYM, tick_size=0.1, step_size=0.001, min_qty=0.001, min_notional=5.0)
MAKER = 0.0002
TAKER = 0.0005


def make_ex(price=100.0, balance=10_000.0, leverage=20, filters=BTC):
    ex = SimulatedExchange([filters], balance=balance, maker_fee=MAKER, taker_fee=TAKER, leverage=leverage)
    ex.set_price(filters.symbol, price)
    return ex


def limit(ex, cid, side, px, qty, reduce_only=False, **kw):
    return ex.new_order(SYM, side, "LIMIT", quantity=qty, price=px, timeInForce="GTC",
                        reduceOnly=reduce_only, newClientOrderId=cid, **kw)


def code_of(fn, *a, **kw) -> int:
    with pytest.raises(ExchangeError) as ei:
        fn(*a, **kw)
    return ei.value.code


def go_long(ex, qty=0.1, px=99.0, cid="E1"):
    """Rest a buy below the market and run the price down to it."""
    limit(ex, cid, "BUY", px, qty)
    assert ex.advance(SYM, px) is True
    assert ex.position(SYM).qty == pytest.approx(qty, abs=1e-12)


# ---------------------------------------------------------------- filters and error codes


def test_price_with_too_many_decimals_as_string_is_1111():
    ex = make_ex()
    assert code_of(limit, ex, "a", "BUY", "99.05", "0.1") == -1111
    # trailing zeros are not extra precision
    assert limit(ex, "b", "BUY", "99.500", "0.100").price == 99.5


def test_price_off_tick_is_4014():
    ex = make_ex()
    assert code_of(limit, ex, "a", "BUY", 99.05, 0.1) == -4014
    assert code_of(limit, ex, "a", "BUY", 99.01, 0.1) == -4014
    assert ex.open_orders(SYM) == []


def test_qty_off_step_is_4023_or_1111_as_string():
    ex = make_ex()
    assert code_of(limit, ex, "a", "BUY", 99.0, 0.1005) == -4023
    assert code_of(limit, ex, "a", "BUY", 99.0, "0.1005") == -1111
    assert ex.open_orders(SYM) == []


def test_qty_below_min_qty_is_4004():
    f = SymbolFilters(SYM, tick_size=0.1, step_size=0.001, min_qty=0.01, min_notional=5.0)
    ex = make_ex(filters=f)
    assert code_of(limit, ex, "a", "BUY", 99.0, 0.009) == -4004
    assert code_of(limit, ex, "a", "BUY", 99.0, "0.009") == -4004
    assert limit(ex, "b", "BUY", 99.0, 0.06).qty == pytest.approx(0.06, abs=1e-12)


def test_notional_below_min_is_4164_but_reduce_only_is_exempt():
    ex = make_ex(price=101.0)
    assert code_of(limit, ex, "a", "BUY", 100.0, 0.049) == -4164      # 4.9 < 5
    assert limit(ex, "b", "BUY", 100.0, 0.05).status == "NEW"           # 5.0 exactly
    assert ex.advance(SYM, 100.0)
    # a reduce-only sell worth 0.101 is accepted
    o = limit(ex, "tp", "SELL", 101.0, 0.001, reduce_only=True)
    assert o.status == "NEW" and o.reduce_only


def test_conditional_types_to_new_order_are_4120():
    ex = make_ex()
    assert code_of(ex.new_order, SYM, "SELL", "STOP_MARKET", quantity=0.1, stopPrice=95.0) == -4120
    assert code_of(ex.new_order, SYM, "SELL", "TAKE_PROFIT_MARKET", quantity=0.1, stopPrice=105.0) == -4120
    (r,) = ex.batch_orders([{"symbol": SYM, "side": "SELL", "type": "STOP_MARKET", "quantity": 0.1}])
    assert isinstance(r, ExchangeError) and r.code == -4120
    assert ex.open_orders(SYM) == [] and ex.open_algo_orders(SYM) == []


def test_margin_insufficient_2019_by_hand():
    # balance 100, leverage 20: initial margin 100 covers a notional of 2000.
    ex = make_ex(price=25_000.0, balance=100.0, leverage=20)
    # 0.1 @ 20010 = 2001 notional → IM 100.05 > 100
    assert code_of(limit, ex, "a", "BUY", 20010.0, 0.1) == -2019
    # 0.1 @ 19990 = 1999 notional → IM 99.95
    assert limit(ex, "b", "BUY", 19990.0, 0.1).status == "NEW"
    assert ex.available_balance() == pytest.approx(0.05, abs=1e-9)
    # the open order's margin now counts: 0.001 @ 20000 needs 1.0 more
    assert code_of(limit, ex, "c", "BUY", 20000.0, 0.001) == -2019
    # a reduce-only order needs no margin, but there is no position yet
    assert code_of(limit, ex, "d", "SELL", 26000.0, 0.001, reduce_only=True) == -2022


def test_account_checks_suspended_refuse_no_margin_and_resumed_refuse_it_again():
    """The backtest suspends the account's checks only where a bound shows no -2019 can bind:
    meanwhile an order is not refused for margin (its cost is not even computed); resumed,
    the same order is refused again and liquidation is back on."""
    ex = make_ex(price=25_000.0, balance=100.0, leverage=20)
    assert code_of(limit, ex, "a", "BUY", 20010.0, 0.1) == -2019
    on = ex.suspend_account_checks()
    assert on is True and not ex.liquidation_enabled
    assert limit(ex, "a", "BUY", 20010.0, 0.1).status == "NEW"
    ex.resume_account_checks(on)
    assert ex.liquidation_enabled
    assert code_of(limit, ex, "b", "BUY", 20010.0, 0.1) == -2019


def test_reduce_only_without_position_or_larger_than_it_is_2022():
    ex = make_ex()
    assert code_of(limit, ex, "a", "SELL", 101.0, 0.1, reduce_only=True) == -2022
    go_long(ex, 0.1)
    assert code_of(limit, ex, "a", "SELL", 101.0, 0.2, reduce_only=True) == -2022
    assert code_of(limit, ex, "a", "BUY", 98.0, 0.05, reduce_only=True) == -2022      # would add
    assert limit(ex, "a", "SELL", 101.0, 0.1, reduce_only="true").reduce_only is True


def test_unknown_orders_cancel_2011_get_2013():
    ex = make_ex()
    assert code_of(ex.cancel_order, SYM, orderId=123) == -2011
    assert code_of(ex.cancel_order, SYM, origClientOrderId="nope") == -2011
    assert code_of(ex.get_order, SYM, orderId=123) == -2013
    assert code_of(ex.get_order, SYM, origClientOrderId="nope") == -2013
    o = limit(ex, "x", "BUY", 99.0, 0.1)
    ex.cancel_order(SYM, orderId=o.order_id)
    assert o.status == "CANCELED"
    assert code_of(ex.cancel_order, SYM, orderId=o.order_id) == -2011     # already gone
    assert ex.get_order(SYM, origClientOrderId="x").status == "CANCELED"  # still queryable


def test_duplicate_client_id_4116_only_among_open_orders():
    ex = make_ex()
    o1 = limit(ex, "GM-BTCUSDC-1-E1", "BUY", 99.0, 0.1)
    assert code_of(limit, ex, "GM-BTCUSDC-1-E1", "BUY", 98.0, 0.1) == -4116
    ex.cancel_order(SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    o2 = limit(ex, "GM-BTCUSDC-1-E1", "BUY", 98.0, 0.1)
    assert o2.order_id != o1.order_id and o2.status == "NEW"
    assert ex.advance(SYM, 97.0) and o2.status == "FILLED"
    o3 = limit(ex, "GM-BTCUSDC-1-E1", "BUY", 96.0, 0.1)
    assert o3.status == "NEW"
    assert ex.get_order(SYM, origClientOrderId="GM-BTCUSDC-1-E1") is o3


def test_invalid_client_id_4015():
    ex = make_ex()
    assert code_of(limit, ex, "bad id", "BUY", 99.0, 0.1) == -4015
    assert code_of(limit, ex, "x" * 37, "BUY", 99.0, 0.1) == -4015
    assert code_of(limit, ex, "ü", "BUY", 99.0, 0.1) == -4015
    assert limit(ex, "x" * 36, "BUY", 99.0, 0.1).status == "NEW"
    assert limit(ex, ".A:/z_-9", "BUY", 98.0, 0.1).status == "NEW"


def _params(cid, px, qty=0.1, side="BUY"):
    return {"symbol": SYM, "side": side, "type": "LIMIT", "quantity": qty, "price": px,
            "timeInForce": "GTC", "newClientOrderId": cid}


def test_batch_of_six_is_1130_and_places_nothing():
    ex = make_ex()
    assert code_of(ex.batch_orders, [_params(f"b{i}", 99.0 - i) for i in range(6)]) == -1130
    assert ex.open_orders(SYM) == []


def test_batch_elements_fail_on_their_own():
    ex = make_ex()
    res = ex.batch_orders([_params("b0", 99.0), _params("b1", 98.05), _params("b2", 97.0),
                           _params("b0", 96.0), _params("b4", 95.0, qty=0.01)])
    assert [r.code if isinstance(r, ExchangeError) else r.client_id for r in res] == \
        ["b0", -4014, "b2", -4116, -4164]
    assert sorted(o.client_id for o in ex.open_orders(SYM)) == ["b0", "b2"]


def test_position_side_long_is_4061():
    ex = make_ex()
    assert code_of(limit, ex, "a", "BUY", 99.0, 0.1, positionSide="LONG") == -4061
    assert code_of(ex.new_algo_order, SYM, "SELL", "STOP_MARKET", triggerPrice=95.0,
                   closePosition=True, positionSide="SHORT") == -4061
    assert limit(ex, "a", "BUY", 99.0, 0.1, positionSide="BOTH").status == "NEW"


def test_algo_order_that_would_trigger_now_is_2021():
    ex = make_ex(price=100.0)
    assert code_of(ex.new_algo_order, SYM, "SELL", "STOP_MARKET", triggerPrice=100.0, closePosition=True) == -2021
    assert code_of(ex.new_algo_order, SYM, "SELL", "STOP_MARKET", triggerPrice=101.0, closePosition=True) == -2021
    assert code_of(ex.new_algo_order, SYM, "BUY", "STOP_MARKET", triggerPrice=99.0, closePosition=True) == -2021
    assert code_of(ex.new_algo_order, SYM, "SELL", "TAKE_PROFIT_MARKET", triggerPrice=99.0,
                   closePosition=True) == -2021
    assert ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=99.9, closePosition=True).status == "NEW"
    assert ex.new_algo_order(SYM, "BUY", "STOP_MARKET", triggerPrice=100.1, closePosition=True).status == "NEW"
    assert len(ex.open_algo_orders(SYM)) == 2


# ---------------------------------------------------------------- accounting


def test_accounting_average_partial_reduce_flip_and_fees():
    ex = make_ex(price=101.0)
    limit(ex, "E1", "BUY", 100.0, 0.1)
    limit(ex, "E2", "BUY", 96.0, 0.3)
    while ex.advance(SYM, 95.0):
        pass
    p = ex.position(SYM)
    # (0.1*100 + 0.3*96) / 0.4 = 38.8 / 0.4
    assert p.qty == pytest.approx(0.4, abs=1e-12) and p.entry_price == pytest.approx(97.0, abs=1e-9)

    # partial reduce: 0.1 @ 99 realizes 0.1 * (99 - 97); entry unchanged
    limit(ex, "BE", "SELL", 99.0, 0.1, reduce_only=True)
    assert ex.advance(SYM, 99.0)
    assert ex.trades[-1].realized_pnl == pytest.approx(0.2, abs=1e-12)
    assert p.qty == pytest.approx(0.3, abs=1e-12) and p.entry_price == pytest.approx(97.0, abs=1e-9)

    # flip: sell 0.5 @ 100 closes 0.3 (realizes 0.3 * 3 = 0.9) and opens 0.2 short at 100
    limit(ex, "FLIP", "SELL", 100.0, 0.5)
    assert ex.advance(SYM, 100.5)
    assert ex.trades[-1].realized_pnl == pytest.approx(0.9, abs=1e-12)
    assert p.qty == pytest.approx(-0.2, abs=1e-12) and p.entry_price == 100.0

    # maker fees: 100*0.1 + 96*0.3 + 99*0.1 + 100*0.5 = 98.7 notional × 0.0002
    assert [t.maker for t in ex.trades] == [True] * 4
    assert ex.total_fees == pytest.approx(0.01974, abs=1e-12)
    assert ex.wallet == pytest.approx(10_000 + 0.2 + 0.9 - 0.01974, abs=1e-9)

    # taker: a market buy closes the short at 98: realized 0.2 * (100 - 98) = 0.4, fee 98*0.2*0.0005
    ex.set_price(SYM, 98.0)
    o = ex.new_order(SYM, "BUY", "MARKET", quantity=0.2, reduceOnly=True, newClientOrderId="MC")
    assert o.status == "FILLED" and o.avg_price == pytest.approx(98.0)
    t = ex.trades[-1]
    assert (t.price, t.maker) == (98.0, False)
    assert t.realized_pnl == pytest.approx(0.4, abs=1e-12)
    assert t.commission == pytest.approx(0.0098, abs=1e-12)
    assert p.qty == 0.0 and p.entry_price == 0.0
    assert ex.total_fees == pytest.approx(0.01974 + 0.0098, abs=1e-12)
    assert ex.wallet == pytest.approx(10_000 + 1.5 - 0.02954, abs=1e-9)
    assert ex.books[SYM].realized_cum == pytest.approx(1.5, abs=1e-12)


def test_marketable_limit_takes_at_the_market_price_as_taker():
    ex = make_ex(price=100.0)
    o = limit(ex, "T", "BUY", 100.5, 0.1)
    assert o.status == "FILLED"
    t = ex.trades[-1]
    assert (t.price, t.maker) == (100.0, False)
    assert t.commission == pytest.approx(100.0 * 0.1 * TAKER, abs=1e-12)   # 0.005


def test_uncovered_unrealized_pnl_and_available_balance():
    ex = make_ex(price=101.0, balance=1000.0)
    go_long(ex, 0.5, 100.0)
    ex.set_price(SYM, 90.0)
    # uPnL 0.5 * (90 - 100) = -5; position IM at the price: 0.5 * 90 / 20 = 2.25; fee 100*0.5*0.0002 = 0.01
    assert ex.unrealized() == pytest.approx(-5.0, abs=1e-9)
    assert ex.available_balance() == pytest.approx(1000 - 0.01 - 5.0 - 2.25, abs=1e-9)


def test_reduce_only_orders_expire_when_the_position_closes():
    ex = make_ex()
    go_long(ex, 0.1, 99.0)
    tp = limit(ex, "TP", "SELL", 102.0, 0.1, reduce_only=True)
    be = limit(ex, "BE", "SELL", 101.0, 0.05, reduce_only=True)
    entry = limit(ex, "E2", "BUY", 98.0, 0.1)
    ex.drain_events()
    assert ex.advance(SYM, 101.5) and be.status == "FILLED"
    assert tp.status == "NEW"                               # still reduces the 0.05 left
    ex.new_order(SYM, "SELL", "MARKET", quantity=0.05, reduceOnly=True, newClientOrderId="MC")
    assert ex.position(SYM).qty == 0.0
    assert tp.status == "EXPIRED"
    assert entry.status == "NEW"                            # not reduce-only: stays
    assert [o.client_id for o in ex.open_orders(SYM)] == ["E2"]
    expired = [e for e in ex.drain_events() if isinstance(e, OrderUpdate) and e.exec_type == "EXPIRED"]
    assert [(e.client_id, e.status) for e in expired] == [("TP", "EXPIRED")]
    # the price passing 102 later fills nothing
    assert ex.advance(SYM, 103.0) is False


def test_stop_close_with_no_position_expires_without_a_fill():
    ex = make_ex()
    a = ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=95.0, closePosition=True, clientAlgoId="SL")
    assert ex.advance(SYM, 94.0) is True
    assert a.status == "EXPIRED" and ex.trades == [] and ex.open_algo_orders(SYM) == []


# ---------------------------------------------------------------- events


def test_events_new_then_trade_then_account_update():
    ex = make_ex()
    o = limit(ex, "E1", "BUY", 99.0, 0.1)
    ex.now_ms = 1_700_000_000_000
    (new,) = ex.drain_events()
    assert isinstance(new, OrderUpdate)
    assert (new.symbol, new.client_id, new.order_id, new.side, new.order_type, new.exec_type, new.status) == \
        (SYM, "E1", o.order_id, "BUY", "LIMIT", "NEW", "NEW")
    assert (new.price, new.orig_qty, new.last_qty, new.cum_qty) == (99.0, 0.1, 0.0, 0.0)
    assert not new.is_fill
    assert ex.advance(SYM, 98.0)
    trade, acct = ex.drain_events()
    assert isinstance(trade, OrderUpdate) and isinstance(acct, AccountUpdate)
    assert (trade.client_id, trade.order_id, trade.exec_type, trade.status, trade.is_maker, trade.side) == \
        ("E1", o.order_id, "TRADE", "FILLED", True, "BUY")
    assert trade.is_fill
    assert trade.last_price == 99.0 and trade.price == 99.0
    assert trade.last_qty == pytest.approx(0.1, abs=1e-12) and trade.cum_qty == pytest.approx(0.1, abs=1e-12)
    assert trade.avg_price == pytest.approx(99.0, abs=1e-9)
    assert trade.commission == pytest.approx(0.00198, abs=1e-12)
    assert trade.realized_pnl == 0.0
    assert trade.trade_id == ex.trades[0].id and trade.trade_time == 1_700_000_000_000
    assert (acct.reason, acct.symbol) == ("ORDER", SYM)
    assert acct.wallet == pytest.approx(10_000 - 0.00198, abs=1e-9)
    assert acct.position_qty == pytest.approx(0.1) and acct.entry_price == pytest.approx(99.0)
    assert ex.drain_events() == []


def _stop_scenario():
    ex = make_ex()
    go_long(ex, 0.1, 99.0)
    ex.drain_events()
    a = ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=95.0, closePosition=True, clientAlgoId="SL1")
    return ex, a


def test_algo_update_lifecycle_new_triggered_finished():
    ex, a = _stop_scenario()
    (new,) = ex.drain_events()
    assert isinstance(new, AlgoUpdate)
    assert (new.client_algo_id, new.algo_id, new.status, new.trigger_price, new.order_type, new.side,
            new.close_position) == ("SL1", a.algo_id, "NEW", 95.0, "STOP_MARKET", "SELL", True)
    assert ex.advance(SYM, 94.0)
    evs = ex.drain_events()
    algo = [e for e in evs if isinstance(e, AlgoUpdate)]
    orders = [e for e in evs if isinstance(e, OrderUpdate)]
    assert [e.status for e in algo] == ["TRIGGERED", "FINISHED"]
    assert [type(e).__name__ for e in evs] == ["AlgoUpdate", "OrderUpdate", "OrderUpdate", "AccountUpdate",
                                               "AlgoUpdate"]
    assert [(e.exec_type, e.status) for e in orders] == [("NEW", "NEW"), ("TRADE", "FILLED")]
    fill = orders[1]
    assert fill.client_id == "SL1" and fill.order_id == a.actual_order_id == algo[1].actual_order_id
    assert (fill.last_price, fill.is_maker, fill.reduce_only, fill.close_position, fill.stop_price) == \
        (95.0, False, True, True, 95.0)
    assert fill.commission == pytest.approx(95 * 0.1 * TAKER, abs=1e-12)
    assert fill.realized_pnl == pytest.approx(-0.4, abs=1e-12)
    assert a.status == "FINISHED"
    assert code_of(ex.cancel_algo_order, algoId=a.algo_id) == -2011


def test_algo_cancel_emits_canceled():
    ex, a = _stop_scenario()
    ex.drain_events()
    ex.cancel_algo_order(clientAlgoId="SL1")
    (ev,) = ex.drain_events()
    assert (ev.status, ev.algo_id) == ("CANCELED", a.algo_id)
    assert ex.get_algo_order(clientAlgoId="SL1").status == "CANCELED"
    assert code_of(ex.get_algo_order, algoId=1) == -2013
    assert ex.advance(SYM, 90.0) is False


def test_binance_payloads_order_and_account_update():
    ex = make_ex()
    ex.now_ms = 1_700_000_000_123
    o = limit(ex, "E1", "BUY", 99.0, 0.1)
    assert ex.advance(SYM, 98.0)
    evs = ex.drain_events()
    new, trade, acct = (to_binance_event(e, BTC) for e in evs)
    assert new["e"] == "ORDER_TRADE_UPDATE" and new["o"]["x"] == "NEW" and "n" not in new["o"]
    assert trade["e"] == "ORDER_TRADE_UPDATE"
    assert trade["E"] == 1_700_000_000_123 and trade["T"] == 1_700_000_000_123
    to = trade["o"]
    assert (to["s"], to["c"], to["S"], to["o"], to["ot"], to["x"], to["X"], to["i"], to["ps"]) == \
        (SYM, "E1", "BUY", "LIMIT", "LIMIT", "TRADE", "FILLED", o.order_id, "BOTH")
    assert (to["p"], to["q"], to["L"], to["l"], to["z"]) == ("99.0", "0.100", "99.0", "0.100", "0.100")
    assert to["rp"] == "0.00000000" and to["n"] == "0.00198000" and to["N"] == "USDC"
    assert to["m"] is True and to["R"] is False and to["t"] == ex.trades[0].id
    assert isinstance(to["i"], int) and isinstance(to["T"], int)
    assert acct["e"] == "ACCOUNT_UPDATE" and acct["a"]["m"] == "ORDER"
    (b,) = acct["a"]["B"]
    (p,) = acct["a"]["P"]
    assert b["a"] == "USDC" and b["wb"] == "9999.99802000"
    assert (p["s"], p["pa"], p["ep"], p["ps"]) == (SYM, "0.100", "99.00000000", "BOTH")
    # the price stands at 99 after the fill: uPnL 0
    assert float(p["up"]) == 0.0

    # a short with realized PnL: flip through zero
    limit(ex, "F", "SELL", 101.0, 0.3)
    assert ex.advance(SYM, 102.0)
    _, trade, acct = (to_binance_event(e, BTC) for e in ex.drain_events())
    assert trade["o"]["rp"] == "0.20000000"              # 0.1 * (101 - 99)
    assert trade["o"]["n"] == "0.00606000"                # 101 * 0.3 * 0.0002
    assert trade["o"]["l"] == "0.300" and trade["o"]["L"] == "101.0"
    (p,) = acct["a"]["P"]
    assert p["pa"] == "-0.200" and p["ep"] == "101.00000000"
    # 10000 - 0.00198 + 0.2 - 0.00606
    assert acct["a"]["B"][0]["wb"] == "10000.19196000"


def test_binance_payload_algo_update():
    ex, a = _stop_scenario()
    (new,) = (to_binance_event(e, BTC) for e in ex.drain_events())
    assert new["e"] == "ALGO_UPDATE"
    o = new["o"]
    assert (o["caid"], o["aid"], o["X"], o["tp"], o["o"], o["S"], o["s"], o["cp"], o["at"]) == \
        ("SL1", a.algo_id, "NEW", "95.0", "STOP_MARKET", "SELL", SYM, True, "CONDITIONAL")
    assert ex.advance(SYM, 94.0)
    algo = [to_binance_event(e, BTC) for e in ex.drain_events() if isinstance(e, AlgoUpdate)]
    assert [x["o"]["X"] for x in algo] == ["TRIGGERED", "FINISHED"]
    assert algo[1]["o"]["ai"] == str(a.actual_order_id)


def _all_order_updates():
    """Order updates of every kind from one session: NEW, TRADE (maker and
    taker, partial close, flip), CANCELED, EXPIRED, a triggered stop."""
    ex = make_ex()
    ex.now_ms = 1_000
    go_long(ex, 0.123, 99.3)
    ex.now_ms = 2_000
    limit(ex, "C", "BUY", 90.0, 0.1)
    ex.cancel_order(SYM, origClientOrderId="C")
    limit(ex, "TP", "SELL", 101.7, 0.05, reduce_only=True)
    limit(ex, "TP2", "SELL", 105.0, 0.073, reduce_only=True)
    assert ex.advance(SYM, 102.0)
    ex.now_ms = 3_000
    ex.new_algo_order(SYM, "SELL", "STOP_MARKET", triggerPrice=95.3, closePosition=True, clientAlgoId="SL")
    while ex.advance(SYM, 94.0):
        pass
    limit(ex, "F1", "BUY", 93.9, 0.2)
    limit(ex, "F2", "SELL", 96.1, 0.35)
    ex.advance(SYM, 93.0)
    ex.advance(SYM, 97.0)
    return [e for e in ex.drain_events() if isinstance(e, OrderUpdate)]


def test_order_update_round_trip_through_binance_payload():
    updates = _all_order_updates()
    kinds = {(u.exec_type, u.status) for u in updates}
    assert {("NEW", "NEW"), ("TRADE", "FILLED"), ("CANCELED", "CANCELED"), ("EXPIRED", "EXPIRED")} <= kinds
    assert any(u.is_fill and not u.is_maker for u in updates)
    assert any(u.realized_pnl < 0 for u in updates) and any(u.realized_pnl > 0 for u in updates)
    for u in updates:
        back = order_update_from_binance(order_update_to_binance(u, BTC))
        for f in dataclasses.fields(OrderUpdate):
            a, b = getattr(u, f.name), getattr(back, f.name)
            if f.name in ("commission", "realized_pnl", "avg_price"):
                assert b == pytest.approx(a, abs=1e-8), (f.name, u)       # Binance sends 8 decimals
            elif f.name in ("last_qty", "cum_qty", "orig_qty", "price", "last_price", "stop_price"):
                assert b == pytest.approx(a, abs=1e-12), (f.name, u)      # tick/step multiples
            else:
                assert b == a, (f.name, u)
        assert back.is_fill == u.is_fill


# ---------------------------------------------------------------- user trades


def test_user_trades_report_realized_pnl_and_commission():
    ex = make_ex()
    ex.now_ms = 10
    go_long(ex, 0.2, 99.0)
    ex.now_ms = 20
    limit(ex, "TP", "SELL", 100.0, 0.2, reduce_only=True)
    assert ex.advance(SYM, 100.0)
    trades = ex.user_trades(SYM)
    assert [(t.client_id, t.side, t.price, t.time) for t in trades] == [("E1", "BUY", 99.0, 10),
                                                                        ("TP", "SELL", 100.0, 20)]
    assert [t.realized_pnl for t in trades] == pytest.approx([0.0, 0.2], abs=1e-12)       # 0.2 * (100 - 99)
    # 99*0.2*0.0002, 100*0.2*0.0002
    assert [t.commission for t in trades] == pytest.approx([0.00396, 0.004], abs=1e-12)
    assert [t.qty for t in trades] == pytest.approx([0.2, 0.2], abs=1e-12)
    assert trades[0].id < trades[1].id
    assert [t.id for t in ex.user_trades(SYM, start_ms=15)] == [trades[1].id]
    assert [t.id for t in ex.user_trades(SYM, from_id=trades[1].id)] == [trades[1].id]
    assert [t.id for t in ex.user_trades(SYM, limit=1)] == [trades[1].id]


# ---------------------------------------------------------------- SimVenue


def test_sim_venue_place_limits_each_order_stands_alone():
    """As in a Binance batch, one refused order does not stop the others (the venue calls
    the simulator per order: the backtest's hot path, without batch_orders' dicts)."""
    ex = make_ex(price=100.0, balance=10_000.0)
    v = SimVenue(ex, SYM)
    orders = [LimitOrder(f"E{i}", "BUY", 99.0 - i, 0.1) for i in range(1, 6)]
    orders.insert(2, LimitOrder("E6", "BUY", 93.05, 0.1))          # off tick, in the middle
    res = run_sync(v.place_limits(orders))
    assert len(res) == 6
    assert isinstance(res[2], ExchangeError) and res[2].code == -4014
    res = res[:2] + res[3:] + [res[2]]
    assert all(isinstance(r, OrderAck) for r in res[:5])
    assert [(r.client_id, r.price, r.status) for r in res[:5]] == [
        ("E1", 98.0, "NEW"), ("E2", 97.0, "NEW"), ("E3", 96.0, "NEW"), ("E4", 95.0, "NEW"), ("E5", 94.0, "NEW")]
    assert isinstance(res[5], ExchangeError) and res[5].code == -4014
    assert sorted(o.client_id for o in run_sync(v.get_open_orders())) == ["E1", "E2", "E3", "E4", "E5"]


def test_sim_venue_entry_retry_hand_case():
    # balance 100, lev 20: at most 2000 notional; 0.11 @ 20000 = 2200 is rejected.
    # Linear rungs qty_down(0.11 * (1 - 0.001k)): first ≤ 0.100 at k = 82 (0.10098 → 0.100),
    # whose margin 0.1 * 20000 / 20 = 100 just fits.
    ex = make_ex(price=25_000.0, balance=100.0)
    v = SimVenue(ex, SYM)
    ack = run_sync(v.place_limit_entry_with_retry("E1", "BUY", 20000.0, 0.11))
    assert ack is not None and ack.qty == pytest.approx(0.1, abs=1e-12) and ack.price == 20000.0
    assert ex.open_orders(SYM)[0].qty == pytest.approx(0.1, abs=1e-12)
    # no room left at all: gives up
    assert run_sync(v.place_limit_entry_with_retry("E2", "BUY", 19000.0, 0.11)) is None


def test_sim_venue_entry_retry_first_rung():
    # balance 49.95, lev 20: at most 999 notional; 10.000 @ 100 (1000) is rejected,
    # the first rung 10 * 0.999 = 9.990 (999) fits exactly; the second would be 9.980.
    ex = make_ex(price=101.0, balance=49.95)
    ack = run_sync(SimVenue(ex, SYM).place_limit_entry_with_retry("E1", "BUY", 100.0, 10.0))
    assert ack is not None and ack.qty == pytest.approx(9.99, abs=1e-12)
    ex2 = make_ex(price=101.0, balance=49.95)
    lin = run_sync(FuturesVenue.retry_entry_after_margin_error(SimVenue(ex2, SYM), "E1", "BUY", 100.0, 10.0))
    assert lin is not None and lin.qty == pytest.approx(9.99, abs=1e-12)


def test_sim_venue_entry_retry_gives_up_below_min_notional():
    # balance 0.24, lev 20: at most 4.8 notional at price 100 — the ladder meets
    # 0.049 (4.9 < minNotional 5) before any size that fits.
    ex = make_ex(price=101.0, balance=0.24)
    assert run_sync(SimVenue(ex, SYM).place_limit_entry_with_retry("E1", "BUY", 100.0, 0.1)) is None
    ex2 = make_ex(price=101.0, balance=0.24)
    assert run_sync(FuturesVenue.retry_entry_after_margin_error(SimVenue(ex2, SYM), "E1", "BUY", 100.0, 0.1)) is None
    # balance 0.3: 6.0 notional fits → 0.06
    ex3 = make_ex(price=101.0, balance=0.3)
    ack = run_sync(SimVenue(ex3, SYM).place_limit_entry_with_retry("E1", "BUY", 100.0, 0.1))
    assert ack is not None and ack.qty == pytest.approx(0.06, abs=1e-12)


def _retry_world(seed: int):
    rng = random.Random(seed)
    market = round(rng.uniform(20_000, 30_000), 1)
    lev = rng.choice([5, 10, 20, 50])
    balance = round(10 ** rng.uniform(-0.8, 2.6), 2)        # 0.16 … 400: some below minNotional
    side = rng.choice(["BUY", "SELL"])
    off = rng.uniform(0.001, 0.05)
    price = round(market * (1 - off) if side == "BUY" else market * (1 + off), 1)
    setup = rng.choice(["flat", "flat", "opposite", "same", "resting"])
    notional_room = balance * lev
    qty = round(rng.uniform(0.8, 3.5) * notional_room / price, 3)
    qty = max(qty, 0.001)
    return dict(market=market, lev=lev, balance=balance, side=side, price=price, setup=setup,
                qty=qty, pos=round(rng.uniform(0.1, 0.6) * notional_room / market, 3))


def _build(w):
    ex = make_ex(price=w["market"], balance=w["balance"], leverage=w["lev"])
    ex.maker_fee = ex.taker_fee = 0.0
    pos = w["pos"]
    if w["setup"] != "flat" and pos > 0 and pos * w["market"] >= 5.0:
        same = w["setup"] != "opposite"
        pside = w["side"] if same else ("SELL" if w["side"] == "BUY" else "BUY")
        px = round(w["market"] * (0.9 if w["side"] == "BUY" else 1.1), 1)
        try:   # deterministic: both copies end up the same whether or not these fit
            ex.new_order(SYM, pside, "MARKET", quantity=pos, newClientOrderId="P")
            if w["setup"] == "resting":
                ex.new_order(SYM, w["side"], "LIMIT", quantity=max(0.001, round(pos / 2, 3)), price=px,
                             timeInForce="GTC", newClientOrderId="R")
        except ExchangeError:
            pass
    return ex


def test_sim_venue_margin_retry_override_equals_linear_ladder(caplog):
    caplog.set_level(logging.CRITICAL, logger=exchange_api.__name__)
    placed = skipped = 0
    for seed in range(300):
        w = _retry_world(seed)
        ex1, ex2 = _build(w), _build(w)
        v1, v2 = SimVenue(ex1, SYM), SimVenue(ex2, SYM)
        args = ("E1", w["side"], w["price"], w["qty"])
        bis = run_sync(v1.retry_entry_after_margin_error(*args))
        lin = run_sync(FuturesVenue.retry_entry_after_margin_error(v2, *args))
        assert (bis is None) == (lin is None), (seed, w, bis, lin)
        if bis is None:
            skipped += 1
            assert ex1.open_orders(SYM) == [] or [o.client_id for o in ex1.open_orders(SYM)] == ["R"]
        else:
            placed += 1
            assert (bis.client_id, bis.price) == (lin.client_id, lin.price)
            assert round(bis.qty / 0.001) == round(lin.qty / 0.001), (seed, w, bis, lin)
            assert bis.qty < w["qty"] or w["setup"] != "flat"
        assert [(o.client_id, round(o.qty * 1000)) for o in ex1.open_orders(SYM)] == \
            [(o.client_id, round(o.qty * 1000)) for o in ex2.open_orders(SYM)]
    assert placed >= 60 and skipped >= 20, (placed, skipped)


def test_sim_venue_close_retry_shrinks_to_the_position(caplog):
    ex = make_ex()
    go_long(ex, 0.1, 99.0)
    v = SimVenue(ex, SYM)
    ack = run_sync(v.place_limit_close("TP1", "SELL", 102.0, 0.15))
    assert ack is not None and ack.qty == pytest.approx(0.1, abs=1e-12) and ack.price == 102.0
    (o,) = ex.open_orders(SYM)
    assert (o.client_id, o.reduce_only) == ("TP1", True)
    # no position: nothing to close
    ex2 = make_ex()
    caplog.set_level(logging.CRITICAL, logger=exchange_api.__name__)
    assert run_sync(SimVenue(ex2, SYM).place_limit_close("TP1", "SELL", 102.0, 0.1)) is None
    assert ex2.open_orders(SYM) == []


def test_sim_venue_stop_and_market_close():
    ex = make_ex()
    go_long(ex, 0.1, 99.0)
    v = SimVenue(ex, SYM)
    ack = run_sync(v.place_stop_close("SL1", "SELL", 95.0))
    assert (ack.client_id, ack.price, ack.status) == ("SL1", 95.0, "NEW")
    oo = run_sync(v.get_open_orders())
    assert [(o.client_id, o.is_algo, o.reduce_only) for o in oo] == [("SL1", True, True)]
    ack = run_sync(v.place_market_close("MC1", "SELL", 0.1))
    assert ack.status == "FILLED" and ack.price == 99.0 and ack.qty == pytest.approx(0.1)
    assert run_sync(v.cancel_algo_order("SL1")) is True
    assert run_sync(v.cancel_algo_order("SL1")) is False
    assert run_sync(v.cancel_order("nope")) is False
