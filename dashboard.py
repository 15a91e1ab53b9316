#!/usr/bin/env python3
"""A read-only dashboard of every daemon found under a root (live and demo), in the browser.

    python dashboard.py [--root DIR] [--port 8765] [--host 127.0.0.1]

One page (it updates itself every 2 s from `/api/status`): the account above the symbols
(wallet, equity, margin ratio, distance to the account's liquidation, the account stop: the
newest read among the daemons' state files, SPEC §7); per symbol, running or not,
position and average against the live price, the ladder of resting orders drawn against
the price, realized PnL over time from the trades CSV, funding, today's fills and the last
log lines.  It only reads the daemon's files (paths.py names them): it never talks to the
exchange or the daemon.  On an address other than loopback it needs DASHBOARD_TOKEN (the
environment or .env) and every request must carry it (`?token=` or X-Dashboard-Token).
"""
from __future__ import annotations

import argparse
import csv
import hmac
import ipaddress
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from paths import ROOT, Paths
from status import newest_account, read_states, running

EQUITY_POINTS = 600              # the realized-PnL curve is thinned to this many points
LOG_LINES = 15


# ---------------------------------------------------------------------- reading the files
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


def _log_tail(paths: Paths, short: str) -> list[str]:
    for f in sorted(paths.logs.glob(paths.log_glob(short)), reverse=True):
        try:
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            return lines[-LOG_LINES:]
    return []


def symbol_status(paths: Paths, short: str, mode: str) -> dict[str, Any]:
    st = _json(paths.state(short)) or {}
    live = _json(paths.live(short)) or {}
    run = running(paths.pid(short), daemon_only=True)
    pos = st.get("position") or {}
    qty, avg = float(pos.get("qty") or 0.0), float(pos.get("avg_price") or 0.0)
    sign = -1 if st.get("direction") == "SHORT" else 1
    trades = _rows(paths.trades(short))
    # The live price while it runs (its live file); else the last mark read, else the last fill's.
    price = float(live.get("price") or st.get("mark_price") or (_f(trades[-1], "price") if trades else 0.0))
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    pnl_total = pnl_today = 0.0
    curve: list[list[float]] = []
    for r in trades:
        v = _f(r, "realized_pnl") - _f(r, "fee")
        pnl_total += v
        if (r.get("time") or "").startswith(today):
            pnl_today += v
        curve.append([_time_ms(r.get("time") or ""), round(pnl_total, 8)])
    step = max(1, len(curve) // EQUITY_POINTS)
    curve = curve[::step] + (curve[-1:] if curve and (len(curve) - 1) % step else [])
    funding = _rows(paths.funding(short))
    orders = sorted(({"role": o.get("role"), "side": o.get("side"), "price": float(o.get("price") or 0.0),
                      "qty": float(o.get("qty") or 0.0), "level": int(o.get("level") or 0)}
                     for o in (st.get("orders") or {}).values()), key=lambda o: -o["price"])
    return {
        "symbol": st.get("symbol") or short.upper() + "USDC", "short": short, "mode": mode,
        "running": run is not None, "pid": run[0] if run else None, "uptime_s": round(run[1]) if run else None,
        "direction": st.get("direction"), "capital": st.get("capital"), "grid_center": st.get("grid_center"),
        "position": {"qty": qty, "avg_price": avg, "deepest_level": pos.get("deepest_level", 0)},
        "price": price, "price_time": live.get("time"), "wallet": live.get("wallet"),
        "unrealized": round((price - avg) * qty * sign, 8) if qty and price else 0.0,
        "liquidation_price": st.get("liquidation_price") or 0.0, "liquidated_at": st.get("liquidated_at") or 0,
        "orders": orders,
        "pnl": {"today": round(pnl_today, 8), "total": round(pnl_total, 8), "fills": len(trades)},
        "funding": {"total": round(sum(-_f(r, "income") for r in funding), 8), "settlements": len(funding)},
        "realized_curve": curve,
        "fills_today": [{k: r.get(k) for k in ("time", "role", "side", "price", "qty", "realized_pnl")}
                        for r in trades if (r.get("time") or "").startswith(today)][-50:],
        "log": _log_tail(paths, short),
        "state_updated": st.get("last_update"),
        "has_state": bool(st),
    }


def discover(root: Path) -> list[tuple[Paths, str, str]]:
    """(paths, short, mode) of every symbol with a state or pid file, live and demo."""
    out = []
    for mode, base in (("live", root), ("demo", root / "demo")):
        paths = Paths(base)
        shorts = {p.name[len("state_"):-len(".json")] for p in (base / "state").glob("state_*.json")}
        shorts |= {p.stem for p in (base / "state").glob("*.pid")}
        out += [(paths, s, mode) for s in sorted(shorts)]
    return out


def account_status(paths: Paths, mode: str) -> dict[str, Any]:
    """The account of one root (live or demo): the newest read among its state files, or
    None (unknown: no daemon has written one)."""
    view = newest_account(read_states(paths))
    return {"mode": mode, "account": asdict(view) if view is not None else None}


def status(root: Path) -> dict[str, Any]:
    found = discover(root)
    modes = dict.fromkeys((p, m) for p, _, m in found)       # in order: live, then demo
    return {"time": int(time.time() * 1000), "root": str(root),
            "accounts": [account_status(p, m) for p, m in modes],
            "symbols": [symbol_status(p, s, m) for p, s, m in found]}


# ---------------------------------------------------------------------- the server
def make_app(root: Path, token: str | None) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token:
            given = request.query.get("token") or request.headers.get("X-Dashboard-Token") or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response({"error": "a valid token is required"}, status=401)
        return await handler(request)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def api(_: web.Request) -> web.Response:
        return web.json_response(status(root), headers={"Cache-Control": "no-store"})

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/api/status", api)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(env_file: Path) -> str | None:
    token = os.environ.get("DASHBOARD_TOKEN")
    if not token and env_file.is_file():
        from dotenv import dotenv_values
        token = dotenv_values(env_file).get("DASHBOARD_TOKEN")
    return token or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dashboard.py", description="Read-only dashboard of the daemons under a root.")
    p.add_argument("--root", default=str(ROOT), help="folder holding state/, logs/, trades/ (and demo/)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--env", default=str(ROOT / ".env"), help="file that may hold DASHBOARD_TOKEN")
    a = p.parse_args(argv)
    token = read_token(Path(a.env))
    if not is_loopback(a.host) and not token:
        print(f"dashboard.py: error: {a.host} is not loopback: set DASHBOARD_TOKEN (environment or .env) "
              "so that only those who have it can read the page", file=sys.stderr)
        return 2
    print(f"dashboard: http://{a.host}:{a.port}/" + ("?token=…" if token else "") + f"  (root {a.root})",
          flush=True)
    web.run_app(make_app(Path(a.root), token), host=a.host, port=a.port, print=None, access_log=None)
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>grid-martingale</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1f2933;color:#fff;padding:10px 18px;display:flex;justify-content:space-between}
main{display:flex;flex-wrap:wrap;gap:16px;padding:16px}
#accounts{display:flex;flex-direction:column;gap:8px;padding:16px 16px 0}
.account{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:10px 14px;display:flex;
  flex-wrap:wrap;gap:6px 22px;align-items:baseline}
.account b{font-size:16px}.account .k{color:#777;font-size:12px;margin-right:4px}
.account .v{font-variant-numeric:tabular-nums}
.warn{color:#c05621}.danger{color:#c53030;font-weight:bold}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;padding:14px;width:560px}
.card h2{margin:0 0 8px;font-size:18px}
.badge{font-size:11px;padding:2px 6px;border-radius:4px;margin-left:6px;color:#fff}
.run{background:#2f855a}.stop{background:#9b2c2c}.demo{background:#6b46c1}.live{background:#2b6cb0}
table{border-collapse:collapse;width:100%}td,th{padding:2px 6px;text-align:left;font-size:13px}
td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#111;color:#ddd;font-size:11px;padding:6px;max-height:160px;overflow:auto;white-space:pre-wrap}
.muted{color:#777}
</style></head><body>
<header><b>grid-martingale</b><span id="updated" class="muted">loading…</span></header>
<section id="accounts"></section>
<main id="cards"></main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token");
const fmt = (x, d) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function row(label, field, text) {
  return el("tr", {}, el("td", {}, label), el("td", {class: "n", "data-field": field}, text));
}
function ladder(s) {
  const W = 530, H = 170, svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("data-chart", "ladder");
  const prices = s.orders.map(o => o.price).concat([s.price, s.position.avg_price]).filter(p => p > 0);
  if (!prices.length) return svg;
  let lo = Math.min(...prices), hi = Math.max(...prices);
  if (hi - lo < hi * 1e-4) { lo *= 0.999; hi *= 1.001; }
  const y = p => 10 + (hi - p) / (hi - lo) * (H - 20);
  const line = (p, color, label, dash) => {
    const l = document.createElementNS(svgNS, "line");
    l.setAttribute("x1", 90); l.setAttribute("x2", W - 10); l.setAttribute("y1", y(p)); l.setAttribute("y2", y(p));
    l.setAttribute("stroke", color); l.setAttribute("stroke-width", 2);
    if (dash) l.setAttribute("stroke-dasharray", "5,4");
    svg.append(l);
    const t = document.createElementNS(svgNS, "text");
    t.setAttribute("x", 2); t.setAttribute("y", y(p) + 4); t.setAttribute("font-size", 10); t.setAttribute("fill", color);
    t.textContent = label + " " + Number(p).toFixed(p >= 100 ? 2 : 4); svg.append(t);
  };
  const colors = {TP: "#2b6cb0", BE: "#dd6b20", SL: "#c53030"};
  for (const o of s.orders) line(o.price, o.role.startsWith("ENTRY") ? "#2f855a" : (colors[o.role] || "#555"),
                                  o.role.replace("ENTRY_", "L"), false);
  if (s.position.avg_price > 0) line(s.position.avg_price, "#6b46c1", "avg", true);
  if (s.price > 0) line(s.price, "#111", "price", true);
  return svg;
}
function curve(s) {
  const W = 530, H = 90, svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("data-chart", "realized");
  const pts = s.realized_curve;
  if (pts.length < 2) return svg;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
  const vs = pts.map(p => p[1]).concat([0]);
  const lo = Math.min(...vs), hi = Math.max(...vs) || lo + 1;
  const poly = document.createElementNS(svgNS, "polyline");
  poly.setAttribute("fill", "none"); poly.setAttribute("stroke", "#2b6cb0"); poly.setAttribute("stroke-width", 1.5);
  poly.setAttribute("points", pts.map(p => [5 + (p[0] - t0) / Math.max(1, t1 - t0) * (W - 10),
                                             5 + (hi - p[1]) / Math.max(1e-9, hi - lo) * (H - 10)].join(",")).join(" "));
  svg.append(poly);
  return svg;
}
const money = x => Number(x).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
const pct = x => (x === null || x === undefined) ? "n/a" : (x * 100).toFixed(2) + " %";
const utc = ms => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
function item(label, field, text, cls) {
  return el("span", {}, el("span", {class: "k"}, label),
            el("span", {class: "v" + (cls ? " " + cls : ""), "data-field": field}, text));
}
function account(a) {
  const box = el("div", {class: "account", "data-account": a.mode},
                 el("b", {}, "ACCOUNT"), el("span", {class: "badge " + a.mode}, a.mode));
  const v = a.account;
  if (!v) { box.append(el("span", {"data-field": "account-unknown"}, "unknown: no state file holds an account read yet"));
            return box; }
  const risk = v.margin_ratio === null || v.margin_ratio >= 0.8 ? "danger" : v.margin_ratio >= 0.5 ? "warn" : "";
  box.append(item("wallet", "account-wallet", money(v.wallet)),
             item("equity", "account-equity", money(v.equity)),
             item("margin ratio (liquidated at 100 %)", "account-margin-ratio", pct(v.margin_ratio), risk),
             el("span", {}, el("span", {class: "k"}, "to the account's liquidation"),
                el("span", {class: "v " + risk, "data-field": "account-to-liquidation"}, money(v.to_liquidation)),
                " (", el("span", {class: "v " + risk, "data-field": "account-to-liquidation-pct"},
                         pct(v.to_liquidation_share)), " of equity)"));
  if (v.stop_equity > 0)
    box.append(item("peak equity", "account-peak", money(v.peak_equity)),
               item("stop level", "account-stop", money(v.stop_equity)));
  if (v.stopped_at) box.append(el("span", {class: "danger", "data-field": "account-stopped"}, "STOPPED at " + utc(v.stopped_at)));
  box.append(el("span", {class: "muted", "data-field": "account-read"}, "as of " + utc(v.time) + ", " + v.symbol + "'s read"));
  return box;
}
function card(s) {
  const state = s.running ? el("span", {class: "badge run", "data-field": "running"}, "running")
                          : el("span", {class: "badge stop", "data-field": "running"}, "not running");
  const c = el("div", {class: "card", "data-symbol": s.symbol, "data-mode": s.mode},
    el("h2", {}, s.symbol, el("span", {class: "badge " + s.mode}, s.mode), state));
  c.append(el("table", {},
    row("direction", "direction", s.direction || "–"),
    row("position", "position-qty", fmt(s.position.qty, 6)),
    row("average", "position-avg", fmt(s.position.avg_price, 2)),
    row("price", "price", fmt(s.price, 2)),
    row("unrealized PnL", "unrealized", fmt(s.unrealized, 2)),
    row("deepest level", "deepest-level", s.position.deepest_level),
    row("open orders", "open-orders", s.orders.length),
    row("realized PnL after fees, total", "pnl-total", fmt(s.pnl.total, 2)),
    row("realized PnL after fees, today", "pnl-today", fmt(s.pnl.today, 2)),
    row("fills", "fills", s.pnl.fills),
    row("funding paid", "funding-total", fmt(s.funding.total, 4)),
    row("liquidation price", "liquidation-price", s.liquidation_price ? fmt(s.liquidation_price, 2) : "none")));
  c.append(el("div", {class: "muted"}, "resting orders against the price"), ladder(s));
  c.append(el("div", {class: "muted"}, "realized PnL over time"), curve(s));
  const fills = el("table", {"data-table": "fills-today"},
    el("tr", {}, ...["time", "role", "side", "price", "qty", "PnL"].map(h => el("th", {}, h))));
  for (const f of s.fills_today.slice(-10).reverse())
    fills.append(el("tr", {}, ...[f.time, f.role, f.side, f.price, f.qty, f.realized_pnl].map(v => el("td", {}, v))));
  c.append(el("div", {class: "muted"}, "today's fills"), fills);
  c.append(el("div", {class: "muted"}, "last log lines"), el("pre", {"data-field": "log"}, s.log.join("\n")));
  return c;
}
async function refresh() {
  try {
    const r = await fetch("/api/status" + (token ? "?token=" + encodeURIComponent(token) : ""));
    if (!r.ok) { document.getElementById("updated").textContent = "error " + r.status; return; }
    const data = await r.json();
    document.getElementById("accounts").replaceChildren(...(data.accounts || []).map(account));
    const cards = document.getElementById("cards");
    cards.replaceChildren(...data.symbols.map(card));
    if (!data.symbols.length) cards.append(el("p", {}, "no daemon found under " + data.root));
    document.getElementById("updated").textContent = "updated " + new Date(data.time).toISOString();
    document.body.setAttribute("data-loaded", "1");
  } catch (e) {
    document.getElementById("updated").textContent = "unreachable";
  }
}
refresh();
setInterval(refresh, 2000);
</script></body></html>
"""

if __name__ == "__main__":
    sys.exit(main())
