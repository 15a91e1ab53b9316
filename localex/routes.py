"""Binance's USDⓈ-M REST surface as the local exchange serves it: every route's method, path,
handler (on the market, account and pre-flight parts), security, request weight and order-count
cost, as Binance documents them."""
from __future__ import annotations

from typing import Callable

from sim.exchange import SimulatedExchange
from localex.account_api import AccountApi
from localex.base import Route, ServerTime
from localex.market_api import MarketApi
from localex.preflight_api import PreflightApi


def rest_routes(sim: SimulatedExchange, market: MarketApi, account: AccountApi, preflight: PreflightApi,
                server_time: ServerTime) -> list[Route]:
    """The routes, in the order they are registered."""

    def per_symbol(with_sym: int, without: int) -> Callable[[dict[str, str]], int]:
        return lambda p: with_sym if p.get("symbol") else without

    def depth_weight(p: dict[str, str]) -> int:
        n = int(p.get("limit") or 500) if str(p.get("limit") or "500").isdigit() else 500
        return 2 if n <= 50 else 5 if n <= 100 else 10 if n <= 500 else 20

    def klines_weight(p: dict[str, str]) -> int:
        n = int(p.get("limit") or 500)
        return 1 if n < 100 else 2 if n < 500 else 5 if n <= 1000 else 10

    R = Route
    return [
        R("GET", "/api/v3/ping", lambda p: {}),
        R("GET", "/api/v3/time", lambda p: {"serverTime": server_time()}),
        R("GET", "/fapi/v1/ping", lambda p: {}),
        R("GET", "/fapi/v1/time", lambda p: {"serverTime": server_time()}),
        R("GET", "/fapi/v1/exchangeInfo", market.exchange_info),
        R("GET", "/fapi/v1/klines", market.klines, weight=klines_weight),
        R("GET", "/fapi/v1/markPriceKlines", market.mark_price_klines, weight=klines_weight),
        R("GET", "/fapi/v1/ticker/price", market.ticker_price, weight=per_symbol(1, 2)),
        R("GET", "/fapi/v2/ticker/price", market.ticker_price, weight=per_symbol(1, 2)),
        R("GET", "/fapi/v1/premiumIndex", market.premium_index, weight=per_symbol(1, 10)),
        R("GET", "/fapi/v1/ticker/24hr", market.ticker_24hr, weight=per_symbol(1, 40)),
        R("GET", "/fapi/v1/ticker/bookTicker", market.book_ticker, weight=per_symbol(2, 5)),
        R("GET", "/fapi/v1/depth", market.depth, weight=depth_weight),
        R("GET", "/fapi/v1/multiAssetsMargin", lambda p: {"multiAssetsMargin": sim.multi_assets}, "SIGNED", 30),
        R("POST", "/fapi/v1/multiAssetsMargin", account.multi_assets, "SIGNED"),
        R("GET", "/fapi/v1/fundingRate", market.funding_rate_history),
        R("GET", "/fapi/v1/income", account.income, "SIGNED", 30),
        R("GET", "/fapi/v1/leverageBracket", account.leverage_bracket, "SIGNED", 1),
        R("GET", "/fapi/v2/balance", account.balance, "SIGNED", 5),
        R("GET", "/fapi/v3/balance", account.balance, "SIGNED", 5),
        R("GET", "/fapi/v2/account", lambda p: account.account(2), "SIGNED", 5),
        R("GET", "/fapi/v3/account", lambda p: account.account(3), "SIGNED", 5),
        R("GET", "/sapi/v1/account/apiRestrictions", preflight.api_restrictions, "SIGNED", 1),
        R("GET", "/fapi/v2/positionRisk", lambda p: account.position_risk(p, 2), "SIGNED", 5),
        R("GET", "/fapi/v3/positionRisk", lambda p: account.position_risk(p, 3), "SIGNED", 5),
        R("POST", "/fapi/v1/leverage", account.leverage, "SIGNED"),
        R("POST", "/fapi/v1/marginType", account.margin_type, "SIGNED"),
        R("GET", "/fapi/v1/positionSide/dual", lambda p: {"dualSidePosition": sim.dual_side}, "SIGNED", 30),
        R("POST", "/fapi/v1/positionSide/dual", account.position_mode, "SIGNED"),
        R("GET", "/fapi/v1/commissionRate", account.commission, "SIGNED", 20),
        R("POST", "/fapi/v1/order", account.new_order, "SIGNED", 0, (1, 1), True),
        R("POST", "/fapi/v1/order/test", preflight.test_order, "SIGNED", 1),
        R("GET", "/fapi/v1/order", account.get_order, "SIGNED"),
        R("DELETE", "/fapi/v1/order", account.cancel_order, "SIGNED"),
        R("PUT", "/fapi/v1/order", account.modify_order, "SIGNED", 1, (1, 1)),
        R("POST", "/fapi/v1/batchOrders", account.batch_orders, "SIGNED", 5, (5, 1), True),
        R("DELETE", "/fapi/v1/allOpenOrders", account.cancel_all, "SIGNED"),
        R("GET", "/fapi/v1/openOrders", account.open_orders, "SIGNED", per_symbol(1, 40)),
        R("GET", "/fapi/v1/allOrders", account.all_orders, "SIGNED", 5),
        R("GET", "/fapi/v1/userTrades", account.user_trades, "SIGNED", 5),
        R("POST", "/fapi/v1/algoOrder", account.new_algo, "SIGNED", 0, (1, 1), True),
        R("GET", "/fapi/v1/algoOrder", account.get_algo, "SIGNED"),
        R("DELETE", "/fapi/v1/algoOrder", account.cancel_algo, "SIGNED"),
        R("GET", "/fapi/v1/openAlgoOrders", account.open_algos, "SIGNED", per_symbol(1, 40)),
        R("GET", "/fapi/v1/allAlgoOrders", account.all_algos, "SIGNED", 5),
        R("DELETE", "/fapi/v1/algoOpenOrders", account.cancel_all_algos, "SIGNED"),
        R("POST", "/fapi/v1/listenKey", account.listen_key_new, "KEY"),
        R("PUT", "/fapi/v1/listenKey", account.listen_key_keepalive, "KEY"),
        R("DELETE", "/fapi/v1/listenKey", account.listen_key_close, "KEY"),
    ]
