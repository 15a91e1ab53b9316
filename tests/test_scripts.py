"""The shell scripts, as real processes, run from another current directory (/tmp).

- status.sh (the real script, read-only) against fabricated pid / state /
  trades / log files under a temporary --root;
- logs.sh, start_btc.sh, stop_btc.sh in a temporary copy of the project's
  layout (scripts/ copied, trade_btc.py and status.py linked to the real
  ones), so nothing is written into the real state/ or logs/ folders: the
  scripts find the project folder from their own location;
- start → status → stop of a real daemon against a local exchange
  subprocess, extra arguments (--base-url, --ws-url, --root, --env,
  --cancel-on-exit) passed through start_btc.sh.

Every process a test starts is stopped in its finally block.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from local_exchange import DEFAULT_API_KEY
from ops.records import CSV_COLUMNS
from state_manager import GridState, OrderState, StateManager

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
KEY = DEFAULT_API_KEY
SECRET = "test-scripts-secret-0123456789"


# ---------------------------------------------------------------------- helpers


def script_env() -> dict[str, str]:
    """The scripts pick `python3` from PATH when the project has no .venv: make it this venv's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["LOG_LANGUAGE"] = "en"
    env.pop("PYTHONPATH", None)
    return env


def sh(script: Path, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], cwd="/tmp", env=script_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def terminate_pid(pid: int | None) -> None:
    """Stop a process this test started (by pid): TERM, then KILL."""
    if not pid or not alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A copy of the project's layout: scripts/ copied, the Python entry points linked."""
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    for f in SCRIPTS.glob("*.sh"):
        shutil.copy2(f, proj / "scripts" / f.name)
    for name in ("trade_btc.py", "trade_eth.py", "trade.py", "status.py", "paths.py", "dashboard.py"):
        (proj / name).symlink_to(REPO / name)
    env = proj / ".env"
    env.write_text(f"BINANCE_API_KEY={KEY}\nBINANCE_API_SECRET={SECRET}\nLOG_LANGUAGE=en\n")
    env.chmod(0o600)
    return proj


@pytest.fixture
def exchange():
    """A local exchange subprocess (manual clock); yields its REST base URL."""
    env = script_env()
    env["LOCAL_EXCHANGE_API_SECRET"] = SECRET     # keeps the secret out of `ps`
    p = subprocess.Popen([sys.executable, str(REPO / "local_exchange.py"), "--port", "0", "--synthetic", "1",
                          "--speed", "0", "--symbols", "BTCUSDC", "--api-key", KEY, "--log-level", "WARNING"],
                         cwd="/tmp", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        rest = None
        for line in p.stdout:
            m = re.match(r"REST\s+(http://\S+)", line)
            if m:
                rest = m.group(1)
                break
        assert rest, "local exchange did not print its URL"
        yield rest
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        p.stdout.close()


def admin(rest: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(rest + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def venue_args(rest: str, root: Path, env: Path) -> list[str]:
    return ["--base-url", rest, "--ws-url", rest.replace("http://", "ws://") + "/", "--root", str(root),
            "--env", str(env)]


def started_pid(out: str) -> int:
    m = re.search(r"btc: started \(pid (\d+)\)", out)
    assert m, out
    return int(m.group(1))


# ---------------------------------------------------------------------- status.sh


def fabricate(root: Path, pid: int | None, age_s: float = 3725) -> None:
    (root / "state").mkdir(parents=True)
    (root / "trades").mkdir()
    (root / "logs").mkdir()
    if pid is not None:
        pf = root / "state" / "btc.pid"
        pf.write_text(f"{pid}\n")
        t = time.time() - age_s
        os.utime(pf, (t, t))
    st = GridState(symbol="BTCUSDC", direction="LONG", capital=3300.0, grid_center=61234.5, generation=3)
    st.position.reset(4)
    st.position.qty, st.position.avg_price, st.position.deepest_level = 0.035, 60500.25, 2
    st.orders = {
        "GM-BTCUSDC-3-E3": OrderState("GM-BTCUSDC-3-E3", "ENTRY_3", "BUY", 58785.1, 0.28, 11, 3),
        "GM-BTCUSDC-3-E4": OrderState("GM-BTCUSDC-3-E4", "ENTRY_4", "BUY", 58479.0, 0.56, 12, 4),
        "GM-BTCUSDC-3-BE5": OrderState("GM-BTCUSDC-3-BE5", "BE", "SELL", 60560.8, 0.029, 13),
        "GM-BTCUSDC-3-SL6": OrderState("GM-BTCUSDC-3-SL6", "SL", "SELL", 58172.7, 0.0, 14),
    }
    StateManager(root / "state" / "state_btc.json").save(st)
    now = datetime.now(timezone.utc)
    old = now - timedelta(days=3)
    rows = [  # (time, realized_pnl, fee)
        (old, "10.00000000", "0.50000000"),
        (old, "-2.00000000", "0.25000000"),
        (now, "3.00000000", "0.40000000"),
        (now, "1.50000000", "0.10000000"),
    ]
    with open(root / "trades" / "trades_btc.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for i, (t, pnl, fee) in enumerate(rows, 1):
            w.writerow([t.strftime("%Y-%m-%dT%H:%M:%SZ"), "BTCUSDC", "SELL", "TP", "60000.0", "0.010", fee, pnl,
                        "0.000", "0", f"GM-BTCUSDC-1-TP{i}", str(100 + i), str(i)])
    (root / "logs" / f"grid_martingale_btc_{old:%Y-%m-%d}.log").write_text("old day line\n")
    (root / "logs" / f"grid_martingale_btc_{now:%Y-%m-%d}.log").write_text(
        "2026-01-01 00:00:00 - INFO - first line\n2026-01-01 00:00:01 - INFO - Level 2 filled: the last line\n")


@pytest.mark.timeout(20)
def test_status_reports_a_running_daemon_from_its_files(tmp_path: Path):
    sleeper = subprocess.Popen(["sleep", "30"])     # a live pid to stand for the daemon
    try:
        fabricate(tmp_path, sleeper.pid)
        r = sh(SCRIPTS / "status.sh", "--root", str(tmp_path), "btc")
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert re.search(rf"== BTCUSDC: running, pid {sleeper.pid}, up 01:02:0\d", out), out
        assert "direction LONG, capital $3300.00, grid centre $61234.50" in out
        assert "position 0.035000 @ $60500.25, deepest level 2" in out
        assert "open orders 4: BE×1, ENTRY_3×1, ENTRY_4×1, SL×1" in out
        # today: (3 - 0.4) + (1.5 - 0.1) = 4.00; total adds (10 - 0.5) + (-2 - 0.25) = 7.25
        assert "realized PnL (after fees): today $+4.00, total $+11.25 over 4 fills" in out
        assert "last log: 2026-01-01 00:00:01 - INFO - Level 2 filled: the last line" in out
        assert "ETHUSDC" not in out              # the symbol argument was passed through
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.timeout(20)
def test_status_not_running_and_both_symbols_by_default(tmp_path: Path):
    sleeper = subprocess.Popen(["sleep", "30"])
    sleeper.kill()
    sleeper.wait()                                  # a pid that is certainly gone
    fabricate(tmp_path, sleeper.pid)
    r = sh(SCRIPTS / "status.sh", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "== BTCUSDC: not running" in r.stdout
    assert "== ETHUSDC: not running" in r.stdout
    eth = r.stdout.split("== ETHUSDC")[1]
    assert "no state file yet" in eth
    assert "today $+0.00, total $+0.00 over 0 fills" in eth
    assert "last log: (no log yet)" in eth
    other = sh(SCRIPTS / "status.sh", "--root", str(tmp_path), "DOGEUSDC")     # any symbol
    assert other.returncode == 0 and "== DOGEUSDC: not running" in other.stdout and "no state file yet" in other.stdout
    bad = sh(SCRIPTS / "status.sh", "--root", str(tmp_path), "do/ge")
    assert bad.returncode == 2 and "bad symbol 'do/ge'" in bad.stderr


@pytest.mark.timeout(20)
def test_status_survives_a_corrupt_state_file(tmp_path: Path):
    fabricate(tmp_path, None)
    (tmp_path / "state" / "state_btc.json").write_text("{ not json")
    r = sh(SCRIPTS / "status.sh", "--root", str(tmp_path), "btc")
    assert r.returncode == 0, r.stderr
    assert "== BTCUSDC: not running" in r.stdout
    assert "state file unreadable: JSONDecodeError" in r.stdout


# ---------------------------------------------------------------------- logs.sh


@pytest.mark.timeout(20)
def test_logs_follows_todays_log_from_any_directory(layout: Path):
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    (layout / "logs").mkdir()
    log = layout / "logs" / f"grid_martingale_btc_{day}.log"
    log.write_text("".join(f"line {i}\n" for i in range(60)))
    p = subprocess.Popen(["bash", str(layout / "scripts" / "logs.sh"), "btc"], cwd="/tmp", env=script_env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = [p.stdout.readline() for _ in range(50)]
        assert first[0] == "line 10\n" and first[-1] == "line 59\n"   # tail -n 50
        with open(log, "a") as fh:
            fh.write("appended while following\n")
        assert p.stdout.readline() == "appended while following\n"
        assert p.poll() is None                                       # it keeps following
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        p.stderr.close()
    assert not (layout / "logs" / f"grid_martingale_eth_{day}.log").exists()   # only the symbol asked for
    bad = sh(layout / "scripts" / "logs.sh", "--follow")
    assert bad.returncode == 2 and "usage: logs.sh [btc|eth|SYMBOL]" in bad.stderr


# ---------------------------------------------------------------------- start / status / stop


@pytest.mark.timeout(40)
def test_start_status_stop_a_daemon_against_a_local_exchange(layout: Path, exchange: str):
    scripts = layout / "scripts"
    pidfile = layout / "state" / "btc.pid"
    pid = None
    try:
        r = sh(scripts / "start_btc.sh", *venue_args(exchange, layout, layout / ".env"), "--cancel-on-exit",
               "--sync-interval", "3600")
        assert r.returncode == 0, r.stdout + r.stderr
        pid = started_pid(r.stdout)
        assert alive(pid)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(pid), 10, "the pid file")
        # --base-url/--ws-url reached the daemon: it is connected to this exchange.
        wait_for(lambda: admin(exchange, "/_sim/stats")["websockets"]["user"] >= 1, 15, "the daemon's user stream")
        admin(exchange, "/_sim/step?candles=1", "POST")             # the first closed candle: the grid
        wait_for(lambda: len(admin(exchange, "/_sim/state")["openOrders"]) == 4, 10, "the grid on the exchange")
        stats = admin(exchange, "/_sim/stats")["requests"]
        assert stats.get("POST /fapi/v1/batchOrders") == 1 and "POST /fapi/v1/order" not in stats

        st = sh(scripts / "status.sh", "--root", str(layout), "btc")
        assert st.returncode == 0, st.stderr
        assert re.search(rf"== BTCUSDC: running, pid {pid}, up 00:00:\d\d", st.stdout), st.stdout
        wait_for(lambda: "open orders 4: ENTRY_1×1, ENTRY_2×1, ENTRY_3×1, ENTRY_4×1"
                 in sh(scripts / "status.sh", "--root", str(layout), "btc").stdout, 5, "status to show the grid")
        assert "last log: (no log yet)" not in st.stdout
        assert (layout / "logs" / "btc_stdout.log").exists()        # start_btc.sh's own output file

        again = sh(scripts / "start_btc.sh", *venue_args(exchange, layout, layout / ".env"))
        assert again.returncode == 0 and f"btc: already running (pid {pid})" in again.stdout
        assert "Level 4 order set" in follow_log(scripts, "btc", until="Level 4 order set")   # logs.sh follows it

        stop = sh(scripts / "stop_btc.sh")
        assert stop.returncode == 0 and "btc: stopped" in stop.stdout, stop.stdout
        assert not alive(pid)
        assert not pidfile.exists()                                   # the daemon removes it on exit
        # --cancel-on-exit was passed through: the grid is gone from the exchange.
        assert admin(exchange, "/_sim/state")["openOrders"] == []

        st = sh(scripts / "status.sh", "--root", str(layout), "btc")
        assert "== BTCUSDC: not running" in st.stdout
        assert "grid centre $" in st.stdout                           # the state file stays
        again = sh(scripts / "stop_btc.sh")
        assert again.returncode == 0 and "btc: not running" in again.stdout
    finally:
        terminate_pid(pid)


def follow_log(scripts: Path, *args: str, until: str) -> str:
    """What logs.sh prints until a line holding `until` (it follows: stopped then)."""
    p = subprocess.Popen(["bash", str(scripts / "logs.sh"), *args], cwd="/tmp", env=script_env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while not seen or until not in seen[-1]:
            seen.append(p.stdout.readline())
        return "".join(seen)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
        p.stderr.close()


@pytest.mark.timeout(60)
def test_start_status_logs_stop_a_demo_as_a_live_daemon(layout: Path):
    """A demo started by start_btc.sh --demo: status.sh shows it running (marked [demo]) with
    its position and orders, logs.sh follows its log, stop_btc.sh stops it."""
    scripts = layout / "scripts"
    pidfile = layout / "demo" / "state" / "btc.pid"
    pid = None
    try:
        r = sh(scripts / "start_btc.sh", "--demo", "--demo-speed", "5", "--env", str(layout / "none.env"))
        assert r.returncode == 0, r.stdout + r.stderr
        pid = started_pid(r.stdout)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(pid), 15, "the demo's pid file")
        wait_for(lambda: "open orders 4" in sh(scripts / "status.sh", "btc").stdout, 20, "the demo's grid")
        st = sh(scripts / "status.sh", "btc").stdout
        assert re.search(rf"== BTCUSDC \[demo\]: running, pid {pid}, up 00:00:\d\d", st), st
        assert "position " in st and "ENTRY_1×1" in st
        assert "== BTCUSDC: not running" not in st                      # no live daemon block for a demo only
        logged = follow_log(scripts, "btc", until="Level 4")
        assert (layout / "demo" / "logs").is_dir() and "Level 4" in logged
        again = sh(scripts / "start_btc.sh", "--demo")
        assert f"btc: already running (pid {pid})" in again.stdout
        stop = sh(scripts / "stop_btc.sh")
        assert stop.returncode == 0 and "btc: stopped" in stop.stdout, stop.stdout
        assert not alive(pid) and not pidfile.exists()
        assert re.search(r"== BTCUSDC \[demo\]: not running", sh(scripts / "status.sh", "btc").stdout)
    finally:
        terminate_pid(pid)


@pytest.mark.timeout(20)
def test_start_reports_a_daemon_that_fails_at_once(layout: Path):
    (layout / ".env").write_text("BINANCE_API_KEY=\nBINANCE_API_SECRET=\n")
    r = sh(layout / "scripts" / "start_btc.sh", "--root", str(layout), "--env", str(layout / ".env"))
    assert r.returncode == 1
    assert "btc: failed to start" in r.stdout
    assert "BINANCE_API_KEY and BINANCE_API_SECRET must be set" in r.stdout   # the tail of btc_stdout.log
    assert not (layout / "state" / "btc.pid").exists()


@pytest.mark.timeout(40)
def test_stop_finds_a_daemon_started_with_another_root(layout: Path, exchange: str, tmp_path: Path):
    other = tmp_path / "elsewhere"
    pid = None
    try:
        r = sh(layout / "scripts" / "start_btc.sh", *venue_args(exchange, other, layout / ".env"))
        assert r.returncode == 0, r.stdout
        pid = started_pid(r.stdout)
        wait_for(lambda: (other / "state" / "btc.pid").exists(), 10, "the daemon's pid file")
        stop = sh(layout / "scripts" / "stop_btc.sh", "--root", str(other))
        assert "btc: stopped" in stop.stdout, stop.stdout
        assert not alive(pid)
    finally:
        terminate_pid(pid)
