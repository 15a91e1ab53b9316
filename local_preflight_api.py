"""What the pre-flight check (preflight.py, `trade_btc.py --check`) reads beyond the daemon's
endpoints: POST /fapi/v1/order/test, GET /sapi/v1/account/apiRestrictions, and hedge mode.

A part of `local_exchange.LocalExchange` (a mixin: it uses the attributes the façade sets up)."""
from __future__ import annotations

from typing import Any, Mapping

from exchange_api import ExchangeError

MSG_POSITION_SIDE = "Order's position side does not match user's setting."


class _Validated(Exception):
    """Raised where the engine would accept the order: every check before it has passed."""


class PreflightApiMixin:
    """Test-Order, Get-API-Key-Permission, and the switch to hedge mode Binance allows."""

    def _test_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/order/test (Test-Order): "this order will not be submitted to matching
        engine".  The request goes through every check of POST /fapi/v1/order, in the same
        order and with the same errors (it is that code, stopped where the engine would accept
        the order), and nothing is recorded; the answer is {}.  The injected placement faults
        (margin_next, reduce_only_next, unknown_*) are not taken by it."""
        params = self._order_params(p)
        params.pop("newOrderRespType", None)
        if self.sim.dual_side and str(params.get("positionSide") or "BOTH").upper() == "BOTH":
            raise ExchangeError(-4061, MSG_POSITION_SIDE)       # hedge mode: LONG or SHORT must be sent
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

    def _position_mode(self, p: Mapping[str, str]) -> dict[str, Any]:
        """POST /fapi/v1/positionSide/dual with hedge mode too: Binance switches an account that
        holds no position and no open order (-4068 / -4067 otherwise), so a user can leave one in
        hedge mode.  The engine trades one-way: here hedge mode is what GET positionSide/dual
        reports and what order/test refuses (-4061 without LONG/SHORT); the daemon switches back
        at start.  Every other request is the account API's."""
        if (p.get("dualSidePosition") or "").lower() == "true" and not self.sim.dual_side:
            books = list(self.sim.books.values())
            if any(b.position.steps for b in books):
                raise ExchangeError(-4068, "Position side cannot be changed if there exists position.")
            if any(b.open_by_client or b.algo_by_client for b in books):
                raise ExchangeError(-4067, "Position side cannot be changed if there exists open orders.")
            self.sim.dual_side = True
            return {"code": 200, "msg": "success"}
        return super()._position_mode(p)
