"""The PostgreSQL a bench run uses: the same server `make test` would, a fresh database on it."""

from __future__ import annotations

import contextlib
import os
import time
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


async def commit_latency(database_url: str, samples: int) -> dict[str, float]:
    """What one durable commit costs on this server: `samples` one-row INSERTs, each its own
    transaction, one after another. The floor under a gated request's latency, which waits
    for two commits (its decision, then its outcome); the tail is the disk's fsync."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE bench_commit_probe (id bigserial PRIMARY KEY)")
        insert = await conn.prepare("INSERT INTO bench_commit_probe DEFAULT VALUES")
        took = []
        for _ in range(samples):
            started = time.perf_counter()
            await insert.fetch()
            took.append(time.perf_counter() - started)
        await conn.execute("DROP TABLE bench_commit_probe")
    finally:
        await conn.close()
    took.sort()
    return {"samples": samples, "p50_ms": round(1e3 * took[len(took) // 2], 3),
            "p99_ms": round(1e3 * took[int(len(took) * 0.99)], 3),
            "max_ms": round(1e3 * took[-1], 3)}
