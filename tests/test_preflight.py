"""The pre-flight check (`trade_btc.py --check`, live/preflight.py; issue 19), as a user runs it:
the real command in a subprocess against the local exchange in a subprocess (tests/harness.py),
one problem injected per test (keys, hedge mode, multi-assets and credits modes, a key with
withdrawals, a capital too small for level 1, a leverage above its bracket, a state file that
disagrees with the exchange or cannot be read, a silent market stream).  Each test waits for the
check's exit (bounded) and asserts its exact line and exit code.

The exchange runs its clock (2 candles/s) so that the market stream carries klines.
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from harness import CONFIG, REPO, SYM, Exchange, clean_env, with_values
from state_manager import GridState, OrderState, PositionState, StateManager

pytestmark = pytest.mark.timeout(60)

CHECK_EXIT_S = 40.0          # the bound on one --check run (it takes about 2 s)
N_CHECKS = 13


@pytest.fixture
def keys() -> tuple[str, str]:
    return "pf-key-" + secrets.token_hex(8), "pf-secret-" + secrets.token_hex(16)


@pytest.fixture
def exchanges(tmp_path, keys):
    """`exchanges(**Exchange kwargs)`: a local exchange with its clock running; stopped after the test."""
    started: list[Exchange] = []

    def start(**kw) -> Exchange:
        ex = Exchange(tmp_path / f"exchange{len(started)}", *keys, speed=2, **kw)
        started.append(ex)
        return ex

    yield start
    for ex in started:
        ex.stop()


class Run:
    """One finished `--check`: exit code, stdout lines, stderr."""

    def __init__(self, proc: subprocess.CompletedProcess, env_file: Path):
        self.rc, self.out, self.err = proc.returncode, proc.stdout, proc.stderr
        self.lines = proc.stdout.splitlines()
        self.env_file = env_file

    def line(self, start: str) -> str:
        found = [ln for ln in self.lines if ln.startswith(start)]
        assert len(found) == 1, f"one line starting {start!r} expected in:\n{self.out}\nstderr:\n{self.err}"
        return found[0]

    def statuses(self) -> list[str]:
        return [ln.split()[0] for ln in self.lines[:-1]]


def run_check(root: Path, ex: Exchange, keys: tuple[str, str], config: dict[str, str] | None = None,
              extra: tuple[str, ...] = (), secret: str | None = None, command: list[str] | None = None) -> Run:
    """`trade_btc.py --check` (or `command`) with its own root, .env and config, to its exit."""
    root.mkdir(parents=True, exist_ok=True)
    env_file = root / ".env"
    env_file.write_text(f"BINANCE_API_KEY={keys[0]}\nBINANCE_API_SECRET={secret or keys[1]}\n")
    env_file.chmod(0o600)
    cfg = root / "config_btc.txt"
    cfg.write_text(with_values(CONFIG.format(tp=0.005), config or {}))
    args = ["--base-url", ex.url, "--ws-url", ex.ws_url, "--root", str(root), "--env", str(env_file),
            "--config", str(cfg), *extra]
    cmd = command or [sys.executable, str(REPO / "trade_btc.py"), "--check"]
    proc = subprocess.run([*cmd, *args], cwd=root, env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=CHECK_EXIT_S)
    return Run(proc, env_file)


def state_path(root: Path) -> Path:
    return root / "state" / "state_btc.json"


# ---------------------------------------------------------------------------- all well


def test_everything_passes_and_nothing_is_changed_or_shown(tmp_path, exchanges, keys):
    ex = exchanges()
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 0, r.out + r.err
    assert r.statuses() == ["OK"] * N_CHECKS, r.out
    assert r.lines[-1] == f"{N_CHECKS} checks: {N_CHECKS} OK, 0 WARN, 0 FAIL: ready to start"
    assert r.line("OK    keys") == "OK    keys authenticate (futures account readable)"
    assert r.line("OK    key permissions") == \
        "OK    key permissions: futures trading on, withdrawals off (no IP restriction)"
    assert re.fullmatch(r"OK    clock skew [+-]\d+ ms \(server time minus this machine's; round trip \d+ ms\)",
                        r.line("OK    clock"))
    assert r.line("OK    position mode") == "OK    position mode one-way"
    assert r.line("OK    account in") == "OK    account in single-asset mode (margin: USDC)"
    assert r.line("OK    margin type") == "OK    margin type cross on BTCUSDC"
    assert r.line("OK    capital") == "OK    capital 3300.00 USDC (ratio 0.33 of wallet 10000.00)"
    assert r.line("OK    leverage") == ("OK    leverage 20x allowed at the ladder's full notional 66,000.00 USDC "
                                       "(bracket 50,000–600,000): up to 100x")
    assert r.line("OK    all 4 levels").startswith("OK    all 4 levels above min qty 0.001, min notional 5 USDC at price ")
    assert re.fullmatch(r"OK    order test passes: BUY 0\.\d{3} @ \d+\.\d LIMIT GTX \(GM-BTCUSDC-1-E1\), "
                        r"validated by the exchange, not placed", r.line("OK    order test"))
    assert r.line("OK    market stream").startswith("OK    market stream delivers klines (btcusdc@kline_1m, first after ")
    assert r.line("OK    user stream") == \
        "OK    user stream accepts its subscription (listenKey, documented route with explicit events)"
    assert r.line("OK    no state file") == f"OK    no state file (a fresh start: {state_path(tmp_path / 'root')})"
    for secret_text in keys:
        assert secret_text not in r.out and secret_text not in r.err
    # Read-only: nothing placed, no setting changed, no state / log / lock file written.
    asked = ex.stats()["requests"]
    assert asked.get("POST /fapi/v1/order/test") == 1
    changes = [k for k in asked if k.split()[0] in ("POST", "PUT", "DELETE")
               and k not in ("POST /fapi/v1/order/test", "POST /fapi/v1/listenKey")]
    assert changes == [], changes
    assert ex.open_orders() == [] and ex.open_algos() == [] and ex.fills() == []
    assert not (tmp_path / "root" / "state").exists() and not (tmp_path / "root" / "logs").exists()


def test_check_script_runs_the_check_and_passes_its_exit_code(tmp_path, exchanges, keys):
    ex = exchanges(faults="market_silent=1")
    ok = run_check(tmp_path / "root", ex, keys, command=["bash", str(REPO / "scripts" / "check.sh"), "btc"],
                   extra=("--check-timeout", "1"))
    assert ok.rc == 1, ok.out + ok.err
    assert ok.lines[-1] == f"{N_CHECKS} checks: {N_CHECKS - 1} OK, 0 WARN, 1 FAIL: fix the FAIL lines before going live"
    ex.faults(market_silent=0)
    again = run_check(tmp_path / "root", ex, keys, command=["bash", str(REPO / "scripts" / "check.sh"), "BTCUSDC"])
    assert again.rc == 0, again.out + again.err
    assert again.lines[-1] == f"{N_CHECKS} checks: {N_CHECKS} OK, 0 WARN, 0 FAIL: ready to start"


# ---------------------------------------------------------------------------- one problem each


def test_wrong_secret_fails_the_keys_and_stops(tmp_path, exchanges, keys):
    ex = exchanges()
    wrong = "pf-wrong-" + secrets.token_hex(16)
    r = run_check(tmp_path / "root", ex, keys, secret=wrong)
    assert r.rc == 1
    assert r.lines == [
        "FAIL  keys do not authenticate: API key rejected by the exchange (-1022: Signature for this request is not "
        f"valid.); check BINANCE_API_KEY and BINANCE_API_SECRET in {r.env_file}, the key's IP restriction, and "
        "that it may use futures (the other checks need working keys: not run)",
        "1 check: 0 OK, 0 WARN, 1 FAIL: fix the FAIL lines before going live"]
    assert wrong not in r.out + r.err and keys[0] not in r.out + r.err


def test_hedge_mode_fails(tmp_path, exchanges, keys):
    ex = exchanges()
    assert ex.signed("POST", "/fapi/v1/positionSide/dual", *keys, dualSidePosition="true")["code"] == 200
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 1
    assert r.line("FAIL  position mode") == (
        "FAIL  position mode is hedge (dualSidePosition true): the daemon trades one-way; it switches the mode at "
        "start only when the account holds no position and no open order (any symbol), else it stops: switch to "
        "one-way in the futures preferences")
    # The daemon's order (no positionSide) is what Binance refuses in hedge mode.
    assert r.line("FAIL  order test").startswith(
        "FAIL  order test refused (-4061: Order's position side does not match user's setting.): BUY ")


def test_multi_assets_mode_warns_and_counts_the_usd_total(tmp_path, exchanges, keys):
    ex = exchanges()
    ex.signed("POST", "/fapi/v1/multiAssetsMargin", *keys, multiAssetsMargin="true")
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 0, r.out
    assert r.line("WARN") == ("WARN  account in multi-assets mode (margin: every asset, valued in USD): the daemon "
                              "supports it, capital and margin follow the mode (not the USDC row)")
    assert r.line("OK    capital") == "OK    capital 3300.00 USD (ratio 0.33 of wallet 10000.00)"


def test_credits_mode_warns_and_takes_the_capital_from_bnfcr(tmp_path, exchanges, keys):
    ex = exchanges(collateral="BNFCR")
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 0, r.out
    assert r.line("WARN") == ("WARN  account in credits mode (margin: BNFCR): the daemon supports it, capital and "
                              "margin follow the mode (not the USDC row)")
    assert r.line("OK    capital") == "OK    capital 3300.00 BNFCR (ratio 0.33 of wallet 10000.00)"


def test_a_key_with_withdrawals_warns(tmp_path, exchanges, keys):
    ex = exchanges(faults="key_withdrawals=1")
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 0, r.out
    assert r.line("WARN") == (
        "WARN  key permissions: WITHDRAWALS ENABLED on this key (enableWithdrawals true): whoever gets it can move "
        "the funds out; the daemon never withdraws, turn it off in API Management (no IP restriction)")
    assert r.lines[-1] == f"{N_CHECKS} checks: {N_CHECKS - 1} OK, 1 WARN, 0 FAIL: ready to start"


def test_a_key_without_futures_fails(tmp_path, exchanges, keys):
    ex = exchanges()
    ex.faults(key_no_futures=1)
    r = run_check(tmp_path / "root", ex, keys)
    assert r.rc == 1
    assert r.line("FAIL") == ("FAIL  key permissions: futures trading NOT enabled on this key (enableFutures false): "
                              "enable it in API Management (a key made before the futures account was opened "
                              "cannot)")


def test_a_capital_too_small_for_level_1_fails_naming_it(tmp_path, exchanges, keys):
    ex = exchanges()
    r = run_check(tmp_path / "root", ex, keys, config={"CAPITAL_RATIO": "0.003"})   # 30 USDC: level 1 ≈ 0.0005 BTC
    assert r.rc == 1
    assert r.line("OK    capital") == "OK    capital 30.00 USDC (ratio 0.003 of wallet 10000.00)"
    assert re.fullmatch(r"FAIL  below the exchange's minimum order \(min qty 0\.001, min notional 5 USDC\) at "
                        r"capital 30\.00: level 1 0\.000 × \d+\.\d = 0\.00: the daemon would skip them; raise "
                        r"CAPITAL_RATIO or the wallet", r.line("FAIL")), r.out
    # The order tested is the first the daemon would place: level 2.
    assert re.search(r"\(GM-BTCUSDC-1-E2\), validated", r.line("OK    order test"))


def test_a_leverage_above_its_bracket_at_full_notional_fails(tmp_path, exchanges, keys):
    ex = exchanges()
    r = run_check(tmp_path / "root", ex, keys, config={"LEVERAGE_LONG": "125"})
    assert r.rc == 1
    assert r.line("FAIL") == ("FAIL  leverage 125x above the bracket's maximum 100x at the ladder's full notional "
                              "412,500.00 USDC (bracket 50,000–600,000): lower LEVERAGE_LONG to 100 or less, or "
                              "the capital")


def test_a_state_file_that_disagrees_with_the_exchange_warns(tmp_path, exchanges, keys):
    ex = exchanges()
    root = tmp_path / "root"
    st = GridState(SYM, "LONG", 3300.0, grid_center=60_000.0, generation=3,
                   position=PositionState(0.01, 59_700.0, 1, 0.0, [0.01, 0.0, 0.0, 0.0]),
                   orders={"GM-BTCUSDC-3-E2": OrderState("GM-BTCUSDC-3-E2", "ENTRY_2", "BUY", 59_400.0, 0.2,
                                                         order_id=7, level=2)})
    StateManager(state_path(root)).save(st)
    before = state_path(root).read_bytes()
    ex.signed("POST", "/fapi/v1/order", *keys, symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC",
              quantity="0.002", price="30000.0", newClientOrderId="GM-BTCUSDC-2-E4")
    r = run_check(root, ex, keys)
    assert r.rc == 0, r.out
    assert r.line("WARN") == (
        "WARN  state file differs from the exchange: position 0.010 in the file, 0.000 on the exchange; orders only "
        "in the file: GM-BTCUSDC-3-E2; orders only on the exchange: GM-BTCUSDC-2-E4 (the daemon mends this at "
        "start: the exchange is the truth)")
    assert r.line("OK    capital") == "OK    capital 3300.00 USDC (kept in the state file; wallet 10000.00)"
    assert "(GM-BTCUSDC-4-E1)" in r.line("OK    order test")         # the daemon's next generation
    assert state_path(root).read_bytes() == before
    assert [o["clientOrderId"] for o in ex.open_orders()] == ["GM-BTCUSDC-2-E4"]


def test_a_corrupt_state_file_warns_and_is_left_in_place(tmp_path, exchanges, keys):
    ex = exchanges()
    root = tmp_path / "root"
    path = state_path(root)
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "symbol": ')
    r = run_check(root, ex, keys)
    assert r.rc == 0, r.out
    try:
        json.loads(path.read_text())
    except ValueError as e:
        reason = str(e)
    assert r.line("WARN") == (f"WARN  state file {path} unreadable ({reason}): kept aside at start; the exchange's "
                              "truth will be used")
    assert r.line("OK    capital") == "OK    capital 3300.00 USDC (ratio 0.33 of wallet 10000.00)"
    assert path.read_text() == '{"version": 1, "symbol": ' and sorted(p.name for p in path.parent.iterdir()) == \
        ["state_btc.json"]


def test_a_silent_market_stream_fails_after_the_timeout(tmp_path, exchanges, keys):
    ex = exchanges(faults="market_silent=1")
    r = run_check(tmp_path / "root", ex, keys, extra=("--check-timeout", "3"))
    assert r.rc == 1
    assert r.line("FAIL") == ("FAIL  market stream btcusdc@kline_1m: no kline within 3 s (connected or not: a proxy "
                              "or firewall may withhold it)")
    assert r.line("OK    user stream")
