"""The account's line (SPEC §7: several symbols, one wallet) in status.sh, the dashboard and
the metrics (issue 22, deliverable 6).

Every daemon of an account writes its own copy of the account's last read into its state
file (the "account" object); status and the dashboard show the newest one, once, above the
symbols, with the margin ratio (maintenance margin / equity: liquidated at 100 %) and the
distance to the account's liquidation (equity − maintenance margin); a state file without
it shows the account as unknown.  Real files written by StateManager, status.py and
dashboard.py as real processes, the page in a real headless Chromium, the metrics of a real
demo daemon.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from harness import clean_env, free_port
from state_manager import GridState, StateManager
from browser import browser, dashboard, fields, need_chromium, severe_console_errors, wait_fields

REPO = Path(__file__).resolve().parents[1]

T_BTC = 1_780_000_000_000                    # BTC's daemon read the account first …
T_ETH = T_BTC + 60_000                       # … ETH's a minute later: the newest
# Not in the account object the daemon writes; a field outside the known ones must never be shown.
STRAY = "stray-field-secret-7f3a9c"


def read(wallet: float, equity: float, maint: float, when: int, peak: float = 0.0, stop: float = 0.0,
         stopped_at: int = 0) -> dict[str, Any]:
    """An account object as live/account_guard.snapshot_for_state writes it."""
    return {"wallet": wallet, "equity": equity, "maint_margin": maint, "margin_ratio": round(maint / equity, 8),
            "peak_equity": peak, "stop_equity": stop, "stopped_at": stopped_at, "time": when}


BTC_READ = read(10_250.0, 9_910.0, 123.45, T_BTC)
ETH_READ = read(10_250.0, 9_387.66, 612.34, T_ETH, peak=10_500.0, stop=8_400.0)


def write_state(base: Path, symbol: str, account: dict[str, Any] | None, **extra: Any) -> Path:
    """A daemon's state file as StateManager writes it; account None: an older state file
    without the key at all."""
    st = GridState(symbol=symbol, direction="LONG", capital=3_382.5, grid_center=60_000.0, generation=1)
    st.position.reset(4)
    st.account = dict(account or {})
    for k, v in extra.items():
        setattr(st, k, v)
    short = symbol[:-4].lower()
    path = base / "state" / f"state_{short}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    StateManager(path).save(st)
    if account is None:
        data = json.loads(path.read_text())
        del data["account"]
        path.write_text(json.dumps(data))
    return path


def status(root: Path, *symbols: str) -> str:
    r = subprocess.run([sys.executable, str(REPO / "status.py"), "--root", str(root), *symbols], cwd="/tmp",
                       env=clean_env(), capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def utc(ms: int, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(fmt) + " UTC"


# ---------------------------------------------------------------------- status.sh
@pytest.mark.timeout(30)
def test_status_shows_the_newest_account_read_once_above_both_symbols(tmp_path: Path):
    write_state(tmp_path, "BTCUSDC", BTC_READ)
    write_state(tmp_path, "ETHUSDC", {**ETH_READ, "api_key": STRAY})
    out = status(tmp_path)
    assert out.count("== ACCOUNT") == 1, out
    assert out.index("== ACCOUNT") < out.index("== BTCUSDC") < out.index("== ETHUSDC")
    account = out[out.index("== ACCOUNT"):out.index("== BTCUSDC")]
    # ETH's read (the newest): 612.34 / 9,387.66 = 6.5228 %; 9,387.66 − 612.34 = 8,775.32 = 93.4772 % of equity.
    assert "== ACCOUNT: wallet $10,250.00, equity $9,387.66, margin ratio 6.52 % (liquidated at 100 %)" in account
    assert "to the account's liquidation: $8,775.32 (93.48 % of equity; maintenance margin $612.34)" in account
    # The account stop is on: its peak and level, and how far the equity is above it (987.66).
    assert "account stop: peak equity $10,500.00, stop level $8,400.00 ($987.66 above it)" in account
    assert f"as of {utc(T_ETH, '%Y-%m-%d %H:%M:%S')} (ETHUSDC's read" in account
    assert "STOPPED" not in out
    # BTC's older read is not shown anywhere; the stray field neither.
    assert "9,910.00" not in out and "123.45" not in out and "1.25 %" not in out
    assert STRAY not in out
    # Asked for one symbol, the account line still heads it (the account is every symbol's).
    one = status(tmp_path, "btc")
    assert one.index("== ACCOUNT: wallet $10,250.00, equity $9,387.66") < one.index("== BTCUSDC")
    assert "== ETHUSDC" not in one


@pytest.mark.timeout(30)
def test_status_says_unknown_when_no_state_file_holds_an_account_read(tmp_path: Path):
    write_state(tmp_path, "BTCUSDC", None)                  # an older state file: no "account" key
    write_state(tmp_path, "ETHUSDC", {})                    # a daemon that has not read the account yet
    out = status(tmp_path)
    assert out.splitlines()[0] == "== ACCOUNT: unknown (no state file holds an account read yet)"
    assert out.count("== ACCOUNT") == 1
    assert "== BTCUSDC: not running" in out and "== ETHUSDC: not running" in out
    assert "position 0.000000 @ $0.00" in out                # the symbols' rows are all there
    # A malformed read (a torn write, a string for a number) is unknown too, never a guess.
    write_state(tmp_path, "ETHUSDC", {**ETH_READ, "equity": "9387.66"})
    assert status(tmp_path).splitlines()[0].startswith("== ACCOUNT: unknown")
    # No state file at all: still one line, unknown.
    assert status(tmp_path / "empty").splitlines()[0].startswith("== ACCOUNT: unknown")


@pytest.mark.timeout(30)
def test_status_shows_the_account_stop_that_fired_and_the_demo_account_apart(tmp_path: Path):
    fired = T_ETH - 30_000
    write_state(tmp_path, "BTCUSDC", read(10_250.0, 8_300.0, 0.0, T_ETH, peak=10_500.0, stop=8_400.0,
                                          stopped_at=fired), account_stopped_at=fired)
    write_state(tmp_path, "ETHUSDC", ETH_READ | {"time": T_BTC})
    # The demo is another account (its own local exchange): its own line, marked.
    write_state(tmp_path / "demo", "SOLUSDC", read(1_000.0, 960.0, 48.0, T_BTC))
    out = status(tmp_path, "btc", "eth", "sol")
    live = out[out.index("== ACCOUNT:"):out.index("== ACCOUNT [demo]")]
    assert "equity $8,300.00, margin ratio 0.00 %" in live
    assert "to the account's liquidation: $8,300.00 (100.00 % of equity" in live
    assert "account stop: peak equity $10,500.00, stop level $8,400.00\n" in live     # no headroom once fired
    assert f"STOPPED at {utc(fired)}" in live
    demo = out[out.index("== ACCOUNT [demo]"):out.index("== BTCUSDC")]
    # 48 / 960 = 5 %; 912 to liquidation = 95 % of equity; no account stop configured.
    assert "== ACCOUNT [demo]: wallet $1,000.00, equity $960.00, margin ratio 5.00 %" in demo
    assert "$912.00 (95.00 % of equity" in demo and "account stop" not in demo
    assert out.count("== ACCOUNT") == 2
    btc = out[out.index("== BTCUSDC"):out.index("== ETHUSDC")]
    assert f"stopped by the account stop at {utc(fired)}" in btc


# ---------------------------------------------------------------------- the dashboard
@pytest.mark.timeout(90)
def test_the_dashboard_shows_the_account_line_above_the_symbols_in_a_real_browser(tmp_path: Path):
    need_chromium()
    root = tmp_path / "root"
    write_state(root, "BTCUSDC", BTC_READ)
    write_state(root, "ETHUSDC", {**ETH_READ, "api_key": STRAY})
    write_state(root / "demo", "SOLUSDC", None, demo=True)  # a demo account never read: unknown
    with dashboard(root, tmp_path) as url, browser() as driver:
        driver.get(url + "/")
        wait_fields(driver, "[data-symbol='ETHUSDC']")
        assert driver.execute_script("return document.querySelectorAll(\"[data-account='live']\").length") == 1
        box = wait_fields(driver, "[data-account='live']")          # once, not per symbol
        assert box["account-wallet"] == "10,250.00"
        assert box["account-equity"] == "9,387.66"
        assert box["account-margin-ratio"] == "6.52 %"
        assert box["account-to-liquidation"] == "8,775.32"
        assert box["account-to-liquidation-pct"] == "93.48 %"
        assert box["account-peak"] == "10,500.00" and box["account-stop"] == "8,400.00"
        assert "account-stopped" not in box
        assert "ETHUSDC's read" in box["account-read"]
        # Above the symbols: before every card on the page, and drawn higher.
        first_card = fields(driver, "[data-symbol]")
        assert first_card is not None and box["@bottom"] <= first_card["@top"]
        demo = wait_fields(driver, "[data-account='demo']")
        assert demo["account-unknown"].startswith("unknown") and "account-equity" not in demo
        assert STRAY not in driver.page_source
        # BTC's daemon reads the account again, and the stop has fired: the page follows without a reload.
        fired = T_ETH + 50_000
        write_state(root, "BTCUSDC", read(10_250.0, 8_200.0, 410.0, T_ETH + 60_000, peak=10_500.0, stop=8_400.0,
                                          stopped_at=fired))
        box = wait_fields(driver, "[data-account='live']", lambda f: f.get("account-equity") == "8,200.00", 10)
        assert box["account-margin-ratio"] == "5.00 %" and box["account-to-liquidation"] == "7,790.00"
        assert box["account-to-liquidation-pct"] == "95.00 %"
        assert box["account-stopped"] == f"STOPPED at {utc(fired, '%Y-%m-%d %H:%M:%S')}"
        shot = tmp_path / "account.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        errors = severe_console_errors(driver)
        assert not errors, errors


# ---------------------------------------------------------------------- the metrics
def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


GAUGES = {"gm_account_wallet": "wallet", "gm_account_equity": "equity", "gm_account_maint_margin": "maint_margin",
          "gm_account_margin_ratio": "margin_ratio", "gm_account_peak_equity": "peak_equity",
          "gm_account_stop_equity": "stop_equity"}


def _agree(text: str, account: dict[str, Any]) -> bool:
    return bool(account) and all(metric(text, name, symbol="BTCUSDC") == pytest.approx(account[key], abs=1e-6)
                                 for name, key in GAUGES.items())


@pytest.mark.timeout(120)
async def test_the_metrics_serve_the_account_read_of_the_state(tmp_path: Path):
    """A demo daemon with ACCOUNT_STOP_DRAWDOWN on and metrics: the gm_account_* gauges are
    the account object its state file carries (compared at a moment the file did not change
    around a scrape), and the daemon goes on reading the account as the market moves."""
    root = tmp_path / "root"
    root.mkdir()
    cfg = root / "config_btc.txt"
    cfg.write_text(re.sub(r"(?m)^ACCOUNT_STOP_DRAWDOWN=.*$", "ACCOUNT_STOP_DRAWDOWN=0.3",
                          (REPO / "config_btc.txt").read_text()))
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "trade.py"), "BTCUSDC", "--demo", "--demo-speed", "60",
                             "--demo-minutes", "3000", "--sync-interval", "0.5", "--config", str(cfg),
                             "--root", str(root), "--quiet", "--metrics-port", str(port),
                             "--env", str(root / "none.env")],
                            cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_path = root / "demo" / "state" / "state_btc.json"
    reads: set[int] = set()
    agreed: dict[str, Any] = {}
    text = ""
    try:
        async with ClientSession() as http:
            deadline = time.monotonic() + 60
            while not (agreed and len(reads) >= 3):
                assert time.monotonic() < deadline and proc.poll() is None, \
                    f"the account gauges never agreed with the state file (reads seen: {len(reads)})\n{text[-1500:]}"
                await asyncio.sleep(0.1)
                try:
                    before = state_path.read_text()
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                        text = await r.text()
                except OSError:
                    continue
                if state_path.read_text() != before:
                    continue                        # the file changed around the scrape: try again
                account = json.loads(before).get("account") or {}
                if account:
                    reads.add(account["time"])
                if _agree(text, account):
                    agreed = account
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert agreed["equity"] > 0 and agreed["stop_equity"] == pytest.approx(0.7 * agreed["peak_equity"])
    assert metric(text, "gm_account_stopped", symbol="BTCUSDC") in (0.0, 1.0)
    assert "# HELP gm_account_margin_ratio" in text


def test_status_pointed_at_a_demos_own_folder_says_demo(tmp_path: Path):
    """`status.py --root demo`: the files say demo (the state records it), not the folder."""
    base = tmp_path / "demo-copy"
    write_state(base, "BTCUSDC", BTC_READ, demo=True)
    write_state(base, "ETHUSDC", ETH_READ, demo=True)
    out = status(base, "btc", "eth")
    assert "== ACCOUNT [demo]" in out and "== BTCUSDC [demo]" in out and "== ETHUSDC [demo]" in out
    write_state(base, "ETHUSDC", ETH_READ)                  # a live daemon's state beside it
    out = status(base, "btc", "eth")
    assert "== ACCOUNT [demo]" not in out and "== BTCUSDC [demo]" in out
    assert "== ETHUSDC [demo]" not in out and "== ETHUSDC" in out
