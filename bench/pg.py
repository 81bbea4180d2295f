"""The PostgreSQL a bench run uses: the same server `make test` would, a fresh database on it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.services import REPO
from proxy import db

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
EMBEDDED_DIR = REPO / ".data" / "test-postgres"  # shared with the test suite's embedded server


async def server_url() -> tuple[str, str]:
    """(url, where it came from): DATABASE_URL when set, else the local server on
    127.0.0.1:5432, else an embedded one (tests/conftest.py decides the same way)."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], "DATABASE_URL"
    try:
        conn = await asyncpg.connect(LOCAL_SERVER, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return db.start_embedded(EMBEDDED_DIR), "embedded (pgserver)"
    await conn.close()
    return LOCAL_SERVER, "127.0.0.1:5432"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def redacted(url: str) -> str:
    """The URL without its password, fit for the results file."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.asynccontextmanager
async def scratch_database(server: str) -> AsyncIterator[str]:
    """A database `cp_bench_<hex>` for this run, dropped afterwards whatever happened."""
    name = f"cp_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server, name)
    finally:
        # A fresh connection: the run may have lasted long enough for an idle one to be gone.
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
