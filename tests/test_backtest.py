"""Tests for backtest.py: the CLI end to end (real subprocesses, real files),
its error handling, strategy invariants on every real kline file in
/work/shared/data (LONG and SHORT), determinism, and fill-for-fill parity of
the fast TriggerScanner path with a slow driver that replays every candle.

The real data folder is located as <repo>/../shared/data, or $GM_DATA_DIR;
tests that need it skip with a reason when it is absent.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backtest import _counts_upto, run_backtest, summarize  # noqa: E402
from config import GridConfig, load_config  # noqa: E402
from exchange_api import OrderUpdate, SymbolFilters, run_sync  # noqa: E402
from sim.fill_model import candle_path  # noqa: E402
from grid_strategy import FillRecord, GridMartingaleStrategy  # noqa: E402
from market.data import Candles, load_klines, synthetic_klines, write_klines_csv  # noqa: E402
from sim.exchange import DEFAULT_FILTERS, SimulatedExchange, SimVenue  # noqa: E402

DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
DATA_FILES = sorted(DATA_DIR.glob("*.csv")) if DATA_DIR.is_dir() else []
NO_DATA = f"real kline folder {DATA_DIR} is absent (set GM_DATA_DIR to point at it)"

CONFIG = REPO / "config_btc.txt"
BTC = DEFAULT_FILTERS["BTCUSDC"]          # tick 0.1, step 0.001, minNotional 5
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ROLE_RE = re.compile(r"^(ENTRY[1-9]\d*|TP|BE|SL)$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED_COLUMNS = ["time", "role", "side", "price", "qty", "fee", "realized_pnl", "position_after",
                    "avg_price_after"]
SUMMARY_KEYS = ["candles", "fills", "roles", "net_pnl", "fees", "max_drawdown", "max_position_notional",
                "final_open_qty", "elapsed_s", "candles_per_s"]


def filters_for(path: Path) -> SymbolFilters:
    """Symbol filters of a real data file (see the data folder's README)."""
    name = path.name.upper()
    if "BTC" in name:
        return SymbolFilters("BTCUSDC", 0.01, 0.001, 0.001, 5.0)   # Binance.US spot: prices in cents
    for sym, tick, step in (("AVAXUSDT", 0.001, 1.0), ("FILUSDT", 0.001, 0.1), ("NEARUSDT", 0.001, 0.1),
                            ("DOTUSDT", 0.001, 0.1)):
        if sym in name:
            return SymbolFilters(sym, tick, step, step, 5.0)
    pytest.fail(f"no symbol filters known for data file {path.name}: add it to filters_for()")


# ---------------------------------------------------------------------------------------------
# Invariants of a run


def check_invariants(fills: list[FillRecord], cfg: GridConfig, filters: SymbolFilters, capital: float,
                     final_wallet: float, candles: Candles, label: str) -> None:
    s = cfg.side_sign
    lev = cfg.leverage
    step = filters.step_size
    qtol = step * 1e-6
    entry_side, exit_side = ("BUY", "SELL") if s > 0 else ("SELL", "BUY")

    # Conservation: every change of the wallet is a fill's realized PnL minus its fee.
    realized = math.fsum(f.realized_pnl for f in fills)
    fees = math.fsum(f.fee for f in fills)
    assert abs((realized - fees) - (final_wallet - capital)) <= 1e-6 * capital, (
        f"{label}: realized {realized} - fees {fees} != wallet change {final_wallet - capital}")

    cap_notional = capital * lev * sum(cfg.entry_ratios) * 1.06
    t_first, t_end = int(candles.open_time[0]), int(candles.open_time[-1]) + 60_000
    prev_t = t_first
    running = 0.0
    level1 = 0.0                       # ENTRY1 quantity of the current cycle (kept across a BE)
    filled_levels: set[int] = set()    # levels filled since the last grid placement
    for i, f in enumerate(fills):
        where = f"{label}: fill #{i} {f.role} {f.side} {f.qty}@{f.price} t={f.time_iso}"
        assert ROLE_RE.match(f.role), where
        assert t_first <= f.time_ms < t_end, f"{where}: time outside the data"
        assert f.time_ms >= prev_t, f"{where}: fills out of time order"
        prev_t = f.time_ms
        assert f.qty > 0 and f.price > 0, where
        assert f.fee >= 0, where
        running += f.qty if f.side == "BUY" else -f.qty
        assert abs(running - f.position_after) <= qtol, f"{where}: position_after {f.position_after} != {running}"
        assert s * f.position_after >= -qtol, f"{where}: position on the wrong side"
        assert abs(f.position_after) * f.price <= cap_notional, (
            f"{where}: notional {abs(f.position_after) * f.price:.2f} exceeds the configured {cap_notional:.2f}")
        if f.role.startswith("ENTRY"):
            level = int(f.role[5:])
            assert f.side == entry_side, where
            assert f.realized_pnl == 0.0, f"{where}: entry with realized PnL {f.realized_pnl}"
            planned = filters.qty_down(cfg.entry_ratios[level - 1] * capital * lev / f.price)
            assert f.qty <= planned + qtol, f"{where}: more than the level's planned {planned}"
            assert level not in filled_levels, f"{where}: level {level} filled twice in one grid"
            filled_levels.add(level)
            if level == 1:
                level1 += f.qty
        else:
            assert f.side == exit_side, where
        assert abs(f.qty / step - round(f.qty / step)) < 1e-6, f"{where}: qty off the step"
        if f.role.startswith("ENTRY"):
            assert abs(f.price / filters.tick_size - round(f.price / filters.tick_size)) < 1e-6, (
                f"{where}: price off the tick")
        if f.role in ("TP", "BE"):
            # Priced from the average after the previous fill, rounded toward more profit; an exit
            # placed when a gap has already passed it fills at once at the (better) market price.
            pct = cfg.tp_pct if f.role == "TP" else cfg.be_pct
            avg = fills[i - 1].avg_price_after
            want = filters.price_toward_profit(avg * (1.0 + s * pct), s)
            assert s * (f.price - want) > -filters.tick_size * 1e-6, f"{where}: expected {want} from average {avg}"
        if f.role in ("TP", "SL"):
            assert f.position_after == 0.0, f"{where}: {f.role} left {f.position_after} open"
        if f.role == "BE":
            assert abs(abs(f.position_after) - level1) <= qtol, (
                f"{where}: BE left {f.position_after}, the level-1 quantity is {level1}")
            filled_levels = {1} if level1 > 0 else set()
        if f.position_after == 0.0:
            level1 = 0.0
            filled_levels = set()


def check_equity(res, label: str) -> None:
    """equity[j] is the account at candle j's close, after that candle's fills; equity_worst[j] is
    no better than the account at the candle's open and just after each of its fills."""
    c, fills = res.candles, res.fills
    wallet = res.capital + np.cumsum([f.realized_pnl - f.fee for f in fills])
    qty = np.array([f.position_after for f in fills])
    avg = np.array([f.avg_price_after for f in fills])
    ftimes = np.array([f.time_ms for f in fills], dtype=np.int64)
    # State after the last fill of each candle (-1: before any fill).
    k = np.searchsorted(ftimes, c.open_time + 60_000, side="left") - 1
    w = np.where(k >= 0, wallet[k], res.capital) if len(fills) else np.full(len(c), res.capital)
    q = np.where(k >= 0, qty[k], 0.0) if len(fills) else np.zeros(len(c))
    a = np.where(k >= 0, avg[k], 0.0) if len(fills) else np.zeros(len(c))
    expected = w + q * (c.close - a)
    tol = 1e-6 * res.capital
    bad = np.flatnonzero(np.abs(res.equity - expected) > tol)
    assert len(bad) == 0, (f"{label}: equity at close of candle {bad[0]} ({c.time_iso(int(bad[0]))}) is "
                           f"{res.equity[bad[0]]}, the fills say {expected[bad[0]]} ({len(bad)} candles differ)")
    assert np.all(res.equity_worst <= res.equity + tol), label
    # At the open, the state of the previous close.
    prev_w, prev_q, prev_a = np.roll(w, 1), np.roll(q, 1), np.roll(a, 1)
    prev_w[0], prev_q[0], prev_a[0] = res.capital, 0.0, 0.0
    at_open = prev_w + prev_q * (c.open - prev_a)
    bad = np.flatnonzero(res.equity_worst > at_open + tol)
    assert len(bad) == 0, f"{label}: worst equity of candle {bad[0]} is above its value at the open"
    j_of_fill = np.searchsorted(c.open_time, ftimes, side="right") - 1
    price = np.array([f.price for f in fills])
    post_fill = wallet + qty * (price - avg) if len(fills) else np.zeros(0)
    # A limit the open gapped through fills at its limit while the market is at the open: on the
    # first leg the market at a fill lies between the open and the fill price, so bound by both.
    first_leg = ftimes == c.open_time[j_of_fill]
    post_open = wallet + qty * (c.open[j_of_fill] - avg) if len(fills) else np.zeros(0)
    post_fill = np.where(first_leg, np.maximum(post_fill, post_open), post_fill)
    bad = np.flatnonzero(res.equity_worst[j_of_fill] > post_fill + tol)
    assert len(bad) == 0, (f"{label}: worst equity of candle {j_of_fill[bad[0]]} "
                           f"({res.equity_worst[j_of_fill[bad[0]]]}) is above the account just after fill "
                           f"#{bad[0]} {fills[bad[0]].role} ({post_fill[bad[0]]})")


def check_summary(res, summary: dict) -> None:
    fills = res.fills
    assert summary["fills"] == len(fills)
    assert summary["candles"] == len(res.candles)
    assert summary["roles"] == dict(Counter(f.role for f in fills))
    assert summary["final_open_qty"] == pytest.approx(fills[-1].position_after if fills else 0.0, abs=1e-9)
    assert res.final_qty == pytest.approx(fills[-1].position_after if fills else 0.0, abs=1e-9)
    assert summary["max_drawdown"] >= 0
    assert summary["final_equity"] == pytest.approx(float(res.equity[-1]), rel=1e-9, abs=1e-6)
    assert np.all(res.equity_worst <= res.equity + 1e-9)


# ---------------------------------------------------------------------------------------------
# CLI end to end

CLI_SEED, CLI_CANDLES = 1, 3 * 1440     # seed 1 reaches every role (ENTRY1..4, TP, BE, SL) both ways


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "backtest.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def read_trades(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """LONG (with chart and custom fees) and SHORT (--no-chart), run concurrently."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "synthetic.csv"
    write_klines_csv(synthetic_klines(CLI_CANDLES, CLI_SEED), data)
    common = ["--config", str(CONFIG), "--data", str(data)]
    runs = {
        "LONG": (tmp / "long", [*common, "--out", str(tmp / "long"), "--maker-fee", "0.0001",
                                "--taker-fee", "0.0005"]),
        "SHORT": (tmp / "short", [*common, "--direction", "short", "--out", str(tmp / "short"), "--no-chart"]),
    }
    procs = {k: subprocess.Popen([sys.executable, "backtest.py", *a], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, (_, a) in runs.items()}
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[k] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr, "out": runs[k][0], "data": data}
    return out


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_cli_outputs_are_consistent(cli_runs, direction):
    run = cli_runs[direction]
    assert run["rc"] == 0, run["stderr"]
    out: Path = run["out"]
    columns, rows = read_trades(out / "trades.csv")
    assert set(REQUIRED_COLUMNS) <= set(columns), columns
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in SUMMARY_KEYS:
        assert key in summary, key

    assert summary["candles"] == CLI_CANDLES == len(load_klines([run["data"]]))
    assert summary["fills"] == len(rows) > 0
    assert summary["roles"] == dict(Counter(r["role"] for r in rows))
    assert {"ENTRY1", "ENTRY2", "TP", "BE", "SL"} <= set(summary["roles"]), summary["roles"]
    assert summary["elapsed_s"] > 0
    assert summary["candles_per_s"] == pytest.approx(summary["candles"] / summary["elapsed_s"], rel=0.01, abs=1)

    entry_side, exit_side = ("BUY", "SELL") if direction == "LONG" else ("SELL", "BUY")
    realized = fees = 0.0
    pos = max_notional = 0.0
    times = []
    for r in rows:
        assert ISO_UTC.match(r["time"]), r["time"]
        assert ROLE_RE.match(r["role"]), r["role"]
        assert r["side"] == (entry_side if r["role"].startswith("ENTRY") else exit_side), r
        price, qty, fee = float(r["price"]), float(r["qty"]), float(r["fee"])
        rp, after = float(r["realized_pnl"]), float(r["position_after"])
        float(r["avg_price_after"])
        if r["role"].startswith("ENTRY"):
            assert rp == 0.0, r
        if r["role"] in ("TP", "SL"):
            assert after == 0.0, r
        pos += qty if r["side"] == "BUY" else -qty
        assert after == pytest.approx(pos, abs=1e-9), r
        realized += rp
        fees += fee
        max_notional = max(max_notional, abs(after) * price)
        times.append(r["time"])
        if direction == "LONG":     # --maker-fee 0.0001 --taker-fee 0.0005 reached the fills
            rate = 0.0005 if r["role"] == "SL" else 0.0001
            assert fee == pytest.approx(rate * price * qty, abs=2e-8), r
    assert times == sorted(times)
    # Funding is on by default (Binance's baseline 0.01 % per 8 h): funding.csv holds every settlement.
    with open(out / "funding.csv", newline="", encoding="utf-8") as fh:
        frows = list(csv.DictReader(fh))
    for r in frows:
        assert float(r["amount"]) == pytest.approx(float(r["position"]) * float(r["mark_price"]) * float(r["rate"]),
                                                   abs=1e-8), r
        assert float(r["rate"]) == 0.0001 and r["time"][11:19] in ("00:00:00", "08:00:00", "16:00:00"), r
    paid = sum(float(r["amount"]) for r in frows)
    assert frows and summary["funding_paid"] == pytest.approx(paid, abs=1e-6)
    clearance = sum(x["insurance_clearance"] for x in summary["liquidations"])
    assert summary["net_pnl"] == pytest.approx(realized - fees - paid - clearance, abs=1e-6 * len(rows) + 1e-8)
    assert summary["fees"] == pytest.approx(fees, abs=1e-6 * len(rows) + 1e-8)
    assert summary["max_position_notional"] == pytest.approx(max_notional, rel=1e-6)
    assert summary["final_open_qty"] == pytest.approx(float(rows[-1]["position_after"]), abs=1e-9)
    assert summary["max_drawdown"] >= 0
    if direction == "LONG":
        assert fees > 0
    else:
        assert summary["direction"] == "SHORT"

    # The printed table.
    text = run["stdout"]
    assert "fills" in text and "net PnL" in text, text
    assert f"{summary['fills']:,}" in text
    assert f"{summary['net_pnl']:+,.2f}" in text


def test_cli_chart_is_png_unless_no_chart(cli_runs):
    png = cli_runs["LONG"]["out"] / "equity.png"
    assert png.is_file()
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000     # a real figure, not an empty canvas
    assert cli_runs["SHORT"]["rc"] == 0
    assert not (cli_runs["SHORT"]["out"] / "equity.png").exists()


def test_cli_matches_in_process_run(cli_runs):
    """The CLI's trades.csv is exactly run_backtest's fills, formatted."""
    run = cli_runs["SHORT"]
    cfg = load_config(CONFIG).with_overrides(trade_direction="SHORT")
    res = run_backtest(cfg, load_klines([run["data"]]), BTC)
    _, rows = read_trades(run["out"] / "trades.csv")
    assert [(r["time"], r["role"], r["side"], r["price"], r["qty"]) for r in rows] == [
        (f.time_iso, f.role, f.side, BTC.fmt_price(f.price), BTC.fmt_qty(f.qty)) for f in res.fills]


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_missing_data_file(tmp_path):
    missing = tmp_path / "nope.csv"
    line = _one_line_error(run_cli("--config", str(CONFIG), "--data", str(missing), "--out", str(tmp_path / "o")))
    assert "nope.csv" in line and "missing" in line, line
    assert not (tmp_path / "o" / "trades.csv").exists()


def test_cli_malformed_data_file(tmp_path):
    data = tmp_path / "bad.csv"
    write_klines_csv(synthetic_klines(50, 3), data)
    lines = data.read_text(encoding="utf-8").splitlines()
    cells = lines[5].split(",")            # file line 6 (line 1 is the header)
    cells[4] = "abc"                       # the close
    lines[5] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    line = _one_line_error(run_cli("--config", str(CONFIG), "--data", str(data), "--out", str(tmp_path / "o")))
    assert "bad.csv" in line and "line 6" in line and "abc" in line, line
    assert not (tmp_path / "o" / "trades.csv").exists()


def test_cli_bad_config(tmp_path):
    data = tmp_path / "ok.csv"
    write_klines_csv(synthetic_klines(50, 3), data)
    text = CONFIG.read_text(encoding="utf-8").splitlines()
    lineno = next(i for i, t in enumerate(text, 1) if t.startswith("LEVERAGE_LONG="))
    text[lineno - 1] = "LEVERAGE_LONG=500"
    cfg = tmp_path / "bad_config.txt"
    cfg.write_text("\n".join(text) + "\n", encoding="utf-8")
    line = _one_line_error(run_cli("--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o")))
    assert "bad_config.txt" in line and "LEVERAGE_LONG" in line and str(lineno) in line, line
    assert not (tmp_path / "o" / "trades.csv").exists()


# ---------------------------------------------------------------------------------------------
# Every real data file, LONG and SHORT

_candles_cache: dict[Path, Candles] = {}


def real_candles(path: Path) -> Candles:
    if path not in _candles_cache:
        _candles_cache[path] = load_klines([path])
    return _candles_cache[path]


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
@pytest.mark.parametrize("path", DATA_FILES or [None], ids=lambda p: p.name if p else "no-data")
def test_real_data_invariants_and_determinism(path, direction):
    if path is None:
        pytest.skip(NO_DATA)
    filters = filters_for(path)
    candles = real_candles(path)
    cfg = load_config(CONFIG).with_overrides(trade_direction=direction)
    res = run_backtest(cfg, candles, filters)
    assert len(res.fills) > 50, f"{path.name} {direction}: too few fills to mean anything"
    check_invariants(res.fills, cfg, filters, res.capital, res.final_wallet, candles, f"{path.name} {direction}")
    check_summary(res, summarize(res))
    check_equity(res, f"{path.name} {direction}")
    again = run_backtest(cfg, candles, filters)
    assert again.fills == res.fills, f"{path.name} {direction}: a second run differs"
    assert again.final_wallet == res.final_wallet


# ---------------------------------------------------------------------------------------------
# Parity: the fast scan against replaying every candle


def run_reference(cfg: GridConfig, candles: Candles, filters: SymbolFilters) -> tuple[list[FillRecord], SimulatedExchange]:
    """backtest.run_backtest without TriggerScanner: every candle's path is replayed."""
    capital = float(cfg.initial_capital)
    sim = SimulatedExchange([filters], balance=capital, maker_fee=cfg.maker_fee, taker_fee=cfg.taker_fee,
                            leverage=cfg.leverage)
    symbol = filters.symbol
    fills: list[FillRecord] = []
    quiet = logging.getLogger("test.backtest.reference")
    quiet.setLevel(logging.CRITICAL)
    venue = SimVenue(sim, symbol)
    venue.log = quiet
    strategy = GridMartingaleStrategy(cfg, venue, capital=capital, logger=quiet, on_fill=fills.append)

    def deliver() -> None:
        while sim.events:
            for ev in sim.drain_events():
                if type(ev) is OrderUpdate and ev.exec_type != "NEW":
                    run_sync(strategy.on_order_update(ev))

    first = float(candles.close[0])
    sim.now_ms = int(candles.open_time[0])
    sim.set_price(symbol, first)
    run_sync(strategy.on_candle_closed(first))
    deliver()
    for j in range(1, len(candles)):
        o, h, l, c = (float(candles.open[j]), float(candles.high[j]), float(candles.low[j]),
                      float(candles.close[j]))
        t = int(candles.open_time[j])
        sim.now_ms = t
        sim.set_price(symbol, o)
        run_sync(strategy.on_price(o))
        deliver()
        path = candle_path(o, h, l, c)
        for k in (1, 2, 3):
            sim.now_ms = t + (k - 1) * 20_000
            while sim.advance(symbol, path[k]):
                deliver()
            run_sync(strategy.on_price(path[k]))
            deliver()
    return fills, sim


TIGHT = dict(grid_range_pct=0.01, level_distances=(0.002, 0.004, 0.008, 0.012), sl_distance=0.015,
             tp_pct=0.002, be_pct=0.0005, maker_fee=0.0002)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
@pytest.mark.parametrize("seed,tight", [(0, False), (1, False), (5, False), (1, True), (7, True)])
def test_fast_scan_matches_full_replay(seed, tight, direction):
    candles = synthetic_klines(2 * 1440, seed)
    cfg = load_config(CONFIG).with_overrides(trade_direction=direction, **(TIGHT if tight else {}))
    res = run_backtest(cfg, candles, BTC)
    ref_fills, sim = run_reference(cfg, candles, BTC)
    assert len(ref_fills) >= 15, "the series must exercise the strategy"
    if tight:
        assert {"ENTRY4", "TP", "BE", "SL"} <= {f.role for f in ref_fills}
    assert res.replayed_candles < len(candles) // 2, "the fast path should skip most candles"
    for i, (a, b) in enumerate(zip(res.fills, ref_fills)):
        assert a == b, f"fill #{i} differs:\n fast {a}\n full {b}"
    assert len(res.fills) == len(ref_fills)
    assert res.final_wallet == sim.wallet
    assert res.final_qty == sim.books[BTC.symbol].position.qty
    assert res.fees == sim.total_fees
    check_invariants(res.fills, cfg, BTC, res.capital, res.final_wallet, candles, f"synthetic seed {seed}")
    check_equity(res, f"synthetic seed {seed} {direction}")


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_fast_scan_matches_full_replay_on_real_data(direction):
    """A week of the +126 % DOT month: gaps, deep levels and stops on real prices."""
    path = next((p for p in DATA_FILES if "DOTUSDT" in p.name), None)
    if path is None:
        pytest.skip(NO_DATA)
    filters = filters_for(path)
    candles = real_candles(path).slice(0, 7 * 1440)
    cfg = load_config(CONFIG).with_overrides(trade_direction=direction)
    res = run_backtest(cfg, candles, filters)
    ref_fills, sim = run_reference(cfg, candles, filters)
    assert len(ref_fills) >= 50
    assert res.fills == ref_fills
    assert res.final_wallet == sim.wallet


def test_a_finished_backtest_leaves_no_reference_cycle():
    """The strategy's ladder holds the strategy weakly, as the simulator's parts hold it: a run's
    strategy, venue and simulator are freed at once, never left to the cyclic collector (which a
    backtest turns off while it runs, so a cycle would make every run walk the last one's
    objects)."""
    import gc
    cfg = load_config(REPO / "config_btc.txt")
    candles = synthetic_klines(2_000, seed=5, start_price=60_000.0)
    gc.collect()
    was_on = gc.isenabled()
    gc.disable()
    try:
        res = run_backtest(cfg, candles, DEFAULT_FILTERS["BTCUSDC"])
        assert res.fills, "the synthetic market should trade"
        del res
        assert gc.collect() == 0
    finally:
        if was_on:
            gc.enable()


def test_the_curves_segment_index_is_a_count_of_the_starts_at_or_before_each_minute():
    """`_counts_upto` (each minute's segment, for every equity curve) is searchsorted's answer,
    with several starts in one minute, starts past the window, and windows inside the series."""
    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(1, 300))
        starts = np.sort(rng.integers(0, n + 3, int(rng.integers(0, 40)))).astype(np.int64)
        a = int(rng.integers(0, n))
        b = int(rng.integers(a + 1, n + 1))
        want = np.searchsorted(starts, np.arange(a, b), side="right")
        assert np.array_equal(_counts_upto(starts, a, b), want), (starts.tolist(), a, b)
