"""Issue 8, item 5: the replay of missed fills pages userTrades from the state's last
acted-on trade id (fromId), beyond 1,000 trades and beyond the 7 days Binance returns
without it.  The local exchange (in-process, 127.0.0.1) and the daemon's own `Daemon`
class with the real python-binance client; real state and CSV files."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from live.daemon import Daemon, DaemonSettings
from paths import Paths
from harness import CONFIG
from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET, LocalExchange

SYM = "BTCUSDC"
DAY_MS = 24 * 3600 * 1000


def hand_trades(ex: LocalExchange, pairs: int) -> None:
    """Market buy / sell pairs typed by hand on the account: flat again after each pair."""
    for _ in range(pairs):
        ex.sim.new_order(SYM, "BUY", "MARKET", quantity="0.001")
        ex.sim.new_order(SYM, "SELL", "MARKET", quantity="0.001")
    ex.sim.drain_events()


def make_daemon(ex: LocalExchange, root: Path) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "config_btc.txt"
    cfg.write_text(CONFIG.format(tp=0.005))
    return Daemon(DaemonSettings(SYM, cfg, Paths(root), base_url=ex.rest_url, ws_url=ex.ws_url,
                                 capital_override=1000.0), DEFAULT_API_KEY, DEFAULT_API_SECRET)


def csv_ids(root: Path) -> list[int]:
    with open(root / "trades" / "trades_btc.csv", newline="") as fh:
        return [int(r["trade_id"]) for r in csv.DictReader(fh)]


async def test_replay_pages_past_1000_trades_and_past_seven_days(tmp_path, start_exchange):
    logging.getLogger("grid").setLevel(logging.WARNING)
    ex: LocalExchange = await start_exchange(symbols=(SYM,), synthetic_seed=3, order_limit_10s=100_000,
                                             order_limit_1m=100_000, weight_limit=1_000_000)
    root = tmp_path / "root"
    hand_trades(ex, 1)
    d = make_daemon(ex, root)
    await d.start()                        # first life: records the two trades, acts on them
    await d.shutdown()
    assert d.strategy.state.last_trade_id == 2
    # Down for 8 days while 1,300 more trades happen (the first ones 8 days ago).
    hand_trades(ex, 650)
    ex.sim.now_ms += 8 * DAY_MS
    before = ex.requests["GET /fapi/v1/userTrades"]
    d2 = make_daemon(ex, root)
    await d2.start()
    await d2.shutdown()
    ids = csv_ids(root)
    assert ids == list(range(1, 1303)), (len(ids), ids[:3], ids[-3:])
    assert d2.strategy.state.last_trade_id == 1302
    # Without fromId the exchange gives only the last 7 days: none of these.
    pages = ex.requests["GET /fapi/v1/userTrades"] - before
    assert pages >= 2, pages
