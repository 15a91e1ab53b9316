"""What the dashboard shows, read from the daemons' files only (paths.py names them): the
state, the live file a running daemon refreshes, its recent candles, the trades and
funding CSVs, the account's history and the logs.  It never talks to the exchange or to
a daemon, and nothing secret is in these files (the state holds no key; a stray one is
never copied: every field sent is picked by name).

Times go to the page as UTC text ("YYYY-MM-DD HH:MM:SS"), which the charts put on a time
axis as they are (no browser time zone in between).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from paths import Paths
from status import newest_account, read_states, running

CURVE_POINTS = 1500              # a history curve is thinned to about this many points
PRICE_HOURS = 6                  # the price chart's window: the last hours of candles
LOG_LINES = 15
HISTORY_ROWS = 43_200            # the account's history read: its last 30 days at a row a minute


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def _f(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or 0.0)
    except ValueError:
        return 0.0


def _time_ms(text: str) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def utc(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def thin(points: list[Any], n: int = CURVE_POINTS) -> list[Any]:
    """Every k-th point and the last: a long history drawn with about n points."""
    step = max(1, len(points) // n)
    return points[::step] + (points[-1:] if points and (len(points) - 1) % step else [])


def _log_tail(paths: Paths, short: str) -> list[str]:
    for f in sorted(paths.logs.glob(paths.log_glob(short)), reverse=True):
        try:
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            return lines[-LOG_LINES:]
    return []


def mode_of(st: dict[str, Any], live: dict[str, Any] | None) -> str:
    """Demo or live, as the files say it: a running daemon's live file, else its state
    (a demo's state records `demo`), never the folder the files were found in."""
    if live is not None and "demo" in live:
        return "demo" if live["demo"] else "live"
    return "demo" if st.get("demo") else "live"


def market_today(st: dict[str, Any], trades: list[dict[str, str]]) -> str:
    """'Today' in the time base of the fills: the market day the daemon last saw (a demo's
    simulated day), else the last fill's day, else the wall clock's."""
    day = st.get("market_day")
    if isinstance(day, int) and day > 0:
        return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")
    if trades and trades[-1].get("time"):
        return (trades[-1]["time"] or "")[:10]
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def recent_candles(paths: Paths, short: str) -> list[list[Any]]:
    """The daemon's last PRICE_HOURS of closed 1-minute candles: [time, open, high, low, close]."""
    data = _json(paths.prices(short)) or {}
    rows = data.get("candles")
    ok = [r for r in rows if isinstance(r, list) and len(r) == 5] if isinstance(rows, list) else []
    if not ok:
        return []
    start = ok[-1][0] - PRICE_HOURS * 3_600_000
    return [[utc(r[0]), *r[1:]] for r in ok if r[0] >= start]


def histories(trades: list[dict[str, str]], funding: list[dict[str, str]], capital: float,
              ) -> tuple[list[list[Any]], list[list[Any]]]:
    """(equity curve [time, equity, realized PnL after fees], funding paid [time, cumulative])
    over the whole history.  Equity at each fill: the capital, the realized PnL after fees
    and funding so far, and the open position's PnL at that fill's price."""
    paid = sorted((_time_ms(r.get("time") or ""), -_f(r, "income")) for r in funding)
    paid_curve: list[list[Any]] = []
    total = 0.0
    for t, amount in paid:
        total += amount
        paid_curve.append([t, round(total, 8)])
    curve: list[list[Any]] = []
    realized = 0.0
    k, paid_so_far = 0, 0.0
    for r in trades:
        t = _time_ms(r.get("time") or "")
        while k < len(paid) and paid[k][0] <= t:
            paid_so_far += paid[k][1]
            k += 1
        realized += _f(r, "realized_pnl") - _f(r, "fee")
        open_pnl = _f(r, "position_after") * (_f(r, "price") - _f(r, "avg_price_after"))
        curve.append([utc(t), round(capital + realized - paid_so_far + open_pnl, 8), round(realized, 8)])
    return thin(curve), [[utc(t), v] for t, v in thin(paid_curve)]


def symbol_status(paths: Paths, short: str) -> dict[str, Any]:
    st = _json(paths.state(short)) or {}
    run = running(paths.pid(short), daemon_only=True)
    live = _json(paths.live(short)) if run is not None else None
    pos = st.get("position") or {}
    qty, avg = float(pos.get("qty") or 0.0), float(pos.get("avg_price") or 0.0)
    sign = -1 if st.get("direction") == "SHORT" else 1
    trades = _rows(paths.trades(short))
    candles = recent_candles(paths, short)
    # The live price while it runs (its live file); else the last candle's close, the last
    # mark read, the last fill's.
    price = float((live or {}).get("price") or (candles[-1][4] if candles else 0.0) or st.get("mark_price")
                  or (_f(trades[-1], "price") if trades else 0.0))
    today = market_today(st, trades)
    pnl_total = pnl_today = 0.0
    for r in trades:
        v = _f(r, "realized_pnl") - _f(r, "fee")
        pnl_total += v
        if (r.get("time") or "").startswith(today):
            pnl_today += v
    funding = _rows(paths.funding(short))
    capital = float(st.get("capital") or 0.0)
    equity, paid = histories(trades, funding, capital)
    since = candles[0][0] if candles else None
    orders = sorted(({"role": o.get("role"), "side": o.get("side"), "price": float(o.get("price") or 0.0),
                      "qty": float(o.get("qty") or 0.0), "level": int(o.get("level") or 0)}
                     for o in (st.get("orders") or {}).values()), key=lambda o: -o["price"])
    return {
        "symbol": st.get("symbol") or short.upper() + "USDC", "short": short, "mode": mode_of(st, live),
        "running": run is not None, "pid": run[0] if run else None, "uptime_s": round(run[1]) if run else None,
        "direction": st.get("direction"), "capital": capital, "grid_center": st.get("grid_center"),
        "position": {"qty": qty, "avg_price": avg, "deepest_level": pos.get("deepest_level", 0)},
        "price": price, "price_time": (live or {}).get("time"), "wallet": (live or {}).get("wallet"),
        "unrealized": round((price - avg) * qty * sign, 8) if qty and price else 0.0,
        "liquidation_price": st.get("liquidation_price") or 0.0, "liquidated_at": st.get("liquidated_at") or 0,
        "orders": orders,
        "today": today,
        "pnl": {"today": round(pnl_today, 8), "total": round(pnl_total, 8), "fills": len(trades)},
        "funding": {"total": round(sum(-_f(r, "income") for r in funding), 8), "settlements": len(funding)},
        "candles": candles,
        "fills_recent": [[r.get("time", "")[:19].replace("T", " "), _f(r, "price"), r.get("side"), r.get("role")]
                         for r in trades if since is not None and r.get("time", "")[:19].replace("T", " ") >= since],
        "equity_curve": equity,
        "funding_curve": paid,
        "fills_today": [{"time": r.get("time"), "role": r.get("role"), "side": r.get("side"),
                         "price": r.get("price"), "qty": r.get("quantity"), "realized_pnl": r.get("realized_pnl")}
                        for r in trades if (r.get("time") or "").startswith(today)][-50:],
        "log": _log_tail(paths, short),
        "state_updated": st.get("last_update"),
        "has_state": bool(st),
    }


def discover(root: Path) -> list[tuple[Paths, str]]:
    """(paths, short) of every symbol with a state or pid file under the root and its demo/."""
    out = []
    for base in (root, root / "demo"):
        paths = Paths(base)
        shorts = {p.name[len("state_"):-len(".json")] for p in (base / "state").glob("state_*.json")}
        shorts |= {p.stem for p in (base / "state").glob("*.pid")}
        out += [(paths, s) for s in sorted(shorts)]
    return out


def account_history(paths: Paths) -> list[list[Any]]:
    """[time, equity, margin ratio, distance to liquidation] of the account, its last 30 days."""
    rows = _rows(paths.account_history())[-HISTORY_ROWS:]
    out = []
    for r in rows:
        t, equity, maint = int(_f(r, "time")), _f(r, "equity"), _f(r, "maint_margin")
        if t > 0:
            out.append([utc(t), round(equity, 8), round(_f(r, "margin_ratio"), 8), round(equity - maint, 8)])
    return thin(out)


def account_status(paths: Paths, mode: str) -> dict[str, Any]:
    """The account of one root: the newest read among its state files (None: unknown, no
    daemon has written one) and its history."""
    view = newest_account(read_states(paths))
    return {"mode": mode, "account": asdict(view) if view is not None else None, "history": account_history(paths)}


def status(root: Path) -> dict[str, Any]:
    symbols = [(p, symbol_status(p, s)) for p, s in discover(root)]
    accounts = []
    for base in dict.fromkeys(p for p, _ in symbols):       # in order: the root, then its demo/
        modes = {s["mode"] for p, s in symbols if p == base}
        accounts.append(account_status(base, "demo" if modes == {"demo"} else "live"))
    return {"time": int(time.time() * 1000), "root": str(root), "accounts": accounts,
            "symbols": [s for _, s in symbols]}
