"""The one owner of the daemon's file names: state, lock, pid, trades, funding, brackets, logs.

The daemon, ops/records.py, status.py and the shell scripts all take their paths from here (the
scripts through the small command line below), so a name changes in one place.

    python paths.py [--root DIR] {state,lock,pid,trades,funding,brackets,log,stdout,logs} [btc|eth|<sym>]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent     # the project root: the one place it is computed
LOG_PREFIX = "grid_martingale"


def log_name(short: str, day: str) -> str:
    """The daily log of a symbol: grid_martingale_<sym>_YYYY-MM-DD.log (UTC day)."""
    return f"{LOG_PREFIX}_{short}_{day}.log"


def short_name(symbol: str) -> str:
    """The files' name of a symbol: BTCUSDC → btc (the USDC quote left out), BTCUSDT → btcusdt;
    a short name given (btc) stays as it is."""
    s = symbol.strip()
    return s[:-4].lower() if s.upper().endswith("USDC") and len(s) > 4 else s.lower()


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Paths:
    root: Path

    def state(self, short: str) -> Path:
        return self.root / "state" / f"state_{short}.json"

    def lock(self, short: str) -> Path:
        return self.root / "state" / f"{short}.lock"

    def pid(self, short: str) -> Path:
        return self.root / "state" / f"{short}.pid"

    def account(self) -> Path:
        """The account's, shared by every daemon of this root: its peak equity and the
        account stop (live/account_guard.py)."""
        return self.root / "state" / "account.json"

    def account_history(self) -> Path:
        """The account's margin a minute (time,wallet,equity,maint_margin,margin_ratio), for the
        dashboard's chart: appended under the account's lock (live/account_guard.py)."""
        return self.root / "state" / "account_history.csv"

    def prices(self, short: str) -> Path:
        """The last day of closed 1-minute candles the daemon saw, for the dashboard's chart
        (ops/history.py); kept after a stop."""
        return self.root / "state" / f"prices_{short}.json"

    def brackets(self, short: str) -> Path:
        return self.root / "state" / f"brackets_{short}.json"

    def live(self, short: str) -> Path:
        """What a running daemon writes every few seconds for the dashboard: last price, wallet."""
        return self.root / "state" / f"live_{short}.json"

    def trades(self, short: str) -> Path:
        return self.root / "trades" / f"trades_{short}.csv"

    def funding(self, short: str) -> Path:
        return self.root / "trades" / f"funding_{short}.csv"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, short: str, day: str | None = None) -> Path:
        return self.logs / log_name(short, day or today())

    def log_glob(self, short: str) -> str:
        return log_name(short, "*")

    def stdout(self, short: str) -> Path:
        """What scripts/start_*.sh sends the daemon's own stdout and stderr to."""
        return self.logs / f"{short}_stdout.log"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="paths.py", description="Print one of the daemon's file paths.")
    p.add_argument("--root", default=str(ROOT))
    p.add_argument("kind", choices=["state", "lock", "pid", "live", "prices", "trades", "funding", "brackets", "log",
                                    "stdout", "logs", "short"])
    p.add_argument("symbol", nargs="?", default="btc")
    a = p.parse_args(argv)
    paths = Paths(Path(a.root))
    short = short_name(a.symbol)
    print(paths.logs if a.kind == "logs" else short if a.kind == "short" else getattr(paths, a.kind)(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
