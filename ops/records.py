"""The daemon's records: trades_<sym>.csv (one row per fill, never twice) and
the daily log files logs/grid_martingale_<sym>_YYYY-MM-DD.log."""
from __future__ import annotations

import csv
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from exchange_api import Side, apply_fill
from grid_strategy import FillRecord
from paths import log_name

CSV_COLUMNS = ["time", "symbol", "side", "role", "price", "quantity", "fee", "realized_pnl",
               "position_after", "avg_price_after", "client_order_id", "order_id", "trade_id"]


FUNDING_COLUMNS = ["time", "symbol", "income", "asset", "tran_id"]


class FundingRecorder:
    """funding_<sym>.csv: one row per funding settlement (income > 0 received, < 0 paid),
    keyed by the exchange's tranId — recovered from the income history after any downtime,
    never written twice (the ids are re-read at start)."""

    def __init__(self, path: str | Path, logger: logging.Logger | None = None):
        self.path = Path(path)
        self.log = logger or logging.getLogger("records")
        self.seen: set[int] = set()
        self.last_time = 0
        self.total = 0.0            # income summed over the file
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    try:
                        tid, t, v = int(row["tran_id"]), _parse_time(row["time"]), float(row["income"])
                    except (KeyError, ValueError, TypeError):
                        continue    # a torn last line from a crash: re-read from the income history
                    self.seen.add(tid)
                    self.last_time = max(self.last_time, t)
                    self.total += v

    @property
    def paid(self) -> float:
        """Funding paid in total (> 0 paid, < 0 received): the file's rows, negated."""
        return -self.total

    def record(self, rec: dict, fmt=lambda v: f"{v:.8f}") -> bool:
        """Write one income record unless already written; True when new."""
        tid = int(rec["tranId"])
        if tid in self.seen:
            return False
        t, v = int(rec["time"]), float(rec["income"])
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(FUNDING_COLUMNS)
            w.writerow([datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        rec.get("symbol", ""), fmt(v), rec.get("asset", ""), tid])
            fh.flush()
            os.fsync(fh.fileno())
        self.seen.add(tid)
        self.last_time = max(self.last_time, t)
        self.total += v
        return True


def _parse_time(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp() * 1000)


class TradeRecorder:
    """Appends fills to the CSV, keyed by the exchange's trade id.

    A row is written and fsynced before the fill counts as recorded, so a
    crash loses at most the row being written; a restart re-reads the ids and
    never writes one twice.  A failed write (full disk) keeps the row pending
    and retries it with the next write.
    """

    def __init__(self, path: str | Path, logger: logging.Logger | None = None):
        self.path = Path(path)
        self.log = logger or logging.getLogger("records")
        self.seen: set[tuple[str, int]] = set()
        self.pending: list[list[str]] = []
        self._failing = False         # a write failed and rows are pending
        # The position after each row comes from the rows themselves (a ledger over
        # every fill in recording order), not from the strategy's running view: that
        # view may already include later fills read from the exchange's position.
        self.position = 0.0          # signed
        self.avg_price = 0.0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    self.seen.add((row["symbol"], int(row["trade_id"])))
                    self.position, self.avg_price = float(row["position_after"]), float(row["avg_price_after"])
                except (KeyError, ValueError, TypeError):
                    continue   # a torn last line from a crash: its fill is re-recorded

    def has(self, symbol: str, trade_id: int) -> bool:
        return (symbol, trade_id) in self.seen

    def last_id(self, symbol: str) -> int:
        """The newest trade id recorded for the symbol (0: none)."""
        return max((i for s, i in self.seen if s == symbol), default=0)

    def record(self, r: FillRecord, price_fmt=str, qty_fmt=str) -> bool:
        """Write one fill unless already recorded; True when newly recorded."""
        key = (r.symbol, r.trade_id)
        if r.trade_id and key in self.seen:
            return False
        self.seen.add(key)
        signed = r.qty if r.side == Side.BUY else -r.qty
        self.position, self.avg_price, _ = apply_fill(self.position, self.avg_price, signed, r.price)
        self.pending.append([r.time_iso, r.symbol, r.side, r.role, price_fmt(r.price), qty_fmt(r.qty),
                             f"{r.fee:.8f}", f"{r.realized_pnl:.8f}", qty_fmt(self.position),
                             f"{self.avg_price:.8f}", r.client_id, str(r.order_id), str(r.trade_id)])
        self.flush()
        return True

    def flush(self) -> None:
        """Write the pending rows; on failure keep them (ERROR logged once per outage) for the next call."""
        if not self.pending:
            return
        size = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                if size == 0:
                    w.writerow(CSV_COLUMNS)
                w.writerows(self.pending)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            if size and self.path.is_file():
                try:                     # drop a partly written tail, so the retry leaves no torn row
                    os.truncate(self.path, size)
                except OSError:
                    pass
            if not self._failing:
                self.log.error("trades CSV %s not writable (%s); %d row(s) kept for the next try",
                               self.path, e.strerror or e, len(self.pending))
            self._failing = True
            return
        if self._failing:
            self.log.warning("trades CSV %s writable again: %d kept row(s) written", self.path, len(self.pending))
            self._failing = False
        self.pending.clear()


class DailyFileHandler(logging.FileHandler):
    """logs/grid_martingale_<sym>_YYYY-MM-DD.log, switching files at UTC midnight."""

    def __init__(self, directory: str | Path, symbol_short: str):
        self.directory = Path(directory)
        self.symbol_short = symbol_short
        self.day = self._today()
        self.directory.mkdir(parents=True, exist_ok=True)
        super().__init__(self._path(self.day), encoding="utf-8", delay=False)

    @staticmethod
    def _today() -> str:
        return datetime.now(timezone.utc).strftime("%Y-%m-%d")

    def _path(self, day: str) -> Path:
        return self.directory / log_name(self.symbol_short, day)

    def emit(self, record: logging.LogRecord) -> None:
        day = self._today()
        if day != self.day:
            self.acquire()
            try:
                self.close()
                self.day = day
                self.baseFilename = os.path.abspath(self._path(day))
                self.stream = self._open()
            finally:
                self.release()
        super().emit(record)


class SecretFilter(logging.Filter):
    """Masks the API key and secret wherever they might appear in a log line."""

    def __init__(self, *secrets: str):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            masked = msg
            for s in self.secrets:
                masked = masked.replace(s, "***")
            if masked != msg or record.exc_info:
                record.msg, record.args = masked, None
                if record.exc_info:
                    text = logging.Formatter().formatException(record.exc_info)
                    for s in self.secrets:
                        text = text.replace(s, "***")
                    record.exc_text, record.exc_info = text, None
        return True


def setup_logging(symbol_short: str, logs_dir: str | Path, secrets: tuple[str, ...] = (),
                  console: bool = True) -> logging.Logger:
    fmt = logging.Formatter("%(asctime)s - %(levelname)s - %(message)s", "%Y-%m-%d %H:%M:%S")
    fmt.converter = time.gmtime
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    flt = SecretFilter(*secrets)
    handlers: list[logging.Handler] = [DailyFileHandler(logs_dir, symbol_short)]
    if console:
        handlers.append(logging.StreamHandler())
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(flt)
        root.addHandler(h)
    for noisy in ("binance", "websockets", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A dropped stream is reported by the daemon (one WARNING, then its own reconnect);
    # python-binance's socket would add ERROR lines for the same event.
    logging.getLogger("binance.ws.reconnecting_websocket").setLevel(logging.CRITICAL)
    return logging.getLogger("grid")
