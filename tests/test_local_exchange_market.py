"""The market-data surface a general Binance client asks for (issue 10, part 1), through the
real python-binance client: 24 h tickers, book ticker, depth, multi-assets mode, the
miniTicker / ticker / !miniTicker@arr / depth5 streams, and unknown paths counted."""
from __future__ import annotations

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException

from test_local_exchange import CANDLES, SYM, T0, bsm_for, is_dec, quick, recv_until, write_csv

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def two_symbols(tmp_path, start_exchange):
    return await start_exchange(data={SYM: [write_csv(tmp_path)]}, synthetic_seed=3)


async def test_ticker_24hr_book_ticker_depth_and_multi_assets(two_symbols, client_for):
    ex = two_symbols
    client = await client_for(ex)
    await ex.step(3)                                   # candles 0-2 played
    t = await client.futures_ticker(symbol=SYM)
    assert set(t) >= {"symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "lastPrice", "lastQty",
                      "openPrice", "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime",
                      "firstId", "lastId", "count"}
    # The 24 h window holds candles 0-2: open 100.0, high 102.0, low 95.0, last 96.0.
    assert (t["openPrice"], t["highPrice"], t["lowPrice"], t["lastPrice"]) == ("100.0", "102.0", "95.0", "96.0")
    assert t["priceChange"] == "-4.0" and float(t["priceChangePercent"]) == pytest.approx(-4.0)
    assert t["openTime"] == T0 and float(t["volume"]) == pytest.approx(30.0)
    assert all(is_dec(t[k]) for k in ("weightedAvgPrice", "volume", "quoteVolume"))
    every = await client.futures_ticker()
    assert sorted(x["symbol"] for x in every) == ["BTCUSDC", "ETHUSDC"]

    bt = await client.futures_orderbook_ticker(symbol=SYM)
    assert (bt["bidPrice"], bt["askPrice"]) == ("96.0", "96.1") and is_dec(bt["bidQty"])
    assert len(await client.futures_orderbook_ticker()) == 2

    book = await client.futures_order_book(symbol=SYM, limit=5)
    assert [b[0] for b in book["bids"]] == ["96.0", "95.9", "95.8", "95.7", "95.6"]
    assert [a[0] for a in book["asks"]] == ["96.1", "96.2", "96.3", "96.4", "96.5"]
    assert isinstance(book["lastUpdateId"], int) and book["T"] == ex.sim.now_ms
    assert len((await client.futures_order_book(symbol=SYM))["bids"]) == 500      # the default limit
    with pytest.raises(BinanceAPIException) as e:
        await client.futures_order_book(symbol=SYM, limit=7)
    assert e.value.code == -1130

    assert await client.futures_get_multi_assets_mode() == {"multiAssetsMargin": False}
    v3 = await client.futures_account_balance()                  # python-binance reads /fapi/v3/balance
    assert any(b["asset"] == "USDC" and float(b["balance"]) == pytest.approx(ex.sim.wallet) for b in v3)
    cr = await client.futures_commission_rate(symbol=SYM)
    assert cr["symbol"] == SYM and float(cr["makerCommissionRate"]) == ex.sim.maker_fee
    assert float(cr["takerCommissionRate"]) == ex.sim.taker_fee


async def test_ticker_streams_and_depth5(two_symbols, client_for):
    ex = two_symbols
    client = await client_for(ex)
    bsm = bsm_for(client, ex)
    names = [f"{SYM.lower()}@miniTicker", f"{SYM.lower()}@ticker", "!miniTicker@arr"]
    async with quick(bsm.futures_multiplex_socket(names)) as ms, \
            quick(bsm.futures_depth_socket(SYM, depth="5")) as ds:
        await ex.step(2)
        seen: list[dict] = []
        await recv_until(ms, lambda m: m["stream"] == "!miniTicker@arr", seen=seen)
        await recv_until(ms, lambda m: m["stream"] == f"{SYM.lower()}@ticker", seen=seen)
        depth = await recv_until(ds, lambda m: True)
    by = {m["stream"]: m["data"] for m in seen}
    mini = by[f"{SYM.lower()}@miniTicker"]
    assert mini["e"] == "24hrMiniTicker" and set(mini) >= set("Esochlvq") and mini["s"] == SYM
    tick = by[f"{SYM.lower()}@ticker"]
    assert tick["e"] == "24hrTicker" and set(tick) >= {"p", "P", "w", "c", "o", "h", "l", "v", "q", "O", "C", "n"}
    arr = by["!miniTicker@arr"]
    assert sorted(x["s"] for x in arr) == ["BTCUSDC", "ETHUSDC"] and all(x["e"] == "24hrMiniTicker" for x in arr)
    d = depth["data"] if "data" in depth else depth
    assert d["e"] == "depthUpdate" and len(d["b"]) == 5 and len(d["a"]) == 5
    assert float(d["a"][0][0]) - float(d["b"][0][0]) == pytest.approx(0.1)


async def test_unknown_paths_answer_404_and_are_counted(two_symbols):
    ex = two_symbols
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.get(f"{ex.rest_url}/fapi/v1/doesNotExist") as r:
                assert r.status == 404 and (await r.json())["code"] == -5000
    st = ex.stats()
    assert st["notFound"] == {"GET /fapi/v1/doesNotExist": 2} and st["responses"]["404"] >= 2


def test_the_hand_made_candles_are_the_ones_asserted():
    assert CANDLES[0][0] == 100.0 and max(c[1] for c in CANDLES[:3]) == 102.0 and CANDLES[2][3] == 96.0


async def test_private_stream_route_subscribes_listen_keys_in_the_combined_envelope(tmp_path, start_exchange,
                                                                                      client_for):
    """A client that takes user data only from /private/stream: it SUBSCRIBEs its listenKey and
    reads events as {"stream": <listenKey>, "data": {...}}."""
    import asyncio
    import json

    from websockets.asyncio.client import connect as ws_connect
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)])
    client = await client_for(ex)
    key = await client.futures_stream_get_listen_key()
    async with ws_connect(f"{ex.ws_url}private/stream?events=ORDER_TRADE_UPDATE") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [key], "id": 1}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert json.loads(await ws.recv()) == {"result": [key], "id": 2}
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["not-a-key"], "id": 3}))
        assert json.loads(await ws.recv())["code"] == -1125
        await client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT", price="98.0", quantity="0.100",
                                          timeInForce="GTC", newClientOrderId="GM-BTCUSDC-1-E1")
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert msg["stream"] == key and msg["data"]["e"] == "ORDER_TRADE_UPDATE"
        assert msg["data"]["o"]["c"] == "GM-BTCUSDC-1-E1" and msg["data"]["o"]["x"] == "NEW"
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": [key], "id": 4}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 4}
        await client.futures_cancel_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)            # unsubscribed: nothing more
    # The key given on the URL works the same, and an unknown one is refused at the handshake.
    async with ws_connect(f"{ex.ws_url}private/stream?listenKey={key}&events=ORDER_TRADE_UPDATE") as ws:
        await client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT", price="97.0", quantity="0.100",
                                          timeInForce="GTC", newClientOrderId="GM-BTCUSDC-1-E2")
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert msg["stream"] == key and msg["data"]["o"]["c"] == "GM-BTCUSDC-1-E2"
    from websockets.exceptions import InvalidStatus
    with pytest.raises(InvalidStatus):
        async with ws_connect(f"{ex.ws_url}private/stream?listenKey=nope"):
            pass


async def test_websocket_api_through_python_binance(tmp_path, start_exchange, client_for):
    """/ws-fapi/v1 with python-binance's own WebSocket API client: order.place / status / modify /
    cancel, account.position, account.balance, and errors in Binance's envelope."""
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)])
    client = await client_for(ex)
    placed = await client.ws_futures_create_order(symbol=SYM, side="BUY", type="LIMIT", price="98.0",
                                                  quantity="0.100", timeInForce="GTC",
                                                  newClientOrderId="GM-BTCUSDC-1-E1")
    assert placed["clientOrderId"] == "GM-BTCUSDC-1-E1" and placed["price"] == "98.0"
    assert [o.client_id for o in ex.sim.open_orders(SYM)] == ["GM-BTCUSDC-1-E1"]
    got = await client.ws_futures_get_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    assert got["status"] == "NEW" and got["orderId"] == placed["orderId"]
    moved = await client.ws_futures_edit_order(symbol=SYM, orderId=placed["orderId"], side="BUY", price="97.5",
                                               quantity="0.200")
    assert (moved["price"], moved["origQty"], moved["orderId"]) == ("97.5", "0.200", placed["orderId"])
    pos = await client.ws_futures_account_position(symbol=SYM)
    assert isinstance(pos, list)
    gone = await client.ws_futures_cancel_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    assert gone["status"] == "CANCELED" and ex.sim.open_orders(SYM) == []
    with pytest.raises(BinanceAPIException) as e:
        await client.ws_futures_cancel_order(symbol=SYM, origClientOrderId="GM-BTCUSDC-1-E1")
    assert e.value.code == -2011
    st = ex.stats()
    assert st["requests"]["WS order.place"] == 1 and st["orderCount10s"] >= 2      # place + modify
    await client.close_connection()


async def test_websocket_api_envelope_auth_session_and_user_data_stream(tmp_path, start_exchange):
    """The envelope by hand, as any client sends it: signatures, rateLimits, session.logon's
    answer for an HMAC key, userDataStream.start / ping / stop, an unknown method."""
    import hashlib
    import hmac
    import json
    import time

    from websockets.asyncio.client import connect as ws_connect

    from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET
    ex = await start_exchange(symbols=(SYM,), data=[write_csv(tmp_path)])

    def signed(params: dict) -> dict:
        params = {**params, "apiKey": DEFAULT_API_KEY, "timestamp": int(time.time() * 1000)}
        payload = "&".join(f"{k}={('true' if v else 'false') if isinstance(v, bool) else v}"
                           for k, v in sorted(params.items()))
        return {**params, "signature": hmac.new(DEFAULT_API_SECRET.encode(), payload.encode(),
                                                hashlib.sha256).hexdigest()}

    async with ws_connect(f"{ex.ws_url}ws-fapi/v1") as ws:
        async def call(method: str, params: dict, rid: str = "r1") -> dict:
            await ws.send(json.dumps({"id": rid, "method": method, "params": params}))
            return json.loads(await ws.recv())

        r = await call("order.place", signed({"symbol": SYM, "side": "BUY", "type": "LIMIT", "price": "98.0",
                                              "quantity": "0.100", "timeInForce": "GTC", "reduceOnly": False}))
        assert r["id"] == "r1" and r["status"] == 200 and r["result"]["status"] == "NEW"
        kinds = {(x["rateLimitType"], x["interval"]) for x in r["rateLimits"]}
        assert kinds == {("REQUEST_WEIGHT", "MINUTE"), ("ORDERS", "SECOND"), ("ORDERS", "MINUTE")}
        bad = signed({"symbol": SYM, "orderId": r["result"]["orderId"]})
        bad["signature"] = "0" * 64
        r = await call("order.status", bad, "r2")
        assert (r["id"], r["status"], r["error"]["code"]) == ("r2", 400, -1022)
        r = await call("order.status", {**signed({"symbol": SYM, "orderId": 1}), "apiKey": "wrong"})
        assert r["status"] == 401 and r["error"]["code"] == -2015
        r = await call("account.balance", signed({}))
        assert r["status"] == 200 and any(b["asset"] == "USDC" for b in r["result"])
        r = await call("session.logon", signed({}))
        assert r["status"] == 400 and "Ed25519" in r["error"]["msg"]
        r = await call("session.status", {})
        assert r["status"] == 200 and r["result"]["apiKey"] is None
        r = await call("userDataStream.start", {"apiKey": DEFAULT_API_KEY})
        key = r["result"]["listenKey"]
        assert r["status"] == 200 and key
        assert (await call("userDataStream.ping", {"apiKey": DEFAULT_API_KEY}))["status"] == 200
        assert (await call("userDataStream.stop", {"apiKey": DEFAULT_API_KEY}))["status"] == 200
        r = await call("order.teleport", {})
        assert r["status"] == 400 and r["error"]["code"] == -1020
