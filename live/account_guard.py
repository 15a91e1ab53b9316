"""The account-level stop (ACCOUNT_STOP_DRAWDOWN, issue 22), shared by every daemon of one
account.

Each daemon reads the account's equity from the exchange (GET /fapi/v3/account: its margin
balance, the same figure for every daemon of the account) and merges it into one small file
of its root, `state/account.json`, under an exclusive lock: the account's peak equity and,
once the equity has fallen below (1 − ACCOUNT_STOP_DRAWDOWN) × peak, the moment the stop
fired.  Whichever daemon sees the fall first writes it; every other daemon reads it at its
next cycle and stops too, whatever its own view of the peak; a restart reads it again.  The
stop is cleared only by a person (`--clear-account-stop`).

Under the same lock, a reading a minute is appended to `state/account_history.csv` (the
dashboard's chart of the account; ops/history.py).
"""
from __future__ import annotations

import fcntl
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exchange_api import AccountSnapshot
from ops.history import HISTORY_ROWS, AccountHistory, replace_file


@dataclass
class AccountRecord:
    peak_equity: float = 0.0
    stopped_at: int = 0             # ms; 0: the stop has not fired
    stop_equity: float = 0.0        # the level it fired at (or the current level)
    stopped_by: str = ""            # the symbol whose daemon saw it first


@dataclass(frozen=True)
class Verdict:
    stop: bool
    record: AccountRecord
    level: float                    # (1 − drawdown) × peak; 0 when the stop is off


class AccountGuard:
    def __init__(self, path: Path, symbol: str, history: Path | None = None, history_rows: int = HISTORY_ROWS) -> None:
        self.path, self.symbol = path, symbol
        self.history = AccountHistory(history, history_rows) if history is not None else None

    def observe(self, snap: AccountSnapshot, drawdown: float, now_ms: int) -> Verdict:
        """Merge one reading into the shared record; stop when it has fired (here or in
        another daemon) or this reading is below the level."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rec = self._read()
            rec.peak_equity = max(rec.peak_equity, snap.equity)
            level = (1.0 - drawdown) * rec.peak_equity if drawdown > 0 else 0.0
            if drawdown > 0 and not rec.stopped_at and snap.equity < level:
                rec.stopped_at, rec.stop_equity, rec.stopped_by = now_ms, level, self.symbol
            self._write(rec)
            if self.history is not None:
                self.history.append(snap, now_ms)
        return Verdict(bool(rec.stopped_at), rec, rec.stop_equity if rec.stopped_at else level)

    def clear(self) -> None:
        """A person's decision: the stop no longer holds (the peak starts again from now)."""
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._write(AccountRecord())

    def clear_for(self, strategy: Any, log: logging.Logger) -> None:
        """`--clear-account-stop`: the shared record and this symbol's stop cleared."""
        self.clear()
        at = strategy.state.account_stopped_at
        if at:
            log.warning("the account stop of %s is cleared by hand: trading resumes",
                        datetime.fromtimestamp(at / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
        strategy.state.account_stopped_at = 0
        strategy.halted = False

    def _read(self) -> AccountRecord:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            return AccountRecord(float(d.get("peak_equity", 0.0)), int(d.get("stopped_at", 0)),
                                 float(d.get("stop_equity", 0.0)), str(d.get("stopped_by", "")))
        except (OSError, ValueError, TypeError, AttributeError):
            return AccountRecord()      # absent or unreadable: start from this reading

    def _write(self, rec: AccountRecord) -> None:
        replace_file(self.path, json.dumps(asdict(rec)) + "\n")


def snapshot_for_state(snap: AccountSnapshot, v: Verdict, now_ms: int) -> dict[str, float | int | str]:
    """The account object of a state file (status and the dashboard read it)."""
    return {"wallet": round(snap.wallet, 8), "equity": round(snap.equity, 8),
            "maint_margin": round(snap.maint_margin, 8), "margin_ratio": round(snap.margin_ratio, 8),
            "peak_equity": round(v.record.peak_equity, 8), "stop_equity": round(v.level, 8),
            "stopped_at": v.record.stopped_at, "stopped_by": v.record.stopped_by if v.record.stopped_at else "",
            "time": now_ms}


def stop_reason(snap: AccountSnapshot, v: Verdict, share: float) -> str:
    """The log line's reason for an account stop."""
    return (f"the account's equity {snap.equity:,.2f} fell below {v.level:,.2f} ({share:.0%} under its peak "
            f"{v.record.peak_equity:,.2f}); seen first by {v.record.stopped_by}")
