"""End to end: the real daemon (trade_btc.py) against the real local exchange
(local_exchange.py), both as subprocesses over 127.0.0.1, driven through the
exchange's admin API (/_sim/...).  Nothing is mocked: the daemon talks to the
exchange with the unmodified python-binance client and streams.

The exchange runs on a manual clock (--speed 0): `step()` plays candles and
`price()` moves the price along a leg that fills what it crosses.  Every wait
is a poll with a deadline; every process is killed when its test ends.  Each
test has its own exchange and daemon root (a shared account would mix the
tests' positions); a start costs about 0.3 s.

Covered: first grid (ids, prices, sizes, state file, seed-style log lines),
TP / BE / SL transitions with the stop on the Algo Order API, CSV rows against
the exchange's fill history, restart after SIGKILL (with a fill and a stray
order while down, and mid-placement), config reload (good and bad files),
the -2019 / -2022 ladders, a lost user stream and an expired listenKey, bad
keys, the per-symbol lock, SIGTERM, and a vanished exchange.
"""
from __future__ import annotations

import secrets
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import (  # the shared subprocess harness
    CAPITAL, CONFIG, DISTANCES, Daemon, Exchange, MAKER_FEE, SYM, TAKER_FEE,
    assert_csv_matches_exchange, by_cid, ceil_tick, entry_prices, exits, floor_step, floor_tick,
    level_qty, wait_reconciles, wait_until,
)

pytestmark = pytest.mark.timeout(60)

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def keys() -> tuple[str, str]:
    return "e2e-key-" + secrets.token_hex(8), "e2e-secret-" + secrets.token_hex(16)


def start_daemon(ex: Exchange, root: Path, keys: tuple[str, str], daemons: list, **kw) -> Daemon:
    """A daemon connected to both streams (so that the next candle reaches it)."""
    d = Daemon(root, ex, *keys, **kw).start()
    daemons.append(d)
    both = lambda: d.alive() and (lambda ws: ws["user"] >= 1 and ws["market"] >= 1)(ex.stats()["websockets"])
    wait_until(both, 15, "the daemon's market and user streams", d.diag)
    return d


@pytest.fixture
def live(tmp_path, exchange, keys, daemons):
    """A daemon with its first grid on the exchange: returns (exchange, daemon, grid centre)."""
    def start(before_step: Callable[[Exchange], Any] | None = None, **kw) -> tuple[Exchange, Daemon, float]:
        d = start_daemon(exchange, tmp_path / "root", keys, daemons, **kw)
        if before_step is not None:
            before_step(exchange)
        exchange.step(1)
        wait_until(lambda: len(exchange.open_orders()) == 4, 10, "the first grid", d.diag)
        return exchange, d, d.state()["grid_center"]
    return start


# ---------------------------------------------------------------------------- 1. first start, lock


def test_first_start_places_the_grid_and_a_second_instance_is_refused(live, keys, daemons):
    ex, d, center = live()
    st = ex.state()
    assert float(st["symbols"][SYM]["price"]) == center          # centre = the first closed candle's close
    book = by_cid(ex.open_orders())
    gen = d.state()["generation"]
    expected = {f"GM-{SYM}-{gen}-E{i}": (entry_prices(center)[i - 1], level_qty(entry_prices(center)[i - 1], i))
                for i in (1, 2, 3, 4)}
    assert set(book) == set(expected)
    for cid, (price, qty) in expected.items():
        o = book[cid]
        assert (o["side"], o["type"], o["reduceOnly"]) == ("BUY", "LIMIT", False)
        assert float(o["price"]) == price and float(o["origQty"]) == qty
    assert not ex.open_algos()
    # The state file lists the same orders with their exchange ids; capital = ratio × wallet.
    s = d.state()
    assert s["capital"] == pytest.approx(CAPITAL) and s["grid_center"] == center
    assert {cid: (o["price"], o["qty"], o["order_id"]) for cid, o in s["orders"].items()} == \
        {cid: (float(o["price"]), float(o["origQty"]), o["orderId"]) for cid, o in book.items()}
    assert {o["role"] for o in s["orders"].values()} == {"ENTRY_1", "ENTRY_2", "ENTRY_3", "ENTRY_4"}
    log = d.log()
    assert "운용 자본: $3300.00" in log and f"grid_center=${center:.2f}" in log
    for i, (cid, (price, qty)) in enumerate(expected.items(), 1):
        assert f"Level {i} 주문 설정: ${price:.2f}, 수량: {qty:.6f}" in log
    assert (d.root / "state" / "btc.pid").read_text().strip() == str(d.proc.pid)

    # A second instance for the same symbol: one clear line, exit 2, the first untouched.
    second = Daemon(d.root, ex, *keys, write_config=False, name="second")
    daemons.append(second)
    rc, out, err = second.run_to_exit()
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "another instance" in err and "Traceback" not in err
    assert d.alive() and len(ex.open_orders()) == 4
    assert (d.root / "state" / "btc.pid").read_text().strip() == str(d.proc.pid)

    # SIGTERM: a prompt, clean exit; the orders stay (no --cancel-on-exit); the secret was never written.
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0 and time.monotonic() - t0 < 5
    assert not (d.root / "state" / "btc.pid").exists() and "종료" in d.log()
    assert len(ex.open_orders()) == 4
    assert keys[1] not in _files_text(d.root)


# ---------------------------------------------------------------------------- 2. TP, BE, SL


def test_take_profit_round_trip_and_new_grid(live):
    ex, d, center = live()
    gen = d.state()["generation"]
    p1, p2 = entry_prices(center)[:2]
    q1 = level_qty(p1, 1)
    ex.price(p1 - 1.0)                                      # through level 1 only
    tp = ceil_tick(p1 * 1.005)
    wait_until(lambda: [(float(o["price"]), float(o["origQty"])) for o in exits(ex)] == [(tp, q1)], 10,
               "one TP for the whole level-1 quantity", d.diag)
    (tp_order,) = exits(ex)
    assert tp_order["clientOrderId"].startswith(f"GM-{SYM}-{gen}-TP") and tp_order["side"] == "SELL"
    assert ex.position() == q1 and len(ex.open_orders()) == 4   # E2..E4 + TP
    ex.price(tp + 5.0)                                      # up through the TP
    new_e1 = floor_tick(tp * (1 - DISTANCES[0]))
    wait_until(lambda: f"GM-{SYM}-{gen + 1}-E1" in ex.book() and len(ex.open_orders()) == 4, 10,
               "a new grid around the TP price", d.diag)
    assert ex.position() == 0
    book = ex.book()
    assert sorted(book) == [f"GM-{SYM}-{gen + 1}-E{i}" for i in (1, 2, 3, 4)]
    assert [float(book[f"GM-{SYM}-{gen + 1}-E{i}"]["price"]) for i in (1, 2, 3, 4)] == entry_prices(tp)
    assert float(book[f"GM-{SYM}-{gen + 1}-E1"]["price"]) == new_e1
    rows = wait_until(lambda: len(d.trades()) == 2 and d.trades(), 5, "two CSV rows", d.diag)
    assert [(r["role"], r["side"], float(r["price"]), float(r["quantity"])) for r in rows] == \
        [("ENTRY1", "BUY", p1, q1), ("TP", "SELL", tp, q1)]
    assert float(rows[1]["realized_pnl"]) == pytest.approx((tp - p1) * q1, abs=1e-6)
    assert float(rows[0]["fee"]) == pytest.approx(p1 * q1 * MAKER_FEE, abs=1e-6)
    assert float(rows[1]["fee"]) == pytest.approx(tp * q1 * MAKER_FEE, abs=1e-6)
    assert_csv_matches_exchange(d, ex)
    s = d.state()
    assert s["grid_center"] == tp and s["position"]["qty"] == 0 and s["round_trips"] == 1
    log = d.log()
    assert f"TP 주문 설정: ${tp:.2f}, 수량: {q1:.6f}" in log and f"TP 체결: ${tp:.2f}" in log
    assert f"그리드 재설정 (TP): new_center=${tp:.2f}" in log


def test_break_even_keeps_level_one_and_regrids(live):
    ex, d, center = live()
    gen = d.state()["generation"]
    p1, p2, p3, p4 = entry_prices(center)
    q1, q2 = level_qty(p1, 1), level_qty(p2, 2)
    ex.price(p2 - 1.0)                                      # through levels 1 and 2
    avg = (p1 * q1 + p2 * q2) / (q1 + q2)
    be = ceil_tick(avg * 1.001)
    wait_until(lambda: [(float(o["price"]), float(o["origQty"])) for o in exits(ex)] == [(be, q2)], 10,
               "one BE for the position less the level-1 quantity", d.diag)
    assert ex.position() == pytest.approx(q1 + q2)
    assert sorted(c[-2:] for c in ex.book() if "-E" in c) == ["E3", "E4"] and not ex.open_algos()
    ex.price(be + 2.0)                                      # up through the BE
    wait_until(lambda: len(ex.open_orders()) == 4 and len(exits(ex)) == 1 and exits(ex)[0]["clientOrderId"].startswith(
        f"GM-{SYM}-{gen + 1}-TP"), 10, "levels 2-4 re-placed and a TP", d.diag)
    assert ex.position() == pytest.approx(q1)               # the level-1 quantity stays
    assert ex.entry_price() == pytest.approx(avg)           # at the unchanged average
    new_center = d.state()["grid_center"]
    assert new_center == pytest.approx(avg / (1 - DISTANCES[0]))
    book = ex.book()
    assert sorted(c for c in book if "-E" in c) == [f"GM-{SYM}-{gen + 1}-E{i}" for i in (2, 3, 4)]
    for i in (2, 3, 4):
        o = book[f"GM-{SYM}-{gen + 1}-E{i}"]
        assert float(o["price"]) == entry_prices(new_center)[i - 1] and not o["reduceOnly"]
    (tp_order,) = exits(ex)
    assert float(tp_order["origQty"]) == q1 and float(tp_order["price"]) == ceil_tick(avg * 1.005)
    rows = d.trades()
    assert [r["role"] for r in rows] == ["ENTRY1", "ENTRY2", "BE"]
    assert float(rows[2]["quantity"]) == q2 and float(rows[2]["position_after"]) == q1
    assert_csv_matches_exchange(d, ex)
    s = d.state()
    assert s["position"]["deepest_level"] == 1 and s["position"]["level1_qty"] == pytest.approx(q1)
    log = d.log()
    assert "BE 체결" in log and "BE 후 그리드 재설정" in log and "Level 2 주문 재설정" in log
    # The fill's line shows the real position, even when the exchange was read after both fills.
    assert f"Level 2 체결: ${p2:.2f}, 평단가: ${avg:.2f}, 총 수량: {q1 + q2:.6f}" in log
    assert f"BE 주문 준비: 바이낸스 포지션 {q1 + q2:.6f}, Level1 {q1:.6f}, 덜어내기 {q2:.6f}" in log


def test_stop_loss_goes_through_the_algo_api_and_regrids(live):
    ex, d, center = live()
    gen = d.state()["generation"]
    prices = entry_prices(center)
    qty = [level_qty(p, i) for i, p in enumerate(prices, 1)]
    stop = floor_tick(center * 0.95)
    ex.price(prices[3] - 1.0)                               # through all four levels
    algos = wait_until(ex.open_algos, 10, "the stop", d.diag)
    assert len(algos) == 1
    a = algos[0]
    assert (a["orderType"], a["side"], a["closePosition"], a["algoType"]) == ("STOP_MARKET", "SELL", True,
                                                                               "CONDITIONAL")
    assert float(a["triggerPrice"]) == stop and a["clientAlgoId"].startswith(f"GM-{SYM}-{gen}-SL")
    # The stop never went to the plain order endpoint (it would be rejected with -4120).
    assert not [o for o in ex.state()["orders"] if o["type"] != "LIMIT"]
    assert ex.stats()["requests"].get("POST /fapi/v1/algoOrder", 0) >= 1
    wait_until(lambda: len(exits(ex)) == 1 and float(exits(ex)[0]["origQty"]) == round(sum(qty[1:]), 3), 10,
               "one BE for levels 2-4", d.diag)
    assert ex.position() == pytest.approx(sum(qty))
    ex.price(stop - 10.0)                                   # down through the stop
    wait_until(lambda: len(ex.open_orders()) == 4 and f"GM-{SYM}-{gen + 1}-E1" in ex.book(), 10,
               "a new grid after the stop", d.diag)
    assert ex.position() == 0 and not ex.open_algos()
    book = ex.book()
    assert [float(book[f"GM-{SYM}-{gen + 1}-E{i}"]["price"]) for i in (1, 2, 3, 4)] == entry_prices(stop)
    rows = d.trades()
    assert [r["role"] for r in rows] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4", "SL"]
    sl = rows[-1]
    assert float(sl["price"]) == stop and float(sl["quantity"]) == pytest.approx(sum(qty))
    assert float(sl["position_after"]) == 0 and float(sl["realized_pnl"]) < 0
    assert float(sl["fee"]) == pytest.approx(stop * sum(qty) * TAKER_FEE, abs=1e-6)
    assert_csv_matches_exchange(d, ex)
    assert d.state()["grid_center"] == stop
    assert f"SL 주문 설정: ${stop:.2f}" in d.log() and "그리드 재설정 (SL)" in d.log()


@pytest.mark.parametrize("fault, status", [("stop_reject_next", "REJECTED"), ("stop_expire_next", "EXPIRED")])
def test_a_stop_that_fails_when_it_triggers_is_acted_on_at_once_and_said(live, fault, status):
    """Since 2025-12-15 a stop that fails as it triggers is reported only as ALGO_UPDATE
    REJECTED / EXPIRED (with `rm`).  The price is beyond it: the daemon closes at market at
    once (the sync is a minute away: only the event can have done it), says it as an ERROR
    (which notifies), records the SL and re-grids."""
    ex, d, center = live(sync_interval=60.0)
    gen = d.state()["generation"]
    prices = entry_prices(center)
    qty = [level_qty(p, i) for i, p in enumerate(prices, 1)]
    stop = floor_tick(center * 0.95)
    ex.price(prices[3] - 1.0)                               # through all four levels
    (a,) = wait_until(ex.open_algos, 10, "the stop", d.diag)
    ex.faults(**{fault: 1})
    ex.price(stop - 10.0)                                   # through the stop, which fails
    wait_until(lambda: ex.position() == 0 and f"GM-{SYM}-{gen + 1}-E1" in ex.book(), 10,
               "the position closed at market and a new grid", d.diag)
    algo = next(x for x in ex.state()["algoOrders"] if x["clientAlgoId"] == a["clientAlgoId"])
    assert algo["algoStatus"] == status and not algo["actualOrderId"]
    assert f"stop {a['clientAlgoId']} {status} when it triggered" in d.log() and "closed at market" in d.log()
    rows = d.trades()
    assert [r["role"] for r in rows] == ["ENTRY1", "ENTRY2", "ENTRY3", "ENTRY4", "SL"]
    assert float(rows[-1]["price"]) == stop - 10.0 and float(rows[-1]["quantity"]) == pytest.approx(sum(qty))
    assert d.state()["grid_center"] == stop - 10.0
    assert_csv_matches_exchange(d, ex)


def exchange_leverage(ex: Exchange, d: Daemon) -> int:
    (row,) = ex.signed("GET", "/fapi/v2/positionRisk", d.key, d.secret, symbol=SYM)
    return int(row["leverage"])


def test_leverage_follows_the_config_only_while_flat_and_a_change_from_outside_is_set_back(live):
    """The exchange's leverage is the config's: a reload that changes it is applied while flat
    (SPEC §5), and with a position once flat again; a change made elsewhere (the web UI:
    ACCOUNT_CONFIG_UPDATE) is said as an ERROR and set back."""
    ex, d, center = live()
    assert exchange_leverage(ex, d) == 20
    # From outside, while flat: said and set back at once.
    ex.signed("POST", "/fapi/v1/leverage", d.key, d.secret, symbol=SYM, leverage=7)
    wait_until(lambda: exchange_leverage(ex, d) == 20, 10, "the leverage set back", d.diag)
    assert "leverage changed on the exchange to 7x, the config says 20x: setting it back" in d.log()
    # A reload while flat: applied.
    d.config.write_text(d.config.read_text().replace("LEVERAGE_LONG=20", "LEVERAGE_LONG=10"))
    wait_until(lambda: exchange_leverage(ex, d) == 10, 10, "the reloaded leverage", d.diag)
    assert "leverage 20x → 10x on the exchange (config)" in d.log()
    # With a position: the change waits for flat.
    prices = entry_prices(center)
    ex.price(prices[0] - 1.0)
    tp = ceil_tick(prices[0] * 1.005)
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [tp], 10, "the TP", d.diag)
    d.config.write_text(d.config.read_text().replace("LEVERAGE_LONG=10", "LEVERAGE_LONG=15"))
    wait_until(lambda: d.log().count("Config reloaded") + d.log().count("설정 파일 재로드") >= 2, 10,
               "the second reload", d.diag)
    wait_reconciles(ex, 2, d.diag)
    assert exchange_leverage(ex, d) == 10 and ex.position() > 0
    ex.price(tp + 1.0)                                      # the TP: flat
    wait_until(lambda: exchange_leverage(ex, d) == 15, 10, "the leverage once flat", d.diag)
    assert d.alive()


# ---------------------------------------------------------------------------- 3. restart


def test_restart_after_sigkill_keeps_orders_and_records_missed_fills_once(live):
    ex, d, center = live()
    gen = d.state()["generation"]
    p1, p2, p3, p4 = entry_prices(center)
    q1, q2 = level_qty(p1, 1), level_qty(p2, 2)
    ex.price(p1 - 1.0)
    wait_until(lambda: len(exits(ex)) == 1, 10, "the TP", d.diag)
    before = ex.book()
    d.kill(signal.SIGKILL)

    # Restart with an open position and orders: nothing is duplicated or lost.
    d.start()
    wait_until(lambda: d.log().count("시작: BTCUSDC LONG") == 2, 15, "the restart", d.diag)
    wait_reconciles(ex, 1, d.diag)                          # a sync or two after the restart
    assert d.alive()
    assert ex.book().keys() == before.keys()                # same client ids, nothing re-placed
    assert [o["orderId"] for o in ex.open_orders()] == [o["orderId"] for o in before.values()]
    assert len(exits(ex)) == 1 and d.log().count("운용 자본") == 1   # capital kept from the state file
    assert_csv_matches_exchange(d, ex)

    # Killed again; level 2 fills while the daemon is down; a stray order of ours appears too.
    d.kill(signal.SIGKILL)
    ex.price(p2 - 1.0)
    assert ex.position() == pytest.approx(q1 + q2)
    stray = f"GM-{SYM}-{gen + 50}-E1"                     # an order of ours the state does not know
    ex.signed("POST", "/fapi/v1/order", d.key, d.secret, symbol=SYM, side="BUY", type="LIMIT",
              timeInForce="GTC", price=f"{p4 - 500:.1f}", quantity="0.010", newClientOrderId=stray)
    assert stray in ex.book()
    d.start()
    avg = (p1 * q1 + p2 * q2) / (q1 + q2)
    be = ceil_tick(avg * 1.001)
    wait_until(lambda: [(o["clientOrderId"][:len(f"GM-{SYM}-{gen}-BE")], float(o["price"]), float(o["origQty"]))
                        for o in exits(ex)] == [(f"GM-{SYM}-{gen}-BE", be, q2)], 15,
               "the missed level-2 fill recovered: exactly one exit, the BE", d.diag)
    wait_reconciles(ex, 1, d.diag)
    book = ex.book()
    assert len(exits(ex)) == 1
    assert sorted(c for c in book if "-E" in c) == [f"GM-{SYM}-{gen}-E3", f"GM-{SYM}-{gen}-E4"]
    assert {c: book[c]["orderId"] for c in book if "-E" in c} == \
        {c: before[c]["orderId"] for c in before if c.endswith(("E3", "E4"))}
    wait_until(lambda: len(d.trades()) == 2, 5, "the missed fill in the CSV", d.diag)
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "ENTRY2"]
    assert_csv_matches_exchange(d, ex)
    assert "놓친 체결 복구" in d.log() and f"orphan order {stray}" in d.log()
    s = d.state()
    assert set(s["orders"]) == set(book) and s["position"]["deepest_level"] == 2
    assert s["position"]["qty"] == pytest.approx(q1 + q2)

    # Killed once more; the BE fills while it is down: the restart does what the BE fill would have done.
    d.kill(signal.SIGKILL)
    ex.price(be + 2.0)
    assert ex.position() == pytest.approx(q1)
    d.start()
    wait_until(lambda: len(ex.open_orders()) == 4 and [o["clientOrderId"][:len(f"GM-{SYM}-{gen + 1}-TP")]
                                                       for o in exits(ex)] == [f"GM-{SYM}-{gen + 1}-TP"], 15,
               "levels 2-4 and a TP after the missed BE", d.diag)
    wait_reconciles(ex, 1, d.diag)
    book = ex.book()
    assert len(book) == 4 and sorted(c for c in book if "-E" in c) == [f"GM-{SYM}-{gen + 1}-E{i}" for i in (2, 3, 4)]
    (tp_order,) = exits(ex)
    assert float(tp_order["origQty"]) == q1 and float(tp_order["price"]) == ceil_tick(avg * 1.005)
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "ENTRY2", "BE"]
    assert_csv_matches_exchange(d, ex)
    assert d.state()["grid_center"] == pytest.approx(avg / (1 - DISTANCES[0]))


def test_entries_filled_after_a_be_while_down_count_as_their_levels_and_get_the_stop(live):
    """Found by the crash test: killed with a BE open; while it is down the BE fills and then
    the old grid's levels 3 and 4 fill too.  The restart replays the BE (re-grid from level 2,
    TP), then must act on the two later fills as entries of levels 3 and 4 (BE for all but
    the level-1 quantity, and the stop), not fold them into level 1 and leave the deepest
    level without a stop."""
    ex, d, center = live()
    p1, p2, p3, p4 = entry_prices(center)
    q1, q2, q3, q4 = (level_qty(p, i) for i, p in enumerate((p1, p2, p3, p4), 1))
    ex.price(p2 - 1.0)
    avg = (p1 * q1 + p2 * q2) / (q1 + q2)
    be = ceil_tick(avg * 1.001)
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [be], 10, "the BE", d.diag)
    d.kill(signal.SIGKILL)
    ex.price(be + 2.0)                                      # the BE fills while the daemon is down,
    ex.price(p4 - 1.0)                                      # then the old levels 3 and 4
    assert ex.position() == pytest.approx(q1 + q3 + q4)
    d.start()
    algos = wait_until(ex.open_algos, 15, "the stop after the late level-4 fill", d.diag)
    # One BE: the new grid's levels were held back for the raced fills, and once levels 3-4
    # were acted on nothing deeper was left to place (no new generation).
    wait_until(lambda: len(exits(ex)) == 1 and "-BE" in exits(ex)[0]["clientOrderId"], 10, "one BE", d.diag)
    wait_reconciles(ex, 1, d.diag)                          # a sync or two: nothing changes
    (a,) = ex.open_algos()
    assert a["clientAlgoId"] == algos[0]["clientAlgoId"] and a["orderType"] == "STOP_MARKET"
    new_center = avg / (1 - DISTANCES[0])
    assert float(a["triggerPrice"]) == floor_tick(new_center * 0.95)
    (be_order,) = exits(ex)
    assert float(be_order["origQty"]) == pytest.approx(q3 + q4)      # all but the level-1 quantity
    assert not [c for c in ex.book() if "-E" in c]          # levels 2-4 of the new grid: taken by the fills
    s = d.state()
    assert s["position"]["deepest_level"] == 4 and s["position"]["level1_qty"] == pytest.approx(q1)
    assert s["position"]["qty"] == pytest.approx(q1 + q3 + q4)
    assert set(s["orders"]) == set(ex.book()) | {a["clientAlgoId"]}
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "ENTRY2", "BE", "ENTRY3", "ENTRY4"]
    assert_csv_matches_exchange(d, ex)                      # positions after each fill included


def test_the_whole_old_grid_filled_after_a_tp_while_down_gets_its_be_and_stop(live):
    """Killed with a TP open; while it is down the TP fills, then the price falls through all
    old levels 2-4 (nobody cancelled them).  The restart replays the TP (flat: new centre, new
    grid held back), then the three late fills as entries of levels 2-4: the position gets one
    BE (no level-1 quantity to keep) and the stop, and no new entry is placed on top of it."""
    ex, d, center = live()
    prices = entry_prices(center)
    qty = [level_qty(p, i) for i, p in enumerate(prices, 1)]
    ex.price(prices[0] - 1.0)
    tp = ceil_tick(prices[0] * 1.005)
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [tp], 10, "the TP", d.diag)
    d.kill(signal.SIGKILL)
    ex.price(tp + 1.0)                                      # the TP fills while the daemon is down,
    ex.price(prices[3] - 1.0)                               # then the old levels 2-4
    assert ex.position() == pytest.approx(sum(qty[1:]))
    d.start()
    wait_until(lambda: ex.open_algos() and len(exits(ex)) == 1, 15, "the stop and one exit", d.diag)
    wait_reconciles(ex, 1, d.diag)
    (a,) = ex.open_algos()
    assert float(a["triggerPrice"]) == floor_tick(tp * 0.95)           # the centre is the TP's fill price
    (be_order,) = exits(ex)
    assert "-BE" in be_order["clientOrderId"] and d.state()["pending_level"] == 0
    assert float(be_order["origQty"]) == pytest.approx(sum(qty[1:]))
    assert not [c for c in ex.book() if "-E" in c]
    assert ex.position() == pytest.approx(sum(qty[1:]))     # nothing was added by a new grid
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "TP", "ENTRY2", "ENTRY3", "ENTRY4"]
    assert_csv_matches_exchange(d, ex)
    s = d.state()
    assert s["position"]["deepest_level"] == 4 and s["grid_center"] == tp


def test_a_fill_of_an_entry_the_state_forgot_counts_as_its_level(live):
    """A fill that raced our cancel reaches the user stream after the state dropped its order
    (here: an old generation's level-3 id, filled at once).  It is an entry of level 3: BE
    for the position, the new grid's levels 1-3 cancelled (the position holds that exposure),
    level 4 kept, no stop while a deeper level exists."""
    ex, d, center = live()
    gen = d.state()["generation"]
    p1, p2, p3, p4 = entry_prices(center)
    late = f"GM-{SYM}-{gen - 1}-E3"
    price_now = float(ex.state()["symbols"][SYM]["price"])
    ex.signed("POST", "/fapi/v1/order", d.key, d.secret, symbol=SYM, side="BUY", type="LIMIT",
              timeInForce="GTC", price=f"{price_now + 50:.1f}", quantity="0.100", newClientOrderId=late)
    wait_until(lambda: len(exits(ex)) == 1 and sorted(ex.book()) == sorted([f"GM-{SYM}-{gen}-E4",
               exits(ex)[0]["clientOrderId"]]), 10, "a BE and level 4 only", d.diag)
    (be_order,) = exits(ex)
    assert "-BE" in be_order["clientOrderId"] and float(be_order["origQty"]) == 0.1
    assert float(be_order["price"]) == ceil_tick(ex.entry_price() * 1.001)
    assert not ex.open_algos()
    wait_reconciles(ex, 1, d.diag)                          # the syncs agree
    assert len(exits(ex)) == 1 and not ex.open_algos() and f"GM-{SYM}-{gen}-E4" in ex.book()
    assert [r["role"] for r in d.trades()] == ["ENTRY3"]
    assert_csv_matches_exchange(d, ex)
    assert d.state()["position"]["deepest_level"] == 3


def test_kill_during_grid_placement_leaves_no_duplicate_grid(exchange, keys, tmp_path, daemons):
    """SIGKILL while the grid's batch is in flight (placed on the exchange, not yet acknowledged)."""
    ex = exchange
    d = Daemon(tmp_path / "root", ex, *keys).start()
    daemons.append(d)
    wait_until(lambda: (lambda ws: ws["user"] >= 1 and ws["market"] >= 1)(ex.stats()["websockets"]), 15,
               "the daemon's streams", d.diag)
    ex.faults(delay_ms=1500)                                # every REST answer comes 1.5 s late
    ex.step(1)
    # A position sync already under way holds the reaction back for several 1.5 s answers.
    wait_until(lambda: len(ex.open_orders()) == 4, 25, "the batch on the exchange", d.diag)
    state = d.state()
    assert len(state["orders"]) == 4 and not any(o["order_id"] for o in state["orders"].values())
    d.kill(signal.SIGKILL)                                  # before the acknowledgement arrived
    ex.faults(delay_ms=0)
    before = ex.book()
    d.start()
    wait_until(lambda: d.log().count("시작: BTCUSDC LONG") == 2 and d.state()["orders"] and all(
        o["order_id"] for o in d.state()["orders"].values()), 15, "the restart to adopt the grid", d.diag)
    wait_reconciles(ex, 1, d.diag)
    assert ex.book().keys() == before.keys() and len(ex.state()["orders"]) == 4   # never placed twice
    assert {c: o["order_id"] for c, o in d.state()["orders"].items()} == {c: o["orderId"] for c, o in before.items()}


def test_grid_saved_but_never_sent_before_a_crash_is_sent_at_restart(live):
    """Killed between saving the BE's new grid and sending it (GM_CRASH_AFTER=send:4: the
    grid, the TP, the BE, then the new grid's batch).  The exchange never had those ids, so
    the restart sends them, with the same ids, instead of leaving the position without a grid."""
    ex, d, center = live(extra_env={"GM_CRASH_AFTER": "send:4"})
    gen = d.state()["generation"]
    p1, p2, p3, p4 = entry_prices(center)
    q1, q2 = level_qty(p1, 1), level_qty(p2, 2)
    ex.price(p2 - 1.0)
    be = ceil_tick((p1 * q1 + p2 * q2) / (q1 + q2) * 1.001)
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [be], 10, "the BE", d.diag)
    ex.price(be + 2.0)
    wait_until(lambda: not d.alive(), 10, "the crash before the new grid's request", d.diag)
    assert d.proc.returncode == 137 and not ex.book()       # nothing of the new grid went out
    saved = {c for c, o in d.state()["orders"].items() if "-E" in c}
    assert saved == {f"GM-{SYM}-{gen + 1}-E{i}" for i in (2, 3, 4)}
    d.extra_env = {}
    d.start()
    wait_until(lambda: len(ex.open_orders()) == 4 and len(exits(ex)) == 1, 15, "levels 2-4 and the TP", d.diag)
    wait_reconciles(ex, 1, d.diag)
    book = ex.book()
    # the first grid, TP, BE, the new grid once, its TP
    assert {c for c in book if "-E" in c} == saved and len(ex.state()["orders"]) == 4 + 1 + 1 + 3 + 1
    assert "never sent" in d.log()
    assert ex.position() == pytest.approx(q1)
    assert_csv_matches_exchange(d, ex)


def test_stop_passed_while_down_closes_at_market_even_through_reduce_only_refusals(live):
    """Found by the 200-kill run: the restart's mend found the stop missing and the price already
    through it; its market close was refused (-2022: an exit filled between the position read
    and the close) and the refusal ended the start-up with exit code 2.  Now a refused close
    reads the position again and retries, and a refusal at start-up is logged, not fatal: the
    next sync closes the position and the grid starts over at the exit price."""
    ex, d, center = live()
    gen = d.state()["generation"]
    prices = entry_prices(center)
    stop = floor_tick(center * 0.95)
    ex.price(prices[3] - 1.0)                               # all four levels: BE and stop
    (sl,) = wait_until(ex.open_algos, 10, "the stop", d.diag)
    d.kill(signal.SIGKILL)
    ex.signed("DELETE", "/fapi/v1/algoOrder", d.key, d.secret, clientAlgoId=sl["clientAlgoId"])
    ex.price(stop - 50.0)                                   # through the stop, which is gone
    assert ex.position() > 0 and not ex.open_algos()
    ex.faults(reduce_only_next=5)                           # 3 refusals at start-up, 2 at the next sync
    d.start()
    wait_until(lambda: ex.position() == 0 and f"GM-{SYM}-{gen + 1}-E1" in ex.book(), 15,
               "the position closed and a new grid", d.diag)
    wait_reconciles(ex, 1, d.diag)
    assert d.alive()
    log = d.log()
    assert "start-up reconciliation: an order was refused" in log and "-2022" in log
    assert [r["role"] for r in d.trades()][-1] == "SL"
    assert float(d.trades()[-1]["position_after"]) == 0
    assert_csv_matches_exchange(d, ex)
    assert len([o for o in ex.open_orders() if "-E" in o["clientOrderId"]]) == 4 and not exits(ex)


# ---------------------------------------------------------------------------- 4. config reload


def test_config_reload_applies_to_the_next_exit_and_a_bad_file_keeps_the_last_good(live):
    ex, d, center = live()
    p1 = entry_prices(center)[0]
    d.config.write_text(CONFIG.format(tp=0.010))
    wait_until(lambda: "설정 파일 재로드: config_btc.txt" in d.log(), 10, "the reload", d.diag)
    # A bad file: TP_PCT changes too, but nothing of it may apply.
    d.config.write_text(CONFIG.format(tp=0.020).replace("BE_PCT=0.001", "BE_PCT=zero point one"))
    errors = lambda: [ln for ln in d.log().splitlines() if " - ERROR - " in ln]
    wait_until(errors, 10, "the reload error", d.diag)
    seen_at = time.monotonic()
    ex.price(p1 - 1.0)
    tp = ceil_tick(p1 * 1.010)                              # the last good TP_PCT, not 0.020 nor 0.005
    wait_until(lambda: [float(o["price"]) for o in exits(ex)] == [tp], 10, "the TP at the reloaded TP_PCT",
               d.diag)
    time.sleep(max(0.0, 3.2 - (time.monotonic() - seen_at)))  # three more reload intervals
    assert d.alive()
    (line,) = errors()
    assert "BE_PCT" in line and "config_btc.txt" in line and "last good" in line
    assert "Traceback" not in d.log()
    # Fixed again: reloaded (and a new error would be logged again).
    d.config.write_text(CONFIG.format(tp=0.006))
    wait_until(lambda: d.log().count("설정 파일 재로드") == 2, 10, "the second reload", d.diag)


# ---------------------------------------------------------------------------- 5. -2019 and -2022 ladders


def test_margin_and_reduce_only_rejections_shrink_the_order(live):
    # The grid's batch and the first retries are refused for margin (-2019).
    ex, d, center = live(before_step=lambda ex: ex.faults(margin_next=6))
    assert ex.state()["faults"]["margin_next"] == 0
    prices = entry_prices(center)
    book = ex.book()
    assert len(book) == 4
    placed = {int(c[-1]): float(o["origQty"]) for c, o in book.items()}
    for level, price in enumerate(prices, 1):
        full = level_qty(price, level)
        assert 0.30 * full <= placed[level] < full, (level, placed[level], full)
        assert float(book[next(c for c in book if c.endswith(f"E{level}"))]["price"]) == price
    # E1 (0.055): refused in the batch, then at 0.054 and 0.053 (0.1 % rungs floored to the step), 0.052 placed.
    assert placed[1] == floor_step(level_qty(prices[0], 1) * (1 - 0.001 * 37)) == 0.052
    s = d.state()
    assert {int(c[-1]): o["qty"] for c, o in s["orders"].items()} == placed   # the state knows the real size

    # The TP is refused as reduce-only (-2022) three times: re-placed smaller, never above the position.
    ex.faults(reduce_only_next=3)
    ex.price(prices[0] - 1.0)
    pos = placed[1]
    tp = wait_until(lambda: exits(ex), 10, "the TP after -2022", d.diag)
    assert len(tp) == 1 and ex.state()["faults"]["reduce_only_next"] == 0
    assert ex.position() == pos and 0.5 * pos <= float(tp[0]["origQty"]) < pos
    assert float(tp[0]["price"]) == ceil_tick(prices[0] * 1.005)
    wait_reconciles(ex, 1, d.diag)                          # a sync: the smaller TP is kept, not duplicated
    assert len(exits(ex)) == 1 and d.alive()


# ---------------------------------------------------------------------------- 6. user stream lost


def _streams_up(ex: Exchange) -> bool:
    ws = ex.stats()["websockets"]
    return ws["user"] == 1 and ws["market"] == 1


def test_fill_missed_while_the_user_stream_is_down_is_recovered_once(live):
    # No periodic sync within the test: what is recovered, the reconnect recovers; what is not
    # missed must arrive on the stream again.
    ex, d, center = live(sync_interval=60)
    gen = d.state()["generation"]
    p1 = entry_prices(center)[0]
    q1 = level_qty(p1, 1)
    income_reads = lambda: ex.stats()["requests"].get("GET /fapi/v1/income", 0)  # noqa: E731
    reads = income_reads()
    assert ex.ws_drop("user") == 1
    ex.price(p1 - 1.0)                                      # level 1 fills with nobody listening
    assert ex.stats()["websockets"]["user"] == 0 and ex.position() == q1
    tp = ceil_tick(p1 * 1.005)
    wait_until(lambda: [(float(o["price"]), float(o["origQty"])) for o in exits(ex)] == [(tp, q1)], 15,
               "the TP after the missed fill", d.diag)
    wait_until(lambda: _streams_up(ex), 15, "the user stream back", d.diag)
    # The reconnect's last step (after its reconcile, under the same lock) reads the income history.
    wait_until(lambda: income_reads() > reads, 15, "the reconnect done", d.diag)
    assert len(exits(ex)) == 1 and [r["role"] for r in d.trades()] == ["ENTRY1"]
    assert_csv_matches_exchange(d, ex)

    # The stream works again: the TP fill arrives and the grid is reset.
    ex.price(tp + 5.0)
    wait_until(lambda: f"GM-{SYM}-{gen + 1}-E1" in ex.book(), 10, "a new grid after the TP", d.diag)

    # listenKey expired early: the daemon takes a new key; a fill in the gap is recovered once.
    new_p1 = entry_prices(d.state()["grid_center"])[0]
    reads = income_reads()
    ex._call("POST", "/_sim/listen_key/expire")
    ex.price(new_p1 - 1.0)
    wait_until(lambda: len(exits(ex)) == 1 and ex.position() > 0, 15, "the TP after the second missed fill",
               d.diag)
    wait_until(lambda: _streams_up(ex) and len(d.trades()) == 3, 15, "the stream back and three rows", d.diag)
    wait_until(lambda: income_reads() > reads, 15, "the reconnect done", d.diag)
    assert [r["role"] for r in d.trades()] == ["ENTRY1", "TP", "ENTRY1"] and len(exits(ex)) == 1
    assert_csv_matches_exchange(d, ex)
    log = d.log()
    assert log.count("놓친 체결 복구") == 2 and "놓친 체결 복구: GM-BTCUSDC-1-TP" not in log   # the TP came live
    assert log.count("websocket:") == 2 and "listenKey expired; reconnecting" in log
    assert d.alive() and "Traceback" not in log and " - ERROR - " not in log


def test_a_market_stream_connected_but_silent_is_reconnected_and_said(tmp_path, keys, daemons):
    """Issue 19 (8): a stream on a route Binance no longer feeds opens and then brings nothing.
    The daemon notices (here after 1.5 s; 90 s by default), logs an ERROR (which notifies) and
    reconnects; once the market flows again it trades on."""
    ex = Exchange(tmp_path / "exchange", *keys, seed=4, speed=20)
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons, market_silence=1.5)
        wait_until(lambda: d.state().get("grid_center"), 15, "the first grid", d.diag)
        ex.faults(market_silent=1)
        wait_until(lambda: "market stream connected but silent" in d.log(), 15, "the silence noticed", d.diag)
        line = next(ln for ln in d.log().splitlines() if "market stream connected but silent" in ln)
        assert " - ERROR - " in line
        wait_until(lambda: "websocket: market stream silent" in d.log(), 15, "the reconnect", d.diag)
        ex.faults(market_silent=0)
        before = d.log().count("market stream connected but silent")
        wait_until(lambda: _streams_up(ex), 15, "the streams back", d.diag)
        wait_reconciles(ex, 2, d.diag)
        assert d.alive() and d.log().count("market stream connected but silent") <= before + 1
    finally:
        ex.stop()


# ---------------------------------------------------------------------------- 7. keys


def _one_clear_line(rc: int, out: str, err: str) -> str:
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trade_btc.py: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def _files_text(root: Path) -> str:
    """Everything the daemon wrote (its .env, written by the test, excluded)."""
    return "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.name != ".env")


def test_missing_keys_and_a_rejected_key_fail_with_one_line_and_never_show_the_secret(tmp_path, exchange, keys,
                                                                                      daemons):
    key, secret = keys
    # No keys in .env (and none in the environment): no exchange needed to refuse.
    d = Daemon(tmp_path / "nokeys", None, key, secret, env_text="BINANCE_API_KEY=\n# no secret\n")
    daemons.append(d)
    line = _one_clear_line(*d.run_to_exit())
    assert "BINANCE_API_KEY" in line and "BINANCE_API_SECRET" in line and str(d.env_file) in line
    # Only the secret is missing.
    d = Daemon(tmp_path / "nosecret", None, key, secret, env_text=f"BINANCE_API_KEY={key}\n")
    daemons.append(d)
    assert "BINANCE_API_SECRET" in _one_clear_line(*d.run_to_exit())

    # A key the exchange does not know: -2015 at the first signed request.
    wrong_secret = "e2e-wrong-secret-" + secrets.token_hex(12)
    d = Daemon(tmp_path / "badkey", exchange, "e2e-unknown-key", wrong_secret)
    daemons.append(d)
    rc, out, err = d.run_to_exit()
    line = _one_clear_line(rc, out, err)
    assert "-2015" in line and "API key rejected" in line
    # The right key with a wrong secret: -1022 (bad signature), the same kind of answer.
    d2 = Daemon(tmp_path / "badsecret", exchange, key, wrong_secret)
    daemons.append(d2)
    rc2, out2, err2 = d2.run_to_exit()
    assert "-1022" in _one_clear_line(rc2, out2, err2)
    for dd, texts in ((d, out + err), (d2, out2 + err2)):
        written = _files_text(dd.root)
        assert wrong_secret not in texts + written
        assert "API key rejected" in dd.log()              # the same line in the log file
        assert not (dd.root / "state" / "btc.pid").exists()  # removed on the way out
    assert secret not in _files_text(tmp_path) + out + err + out2 + err2
    assert not exchange.state()["orders"]                   # nothing was ever placed with bad keys


# ---------------------------------------------------------------------------- the venue goes away


def test_daemon_survives_a_vanished_exchange_and_still_stops_promptly(live):
    ex, d, center = live()
    ex.stop()                                               # the venue disappears (port closed)
    wait_until(lambda: "reconnecting in" in d.log() and "position sync failed" in d.log(), 15,
               "the daemon to notice", d.diag)
    assert d.alive()
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0 and time.monotonic() - t0 < 5
    assert "Traceback" not in d.log() + d.stderr_path.read_text()


# ---------------------------------------------------------------------------- range exit


def test_flat_grid_follows_the_price_up_out_of_its_range(tmp_path, keys, daemons):
    """The range exit reacts to the market stream (klines), so it needs candles: a hand-made CSV."""
    from market.data import Candles, write_klines_csv
    t0 = 1_700_000_000_000
    rows = [(60_000.0, 60_000.0, 60_000.0, 60_000.0),       # centre 60 000, band 61 200
            (60_000.0, 61_300.0, 60_000.0, 61_300.0),       # up through the band, no entry touched
            (61_300.0, 61_300.0, 61_300.0, 61_300.0)]
    o, h, lo, c = (list(x) for x in zip(*rows))
    data = tmp_path / f"{SYM}-1m-e2e.csv"
    write_klines_csv(Candles.from_arrays([t0 + 60_000 * i for i in range(len(rows))], o, h, lo, c,
                                         [10.0] * len(rows)), data)
    ex = Exchange(tmp_path / "exchange", *keys, data=data)
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        gen = d.state()["generation"]
        ex.step(1)
        wait_until(lambda: sorted(ex.book()) == [f"GM-{SYM}-{gen + 1}-E{i}" for i in (1, 2, 3, 4)], 10,
                   "the grid re-centred at the band", d.diag)
        band = 60_000.0 * 1.02
        assert d.state()["grid_center"] == pytest.approx(band)
        book = ex.book()
        assert [float(book[f"GM-{SYM}-{gen + 1}-E{i}"]["price"]) for i in (1, 2, 3, 4)] == entry_prices(band)
        assert not ex.fills() and "그리드 범위 이탈" in d.log()
    finally:
        for dd in daemons:
            dd.kill()
        ex.stop()


# ---------------------------------------------------------------------------- liquidation


def test_liquidation_is_recognised_recorded_and_stops_the_grid(tmp_path, exchange, keys, daemons):
    """50× with a stop too far to help: the exchange liquidates; the daemon records the forced
    close as a LIQUIDATION row, logs it loudly, shows it in status.sh, and (AFTER_LIQUIDATION=STOP)
    places no new grid."""
    import subprocess
    import sys

    from harness import REPO, with_values
    root = tmp_path / "root"
    root.mkdir()
    (root / "config_btc.txt").write_text(with_values(CONFIG.format(tp=0.005),
                                                     {"LEVERAGE_LONG": "50", "SL_DISTANCE": "0.30"}))
    d = start_daemon(exchange, root, keys, daemons, write_config=False)
    ex = exchange
    ex.step(1)
    wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
    center = d.state()["grid_center"]
    ex.price(entry_prices(center)[3] - 1.0)                     # the whole ladder fills
    wait_until(lambda: len(exits(ex)) == 1, 10, "the BE after level 4", d.diag)
    [risk] = ex.signed("GET", "/fapi/v3/positionRisk", *keys, symbol=SYM)
    lp = float(risk["liquidationPrice"])
    assert 0 < lp < entry_prices(center)[3]
    # The daemon's state carries the exchange's liquidation price and mark for status.sh.
    wait_until(lambda: d.state().get("liquidation_price") == pytest.approx(lp, rel=1e-6), 10,
               "the liquidation price in the state", d.diag)
    out = subprocess.run([sys.executable, str(REPO / "status.py"), "--root", str(root), "btc"],
                         capture_output=True, text=True, timeout=20).stdout
    assert f"liquidation price ${lp:,.2f}" in out and "% from the mark" in out, out
    ex.price(lp - 50.0)                                           # through the liquidation price
    wait_until(lambda: d.trades() and d.trades()[-1]["role"] == "LIQUIDATION", 10, "the LIQUIDATION row", d.diag)
    row = d.trades()[-1]
    assert row["client_order_id"].startswith("autoclose-") and float(row["position_after"]) == 0
    assert abs(float(row["price"]) - lp) <= 0.1 + 1e-9
    assert ex.position() == 0 and not ex.open_orders() and not ex.open_algos()
    assert "LIQUIDATED" in d.log() and "AFTER_LIQUIDATION=STOP" in d.log()
    # Halted: the market goes on, the daemon places nothing (its syncs run every second).
    ex.step(3)
    wait_reconciles(ex, 1, d.diag)
    assert d.alive() and not ex.open_orders() and not ex.open_algos()
    assert d.state()["liquidated_at"] > 0
    out = subprocess.run([sys.executable, str(REPO / "status.py"), "--root", str(root), "btc"],
                         capture_output=True, text=True, timeout=20).stdout
    assert "LIQUIDATED at" in out, out
    assert_csv_matches_exchange(d, ex)


HOUR_AFTER_NEW_YEAR = 1_704_067_200_000 + 3_600_000   # 2024-01-01T01:00Z: no funding time in the runs


def exchange_on_candles(tmp_path: Path, keys: tuple[str, str], rows: list[tuple[float, float, float, float]],
                        t0: int, vols: list[float] | None = None, **kw: Any) -> Exchange:
    """A local exchange replaying hand-made candles (open, high, low, close) from `t0`."""
    from market.data import Candles, write_klines_csv
    n = len(rows)
    o, h, l, c = (list(x) for x in zip(*rows))
    data = tmp_path / "BTCUSDC-1m.csv"
    write_klines_csv(Candles.from_arrays([t0 + 60_000 * i for i in range(n)], o, h, l, c, vols or [1.0] * n), data)
    return Exchange(tmp_path / "exchange", *keys, data=data, **kw)


# ---------------------------------------------------------------------------- funding


def test_funding_is_recorded_once_recovered_after_downtime_and_shown_by_status(tmp_path, keys, daemons):
    """A position held over two funding times (Binance's baseline 0.01 % per 8 h): the one settled
    while the daemon was down comes back from the income history at restart, the one settled
    while it runs comes with its FUNDING_FEE event; no row twice across restarts.  The CSV is
    the one record: a kill right after the recovered row is written loses nothing from the
    total the metrics, the log and status.sh show."""
    import csv as _csv
    import subprocess
    import sys
    import urllib.request

    from harness import REPO, free_port
    ft = 1_704_067_200_000                               # 2024-01-01T00:00:00Z
    c = 60_000.0
    below = round(c * 0.993, 1)                          # under level 1, above level 2
    rows = [(c, c + 5, c - 5, c), (c, c, below, below)] + [(below, below + 5, below - 5, below)] * 490
    ex = exchange_on_candles(tmp_path, keys, rows, ft - 2 * 60_000)   # candle 2 opens at the funding time
    both = lambda: d.alive() and (lambda ws: ws["user"] >= 1 and ws["market"] >= 1)(ex.stats()["websockets"])  # noqa: E731
    port = free_port()

    def paid_metric() -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r'^gm_funding_paid\{symbol="BTCUSDC"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        ex.step(1)                                       # level 1 fills
        wait_until(lambda: len(exits(ex)) == 1, 10, "the TP of level 1", d.diag)
        q = ex.position()
        d.kill(signal.SIGKILL)
        ex.step(1)                                       # FT settles while the daemon is down
        path = d.root / "trades" / "funding_btc.csv"
        read = lambda: list(_csv.DictReader(open(path, newline=""))) if path.exists() else []  # noqa: E731
        # Killed right after the recovered row is written (GM_CRASH_AFTER=funding:1).
        d.extra_env = {"GM_CRASH_AFTER": "funding:1"}
        rc, _, _ = d.run_to_exit(30)
        assert rc == 137 and len(read()) == 1, d.diag()
        [r] = read()
        assert r["time"] == "2024-01-01T00:00:00Z" and float(r["income"]) == pytest.approx(-q * below * 0.0001,
                                                                                            abs=1e-8)
        first = q * below * 0.0001
        d.extra_env = {"METRICS_PORT": str(port)}
        d.start()
        wait_until(both, 15, "the daemon's streams after the restart", d.diag)
        assert len(read()) == 1
        wait_until(lambda: paid_metric() is not None, 15, "the metrics page", d.diag)
        assert paid_metric() == pytest.approx(first, abs=1e-8)         # from the CSV: nothing lost
        assert "funding_paid" not in d.state()                         # one record, not two
        assert "펀딩비 2024-01-01 00:00 UTC" in d.log()
        # Running: the next settlement (8 h later) arrives as a FUNDING_FEE event.
        ex.step(480)
        wait_until(lambda: len(read()) == 2, 15, "the second funding row", d.diag)
        assert read()[1]["time"] == "2024-01-01T08:00:00Z"
        total = sum(-float(x["income"]) for x in read())
        wait_until(lambda: paid_metric() == pytest.approx(total, abs=1e-8), 10, "the total in the metrics", d.diag)
        assert f"누적 지불 {total:.6f}" in d.log(), d.log()[-1500:]
        # A restart writes nothing twice: the income history is read again once the streams
        # are up (after the start's own read), and finds both rows written.
        d.kill(signal.SIGKILL)
        reads = ex.stats()["requests"].get("GET /fapi/v1/income", 0)
        d.extra_env = {}
        d.start()
        wait_until(both, 15, "the third start's streams", d.diag)
        wait_until(lambda: ex.stats()["requests"].get("GET /fapi/v1/income", 0) >= reads + 2, 15,
                   "the income history read at start and after the streams connected", d.diag)
        assert len(read()) == 2 and len({x["tran_id"] for x in read()}) == 2
        out = subprocess.run([sys.executable, str(REPO / "status.py"), "--root", str(d.root), "btc"],
                             capture_output=True, text=True, timeout=20).stdout
        assert f"total ${total:+.4f} over 2 settlements" in out, out
        assert (d.root / "state" / "brackets_btc.json").exists()   # the account's own table, for backtests
    finally:
        ex.stop()


# ---------------------------------------------------------------------------- partial fills


def one_exit(ex: Exchange, qty: float | None = None, role: str | None = None) -> bool:
    """Exactly one exit rests (of that size / role), from one read of the book (the daemon may
    replace it between two reads)."""
    xs = exits(ex)
    return len(xs) == 1 and (qty is None or float(xs[0]["origQty"]) == pytest.approx(qty)) and (
        role is None or xs[0]["clientOrderId"].split("-")[3].startswith(role))


def test_partial_fills_of_entries_and_tp_with_a_restart_in_the_middle(tmp_path, keys, daemons):
    """The volume fill model on the local exchange: level 1 fills in parts over several candles,
    the TP follows the position after each part, the TP itself fills in parts, and a restart
    between two parts of one order loses nothing and places nothing twice."""
    c = 60_000.0
    l1 = floor_tick(c * (1 - DISTANCES[0]))
    q1 = level_qty(l1, 1)
    dip = (l1 + 100, l1 + 110, l1 - 50, l1 - 20)         # o→h→l→c: through level 1, closes below it
    rows = [(c, c + 5, c - 5, c)] + [dip] * 4
    tp = ceil_tick(l1 * 1.005)
    rise = (tp - 30, tp + 40, tp - 40, tp + 10)           # o→l→h→c: up through the TP
    rows += [rise] * 6
    vols = [10.0] + [0.6] * 10                            # a leg's share: 0.6 × 0.1 / 3 = 0.020
    ex = exchange_on_candles(tmp_path, keys, rows, HOUR_AFTER_NEW_YEAR, vols, fill_share=0.1, funding_rate=0)
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        ex.step(1)                                        # two parts of level 1 (0.020 each)
        wait_until(lambda: ex.position() == pytest.approx(0.04) and one_exit(ex, 0.04), 10, "a TP for the two parts", d.diag)
        d.kill(signal.SIGKILL)                            # level 1 is still partly open
        ex.step(1)                                        # its last part fills while the daemon is down
        assert ex.position() == pytest.approx(q1)
        d.start()
        wait_until(lambda: one_exit(ex, q1), 15,
                   "the TP for the whole level after the restart", d.diag)
        entries = [r for r in d.trades() if r["role"] == "ENTRY1"]
        assert len(entries) == 3 and sum(float(r["quantity"]) for r in entries) == pytest.approx(q1)
        assert_csv_matches_exchange(d, ex)
        st = d.state()
        assert st["position"]["level_filled"][0] == pytest.approx(q1) and st["position"]["deepest_level"] == 1
        ex.step(1)                                        # the dip candle left: nothing more fills
        ex.step(6)                                        # the TP fills in parts, then a new grid
        wait_until(lambda: ex.position() == 0 and len(ex.open_orders()) == 4, 15, "flat and a new grid", d.diag)
        tps = [r for r in d.trades() if r["role"] == "TP"]
        assert len(tps) >= 2 and sum(float(r["quantity"]) for r in tps) == pytest.approx(q1)
        assert_csv_matches_exchange(d, ex)
        book = ex.book()
        assert len(book) == 4 and len({o["price"] for o in book.values()}) == 4     # one new grid, no duplicate
    finally:
        ex.stop()


def test_a_be_filled_in_parts_keeps_level_one_and_regrids_once(tmp_path, keys, daemons):
    """Levels 1 and 2 fill (level 2 in two parts); the BE for levels 2 then fills in parts over
    several candles; once it has filled, level 1 stays with its TP and levels 2-4 are placed
    once around the new centre."""
    c = 60_000.0
    l1, l2 = (floor_tick(c * (1 - d)) for d in DISTANCES[:2])
    q1, q2 = level_qty(l1, 1), level_qty(l2, 2)
    avg = (q1 * l1 + q2 * l2) / (q1 + q2)
    be = ceil_tick(avg * 1.001)
    rows = [(c, c + 5, c - 5, c), (l1 + 100, l1 + 110, l2 - 50, l2 - 20)]      # both levels
    rows += [(l2 - 20, be + 40, l2 - 30, be + 30)] * 6                          # up through the BE
    vols = [10.0, 6.0] + [0.9] * 6                                              # 0.2, then 0.03 a leg
    ex = exchange_on_candles(tmp_path, keys, rows, HOUR_AFTER_NEW_YEAR, vols, fill_share=0.1, funding_rate=0)
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        gen = d.state()["generation"]
        ex.step(1)
        wait_until(lambda: ex.position() == pytest.approx(q1 + q2) and one_exit(ex, q2), 10, "one BE for level 2", d.diag)
        assert len([r for r in d.trades() if r["role"] == "ENTRY2"]) == 2          # level 2 in two parts
        ex.step(1)                                                                 # the BE: two parts
        wait_until(lambda: ex.position() == pytest.approx(q1 + q2 - 0.06), 10, "two parts of the BE", d.diag)
        [be_order] = exits(ex)
        assert float(be_order["executedQty"]) == pytest.approx(0.06) and be_order["status"] == "PARTIALLY_FILLED"
        ex.step(5)
        wait_until(lambda: ex.position() == pytest.approx(q1) and one_exit(ex, role="TP"), 15,
                   "level 1 kept with its TP", d.diag)
        bes = [r for r in d.trades() if r["role"] == "BE"]
        assert len(bes) >= 3 and sum(float(r["quantity"]) for r in bes) == pytest.approx(q2)
        book = ex.book()
        new_entries = sorted(cid for cid in book if cid.startswith(f"GM-{SYM}-{gen + 1}-E"))
        assert new_entries == [f"GM-{SYM}-{gen + 1}-E{i}" for i in (2, 3, 4)], sorted(book)
        assert len(book) == 4                                                      # 3 entries + the TP
        assert_csv_matches_exchange(d, ex)
    finally:
        ex.stop()


def test_the_stops_market_close_sweeps_a_thin_book_in_several_trades(tmp_path, keys, daemons):
    """The whole ladder fills on a busy candle; the stop triggers on a thin one, and its market
    close fills in several trades a tick apart: one CSV row each, flat after, one new grid."""
    c = 60_000.0
    levels = [floor_tick(c * (1 - d)) for d in DISTANCES]
    total = sum(level_qty(p, i) for i, p in enumerate(levels, 1))
    sl = floor_tick(c * 0.95)
    rows = [(c, c + 5, c - 5, c), (levels[0] + 100, levels[0] + 110, levels[3] - 50, levels[3] - 20),
            (levels[3] - 20, levels[3] - 10, sl - 50, sl - 30)] + [(sl - 30, sl - 20, sl - 40, sl - 30)] * 2
    vols = [10.0, 60.0, 3.0, 3.0, 3.0]                   # a leg's share: 2.0 BTC, then 0.1
    ex = exchange_on_candles(tmp_path, keys, rows, HOUR_AFTER_NEW_YEAR, vols, fill_share=0.1, funding_rate=0)
    try:
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        gen = d.state()["generation"]
        ex.step(1)
        wait_until(lambda: ex.position() == pytest.approx(total) and ex.open_algos(), 10, "the stop", d.diag)
        ex.step(1)
        wait_until(lambda: ex.position() == 0 and len(ex.book()) == 4
                   and all(cid.startswith(f"GM-{SYM}-{gen + 1}-E") for cid in ex.book()), 15,
                   "flat and one new grid", d.diag)
        sls = [r for r in d.trades() if r["role"] == "SL"]
        assert len(sls) >= 5 and sum(float(r["quantity"]) for r in sls) == pytest.approx(total)
        prices = [float(r["price"]) for r in sls]
        assert prices[0] == sl and all(round(a - b, 1) == 0.1 for a, b in zip(prices, prices[1:])), prices
        assert len({r["client_order_id"] for r in sls}) == 1                      # one order, many trades
        assert_csv_matches_exchange(d, ex)
    finally:
        ex.stop()


@pytest.mark.parametrize("collateral, multi", [("BNFCR", False), ("USDT", True)])
def test_a_credits_or_multi_assets_account_trades_on_the_capital_its_mode_gives(tmp_path, keys, daemons,
                                                                                collateral, multi):
    """Issue 19 (5): an EU credits-mode account (BNFCR) or a multi-assets account holding USDT
    has no USDC row to size from; the daemon reads the mode and sizes from what margins the
    symbol (before, it stopped with "no USDC balance")."""
    ex = Exchange(tmp_path / "exchange", *keys, collateral=collateral)
    try:
        if multi:
            ex.signed("POST", "/fapi/v1/multiAssetsMargin", *keys, multiAssetsMargin="true")
        d = start_daemon(ex, tmp_path / "root", keys, daemons)
        ex.step(1)
        wait_until(lambda: len(ex.open_orders()) == 4, 10, "the first grid", d.diag)
        mode = "multi-assets mode" if multi else "credits mode (margin: BNFCR)"
        assert mode in d.log()
        assert d.state()["capital"] == pytest.approx(CAPITAL)
    finally:
        for x in daemons:
            x.kill()
        ex.stop()
