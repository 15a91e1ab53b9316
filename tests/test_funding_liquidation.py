"""Funding and liquidation in the simulator and the backtest (one implementation).

Funding: a settlement at every funding time T on the position held at T, at
the mark at T; amount = position × mark × rate (a long pays a positive
rate).  Liquidation: Binance's cross-margin rule with the leverage brackets;
the wallet never goes below zero.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtest import run_backtest, summarize  # noqa: E402
from market.brackets import SHIPPED, BracketError, liquidation_price, load_brackets, parse_binance  # noqa: E402
from config import load_config  # noqa: E402
from exchange_api import SymbolFilters  # noqa: E402
from market.funding import FundingError, FundingSeries, constant_funding, load_funding  # noqa: E402
from market.data import Candles, write_klines_csv  # noqa: E402
from sim.exchange import SimulatedExchange  # noqa: E402

BTC = SymbolFilters("BTCUSDC", 0.1, 0.001, 0.001, 5.0)
CFG = load_config(ROOT / "config_btc.txt")
H8 = 8 * 3_600_000
T0 = 1_704_067_200_000          # 2024-01-01T00:00:00Z


# ---------------------------------------------------------------- series


def test_constant_schedule_is_00_08_16_utc():
    s = constant_funding(0.0001, T0 + 1, T0 + 3 * H8)
    assert s.times.tolist() == [T0 + H8, T0 + 2 * H8, T0 + 3 * H8]
    assert constant_funding(0.0001, T0, T0 + H8 - 1).times.tolist() == [T0]


def test_dump_format_with_jitter_4h_and_8h_intervals_and_negative_rates(tmp_path):
    p = tmp_path / "BTCUSDC-fundingRate-2024-01.csv"
    p.write_text("calc_time,funding_interval_hours,last_funding_rate\n"
                 f"{T0 + 3},8,0.00010000\n"            # a few ms late
                 f"{T0 + H8 - 2},8,-0.00025000\n"      # a few ms early
                 f"{T0 + H8 + 4 * 3_600_000 + 1},4,0.00150000\n", encoding="utf-8")
    s = load_funding([p])
    assert s.times.tolist() == [T0, T0 + H8, T0 + H8 + 4 * 3_600_000]
    assert s.rates.tolist() == [0.0001, -0.00025, 0.0015]


def test_rest_json_format(tmp_path):
    p = tmp_path / "fundingRate.json"
    p.write_text(json.dumps([{"symbol": "BTCUSDC", "fundingTime": T0 + 1, "fundingRate": "0.00010000",
                              "markPrice": "42000.1"},
                             {"symbol": "BTCUSDC", "fundingTime": T0 + H8, "fundingRate": "-0.00002000",
                              "markPrice": ""}]), encoding="utf-8")
    s = load_funding([p])
    assert s.times.tolist() == [T0, T0 + H8] and s.rates.tolist() == [0.0001, -0.00002]


@pytest.mark.parametrize("text,needle", [
    ("calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,0.0001\n1704096000000,8",
     "truncated"),                                                    # cut mid-line
    ("calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,0.0001\n1704096000000,8\n",
     ":3: expected 3 fields"),
    ("calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,abc\n", ":2: funding rate 'abc'"),
    ("calc_time,funding_interval_hours,last_funding_rate\n1704096000000,8,0.0001\n1704067200000,8,0.0001\n",
     "out of order"),
    ("time,rate\n1704067200000,0.0001\n", ":1: expected the header"),
    ('[{"fundingTime": 1704067200000, "fundingRate": "0.0001"}, {"fundingTi', "not valid JSON"),
    ("", "empty"),
])
def test_bad_or_truncated_funding_file_is_one_clear_line(tmp_path, text, needle):
    p = tmp_path / "f.csv"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(FundingError) as e:
        load_funding([p])
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg, msg


# ---------------------------------------------------------------- settlement in the simulator


@pytest.mark.parametrize("side,rate,sign", [("BUY", 0.0001, 1), ("SELL", 0.0001, -1),
                                            ("BUY", -0.0003, -1), ("SELL", -0.0003, 1)])
def test_settlement_sign(side, rate, sign):
    sim = SimulatedExchange([BTC], balance=10_000.0, taker_fee=0.0)
    sim.set_price("BTCUSDC", 50_000.0)
    sim.new_order("BTCUSDC", side, "MARKET", quantity="0.100")
    w = sim.wallet
    paid = sim.settle_funding("BTCUSDC", rate, 50_100.0)
    assert paid == pytest.approx(sign * 0.1 * 50_100.0 * abs(rate))
    assert sim.wallet == pytest.approx(w - paid)
    [inc] = sim.income
    assert inc.income_type == "FUNDING_FEE" and inc.income == pytest.approx(-paid)
    ev = [e for e in sim.drain_events() if getattr(e, "reason", "") == "FUNDING_FEE"]
    assert len(ev) == 1 and ev[0].wallet == pytest.approx(sim.wallet)
    assert sim.settle_funding("BTCUSDC", rate, 1.0) != 0.0
    sim.new_order("BTCUSDC", "SELL" if side == "BUY" else "BUY", "MARKET", quantity="0.100", reduceOnly=True)
    assert sim.settle_funding("BTCUSDC", rate, 50_000.0) == 0.0      # flat: nothing


# ---------------------------------------------------------------- in the backtest


def _candles(prices: list[tuple[float, float, float, float]], t0: int) -> Candles:
    n = len(prices)
    a = np.array(prices, dtype=np.float64)
    return Candles.from_arrays(t0 + 60_000 * np.arange(n, dtype=np.int64), a[:, 0], a[:, 1], a[:, 2], a[:, 3],
                               np.ones(n))


def test_position_opened_or_closed_in_the_minute_of_t():
    """Settlement at T uses the position held at T: a level that fills during the minute
    starting at T pays nothing at T; a TP that fills during that minute still pays at T."""
    cfg = CFG.with_overrides(trade_direction="LONG")
    c0 = 50_000.0
    l1 = BTC.price_down(c0 * (1 - cfg.level_distances[0]))
    tp = BTC.price_up(l1 * (1 + cfg.tp_pct))
    start = T0 - 2 * 60_000          # candle 2 starts at T0 (a funding time)
    flat = (c0, c0, c0, c0)
    # Opened in the minute of T: level 1 fills in candle 2 (starts at T0) -> nothing at T0.
    opened = _candles([flat, flat, (c0, c0, l1, l1 + 10)], start)
    series = FundingSeries(np.array([T0], np.int64), np.array([0.0001]), "test")
    res = run_backtest(cfg, opened, BTC, funding=series)
    assert [f.role for f in res.fills] == ["ENTRY1"] and res.funding == []
    # Closed in the minute of T: level 1 fills in candle 1 (before T), the TP in candle 2.
    closed = _candles([flat, (c0, c0, l1, l1 + 10), (l1 + 10, tp + 10, l1 + 10, tp)], start)
    res = run_backtest(cfg, closed, BTC, funding=series)
    assert [f.role for f in res.fills] == ["ENTRY1", "TP"]
    [x] = res.funding
    q1 = res.fills[0].qty
    assert x.time == T0 and x.position == pytest.approx(q1) and x.mark_price == l1 + 10   # the open at T
    assert x.amount == pytest.approx(q1 * (l1 + 10) * 0.0001)
    assert res.final_wallet == pytest.approx(
        cfg.initial_capital + sum(f.realized_pnl - f.fee for f in res.fills) - x.amount)


@pytest.mark.parametrize("hours", [8, 4])
def test_backtest_funding_equals_an_independent_count(hours):
    """Over a month of synthetic candles, 8-hourly and 4-hourly, rates of both signs: every
    settlement = position at T × open at T × rate, the position at T read from the fills alone."""
    from market.data import synthetic_klines
    candles = synthetic_klines(30 * 1440, 7, start_price=50_000.0, start_time_ms=T0 + 60_000, tick=0.1)
    rates = constant_funding(0.0001, T0, int(candles.open_time[-1]), interval_hours=hours)
    assert np.all(rates.times % (hours * 3_600_000) == 0)
    rates = FundingSeries(rates.times, np.where(np.arange(len(rates)) % 3 == 1, -0.0002, 0.0001), "alt")
    res = run_backtest(CFG, candles, BTC, funding=rates)
    ftimes = np.array([f.time_ms for f in res.fills])
    want = []
    for t, r in zip(rates.times.tolist(), rates.rates.tolist()):
        k = int(np.searchsorted(ftimes, t, side="left")) - 1           # last fill before T
        pos = res.fills[k].position_after if k >= 0 else 0.0
        if pos:
            i = int(np.searchsorted(candles.open_time, t))
            want.append((t, pos * float(candles.open[i]) * r))
    got = [(x.time, x.amount) for x in res.funding]
    assert len(got) == len(want) > 15
    for (tg, ag), (tw, aw) in zip(got, want):
        assert tg == tw and ag == pytest.approx(aw, rel=1e-9, abs=1e-9)
    s = summarize(res)
    assert s["funding_paid"] == pytest.approx(sum(a for _, a in want), abs=1e-6)
    # The equity curve includes it: the final equity is the wallet after funding.
    assert s["final_equity"] == pytest.approx(cfg_wallet(res) + s["unrealized_pnl"], abs=1e-6)


def cfg_wallet(res) -> float:
    return res.capital + sum(f.realized_pnl - f.fee for f in res.fills) - sum(x.amount for x in res.funding)


# ---------------------------------------------------------------- liquidation


def test_shipped_brackets_cum_matches_binance():
    btc = SHIPPED["BTCUSDC"]
    assert [b.cum for b in btc.tiers[:5]] == [0.0, 50.0, 950.0, 11_450.0, 131_450.0]
    assert btc.maint_margin(40_000) == pytest.approx(160.0) and btc.maint_margin(100_000) == pytest.approx(450.0)
    again = parse_binance([btc.to_binance()], "BTCUSDC", "roundtrip")
    assert again.tiers == btc.tiers


def test_brackets_file_errors(tmp_path):
    p = tmp_path / "b.json"
    p.write_text('[{"symbol": "DOTUSDT", "brackets": [{"bracket": 1, "initialLeverage": 50, "notionalCap": 5000, '
                 '"notionalFloor": 0, "maintMarginRatio": 0.01, "cum": 0}]}]', encoding="utf-8")
    assert load_brackets(p, "DOTUSDT").tiers[0].mmr == 0.01
    with pytest.raises(BracketError, match="no brackets for ETHUSDC"):
        load_brackets(p, "ETHUSDC")
    p.write_text('[{"symbol": "DOTUSDT", "brack', encoding="utf-8")
    with pytest.raises(BracketError, match="not valid JSON"):
        load_brackets(p, "DOTUSDT")


def falling(n: int, start: float, step: float, t0: int = T0) -> Candles:
    rows = []
    p = start
    for _ in range(n):
        o, c = p, p - step
        rows.append((o, max(o, c) + abs(step) / 4, min(o, c) - abs(step) / 4, c))
        p = c
    return _candles(rows, t0)


def binance_liquidation_price(wallet: float, qty: float, entry: float) -> float:
    """Binance's documented cross-margin formula (one position), tier by tier."""
    for b in SHIPPED["BTCUSDC"].tiers:
        lp = (wallet + b.cum - qty * entry) / (abs(qty) * b.mmr - qty)
        if b.floor <= abs(qty) * lp < b.cap:
            return lp
    raise AssertionError("no tier")


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_50x_with_a_stop_too_far_liquidates_never_negative(direction):
    cfg = CFG.with_overrides(trade_direction=direction, leverage_long=50, leverage_short=50, sl_distance=0.30)
    step = 10.0 if direction == "LONG" else -10.0
    candles = falling(1500, 50_000.0, step)
    res = run_backtest(cfg, candles, BTC)
    s = summarize(res)
    assert len(res.liquidations) == 1, s["liquidations"]
    liq = res.liquidations[0]
    roles = [f.role for f in res.fills]
    assert roles[-1] == "LIQUIDATION" and "SL" not in roles and res.final_qty == 0
    # The trigger is Binance's formula on the account just before it, within a tick.
    before = [f for f in res.fills if f.role != "LIQUIDATION"]
    wallet = res.capital + sum(f.realized_pnl - f.fee for f in before)
    last = before[-1]
    lp = binance_liquidation_price(wallet, last.position_after, last.avg_price_after)
    assert abs(liq.mark_price - lp) <= BTC.tick_size + 1e-9, (liq.mark_price, lp)
    assert liq.price == liq.mark_price                  # no gap: closed at the liquidation price
    # Never below zero; the remaining maintenance margin went to the insurance fund.
    assert res.final_wallet >= 0 and s["min_equity"] >= 0 and float(res.equity.min()) >= 0
    assert res.final_wallet < 0.02 * res.capital
    mm = SHIPPED["BTCUSDC"].maint_margin(abs(liq.qty) * liq.price)
    close = res.fills[-1]
    after_close = wallet + close.realized_pnl - close.fee
    assert liq.clearance <= mm + 1e-9 and liq.clearance == pytest.approx(min(mm, after_close), abs=1e-6)
    assert res.final_wallet == pytest.approx(after_close - liq.clearance, abs=1e-6)
    # AFTER_LIQUIDATION=STOP (default): nothing after it.
    assert res.fills[-1].time_ms == liq.time
    # Without liquidation the same run shows what Binance would never let happen.
    unsafe = run_backtest(cfg, candles, BTC, liquidation=False)
    assert float(unsafe.equity_worst.min()) < 0


def test_liquidation_gap_fills_at_the_open_and_the_fund_covers_the_deficit():
    cfg = CFG.with_overrides(leverage_long=50, sl_distance=0.30)
    c0 = 50_000.0
    rows = [(c0, c0, c0, c0), (c0, c0, c0 * 0.955, c0 * 0.955)]          # the whole ladder fills
    rows += [(c0 * 0.90, c0 * 0.90, c0 * 0.89, c0 * 0.895)]               # a gap far below the LP
    res = run_backtest(cfg, _candles(rows, T0), BTC)
    [liq] = res.liquidations
    assert liq.price == pytest.approx(c0 * 0.90) and res.final_wallet == 0.0
    assert float(res.equity_worst.min()) >= 0.0


def test_after_liquidation_stop_halts_and_continue_trades_on():
    stop = CFG.with_overrides(leverage_long=50, sl_distance=0.30)
    res = run_backtest(stop, falling(1500, 50_000.0, 10.0), BTC)
    assert res.halted and len(res.liquidations) == 1
    go = run_backtest(stop.with_overrides(after_liquidation="CONTINUE"), falling(1500, 50_000.0, 10.0), BTC)
    assert not go.halted and go.liquidations[0].time == res.liquidations[0].time
    # A fresh grid at the liquidation price (its entries refused for lack of margin: the wallet
    # went to the insurance fund), and more as the range exits re-centre it.
    assert go.grids > res.grids


def test_liquidation_price_matches_a_brute_force_search():
    t = SHIPPED["BTCUSDC"]
    for qty, entry, others in [(0.5, 60_000.0, 1_000.0), (-2.0, 60_000.0, 3_000.0), (30.0, 50_000.0, 40_000.0)]:
        lp = liquidation_price(t, qty, entry, others)
        equity = lambda m: others + qty * (m - entry) - t.maint_margin(qty * m)  # noqa: E731
        assert abs(equity(lp)) < 1e-6 * abs(qty) * entry
        side = -1 if qty > 0 else 1     # one tick further: liquidated
        assert equity(lp + side * 0.1) < 0 < equity(lp - side * 0.1)


def test_cli_marks_the_liquidation(tmp_path):
    data = tmp_path / "fall.csv"
    write_klines_csv(falling(1500, 50_000.0, 10.0), data)
    cfg = tmp_path / "c.txt"
    cfg.write_text((ROOT / "config_btc.txt").read_text().replace("LEVERAGE_LONG=20", "LEVERAGE_LONG=50")
                   .replace("SL_DISTANCE=0.05", "SL_DISTANCE=0.30"), encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "backtest.py"), "--config", str(cfg), "--data", str(data),
                        "--out", str(tmp_path / "o"), "--no-chart"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(s["liquidations"]) == 1 and set(s["liquidations"][0]) >= {"time", "mark_price", "qty", "price"}
    # SPEC §7: the account's wallet is INITIAL_CAPITAL / CAPITAL_RATIO; the symbol's loss went
    # past its capital into the rest of the wallet, and the account's equity stops at 0.
    assert s["wallet"] == pytest.approx(1000 / 0.33) and s["capital"] == pytest.approx(1000)
    assert s["min_equity"] < 0 <= s["account"]["min_equity"] and s["account"]["final_equity"] >= 0
    assert s["account"]["liquidations"][0]["time"] == s["liquidations"][0]["time"]
    rows = (tmp_path / "o" / "trades.csv").read_text().splitlines()
    assert rows[-1].split(",")[1] == "LIQUIDATION"
    assert "liquidations" in r.stdout and s["liquidations"][0]["time"] in r.stdout


# ---------------------------------------------------------------- mark price and SL_WORKING_TYPE


def _mark_case(tmp_path, working_type: str):
    """The whole ladder fills on the last price; then the mark (not the last price) dips to the stop."""
    cfg = CFG.with_overrides(sl_working_type=working_type)
    c0 = 50_000.0
    sl = BTC.price_down(c0 * (1 - cfg.sl_distance))
    deep = c0 * (1 - cfg.level_distances[3]) - 50
    rows = [(c0,) * 4, (c0, c0, deep, deep + 10), (deep + 10, deep + 20, deep, deep + 10)]
    mark_rows = [(c0,) * 4, (c0, c0, deep, deep + 10), (deep + 10, deep + 20, sl - 5, deep + 10)]
    last = _candles(rows, T0)
    mark = _candles(mark_rows, T0)
    path = tmp_path / "mark.csv"
    write_klines_csv(Candles.from_arrays(mark.open_time, mark.open, mark.high, mark.low, mark.close,
                                         np.zeros(len(mark))), path)
    from market.data import load_klines
    return run_backtest(cfg, last, BTC, mark=load_klines([path])), sl


def test_mark_price_stop_follows_the_mark_series(tmp_path):
    res, sl = _mark_case(tmp_path, "MARK_PRICE")
    roles = [f.role for f in res.fills]
    assert roles[:4] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"] and roles[-1] == "SL", roles
    assert res.fills[-1].price == sl                     # a stop fills at its trigger
    # The same candles with the stop on the last price: the last price never reached it.
    res, _ = _mark_case(tmp_path, "CONTRACT_PRICE")
    assert "SL" not in [f.role for f in res.fills]


def test_liquidation_is_triggered_by_the_mark(tmp_path):
    cfg = CFG.with_overrides(leverage_long=50, sl_distance=0.30)
    c0 = 50_000.0
    deep = c0 * (1 - cfg.level_distances[3]) - 50
    rows = [(c0,) * 4, (c0, c0, deep, deep + 10)] + [(deep + 10, deep + 20, deep, deep + 10)] * 3
    last = _candles(rows, T0)
    res = run_backtest(cfg, last, BTC)
    assert not res.liquidations                          # the last price stays above the LP
    lp = liquidation_price(SHIPPED["BTCUSDC"], res.final_qty, res.final_avg,
                           res.final_wallet)
    assert 0 < lp < deep
    mrows = rows[:3] + [(deep + 10, deep + 20, lp - 100, deep + 10)] + rows[4:]
    mark = _candles(mrows, T0)
    res = run_backtest(cfg, last, BTC, mark=mark)
    [liq] = res.liquidations
    assert liq.time // 60_000 == (T0 + 3 * 60_000) // 60_000 and abs(liq.mark_price - lp) <= BTC.tick_size + 1e-9
