"""BinanceFuturesClient's order-count budget: the sliding window it keeps (pure logic, with
explicit clocks), and, against the local exchange with the real python-binance client, the
limits it learns from exchangeInfo and the counts it reads from each order's answer."""
from __future__ import annotations

import pytest

from binance_library import BinanceFuturesClient, OrderBudget
from exchange_api import LimitOrder
from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET

pytestmark = pytest.mark.timeout(60)


def test_budget_waits_for_the_oldest_orders_to_leave_the_window():
    b = OrderBudget(10.0, 10)                       # soft share: 8 orders per 10 s
    for t in range(8):
        assert b.wait_for(1, 100.0 + t) == 0.0
        b.add(1, 100.0 + t)
    assert b.wait_for(1, 108.0) == pytest.approx(2.0)    # the first leaves at 110
    assert b.wait_for(3, 108.0) == pytest.approx(4.0)    # three must leave: the third at 112
    assert b.wait_for(1, 110.0) == 0.0                    # 100 is out of the window now


def test_budget_counts_orders_it_did_not_send_as_just_sent():
    b = OrderBudget(10.0, 10)
    b.add(2, 50.0)
    b.seen(7, 51.0)                                 # the exchange counts 5 more (an earlier life)
    assert len(b.times) == 7
    assert b.wait_for(2, 51.0) == pytest.approx(9.0)      # one must leave: the first, at 60
    b.seen(3, 52.0)                                 # a lower count never removes what we sent
    assert len(b.times) == 7
    assert b.wait_for(30, 52.0) > 0                 # more than the share: waits for the window
    assert OrderBudget(10.0, 10).wait_for(30, 0.0) == 0.0  # ... unless it is empty: then it goes


async def test_limits_learned_and_counts_read_from_the_exchange(start_exchange):
    ex = await start_exchange(order_limit_10s=50)
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url,
                                 ws_url=ex.ws_url)
    await venue.connect()
    try:
        assert (venue.order_budgets["10S"].limit, venue.order_budgets["1M"].limit) == (50, 1200)
        price = float(ex.sim.books["BTCUSDC"].price)
        orders = [LimitOrder(f"GM-BTCUSDC-1-E{i}", "BUY", round(price * 0.9, 1), 0.001) for i in (1, 2, 3)]
        await venue.place_limits(orders)                     # one batch: 5 on the 10 s count, 1 a minute
        await venue.place_limit(LimitOrder("GM-BTCUSDC-1-E4", "BUY", round(price * 0.9, 1), 0.001))
        assert len(venue.order_budgets["10S"].times) == 6 == ex.stats()["orderCount10s"]
        assert len(venue.order_budgets["1M"].times) == 2 == ex.stats()["orderCount1m"]
        # Another process (an earlier life) places six (a batch of five, then one): the next
        # answer tells this one.
        other = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
        await other.connect()
        try:
            await other.place_limits([LimitOrder(f"GM-BTCUSDC-2-E{i}", "BUY", round(price * 0.9, 1), 0.001)
                                      for i in range(1, 7)])
        finally:
            await other.close()
        await venue.place_limit(LimitOrder("GM-BTCUSDC-1-E5", "BUY", round(price * 0.9, 1), 0.001))
        assert len(venue.order_budgets["10S"].times) == 6 + 6 + 1 == ex.stats()["orderCount10s"]
        assert len(venue.order_budgets["1M"].times) == 2 + 2 + 1 == ex.stats()["orderCount1m"]
    finally:
        await venue.close()


@pytest.mark.parametrize("working_type", ["CONTRACT_PRICE", "MARK_PRICE"])
async def test_stop_is_sent_with_its_working_type_and_position_reads_the_liquidation_price(start_exchange,
                                                                                            working_type):
    ex = await start_exchange(symbols=("BTCUSDC",))
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url,
                                 ws_url=ex.ws_url)
    await venue.connect()
    try:
        price = float(ex.sim.books["BTCUSDC"].price)
        ex.sim.new_order("BTCUSDC", "BUY", "MARKET", quantity="1.000")
        await venue.set_stop_loss("GM-BTCUSDC-1-SL1", "SELL", round(price * 0.9, 1), working_type)
        [a] = ex.sim.open_algo_orders("BTCUSDC")
        assert a.working_type == working_type and a.working_mark == (working_type == "MARK_PRICE")
        got = await venue.find_algo_order("GM-BTCUSDC-1-SL1")
        assert got["workingType"] == working_type
        pos = await venue.get_position()
        assert pos.qty == 1.0 and pos.mark_price == price
        assert pos.liquidation_price == pytest.approx(ex.sim.books["BTCUSDC"].liq_price) and pos.liquidation_price > 0
    finally:
        await venue.close()


async def test_the_2019_ladder_reads_the_usdc_row_not_the_usdt_only_totals(start_exchange):
    """Issue 19 (1): in single-asset mode the top-level totals of /fapi/v2/account count USDT
    only (Account-Information-V2 / -V3); the local exchange says so, and the ladder's first rung
    comes from the USDC row.  Reading the top level, a USDC wallet looked empty: every level
    refused once with -2019 was then placed at 30 % of its size."""
    ex = await start_exchange(balance=10_000.0)
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        acct = await venue.call(venue.api.futures_account)
        usdc = next(a for a in acct["assets"] if a["asset"] == "USDC")
        assert acct["availableBalance"] == "0.00000000" and float(usdc["availableBalance"]) == 10_000.0
        assert venue.margin_asset == "USDC" and await venue.available_balance() == 10_000.0
        price = float(ex.sim.books["BTCUSDC"].price)
        affordable = 10_000.0 * 20 / price                   # the wallet at 20x
        assert await venue.first_rung_to_try("BUY", price, affordable * 0.5, 700) == 1
        # Half of it affordable: rung (1 - 0.5) / 0.001 + 1 - RUNG_MARGIN, not the last one.
        assert await venue.first_rung_to_try("BUY", price, affordable * 2, 700) == 491
    finally:
        await venue.close()


async def test_a_ban_without_retry_after_is_waited_out_to_the_time_its_message_names(start_exchange, caplog):
    """Issue 19 (7): USD-M does not promise Retry-After; the -1003 message of a 418 names the
    ban's end ("IP banned until <ms>").  The client waits until then, not a blind 60 s."""
    import logging
    ex = await start_exchange()
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        ex.ban(2.0)
        with caplog.at_level(logging.WARNING, logger="binance_library"):
            assert await venue.wallet_balance() == 10_000.0          # answered once the ban is over
        waits = [float(r.getMessage().split("pausing ")[1].split(" s")[0]) for r in caplog.records
                 if "HTTP 418" in r.getMessage()]
        assert waits and all(1.0 <= w <= 2.5 for w in waits), waits
    finally:
        await venue.close()


async def test_repeated_429s_refuse_an_order_without_querying_or_resending(start_exchange):
    """Issue 19 (7): a 429 is a definite refusal, not an unknown result: after its tries the
    order is not looked up and sent again while the IP is limited."""
    from binance_library import RateLimited
    ex = await start_exchange()
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        ex.faults.http_429_next = 50
        price = float(ex.sim.books["BTCUSDC"].price)
        with pytest.raises(RateLimited):
            await venue.place_limit(LimitOrder("GM-BTCUSDC-1-E1", "BUY", round(price * 0.9, 1), 0.001))
        req = ex.stats()["requests"]
        assert req.get("POST /fapi/v1/order") == 4 and not req.get("GET /fapi/v1/order")
        assert ex.sim.open_orders() == []
    finally:
        ex.faults.http_429_next = 0
        await venue.close()


async def test_a_408_is_an_unknown_result_settled_by_asking_for_the_order(start_exchange):
    """Issue 19 (7): HTTP 408 is a backend timeout whose request may have been executed
    (General Info).  The local exchange executes the order and then answers 408; the client
    asks for the order by its id and finds it, instead of taking it for refused (the order
    would then be an "orphan" a reconcile cancels)."""
    ex = await start_exchange()
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        ex.faults.http_408_next = 1
        price = round(float(ex.sim.books["BTCUSDC"].price) * 0.9, 1)
        ack = await venue.place_limit(LimitOrder("GM-BTCUSDC-1-E1", "BUY", price, 0.001))
        assert ack.client_id == "GM-BTCUSDC-1-E1" and ack.order_id
        req = ex.stats()["requests"]
        assert req.get("POST /fapi/v1/order") == 1 and req.get("GET /fapi/v1/order") == 1   # asked, not re-sent
        assert [o.client_id for o in ex.sim.open_orders()] == ["GM-BTCUSDC-1-E1"]
    finally:
        await venue.close()


async def test_429s_without_retry_after_double_the_wait(start_exchange, caplog):
    """Issue 19 (7): with no Retry-After (USD-M does not promise it) and the weight not spent,
    the client waits 1 s, 2 s, 4 s: not a blind 1 s into more 429s and a ban."""
    import logging
    ex = await start_exchange()
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        ex.faults.http_429_next = 2
        with caplog.at_level(logging.WARNING, logger="binance_library"):
            assert await venue.wallet_balance() == 10_000.0
        waits = [float(r.getMessage().split("pausing ")[1].split(" s")[0]) for r in caplog.records
                 if "HTTP 429" in r.getMessage()]
        assert waits == [1.0, 2.0]
    finally:
        await venue.close()


@pytest.mark.parametrize("mode", ["multi", "credits", "single"])
async def test_capital_and_the_2019_ladder_follow_the_account_mode(start_exchange, mode):
    """Issue 19 (5): multi-assets mode margins with every asset (top-level totals in USD),
    the EU credits mode with BNFCR; single-asset mode with the symbol's margin asset.  A wallet
    held in USDT under multi-assets mode, or in BNFCR, is not "no USDC balance"."""
    from binance_library import AccountMode
    ex = await start_exchange(balance=8_000.0)
    if mode == "multi":
        ex.sim.collateral = "USDT"
    elif mode == "credits":
        ex.sim.collateral = "BNFCR"
    venue = BinanceFuturesClient(DEFAULT_API_KEY, DEFAULT_API_SECRET, "BTCUSDC", base_url=ex.rest_url)
    await venue.connect()
    try:
        if mode == "multi":
            assert await venue.call(venue.api.futures_change_multi_assets_mode, multiAssetsMargin=True)
        got = await venue.account_mode()
        assert got == {"multi": AccountMode(True, "USD"), "credits": AccountMode(False, "BNFCR"),
                       "single": AccountMode(False, "USDC")}[mode]
        rows = {b["asset"]: float(b["balance"]) for b in await venue.call(venue.api.futures_account_balance)}
        assert rows.get("USDC", 0.0) == (8_000.0 if mode == "single" else 0.0)   # the old reading: nothing
        assert await venue.wallet_balance() == 8_000.0 and await venue.available_balance() == 8_000.0
    finally:
        await venue.close()


async def test_the_testnet_switch_uses_the_hosts_binance_documents(monkeypatch):
    """Issue 19 (4): BINANCE_TESTNET=1 → REST https://demo-fapi.binance.com/fapi and the user
    stream on wss://fstream.binancefuture.com/private/ (General Info), not python-binance's
    `testnet` host testnet.binancefuture.com.  Nothing is sent: the URLs are read off the
    client python-binance builds with our switches."""
    from binance import AsyncClient, BinanceSocketManager

    from binance_library import client_switches, user_socket, venue_urls_from_env
    monkeypatch.setenv("BINANCE_TESTNET", "1")
    monkeypatch.delenv("BINANCE_BASE_URL", raising=False)
    base, ws, testnet = venue_urls_from_env()
    assert (base, ws, testnet) == (None, None, True)
    client = AsyncClient("k" * 64, "s" * 64, **client_switches(testnet))
    try:
        assert client._create_futures_api_uri("order").startswith("https://demo-fapi.binance.com/fapi/")
        sock = user_socket(BinanceSocketManager(client))
        assert sock._url == "wss://fstream.binancefuture.com/private/"
    finally:
        await client.close_connection()
    assert client_switches(False) == {}
