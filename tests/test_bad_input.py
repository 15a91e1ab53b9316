"""Bad input (issue 5, item 3): the real daemon (trade_btc.py) as a subprocess,
against the real local exchange where it needs one, over loopback.

- config at start: every key × (wrong type, out of range), a missing key, a
  garbage line and a few more → exit 2 with one stderr line naming file, line, key;
- config at reload: several bad files in turn → each error logged once, the
  last good config stays (the TP after them uses the good TP_PCT);
- state file corrupt / truncated / empty / foreign / another symbol's → kept
  aside with a timestamp, one WARNING, the position adopted from the exchange
  with exactly one exit and nothing duplicated;
- missing / rejected API keys, a symbol the exchange does not list, logs/ not
  writable → one line, exit 2;
- trades/ not writable and a full disk (/dev/full) on CSV writes → one ERROR,
  rows kept and written once writable again, without waiting for a new fill.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness
from harness import (
    CONFIG, REPO, Daemon, Exchange, assert_csv_matches_exchange, ceil_tick, clean_env, entry_prices, exits,
    level_qty, wait_reconciles, wait_until,
)

pytestmark = pytest.mark.timeout(60)

IS_ROOT = os.geteuid() == 0


def new_keys() -> tuple[str, str]:
    # Distinctive patterns: tests/test_secrets.py scans every file of the session for them.
    return "bi-key-" + secrets.token_hex(8), "bi-secret-" + secrets.token_hex(16)


@pytest.fixture
def keys() -> tuple[str, str]:
    return new_keys()


def start_daemon(ex: Exchange, root: Path, keys, daemons: list, **kw) -> Daemon:
    d = Daemon(root, ex, *keys, **kw).start()
    daemons.append(d)
    both = lambda: d.alive() and (lambda ws: ws["user"] >= 1 and ws["market"] >= 1)(ex.stats()["websockets"])
    wait_until(both, 15, "the daemon's market and user streams", d.diag)
    return d


def first_grid(ex: Exchange, d: Daemon) -> float:
    ex.step(1)
    wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
    return d.state()["grid_center"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, f"expected one stderr line, got:\n{err}"
    return lines[0]


# ---------------------------------------------------------------------------- 1. config at start

GOOD = CONFIG.format(tp=0.005) + "MAKER_FEE=0.0002\nTAKER_FEE=0.0005\n"
GOOD_LINES = GOOD.splitlines()
LINE_OF = {ln.split("=", 1)[0]: i for i, ln in enumerate(GOOD_LINES, 1)}

# key -> (wrong type, out of range); the error must name this key on its line.
BAD_VALUES = {
    "INITIAL_CAPITAL": ("lots", "-5"),
    "CAPITAL_RATIO": ("half", "1.5"),
    "LEVERAGE_LONG": ("2.5", "200"),
    "LEVERAGE_SHORT": ("x5", "0"),
    "TRADE_DIRECTION": ("1", "SIDEWAYS"),
    "GRID_RANGE_PCT": ("4%", "1.5"),
    "MAX_ENTRY_LEVEL": ("four", "0"),
    "ENTRY_RATIOS": ("0.05,x,0.25,0.50", "0.5,0.5,0.5,0.5"),
    "LEVEL_DISTANCES": ("0.005;0.010;0.040;0.045", "0.005,0.010,0.009,0.045"),
    "SL_DISTANCE": ("nan", "1.5"),
    "TP_PCT": ("inf", "0"),
    "BE_PCT": ("0,001", "0.01"),          # 0.01 ≥ TP_PCT
    "MAKER_FEE": ("free", "0.5"),
    "TAKER_FEE": ("", "-0.001"),
}
assert set(BAD_VALUES) == set(LINE_OF), "every config key has a bad value"


def _with(key: str, value: str) -> str:
    return "\n".join(f"{key}={value}" if ln.startswith(key + "=") else ln for ln in GOOD_LINES) + "\n"


# name -> (file text, expected "where: KEY:" prefix pattern as a regex with {path})
CASES: dict[str, tuple[str, str]] = {}
for _k, (_wrong, _range) in BAD_VALUES.items():
    CASES[f"{_k}-type"] = (_with(_k, _wrong), rf"{{path}}:{LINE_OF[_k]}: {_k}: ")
    CASES[f"{_k}-range"] = (_with(_k, _range), rf"{{path}}:{LINE_OF[_k]}: {_k}: ")
CASES["missing-key"] = ("\n".join(ln for ln in GOOD_LINES if not ln.startswith("SL_DISTANCE=")) + "\n",
                        r"{path}: SL_DISTANCE: missing required key")
CASES["garbage-line"] = (GOOD + "this is not a setting\n", rf"{{path}}:{len(GOOD_LINES) + 1}: expected KEY=VALUE")
CASES["unknown-key"] = (GOOD.replace("TP_PCT=", "TP_PERCENT="), rf"{{path}}:{LINE_OF['TP_PCT']}: unknown key "
                        r"'TP_PERCENT' \(did you mean TP_PCT\?\)")
CASES["duplicate-key"] = (GOOD + "LEVERAGE_LONG=10\n", rf"{{path}}:{len(GOOD_LINES) + 1}: LEVERAGE_LONG: duplicate key")
CASES["empty-file"] = ("", r"{path}: INITIAL_CAPITAL: missing required key")
CASES["binary"] = ("\x00\xff\xfe garbage", r"{path}: (not valid UTF-8|.*expected KEY=VALUE)")
CASES["no-file"] = (None, r"{path}: file not found")


# A real process for a few cases (exit code, stderr as a user sees them); every case in-process
# through the same daemon.main (about 0.3 s of interpreter start saved per case).
IN_SUBPROCESS = ("TP_PCT-type", "LEVERAGE_LONG-range", "missing-key", "garbage-line", "binary")


def _write_case(base: Path, name: str) -> Path:
    text = CASES[name][0]
    path = base / f"{name}.txt"
    if text is not None:
        path.write_bytes(text.encode("latin-1") if name == "binary" else text.encode())
    return path


def _argv(path: Path, base: Path, env: Path) -> list[str]:
    return ["--config", str(path), "--root", str(base / "root"), "--env", str(env),
            "--base-url", "http://127.0.0.1:9", "--ws-url", "ws://127.0.0.1:9/", "--quiet"]


@pytest.fixture(scope="module")
def config_base(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("config_start")
    key, secret = new_keys()
    env = base / ".env"
    env.write_text(f"BINANCE_API_KEY={key}\nBINANCE_API_SECRET={secret}\n")
    env.chmod(0o600)
    return base, env


@pytest.fixture(scope="module")
def config_runs(config_base):
    """The IN_SUBPROCESS cases run at once as real trade_btc.py processes (no exchange needed: the
    config is validated before connecting). name -> (path, rc, stdout, stderr)."""
    base, env = config_base
    procs = {}
    for name in IN_SUBPROCESS:
        path = _write_case(base, name)
        out, err = base / f"{name}.out", base / f"{name}.err"
        with open(out, "w") as o, open(err, "w") as e:
            procs[name] = (path, out, err, subprocess.Popen(
                [sys.executable, str(REPO / "trade_btc.py"), *_argv(path, base, env)],
                stdout=o, stderr=e, cwd=base, env=clean_env()))
    results = {}
    for name, (path, out, err, p) in procs.items():
        try:
            rc = p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        results[name] = (path, rc, out.read_text(), err.read_text())
    return results


def _check_config_error(path: Path, rc: int, out: str, err: str, name: str) -> None:
    assert rc == 2 and out == "", (rc, out, err)
    line = one_line(err)
    assert line.startswith("trade_btc.py: error: ")
    pattern = CASES[name][1].replace("{path}", re.escape(str(path)))
    assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"
    assert not (path.parent / "root" / "logs").exists()      # nothing started


@pytest.mark.parametrize("name", list(CASES))
def test_bad_config_at_start_is_one_line_and_exit_2(config_base, name, capsys):
    from live import launcher as launcher
    base, env = config_base
    path = _write_case(base, name)
    rc = launcher.main("BTCUSDC", _argv(path, base, env))
    cap = capsys.readouterr()
    _check_config_error(path, rc, cap.out, cap.err, name)


@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_bad_config_at_start_real_process(config_runs, name):
    _check_config_error(*config_runs[name], name)


# ---------------------------------------------------------------------------- 2. config at reload


def test_bad_config_at_reload_keeps_the_last_good_and_logs_each_error_once(tmp_path, exchange, keys, daemons):
    ex = exchange
    d = start_daemon(ex, tmp_path / "root", keys, daemons, config_interval=0.3)
    center = first_grid(ex, d)
    good = d.config.read_text()
    bad_files = [
        good.replace("TP_PCT=0.005", "TP_PCT=0.02\nthis line is garbage"),       # garbage line
        good.replace("TP_PCT=0.005", "TP_PCT=abc"),                             # wrong type
        good.replace("TP_PCT=0.005", "TP_PCT=0.02").replace("LEVERAGE_LONG=20", "LEVERAGE_LONG=500"),
        good.replace("TP_PCT=0.005", "TP_PCT=0.02").replace("SL_DISTANCE=0.05\n", ""),   # missing key
        "",                                                                     # empty file
        None,                                                                   # file deleted
    ]
    mtime = time.time()
    rejected = "config reload rejected, keeping the last good config"
    for i, text in enumerate(bad_files, 1):
        if text is None:
            d.config.unlink()
        else:
            d.config.write_text(text)
            mtime += 10
            os.utime(d.config, (mtime, mtime))     # a new mtime even within one clock tick
        wait_until(lambda: d.log().count(rejected) == i, 10, f"bad config #{i} rejected", d.diag)
        # Re-reads of the same bad file must log nothing more; a reload is not observable from
        # outside, so this gives it the time of a few (a slow machine only proves less).
        time.sleep(0.4)
    # Still bad (TP_PCT=0.02 in the last parsable file): the TP uses the good TP_PCT=0.005.
    d.config.write_text(bad_files[2])
    os.utime(d.config, (mtime + 10, mtime + 10))
    wait_until(lambda: d.log().count(rejected) == 7, 10, "the LEVERAGE_LONG error again", d.diag)
    p1 = entry_prices(center)[0]
    ex.price(p1 - 1.0)
    tp = ceil_tick(p1 * 1.005)
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [tp], 10, "the TP at the good TP_PCT", d.diag)
    log = d.log()
    errors = [ln for ln in log.splitlines() if rejected in ln]
    assert all(" - ERROR - " in ln for ln in errors)
    # Each distinct error exactly once, though every bad file was re-read several times;
    # the LEVERAGE_LONG one again after other errors in between is a new episode (7 in all).
    assert len(errors) == 7 and len(set(errors[:6])) == 6, errors
    assert "LEVERAGE_LONG" in errors[2] and f"{d.config}:" in errors[0]
    assert "설정 파일 재로드" not in log and d.alive()
    # A good file again is taken (and logged once).
    d.config.write_text(good.replace("TP_PCT=0.005", "TP_PCT=0.006"))
    os.utime(d.config, (mtime + 30, mtime + 30))
    wait_until(lambda: "설정 파일 재로드" in d.log(), 10, "the good config reloaded", d.diag)
    assert d.alive()


# ---------------------------------------------------------------------------- 3. state files


def test_unreadable_state_files_are_kept_aside_and_the_position_recovered(tmp_path, exchange, keys, daemons):
    ex = exchange
    d = start_daemon(ex, tmp_path / "root", keys, daemons)
    center = first_grid(ex, d)
    p1 = entry_prices(center)[0]
    q1 = level_qty(p1, 1)
    ex.price(p1 - 1.0)
    wait_until(lambda: len(exits(ex)) == 1, 10, "the TP", d.diag)
    d.kill(signal.SIGKILL)
    good = (d.root / "state" / "state_btc.json").read_text()
    other = json.loads(good)
    other["symbol"] = "ETHUSDC"
    bad_states = {
        "corrupt": "{\"symbol\": \"BTCUSDC\", \"capital\": 3300,, }",
        "truncated": good[: len(good) // 2],
        "empty": "",
        "foreign": json.dumps({"name": "some-other-tool", "version": "2.1", "items": [1, 2, 3]}),
        "foreign-list": "[1, 2, 3]",
        "binary": "\x00\x01\x02\xff",
        "other-symbol": json.dumps(other),
    }
    state_dir = d.root / "state"
    for n, (kind, text) in enumerate(bad_states.items(), 1):
        (state_dir / "state_btc.json").write_bytes(text.encode("latin-1") if kind == "binary" else text.encode())
        before = set(state_dir.glob("state_btc.json.corrupt-*"))
        d.start()
        wait_until(lambda: d.log().count("시작: BTCUSDC LONG") == n + 1, 15, f"the restart ({kind})", d.diag)

        def settled():
            if not d.alive():
                return False
            book, st = ex.book(), d.state()
            ex_exits = [o for o in book.values() if o["reduceOnly"]]
            return len(ex_exits) == 1 and set(book) == set(st["orders"]) and st["position"]["qty"] == q1
        wait_until(settled, 10, f"one exit, no orphan, the position adopted ({kind})", d.diag)
        wait_reconciles(ex, 1, d.diag)                     # a sync later: still so
        assert settled(), kind
        book = ex.book()
        assert len([c for c in book if "-E" in c]) <= 4 and not ex.open_algos()
        (tp_order,) = exits(ex)
        assert float(tp_order["origQty"]) == q1
        assert ex.position() == q1                          # no entry was duplicated into a bigger position
        aside = set(state_dir.glob("state_btc.json.corrupt-*")) - before
        assert len(aside) == 1, (kind, aside)
        (aside,) = aside
        assert re.fullmatch(r"state_btc\.json\.corrupt-\d{8}-\d{6}(-\d+)?", aside.name)
        assert aside.read_bytes() == (text.encode("latin-1") if kind == "binary" else text.encode())
        warnings = [ln for ln in d.log().splitlines() if " - WARNING - " in ln and aside.name in ln]
        assert len(warnings) == 1, (kind, warnings)
        assert "recovering from the exchange" in warnings[0]
        if kind == "other-symbol":
            assert "belongs to ETHUSDC" in warnings[0]
        d.kill(signal.SIGKILL)
    assert_csv_matches_exchange(d, ex)                     # no fill recorded twice across 8 starts
    assert d.log().count("운용 자본") == 1 + len(bad_states)


# ---------------------------------------------------------------------------- 4. keys, symbol, logs/


def test_missing_and_rejected_keys_and_a_wrong_symbol_exit_2_with_one_line(tmp_path, exchange, keys, daemons,
                                                                          monkeypatch):
    ex = exchange
    cases = {
        "no .env": ("", "BINANCE_API_KEY and BINANCE_API_SECRET must be set"),
        "no secret": (f"BINANCE_API_KEY={keys[0]}\n", "must be set"),
        "wrong key": ("BINANCE_API_KEY=someone-elses-key\nBINANCE_API_SECRET=whatever-secret\n", "API key rejected"),
        "wrong secret": (f"BINANCE_API_KEY={keys[0]}\nBINANCE_API_SECRET=not-the-secret-{secrets.token_hex(4)}\n",
                         "API key rejected"),
    }
    for i, (name, (env_text, expected)) in enumerate(cases.items()):
        d = Daemon(tmp_path / f"root{i}", ex, *keys, env_text=env_text)
        daemons.append(d)
        rc, out, err = d.run_to_exit()
        assert rc == 2, (name, rc, err)
        assert expected in one_line(err), (name, err)
    assert not ex.open_orders() and ex.position() == 0

    # A symbol the exchange does not list: the scripts fix it per file, so the venue is what differs.
    monkeypatch.setattr(harness, "SYM", "ETHUSDC")
    eth_only = Exchange(tmp_path / "eth-exchange", *keys)
    try:
        d = Daemon(tmp_path / "root-eth", eth_only, *keys)
        daemons.append(d)
        rc, out, err = d.run_to_exit()
        assert rc == 2 and "symbol BTCUSDC is not listed by the exchange" in one_line(err)
        assert "symbol BTCUSDC is not listed" in d.log()
    finally:
        eth_only.stop()


def test_unwritable_logs_directory_is_one_line_and_exit_2(tmp_path, keys, daemons):
    roots = []
    d = Daemon(tmp_path / "file", None, *keys)           # logs is a regular file (works as root too)
    (d.root / "logs").write_text("not a directory\n")
    roots.append(d)
    if not IS_ROOT:                                       # chmod only stops writes for non-root users
        d2 = Daemon(tmp_path / "ro", None, *keys)
        (d2.root / "logs").mkdir()
        (d2.root / "logs").chmod(0o500)
        roots.append(d2)
    for d in roots:
        daemons.append(d)
        rc, out, err = d.run_to_exit()
        assert rc == 2 and out == ""
        assert f"cannot write logs in {d.root / 'logs'}" in one_line(err)
        assert not (d.root / "state" / "btc.pid").exists()


# ---------------------------------------------------------------------------- 5. trades CSV: not writable, full disk


def test_trades_not_writable_then_full_disk_no_row_lost(tmp_path, exchange, keys, daemons):
    ex = exchange
    root = tmp_path / "root"
    root.mkdir()
    (root / "trades").write_text("a file where the trades folder should be\n")   # unwritable, even for root
    d = start_daemon(ex, root, keys, daemons)
    center = first_grid(ex, d)
    p1, p2, p3, _ = entry_prices(center)
    ex.price(p1 - 1.0)                                   # ENTRY1 fills: its row cannot be written
    wait_until(lambda: len(exits(ex)) == 1, 10, "the TP", d.diag)
    wait_until(lambda: "trades CSV" in d.log(), 5, "the CSV error logged", d.diag)
    wait_reconciles(ex, 1, d.diag)                       # syncs retry, without logging again
    errors = [ln for ln in d.log().splitlines() if "trades CSV" in ln and "not writable" in ln]
    assert len(errors) == 1 and " - ERROR - " in errors[0] and "1 row(s) kept" in errors[0]
    assert d.alive()
    (root / "trades").unlink()                           # writable again; no new fill needed
    wait_until(lambda: len(d.trades()) == 1, 10, "the kept row written by a periodic sync", d.diag)
    assert_csv_matches_exchange(d, ex)
    assert "writable again" in d.log()

    # Full disk: every write to the CSV fails with ENOSPC while fills happen.
    csv_path = root / "trades" / "trades_btc.csv"
    saved = root / "trades_saved.csv"
    os.replace(csv_path, saved)
    os.symlink("/dev/full", csv_path)
    ex.price(p3 - 1.0)                                   # ENTRY2 and ENTRY3
    def be_placed():
        xs, fills = exits(ex), ex.fills()
        return len(fills) == 3 and len(xs) == 1 and "-BE" in xs[0]["clientOrderId"]
    wait_until(be_placed, 10, "the BE", d.diag)
    wait_until(lambda: d.log().count("not writable") == 2, 5, "the full disk logged", d.diag)
    wait_reconciles(ex, 1, d.diag)
    assert d.log().count("not writable") == 2 and "No space left on device" in d.log()
    assert d.alive()
    os.replace(saved, csv_path)                          # space returns: the old file is back in place
    wait_until(lambda: len(d.trades()) == 3, 10, "the kept rows written", d.diag)
    wait_reconciles(ex, 1, d.diag)
    assert_csv_matches_exchange(d, ex)                    # every fill exactly once
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "ENTRY2", "ENTRY3"]
    assert csv_path.read_text().count("time,symbol") == 1  # one header
