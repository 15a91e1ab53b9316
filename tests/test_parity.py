"""Parity: the daemon, trading the local exchange in lockstep (`trade_btc.py --demo
--demo-data`, real processes over loopback), fills exactly as the backtest does
over the same config, candles and account (SPEC §7: the wallet INITIAL_CAPITAL /
CAPITAL_RATIO, the symbol's capital INITIAL_CAPITAL, in the demo as in the backtest)."""
from __future__ import annotations

import csv
import os
import re
from datetime import datetime, timezone
import subprocess
import sys
from pathlib import Path

import pytest

from backtest import account_of, run_backtest
from config import load_config
from harness import TIGHT, with_values
from market.funding import load_funding
from market.data import load_klines, synthetic_klines, write_klines_csv
from sim.exchange import DEFAULT_FILTERS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR", ROOT.parent / "shared" / "data"))
BTC_FILE = DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"

def tight_config(tmp: Path, direction: str) -> Path:
    text = (ROOT / "config_btc.txt").read_text(encoding="utf-8")
    path = tmp / f"config_{direction.lower()}.txt"
    path.write_text(with_values(text, {**TIGHT, "TRADE_DIRECTION": direction}), encoding="utf-8")
    return path


def funding_file(tmp: Path, data: Path) -> Path:
    """An hourly funding series over the data (Binance's dump format, rates of both signs, a few
    ms of calc_time jitter), so that several settlements fall on open positions."""
    t = load_klines([data]).open_time
    first = (int(t[0]) // 3_600_000 + 1) * 3_600_000
    rows = ["calc_time,funding_interval_hours,last_funding_rate"]
    for k, ts in enumerate(range(first, int(t[-1]), 3_600_000)):
        rows.append(f"{ts + (k % 3) - 1},1,{(0.0003, -0.0002, 0.0001)[k % 3]:.8f}")
    path = tmp / "funding.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def start_demo(config: Path, data: Path, root: Path, funding: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "trade_btc.py"), "--demo", "--demo-data", str(data), "--demo-speed", "400",
         "--demo-funding", str(funding), "--config", str(config), "--root", str(root), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def daemon_fills(root: Path) -> list[tuple]:
    with open(root / "demo" / "trades" / "trades_btc.csv", newline="", encoding="utf-8") as fh:
        return [(r["time"], r["role"], r["side"], r["price"], r["quantity"]) for r in csv.DictReader(fh)]


def daemon_funding(root: Path) -> list[tuple[str, float]]:
    path = root / "demo" / "trades" / "funding_btc.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["time"], -float(r["income"])) for r in csv.DictReader(fh)]


def backtest_run(config: Path, data: Path, funding: Path):
    """The single-symbol backtest on the demo's account: its fills, funding and the account's
    final wallet (the symbol's final wallet plus the rest of the account, untouched)."""
    f = DEFAULT_FILTERS["BTCUSDC"]
    cfg = load_config(config)
    wallet, (capital,) = account_of([cfg])
    assert capital == cfg.initial_capital and wallet == pytest.approx(cfg.initial_capital / cfg.capital_ratio)
    res = run_backtest(cfg, load_klines([data]), f, capital=capital, wallet=wallet, funding=load_funding([funding]))
    fills = [(r.time_iso, r.role, r.side, f.fmt_price(r.price), f.fmt_qty(r.qty)) for r in res.fills]
    paid = [(datetime.fromtimestamp(x.time / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), x.amount)
            for x in res.funding]
    return fills, paid, res.final_wallet + (wallet - capital), wallet


def run_parity(tmp: Path, data: Path, directions=("LONG", "SHORT")) -> dict[str, tuple[list, list]]:
    """Fills must be equal; with a funding series on, the settlements and the final wallet too.
    The demos run side by side: lockstep waits for the daemon's acknowledgement of what it has
    done (Daemon.lockstep_view), so a busy machine slows them down but cannot change a fill."""
    funding = funding_file(tmp, data)
    runs = {}
    for d in directions:
        cfg, root = tight_config(tmp, d), tmp / f"root_{d}"
        runs[d] = (cfg, root, start_demo(cfg, data, root, funding))
    out = {}
    try:
        for d, (cfg, root, proc) in runs.items():
            stdout, err = proc.communicate(timeout=150)
            assert proc.returncode == 0, err[-2000:]
            assert "lockstep" not in _demo_log(root), f"{d}: the lockstep gave up waiting:\n" + _demo_log(root)[-2000:]
            fills, paid, wallet, start = backtest_run(cfg, data, funding)
            live_paid = daemon_funding(root)
            assert paid, f"{d}: no settlement on a position: funding parity untested"
            assert [t for t, _ in live_paid] == [t for t, _ in paid], d
            for (_, a), (_, b) in zip(live_paid, paid):
                assert a == pytest.approx(b, abs=1e-8), d
            assert float(re.search(r"wallet at start\s+(-?[\d.]+)", stdout).group(1)) == pytest.approx(start, abs=1e-6)
            demo_wallet = float(re.search(r"final wallet\s+(-?[\d.]+)", stdout).group(1))
            assert demo_wallet == pytest.approx(wallet, abs=1e-6), (d, demo_wallet, wallet)
            out[d] = (daemon_fills(root), fills)
    finally:
        for _, _, proc in runs.values():
            proc.kill()
            proc.wait()
    return out


def _demo_log(root: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((root / "demo" / "logs").glob("*.log")))


@pytest.mark.timeout(200)
def test_daemon_fills_equal_backtest_fills_on_synthetic_market(tmp_path):
    data = tmp_path / "synthetic.csv"
    write_klines_csv(synthetic_klines(200, seed=22, start_price=60_000.0), data)   # every role, both directions
    for direction, (live, bt) in run_parity(tmp_path, data).items():
        roles = {r[1] for r in bt}
        assert {"ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4", "TP", "BE", "SL"} <= roles, (direction, roles)
        assert live == bt, f"{direction}: first difference at " + str(
            next((i, a, b) for i, (a, b) in enumerate(zip(live, bt)) if a != b) if len(live) == len(bt)
            else (len(live), len(bt)))


@pytest.mark.timeout(200)
def test_daemon_fills_equal_backtest_fills_on_real_btc_candles(tmp_path):
    if not BTC_FILE.exists():
        pytest.skip(f"real kline data not available ({BTC_FILE} is absent; set GM_DATA_DIR)")
    rows = BTC_FILE.read_text(encoding="utf-8").splitlines()
    data = tmp_path / "btc_slice.csv"
    data.write_text("\n".join(rows[:401]) + "\n", encoding="utf-8")     # header + 400 real minutes
    live, bt = run_parity(tmp_path, data, directions=("LONG",))["LONG"]
    assert len(bt) >= 10
    assert live == bt
