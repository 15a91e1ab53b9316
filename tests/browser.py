"""The dashboard in a real headless Chromium (selenium and Debian's chromium-driver), for the
browser tests: start `dashboard.py` on a free loopback port, open it at a window width, and
read the page's fields.

The page redraws itself every few seconds, replacing its elements: a test never holds an
element across a wait.  `fields` reads every `[data-field]` under a selector (and the box's
place on the page) in one script run, which the page's own redraw cannot interleave, and
`wait_fields` retries that read until a condition holds.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import SYSTEM_SKIP
from harness import clean_env, free_port

REPO = Path(__file__).resolve().parents[1]

READ_FIELDS = """
const box = document.querySelector(arguments[0]);
if (!box) return null;
const out = {};
for (const e of box.querySelectorAll('[data-field]')) out[e.dataset.field] = e.innerText.trim();
const r = box.getBoundingClientRect();
out['@top'] = r.top + window.scrollY; out['@bottom'] = r.bottom + window.scrollY;
out['@left'] = r.left; out['@right'] = r.right;
return out;
"""


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def need_chromium() -> tuple[str, str]:
    found = chromium()
    if found is None:
        pytest.skip(f"{SYSTEM_SKIP} Chromium and its driver (apt-get install chromium chromium-driver)")
    return found


def wait_for_port(port: int, server: subprocess.Popen, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:                 # the server is up once its port answers
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)


@contextmanager
def dashboard(root: Path, tmp_path: Path, *extra: str, token: str | None = None) -> Iterator[str]:
    """`dashboard.py --root root` on a free loopback port (`token`: its DASHBOARD_TOKEN);
    yields its base URL."""
    port = free_port()
    env = clean_env()
    if token:
        env["DASHBOARD_TOKEN"] = token
    server = subprocess.Popen([sys.executable, str(REPO / "dashboard.py"), "--root", str(root), "--port", str(port),
                               "--env", str(tmp_path / "none.env"), *extra],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@contextmanager
def browser(width: int = 1280, height: int = 1400) -> Iterator[Any]:
    """A headless Chromium at a window size, its console kept."""
    found = need_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        driver.set_page_load_timeout(30)
        # A window cannot be narrower than Chromium's minimum (about 500 px): a phone's width
        # is the device metrics DevTools gives it, as its device mode does.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        yield driver
    finally:
        driver.quit()


def fields(driver: Any, selector: str) -> dict[str, Any] | None:
    """Every `[data-field]`'s text under the first `selector` (and '@top', '@bottom', '@left',
    '@right' of that box, page coordinates), read at one moment; None when absent."""
    return driver.execute_script(READ_FIELDS, selector)


def wait_fields(driver: Any, selector: str, ok: Callable[[dict[str, Any]], bool] = lambda f: True,
                seconds: float = 20) -> dict[str, Any]:
    """`fields(selector)` once it is present and `ok` holds (an event, not a guessed delay)."""
    from selenium.webdriver.support.ui import WebDriverWait
    got: dict[str, Any] = {}

    def ready(d: Any) -> bool:
        f = fields(d, selector)
        if f is not None:
            got.clear()
            got.update(f)
        return f is not None and ok(f)

    try:
        WebDriverWait(driver, seconds, poll_frequency=0.1).until(ready)
    except Exception:
        raise AssertionError(f"{selector}: the page did not show what was awaited; last read {got}") from None
    return got


def severe_console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
