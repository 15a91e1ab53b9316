"""The dashboard in a real headless Chromium (selenium and Debian's chromium-driver): the page
renders a demo's files, its numbers equal the state file and the trades CSV, it updates
itself without a reload, a screenshot is taken, and the browser logs no error."""
from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SYSTEM_SKIP
from harness import clean_env, free_port

REPO = Path(__file__).resolve().parents[1]


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


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
    found = _chromium()
    if found is None:
        pytest.skip(f"{SYSTEM_SKIP} Chromium and its driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "dashboard.py"), "--root", str(demo_root),
                               "--port", str(port), "--env", str(tmp_path / "none.env")],
                              env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1400", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        deadline = time.monotonic() + 15
        while True:                 # the server is up once its port answers
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
                time.sleep(0.1)
        driver = webdriver.Chrome(service=Service(found[1]), options=opts)
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-symbol='BTCUSDC']"))
        card = driver.find_element(By.CSS_SELECTOR, "[data-symbol='BTCUSDC'][data-mode='demo']")

        def field(name: str) -> str:
            return card.find_element(By.CSS_SELECTOR, f"[data-field='{name}']").text

        st = json.loads((demo_root / "demo" / "state" / "state_btc.json").read_text())
        with open(demo_root / "demo" / "trades" / "trades_btc.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows, "the demo made no trade: nothing to compare"
        assert float(field("position-qty")) == pytest.approx(st["position"]["qty"], abs=1e-6)
        assert float(field("position-avg")) == pytest.approx(st["position"]["avg_price"], abs=0.006)
        assert int(field("open-orders")) == len(st["orders"])
        assert int(field("fills")) == len(rows)
        assert float(field("pnl-total")) == pytest.approx(
            sum(float(r["realized_pnl"]) - float(r["fee"]) for r in rows), abs=0.006)
        assert int(field("deepest-level")) == st["position"]["deepest_level"]
        assert field("running") == "not running" and field("direction") == st["direction"]
        lines = [ln for ln in (demo_root / "demo" / "logs").glob("*.log")]
        assert field("log").splitlines()[-1] == lines[0].read_text().splitlines()[-1]
        ladder = card.find_element(By.CSS_SELECTOR, "svg[data-chart='ladder']")
        assert len(ladder.find_elements(By.TAG_NAME, "line")) >= len(st["orders"])
        # It updates itself: a new state file shows without a reload.
        st["position"]["deepest_level"] = 3
        (demo_root / "demo" / "state" / "state_btc.json").write_text(json.dumps(st))
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "[data-symbol='BTCUSDC'] [data-field='deepest-level']").text
            == "3")
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(10)
