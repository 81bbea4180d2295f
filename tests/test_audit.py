"""Audit integrity, evidence on request and retention, on a database of their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from proxy import db, store
from proxy.app import create_app
from proxy.phone import subject_hash
from proxy.policy.decision import Decision
from proxy.writer import GroupCommit
from tests.conftest import REPO, Clock, make_settings, mobile, uid

NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)


def record(number: str, at: dt.datetime = NOW, reason: str = "NO_LEGAL_BASIS"
           ) -> store.DecisionRecord:
    decision = Decision("deny", reason, "N5", {"en": "x", "nl": "x"})
    return store.DecisionRecord(decision=decision, decided_at=at, channel="voice",
                                subject=number, sender="+31201234567")


@pytest.fixture
async def audit_db(fresh_database: str) -> str:
    await db.migrate_url(fresh_database)
    return fresh_database


@pytest.fixture
async def conn(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(audit_db)
    yield connection
    await connection.close()


async def add(conn: asyncpg.Connection, count: int, at: dt.datetime = NOW) -> list[int]:
    return [(await store.record_decision(conn, record(mobile(), at)))[0] for _ in range(count)]


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=60, check=False,
                          env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"})


async def test_chain_links_every_row(conn: asyncpg.Connection, audit_db: str) -> None:
    ids = await add(conn, 25)
    rows = await conn.fetch("SELECT id, chain_seq, prev_hash, row_hash FROM decisions "
                            "ORDER BY chain_seq")
    assert [r["id"] for r in rows] == ids
    assert rows[0]["prev_hash"] is None
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(rows))
    report = await store.verify_chain(conn)
    assert (report.ok, report.rows) == (True, 25)
    result = cli(audit_db, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "25 decision rows verified" in result.stdout


async def test_tampered_row_is_named(conn: asyncpg.Connection, audit_db: str) -> None:
    ids = await add(conn, 10)
    # A superuser can switch the append-only trigger off; the chain still gives it away.
    await conn.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete")
    await conn.execute("UPDATE decisions SET reason = 'ALLOWED', decision = 'allow' "
                       "WHERE id = $1", ids[6])
    await conn.execute("ALTER TABLE decisions ENABLE TRIGGER decisions_no_update_delete")
    report = await store.verify_chain(conn)
    assert (report.ok, report.broken_id) == (False, ids[6])
    assert "content" in (report.why or "")
    result = cli(audit_db, "audit", "verify")
    assert result.returncode == 1
    assert f"decision id {ids[6]}" in result.stderr


async def test_deleted_row_breaks_the_link(conn: asyncpg.Connection) -> None:
    ids = await add(conn, 10)
    await conn.execute("ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete")
    await conn.execute("DELETE FROM decisions WHERE id = $1", ids[3])
    await conn.execute("ALTER TABLE decisions ENABLE TRIGGER decisions_no_update_delete")
    report = await store.verify_chain(conn)
    assert (report.ok, report.broken_id) == (False, ids[4])
    assert "prev_hash" in (report.why or "")


async def test_concurrent_writers_keep_one_chain(audit_db: str) -> None:
    pools = [await db.create_pool(audit_db, min_size=1, max_size=3) for _ in range(2)]
    writers = [GroupCommit(pool) for pool in pools]  # two proxy instances
    for writer in writers:
        writer.start()
    try:
        await asyncio.gather(*(writers[i % 2].decision(record(mobile()), None)
                               for i in range(300)))
    finally:
        for writer in writers:
            await writer.close()
        for pool in pools:
            await pool.close()
    conn = await db.connect(audit_db)
    try:
        report = await store.verify_chain(conn)
    finally:
        await conn.close()
    assert (report.ok, report.rows) == (True, 300)


async def test_session_time_zone_does_not_change_hashes(conn: asyncpg.Connection) -> None:
    await add(conn, 3)
    await conn.execute("SET timezone = 'Pacific/Chatham'")
    await add(conn, 3)
    assert (await store.verify_chain(conn)).ok


async def test_prune_removes_old_decisions_and_keeps_objections(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    old = NOW - dt.timedelta(days=800)
    number = mobile()
    await conn.execute("INSERT INTO objections (subject_hash, subject, received_at, via) "
                       "VALUES ($1, $2, $3, 'letter')", subject_hash(number), number, old)
    old_ids = await add(conn, 5, at=old)
    await conn.execute("INSERT INTO decision_outcomes (decision_id, upstream_status) "
                       "VALUES ($1, 201)", old_ids[0])
    new_ids = await add(conn, 5)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM decisions WHERE id = $1", old_ids[0])
    counts = await store.prune(conn, NOW - dt.timedelta(days=730))
    assert (counts["decisions"], counts["outcomes"]) == (5, 1)
    remaining = [r["id"] for r in await conn.fetch("SELECT id FROM decisions ORDER BY id")]
    assert remaining == new_ids
    assert await conn.fetchval("SELECT count(*) FROM objections") == 1
    assert (await store.verify_chain(conn)).ok  # the anchor carries the chain on
    await add(conn, 2)
    assert (await store.verify_chain(conn)).rows == 7
    result = cli(audit_db, "prune")  # default retention: 24 months back from now
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["decisions"] == 0


async def test_evidence_report(aiohttp_client: Any, audit_db: str, clock: Clock,
                               auth: dict[str, str]) -> None:
    client = await aiohttp_client(create_app(make_settings(audit_db), clock=clock))
    org = uid()
    number = mobile()
    await client.post("/admin/v1/organisations", json={
        "id": org, "name": "Loterij NL", "sector": "lottery"}, headers=auth)
    await client.post("/admin/v1/consents", json={
        "subject": number, "organisation": org, "channel": "voice", "topics": ["lottery"],
        "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
        "verified_at": "2026-10-01T12:05:00+02:00", "provenance": "self_provided",
        "evidence": {"recording": "call-4711.wav"}}, headers=auth)
    await client.post("/admin/v1/objections", json={"subject": number, "via": "letter",
                                                    "received_at": "2026-11-01T10:00:00+01:00"},
                      headers=auth)
    conn = await db.connect(audit_db)
    try:
        decision_id, _ = await store.record_decision(conn, record(number))
    finally:
        await conn.close()
    resp = await client.get(f"/admin/v1/subjects/0{number[3:]}/evidence", headers=auth)
    assert resp.status == 200
    report = await resp.json()
    assert report["number"] == number
    assert report["consents"][0]["evidence"] == {"recording": "call-4711.wav"}
    assert report["consents"][0]["organisation_name"] == "Loterij NL"
    assert report["objections"][0]["via"] == "letter"
    assert [d["id"] for d in report["decisions"]] == [decision_id]
    assert len(report["decisions"][0]["row_hash"]) == 64
    assert (await client.get(f"/admin/v1/subjects/{number}/evidence")).status == 401
    assert (await client.get(f"/admin/v1/subjects/{mobile()}/evidence",
                             headers=auth)).status == 404
    result = cli(audit_db, "evidence", number)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["consents"][0]["id"] == report["consents"][0]["id"]
    assert cli(audit_db, "evidence", mobile()).returncode == 1
