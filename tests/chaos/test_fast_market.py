"""Issue 8 (a): the daemon against the local exchange running its own clock (no lockstep:
the market never waits for the daemon) at 10 and 20 candles/s, over the March 2023 USDC
de-peg of the BTCUSDC file and over the synthetic market with jumps, LONG (BTCUSDC) and
SHORT (ETHUSDC, the same candles) side by side.  Along the exchange's whole fill history,
|position| never exceeds the ladder of the grid in force; then the settled invariants.
The two speeds of one market run at once (two exchanges, four daemons)."""
from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_lib import BTC_FILE, FastReport, run_fast_market  # noqa: E402

DATA = Path(os.environ.get("GM_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
SECONDS = 10            # of market per run: 100 candles at 10/s, 200 at 20/s


def both_speeds(tmp_path: Path, data_dir: Path | None) -> dict[float, FastReport]:
    keys = ("fast-key-" + secrets.token_hex(8), "fast-secret-" + secrets.token_hex(16))
    out: dict[float, FastReport] = {}
    errors: list[BaseException] = []

    def one(speed: float) -> None:
        try:
            out[speed] = run_fast_market(tmp_path / f"x{int(speed)}", keys, data_dir=data_dir, speed=speed,
                                         candles=int(SECONDS * speed))
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=one, args=(s,)) for s in (10.0, 20.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def check(reports: dict[float, FastReport]) -> None:
    for speed, rep in sorted(reports.items()):
        print(f"--- {speed:g} candles/s\n{rep.figures()}")
    for speed, rep in reports.items():
        assert all(e.fills > 0 for e in rep.exposure.values()), f"{speed}: a daemon filled nothing"
        assert not rep.violations, f"{speed} candles/s:\n{rep.figures()}"


@pytest.mark.timeout(150)
@pytest.mark.skipif(not (DATA / BTC_FILE).exists(), reason=f"real candles not found: {DATA / BTC_FILE}")
def test_fast_market_over_the_usdc_depeg(tmp_path):
    check(both_speeds(tmp_path, DATA))


@pytest.mark.timeout(150)
def test_fast_market_over_the_synthetic_market_with_jumps(tmp_path):
    check(both_speeds(tmp_path, None))
