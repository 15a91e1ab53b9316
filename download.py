#!/usr/bin/env python3
"""Real market data in one command, verified: Binance's public data dump for USDⓈ-M futures.

    python download.py --symbol BTCUSDC --from 2024-09 --to 2025-02
        [--kinds klines,fundingRate,markPriceKlines] [--out data/]
        [--base-url URL] [--rest-url URL] [--jobs N]

Each month comes from the dump's monthly zip (`data/futures/um/monthly/<kind>/<SYMBOL>/
[1m/]<name>.zip`); a month not dumped yet from its daily zips (`daily/`, klines and mark
klines), and the days not dumped yet from REST (`/fapi/v1/klines`, `/fapi/v1/markPriceKlines`,
`/fapi/v1/fundingRate`, request weight respected).  Every zip is checked against its
`.CHECKSUM` (SHA-256) and every CSV with the loader the backtest uses before it is renamed
into place, so a file under `--out` is whole or absent.  A second run fetches nothing it
has; an interrupted download resumes from its `.partial/` file (HTTP Range).

The CSVs land under `--out` mirroring the dump's layout
(`futures/um/monthly/klines/BTCUSDC/1m/BTCUSDC-1m-2024-09.csv`, …/daily/…); days taken
from REST go to `futures/um/rest/…` in the dump's columns.  At the end each kind's series
is checked for gaps and the gaps that remain are reported.
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import hashlib
import io
import json
import os
import re
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import aiohttp
from tqdm import tqdm

from market.funding import FundingError, load_funding
from market.data import HEADER_12, MINUTE_MS, DataError, load_klines
from errors import Temporary

DUMP_URL = "https://data.binance.vision"
REST_URL = "https://fapi.binance.com"
KINDS = ("klines", "fundingRate", "markPriceKlines")
KLINE_KINDS = ("klines", "markPriceKlines")
REST_PATH = {"klines": "/fapi/v1/klines", "markPriceKlines": "/fapi/v1/markPriceKlines",
             "fundingRate": "/fapi/v1/fundingRate"}
FUNDING_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
DAY_MS = 86_400_000
KLINE_PAGE = 1500               # /fapi/v1/klines' largest page (weight 10)
FUNDING_PAGE = 1000             # /fapi/v1/fundingRate's largest page
WEIGHT_LIMIT = 2400             # Binance's request weight per minute per IP
WEIGHT_HEADROOM = 0.8           # pause before the used weight reaches this share of the limit
CHUNK = 1 << 16
HTTP_TIMEOUT_S = 60.0
MAX_RETRY_AFTER_S = 300.0


class DownloadError(Temporary):
    """One file that could not be had whole (the next run fetches it again): printed as one line
    naming it."""


class LocalWriteError(DownloadError):
    """Our disk refused a write (full, read-only): the download itself is kept for the next run."""


# ---------------------------------------------------------------------- periods and names
@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str, flag: str) -> "Month":
        m = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 2019:
            raise ValueError(f"{flag} {text!r} is not a month such as 2024-09 (Binance's futures start in 2019)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> "Month":
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def start_ms(self) -> int:
        return calendar.timegm((self.year, self.month, 1, 0, 0, 0)) * 1000

    def end_ms(self) -> int:
        return self.next().start_ms()

    def days(self) -> list[str]:
        n = calendar.monthrange(self.year, self.month)[1]
        return [f"{self}-{d:02d}" for d in range(1, n + 1)]


def months_between(first: Month, last: Month) -> list[Month]:
    out, m = [], first
    while m <= last:
        out.append(m)
        m = m.next()
    return out


def day_start_ms(day: str) -> int:
    y, mo, d = map(int, day.split("-"))
    return calendar.timegm((y, mo, d, 0, 0, 0)) * 1000


@dataclass(frozen=True)
class Part:
    """One file of a series: a month or a day of one kind, from the dump or from REST."""
    kind: str
    symbol: str
    period: str          # 2024-09 (monthly, REST funding) or 2024-09-05 (daily, REST klines)
    source: str          # monthly | daily | rest

    @property
    def name(self) -> str:
        if self.kind == "fundingRate":
            return f"{self.symbol}-fundingRate-{self.period}"
        return f"{self.symbol}-1m-{self.period}"

    @property
    def folder(self) -> str:
        tail = "" if self.kind == "fundingRate" else "/1m"
        return f"futures/um/{self.source}/{self.kind}/{self.symbol}{tail}"

    def csv_path(self, out: Path) -> Path:
        return out / self.folder / f"{self.name}.csv"

    def zip_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/data/{self.folder}/{self.name}.zip"

    def partial_path(self, out: Path, suffix: str) -> Path:
        return out / ".partial" / self.folder / f"{self.name}{suffix}"

    def span_ms(self) -> tuple[int, int]:
        if len(self.period) == 7:
            m = Month.parse(self.period, "period")
            return m.start_ms(), m.end_ms()
        s = day_start_ms(self.period)
        return s, s + DAY_MS


# ---------------------------------------------------------------------- verification
def verify_csv(kind: str, path: Path, shown: str) -> None:
    """The loader the backtest uses, on the file about to be renamed into place."""
    try:
        if kind == "fundingRate":
            load_funding([path])
        else:
            load_klines([path])
    except (DataError, FundingError) as e:
        raise DownloadError(f"{shown}: refused: {str(e).replace(str(path), '').lstrip(': ')}") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def parse_checksum(text: str, name: str) -> str:
    """`<sha256>  <file>` (sha256sum's format, as the dump writes it)."""
    fields = text.split()
    if not fields or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise DownloadError(f"{name}.zip.CHECKSUM: not a SHA-256 checksum file")
    if len(fields) > 1 and fields[1].lstrip("*") != f"{name}.zip":
        raise DownloadError(f"{name}.zip.CHECKSUM: names {fields[1]!r}, not {name}.zip")
    return fields[0].lower()


def extract_member(zpath: Path, name: str, dest: Path) -> None:
    """The zip's CSV (CRC-checked as it is read) to `dest`."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".csv")]
            want = [i for i in members if Path(i.filename).name == f"{name}.csv"] or members
            if len(want) != 1:
                raise DownloadError(f"{name}.zip: expected one CSV inside, found {len(members)}")
            with zf.open(want[0]) as src:
                try:
                    out = dest.open("wb")
                except OSError as e:
                    raise LocalWriteError(f"{name}.zip: cannot write {dest}: {e.strerror or e}") from None
                with out:
                    for block in iter(lambda: src.read(CHUNK), b""):
                        try:
                            out.write(block)
                        except OSError as e:
                            raise LocalWriteError(f"{name}.zip: cannot write {dest}: {e.strerror or e}") from None
    except LocalWriteError:
        dest.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        # zlib.error: a damaged deflate stream (a CRC mismatch is BadZipFile); both mean corrupt.
        dest.unlink(missing_ok=True)
        raise DownloadError(f"{name}.zip: corrupt zip ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------- HTTP
@dataclass
class Progress:
    """Files and bytes on a terminal (tqdm: counts, bytes, rate); silent otherwise."""
    enabled: bool
    bar: Any = None
    files_done: int = 0
    files_total: int = 0

    def __post_init__(self) -> None:
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, disable=not self.enabled,
                        desc="download", dynamic_ncols=True, leave=True)

    def add_bytes_total(self, n: int) -> None:
        if self.enabled:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def file_done(self) -> None:
        self.files_done += 1
        self.bar.set_postfix_str(f"{self.files_done} files")

    def close(self) -> None:
        self.bar.close()


class RestClient:
    """Public REST reads, one at a time, under the per-minute request weight (it waits
    before the used weight nears the limit, and obeys 429 / 418 Retry-After)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, weight_limit: int = WEIGHT_LIMIT,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.session, self.base = session, base.rstrip("/")
        self.weight_limit, self.sleep = weight_limit, sleep
        self.used = 0
        self.used_at = 0.0        # monotonic time of the last weight reading
        self.requests = 0
        self.waited_s = 0.0
        self.lock = asyncio.Lock()

    async def get(self, path: str, params: dict[str, Any], weight: int) -> Any:
        async with self.lock:
            for _ in range(6):
                await self._respect_weight(weight)
                url = f"{self.base}{path}"
                try:
                    async with self.session.get(url, params=params) as r:
                        self.requests += 1
                        used = _number(r.headers.get("X-MBX-USED-WEIGHT-1M"))
                        if used is not None:
                            self.used, self.used_at = int(used), time.monotonic()
                        if r.status in (429, 418):
                            wait = min(_number(r.headers.get("Retry-After")) or 60.0, MAX_RETRY_AFTER_S)
                            self.waited_s += wait
                            await self.sleep(wait)
                            continue
                        body = await r.text()
                        if r.status != 200:
                            raise DownloadError(f"GET {path}: HTTP {r.status}: {body[:200]}")
                        return _json(body, path)
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    raise DownloadError(f"GET {url}: {type(e).__name__}: {e}") from None
            raise DownloadError(f"GET {path}: still rate-limited after 6 tries")

    async def _respect_weight(self, weight: int) -> None:
        # The window is the server's minute; without its clock, a reading older than a
        # minute is stale, and a reading near the limit waits for the minute to turn.
        age = time.monotonic() - self.used_at
        if age >= 60.0:
            self.used = 0
        elif self.used + weight > self.weight_limit * WEIGHT_HEADROOM:
            wait = 60.0 - age + 0.5
            self.waited_s += wait
            await self.sleep(wait)
            self.used = 0


def _number(text: str | None) -> float | None:
    """A header's number (Retry-After in seconds, the used weight); None if absent or not a number."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _json(body: str, path: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise DownloadError(f"GET {path}: the answer is not JSON") from None


def kline_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


# ---------------------------------------------------------------------- the downloader
@dataclass
class Result:
    files: dict[str, list[Path]] = field(default_factory=dict)     # per kind, in time order
    fetched: int = 0            # files downloaded (or built from REST) by this run
    kept: int = 0               # files already there
    errors: list[str] = field(default_factory=list)
    gaps: dict[str, str] = field(default_factory=dict)             # per kind, a report line


class Downloader:
    def __init__(self, symbol: str, out: Path, *, base_url: str = DUMP_URL, rest_url: str = REST_URL,
                 jobs: int = 4, progress: bool = False, now_ms: int | None = None,
                 weight_limit: int = WEIGHT_LIMIT) -> None:
        self.symbol, self.out = symbol.upper(), out
        self.base_url, self.rest_url = base_url, rest_url
        self.jobs = jobs
        self.now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        self.weight_limit = weight_limit
        self.progress = Progress(progress)
        self.result = Result()
        self.sem = asyncio.Semaphore(jobs)
        self._session: aiohttp.ClientSession | None = None     # open while run() runs
        self._rest: RestClient | None = None

    async def run(self, kinds: Iterable[str], months: list[Month]) -> Result:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=HTTP_TIMEOUT_S, sock_read=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            self._rest = RestClient(session, self.rest_url, self.weight_limit)
            for kind in kinds:
                parts = await asyncio.gather(*(self.month(kind, m) for m in months))
                self.result.files[kind] = [p for month_parts in parts for p in month_parts]
        self.progress.close()
        return self.result

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the fetcher's session is open only inside run()")
        return self._session

    @property
    def rest(self) -> RestClient:
        if self._rest is None:
            raise RuntimeError("the fetcher's REST client is open only inside run()")
        return self._rest

    @rest.setter
    def rest(self, client: RestClient) -> None:       # a test points one fetch elsewhere
        self._rest = client

    # ------------------------------------------------------------------ one month
    async def month(self, kind: str, m: Month) -> list[Path]:
        """The month's files, in time order: its monthly dump, else its days."""
        if m.end_ms() <= self.now_ms:              # only a finished month is ever dumped whole
            try:
                got = await self.from_dump(Part(kind, self.symbol, str(m), "monthly"))
            except DownloadError as e:          # refused, not missing: no fallback to other sources
                self.result.errors.append(str(e))
                return []
            if got is not None:
                return [got]
        if kind == "fundingRate":                  # the dump has no daily funding files
            got = await self.guard(self.funding_from_rest(m))
            return [got] if got is not None else []
        days = [d for d in m.days() if day_start_ms(d) < self.now_ms]
        found = await asyncio.gather(*(self.guard(self.day(kind, d)) for d in days))
        return [p for p in found if p is not None]

    async def day(self, kind: str, day: str) -> Path | None:
        """A day from its daily dump, else from REST (a refused daily file is not replaced)."""
        if day_start_ms(day) + DAY_MS <= self.now_ms:
            rest = Part(kind, self.symbol, day, "rest").csv_path(self.out)
            if not _written_after(rest, day_start_ms(day) + DAY_MS):  # a day already final from REST is kept
                got = await self.from_dump(Part(kind, self.symbol, day, "daily"))
                if got is not None:
                    return got
        return await self.klines_from_rest(kind, day)

    async def guard(self, job: Any) -> Path | None:
        """A file that cannot be had whole is reported and left out; the others go on."""
        try:
            return await job
        except DownloadError as e:
            self.result.errors.append(str(e))
            return None

    # ------------------------------------------------------------------ the dump
    async def from_dump(self, part: Part) -> Path | None:
        """The part's verified CSV, downloading it if needed; None if the dump lacks it."""
        final = part.csv_path(self.out)
        if final.is_file():
            self.result.kept += 1
            return final
        async with self.sem:
            expected = await self._checksum(part)
            if expected is None:
                return None
            zpath = part.partial_path(self.out, ".zip.part")
            zpath.parent.mkdir(parents=True, exist_ok=True)
            for attempt in (1, 2):
                resumed = await self._fetch_zip(part, zpath)
                actual = await asyncio.to_thread(sha256_of, zpath)
                if actual == expected:
                    break
                zpath.unlink(missing_ok=True)
                if not resumed or attempt == 2:
                    raise DownloadError(f"{part.name}.zip: SHA-256 mismatch (CHECKSUM {expected[:16]}…, "
                                        f"file {actual[:16]}…): refused")
            await asyncio.to_thread(self._install, part, zpath, final)
        self.result.fetched += 1
        self.progress.file_done()
        return final

    def _install(self, part: Part, zpath: Path, final: Path) -> None:
        tmp = part.partial_path(self.out, ".csv.tmp")
        try:
            extract_member(zpath, part.name, tmp)
            verify_csv(part.kind, tmp, f"{part.name}.zip")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except LocalWriteError:
            raise                               # the zip is fine: kept, the next run only extracts
        except DownloadError:
            zpath.unlink(missing_ok=True)      # the next run fetches it again, whole
            raise
        finally:
            tmp.unlink(missing_ok=True)
        zpath.unlink(missing_ok=True)

    async def _checksum(self, part: Part) -> str | None:
        url = part.zip_url(self.base_url) + ".CHECKSUM"
        try:
            async with self.session.get(url) as r:
                if r.status == 404:
                    return None
                if r.status != 200:
                    raise DownloadError(f"{part.name}.zip.CHECKSUM: HTTP {r.status}")
                return parse_checksum(await r.text(), part.name)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise DownloadError(f"{part.name}.zip.CHECKSUM: {type(e).__name__}: {e}") from None

    async def _fetch_zip(self, part: Part, zpath: Path) -> bool:
        """Download (or resume) the zip into zpath; True if it resumed a partial file."""
        have = zpath.stat().st_size if zpath.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = part.zip_url(self.base_url)
        try:
            async with self.session.get(url, headers=headers) as r:
                if r.status == 416:                 # the partial file is whole already
                    return True
                if r.status == 404:
                    raise DownloadError(f"{part.name}.zip: listed by its CHECKSUM but HTTP 404")
                if r.status not in (200, 206):
                    raise DownloadError(f"{part.name}.zip: HTTP {r.status}")
                resumed = r.status == 206
                self.progress.add_bytes_total(int(r.headers.get("Content-Length") or 0))
                with zpath.open("ab" if resumed else "wb") as f:
                    async for block in r.content.iter_chunked(CHUNK):
                        f.write(block)
                        self.progress.advance(len(block))
                return resumed
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise DownloadError(f"{part.name}.zip: download interrupted ({type(e).__name__}); "
                                "run again to resume") from None

    # ------------------------------------------------------------------ REST
    async def klines_from_rest(self, kind: str, day: str) -> Path | None:
        """A day the dump does not have, from REST, in the dump's 12 columns: closed candles
        only (the one still forming is left out).  A file written after its day ended is
        final; today's is fetched again."""
        part = Part(kind, self.symbol, day, "rest")
        final = part.csv_path(self.out)
        start = day_start_ms(day)
        end = min(start + DAY_MS, self.now_ms)
        if _written_after(final, start + DAY_MS):
            self.result.kept += 1
            return final
        rows: list[list[Any]] = []
        t = start
        while t < end:
            page = await self.rest.get(REST_PATH[kind], {"symbol": self.symbol, "interval": "1m", "startTime": t,
                                                         "endTime": end - 1, "limit": KLINE_PAGE},
                                       kline_weight(KLINE_PAGE))
            try:
                page = sorted((r for r in page if t <= int(r[0]) < end and int(r[6]) < self.now_ms),
                              key=lambda r: int(r[0]))
            except (TypeError, ValueError, IndexError, KeyError):
                raise DownloadError(f"GET {REST_PATH[kind]}: not a list of klines") from None
            if not page:
                break                       # the server ignoring startTime cannot loop us: t only grows
            rows += page
            t = int(page[-1][0]) + MINUTE_MS
        if not rows:
            return None                            # nothing traded (or not listed yet) that day
        text = HEADER_12 + "\n" + "".join(",".join(str(v) for v in r[:12]) + "\n" for r in rows)
        return self._write_rest(part, final, text)

    async def funding_from_rest(self, m: Month) -> Path | None:
        """A month of funding the dump does not have, from REST, in the dump's columns; final
        once written after the month ended."""
        part = Part("fundingRate", self.symbol, str(m), "rest")
        final = part.csv_path(self.out)
        if _written_after(final, m.end_ms()):
            self.result.kept += 1
            return final
        recs: list[dict[str, Any]] = []
        t, end = m.start_ms(), min(m.end_ms(), self.now_ms)
        while t < end:
            page = await self.rest.get(REST_PATH["fundingRate"], {"symbol": self.symbol, "startTime": t,
                                                                  "endTime": end - 1, "limit": FUNDING_PAGE}, 1)
            try:
                page = sorted(({"t": int(r["fundingTime"]), "rate": str(r["fundingRate"])} for r in page
                               if t <= int(r["fundingTime"]) < end), key=lambda r: r["t"])
            except (TypeError, ValueError, KeyError):
                raise DownloadError("GET /fapi/v1/fundingRate: not a list of funding records") from None
            if not page:
                break
            recs += page
            t = page[-1]["t"] + 1
        if not recs:
            return None
        out = io.StringIO()
        out.write(FUNDING_HEADER + "\n")
        times = [r["t"] for r in recs]
        for i, r in enumerate(recs):
            out.write(f"{times[i]},{_interval_hours(times, i)},{r['rate']}\n")
        return self._write_rest(part, final, out.getvalue())

    def _write_rest(self, part: Part, final: Path, text: str) -> Path:
        tmp = part.partial_path(self.out, ".csv.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        # The file's time says when it was fetched (the run's clock): a file fetched after its
        # period ended is final.
        os.utime(tmp, (self.now_ms / 1000, self.now_ms / 1000))
        try:
            verify_csv(part.kind, tmp, f"{part.name} (REST)")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        self.result.fetched += 1
        self.progress.file_done()
        return final


def _written_after(path: Path, period_end_ms: int) -> bool:
    """A REST file is final once fetched a minute after its period ended (the last candle
    closed and settled); before that it is fetched again."""
    try:
        return path.stat().st_mtime * 1000 >= period_end_ms + MINUTE_MS
    except OSError:
        return False


def _interval_hours(times: list[int], i: int) -> int:
    """The funding interval of settlement i: the time to the next one (to the previous one
    for the last), as Binance's 1, 2, 4 or 8 h."""
    if len(times) < 2:
        return 8
    gap = times[i + 1] - times[i] if i + 1 < len(times) else times[i] - times[i - 1]
    return min((1, 2, 4, 8), key=lambda h: abs(h * 3_600_000 - gap))


# ---------------------------------------------------------------------- gaps
def gap_report(kind: str, files: list[Path], first_ms: int, end_ms: int) -> str:
    """One line: the series' extent and the gaps left in [first_ms, end_ms)."""
    if not files:
        return f"{kind}: no data in the range"
    if kind == "fundingRate":
        return _funding_gaps(load_funding(files).times, first_ms, end_ms)
    c = load_klines(files)
    t = c.open_time
    t = t[(t >= first_ms) & (t < end_ms)]
    if len(t) == 0:
        return f"{kind}: no candle in the range"
    expected = (end_ms - first_ms) // MINUTE_MS
    edges = [(first_ms, int(t[0]))] if t[0] > first_ms else []
    steps = (t[1:] - t[:-1])
    for i in (steps > MINUTE_MS).nonzero()[0]:
        edges.append((int(t[i]) + MINUTE_MS, int(t[i + 1])))
    last_due = end_ms - MINUTE_MS
    if t[-1] < last_due:
        edges.append((int(t[-1]) + MINUTE_MS, end_ms))
    head = f"{kind}: {len(t):,} of {expected:,} candles {_utc(int(t[0]))} → {_utc(int(t[-1]))}"
    if not edges:
        return head + ", no gap"
    missing = sum((b - a) // MINUTE_MS for a, b in edges)
    shown = "; ".join(f"{_utc(a)} → {_utc(b - MINUTE_MS)}" for a, b in edges[:5])
    more = f"; and {len(edges) - 5} more" if len(edges) > 5 else ""
    return head + f", {len(edges)} gap(s), {missing:,} minutes missing: {shown}{more}"


def _funding_gaps(times: Any, first_ms: int, end_ms: int) -> str:
    """Settlements come at most 8 h apart: a longer spacing (or a range edge further than
    8 h from the first / last settlement) is a gap."""
    most = 8 * 3_600_000 + MINUTE_MS
    t = [int(x) for x in times if first_ms <= x < end_ms]
    head = "fundingRate: " + (f"{len(t):,} settlements {_utc(t[0])} → {_utc(t[-1])}" if t else "no settlement")
    edges = [first_ms, *t, end_ms]
    gaps = [(a, b) for a, b in zip(edges, edges[1:]) if b - a > most]
    if not gaps:
        return head + ", no gap"
    shown = "; ".join(f"{_utc(a)} → {_utc(b)}" for a, b in gaps[:5])
    return head + f", {len(gaps)} gap(s) longer than 8 h: {shown}" + (f"; and {len(gaps) - 5} more" if len(gaps) > 5 else "")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------- entry points
def ensure(symbol: str, first: Month, last: Month, out: Path, *, kinds: Iterable[str] = KINDS,
           base_url: str = DUMP_URL, rest_url: str = REST_URL, jobs: int = 4, progress: bool = False,
           now_ms: int | None = None) -> Result:
    """Download what is missing of [first, last] and report the gaps left (backtest.py uses this)."""
    kinds = list(kinds)
    d = Downloader(symbol, out, base_url=base_url, rest_url=rest_url, jobs=jobs, progress=progress, now_ms=now_ms)
    if first.start_ms() >= d.now_ms:
        raise ValueError(f"--from {first} is in the future")
    res = asyncio.run(d.run(kinds, months_between(first, last)))
    end = min(last.end_ms(), d.now_ms // MINUTE_MS * MINUTE_MS)
    for kind in kinds:
        try:
            res.gaps[kind] = gap_report(kind, res.files.get(kind, []), first.start_ms(), end)
        except (DataError, FundingError) as e:
            res.errors.append(str(e))
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="download.py", description="Download Binance USDⓈ-M futures data "
                                "(klines, funding rates, mark-price klines), verified against the dump's checksums.")
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDC")
    p.add_argument("--from", dest="first", required=True, metavar="YYYY-MM", help="first month")
    p.add_argument("--to", dest="last", required=True, metavar="YYYY-MM", help="last month (inclusive)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {','.join(KINDS)} (default all)")
    p.add_argument("--out", default="data", help="output folder (default data/)")
    p.add_argument("--base-url", default=DUMP_URL, help=f"the data dump (default {DUMP_URL})")
    p.add_argument("--rest-url", default=REST_URL, help=f"REST for days not dumped yet (default {REST_URL})")
    p.add_argument("--jobs", type=int, default=4, help="concurrent downloads (default 4)")
    return p


def parse_request(args: argparse.Namespace) -> tuple[str, Month, Month, list[str]]:
    symbol = args.symbol.strip().upper()
    if not re.fullmatch(r"[A-Z0-9]{3,20}", symbol):
        raise ValueError(f"--symbol {args.symbol!r} is not a symbol such as BTCUSDC")
    first, last = Month.parse(args.first, "--from"), Month.parse(args.last, "--to")
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(KINDS)}")
    if not 1 <= args.jobs <= 32:
        raise ValueError(f"--jobs must be 1..32 (got {args.jobs})")
    return symbol, first, last, kinds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        symbol, first, last, kinds = parse_request(args)
        res = ensure(symbol, first, last, Path(args.out), kinds=kinds, base_url=args.base_url,
                     rest_url=args.rest_url, jobs=args.jobs, progress=sys.stderr.isatty())
    except ValueError as e:
        print(f"download.py: error: {e}", file=sys.stderr)
        return 2
    for line in res.gaps.values():
        print(f"{symbol} {line}")
    print(f"{res.fetched} file(s) fetched, {res.kept} already there, under {args.out}")
    for err in res.errors:
        print(f"download.py: error: {err}", file=sys.stderr)
    return 1 if res.errors else 0


if __name__ == "__main__":
    sys.exit(main())
