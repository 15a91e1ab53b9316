"""Shared by the end-to-end, chaos and soak tests: the local exchange and the
daemon as real subprocesses on loopback, driven through the exchange's admin API."""
from __future__ import annotations

import csv
import hashlib
import hmac
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest


REPO = Path(__file__).resolve().parents[1]
SYM = "BTCUSDC"
TICK = 0.1
STEP = 0.001
BALANCE = 10_000.0
MAKER_FEE = 0.0002          # non-zero so the fee column is checked against the exchange
TAKER_FEE = 0.0005

CONFIG = """\
INITIAL_CAPITAL=1000.0
CAPITAL_RATIO=0.33
LEVERAGE_LONG=20
LEVERAGE_SHORT=5
TRADE_DIRECTION=LONG
GRID_RANGE_PCT=0.040
MAX_ENTRY_LEVEL=4
ENTRY_RATIOS=0.05,0.20,0.25,0.50
LEVEL_DISTANCES=0.005,0.010,0.040,0.045
SL_DISTANCE=0.05
TP_PCT={tp}
BE_PCT=0.001
"""
# Tight distances make every role (entries 1–4, TP, BE, SL, range exits) happen within a
# few hundred candles (the parity and chaos runs).
TIGHT = {"LEVEL_DISTANCES": "0.002,0.004,0.008,0.010", "SL_DISTANCE": "0.012", "TP_PCT": "0.002",
         "BE_PCT": "0.0005", "GRID_RANGE_PCT": "0.010"}


def with_values(config_text: str, values: dict[str, str]) -> str:
    """A config text with the given KEY=VALUE lines replaced (other lines kept as they are)."""
    lines = []
    for line in config_text.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


DISTANCES = (0.005, 0.010, 0.040, 0.045)
RATIOS = (0.05, 0.20, 0.25, 0.50)
CAPITAL = 0.33 * BALANCE
LEVERAGE = 20


# ---------------------------------------------------------------------------- small helpers


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               diag: Callable[[], str] | None = None, interval: float = 0.05) -> Any:
    """Poll `pred` until it returns something truthy; fail with `what` (and `diag()`) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{diag()}" if diag else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def wait_reconciles(ex: "Exchange", n: int = 2, diag: Callable[[], str] | None = None,
                    timeout: float = 20.0) -> None:
    """Wait until the daemon has run `n` whole reconciliations that began after this call: each
    reads the open algo orders once (nothing else does), one at a time under the daemon's lock,
    so when the (n+1)-th read from now is served the n-th has finished.  A test that asserts
    "a sync changes nothing" waits for the syncs, not for a guessed number of seconds."""
    key = "GET /fapi/v1/openAlgoOrders"
    start = ex.stats()["requests"].get(key, 0)
    wait_until(lambda: ex.stats()["requests"].get(key, 0) >= start + n + 1, timeout,
               f"{n} reconciliation(s) of the daemon", diag)


def floor_tick(x: float) -> float:
    return round(math.floor(x / TICK + 1e-9) * TICK, 1)


def ceil_tick(x: float) -> float:
    return round(math.ceil(x / TICK - 1e-9) * TICK, 1)


def floor_step(x: float) -> float:
    return round(math.floor(x / STEP + 1e-9) * STEP, 3)


def level_qty(price: float, level: int) -> float:
    return floor_step(RATIOS[level - 1] * CAPITAL * LEVERAGE / price)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_") and k != "LOG_LANGUAGE"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def _terminate(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------- the exchange


class Exchange:
    """local_exchange.py in a subprocess, on a free port; manual clock unless `speed` (candles/s)."""

    def __init__(self, workdir: Path, key: str, secret: str, seed: int = 7, data: Path | list[Path] | None = None,
                 speed: float = 0.0, faults: str = "", symbols: str | None = None,
                 fill_share: float | None = None, funding_rate: float | None = None,
                 fault_plan: list[dict[str, Any]] | None = None, hold_clock: bool = False,
                 fault_seed: int | None = None, pause_on_retry_after: bool = False,
                 collateral: str | None = None, lenient_user_stream: bool = False):
        workdir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = workdir / "exchange.out", workdir / "exchange.err"
        self.out, self.err = open(self.out_path, "w"), open(self.err_path, "w")
        files = data if isinstance(data, list) else [data] if data else []
        market = ["--data", *map(str, files)] if files else ["--synthetic", str(seed)]
        if fill_share is not None:
            market += ["--fill-model", "volume", "--fill-share", str(fill_share)]
        if funding_rate is not None:
            market += ["--funding-rate", str(funding_rate)]
        if fault_plan:
            plan = workdir / "fault_plan.json"
            plan.write_text(json.dumps(fault_plan))
            market += ["--fault-plan", str(plan)]
        if hold_clock:
            market += ["--hold-clock"]
        if pause_on_retry_after:
            market += ["--pause-on-retry-after"]
        if fault_seed is not None:
            market += ["--fault-seed", str(fault_seed)]
        if collateral:
            market += ["--collateral", collateral]
        if lenient_user_stream:
            market += ["--lenient-user-stream"]
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "local_exchange.py"), "--port", "0", *market,
             "--speed", str(speed), *(["--faults", faults] if faults else []), "--symbols", symbols or SYM, "--balance", str(BALANCE), "--api-key", key,
             "--maker-fee", str(MAKER_FEE), "--taker-fee", str(TAKER_FEE)],
            cwd=workdir, stdout=self.out, stderr=self.err, env=clean_env(LOCAL_EXCHANGE_API_SECRET=secret))
        line = wait_until(self._rest_line, 15, "the local exchange to print its URL", self.diag)
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ws_url = f"ws://127.0.0.1:{self.port}/"

    def _rest_line(self) -> str | None:
        assert self.proc.poll() is None, f"local exchange exited: {self.err_path.read_text()[-2000:]}"
        return next((ln for ln in self.out_path.read_text().splitlines() if ln.startswith("REST ")), None)

    def diag(self) -> str:
        return f"exchange stderr tail:\n{self.err_path.read_text()[-1500:]}"

    def stop(self) -> None:
        _terminate(self.proc)
        for fh in (self.out, self.err):
            if not fh.closed:
                fh.close()

    # admin API -------------------------------------------------------------
    def _call(self, method: str, path: str, **params: Any) -> Any:
        qs = "&".join(f"{k}={v}" for k, v in params.items())
        req = urllib.request.Request(f"{self.url}{path}{'?' + qs if qs else ''}", method=method,
                                     data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/state")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/stats")

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/_sim/clock")

    def step(self, n: int = 1) -> dict[str, Any]:
        return self._call("POST", "/_sim/step", candles=n)

    def price(self, p: float, fill: bool = True) -> None:
        self._call("POST", "/_sim/price", symbol=SYM, price=f"{p:.1f}", **({} if fill else {"fill": "false"}))

    def faults(self, **kw: Any) -> dict[str, Any]:
        return self._call("POST", "/_sim/faults", **kw)

    def signed(self, method: str, path: str, key: str, secret: str, **params: Any) -> Any:
        """A signed REST request, as an account holder (or someone else) would send it by hand."""
        params["timestamp"] = int(time.time() * 1000)
        qs = urllib.parse.urlencode(params)
        sig = hmac.new(secret.encode(), qs.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"{self.url}{path}?{qs}&signature={sig}", method=method,
                                     headers={"X-MBX-APIKEY": key}, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def ws_drop(self, kind: str = "all") -> int:
        return self._call("POST", "/_sim/ws_drop", kind=kind)["dropped"]

    # views -----------------------------------------------------------------
    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.state()["openOrders"] if o["symbol"] == SYM]

    def open_algos(self) -> list[dict[str, Any]]:
        return [a for a in self.state()["openAlgoOrders"] if a["symbol"] == SYM]

    def position(self) -> float:
        return float(self.state()["symbols"][SYM]["position"]["positionAmt"])

    def entry_price(self) -> float:
        return float(self.state()["symbols"][SYM]["position"]["entryPrice"])

    def fills(self) -> list[dict[str, Any]]:
        return [f for f in self.state()["fills"] if f["symbol"] == SYM]

    def book(self) -> dict[str, dict[str, Any]]:
        """Open plain orders by client id."""
        return {o["clientOrderId"]: o for o in self.open_orders()}


# ---------------------------------------------------------------------------- the daemon


class Daemon:
    """trade_btc.py in a subprocess with its own root (state/, logs/, trades/)."""

    def __init__(self, root: Path, ex: Exchange | None, key: str, secret: str, *, env_text: str | None = None,
                 tp: float = 0.005, base_url: str | None = None, extra_env: dict[str, str] | None = None,
                 write_config: bool = True, name: str = "daemon", sync_interval: float = 1.0,
                 symbol: str | None = None, config_interval: float = 1.0, market_silence: float | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.root = root
        self.extra_args = extra_args        # more command-line flags (a test may change them between runs)
        self.symbol = symbol = symbol or "BTCUSDC"   # trade_btc.py unless told (a test may patch SYM)
        self.short = symbol[:-4].lower()
        self.sync_interval = sync_interval
        self.config_interval = config_interval
        self.market_silence = market_silence
        self.name = name
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / f"config_{self.short}.txt"
        if write_config:
            self.config.write_text(CONFIG.format(tp=tp))
        self.env_file = root / ".env"
        if env_text is None:
            env_text = f"BINANCE_API_KEY={key}\nBINANCE_API_SECRET={secret}\n"
        self.env_file.write_text(env_text)
        self.env_file.chmod(0o600)
        self.key, self.secret = key, secret
        self.base_url = base_url or (ex.url if ex else "http://127.0.0.1:9")
        self.ws_url = ex.ws_url if ex else "ws://127.0.0.1:9/"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "Daemon":
        self.runs += 1
        self.stdout_path = self.root / f"{self.name}{self.runs}.out"
        self.stderr_path = self.root / f"{self.name}{self.runs}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / f"trade_{self.short}.py"), "--base-url", self.base_url, "--ws-url", self.ws_url,
                 "--root", str(self.root), "--env", str(self.env_file), "--config", str(self.config), "--quiet",
                 "--sync-interval", str(self.sync_interval), "--config-interval", str(self.config_interval),
                 *(["--market-silence", str(self.market_silence)] if self.market_silence else []), *self.extra_args],
                cwd=self.root, stdout=out, stderr=err, env=clean_env(**self.extra_env))
        return self

    def run_to_exit(self, timeout: float = 20.0) -> tuple[int, str, str]:
        self.start()
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.kill()
        return rc, self.stdout_path.read_text(), self.stderr_path.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # files -----------------------------------------------------------------
    def log(self) -> str:
        return "".join(p.read_text(encoding="utf-8") for p in sorted((self.root / "logs").glob(
            f"grid_martingale_{self.short}_*.log")))

    def trades(self) -> list[dict[str, str]]:
        path = self.root / "trades" / f"trades_{self.short}.csv"
        if not path.exists():
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "state" / f"state_{self.short}.json").read_text())

    def diag(self) -> str:
        err = self.stderr_path.read_text()[-1500:] if self.runs else ""
        return f"daemon log tail:\n{self.log()[-3000:]}\ndaemon stderr tail:\n{err}"



def by_cid(orders: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["clientOrderId"]: o for o in orders}


def entry_prices(center: float) -> list[float]:
    return [floor_tick(center * (1 - d)) for d in DISTANCES]


def exits(ex: Exchange) -> list[dict[str, Any]]:
    return [o for o in ex.open_orders() if o["reduceOnly"]]


def assert_csv_matches_exchange(d: Daemon, ex: Exchange) -> None:
    """Every exchange fill exactly once in the CSV, with the exchange's price, qty, fee and PnL."""
    rows = d.trades()
    fills = ex.fills()
    ids = [int(r["trade_id"]) for r in rows]
    assert len(ids) == len(set(ids)), f"duplicated CSV rows: {ids}"
    assert sorted(ids) == sorted(int(f["id"]) for f in fills)
    by_id = {int(f["id"]): f for f in fills}
    # A triggered stop's order has the exchange's own client id; the CSV names the stop, linked
    # to that order by the algo order's actualOrderId (ALGO_UPDATE `ai`).
    placed_by = {a["actualOrderId"]: a["clientAlgoId"] for a in ex.state()["algoOrders"] if a["actualOrderId"]}
    for r in rows:
        f = by_id[int(r["trade_id"])]
        assert r["client_order_id"] == placed_by.get(str(f["orderId"]), f["clientOrderId"]), (r, f)
        assert r["side"] == f["side"]
        assert float(r["price"]) == float(f["price"]) and float(r["quantity"]) == float(f["qty"])
        assert float(r["fee"]) == pytest.approx(float(f["commission"]), abs=1e-8)
        assert float(r["realized_pnl"]) == pytest.approx(float(f["realizedPnl"]), abs=1e-8)
        assert float(r["position_after"]) == pytest.approx(f["positionAfter"], abs=1e-9), r


