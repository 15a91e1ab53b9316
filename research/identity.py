"""A study's identity: what its trials were computed on (issue 21).

An Optuna study stores only parameters and scores; reused with other data, windows, fees
or constraints, its old scores would be read as if they were today's (the holdout leaked
into a study first run with `--holdout 0`; a BTC study answered for a FIL file).  So each
study keeps the fingerprint of everything that decides a trial's score, part by part, and
a study opened under another fingerprint is refused naming the parts that differ.

An account's study (`optimize.py --symbols`, issue 22) has the same parts, each covering every
symbol (their candles and filters, configs, funding, mark, brackets), and one more: the symbols.
A single-symbol study has no "symbols" part, so its fingerprint is what it was before.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from errors import BadInput

ATTR = "identity"               # the study's user attribute
OLD_ATTR = "space"              # what optimize.py stored before identities


class StudyMismatch(BadInput):
    """A --study that exists with other settings: its trials would not fit."""


def digest(*parts: Any) -> str:
    """A short stable hash of arrays, text and JSON-able values."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


@dataclass(frozen=True)
class Identity:
    """Part name → its digest (or a short readable value), in a fixed order."""
    parts: dict[str, str]

    @property
    def fingerprint(self) -> str:
        return digest(sorted(self.parts.items()))[:8]

    def differences(self, stored: dict[str, str]) -> list[str]:
        keys = list(self.parts) + [k for k in stored if k not in self.parts]
        return [k for k in keys if self.parts.get(k) != stored.get(k)]


# What each part covers, as a refusal names it.
PART_NAMES = {
    "symbols": "the symbols (--symbols)",
    "data": "the candles (--data files, --symbol filters)",
    "windows": "the windows (--holdout, --folds: their dates)",
    "base": "the base config (--config, --direction, --capital; each symbol's with --symbols)",
    "fees": "the fees (MAKER_FEE/TAKER_FEE, --maker-fee/--taker-fee)",
    "funding": "the funding (--funding, --funding-rate)",
    "mark": "the mark price (--mark)",
    "brackets": "the leverage brackets or --no-liquidation",
    "constraints": "the constraints (--min-round-trips, --max-drawdown)",
    "objective": "the objective (--objective)",
    "space": "the search space (--space)",
    "fill_model": "the fill model (--fill-model, --fill-share)",
    "wallet": "the account's wallet (INITIAL_CAPITAL / CAPITAL_RATIO, SPEC §7)",
    "window": "this study's own window",
}


def check(study_name: str, have: dict[str, str] | None, want: Identity, legacy: bool) -> None:
    """Raise StudyMismatch (one line) unless the stored identity is `want`'s."""
    if have is None:
        if legacy:
            raise StudyMismatch(f"study {study_name} was made by an older optimize.py that did not record its data "
                                f"and settings: give another --study (or leave --study out for a fresh one)")
        return
    diff = want.differences(have)
    if diff:
        named = "; ".join(PART_NAMES.get(k, k) for k in diff)
        raise StudyMismatch(f"study {study_name} differs from this run in {named}: its trials do not fit; "
                            f"give another --study (or leave --study out: the default name carries the "
                            f"fingerprint {want.fingerprint})")


def window_dates(open_time: np.ndarray, windows: Iterable[tuple[str, int, int]]) -> list[str]:
    """Each window as `name first-minute..last-minute` (ms), the dates the study is bound to."""
    return [f"{name} {int(open_time[a])}..{int(open_time[b - 1])}" for name, a, b in windows if b > a]
