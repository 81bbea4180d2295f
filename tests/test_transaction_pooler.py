"""Through a transaction pooler: Debian's PgBouncer with deploy/pgbouncer/pgbouncer.ini in front
of a real primary (tests/ha_stack.py). Behind PgBouncer in transaction mode each transaction
may run on another server connection, and whatever one leaves on a server connection (a
session lock, a named prepared statement) meets the next client handed that connection.

- `consent-proxy serve` and `migrate` migrate through DATABASE_URL when DATABASE_URL_DIRECT is
  not set: the lock that keeps two instances from migrating at once is taken inside each
  migration's own transaction.
- The console's exports and chain walk read through cursors: declared in SQL, unnamed
  statements only, so the next gate on that server connection is not refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from proxy import db
from tests import ha_stack
from tests.conftest import PROXY_SECRET, REPO
from tests.test_faults import wait_for

# Server connections PgBouncer opens per database and user (deploy/pgbouncer/pgbouncer.ini).
POOL_SIZE = 20


def waiting_clients(bouncer: ha_stack.Bouncer) -> int:
    """SHOW POOLS on PgBouncer's console (stats_users): clients waiting for a server."""
    done = subprocess.run(
        ["psql", "-Atq", "-h", "127.0.0.1", "-p", str(bouncer.port), "-U", "consent_proxy",
         "-d", "pgbouncer", "-F", "|", "-c", "SHOW POOLS"],
        env={**os.environ, "PGPASSWORD": ha_stack.APP_PASSWORD}, capture_output=True,
        text=True, check=True)
    for line in done.stdout.splitlines():
        fields = line.split("|")
        if fields[:2] == ["consent_proxy", "consent_proxy"]:
            return int(fields[3])  # database, user, cl_active, cl_waiting, …
    return 0


async def test_migrating_through_pgbouncer_leaves_no_lock_behind(tmp_path: Path) -> None:
    """While a migration runs, other clients (the other gate's requests) take the server
    connections PgBouncer frees. Once `migrate` has returned, the migration lock is free:
    the next instance to start is not kept waiting."""
    with ha_stack.cluster() as made:
        bouncer = made.bouncers[0]
        pooled = made.primary.app_url(bouncer.port)
        await db.migrate_url(made.direct_url)
        direct = await asyncpg.connect(made.primary.app_url())
        watch = await asyncpg.connect(made.primary.app_url())
        fillers: list[asyncpg.Connection] = []
        try:
            await direct.execute("CREATE TABLE migration_gate (id int)")
            # Every server connection but one is in a transaction of another client.
            for _ in range(POOL_SIZE - 1):
                conn = await asyncpg.connect(pooled, statement_cache_size=0)
                await conn.execute("BEGIN")
                fillers.append(conn)
            held = direct.transaction()
            await held.start()
            await direct.execute("LOCK TABLE migration_gate IN ACCESS EXCLUSIVE MODE")
            extra = db.load_migrations()
            probe = db.Migration(
                max(m.version for m in extra) + 1, "probe",
                "LOCK TABLE migration_gate IN ACCESS EXCLUSIVE MODE; "
                "CREATE TABLE migration_probe (id int)")
            migrator = await asyncpg.connect(pooled, statement_cache_size=0)
            migrating = asyncio.create_task(db.migrate(migrator, [*extra, probe]))

            async def blocked() -> bool:
                # Not `direct`: a transaction reads pg_stat_activity once.
                return bool(await watch.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%migration_probe%'"))

            await wait_for_async(blocked, "the probe migration to wait for the table lock")
            # Another client asks for a server: it waits for the migration's.
            other = await asyncpg.connect(pooled, statement_cache_size=0)
            taking = asyncio.create_task(other.execute("BEGIN"))
            await wait_for(lambda: waiting_clients(bouncer) >= 1, 60,
                           "a client waiting for a server connection")
            await held.rollback()  # the migration commits; its server goes to `other`
            await taking
            await fillers[0].execute("ROLLBACK")  # a server for whatever the migration sends
            applied = await migrating
            assert applied == [probe.version]
            free = await direct.fetchval("SELECT pg_try_advisory_lock($1)",
                                         db.MIGRATION_LOCK_KEY)
            assert free, "the migration lock is still held by a server connection"
            await direct.execute("SELECT pg_advisory_unlock($1)", db.MIGRATION_LOCK_KEY)
            await other.execute("ROLLBACK")
            await other.close()
            await migrator.close()
        finally:
            for conn in fillers:
                conn.terminate()
            await direct.close()
            await watch.close()


async def wait_for_async(condition: Callable[[], Awaitable[bool]], what: str,
                         timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# What the console runs over the request pool (DATABASE_URL, statement cache off): the
# decision log export, an import-format export, and the walk of the decision chain.
READER = """
import asyncio, json, sys
from proxy import db, store
from proxy.imports import export_rows
from proxy.store import decision_log

async def main(url, what):
    pool = await db.create_pool(url, statement_cache_size=0, min_size=1, max_size=1)
    try:
        if what == "decisions":
            found = len([r async for r in decision_log.export(pool,
                                                              decision_log.DecisionFilter())])
        elif what == "objections":
            found = b"".join([c async for c in export_rows(
                pool, kind="objections", organisation=None, fmt="csv")]).count(b"\\n")
        else:
            async with pool.acquire() as conn:
                found = (await store.verify_chain(conn)).ok
        print(json.dumps(found))
    finally:
        await pool.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""
# What each read finds in the empty database: no decision, the CSV header, a sound chain.
FOUND = {"decisions": 0, "objections": 1, "chain": True}


async def test_cursor_reads_leave_nothing_for_the_next_gate(tmp_path: Path) -> None:
    """Two gate processes, one after the other, read through cursors on the same PgBouncer:
    the second is not refused (asyncpg names the statement of its own cursors
    __asyncpg_stmt_N__, counting from 1 in every process, and such a statement outlives the
    transaction on the server connection)."""
    with ha_stack.cluster() as made:
        await db.migrate_url(made.direct_url)
        # Each read is the last thing its process does on its server connection.
        order = ["decisions", "objections", "chain", "decisions"]
        runs = [await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", READER, made.pooled_url, what], cwd=REPO,
            capture_output=True, text=True, timeout=120, check=False) for what in order]
    for what, done in zip(order, runs, strict=True):
        assert done.returncode == 0, (what, done.stderr[-1500:])
        assert json.loads(done.stdout.splitlines()[-1]) == FOUND[what]


async def test_the_command_line_works_through_pgbouncer_alone(tmp_path: Path) -> None:
    """DATABASE_URL_DIRECT is not set: `audit verify`, `evidence` and `export` run
    through PgBouncer (which refuses a startup parameter it does not know, such as
    plan_cache_mode)."""
    with ha_stack.cluster() as made:
        await db.migrate_url(made.direct_url)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               "DATABASE_URL": made.pooled_url, "DATABASE_STATEMENT_CACHE_SIZE": "0",
               "PROXY_SECRET": PROXY_SECRET,
               "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml")}
        runs = {what: await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "proxy.cli", *what.split()], cwd=REPO,
            env=env, capture_output=True, text=True, timeout=120, check=False)
            for what in ("audit verify", "evidence +31612345678", "export objections")}
    verify, evidence = runs["audit verify"], runs["evidence +31612345678"]
    assert verify.returncode == 0, verify.stderr[-1500:]
    assert verify.stdout.startswith("audit chain ok: 0 decision rows verified")
    assert evidence.returncode == 1, evidence.stderr[-1500:]  # nothing on file for it
    assert evidence.stderr.startswith("consent-proxy: "), evidence.stderr[-1500:]
    assert "Traceback" not in evidence.stderr
    export = runs["export objections"]
    assert export.returncode == 0, export.stderr[-1500:]
    assert export.stdout.startswith("source_id,")
