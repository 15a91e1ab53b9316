"""The demo as one account (issue 22): `trade.py --demo --symbols A,B` runs a daemon per symbol
in one process against one local exchange and one wallet, in lockstep; its fills, funding and
liquidations are the portfolio backtest's (backtest.run_portfolio) over the same candles, fill
for fill — on the real March 2023 BTC pair and on the correlated synthetic market."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import TIGHT, clean_env, with_values  # noqa: E402

from backtest import PortfolioLeg, account_of, run_backtest, run_portfolio  # noqa: E402
from config import load_config  # noqa: E402
from live.demo import _liquidation_lines  # noqa: E402
from localex.base import synthetic_series  # noqa: E402
from market.data import SYNTHETIC_CORRELATION, load_klines  # noqa: E402
from market.funding import constant_funding, load_funding  # noqa: E402
from paths import short_name  # noqa: E402
from sim.exchange import DEFAULT_FILTERS  # noqa: E402
from sim.model import infer_filters  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
PAIR = {"BTCUSDC": DATA_DIR / "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv",
        "BTCUSD": DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"}
needs_pair = pytest.mark.skipif(not all(p.is_file() for p in PAIR.values()),
                                reason=f"the March 2023 BTC pair is absent from {DATA_DIR} (set GM_DATA_DIR)")
DAY = 1440


# ---------------------------------------------------------------------- the demo's side
def run_demo(root: Path, symbols: list[str], configs: dict[str, Path], *, data: dict[str, Path] | None = None,
             funding: dict[str, Path] | None = None, extra: tuple[str, ...] = ()) -> str:
    """`trade.py --demo --symbols ...` to its end; its stdout (the report)."""
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "trade.py"), "--demo", "--symbols", ",".join(symbols),
           "--demo-speed", "5000", "--root", str(root), "--quiet", "--env", str(root / "none.env"),
           "--config", *(f"{s}={p}" for s, p in configs.items())]
    if data:
        cmd += ["--demo-data", *(f"{s}={p}" for s, p in data.items())]
    if funding:
        cmd += ["--demo-funding", *(f"{s}={p}" for s, p in funding.items())]
    r = subprocess.run(cmd + list(extra), cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = "".join(p.read_text(encoding="utf-8") for p in sorted((root / "demo" / "logs").glob("*.log")))
    assert "lockstep" not in logs, "the lockstep gave up waiting:\n" + logs[-3000:]
    return r.stdout


def demo_fills(root: Path, symbols: list[str]) -> dict[str, list[tuple]]:
    out = {}
    for s in symbols:
        with open(root / "demo" / "trades" / f"trades_{short_name(s)}.csv", newline="", encoding="utf-8") as fh:
            out[s] = [(s, r["time"], r["role"], r["side"], r["price"], r["quantity"]) for r in csv.DictReader(fh)]
    return out


def demo_funding(root: Path, symbols: list[str]) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for s in symbols:
        path = root / "demo" / "trades" / f"funding_{short_name(s)}.csv"
        if not path.exists():
            out[s] = []
            continue
        with open(path, newline="", encoding="utf-8") as fh:
            out[s] = [(r["time"], -float(r["income"])) for r in csv.DictReader(fh)]
    return out


def report_value(stdout: str, label: str) -> float:
    """A figure of the account's report."""
    return float(re.search(rf"^  {label}\s+(-?[\d.]+)", "\n".join(account_report(stdout)), re.M).group(1))


# ---------------------------------------------------------------------- the backtest's side
def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def portfolio(legs: list[PortfolioLeg]):
    """run_portfolio on the demo's wallet (the largest INITIAL_CAPITAL / CAPITAL_RATIO): its
    fills and funding per symbol, its liquidation lines as the demo prints them."""
    res = run_portfolio(legs)
    fills = {r.filters.symbol: [(r.filters.symbol, x.time_iso, x.role, x.side, r.filters.fmt_price(x.price),
                                 r.filters.fmt_qty(x.qty)) for x in r.fills] for r in res.symbols}
    paid = {r.filters.symbol: [(iso(x.time), x.amount) for x in r.funding] for r in res.symbols}
    return res, fills, paid, _liquidation_lines(res.liquidations)


def assert_same_account(stdout: str, root: Path, legs: list[PortfolioLeg]) -> tuple[dict, dict]:
    """Fill for fill, settlement for settlement, the same liquidations, the same account."""
    symbols = [leg.filters.symbol for leg in legs]
    res, fills, paid, liquidations = portfolio(legs)
    live = demo_fills(root, symbols)
    for s in symbols:
        assert live[s] == fills[s], f"{s}: first difference at " + str(
            next((i, a, b) for i, (a, b) in enumerate(zip(live[s], fills[s])) if a != b)
            if len(live[s]) == len(fills[s]) else (len(live[s]), len(fills[s])))
    live_paid = demo_funding(root, symbols)
    for s in symbols:
        assert [t for t, _ in live_paid[s]] == [t for t, _ in paid[s]], s
        for (_, a), (_, b) in zip(live_paid[s], paid[s]):
            assert a == pytest.approx(b, abs=1e-8), s
    account = account_report(stdout)
    assert [ln for ln in account if ln.startswith(("  LIQUIDATED", "  liquidations"))] == liquidations
    assert report_value(stdout, "wallet at start") == pytest.approx(res.wallet, abs=1e-6)
    wallet = res.wallet + sum(r.final_wallet - r.capital for r in res.symbols)
    assert report_value(stdout, "final wallet") == pytest.approx(wallet, abs=1e-6)
    # The exchange marks the positions at its last price, on the tick grid; the backtest at the
    # last close as written in the CSV (finer than BTCUSDC's tick).
    off = sum(abs(r.final_qty) * r.filters.tick_size for r in res.symbols)
    assert report_value(stdout, "equity") == pytest.approx(res.final_equity, abs=off + 1e-6)
    return fills, paid


def account_report(stdout: str) -> list[str]:
    """The account's part of the demo's report (before the symbols')."""
    lines = stdout.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("demo report — the account"))
    return lines[first:lines.index("", first)]


def hourly_funding(tmp: Path, times: np.ndarray, name: str) -> Path:
    """An hourly funding series over the candles (Binance's dump format, rates of both signs, a
    few ms of calc_time jitter): many settlements on open positions."""
    first = (int(times[0]) // 3_600_000 + 1) * 3_600_000
    rows = ["calc_time,funding_interval_hours,last_funding_rate"]
    for k, ts in enumerate(range(first, int(times[-1]), 3_600_000)):
        rows.append(f"{ts + (k % 3) - 1},1,{(0.0003, -0.0002, 0.0001)[k % 3]:.8f}")
    path = tmp / f"funding_{name}.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def config_file(tmp: Path, base: str, name: str, values: dict[str, str]) -> Path:
    path = tmp / f"config_{name}.txt"
    path.write_text(with_values((ROOT / base).read_text(encoding="utf-8"), values), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- (a) the real pair
def pair_slice(tmp: Path, start: int, minutes: int) -> dict[str, Path]:
    """Both BTC files of March 2023 from minute `start` (0 = March 1st, 00:00 UTC) on."""
    out = {}
    for sym, src in PAIR.items():
        rows = src.read_text(encoding="utf-8").splitlines()
        path = tmp / f"{sym}.csv"
        path.write_text("\n".join([rows[0]] + rows[1 + start:1 + start + minutes]) + "\n", encoding="utf-8")
        out[sym] = path
    return out


def pair_legs(data: dict[str, Path], config: Path, funding: dict[str, Path] | None = None) -> list[PortfolioLeg]:
    """The pair as the local exchange serves it: BTCUSDC's filters, BTCUSD's read off its candles;
    the funding files given, else the demo's constant rate."""
    legs = []
    for sym, path in data.items():
        candles = load_klines([path])
        f = DEFAULT_FILTERS.get(sym) or infer_filters(sym, candles)
        series = load_funding([funding[sym]]) if funding else \
            constant_funding(0.0001, int(candles.open_time[0]), int(candles.open_time[-1]))
        legs.append(PortfolioLeg(load_config(config), candles, f, series))
    return legs


@needs_pair
@pytest.mark.timeout(200)
def test_two_daemons_on_one_wallet_give_the_portfolio_backtests_fills_on_the_btc_pair(tmp_path):
    """March 9, 2023 (BTC falls 8 %), config_btc.txt for both symbols (a third of the wallet
    each), an hourly funding series: every role, both ladders down to the stop at once."""
    data = pair_slice(tmp_path, 8 * DAY, DAY)
    cfg = ROOT / "config_btc.txt"
    funding = {s: hourly_funding(tmp_path, load_klines([p]).open_time, short_name(s)) for s, p in data.items()}
    stdout = run_demo(tmp_path / "root", list(PAIR), {"BTCUSDC": cfg, "BTCUSD": cfg}, data=data, funding=funding)
    fills, paid = assert_same_account(stdout, tmp_path / "root", pair_legs(data, cfg, funding))
    for sym in PAIR:
        assert {r[2] for r in fills[sym]} >= {"ENTRY1", "ENTRY4", "TP", "BE", "SL"}, (sym, fills[sym])
        assert len(paid[sym]) >= 3, f"{sym}: too few settlements on a position: funding parity untested"
    w, capitals = account_of([load_config(cfg)] * 2)
    assert f"wallet {w:,.2f}, capital BTCUSDC {capitals[0]:,.2f}, BTCUSD {capitals[1]:,.2f}" in stdout


@needs_pair
@pytest.mark.timeout(200)
def test_the_account_liquidated_by_the_combined_loss_is_the_portfolio_backtests(tmp_path):
    """Half the wallet each, the stop far away: on March 9, 16:00 on, both ladders fill and the
    two losses together liquidate the account (either alone on the same wallet survives);
    every position closed at the same minute and price as the backtest closes it."""
    data = pair_slice(tmp_path, 8 * DAY + 16 * 60, 480)
    cfg = config_file(tmp_path, "config_btc.txt", "half", {"CAPITAL_RATIO": "0.5", "SL_DISTANCE": "0.20",
                                                          "LEVEL_DISTANCES": "0.005,0.010,0.020,0.030"})
    legs = pair_legs(data, cfg)
    for leg in legs:
        alone = run_backtest(leg.config, leg.candles, leg.filters, capital=1000.0, wallet=2000.0, funding=leg.funding)
        assert not alone.liquidations, leg.filters.symbol
    stdout = run_demo(tmp_path / "root", list(PAIR), {"BTCUSDC": cfg, "BTCUSD": cfg}, data=data)
    fills, _ = assert_same_account(stdout, tmp_path / "root", legs)
    assert stdout.count("  LIQUIDATED      20") == 1 and "closed BTCUSD" in stdout and "BTCUSDC +" in stdout
    assert all(r[-1][2] == "LIQUIDATION" for r in fills.values())
    assert report_value(stdout, "final wallet") == 0.0


@needs_pair
@pytest.mark.timeout(200)
def test_margin_shared_by_the_two_daemons_refuses_as_the_portfolio_backtest_does(tmp_path):
    """Half the wallet each at 20x: from March 13, 00:00 on, one symbol's open orders and loss
    leave the other too little margin (-2019), its levels shrunk or skipped; the daemons,
    reacting in the symbols' order, take the margin as the backtest's legs do."""
    data = pair_slice(tmp_path, 12 * DAY, 480)
    cfg = config_file(tmp_path, "config_btc.txt", "half", {"CAPITAL_RATIO": "0.5"})
    stdout = run_demo(tmp_path / "root", list(PAIR), {"BTCUSDC": cfg, "BTCUSD": cfg}, data=data)
    assert_same_account(stdout, tmp_path / "root", pair_legs(data, cfg))
    logs = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "root" / "demo" / "logs").glob("*.log"))
    assert "margin insufficient" in logs


@needs_pair
@pytest.mark.timeout(200)
def test_the_account_stop_stops_both_daemons_whichever_sees_the_fall_first(tmp_path):
    """March 9, 2023 (BTC falls 8 %), both symbols on one wallet with ACCOUNT_STOP_DRAWDOWN=0.02:
    each daemon reads the account's equity at its own sync; the first that finds it 2 % under
    its peak records the stop in the shared record, and both close, cancel and stop placing."""
    data = pair_slice(tmp_path, 8 * DAY, DAY)
    cfg = config_file(tmp_path, "config_btc.txt", "stop", {"ACCOUNT_STOP_DRAWDOWN": "0.02"})
    root = tmp_path / "root"
    run_demo(root, list(PAIR), {"BTCUSDC": cfg, "BTCUSD": cfg}, data=data,
             extra=("--demo-speed", "400", "--sync-interval", "0.05"))
    shared = json.loads((root / "demo" / "state" / "account.json").read_text())
    assert shared["stopped_at"] > 0 and shared["stopped_by"] in PAIR
    closed = 0
    for sym in PAIR:
        short = short_name(sym)
        st = json.loads((root / "demo" / "state" / f"state_{short}.json").read_text())
        assert st["account_stopped_at"] == shared["stopped_at"], sym       # the same stop, whoever saw it
        assert st["position"]["qty"] == 0 and not st["orders"], sym        # flat, nothing resting
        log = "".join(p.read_text(encoding="utf-8") for p in (root / "demo" / "logs").glob(f"*_{short}_*.log"))
        assert "ACCOUNT STOP" in log, sym
        rows = demo_fills(root, [sym])[sym]
        with open(root / "demo" / "trades" / f"trades_{short}.csv", newline="", encoding="utf-8") as fh:
            last = list(csv.DictReader(fh))[-1]
        if last["role"] == "SL" and float(last["position_after"]) == 0 and rows:
            closed += 1                 # closed at market by the stop, and nothing traded after it
    assert closed >= 1, "no position was closed by the account stop"


# ---------------------------------------------------------------------- (b) the synthetic market
SYNTHETIC = ("BTCUSDC", "ETHUSDC")


def synthetic_legs(seed: int, minutes: int, configs: dict[str, Path],
                   funding: dict[str, Path]) -> list[PortfolioLeg]:
    """The demo's synthetic market (what its local exchange plays), as the backtest reads it."""
    legs = []
    for sym in SYNTHETIC:
        f = DEFAULT_FILTERS[sym]
        candles = synthetic_series(sym, seed, f.tick_size, SYNTHETIC_CORRELATION).candles(minutes)
        legs.append(PortfolioLeg(load_config(configs[sym]), candles, f, load_funding([funding[sym]])))
    return legs


@pytest.mark.timeout(200)
def test_two_daemons_on_the_correlated_synthetic_market_give_the_portfolio_backtests_fills(tmp_path):
    seed, minutes = 22, 900
    configs = {"BTCUSDC": config_file(tmp_path, "config_btc.txt", "btc", TIGHT),
               "ETHUSDC": config_file(tmp_path, "config_eth.txt", "eth", TIGHT)}
    t = np.asarray(synthetic_series("BTCUSDC", seed, 0.1, SYNTHETIC_CORRELATION).t[:minutes])
    funding = {s: hourly_funding(tmp_path, t, short_name(s)) for s in SYNTHETIC}
    stdout = run_demo(tmp_path / "root", list(SYNTHETIC), configs, funding=funding,
                      extra=("--demo-seed", str(seed), "--demo-minutes", str(minutes)))
    assert "synthetic market, the symbols correlated" in stdout
    fills, paid = assert_same_account(stdout, tmp_path / "root", synthetic_legs(seed, minutes, configs, funding))
    for sym in SYNTHETIC:
        roles = {r[2] for r in fills[sym]}
        assert len(roles) >= 4, (sym, roles)
        assert paid[sym], f"{sym}: no settlement on a position"


def test_the_synthetic_symbols_move_together():
    """The common factor: 1-minute returns of BTCUSDC and ETHUSDC correlate (about 0.8) on the
    demo's market, not at all on the independent one; each symbol's path is seeded."""
    def returns(sym: str, correlation: float | None) -> np.ndarray:
        s = synthetic_series(sym, 7, DEFAULT_FILTERS[sym].tick_size, correlation)
        return np.diff(np.log(np.asarray(s.c)))
    together = np.corrcoef(returns("BTCUSDC", SYNTHETIC_CORRELATION), returns("ETHUSDC", SYNTHETIC_CORRELATION))[0, 1]
    apart = np.corrcoef(returns("BTCUSDC", None), returns("ETHUSDC", None))[0, 1]
    assert 0.7 < together < 0.9, together
    assert abs(apart) < 0.05, apart
    again = synthetic_series("ETHUSDC", 7, 0.01, SYNTHETIC_CORRELATION)
    assert again.c[:1000] == synthetic_series("ETHUSDC", 7, 0.01, SYNTHETIC_CORRELATION).c[:1000]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, says", [
    (["--demo", "--symbols", "BTCUSDC,NOPEUSDC"], "NOPEUSDC: no config"),
    (["--symbols", "BTCUSDC,ETHUSDC"], "add --demo"),
    (["--demo", "--symbols", "BTCUSDC,ETHUSDC", "--demo-data", "BTCUSDC=x.csv"], "ETHUSDC has none"),
    (["--demo", "--symbols", "BTCUSDC,ETHUSDC", "--config", "SOLUSDC=config_btc.txt"], "SOLUSDC, not in --symbols"),
    (["--demo", "--symbols", "BTCUSDC,ETHUSDC", "--wallet", "-5"], "--wallet must be a positive amount"),
    (["--demo"], "--symbols"),
])
def test_bad_account_demo_input_is_one_line_exit_2(tmp_path, args, says):
    r = subprocess.run([sys.executable, str(ROOT / "trade.py"), *args, "--root", str(tmp_path)], cwd=tmp_path,
                       env=clean_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert r.stderr.startswith("trade.py: error: ")
    assert not (tmp_path / "demo").exists()
