#!/usr/bin/env python3
"""A read-only dashboard of every daemon found under a root (live and demo), in the browser.

    python dashboard.py [--root DIR] [--port 8765] [--host 127.0.0.1]

One page (it updates itself every 2 s from `/api/status`, in place): the account above the
symbols (wallet, equity, margin ratio, distance to the account's liquidation, the account
stop, and their history on time axes: SPEC §7); per symbol, side by side on a wide screen
and stacked on a phone, running or not, demo or live as its files say, the position, the
price of the last hours with the resting ladder (entries, TP/BE, stop, average,
liquidation) and the fills marked, equity and realized PnL over the whole history, funding
paid over time, the fills of the market's day and the last log lines.  The charts are
Plotly's, whose bundle ships in its pip package and is served by this server (nothing is
fetched from the internet).  It only reads the daemons' files (ops/dashboard_data.py): it
never talks to the exchange or a daemon, and it only answers GET.  On an address other
than loopback it needs DASHBOARD_TOKEN (the environment or .env) and every request must
carry it (`?token=` or X-Dashboard-Token).
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ops.dashboard_data import status
from paths import ROOT

__all__ = ["make_app", "status", "main"]

PAGE = (Path(__file__).resolve().parent / "ops" / "dashboard.html").read_text(encoding="utf-8")


def plotly_bundle() -> Path:
    """Plotly's own minified bundle, from its pip package (requirements.txt pins it)."""
    import plotly
    return Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


# ---------------------------------------------------------------------- the server
def make_app(root: Path, token: str | None) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token and request.path != "/favicon.ico":      # a browser asks for it by itself: nothing in it
            given = request.query.get("token") or request.headers.get("X-Dashboard-Token") or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response({"error": "a valid token is required"}, status=401)
        return await handler(request)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def api(_: web.Request) -> web.Response:
        return web.json_response(status(root), headers={"Cache-Control": "no-store"})

    bundle = plotly_bundle()

    async def chart_library(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(bundle, headers={"Cache-Control": "max-age=86400",
                                                 "Content-Type": "application/javascript"})

    async def no_icon(_: web.Request) -> web.Response:
        # the page links a blank icon, but a browser shown the token's 401 (JSON) asks for it,
        # and a 401 there is an error in its console after the one expected
        return web.Response(status=204)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_get("/api/status", api)
    app.router.add_get("/static/plotly.min.js", chart_library)
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


if __name__ == "__main__":
    sys.exit(main())
