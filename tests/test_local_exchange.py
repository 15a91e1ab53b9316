"""Conformance of local_exchange.py, driven over 127.0.0.1 by the real
python-binance 1.0.37 AsyncClient and BinanceSocketManager (never mocked):
every call the daemon makes, Binance's response shapes and error codes, user
and market streams on the 2026 routes, listenKey life cycle, faults, the
admin API and the command line.

Market data: most tests replay a small CSV with hand-made candles so that
fills happen at known prices on known candles (SPEC §6 path: a candle with
close >= open runs open → low → high → close, otherwise open → high → low →
close).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from binance import BinanceSocketManager
from binance.exceptions import BinanceAPIException
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError

from binance_library import USER_EVENTS, user_socket
from local_exchange import (DEFAULT_API_SECRET, MSG_UNKNOWN, Faults, LocalExchange,
                            assign_data_files, parse_faults)
from market.data import Candles, write_klines_csv
from sim.exchange import DEFAULT_FILTERS

pytestmark = pytest.mark.timeout(30)

SYM = "BTCUSDC"
T0 = 1_700_000_000_000
# open, high, low, close; candle 0 starts at 100.0
CANDLES = [
    (100.0, 100.5, 99.5, 100.0),   # 0: 100 → 99.5 → 100.5 → 100
    (100.0, 102.0, 98.0, 101.0),   # 1: 100 → 98 → 102 → 101   (a buy at 98 fills on leg 1)
    (101.0, 101.5, 95.0, 96.0),    # 2: 101 → 101.5 → 95 → 96  (a sell stop at 96 triggers on leg 2)
] + [(96.0, 96.5, 95.5, 96.0)] * 5
DECIMAL_RE = re.compile(r"^-?\d+(\.\d+)?$")


def write_csv(tmp_path: Path, rows=CANDLES, name: str = "BTCUSDC-1m-test.csv") -> Path:
    n = len(rows)
    o, h, l, c = (list(x) for x in zip(*rows))
    path = tmp_path / name
    write_klines_csv(Candles.from_arrays([T0 + 60_000 * i for i in range(n)], o, h, l, c, [10.0] * n), path)
    return path


@pytest.fixture
async def csv_exchange(tmp_path, start_exchange):
    return await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)])


def bsm_for(client, ex: LocalExchange, **kw) -> BinanceSocketManager:
    bsm = BinanceSocketManager(client, **kw)
    bsm.FSTREAM_URL = ex.ws_url
    return bsm


def quick(sock):
    """python-binance's socket close waits for its read loop, which sits in recv() for up to
    TIMEOUT (10 s) on a quiet socket; a short TIMEOUT keeps the tests fast (nothing else changes)."""
    sock.TIMEOUT = 0.2
    return sock


async def recv_until(sock, pred, timeout: float = 5.0, seen: list | None = None) -> dict:
    """Messages from a python-binance socket until one satisfies pred (all are kept in `seen`)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await asyncio.wait_for(sock.recv(), max(0.01, deadline - time.monotonic()))
        if seen is not None:
            seen.append(msg)
        if pred(msg):
            return msg


async def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def api_error(coro) -> BinanceAPIException:
    with pytest.raises(BinanceAPIException) as ei:
        await coro
    return ei.value


def is_dec(v, decimals: int | None = None) -> bool:
    """A Binance string decimal, optionally with exactly `decimals` decimals."""
    if not isinstance(v, str) or not DECIMAL_RE.match(v):
        return False
    return decimals is None or len(v.partition(".")[2]) == decimals


def limit(client, side: str, price: str, qty: str, cid: str | None = None, **kw):
    params = dict(symbol=SYM, side=side, type="LIMIT", price=price, quantity=qty, timeInForce="GTC", **kw)
    if cid:
        params["newClientOrderId"] = cid
    return client.futures_create_order(**params)


# ---------------------------------------------------------------------------- public market data


async def test_public_endpoints_match_binance_shapes(start_exchange, client_for):
    ex = await start_exchange(synthetic_seed=7)
    client = await client_for(ex)   # create() itself exercised /api/v3/ping and /api/v3/time
    t = (await client.futures_time())["serverTime"]
    assert isinstance(t, int) and abs(t - time.time() * 1000) < 5_000

    info = await client.futures_exchange_info()
    assert {r["rateLimitType"] for r in info["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS"}
    assert {"limit": 2400, "interval": "MINUTE"}.items() <= info["rateLimits"][0].items()
    by_sym = {s["symbol"]: s for s in info["symbols"]}
    assert set(by_sym) == {"BTCUSDC", "ETHUSDC"}
    for sym, s in by_sym.items():
        f = DEFAULT_FILTERS[sym]
        filt = {x["filterType"]: x for x in s["filters"]}
        assert set(filt) == {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL", "PERCENT_PRICE",
                             "MAX_NUM_ORDERS"}
        assert Decimal(filt["PRICE_FILTER"]["tickSize"]) == Decimal(repr(f.tick_size))
        assert Decimal(filt["LOT_SIZE"]["stepSize"]) == Decimal(repr(f.step_size))
        assert Decimal(filt["LOT_SIZE"]["minQty"]) == Decimal(repr(f.min_qty))
        assert Decimal(filt["MIN_NOTIONAL"]["notional"]) == Decimal(repr(f.min_notional))
        assert s["contractType"] == "PERPETUAL" and s["marginAsset"] == "USDC" and s["status"] == "TRADING"
        assert s["pricePrecision"] == f.price_decimals and s["quantityPrecision"] == f.qty_decimals

    tick = await client.futures_symbol_ticker(symbol="BTCUSDC")      # python-binance calls v2
    assert tick["symbol"] == "BTCUSDC" and is_dec(tick["price"], 1) and isinstance(tick["time"], int)
    assert 55_000 < float(tick["price"]) < 65_000
    eth = await client.futures_symbol_ticker(symbol="ETHUSDC")
    assert 2_700 < float(eth["price"]) < 3_300 and is_dec(eth["price"], 2)
    mark = await client.futures_mark_price(symbol="BTCUSDC")
    assert {"markPrice", "indexPrice", "lastFundingRate", "nextFundingTime", "time"} <= set(mark)

    assert await client.futures_klines(symbol="BTCUSDC", interval="1m") == []   # nothing played yet
    await ex.step(3)
    rows = await client.futures_klines(symbol="BTCUSDC", interval="1m", limit=2)
    assert len(rows) == 2 and all(len(r) == 12 for r in rows)
    t_open, o, h, l, c, v, t_close = rows[-1][:7]
    assert isinstance(t_open, int) and t_close == t_open + 59_999 and all(is_dec(x, 1) for x in (o, h, l, c))
    assert float(l) <= min(float(o), float(c)) <= max(float(o), float(c)) <= float(h) and is_dec(v, 3)
    assert rows[-1][4] == (await client.futures_symbol_ticker(symbol="BTCUSDC"))["price"]
    assert len(await client.futures_klines(symbol="BTCUSDC", interval="1m", startTime=t_open)) == 1


async def test_synthetic_market_is_seeded(start_exchange):
    a = await start_exchange(synthetic_seed=3, symbols=("ETHUSDC",))
    b = await start_exchange(synthetic_seed=3)
    c = await start_exchange(synthetic_seed=4, symbols=("ETHUSDC",))
    for ex in (a, b, c):
        await ex.step(5)
    price = lambda ex: ex.sim.books["ETHUSDC"].price  # noqa: E731
    assert price(a) == price(b) != price(c)


# ---------------------------------------------------------------------------- account endpoints


async def test_account_endpoints(csv_exchange, client_for):
    client = await client_for(csv_exchange)
    bal = await client.futures_account_balance()                       # v3
    usdc = next(b for b in bal if b["asset"] == "USDC")
    assert usdc["balance"] == usdc["availableBalance"] == "10000.00000000"
    assert {"accountAlias", "crossWalletBalance", "crossUnPnl", "maxWithdrawAmount", "marginAvailable",
            "updateTime"} <= set(usdc)

    acc = await client.futures_account()                               # v2: every symbol, with leverage
    # Single-asset mode: the top-level totals count USDT only (Account-Information-V2).
    assert acc["totalWalletBalance"] == acc["availableBalance"] == "0.00000000"
    rows = {a["asset"]: a for a in acc["assets"]}
    assert rows["USDC"]["walletBalance"] == rows["USDC"]["availableBalance"] == "10000.00000000"
    assert rows["USDT"]["walletBalance"] == "0.00000000"
    assert [p["symbol"] for p in acc["positions"]] == [SYM] and acc["positions"][0]["leverage"] == "20"
    assert (await client.futures_account(version=3))["positions"] == []  # v3: active positions only

    assert await client.futures_position_information(symbol=SYM) == []  # v3: nothing open, nothing listed
    v2 = await client.futures_position_information(symbol=SYM, version=2)
    assert v2[0]["positionAmt"] == "0.000" and v2[0]["marginType"] == "cross"

    assert await client.futures_change_leverage(symbol=SYM, leverage=5) == {
        "leverage": 5, "maxNotionalValue": "1000000", "symbol": SYM}
    e = await api_error(client.futures_change_margin_type(symbol=SYM, marginType="CROSSED"))
    assert (e.code, e.status_code) == (-4046, 400)
    assert await client.futures_get_position_mode() == {"dualSidePosition": False}
    e = await api_error(client.futures_change_position_mode(dualSidePosition="false"))
    assert e.code == -4059
    rates = await client.futures_commission_rate(symbol=SYM)
    assert rates["symbol"] == SYM and is_dec(rates["makerCommissionRate"]) and is_dec(rates["takerCommissionRate"])

    await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.500")
    pos = await client.futures_position_information(symbol=SYM)
    assert len(pos) == 1 and pos[0]["positionAmt"] == "0.500" and float(pos[0]["entryPrice"]) == 100.0
    assert {"breakEvenPrice", "markPrice", "unRealizedProfit", "liquidationPrice", "notional", "initialMargin",
            "maintMargin", "updateTime"} <= set(pos[0])
    assert float(pos[0]["initialMargin"]) == pytest.approx(100 * 0.5 / 5)
    assert [p["symbol"] for p in (await client.futures_account(version=3))["positions"]] == [SYM]


# ---------------------------------------------------------------------------- orders


async def test_limit_order_lifecycle_and_shapes(csv_exchange, client_for):
    client = await client_for(csv_exchange)
    o = await limit(client, "BUY", "98.0", "0.100", "GM-BTCUSDC-1-E1")
    assert o["status"] == "NEW" and o["clientOrderId"] == "GM-BTCUSDC-1-E1" and isinstance(o["orderId"], int)
    expected = {"orderId", "clientOrderId", "symbol", "status", "type", "origType", "side", "positionSide",
                "timeInForce", "price", "origQty", "executedQty", "cumQty", "stopPrice",
                "reduceOnly", "closePosition", "workingType", "priceProtect", "priceMatch",
                "selfTradePreventionMode", "goodTillDate", "updateTime"}
    assert expected <= set(o) and not {"avgPrice", "cumQuote"} & set(o)     # gone since 2026-07 (change-log)
    assert (o["price"], o["origQty"], o["executedQty"]) == ("98.0", "0.100", "0.000")
    assert all(is_dec(o[k]) for k in ("stopPrice", "cumQty"))
    assert o["reduceOnly"] is False and o["closePosition"] is False and o["positionSide"] == "BOTH"

    by_id = await client.futures_get_order(symbol=SYM, orderId=o["orderId"])
    by_cid = await client.futures_get_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    assert by_id == by_cid and "time" in by_id and "cumQty" not in by_id and is_dec(by_id["avgPrice"])
    opened = await client.futures_get_open_orders(symbol=SYM)
    assert [x["orderId"] for x in opened] == [o["orderId"]]

    e = await api_error(limit(client, "BUY", "97.0", "0.100", "GM-BTCUSDC-1-E1"))
    assert e.code == -4116                                        # duplicate id among open orders
    cancelled = await client.futures_cancel_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    assert cancelled["status"] == "CANCELED" and cancelled["orderId"] == o["orderId"]
    assert (await api_error(client.futures_cancel_order(symbol=SYM, orderId=o["orderId"]))).code == -2011
    assert (await api_error(client.futures_get_order(symbol=SYM, orderId=999))).code == -2013
    assert (await client.futures_get_order(symbol=SYM, orderId=o["orderId"]))["status"] == "CANCELED"
    assert (await limit(client, "BUY", "97.0", "0.100", "GM-BTCUSDC-1-E1"))["status"] == "NEW"  # reusable now

    await limit(client, "BUY", "90.0", "0.100")
    assert (await client.futures_cancel_all_open_orders(symbol=SYM)) == {
        "code": 200, "msg": "The operation of cancel all open order is done."}
    assert await client.futures_get_open_orders(symbol=SYM) == []


async def test_order_rejections(csv_exchange, client_for):
    client = await client_for(csv_exchange)
    assert (await api_error(limit(client, "BUY", "98.05", "0.100"))).code == -1111     # tick 0.1
    assert (await api_error(limit(client, "BUY", "98.0", "0.0001"))).code == -1111     # step 0.001
    e = await api_error(limit(client, "BUY", "98.0", "0.010"))                          # 0.98 < 5 USDC
    assert e.code == -4164 and "notional" in e.message
    assert (await api_error(limit(client, "BUY", "98.0", "5000.000"))).code == -2019   # margin
    assert (await api_error(limit(client, "SELL", "101.0", "0.100", reduceOnly="true"))).code == -2022
    e = await api_error(client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT", quantity="0.1"))
    assert e.code == -1102 and "price" in e.message
    assert (await api_error(client.futures_get_order(symbol="NOPEUSDC", orderId=1))).code == -1121
    # python-binance reroutes STOP_MARKET to /algoOrder; a raw POST /order must get -4120.
    e = await api_error(client._request_futures_api("post", "order", True, data=dict(
        symbol=SYM, side="SELL", type="STOP_MARKET", stopPrice="90.0", closePosition="true")))
    assert e.code == -4120 and "Algo Order" in e.message


async def test_batch_orders_report_errors_per_element(csv_exchange, client_for):
    client = await client_for(csv_exchange)
    out = await client.futures_place_batch_order(batchOrders=[
        {"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "0.100", "price": "97.0", "timeInForce": "GTC",
         "newClientOrderId": "GM-BTCUSDC-2-E1"},
        {"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "0.100", "price": "96.05", "timeInForce": "GTC"},
        {"symbol": SYM, "side": "SELL", "type": "STOP_MARKET", "quantity": "0.100", "stopPrice": "90.0"},
        {"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "0.100", "price": "96.0", "timeInForce": "GTC",
         "newClientOrderId": "GM-BTCUSDC-2-E1"},
    ])
    assert client.response.status == 200 and len(out) == 4
    assert out[0]["status"] == "NEW" and out[0]["clientOrderId"] == "GM-BTCUSDC-2-E1"
    assert [x.get("code") for x in out[1:]] == [-1111, -4120, -4116]
    assert all(isinstance(x["msg"], str) for x in out[1:])
    six = [{"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "0.100", "price": "90.0",
            "timeInForce": "GTC"}] * 6
    assert (await api_error(client.futures_place_batch_order(batchOrders=six))).code == -1130
    assert client.response is not None


# ---------------------------------------------------------------------------- signing, time, rate limits


async def test_authentication_errors(csv_exchange, client_for):
    bad_key = await client_for(csv_exchange, key="not-the-key")
    e = await api_error(bad_key.futures_account_balance())
    assert (e.code, e.status_code, e.message) == (-2015, 401, "Invalid API-key, IP, or permissions for action.")
    bad_secret = await client_for(csv_exchange, secret="not-the-secret")
    e = await api_error(bad_secret.futures_account_balance())
    assert (e.code, e.status_code) == (-1022, 400)

    client = await client_for(csv_exchange)
    csv_exchange.faults.skew_ms = 30_000            # the server clock jumps; the client's offset is stale
    e = await api_error(client.futures_account_balance())
    assert e.code == -1021 and "recvWindow" in e.message
    csv_exchange.faults.skew_ms = -30_000
    assert (await api_error(client.futures_account_balance())).code == -1021
    client.timestamp_offset = (await client.futures_time())["serverTime"] - int(time.time() * 1000)
    assert await client.futures_account_balance()   # resynchronised


async def test_weight_limit_429_then_418_with_retry_after(start_exchange, client_for):
    """Retry-After only as a fault (USD-M does not promise it); without it, see the next test."""
    ex = await start_exchange(symbols=(SYM,), weight_limit=12, ban_after_429s=2, ban_s=120,
                              faults={"retry_after": 1})
    client = await client_for(ex)
    await client.futures_account_balance()                     # weight 5
    assert client.response.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    await client.futures_account_balance()                     # 10
    seen = []
    for _ in range(3):
        e = await api_error(client.futures_account_balance())  # 15 > 12
        seen.append((e.status_code, e.code, e.response.headers.get("Retry-After")))
    assert [s[:2] for s in seen] == [(429, -1003), (429, -1003), (418, -1003)]
    assert 1 <= int(seen[0][2]) <= 60 and seen[2][2] == "120"
    e = await api_error(client.futures_time())                 # banned: every call, even weight 1
    assert e.status_code == 418 and "banned until" in e.message
    stats = ex.stats()
    assert stats["peakWeight1m"] == 10 and stats["responses"]["429"] == 2 and stats["responses"]["418"] == 2


async def test_429_and_418_carry_no_retry_after_unless_asked(start_exchange, client_for):
    ex = await start_exchange(symbols=(SYM,), weight_limit=6, ban_after_429s=1, ban_s=120)
    client = await client_for(ex)
    await client.futures_account_balance()                     # weight 5
    e429 = await api_error(client.futures_account_balance())
    e418 = await api_error(client.futures_account_balance())
    assert (e429.status_code, e418.status_code) == (429, 418)
    assert "Retry-After" not in e429.response.headers and "Retry-After" not in e418.response.headers
    until = int(re.search(r"banned until (\d+)", e418.message).group(1))
    assert until == pytest.approx(ex.server_time() + 120_000, abs=2_000)


async def test_order_count_headers(csv_exchange, client_for):
    client = await client_for(csv_exchange)
    await limit(client, "BUY", "90.0", "0.100")
    h = client.response.headers
    assert (h["X-MBX-ORDER-COUNT-10S"], h["X-MBX-ORDER-COUNT-1M"], h["X-MBX-USED-WEIGHT-1M"]) == ("1", "1", "0")
    await client.futures_place_batch_order(batchOrders=[
        {"symbol": SYM, "side": "BUY", "type": "LIMIT", "quantity": "0.100", "price": "89.0", "timeInForce": "GTC"}])
    h = client.response.headers
    assert (h["X-MBX-ORDER-COUNT-10S"], h["X-MBX-ORDER-COUNT-1M"], h["X-MBX-USED-WEIGHT-1M"]) == ("6", "2", "5")


# ---------------------------------------------------------------------------- user stream: fills


async def test_limit_fill_arrives_on_user_stream(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    async with quick(user_socket(bsm_for(client, ex))) as us:
        o = await limit(client, "BUY", "98.0", "0.100", "GM-BTCUSDC-1-E1")
        new = await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE")
        assert (new["o"]["x"], new["o"]["X"], new["o"]["i"]) == ("NEW", "NEW", o["orderId"])
        await ex.step(1)                                  # candle 0: low 99.5, no fill
        assert ex.sim.position(SYM).qty == 0
        await ex.step(1)                                  # candle 1: 100 → 98 fills on leg 1
        seen: list[dict] = []
        fill = await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["x"] == "TRADE", seen=seen)
        acct = await recv_until(us, lambda m: m.get("e") == "ACCOUNT_UPDATE", seen=seen)
    f = fill["o"]
    assert (f["X"], f["c"], f["L"], f["l"], f["z"], f["m"]) == ("FILLED", "GM-BTCUSDC-1-E1", "98.0", "0.100", "0.100", True)
    assert fill["E"] == fill["T"] == T0 + 60_000 and f["N"] == "USDC" and is_dec(f["n"]) and is_dec(f["rp"])
    a = acct["a"]
    assert a["m"] == "ORDER" and a["P"][0]["pa"] == "0.100" and float(a["P"][0]["ep"]) == 98.0
    assert a["B"][0]["a"] == "USDC" and is_dec(a["B"][0]["wb"])
    trades = await client.futures_account_trades(symbol=SYM)
    assert len(trades) == 1 and trades[0]["price"] == "98.0" and trades[0]["qty"] == "0.100"
    assert trades[0]["orderId"] == o["orderId"] and trades[0]["maker"] is True and trades[0]["buyer"] is True
    assert (await client.futures_get_order(symbol=SYM, orderId=o["orderId"]))["status"] == "FILLED"


async def test_algo_stop_market_close_position_triggers(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100",
                                      newOrderRespType="RESULT")
    assert ex.sim.position(SYM).qty == pytest.approx(0.1)
    e = await api_error(client.futures_create_algo_order(symbol=SYM, side="SELL", type="STOP_MARKET",
                                                         triggerPrice="100.5", closePosition="true"))
    assert e.code == -2021                                 # already beyond the trigger
    algo = await client.futures_create_algo_order(symbol=SYM, side="SELL", type="STOP_MARKET", triggerPrice="96.0",
                                                  closePosition="true", clientAlgoId="GM-BTCUSDC-1-SL3")
    assert (algo["algoStatus"], algo["orderType"], algo["algoType"], algo["triggerPrice"]) == (
        "NEW", "STOP_MARKET", "CONDITIONAL", "96.0")
    assert algo["closePosition"] is True and isinstance(algo["algoId"], int)
    assert [a["clientAlgoId"] for a in await client.futures_get_open_algo_orders(symbol=SYM)] == ["GM-BTCUSDC-1-SL3"]
    assert (await api_error(client.futures_cancel_algo_order(clientAlgoId="nope"))).code == -2011

    async with quick(user_socket(bsm_for(client, ex))) as us:
        await ex.step(3)                                   # candle 2 falls through 96.0
        seen: list[dict] = []
        await recv_until(us, lambda m: m.get("e") == "ALGO_UPDATE" and m["o"]["X"] == "FINISHED", seen=seen)
    kinds = [(m["e"], m["o"]["X"]) if "o" in m else (m["e"], m["a"]["P"][0]["pa"]) for m in seen]
    assert kinds == [("ALGO_UPDATE", "TRIGGERED"), ("ORDER_TRADE_UPDATE", "NEW"), ("ORDER_TRADE_UPDATE", "FILLED"),
                     ("ACCOUNT_UPDATE", "0.000"), ("ALGO_UPDATE", "FINISHED")]
    assert seen[0]["E"] == T0 + 2 * 60_000 + 20_000         # candle 2, leg 2 (101.5 → 95)
    fill = next(m["o"] for m in seen if m["e"] == "ORDER_TRADE_UPDATE" and m["o"]["X"] == "FILLED")
    assert (fill["ot"], fill["L"], fill["cp"], fill["m"]) == ("STOP_MARKET", "96.0", True, False)
    # Linked to the algo order by `ai` (the triggered order's id), never by its client id,
    # which Binance does not promise to be the algo's: here it is one of the exchange's own.
    assert fill["c"] != "GM-BTCUSDC-1-SL3" and seen[0]["o"]["ai"] == str(fill["i"])
    assert seen[0]["o"]["caid"] == "GM-BTCUSDC-1-SL3" and seen[0]["o"]["ia"] is False and seen[0]["o"]["rm"] == ""
    assert ex.sim.position(SYM).qty == 0
    got = await client.futures_get_algo_order(clientAlgoId="GM-BTCUSDC-1-SL3")
    assert got["algoStatus"] == "FINISHED" and got["actualOrderId"] == str(fill["i"])
    assert await client.futures_get_open_algo_orders(symbol=SYM) == []
    assert (await client.futures_position_information(symbol=SYM)) == []


@pytest.mark.parametrize("fault, status", [("stop_reject_next", "REJECTED"), ("stop_expire_next", "EXPIRED")])
async def test_a_stop_whose_trigger_fails_ends_as_algo_update_with_its_reason(csv_exchange, client_for, fault,
                                                                              status):
    """Since 2025-12-15 a stop that fails when it triggers is reported only as ALGO_UPDATE
    REJECTED / EXPIRED with `rm`: no order is placed and the position stays open."""
    ex = csv_exchange
    client = await client_for(ex)
    await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
    await client.futures_create_algo_order(symbol=SYM, side="SELL", type="STOP_MARKET", triggerPrice="96.0",
                                           closePosition="true", clientAlgoId="GM-BTCUSDC-1-SL3")
    ex.faults.update({fault: 1})
    async with quick(user_socket(bsm_for(client, ex))) as us:
        await ex.step(3)                                   # candle 2 falls through 96.0
        seen: list[dict] = []
        ev = await recv_until(us, lambda m: m.get("e") == "ALGO_UPDATE" and m["o"]["X"] not in ("NEW", "TRIGGERING",
                                                                                                  "TRIGGERED"),
                              seen=seen)
    assert ev["o"]["X"] == status and ev["o"]["caid"] == "GM-BTCUSDC-1-SL3" and ev["o"]["rm"]
    assert ev["o"]["ai"] == "" and not [m for m in seen if m["e"] == "ORDER_TRADE_UPDATE"]
    assert ex.sim.position(SYM).qty == pytest.approx(0.1)            # unprotected: the daemon must act
    got = await client.futures_get_algo_order(clientAlgoId="GM-BTCUSDC-1-SL3")
    assert got["algoStatus"] == status and await client.futures_get_open_algo_orders(symbol=SYM) == []


async def test_user_stream_events_allow_list_and_ping(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    key = await client.futures_stream_get_listen_key()
    async with ws_connect(f"{ex.ws_url}private/ws/{key}?events=ACCOUNT_UPDATE") as ws:
        await asyncio.wait_for(await ws.ping(), 2)           # the server answers pings
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["e"] == "ACCOUNT_UPDATE"
    # No `events`: Binance documents no such form; strict (the default), it gets nothing, while
    # a connection beside it that names its events gets them.
    async with ws_connect(f"{ex.ws_url}private/ws?listenKey={key}") as bare, \
            ws_connect(f"{ex.ws_url}private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE") as named:
        await client.futures_create_order(symbol=SYM, side="SELL", type="MARKET", quantity="0.100")
        assert json.loads(await asyncio.wait_for(named.recv(), 5))["e"] == "ORDER_TRADE_UPDATE"
        conns = {c.events: c for c in ex._conns if c.category == "private"}
        assert conns[None].queued == 0 and conns[frozenset({"ORDER_TRADE_UPDATE"})].queued >= 1
        ex.strict_user_stream = False                      # --lenient-user-stream: everything
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        assert json.loads(await asyncio.wait_for(bare.recv(), 5))["e"] == "ORDER_TRADE_UPDATE"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{ex.rest_url}/private/ws?listenKey=unknown") as r:
            assert r.status == 400 and (await r.json())["code"] == -1125


# ---------------------------------------------------------------------------- market streams


async def test_the_daemons_user_socket_names_its_events_in_the_documented_form(csv_exchange, client_for):
    """python-binance's futures_user_socket opens /private/ws?listenKey=K with no `events`; ours
    adds every event the daemon uses, and gets fills on the strict exchange."""
    ex = csv_exchange
    client = await client_for(ex)
    bsm = bsm_for(client, ex)
    async with quick(bsm.futures_user_socket()) as bare, quick(user_socket(bsm)) as us:
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        got = await asyncio.wait_for(us.recv(), 5)
        assert got["e"] in ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE")
        assert bare._path == f"?listenKey={bare._listen_key}"
        assert us._path == f"?listenKey={us._listen_key}&events=" + "/".join(USER_EVENTS)
        conns = [c for c in ex._conns if c.category == "private"]
        assert sorted(c.queued for c in conns)[0] == 0        # the bare one: nothing


async def test_market_streams_on_the_2026_routes(start_exchange, client_for):
    ex = await start_exchange(synthetic_seed=5)
    client = await client_for(ex)
    bsm = bsm_for(client, ex)
    async with quick(bsm.futures_multiplex_socket(["btcusdc@kline_1m", "btcusdc@markPrice@1s",
                                                   "ethusdc@aggTrade"])) as ms, \
            quick(bsm.symbol_ticker_futures_socket("BTCUSDC")) as bt, \
            quick(bsm.kline_futures_socket("BTCUSDC")) as ck:
        await ex.step(1)
        seen: list[dict] = []
        closed = await recv_until(ms, lambda m: m["stream"] == "btcusdc@kline_1m" and m["data"]["k"]["x"], seen=seen)
        book = await recv_until(bt, lambda m: True)
        cont = await recv_until(ck, lambda m: m["k"]["x"])
    streams = {m["stream"] for m in seen}
    assert streams == {"btcusdc@kline_1m", "btcusdc@markPrice@1s", "ethusdc@aggTrade"}
    k = closed["data"]["k"]
    assert closed["data"]["e"] == "kline" and closed["data"]["s"] == "BTCUSDC"
    assert (k["i"], k["T"] - k["t"]) == ("1m", 59_999) and all(is_dec(k[x], 1) for x in "ohlc")
    assert ex.sim.books["BTCUSDC"].filters.fmt_price(ex.sim.books["BTCUSDC"].price) == k["c"]
    assert sum(1 for m in seen if m["stream"] == "btcusdc@kline_1m") == 4   # open, 2 vertices, close
    mark = next(m["data"] for m in seen if m["stream"] == "btcusdc@markPrice@1s")
    assert mark["e"] == "markPriceUpdate" and {"E", "s", "p", "i", "P", "r", "T"} <= set(mark)
    agg = next(m["data"] for m in seen if m["stream"] == "ethusdc@aggTrade")
    assert agg["e"] == "aggTrade" and is_dec(agg["p"], 2) and {"a", "q", "f", "l", "T", "m"} <= set(agg)
    assert book["stream"] == "btcusdc@bookTicker" and book["data"]["e"] == "bookTicker"
    assert float(book["data"]["b"]) < float(book["data"]["a"])
    assert cont["e"] == "continuous_kline" and cont["ps"] == "BTCUSDC" and cont["ct"] == "PERPETUAL"


async def test_raw_market_socket_subscribe_and_periodic_drop(start_exchange):
    ex = await start_exchange(symbols=(SYM,), synthetic_seed=1)
    async with ws_connect(ex.ws_url + "market/ws/btcusdc@aggTrade") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdc@markPrice"], "id": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {"result": None, "id": 1}
        await ex.step(1)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(8)]   # 4 vertices x 2 streams
        assert sorted({m["e"] for m in got}) == ["aggTrade", "markPriceUpdate"] and "stream" not in got[0]
        ex.faults.ws_drop_every = 0.2
        with pytest.raises(ConnectionClosedError):
            while True:
                await asyncio.wait_for(ws.recv(), 3)


async def test_speed_clock_plays_candles_in_real_time(start_exchange):
    """Never ahead of its pace (a busy machine may only make it slower)."""
    t0 = time.monotonic()
    ex = await start_exchange(symbols=(SYM,), synthetic_seed=1, speed=40)
    await wait_for(lambda: ex.series[SYM].cursor >= 12, 10)
    elapsed = time.monotonic() - t0
    played = ex.series[SYM].cursor
    assert elapsed >= (played - 1) / 40 - 0.01, (played, elapsed)   # 40 candles/s at most
    assert ex.sim.now_ms >= T0 + (played - 1) * 60_000


async def test_book_ticker_is_not_routed_on_market(start_exchange, client_for):
    ex = await start_exchange(synthetic_seed=5, symbols=(SYM,))
    client = await client_for(ex)
    async with quick(bsm_for(client, ex).futures_multiplex_socket(["btcusdc@bookTicker", "btcusdc@aggTrade"])) as ms:
        await ex.step(1)
        seen: list[dict] = []
        with pytest.raises(asyncio.TimeoutError):
            await recv_until(ms, lambda m: m["stream"] == "btcusdc@bookTicker", timeout=0.5, seen=seen)
    assert seen and {m["stream"] for m in seen} == {"btcusdc@aggTrade"}


# ---------------------------------------------------------------------------- listenKey life cycle


async def test_listen_key_keepalive_and_close(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    key = await client.futures_stream_get_listen_key()
    assert len(key) == 64 and await client.futures_stream_get_listen_key() == key   # POST while active: same key
    ex._listen_keys[key] -= 1800                                                     # half its life gone
    assert await client.futures_stream_keepalive(key) == {"listenKey": key}          # PUT: back to 60 min
    assert ex.state()["listenKeys"][0]["expiresInS"] > 3590
    await client.futures_stream_close(key)
    assert ex.state()["listenKeys"] == []
    assert (await api_error(client.futures_stream_keepalive(key))).code == -1125
    assert await client.futures_stream_get_listen_key() != key


async def test_listen_key_expiry_sends_listen_key_expired(start_exchange, client_for):
    ex = await start_exchange(symbols=(SYM,), faults={"listen_key_ttl_s": 0.4})
    client = await client_for(ex)
    async with quick(user_socket(bsm_for(client, ex))) as us:   # keepalive every 5 min: too late
        msg = await recv_until(us, lambda m: m.get("e") == "listenKeyExpired", timeout=5)
        # E an integer (Event-User-Data-Stream-Expired, USDⓈ-M; the margin pages show a string)
        assert isinstance(msg["listenKey"], str) and isinstance(msg["E"], int) and msg["E"] > 0
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        with pytest.raises(asyncio.TimeoutError):     # no user events after expiry until a new key is used
            await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE", timeout=0.5)


async def test_python_binance_keepalive_keeps_the_key(start_exchange, client_for):
    ex = await start_exchange(symbols=(SYM,), faults={"listen_key_ttl_s": 0.8})
    client = await client_for(ex)
    async with quick(user_socket(bsm_for(client, ex, user_timeout=0.25))) as us:
        await asyncio.sleep(1.6)                        # twice the TTL: alive only through keepalives
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        seen: list[dict] = []
        await recv_until(us, lambda m: m.get("e") == "ACCOUNT_UPDATE", seen=seen)
    assert not any(m.get("e") == "listenKeyExpired" for m in seen)
    assert ex.requests["POST /fapi/v1/listenKey"] >= 3 and ex.requests["PUT /fapi/v1/listenKey"] >= 2


async def test_admin_early_expiry(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    async with quick(user_socket(bsm_for(client, ex))) as us:
        await wait_for(lambda: ex.stats()["websockets"]["user"] == 1)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{ex.rest_url}/_sim/listen_key/expire") as r:
                assert (await r.json()) == {"expired": 1}
        await recv_until(us, lambda m: m.get("e") == "listenKeyExpired")
    assert (await api_error(client.futures_stream_keepalive(us._listen_key))).code == -1125


# ---------------------------------------------------------------------------- faults


async def test_websocket_drop_python_binance_reconnects(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    async with quick(user_socket(bsm_for(client, ex))) as us:
        await wait_for(lambda: ex.stats()["websockets"]["user"] == 1)
        assert ex.drop_websockets("user") == 1
        seen: list[dict] = []
        await recv_until(us, lambda m: m.get("type") == "BinanceWebsocketClosed", seen=seen)
        assert seen[0]["e"] == "error"
        await wait_for(lambda: ex.stats()["websockets"]["user"] == 1, timeout=8)   # reconnect waits 1-2 s
        await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
        fill = await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["x"] == "TRADE")
    assert fill["o"]["X"] == "FILLED"


async def test_unknown_503_with_and_without_the_order(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    ex.faults.update({"unknown_next": 1, "unknown_placed": "true"})
    e = await api_error(limit(client, "BUY", "97.0", "0.100", "GM-BTCUSDC-3-E1"))
    assert (e.status_code, e.message) == (503, MSG_UNKNOWN)
    found = await client.futures_get_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-3-E1")
    assert found["status"] == "NEW"                        # placed behind the 503: reconcile finds it
    ex.faults.update({"unknown_next": 1, "unknown_placed": "false"})
    e = await api_error(limit(client, "BUY", "96.0", "0.100", "GM-BTCUSDC-3-E2"))
    assert e.status_code == 503
    assert (await api_error(client.futures_get_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-3-E2"))).code == -2013


async def test_injected_rejections_and_failures(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    ex.faults.update({"margin_next": 1, "reduce_only_next": 1})
    e = await api_error(limit(client, "BUY", "97.0", "0.100"))
    assert (e.code, e.message) == (-2019, "Margin is insufficient.")
    assert (await limit(client, "BUY", "97.0", "0.100"))["status"] == "NEW"   # only the next one
    await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.100")
    e = await api_error(limit(client, "SELL", "101.0", "0.100", reduceOnly="true"))
    assert (e.code, e.message) == (-2022, "ReduceOnly Order is rejected.")
    assert (await limit(client, "SELL", "101.0", "0.100", reduceOnly="true"))["reduceOnly"] is True

    ex.faults.http_5xx_rate = 1.0
    e = await api_error(client.futures_account_balance())
    assert (e.status_code, e.message) == (503, "Service Unavailable.")
    ex.faults.http_5xx_rate = 0.0
    ex.faults.update({"http_429_next": 1, "delay_ms": 120})
    assert (await api_error(client.futures_time())).status_code == 429
    t = time.monotonic()
    await client.futures_time()
    assert time.monotonic() - t >= 0.12


def test_fault_spec_parsing():
    assert parse_faults("ws_drop_every=30, http_5xx_rate=0.05,delay_ms=50") == {
        "ws_drop_every": "30", "http_5xx_rate": "0.05", "delay_ms": "50"}
    f = Faults()
    f.update(parse_faults("unknown_next=2,unknown_placed=false,skew_ms=-1500"))
    assert (f.unknown_next, f.unknown_placed, f.skew_ms) == (2, 0.0, -1500)
    with pytest.raises(ValueError):
        parse_faults("no_such_fault=1")
    with pytest.raises(ValueError):
        parse_faults("delay_ms")


def test_data_files_are_assigned_by_name():
    got = assign_data_files(["BTCUSDC", "ETHUSDC"], ["x/ETHUSDC-1m.csv", "x/NEARUSDT-1m.csv"])
    assert got == {"ETHUSDC": [Path("x/ETHUSDC-1m.csv")], "BTCUSDC": [Path("x/NEARUSDT-1m.csv")]}


# ---------------------------------------------------------------------------- admin API and lockstep


async def test_admin_api_state_step_price_and_stats(csv_exchange, client_for):
    ex = csv_exchange
    client = await client_for(ex)
    await client.futures_account_balance()
    await limit(client, "BUY", "98.0", "0.100", "GM-BTCUSDC-1-E1")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{ex.rest_url}/_sim/step?candles=1") as r:
            assert (await r.json())["played"] == 1
        async with s.post(f"{ex.rest_url}/_sim/price", data={"symbol": SYM, "price": "97.5"}) as r:
            assert (await r.json())["prices"] == {SYM: "97.5"}       # moved along a leg: the buy at 98 filled
        async with s.post(f"{ex.rest_url}/_sim/faults?delay_ms=0&skew_ms=5") as r:
            assert (await r.json())["skew_ms"] == 5
        async with s.get(f"{ex.rest_url}/_sim/state") as r:
            state = await r.json()
        async with s.get(f"{ex.rest_url}/_sim/stats") as r:
            stats = await r.json()
    assert state["symbols"][SYM]["position"]["positionAmt"] == "0.100" and state["symbols"][SYM]["candleIndex"] == 1
    assert [f["clientOrderId"] for f in state["fills"]] == ["GM-BTCUSDC-1-E1"] and state["openOrders"] == []
    assert state["orders"][0]["status"] == "FILLED" and "balance" in state
    assert DEFAULT_API_SECRET not in json.dumps(state)
    assert stats["requests"]["POST /fapi/v1/order"] == 1 and stats["peakWeight1m"] == 5
    assert "GET /_sim/state" not in stats["requests"]


async def test_lockstep_lets_the_client_react_inside_the_leg(tmp_path, start_exchange, client_for):
    """A reacting client's take-profit placed after the fill at 98 is live on the rest of the candle."""
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)], lockstep=True, quiet_ms=60)
    client = await client_for(ex)
    placed = asyncio.Event()

    async def react(us):
        msg = await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["X"] == "FILLED")
        assert msg["o"]["L"] == "98.0"
        await limit(client, "SELL", "99.5", "0.100", "GM-BTCUSDC-1-TP2", reduceOnly="true")
        placed.set()

    async with quick(user_socket(bsm_for(client, ex))) as us:
        await limit(client, "BUY", "98.0", "0.100", "GM-BTCUSDC-1-E1")
        reactor = asyncio.create_task(react(us))
        await ex.step(2)                 # candle 1: 100 → 98 (fill) → 102 (the TP at 99.5 fills) → 101
        await asyncio.wait_for(reactor, 5)
    fills = [(t.client_id, t.price, t.time) for t in ex.sim.trades]
    assert fills == [("GM-BTCUSDC-1-E1", 98.0, T0 + 60_000), ("GM-BTCUSDC-1-TP2", 99.5, T0 + 60_000 + 20_000)]
    assert ex.sim.position(SYM).qty == 0


# ---------------------------------------------------------------------------- faults on the market's clock


async def test_a_fault_plan_fires_at_its_simulated_minute_not_at_a_wall_clock_second(tmp_path, start_exchange,
                                                                                    client_for):
    """The plan is read off the candles played: however long the test waits between steps,
    the 429 comes with candle 3 and the ban with candle 5, never before."""
    from local_exchange import parse_plan_entry
    plan = [parse_plan_entry({"at_minute": 3, "http_429_next": 1}),
            parse_plan_entry({"at_minute": 5, "ban_s": 2, "ws_drop": 1})]
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)], fault_plan=plan)
    client = await client_for(ex)
    await ex.step(3)                                  # candles 0..2: nothing due yet
    await asyncio.sleep(0.3)                          # wall time passing changes nothing
    await client.futures_account_balance()
    assert ex.fault_log == []
    await ex.step(1)                                  # candle 3 begins: the 429 is armed
    assert [e["minute"] for e in ex.fault_log] == [3]
    e = await api_error(client.futures_account_balance())
    assert e.status_code == 429 and e.code == -1003
    await client.futures_account_balance()            # one only
    await ex.step(1)
    assert len(ex.fault_log) == 1
    await ex.step(1)                                  # candle 5: the ban and a drop
    assert ex.fault_log[1]["minute"] == 5 and ex.fault_log[1]["ban_s"] == 2
    e = await api_error(client.futures_account_balance())
    # No Retry-After (USD-M does not promise one): the -1003 message names the ban's end.
    assert e.status_code == 418 and "Retry-After" not in e.response.headers and "banned until" in e.message


async def test_drops_every_n_simulated_minutes(tmp_path, start_exchange):
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)], faults={"ws_drop_every_min": 2})
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{ex.ws_url}market/ws/btcusdc@kline_1m") as ws:
            await wait_for(lambda: len(ex._conns) == 1)
            await ex.step(2)                          # minutes 0 and 1: no drop
            assert len(ex._conns) == 1
            await ex.step(1)                          # minute 2: dropped
            msg = await ws.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)


async def test_a_held_clock_starts_with_the_streams_and_stands_still_through_a_ban(tmp_path, start_exchange,
                                                                                   client_for):
    rows = [(100.0, 100.5, 99.5, 100.0)] * 400
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path, rows)], speed=200.0, hold_clock=True,
                              pause_on_retry_after=True)
    client = await client_for(ex)
    await asyncio.sleep(0.3)
    assert ex.series[SYM].cursor == 0 and not ex.clock_started       # nobody listens yet
    bsm = bsm_for(client, ex)
    async with quick(user_socket(bsm)), quick(bsm.futures_multiplex_socket(["btcusdc@kline_1m"])):
        await wait_for(lambda: ex.clock_started, 5)
        await wait_for(lambda: ex.series[SYM].cursor >= 20, 5)
        ex.ban(1.0)
        at_ban = ex.series[SYM].cursor
        state = ex._ips[("127.0.0.1", "fapi")]
        await asyncio.sleep(max(0.0, state.ban_until - time.monotonic() - 0.05))
        assert ex.series[SYM].cursor - at_ban <= 1   # a vertex under way may finish; no more
        await wait_for(lambda: ex.series[SYM].cursor >= at_ban + 20, 5)   # and on it goes


# ---------------------------------------------------------------------------- command line


async def test_cli_starts_prints_urls_and_stops_on_sigterm(tmp_path):
    secret = "cli-secret-do-not-print"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve().parents[1] / "local_exchange.py"), "--port", "0",
        "--synthetic", "3", "--api-key", "cli-key", "--api-secret", secret, "--faults", "delay_ms=1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = []
        while not any(line.startswith("WebSocket") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 15)
            assert line, (await proc.stderr.read()).decode()
            lines.append(line.decode().strip())
        rest = next(line.split()[1] for line in lines if line.startswith("REST"))
        ws = next(line.split()[1] for line in lines if line.startswith("WebSocket"))
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", rest) and ws == rest.replace("http", "ws") + "/"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{rest}/fapi/v1/time") as r:
                assert "serverTime" in await r.json()
            async with s.get(f"{rest}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "cli-key"}) as r:
                assert r.status == 404
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        text = "\n".join(lines) + out.decode() + err.decode()
        assert secret not in text and "cli-key" in text and "FUTURES_URL" in text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
