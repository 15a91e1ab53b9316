"""The long crash test and the fault soak (issue 5), the fast market (issue 8) and a month
alone (issue 18): prints their figures.

    python bench/chaos_soak.py [--kills 200] [--seed 1] [--speed 40] [--soak-minutes 1440] [--no-soak]
    python bench/chaos_soak.py --fast-market [--minutes 30] [--speed 20] [--kills 60] [--synthetic] [--loose]
    python bench/chaos_soak.py --days 30 [--speed 100] [--seed 1]

--days N: the daemon against the local exchange for N simulated days of the synthetic market,
under faults planned on the exchange's clock, restarted on days 10 (SIGTERM) and 20 (SIGKILL),
its config edited every day, notifications (to a loopback receiver) and metrics on; prints per
simulated day its resident memory, open files, asyncio tasks, threads, queued notifications,
state-file size, log bytes, CSV rows against the exchange's fills and the daily summaries
received, then the invariants and the growth per life of the process (docs/RELIABILITY.md).

--fast-market: BTCUSDC LONG and ETHUSDC SHORT daemons against the local exchange running its
own clock (no lockstep) over the BTCUSDC March 2023 file from the USDC de-peg on (or the
synthetic market with jumps), killed at random; prints fills, the maximum position as a share
of the ladder of the grid in force, and the violations.

Same code as tests/chaos (chaos_lib.run_crash_test / run_fault_soak); exit code 1
when an invariant is violated."""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "chaos"))
from chaos_lib import run_crash_test, run_fast_market, run_fault_soak  # noqa: E402
from month_lib import DaySample, run_month_soak  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=40.0, help="candles per second")
    p.add_argument("--soak-minutes", type=int, default=1440)
    p.add_argument("--no-soak", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    p.add_argument("--fast-market", action="store_true", help="the fast-market run instead (see above)")
    p.add_argument("--minutes", type=float, default=30.0, help="fast market: real minutes of market")
    p.add_argument("--synthetic", action="store_true", help="fast market: the synthetic market")
    p.add_argument("--loose", action="store_true", help="fast market: the shipped distances, not the tight ones")
    p.add_argument("--days", type=int, help="a month alone: this many simulated days (see above)")
    a = p.parse_args()
    keys = ("bench-key-" + secrets.token_hex(8), "bench-secret-" + secrets.token_hex(16))
    work = Path(tempfile.mkdtemp(prefix="chaos_soak_"))
    failed = False
    if a.days:
        speed = a.speed if a.speed != 40.0 else 100.0
        print(f"a month alone: {a.days} simulated days at {speed:g} candles/s, seed {a.seed} (work folder {work})")
        print(DaySample.HEADER, flush=True)
        rep = run_month_soak(work, keys, days=a.days, speed=speed, seed=a.seed,
                             on_day=lambda s: print(s.line(), flush=True))
        print(rep.figures().split("\n", len(rep.days) + 1)[-1], flush=True)
        failed = bool(rep.violations)
        if not a.keep and not failed:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        return 1 if failed else 0
    if a.fast_market:
        speed = a.speed if a.speed != 40.0 else 20.0
        candles = int(a.minutes * 60 * speed)
        print(f"fast market: {a.minutes:g} min at {speed:g} candles/s ({candles} candles), "
              f"{'synthetic' if a.synthetic else 'BTCUSDC March 2023'}, {a.kills} kills (work folder {work})",
              flush=True)
        rep = run_fast_market(work, keys, data_dir=None if a.synthetic else DATA, speed=speed, candles=candles,
                              seed=a.seed, kills=a.kills, tight=not a.loose)
        print(rep.figures(), flush=True)
        failed = bool(rep.violations)
        if not a.keep and not failed:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        return 1 if failed else 0
    print(f"crash test: {a.kills} kills, seed {a.seed}, {a.speed:g} candles/s (work folder {work})")
    rep = run_crash_test(work / "crash", keys, kills=a.kills, seed=a.seed, speed=a.speed)
    print(rep.figures(), flush=True)
    failed |= bool(rep.violations)
    if not a.no_soak:
        print(f"\nfault soak: {a.soak_minutes} simulated minutes, seed {a.seed}, {a.speed:g} candles/s")
        rep = run_fault_soak(work / "soak", keys, minutes=a.soak_minutes, seed=a.seed, speed=a.speed)
        print(rep.figures(), flush=True)
        failed |= bool(rep.violations)
    if not a.keep and not failed:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
