"""What the pre-flight check (live/preflight.py, `trade_btc.py --check`) reads beyond the daemon's
endpoints: POST /fapi/v1/order/test and GET /sapi/v1/account/apiRestrictions.

A part of `local_exchange.LocalExchange` (a mixin: it uses the attributes the façade sets up)."""
from __future__ import annotations

from typing import Any, Mapping




class _Validated(Exception):
    """Raised where the engine would accept the order: every check before it has passed."""


class PreflightApiMixin:
    """Test-Order and Get-API-Key-Permission."""

    def _test_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order/test (Test-Order): "this order will not be submitted to matching
        engine".  The request goes through every check of POST /fapi/v1/order, in the same
        order and with the same errors (it is that code, stopped where the engine would accept
        the order), and nothing is recorded; the answer is {}.  The injected placement faults
        (margin_next, reduce_only_next, unknown_*) are not taken by it."""
        params = self._order_params(p)
        params.pop("newOrderRespType", None)
        sim = self.sim

        def stop(*_a: Any, **_k: Any) -> Any:
            raise _Validated

        sim.accept = stop            # this instance only, for this one synchronous call
        try:
            sim.new_order(**params)
        except _Validated:
            return {}
        finally:
            del sim.accept
        return {}

    def _api_restrictions(self, p: Mapping[str, str]) -> dict[str, Any]:
        """GET /sapi/v1/account/apiRestrictions (wallet: Get-API-Key-Permission), Binance's
        documented fields.  The faults key_withdrawals=1 / key_no_futures=1 report a key with
        withdrawals on / futures off (the futures endpoints still answer it)."""
        if getattr(self, "_key_created_ms", None) is None:
            self._key_created_ms = self.server_time()
        fl = self.faults
        return {"ipRestrict": False, "createTime": self._key_created_ms, "enableReading": True,
                "enableWithdrawals": bool(fl.key_withdrawals), "enableInternalTransfer": False,
                "enableMargin": False, "enableFutures": not fl.key_no_futures, "permitsUniversalTransfer": False,
                "enableVanillaOptions": False, "enableFixApiTrade": False, "enableFixReadOnly": False,
                "enableSpotAndMarginTrading": False, "enablePortfolioMarginTrading": False}
