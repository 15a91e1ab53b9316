#!/usr/bin/env python3
"""Speed of the local exchange over loopback: prints figures, asserts nothing.

1. Order placement and cancellation with the real python-binance AsyncClient,
   one request at a time: latency p50 / p99 and requests/s.
2. Throughput with raw aiohttp and correct HMAC signing, N concurrent
   workers, each placing then cancelling: requests/s and latency p50 / p99.
3. User-stream latency from fill to delivery: a resting order filled by a
   price move, timed from the moment the exchange publishes the fill to the
   moment python-binance's futures_user_socket() hands it over (in-process,
   one clock); and, across processes, from sending a marketable order to
   receiving its TRADE event.

The server runs in its own process (the machine has 2 cores: one serves,
one drives), with rate limits lifted so the limiter is not what is measured.

    python bench/bench_local_exchange.py [--orders 2000] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from binance import AsyncClient, BinanceSocketManager  # noqa: E402

from exchange_api import OrderUpdate  # noqa: E402
from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSettings, LocalExchange  # noqa: E402
from sim.fill_model import FULL, FillModel  # noqa: E402

SYM = "BTCUSDC"


def unlimited(**fields: Any) -> ExchangeSettings:
    """An exchange with its rate limits lifted: the limiter is not what is measured.  Its user
    streams are lenient: python-binance's futures_user_socket() names no `events`."""
    return ExchangeSettings(weight_limit=10**9, order_limit_10s=10**9, order_limit_1m=10**9,
                            strict_user_stream=False, **fields)


def _serve(port_pipe, fill_model: FillModel = FULL) -> None:
    async def run() -> None:
        ex = await LocalExchange(unlimited(symbols=(SYM,), synthetic_seed=1, fill_model=fill_model)).start()
        port_pipe.send(ex.port)
        await asyncio.Event().wait()

    logging.disable(logging.CRITICAL)
    asyncio.run(run())


def _client_class(rest: str) -> type[AsyncClient]:
    return type("LocalClient", (AsyncClient,), {"API_URL": rest + "/api", "FUTURES_URL": rest + "/fapi"})


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def _report(name: str, lat: list[float], elapsed: float, n_requests: int) -> None:
    print(f"  {name:<38} {n_requests / elapsed:8,.0f} req/s   p50 {_pct(lat, 0.5):6.2f} ms   "
          f"p99 {_pct(lat, 0.99):6.2f} ms   max {max(lat) * 1000:6.2f} ms")


async def bench_python_binance(rest: str, n: int) -> None:
    client = await _client_class(rest).create(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    place, cancel = [], []
    t_all = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT", quantity="0.001", price="30000.0",
                                          timeInForce="GTC", newClientOrderId=f"pb-{i}")
        place.append(time.perf_counter() - t)
        t = time.perf_counter()
        await client.futures_cancel_order(symbol=SYM, origClientOrderId=f"pb-{i}")
        cancel.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t_all
    await client.close_connection()
    print(f"python-binance AsyncClient, sequential, {n} place + {n} cancel:")
    _report("place (POST /fapi/v1/order)", place, sum(place), n)
    _report("cancel (DELETE /fapi/v1/order)", cancel, sum(cancel), n)
    _report("both", place + cancel, elapsed, 2 * n)


def _signed(params: str, ts: int) -> str:
    q = f"{params}&recvWindow=10000&timestamp={ts}"
    return q + "&signature=" + hmac.new(DEFAULT_API_SECRET.encode(), q.encode(), hashlib.sha256).hexdigest()


async def bench_raw(rest: str, n: int, concurrency: int) -> None:
    headers = {"X-MBX-APIKEY": DEFAULT_API_KEY, "Content-Type": "application/x-www-form-urlencoded"}
    lat: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in counter:
            for method, body in (
                    ("POST", f"symbol={SYM}&side=BUY&type=LIMIT&quantity=0.001&price=30000.0&timeInForce=GTC"
                             f"&newClientOrderId=raw-{i}"),
                    ("DELETE", f"symbol={SYM}&origClientOrderId=raw-{i}")):
                t = time.perf_counter()
                async with session.request(method, rest + "/fapi/v1/order", headers=headers,
                                           data=_signed(body, int(time.time() * 1000))) as r:
                    await r.read()
                    errors += r.status != 200
                lat.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    print(f"raw aiohttp + HMAC signing, {concurrency} concurrent workers, {n} place + {n} cancel"
          f"{f' ({errors} errors)' if errors else ''}:")
    _report("place + cancel", lat, elapsed, len(lat))


async def bench_event_latency_in_process(rounds: int) -> None:
    """Fill → delivery on futures_user_socket(), one process and one clock."""
    published: dict[int, float] = {}
    ex = LocalExchange(unlimited(symbols=(SYM,), synthetic_seed=1))
    publish = ex.streams.flush_events

    def stamped_publish() -> None:
        for ev in ex.sim.events:
            if isinstance(ev, OrderUpdate) and ev.exec_type == "TRADE":
                published[ev.order_id] = time.perf_counter()
        publish()

    # The bench observes the exchange unchanged: it wraps the streams' publishing, which every
    # part calls through the `streams` object.
    ex.streams.flush_events = stamped_publish  # type: ignore[method-assign]
    await ex.start()
    client = await _client_class(ex.rest_url).create(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    bsm = BinanceSocketManager(client, max_queue_size=10_000)
    bsm.FSTREAM_URL = ex.ws_url
    lat = []
    sock = bsm.futures_user_socket()
    sock.TIMEOUT = 0.2
    async with sock as us:
        price = ex.sim.books[SYM].price
        for i in range(rounds):
            side, px = ("BUY", price - 10) if i % 2 == 0 else ("SELL", price + 10)
            o = await client.futures_create_order(symbol=SYM, side=side, type="LIMIT", quantity="0.001",
                                                  price=f"{px:.1f}", timeInForce="GTC")
            await ex.set_price(SYM, px)           # the leg reaches the order: it fills
            while True:
                m = await asyncio.wait_for(us.recv(), 5)
                if m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["x"] == "TRADE" and m["o"]["i"] == o["orderId"]:
                    lat.append(time.perf_counter() - published[o["orderId"]])
                    break
            price = px
    await client.close_connection()
    await ex.stop()
    print(f"user stream, in-process, {rounds} fills (fill published → python-binance recv()):")
    print(f"  {'fill → delivery':<38} {'':>14} p50 {_pct(lat, 0.5):6.2f} ms   p99 {_pct(lat, 0.99):6.2f} ms   "
          f"max {max(lat) * 1000:6.2f} ms")


async def bench_event_latency_cross_process(rest: str, ws: str, rounds: int) -> None:
    """Marketable order sent → its TRADE event received, server in another process."""
    client = await _client_class(rest).create(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    bsm = BinanceSocketManager(client, max_queue_size=10_000)
    bsm.FSTREAM_URL = ws
    lat, rest_lat = [], []
    sock = bsm.futures_user_socket()
    sock.TIMEOUT = 0.2
    async with sock as us:
        for i in range(rounds):
            side = "BUY" if i % 2 == 0 else "SELL"
            t = time.perf_counter()
            o = await client.futures_create_order(symbol=SYM, side=side, type="MARKET", quantity="0.001")
            rest_lat.append(time.perf_counter() - t)
            while True:
                m = await asyncio.wait_for(us.recv(), 5)
                if m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["x"] == "TRADE" and m["o"]["i"] == o["orderId"]:
                    lat.append(time.perf_counter() - t)
                    break
    await client.close_connection()
    print(f"user stream, cross-process, {rounds} MARKET orders (request sent → TRADE event received):")
    print(f"  {'order → TRADE event':<38} {'':>14} p50 {_pct(lat, 0.5):6.2f} ms   p99 {_pct(lat, 0.99):6.2f} ms   "
          f"(REST answer alone: p50 {_pct(rest_lat, 0.5):.2f} ms)")


async def main_async(args: argparse.Namespace, port: int) -> None:
    rest, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/"
    await bench_python_binance(rest, args.orders)
    await bench_raw(rest, args.orders * 2, args.concurrency)
    await bench_event_latency_cross_process(rest, ws, args.rounds)
    await bench_event_latency_in_process(args.rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--fill-share", type=float, default=0.1, help="the volume fill model's share (second pass)")
    args = p.parse_args()
    logging.disable(logging.CRITICAL)
    for model, share in (("full fills (SPEC §6)", FULL), (f"volume fill model, share {args.fill_share:g}",
                                                          FillModel.by_volume(args.fill_share))):
        parent, child = mp.Pipe()
        server = mp.get_context("spawn").Process(target=_serve, args=(child, share), daemon=True)
        server.start()
        try:
            port = parent.recv()
            print(f"=== {model}: local exchange (separate process) on 127.0.0.1:{port}; "
                  f"python {sys.version.split()[0]}")
            asyncio.run(main_async(args, port))
        finally:
            server.terminate()
            server.join(5)
        print()


if __name__ == "__main__":
    main()
