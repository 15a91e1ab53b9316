"""Public market-data endpoints: exchangeInfo, klines, mark-price klines, prices, 24 h tickers, book ticker, depth, premium index, funding-rate history.

A part of `local_exchange.LocalExchange` (a mixin: it uses the attributes the façade sets up)."""
from __future__ import annotations
import bisect
from typing import Any, Mapping
from exchange_api import ExchangeError, SymbolFilters
from localex.wire import kline_row
from localex.wire import f8 as _f8, fmt_avg as _avg, symbol_info as _symbol_info
from localex.base import (_limit, _mandatory, _opt_int)


class MarketApiMixin:
    """Public market-data endpoints: exchangeInfo, klines, mark-price klines, prices, 24 h tickers, book ticker, depth, premium index, funding-rate history."""

    # ------------------------------------------------------------------ market data endpoints
    def _symbol(self, p: Mapping[str, str], required: bool = True) -> str | None:
        sym = p.get("symbol")
        if not sym:
            if required:
                raise _mandatory("symbol")
            return None
        sym = sym.upper()
        if sym not in self.sim.books:
            raise ExchangeError(-1121, "Invalid symbol.")
        return sym

    def _symbols(self, p: Mapping[str, str]) -> list[str]:
        sym = self._symbol(p, required=False)
        return [sym] if sym else list(self.symbols)

    def _filters(self, sym: str) -> SymbolFilters:
        return self.sim.books[sym].filters

    def _exchange_info(self, p: Mapping[str, str]) -> dict[str, Any]:
        asset = self.sim.asset
        return {
            "timezone": "UTC", "serverTime": self.server_time(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.order_limit_1m},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.order_limit_10s},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "0"}
                       for a in dict.fromkeys(("USDT", asset, "BTC"))],
            "symbols": [_symbol_info(self._filters(s), asset) for s in self.symbols],
        }

    def _klines(self, p: Mapping[str, str]) -> list[list[Any]]:
        sym = self._symbol(p)
        if not p.get("interval"):
            raise _mandatory("interval")
        if p["interval"] != "1m":
            raise ExchangeError(-1120, "Invalid interval.")
        limit = max(1, min(1500, int(p.get("limit") or 500)))
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        s, f, live = self.series[sym], self._filters(sym), self.live.get(sym)
        lo = bisect.bisect_left(s.t, start, 0, s.cursor) if start is not None else 0
        hi = bisect.bisect_right(s.t, end, 0, s.cursor) if end is not None else s.cursor
        rows = [kline_row(f, s.t[i], s.o[i], s.h[i], s.l[i], s.c[i], s.v[i]) for i in range(lo, hi)]
        if live and (start is None or live.t >= start) and (end is None or live.t <= end):
            rows.append(kline_row(f, live.t, live.o, live.h, live.l, live.c, live.v * live.legs / 3))
        return rows[:limit] if start is not None else rows[-limit:]

    def _mark_price_klines(self, p: Mapping[str, str]) -> list[list[Any]]:
        """GET /fapi/v1/markPriceKlines: the mark here is the last price (the simulator drives no
        separate mark in the local exchange), in Binance's mark-kline row: no volumes, count 60."""
        return [[r[0], r[1], r[2], r[3], r[4], "0", r[6], "0", 60, "0", "0", "0"] for r in self._klines(p)]

    def _ticker_price(self, p: Mapping[str, str]) -> Any:
        out = [{"symbol": s, "price": self._filters(s).fmt_price(self.sim.books[s].price), "time": self.sim.now_ms}
               for s in self._symbols(p)]
        return out[0] if p.get("symbol") else out

    def _window_24h(self, sym: str) -> dict[str, Any]:
        """Open, high, low, last, volumes and times of the last 24 h of played candles."""
        s, live = self.series[sym], self.live.get(sym)
        now = self.sim.now_ms
        lo = bisect.bisect_left(s.t, now - 86_400_000 + 1, 0, s.cursor)
        idx = range(lo, s.cursor)
        o = [s.o[i] for i in idx] + ([live.o] if live else [])
        h = [s.h[i] for i in idx] + ([live.h] if live else [])
        l = [s.l[i] for i in idx] + ([live.l] if live else [])
        v = [s.v[i] for i in idx] + ([live.v * live.legs / 3] if live else [])
        c = [s.c[i] for i in idx] + ([live.c] if live else [])
        last = self.sim.books[sym].price
        if not o:
            o, h, l, c, v = [last], [last], [last], [last], [0.0]
        quote = sum(vi * (hi + li + ci) / 3 for vi, hi, li, ci in zip(v, h, l, c))
        first_t = s.t[lo] if lo < s.cursor else (live.t if live else now)
        return {"open": o[0], "high": max(h), "low": min(l), "last": last, "volume": sum(v), "quote": quote,
                "openTime": first_t, "closeTime": now, "count": len(o)}

    def _ticker_json(self, sym: str) -> dict[str, Any]:
        w, f = self._window_24h(sym), self._filters(sym)
        change = w["last"] - w["open"]
        vol = w["volume"]
        return {"symbol": sym, "priceChange": f.fmt_price(change) if change >= 0 else "-" + f.fmt_price(-change),
                "priceChangePercent": f"{change / w['open'] * 100:.3f}" if w["open"] else "0.000",
                "weightedAvgPrice": _avg(f, w["quote"] / vol if vol else w["last"]),
                "lastPrice": f.fmt_price(w["last"]), "lastQty": f.fmt_qty(f.step_size),
                "openPrice": _avg(f, w["open"]), "highPrice": _avg(f, w["high"]), "lowPrice": _avg(f, w["low"]),
                "volume": f.fmt_qty(vol), "quoteVolume": f"{w['quote']:.2f}", "openTime": w["openTime"],
                "closeTime": w["closeTime"], "firstId": 1, "lastId": max(1, self._trade_seq),
                "count": max(1, self._trade_seq)}

    def _ticker_24hr(self, p: Mapping[str, str]) -> Any:
        """GET /fapi/v1/ticker/24hr: rolling 24 h statistics of the played candles."""
        out = [self._ticker_json(s) for s in self._symbols(p)]
        return out[0] if p.get("symbol") else out

    def _best_bid_ask(self, sym: str) -> tuple[str, str]:
        """A one-tick spread around the last price: the bid at it (rounded down), the ask a tick above."""
        f = self._filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        return f.fmt_ticks(bid_t), f.fmt_ticks(bid_t + 1)

    def _book_ticker(self, p: Mapping[str, str]) -> Any:
        out = []
        for sym in self._symbols(p):
            bid, ask = self._best_bid_ask(sym)
            q = self._filters(sym).fmt_qty(1)
            out.append({"symbol": sym, "bidPrice": bid, "bidQty": q, "askPrice": ask, "askQty": q,
                        "time": self.sim.now_ms, "lastUpdateId": self._book_seq})
        return out[0] if p.get("symbol") else out

    def _levels(self, sym: str, n: int) -> tuple[list[list[str]], list[list[str]]]:
        """`n` levels a side, a tick apart from the one-tick spread, 1 unit each (a thin, honest book:
        the simulator fills at the path's prices, not against this depth)."""
        f = self._filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        q = f.fmt_qty(1)
        bids = [[f.fmt_ticks(bid_t - k), q] for k in range(n) if bid_t - k > 0]
        asks = [[f.fmt_ticks(bid_t + 1 + k), q] for k in range(n)]
        return bids, asks

    def _depth(self, p: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/depth (limit 5, 10, 20, 50, 100, 500 or 1000; default 500)."""
        sym = self._symbol(p)
        limit = p.get("limit") or "500"
        if limit not in ("5", "10", "20", "50", "100", "500", "1000"):
            raise ExchangeError(-1130, "Data sent for parameter 'limit' is not valid.")
        bids, asks = self._levels(sym, int(limit))
        self._book_seq += 1
        return {"lastUpdateId": self._book_seq, "E": self.sim.now_ms, "T": self.sim.now_ms, "bids": bids,
                "asks": asks}

    def _premium_index(self, p: Mapping[str, str]) -> Any:
        out = []
        for s in self._symbols(p):
            mark = _f8(self.sim.mark_of(self.sim.books[s]))
            t, rate = self._next_funding(s)
            out.append({"symbol": s, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                        "lastFundingRate": _f8(rate), "interestRate": "0.00010000",
                        "nextFundingTime": t, "time": self.sim.now_ms})
        return out[0] if p.get("symbol") else out

    def _funding_rate_history(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/fundingRate: settled funding times, oldest first (limit 100, max 1000)."""
        limit = _limit(p, 100, 1000)
        start, end = _opt_int(p, "startTime"), _opt_int(p, "endTime")
        out = []
        for sym in self._symbols(p):
            f = self._filters(sym)
            for t, rate, mark in self.funding_history[sym]:
                if (start is None or t >= start) and (end is None or t <= end):
                    out.append({"symbol": sym, "fundingTime": t, "fundingRate": _f8(rate),
                                "markPrice": f"{mark:.{f.price_decimals}f}"})
        out.sort(key=lambda d: d["fundingTime"])
        return out[:limit] if start is not None else out[-limit:]
