"""Migrations: ordered, recorded, idempotent, safe when several instances start at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys

import asyncpg
import pytest

from proxy import db, store
from proxy.policy.decision import Decision
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
    """Each migration is applied by one of them (whichever holds the lock when it is next)."""
    results = await asyncio.gather(*(db.migrate_url(fresh_database) for _ in range(4)))
    every = [v for r in results for v in r]
    assert sorted(every) == [m.version for m in db.load_migrations()]
    assert all(r == sorted(r) for r in results)


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


# --- migration 014: provider-neutral clients and inbound messages, every row kept ------------

OLD_CLIENT = "AC" + "1" * 32
OTHER_CLIENT = "AC" + "2" * 32


async def _fill_as_013(conn: asyncpg.Connection) -> list[int]:
    """Rows in every table 014 renames a column of, written as 013's schema had them."""
    at = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
    await conn.execute("INSERT INTO organisations (id, name, sector) "
                       "VALUES ('o', 'O', 'commercial')")
    await conn.execute("INSERT INTO clients (account_sid, name) VALUES ($1, 'A'), ($2, 'B')",
                       OLD_CLIENT, OTHER_CLIENT)
    await conn.execute("INSERT INTO client_organisations (account_sid, organisation_id) "
                       "VALUES ($1, 'o')", OLD_CLIENT)
    decisions = [await conn.fetchval(
        """INSERT INTO decisions (decided_at, account_sid, channel, decision, reason, rule)
           VALUES ($1, $2, 'voice', 'deny', 'NO_LEGAL_BASIS', 'N5') RETURNING id""",
        at + dt.timedelta(seconds=i), OLD_CLIENT) for i in range(3)]
    await conn.execute("INSERT INTO decision_outcomes (decision_id, upstream_status, "
                       "upstream_sid) VALUES ($1, 201, 'CA-upstream')", decisions[0])
    await conn.execute(
        """INSERT INTO idempotency_keys (account_sid, token, request_hash, decision_id,
               created_at, status) VALUES ($1, 'token-1', 'h', $2, $3, 201)""",
        OLD_CLIENT, decisions[0], at)
    await conn.execute(
        """INSERT INTO relay_targets (id, decision_id, account_sid, kind, field, url, method)
           VALUES ($1, $2, $3, 'callback', 'StatusCallback', NULL, 'POST')""",
        "r" * 22, decisions[0], OLD_CLIENT)
    await conn.execute(
        """INSERT INTO dial_attempts (account_sid, call_id, request_hash, claimed_at,
               decision_id) VALUES ($1, 'call-1', 'h', $2, $3)""",
        OLD_CLIENT, at, decisions[1])
    await conn.execute(
        """INSERT INTO inbound_messages (message_sid, received_at, sender, organisation_id,
               subject_hash, intent, body_hash, reply)
           VALUES ('SM-old', $1, '+31201234567', 'o', 'hash', 'stop', 'body', '<Response/>')""",
        at)
    return decisions


async def test_migration_014_renames_for_every_provider_and_keeps_every_row(
        fresh_database: str) -> None:
    migrations = db.load_migrations()
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn, [m for m in migrations if m.version <= 13])
        decisions = await _fill_as_013(conn)
        hashes = await conn.fetch("SELECT id, chain_seq, row_hash FROM decisions "
                                  "ORDER BY chain_seq")
        head = hashes[-1]
        await store.insert_checkpoint(conn, head["chain_seq"], head["row_hash"],
                                      dt.datetime.now(dt.UTC), "mac", "cli")
        # Up to 014 only: later migrations are no part of this test.
        assert await db.migrate(conn, [m for m in migrations if m.version <= 14]) == [14]

        # Every row kept, under the new names.
        assert await conn.fetch("SELECT id, chain_seq, row_hash FROM decisions "
                                "ORDER BY chain_seq") == hashes
        assert [r["client_id"] for r in await conn.fetch(
            "SELECT client_id FROM decisions ORDER BY id")] == [OLD_CLIENT] * 3
        client = await store.get_client(conn, OLD_CLIENT)
        assert client == store.Client(OLD_CLIENT, "A", 1, ("o",), True)
        assert await store.relay_client(conn, "o") == (OLD_CLIENT, 1)
        assert await store.owned_sids(conn, OLD_CLIENT, ["CA-upstream"]) == {"CA-upstream"}
        assert await store.owned_sids(conn, OTHER_CLIENT, ["CA-upstream"]) == set()
        replay = await store.find_idempotent(conn, OLD_CLIENT, "token-1", dt.datetime(
            2026, 11, 2, 11, tzinfo=dt.UTC))
        assert replay is not None
        assert replay.status == 201
        target = await store.get_relay_target(conn, "r" * 22, "callback")
        assert target is not None
        assert (target.decision_id, target.client_id) == (decisions[0], OLD_CLIENT)
        assert await conn.fetchval("SELECT decision_id FROM dial_attempts WHERE client_id = $1 "
                                   "AND call_id = 'call-1'", OLD_CLIENT) == decisions[1]
        inbound = await conn.fetchrow("SELECT * FROM inbound_messages")
        assert (inbound["provider"], inbound["message_id"], inbound["intent"]) == (
            "twilio", "SM-old", "stop")
        assert await store.inbound_reply(conn, "twilio", "SM-old") == "<Response/>"
        assert await store.inbound_reply(conn, "other", "SM-old") is None

        # The new shape: no column keeps a Twilio name, the keys are the neutral ones.
        assert await conn.fetch(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public'
                 AND column_name IN ('account_sid', 'message_sid')""") == []
        assert await conn.fetchval(
            """SELECT pg_get_constraintdef(oid) FROM pg_constraint
               WHERE conname = 'inbound_messages_pkey'""") == "PRIMARY KEY (provider, message_id)"
        assert await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'decisions_client_id_idx'"
        ) == ("CREATE INDEX decisions_client_id_idx ON public.decisions "
              "USING btree (client_id, id)")
        # Any printable, bounded id is a client now; the Twilio shape is no longer required.
        await conn.execute("INSERT INTO clients (client_id, name) VALUES ('sip-trunk.1', 'S')")
        for bad in ("", "with space", "x" * 65, "ünï"):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("INSERT INTO clients (client_id, name) VALUES ($1, 'X')",
                                   bad)
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("INSERT INTO client_organisations (client_id, organisation_id) "
                               "VALUES ('nobody', 'o')")
        # The same message id through another provider is another message.
        await conn.execute(
            """INSERT INTO inbound_messages (provider, message_id, received_at, intent,
                   body_hash) VALUES ('telnyx', 'SM-old', now(), 'other', 'b')""")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO inbound_messages (provider, message_id, received_at, intent,
                       body_hash) VALUES ('twilio', 'SM-old', now(), 'other', 'b')""")
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute(
                """INSERT INTO inbound_messages (message_id, received_at, intent, body_hash)
                   VALUES ('SM-new', now(), 'other', 'b')""")

        # A change to a client is still announced, with its id.
        heard: asyncio.Queue[str] = asyncio.Queue()
        await conn.add_listener("consent_proxy_clients", lambda *args: heard.put_nowait(args[3]))
        await conn.execute("UPDATE clients SET token_version = 2 WHERE client_id = $1",
                           OLD_CLIENT)
        assert await asyncio.wait_for(heard.get(), 10) == OLD_CLIENT

        # The chain still verifies across the rename and the migrations after it: rows hashed
        # before it and after it (by today's code), and the checkpoint taken before it.
        await db.migrate(conn, migrations)
        decision = Decision("deny", "NO_LEGAL_BASIS", "N5", {"en": "x", "nl": "x"})
        new_id, _ = await store.record_decision(conn, store.DecisionRecord(
            decision=decision, decided_at=dt.datetime.now(dt.UTC), channel="voice",
            client_id=OLD_CLIENT))
        report = await store.verify_chain(conn, [head["chain_seq"]])
        assert (report.ok, report.rows) == (True, 4), report
        assert [c.present_hash for c in report.checkpoints] == [head["row_hash"]]
        assert await conn.fetchval("SELECT client_id FROM decisions WHERE id = $1",
                                   new_id) == OLD_CLIENT
        # ... and it still checks a row from before the rename: its client changed is caught.
        await conn.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete")
        await conn.execute("UPDATE decisions SET client_id = $1 WHERE id = $2",
                           OTHER_CLIENT, decisions[1])
        await conn.execute("ALTER TABLE decisions ENABLE TRIGGER decisions_no_update_delete")
        broken = await store.verify_chain(conn)
        assert (broken.ok, broken.broken_id) == (False, decisions[1])
    finally:
        await conn.close()
