"""Secrets (issue 5, item 4): the API key and secret never reach a log, state,
CSV, status output or traceback; a `.env` readable by others gives a start-up
warning.

A representative set of real processes runs with one distinctive key and
secret (a daemon through start, fills, a TP round trip, a bad config reload
and SIGTERM; a config error at start; rejected keys; an unreachable exchange;
`status.py --root`; the offline demo), then every file under their roots is
scanned.  The last test scans every file this pytest session wrote under its
base temp directory (the other suites' daemon roots included) for the keys and
secrets those suites use.
"""
from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import REPO, Daemon, Exchange, ceil_tick, clean_env, entry_prices, exits, wait_until

pytestmark = pytest.mark.timeout(90)

KEY = "scanKEY" + secrets.token_hex(10)
SECRET = "scanSECRET" + secrets.token_hex(20)


def _texts(root: Path, skip=lambda p: False):
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and not skip(p):
            yield p, p.read_bytes().decode("utf-8", errors="replace")


def _is_env_or_venue(p: Path) -> bool:
    """.env files (they hold the keys by design) and the exchange's own files (the venue knows them)."""
    return p.name == ".env" or any(part.startswith("exchange") or part.startswith("eth-exchange")
                                   or part == "other-venue" for part in p.parts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("secrets")
    ex = Exchange(base / "exchange", KEY, SECRET)
    other = Exchange(base / "other-venue", "a-different-key", "a-different-secret-123")
    started: list[Daemon] = []
    info: dict = {"base": base}
    try:
        # 1. A daemon with a world-readable .env through start, fills, a TP round trip, a bad reload, SIGTERM.
        d = Daemon(base / "main", ex, KEY, SECRET)
        started.append(d)
        d.env_file.chmod(0o644)
        d.start()
        wait_until(lambda: d.alive() and ex.stats()["websockets"]["user"] >= 1, 15, "the daemon", d.diag)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        p1 = entry_prices(d.state()["grid_center"])[0]
        ex.price(p1 - 1.0)
        wait_until(lambda: len(exits(ex)) == 1, 10, "the TP", d.diag)
        ex.price(ceil_tick(p1 * 1.005) + 5.0)
        wait_until(lambda: len(d.trades()) == 2, 10, "the TP fill recorded", d.diag)
        d.config.write_text(d.config.read_text().replace("TP_PCT=0.005", f"TP_PCT={SECRET}"))
        wait_until(lambda: "config reload rejected" in d.log(), 10, "the bad reload", d.diag)
        info["status"] = subprocess.run([sys.executable, str(REPO / "status.py"), "--root", str(d.root), "btc"],
                                        capture_output=True, text=True, timeout=20, env=clean_env())
        (base / "main" / "status.out").write_text(info["status"].stdout + info["status"].stderr)
        d.proc.send_signal(signal.SIGTERM)
        info["main_rc"] = d.proc.wait(15)
        info["main"] = d

        # 2. A config error at start (a value that is the secret itself), .env 0600.
        c = Daemon(base / "config-error", ex, KEY, SECRET, write_config=False)
        started.append(c)
        c.config.write_text(d.config.read_text())
        info["config_error"] = c.run_to_exit()

        # 3. Keys the venue rejects (0600: no warning), and an exchange that is not there.
        r = Daemon(base / "rejected", other, KEY, SECRET)
        started.append(r)
        info["rejected"] = r.run_to_exit()
        info["rejected_daemon"] = r
        # An unreachable exchange at start is waited out (logged), and SIGTERM stops it at once.
        u = Daemon(base / "unreachable", None, KEY, SECRET, base_url="http://127.0.0.1:9")
        started.append(u)
        u.start()
        deadline = time.monotonic() + 15
        while "cannot reach the exchange" not in u.log() and time.monotonic() < deadline and u.alive():
            time.sleep(0.1)
        alive = u.alive()
        t0 = time.monotonic()
        u.proc.send_signal(signal.SIGTERM)
        rc = u.proc.wait(10)
        info["unreachable"] = (alive, rc, time.monotonic() - t0, u.log())

        # 4. The offline demo (its own throwaway keys), 30 simulated minutes at 600 candles/s.
        demo_root = base / "demo-root"
        demo_root.mkdir()
        with open(demo_root / "demo.out", "w") as o, open(demo_root / "demo.err", "w") as e:
            p = subprocess.Popen([sys.executable, str(REPO / "trade_btc.py"), "--demo", "--demo-minutes", "30",
                                  "--demo-speed", "600", "--root", str(demo_root), "--quiet"],
                                 stdout=o, stderr=e, cwd=demo_root, env=clean_env())
            try:
                info["demo_rc"] = p.wait(12)
            except subprocess.TimeoutExpired:
                info["demo_rc"] = "hung (killed after 12 s)"     # reported by the first test; files still scanned
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        info["demo_root"] = demo_root
        yield info
    finally:
        for dd in started:
            dd.kill()
        ex.stop()
        other.stop()


def test_the_processes_ran_their_paths(runs):
    assert runs["main_rc"] == 0
    assert runs["config_error"][0] == 2 and "TP_PCT" in runs["config_error"][2]
    assert "(got '***')" in runs["config_error"][2]            # the value quoting the secret is masked
    assert "TP_PCT: must be a number (got '***')" in runs["main"].log()
    assert runs["rejected"][0] == 2 and "API key rejected" in runs["rejected"][2]
    alive, rc, stop_s, log = runs["unreachable"]
    assert alive and "cannot reach the exchange at http://127.0.0.1:9" in log and "retrying" in log
    assert rc == 0 and stop_s < 3
    assert "BTCUSDC" in runs["status"].stdout and runs["status"].returncode == 0


def test_the_demo_ran_and_exited(runs):
    # It used to wait out its 5 s stop grace in about 1 run in 6 (a cancellation swallowed
    # inside python-binance's recv); 12 s leaves room for a busy machine all the same.
    assert runs["demo_rc"] == 0, f"demo exit: {runs['demo_rc']}\n" + (runs["demo_root"] / "demo.err").read_text()[-2000:]
    assert "demo report — BTCUSDC, 30 simulated minutes" in (runs["demo_root"] / "demo.out").read_text()
    logs = "".join(p.read_text() for p in (runs["demo_root"] / "demo" / "logs").glob("*.log"))
    assert "stopping without waiting for" not in logs      # every task unwound when asked


def test_key_and_secret_never_written(runs):
    base: Path = runs["base"]
    scanned = 0
    for p, text in _texts(base, lambda p: _is_env_or_venue(p) or p.name == "config_btc.txt"):
        # (config_btc.txt is an input: the bad-config runs put the secret in it on purpose)
        scanned += 1
        assert SECRET not in text, f"the API secret leaked into {p}"
        assert KEY not in text, f"the API key leaked into {p}"
    assert scanned >= 20
    # The demo's throwaway keys ("demo-" + 32 hex, 64 hex) do not show either.
    for p, text in _texts(runs["demo_root"]):
        assert not re.search(r"demo-[0-9a-f]{32}", text) and not re.search(r"\b[0-9a-f]{64}\b", text), p


def test_env_readable_by_others_warns_at_start(runs):
    d: Daemon = runs["main"]
    warns = [ln for ln in d.log().splitlines() if "chmod 600" in ln]
    assert len(warns) == 1 and " - WARNING - " in warns[0] and str(d.env_file) in warns[0]
    r: Daemon = runs["rejected_daemon"]
    assert r.log() and "chmod 600" not in r.log() and "readable by other" not in r.log()


def test_session_scan_of_every_suite_file(tmp_path_factory):
    """Every file this session's suites wrote under the base temp dir, scanned for the keys and
    secrets those suites give their daemons (tests/test_daemon_e2e.py, tests/test_bad_input.py, here)."""
    base = tmp_path_factory.getbasetemp()
    secret_re = re.compile(r"(e2e-secret-[0-9a-f]{32}|bi-secret-[0-9a-f]{32}|" + re.escape(SECRET) + ")")
    key_re = re.compile(r"(e2e-key-[0-9a-f]{16}|bi-key-[0-9a-f]{16}|" + re.escape(KEY) + ")")
    scanned = 0
    for p, text in _texts(base, _is_env_or_venue):
        scanned += 1
        m = secret_re.search(text)
        assert not m or p.name == "config_btc.txt", f"a secret leaked into {p}: {m.group(0)}"
        if p.suffix in (".log", ".json", ".csv") or "state" in p.parts or p.name == "status.out":
            m = key_re.search(text)
            assert not m, f"an API key leaked into {p}: {m.group(0)}"
    assert scanned > 0
