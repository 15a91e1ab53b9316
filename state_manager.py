"""The strategy's state (SPEC §5) and its file, `state/state_<sym>.json`.

The state is a cache of what the strategy intends; the exchange is the
truth.  It is written atomically (temp file, fsync, rename, fsync of the
directory) after every change, so a kill at any instant leaves either the
old or the new file, never a torn one.  A file that cannot be read is moved
aside with a timestamp and the caller starts from the exchange's truth.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exchange_api import Role

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(slots=True)
class OrderState:
    """One order the strategy placed and believes open."""

    client_id: str
    role: str            # ENTRY_1 … ENTRY_n, TP, BE, SL
    side: str
    price: float         # limit price, or trigger price for the stop
    qty: float           # 0 for the closePosition stop
    order_id: int = 0    # 0 until the exchange acknowledged it
    level: int = 0       # entry level, 0 for exits
    filled_qty: float = 0.0   # filled so far, as the fill events showed it

    @property
    def is_entry(self) -> bool:
        return self.role.startswith(Role.ENTRY)


@dataclass(slots=True)
class PositionState:
    qty: float = 0.0                 # absolute position quantity Q
    avg_price: float = 0.0           # A
    deepest_level: int = 0           # L: deepest level with any fill
    level1_qty: float = 0.0          # quantity kept by a BE exit
    level_filled: list[float] = field(default_factory=list)

    def reset(self, levels: int) -> None:
        self.qty = self.avg_price = self.level1_qty = 0.0
        self.deepest_level = 0
        self.level_filled = [0.0] * levels


@dataclass
class GridState:
    symbol: str
    direction: str
    capital: float
    grid_center: float = 0.0
    generation: int = 0              # changes with each new grid: part of the client ids
    exit_seq: int = 0                # changes with each exit order placed
    position: PositionState = field(default_factory=PositionState)
    orders: dict[str, OrderState] = field(default_factory=dict)
    round_trips: int = 0
    last_trade_id: int = 0           # newest exchange trade id recorded in the CSV
    # Entry levels from this one on are still to be placed around grid_center (0: none): a
    # reaction found a fill that raced its cancels and waits for it before placing them.
    pending_level: int = 0
    # Fills that raced our cancels, by client id: the quantity whose fill events are still to
    # come.  The held levels go out once every one of them has been acted on.
    raced: dict[str, float] = field(default_factory=dict)
    liquidated_at: int = 0           # time (ms) of the last liquidation seen (0: never)
    market_day: int = 0              # UTC day (days since 1970) of the newest market event seen (0: none)
    liquidation_price: float = 0.0   # the exchange's, at the last position read (0: none)
    mark_price: float = 0.0          # the mark price at that read
    # ACCOUNT_STOP_DRAWDOWN fired at this time (ms): no new grid until a person clears it
    # (`--clear-account-stop`); 0: never.  Kept across restarts on purpose.
    account_stopped_at: int = 0
    # The account's margin at the last read, for status and the dashboard (see
    # live/account_guard.py): wallet, equity, maint_margin, margin_ratio, peak_equity,
    # stop_equity, stopped_at, time.
    account: dict[str, Any] = field(default_factory=dict)
    demo: bool = False               # run against the embedded exchange (trade.py --demo), not Binance
    last_update: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = STATE_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "GridState":
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            raise ValueError("not a grid-martingale state file (missing or unknown version)")
        pos = PositionState(**d["position"])
        orders = {cid: OrderState(**o) for cid, o in d["orders"].items()}
        fields = {k: d[k] for k in ("symbol", "direction", "capital", "grid_center", "generation",
                                    "exit_seq", "round_trips",
                                    "last_trade_id", "last_update")}
        st = cls(position=pos, orders=orders, pending_level=int(d.get("pending_level", 0)),
                 raced={str(k): float(v) for k, v in (d.get("raced") or {}).items()},
                 liquidated_at=int(d.get("liquidated_at", 0) or 0),
                 market_day=int(d.get("market_day", 0) or 0),
                 liquidation_price=float(d.get("liquidation_price", 0.0) or 0.0),
                 mark_price=float(d.get("mark_price", 0.0) or 0.0),
                 account_stopped_at=int(d.get("account_stopped_at", 0) or 0),
                 demo=d.get("demo") is True,
                 account=dict(d.get("account") or {}) if isinstance(d.get("account"), dict) else {}, **fields)
        if not isinstance(st.capital, (int, float)) or st.capital <= 0:
            raise ValueError("capital must be a positive number")
        return st


class StateManager:
    """Load and save one symbol's `GridState` file atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> GridState | None:
        """The saved state, or None when there is none or it is unreadable (kept aside)."""
        if not self.path.exists():
            return None
        try:
            with open(self.path, "r", encoding="utf-8") as fh:
                return GridState.from_json(json.load(fh))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            aside = self.set_aside()
            log.warning("state file %s unreadable (%s); kept as %s, recovering from the exchange",
                        self.path, str(e).splitlines()[0] if str(e) else type(e).__name__, aside.name)
            return None

    def set_aside(self) -> Path:
        """Move the file aside as <name>.corrupt-<UTC timestamp> (never over an earlier one); the new path."""
        stamp = time.strftime('%Y%m%d-%H%M%S', time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.replace(self.path, aside)
        except OSError:
            return self.path
        return aside

    def save(self, state: GridState) -> None:
        state.last_update = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(state.to_json(), indent=1, sort_keys=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
