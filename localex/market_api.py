"""Public market-data endpoints: exchangeInfo, klines, mark-price klines, prices, 24 h tickers,
book ticker, depth, premium index, funding-rate history; and the market's views the streams
publish too (tickers, book levels, trade and book update ids).

A part of `local_exchange.LocalExchange`: it reads the simulator, the candles played (and the one
being played) and the funding ledger; it also resolves the `symbol` parameter for the other
endpoint parts."""
from __future__ import annotations
import bisect
from typing import Any, Mapping, Sequence
from exchange_api import BinanceError, ExchangeError, SymbolFilters
from sim.account import mark_of
from sim.exchange import SimulatedExchange
from localex.wire import kline_row
from localex.wire import f8 as _f8, fmt_avg as _avg, symbol_info as _symbol_info
from localex.base import Live, Series, ServerTime, limit_param, mandatory, opt_int
from localex.funding import FundingLedger
from localex.settings import RateLimits


class MarketApi:
    """Public market-data endpoints: exchangeInfo, klines, mark-price klines, prices, 24 h tickers, book ticker, depth, premium index, funding-rate history."""

    def __init__(self, sim: SimulatedExchange, symbols: Sequence[str], series: Mapping[str, Series],
                 live: Mapping[str, Live], funding: FundingLedger, limits: RateLimits, server_time: ServerTime):
        self.sim = sim
        self.symbols = tuple(symbols)
        self.series = series
        self.live = live                 # the candle being played, per symbol (the clock's)
        self.funding = funding
        self.limits = limits
        self.server_time = server_time
        self.trade_seq = 0               # aggTrade ids (the streams') and the tickers' trade count
        self.book_seq = 0                # book update ids: depth, bookTicker

    # ------------------------------------------------------------------ shared with the other parts
    def symbol(self, p: Mapping[str, str]) -> str:
        """The request's `symbol` (required): -1102 without one, -1121 for one not traded here."""
        sym = self.optional_symbol(p)
        if sym is None:
            raise mandatory("symbol")
        return sym

    def optional_symbol(self, p: Mapping[str, str]) -> str | None:
        sym = p.get("symbol")
        if not sym:
            return None
        sym = sym.upper()
        if sym not in self.sim.books:
            raise ExchangeError(BinanceError.INVALID_SYMBOL, "Invalid symbol.")
        return sym

    def symbols_of(self, p: Mapping[str, str]) -> list[str]:
        """The request's symbol, or every symbol when it names none."""
        sym = self.optional_symbol(p)
        return [sym] if sym else list(self.symbols)

    def filters(self, sym: str) -> SymbolFilters:
        return self.sim.books[sym].filters

    def prices(self) -> dict[str, str]:
        return {s: self.filters(s).fmt_price(self.sim.books[s].price) for s in self.symbols}

    def next_trade_id(self) -> int:
        self.trade_seq += 1
        return self.trade_seq

    def next_book_id(self) -> int:
        self.book_seq += 1
        return self.book_seq

    # ------------------------------------------------------------------ endpoints
    def exchange_info(self, p: Mapping[str, str]) -> dict[str, Any]:
        asset = self.sim.asset
        return {
            "timezone": "UTC", "serverTime": self.server_time(), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limits.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.limits.order_limit_1m},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.limits.order_limit_10s},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": a, "marginAvailable": True, "autoAssetExchange": "0"}
                       for a in dict.fromkeys(("USDT", asset, "BTC"))],
            "symbols": [_symbol_info(self.filters(s), asset) for s in self.symbols],
        }

    def klines(self, p: Mapping[str, str]) -> list[list[Any]]:
        sym = self.symbol(p)
        if not p.get("interval"):
            raise mandatory("interval")
        if p["interval"] != "1m":
            raise ExchangeError(BinanceError.BAD_INTERVAL, "Invalid interval.")
        limit = max(1, min(1500, int(p.get("limit") or 500)))
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        s, f, live = self.series[sym], self.filters(sym), self.live.get(sym)
        lo = bisect.bisect_left(s.t, start, 0, s.cursor) if start is not None else 0
        hi = bisect.bisect_right(s.t, end, 0, s.cursor) if end is not None else s.cursor
        rows = [kline_row(f, s.t[i], s.o[i], s.h[i], s.l[i], s.c[i], s.v[i]) for i in range(lo, hi)]
        if live and (start is None or live.t >= start) and (end is None or live.t <= end):
            rows.append(kline_row(f, live.t, live.o, live.h, live.l, live.c, live.v * live.legs / 3))
        return rows[:limit] if start is not None else rows[-limit:]

    def mark_price_klines(self, p: Mapping[str, str]) -> list[list[Any]]:
        """GET /fapi/v1/markPriceKlines: the mark here is the last price (the simulator drives no
        separate mark in the local exchange), in Binance's mark-kline row: no volumes, count 60."""
        return [[r[0], r[1], r[2], r[3], r[4], "0", r[6], "0", 60, "0", "0", "0"] for r in self.klines(p)]

    def ticker_price(self, p: Mapping[str, str]) -> Any:
        out = [{"symbol": s, "price": self.filters(s).fmt_price(self.sim.books[s].price), "time": self.sim.now_ms}
               for s in self.symbols_of(p)]
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

    def ticker_json(self, sym: str) -> dict[str, Any]:
        w, f = self._window_24h(sym), self.filters(sym)
        change = w["last"] - w["open"]
        vol = w["volume"]
        return {"symbol": sym, "priceChange": f.fmt_price(change) if change >= 0 else "-" + f.fmt_price(-change),
                "priceChangePercent": f"{change / w['open'] * 100:.3f}" if w["open"] else "0.000",
                "weightedAvgPrice": _avg(f, w["quote"] / vol if vol else w["last"]),
                "lastPrice": f.fmt_price(w["last"]), "lastQty": f.fmt_qty(f.step_size),
                "openPrice": _avg(f, w["open"]), "highPrice": _avg(f, w["high"]), "lowPrice": _avg(f, w["low"]),
                "volume": f.fmt_qty(vol), "quoteVolume": f"{w['quote']:.2f}", "openTime": w["openTime"],
                "closeTime": w["closeTime"], "firstId": 1, "lastId": max(1, self.trade_seq),
                "count": max(1, self.trade_seq)}

    def ticker_24hr(self, p: Mapping[str, str]) -> Any:
        """GET /fapi/v1/ticker/24hr: rolling 24 h statistics of the played candles."""
        out = [self.ticker_json(s) for s in self.symbols_of(p)]
        return out[0] if p.get("symbol") else out

    def _best_bid_ask(self, sym: str) -> tuple[str, str]:
        """A one-tick spread around the last price: the bid at it (rounded down), the ask a tick above."""
        f = self.filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        return f.fmt_ticks(bid_t), f.fmt_ticks(bid_t + 1)

    def book_ticker(self, p: Mapping[str, str]) -> Any:
        out = []
        for sym in self.symbols_of(p):
            bid, ask = self._best_bid_ask(sym)
            q = self.filters(sym).fmt_qty(1)
            out.append({"symbol": sym, "bidPrice": bid, "bidQty": q, "askPrice": ask, "askQty": q,
                        "time": self.sim.now_ms, "lastUpdateId": self.book_seq})
        return out[0] if p.get("symbol") else out

    def levels(self, sym: str, n: int) -> tuple[list[list[str]], list[list[str]]]:
        """`n` levels a side, a tick apart from the one-tick spread, 1 unit each (a thin, honest book:
        the simulator fills at the path's prices, not against this depth)."""
        f = self.filters(sym)
        bid_t = f.ticks_down(self.sim.books[sym].price)
        q = f.fmt_qty(1)
        bids = [[f.fmt_ticks(bid_t - k), q] for k in range(n) if bid_t - k > 0]
        asks = [[f.fmt_ticks(bid_t + 1 + k), q] for k in range(n)]
        return bids, asks

    def depth(self, p: Mapping[str, str]) -> dict[str, Any]:
        """GET /fapi/v1/depth (limit 5, 10, 20, 50, 100, 500 or 1000; default 500)."""
        sym = self.symbol(p)
        limit = p.get("limit") or "500"
        if limit not in ("5", "10", "20", "50", "100", "500", "1000"):
            raise ExchangeError(BinanceError.INVALID_PARAMETER, "Data sent for parameter 'limit' is not valid.")
        bids, asks = self.levels(sym, int(limit))
        return {"lastUpdateId": self.next_book_id(), "E": self.sim.now_ms, "T": self.sim.now_ms, "bids": bids,
                "asks": asks}

    def premium_index(self, p: Mapping[str, str]) -> Any:
        out = []
        for s in self.symbols_of(p):
            mark = _f8(mark_of(self.sim.books[s]))
            t, rate = self.funding.next_funding(s)
            out.append({"symbol": s, "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark,
                        "lastFundingRate": _f8(rate), "interestRate": "0.00010000",
                        "nextFundingTime": t, "time": self.sim.now_ms})
        return out[0] if p.get("symbol") else out

    def funding_rate_history(self, p: Mapping[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/fundingRate: settled funding times, oldest first (limit 100, max 1000)."""
        limit = limit_param(p, 100, 1000)
        start, end = opt_int(p, "startTime"), opt_int(p, "endTime")
        out: list[dict[str, Any]] = []
        for sym in self.symbols_of(p):
            f = self.filters(sym)
            for t, rate, mark in self.funding.history[sym]:
                if (start is None or t >= start) and (end is None or t <= end):
                    out.append({"symbol": sym, "fundingTime": t, "fundingRate": _f8(rate),
                                "markPrice": f"{mark:.{f.price_decimals}f}"})
        out.sort(key=lambda d: d["fundingTime"])
        return out[:limit] if start is not None else out[-limit:]
