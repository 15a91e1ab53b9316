"""The crash test and the fault soak (issue 5, items 1 and 2), shared by
tests/chaos/test_chaos.py (CI sizes) and bench/chaos_soak.py (long runs).

Both run the real daemon (trade_btc.py) against the real local exchange
(local_exchange.py) as subprocesses, over a finite seeded synthetic market
replayed at an accelerated clock (--speed): when the candles run out the
market stops by itself, the last daemon settles, and the invariants are
checked against the exchange's own records (/_sim/state).

`check_invariants` is the one invariant checker: it takes the exchange's
state JSON, the daemon's state file (dict) and its trades CSV rows, and
returns the violations as readable strings (an empty list = all hold).
"""
from __future__ import annotations

import json
import math
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if str(TESTS.parent) not in sys.path:
    sys.path.insert(0, str(TESTS.parent))

from harness import CONFIG, SYM, TIGHT, Daemon, Exchange, wait_until, with_values  # noqa: E402
from market.data import synthetic_klines, write_klines_csv  # noqa: E402

LEVELS = 4
TIGHT_CONFIG = with_values(CONFIG.format(tp=TIGHT["TP_PCT"]), TIGHT)
_CID = re.compile(r"^GM-([A-Z0-9]+)-(\d+)-(TP|BE|SL|E)(\d+)$")


def _role(cid: str) -> tuple[int, str, int] | None:
    """(generation, role, n) of one of the daemon's client ids, None for another id."""
    m = _CID.match(cid or "")
    return (int(m.group(2)), m.group(3), int(m.group(4))) if m else None


# ---------------------------------------------------------------------------- the invariants


def check_invariants(ex_state: dict[str, Any], d_state: dict[str, Any], csv_rows: list[dict[str, str]],
                     symbol: str = SYM, levels: int = LEVELS) -> list[str]:
    """The issue's invariants at one settled instant; returns the violations (empty = all hold).

    1. every exchange fill of the symbol appears exactly once in the CSV (same price and qty),
       and the CSV has no row the exchange does not know;
    2. no open order (plain or algo) of the symbol is unknown to the daemon's state;
    3. no duplicate grid orders (one per level, one generation) and no duplicate exits
       (at most one TP/BE limit, at most one stop);
    4. whenever the deepest level has filled in the current position (since it was last flat
       or last taken back to level 1 by a BE), the stop exists;
    5. whenever a position exists, its TP or BE exists.
    """
    bad: list[str] = []
    fills = [f for f in ex_state["fills"] if f["symbol"] == symbol]
    # 1. fills <-> CSV
    ids = [int(r["trade_id"]) for r in csv_rows]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        bad.append(f"CSV rows written more than once: trade ids {dup[:10]}")
    by_id = {int(f["id"]): f for f in fills}
    missing = sorted(set(by_id) - set(ids))
    if missing:
        bad.append(f"{len(missing)} exchange fills missing from the CSV: trade ids {missing[:10]}")
    extra = sorted(set(ids) - set(by_id))
    if extra:
        bad.append(f"CSV rows the exchange never filled: trade ids {extra[:10]}")
    for r in csv_rows:
        f = by_id.get(int(r["trade_id"]))
        if f is not None and (float(r["price"]) != float(f["price"]) or float(r["quantity"]) != float(f["qty"])):
            bad.append(f"CSV row {r['trade_id']} differs from the exchange: {r['price']}×{r['quantity']} "
                       f"vs {f['price']}×{f['qty']}")
    # 2. open orders known to the state
    known = set(d_state.get("orders", {}))
    plain = [o for o in ex_state["openOrders"] if o["symbol"] == symbol]
    algos = [a for a in ex_state["openAlgoOrders"] if a["symbol"] == symbol]
    for cid in [o["clientOrderId"] for o in plain] + [a["clientAlgoId"] for a in algos]:
        if cid not in known:
            bad.append(f"open order {cid} unknown to the state")
    # 3. duplicates
    entries = [(_role(o["clientOrderId"]), o) for o in plain if not o["reduceOnly"]]
    per_level = Counter(r[2] for r, _ in entries if r and r[1] == "E")
    for lvl, n in per_level.items():
        if n > 1:
            bad.append(f"{n} open grid orders for level {lvl}")
    gens = {r[0] for r, _ in entries if r}
    if len(gens) > 1:
        bad.append(f"open grid orders of several generations: {sorted(gens)}")
    if any(r is None for r, _ in entries):
        bad.append("open entry orders with foreign ids: "
                   f"{[o['clientOrderId'] for r, o in entries if r is None][:5]}")
    exits = [o for o in plain if o["reduceOnly"]]
    if len(exits) > 1:
        bad.append(f"{len(exits)} open TP/BE orders: {[o['clientOrderId'] for o in exits]}")
    stops = [a for a in algos if a["orderType"] in ("STOP_MARKET", "STOP")]
    if len(stops) > 1:
        bad.append(f"{len(stops)} open stops: {[a['clientAlgoId'] for a in stops]}")
    # 4. / 5. protection of the current position (the exchange's own numbers)
    qty = float(ex_state["symbols"][symbol]["position"]["positionAmt"])
    if abs(qty) > 0:
        since_flat = []
        for f in fills:                        # fills are in trade order
            since_flat.append(f)
            r = _role(f["clientOrderId"])
            if abs(float(f["positionAfter"])) < 1e-12 or (r and r[1] == "BE"):
                since_flat = []        # flat, or back to level 1 only after a BE (SPEC §3.4)
        deepest = max((r[2] for r in (_role(f["clientOrderId"]) for f in since_flat) if r and r[1] == "E"),
                      default=0)
        if deepest >= levels and not stops:
            bad.append(f"level {deepest} filled (position {qty}) but no stop on the exchange")
        if not any((_role(o["clientOrderId"]) or (0, "", 0))[1] in ("TP", "BE") for o in exits):
            bad.append(f"position {qty} without a TP or BE order")
    return bad


@dataclass
class Exposure:
    """The exposure invariant along a fill history (docs/RELIABILITY.md): at every fill,
    |position| <= the sum of the configured level quantities of the grid in force."""

    fills: int = 0
    max_share: float = 0.0          # max |position| / ladder over the fills
    violations: list[str] = field(default_factory=list)


def check_exposure(ex_state: dict[str, Any], symbol: str, ratios: list[float], leverage: int,
                   capital: float, step: float) -> Exposure:
    """Walk the exchange's fills in trade order.  The grid in force at a fill is made of the
    newest generation of entry orders placed before it (order ids up to the fill's lastOrderId):
    a generation with level 1 is a fresh grid and replaces every level; one without (after a
    BE, or the deeper levels re-placed after a raced fill) replaces its own levels and keeps
    the shallower ones in force.  A level's configured quantity is ratio × capital × leverage
    / its price, floored to the step: a level shrunk by the -2019 ladder counts as placed in
    full, a level never placed does not count."""
    gens: dict[int, dict[int, float]] = {}     # generation -> level -> configured quantity
    first_id: dict[int, int] = {}
    for o in ex_state["orders"]:
        r = _role(o["clientOrderId"]) if o["symbol"] == symbol else None
        if not r or r[1] != "E" or not 1 <= r[2] <= len(ratios):
            continue
        price = float(o["price"])
        q = math.floor(ratios[r[2] - 1] * capital * leverage / price / step + 1e-9) * step
        gens.setdefault(r[0], {})[r[2]] = q
        first_id[r[0]] = min(first_id.get(r[0], o["orderId"]), o["orderId"])
    order = sorted(gens, key=lambda g: first_id[g])
    rep = Exposure()
    in_force: dict[int, float] = {}
    k = 0
    for f in ex_state["fills"]:
        if f["symbol"] != symbol:
            continue
        while k < len(order) and first_id[order[k]] <= f["lastOrderId"]:
            g = gens[order[k]]
            in_force = dict(g) if 1 in g else {**in_force, **g}
            k += 1
        rep.fills += 1
        ladder = sum(in_force.values())
        pos = abs(float(f["positionAfter"]))
        if ladder > 0:
            rep.max_share = max(rep.max_share, pos / ladder)
        if pos > ladder + step / 2:
            rep.violations.append(f"{symbol} trade {f['id']} ({f['clientOrderId']}): position {pos:.6g} "
                                  f"> ladder {ladder:.6g} ({pos / ladder if ladder else float('inf'):.2f}×)")
    return rep


def exposure_of(ex_state: dict[str, Any], d: Daemon) -> Exposure:
    """check_exposure with the daemon's configuration and capital."""
    from config import load_config
    cfg = load_config(d.config)
    lev = cfg.leverage_long if cfg.trade_direction == "LONG" else cfg.leverage_short
    try:
        capital = float(d.state()["capital"])
    except (OSError, ValueError, KeyError):
        capital = 0.33 * 10_000.0
    from sim.exchange import DEFAULT_FILTERS
    return check_exposure(ex_state, d.symbol, list(cfg.entry_ratios), lev, capital,
                          DEFAULT_FILTERS[d.symbol].step_size)


def check_no_duplicates(ex_state: dict[str, Any], csv_rows: list[dict[str, str]], symbol: str = SYM) -> list[str]:
    """What must hold at every instant, even mid-crash: no duplicate orders, no CSV row twice
    or unknown to the exchange (a fill may still be missing: the next life recovers it)."""
    bad = [v for v in check_invariants(ex_state, {"orders": {}}, csv_rows, symbol)
           if not v.startswith(("open order", "position", "level")) and "missing from the CSV" not in v]
    return bad


def snapshot(ex: Exchange, d: Daemon) -> tuple[dict, dict, list]:
    """The exchange's state, the daemon's state file and its CSV rows."""
    ex_state = ex.state()
    try:
        d_state = d.state()
    except (OSError, ValueError):
        d_state = {"orders": {}}
    return ex_state, d_state, d.trades()


def settle_and_check(ex: Exchange, d: Daemon, timeout: float = 60.0, symbol: str = SYM) -> tuple[list[str], int]:
    """Poll until the invariants hold on one snapshot (the daemon's reconcile runs every
    --sync-interval); returns (violations of the last snapshot, snapshots checked).  The
    timeout is generous: after 20 restarts in a minute the daemon is near the exchange's
    request-weight limit and spaces its requests out (up to 2 s each) until the minute ends."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        bad = check_invariants(*snapshot(ex, d), symbol=symbol)
        if not bad or time.monotonic() >= deadline:
            return bad, n
        time.sleep(0.5)


def log_problems(d: Daemon) -> list[str]:
    """Unhandled exceptions: tracebacks in the log files or in any run's stderr."""
    out = []
    text = d.log()
    if "Traceback" in text:
        i = text.index("Traceback")
        out.append("traceback in the log:\n" + text[max(0, i - 300): i + 1500])
    for p in sorted(d.root.glob(f"{d.name}*.err")):
        t = p.read_text(errors="replace")
        if "Traceback" in t:
            out.append(f"traceback in {p.name}:\n{t[-1500:]}")
    return out


def rate_problems(stats: dict[str, Any]) -> list[str]:
    out = []
    if stats["peakWeight1m"] > stats["weightLimit"]:
        out.append(f"request weight peaked at {stats['peakWeight1m']} > {stats['weightLimit']}/min")
    if stats["peakOrderCount10s"] > stats["orderLimit10s"]:
        out.append(f"orders peaked at {stats['peakOrderCount10s']} > {stats['orderLimit10s']}/10 s")
    if stats["peakOrderCount1m"] > stats["orderLimit1m"]:
        out.append(f"orders peaked at {stats['peakOrderCount1m']} > {stats['orderLimit1m']}/min")
    return out


# ---------------------------------------------------------------------------- set-up


def market_csv(path: Path, candles: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_klines_csv(synthetic_klines(candles, seed, start_price=60_000.0, tick=0.1), path)
    return path


def make_daemon(root: Path, ex: Exchange, keys: tuple[str, str], sync_interval: float = 1.0) -> Daemon:
    d = Daemon(root, ex, *keys, write_config=False, sync_interval=sync_interval)
    d.config.write_text(TIGHT_CONFIG)
    return d


def streams_up(ex: Exchange, n: int = 1) -> bool:
    ws = ex.stats()["websockets"]
    return ws["user"] >= n and ws["market"] >= n


def market_done(ex: Exchange, candles: int, symbol: str = SYM) -> bool:
    return ex.clock()["candleIndex"][symbol] >= candles


@dataclass
class Report:
    kills: int = 0
    kills_by_mode: Counter = field(default_factory=Counter)
    crash_hook_exits: int = 0
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    fills: int = 0
    csv_rows: int = 0
    orders_placed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    faults: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    unrequested_429: int = 0
    max_share: float = 0.0          # max |position| / ladder of the grid in force, over every fill
    first_grid_minute: int | None = None

    def figures(self) -> str:
        lines = [f"kills survived            {self.kills}  ({dict(self.kills_by_mode)})" if self.kills else None,
                 f"crash-hook exits (137)    {self.crash_hook_exits}" if self.kills else None,
                 f"exchange fills / CSV rows {self.fills} / {self.csv_rows}",
                 f"max position / ladder     {self.max_share:.1%}" if self.max_share else None,
                 f"orders placed (exchange)  {self.orders_placed}",
                 f"first grid at minute      {self.first_grid_minute}" if self.first_grid_minute is not None
                 else None,
                 f"invariant checks run      {self.checks}",
                 f"violations                {len(self.violations)}",
                 f"faults injected           {dict(self.faults)}" if self.faults else None,
                 f"peak weight / limit       {self.stats.get('peakWeight1m')} / {self.stats.get('weightLimit')} per min",
                 f"peak orders / limit       {self.stats.get('peakOrderCount10s')} / "
                 f"{self.stats.get('orderLimit10s')} per 10 s",
                 f"HTTP responses            {self.stats.get('responses')}",
                 f"429 without injection     {self.unrequested_429}" if self.kills else None,
                 f"wall time                 {self.seconds:.1f} s"]
        out = "\n".join(ln for ln in lines if ln)
        for v in self.violations[:20]:
            out += f"\n  VIOLATION: {v}"
        return out


def _tear_down(ex: Exchange, daemons: Daemon | list[Daemon], workdir: Path) -> None:
    """Kill the daemons, keep the exchange's own records next to the run for a post-mortem,
    stop the exchange."""
    for d in daemons if isinstance(daemons, list) else [daemons]:
        d.kill()
    try:
        (workdir / "exchange_state.json").write_text(json.dumps(ex.state(), indent=1))
    except Exception:  # noqa: BLE001 - diagnostics only
        pass
    ex.stop()


def _finish(rep: Report, ex: Exchange, d: Daemon) -> None:
    st = ex.state()
    rep.fills = sum(f["symbol"] == SYM for f in st["fills"])
    rep.orders_placed = sum(o["symbol"] == SYM for o in st["orders"]) + \
        sum(a["symbol"] == SYM for a in st["algoOrders"])
    rep.csv_rows = len(d.trades())
    rep.stats = ex.stats()
    rep.unrequested_429 = int(rep.stats["responses"].get("429", 0))   # the soak subtracts its injected ones
    rep.violations += rate_problems(rep.stats)
    rep.violations += log_problems(d)
    e = exposure_of(st, d)          # the exposure invariant along the whole fill history
    rep.max_share = e.max_share
    rep.violations += e.violations


# ---------------------------------------------------------------------------- 1. crash test


def run_crash_test(workdir: Path, keys: tuple[str, str], kills: int = 20, seed: int = 1, speed: float = 40.0,
                   mean_life_s: float = 1.2) -> Report:
    """SIGKILL the daemon `kills` times at seeded random instants (and through the
    GM_CRASH_AFTER hook just before an order request, right after one, or after a fill), restarting it each time;
    then let the market end, settle, and check the invariants."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    # The market lasts about as long as the kills take (a start costs ~0.5 s), then stops.
    candles = int(speed * kills * (mean_life_s + 1.1)) + 60
    data = market_csv(workdir / "data" / f"{SYM}-chaos-{seed}.csv", candles, seed)
    ex = Exchange(workdir / "exchange", *keys, data=data, speed=speed)
    d = make_daemon(workdir / "root", ex, keys)
    rep = Report()
    try:
        for i in range(kills):
            mode = rng.choices(["random", "send", "place", "fill"], weights=[5, 2, 2, 2])[0]
            d.extra_env = {}
            if mode in ("send", "place"):
                d.extra_env = {"GM_CRASH_AFTER": f"{mode}:{rng.randint(1, 6)}"}
            elif mode == "fill":
                d.extra_env = {"GM_CRASH_AFTER": "fill:1"}
            d.start()
            life = rng.uniform(0.2, 2 * mean_life_s) if mode == "random" else 2.5 * mean_life_s
            deadline = time.monotonic() + life
            while time.monotonic() < deadline and d.alive():
                time.sleep(0.02)
            if not d.alive():
                rc = d.proc.returncode
                if rc == 137 and mode != "random":
                    rep.crash_hook_exits += 1
                elif rc != 137:
                    rep.violations.append(f"life {d.runs} ended by itself with exit code {rc}:\n{d.diag()}")
                    break
            else:
                d.kill(signal.SIGKILL)
            rep.kills += 1
            rep.kills_by_mode[mode if not d.extra_env or d.proc.returncode == 137 else "random"] += 1
            # Dead daemon: nothing may be duplicated right now, whatever the instant of death.
            ex_state = ex.state()
            rep.checks += 1
            for v in check_no_duplicates(ex_state, d.trades()):
                rep.violations.append(f"after kill {rep.kills}: {v}")
        # The last life: runs to the end of the market, then settles.
        d.extra_env = {}
        d.start()
        wait_until(lambda: market_done(ex, candles), candles / speed + 60, "the market to end", d.diag)
        wait_until(lambda: d.alive() and streams_up(ex), 20, "the last daemon's streams", d.diag)
        bad, n = settle_and_check(ex, d)
        rep.checks += n
        rep.violations += bad
        _finish(rep, ex, d)
    finally:
        _tear_down(ex, d, workdir)
    rep.seconds = time.monotonic() - t0
    return rep


# ---------------------------------------------------------------------------- 2. fault soak


# The soak's faults, on the exchange's clock (simulated minutes): the same faults at the same
# market instants whatever the machine's load.  Rates are per request (seeded dice).
BACKGROUND_FAULTS = {
    "ws_drop_every_min": 120,    # every socket dropped every 2 simulated hours
    "http_5xx_rate": 0.05,       # 503 before execution
    "unknown_rate": 0.03,        # 503 "Unknown error" on placements ...
    "unknown_placed": 0.5,       # ... half of them after the order was placed
    "delay_ms": 5,
}
CLEAR_FAULTS = {"ws_drop_every_min": 0, "http_5xx_rate": 0, "unknown_rate": 0, "unknown_next": 0,
                "unknown_placed": 1, "http_429_next": 0, "skew_ms": 0, "margin_next": 0, "reduce_only_next": 0,
                "delay_ms": 0}
FIRST_FAULT_SHARE = 0.10


def _waves() -> list[tuple[float, str, dict[str, Any]]]:
    """(share of the run's minutes, kind, plan entry): bursts and waves over the background."""
    return [(FIRST_FAULT_SHARE, "429 burst", {"http_429_next": 3}),
            (0.15, "418 ban", {"ban_s": 2}),
            (0.20, "listenKey expired", {"expire_listen_keys": 1}),
            (0.25, "clock skew -3 s", {"skew_ms": -3000}),
            (0.32, "clock skew off", {"skew_ms": 0}),
            (0.38, "-2019 wave", {"margin_next": 4}),
            (0.48, "-2022 wave", {"reduce_only_next": 4}),
            (0.55, "clock skew +7 s", {"skew_ms": 7000}),
            (0.60, "listenKey expired", {"expire_listen_keys": 1}),
            (0.62, "clock skew off", {"skew_ms": 0}),
            (0.70, "-2019 wave", {"margin_next": 4}),
            (0.75, "unknown-result burst", {"unknown_next": 3}),
            (0.80, "-2022 wave", {"reduce_only_next": 4}),
            (0.85, "429 burst", {"http_429_next": 3})]


def fault_plan(minutes: int) -> list[dict[str, Any]]:
    """The whole soak as the exchange's --fault-plan: the background from minute 1 (once the
    first grid is out), the waves at their shares of the run, everything cleared at the end."""
    plan = [{"at_minute": 1, **BACKGROUND_FAULTS}]
    plan += [{"at_minute": max(2, int(share * minutes)), **f} for share, _, f in _waves()]
    plan.append({"at_minute": int(0.95 * minutes), **CLEAR_FAULTS})
    return plan


PLANNED_KINDS = ("ban_s", "expire_listen_keys", "ws_drop", "http_429_next", "margin_next", "reduce_only_next",
                 "unknown_next", "skew_ms")


def count_planned_faults(rep: Report, ex_state: dict[str, Any]) -> None:
    """What the exchange's fault plan did (its faultLog), counted into the report by kind."""
    for entry in ex_state["faultLog"]:
        for kind in PLANNED_KINDS:
            if entry.get(kind):
                rep.faults[kind] += 1


def first_grid_minute(ex_state: dict[str, Any], symbol: str = SYM) -> int | None:
    """The simulated minute (since the market began) at which the daemon's first order went out."""
    t0 = ex_state["symbols"][symbol].get("firstCandleTime")
    times = [int(o["time"]) for o in ex_state["orders"] if o["symbol"] == symbol]
    return (min(times) - t0) // 60_000 if times and t0 is not None else None


def run_fault_soak(workdir: Path, keys: tuple[str, str], minutes: int = 1440, seed: int = 2,
                   speed: float = 40.0) -> Report:
    """One simulated day under every fault at once, on the exchange's clock (which starts once
    the daemon listens); then settle and check the invariants."""
    t0 = time.monotonic()
    data = market_csv(workdir / "data" / f"{SYM}-soak-{seed}.csv", minutes, seed)
    rep = Report()
    ex = Exchange(workdir / "exchange", *keys, data=data, speed=speed, fault_plan=fault_plan(minutes),
                  hold_clock=True, fault_seed=seed, pause_on_retry_after=True)
    d = make_daemon(workdir / "root", ex, keys)
    try:
        d.start()
        wait_until(lambda: not d.alive() or market_done(ex, minutes), minutes / speed + 120, "the market to end",
                   d.diag)
        if not d.alive():
            rep.violations.append(f"the daemon died during the soak (exit {d.proc.returncode}):\n{d.diag()}")
        else:
            wait_until(lambda: d.alive() and streams_up(ex), 30, "the daemon's streams after the faults", d.diag)
            bad, n = settle_and_check(ex, d)
            rep.checks += n
            rep.violations += bad
        st = ex.state()
        rep.first_grid_minute = first_grid_minute(st)
        first_fault = int(FIRST_FAULT_SHARE * minutes)
        if rep.first_grid_minute is None or rep.first_grid_minute >= first_fault:
            rep.violations.append(f"the first grid went out at minute {rep.first_grid_minute}, not before the "
                                  f"first fault wave (minute {first_fault})")
        _finish(rep, ex, d)
        count_planned_faults(rep, st)
        rep.faults["ws drops (exchange log)"] = ex.err_path.read_text().count("fault: dropping")
        for code in ("503", "429", "418"):
            rep.faults[f"HTTP {code} answered"] = int(rep.stats["responses"].get(code, 0))
        log = d.log()
        rep.faults["daemon reconnects (log)"] = log.count("websocket:")
        rep.faults["HTTP 400 answered (-1021 skew, -2019, -2022, ...)"] = int(rep.stats["responses"].get("400", 0))
        injected_429 = sum(f.get("http_429_next", 0) for _, _, f in _waves())
        if rep.faults["HTTP 429 answered"] > injected_429:
            rep.violations.append(f"{rep.faults['HTTP 429 answered'] - injected_429} HTTP 429 beyond the "
                                  f"{injected_429} injected: the daemon went over a rate limit")
    finally:
        _tear_down(ex, d, workdir)
    rep.seconds = time.monotonic() - t0
    return rep


def dump(rep: Report, path: Path) -> None:
    d = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in rep.__dict__.items()}
    path.write_text(json.dumps(d, indent=1, default=str))


# ---------------------------------------------------------------------------- 3. fast market

BTC_FILE = "binanceus-spot-BTCUSDC-1m-2023-03-01_21.csv"
BTC_WINDOW = 14_340            # 2023-03-10 23:00 UTC: the USDC de-peg, the widest swings of the file


@dataclass
class FastReport(Report):
    exposure: dict[str, Exposure] = field(default_factory=dict)

    def figures(self) -> str:
        out = super().figures()
        for sym, e in self.exposure.items():
            out += (f"\n{sym:<9} fills {e.fills}, max position {e.max_share:.1%} of the ladder, "
                    f"exposure violations {len(e.violations)}")
        return out


def fast_market_data(workdir: Path, data_dir: Path | None, candles: int, seed: int,
                     symbols: tuple[str, ...]) -> list[Path]:
    """The same candles for every symbol: a window of the BTCUSDC de-peg file, or the synthetic
    market (GARCH volatility with jumps) when data_dir is None."""
    from market.data import load_klines
    if data_dir is not None:
        src = load_klines([data_dir / BTC_FILE])
        start = max(0, min(BTC_WINDOW, len(src) - candles))       # a long run starts earlier
        c = src.slice(start, start + candles)
    else:
        c = synthetic_klines(candles, seed, start_price=60_000.0, tick=0.1)
    out = []
    for sym in symbols:
        p = workdir / "data" / f"{sym}-fast.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_klines_csv(c, p)
        out.append(p)
    return out


def run_fast_market(workdir: Path, keys: tuple[str, str], *, data_dir: Path | None, speed: float,
                    candles: int, seed: int = 3, kills: int = 0, tight: bool = True,
                    directions: dict[str, str] | None = None, mean_life_s: float | None = None) -> FastReport:
    """The daemons against the local exchange running its own clock (no lockstep): BTCUSDC
    LONG and ETHUSDC SHORT on the same candles, optionally killed at random; then the exposure
    invariant along the exchange's whole fill history and the settled invariants."""
    directions = directions or {"BTCUSDC": "LONG", "ETHUSDC": "SHORT"}
    rng = random.Random(seed)
    t0 = time.monotonic()
    syms = tuple(directions)
    files = fast_market_data(workdir, data_dir, candles, seed, syms)
    ex = Exchange(workdir / "exchange", *keys, data=files, speed=speed, symbols=",".join(syms))
    ds = []
    for sym, direction in directions.items():
        # A sync every 3 s: two daemons share the IP's request weight (every 1 s would use 85 % of it).
        d = Daemon(workdir / f"root_{sym}", ex, *keys, write_config=False, sync_interval=3.0, symbol=sym)
        base = TIGHT_CONFIG if tight else CONFIG.format(tp="0.005")
        d.config.write_text(with_values(base, {"TRADE_DIRECTION": direction}))
        ds.append(d)
    rep = FastReport()
    if mean_life_s is None:                          # the kills spread over the whole run
        mean_life_s = (candles / speed) / (kills + 1) if kills else 0.0
    try:
        for d in ds:
            d.start()
        end = time.monotonic() + candles / speed
        while kills and rep.kills < kills and time.monotonic() < end - 2:
            time.sleep(rng.uniform(0.3, max(0.6, 2 * mean_life_s - 0.3)))
            d = rng.choice(ds)
            if d.alive():
                d.kill(signal.SIGKILL)
                rep.kills += 1
                rep.kills_by_mode["random"] += 1
            d.start()
        wait_until(lambda: all(market_done(ex, candles, d.symbol) for d in ds), candles / speed + 90,
                   "the market to end", ds[0].diag)
        for d in ds:
            if not d.alive():
                rep.violations.append(f"{d.symbol}: the daemon died (exit {d.proc.returncode}):\n{d.diag()}")
                d.start()
        wait_until(lambda: streams_up(ex, len(ds)), 20, "the daemons' streams", ds[0].diag)
        st = ex.state()
        for d in ds:
            bad, n = settle_and_check(ex, d, symbol=d.symbol)
            rep.checks += n
            rep.violations += [f"{d.symbol}: {v}" for v in bad]
        st = ex.state()
        for d in ds:
            e = exposure_of(st, d)
            rep.exposure[d.symbol] = e
            rep.violations += e.violations
            rep.fills += e.fills
            rep.csv_rows += len(d.trades())
            rep.violations += [f"{d.symbol}: {v}" for v in log_problems(d)]
        rep.orders_placed = len(st["orders"]) + len(st["algoOrders"])
        rep.stats = ex.stats()
        rep.violations += rate_problems(rep.stats)
    finally:
        _tear_down(ex, ds, workdir)
    rep.seconds = time.monotonic() - t0
    return rep
