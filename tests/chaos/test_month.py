"""Issue 18: one simulated day of the month-alone run (bench/chaos_soak.py --days 30 runs the
month): the daemon under faults planned on the exchange's clock, its config edited, with
notifications to a real loopback receiver and metrics on.  It keeps the bench's machinery
honest and shows the daily summary arriving across a simulated midnight."""
from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from month_lib import run_month_soak  # noqa: E402


@pytest.mark.timeout(150)
def test_one_simulated_day_alone_with_notifications_and_metrics(tmp_path):
    keys = ("month-key-" + secrets.token_hex(8), "month-secret-" + secrets.token_hex(16))
    # The synthetic market starts at 22:13 UTC and runs 1,440 + 2,000 minutes (10 s of tail at
    # 200 candles/s): three midnights, the second 107 minutes (about half a second) after the
    # restart (SIGTERM) at the end of day 1, which takes longer than that: the day it last saw
    # comes from its state; the third seen live by the restarted daemon.
    rep = run_month_soak(tmp_path, keys, days=1, speed=200.0, seed=3, restart_days=(1,))
    print(rep.figures())
    assert not rep.violations, rep.figures()
    start, day = rep.days
    assert start.day == 0 and day.day == 1 and start.fds > 0 and start.state_bytes > 0
    assert day.rss_mb > 0 and day.fds > 0 and day.tasks > 0 and day.threads >= 1 and day.state_bytes > 0
    assert rep.fills > 0 and rep.csv_rows == rep.fills, rep.figures()
    assert rep.restarts == [(1, "SIGTERM")]
    assert rep.summaries == 3, rep.figures()          # each simulated midnight's summary, once
    assert rep.notifications > rep.summaries          # the start message and the fills' at least
    assert rep.config_edits == 1
