"""Tests for market_data: loader formats and errors, Candles, synthetic
market, chaining, and the real kline files in /work/shared/data."""

from __future__ import annotations

import itertools
import re
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from market.data import (  # noqa: E402
    COLUMNS,
    Candles,
    DataError,
    _linear_recurrence,
    chain_candles,
    find_invalid_row,
    load_klines,
    synthetic_klines,
    write_klines_csv,
)

DATA_DIR = Path("/work/shared/data")
FUTURES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
FIL_ROWS_12 = [
    "1711929600000,9.972,9.984,9.971,9.982,36627.4,1711929659999,365473.7168,1245,26505.1,264471.0462,0",
    "1711929660000,9.983,9.989,9.977,9.982,51514.7,1711929719999,514219.4488,836,29792.0,297396.9390,0",
    "1711929720000,9.982,9.990,9.980,9.985,1000.0,1711929779999,9985.0,10,500.0,4992.5,0",
]


def write_text(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    path.write_bytes((("\ufeff" if bom else "") + newline.join(lines) + newline).encode())
    return path


def assert_same(a: Candles, b: Candles) -> None:
    assert len(a) == len(b)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def expect_data_error(paths: list[Path], *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        load_klines(paths)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


@pytest.fixture
def candles() -> Candles:
    return synthetic_klines(500, seed=7, start_price=9.5, tick=0.001)


# --------------------------------------------------------------- formats


def test_raw_futures_rows_parse_to_exact_values(tmp_path: Path) -> None:
    c = load_klines([write_text(tmp_path / "fil.csv", [FUTURES_HEADER, *FIL_ROWS_12])])
    assert c.open_time.tolist() == [1711929600000, 1711929660000, 1711929720000]
    assert c.open.tolist() == [9.972, 9.983, 9.982]
    assert c.high.tolist() == [9.984, 9.989, 9.990]
    assert c.low.tolist() == [9.971, 9.977, 9.980]
    assert c.close.tolist() == [9.982, 9.982, 9.985]
    assert c.volume.tolist() == [36627.4, 51514.7, 1000.0]
    assert c.open_time.dtype == np.int64 and c.close.dtype == np.float64
    assert c.time_iso(0) == "2024-04-01T00:00:00Z"


def test_header_and_no_header_load_identically(tmp_path: Path, candles: Candles) -> None:
    with_header, without = tmp_path / "h.csv", tmp_path / "n.csv"
    write_klines_csv(candles, with_header, header=True)
    write_klines_csv(candles, without, header=False)
    assert with_header.read_text().startswith("open_time,")
    assert without.read_text()[0].isdigit()
    assert_same(load_klines([with_header]), candles)
    assert_same(load_klines([without]), candles)


def test_raw_rows_without_header_keep_first_row(tmp_path: Path) -> None:
    c = load_klines([write_text(tmp_path / "n.csv", FIL_ROWS_12)])
    assert len(c) == 3 and c.open[0] == 9.972


def test_twelve_and_six_columns_load_identically(tmp_path: Path, candles: Candles) -> None:
    p12, p6 = tmp_path / "c12.csv", tmp_path / "c6.csv"
    write_klines_csv(candles, p12, columns=12)
    write_klines_csv(candles, p6, columns=6)
    assert p12.read_text().splitlines()[1].count(",") == 11
    assert p6.read_text().splitlines()[1].count(",") == 5
    assert_same(load_klines([p12]), load_klines([p6]))
    assert_same(load_klines([p6]), candles)


def test_microsecond_timestamps_give_millisecond_open_time(tmp_path: Path, candles: Candles) -> None:
    ms, us = tmp_path / "ms.csv", tmp_path / "us.csv"
    write_klines_csv(candles, ms, columns=6)
    write_klines_csv(candles, us, columns=6, time_unit="us")
    assert us.read_text().splitlines()[1].split(",")[0] == str(int(candles.open_time[0]) * 1000)
    assert_same(load_klines([us]), load_klines([ms]))
    raw = write_text(tmp_path / "spot2025.csv", ["1735689600000000,1.5,1.6,1.4,1.55,10"])
    c = load_klines([raw])
    assert c.open_time.tolist() == [1735689600000]
    assert c.time_iso(0) == "2025-01-01T00:00:00Z"


def test_crlf_line_endings_and_utf8_bom(tmp_path: Path) -> None:
    path = write_text(tmp_path / "win.csv", [FUTURES_HEADER, *FIL_ROWS_12], newline="\r\n", bom=True)
    c = load_klines([path])
    assert len(c) == 3 and c.volume[-1] == 1000.0
    no_header = write_text(tmp_path / "win2.csv", FIL_ROWS_12, newline="\r\n", bom=True)
    assert len(load_klines([no_header])) == 3  # BOM must not turn row 1 into a "header"


def test_write_load_round_trip_is_exact_for_long_series(tmp_path: Path) -> None:
    c = synthetic_klines(20_000, seed=3)
    path = tmp_path / "long.csv"
    write_klines_csv(c, path)
    assert_same(load_klines([path]), c)


# --------------------------------------------------------------- joining


def test_files_join_in_time_order_regardless_of_argument_order(
    tmp_path: Path, candles: Candles
) -> None:
    pieces = [candles.slice(0, 200), candles.slice(150, 350), candles.slice(300, 500)]
    paths = []
    for i, piece in enumerate(pieces):
        paths.append(tmp_path / f"part{i}.csv")
        write_klines_csv(piece, paths[-1], columns=6 if i == 1 else 12, header=i != 2)
    for order in itertools.permutations(paths):
        joined = load_klines(list(order))
        assert_same(joined, candles)  # overlaps (150-199, 300-349) dropped once


def test_duplicate_open_time_keeps_row_from_earlier_argument(tmp_path: Path) -> None:
    a = write_text(tmp_path / "a.csv", ["60000,10,11,9,10.5,1", "120000,10,11,9,10.1,1"])
    b = write_text(tmp_path / "b.csv", ["120000,10,12,9,11.9,2", "180000,10,11,9,10,1"])
    ab, ba = load_klines([a, b]), load_klines([b, a])
    assert ab.open_time.tolist() == ba.open_time.tolist() == [60000, 120000, 180000]
    assert ab.close[1] == 10.1 and ba.close[1] == 11.9


def test_out_of_order_rows_within_a_file_are_sorted(tmp_path: Path) -> None:
    rows = ["180000,3,3,3,3,1", "60000,1,1,1,1,1", "120000,2,2,2,2,1", "60000,9,9,9,9,1"]
    c = load_klines([write_text(tmp_path / "shuffled.csv", rows)])
    assert c.open_time.tolist() == [60000, 120000, 180000]
    assert c.close.tolist() == [1.0, 2.0, 3.0]  # first of the two 60000 rows wins


def test_gap_is_preserved_not_filled(tmp_path: Path, candles: Candles) -> None:
    before, after = candles.slice(0, 100), candles.slice(160, 500)
    p1, p2 = tmp_path / "before.csv", tmp_path / "after.csv"
    write_klines_csv(before, p1)
    write_klines_csv(after, p2)
    c = load_klines([p2, p1])
    assert len(c) == 440
    steps = np.diff(c.open_time)
    assert steps[99] == 61 * 60_000
    assert np.count_nonzero(steps != 60_000) == 1


def test_single_path_and_empty_list(tmp_path: Path) -> None:
    path = write_text(tmp_path / "one.csv", FIL_ROWS_12)
    assert len(load_klines(str(path))) == 3  # a bare path is one file, not characters
    with pytest.raises(ValueError, match="no files"):
        load_klines([])


# --------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    expect_data_error([path], str(path), "missing file")


def test_missing_file_among_good_ones(tmp_path: Path) -> None:
    good = write_text(tmp_path / "good.csv", FIL_ROWS_12)
    expect_data_error([good, tmp_path / "gone.csv"], "gone.csv", "missing file")


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    expect_data_error([path], str(path), "empty file")


def test_header_only_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "hdr.csv", [FUTURES_HEADER])
    expect_data_error([path], str(path), "no data rows")


def test_non_numeric_cell_names_file_line_and_column(tmp_path: Path) -> None:
    rows = [FUTURES_HEADER, *FIL_ROWS_12]
    rows[3] = rows[3].replace("9.990", "9.99O")  # letter O typo, file line 4
    path = write_text(tmp_path / "typo.csv", rows)
    msg = expect_data_error([path], str(path), "line 4", "high", "'9.99O'")
    assert msg.startswith(f"{path}: line 4:")


def test_non_numeric_cell_line_number_without_header(tmp_path: Path) -> None:
    rows = [*FIL_ROWS_12, "1711929780000,9.98,9.99,abc,9.985,1"]
    path = write_text(tmp_path / "typo.csv", rows)
    expect_data_error([path], str(path), "line 4", "low", "'abc'")


def test_three_column_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "three.csv", ["open_time,open,close", "60000,1,2", "120000,2,3"])
    expect_data_error([path], str(path), "got 3")


def test_short_row_in_the_middle(tmp_path: Path) -> None:
    rows = [FUTURES_HEADER, FIL_ROWS_12[0], FIL_ROWS_12[1], "1711929720000,9.98,9.99", FIL_ROWS_12[2]]
    path = write_text(tmp_path / "ragged.csv", rows)
    expect_data_error([path], str(path), "line 4", "got 3")


@pytest.mark.parametrize("last, says", [
    (lambda r: r.rsplit(",", 1)[0], "expected 12 columns, got 11"),      # cut before its last column
    (lambda r: r.rsplit(",", 1)[0] + ",", "the last column is empty"),    # cut inside it
    (lambda r: r.rsplit(",", 6)[0], "expected 12 columns, got 6"),        # still 6 usable columns
])
@pytest.mark.parametrize("line_end", ["\n", ""])
def test_a_truncated_last_row_is_refused_naming_file_and_line(tmp_path: Path, last, says, line_end) -> None:
    """The rows the loader does not read (columns 7-12) must be whole too: a file cut inside
    its last line is refused, never half-used (it used to load silently)."""
    rows = [FUTURES_HEADER, FIL_ROWS_12[0], FIL_ROWS_12[1], last(FIL_ROWS_12[2])]
    path = tmp_path / "cut.csv"
    path.write_text("\n".join(rows) + line_end, encoding="utf-8")
    msg = expect_data_error([path], str(path), "line 4", says)
    assert "truncated" in msg


def test_a_truncated_file_is_refused_by_the_local_exchange_too(tmp_path: Path) -> None:
    from local_exchange import ExchangeSettings, LocalExchange
    path = write_text(tmp_path / "cut.csv", [FUTURES_HEADER, FIL_ROWS_12[0], FIL_ROWS_12[1].rsplit(",", 1)[0]])
    with pytest.raises(DataError, match="line 3: expected 12 columns, got 11"):
        LocalExchange(ExchangeSettings(symbols=["BTCUSDC"], data={"BTCUSDC": [path]}))


def test_high_below_low(tmp_path: Path) -> None:
    rows = ["60000,10,11,9,10,1", "120000,10,11,9,10,1", "180000,10,8,12,10,1"]
    path = write_text(tmp_path / "inverted.csv", rows)
    expect_data_error([path], str(path), "line 3", "high 8.0 < low 12.0")


def test_high_below_low_line_counts_header(tmp_path: Path) -> None:
    rows = [FUTURES_HEADER, *FIL_ROWS_12]
    rows[2] = rows[2].replace("9.989,9.977", "9.977,9.989")
    path = write_text(tmp_path / "inverted.csv", rows)
    expect_data_error([path], str(path), "line 3", "high 9.977 < low 9.989")


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("120000,10,11,9,12,1", "high 11.0 < max(open 10.0, close 12.0)"),
        ("120000,8,11,9,10,1", "low 9.0 > min(open 8.0, close 10.0)"),
        ("120000,0,11,0,10,1", "price <= 0"),
        ("120000,nan,11,9,10,1", "non-finite"),
        ("120000,10,11,9,10,-5", "volume -5.0"),
        ("120000.5,10,11,9,10,1", "open_time"),
    ],
)
def test_invalid_candle_values(tmp_path: Path, row: str, fragment: str) -> None:
    path = write_text(tmp_path / "bad.csv", ["open_time,o,h,l,c,v", "60000,10,11,9,10,1", row])
    expect_data_error([path], str(path), "line 3", fragment)


def test_zip_archive_is_rejected_with_hint(tmp_path: Path) -> None:
    path = tmp_path / "FILUSDT-1m-2024-04.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("FILUSDT-1m-2024-04.csv", "\n".join(FIL_ROWS_12))
    expect_data_error([path], str(path), "zip")


# --------------------------------------------------------------- Candles


def test_candles_len_slice_and_time_iso() -> None:
    t = 1711929600000 + 60_000 * np.arange(5)
    c = Candles.from_arrays(t, [1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [0, 1, 1, 1, 1])
    assert len(c) == 5
    s = c.slice(1, 4)
    assert len(s) == 3 and s.open.tolist() == [2.0, 3.0, 4.0]
    assert np.shares_memory(s.close, c.close)  # view, no copy in hot loops
    assert c.time_iso(0) == "2024-04-01T00:00:00Z"
    assert c.time_iso(-1) == "2024-04-01T00:04:00Z"
    assert s.time_iso(0) == "2024-04-01T00:01:00Z"


def test_candles_are_read_only_copies() -> None:
    close = np.array([2.0, 3.0])
    c = Candles.from_arrays([0, 60_000], [1.0, 2.0], [2.0, 3.0], [1.0, 2.0], close, [1.0, 1.0])
    close[0] = 1e9
    assert c.close[0] == 2.0
    with pytest.raises(ValueError):
        c.close[0] = 5.0
    with pytest.raises(ValueError):
        c.slice(0, 1).high[0] = 5.0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("low", [1.0, 2.5], "low 2.5 > min"),
        ("high", [2.0, 2.9], "high 2.9 < max"),
        ("open", [1.0, -2.0], "price <= 0"),
        ("close", [2.0, np.inf], "non-finite"),
        ("open_time", [60_000, 60_000], "not after"),
    ],
)
def test_from_arrays_rejects_broken_invariants(field: str, value: list[float], fragment: str) -> None:
    cols = {"open_time": [0, 60_000], "open": [1.0, 2.0], "high": [2.0, 3.0],
            "low": [1.0, 2.0], "close": [2.0, 3.0], "volume": [1.0, 1.0]}
    Candles.from_arrays(**cols)  # the baseline is valid
    cols[field] = value
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Candles.from_arrays(**cols)


def test_from_arrays_rejects_length_mismatch_and_raw_lists() -> None:
    with pytest.raises(ValueError, match="length"):
        Candles.from_arrays([0, 60_000], [1.0], [1.0], [1.0], [1.0], [1.0])
    with pytest.raises(TypeError, match="from_arrays"):
        Candles([0], [1.0], [1.0], [1.0], [1.0], [1.0])  # type: ignore[arg-type]


# --------------------------------------------------------------- synthetic


def test_synthetic_same_seed_identical_different_seed_differs() -> None:
    a, b, other = synthetic_klines(5000, seed=11), synthetic_klines(5000, seed=11), synthetic_klines(5000, seed=12)
    assert_same(a, b)
    assert not np.array_equal(a.close, other.close)
    assert not np.array_equal(a.volume, other.volume)
    assert a.open[0] == other.open[0] == 30000.0


@pytest.mark.parametrize(("start_price", "tick"), [(30000.0, 0.1), (4.03, 0.001), (250.0, 0.01)])
def test_synthetic_ohlc_invariants_and_tick_grid(start_price: float, tick: float) -> None:
    c = synthetic_klines(50_000, seed=5, start_price=start_price, start_time_ms=1_711_929_600_000, tick=tick)
    assert len(c) == 50_000
    assert find_invalid_row(c.open_time, c.open, c.high, c.low, c.close, c.volume) is None
    assert np.all(c.low <= np.minimum(c.open, c.close))
    assert np.all(c.high >= np.maximum(c.open, c.close))
    assert np.all(c.low > 0) and np.all(c.volume > 0)
    assert np.array_equal(c.open[1:], c.close[:-1])  # continuous market
    assert np.all(np.diff(c.open_time) == 60_000) and c.open_time[0] == 1_711_929_600_000
    for prices in (c.open, c.high, c.low, c.close):
        ticks = prices / tick
        assert np.allclose(ticks, np.round(ticks), rtol=0, atol=1e-6)
    assert np.mean(c.high > np.maximum(c.open, c.close)) > 0.5  # wicks usually stick out
    assert np.mean(c.low < np.minimum(c.open, c.close)) > 0.5


def test_synthetic_small_sizes() -> None:
    assert len(synthetic_klines(0, seed=1)) == 0
    one = synthetic_klines(1, seed=1)
    assert len(one) == 1 and one.open[0] == 30000.0


def log_returns(c: Candles) -> np.ndarray:
    return np.diff(np.log(c.close))


def lag1_autocorr(x: np.ndarray) -> float:
    return float(np.corrcoef(x[:-1], x[1:])[0, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_volatility_level_and_clustering(seed: int) -> None:
    r = log_returns(synthetic_klines(43_200, seed=seed))  # 30 days
    assert 0.0003 < 1.4826 * np.median(np.abs(r)) < 0.001  # robust per-minute vol
    assert 0.0005 < r.std() < 0.0015
    clustered = lag1_autocorr(np.abs(r))
    shuffled = lag1_autocorr(np.random.default_rng(seed).permutation(np.abs(r)))
    assert clustered > 0.08, clustered
    assert abs(shuffled) < 0.05  # the statistic itself is not biased upward


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_synthetic_jumps_present_in_five_days(seed: int) -> None:
    r = log_returns(synthetic_klines(5 * 1440, seed=seed))
    big = np.abs(r) > 0.005
    assert 3 <= np.count_nonzero(big) <= 100  # "a few per day", not a storm
    assert np.abs(r).max() < 0.08
    kurtosis = np.mean((r - r.mean()) ** 4) / r.var() ** 2
    assert kurtosis > 10  # fat tails, unlike a Gaussian's 3


def test_synthetic_million_candles_is_vectorised() -> None:
    synthetic_klines(1000, seed=0)  # warm-up
    start = time.perf_counter()
    c = synthetic_klines(1_000_000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(c) == 1_000_000
    assert elapsed < 3.0, f"{elapsed:.2f}s: a per-candle Python loop crept in?"


def test_linear_recurrence_matches_naive_loop() -> None:
    rng = np.random.default_rng(0)
    n = 5000  # spans several internal blocks
    a = 0.9 + 0.1 * rng.standard_normal(n) ** 2
    b = rng.uniform(0, 1e-8, n)
    expected = np.empty(n)
    x = 5e-7
    for t in range(n):
        x = a[t] * x + b[t]
        expected[t] = x
    np.testing.assert_allclose(_linear_recurrence(a, b, 5e-7), expected, rtol=1e-9)


# --------------------------------------------------------------- chaining


def test_chain_candles_continuity() -> None:
    first = synthetic_klines(300, seed=1, start_price=10.0, start_time_ms=0, tick=0.001)
    mid_full = synthetic_klines(400, seed=2, start_price=40.0, start_time_ms=5_000_000_000, tick=0.001)
    mid = Candles.from_arrays(  # with a 10-minute internal gap
        np.concatenate([mid_full.open_time[:200], mid_full.open_time[210:]]),
        *(np.concatenate([getattr(mid_full, k)[:200], getattr(mid_full, k)[210:]])
          for k in ("open", "high", "low", "close", "volume")),
    )
    last = synthetic_klines(100, seed=3, start_price=2.0, start_time_ms=9_000_000_000, tick=0.001)
    c = chain_candles([first, mid, last])

    assert len(c) == len(first) + len(mid) + len(last)
    assert find_invalid_row(c.open_time, c.open, c.high, c.low, c.close, c.volume) is None
    assert_same(c.slice(0, 300), first)
    for boundary in (300, 300 + len(mid)):
        assert c.open[boundary] == pytest.approx(c.close[boundary - 1], rel=1e-12)
        assert c.open_time[boundary] == c.open_time[boundary - 1] + 60_000
    part = c.slice(300, 300 + len(mid))
    np.testing.assert_allclose(part.close / part.open, mid.close / mid.open, rtol=1e-12)
    np.testing.assert_array_equal(np.diff(part.open_time), np.diff(mid.open_time))
    assert np.count_nonzero(np.diff(c.open_time) != 60_000) == 1  # only mid's own gap
    np.testing.assert_array_equal(part.volume, mid.volume)


def test_chain_candles_needs_data() -> None:
    with pytest.raises(ValueError):
        chain_candles([])
    one = synthetic_klines(10, seed=1)
    assert_same(chain_candles([one, synthetic_klines(0, seed=2)]), one)


# --------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def readme_rows() -> dict[str, int]:
    if not DATA_DIR.is_dir():
        pytest.skip(f"real kline data folder {DATA_DIR} is absent")
    rows = {}
    for line in (DATA_DIR / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*(\S+\.csv)\s*\|[^|]*\|\s*([\d,]+)\s*\|", line)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    assert len(rows) == 6, rows
    return rows


def test_every_real_file_loads_with_readme_row_count(readme_rows: dict[str, int]) -> None:
    assert set(readme_rows) == {p.name for p in DATA_DIR.glob("*.csv")}
    for name, expected in readme_rows.items():
        c = load_klines([DATA_DIR / name])
        assert len(c) == expected, name
        assert find_invalid_row(c.open_time, c.open, c.high, c.low, c.close, c.volume) is None
        month = re.search(r"(\d{4}-\d{2})", name).group(1)
        assert c.time_iso(0) == f"{month}-01T00:00:00Z", name
        assert np.all(np.diff(c.open_time) == 60_000), name  # these dumps have no gaps


def test_all_real_files_together(readme_rows: dict[str, int]) -> None:
    names = sorted(readme_rows)
    c = load_klines([DATA_DIR / n for n in names])
    # The BTCUSD and BTCUSDC files cover the same minutes, so one set of
    # timestamps is dropped as duplicates; the other four months are distinct.
    assert len(c) == sum(readme_rows.values()) - 30_240
    assert np.all(np.diff(c.open_time) > 0)
    btcusd = load_klines([DATA_DIR / "binanceus-spot-BTCUSD-1m-2023-03-01_21.csv"])
    first_after = np.searchsorted(c.open_time, btcusd.open_time[0])
    np.testing.assert_array_equal(c.close[first_after:first_after + len(btcusd)], btcusd.close)
