"""optimize.py --symbols: the account of several symbols on one wallet optimized as one
(issue 22): per-symbol and shared keys of the space, the account's score, one best file per
symbol whose account figures are backtest.py --symbols's, and a study bound to its symbols."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

import backtest
import optimize
from backtest import PortfolioLeg, run_portfolio
from config import load_config
from market.data import load_klines, write_klines_csv
from research.scoring import account_daily_returns, score_account
from research.search_space import SpaceError, build_config, build_configs, parse_space
from sim.exchange import DEFAULT_FILTERS
from sim.fill_model import FULL
from test_optimize import run_here  # optimize.main in this process, in a folder

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
FILES = {"BTCUSDC": DATA_DIR / "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv",
         "BTCUSD": DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"}
DAYS = 9
SYMBOLS = "BTCUSDC,BTCUSD"
# One key for BTCUSDC alone, two shared by both symbols.
SPACE = """BTCUSDC.LEVEL_DISTANCES[2]=0.008..0.02
TP_PCT=0.003..0.01
LEVERAGE_LONG=2..10
"""
BASE = load_config(ROOT / "config_btc.txt")
BASES = {"BTCUSDC": BASE, "BTCUSD": BASE}


@pytest.fixture(scope="module")
def nine_days(tmp_path_factory) -> dict[str, Path]:
    """Both BTC files of March 2023 cut to their first nine days (the same minutes)."""
    missing = [str(p) for p in FILES.values() if not p.is_file()]
    if missing:
        pytest.skip(f"real kline file(s) absent: {', '.join(missing)}")
    d = tmp_path_factory.mktemp("pair")
    out = {}
    for sym, src in FILES.items():
        out[sym] = d / f"{sym}.csv"
        write_klines_csv(load_klines([src]).slice(0, DAYS * 1440), out[sym])
    return out


def account_argv(tmp: Path, data: dict[str, Path], *extra: str, space: str = SPACE,
                 symbols: str = SYMBOLS) -> list[str]:
    (tmp / "space.txt").write_text(space)
    # BTCUSD has no config_<short>.txt of its own; BTCUSDC's is found as live finds it.
    return ["--symbols", symbols, "--config", f"BTCUSD={ROOT / 'config_btc.txt'}", "--space", str(tmp / "space.txt"),
            "--data", *[f"{sym}={path}" for sym, path in data.items()], "--out", str(tmp / "out"), *extra]


def trials_csv(tmp: Path) -> list[dict[str, str]]:
    with (tmp / "out" / "trials.csv").open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------- the space
def test_a_key_for_one_symbol_applies_to_it_only_and_an_unprefixed_key_to_every_symbol():
    space = parse_space(SPACE, BASES)
    assert space.names == ["BTCUSDC.LEVEL_DISTANCES[2]", "TP_PCT", "LEVERAGE_LONG"]
    configs, why = build_configs(BASES, space, {"BTCUSDC.LEVEL_DISTANCES[2]": 0.015, "TP_PCT": 0.004,
                                                "LEVERAGE_LONG": 5})
    assert why == "" and configs is not None and list(configs) == ["BTCUSDC", "BTCUSD"]
    assert configs["BTCUSDC"].level_distances[1] == 0.015
    assert configs["BTCUSD"].level_distances == BASE.level_distances           # not drawn for it: the base's
    assert {c.tp_pct for c in configs.values()} == {0.004} and {c.leverage_long for c in configs.values()} == {5}
    # A draw that breaks one symbol's rules makes the account's trial infeasible, naming the symbol.
    configs, why = build_configs(BASES, space, {"BTCUSDC.LEVEL_DISTANCES[2]": 0.0045, "TP_PCT": 0.004,
                                                "LEVERAGE_LONG": 5})
    assert configs is None and why.startswith("BTCUSDC: ") and "LEVEL_DISTANCES" in why
    # Without --symbols nothing changes: the one config takes every key.
    single = parse_space("TP_PCT=0.003..0.01\n", BASE)
    assert build_config(BASE, single, {"TP_PCT": 0.004})[0].tp_pct == 0.004


@pytest.mark.parametrize("text, bases, says", [
    ("ETHUSDC.TP_PCT=0.003..0.01", BASES, "sp.txt:2: ETHUSDC.TP_PCT: ETHUSDC is not in --symbols BTCUSDC,BTCUSD"),
    ("BTCUSDC.TP_PCT=0.003..0.01", BASE, "sp.txt:2: BTCUSDC.TP_PCT: a key for one symbol needs --symbols"),
    ("TP_PCT=0.003..0.01\nBTCUSD.TP_PCT=0.004..0.01", BASES,
     "sp.txt:3: BTCUSD.TP_PCT: TP_PCT is already searched for every symbol (line 2)"),
    ("BTCUSD.TP_PCT=0.004..0.01\nTP_PCT=0.003..0.01", BASES,
     "sp.txt:3: TP_PCT: already searched for one symbol as BTCUSD.TP_PCT (line 2)"),
    ("BTCUSD.TAKER_FEE=0.0002..0.0005", BASES, "sp.txt:2: BTCUSD.TAKER_FEE: the fee rate is the account's"),
    ("INITIAL_CAPITAL=500..2000", BASES, "sp.txt:2: INITIAL_CAPITAL: cannot be searched with --symbols"),
    ("BTCUSD.LEVEL_DISTANCES[5]=0.01..0.02", BASES, "sp.txt:2: BTCUSD.LEVEL_DISTANCES[5]: index must be 1..4"),
    ("BTCUSD.TP_PCTX=0.01..0.02", BASES, "sp.txt:2: BTCUSD.TP_PCTX: not a config key (did you mean TP_PCT?)"),
])
def test_a_bad_per_symbol_key_is_one_line_naming_file_line_and_key(text, bases, says):
    with pytest.raises(SpaceError) as e:
        parse_space("# header\n" + text + "\n", bases, "sp.txt")
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------------- the account's score
def test_the_accounts_score_is_its_summary_and_one_liquidation_moment_makes_it_infeasible():
    """BTC and a twin fall together until their combined loss liquidates the account (both
    positions closed at one moment): the score reads the account, not a symbol."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_funding_liquidation import falling
    cfg = BASE.with_overrides(leverage_long=50, sl_distance=0.30)
    market = falling(360, 50_000.0, 10.0)
    fa = DEFAULT_FILTERS["BTCUSDC"]
    fb = dataclasses.replace(fa, symbol="BTCUSD")
    res = run_portfolio([PortfolioLeg(cfg, market, fa), PortfolioLeg(cfg, market, fb)])
    s = score_account(res)
    account = backtest.summarize_portfolio(res)["account"]
    assert len(res.liquidations) == 2 and s.liquidations == 1
    assert s.return_pct == account["return_pct"] == pytest.approx(-100.0)
    assert s.max_drawdown_pct == account["max_drawdown_pct"]
    assert s.round_trips == sum(r.round_trips for r in res.symbols)
    assert s.fills == sum(len(r.fills) for r in res.symbols)
    objective = optimize.AccountObjective("return-drawdown", BASES, parse_space(SPACE, BASES), [], 0, 100.0, FULL,
                                          res.wallet, True)
    assert objective.constraints(s)[1] > 0                      # liquidated: infeasible whatever it returned
    assert len(account_daily_returns(res)) == 0                 # six hours: no whole day


# ---------------------------------------------------------------------- studies of the account
def test_the_account_is_optimized_and_its_best_files_are_what_backtest_symbols_gives(tmp_path, nine_days):
    r = run_here(tmp_path, account_argv(tmp_path, nine_days, "--trials", "10", "--seed", "3", "--study", "acct",
                                        "--max-drawdown", "60"))
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    rows = trials_csv(tmp_path)
    assert len(rows) == 10 and {"BTCUSDC.LEVEL_DISTANCES[2]", "TP_PCT", "LEVERAGE_LONG"} <= set(rows[0])
    chosen = [row for row in rows if row["chosen"] == "1"]
    assert len(chosen) == 1, r.stdout
    row = chosen[0]
    # One file per symbol, each with the chosen trial's parameters: the per-symbol key in
    # BTCUSDC's only, the shared keys in both.
    files = {sym: out / f"best_01_{sym}.txt" for sym in ("BTCUSDC", "BTCUSD")}
    assert all(p.is_file() for p in files.values()) and not (out / "best_01.txt").exists()
    cfg = {sym: load_config(p) for sym, p in files.items()}
    assert cfg["BTCUSDC"].level_distances[1] == pytest.approx(float(row["BTCUSDC.LEVEL_DISTANCES[2]"]))
    assert cfg["BTCUSD"].level_distances == BASE.level_distances
    assert cfg["BTCUSDC"].level_distances[1] != cfg["BTCUSD"].level_distances[1]
    for c in cfg.values():
        assert c.tp_pct == pytest.approx(float(row["TP_PCT"])) and c.leverage_long == int(row["LEVERAGE_LONG"])
    header = files["BTCUSDC"].read_text().splitlines()
    assert header[0].startswith(f"# optimize.py: study acct, trial {row['number']}, ") and "BTCUSDC's config" in header[0]
    assert files["BTCUSD"].read_text().splitlines()[1:8] == header[1:8]      # the account's figures, in both
    # The chosen account's holdout figure is backtest.py --symbols of the two files on the
    # holdout's candles alone (the last quarter of the joined minutes, every symbol cut alike).
    n = DAYS * 1440
    cut = n - round(n * 0.25)
    hold = {}
    for sym, path in nine_days.items():
        candles = load_klines([path])
        assert len(candles) == n                                            # the two files share their minutes
        hold[sym] = tmp_path / f"hold_{sym}.csv"
        write_klines_csv(candles.slice(cut, n), hold[sym])
    assert backtest.main(["--symbols", SYMBOLS, "--config", *[f"{s}={p}" for s, p in files.items()],
                          "--data", *[f"{s}={p}" for s, p in hold.items()], "--no-chart",
                          "--out", str(tmp_path / "bt")]) == 0
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    account = summary["account"]
    assert account["return_pct"] == pytest.approx(float(row["oos_return_pct"]), abs=1e-6)
    assert account["max_drawdown_pct"] == pytest.approx(float(row["oos_max_drawdown_pct"]), abs=1e-6)
    holdout = next(x for x in header if x.startswith("# out-of-sample (holdout): "))
    assert f"return {account['return_pct']:+.2f} %, max drawdown {account['max_drawdown_pct']:.2f} %" in holdout
    line = next(x for x in header if x.startswith("# account: BTCUSDC+BTCUSD on one wallet of "))
    assert f"of {account['wallet']:,.2f} (capitals BTCUSDC {account['capitals']['BTCUSDC']:,.2f}, " \
           f"BTCUSD {account['capitals']['BTCUSD']:,.2f})" in line
    for sym in ("BTCUSDC", "BTCUSD"):
        own = next(x for x in header if x.startswith(f"# account: {sym} in it (holdout): "))
        assert f"net PnL {summary['symbols'][sym]['net_pnl']:+,.2f} " in own
    # The report reads the account against its benchmarks: the basket, the base configs as an account.
    report = (out / "report.md").read_text()
    for needle in ("- account BTCUSDC+BTCUSD on one cross-margin wallet of ", "| base config | holdout |",
                   "| buy-and-hold (1×, equal weights) | holdout |", "| median feasible trial | holdout |",
                   "basket return %", "symbols BTCUSDC,BTCUSD", "`best_01_BTCUSDC.txt`, `best_01_BTCUSD.txt`"):
        assert needle in report, needle
    assert r.stdout.splitlines()[1].startswith("VERDICT: ")
    assert f"holdout {float(row['oos_return_pct']):+.2f} %" in r.stdout
    for png in ("tearsheet.png", "tearsheet_in_sample.png", "pareto.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_a_key_for_a_symbol_not_traded_is_one_line_exit_2(tmp_path, nine_days):
    r = run_here(tmp_path, account_argv(tmp_path, nine_days, "--trials", "2",
                                        space="TP_PCT=0.003..0.01\nETHUSDC.TP_PCT=0.004..0.01\n"))
    err = [x for x in r.stderr.splitlines() if not x.startswith("backtest.py: note:")]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0] == f"optimize.py: error: {tmp_path / 'space.txt'}:2: ETHUSDC.TP_PCT: ETHUSDC is not in " \
                     f"--symbols {SYMBOLS}", err[0]


def test_a_study_is_bound_to_its_symbols_and_the_default_name_says_them(tmp_path, nine_days):
    space = "TP_PCT=0.003..0.01\nLEVERAGE_LONG=2..10\n"
    r = run_here(tmp_path, account_argv(tmp_path, nine_days, "--trials", "2", "--seed", "1", "--study", "bound",
                                        "--max-drawdown", "95", space=space))
    assert r.returncode == 0, r.stdout + r.stderr
    # The same study with another symbol set (BTCUSD's candles traded as XBTUSD): refused in one line.
    other = {"BTCUSDC": nine_days["BTCUSDC"], "XBTUSD": nine_days["BTCUSD"]}
    argv = account_argv(tmp_path, other, "--trials", "2", "--seed", "1", "--study", "bound", "--max-drawdown", "95",
                        space=space, symbols="BTCUSDC,XBTUSD")
    argv[argv.index("--config") + 1] = f"XBTUSD={ROOT / 'config_btc.txt'}"
    r = run_here(tmp_path, argv)
    err = [x for x in r.stderr.splitlines() if "error" in x]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "study bound differs from this run in the symbols (--symbols)" in err[0] and "the fees" not in err[0]
    # Without --study the name is the symbols, the objective and the fingerprint (no direction:
    # each symbol has its own).
    plan = optimize.make_plan(optimize.build_parser().parse_args(account_argv(tmp_path, nine_days, space=space)))
    assert re.fullmatch(r"BTCUSDC\+BTCUSD-return-drawdown-[0-9a-f]{8}", plan.study_base), plan.study_base
    assert plan.identity.parts["symbols"] == SYMBOLS
    assert "symbols" not in optimize.make_plan(optimize.build_parser().parse_args(
        ["--config", str(ROOT / "config_btc.txt"), "--space", str(tmp_path / "space.txt"),
         "--data", str(nine_days["BTCUSDC"])])).identity.parts          # a single symbol's identity is as before
