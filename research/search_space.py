"""The optimizer's search space: a text file of config keys and their ranges.

    # comments
    TP_PCT=0.002..0.01              uniform
    LEVERAGE_LONG=5..20:5           stepped (integers when all three are integers)
    TRADE_DIRECTION=LONG|SHORT      choices
    LEVEL_DISTANCES[2]=0.005..0.02  one element of a list key (1-based, up to MAX_ENTRY_LEVEL)
    BTCUSDC.TP_PCT=0.003..0.01      with --symbols: that symbol's only (unprefixed: one value shared
                                    by every symbol of the account)

Keys not in the space come from the base config (each symbol's, with --symbols).  A sampled configuration that breaks
the config's rules (distances increasing and below SL_DISTANCE, ratios summing ≤ 1,
BE_PCT < TP_PCT, …) is not an error: `build_config` returns the rule it breaks and the
optimizer records the trial as infeasible.  A bad space file is one `file:line: KEY: rule`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import optuna

from config import ConfigError, GridConfig, field_of, key_kind
from errors import BadInput

_LINE_RE = re.compile(r"^(?:([A-Z0-9]+)\.)?([A-Z_]+)(?:\[(\d+)\])?\s*=\s*(.+)$")
_NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT_LITERAL_RE = re.compile(r"^[+-]?\d+$")
_CHOICE_KINDS = {"direction": ("LONG", "SHORT"), "working_type": ("CONTRACT_PRICE", "MARK_PRICE"),
                 "after_liquidation": ("STOP", "CONTINUE")}
NOT_SEARCHABLE = {"MAX_ENTRY_LEVEL": "cannot be searched (the list keys' lengths depend on it)",
                  "CAPITAL_RATIO": "cannot be searched (with INITIAL_CAPITAL it sets the account's wallet, SPEC §7)"}
# With --symbols the account's wallet is fixed for the study (--wallet, or the base configs'
# INITIAL_CAPITAL / CAPITAL_RATIO), and Binance's fee rate is the account's, not a symbol's.
NOT_SEARCHABLE_IN_ACCOUNT = {"INITIAL_CAPITAL": "cannot be searched with --symbols (the account's wallet, --wallet "
                                                "or the base configs' INITIAL_CAPITAL / CAPITAL_RATIO, sets every "
                                                "capital)"}
ACCOUNT_WIDE = {"MAKER_FEE", "TAKER_FEE"}


class SpaceError(BadInput):
    """`file:line: KEY: rule` — one line."""

    def __init__(self, source: str, line: int | None, key: str | None, rule: str):
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {key}: {rule}" if key else f"{where}: {rule}")


@dataclass(frozen=True)
class Param:
    name: str                   # as written: TP_PCT, LEVEL_DISTANCES[2], BTCUSDC.TP_PCT
    key: str
    index: int | None           # 1-based element of a list key
    distribution: optuna.distributions.BaseDistribution
    line: int
    symbol: str | None = None   # with --symbols: the one symbol it applies to; None: every symbol

    def applies_to(self, symbol: str | None) -> bool:
        return self.symbol is None or self.symbol == symbol


Number = Union[int, float]


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {p.name: p.distribution for p in self.params}

    def fingerprint(self) -> str:
        """The space as a study remembers it: a study is resumed only with the same space."""
        return ";".join(f"{p.name}={optuna.distributions.distribution_to_json(p.distribution)}"
                        for p in self.params)


Bases = Union[GridConfig, Mapping[str, GridConfig]]     # one config, or each symbol's (--symbols)


def load_space(path: str | Path, base: Bases) -> Space:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpaceError(source, None, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(source, None, None, f"cannot read: {e}") from None
    return parse_space(text, base, source)


def parse_space(text: str, base: Bases, source: str = "<space>") -> Space:
    """`base`: the one base config, or each symbol's ({symbol: config}, --symbols), which
    allows keys prefixed by a symbol."""
    params: list[Param] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        m = _LINE_RE.match(body)
        if not m:
            raise SpaceError(source, lineno, None, f"expected KEY=LOW..HIGH, KEY=LOW..HIGH:STEP or KEY=A|B "
                                                   f"(got {body!r})")
        symbol, key, index_text, spec = m.group(1), m.group(2), m.group(3), m.group(4).strip()
        unprefixed = f"{key}[{index_text}]" if index_text else key
        name = f"{symbol}.{unprefixed}" if symbol else unprefixed
        configs = _configs_for(source, lineno, name, symbol, key, base)
        kind = key_kind(key)
        if kind is None:
            hint = difflib.get_close_matches(key, _all_keys(), n=1)
            raise SpaceError(source, lineno, name if symbol else key, "not a config key"
                             + (f" (did you mean {hint[0]}?)" if hint else ""))
        if key in NOT_SEARCHABLE:
            raise SpaceError(source, lineno, key, NOT_SEARCHABLE[key])
        index = _index(source, lineno, f"{symbol}.{key}" if symbol else key, kind, index_text, configs)
        if name in seen:
            raise SpaceError(source, lineno, name, f"given twice (first on line {seen[name]})")
        _check_overlap(source, lineno, name, symbol, unprefixed, seen)
        seen[name] = lineno
        params.append(Param(name, key, index, _distribution(source, lineno, name, kind, spec), lineno, symbol))
    if not params:
        raise SpaceError(source, None, None, "no parameter to search")
    return Space(tuple(params), source)


def _configs_for(source: str, lineno: int, name: str, symbol: str | None, key: str,
                 base: Bases) -> list[GridConfig]:
    """The base configs a line applies to; a symbol prefix without --symbols, or for a symbol
    not traded, and the keys the account holds as one (fees, the wallet) are errors."""
    if isinstance(base, GridConfig):
        if symbol:
            raise SpaceError(source, lineno, name, "a key for one symbol needs --symbols (this study has one "
                                                   "config and one symbol: drop the prefix)")
        return [base]
    if key in NOT_SEARCHABLE_IN_ACCOUNT:
        raise SpaceError(source, lineno, name, NOT_SEARCHABLE_IN_ACCOUNT[key])
    if symbol is None:
        return list(base.values())
    if symbol not in base:
        raise SpaceError(source, lineno, name, f"{symbol} is not in --symbols {','.join(base)}")
    if key in ACCOUNT_WIDE:
        raise SpaceError(source, lineno, name, f"the fee rate is the account's (one for every symbol): "
                                               f"search {key} without a prefix")
    return [base[symbol]]


def _check_overlap(source: str, lineno: int, name: str, symbol: str | None, unprefixed: str,
                   seen: dict[str, int]) -> None:
    """A key searched for every symbol and for one symbol too: which value would it take?"""
    if symbol and unprefixed in seen:
        raise SpaceError(source, lineno, name, f"{unprefixed} is already searched for every symbol "
                                               f"(line {seen[unprefixed]})")
    if not symbol:
        clash = [(n, at) for n, at in seen.items() if n.split(".", 1)[-1] == unprefixed and "." in n]
        if clash:
            raise SpaceError(source, lineno, name, f"already searched for one symbol as {clash[0][0]} "
                                                   f"(line {clash[0][1]})")


def _all_keys() -> list[str]:
    from config import _KEYS     # the config's own key table
    return list(_KEYS)


def _index(source: str, lineno: int, key: str, kind: str, index_text: str | None,
           configs: list[GridConfig]) -> int | None:
    if kind == "floats":
        n = min(c.max_entry_level for c in configs)     # an element every config it applies to has
        if index_text is None:
            raise SpaceError(source, lineno, key, f"a list key is searched per element: {key}[1]..{key}[{n}]")
        index = int(index_text)
        if not 1 <= index <= n:
            raise SpaceError(source, lineno, f"{key}[{index}]", f"index must be 1..{n} (MAX_ENTRY_LEVEL)")
        return index
    if index_text is not None:
        raise SpaceError(source, lineno, key, "not a list key: no [index]")
    return None


def _number(source: str, lineno: int, name: str, text: str) -> Number:
    t = text.strip()
    if not _NUM_RE.match(t):
        raise SpaceError(source, lineno, name, f"{t!r} is not a number")
    return int(t) if _INT_LITERAL_RE.match(t) else float(t)


def _int_bounds(low: Number, high: Number, step: Number | None) -> tuple[int, int, int] | None:
    """LOW, HIGH and STEP (1 when not given) when all are integers, else None."""
    if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
        return low, high, step or 1
    return None


def _distribution(source: str, lineno: int, name: str, kind: str,
                  spec: str) -> optuna.distributions.BaseDistribution:
    if "|" in spec or kind in _CHOICE_KINDS:
        return _choices(source, lineno, name, kind, spec)
    if ".." not in spec:
        raise SpaceError(source, lineno, name, f"expected LOW..HIGH, LOW..HIGH:STEP or A|B|C (got {spec!r})")
    rng, _, step_text = spec.partition(":")
    low_text, _, high_text = rng.partition("..")
    low, high = _number(source, lineno, name, low_text), _number(source, lineno, name, high_text)
    if not low < high:
        raise SpaceError(source, lineno, name, f"LOW must be below HIGH (got {low}..{high})")
    step = _number(source, lineno, name, step_text) if step_text else None
    if step is not None and not 0 < step <= high - low:
        raise SpaceError(source, lineno, name, f"STEP must be above 0 and at most HIGH-LOW (got {step})")
    ints = _int_bounds(low, high, step)
    if kind == "int":
        if ints is None:
            raise SpaceError(source, lineno, name, "an integer key takes integer LOW, HIGH and STEP")
        return optuna.distributions.IntDistribution(ints[0], ints[1], step=ints[2])
    if step is not None and ints is not None:
        return optuna.distributions.IntDistribution(ints[0], ints[1], step=ints[2])
    if step is not None:
        span = (high - low) / step
        if abs(span - round(span)) > 1e-9:
            raise SpaceError(source, lineno, name, f"STEP {step} does not divide {low}..{high}")
    return optuna.distributions.FloatDistribution(float(low), float(high), step=float(step) if step else None)


def _choices(source: str, lineno: int, name: str, kind: str, spec: str) -> optuna.distributions.CategoricalDistribution:
    items = [c.strip() for c in spec.split("|")]
    if any(not c for c in items) or len(set(items)) != len(items):
        raise SpaceError(source, lineno, name, f"choices must be distinct and non-empty (got {spec!r})")
    if kind in _CHOICE_KINDS:
        allowed = _CHOICE_KINDS[kind]
        bad = [c for c in items if c.upper() not in allowed]
        if bad:
            raise SpaceError(source, lineno, name, f"{bad[0]!r} is not one of {'|'.join(allowed)}")
        return optuna.distributions.CategoricalDistribution([c.upper() for c in items])
    values = [_number(source, lineno, name, c) for c in items]
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise SpaceError(source, lineno, name, "an integer key takes integer choices")
    return optuna.distributions.CategoricalDistribution(values)


def build_config(base: GridConfig, space: Space, params: dict[str, Any],
                 symbol: str | None = None) -> tuple[GridConfig | None, str]:
    """The base config with the sampled values (the shared ones, and `symbol`'s own); (None,
    the rule broken) when infeasible."""
    overrides: dict[str, Any] = {}
    lists: dict[str, list[float]] = {}
    for p in space.params:
        if not p.applies_to(symbol):
            continue
        value = params[p.name]
        if p.index is None:
            overrides[field_of(p.key)] = value
        else:
            field = field_of(p.key)
            lst = lists.setdefault(field, list(getattr(base, field)))
            lst[p.index - 1] = float(value)
    overrides.update({f: tuple(v) for f, v in lists.items()})
    try:
        return base.with_overrides(**overrides), ""
    except ConfigError as e:
        text = str(e)
        return None, text.split(": ", 1)[1] if ": " in text else text


def build_configs(bases: Mapping[str, GridConfig], space: Space,
                  params: dict[str, Any]) -> tuple[dict[str, GridConfig] | None, str]:
    """Each symbol's config (--symbols); (None, `SYMBOL: the rule broken`) when any one breaks
    its config's rules: the account cannot run without it."""
    out: dict[str, GridConfig] = {}
    for symbol, base in bases.items():
        cfg, why = build_config(base, space, params, symbol)
        if cfg is None:
            return None, f"{symbol}: {why}"
        out[symbol] = cfg
    return out, ""
