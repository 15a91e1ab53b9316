#!/usr/bin/env python3
"""What scripts/status.sh prints: the account's line (SPEC §7: one wallet for every symbol),
then per symbol, from the pid, state, trades and log files."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from paths import ROOT, Paths, short_name


def running(pidfile: Path, daemon_only: bool = False) -> tuple[int, float] | None:
    """(pid, seconds up) of a live process named by a pid file; with daemon_only, only if
    its command line is one of our daemons (not a recycled pid)."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        if daemon_only and b"trade" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except (OSError, ValueError):
        return None
    return pid, time.time() - pidfile.stat().st_mtime


def _uptime(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _today_and_total(path: Path, value: Callable[[dict[str, str]], float],
                     day_text: str | None = None) -> tuple[float, float, int]:
    """Sum of `value(row)` over a CSV's rows of one UTC day (today unless told) and in total,
    and the row count (a torn or malformed row is skipped)."""
    today = day_text or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    total = day = 0.0
    n = 0
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                try:
                    v = value(r)
                except (KeyError, ValueError, TypeError):
                    continue
                n += 1
                total += v
                if (r.get("time") or "").startswith(today):
                    day += v
    return day, total, n


def pnl(path: Path, day_text: str | None = None) -> tuple[float, float, int]:
    """Realized PnL after fees, from trades_<sym>.csv: that day's (today's), in total, fills."""
    return _today_and_total(path, lambda r: float(r["realized_pnl"]) - float(r["fee"]), day_text)


def _funding(path: Path) -> tuple[float, float, int]:
    """Funding paid (> 0), from funding_<sym>.csv (income < 0: paid)."""
    return _today_and_total(path, lambda r: -float(r["income"]))


def _last_log_line(logs: Path, short: str) -> str:
    files = sorted(logs.glob(Paths(logs.parent).log_glob(short)))
    for f in reversed(files):
        try:
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            return lines[-1]
    return "(no log yet)"


def found_symbols(root: Path) -> list[str]:
    """Short names with a state or pid file, live or demo, and btc and eth always."""
    out = {"btc", "eth"}
    for base in (root, root / "demo"):
        out |= {p.name[len("state_"):-len(".json")] for p in (base / "state").glob("state_*.json")}
        out |= {p.stem for p in (base / "state").glob("*.pid")}
    return sorted(out, key=lambda s: (s not in ("btc", "eth"), s))


def shown_roots(root: Path, short: str) -> list[tuple[Paths, str]]:
    """(paths, mark) of what status shows of a symbol: the live daemon's, and the demo's
    (under <root>/demo) when one runs or ran; the live one also when neither exists."""
    live, demo = Paths(root), Paths(root / "demo")
    has_demo = bool(running(demo.pid(short))) or demo.state(short).exists()
    has_live = bool(running(live.pid(short))) or live.state(short).exists()
    # A demo's files say so (its state records `demo`), whatever folder --root names.
    live_mark = " [demo]" if says_demo(live, short) else ""
    return ([(live, live_mark)] if has_live or not has_demo else []) + ([(demo, " [demo]")] if has_demo else [])


def says_demo(paths: Paths, short: str) -> bool:
    try:
        return json.loads(paths.state(short).read_text(encoding="utf-8")).get("demo") is True
    except (OSError, ValueError, AttributeError):
        return False


def status_lines(root: Path, short: str) -> list[str]:
    """The live daemon's status, and the demo's (under <root>/demo) when one runs or ran."""
    return [line for paths, mark in shown_roots(root, short) for line in _lines(paths, short, mark)]


# ---------------------------------------------------------------------- the account (SPEC §7)
@dataclass(frozen=True)
class AccountView:
    """The account as one daemon last read it (the "account" object of its state file), and
    what follows from it.  Every daemon of an account reads the same account, so the newest
    read stands for the account."""
    symbol: str                      # the daemon whose read it is
    time: int                        # ms
    wallet: float
    equity: float                    # margin balance: wallet + unrealised PnL of every symbol
    maint_margin: float              # of every position; the account is liquidated at equity = this
    margin_ratio: float | None       # maint_margin / equity (1.0: liquidation); None when equity <= 0
    to_liquidation: float            # equity − maint_margin (USDC)
    to_liquidation_share: float | None   # of equity; None when equity <= 0
    peak_equity: float
    stop_equity: float               # ACCOUNT_STOP_DRAWDOWN's level; 0: the stop is off
    stopped_at: int                  # ms; 0: the account stop has not fired


def _number(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(key)
    return float(v)


def account_view(symbol: str, obj: Any) -> AccountView | None:
    """The view of one state file's "account" object; None when absent or malformed (an older
    state file, a torn write): shown as unknown, never guessed."""
    if not isinstance(obj, dict):
        return None
    try:
        wallet, equity, maint = _number(obj, "wallet"), _number(obj, "equity"), _number(obj, "maint_margin")
        when = int(_number(obj, "time"))
        peak, stop = _number(obj, "peak_equity", 0.0), _number(obj, "stop_equity", 0.0)
        stopped = int(_number(obj, "stopped_at", 0))
    except ValueError:
        return None
    solvent = equity > 0
    return AccountView(symbol, when, wallet, equity, maint, maint / equity if solvent else None, equity - maint,
                       (equity - maint) / equity if solvent else None, peak, stop, stopped)


def newest_account(states: Iterable[tuple[str, dict[str, Any]]]) -> AccountView | None:
    """The newest account read among (symbol, state) pairs (largest "time")."""
    views = [v for sym, st in states if (v := account_view(sym, st.get("account"))) is not None]
    return max(views, key=lambda v: v.time, default=None)


def read_states(paths: Paths) -> list[tuple[str, dict[str, Any]]]:
    """(symbol, state) of every readable state file under a root: the daemons of one account."""
    out = []
    for f in sorted((paths.root / "state").glob("state_*.json")):
        try:
            st = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(st, dict):
            sym = st.get("symbol")
            out.append((sym if isinstance(sym, str) and sym else f.stem[len("state_"):].upper(), st))
    return out


def _utc(ms: int, seconds: bool = False) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _pct(share: float | None) -> str:
    return "n/a (equity <= 0)" if share is None else f"{share * 100:.2f} %"


def account_lines(v: AccountView | None, mark: str = "", now_ms: int | None = None) -> list[str]:
    """The account's block of status: above the symbols, once."""
    if v is None:
        return [f"== ACCOUNT{mark}: unknown (no state file holds an account read yet)"]
    out = [f"== ACCOUNT{mark}: wallet ${v.wallet:,.2f}, equity ${v.equity:,.2f}, "
           f"margin ratio {_pct(v.margin_ratio)} (liquidated at 100 %)",
           f"   to the account's liquidation: ${v.to_liquidation:,.2f} "
           f"({_pct(v.to_liquidation_share)} of equity; maintenance margin ${v.maint_margin:,.2f})"]
    if v.stop_equity > 0:
        room = v.equity - v.stop_equity
        out.append(f"   account stop: peak equity ${v.peak_equity:,.2f}, stop level ${v.stop_equity:,.2f}"
                   + ("" if v.stopped_at else f" (${abs(room):,.2f} {'above' if room >= 0 else 'below'} it)"))
    if v.stopped_at:
        out.append(f"   STOPPED at {_utc(v.stopped_at)}")
    age = "" if now_ms is None else f", {max(0, now_ms - v.time) // 1000} s ago"
    out.append(f"   as of {_utc(v.time, seconds=True)} ({v.symbol}'s read{age})")
    return out


def _lines(paths: Paths, short: str, mark: str) -> list[str]:
    run = running(paths.pid(short))
    state_path = paths.state(short)
    try:
        sym = json.loads(state_path.read_text(encoding="utf-8")).get("symbol") or ""
    except (OSError, ValueError, AttributeError):
        sym = ""
    sym = sym or (short.upper() + "USDC" if len(short) <= 5 else short.upper())
    out = [f"== {sym}{mark}: " + (f"running, pid {run[0]}, up {_uptime(run[1])}" if run else "not running")]
    try:
        st = json.loads(state_path.read_text(encoding="utf-8"))
        p = st["position"]
        orders = st.get("orders", {})
        by_role: dict[str, int] = {}
        for o in orders.values():
            by_role[o["role"]] = by_role.get(o["role"], 0) + 1
        out.append(f"   direction {st['direction']}, capital ${st['capital']:.2f}, grid centre ${st['grid_center']:.2f}")
        out.append(f"   position {p['qty']:.6f} @ ${p['avg_price']:.2f}, deepest level {p['deepest_level']}")
        out.append(f"   open orders {len(orders)}" + (": " + ", ".join(f"{k}×{v}" for k, v in sorted(by_role.items()))
                                                    if orders else ""))
        liq, at = float(st.get("liquidation_price") or 0.0), float(st.get("mark_price") or 0.0)
        if p["qty"] and liq > 0 and at > 0:
            out.append(f"   liquidation price ${liq:,.2f}, {abs(at - liq) / at * 100:.2f} % from the mark "
                       f"${at:,.2f}")
        elif p["qty"]:
            out.append("   liquidation price: none (the wallet covers the position)")
        if st.get("liquidated_at"):
            out.append(f"   LIQUIDATED at {_utc(st['liquidated_at'])}")
        if st.get("account_stopped_at"):
            out.append(f"   stopped by the account stop at {_utc(st['account_stopped_at'])}")
        out.append(f"   state updated {st.get('last_update', '?')}")
    except FileNotFoundError:
        out.append("   no state file yet")
    except (OSError, ValueError, KeyError, TypeError) as e:
        out.append(f"   state file unreadable: {type(e).__name__}")
    day, total, n = pnl(paths.trades(short))
    out.append(f"   realized PnL (after fees): today ${day:+.2f}, total ${total:+.2f} over {n} fills")
    fday, ftotal, fn = _funding(paths.funding(short))
    out.append(f"   funding paid: today ${fday:+.4f}, total ${ftotal:+.4f} over {fn} settlements")
    out.append(f"   last log: {_last_log_line(paths.logs, short)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="status.sh", description="Status of the grid-martingale daemons.")
    p.add_argument("symbols", nargs="*", help="symbols: btc, eth, SOLUSDC, … (default: every one found)")
    p.add_argument("--root", default=str(ROOT))
    args = p.parse_args(argv)
    bad = [s for s in args.symbols if not s.isalnum()]
    if bad:
        p.error(f"bad symbol {bad[0]!r} (use btc, eth or a symbol such as SOLUSDC)")
    root = Path(args.root)
    shorts = [short_name(s) for s in args.symbols] or found_symbols(root)
    # The account once per root shown (live, demo), above every symbol: each daemon's
    # state holds its own copy of the account's last read; the newest is shown.
    marks: dict[Paths, set[str]] = {}
    for short in shorts:
        for paths, mark in shown_roots(root, short):
            marks.setdefault(paths, set()).add(mark)
    # A root's account is a demo's when every symbol shown of it is.
    roots = {paths: " [demo]" if m == {" [demo]"} else "" for paths, m in marks.items()}
    now = int(time.time() * 1000)
    for paths, mark in sorted(roots.items(), key=lambda kv: kv[1]):      # live, then demo
        print("\n".join(account_lines(newest_account(read_states(paths)), mark, now)))
    for short in shorts:
        print("\n".join(status_lines(root, short)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
