"""Funding and liquidation on the local exchange, through the real python-binance client.

The wallet settles at each funding time (ACCOUNT_UPDATE m=FUNDING_FEE,
`GET /fapi/v1/income`, `GET /fapi/v1/fundingRate`, premiumIndex, the
markPrice stream's r/T); liquidation follows Binance's cross-margin rule
(`GET /fapi/v1/leverageBracket`, positionRisk's liquidationPrice, the
`autoclose-` ORDER_TRADE_UPDATE with every open order cancelled first).
"""
from __future__ import annotations

import numpy as np
import pytest

from binance_library import user_socket
from market.brackets import SHIPPED, liquidation_price
from market.funding import FundingSeries
from market.data import Candles, write_klines_csv
from test_local_exchange import bsm_for, quick, recv_until

pytestmark = pytest.mark.timeout(30)

SYM = "BTCUSDC"
FT = 1_704_067_200_000          # 2024-01-01T00:00:00Z, a funding time
T0 = FT - 2 * 60_000            # candle 2 starts at FT


def csv_at(tmp_path, rows, t0=T0):
    n = len(rows)
    o, h, l, c = (list(x) for x in zip(*rows))
    p = tmp_path / "BTCUSDC-1m.csv"
    write_klines_csv(Candles.from_arrays([t0 + 60_000 * i for i in range(n)], o, h, l, c, [10.0] * n), p)
    return p


FLAT = [(100.0, 100.5, 99.5, 100.0), (100.0, 100.5, 99.5, 100.0), (101.0, 101.5, 100.5, 101.0)] + \
       [(101.0, 101.5, 100.5, 101.0)] * 4


@pytest.mark.parametrize("side,rate", [("BUY", 0.0003), ("SELL", 0.0003), ("BUY", -0.0005)])
async def test_funding_settles_the_wallet_and_is_served(tmp_path, start_exchange, client_for, side, rate):
    series = FundingSeries(np.array([FT, FT + 8 * 3_600_000], np.int64), np.array([rate, 0.0001]), "test")
    ex = await start_exchange(symbols=(SYM,), data=[csv_at(tmp_path, FLAT)], funding={SYM: series})
    client = await client_for(ex)
    pi = await client.futures_mark_price(symbol=SYM)
    assert pi["nextFundingTime"] == FT and float(pi["lastFundingRate"]) == rate
    await client.futures_create_order(symbol=SYM, side=side, type="MARKET", quantity="1.000")
    wallet = ex.sim.wallet
    async with quick(user_socket(bsm_for(client, ex))) as us:
        await ex.step(3)                                   # candle 2 opens at FT (101.0)
        ev = await recv_until(us, lambda m: m.get("e") == "ACCOUNT_UPDATE" and m["a"]["m"] == "FUNDING_FEE")
    sign = 1 if side == "BUY" else -1
    paid = sign * 1.0 * 101.0 * rate
    assert ex.sim.wallet == pytest.approx(wallet - paid)
    assert float(ev["a"]["B"][0]["wb"]) == pytest.approx(ex.sim.wallet) and ev["a"]["P"] == [] and ev["E"] == FT
    assert ev["a"]["S"] == SYM          # since 2026-08 the settled symbol is named (a.S)
    inc = await client.futures_income_history(symbol=SYM, incomeType="FUNDING_FEE", startTime=T0)
    assert [(r["incomeType"], r["time"], r["asset"]) for r in inc] == [("FUNDING_FEE", FT, "USDC")]
    assert float(inc[0]["income"]) == pytest.approx(-paid) and isinstance(inc[0]["tranId"], int)
    hist = await client.futures_funding_rate(symbol=SYM)
    assert [(h["fundingTime"], float(h["fundingRate"]), h["markPrice"]) for h in hist] == [(FT, rate, "101.0")]
    pi = await client.futures_mark_price(symbol=SYM)
    assert pi["nextFundingTime"] == FT + 8 * 3_600_000 and float(pi["lastFundingRate"]) == 0.0001
    async with quick(bsm_for(client, ex).futures_multiplex_socket([f"{SYM.lower()}@markPrice@1s"])) as ms:
        await ex.step(1)
        mark = (await recv_until(ms, lambda m: m["data"].get("e") == "markPriceUpdate"))["data"]
    assert (mark["T"], float(mark["r"]), float(mark["p"])) == (FT + 8 * 3_600_000, 0.0001, 101.0)
    # Without a series: Binance's baseline 0.01 % at 00/08/16 UTC.
    ex2 = await start_exchange(symbols=(SYM,), data=[csv_at(tmp_path, FLAT)])
    assert float((await (await client_for(ex2)).futures_mark_price(symbol=SYM))["lastFundingRate"]) == 0.0001


async def test_liquidation_price_brackets_and_forced_close(tmp_path, start_exchange, client_for):
    rows = [(50_000.0, 50_010.0, 49_990.0, 50_000.0)] * 6
    ex = await start_exchange(symbols=(SYM,), data=[csv_at(tmp_path, rows)], balance=1_000.0, funding_rate=0.0)
    client = await client_for(ex)
    lb = await client.futures_leverage_bracket(symbol=SYM)
    assert lb["symbol"] == SYM and lb["brackets"][0] == {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000,
                                                         "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0}
    await client.futures_change_leverage(symbol=SYM, leverage=50)
    await client.futures_create_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.800")   # 40,000 notional
    await client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT", price="48000.0", quantity="0.010",
                                      timeInForce="GTC", newClientOrderId="GM-BTCUSDC-1-E2")
    pr = await client.futures_position_information(symbol=SYM)
    lp = float(pr[0]["liquidationPrice"])
    p = ex.sim.books[SYM].position
    want = liquidation_price(SHIPPED["BTCUSDC"], p.qty, p.entry_price, ex.sim.wallet)
    assert lp == pytest.approx(want, abs=1e-6) and 48_000 < lp < 50_000
    # Binance's formula, by hand: tier 1 (mmr 0.4 %, cum 0).
    assert lp == pytest.approx((ex.sim.wallet - 0.8 * p.entry_price) / (0.8 * 0.004 - 0.8), rel=1e-12)
    async with quick(user_socket(bsm_for(client, ex))) as us:
        await ex.set_price(SYM, 48_500.0)                  # above the liquidation price: nothing
        seen: list[dict] = []
        await ex.set_price(SYM, 47_000.0)                  # through the liquidation price
        await recv_until(us, lambda m: m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["c"].startswith("autoclose-"),
                         seen=seen)
    kinds = [(m["o"]["c"], m["o"]["x"], m["o"]["X"]) for m in seen if m.get("e") == "ORDER_TRADE_UPDATE"]
    assert ("GM-BTCUSDC-1-E2", "CANCELED", "CANCELED") in kinds          # open orders first ...
    liq = next(m["o"] for m in seen if m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["c"].startswith("autoclose-"))
    assert (liq["x"], liq["X"], liq["o"], liq["S"], liq["l"]) == ("CALCULATED", "FILLED", "LIQUIDATION", "SELL",
                                                                  "0.800")
    assert abs(float(liq["L"]) - lp) <= 0.1 + 1e-9                         # ... then the close at the LP
    assert ex.sim.position(SYM).qty == 0 and ex.sim.wallet >= 0
    assert await client.futures_get_open_orders(symbol=SYM) == []
    inc = await client.futures_income_history(symbol=SYM, incomeType="INSURANCE_CLEAR")
    assert len(inc) == 1 and float(inc[0]["income"]) < 0
