"""Shared pieces of the local exchange: constants, faults, rate windows, market series,
connections, listenKeys, stream routing and the request activity the lockstep watches (used by
its gateway, clock, streams and endpoint parts), and the small protocols they meet through."""
from __future__ import annotations
import asyncio
import json
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence
from aiohttp import web
from exchange_api import BinanceError, ExchangeError, OrderStatus
from sim.fill_model import candle_ticks
from market.data import MINUTE_MS, Candles, synthetic_klines

log = logging.getLogger("local_exchange")

DEFAULT_API_KEY = "local-exchange-api-key"
DEFAULT_API_SECRET = "local-exchange-api-secret"
SYNTHETIC_START = {"BTCUSDC": 60_000.0, "ETHUSDC": 3_000.0}
SYNTHETIC_SEED_OFFSET = {"BTCUSDC": 0, "ETHUSDC": 1}
SYNTHETIC_CHUNK = 30 * 1440           # candles generated at a time (30 days, ~20 ms)
SYNTHETIC_START_MS = 1_700_000_000_000   # 2023-11-14 22:13 UTC
SYNTHETIC_MARKET_SALT = 0x6D61726B6574   # the market factor's seeds apart from every symbol's
LISTEN_KEY_TTL_S = 3600.0
MAX_CONNECTION_S = 24 * 3600.0
WS_PING_S = 180.0                     # Binance pings every 3 minutes
SPOT_WEIGHT_LIMIT = 6000
MAX_BAN_S = 3 * 24 * 3600.0
JSON_SEP = (",", ":")
TRADES_DEFAULT_WINDOW_MS = 7 * 24 * 3600 * 1000   # userTrades without startTime / fromId
MAX_WS_BACKLOG = 10_000               # a consumer this far behind is dropped, as Binance drops slow clients

MSG_UNKNOWN = "Unknown error, please check your request or try again later."
MSG_UNAVAILABLE = "Service Unavailable."
MSG_BAD_KEY = "Invalid API-key, IP, or permissions for action."
MSG_NO_LISTEN_KEY = "This listenKey does not exist."


ServerTime = Callable[[], int]   # the exchange's server clock (ms): the wall clock plus the skew fault


class Publisher(Protocol):
    """Publishes what the engine did (its queued events) on the user streams."""

    def flush_events(self) -> None: ...


def mandatory(name: str) -> ExchangeError:
    return ExchangeError(BinanceError.MANDATORY_PARAM_EMPTY_OR_MALFORMED,
                         f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


# ---------------------------------------------------------------------------- faults


@dataclass
class Faults:
    """Injected faults; every field can be set by `--faults k=v,...` or POST /_sim/faults."""

    ws_drop_every: float = 0.0       # seconds between forced drops of every WebSocket (0 = never)
    ws_drop_every_min: int = 0       # simulated minutes (candles) between such drops, on the clock (0 = never)
    delay_ms: float = 0.0            # added to every REST response (the request is processed first)
    http_5xx_rate: float = 0.0       # share of /fapi requests answered 503 "Service Unavailable." (not executed)
    unknown_rate: float = 0.0        # share of order placements answered 503 "Unknown error, ..."
    unknown_next: int = 0            # the next N order placements get that answer
    unknown_placed: float = 1.0      # probability the order was placed behind it (true = 1, false = 0)
    http_429_next: int = 0           # the next N REST requests get 429 -1003
    skew_ms: int = 0                 # server clock offset: timestamps drift → -1021
    margin_next: int = 0             # the next N opening orders get -2019
    reduce_only_next: int = 0        # the next N reduce-only orders get -2022
    listen_key_ttl_s: float = LISTEN_KEY_TTL_S  # shorter = early listenKey expiry
    retry_after: int = 0             # 1: 429 / 418 answers carry Retry-After (USD-M does not promise it)
    market_silent: int = 0           # 1: market streams stay open but carry nothing (a withheld route)
    stop_reject_next: int = 0        # the next N algo stops that trigger fail: ALGO_UPDATE REJECTED with `rm`
    stop_expire_next: int = 0        # ... ALGO_UPDATE EXPIRED with `rm`
    http_408_next: int = 0           # the next N order placements are executed, then answered 408 (-1007)
    key_withdrawals: int = 0         # 1: apiRestrictions reports the key with withdrawals enabled
    key_no_futures: int = 0          # 1: apiRestrictions reports the key without futures trading

    def update(self, values: Mapping[str, Any]) -> None:
        kinds = {f.name: f.type for f in fields(self)}
        for k, v in values.items():
            if k not in kinds:
                raise ValueError(f"unknown fault {k!r}; known: {', '.join(kinds)}")
            setattr(self, k, _coerce_fault(kinds[k], v))

    @classmethod
    def of(cls, spec: Faults | Mapping[str, Any] | str | None) -> Faults:
        """The faults an exchange starts with: the object given, or the defaults updated from a
        mapping or a `k=v,...` spec."""
        if isinstance(spec, Faults):
            return spec
        faults = cls()
        if isinstance(spec, str):
            faults.update(parse_faults(spec))
        elif isinstance(spec, Mapping):
            faults.update(spec)
        return faults

    def take_stop_trigger(self) -> tuple[str, str] | None:
        """The stop_reject_next / stop_expire_next faults, taken as a stop triggers (the
        simulator's `trigger_fault` hook): (status, reason), or None."""
        if self.stop_reject_next > 0:
            self.stop_reject_next -= 1
            return OrderStatus.REJECTED, "Reduce Only reject"
        if self.stop_expire_next > 0:
            self.stop_expire_next -= 1
            return OrderStatus.EXPIRED, "Order would immediately trigger"
        return None


def _coerce_fault(kind: Any, v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        v = 1 if v.strip().lower() == "true" else 0
    return int(float(v)) if kind in (int, "int") else float(v)


PLAN_ACTIONS = ("ban_s", "expire_listen_keys", "ws_drop")   # one-off actions a plan entry may hold


@dataclass
class PlannedFault:
    """Faults set, or actions taken, when the clock reaches candle `at_minute` (simulated time:
    the same market instant on any machine, however slow the client or the host)."""

    at_minute: int
    faults: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, float] = field(default_factory=dict)


def parse_plan_entry(entry: Mapping[str, Any]) -> PlannedFault:
    """{"at_minute": 48, "http_429_next": 6} or {"at_minute": 72, "ban_s": 3}: checked now."""
    if "at_minute" not in entry:
        raise ValueError(f"fault plan entry {dict(entry)!r} has no at_minute")
    at = int(float(entry["at_minute"]))
    if at < 0:
        raise ValueError(f"fault plan entry at_minute {at} is negative")
    faults = {k: v for k, v in entry.items() if k != "at_minute" and k not in PLAN_ACTIONS}
    Faults().update(faults)
    actions = {k: float(v) for k, v in entry.items() if k in PLAN_ACTIONS}
    return PlannedFault(at, faults, actions)


def load_fault_plan(path: str | Path) -> list[PlannedFault]:
    """A JSON list of plan entries (local_exchange.py --fault-plan FILE)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"fault plan {path}: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"fault plan {path}: a JSON list of entries is expected")
    return sorted((parse_plan_entry(e) for e in data), key=lambda p: p.at_minute)


def parse_faults(spec: str) -> dict[str, str]:
    """`ws_drop_every=30,http_5xx_rate=0.05,delay_ms=50` → {name: value}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault {part!r} is not NAME=VALUE")
        out[name.strip()] = value.strip()
    Faults().update(out)  # validate names and values now, not at first use
    return out


# ---------------------------------------------------------------------------- rate limits


class Window:
    """Sum of weights over a rolling window of `span` seconds."""

    __slots__ = ("span", "q", "total", "peak")

    def __init__(self, span: float):
        self.span = span
        self.q: deque[tuple[float, int]] = deque()
        self.total = 0
        self.peak = 0

    def used(self, now: float) -> int:
        q = self.q
        while q and q[0][0] <= now - self.span:
            self.total -= q.popleft()[1]
        return self.total

    def add(self, now: float, w: int) -> None:
        if w:
            self.q.append((now, w))
            self.total += w
            self.peak = max(self.peak, self.total)

    def retry_after(self, now: float, need: int, limit: int) -> int:
        """Whole seconds until `need` more fits under `limit`."""
        excess = self.used(now) + need - limit
        for t, w in self.q:
            excess -= w
            if excess <= 0:
                return max(1, math.ceil(t + self.span - now))
        return max(1, math.ceil(self.span))


@dataclass
class IpState:
    weight: Window
    strikes: int = 0        # 429s answered since the client was last under the limit
    bans: int = 0
    ban_until: float = 0.0  # monotonic
    retry_until: float = 0.0  # monotonic: the end of the last 429's Retry-After
    fault_429s: int = 0     # injected 429s in a row (the client doubles its wait from 1 s)


class Reply(Exception):
    """A complete HTTP answer decided before the handler runs (429, 418, 503)."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None):
        self.status, self.code, self.msg, self.headers = status, code, msg, headers or {}


# ---------------------------------------------------------------------------- market data


class Series:
    """One symbol's candles (as Python lists: the engine reads them one by one) and the replay cursor."""

    def __init__(self, symbol: str, candles: Candles, extend: Callable[["Series"], Candles] | None = None,
                 tick: float = 0.1):
        self.symbol = symbol
        self.tick = tick
        self.ticks: list[tuple[int, int, int, int]] = []   # (o, h, l, c) in integer ticks: what is played
        self.t: list[int] = []
        self.o: list[float] = []
        self.h: list[float] = []
        self.l: list[float] = []
        self.c: list[float] = []
        self.v: list[float] = []
        self._extend = extend
        self.cursor = 0          # index of the next candle to play; candles before it are closed
        self._append(candles)

    def _append(self, c: Candles) -> None:
        self.t += c.open_time.tolist()
        self.o += c.open.tolist()
        self.h += c.high.tolist()
        self.l += c.low.tolist()
        self.c += c.close.tolist()
        self.v += c.volume.tolist()
        self.ticks += list(zip(*(a.tolist() for a in candle_ticks(c.open, c.high, c.low, c.close, self.tick))))

    def has_next(self) -> bool:
        if self.cursor >= len(self.t) and self._extend is not None:
            self._append(self._extend(self))
        return self.cursor < len(self.t)

    def candles(self, n: int) -> Candles:
        """The first `n` candles (those held), as the backtest reads them."""
        return Candles.from_arrays(self.t[:n], self.o[:n], self.h[:n], self.l[:n], self.c[:n], self.v[:n])


@dataclass
class Live:
    """The candle being played: its running OHLC."""

    t: int
    o: float
    h: float
    l: float
    c: float
    v: float
    legs: int = 0

    def touch(self, p: float) -> None:
        self.c = p
        if p > self.h:
            self.h = p
        if p < self.l:
            self.l = p


def synthetic_series(symbol: str, seed: int, tick: float, correlation: float | None = None) -> Series:
    """A symbol of the seeded synthetic market.  `correlation` None: its own path (alone, or
    independent of the others); a value: one symbol of a correlated market, its shocks
    sharing that part of the market's (market.data.synthetic_klines), the market drawn from
    `seed` alone so every symbol of the exchange sees the same one."""
    base = SYNTHETIC_START.get(symbol, 100.0)
    sym_seed = seed + SYNTHETIC_SEED_OFFSET.get(symbol, 2 + sum(map(ord, symbol)))
    chunks = [0]

    def chunk_seed(base_seed: int, k: int) -> int:
        # Later chunks continue from the last close with their own derived seed: deterministic.
        return base_seed if k == 0 else (base_seed * 1_000_003 + k) % 2**63

    def candles(k: int, start_price: float, start_time_ms: int) -> Candles:
        market = None if correlation is None else chunk_seed((seed ^ SYNTHETIC_MARKET_SALT) % 2**63, k)
        return synthetic_klines(SYNTHETIC_CHUNK, chunk_seed(sym_seed, k), start_price=start_price,
                                start_time_ms=start_time_ms, tick=tick, market_seed=market,
                                correlation=correlation or 0.0)

    def extend(s: Series) -> Candles:
        chunks[0] += 1
        return candles(chunks[0], s.c[-1], s.t[-1] + MINUTE_MS)

    return Series(symbol, candles(0, base, SYNTHETIC_START_MS), extend, tick)


def assign_data_files(symbols: Sequence[str], data: Sequence[str | Path] | Mapping[str, Sequence[str | Path]]
                      ) -> dict[str, list[Path]]:
    """Which CSVs each symbol replays: files named after a symbol go to it; the others to the first symbol without any."""
    if isinstance(data, Mapping):
        return {s: [Path(p) for p in v] for s, v in data.items()}
    out: dict[str, list[Path]] = {s: [] for s in symbols}
    loose: list[Path] = []
    for p in map(Path, data):
        match = next((s for s in symbols if s in p.name.upper()), None)
        (out[match] if match else loose).append(p)
    if loose:
        target = next((s for s in symbols if not out[s]), None)
        if target is None:
            raise ValueError(f"{loose[0]}: every symbol already has data; put the symbol in the file name")
        out[target] = loose
    return {s: v for s, v in out.items() if v}


# ---------------------------------------------------------------------------- Binance JSON


def limit_param(p: Mapping[str, str], default: int, cap: int) -> int:
    try:
        n = int(p.get("limit") or default)
    except ValueError:
        raise Reply(400, BinanceError.ILLEGAL_CHARS, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.") from None
    return max(1, min(n, cap))


def opt_int(p: Mapping[str, str], name: str) -> int | None:
    v = p.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise Reply(400, BinanceError.ILLEGAL_CHARS, f"Illegal characters found in parameter '{name}'; legal range is "
                     "'^[0-9]{1,20}$'.") from None


# ---------------------------------------------------------------------------- connections


@dataclass(eq=False)
class Conn:
    """One WebSocket client; messages go through a queue so the engine never waits on a socket."""

    ws: web.WebSocketResponse
    transport: Any
    category: str                      # market / public / private
    combined: bool = False
    streams: set[str] = field(default_factory=set)
    listen_key: str | None = None
    events: frozenset[str] | None = None
    keys: set[str] = field(default_factory=set)   # /private/stream: the listenKeys subscribed
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    counter: Counter[str] = field(default_factory=Counter)   # shared: messages sent by all connections
    queued: int = 0                    # messages accepted for this connection (lockstep compares it)

    def send(self, text: str) -> None:
        if self.queue.qsize() >= MAX_WS_BACKLOG:
            self.abort()
            return
        self.queue.put_nowait(text)
        self.queued += 1

    async def pump(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                await self.ws.send_str(text)
                self.counter["sent"] += 1
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the client sees 1006)."""
        if self.transport is not None:
            self.transport.abort()


def norm_stream(name: str) -> str:
    """Stream names are case-sensitive except the symbol, which Binance lower-cases."""
    head, sep, tail = name.partition("@")
    if head.startswith("!"):
        return name             # an all-market stream (!markPrice@arr, !miniTicker@arr): no symbol
    return head.lower() + sep + tail


def stream_category(name: str) -> str:
    return "public" if "bookTicker" in name or "@depth" in name else "market"


@dataclass
class Route:
    method: str
    path: str
    handler: Callable[[dict[str, str]], Any]
    security: str = "NONE"                                # NONE, KEY (api key only), SIGNED
    weight: int | Callable[[dict[str, str]], int] = 1
    orders: tuple[int, int] | None = None                 # (10 s, 1 min) order-count cost
    placement: bool = False                               # subject to the unknown-status 503 fault


# ---------------------------------------------------------------------------- shared state of the parts


class ListenKeys:
    """The user-data listenKeys handed out, each with its expiry (monotonic seconds): created and
    kept alive by the listenKey endpoints, checked and expired by the streams."""

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}

    def valid(self, key: str, now: float) -> bool:
        return self.expiry.get(key, 0.0) > now

    def active(self, now: float) -> str | None:
        """The first key still valid (POST listenKey hands it out again)."""
        return next((k for k, exp in self.expiry.items() if exp > now), None)

    def extend(self, key: str, until: float) -> None:
        self.expiry[key] = until

    def drop(self, key: str) -> None:
        self.expiry.pop(key, None)

    def expired(self, now: float) -> list[str]:
        return [k for k, exp in self.expiry.items() if exp <= now]


@dataclass
class RequestActivity:
    """REST requests in flight, how many arrived, and when the last one began or ended: what
    the lockstep clock watches to tell whether a client is still reacting (the gateway writes it)."""

    inflight: int = 0
    seq: int = 0
    last: float = 0.0      # monotonic

    def begin(self) -> None:
        self.inflight += 1
        self.seq += 1
        self.last = time.monotonic()

    def end(self) -> None:
        self.inflight -= 1
        self.last = time.monotonic()

    def touch(self) -> None:
        """A fill counts as activity: the client has something to react to."""
        self.last = max(self.last, time.monotonic())


def split_signature(s: str) -> tuple[str, str | None]:
    """(the signed payload, the signature) of a raw query string or body."""
    i = s.rfind("signature=")
    if i < 0 or (i > 0 and s[i - 1] != "&"):
        return s, None
    j = s.find("&", i)
    sig = s[i + 10: j if j >= 0 else len(s)]
    head = s[: max(0, i - 1)] if i > 0 else ""
    tail = s[j:] if j >= 0 else ""
    return head + tail, sig

