"""1-minute kline data: a validated columnar container, a fast Binance CSV
loader, a chaining helper for long benchmark series and a seeded synthetic
market generator.

Binance kline CSVs come in several shapes (header or not, 12 or 6 columns,
open_time in ms or, for spot dumps since 2025, in µs).  ``load_klines``
accepts all of them and normalises to ms; anything else is a ``DataError``
with a one-line message naming the file (and line, where known).
"""

from __future__ import annotations

import sys
import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np
from errors import BadInput

__all__ = [
    "Candles",
    "DataError",
    "load_klines",
    "chain_candles",
    "synthetic_klines",
    "write_klines_csv",
    "find_invalid_row",
]

MINUTE_MS = 60_000
COLUMNS = ("open_time", "open", "high", "low", "close", "volume")
HEADER_12 = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
HEADER_6 = ",".join(COLUMNS)
SUPPORTED_COLUMN_COUNTS = (6, 12)
# Binance spot dumps switched to µs in 2025; no ms timestamp reaches 1e14
# (year 5138), so magnitude alone tells the units apart.
MICROSECOND_THRESHOLD = 1e14

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------


def _freeze(a: np.ndarray) -> np.ndarray:
    # Validated invariants must not be broken later by in-place edits.
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Candles:
    """Columnar 1-minute candles; open_time is int64 ms UTC, the rest float64.

    Build through ``from_arrays`` (copies and validates) or the loaders.
    ``__post_init__`` only does O(1) shape/dtype checks so that ``slice`` stays
    cheap inside backtest loops; the O(n) invariant check lives in
    ``find_invalid_row``.
    """

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.open_time)
        for name in COLUMNS:
            a = getattr(self, name)
            want = np.int64 if name == "open_time" else np.float64
            if not isinstance(a, np.ndarray) or a.dtype != want or a.ndim != 1:
                raise TypeError(
                    f"Candles.{name} must be a 1-D {np.dtype(want)} array; "
                    "use Candles.from_arrays to convert"
                )
            if len(a) != n:
                raise ValueError(f"Candles.{name} has length {len(a)}, open_time has {n}")

    @classmethod
    def from_arrays(
        cls,
        open_time: object,
        open: object,
        high: object,
        low: object,
        close: object,
        volume: object,
    ) -> Candles:
        """Copy the inputs into read-only arrays and validate every row."""
        t = np.array(open_time, dtype=np.int64)
        cols = [np.array(x, dtype=np.float64) for x in (open, high, low, close, volume)]
        lengths = {len(t), *(len(c) for c in cols)}
        if len(lengths) != 1:
            raise ValueError(f"Candles columns differ in length: {sorted(lengths)}")
        o, h, lo, c, v = cols
        bad = find_invalid_row(t, o, h, lo, c, v, check_order=True)
        if bad is not None:
            row, what = bad
            raise ValueError(f"invalid candle at row {row}: {what}")
        return cls(_freeze(t), *(_freeze(c) for c in cols))

    def __len__(self) -> int:
        return len(self.open_time)

    def slice(self, start: int | None, stop: int | None) -> Candles:
        """Rows [start, stop) as views; no copy, no re-validation."""
        s = slice(start, stop)
        return Candles(
            self.open_time[s], self.open[s], self.high[s],
            self.low[s], self.close[s], self.volume[s],
        )

    def time_iso(self, i: int) -> str:
        """open_time of row i as ISO-8601 UTC, e.g. 2024-04-01T00:00:00Z."""
        ms = int(self.open_time[i])
        text = (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S")
        if ms % 1000:
            text += f".{ms % 1000:03d}"
        return text + "Z"


def find_invalid_row(
    open_time: np.ndarray,
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    check_order: bool = True,
) -> tuple[int, str] | None:
    """First row breaking a candle invariant, as (row index, reason), or None.

    Vectorised: one pass of numpy comparisons per rule, then the earliest
    offending row wins (ties go to the rule listed first).
    """
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(open) & np.isfinite(high) & np.isfinite(low) & np.isfinite(close)
        rules: list[tuple[np.ndarray, str]] = [
            (~finite, "non-finite price"),
            (finite & ~((open > 0) & (high > 0) & (low > 0) & (close > 0)), "price <= 0"),
            (high < low, "high {h} < low {l}"),
            (high < np.maximum(open, close), "high {h} < max(open {o}, close {c})"),
            (low > np.minimum(open, close), "low {l} > min(open {o}, close {c})"),
            (~(volume >= 0) | ~np.isfinite(volume), "volume {v} is negative or not finite"),
        ]
        if check_order and len(open_time) > 1:
            unordered = np.zeros(len(open_time), dtype=bool)
            unordered[1:] = open_time[1:] <= open_time[:-1]
            rules.append((unordered, "open_time {t} not after the previous row's"))
    best: tuple[int, str] | None = None
    for mask, template in rules:
        hits = np.flatnonzero(mask)
        if len(hits) and (best is None or hits[0] < best[0]):
            i = int(hits[0])
            best = (i, template.format(
                t=int(open_time[i]), o=float(open[i]), h=float(high[i]),
                l=float(low[i]), c=float(close[i]), v=float(volume[i]),
            ))
    return best


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


class DataError(BadInput):
    """A kline file is missing or malformed; the message is a single line."""

    def __init__(self, path: str | Path, what: str, line: int | None = None) -> None:
        where = f"{path}: line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {' '.join(what.split())}")
        self.path = str(path)
        self.line = line


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff(path: Path) -> tuple[bool, int]:
    """(has_header, column_count) from the first line(s), or DataError."""
    if not path.is_file():
        raise DataError(path, "missing file" if not path.exists() else "not a regular file")
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise DataError(path, "is a zip archive; unzip it and pass the .csv")
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = f.readline()
            if not first.strip():
                raise DataError(path, "empty file" if not f.read().strip() else "first line is blank")
            has_header = not _is_number(first.split(",")[0].strip())
            lineno, data_line = _next_nonblank(f, 2) if has_header else (1, first)
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text CSV") from None
    if data_line is None:
        raise DataError(path, "empty file: header but no data rows")
    ncols = len(data_line.split(","))
    if ncols not in SUPPORTED_COLUMN_COUNTS:
        what = f"expected 6 or 12 comma-separated columns, got {ncols}"
        raise DataError(path, what, line=lineno)
    return has_header, ncols


def _next_nonblank(lines: TextIO, start: int) -> tuple[int, str | None]:
    """(line number, text) of the next non-blank line, numbering from start."""
    for lineno, line in enumerate(lines, start=start):
        if line.strip():
            return lineno, line
    return start, None


def _scan_for_parse_error(path: Path, has_header: bool) -> tuple[int, str] | None:
    """Slow line-by-line re-read, only after numpy failed, to name the line."""
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if has_header and lineno == 1:
                continue
            text = line.rstrip("\r\n")
            if not text:  # numpy skips truly empty lines too
                continue
            fields = text.split(",")
            if len(fields) < len(COLUMNS):
                return lineno, f"expected at least 6 columns, got {len(fields)}"
            for name, field in zip(COLUMNS, fields):
                if not _is_number(field):
                    return lineno, f"non-numeric {name} value {field.strip()[:40]!r}"
    return None


def _line_of_row(path: Path, has_header: bool, row: int) -> int | None:
    """1-based file line of data row `row`, counting lines as numpy does."""
    seen = -1
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if (has_header and lineno == 1) or not line.rstrip("\r\n"):
                continue
            seen += 1
            if seen == row:
                return lineno
    return None


def _to_ms(path: Path, has_header: bool, raw_time: np.ndarray, first_row: int = 0) -> np.ndarray:
    """float open_time column -> int64 ms, converting µs rows by magnitude (`first_row`: the
    file's row of raw_time[0], for the error's line)."""
    whole = np.isfinite(raw_time) & (raw_time == np.floor(raw_time)) & (raw_time > 0)
    if not whole.all():
        row = int(np.flatnonzero(~whole)[0])
        what = f"open_time {float(raw_time[row])!r} is not a positive integer"
        raise _row_error(path, has_header, first_row + row, what)
    t = raw_time.astype(np.int64)  # exact: values < 2**53
    return np.where(raw_time > MICROSECOND_THRESHOLD, t // 1000, t)


def _row_error(path: Path, has_header: bool, row: int, what: str) -> DataError:
    return DataError(path, what, line=_line_of_row(path, has_header, row))


CHECK_CHUNK = 8 << 20      # bytes of the file examined at a time (the check's memory stays this small)


def _check_column_counts(path: Path, has_header: bool, ncols: int) -> int:
    """Every non-blank row has the first row's column count and no empty last field: a file
    cut inside its last line (11 of 12 columns, or "…,") is refused, never half-used.
    Vectorised over the bytes (commas counted per line with numpy), a chunk of whole lines
    at a time: a four-year file is never held in memory as text.  Returns the number of
    data rows (non-blank lines, the header aside)."""
    lines_before = 0
    rows = 0
    carry = b""
    with path.open("rb") as f:
        while True:
            block = f.read(CHECK_CHUNK)
            data = carry + block
            if block:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                part, carry = data[:cut + 1], data[cut + 1:]
            else:
                part, carry = data, b""
            n_lines, n_rows = _check_lines(path, part, ncols, lines_before, has_header and lines_before == 0,
                                           at_end=not block)
            lines_before += n_lines
            rows += n_rows
            if not block:
                return rows - int(has_header)


def _check_lines(path: Path, part: bytes, ncols: int, lines_before: int, skip_first: bool,
                 at_end: bool) -> tuple[int, int]:
    """The column check over whole lines `part` (the file's lines from `lines_before` + 1);
    returns (lines, non-blank lines) it held."""
    buf = np.frombuffer(part, np.uint8)
    if not len(buf):
        return 0, 0
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if buf[-1] == 10 else np.append(newlines, len(buf))
    starts = np.concatenate(([0], newlines + 1))[:len(ends)]
    ends = ends - (buf[np.maximum(ends - 1, 0)] == 13) * (ends > starts)      # CRLF files
    commas = np.flatnonzero(buf == 44)
    per_line = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    blank = ends <= starts
    empty_last = ~blank & (buf[np.maximum(ends - 1, 0)] == 44)
    bad = ~blank & ((per_line != ncols - 1) | empty_last)
    if skip_first:
        bad[0] = False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        found = int(per_line[i]) + 1
        what = (f"expected {ncols} columns, got {found}" if found != ncols else "the last column is empty")
        tail = " (the last line: the file is truncated)" if at_end and i == len(ends) - 1 else ""
        raise DataError(path, what + tail, line=lines_before + i + 1)
    return len(ends), int((~blank).sum())


LOAD_ROWS = 1 << 17     # rows parsed at a time into the preallocated columns


def _count_rows(path: Path) -> tuple[bool, int]:
    """(has a header, data rows) of one file, its columns checked."""
    has_header, ncols = _sniff(path)
    try:
        return has_header, _check_column_counts(path, has_header, ncols)
    except DataError as e:
        # A bad cell on an earlier (or the same) line is the first thing wrong: name that.
        found = _scan_for_parse_error(path, has_header)
        if found is not None and (e.line is None or found[0] <= e.line):
            raise DataError(path, found[1], line=found[0]) from None
        raise


def _parse_into(path: Path, has_header: bool, t: np.ndarray, cols: np.ndarray) -> None:
    """Parse one validated file a block of rows at a time straight into `t` (int64 ms) and
    `cols` (5×rows float64 o/h/l/c/v), each block's candles checked as it lands: the peak
    is the columns themselves (48 bytes a candle), not a text copy, a second table or
    file-sized masks."""
    rows, k = len(t), 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if has_header:
                f.readline()
            while k < rows:
                block = np.loadtxt(itertools.islice(f, LOAD_ROWS), delimiter=",", usecols=range(len(COLUMNS)),
                                   ndmin=2, dtype=np.float64, comments=None)
                if not len(block):
                    continue            # a slice of blank lines only
                m = len(block)
                t[k:k + m] = _to_ms(path, has_header, block[:, 0], k)
                cols[:, k:k + m] = block[:, 1:].T
                o, h, lo, c, v = cols[:, k:k + m]
                bad = find_invalid_row(t[k:k + m], o, h, lo, c, v, check_order=False)
                if bad is not None:
                    raise _row_error(path, has_header, k + bad[0], bad[1])
                k += m
    except ValueError as exc:
        found = _scan_for_parse_error(path, has_header)
        if found is None:
            raise DataError(path, str(exc).splitlines()[0]) from None
        raise DataError(path, found[1], line=found[0]) from None


def load_klines(paths: Sequence[str | Path]) -> Candles:
    """Load and join Binance kline CSVs into one time-ordered Candles.

    Rows are sorted by open_time; on a duplicate open_time the row from the
    earlier argument (then the earlier line) wins.  Gaps are kept as gaps.
    """
    if isinstance(paths, (str, Path)):  # a bare path would iterate per char
        paths = [paths]
    if not paths:
        raise ValueError("load_klines: no files given")
    # Every file's rows are counted (and its columns checked) first, then each is parsed into
    # its slice of one table: months joined into years cost no concatenated copy.
    counted = [(Path(p), *_count_rows(Path(p))) for p in paths]
    total = sum(rows for _, _, rows in counted)
    t = np.empty(total, dtype=np.int64)
    cols = np.empty((len(COLUMNS) - 1, total), dtype=np.float64)
    k = 0
    for path, has_header, rows in counted:
        _parse_into(path, has_header, t[k:k + rows], cols[:, k:k + rows])
        k += rows
    if len(t) > 1 and not np.all(t[1:] > t[:-1]):
        idx = _sorted_unique_index(t)
        t, cols = t[idx], cols[:, idx]
    return Candles(_freeze(t), *(_freeze(np.ascontiguousarray(c)) for c in cols))


def _sorted_unique_index(t: np.ndarray) -> np.ndarray:
    # Stable sort keeps input order among equal times, so "first" survives.
    order = np.argsort(t, kind="stable")
    ts = t[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    return order[keep]


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def write_klines_csv(
    candles: Candles,
    path: str | Path,
    columns: int = 12,
    header: bool = True,
    time_unit: str = "ms",
) -> None:
    """Write candles in Binance's kline CSV layout (12 or 6 columns).

    Floats use repr so a write/load round trip is exact.  time_unit="us"
    mimics the 2025+ spot dumps.
    """
    if columns not in SUPPORTED_COLUMN_COUNTS:
        raise ValueError(f"columns must be 6 or 12, got {columns}")
    if time_unit not in ("ms", "us"):
        raise ValueError(f"time_unit must be 'ms' or 'us', got {time_unit!r}")
    scale = 1000 if time_unit == "us" else 1
    rows = zip(
        candles.open_time.tolist(), candles.open.tolist(), candles.high.tolist(),
        candles.low.tolist(), candles.close.tolist(), candles.volume.tolist(),
    )
    with Path(path).open("w", encoding="utf-8", newline="\n") as f:
        if header:
            f.write((HEADER_12 if columns == 12 else HEADER_6) + "\n")
        for t, o, h, l, c, v in rows:
            line = f"{t * scale},{o!r},{h!r},{l!r},{c!r},{v!r}"
            if columns == 12:
                line += _extra_columns(t, scale, (h + l + c) / 3.0, v)
            f.write(line + "\n")


def _extra_columns(t: int, scale: int, typical: float, v: float) -> str:
    # Plausible filler for the columns the loader ignores.
    close_time = (t + MINUTE_MS) * scale - 1
    quote = round(v * typical, 4)
    return f",{close_time},{quote!r},{max(1, int(v))},{v / 2!r},{quote / 2!r},0"


# --------------------------------------------------------------------------
# Chaining
# --------------------------------------------------------------------------


def chain_candles(parts: Sequence[Candles]) -> Candles:
    """Join series end to end into one continuous-looking series.

    Each later part is rescaled so its first open equals the previous last
    close, and time-shifted to start one minute after the previous last
    candle (internal gaps of a part are kept).  Volumes are left as is.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("chain_candles: no non-empty parts")
    times, prices, volumes = [], [], []
    last_close, next_time = None, None
    for p in parts:
        scale = 1.0 if last_close is None else last_close / float(p.open[0])
        shift = 0 if next_time is None else next_time - int(p.open_time[0])
        ohlc = np.stack([p.open, p.high, p.low, p.close]) * scale
        times.append(p.open_time + shift)
        prices.append(ohlc)
        volumes.append(p.volume)
        last_close = float(ohlc[3, -1])
        next_time = int(times[-1][-1]) + MINUTE_MS
    o, h, l, c = np.concatenate(prices, axis=1)
    return Candles.from_arrays(np.concatenate(times), o, h, l, c, np.concatenate(volumes))


# --------------------------------------------------------------------------
# Synthetic market
# --------------------------------------------------------------------------

# GARCH(1,1) on 1-minute log returns.  alpha+beta = 0.99 gives vol clusters
# with a half-life of ~70 minutes; alpha = 0.1 makes |r| lag-1 autocorrelation
# ~0.15-0.2 (real 1m crypto: 0.2-0.35, see /work/shared/data).
SIGMA_BAR = 0.0007          # long-run per-minute diffusion vol (0.07 %)
GARCH_ALPHA = 0.10
GARCH_BETA = 0.89
# Jumps: Poisson arrivals, log-uniform size in [0.5 %, 3 %], random sign.
JUMPS_PER_DAY = 3.0
JUMP_MIN, JUMP_MAX = 0.005, 0.03
# A jump also feeds next-minute variance (markets stay nervous after a gap).
JUMP_FEEDBACK = 0.005
_JUMP_E2 = (JUMP_MAX**2 - JUMP_MIN**2) / (2 * math.log(JUMP_MAX / JUMP_MIN))
_JUMP_RATE = JUMPS_PER_DAY / 1440
# omega chosen so the unconditional diffusion variance stays SIGMA_BAR**2.
GARCH_OMEGA = (
    SIGMA_BAR**2 * (1 - GARCH_ALPHA - GARCH_BETA) - JUMP_FEEDBACK * _JUMP_RATE * _JUMP_E2
)
assert GARCH_OMEGA > 0
WICK_MEAN = 0.5             # mean wick beyond max/min(open, close), in units of sigma
# Several symbols of one synthetic market (the demo's account): the share of each minute's
# diffusion shock that is the market's (0.8, about BTC/ETH's).  With the jumps shared too,
# two symbols' 1-minute and hourly returns correlate at 0.75-0.84 over 30 days (seeds 1-3).
SYNTHETIC_CORRELATION = 0.8
_RECURRENCE_BLOCK = 1024


def _linear_recurrence(a: np.ndarray, b: np.ndarray, x0: float) -> np.ndarray:
    """x[t] = a[t] * x[t-1] + b[t] with x[-1] = x0, vectorised.

    Closed form x[t] = G[t] * (x0 + sum_{k<=t} b[k] / G[k]) with G the running
    product of a.  G drifts geometrically, so it is computed per block (2-D,
    all blocks at once) and only the block carries run in a short Python loop.
    """
    n = len(a)
    if n == 0:
        return np.empty(0)
    nb = -(-n // _RECURRENCE_BLOCK)
    pad = nb * _RECURRENCE_BLOCK - n
    A = np.concatenate([a, np.ones(pad)]).reshape(nb, -1)
    B = np.concatenate([b, np.zeros(pad)]).reshape(nb, -1)
    log_g = np.cumsum(np.log(A), axis=1)
    g = np.exp(log_g)
    s = np.cumsum(B * np.exp(-log_g), axis=1)
    carry = np.empty(nb)
    c = x0
    for k in range(nb):
        carry[k] = c
        c = g[k, -1] * (c + s[k, -1])
    return (g * (carry[:, None] + s)).ravel()[:n]


def _jump_returns(rng: np.random.Generator, n: int) -> np.ndarray:
    counts = rng.poisson(_JUMP_RATE, n)
    k = int(counts.sum())
    sizes = np.exp(rng.uniform(math.log(JUMP_MIN), math.log(JUMP_MAX), k))
    signs = rng.choice(np.array([-1.0, 1.0]), k)
    where = np.repeat(np.arange(n), counts)
    return np.bincount(where, weights=sizes * signs, minlength=n).astype(np.float64)


def _garch_variance(z: np.ndarray, jumps: np.ndarray) -> np.ndarray:
    var0 = SIGMA_BAR**2
    a = GARCH_ALPHA * z[:-1] ** 2 + GARCH_BETA
    b = GARCH_OMEGA + JUMP_FEEDBACK * jumps[:-1] ** 2
    return np.concatenate([[var0], _linear_recurrence(a, b, var0)])[: len(z)]


def _round_to_tick(x: np.ndarray, tick: float) -> np.ndarray:
    # Second rounding snaps k*tick to the nearest double of the decimal value
    # (30000.1, not 30000.100000000002).  Both steps are monotone, so OHLC
    # ordering survives; the floor at one tick keeps prices > 0.
    decimals = max(0, -int(Decimal(repr(tick)).normalize().as_tuple().exponent))
    snapped = np.round(np.rint(x / tick) * tick, decimals)
    return np.maximum(snapped, round(tick, decimals))


def synthetic_klines(
    n: int,
    seed: int,
    start_price: float = 30000.0,
    start_time_ms: int = 1_700_000_000_000,
    tick: float = 0.1,
    *,
    market_seed: int | None = None,
    correlation: float = SYNTHETIC_CORRELATION,
) -> Candles:
    """Seeded, deterministic 1-minute market: GARCH vol clusters + jumps.

    With `market_seed`, one symbol of a correlated market: its diffusion shocks are
    `correlation` × the market's (drawn from `market_seed`, the same for every symbol)
    + sqrt(1 − correlation²) × its own (from `seed`), still standard normal, and its jumps
    are the market's, so every symbol gaps at the same minutes in the same direction.
    Each symbol keeps its own volatility clusters (GARCH on its own shocks), wicks and
    volume."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (start_price > 0 and tick > 0 and math.isfinite(start_price)):
        raise ValueError("start_price and tick must be positive")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n)
    jumps = _jump_returns(rng, n)
    if market_seed is not None:
        market = np.random.default_rng(market_seed)
        z = correlation * market.standard_normal(n) + math.sqrt(1.0 - correlation**2) * z
        jumps = _jump_returns(market, n)
    sigma = np.sqrt(_garch_variance(z, jumps))
    r = sigma * z + jumps
    close = start_price * np.exp(np.cumsum(r))
    open_ = np.concatenate([[start_price], close[:-1]])[:n]
    high = np.maximum(open_, close) * np.exp(rng.exponential(WICK_MEAN, n) * sigma)
    low = np.minimum(open_, close) * np.exp(-rng.exponential(WICK_MEAN, n) * sigma)
    # Volume rises with the size of the move; ~$1M notional per quiet minute.
    volume = (1e6 / start_price) * (0.3 + np.abs(r) / SIGMA_BAR) * rng.lognormal(0.0, 0.5, n)
    times = start_time_ms + MINUTE_MS * np.arange(n, dtype=np.int64)
    o, h, lo, c = (_round_to_tick(p, tick) for p in (open_, high, low, close))
    return Candles.from_arrays(times, o, h, lo, c, volume)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m market.data synthetic --days 30 --seed 7 --out FILE`: write a synthetic market."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m market.data", description="Kline data tools.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synthetic", help="write a seeded synthetic 1-minute market as a Binance kline CSV")
    s.add_argument("--days", type=float, default=30.0)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--start-price", type=float, default=30000.0)
    s.add_argument("--tick", type=float, default=0.1)
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    n = int(args.days * 1440)
    if n < 1:
        print("market.data: error: --days must give at least one candle", file=sys.stderr)
        return 2
    candles = synthetic_klines(n, seed=args.seed, start_price=args.start_price, tick=args.tick)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_klines_csv(candles, args.out)
    print(f"wrote {n:,} candles to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
