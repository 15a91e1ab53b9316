"""Parity: the daemon, trading the local exchange in lockstep (`trade_btc.py --demo
--demo-data`, real processes over loopback), fills exactly as the backtest does
over the same config and candles."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backtest import run_backtest
from config import load_config
from harness import TIGHT, with_values
from market_data import load_klines, synthetic_klines, write_klines_csv
from sim_exchange import DEFAULT_FILTERS

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR", ROOT.parent / "shared" / "data"))
BTC_FILE = DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"

def tight_config(tmp: Path, direction: str) -> Path:
    text = (ROOT / "config_btc.txt").read_text(encoding="utf-8")
    path = tmp / f"config_{direction.lower()}.txt"
    path.write_text(with_values(text, {**TIGHT, "TRADE_DIRECTION": direction}), encoding="utf-8")
    return path


def start_demo(config: Path, data: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "trade_btc.py"), "--demo", "--demo-data", str(data), "--demo-speed", "400",
         "--config", str(config), "--root", str(root), "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def daemon_fills(root: Path) -> list[tuple]:
    with open(root / "demo" / "trades" / "trades_btc.csv", newline="", encoding="utf-8") as fh:
        return [(r["time"], r["role"], r["side"], r["price"], r["quantity"]) for r in csv.DictReader(fh)]


def backtest_fills(config: Path, data: Path) -> list[tuple]:
    f = DEFAULT_FILTERS["BTCUSDC"]
    res = run_backtest(load_config(config), load_klines([data]), f)
    return [(r.time_iso, r.role, r.side, f.fmt_price(r.price), f.fmt_qty(r.qty)) for r in res.fills]


def run_parity(tmp: Path, data: Path, directions=("LONG", "SHORT")) -> dict[str, tuple[list, list]]:
    procs = {}
    for d in directions:
        cfg = tight_config(tmp, d)
        procs[d] = (cfg, tmp / f"root_{d}", start_demo(cfg, data, tmp / f"root_{d}"))
    out = {}
    for d, (cfg, root, proc) in procs.items():
        try:
            _, err = proc.communicate(timeout=150)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-2000:]
        out[d] = (daemon_fills(root), backtest_fills(cfg, data))
    return out


@pytest.mark.timeout(200)
def test_daemon_fills_equal_backtest_fills_on_synthetic_market(tmp_path):
    data = tmp_path / "synthetic.csv"
    write_klines_csv(synthetic_klines(400, seed=5, start_price=60_000.0), data)
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
