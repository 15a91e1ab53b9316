"""Shared fixtures: LocalExchange instances on free loopback ports, and the real
python-binance AsyncClient pointed at them by base URL (nothing is mocked)."""
from __future__ import annotations

from pathlib import Path

import pytest
from binance import AsyncClient

from local_exchange import DEFAULT_API_KEY, DEFAULT_API_SECRET, ExchangeSettings, LocalExchange


def local_client_class(ex: LocalExchange) -> type[AsyncClient]:
    """An AsyncClient subclass whose base URLs are the local exchange's.

    python-binance 1.0.37 formats API_URL / FUTURES_URL with the tld in
    __init__; URLs without `{}` pass through, so class attributes suffice.
    """
    return type("LocalClient", (AsyncClient,), {"API_URL": ex.rest_url + "/api", "FUTURES_URL": ex.rest_url + "/fapi",
                                                  "WS_FUTURES_URL": ex.ws_url + "ws-fapi/v1"})


@pytest.fixture
async def start_exchange():
    """`await start_exchange(**ExchangeSettings fields)`; every exchange started is stopped after the test."""
    started: list[LocalExchange] = []

    async def start(**kwargs) -> LocalExchange:
        ex = await LocalExchange(ExchangeSettings(**kwargs)).start()
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


# ---------------------------------------------------------------------- system components
# A test that needs PostgreSQL (or later Chromium) skips with a reason where it is absent on
# a user's machine; CI installs them and sets GM_FAIL_ON_SKIP=1, so a skip fails the run there.

SYSTEM_SKIP = "system component missing:"     # the reason of every such skip starts with this


def pytest_sessionfinish(session, exitstatus):
    import os
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [r for r in (reporter.stats.get("skipped", []) if reporter else [])
               if SYSTEM_SKIP in str(getattr(r, "longrepr", ""))]
    if os.environ.get("GM_FAIL_ON_SKIP") == "1" and skipped and exitstatus == 0:
        print(f"\nGM_FAIL_ON_SKIP=1: {len(skipped)} test(s) skipped for a missing system component; "
              "CI installs them and must run every such test")
        session.exitstatus = 1


def _postgres_bin() -> Path | None:
    import shutil
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server for the session: initdb in a temporary directory, run as an
    unprivileged user when the suite runs as root (initdb refuses root), on a free loopback
    port; its URL.  Skipped with a reason where PostgreSQL is not installed."""
    import os
    import shutil
    import signal
    import socket
    import tempfile
    import subprocess
    import time
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip(f"{SYSTEM_SKIP} PostgreSQL (no initdb on PATH or under /usr/lib/postgresql): "
                    "apt-get install postgresql")
    from pathlib import Path
    # Under /tmp itself: pytest's own temporary folders are private to root, and the server's
    # unprivileged user must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="gm-pg-"))
    data = root / "data"
    user = None
    if os.geteuid() == 0:
        user = "nobody"
        os.chmod(root, 0o777)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    run = dict(user=user, capture_output=True, text=True, timeout=120)
    r = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "gm", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], **run)
    if r.returncode != 0:
        pytest.fail(f"initdb failed: {r.stderr.strip()[-500:]}")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
                            user=user, stdout=log, stderr=subprocess.STDOUT)
    url = f"postgresql://gm@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 60
    import psycopg
    while True:
        try:
            psycopg.connect(host="127.0.0.1", port=port, user="gm", dbname="postgres", connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"PostgreSQL did not start: {(root / 'server.log').read_text()[-500:]}")
            time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGINT)      # fast shutdown: clients still connected are cut off
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(root, ignore_errors=True)
