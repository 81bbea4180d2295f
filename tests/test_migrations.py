"""Migrations: ordered, recorded, idempotent, safe when several instances start at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from proxy import db
from tests.conftest import REPO


async def test_migrate_twice_is_a_no_op(fresh_database: str) -> None:
    first = await db.migrate_url(fresh_database)
    assert first == [m.version for m in db.load_migrations()]
    second = await db.migrate_url(fresh_database)
    assert second == []
    conn = await asyncpg.connect(fresh_database)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == first
        assert await db.pending_migrations(conn) == []
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(fresh_database: str) -> None:
    results = await asyncio.gather(*(db.migrate_url(fresh_database) for _ in range(4)))
    applied = [r for r in results if r]
    assert len(applied) == 1
    assert sorted(v for r in results for v in r) == applied[0]


async def test_two_migrate_processes_at_once(fresh_database: str) -> None:
    """Two `consent-proxy migrate` processes racing on the same empty database both succeed."""
    env = {"DATABASE_URL": fresh_database, "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "proxy.cli", "migrate"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(o.count('"migration_applied"') for o in outputs) == len(db.load_migrations())


async def test_changed_migration_is_refused(fresh_database: str) -> None:
    migrations = db.load_migrations()
    await db.migrate_url(fresh_database)
    tampered = [db.Migration(m.version, m.name, m.sql + "\n-- edited") for m in migrations]
    conn = await asyncpg.connect(fresh_database)
    try:
        with pytest.raises(db.MigrationError, match="was changed"):
            await db.migrate(conn, tampered)
    finally:
        await conn.close()


async def test_ready_reports_pending_migrations(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await db.pending_migrations(conn) == [m.version for m in db.load_migrations()]
    finally:
        await conn.close()
