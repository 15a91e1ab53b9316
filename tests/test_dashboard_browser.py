"""The dashboard in a real headless Chromium (selenium and Debian's chromium-driver), on a finished
demo's files: every chart is drawn with its axes and data, the numbers on the page equal the
state file and the trades CSV, the labels say what the files say (demo, the market's day),
Korean text has a face, the symbols sit side by side at 1400 px and stack at 400 px, a
screenshot at both widths is kept, and the browser logs no error."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from browser import browser, dashboard, fields, need_chromium, severe_console_errors, wait_fields
from conftest import SYSTEM_SKIP
from harness import clean_env

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("GM_ARTIFACTS") or REPO / "test-artifacts")
SYMBOL_CHARTS = ("price", "equity", "funding")
ACCOUNT_CHARTS = ("account-equity", "account-margin-ratio", "account-to-liquidation")

# Every Plotly chart under a selector: its traces' point counts, its axes' types and the tick
# labels drawn on each axis (Plotly keeps the figure on the div it draws into).
READ_CHARTS = """
const out = {};
for (const div of document.querySelectorAll(arguments[0] + ' [data-chart]')) {
  const lay = div._fullLayout || {};
  out[div.dataset.chart] = {
    points: (div.data || []).map(t => (t.x || []).length),
    names: (div.data || []).map(t => t.name),
    ys: (div.data || []).map(t => t.y ? Array.from(t.y) : []),
    xtype: lay.xaxis ? lay.xaxis.type : null,
    xticks: [...div.querySelectorAll('.xtick text')].map(e => e.textContent).filter(t => t),
    yticks: [...div.querySelectorAll('.ytick text')].map(e => e.textContent).filter(t => t),
  };
}
return out;
"""

# A face for Korean: the log's font draws "한국어" unlike the missing-glyph box it would draw
# for characters no font has (private-use code points).
KOREAN_HAS_A_FACE = """
const pre = document.querySelector(arguments[0]);
const font = getComputedStyle(pre).fontSize + ' ' + getComputedStyle(pre).fontFamily;
function pixels(text) {
  const c = document.createElement('canvas'); c.width = 120; c.height = 40;
  const g = c.getContext('2d'); g.font = font; g.fillStyle = '#000'; g.fillText(text, 4, 28);
  return Array.from(g.getImageData(0, 0, 120, 40).data).join(',');
}
return pixels('\\uD55C\\uAD6D\\uC5B4') !== pixels('\\uE000\\uE001\\uE002');
"""


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A finished 900-minute synthetic demo of BTCUSDC: its state, trades, candles and logs."""
    root = tmp_path_factory.mktemp("dash")
    r = subprocess.run([sys.executable, str(REPO / "trade_btc.py"), "--demo", "--demo-minutes", "900",
                        "--demo-speed", "600", "--root", str(root), "--quiet", "--env", str(root / "none.env")],
                       cwd=root, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return root


def charts(driver: Any, selector: str) -> dict[str, dict[str, Any]]:
    return driver.execute_script(READ_CHARTS, selector)


def drawn(driver: Any, selector: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The charts under `selector` once each has its axes' tick labels drawn."""
    from selenium.webdriver.support.ui import WebDriverWait
    got: dict[str, dict[str, Any]] = {}

    def ready(d: Any) -> bool:
        got.clear()
        got.update(charts(d, selector))
        return all(n in got and got[n]["xticks"] and got[n]["yticks"] for n in names)

    try:
        WebDriverWait(driver, 30, poll_frequency=0.2).until(ready)
    except Exception:
        raise AssertionError(f"{selector}: charts not drawn with their axes: {got}") from None
    return got


def keep_screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    return shot


def market_day(st: dict[str, Any]) -> str:
    return datetime.fromtimestamp(st["market_day"] * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")


@pytest.mark.timeout(150)
def test_the_dashboard_in_a_real_browser_draws_the_files_on_charts_with_axes(demo_root, tmp_path):
    need_chromium()
    demo = demo_root / "demo"
    st = json.loads((demo / "state" / "state_btc.json").read_text())
    with open(demo / "trades" / "trades_btc.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    candles = json.loads((demo / "state" / "prices_btc.json").read_text())["candles"]
    assert rows and candles, "the demo made no trade or recorded no candle: nothing to compare"
    # Pointed at the demo's own folder: its files say demo, whatever the folder is called.
    with dashboard(demo, tmp_path) as url, browser(1400, 1600) as driver:
        driver.get(url + "/")
        card = wait_fields(driver, "[data-symbol='BTCUSDC']", lambda f: f.get("fills") == str(len(rows)))
        assert driver.execute_script("return document.querySelector(\"[data-symbol='BTCUSDC']\").dataset.mode") \
            == "demo" and card["mode"] == "demo"
        # The numbers equal the files.
        assert float(card["position-qty"]) == pytest.approx(st["position"]["qty"], abs=1e-6)
        assert float(card["position-avg"]) == pytest.approx(st["position"]["avg_price"], abs=0.006)
        assert int(card["open-orders"]) == len(st["orders"])
        assert float(card["pnl-total"]) == pytest.approx(
            sum(float(r["realized_pnl"]) - float(r["fee"]) for r in rows), abs=0.006)
        assert int(card["deepest-level"]) == st["position"]["deepest_level"]
        assert card["running"] == "not running" and card["direction"] == st["direction"]
        logs = list((demo / "logs").glob("*.log"))
        assert card["log"].splitlines()[-1] == logs[0].read_text().splitlines()[-1]
        # "Today" is the market's day of the fills (a simulated day), not the wall clock's.
        day = market_day(st)
        assert day != datetime.now(timezone.utc).strftime("%Y-%m-%d")
        assert card["fills-title"].startswith(f"fills of {day} ")
        todays = [r for r in rows if r["time"].startswith(day)]
        table_rows = driver.execute_script(
            "return document.querySelectorAll(\"[data-symbol='BTCUSDC'] [data-table='fills-today'] tr\").length")
        assert table_rows - 1 == min(10, len(todays)) and todays
        assert float(card["pnl-today"]) == pytest.approx(
            sum(float(r["realized_pnl"]) - float(r["fee"]) for r in todays), abs=0.006)
        # Every chart: a time axis with its labels, a value axis with its labels, data points.
        got = drawn(driver, "[data-symbol='BTCUSDC']", SYMBOL_CHARTS)
        for name in SYMBOL_CHARTS:
            c = got[name]
            assert c["xtype"] == "date" and len(c["xticks"]) >= 2 and len(c["yticks"]) >= 2, (name, c)
            assert max(c["points"]) >= 1, (name, c)
        price = got["price"]
        last6h = [k for k in candles if k[0] >= candles[-1][0] - 6 * 3_600_000]
        assert price["points"][price["names"].index("1-minute candles")] == len(last6h)
        ladder = sorted(y[0] for n, y in zip(price["names"], price["ys"])
                        if n.split(" ")[0] in {o["role"].replace("ENTRY_", "L") for o in st["orders"].values()})
        assert ladder == sorted(float(o["price"]) for o in st["orders"].values())
        marked = sum(p for n, p in zip(price["names"], price["points"]) if n in ("buys", "sells"))
        since = datetime.fromtimestamp(last6h[0][0] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        assert marked == sum(1 for r in rows if r["time"][:19].replace("T", " ") >= since)
        assert got["equity"]["points"][0] == len(rows)          # a point per fill, the whole history
        account = drawn(driver, "[data-account='demo']", ACCOUNT_CHARTS)
        for name in ACCOUNT_CHARTS:
            c = account[name]
            assert c["xtype"] == "date" and c["xticks"] and c["yticks"] and max(c["points"]) >= 1, (name, c)
        # It updates itself: a new state file shows without a reload.
        st["position"]["deepest_level"] = 3
        (demo / "state" / "state_btc.json").write_text(json.dumps(st))
        wait_fields(driver, "[data-symbol='BTCUSDC']", lambda f: f.get("deepest-level") == "3", 10)
        keep_screenshot(driver, "dashboard-1400.png")
        errors = severe_console_errors(driver)
        assert not errors, errors


def second_symbol(root: Path) -> None:
    """ETHUSDC beside BTCUSDC: the demo's files copied under ETH's names."""
    s = root / "state"
    st = json.loads((s / "state_btc.json").read_text())
    st["symbol"] = "ETHUSDC"
    (s / "state_eth.json").write_text(json.dumps(st))
    shutil.copy(s / "prices_btc.json", s / "prices_eth.json")
    shutil.copy(root / "trades" / "trades_btc.csv", root / "trades" / "trades_eth.csv")
    shutil.copy(root / "trades" / "funding_btc.csv", root / "trades" / "funding_eth.csv")


@pytest.mark.timeout(150)
def test_symbols_sit_side_by_side_at_1400_px_and_stack_at_400_px(demo_root, tmp_path):
    need_chromium()
    root = tmp_path / "two"
    shutil.copytree(demo_root / "demo", root)
    second_symbol(root)
    with dashboard(root, tmp_path) as url:
        for width in (1400, 400):
            with browser(width, 1600) as driver:
                driver.get(url + "/")
                btc = wait_fields(driver, "[data-symbol='BTCUSDC']")
                eth = wait_fields(driver, "[data-symbol='ETHUSDC']")
                drawn(driver, "[data-symbol='ETHUSDC']", SYMBOL_CHARTS)
                btc, eth = fields(driver, "[data-symbol='BTCUSDC']"), fields(driver, "[data-symbol='ETHUSDC']")
                assert btc is not None and eth is not None
                if width == 1400:
                    assert btc["@top"] == eth["@top"] and btc["@right"] <= eth["@left"]      # side by side
                else:
                    assert eth["@top"] >= btc["@bottom"] and eth["@left"] == btc["@left"]    # stacked
                    assert btc["@right"] <= width
                # Nothing wider than the screen: no sideways scrolling.
                assert driver.execute_script("return document.documentElement.scrollWidth") <= width
                keep_screenshot(driver, f"dashboard-two-symbols-{width}.png")
                errors = severe_console_errors(driver)
                assert not errors, errors


def _korean_font_installed() -> bool:
    fc = shutil.which("fc-list")
    if fc is None:
        return False
    out = subprocess.run([fc, ":lang=ko", "family"], capture_output=True, text=True, timeout=20).stdout
    return bool(out.strip())


@pytest.mark.timeout(90)
def test_korean_log_lines_have_a_face(demo_root, tmp_path):
    need_chromium()
    if not _korean_font_installed():
        pytest.skip(f"{SYSTEM_SKIP} a Korean font (apt-get install fonts-noto-cjk)")
    root = tmp_path / "ko"
    shutil.copytree(demo_root / "demo", root)
    log = next((root / "logs").glob("*.log"))
    log.write_text(log.read_text() + "2023-11-15 07:59:00 [INFO] 익절 체결: 포지션 정리 완료\n", encoding="utf-8")
    with dashboard(root, tmp_path) as url, browser(1400, 1200) as driver:
        driver.get(url + "/")
        card = wait_fields(driver, "[data-symbol='BTCUSDC']", lambda f: "익절 체결" in f.get("log", ""))
        assert card["log"].splitlines()[-1].endswith("포지션 정리 완료")
        assert driver.execute_script(KOREAN_HAS_A_FACE, "[data-symbol='BTCUSDC'] [data-field='log']")


@pytest.mark.timeout(90)
def test_behind_its_token_the_page_draws_its_charts_and_without_it_shows_nothing(demo_root, tmp_path):
    """DASHBOARD_TOKEN set: the page opened with ?token= loads the charting library and the
    data with it; opened without, the server answers 401 and nothing of the files shows."""
    need_chromium()
    token = "dash-browser-token-7f3a"
    with dashboard(demo_root / "demo", tmp_path, token=token) as url, browser(1400, 1200) as driver:
        driver.get(url + "/")
        assert "a valid token is required" in driver.page_source and "BTCUSDC" not in driver.page_source
        driver.get_log("browser")           # the 401 just seen is logged: that one was expected
        driver.get(url + "/?token=" + token)
        wait_fields(driver, "[data-symbol='BTCUSDC']")
        drawn(driver, "[data-symbol='BTCUSDC']", SYMBOL_CHARTS)
        assert driver.execute_script("return !!window.Plotly")
        # Read-only: no form to send anything (the charts' own zoom buttons only change the view;
        # the server answers nothing but GET: tests/test_watch.py).
        assert driver.execute_script("return document.querySelectorAll('form, textarea').length") == 0
        errors = severe_console_errors(driver)
        assert not errors, errors
