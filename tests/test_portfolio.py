"""Several symbols on one cross-margin wallet (SPEC §7, issue 22): exactly the single-symbol
fills where margin never binds; -2019 refusals, funding and liquidation decided on the
account; every position closed when the account is liquidated; the command line."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_funding_liquidation import T0, falling  # noqa: E402  (the synthetic falling market)

import backtest  # noqa: E402
from backtest import PortfolioLeg, account_of, align_candles, run_backtest, run_portfolio  # noqa: E402
from config import load_config  # noqa: E402
from market.data import Candles  # noqa: E402
from market.funding import constant_funding  # noqa: E402
from sim.exchange import DEFAULT_FILTERS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
BTCUSD = DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"
BTCUSDC = DATA_DIR / "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv"
needs_pair = pytest.mark.skipif(not (BTCUSD.is_file() and BTCUSDC.is_file()),
                                reason=f"the March 2023 BTC pair is absent from {DATA_DIR}")
BASE = load_config(ROOT / "config_btc.txt")
FA = DEFAULT_FILTERS["BTCUSDC"]
FB = dataclasses.replace(FA, symbol="BTCUSD")           # a second symbol with the same filters


def key(fills) -> list[tuple]:
    return [(f.time_ms, f.role, f.side, f.price, f.qty, f.client_id) for f in fills]


@needs_pair
def test_two_symbols_where_margin_never_binds_give_exactly_the_single_symbol_fills():
    from market.data import load_klines
    a, b = load_klines([BTCUSDC]), load_klines([BTCUSD])
    cfg = BASE.with_overrides(capital_ratio=0.05)       # each a twentieth of the wallet: margin never binds
    wallet = 1_000_000.0
    funding = constant_funding(0.0001, int(a.open_time[0]), int(a.open_time[-1]))
    alone = [run_backtest(cfg, c, f, capital=0.05 * wallet, wallet=wallet, funding=funding) for c, f in
             ((a, FA), (b, FB))]
    together = run_portfolio([PortfolioLeg(cfg, a, FA, funding), PortfolioLeg(cfg, b, FB, funding)], wallet=wallet)
    for one, leg in zip(alone, together.symbols):
        assert len(one.fills) > 300
        assert key(one.fills) == key(leg.fills)
        np.testing.assert_allclose(leg.equity, one.equity, atol=1e-6)
        # Funding of both, each on its own position, settled on the one wallet.
        assert [(x.time, x.amount) for x in one.funding] == [(x.time, x.amount) for x in leg.funding]
    assert {x.symbol for x in together.symbols[0].funding + together.symbols[1].funding} == {"BTCUSDC", "BTCUSD"}
    # The account is the wallet plus both symbols' PnL.
    pnl = sum(r.equity - r.capital for r in together.symbols)
    np.testing.assert_allclose(together.equity, wallet + pnl, atol=1e-5)


def test_only_the_combined_loss_liquidates_the_account_and_every_position_is_closed():
    """BTC and a twin fall together: each alone on the wallet survives the first 360 minutes;
    on one wallet their combined loss liquidates the account, and both positions go."""
    cfg = BASE.with_overrides(leverage_long=50, sl_distance=0.30)
    market = falling(360, 50_000.0, 10.0)
    wallet, (cap,) = account_of([cfg])
    for f in (FA, FB):
        alone = run_backtest(cfg, market, f, capital=cap, wallet=wallet)
        assert alone.liquidations == [] and alone.final_qty > 0
    res = run_portfolio([PortfolioLeg(cfg, market, FA), PortfolioLeg(cfg, market, FB)])
    assert res.wallet == pytest.approx(1000 / 0.33)
    assert len(res.liquidations) == 2
    assert {x.symbol for x in res.liquidations} == {"BTCUSDC", "BTCUSD"}
    assert len({x.time for x in res.liquidations}) == 1                  # one moment: the account's
    assert all(r.final_qty == 0 and r.fills[-1].role == "LIQUIDATION" for r in res.symbols)
    assert res.equity_worst.min() >= 0 and res.final_equity == pytest.approx(0.0, abs=1e-6)


def test_one_symbols_orders_are_refused_for_the_margin_the_others_hold():
    """Two capitals of 70 % each: the first symbol's ladder and position leave the second
    too little margin (-2019: its third level shrunk, its fourth refused); alone on the same
    wallet the second places its whole ladder."""
    cfg = BASE.with_overrides(sl_distance=0.30, capital_ratio=0.7, leverage_long=5)
    market = falling(400, 50_000.0, 10.0)
    wallet = 2000.0
    entries = lambda r: [(f.role, f.qty) for f in r.fills if f.role.startswith("ENTRY")]  # noqa: E731
    alone = [run_backtest(cfg, market, f, capital=0.7 * wallet, wallet=wallet) for f in (FA, FB)]
    res = run_portfolio([PortfolioLeg(cfg, market, FA), PortfolioLeg(cfg, market, FB)], wallet=wallet)
    assert entries(res.symbols[0]) == entries(alone[0])                  # the first placed alone
    first, second = entries(alone[1]), entries(res.symbols[1])
    assert [r for r, _ in first] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4"]
    assert second[:2] == first[:2] and second[2][0] == "ENTRY3" and second[2][1] < first[2][1]
    assert "ENTRY4" not in [r for r, _ in second]


def test_minutes_missing_in_one_symbols_data_are_flat_candles_at_its_last_close():
    a = Candles.from_arrays(np.array([0, 60_000, 120_000, 180_000]), [1.0, 2, 3, 4], [1.5, 2.5, 3.5, 4.5],
                            [0.5, 1.5, 2.5, 3.5], [1.2, 2.2, 3.2, 4.2], [1.0, 1, 1, 1])
    b = Candles.from_arrays(np.array([60_000, 180_000]), [10.0, 30], [11.0, 31], [9.0, 29], [10.5, 30.5], [2.0, 2])
    times, (ca, cb) = align_candles([PortfolioLeg(BASE, a, FA), PortfolioLeg(BASE, b, FB)])
    assert times.tolist() == [0, 60_000, 120_000, 180_000] and ca is a
    assert cb.close.tolist() == [10.0, 10.5, 10.5, 30.5] and cb.high.tolist() == [10.0, 11.0, 10.5, 31.0]
    assert cb.volume.tolist() == [0.0, 2.0, 0.0, 2.0]


def test_different_fees_are_refused_fees_are_the_accounts():
    with pytest.raises(ValueError, match="fee rate is the account's"):
        run_portfolio([PortfolioLeg(BASE, falling(10, 100.0, 0.1), FA),
                       PortfolioLeg(BASE.with_overrides(taker_fee=0.001), falling(10, 100.0, 0.1), FB)])


# ---------------------------------------------------------------------- the command line
def run_cli(tmp_path: Path, *argv: str, capsys) -> tuple[int, str, str]:
    code = backtest.main([*argv, "--out", str(tmp_path / "out"), "--funding-rate", "0.0001"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_writes_the_account_and_each_symbol(tmp_path, capsys):
    from market.data import write_klines_csv
    data = tmp_path / "fall.csv"
    write_klines_csv(falling(360, 50_000.0, 10.0, T0 + 7 * 3_600_000), data)      # a funding time at minute 60
    cfg = tmp_path / "c.txt"
    cfg.write_text((ROOT / "config_btc.txt").read_text().replace("LEVERAGE_LONG=20", "LEVERAGE_LONG=50")
                   .replace("SL_DISTANCE=0.05", "SL_DISTANCE=0.30"), encoding="utf-8")
    code, out, err = run_cli(tmp_path, "--symbols", "BTCUSDC,BTCUSD", "--data", f"BTCUSDC={data}",
                             f"BTCUSD={data}", "--config", f"BTCUSDC={cfg}", f"BTCUSD={cfg}", capsys=capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    a = s["account"]
    assert a["wallet"] == pytest.approx(1000 / 0.33) and set(s["symbols"]) == {"BTCUSDC", "BTCUSD"}
    assert a["capitals"] == {"BTCUSDC": pytest.approx(1000), "BTCUSD": pytest.approx(1000)}
    assert len(a["liquidations"]) == 1
    assert {p["symbol"] for p in a["liquidations"][0]["positions_closed"]} == {"BTCUSDC", "BTCUSD"}
    with (tmp_path / "out" / "trades.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["symbol"] for r in rows} == {"BTCUSDC", "BTCUSD"} and rows[-1]["role"] == "LIQUIDATION"
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    with (tmp_path / "out" / "funding.csv").open() as f:
        assert {r["symbol"] for r in csv.DictReader(f)} == {"BTCUSDC", "BTCUSD"}
    assert (tmp_path / "out" / "equity.png").read_bytes()[:4] == b"\x89PNG"
    assert "account: liquidations" in out and "BTCUSD LONG" in out and "BTCUSDC LONG" in out


@pytest.mark.parametrize("argv, says", [
    (["--symbols", "BTCUSDC,ETHUSDC", "--data", "BTCUSDC=DATA"], "ETHUSDC: no data (give --data ETHUSDC="),
    (["--symbols", "BTCUSDC,XRPUSDC", "--data", "BTCUSDC=DATA", "XRPUSDC=DATA"],
     "XRPUSDC: no config"),
    (["--symbols", "BTCUSDC", "--data", "BTCUSDC=DATA"], "give two or more different symbols"),
    (["--symbols", "BTCUSDC,ETHUSDC", "--data", "DATA"], "with --symbols, give SYMBOL=CSV"),
    (["--symbols", "BTCUSDC,ETHUSDC", "--data", "BTCUSDC=DATA", "SOLUSDC=DATA"], "--data names SOLUSDC"),
    (["--symbols", "BTCUSDC,ETHUSDC", "--data", "BTCUSDC=DATA", "ETHUSDC=DATA", "--wallet", "-5"],
     "--wallet must be a positive amount"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, says):
    from market.data import write_klines_csv
    data = tmp_path / "d.csv"
    write_klines_csv(falling(30, 50_000.0, 1.0), data)
    code, _, err = run_cli(tmp_path, *[a.replace("DATA", str(data)) for a in argv], capsys=capsys)
    lines = [x for x in err.splitlines() if "error" in x]
    assert code == 2 and len(lines) == 1 and says in lines[0], err
