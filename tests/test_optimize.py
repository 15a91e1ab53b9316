"""optimize.py: the space file, studies in SQLite and in the embedded journal (seeded,
resumed, two local jobs), out-of-sample re-runs, the written configs, and three workers on
a real PostgreSQL server with one SIGKILLed mid-trial."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import backtest
import optimize
from config import load_config
from market.data import load_klines, write_klines_csv
from research.search_space import SpaceError, build_config, parse_space

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or ROOT.parent / "shared" / "data")
MONTH = DATA_DIR / "binance-futures-um-NEARUSDT-1m-2024-09.csv"
needs_data = pytest.mark.skipif(not MONTH.is_file(), reason=f"real kline month {MONTH} is absent")
MARKET = ["--symbol", "NEARUSDT", "--tick-size", "0.001", "--step-size", "0.1"]
SPACE = """# a small space
LEVEL_DISTANCES[1]=0.003..0.008
LEVEL_DISTANCES[2]=0.008..0.02
TP_PCT=0.003..0.01
BE_PCT=0.0005..0.0025
LEVERAGE_LONG=5..20:5
"""


@pytest.fixture(scope="module")
def ten_days(tmp_path_factory) -> Path:
    if not MONTH.is_file():
        pytest.skip(f"real kline month {MONTH} is absent")
    path = tmp_path_factory.mktemp("data") / "near-10d.csv"
    write_klines_csv(load_klines([MONTH]).slice(0, 10 * 1440), path)
    return path


def run(tmp: Path, data: Path, *extra: str, space: str = SPACE, env: dict | None = None,
        wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """optimize.py on `data` in folder `tmp`: in this process (scipy and pandas imported once
    for the whole file), or as a real process when it must be one (several jobs, an
    environment, a process to kill)."""
    (tmp / "space.txt").write_text(space)
    argv = ["--config", str(ROOT / "config_btc.txt"), "--space", str(tmp / "space.txt"), "--data", str(data),
            *MARKET, "--out", str(tmp / "out"), *extra]
    if wait and env is None and "--jobs" not in extra:
        return run_here(tmp, argv)
    cmd = [sys.executable, str(ROOT / "optimize.py"), *argv]
    e = dict(os.environ, **(env or {}))
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=tmp, env=e, capture_output=True, text=True, timeout=240)


def run_here(tmp: Path, argv: list[str]) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = optimize.main(argv)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["optimize.py", *argv], code, out.getvalue(), err.getvalue())


def trials_csv(tmp: Path) -> list[dict[str, str]]:
    with (tmp / "out" / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def journal_study(tmp: Path, name: str) -> optuna.Study:
    from research.study_runner import storage_for
    storage, _ = storage_for(None, name, tmp)
    return optuna.load_study(study_name=name, storage=storage)


# ---------------------------------------------------------------------- the space file
BASE = load_config(ROOT / "config_btc.txt")


def test_the_space_file_parses_ranges_steps_choices_and_list_elements():
    space = parse_space("TP_PCT=0.003..0.01\nLEVERAGE_LONG=5..20:5\nGRID_RANGE_PCT=0.02..0.06:0.01\n"
                        "TRADE_DIRECTION=LONG|SHORT\nENTRY_RATIOS[4]=0.2..0.6  # the deepest level\n", BASE)
    d = space.distributions()
    assert isinstance(d["LEVERAGE_LONG"], optuna.distributions.IntDistribution) and d["LEVERAGE_LONG"].step == 5
    assert d["GRID_RANGE_PCT"].step == pytest.approx(0.01)
    assert d["TRADE_DIRECTION"].choices == ("LONG", "SHORT")
    cfg, why = build_config(BASE, space, {"TP_PCT": 0.004, "LEVERAGE_LONG": 10, "GRID_RANGE_PCT": 0.03,
                                          "TRADE_DIRECTION": "SHORT", "ENTRY_RATIOS[4]": 0.45})
    assert why == "" and cfg.entry_ratios == (0.05, 0.20, 0.25, 0.45) and cfg.leverage_long == 10
    assert cfg.trade_direction == "SHORT" and cfg.sl_distance == BASE.sl_distance     # the rest from --config


def test_a_draw_that_breaks_the_configs_rules_is_infeasible_not_a_crash():
    space = parse_space("LEVEL_DISTANCES[2]=0.001..0.02\nENTRY_RATIOS[4]=0.2..0.9\n", BASE)
    cfg, why = build_config(BASE, space, {"LEVEL_DISTANCES[2]": 0.004, "ENTRY_RATIOS[4]": 0.5})
    assert cfg is None and "LEVEL_DISTANCES" in why and "increasing" in why
    cfg, why = build_config(BASE, space, {"LEVEL_DISTANCES[2]": 0.01, "ENTRY_RATIOS[4]": 0.8})
    assert cfg is None and "ENTRY_RATIOS" in why


@pytest.mark.parametrize("text, says", [
    ("TP_PCTX=0.1..0.2", "sp.txt:2: TP_PCTX: not a config key (did you mean TP_PCT?)"),
    ("TP_PCT=0.01..0.005", "sp.txt:2: TP_PCT: LOW must be below HIGH"),
    ("TP_PCT=0.003..0.01:0.004", "sp.txt:2: TP_PCT: STEP 0.004 does not divide"),
    ("LEVERAGE_LONG=5..20.5", "sp.txt:2: LEVERAGE_LONG: an integer key takes integer LOW, HIGH and STEP"),
    ("ENTRY_RATIOS=0.1..0.2", "sp.txt:2: ENTRY_RATIOS: a list key is searched per element"),
    ("ENTRY_RATIOS[5]=0.1..0.2", "sp.txt:2: ENTRY_RATIOS[5]: index must be 1..4"),
    ("TP_PCT[1]=0.1..0.2", "sp.txt:2: TP_PCT: not a list key"),
    ("MAX_ENTRY_LEVEL=3..5", "sp.txt:2: MAX_ENTRY_LEVEL: cannot be searched"),
    ("TRADE_DIRECTION=LONG|FLAT", "sp.txt:2: TRADE_DIRECTION: 'FLAT' is not one of LONG|SHORT"),
    ("TP_PCT=abc..0.2", "sp.txt:2: TP_PCT: 'abc' is not a number"),
    ("TP_PCT 0.1", "sp.txt:2: expected KEY=LOW..HIGH"),
    ("BE_PCT=0.001..0.002\nBE_PCT=0.001..0.003", "sp.txt:3: BE_PCT: given twice (first on line 2)"),
])
def test_a_bad_space_file_is_one_line_naming_file_line_and_key(tmp_path, capsys, text, says):
    space = tmp_path / "sp.txt"
    space.write_text("# header\n" + text + "\n")
    code = optimize.main(["--config", str(ROOT / "config_btc.txt"), "--space", str(space),
                          "--data", str(tmp_path / "unused.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("optimize.py: error: ") and says in err[0].replace(str(tmp_path) + "/", ""), err[0]
    with pytest.raises(SpaceError):
        parse_space("# header\n" + text + "\n", BASE, str(space))


def test_folds_are_anchored_never_test_on_what_they_trained_on_and_end_with_a_refit():
    folds, hold = optimize.plan_folds(10_000, 0.2, 3)
    assert hold == optimize.Window("holdout", 8000, 10_000)
    assert [(f.train.start, f.train.end, f.test.start, f.test.end) for f in folds[:3]] == [
        (0, 2000, 2000, 4000), (0, 4000, 4000, 6000), (0, 6000, 6000, 8000)]
    # The final study re-fits on all the in-sample candles and is judged on the holdout.
    assert folds[3] == optimize.Fold(4, optimize.Window("in-sample", 0, 8000), hold, final=True)
    single, _ = optimize.plan_folds(10_000, 0.25, 1)
    assert len(single) == 1 and single[0].train == optimize.Window("in-sample", 0, 7500) and single[0].final
    assert single[0].test == optimize.Window("holdout", 7500, 10_000)


def a_score(**kw):
    from research.scoring import Score
    d = dict(return_pct=10.0, max_drawdown_pct=20.0, return_over_dd=0.5, sharpe_day=0.1, sharpe_day_se=0.05,
             sortino_day=0.2, sharpe=float("nan"), sharpe_se=float("nan"), sortino=float("nan"),
             calmar=float("nan"), annual_return_pct=float("nan"), annual_vol_pct=float("nan"), round_trips=6,
             liquidations=0, fills=50, days=10.0, funding_paid=0.0, max_position_notional=1000.0)
    d.update(kw)
    return Score(**d)


@pytest.mark.parametrize("objective", ["calmar", "return-drawdown"])
def test_constraints_say_liquidated_too_few_round_trips_or_over_the_cap_for_every_objective(objective):
    obj = optimize.Objective(objective, BASE, parse_space("TP_PCT=0.003..0.01", BASE), None, 5, 30.0)
    assert all(c <= 0 for c in obj.constraints(a_score()))
    assert any(c > 0 for c in obj.constraints(a_score(liquidations=1)))
    assert any(c > 0 for c in obj.constraints(a_score(round_trips=4)))          # 4 < 5 round trips
    assert any(c > 0 for c in obj.constraints(a_score(max_drawdown_pct=35.0)))  # over the 30 % cap
    assert len(obj.infeasible({}).constraints) == len(obj.constraints(a_score()))


def test_the_drawdown_cap_is_on_by_default():
    a = optimize.build_parser().parse_args(["--config", "c", "--space", "s"])
    assert a.max_drawdown == optimize.DEFAULT_MAX_DRAWDOWN <= 50


# ---------------------------------------------------------------------- studies
@needs_data
def test_a_seeded_study_in_sqlite_is_reproducible_and_writes_its_outputs(tmp_path, ten_days):
    outs = []
    for k in (1, 2):
        d = tmp_path / f"run{k}"
        d.mkdir()
        r = run(d, ten_days, "--trials", "8", "--seed", "7", "--storage", f"sqlite:///{d}/study.db",
                "--study", "s")
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append(d)
    rows = [[{k: v for k, v in row.items() if k != "worker"} for row in trials_csv(d)] for d in outs]
    assert rows[0] == rows[1] and len(rows[0]) == 8
    assert all(row["state"] == "COMPLETE" for row in rows[0])
    out = outs[0] / "out"
    assert (out / "pareto.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "| window |" in report and "holdout" in report
    assert "optuna-dashboard sqlite:///" in r.stdout
    # Each written configuration loads, backtests as it is, and holds its trial's parameters.
    configs = sorted(out.glob("best_*.txt"))
    assert configs, r.stdout
    header = configs[0].read_text().splitlines()[:3]
    assert header[0].startswith("# optimize.py: study s, trial ") and "in-sample" in header[1]
    assert "out-of-sample (holdout)" in header[2]
    trial = int(header[0].split("trial ")[1].split(",")[0])
    params = {k: v for k, v in rows[0][trial].items() if k in parse_space(SPACE, BASE).names}
    cfg = load_config(configs[0])
    assert cfg.tp_pct == pytest.approx(float(params["TP_PCT"])) and cfg.leverage_long == int(params["LEVERAGE_LONG"])
    assert backtest.main(["--config", str(configs[0]), "--data", str(ten_days), *MARKET, "--no-chart",
                          "--out", str(tmp_path / "bt")]) == 0


@needs_data
def test_a_study_resumes_to_a_larger_total_and_two_local_jobs_share_it(tmp_path, ten_days):
    r = run(tmp_path, ten_days, "--trials", "8", "--seed", "3", "--study", "r")
    assert r.returncode == 0, r.stdout + r.stderr
    first = [(t.number, t.params) for t in journal_study(tmp_path, "r").trials]
    r = run(tmp_path, ten_days, "--trials", "20", "--jobs", "2", "--seed", "3", "--study", "r")
    assert r.returncode == 0, r.stdout + r.stderr
    trials = journal_study(tmp_path, "r").trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 20
    assert [(t.number, t.params) for t in trials[:8]] == first          # the first 8 kept as they were
    workers = {t.user_attrs["worker"] for t in trials[8:]}
    assert len(workers) == 2                                            # two processes did the rest
    params = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(params)) == len(params)                              # no draw repeated


@needs_data
def test_walk_forward_is_one_result_with_a_seed_per_fold_and_a_final_refit(tmp_path, ten_days):
    r = run(tmp_path, ten_days, "--trials", "6", "--folds", "2", "--holdout", "0.2", "--seed", "1",
            "--objective", "calmar", "--min-round-trips", "1", "--max-drawdown", "95", "--study", "wf")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "## wf-fold1: fold 1 train → fold 1 test" in report and "## wf-fold2: fold 2 train → fold 2 test" in report
    assert "## wf: in-sample → holdout" in report           # the re-fit on all in-sample candles
    assert "## Walk-forward: the folds as one result" in report
    assert "joined out of sample over" in report and "walk-forward efficiency" in report
    assert (out / "walk_forward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = trials_csv(tmp_path)
    assert {row["study"] for row in rows} == {"wf-fold1", "wf-fold2", "wf"} and len(rows) == 18
    # A seed per fold: the same seed would draw the same first candidates in every fold.
    first = {row["study"]: row["TP_PCT"] for row in rows if row["number"] == "0"}
    assert len(set(first.values())) == 3, first
    # Each fold's choice is by the rule, and is the one its section reports.
    for study in ("wf-fold1", "wf-fold2", "wf"):
        chosen = [row for row in rows if row["study"] == study and row["chosen"] == "1"]
        assert len(chosen) <= 1 and all(row["feasible"] == "1" and row["front"] == "1" for row in chosen)


@needs_data
def test_every_feasible_trial_is_judged_out_of_sample_beside_the_benchmarks(tmp_path, ten_days):
    r = run(tmp_path, ten_days, "--trials", "10", "--seed", "4", "--study", "o", "--max-drawdown", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    rows = trials_csv(tmp_path)
    ok = [row for row in rows if row["feasible"] == "1"]
    assert ok and all(row["oos_window"] == "holdout" and row["oos_return_pct"] for row in ok)
    assert all(not row["oos_return_pct"] for row in rows if row["feasible"] == "0")
    report = (out / "report.md").read_text()
    assert report.startswith("# Optimization report: o\n\n**VERDICT: ")
    assert r.stdout.splitlines()[1].startswith("VERDICT: ")
    for needle in ("| in-sample | 2024-09-01 00:00 | 2024-09-08 12:00 | 7.5 |", "| holdout | 2024-09-08 12:00 |",
                   "| base config | in-sample |", "| base config | holdout |", "| median feasible trial | holdout |",
                   "| buy-and-hold (1×) | holdout |", "deflated Sharpe ratio of the chosen one", "Spearman",
                   "probability of backtest overfitting", f"rank correlation of the returns of all {len(ok)} feasible"):
        assert needle in report, needle
    # A window under 30 days shows its own figures, never a yearly ratio.
    assert "/day" in report and "/yr" not in report and "Calmar 0" not in report
    # The chosen one's holdout figure is a plain backtest of best_01 on the holdout's candles alone.
    chosen = [row for row in rows if row["chosen"] == "1"]
    assert len(chosen) == 1 and chosen[0]["front"] == "1"
    assert f"trial {chosen[0]['number']}," in (out / "best_01.txt").read_text().splitlines()[0]
    hold = tmp_path / "holdout.csv"
    write_klines_csv(load_klines([ten_days]).slice(10 * 1440 - 3600, 10 * 1440), hold)
    assert backtest.main(["--config", str(out / "best_01.txt"), "--data", str(hold), *MARKET, "--no-chart",
                          "--out", str(tmp_path / "bt")]) == 0
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["return_pct"] == pytest.approx(float(chosen[0]["oos_return_pct"]), abs=1e-6)
    for png in ("tearsheet.png", "tearsheet_in_sample.png", "pareto.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@needs_data
def test_a_study_whose_every_configuration_loses_is_warned_and_one_with_none_feasible_writes_no_config(
        tmp_path, ten_days):
    r = run(tmp_path, ten_days, "--trials", "4", "--seed", "1", "--study", "lose", "--maker-fee", "0.004",
            "--taker-fee", "0.004", "--min-round-trips", "1", "--max-drawdown", "100")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = trials_csv(tmp_path)
    assert all(float(row["is_return_pct"]) < 0 for row in rows)
    n = sum(row["feasible"] == "1" for row in rows)
    assert n >= 2, rows           # (a loss past the capital eats the reserve: over 100 % is not feasible)
    assert f"WARNING: every feasible configuration ({n}) lost money in-sample" in r.stdout
    assert f"> WARNING: every feasible configuration ({n}) lost money in-sample" in \
        (tmp_path / "out" / "report.md").read_text()
    r = run(tmp_path, ten_days, "--trials", "3", "--seed", "1", "--study", "none", "--max-drawdown", "0.01")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VERDICT: NOTHING CHOSEN" in r.stdout and "exceeded the 0.01 % drawdown cap" in r.stdout
    assert not list((tmp_path / "out").glob("best_*.txt")) and not list((tmp_path / "out").glob("tearsheet*"))


@needs_data
def test_infeasible_draws_are_recorded_and_never_reported(tmp_path, ten_days):
    space = "LEVEL_DISTANCES[1]=0.003..0.02\nLEVEL_DISTANCES[2]=0.005..0.02\n"
    r = run(tmp_path, ten_days, "--trials", "10", "--seed", "2", "--study", "inf", space=space)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = trials_csv(tmp_path)
    bad = [row for row in rows if row["infeasible"]]
    assert bad and all("increasing" in row["infeasible"] and row["feasible"] == "0" for row in bad)
    reported = {int(p.read_text().split("trial ")[1].split(",")[0]) for p in (tmp_path / "out").glob("best_*.txt")}
    assert not reported & {int(row["number"]) for row in bad}


def test_a_trial_failed_as_stale_while_its_worker_stalled_is_retried_and_the_worker_goes_on(tmp_path):
    """Worker A stalls inside a trial past the grace without heartbeats; worker B fails it
    and runs its parameters again; A then finds its trial failed and carries on: exactly
    the total, A's stalled trial not counted."""
    import threading
    from research.study_runner import Evaluation, Worker, storage_for
    storage, _ = storage_for(None, "stall", tmp_path)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study = optuna.create_study(storage=storage, study_name="stall", sampler=optuna.samplers.RandomSampler(seed=1))
    stalled = threading.Event()

    def slow_once(p):
        if not stalled.is_set():
            stalled.set()
            time.sleep(1.5)            # no beat: heartbeat_s is longer than this
        return Evaluation([p["x"]], [0.0], {})
    a = Worker(study, 6, slow_once, dist, heartbeat_s=60, grace_s=0.5)
    b = Worker(study, 6, lambda p: (time.sleep(0.05), Evaluation([p["x"]], [0.0], {}))[1], dist,
               heartbeat_s=60, grace_s=0.5)
    ta = threading.Thread(target=a.run)
    ta.start()
    stalled.wait(5)
    b.run()
    ta.join(10)
    assert not ta.is_alive()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert trials[0].state == TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in complete].count(0) == 1


@pytest.mark.parametrize("extra, says", [
    (["--storage", "sqlite:///x.db", "--jobs", "2"], "--storage sqlite: one job only"),
    (["--heartbeat-grace", "4"], "--heartbeat-grace must be at least 3 heartbeats"),
])
def test_unsafe_study_settings_are_refused(tmp_path, capsys, extra, says):
    (tmp_path / "sp.txt").write_text("TP_PCT=0.003..0.01\n")
    code = optimize.main(["--config", str(ROOT / "config_btc.txt"), "--space", str(tmp_path / "sp.txt"),
                          "--data", str(tmp_path / "unused.csv"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err


@needs_data
def test_a_study_made_with_another_space_or_objective_is_refused(tmp_path, ten_days):
    assert run(tmp_path, ten_days, "--trials", "3", "--study", "m").returncode == 0
    r = run(tmp_path, ten_days, "--trials", "3", "--study", "m", space=SPACE + "GRID_RANGE_PCT=0.02..0.05\n")
    assert r.returncode == 2 and "the search space (--space)" in r.stderr, r.stderr
    r = run(tmp_path, ten_days, "--trials", "3", "--study", "m", "--objective", "sharpe")
    assert r.returncode == 2 and "made for another objective" in r.stderr


@needs_data
def test_a_study_reused_with_another_holdout_is_refused_naming_the_windows(tmp_path, ten_days):
    """The audit's first case: --holdout 0, then the same study at --holdout 0.25 ran nothing
    and chose by scores that included what is now the holdout."""
    r = run(tmp_path, ten_days, "--trials", "3", "--seed", "1", "--study", "h", "--holdout", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(tmp_path, ten_days, "--trials", "3", "--seed", "1", "--study", "h", "--holdout", "0.25")
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "study h differs from this run in the windows (--holdout, --folds" in err[0] and "give another --study" in err[0]
    assert "the candles" not in err[0] and "the fees" not in err[0]          # only what differs is named


@needs_data
def test_a_study_named_for_other_data_fees_or_constraints_is_refused_and_the_default_name_differs(tmp_path, ten_days):
    """The audit's second case: the default name reused a BTC study for a FIL file."""
    other = tmp_path / "other.csv"
    write_klines_csv(load_klines([ten_days]).slice(1440, 9 * 1440), other)
    assert run(tmp_path, ten_days, "--trials", "2", "--study", "d").returncode == 0
    for data, extra, says in ((other, (), "the candles"), (ten_days, ("--maker-fee", "0.0004"), "the fees"),
                              (ten_days, ("--min-round-trips", "9"), "the constraints"),
                              (ten_days, ("--fill-model", "volume"), "the fill model")):
        r = run(tmp_path, data, "--trials", "2", "--study", "d", *extra)
        assert r.returncode == 2 and says in r.stderr, (extra, r.stderr)
    # Without --study the name carries the fingerprint: other data is another study, never a reused one.
    names = []
    for data in (ten_days, other):
        r = run(tmp_path, data, "--trials", "2", "--seed", "1")
        assert r.returncode == 0, r.stdout + r.stderr
        names.append(r.stdout.split("(")[1].split(")")[0])
    assert names[0] != names[1] and all(n.startswith("NEARUSDT-LONG-return-drawdown-") for n in names)
    assert {p.stem for p in (tmp_path / "optuna").glob("*.log")} >= set(names)


@needs_data
def test_the_headline_and_report_give_the_trials_the_study_holds(tmp_path, ten_days):
    assert run(tmp_path, ten_days, "--trials", "5", "--seed", "1", "--study", "n").returncode == 0
    r = run(tmp_path, ten_days, "--trials", "2", "--seed", "1", "--study", "n")   # asks fewer than it holds
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("5 complete trials held by 1 study (n)")
    assert "n 5 complete" in (tmp_path / "out" / "report.md").read_text()


BTC_MARCH = DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"


@pytest.mark.skipif(not BTC_MARCH.is_file(), reason=f"real kline file {BTC_MARCH} is absent")
def test_the_readmes_worked_example_prints_what_the_readme_says(tmp_path):
    """The README teaches the rule with a seeded one-job study: its command, run here, must
    print the README's lines (the elapsed time and the storage's folder aside), and its
    advice must follow the rule (best_01, judged on the holdout only)."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("A worked example, BTC through the March 2023"):]
    block = block[block.index("```bash\n") + 8:block.index("```\n", block.index("```bash\n") + 8)]
    lines = block.replace("\\\n", " ").splitlines()
    argv = lines[0].split("optimize.py", 1)[1].split()
    assert "--seed" in argv and "--jobs" not in argv                    # a seed reproduces one job only
    argv = [a.replace("../shared/data/", f"{DATA_DIR}/") for a in argv]
    for f in ("config_btc.txt", "optimize_space.txt"):
        (tmp_path / f).write_text((ROOT / f).read_text())
    r = run_here(tmp_path, argv)
    assert r.returncode == 0, r.stdout + r.stderr

    def same(line: str) -> str:
        line = re.sub(r"\), [0-9.]+ s$", "), N s", line)
        return re.sub(r"optuna-dashboard \S*/optuna/", "optuna-dashboard optuna/", line)
    assert [same(x) for x in r.stdout.splitlines()] == [same(x) for x in lines[1:]]
    advice = readme[readme.index("Read it as the rule teaches"):readme.index("**One study on several machines:**")]
    assert "best_01.txt" in advice and "best_02" not in advice and "--data" not in advice


# ---------------------------------------------------------------------- many machines
@needs_data
def test_three_workers_on_postgresql_one_killed_mid_trial_end_with_exactly_the_total(
        tmp_path, ten_days, postgres_url):
    total = 12
    env = {"GM_OPTIMIZE_TRIAL_SLEEP_S": "0.4"}
    args = ("--trials", str(total), "--storage", postgres_url, "--study", "pg", "--seed", "5",
            "--heartbeat", "0.5", "--heartbeat-grace", "2", "--holdout", "0.2")
    dirs = [tmp_path / f"w{k}" for k in range(3)]
    for d in dirs:
        d.mkdir()
    procs = [run(d, ten_days, *args, env=env, wait=False) for d in dirs]
    storage = optuna.storages.RDBStorage(postgres_url)
    victim = procs[1]
    deadline = time.monotonic() + 60
    while True:                      # kill worker 1 while it holds a running trial
        try:
            study = optuna.load_study(study_name="pg", storage=storage)
            mine = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING
                    and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        except KeyError:
            mine = []
        if mine:
            victim.send_signal(signal.SIGKILL)
            killed = mine[0].number
            break
        assert time.monotonic() < deadline, "worker 1 never ran a trial"
        time.sleep(0.02)
    victim.wait(timeout=10)
    for p in (procs[0], procs[2]):
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out
    trials = optuna.load_study(study_name="pg", storage=storage).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == total
    assert trials[killed].state == TrialState.FAIL                    # failed by a heartbeat check ...
    retries = [t for t in complete if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params     # ... and run once again
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == total                                    # nothing counted twice
    assert len({t.user_attrs["worker"] for t in complete}) >= 2
