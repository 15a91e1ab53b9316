"""The dashboard in a real headless Chromium (selenium and Debian's chromium-driver): the page
renders a demo's files, its numbers equal the state file and the trades CSV, it updates
itself without a reload, a screenshot is taken, and the browser logs no error."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from browser import browser, dashboard, need_chromium, severe_console_errors, wait_fields
from harness import clean_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A finished 900-minute synthetic demo of BTCUSDC: its state, trades and logs."""
    root = tmp_path_factory.mktemp("dash")
    r = subprocess.run([sys.executable, str(REPO / "trade_btc.py"), "--demo", "--demo-minutes", "900",
                        "--demo-speed", "600", "--root", str(root), "--quiet", "--env", str(root / "none.env")],
                       cwd=root, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


@pytest.mark.timeout(120)
def test_the_dashboard_in_a_real_browser_shows_the_files_numbers(demo_root, tmp_path):
    need_chromium()
    with dashboard(demo_root, tmp_path) as url, browser() as driver:
        driver.get(url + "/")
        card = wait_fields(driver, "[data-symbol='BTCUSDC'][data-mode='demo']")
        st = json.loads((demo_root / "demo" / "state" / "state_btc.json").read_text())
        with open(demo_root / "demo" / "trades" / "trades_btc.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows, "the demo made no trade: nothing to compare"
        assert float(card["position-qty"]) == pytest.approx(st["position"]["qty"], abs=1e-6)
        assert float(card["position-avg"]) == pytest.approx(st["position"]["avg_price"], abs=0.006)
        assert int(card["open-orders"]) == len(st["orders"])
        assert int(card["fills"]) == len(rows)
        assert float(card["pnl-total"]) == pytest.approx(
            sum(float(r["realized_pnl"]) - float(r["fee"]) for r in rows), abs=0.006)
        assert int(card["deepest-level"]) == st["position"]["deepest_level"]
        assert card["running"] == "not running" and card["direction"] == st["direction"]
        lines = [ln for ln in (demo_root / "demo" / "logs").glob("*.log")]
        assert card["log"].splitlines()[-1] == lines[0].read_text().splitlines()[-1]
        ladder_lines = driver.execute_script(
            "return document.querySelectorAll(\"[data-symbol='BTCUSDC'] svg[data-chart='ladder'] line\").length")
        assert ladder_lines >= len(st["orders"])
        # It updates itself: a new state file shows without a reload.
        st["position"]["deepest_level"] = 3
        (demo_root / "demo" / "state" / "state_btc.json").write_text(json.dumps(st))
        wait_fields(driver, "[data-symbol='BTCUSDC']", lambda f: f.get("deepest-level") == "3", 10)
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        errors = severe_console_errors(driver)
        assert not errors, errors
