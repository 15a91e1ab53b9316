"""download.py against a loopback HTTP server laid out like Binance's data dump (real zips
and CHECKSUM files built from a ../shared/data month), and the local exchange's REST for
the days not dumped.  Nothing reaches the internet."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import zipfile
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

import backtest
import download
from download import Month, ensure
from exchange_api import SymbolFilters
from market.data import load_klines

DATA_DIR = Path(os.environ.get("GM_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
MONTH_FILE = DATA_DIR / "binance-futures-um-NEARUSDT-1m-2024-09.csv"
pytestmark = pytest.mark.skipif(not MONTH_FILE.is_file(), reason=f"real kline month {MONTH_FILE} is absent")
SYM = "NEARUSDT"
NEAR = SymbolFilters(SYM, tick_size=0.001, step_size=0.1, min_qty=0.1, min_notional=5.0)
SEP = Month(2024, 9)
NOW_MS = Month(2026, 12).start_ms()
DAY = 86_400_000


def zip_bytes(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}.csv", data)
    return buf.getvalue()


class Dump:
    """A dump tree in memory, served over HTTP on 127.0.0.1 with Range support; it records
    every request and can cut one download short once."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: dict[str, int] = {}
        self.ignore_range = False        # a mirror that answers 200 with the whole file to a Range request
        self.url = ""
        self._runner: web.AppRunner | None = None

    def put(self, part: download.Part, csv_bytes: bytes, *, checksum: str | None = None,
            zipped: bytes | None = None) -> None:
        z = zipped if zipped is not None else zip_bytes(part.name, csv_bytes)
        path = f"/data/{part.folder}/{part.name}.zip"
        self.files[path] = z
        digest = checksum or hashlib.sha256(z).hexdigest()
        self.files[path + ".CHECKSUM"] = f"{digest}  {part.name}.zip\n".encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        self.requests.append((request.path, rng))
        body = self.files.get(request.path)
        if body is None:
            return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>")
        if self.ignore_range:
            rng = None
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body) and rng:
            return web.Response(status=416)
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.content_length = len(body) - start
        await resp.prepare(request)
        cut = self.cut_once.pop(request.path, None)
        if cut is not None:
            await resp.write(body[start:start + cut])
            request.transport.close()           # the connection drops mid-file
            return resp
        await resp.write(body[start:])
        await resp.write_eof()
        return resp

    async def start(self) -> "Dump":
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def dump():
    d = await Dump().start()
    yield d
    await d.stop()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def month_bytes() -> bytes:
    return MONTH_FILE.read_bytes()


def funding_bytes(month: Month, rate: str = "0.00010000") -> bytes:
    rows = ["calc_time,funding_interval_hours,last_funding_rate"]
    rows += [f"{t + 7},8,{rate}" for t in range(month.start_ms(), month.end_ms(), 8 * 3_600_000)]
    return ("\n".join(rows) + "\n").encode()


def day_slices(data: bytes) -> dict[str, bytes]:
    """The month cut into daily files (each with the header, as the daily dump has it)."""
    lines = data.decode().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    out: dict[str, list[str]] = {}
    for r in rows:
        t = int(r.split(",", 1)[0])
        day = f"{SEP}-{(t - SEP.start_ms()) // DAY + 1:02d}"
        out.setdefault(day, [header]).append(r)
    return {d: "".join(v).encode() for d, v in out.items()}


async def run(dump: Dump, out: Path, kinds=("klines",), rest_url: str | None = None, first=SEP, last=SEP):
    return await asyncio.to_thread(ensure, SYM, first, last, out, kinds=kinds, base_url=dump.url,
                                   rest_url=rest_url or closed_port_url(), jobs=4, now_ms=NOW_MS)


def monthly(kind: str) -> download.Part:
    return download.Part(kind, SYM, str(SEP), "monthly")


# ---------------------------------------------------------------------- the dump
async def test_month_extracted_byte_exact_and_a_second_run_fetches_nothing(dump, tmp_path):
    data = month_bytes()
    dump.put(monthly("klines"), data)
    dump.put(monthly("markPriceKlines"), data)
    dump.put(monthly("fundingRate"), funding_bytes(SEP))
    res = await run(dump, tmp_path, kinds=download.KINDS)
    assert res.errors == []
    csv = tmp_path / "futures/um/monthly/klines/NEARUSDT/1m/NEARUSDT-1m-2024-09.csv"
    assert res.files["klines"] == [csv]
    assert csv.read_bytes() == data
    assert (tmp_path / "futures/um/monthly/fundingRate/NEARUSDT/NEARUSDT-fundingRate-2024-09.csv").read_bytes() \
        == funding_bytes(SEP)
    assert res.fetched == 3
    assert res.gaps["klines"].endswith("no gap") and "43,200 of 43,200" in res.gaps["klines"]
    assert "90 settlements" in res.gaps["fundingRate"]
    assert not list((tmp_path / ".partial").rglob("*.*"))       # nothing half-done left
    dump.requests.clear()
    again = await run(dump, tmp_path, kinds=download.KINDS)
    assert (again.fetched, again.kept, dump.requests) == (0, 3, [])


async def test_checksum_mismatch_is_refused_with_one_line_and_nothing_left(dump, tmp_path, capsys):
    dump.put(monthly("klines"), month_bytes(), checksum="0" * 64)
    code = await asyncio.to_thread(download.main, [
        "--symbol", SYM, "--from", "2024-09", "--to", "2024-09", "--kinds", "klines", "--out", str(tmp_path),
        "--base-url", dump.url, "--rest-url", closed_port_url()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "NEARUSDT-1m-2024-09.zip: SHA-256 mismatch" in err[0]
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize("where, raised", [(0.5, "BadZipFile"), (0.0002, "error")])
async def test_corrupt_zip_is_refused(dump, tmp_path, where, raised):
    """Damage inside the compressed data: a CRC mismatch (BadZipFile) or a broken deflate
    stream (zlib.error); both are refused, and the partial download is dropped."""
    z = bytearray(zip_bytes(monthly("klines").name, month_bytes()))
    at = max(60, int(len(z) * where))
    z[at:at + 64] = b"\xff" * 64
    dump.put(monthly("klines"), b"", zipped=bytes(z))        # its CHECKSUM matches the damaged bytes
    res = await run(dump, tmp_path)
    assert len(res.errors) == 1 and "NEARUSDT-1m-2024-09.zip: corrupt zip" in res.errors[0], res.errors
    assert f"({raised}:" in res.errors[0]
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.part"))


async def test_truncated_csv_inside_a_good_zip_is_refused_naming_the_line(dump, tmp_path):
    cut = month_bytes().rstrip(b"\n").rsplit(b",", 1)[0]      # the last line lost its last column
    dump.put(monthly("klines"), cut)
    res = await run(dump, tmp_path)
    assert len(res.errors) == 1
    assert "NEARUSDT-1m-2024-09.zip: refused: line 43201: expected 12 columns, got 11" in res.errors[0]
    assert not list(tmp_path.rglob("*.csv"))


async def test_an_interrupted_download_resumes_where_it_stopped(dump, tmp_path):
    data = month_bytes()
    part = monthly("klines")
    dump.put(part, data)
    zpath = f"/data/{part.folder}/{part.name}.zip"
    dump.cut_once[zpath] = 200_000
    first = await run(dump, tmp_path)
    assert len(first.errors) == 1 and "download interrupted" in first.errors[0]
    assert not list(tmp_path.rglob("*.csv"))
    partial = part.partial_path(tmp_path, ".zip.part")
    assert partial.stat().st_size == 200_000
    dump.requests.clear()
    second = await run(dump, tmp_path)
    assert second.errors == []
    assert (zpath, "bytes=200000-") in dump.requests                    # only the rest was asked for
    assert part.csv_path(tmp_path).read_bytes() == data
    assert not partial.exists()


async def test_a_mirror_ignoring_range_gives_the_whole_file_again(dump, tmp_path):
    data = month_bytes()
    part = monthly("klines")
    dump.put(part, data)
    dump.cut_once[f"/data/{part.folder}/{part.name}.zip"] = 150_000
    assert (await run(dump, tmp_path)).errors
    dump.ignore_range = True                 # 200 and the whole file: the partial is not appended to
    res = await run(dump, tmp_path)
    assert res.errors == [] and part.csv_path(tmp_path).read_bytes() == data


# ---------------------------------------------------------------------- month → days → REST
async def test_a_month_not_dumped_comes_from_daily_files_then_rest(dump, tmp_path, start_exchange):
    data = month_bytes()
    days = day_slices(data)
    rest_days = ("2024-09-29", "2024-09-30")
    for day, body in days.items():
        if day not in rest_days:
            dump.put(download.Part("klines", SYM, day, "daily"), body)
    # The days not dumped yet are on the exchange: the local exchange replays them and
    # answers /fapi/v1/klines and /fapi/v1/fundingRate for them.
    tail = tmp_path / "tail.csv"
    tail.write_bytes(b"".join(days[d] if i == 0 else days[d].split(b"\n", 1)[1] for i, d in enumerate(rest_days)))
    ex = await start_exchange(symbols=[SYM], filters={SYM: NEAR}, data={SYM: [tail]}, funding_rate=0.0001)
    assert await ex.step(2 * 1440) == 2 * 1440
    out = tmp_path / "data"
    ex.faults.http_429_next = 2              # two refusals (Retry-After: 1) on the way: obeyed, not fatal
    ex.faults.retry_after = 1                # (USD-M does not promise the header; this mirror sends it)
    res = await run(dump, out, kinds=("klines", "fundingRate"), rest_url=ex.rest_url)
    assert res.errors == []
    assert ex.stats()["responses"].get("429") == 2
    files = res.files["klines"]
    assert len(files) == 30
    assert [f.parent.parts[-4] for f in files].count("rest") == 2
    assert (out / "futures/um/daily/klines/NEARUSDT/1m/NEARUSDT-1m-2024-09-01.csv").read_bytes() == days["2024-09-01"]
    got, want = load_klines(files), load_klines([MONTH_FILE])
    assert np.array_equal(got.open_time, want.open_time)
    for col in ("open", "high", "low", "close", "volume"):
        assert np.allclose(getattr(got, col), getattr(want, col), rtol=0, atol=1e-9), col
    assert res.gaps["klines"].endswith("no gap")
    # Funding: no monthly dump → REST; the exchange settled 00/08/16 UTC on the replayed days.
    fund = res.files["fundingRate"]
    assert [f.name for f in fund] == ["NEARUSDT-fundingRate-2024-09.csv"] and "rest" in fund[0].parts
    assert "6 settlements" in res.gaps["fundingRate"]
    assert "1 gap(s) longer than 8 h: 2024-09-01 00:00 → 2024-09-29 00:00" in res.gaps["fundingRate"]
    requests = ex.stats()["requests"]
    assert requests.get("GET /fapi/v1/klines", 0) >= 2 and requests.get("GET /fapi/v1/fundingRate", 0) >= 1
    # Again: the REST days are final (their last minute is in) and nothing is fetched.
    dump.requests.clear()
    again = await run(dump, out, kinds=("klines",), rest_url=ex.rest_url)
    assert again.fetched == 0 and again.errors == []
    assert not [p for p, _ in dump.requests if p.endswith(".zip")]


async def test_rest_waits_for_the_minute_before_the_weight_nears_the_limit(start_exchange):
    """The weight read from X-MBX-USED-WEIGHT-1M: a request that would pass 80 % of the
    limit waits for the minute to turn (the wait recorded, not slept)."""
    import aiohttp
    ex = await start_exchange(symbols=[SYM], filters={SYM: NEAR}, data={SYM: [MONTH_FILE]})
    waits: list[float] = []

    async def no_sleep(s: float) -> None:
        waits.append(s)
    async with aiohttp.ClientSession() as session:
        rest = download.RestClient(session, ex.rest_url, weight_limit=40, sleep=no_sleep)
        for _ in range(3):
            await rest.get("/fapi/v1/klines", {"symbol": SYM, "interval": "1m", "limit": 1500}, 10)
        assert rest.used == 30 and waits == []        # 30 + 10 > 32: the next one waits
        await rest.get("/fapi/v1/klines", {"symbol": SYM, "interval": "1m", "limit": 1500}, 10)
    assert len(waits) == 1 and 59 < waits[0] <= 60.5


async def test_today_from_rest_has_closed_candles_only_and_is_fetched_again(tmp_path, start_exchange):
    """The day still under way: the candle still forming is left out, the file is not final,
    and the next run (later) fetches the day again, up to its new now."""
    day = day_slices(month_bytes())["2024-09-30"]
    tail = tmp_path / "day.csv"
    tail.write_bytes(day)
    ex = await start_exchange(symbols=[SYM], filters={SYM: NEAR}, data={SYM: [tail]})
    await ex.step(1440)
    start = download.day_start_ms("2024-09-30")
    noon = start + 12 * 3_600_000 + 30_000           # 12:00:30: the 12:00 candle is still forming

    async def fetch(now_ms: int) -> tuple[Path, download.Result]:
        d = download.Downloader(SYM, tmp_path / "data", base_url=closed_port_url(), rest_url=ex.rest_url,
                                now_ms=now_ms)
        async with aiohttp.ClientSession() as session:
            d.rest = download.RestClient(session, ex.rest_url)
            return await d.klines_from_rest("klines", "2024-09-30"), d.result
    f, _ = await fetch(noon)
    c = load_klines([f])
    assert len(c) == 720 and int(c.open_time[-1]) == start + 719 * 60_000
    f2, later = await fetch(start + DAY + 120_000)
    assert len(load_klines([f2])) == 1440 and later.fetched == 1       # not final: fetched again
    _, again = await fetch(start + DAY + 240_000)
    assert (again.fetched, again.kept) == (0, 1)                       # final now


# ---------------------------------------------------------------------- the command line
@pytest.mark.parametrize("args, says", [
    (["--from", "2024-13", "--to", "2024-12"], "--from '2024-13' is not a month"),
    (["--from", "2024-10", "--to", "2024-09"], "--to 2024-09 is before --from 2024-10"),
    (["--from", "2024-09", "--to", "2024-09", "--kinds", "klines,trades"], "--kinds: unknown trades"),
    (["--from", "2024-09", "--to", "2024-09", "--jobs", "0"], "--jobs must be 1..32"),
    (["--from", "2099-01", "--to", "2099-02"], "--from 2099-01 is in the future"),
])
def test_bad_arguments_get_one_line(args, says, capsys, tmp_path):
    code = download.main(["--symbol", SYM, "--out", str(tmp_path), "--base-url", closed_port_url(), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not list(tmp_path.rglob("*"))


def test_an_unreachable_dump_is_an_error_not_a_gap(tmp_path):
    res = ensure(SYM, SEP, SEP, tmp_path, kinds=("klines",), base_url=closed_port_url(),
                 rest_url=closed_port_url(), now_ms=NOW_MS)
    assert res.errors and "CHECKSUM" in res.errors[0]


# ---------------------------------------------------------------------- the backtest on it
async def test_backtest_downloads_what_is_missing_and_uses_it(dump, tmp_path):
    data = month_bytes()
    dump.put(monthly("klines"), data)
    dump.put(monthly("markPriceKlines"), data)
    dump.put(monthly("fundingRate"), funding_bytes(SEP, rate="0.00050000"))
    common = ["--config", str(Path(backtest.__file__).parent / "config_btc.txt"), "--symbol", SYM,
              "--tick-size", "0.001", "--step-size", "0.1", "--no-chart"]
    argv = common + ["--from", "2024-09", "--to", "2024-09", "--data-dir", str(tmp_path / "data"),
                     "--data-url", dump.url, "--rest-url", closed_port_url(), "--out", str(tmp_path / "bt")]
    assert await asyncio.to_thread(backtest.main, argv) == 0
    got = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert got["candles"] == 43_200

    def by_hand(*extra: str) -> dict:
        assert backtest.main(common + ["--data", str(MONTH_FILE), "--out", str(tmp_path / "x"), *extra]) == 0
        return json.loads((tmp_path / "x" / "summary.json").read_text())
    # The downloaded 0.05 % funding was charged (the same as that rate given by hand), not the
    # constant 0.01 % default; the mark file (here the same prices) changes nothing else.
    assert got["funding_paid"] == pytest.approx(by_hand("--funding-rate", "0.0005")["funding_paid"], abs=1e-9)
    assert got["funding_paid"] != pytest.approx(by_hand()["funding_paid"], abs=1e-6)
    dump.requests.clear()
    assert await asyncio.to_thread(backtest.main, argv) == 0     # the second run reads what it has
    assert dump.requests == []
