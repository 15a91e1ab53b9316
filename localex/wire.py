"""Binance's wire format in one place: what the venues send and what the daemon reads.

Encoders turn the engine's objects into Binance's JSON (decimals as strings, formatted from
the integer tick / step grid): the user-stream events (ORDER_TRADE_UPDATE, ALGO_UPDATE,
ACCOUNT_UPDATE), the REST order / algo order / trade objects, klines and the exchange
filters.  Decoders parse what a live stream carries (ORDER_TRADE_UPDATE → `OrderUpdate`).
"""
from __future__ import annotations

from typing import Any

from exchange_api import FILL_EXEC_TYPES, OrderStatus, OrderUpdate, Side, SymbolFilters
from sim.exchange import AlgoUpdate, Event, SimAlgoOrder, SimOrder, SimTrade
from sim.model import ConfigUpdate
from market.data import MINUTE_MS


# ---------------------------------------------------------------------------- user-stream events


def order_update_to_binance(u: OrderUpdate, f: SymbolFilters) -> dict[str, Any]:
    """ORDER_TRADE_UPDATE as Binance streams it: decimals as strings."""
    o: dict[str, Any] = {
        "s": u.symbol, "c": u.client_id, "S": u.side, "o": u.order_type,
        "f": "GTC", "q": f.fmt_qty(u.orig_qty),
        "p": f.fmt_price(u.price), "ap": f"{u.avg_price:.8f}".rstrip("0").rstrip(".") or "0",
        "sp": f.fmt_price(u.stop_price), "x": u.exec_type, "X": u.status, "i": u.order_id,
        "l": f.fmt_qty(u.last_qty), "z": f.fmt_qty(u.cum_qty), "L": f.fmt_price(u.last_price),
        "T": u.trade_time, "t": u.trade_id, "b": "0", "a": "0", "m": u.is_maker,
        "R": u.reduce_only, "wt": "CONTRACT_PRICE", "ot": u.order_type, "ps": "BOTH",
        "cp": u.close_position, "rp": f"{u.realized_pnl:.8f}", "pP": False, "si": 0, "ss": 0,
        "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
    }
    if u.exec_type in FILL_EXEC_TYPES:
        o["n"] = f"{u.commission:.8f}"
        o["N"] = u.commission_asset
    return {"e": "ORDER_TRADE_UPDATE", "E": u.event_time, "T": u.trade_time or u.event_time, "o": o}


def to_binance_event(ev: Event, filters: SymbolFilters) -> dict[str, Any]:
    """The user-stream payload of a simulator event, as Binance sends it."""
    if isinstance(ev, OrderUpdate):
        return order_update_to_binance(ev, filters)
    if isinstance(ev, ConfigUpdate):
        return {"e": "ACCOUNT_CONFIG_UPDATE", "E": ev.event_time, "T": ev.event_time,
                "ac": {"s": ev.symbol, "l": ev.leverage}}
    if isinstance(ev, AlgoUpdate):
        f = filters
        return {"e": "ALGO_UPDATE", "T": ev.event_time, "E": ev.event_time, "o": {
            "caid": ev.client_algo_id, "aid": ev.algo_id, "at": "CONDITIONAL", "o": ev.order_type,
            "s": ev.symbol, "S": ev.side, "ps": "BOTH", "f": "GTC", "q": f.fmt_qty(ev.qty),
            "X": ev.status, "ai": str(ev.actual_order_id or ""), "ap": "0.00000", "aq": "0.000",
            "act": "0", "tp": f.fmt_price(ev.trigger_price), "p": "0.00", "V": "EXPIRE_MAKER",
            "wt": "CONTRACT_PRICE", "pm": "NONE", "cp": ev.close_position, "pP": False,
            "R": ev.close_position, "tt": 0, "gtd": 0, "rm": ev.reason,
            # `ia` (change-log 2026-08-07 / -21): a trailing stop's activation flag; false for
            # every other conditional order.
            "ia": False}}
    f = filters
    if ev.reason == "FUNDING_FEE":
        # Cross margin: the balance only, and since 2026-08 the symbol settled (`a.S`).
        return {"e": "ACCOUNT_UPDATE", "E": ev.event_time, "T": ev.event_time, "a": {
            "m": ev.reason, "S": ev.symbol,
            "B": [{"a": ev.asset, "wb": f"{ev.wallet:.8f}", "cw": f"{ev.wallet:.8f}", "bc": "0"}], "P": []}}
    return {"e": "ACCOUNT_UPDATE", "E": ev.event_time, "T": ev.event_time, "a": {
        "m": ev.reason,
        "B": [{"a": ev.asset, "wb": f"{ev.wallet:.8f}", "cw": f"{ev.wallet:.8f}", "bc": "0"}],
        "P": [{"s": ev.symbol, "pa": f.fmt_qty(ev.position_qty), "ep": f"{ev.entry_price:.8f}",
               "bep": f"{ev.entry_price:.8f}", "cr": f"{ev.realized_cum:.8f}",
               "up": f"{ev.unrealized:.8f}", "mt": "cross", "iw": "0", "ps": "BOTH"}]}}


# ---------------------------------------------------------------------------- REST objects


def f8(x: float) -> str:
    return f"{x + 0.0:.8f}"


def fmt_rate(x: float) -> str:
    return (f"{x:.8f}".rstrip("0").rstrip(".")) or "0"


def fmt_avg(f: SymbolFilters, x: float) -> str:
    s = f.fmt_price(x)
    return s if abs(float(s) - x) < 1e-9 else f"{x:.8f}"


def order_json(o: SimOrder, f: SymbolFilters, *, query: bool = False, ack: bool = False) -> dict[str, Any]:
    """Binance's order object; `query` adds `time` (GET), otherwise `cumQty` (POST / DELETE).

    `ack` renders the order as accepted (newOrderRespType=ACK): Binance answers
    before matching, so a marketable order still reads NEW with nothing executed.
    """
    executed, quote, status = (0.0, 0.0, OrderStatus.NEW) if ack else (o.executed_qty, o.cum_quote, o.status)
    d: dict[str, Any] = {
        "orderId": o.order_id, "symbol": o.symbol, "status": status, "clientOrderId": o.client_id,
        "price": f.fmt_price(o.price), "avgPrice": fmt_avg(f, quote / executed if executed else 0.0),
        "origQty": f.fmt_qty(o.qty), "executedQty": f.fmt_qty(executed),
        "cumQuote": f"{quote:.{max(5, f.price_decimals + f.qty_decimals)}f}",
        "timeInForce": o.time_in_force, "type": o.type, "reduceOnly": o.reduce_only,
        "closePosition": o.close_position, "side": o.side, "positionSide": "BOTH",
        "stopPrice": f.fmt_price(o.stop_price), "workingType": "CONTRACT_PRICE", "priceProtect": False,
        "origType": o.orig_type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0, "updateTime": o.time if ack else o.update_time,
    }
    if query:
        d["time"] = o.time
    else:
        # Change-log (connector 14.0.0, 2026-07-15): order, batch and cancel answers no longer
        # carry avgPrice / cumQuote; GET /fapi/v1/order and the stream keep them.
        del d["avgPrice"], d["cumQuote"]
        d["cumQty"] = f.fmt_qty(executed)
    return d


def algo_json(a: SimAlgoOrder, f: SymbolFilters, *, query: bool = False) -> dict[str, Any]:
    """Binance's algo (conditional) order object; `query` adds actualOrderId / actualPrice."""
    d: dict[str, Any] = {
        "algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "algoType": "CONDITIONAL",
        "orderType": a.order_type, "symbol": a.symbol, "side": a.side, "positionSide": "BOTH",
        "timeInForce": a.time_in_force, "quantity": f.fmt_qty(a.qty), "algoStatus": a.status,
        "triggerPrice": f.fmt_price(a.trigger_price), "price": f.fmt_price(a.price), "icebergQuantity": None,
        "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": a.working_type, "priceMatch": "NONE",
        "closePosition": a.close_position, "priceProtect": False, "reduceOnly": a.reduce_only,
        "activatePrice": "", "callbackRate": "", "createTime": a.create_time, "updateTime": a.update_time,
        "triggerTime": a.trigger_time, "goodTillDate": 0,
    }
    if query:
        d["actualOrderId"] = str(a.actual_order_id) if a.actual_order_id else ""
        d["actualPrice"] = fmt_avg(f, a.actual_price)
    return d


def trade_json(t: SimTrade, f: SymbolFilters, asset: str) -> dict[str, Any]:
    return {
        "buyer": t.side == Side.BUY, "commission": f8(t.commission), "commissionAsset": asset, "id": t.id,
        "maker": t.maker, "orderId": t.order_id, "price": f.fmt_price(t.price), "qty": f.fmt_qty(t.qty),
        "quoteQty": f"{t.price * t.qty:.{f.price_decimals + f.qty_decimals}f}", "realizedPnl": f8(t.realized_pnl),
        "side": t.side, "positionSide": "BOTH", "symbol": t.symbol, "time": t.time, "marginAsset": asset,
    }


def kline_row(f: SymbolFilters, t: int, o: float, h: float, l: float, c: float, v: float) -> list[Any]:
    q = v * (o + h + l + c) / 4
    # Replayed data may be finer than the symbol's tick: publish it exactly, as the backtest sees it.
    return [t, fmt_avg(f, o), fmt_avg(f, h), fmt_avg(f, l), fmt_avg(f, c), f.fmt_qty(v), t + MINUTE_MS - 1,
            f"{q:.4f}", max(1, int(v * 10)), f.fmt_qty(v / 2), f"{q / 2:.4f}", "0"]


def exchange_filters_json(f: SymbolFilters) -> list[dict[str, Any]]:
    return [
        {"filterType": "PRICE_FILTER", "minPrice": f.fmt_price(f.tick_size), "maxPrice": f.fmt_price(10_000_000),
         "tickSize": f.fmt_price(f.tick_size)},
        {"filterType": "LOT_SIZE", "minQty": f.fmt_qty(f.min_qty), "maxQty": f.fmt_qty(1000),
         "stepSize": f.fmt_qty(f.step_size)},
        {"filterType": "MARKET_LOT_SIZE", "minQty": f.fmt_qty(f.min_qty), "maxQty": f.fmt_qty(120),
         "stepSize": f.fmt_qty(f.step_size)},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MIN_NOTIONAL", "notional": fmt_rate(f.min_notional)},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
         "multiplierDecimal": "4"},
    ]


def symbol_info(f: SymbolFilters, asset: str) -> dict[str, Any]:
    base = f.symbol[: -len(asset)] if f.symbol.endswith(asset) else f.symbol[:-4]
    return {
        "symbol": f.symbol, "pair": f.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000", "baseAsset": base, "quoteAsset": asset, "marginAsset": asset,
        "pricePrecision": f.price_decimals, "quantityPrecision": f.qty_decimals, "baseAssetPrecision": 8,
        "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
        "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000, "filters": exchange_filters_json(f),
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"], "permissionSet": ["GRID", "COPY"],
    }
