"""Shared fixtures: a real PostgreSQL database per test run, the app, an injectable clock."""

from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog
from aiohttp.test_utils import TestClient

from proxy import db
from proxy.app import create_app
from proxy.logging import configure_logging
from proxy.settings import Settings, load_settings
from tests.fake_twilio import FakeTwilio

UP_SID = "AC" + "f" * 32  # the upstream (Twilio) account the proxy forwards to
UP_TOKEN = "upstream-auth-token"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "test-admin-token-0123456789"
PROXY_SECRET = "test-proxy-secret-0123456789abcdef"
AMS = dt.timezone(dt.timedelta(hours=1))  # CET; tests that cross DST use zoneinfo
REPO = Path(__file__).resolve().parent.parent


async def _server_url() -> str:
    """DATABASE_URL when set, else the local server on 127.0.0.1:5432, else an embedded one."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    try:
        conn = await asyncpg.connect(LOCAL_SERVER, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return db.start_embedded(REPO / ".data" / "test-postgres")
    await conn.close()
    return LOCAL_SERVER


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def server_url() -> str:
    return await _server_url()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A throw-away database for this test run, migrated once."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        await db.migrate_url(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """An empty, unmigrated database for migration tests."""
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class Clock:
    """An injectable clock the tests can set; the app reads time only through it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS))  # a Monday morning


def make_settings(database_url: str, **env: str) -> Settings:
    base = {
        "DATABASE_URL": database_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "PROXY_SECRET": PROXY_SECRET,
        "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml"),
        # A spool of its own per app (made only when a STOP is spooled): apps of one run
        # share a database server but must never apply each other's spooled STOPs.
        "OPTOUT_SPOOL_DIR": str(Path(tempfile.gettempdir())
                                / f"consent-proxy-test-spool-{uuid.uuid4().hex[:12]}"),
    }
    base.update(env)
    return load_settings(base)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, clock: Clock) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return result


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=4)
    yield p
    await p.close()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the proxy logs during the test, as JSON lines."""
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    structlog.reset_defaults()


def uid(prefix: str = "org") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def mobile() -> str:
    """A fresh, valid Dutch mobile number (+316 1-5 + 7 digits), unique within the run.
    Bulk tests draw from +3168 (`BULK_PREFIX`), so the two never meet."""
    n = uuid.uuid4().int
    return f"+316{1 + n % 5}{(n // 5) % 10_000_000:07d}"


BULK_PREFIX = "+3168"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    """A fake Twilio upstream on a real port, accepting the upstream test credentials."""
    async with FakeTwilio(UP_SID, UP_TOKEN) as upstream:
        yield upstream
