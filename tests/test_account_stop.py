"""The account-level stop (ACCOUNT_STOP_DRAWDOWN, issue 22): live, the real daemon against the
real local exchange closes at market, cancels everything, stops placing, says so, and holds
across a restart until a person clears it; the shared record makes every daemon of the
account stop whichever sees the fall first; the backtest applies the same rule."""
from __future__ import annotations

import json
import secrets
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CONFIG, Daemon, Exchange, entry_prices, wait_reconciles, wait_until, with_values  # noqa: E402
from test_funding_liquidation import falling  # noqa: E402

from exchange_api import AccountSnapshot  # noqa: E402
from live.account_guard import AccountGuard  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def keys() -> tuple[str, str]:
    return "as-key-" + secrets.token_hex(8), "as-secret-" + secrets.token_hex(16)


def test_the_shared_record_stops_every_daemon_whichever_saw_the_fall(tmp_path):
    path = tmp_path / "state" / "account.json"
    btc, eth = AccountGuard(path, "BTCUSDC"), AccountGuard(path, "ETHUSDC")
    assert not btc.observe(AccountSnapshot(3000, 3000, 10), 0.1, 1).stop
    assert not eth.observe(AccountSnapshot(3000, 3100, 10), 0.1, 2).stop        # a new peak, from either
    v = btc.observe(AccountSnapshot(3000, 2780, 50), 0.1, 3)                      # below 0.9 × 3100 = 2790
    assert v.stop and v.record.stopped_by == "BTCUSDC" and v.level == pytest.approx(2790)
    # ETH reads a recovered equity afterwards: the stop holds for it too, and for a restart.
    assert eth.observe(AccountSnapshot(3000, 2950, 10), 0.1, 4).stop
    assert AccountGuard(path, "ETHUSDC").observe(AccountSnapshot(3000, 3200, 10), 0.1, 5).stop
    assert json.loads(path.read_text())["stopped_at"] == 3
    eth.clear()
    assert not eth.observe(AccountSnapshot(3000, 2950, 10), 0.1, 6).stop        # a person cleared it
    # Off: no level, never a stop.
    assert AccountGuard(tmp_path / "b.json", "X").observe(AccountSnapshot(1, 0.01, 0), 0.0, 1).level == 0.0


def test_the_daemon_closes_at_market_stops_placing_and_holds_across_a_restart_until_cleared(
        tmp_path, exchange: Exchange, daemons, keys):
    root = tmp_path / "root"
    root.mkdir()
    (root / "config_btc.txt").write_text(with_values(CONFIG.format(tp=0.005), {"SL_DISTANCE": "0.30"})
                                         + "ACCOUNT_STOP_DRAWDOWN=0.02\n")
    d = Daemon(root, exchange, *keys, write_config=False).start()
    daemons.append(d)
    ex = exchange
    wait_until(lambda: d.alive() and ex.stats()["websockets"]["market"] >= 1 and ex.stats()["websockets"]["user"] >= 1,
               15, "the daemon's streams", d.diag)
    ex.step(1)
    wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
    wait_until(lambda: d.state().get("account", {}).get("peak_equity", 0) > 0, 10, "an account read", d.diag)
    center = d.state()["grid_center"]
    ex.price(entry_prices(center)[1] - 1.0)                 # levels 1 and 2 fill
    wait_until(lambda: ex.position() > 0, 10, "a position", d.diag)
    ex.price(round(center * 0.97, 1))                       # the account ~2.5 % under its peak, above level 3
    wait_until(lambda: d.state().get("account_stopped_at", 0) > 0 and ex.position() == 0, 20,
               "the account stop", d.diag)
    wait_until(lambda: not ex.open_orders() and not ex.open_algos(), 10, "every order cancelled", d.diag)
    st = d.state()
    assert st["account"]["stopped_at"] == st["account_stopped_at"] and st["account"]["stop_equity"] > 0
    assert d.trades()[-1]["role"] == "SL" and float(d.trades()[-1]["position_after"]) == 0
    shared = json.loads((root / "state" / "account.json").read_text())
    assert shared["stopped_by"] == "BTCUSDC" and shared["stopped_at"] == st["account_stopped_at"]
    assert "ACCOUNT STOP" in d.log()
    # The market comes back: nothing is placed (two whole reconciliations later).
    ex.price(center)
    ex.step(1)
    wait_reconciles(ex, 2, d.diag)
    assert not ex.open_orders() and ex.position() == 0
    # A restart holds the stop.
    d.kill(signal.SIGTERM)
    d.start()
    wait_until(lambda: d.alive() and ex.stats()["websockets"]["user"] >= 1, 15, "the restarted daemon", d.diag)
    ex.step(1)
    wait_reconciles(ex, 2, d.diag)
    assert not ex.open_orders() and d.state()["account_stopped_at"] == st["account_stopped_at"]
    # A person clears it: the grid comes back.
    d.kill(signal.SIGTERM)
    d.extra_args = ("--clear-account-stop",)
    d.start()
    ex.step(1)
    wait_until(lambda: len(ex.open_orders()) == 4, 15, "a grid after the stop was cleared", d.diag)
    assert d.state()["account_stopped_at"] == 0


def test_the_backtest_applies_the_same_stop_on_the_account():
    import backtest
    from config import load_config
    from sim.exchange import DEFAULT_FILTERS
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config_btc.txt").with_overrides(sl_distance=0.30, account_stop_drawdown=0.05)
    market = falling(1500, 50_000.0, 10.0)
    res = backtest.run_backtest(cfg, market, DEFAULT_FILTERS["BTCUSDC"], capital=1000.0, wallet=1000 / 0.33)
    assert res.account_stopped_at > 0 and res.liquidations == [] and res.final_qty == 0
    last = res.fills[-1]
    assert last.role == "SL" and last.position_after == 0
    assert all(f.time_ms <= res.account_stopped_at for f in res.fills)           # nothing after the stop
    stop_level = 0.95 * (1000 / 0.33)
    assert res.summary == {} and min(res.equity + (1000 / 0.33 - 1000)) >= stop_level * 0.97
