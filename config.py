"""Strategy parameters: parsing and validation of config_<sym>.txt (SPEC §1).

The file format is ``KEY=VALUE`` per line with ``#`` comments (full-line or
inline).  Every problem is reported as a single-line :class:`ConfigError`
naming the file, the line and the key, because the daemon logs it verbatim at
start-up and on live reloads (where the last good config stays in force).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from paths import ROOT
from errors import BadInput

__all__ = ["ConfigError", "GridConfig", "parse_config", "load_config", "config_path_for", "format_config", "key_kind",
           "field_of"]

MAX_LEVERAGE = 125  # Binance's ceiling for USDⓈ/USDC-margined perpetuals
MAX_LEVELS = 20  # guards against typos such as 40 instead of 4
MAX_FEE = 0.01  # a 1 % commission is certainly a typo (e.g. 0.04 meant as 0.04 %)
SUM_SLACK = 1e-9  # 0.1 + 0.2 + 0.3 + 0.4 must count as 1.0

# File key -> (GridConfig field, kind).  Order is the canonical reporting order.
_KEYS: dict[str, tuple[str, str]] = {
    "INITIAL_CAPITAL": ("initial_capital", "float"),
    "CAPITAL_RATIO": ("capital_ratio", "float"),
    "LEVERAGE_LONG": ("leverage_long", "int"),
    "LEVERAGE_SHORT": ("leverage_short", "int"),
    "TRADE_DIRECTION": ("trade_direction", "direction"),
    "GRID_RANGE_PCT": ("grid_range_pct", "float"),
    "MAX_ENTRY_LEVEL": ("max_entry_level", "int"),
    "ENTRY_RATIOS": ("entry_ratios", "floats"),
    "LEVEL_DISTANCES": ("level_distances", "floats"),
    "SL_DISTANCE": ("sl_distance", "float"),
    "TP_PCT": ("tp_pct", "float"),
    "BE_PCT": ("be_pct", "float"),
    "MAKER_FEE": ("maker_fee", "float"),
    "TAKER_FEE": ("taker_fee", "float"),
    "SL_WORKING_TYPE": ("sl_working_type", "working_type"),
    "AFTER_LIQUIDATION": ("after_liquidation", "after_liquidation"),
    "ACCOUNT_STOP_DRAWDOWN": ("account_stop_drawdown", "float"),
}
_FIELD_TO_KEY = {field: key for key, (field, _) in _KEYS.items()}
_DEFAULTS: dict[str, Any] = {"CAPITAL_RATIO": 0.33, "MAKER_FEE": 0.0, "TAKER_FEE": 0.0004,
                             "SL_WORKING_TYPE": "CONTRACT_PRICE", "AFTER_LIQUIDATION": "STOP",
                             "ACCOUNT_STOP_DRAWDOWN": 0.0}
_DIRECTIONS = ("LONG", "SHORT")
_CHOICES = {"working_type": ("CONTRACT_PRICE", "MARK_PRICE"), "after_liquidation": ("STOP", "CONTINUE")}
_INT_RE = re.compile(r"[+-]?\d+")


class ConfigError(BadInput):
    """A bad configuration; ``str()`` is one line: ``file[:line]: [KEY: ]rule``."""

    def __init__(self, source: str, line: int | None, key: str | None, rule: str) -> None:
        self.source = source
        self.line = line
        self.key = key
        self.rule = rule
        where = f"{source}:{line}" if line is not None else source
        text = f"{where}: {key}: {rule}" if key else f"{where}: {rule}"
        # Log lines must stay single-line even if a value smuggles in a newline.
        super().__init__(" ".join(text.split()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the error picklable (e.g. across a multiprocessing backtest).
        return (type(self), (self.source, self.line, self.key, self.rule))


@dataclass(frozen=True)
class GridConfig:
    initial_capital: float
    capital_ratio: float
    leverage_long: int
    leverage_short: int
    trade_direction: str  # "LONG" or "SHORT"
    grid_range_pct: float
    max_entry_level: int
    entry_ratios: tuple[float, ...]
    level_distances: tuple[float, ...]
    sl_distance: float
    tp_pct: float
    be_pct: float
    maker_fee: float
    taker_fee: float
    sl_working_type: str = "CONTRACT_PRICE"  # the stop's trigger price: last (Binance's default) or mark
    after_liquidation: str = "STOP"          # STOP: no new grid until a person restarts; CONTINUE
    account_stop_drawdown: float = 0.0       # close all when the account falls this share below its peak; 0 off
    source: str = ""  # path the config was read from, for messages

    @property
    def leverage(self) -> int:
        """Leverage of the configured direction."""
        return self.leverage_long if self.trade_direction == "LONG" else self.leverage_short

    @property
    def side_sign(self) -> int:
        """s in SPEC §2: +1 for LONG, -1 for SHORT."""
        return 1 if self.trade_direction == "LONG" else -1

    def with_overrides(self, **kw: Any) -> GridConfig:
        """A copy with some fields replaced (CLI overrides), validated again."""
        unknown = sorted(set(kw) - set(_FIELD_TO_KEY))
        if unknown:
            raise ConfigError(self.source or "<overrides>", None, unknown[0], "not a config field")
        if isinstance(kw.get("trade_direction"), str):
            kw["trade_direction"] = kw["trade_direction"].strip().upper()
        for name, value in kw.items():
            kind = _KEYS[_FIELD_TO_KEY[name]][1]
            if kind == "float" and type(value) is int:
                kw[name] = float(value)  # --capital 2000 means 2000.0
            elif kind == "floats" and isinstance(value, list):
                kw[name] = tuple(value)  # keep the config hashable/immutable
        new = dataclasses.replace(self, **kw)
        _validate(new, {})
        return new


# ---------------------------------------------------------------- parsing


def parse_config(text: str, source: str = "<config>") -> GridConfig:
    """Parse and validate the text of a config file."""
    raw: dict[str, tuple[int, str]] = {}  # key -> (line number, value text)
    for lineno, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if "=" not in body:
            raise ConfigError(source, lineno, None, f"expected KEY=VALUE (got {body!r})")
        key, value = (part.strip() for part in body.split("=", 1))
        if key not in _KEYS:
            hint = difflib.get_close_matches(key.upper(), list(_KEYS), n=1)
            tail = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(source, lineno, None, f"unknown key {key!r}{tail}")
        if key in raw:
            raise ConfigError(source, lineno, key, f"duplicate key (first set on line {raw[key][0]})")
        raw[key] = (lineno, value)

    missing = [k for k in _KEYS if k not in raw and k not in _DEFAULTS]
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(source, None, missing[0], f"missing required key{also}")

    values: dict[str, Any] = {"source": source}
    for key, (field, kind) in _KEYS.items():
        if key in raw:
            lineno, text_value = raw[key]
            values[field] = _convert(text_value, kind, source, lineno, key)
        else:
            values[field] = _DEFAULTS[key]
    cfg = GridConfig(**values)
    _validate(cfg, raw)
    return cfg


def load_config(path: str | Path) -> GridConfig:
    """Read and validate a config file; any failure is a one-line ConfigError."""
    source = str(path)
    try:
        # utf-8-sig: tolerate a BOM left by Windows editors.
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(source, None, None, "file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, None, f"not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(source, None, None, f"cannot read file: {exc.strerror or exc}") from None
    return parse_config(text, source)


def config_path_for(symbol_short: str) -> Path:
    """``<project root>/config_<sym>.txt`` for a short symbol like "btc"."""
    sym = symbol_short.strip().lower()
    if not sym.isalnum():
        raise ValueError(f"bad symbol name {symbol_short!r}")
    return ROOT / f"config_{sym}.txt"


def _convert(text: str, kind: str, source: str, lineno: int, key: str) -> Any:
    def fail(rule: str) -> ConfigError:
        return ConfigError(source, lineno, key, f"{rule} (got {text!r})")

    if kind == "int":
        if not _INT_RE.fullmatch(text):
            raise fail("must be an integer")
        return int(text)
    if kind == "direction":
        if text.upper() not in _DIRECTIONS:
            raise fail("must be LONG or SHORT")
        return text.upper()
    if kind in _CHOICES:
        if text.upper() not in _CHOICES[kind]:
            raise fail(f"must be {' or '.join(_CHOICES[kind])}")
        return text.upper()
    if kind == "float":
        number = _to_float(text)
        if number is None:
            raise fail("must be a number")
        return number
    # "floats": a comma-separated list
    items = [item.strip() for item in text.split(",")]
    numbers = [_to_float(item) for item in items]
    for index, number in enumerate(numbers, start=1):
        if number is None:
            raise fail(f"item {index} must be a number")
    return tuple(numbers)


def _to_float(text: str) -> float | None:
    """float(text) if it is a finite number, else None (NaN/inf are typos, not values)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# ------------------------------------------------------------- validation


def _validate(cfg: GridConfig, raw: Mapping[str, tuple[int, str]]) -> None:
    """Check SPEC §1's rules; ``raw`` (key -> (line, text)) supplies line numbers."""
    source = cfg.source or "<config>"

    def fail(key: str, rule: str) -> ConfigError:
        if key in raw:
            lineno, shown = raw[key]
        else:
            lineno, shown = None, _fmt(getattr(cfg, _KEYS[key][0]))
        return ConfigError(source, lineno, key, f"{rule} (got {shown})")

    # Types matter for overrides, which bypass the text parser.
    for key, (field, kind) in _KEYS.items():
        value = getattr(cfg, field)
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise fail(key, "must be an integer")
        if kind == "float" and not _is_number(value):
            raise fail(key, "must be a finite number")
        if kind == "floats" and not (
            isinstance(value, tuple) and all(_is_number(v) for v in value)
        ):
            raise fail(key, "must be a list of finite numbers")
        if kind == "direction" and value not in _DIRECTIONS:
            raise fail(key, "must be LONG or SHORT")
        if kind in _CHOICES and value not in _CHOICES[kind]:
            raise fail(key, f"must be {' or '.join(_CHOICES[kind])}")

    if not cfg.initial_capital > 0:
        raise fail("INITIAL_CAPITAL", "must be > 0")
    if not 0 < cfg.capital_ratio <= 1:
        raise fail("CAPITAL_RATIO", "must be in (0, 1]")
    for key in ("LEVERAGE_LONG", "LEVERAGE_SHORT"):
        if not 1 <= getattr(cfg, _KEYS[key][0]) <= MAX_LEVERAGE:
            raise fail(key, f"must be from 1 to {MAX_LEVERAGE}")
    for key in ("GRID_RANGE_PCT", "SL_DISTANCE", "TP_PCT", "BE_PCT"):
        if not 0 < getattr(cfg, _KEYS[key][0]) < 1:
            raise fail(key, "must be in (0, 1), both ends excluded")
    if not cfg.be_pct < cfg.tp_pct:
        raise fail("BE_PCT", f"must be less than TP_PCT={_fmt(cfg.tp_pct)}")
    for key in ("MAKER_FEE", "TAKER_FEE"):
        if not 0 <= getattr(cfg, _KEYS[key][0]) < MAX_FEE:
            raise fail(key, f"must be a rate in [0, {MAX_FEE})")
    if not 0 <= cfg.account_stop_drawdown < 1:
        raise fail("ACCOUNT_STOP_DRAWDOWN", "must be a share of the account's peak equity in [0, 1) (0: off)")
    if not 1 <= cfg.max_entry_level <= MAX_LEVELS:
        raise fail("MAX_ENTRY_LEVEL", f"must be from 1 to {MAX_LEVELS}")

    n = cfg.max_entry_level
    for key in ("ENTRY_RATIOS", "LEVEL_DISTANCES"):
        count = len(getattr(cfg, _KEYS[key][0]))
        if count != n:
            raise fail(key, f"must have MAX_ENTRY_LEVEL={n} items, has {count}")

    ratios, distances = cfg.entry_ratios, cfg.level_distances
    if any(r <= 0 for r in ratios):
        raise fail("ENTRY_RATIOS", "must all be > 0")
    if sum(ratios) > 1 + SUM_SLACK:
        raise fail("ENTRY_RATIOS", f"must sum to at most 1, sum is {sum(ratios):.6g}")
    if any(d <= 0 for d in distances):
        raise fail("LEVEL_DISTANCES", "must all be > 0")
    if any(b <= a for a, b in zip(distances, distances[1:])):
        raise fail("LEVEL_DISTANCES", "must be strictly increasing")
    # The stop must lie beyond the deepest entry, or that entry could never fill.
    if distances[-1] >= cfg.sl_distance:
        raise fail("LEVEL_DISTANCES", f"must all be < SL_DISTANCE={_fmt(cfg.sl_distance)}")


def key_kind(key: str) -> str | None:
    """The value kind of a config key (float, int, floats, direction, …), None if unknown."""
    entry = _KEYS.get(key)
    return entry[1] if entry else None


def field_of(key: str) -> str:
    return _KEYS[key][0]


def format_config(cfg: GridConfig, header: str = "") -> str:
    """The config as a file parse_config reads back to the same values (floats by repr)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    for key, (field, kind) in _KEYS.items():
        value = getattr(cfg, field)
        text = ",".join(repr(float(v)) for v in value) if kind == "floats" else \
            repr(float(value)) if kind == "float" else str(value)
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_fmt(v) for v in value)
    return str(value)
