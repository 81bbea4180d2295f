"""Migrations 014 and 018 under the conditions of real upgrades: decisions committed while 014
waits for its locks, a decision log copied into another database, the same message id through
two providers, rows hashed before 018's `front` column; and an instance whose code is older
than its database's schema."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from proxy import db, store
from proxy.app import create_app
from tests.conftest import make_settings, mobile, with_database

AT = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
SID = "AC" + "1" * 32


def _upto(version: int) -> list[db.Migration]:
    return [m for m in db.load_migrations() if m.version <= version]


async def _old_decision(conn: asyncpg.Connection, i: int) -> int:
    """A decision row as 013's schema (and a proxy before 014) writes it."""
    decision_id: int = await conn.fetchval(
        """INSERT INTO decisions (decided_at, account_sid, channel, decision, reason, rule)
           VALUES ($1, $2, 'voice', 'deny', 'NO_LEGAL_BASIS', 'N5') RETURNING id""",
        AT + dt.timedelta(seconds=i), SID)
    return decision_id


async def _wait_for_lock_wait(conn: asyncpg.Connection, relname: str) -> None:
    """Until some session waits for a lock on `relname` (a state, polled)."""
    for _ in range(400):
        waiting = await conn.fetchval(
            """SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
               WHERE c.relname = $1 AND NOT l.granted""", relname)
        if waiting:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"nobody waits for {relname}")


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read", "serializable"])
async def test_decision_committed_while_014_waits_still_verifies(
        fresh_database: str, isolation: str) -> None:
    """An old proxy still records a decision while `migrate` runs 014 and waits for a lock on
    `clients` (here held by a reader), whatever the database's default isolation: the row,
    hashed under `account_sid`, still verifies after 014 (decision_row_hash is a function of
    the row alone, not of a boundary read from a snapshot)."""
    name = urlsplit(fresh_database).path.lstrip("/")
    setup = await asyncpg.connect(fresh_database)
    holder = await asyncpg.connect(fresh_database)
    migrator: asyncpg.Connection | None = None
    try:
        await db.migrate(setup, _upto(13))
        await _old_decision(setup, 0)
        await setup.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{isolation}'")
        migrator = await asyncpg.connect(fresh_database)
        assert await migrator.fetchval("SHOW default_transaction_isolation") == isolation

        tr = holder.transaction()
        await tr.start()
        await holder.execute("LOCK TABLE clients IN ACCESS SHARE MODE")
        migrating = asyncio.create_task(db.migrate(migrator, _upto(14)))
        await _wait_for_lock_wait(setup, "clients")
        late = await _old_decision(setup, 1)  # an old proxy's decision, committed now
        await tr.commit()
        assert await migrating == [14]

        report = await store.verify_chain(setup)
        assert (report.ok, report.rows, report.broken_id) == (True, 2, None), (late, report)
    finally:
        for conn in (setup, holder, migrator):
            if conn is not None:
                await conn.close()


@pytest.mark.parametrize("version", [13, 14])
async def test_log_copied_into_a_schema_built_by_migrate_still_verifies(
        fresh_database: str, server_url: str, version: int) -> None:
    """The log moved to another server whose schema `consent-proxy migrate` built (logical
    replication, or a data-only dump restored with --disable-triggers) still verifies, before
    and after 014: a row's hash is a function of the row."""
    source = await db.connect(fresh_database)
    target_name = f"cp_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{target_name}"')
    target = await db.connect(with_database(server_url, target_name))
    try:
        await db.migrate(source, _upto(13))
        for i in range(3):
            await _old_decision(source, i)
        await db.migrate(source, _upto(version))
        assert (await store.verify_chain(source)).ok

        await db.migrate(target, _upto(version))
        rows = await source.fetch("SELECT * FROM decisions ORDER BY chain_seq")
        await target.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_chain")
        await target.copy_records_to_table(
            "decisions", records=[tuple(r.values()) for r in rows], columns=list(rows[0].keys()))
        await target.execute("ALTER TABLE decisions ENABLE TRIGGER decisions_chain")
        hashes = "SELECT id, chain_seq, prev_hash, row_hash FROM decisions ORDER BY chain_seq"
        assert await target.fetch(hashes) == await source.fetch(hashes)

        report = await store.verify_chain(target)
        assert report.ok, report
    finally:
        await source.close()
        await target.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{target_name}" WITH (FORCE)')
        await admin.close()


async def test_same_message_id_through_two_providers_is_two_stops(pool: asyncpg.Pool) -> None:
    """The same message id through another provider is another message, and its STOP another
    objection, each naming its provider."""
    ids = []
    message_id = "MSG-" + uuid.uuid4().hex
    for provider in ("twilio", "otherprovider"):
        number = mobile()
        rec = store.InboundRecord(provider=provider, message_id=message_id,
                                  received_at=AT, sender="+31201234567", organisation_id=None,
                                  subject=number, intent="stop", body_hash="b")
        objection = store.ObjectionIn(subject=number, organisation=None, channel=None,
                                      received_at=AT, via="sms", source_ref=rec.message_id,
                                      body_hash="b")
        ids.append(await store.stop_by_sms(pool, rec, objection, "<Response/>"))
    assert all(i is not None for i in ids)
    rows = await pool.fetch(
        "SELECT source_provider FROM objections WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
    assert [r["source_provider"] for r in rows] == ["twilio", "otherprovider"]


async def test_a_tampered_pre_014_row_is_still_caught(fresh_database: str) -> None:
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn, _upto(13))
        first = await _old_decision(conn, 0)
        await _old_decision(conn, 1)
        await db.migrate(conn, _upto(14))
        assert (await store.verify_chain(conn)).ok
        await conn.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete")
        await conn.execute("UPDATE decisions SET reason = 'NOT_MARKETING' WHERE id = $1", first)
        report = await store.verify_chain(conn)
        assert (report.ok, report.broken_id) == (False, first)
    finally:
        await conn.close()


async def test_code_older_than_the_schema_refuses_to_migrate(fresh_database: str) -> None:
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn)
        newest = max(m.version for m in db.load_migrations())
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'later', 'x')",
            newest + 1)
        with pytest.raises(db.MigrationError, match=f"{newest + 1:03d}.*newer version"):
            await db.migrate(conn)
        assert await db.migration_state(conn) == ([], [newest + 1])
    finally:
        await conn.close()


async def test_an_instance_older_than_the_schema_is_not_ready(
        fresh_database: str, aiohttp_client: Any) -> None:
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn)
        newest = max(m.version for m in db.load_migrations())
        client = await aiohttp_client(create_app(make_settings(fresh_database)))
        resp = await client.get("/readyz")
        assert resp.status == 200
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'later', 'x')",
            newest + 1)
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert await resp.json() == {"status": "schema_newer_than_code",
                                     "unknown": [newest + 1]}
    finally:
        await conn.close()


async def test_rows_from_before_018_keep_their_hashes_and_new_rows_name_their_front(
        fresh_database: str) -> None:
    """A row hashed before the `front` column existed verifies after 018 (its hash is of the
    row without the key); a row written since names its front, is hashed with it, and a
    changed front is caught."""
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn, _upto(17))
        await conn.execute("INSERT INTO clients (client_id, name) VALUES ($1, 'A')", SID)
        before = await conn.fetchval(
            """INSERT INTO decisions (decided_at, client_id, channel, decision, reason, rule)
               VALUES ($1, $2, 'voice', 'deny', 'NO_LEGAL_BASIS', 'N5') RETURNING id""",
            AT, SID)
        await db.migrate(conn, _upto(18))
        after = await conn.fetchval(
            """INSERT INTO decisions (decided_at, client_id, channel, decision, reason, rule,
                                      front)
               VALUES ($1, $2, 'sms', 'deny', 'NO_LEGAL_BASIS', 'N5', 'telnyx') RETURNING id""",
            AT + dt.timedelta(seconds=1), SID)
        rows = await conn.fetch(
            """SELECT id, front, row_hash = decision_row_hash(d, d.prev_hash) AS verifies
               FROM decisions d ORDER BY id""")
        assert [(r["id"], r["front"], r["verifies"]) for r in rows] == [
            (before, None, True), (after, "telnyx", True)]
        assert (await store.verify_chain(conn)).ok
        await conn.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete")
        await conn.execute("UPDATE decisions SET front = 'twilio' WHERE id = $1", after)
        assert not await conn.fetchval(
            "SELECT row_hash = decision_row_hash(d, d.prev_hash) FROM decisions d WHERE id = $1",
            after)
        report = await store.verify_chain(conn)
        assert (report.ok, report.broken_id) == (False, after)
    finally:
        await conn.close()
