"""What the pre-flight check (live/preflight.py, `trade_btc.py --check`) reads beyond the daemon's
endpoints: POST /fapi/v1/order/test and GET /sapi/v1/account/apiRestrictions.

A part of `local_exchange.LocalExchange`: it validates an order with the account part's own
parameter checks (`OrderChecks`) and the simulator's, and reads the key faults."""
from __future__ import annotations

from typing import Any, Mapping, Protocol

from sim.exchange import SimulatedExchange
from localex.base import Faults, ServerTime


class OrderChecks(Protocol):
    """POST /fapi/v1/order's parameter checks (the account part)."""

    def order_params(self, p: Mapping[str, Any]) -> dict[str, Any]: ...


class _Validated(Exception):
    """Raised where the engine would accept the order: every check before it has passed."""


class PreflightApi:
    """Test-Order and Get-API-Key-Permission."""

    def __init__(self, sim: SimulatedExchange, orders: OrderChecks, faults: Faults, server_time: ServerTime):
        self.sim = sim
        self.orders = orders
        self.faults = faults
        self.server_time = server_time
        self.key_created_ms: int | None = None   # the key's createTime: the first time it is asked for

    def test_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order/test (Test-Order): "this order will not be submitted to matching
        engine".  The request goes through every check of POST /fapi/v1/order, in the same
        order and with the same errors (it is that code, stopped where the engine would accept
        the order), and nothing is recorded; the answer is {}.  The injected placement faults
        (margin_next, reduce_only_next, unknown_*) are not taken by it."""
        params = self.orders.order_params(p)
        params.pop("newOrderRespType", None)
        sim = self.sim

        def stop(*_a: Any, **_k: Any) -> Any:
            raise _Validated

        # This instance only, for this one synchronous call: the simulator has no check-only entry
        # (its `accept` is where an order that passed every check is recorded).
        sim.accept = stop  # type: ignore[method-assign]
        try:
            sim.new_order(**params)
        except _Validated:
            return {}
        finally:
            del sim.accept
        return {}

    def api_restrictions(self, p: Mapping[str, str]) -> dict[str, Any]:
        """GET /sapi/v1/account/apiRestrictions (wallet: Get-API-Key-Permission), Binance's
        documented fields.  The faults key_withdrawals=1 / key_no_futures=1 report a key with
        withdrawals on / futures off (the futures endpoints still answer it)."""
        if self.key_created_ms is None:
            self.key_created_ms = self.server_time()
        fl = self.faults
        return {"ipRestrict": False, "createTime": self.key_created_ms, "enableReading": True,
                "enableWithdrawals": bool(fl.key_withdrawals), "enableInternalTransfer": False,
                "enableMargin": False, "enableFutures": not fl.key_no_futures, "permitsUniversalTransfer": False,
                "enableVanillaOptions": False, "enableFixApiTrade": False, "enableFixReadOnly": False,
                "enableSpotAndMarginTrading": False, "enablePortfolioMarginTrading": False}
