"""What the dashboard's charts read and nothing else records: a symbol's recent 1-minute
candles (state/prices_<sym>.json) and the account's margin once a minute
(state/account_history.csv).

    prices_<sym>.json       {"symbol": "BTCUSDC", "candles": [[open_time_ms, open, high, low, close], ...]}
                            the last CANDLES_KEPT closed candles the daemon saw, oldest first
    account_history.csv     time,wallet,equity,maint_margin,margin_ratio   (time in ms)

The candles are kept by the daemon as the market stream brings them (no I/O there) and written
by its live-file task (ops/services.py) when one was added; the account's rows are appended by
live/account_guard.py under the account's lock, so the daemons of one account write one row a
minute between them.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

from exchange_api import AccountSnapshot

CANDLES_KEPT = 1440                 # a day of 1-minute candles
Candle = tuple[int, float, float, float, float]     # open time (ms), open, high, low, close

HISTORY_COLUMNS = ("time", "wallet", "equity", "maint_margin", "margin_ratio")
HISTORY_HEADER = ",".join(HISTORY_COLUMNS)
HISTORY_EVERY_MS = 60_000           # one row a minute for the whole account
HISTORY_ROWS = 43_200               # 30 days of rows kept; trimmed to it once twice as many
TAIL_BYTES = 512                    # enough for the last row
NO_ROW = -(1 << 62)                 # the time of "no row yet": any reading is a minute after it

log = logging.getLogger("grid")


def replace_file(path: Path, text: str) -> None:
    """Write a whole file atomically: a reader sees the old one or the new one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class PriceHistory:
    """The symbol's recent closed 1-minute candles: kept from the market stream, loaded at
    start so a restart continues the series, written when a candle was added."""

    def __init__(self, path: Path, symbol: str, keep: int = CANDLES_KEPT) -> None:
        self.path, self.symbol = path, symbol
        self.candles: deque[Candle] = deque(maxlen=keep)
        self.changed = False            # a candle was added since the last write
        self._load()

    def see(self, msg: dict[str, Any]) -> None:
        """A market-stream message; a closed kline is kept.  Called for every message, so it
        only appends a tuple (the file is written by the live-file task)."""
        k = msg.get("k")
        if not k or not k.get("x"):
            return
        try:
            c: Candle = (int(k["t"]), float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]))
        except (KeyError, TypeError, ValueError):
            return
        if self.candles and c[0] <= self.candles[-1][0]:
            if c[0] == self.candles[-1][0]:
                self.candles.pop()      # the same candle again: the newer word on it
            else:
                self.candles.clear()    # the clock went back (another market): a new series
        self.candles.append(c)
        self.changed = True

    def write(self) -> bool:
        """Write the file if a candle was added since the last write; True when written."""
        if not self.changed:
            return False
        data = {"symbol": self.symbol, "candles": [list(c) for c in self.candles]}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, json.dumps(data, separators=(",", ":")))
        except OSError:
            return False                # tried again at the next turn
        self.changed = False
        return True

    def _load(self) -> None:
        """The file of an earlier run of this symbol, if readable; anything else is ignored."""
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(d, dict) or d.get("symbol") != self.symbol:
                return
            candles = [(int(c[0]), float(c[1]), float(c[2]), float(c[3]), float(c[4])) for c in d["candles"]]
        except (OSError, ValueError, TypeError, KeyError, IndexError):
            return
        for c in candles:
            if not self.candles or c[0] > self.candles[-1][0]:
                self.candles.append(c)


class AccountHistory:
    """state/account_history.csv: one row of the account's margin a minute, appended by
    whichever daemon of the account reads it first.  Every method is called under the
    account's lock (live/account_guard.py)."""

    def __init__(self, path: Path, keep: int = HISTORY_ROWS) -> None:
        self.path, self.keep = path, keep
        self.last_ms = NO_ROW           # the newest row's time this guard knows of
        # (inode, size, data rows) at the last count: later counts read only what was added.
        self._counted: tuple[int, int, int] | None = None
        self._error = ""

    def append(self, snap: AccountSnapshot, now_ms: int) -> bool:
        """Append this reading unless the file has a row of the last minute; True when written."""
        if now_ms - self.last_ms < HISTORY_EVERY_MS:
            return False                # no I/O while this guard's own row is recent
        row = ",".join([str(now_ms)] + [repr(round(v, 8)) for v in
                                        (snap.wallet, snap.equity, snap.maint_margin, snap.margin_ratio)]) + "\n"
        try:
            last = self._last_time()
            if last is not None and now_ms - last < HISTORY_EVERY_MS:
                self.last_ms = last     # another daemon of the account wrote this minute's row
                return False
            if last is None or not self._append(row):
                self._fresh(row)        # absent, empty or malformed: a new file
        except OSError as e:
            # The history is the dashboard's: a full disk never stops the account's check.
            if str(e) != self._error:
                log.warning("account history not writable: %s", e)
                self._error = str(e)
            return False
        self.last_ms = now_ms
        return True

    def _last_time(self) -> int | None:
        """The last row's time (NO_ROW: the header alone), or None: no file, empty, or its last
        line is no row.  Reads the file's end only."""
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - TAIL_BYTES))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return None
        if not lines or not lines[-1].strip():
            return None
        last = lines[-1].decode("utf-8", "replace").strip()
        if last == HISTORY_HEADER:
            return NO_ROW
        fields = last.split(",")
        try:
            numbers = [float(f) for f in fields[1:]]
            return int(fields[0]) if len(numbers) == len(HISTORY_COLUMNS) - 1 else None
        except ValueError:
            return None

    def _append(self, row: str) -> bool:
        """Append a row, then trim when the file passed twice the rows kept; False when the
        file turned out malformed (its header is not ours)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(row)
        rows = self._count()
        if rows is None:
            return False
        if rows > 2 * self.keep:
            self._trim()
        return True

    def _count(self) -> int | None:
        """The data rows in the file (None: not our header).  Reads only what was added since
        the last count, unless the file was replaced (trimmed, recreated) meanwhile."""
        st = os.stat(self.path)
        c = self._counted
        with open(self.path, "rb") as fh:
            if c is not None and c[0] == st.st_ino and c[1] <= st.st_size:
                fh.seek(c[1])
                rows = c[2] + fh.read().count(b"\n")
            else:
                data = fh.read()
                if data.split(b"\n", 1)[0].strip() != HISTORY_HEADER.encode():
                    return None
                rows = data.count(b"\n") - 1
        self._counted = (st.st_ino, st.st_size, rows)
        return rows

    def _trim(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()[1:]
        self._write([*lines[-self.keep:]])

    def _fresh(self, row: str) -> None:
        self._write([row.rstrip("\n")])

    def _write(self, rows: list[str]) -> None:
        replace_file(self.path, "\n".join([HISTORY_HEADER, *rows]) + "\n")
        st = os.stat(self.path)
        self._counted = (st.st_ino, st.st_size, len(rows))
