"""What the daemon records for the dashboard's charts (ops/history.py): the recent 1-minute
candles (state/prices_<sym>.json), the account's margin a minute (state/account_history.csv,
written under the account's lock by whichever daemon reads it first), and whether a state
file is a demo's.  Real files throughout; the end-to-end check runs the real demo."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import clean_env  # noqa: E402

from exchange_api import AccountSnapshot  # noqa: E402
from live.account_guard import AccountGuard  # noqa: E402
from ops.history import CANDLES_KEPT, HISTORY_HEADER, PriceHistory  # noqa: E402
from paths import Paths  # noqa: E402
from state_manager import GridState, StateManager  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_040_000          # a minute's open (ms)
MIN = 60_000


def kline(i: int, closed: bool = True, symbol: str = "BTCUSDC") -> dict:
    """A kline_1m message of the market stream, as the daemon's pump hands it over."""
    p = 60_000.0 + i
    return {"e": "kline", "E": T0 + i * MIN + 59_999, "s": symbol,
            "k": {"t": T0 + i * MIN, "T": T0 + i * MIN + 59_999, "s": symbol, "i": "1m", "o": f"{p:.1f}",
                  "h": f"{p + 5:.1f}", "l": f"{p - 5:.1f}", "c": f"{p + 1:.1f}", "x": closed}}


def read_prices(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- prices_<sym>.json
def test_closed_candles_are_kept_and_written_only_when_one_was_added(tmp_path):
    path = Paths(tmp_path).prices("btc")
    h = PriceHistory(path, "BTCUSDC")
    assert not h.write() and not path.exists()          # nothing seen: nothing written
    h.see(kline(0, closed=False))
    h.see({"e": "kline", "k": {"x": True}})             # malformed: ignored
    h.see(kline(0))
    h.see(kline(1, closed=False))
    assert h.write()
    d = read_prices(path)
    assert d == {"symbol": "BTCUSDC", "candles": [[T0, 60_000.0, 60_005.0, 59_995.0, 60_001.0]]}
    assert isinstance(d["candles"][0][0], int)
    before = path.stat().st_mtime_ns
    assert not h.write()                                # no new candle: the file is left alone
    assert path.stat().st_mtime_ns == before
    h.see(kline(1))
    h.see(kline(1))                                     # the same candle twice: kept once
    assert h.write()
    assert [c[0] for c in read_prices(path)["candles"]] == [T0, T0 + MIN]


def test_a_day_of_candles_is_kept_oldest_first(tmp_path):
    h = PriceHistory(Paths(tmp_path).prices("btc"), "BTCUSDC")
    for i in range(CANDLES_KEPT + 60):
        h.see(kline(i))
    assert h.write()
    times = [c[0] for c in read_prices(h.path)["candles"]]
    assert CANDLES_KEPT == 1440 and len(times) == 1440
    assert times[0] == T0 + 60 * MIN and times == [times[0] + i * MIN for i in range(1440)]


def test_a_restart_continues_the_series(tmp_path):
    path = Paths(tmp_path).prices("btc")
    first = PriceHistory(path, "BTCUSDC")
    for i in range(10):
        first.see(kline(i))
    first.write()
    again = PriceHistory(path, "BTCUSDC")
    assert list(again.candles) == list(first.candles) and not again.changed
    again.see(kline(10))
    again.write()
    times = [c[0] for c in read_prices(path)["candles"]]
    assert times == [T0 + i * MIN for i in range(11)]
    # Another symbol's file is not continued.
    assert not PriceHistory(path, "ETHUSDC").candles


@pytest.mark.parametrize("text", ["{not json", "[]", '{"symbol": "BTCUSDC"}', '{"symbol": "BTCUSDC", "candles": 5}',
                                  '{"symbol": "BTCUSDC", "candles": [[1, 2]]}',
                                  '{"symbol": "BTCUSDC", "candles": [["x", 1, 2, 3, 4]]}', ""])
def test_a_corrupt_prices_file_is_ignored(tmp_path, text):
    path = Paths(tmp_path).prices("btc")
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    h = PriceHistory(path, "BTCUSDC")
    assert not h.candles
    h.see(kline(3))
    assert h.write() and [c[0] for c in read_prices(path)["candles"]] == [T0 + 3 * MIN]


# ---------------------------------------------------------------------------- account_history.csv
def snap(i: int) -> AccountSnapshot:
    return AccountSnapshot(wallet=3000.0 + i, equity=3100.0 + i, maint_margin=12.5)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_account_gets_at_most_one_row_a_minute_from_two_daemons(tmp_path):
    paths = Paths(tmp_path)
    btc = AccountGuard(paths.account(), "BTCUSDC", paths.account_history())
    eth = AccountGuard(paths.account(), "ETHUSDC", paths.account_history())
    t = T0
    btc.observe(snap(0), 0.0, t)
    eth.observe(snap(1), 0.0, t + 1_000)             # the same minute: the file has its row
    eth.observe(snap(2), 0.0, t + MIN - 1)
    eth.observe(snap(3), 0.0, t + MIN)               # a minute on: ETH writes it
    btc.observe(snap(4), 0.0, t + MIN + 30_000)      # BTC's own row is old, but the file's is not
    btc.observe(snap(5), 0.0, t + 2 * MIN + 5)
    eth.observe(snap(6), 0.0, t + 2 * MIN + 10)
    got = rows(paths.account_history())
    assert paths.account_history().read_text().splitlines()[0] == HISTORY_HEADER
    assert [int(r["time"]) for r in got] == [t, t + MIN, t + 2 * MIN + 5]
    s = snap(3)
    assert got[1] == {"time": str(t + MIN), "wallet": "3003.0", "equity": "3103.0", "maint_margin": "12.5",
                      "margin_ratio": repr(round(s.margin_ratio, 8))}
    # A guard without a history path (or a fresh one) writes none: the file is the daemons'.
    AccountGuard(paths.account(), "X").observe(snap(7), 0.0, t + 10 * MIN)
    assert len(rows(paths.account_history())) == 3


def test_the_history_is_trimmed_to_the_newest_rows(tmp_path):
    paths = Paths(tmp_path)
    keep = 5
    guards = [AccountGuard(paths.account(), s, paths.account_history(), history_rows=keep)
              for s in ("BTCUSDC", "ETHUSDC")]
    seen = []
    for i in range(2 * keep + 1):                    # the 11th row passes 2 × 5: trimmed to 5
        guards[i % 2].observe(snap(i), 0.0, T0 + i * MIN)
        seen.append(len(rows(paths.account_history())))
    assert seen == list(range(1, 2 * keep + 1)) + [keep]
    assert [int(r["time"]) for r in rows(paths.account_history())] == [T0 + i * MIN for i in range(6, 11)]
    for i in range(11, 14):                          # appending goes on after the trim
        guards[i % 2].observe(snap(i), 0.0, T0 + i * MIN)
    assert [int(r["time"]) for r in rows(paths.account_history())] == [T0 + i * MIN for i in range(6, 14)]


@pytest.mark.parametrize("text", ["garbage\n", "time,wallet\n1,2\n", "\x00\x01\x02",
                                  HISTORY_HEADER + "\n1700000000000,1,2,3\n",
                                  HISTORY_HEADER + "\n1700000000000,1,2,3,0.1\nnot,a,row,at,all\n",
                                  "something else\n1600000000000,1,2,3,0.1\n", ""])
def test_a_malformed_history_is_replaced_by_a_fresh_one(tmp_path, text):
    paths = Paths(tmp_path)
    paths.account_history().parent.mkdir(parents=True)
    paths.account_history().write_text(text, encoding="utf-8")
    guard = AccountGuard(paths.account(), "BTCUSDC", paths.account_history())
    assert not guard.observe(snap(0), 0.1, T0).stop
    guard.observe(snap(1), 0.1, T0 + MIN)
    assert paths.account_history().read_text().splitlines()[0] == HISTORY_HEADER
    assert [int(r["time"]) for r in rows(paths.account_history())] == [T0, T0 + MIN]


def test_a_history_with_the_header_alone_gets_its_first_row(tmp_path):
    paths = Paths(tmp_path)
    paths.account_history().parent.mkdir(parents=True)
    paths.account_history().write_text(HISTORY_HEADER + "\n", encoding="utf-8")
    AccountGuard(paths.account(), "BTCUSDC", paths.account_history()).observe(snap(0), 0.0, 5)
    assert [int(r["time"]) for r in rows(paths.account_history())] == [5]


# ---------------------------------------------------------------------------- the state's demo flag
def test_the_state_says_demo_and_older_files_load_as_live(tmp_path):
    mgr = StateManager(tmp_path / "state_btc.json")
    mgr.save(GridState(symbol="BTCUSDC", direction="LONG", capital=1000.0, demo=True))
    assert json.loads(mgr.path.read_text())["demo"] is True
    loaded = mgr.load()
    assert loaded is not None and loaded.demo is True
    mgr.save(GridState(symbol="BTCUSDC", direction="LONG", capital=1000.0))
    loaded = mgr.load()
    assert loaded is not None and loaded.demo is False
    old = json.loads(mgr.path.read_text())
    old.pop("demo")                                 # a state file written before the flag
    mgr.path.write_text(json.dumps(old))
    loaded = mgr.load()
    assert loaded is not None and loaded.demo is False and loaded.capital == 1000.0


# ---------------------------------------------------------------------------- the real demo
@pytest.mark.timeout(120)
def test_the_demo_leaves_its_candles_account_history_and_demo_flag(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "trade_btc.py"), "--demo", "--demo-minutes", "120",
                        "--demo-speed", "600", "--root", str(tmp_path), "--quiet", "--env", str(tmp_path / "none.env")],
                       cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    demo = Paths(tmp_path / "demo")
    prices = read_prices(demo.prices("btc"))           # left after the stop, unlike live_btc.json
    assert prices["symbol"] == "BTCUSDC" and not demo.live("btc").exists()
    candles = prices["candles"]
    assert len(candles) >= 60
    assert all(b[0] - a[0] == MIN for a, b in zip(candles, candles[1:]))
    assert all(c[3] <= min(c[1], c[4]) <= max(c[1], c[4]) <= c[2] for c in candles)
    st = json.loads(demo.state("btc").read_text())
    assert st["demo"] is True
    history = rows(demo.account_history())
    assert history and all(float(h["equity"]) > 0 for h in history)
    # The account as the demo left it (a last read once the market ended), as its report says.
    report = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (final wallet|equity)\s+(-?[\d.]+)",
                                                                 r.stdout, re.M)}
    assert st["account"]["wallet"] == pytest.approx(report["final wallet"], abs=1e-6)
    assert st["account"]["equity"] == pytest.approx(report["equity"], abs=1e-6)
