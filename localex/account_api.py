"""Account, order, algo-order and listenKey endpoints (signed): balances, positions, income, brackets, leverage, orders by id and client id.

A part of `local_exchange.LocalExchange`: it trades on the simulator, resolves symbols through the
market part (`SymbolLookup`), takes the placement faults, and hands out the listenKeys the
streams check."""
from __future__ import annotations
import json
import secrets
import string
import time
from typing import Any, Mapping, Protocol
from exchange_api import BinanceError, ExchangeError, SymbolFilters
from sim.account import open_order_margin
from sim.exchange import MAX_BATCH_ORDERS, SimulatedExchange, SymbolBook
from localex.wire import algo_json, order_json, trade_json
from localex.wire import f8 as _f8, fmt_rate as _rate
from localex.base import (MSG_NO_LISTEN_KEY, TRADES_DEFAULT_WINDOW_MS, Faults, ListenKeys, limit_param, mandatory,
    opt_int)


class SymbolLookup(Protocol):
    """The request's symbol, resolved as Binance does (the market part)."""

    def symbol(self, p: Mapping[str, str]) -> str: ...

    def optional_symbol(self, p: Mapping[str, str]) -> str | None: ...

    def symbols_of(self, p: Mapping[str, str]) -> list[str]: ...

    def filters(self, sym: str) -> SymbolFilters: ...


class AccountApi:
    """Account, order, algo-order and listenKey endpoints (signed): balances, positions, income, brackets, leverage, orders by id and client id."""

    def __init__(self, sim: SimulatedExchange, market: SymbolLookup, faults: Faults, listen_keys: ListenKeys):
        self.sim = sim
        self.market = market
        self.faults = faults
        self.listen_keys = listen_keys

    def income(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/income: FUNDING_FEE, INSURANCE_CLEAR, REALIZED_PNL and COMMISSION records,
        oldest first; without startTime/endTime the last 7 days (limit 100, max 1000)."""
        sym = self.market.optional_symbol(p)
        kind = (p.get("incomeType") or "").upper() or None
        limit = limit_param(p, 100, 1000)
        start, end = opt_int(p, "startTime"), opt_int(p, "endTime")
        if start is None and end is None:
            start = self.sim.now_ms - 7 * 86_400_000
        recs = [(i.time, i.tran_id, i.symbol, i.income_type, i.income, i.info, "") for i in self.sim.income]
        for t in self.sim.trades:
            if t.realized_pnl:
                recs.append((t.time, 10**9 + 2 * t.id, t.symbol, "REALIZED_PNL", t.realized_pnl, "", str(t.id)))
            if t.commission:
                recs.append((t.time, 10**9 + 2 * t.id + 1, t.symbol, "COMMISSION", -t.commission, "", str(t.id)))
        out = [{"symbol": s, "incomeType": k, "income": _f8(v), "asset": self.sim.asset, "info": info, "time": t,
                "tranId": tid, "tradeId": trade}
               for t, tid, s, k, v, info, trade in sorted(recs)
               if (sym is None or s == sym) and (kind is None or k == kind)
               and (start is None or t >= start) and (end is None or t <= end)]
        return out[:limit]

    def leverage_bracket(self, p: Mapping[str, str]) -> Any:
        tables = [self.sim.books[s].brackets for s in self.market.symbols_of(p)]
        out = [t.to_binance() for t in tables if t]
        return out[0] if p.get("symbol") else out

    # ------------------------------------------------------------------ account endpoints
    def position_numbers(self, b: SymbolBook) -> dict[str, float]:
        pos = b.position
        qty = pos.qty + 0.0
        notional = qty * b.price
        im = abs(notional) / pos.leverage
        oim = open_order_margin(b)
        return {"qty": qty, "entry": pos.entry_price if qty else 0.0, "notional": notional,
                "upnl": qty * (b.price - pos.entry_price) if qty else 0.0, "im": im, "oim": oim,
                "mm": self.sim.maint_margin(b), "liq": b.liq_price if qty else 0.0}

    def totals(self) -> dict[str, float]:
        nums = [self.position_numbers(b) for b in self.sim.books.values()]
        wallet = self.sim.wallet
        upnl = sum(n["upnl"] for n in nums)
        avail = self.sim.available_balance()
        return {"wallet": wallet, "upnl": upnl, "pim": sum(n["im"] for n in nums),
                "oim": sum(n["oim"] for n in nums), "mm": sum(n["mm"] for n in nums), "avail": avail,
                "withdraw": max(0.0, min(avail, wallet))}

    def asset_json(self, t: dict[str, float]) -> dict[str, Any]:
        return {"asset": self.sim.collateral, "walletBalance": _f8(t["wallet"]), "unrealizedProfit": _f8(t["upnl"]),
                "marginBalance": _f8(t["wallet"] + t["upnl"]), "maintMargin": _f8(t["mm"]),
                "initialMargin": _f8(t["pim"] + t["oim"]), "positionInitialMargin": _f8(t["pim"]),
                "openOrderInitialMargin": _f8(t["oim"]), "crossWalletBalance": _f8(t["wallet"]),
                "crossUnPnl": _f8(t["upnl"]), "availableBalance": _f8(t["avail"]),
                "maxWithdrawAmount": _f8(t["withdraw"]), "marginAvailable": True, "updateTime": self.sim.now_ms}

    def balance(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        t = self.totals()
        zero = _f8(0.0)
        out = []
        # Real accounts list several assets; the wallet is in the collateral's row (the
        # margin asset, or BNFCR in credits mode, or any asset in multi-assets mode).
        for asset in dict.fromkeys(("USDT", self.sim.asset, "BNB", self.sim.collateral)):
            mine = asset == self.sim.collateral
            out.append({"accountAlias": "SgsRmYFzAuTiXqFz", "asset": asset,
                        "balance": _f8(t["wallet"]) if mine else zero,
                        "crossWalletBalance": _f8(t["wallet"]) if mine else zero,
                        "crossUnPnl": _f8(t["upnl"]) if mine else zero,
                        "availableBalance": _f8(t["avail"]) if mine else zero,
                        "maxWithdrawAmount": _f8(t["withdraw"]) if mine else zero,
                        "marginAvailable": True, "updateTime": self.sim.now_ms if mine else 0})
        return out

    def account(self, version: int) -> dict[str, Any]:
        """GET /fapi/v2|v3/account.  As Binance documents it (Account-Information-V2 / -V3): in
        single-asset mode the top-level totals are "only for USDT asset", so with a USDC (or
        BNFCR) wallet they are zero and the figures are in that asset's row of `assets`; in
        multi-assets mode they are the sum of every asset valued in USD (stable coins at 1 here)."""
        t = self.totals()
        top = t if self.sim.multi_assets or self.sim.collateral == "USDT" else dict.fromkeys(t, 0.0)
        d: dict[str, Any] = {}
        if version == 2:
            d.update({"feeTier": 0, "feeBurn": True, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                      "updateTime": 0, "multiAssetsMargin": self.sim.multi_assets, "tradeGroupId": -1})
        assets = [self.asset_json(t)]
        if self.sim.collateral != "USDT":
            assets.insert(0, {**self.asset_json(dict.fromkeys(t, 0.0)), "asset": "USDT", "updateTime": 0})
        d.update({"totalInitialMargin": _f8(top["pim"] + top["oim"]), "totalMaintMargin": _f8(top["mm"]),
                  "totalWalletBalance": _f8(top["wallet"]), "totalUnrealizedProfit": _f8(top["upnl"]),
                  "totalMarginBalance": _f8(top["wallet"] + top["upnl"]),
                  "totalPositionInitialMargin": _f8(top["pim"]), "totalOpenOrderInitialMargin": _f8(top["oim"]),
                  "totalCrossWalletBalance": _f8(top["wallet"]), "totalCrossUnPnl": _f8(top["upnl"]),
                  "availableBalance": _f8(top["avail"]), "maxWithdrawAmount": _f8(top["withdraw"]),
                  "assets": assets})
        positions = []
        for sym, b in self.sim.books.items():
            n, f = self.position_numbers(b), b.filters
            common = {"symbol": sym, "positionSide": "BOTH", "positionAmt": f.fmt_qty(n["qty"]),
                      "unrealizedProfit": _f8(n["upnl"]), "initialMargin": _f8(n["im"] + n["oim"]),
                      "maintMargin": _f8(n["mm"]), "updateTime": b.position.update_time}
            if version == 2:
                common.update({"positionInitialMargin": _f8(n["im"]), "openOrderInitialMargin": _f8(n["oim"]),
                               "leverage": str(b.position.leverage), "isolated": False,
                               "entryPrice": _f8(n["entry"]), "breakEvenPrice": _f8(n["entry"]),
                               "maxNotional": "1000000", "bidNotional": "0", "askNotional": "0"})
            elif n["qty"]:
                common.update({"isolatedMargin": "0", "notional": _f8(n["notional"]), "isolatedWallet": "0"})
            else:
                continue  # v3 lists active positions only
            positions.append(common)
        d["positions"] = positions
        return d

    def position_risk(self, p: Mapping[str, str], version: int) -> list[dict[str, Any]]:
        out = []
        for sym in self.market.symbols_of(p):
            b = self.sim.books[sym]
            n, f = self.position_numbers(b), b.filters
            if version == 3 and not n["qty"] and not b.open_by_client and not b.algo_by_client:
                continue  # v3: only symbols with a position or open orders
            d = {"symbol": sym, "positionSide": "BOTH", "positionAmt": f.fmt_qty(n["qty"]),
                 "entryPrice": _f8(n["entry"]), "breakEvenPrice": _f8(n["entry"]), "markPrice": _f8(b.price),
                 "unRealizedProfit": _f8(n["upnl"]), "liquidationPrice": _f8(n["liq"]), "isolatedMargin": _f8(0.0),
                 "notional": _f8(n["notional"]), "isolatedWallet": "0", "updateTime": b.position.update_time}
            if version == 3:
                d.update({"marginAsset": self.sim.asset, "initialMargin": _f8(n["im"] + n["oim"]),
                          "maintMargin": _f8(n["mm"]), "positionInitialMargin": _f8(n["im"]),
                          "openOrderInitialMargin": _f8(n["oim"]), "adl": 0, "bidNotional": "0",
                          "askNotional": "0"})
            else:
                d.update({"marginType": "cross", "isAutoAddMargin": "false", "leverage": str(b.position.leverage),
                          "maxNotionalValue": "1000000"})
            out.append(d)
        return out

    def leverage(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym = self.market.symbol(p)
        if not p.get("leverage"):
            raise mandatory("leverage")
        return self.sim.change_leverage(sym, int(p["leverage"]))

    def multi_assets(self, p: Mapping[str, str]) -> dict[str, Any]:
        value = (p.get("multiAssetsMargin") or "").lower()
        if value not in ("true", "false"):
            raise mandatory("multiAssetsMargin")
        return self.sim.change_multi_assets(value == "true")

    def margin_type(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym = self.market.symbol(p)
        if not p.get("marginType"):
            raise mandatory("marginType")
        return self.sim.change_margin_type(sym, p["marginType"])

    def position_mode(self, p: Mapping[str, str]) -> dict[str, Any]:
        value = (p.get("dualSidePosition") or "").lower()
        if value not in ("true", "false"):
            raise mandatory("dualSidePosition")
        return self.sim.change_position_mode(value == "true")

    def commission(self, p: Mapping[str, str]) -> dict[str, Any]:
        return {"symbol": self.market.symbol(p), "makerCommissionRate": _rate(self.sim.maker_fee),
                "takerCommissionRate": _rate(self.sim.taker_fee), "rpiCommissionRate": _rate(self.sim.maker_fee)}

    # ------------------------------------------------------------------ order endpoints
    _AUTH_PARAMS = ("timestamp", "recvWindow", "signature")

    def order_params(self, p: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in p.items() if k not in self._AUTH_PARAMS}
        for name in ("symbol", "side", "type"):
            if not out.get(name):
                raise mandatory(name)
        out["symbol"] = self.market.symbol(out)
        return out

    def _place(self, p: Mapping[str, Any]) -> dict[str, Any]:
        """One order (single or batch element): faults, the simulator, Binance's JSON."""
        params = self.order_params(p)
        resp_type = str(params.pop("newOrderRespType", "ACK")).upper()
        reduce_only = str(params.get("reduceOnly", "false")).lower() == "true"
        fl = self.faults
        if reduce_only and fl.reduce_only_next > 0:
            fl.reduce_only_next -= 1
            raise ExchangeError(BinanceError.REDUCE_ONLY_REJECT, "ReduceOnly Order is rejected.")
        if not reduce_only and fl.margin_next > 0 and str(params.get("type")).upper() in ("LIMIT", "MARKET"):
            fl.margin_next -= 1
            raise ExchangeError(BinanceError.MARGIN_NOT_SUFFICIENT, "Margin is insufficient.")
        o = self.sim.new_order(**params)
        return order_json(o, self.market.filters(o.symbol), ack=resp_type != "RESULT")

    def new_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        return self._place(p)

    def batch_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        try:
            items = json.loads(p.get("batchOrders") or "")
        except ValueError:
            items = None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH_ORDERS \
                or not all(isinstance(x, dict) for x in items):
            raise ExchangeError(BinanceError.INVALID_PARAMETER, "Data sent for parameter 'batchOrders' is not valid.")
        out: list[dict[str, Any]] = []
        for item in items:
            try:
                out.append(self._place({k: v if isinstance(v, str) else json.dumps(v) for k, v in item.items()}))
            except ExchangeError as e:
                out.append({"code": e.code, "msg": e.msg})
            except (TypeError, ValueError):
                out.append({"code": BinanceError.MANDATORY_PARAM_EMPTY_OR_MALFORMED, "msg": "Mandatory parameter was not sent, was empty/null, or malformed."})
        return out

    def _order_ref(self, p: Mapping[str, str]) -> tuple[str, Any, str | None]:
        sym = self.market.symbol(p)
        oid, cid = p.get("orderId") or None, p.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise mandatory("orderId")
        return sym, (int(oid) if oid is not None else None), cid

    def get_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.get_order(sym, orderId=oid, origClientOrderId=cid)
        return order_json(o, self.market.filters(sym), query=True)

    def cancel_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.cancel_order(sym, orderId=oid, origClientOrderId=cid)
        return order_json(o, self.market.filters(sym))

    def modify_order(self, p: Mapping[str, str]) -> dict[str, Any]:
        sym, oid, cid = self._order_ref(p)
        o = self.sim.modify_order(sym, p.get("side", ""), p.get("quantity"), p.get("price"), orderId=oid,
                                  origClientOrderId=cid)
        return order_json(o, self.market.filters(sym))

    def cancel_all(self, p: Mapping[str, str]) -> dict[str, Any]:
        self.sim.cancel_all_orders(self.market.symbol(p))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def open_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self.market.optional_symbol(p)
        return [order_json(o, self.market.filters(o.symbol), query=True) for o in self.sim.open_orders(sym)]

    def all_orders(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self.market.symbol(p)
        limit = max(1, min(1000, int(p.get("limit") or 500)))
        rows = [o for o in self.sim.orders.values() if o.symbol == sym]
        return [order_json(o, self.market.filters(sym), query=True) for o in rows[-limit:]]

    def user_trades(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self.market.symbol(p)
        oid = int(p["orderId"]) if p.get("orderId") else None
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        from_id = int(p["fromId"]) if p.get("fromId") else None
        limit = max(1, min(1000, int(p.get("limit") or 500)))
        if start is None and end is None and from_id is None:
            start = self.sim.now_ms - TRADES_DEFAULT_WINDOW_MS     # Binance: the last 7 days
        rows = [t for t in self.sim.trades if t.symbol == sym and (oid is None or t.order_id == oid)
                and (start is None or t.time >= start) and (end is None or t.time <= end)
                and (from_id is None or t.id >= from_id)]
        rows = rows[:limit] if from_id is not None or p.get("startTime") else rows[-limit:]
        return [trade_json(t, self.market.filters(sym), self.sim.asset) for t in rows]

    def new_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        params = self.order_params(p)
        a = self.sim.new_algo_order(**params)
        return algo_json(a, self.market.filters(a.symbol))

    def _algo_ref(self, p: Mapping[str, str]) -> tuple[Any, str | None]:
        aid, cid = p.get("algoId") or None, p.get("clientAlgoId") or None
        if aid is None and cid is None:
            raise mandatory("algoId")
        return (int(aid) if aid is not None else None), cid

    def get_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        a = self.sim.get_algo_order(*self._algo_ref(p))
        return algo_json(a, self.market.filters(a.symbol), query=True)

    def cancel_algo(self, p: Mapping[str, str]) -> dict[str, Any]:
        a = self.sim.cancel_algo_order(*self._algo_ref(p))
        return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}

    def open_algos(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self.market.optional_symbol(p)
        aid = int(p["algoId"]) if p.get("algoId") else None
        return [algo_json(a, self.market.filters(a.symbol), query=True) for a in self.sim.open_algo_orders(sym)
                if aid is None or a.algo_id == aid]

    def all_algos(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        sym = self.market.symbol(p)
        return [algo_json(a, self.market.filters(sym), query=True) for a in self.sim.algo_orders.values() if a.symbol == sym]

    def cancel_all_algos(self, p: Mapping[str, str]) -> dict[str, Any]:
        self.sim.cancel_all_algo_orders(self.market.symbol(p))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    # ------------------------------------------------------------------ listenKey endpoints
    def listen_key_new(self, p: Mapping[str, str]) -> dict[str, str]:
        """POST: the active key (extended) if there is one, else a new one."""
        key = self.listen_keys.active(time.monotonic())
        if key is None:
            alphabet = string.ascii_letters + string.digits
            key = "".join(secrets.choice(alphabet) for _ in range(64))
        self.listen_keys.extend(key, time.monotonic() + self.faults.listen_key_ttl_s)
        return {"listenKey": key}

    def listen_key_keepalive(self, p: Mapping[str, str]) -> dict[str, str]:
        key = p.get("listenKey") or self.listen_keys.active(time.monotonic())
        if not key or not self.listen_keys.valid(key, time.monotonic()):
            raise ExchangeError(BinanceError.INVALID_LISTEN_KEY, MSG_NO_LISTEN_KEY)
        self.listen_keys.extend(key, time.monotonic() + self.faults.listen_key_ttl_s)
        return {"listenKey": key}

    def listen_key_close(self, p: Mapping[str, str]) -> dict[str, Any]:
        key = p.get("listenKey") or self.listen_keys.active(time.monotonic())
        if key:
            self.listen_keys.drop(key)
        return {}
