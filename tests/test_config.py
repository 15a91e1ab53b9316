"""Tests for config.py: real files in tmp_path, no mocks."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import ConfigError, GridConfig, config_path_for, load_config, parse_config  # noqa: E402

# The seed's BTC file; line numbers below refer to this layout (1-based).
BASE_LINES = [
    "INITIAL_CAPITAL=1000.0",  # 1
    "LEVERAGE_LONG=20",  # 2
    "LEVERAGE_SHORT=5",  # 3
    "TRADE_DIRECTION=LONG",  # 4
    "GRID_RANGE_PCT=0.040",  # 5
    "MAX_ENTRY_LEVEL=4",  # 6
    "ENTRY_RATIOS=0.05,0.20,0.25,0.50",  # 7
    "LEVEL_DISTANCES=0.005,0.010,0.040,0.045",  # 8
    "SL_DISTANCE=0.05",  # 9
    "TP_PCT=0.005",  # 10
    "BE_PCT=0.001",  # 11
]
LINE_OF = {line.split("=")[0]: i for i, line in enumerate(BASE_LINES, start=1)}


def write(tmp_path: Path, lines: list[str], name: str = "config_test.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_value(key: str, value: str) -> list[str]:
    """BASE_LINES with one key's value replaced, same line numbers."""
    return [f"{key}={value}" if line.startswith(key + "=") else line for line in BASE_LINES]


def expect_error(tmp_path: Path, lines: list[str], *fragments: str) -> ConfigError:
    path = write(tmp_path, lines)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def expect_key_error(tmp_path: Path, key: str, value: str, *fragments: str) -> ConfigError:
    """Replace key's value; the error must name file:line and key."""
    err = expect_error(
        tmp_path, with_value(key, value), f":{LINE_OF[key]}: {key}: ", *fragments
    )
    assert err.line == LINE_OF[key] and err.key == key
    return err


# ------------------------------------------------------------ shipped files


SEED = dict(
    initial_capital=1000.0,
    capital_ratio=0.33,
    leverage_long=20,
    leverage_short=5,
    trade_direction="LONG",
    max_entry_level=4,
    entry_ratios=(0.05, 0.20, 0.25, 0.50),
    level_distances=(0.005, 0.010, 0.040, 0.045),
    sl_distance=0.05,
    tp_pct=0.005,
    be_pct=0.001,
    maker_fee=0.0,
    taker_fee=0.0004,
)


@pytest.mark.parametrize("sym, grid_range", [("btc", 0.040), ("eth", 0.020)])
def test_shipped_files_have_seed_values(sym: str, grid_range: float) -> None:
    path = config_path_for(sym)
    assert path.name == f"config_{sym}.txt"
    assert path.parent == Path(__file__).resolve().parents[1]
    cfg = load_config(path)
    assert cfg == GridConfig(**SEED, grid_range_pct=grid_range, source=str(path))
    assert type(cfg.leverage_long) is int and type(cfg.entry_ratios) is tuple
    assert cfg.leverage == 20 and cfg.side_sign == 1


def test_shipped_files_differ_only_in_grid_range() -> None:
    btc, eth = load_config(config_path_for("btc")), load_config(config_path_for("eth"))
    assert dataclasses.replace(eth, grid_range_pct=btc.grid_range_pct, source="") == (
        dataclasses.replace(btc, source="")
    )


def test_shipped_files_comment_every_key() -> None:
    for sym in ("btc", "eth"):
        for line in config_path_for(sym).read_text(encoding="utf-8").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line, f"config_{sym}.txt: uncommented line {line!r}"


def test_config_path_for_is_case_insensitive_and_rejects_paths() -> None:
    assert config_path_for("BTC") == config_path_for("btc")
    with pytest.raises(ValueError):
        config_path_for("../etc/passwd")


# ------------------------------------------------------------ format


def test_comments_blank_lines_whitespace_and_defaults(tmp_path: Path) -> None:
    lines = [
        "# full-line comment",
        "",
        "   ",
        "  INITIAL_CAPITAL =  2500.5   # inline comment",
        "LEVERAGE_LONG=20",
        "LEVERAGE_SHORT = 5#no space before hash",
        "TRADE_DIRECTION= short ",
        "GRID_RANGE_PCT=0.040      # ±2% 범위",
        "\tMAX_ENTRY_LEVEL=2",
        "ENTRY_RATIOS= 0.3 , 0.7   # spaces inside the list",
        "LEVEL_DISTANCES=0.01,0.02",
        "SL_DISTANCE=0.03",
        "TP_PCT=5e-3",
        "BE_PCT=0.001",
    ]
    cfg = load_config(write(tmp_path, lines))
    assert cfg.initial_capital == 2500.5
    assert cfg.leverage_short == 5
    assert cfg.trade_direction == "SHORT"
    assert cfg.grid_range_pct == 0.040
    assert cfg.entry_ratios == (0.3, 0.7)
    assert cfg.level_distances == (0.01, 0.02)
    assert cfg.tp_pct == 0.005
    # Optional keys fall back to their defaults.
    assert (cfg.capital_ratio, cfg.maker_fee, cfg.taker_fee) == (0.33, 0.0, 0.0004)
    assert cfg.leverage == 5 and cfg.side_sign == -1


def test_optional_keys_override_defaults(tmp_path: Path) -> None:
    lines = BASE_LINES + ["CAPITAL_RATIO=0.5", "MAKER_FEE=0.0002", "TAKER_FEE=0.0005"]
    cfg = load_config(write(tmp_path, lines))
    assert (cfg.capital_ratio, cfg.maker_fee, cfg.taker_fee) == (0.5, 0.0002, 0.0005)


def test_crlf_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "config_win.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(BASE_LINES).encode())
    assert load_config(path).initial_capital == 1000.0


def test_parse_config_uses_source_name() -> None:
    cfg = parse_config("\n".join(BASE_LINES), source="inline.txt")
    assert cfg.source == "inline.txt"
    with pytest.raises(ConfigError, match=r"^inline\.txt:6: MAX_ENTRY_LEVEL: "):
        parse_config("\n".join(with_value("MAX_ENTRY_LEVEL", "x")), source="inline.txt")


# ------------------------------------------------------------ syntax errors


def test_garbage_line(tmp_path: Path) -> None:
    lines = BASE_LINES[:4] + ["this is not a setting"] + BASE_LINES[4:]
    err = expect_error(tmp_path, lines, ":5: ", "KEY=VALUE", "this is not a setting")
    assert err.line == 5


def test_duplicate_key(tmp_path: Path) -> None:
    lines = BASE_LINES + ["TP_PCT=0.006"]
    expect_error(tmp_path, lines, ":12: TP_PCT: ", "duplicate", "line 10")


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    lines = BASE_LINES + ["LEVEL_DISTANCE=0.1"]
    expect_error(
        tmp_path, lines, ":12: ", "unknown key 'LEVEL_DISTANCE'", "(did you mean LEVEL_DISTANCES?)"
    )


def test_lowercase_key_is_unknown_but_suggested(tmp_path: Path) -> None:
    lines = BASE_LINES + ["tp_pct=0.1"]
    expect_error(tmp_path, lines, ":12: ", "'tp_pct'", "did you mean TP_PCT?")


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    err = expect_error(tmp_path, BASE_LINES + ["FOO=1"], ":12: ", "unknown key 'FOO'")
    assert "did you mean" not in str(err)


@pytest.mark.parametrize("key", ["TP_PCT", "LEVEL_DISTANCES", "MAX_ENTRY_LEVEL"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    lines = [line for line in BASE_LINES if not line.startswith(key + "=")]
    err = expect_error(tmp_path, lines, f": {key}: missing required key")
    assert err.line is None and err.key == key


def test_missing_keys_reported_together(tmp_path: Path) -> None:
    expect_error(tmp_path, BASE_LINES[2:], "INITIAL_CAPITAL: missing", "LEVERAGE_LONG")


def test_empty_file(tmp_path: Path) -> None:
    expect_error(tmp_path, ["# nothing here"], "INITIAL_CAPITAL: missing required key")


# ------------------------------------------------------------ type errors


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("INITIAL_CAPITAL", "abc", "must be a number"),
        ("INITIAL_CAPITAL", "", "must be a number"),
        ("INITIAL_CAPITAL", "nan", "must be a number"),
        ("SL_DISTANCE", "NaN", "must be a number"),
        ("TP_PCT", "inf", "must be a number"),
        ("LEVERAGE_LONG", "20.5", "must be an integer"),
        ("LEVERAGE_SHORT", "five", "must be an integer"),
        ("MAX_ENTRY_LEVEL", "4.0", "must be an integer"),
        ("TRADE_DIRECTION", "SIDEWAYS", "must be LONG or SHORT"),
        ("ENTRY_RATIOS", "0.05,x,0.25,0.5", "item 2 must be a number"),
        ("LEVEL_DISTANCES", "0.005,0.010,nan,0.045", "item 3 must be a number"),
        ("ENTRY_RATIOS", "0.05,0.20,0.25,", "item 4 must be a number"),
    ],
)
def test_wrong_type(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    expect_key_error(tmp_path, key, value, fragment)


# ------------------------------------------------------------ rule errors


@pytest.mark.parametrize("key", ["LEVERAGE_LONG", "LEVERAGE_SHORT"])
@pytest.mark.parametrize("value", ["0", "126", "-3"])
def test_leverage_out_of_range(tmp_path: Path, key: str, value: str) -> None:
    expect_key_error(tmp_path, key, value, "1 to 125", f"(got {value})")


@pytest.mark.parametrize("value", ["1", "125"])
def test_leverage_bounds_accepted(tmp_path: Path, value: str) -> None:
    assert load_config(write(tmp_path, with_value("LEVERAGE_LONG", value))).leverage_long == int(value)


@pytest.mark.parametrize("key", ["GRID_RANGE_PCT", "SL_DISTANCE", "TP_PCT", "BE_PCT"])
@pytest.mark.parametrize("value", ["0", "1", "-0.01", "1.5"])
def test_percentages_out_of_range(tmp_path: Path, key: str, value: str) -> None:
    expect_key_error(tmp_path, key, value, "(0, 1)")


def test_be_must_be_below_tp(tmp_path: Path) -> None:
    expect_key_error(tmp_path, "BE_PCT", "0.005", "less than TP_PCT")


@pytest.mark.parametrize("value", ["0", "-100"])
def test_initial_capital_positive(tmp_path: Path, value: str) -> None:
    expect_key_error(tmp_path, "INITIAL_CAPITAL", value, "> 0")


@pytest.mark.parametrize("value", ["0", "1.01"])
def test_capital_ratio_range(tmp_path: Path, value: str) -> None:
    lines = BASE_LINES + [f"CAPITAL_RATIO={value}"]
    expect_error(tmp_path, lines, ":12: CAPITAL_RATIO: ", "(0, 1]")


def test_capital_ratio_one_accepted(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE_LINES + ["CAPITAL_RATIO=1"])).capital_ratio == 1.0


@pytest.mark.parametrize("key", ["MAKER_FEE", "TAKER_FEE"])
@pytest.mark.parametrize("value", ["-0.0001", "0.01", "0.04"])
def test_fee_range(tmp_path: Path, key: str, value: str) -> None:
    expect_error(tmp_path, BASE_LINES + [f"{key}={value}"], f":12: {key}: ", "[0, 0.01)")


@pytest.mark.parametrize("value", ["0", "21"])
def test_max_entry_level_range(tmp_path: Path, value: str) -> None:
    expect_key_error(tmp_path, "MAX_ENTRY_LEVEL", value, "1 to 20")


@pytest.mark.parametrize("key", ["ENTRY_RATIOS", "LEVEL_DISTANCES"])
def test_wrong_list_length(tmp_path: Path, key: str) -> None:
    value = "0.05,0.20,0.25" if key == "ENTRY_RATIOS" else "0.005,0.010,0.040"
    expect_key_error(tmp_path, key, value, "MAX_ENTRY_LEVEL=4 items", "has 3")


def test_list_length_follows_max_entry_level(tmp_path: Path) -> None:
    # MAX_ENTRY_LEVEL was edited but the lists were not: the first list is reported.
    err = expect_error(
        tmp_path,
        with_value("MAX_ENTRY_LEVEL", "3"),
        f":{LINE_OF['ENTRY_RATIOS']}: ENTRY_RATIOS: must have MAX_ENTRY_LEVEL=3 items, has 4",
    )
    assert err.key == "ENTRY_RATIOS"


def test_non_increasing_distances(tmp_path: Path) -> None:
    expect_key_error(
        tmp_path,
        "LEVEL_DISTANCES",
        "0.005,0.010,0.009,0.045",
        "must be strictly increasing (got 0.005,0.010,0.009,0.045)",
    )


def test_equal_distances_rejected(tmp_path: Path) -> None:
    expect_key_error(tmp_path, "LEVEL_DISTANCES", "0.005,0.010,0.010,0.045", "strictly increasing")


def test_non_positive_distance(tmp_path: Path) -> None:
    expect_key_error(tmp_path, "LEVEL_DISTANCES", "0,0.010,0.040,0.045", "> 0")


@pytest.mark.parametrize("last", ["0.05", "0.06"])
def test_distance_not_below_sl(tmp_path: Path, last: str) -> None:
    # The rule is about the distances, so their line is reported, not SL_DISTANCE's.
    expect_key_error(tmp_path, "LEVEL_DISTANCES", f"0.005,0.010,0.040,{last}", "SL_DISTANCE=0.05")


def test_sl_lowered_below_deepest_level_reports_distances(tmp_path: Path) -> None:
    expect_error(
        tmp_path, with_value("SL_DISTANCE", "0.045"), f":{LINE_OF['LEVEL_DISTANCES']}: LEVEL_DISTANCES: "
    )


def test_ratio_sum_above_one(tmp_path: Path) -> None:
    expect_key_error(tmp_path, "ENTRY_RATIOS", "0.05,0.20,0.25,0.51", "sum to at most 1", "1.01")


def test_ratio_sum_float_slack(tmp_path: Path) -> None:
    # Sums to 1 exactly on paper, but to 1.0000000000000002 in binary floating point.
    ratios = (0.01, 0.2, 0.68, 0.11)
    assert sum(ratios) > 1
    cfg = load_config(write(tmp_path, with_value("ENTRY_RATIOS", "0.01,0.2,0.68,0.11")))
    assert cfg.entry_ratios == ratios


@pytest.mark.parametrize("value", ["0,0.20,0.25,0.50", "-0.05,0.20,0.25,0.50"])
def test_non_positive_ratio(tmp_path: Path, value: str) -> None:
    expect_key_error(tmp_path, "ENTRY_RATIOS", value, "> 0")


# ------------------------------------------------------------ file access


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config_nope.txt"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: file not found"


def test_unreadable_file_is_config_error(tmp_path: Path) -> None:
    # A directory cannot be read as a file: an OSError that is not FileNotFoundError.
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read file")
    assert "\n" not in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config_bin.txt"
    path.write_bytes(b"INITIAL_CAPITAL=\xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_config_error_is_value_error_and_picklable(tmp_path: Path) -> None:
    err = expect_key_error(tmp_path, "TP_PCT", "2", "(0, 1)")
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.key == "TP_PCT" and copy.line == err.line


def test_newline_in_message_is_flattened() -> None:
    err = ConfigError("f.txt", 3, "KEY", "bad\nvalue")
    assert str(err) == "f.txt:3: KEY: bad value"


# ------------------------------------------------------------ overrides


@pytest.fixture
def cfg(tmp_path: Path) -> GridConfig:
    return load_config(write(tmp_path, BASE_LINES))


def test_with_overrides_returns_new_validated_copy(cfg: GridConfig) -> None:
    short = cfg.with_overrides(trade_direction="short", initial_capital=2000, taker_fee=0.0005)
    assert short.trade_direction == "SHORT"
    assert short.initial_capital == 2000.0 and type(short.initial_capital) is float
    assert short.taker_fee == 0.0005
    assert short.leverage == 5 and short.side_sign == -1
    assert cfg.trade_direction == "LONG" and cfg.leverage == 20 and cfg.side_sign == 1
    assert short.source == cfg.source


def test_with_overrides_rejects_bad_direction(cfg: GridConfig) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides(trade_direction="SIDEWAYS")
    message = str(info.value)
    assert "TRADE_DIRECTION: must be LONG or SHORT" in message and "SIDEWAYS" in message
    assert message.startswith(cfg.source) and "\n" not in message


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"initial_capital": 0}, "INITIAL_CAPITAL: must be > 0"),
        ({"initial_capital": float("nan")}, "INITIAL_CAPITAL: must be a finite number"),
        ({"maker_fee": 0.02}, "MAKER_FEE: must be a rate in [0, 0.01)"),
        ({"taker_fee": -0.0001}, "TAKER_FEE: must be a rate in [0, 0.01)"),
        ({"leverage_long": 20.0}, "LEVERAGE_LONG: must be an integer"),
        ({"leverage_long": True}, "LEVERAGE_LONG: must be an integer"),
        ({"max_entry_level": 3}, "ENTRY_RATIOS: must have MAX_ENTRY_LEVEL=3 items"),
        ({"level_distances": [0.005, 0.01, 0.04, 0.05]}, "LEVEL_DISTANCES: must all be < SL_DISTANCE"),
        ({"bogus": 1}, "bogus: not a config field"),
    ],
)
def test_with_overrides_revalidates(cfg: GridConfig, overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.with_overrides(**overrides)
    assert fragment in str(info.value)
    assert info.value.line is None  # an override has no line in the file


def test_with_overrides_list_becomes_tuple(cfg: GridConfig) -> None:
    new = cfg.with_overrides(entry_ratios=[0.1, 0.2, 0.3, 0.4])
    assert new.entry_ratios == (0.1, 0.2, 0.3, 0.4)
    hash(new)  # frozen and hashable


def test_config_is_frozen(cfg: GridConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tp_pct = 0.01  # type: ignore[misc]
