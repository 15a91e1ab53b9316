"""Watching a daemon left alone (issue 13): notifications through apprise's json:// to a
real loopback receiver, the Prometheus page scraped during a demo of a third symbol, the
dashboard's API and its token, and the secrets kept out of messages, metrics and the
dashboard.  The dashboard in a real browser is tests/test_dashboard_browser.py."""
from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

import dashboard
from ops.events import DEEPEST, SL, START, TP, Event, EventBus
from ops.notify import Notifier, message, parse_events
from harness import Daemon, Exchange, clean_env, free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or REPO.parent / "shared" / "data")
BTC_FILE = DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"
TOKEN = "NOTIFYTOKEN-7f3a9c1e5d"


class Receiver:
    """A webhook on 127.0.0.1 for apprise's json://: 'ok', 'down' (503) or 'hang' (never answers)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.messages: list[dict] = []
        self.attempts = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "down":
            return web.Response(status=503)
        self.messages.append({"path": request.path, **(await request.json())})
        return web.Response(text="ok")

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)   # a hanging handler is cut off
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"json://127.0.0.1:{port}/hook/{TOKEN}"
        return self

    async def stop(self) -> None:
        await self.runner.shutdown()
        await self.runner.cleanup()


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------- notifications
async def test_chosen_events_arrive_once_each_in_korean_and_none_is_lost_while_the_receiver_is_down(
        receiver, caplog):
    bus = EventBus()
    log = logging.getLogger("grid.test-notify")
    n = Notifier([receiver.url], parse_events("start,tp,sl,deepest"), bus, log, ko=True, backoff_s=0.2)
    task = asyncio.create_task(n.run())
    receiver.mode = "down"                      # down for a while: the retries carry the messages over
    for ev in (Event(START, "BTCUSDC", {"direction": "LONG", "mode": "live"}),
               Event(TP, "BTCUSDC", {"price_text": "61000.0", "qty_text": "0.010", "pnl": 5.0}),
               Event("be", "BTCUSDC", {"price_text": "60000.0", "qty_text": "0.020", "pnl": 1.0}),
               Event(DEEPEST, "BTCUSDC", {"price_text": "58000.0", "qty_text": "0.040", "level": 4,
                                          "avg_text": "59000.0"}),
               Event(SL, "BTCUSDC", {"price_text": "57000.0", "qty_text": "0.070", "pnl": -80.0})):
        bus.publish(ev)
    await wait_for(lambda: receiver.attempts >= 2, 10, "the first attempts")
    receiver.mode = "ok"
    try:
        await wait_for(lambda: len(receiver.messages) >= 4, 30, "four messages")
        await asyncio.sleep(0.5)                 # nothing more comes (BE was not chosen)
    finally:
        task.cancel()
    bodies = [m["message"] for m in receiver.messages]
    assert len(bodies) == 4
    assert "데몬 시작" in bodies[0] and "TP 체결 61000.0 × 0.010" in bodies[1]
    assert "Level 4 체결 58000.0" in bodies[2] and "손절(SL) 57000.0" in bodies[3]
    assert not any("BE" in b for b in bodies)
    assert all(m["path"].endswith(TOKEN) for m in receiver.messages)          # the URL's path was used ...
    assert all(TOKEN not in b and TOKEN not in m["title"] for b, m in zip(bodies, receiver.messages))  # ... not shown
    assert n.sent == 4 and n.dropped == 0


async def test_a_message_still_failing_after_its_retries_is_logged_once_without_the_token(caplog):
    bus = EventBus()
    log = logging.getLogger("grid.test-notify2")
    url = f"json://127.0.0.1:1/hook/{TOKEN}"                                  # nothing listens there
    n = Notifier([url], {TP}, bus, log, ko=False, retries=2, backoff_s=0.05)
    task = asyncio.create_task(n.run())
    bus.publish(Event(TP, "ETHUSDC", {"price_text": "3000.00", "qty_text": "0.100", "pnl": 1.0}))
    with caplog.at_level(logging.WARNING, logger="grid.test-notify2"):
        await wait_for(lambda: n.dropped == 1, 20, "the drop")
    task.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "grid.test-notify2"]
    assert lines == ["notification to json://… not delivered after 2 tries: dropped"]
    assert "TP filled at 3000.00 × 0.100" in message(Event(TP, "ETHUSDC", {"price_text": "3000.00",
                                                                           "qty_text": "0.100"}), False)[1]


def demo_slice(tmp: Path, minutes: int = 240) -> Path:
    rows = BTC_FILE.read_text(encoding="utf-8").splitlines()
    path = tmp / "btc_slice.csv"
    path.write_text("\n".join(rows[:minutes + 1]) + "\n", encoding="utf-8")
    return path


def tight(tmp: Path) -> Path:
    from harness import TIGHT, with_values
    cfg = tmp / "config_btc.txt"
    cfg.write_text(with_values((REPO / "config_btc.txt").read_text(), TIGHT))
    return cfg


async def run_demo(root: Path, data: Path, cfg: Path, notify_url: str | None) -> subprocess.CompletedProcess:
    env = clean_env(LOG_LANGUAGE="ko", **({"NOTIFY_URLS": notify_url} if notify_url else {}))
    cmd = [sys.executable, str(REPO / "trade_btc.py"), "--demo", "--demo-data", str(data), "--demo-speed", "400",
           "--demo-funding-rate", "0", "--config", str(cfg), "--root", str(root), "--quiet",
           "--env", str(root / "none.env")]
    root.mkdir(parents=True, exist_ok=True)
    return await asyncio.to_thread(subprocess.run, cmd, cwd=root, env=env, capture_output=True, text=True,
                                   timeout=120)


def trades(root: Path) -> list[dict[str, str]]:
    with open(root / "demo" / "trades" / "trades_btc.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.skipif(not BTC_FILE.exists(), reason=f"real kline data not available ({BTC_FILE} is absent)")
@pytest.mark.timeout(120)
async def test_the_demo_notifies_each_event_and_a_hanging_receiver_changes_no_trade(tmp_path, receiver):
    """One demo, two receivers: one answers, one never does.  The first gets one message
    per event; the trades are the backtest's (lockstep), so the hanging receiver took
    nothing from trading; the demo still ends promptly."""
    from backtest import run_backtest
    from config import load_config
    from market.data import load_klines
    from sim.exchange import DEFAULT_FILTERS
    data, cfg = demo_slice(tmp_path), tight(tmp_path)
    hanging = await Receiver("hang").start()
    try:
        t0 = time.monotonic()
        res = await run_demo(tmp_path / "demo", data, cfg, f"{receiver.url} {hanging.url}")
        took = time.monotonic() - t0
    finally:
        await hanging.stop()
    assert res.returncode == 0, res.stderr[-2000:]
    rows = trades(tmp_path / "demo")
    titles = [m["title"].split(": ", 1)[1] for m in receiver.messages]
    roles = [r["role"] for r in rows]
    assert titles[0] == "시작" and titles[-1] == "종료"
    assert titles.count("TP 체결") == roles.count("TP") > 0
    assert titles.count("BE 체결") == roles.count("BE")
    assert titles.count("SL 체결") == roles.count("SL")
    assert titles.count("최종 레벨 체결") == roles.count("ENTRY4")
    assert hanging.attempts >= 1 and not hanging.messages and took < 60
    f = DEFAULT_FILTERS["BTCUSDC"]
    bt = run_backtest(load_config(cfg), load_klines([data]), f)
    assert [(r["time"], r["role"], r["price"], r["quantity"]) for r in rows] == \
        [(x.time_iso, x.role, f.fmt_price(x.price), f.fmt_qty(x.qty)) for x in bt.fills]
    for p in (tmp_path / "demo").rglob("*"):                     # the token never in a log or output
        if p.is_file():
            assert TOKEN not in p.read_text(errors="replace"), p
    assert TOKEN not in res.stdout + res.stderr


# ---------------------------------------------------------------------- metrics, a third symbol
def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def _metrics_agree(text: str, st: dict) -> bool:
    entries = sum(1 for o in st["orders"].values() if o["role"].startswith("ENTRY"))
    return (metric(text, "gm_position_qty", symbol="SOLUSDC") == pytest.approx(st["position"]["qty"])
            and metric(text, "gm_position_avg_price", symbol="SOLUSDC") == pytest.approx(st["position"]["avg_price"])
            and metric(text, "gm_deepest_level", symbol="SOLUSDC") == st["position"]["deepest_level"]
            and metric(text, "gm_open_orders", symbol="SOLUSDC", role="ENTRY") == entries)


@pytest.mark.timeout(120)
async def test_a_third_symbol_demo_serves_its_metrics_and_files(tmp_path):
    root = tmp_path / "sol"
    root.mkdir()
    cfg = root / "config_sol.txt"
    cfg.write_text((REPO / "config_btc.txt").read_text())
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "trade.py"), "SOLUSDC", "--demo", "--demo-speed", "120",
                             "--demo-minutes", "2400", "--config", str(cfg), "--root", str(root), "--quiet",
                             "--metrics-port", str(port), "--env", str(root / "none.env")],
                            cwd=root, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_path = root / "demo" / "state" / "state_sol.json"
    try:
        async with ClientSession() as http:
            async def scrape() -> str:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    assert r.status == 200
                    return await r.text()
            deadline = time.monotonic() + 60
            while True:
                try:
                    text = await scrape()
                    if (metric(text, "gm_fills_total", symbol="SOLUSDC", role="ENTRY1") or 0) >= 1:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "no fill seen on the metrics page"
                await asyncio.sleep(0.2)
            # The market runs on: the page shows the daemon's state in memory, the file the last
            # one saved.  They must agree at a moment the file did not change around a scrape
            # (a reaction may be between its order and its save at any single instant).
            agreed, tries = False, 0
            while not agreed:
                tries += 1
                assert time.monotonic() < deadline + 30 and proc.poll() is None, \
                    f"the metrics never agreed with the state file ({tries} scrapes)"
                before = state_path.read_text()
                text = await scrape()
                if state_path.read_text() != before:
                    continue
                st = json.loads(before)
                agreed = _metrics_agree(text, st)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert 'gm_info{direction="LONG",mode="demo",symbol="SOLUSDC",version=' in text
    assert metric(text, "gm_request_weight_limit", symbol="SOLUSDC") == 2400 * 120 * 60   # scaled with the demo's clock (120 candles/s)
    assert metric(text, "gm_wallet_balance", symbol="SOLUSDC") > 0
    assert metric(text, "gm_reaction_seconds_count", symbol="SOLUSDC") >= 1
    assert 0 <= metric(text, "gm_seconds_since_market_event", symbol="SOLUSDC") < 30
    # The third symbol's own files, named after it.
    assert st["symbol"] == "SOLUSDC"
    assert (root / "demo" / "trades" / "trades_sol.csv").read_text().count("SOLUSDC") >= 1
    assert list((root / "demo" / "logs").glob("grid_martingale_sol_*.log"))
    assert "demo report — SOLUSDC" in out
    assert not (root / "demo" / "state" / "sol.pid").exists()      # removed on the way out


# ---------------------------------------------------------------------- the dashboard's API
async def test_the_dashboard_needs_its_token_off_loopback_and_reports_the_files(tmp_path):
    from test_scripts import fabricate
    fabricate(tmp_path, None)
    runner = web.AppRunner(dashboard.make_app(tmp_path, "dash-secret-token-1"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with ClientSession() as http:
            for path in ("/", "/api/status"):
                async with http.get(url + path) as r:
                    assert r.status == 401
            async with http.get(url + "/api/status?token=wrong") as r:
                assert r.status == 401
            # The icon a browser asks for by itself, after the 401 page: empty, no error.
            async with http.get(url + "/favicon.ico") as r:
                assert r.status == 204 and await r.read() == b""
            async with http.get(url + "/api/status", headers={"X-Dashboard-Token": "dash-secret-token-1"}) as r:
                assert r.status == 200
                data = await r.json()
            async with http.get(url + "/?token=dash-secret-token-1") as r:
                page = await r.text()
                assert r.status == 200 and "dash-secret-token-1" not in page
            # The charting library is served here, behind the same token (the page asks for it with
            # the token it was opened with): nothing comes from the internet.
            async with http.get(url + "/static/plotly.min.js") as r:
                assert r.status == 401
            async with http.get(url + "/static/plotly.min.js?token=dash-secret-token-1") as r:
                lib = await r.read()
                assert r.status == 200 and b"plotly.js" in lib[:2000] and len(lib) > 1_000_000
            assert "/static/plotly.min.js" in page and "https://" not in page
            # Read-only: nothing but GET is answered, with the token or without.
            for path in ("/", "/api/status", "/static/plotly.min.js"):
                for method in ("POST", "PUT", "DELETE"):
                    async with http.request(method, url + path + "?token=dash-secret-token-1") as r:
                        assert r.status == 405, (method, path, r.status)
    finally:
        await runner.cleanup()
    btc = next(s for s in data["symbols"] if s["short"] == "btc")
    assert btc["position"] == {"qty": 0.035, "avg_price": 60500.25, "deepest_level": 2}
    with open(tmp_path / "trades" / "trades_btc.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert btc["pnl"]["fills"] == len(rows)
    assert btc["pnl"]["total"] == pytest.approx(sum(float(r["realized_pnl"]) - float(r["fee"]) for r in rows))
    state = json.loads((tmp_path / "state" / "state_btc.json").read_text())
    assert len(btc["orders"]) == len(state["orders"]) and btc["log"][-1].endswith("the last line")
    assert btc["mode"] == "live" and btc["running"] is False
    assert dashboard.main(["--host", "0.0.0.0", "--root", str(tmp_path), "--env", str(tmp_path / "none")]) == 2


@pytest.mark.timeout(60)
async def test_a_live_daemon_keeps_its_keys_and_tokens_out_of_metrics_dashboard_and_messages(tmp_path, receiver):
    """A live-mode daemon on the local exchange with notifications and metrics on: its API
    key, secret and notification token appear in none of the messages, the metrics page,
    the dashboard's API, or any file it wrote."""
    key, secret = "watch-key-5d1c8e0a9b7f", "watch-secret-0a1b2c3d4e5f6a7b8c9d"
    ex = await asyncio.to_thread(Exchange, tmp_path / "ex", key, secret)
    port = free_port()
    d = Daemon(tmp_path / "root", ex, key, secret, env_text=f"BINANCE_API_KEY={key}\nBINANCE_API_SECRET={secret}\n"
               f"NOTIFY_URLS={receiver.url}\nNOTIFY_EVENTS=start,stop,error\nMETRICS_PORT={port}\n")
    try:
        d.start()
        both = lambda: d.alive() and (lambda ws: ws["user"] >= 1 and ws["market"] >= 1)(ex.stats()["websockets"])
        await asyncio.to_thread(wait_until, both, 15, "the daemon's streams", d.diag)
        await asyncio.to_thread(ex.step, 1)
        await asyncio.to_thread(wait_until, lambda: len(ex.open_orders()) == 4, 15, "the first grid", d.diag)
        async with ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                page = await r.text()
        api = json.dumps(dashboard.status(tmp_path / "root"))
        await wait_for(lambda: receiver.messages, 10, "the start message")
        d.proc.terminate()
        await asyncio.to_thread(d.proc.wait, 15)
        await wait_for(lambda: len(receiver.messages) >= 2, 10, "the stop message")
    finally:
        d.kill()
        await asyncio.to_thread(ex.stop)
    assert metric(page, "gm_open_orders", symbol="BTCUSDC", role="ENTRY") == 4
    assert '"running": true' in api and '"mode": "live"' in api
    assert [m["title"].split(": ", 1)[1] for m in receiver.messages] == ["시작", "종료"]
    texts = [page, api, json.dumps(receiver.messages).replace(f"/hook/{TOKEN}", "")]
    texts += [f.read_text(errors="replace") for f in (tmp_path / "root").rglob("*")
              if f.is_file() and f.name != ".env"]
    for secret_text in (key, secret, TOKEN):
        assert not any(secret_text in t for t in texts), secret_text


# ---------------------------------------------------------------------- the other events
def test_unreachable_after_a_minute_then_reachable_once_each():
    from ops.services import Connectivity

    class D:
        symbol = "BTCUSDC"
        bus = EventBus()
    d = D()
    q = d.bus.subscribe()
    c = Connectivity(d, after_s=0.2)
    c.mark_down("stream", "ConnectionResetError")
    c.check()
    assert q.empty()                                   # not yet a minute (here 0.2 s)
    time.sleep(0.25)
    c.mark_down("exchange", "timeout")
    c.check()
    c.check()
    ev = q.get_nowait()
    assert ev.kind == "unreachable" and ev.data["what"] == "stream: ConnectionResetError" and q.empty()
    c.mark_up("stream")
    c.check()
    assert q.empty()                                   # the exchange is still out
    c.mark_up("exchange")
    c.check()
    back = q.get_nowait()
    assert back.kind == "reachable" and back.data["seconds"] >= 0.25
    c.check()
    assert q.empty()


def test_error_lines_become_events_once_per_ten_minutes_with_secrets_masked():
    from ops.notify import ErrorEvents
    from ops.records import SecretFilter
    bus = EventBus()
    q = bus.subscribe()
    log = logging.getLogger("grid.test-errors")
    h = ErrorEvents(bus, "ETHUSDC")
    h.addFilter(SecretFilter("sekret-api-key-123"))
    log.addHandler(h)
    try:
        log.warning("only a warning")
        log.error("order refused for key sekret-api-key-123")
        log.error("order refused for key sekret-api-key-123")
        log.error("another error")
    finally:
        log.removeHandler(h)
    texts = [q.get_nowait().data["text"] for _ in range(q.qsize())]
    assert texts == ["order refused for key ***", "another error"]


def test_the_daily_summary_comes_when_the_markets_clock_passes_midnight_utc():
    from ops.services import DayWatch
    watch, ended = DayWatch(), []
    watch.listeners.append(ended.append)
    midnight = 86_400_000 * 20_000                      # 2024-10-04T00:00Z
    watch.see(midnight - 120_000)
    watch.see(midnight - 60_000)
    watch.see(0)                                        # an event without a time changes nothing
    assert ended == []
    watch.see(midnight)                                 # the first event of the new day
    watch.see(midnight + 60_000)
    watch.see(midnight - 1)                             # a late event of the old day: no second summary
    assert ended == ["2024-10-03"]
    watch.see(midnight + 3 * 86_400_000)                # days without events (an outage): each summarised
    assert ended == ["2024-10-03", "2024-10-04", "2024-10-05", "2024-10-06"]
    watch.see(midnight + 30 * 86_400_000)               # a month down: the last week's only
    assert len(ended) == 4 + 7 and ended[-1] == "2024-11-02"
    ev = Event("daily", "BTCUSDC", {"day": ended[0], "pnl_today": 1.5})
    title, body = message(ev, True)
    assert "일일 요약" in title and "실현 PnL 오늘 +1.50" in body
