#!/usr/bin/env python3
"""What scripts/status.sh prints: per symbol, from the pid, state, trades and log files."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

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


def status_lines(root: Path, short: str) -> list[str]:
    """The live daemon's status, and the demo's (under <root>/demo) when one runs or ran."""
    live, demo = Paths(root), Paths(root / "demo")
    has_demo = bool(running(demo.pid(short))) or demo.state(short).exists()
    has_live = bool(running(live.pid(short))) or live.state(short).exists()
    out = _lines(live, short, "") if has_live or not has_demo else []
    if has_demo:
        out += _lines(demo, short, " [demo]")
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
            when = datetime.fromtimestamp(st["liquidated_at"] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            out.append(f"   LIQUIDATED at {when}")
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
    for short in [short_name(s) for s in args.symbols] or found_symbols(root):
        print("\n".join(status_lines(root, short)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
