"""Shared fixtures: LocalExchange instances on free loopback ports, and the real
python-binance AsyncClient pointed at them by base URL (nothing is mocked)."""
from __future__ import annotations

import pytest
from binance import AsyncClient

from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET, LocalExchange


def local_client_class(ex: LocalExchange) -> type[AsyncClient]:
    """An AsyncClient subclass whose base URLs are the local exchange's.

    python-binance 1.0.37 formats API_URL / FUTURES_URL with the tld in
    __init__; URLs without `{}` pass through, so class attributes suffice.
    """
    return type("LocalClient", (AsyncClient,), {"API_URL": ex.rest_url + "/api", "FUTURES_URL": ex.rest_url + "/fapi",
                                                  "WS_FUTURES_URL": ex.ws_url + "ws-fapi/v1"})


@pytest.fixture
async def start_exchange():
    """`await start_exchange(**LocalExchange kwargs)`; every exchange started is stopped after the test."""
    started: list[LocalExchange] = []

    async def start(**kwargs) -> LocalExchange:
        ex = await LocalExchange(**kwargs).start()
        started.append(ex)
        return ex

    yield start
    for ex in reversed(started):
        await ex.stop()


@pytest.fixture
async def client_for():
    """`await client_for(ex, key=..., secret=...)`: a created AsyncClient, closed after the test."""
    clients: list[AsyncClient] = []

    async def make(ex: LocalExchange, key: str = DEFAULT_API_KEY, secret: str = DEFAULT_API_SECRET) -> AsyncClient:
        client = await local_client_class(ex).create(key, secret)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close_connection()


# ---------------------------------------------------------------------- subprocess harness fixtures
# (tests/harness.py: local_exchange.py and trade_btc.py as real processes)


@pytest.fixture
def exchange(tmp_path, keys):
    """A local_exchange.py subprocess (manual clock) with the module's `keys`."""
    from harness import Exchange
    ex = Exchange(tmp_path / "exchange", *keys)
    yield ex
    ex.stop()


@pytest.fixture
def daemons():
    """Daemons started by a test; killed when it ends (before its exchange stops)."""
    started: list = []
    yield started
    for d in started:
        d.kill()
