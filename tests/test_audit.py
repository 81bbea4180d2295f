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

from proxy import audit, checkpoints, db, store
from proxy.app import create_app
from proxy.keys import CHECKPOINTS
from proxy.phone import subject_hash
from proxy.policy.decision import Decision
from proxy.writer import GroupCommit
from tests.conftest import PROXY_SECRET, REPO, Clock, make_settings, mobile, uid

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


def cli(database_url: str, *args: str, secret: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    if secret:
        env["PROXY_SECRET"] = secret
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=60, check=False, env=env)


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


# --- checkpoints: truncation is detectable ------------------------------------------------------

SECRET = "audit-test-secret-0123456789"


async def as_superuser(conn: asyncpg.Connection, table: str, *statements: str) -> None:
    """What an attacker with the database's superuser can do: switch the append-only
    trigger of `table` off, change rows, switch it on again."""
    trigger = {"decisions": "decisions_no_update_delete",
               "audit_checkpoints": "audit_checkpoints_no_update_delete"}[table]
    await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")


async def verify(audit_db: str, *given: tuple[int, str],
                 secret: str | None = SECRET) -> checkpoints.AuditReport:
    return await audit.verify(audit_db, secret, list(given))


def verify_cli(audit_db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(audit_db, "audit", "verify", *args, secret=SECRET)


async def test_deleting_the_newest_rows_is_caught_by_a_checkpoint(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    ids = await add(conn, 10)
    taken = await checkpoints.take(conn, SECRET, NOW, "cli")
    assert taken is not None
    assert (await verify(audit_db)).ok
    await as_superuser(conn, "decisions",
                       f"DELETE FROM decisions WHERE id >= {ids[7]}")
    # The chain that is left is whole: alone, it cannot tell.
    assert (await store.verify_chain(conn)).ok
    report = await verify(audit_db)
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith(f"checkpoint {taken.id} (chain_seq {taken.chain_seq}, ")
    assert "gone" in report.problem
    result = verify_cli(audit_db)
    assert result.returncode == 1
    assert f"checkpoint {taken.id} (chain_seq {taken.chain_seq}" in result.stderr


async def test_a_rewritten_chain_is_caught_by_a_checkpoint(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    ids = await add(conn, 6)
    taken = await checkpoints.take(conn, SECRET, NOW, "cli")
    assert taken is not None
    # An attacker changes a row and recomputes every hash from it on: the chain holds again.
    await as_superuser(conn, "decisions", "UPDATE decisions SET decision = 'allow', reason = "
                                          f"'ALLOWED' WHERE id = {ids[3]}")
    prev = await conn.fetchval("SELECT row_hash FROM decisions WHERE id = $1", ids[2])
    for decision_id in ids[3:]:
        await as_superuser(conn, "decisions",
                           f"UPDATE decisions SET prev_hash = '{prev}' WHERE id = {decision_id}",
                           f"UPDATE decisions d SET row_hash = decision_row_hash(d, '{prev}') "
                           f"WHERE id = {decision_id}")
        prev = await conn.fetchval("SELECT row_hash FROM decisions WHERE id = $1", decision_id)
    assert (await store.verify_chain(conn)).ok
    report = await verify(audit_db)
    assert report.problem == (
        f"checkpoint {taken.id} (chain_seq {taken.chain_seq}, taken {NOW.isoformat()}, cli): "
        "the decision row it names has another row_hash now: it was changed")
    assert verify_cli(audit_db).returncode == 1


async def test_a_forged_checkpoint_is_caught_by_its_mac(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    ids = await add(conn, 5)
    taken = await checkpoints.take(conn, SECRET, NOW, "cli")
    assert taken is not None
    # Truncate, and move the checkpoint down to the new head: the MAC gives it away.
    head = await conn.fetchrow("SELECT chain_seq, row_hash FROM decisions WHERE id = $1",
                               ids[2])
    await as_superuser(conn, "decisions", f"DELETE FROM decisions WHERE id > {ids[2]}")
    await as_superuser(conn, "audit_checkpoints",
                       f"UPDATE audit_checkpoints SET chain_seq = {head['chain_seq']}, "
                       f"row_hash = '{head['row_hash']}' WHERE id = {taken.id}")
    report = await verify(audit_db)
    assert report.problem is not None
    assert report.problem.startswith(f"checkpoint {taken.id} ")
    assert "MAC does not verify" in report.problem
    # A MAC made with another secret is no better.
    assert "MAC does not verify" in (await verify(audit_db, secret="another")).problem  # type: ignore[operator]
    result = verify_cli(audit_db)
    assert result.returncode == 1
    assert "MAC does not verify" in result.stderr


async def test_a_checkpoint_from_the_log_survives_a_deleted_checkpoints_table(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    ids = await add(conn, 5)
    taken = await checkpoints.take(conn, SECRET, NOW, "cli")
    assert taken is not None
    given = f"{taken.chain_seq}:{taken.row_hash}"
    assert verify_cli(audit_db, "--checkpoint", given).returncode == 0
    await as_superuser(conn, "decisions", f"DELETE FROM decisions WHERE id > {ids[1]}")
    await as_superuser(conn, "audit_checkpoints", "DELETE FROM audit_checkpoints")
    assert (await verify(audit_db)).ok  # nothing left in the database to tell
    report = await verify(audit_db, (taken.chain_seq, taken.row_hash))
    assert report.problem == f"given checkpoint {given}: the decision row it names is gone: " \
                             "rows were deleted from the log"
    result = verify_cli(audit_db, "--checkpoint", given)
    assert result.returncode == 1
    assert f"given checkpoint {given}" in result.stderr
    bad = verify_cli(audit_db, "--checkpoint", "12:nothex")
    assert bad.returncode == 2
    assert "SEQ:HASH" in bad.stderr


async def test_checkpoints_need_the_secret_to_be_checked(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    await add(conn, 2)
    assert (await verify(audit_db, secret=None)).ok  # no checkpoints: nothing to check
    await checkpoints.take(conn, SECRET, NOW, "cli")
    report = await verify(audit_db, secret=None)
    assert report.problem == "PROXY_SECRET is needed to check the MACs of 1 checkpoints"
    result = cli(audit_db, "audit", "verify")
    assert result.returncode == 1
    assert "PROXY_SECRET is needed" in result.stderr


async def test_prune_keeps_verify_ok_with_checkpoints(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    old = NOW - dt.timedelta(days=800)
    await add(conn, 4, at=old)
    old_checkpoint = await checkpoints.take(conn, SECRET, old, "timer")
    assert old_checkpoint is not None
    await add(conn, 3)
    new_checkpoint = await checkpoints.take(conn, SECRET, NOW, "timer")
    assert new_checkpoint is not None
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM audit_checkpoints")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE audit_checkpoints SET mac = 'x'")
    counts = await store.prune(conn, NOW - dt.timedelta(days=730))
    assert (counts["decisions"], counts["checkpoints"]) == (4, 1)
    remaining = [r["id"] for r in await conn.fetch("SELECT id FROM audit_checkpoints")]
    assert remaining == [new_checkpoint.id]
    old_given = (old_checkpoint.chain_seq, old_checkpoint.row_hash)
    report = await verify(audit_db, old_given)  # from the log: pruned, vouched by the anchor
    assert (report.ok, report.checkpoints) == (True, 2)
    forged = (old_checkpoint.chain_seq, "f" * 64)  # at the cut: checked against the anchor
    assert "prune anchor" in ((await verify(audit_db, forged)).problem or "")
    result = verify_cli(audit_db)
    assert result.returncode == 0, result.stderr
    assert "3 decision rows verified, 1 checkpoints hold" in result.stdout


async def test_cli_checkpoint_writes_one_and_logs_it(
    conn: asyncpg.Connection, audit_db: str
) -> None:
    result = cli(audit_db, "audit", "checkpoint", secret=SECRET)
    assert result.returncode == 1  # no decisions yet
    await add(conn, 3)
    head = await store.chain_head(conn)
    assert cli(audit_db, "audit", "checkpoint").returncode == 2  # no PROXY_SECRET
    result = cli(audit_db, "audit", "checkpoint", secret=SECRET)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (logged,) = [line for line in lines if line.get("event") == "audit_checkpoint"]
    printed = lines[-1]
    row = await conn.fetchrow("SELECT * FROM audit_checkpoints")
    assert (row["chain_seq"], row["row_hash"], row["source"]) == (*head, "cli")  # type: ignore[misc]
    assert (logged["seq"], logged["hash"], logged["mac"]) == (
        row["chain_seq"], row["row_hash"], row["mac"])
    assert (printed["id"], printed["seq"], printed["mac"]) == (
        row["id"], row["chain_seq"], row["mac"])
    assert row["mac"] == checkpoints.mac(SECRET, row["chain_seq"], row["row_hash"],
                                         row["taken_at"])
    result = verify_cli(audit_db, "--checkpoint", f"{logged['seq']}:{logged['hash']}")
    assert result.returncode == 0, result.stderr
    assert "2 checkpoints hold" in result.stdout


async def test_a_running_proxy_checkpoints_on_its_timer_and_at_its_stop(
    aiohttp_client: Any, audit_db: str, clock: Clock, conn: asyncpg.Connection,
    log_output: Any,
) -> None:
    app = create_app(make_settings(audit_db), clock=clock)
    client = await aiohttp_client(app)
    checkpointer = app[CHECKPOINTS]
    assert checkpointer.interval == 60
    assert await checkpointer.checkpoint("timer") is None  # no decisions yet
    await add(conn, 2)
    first = await checkpointer.checkpoint("timer")
    assert first is not None
    assert first.taken_at == clock.now
    assert await checkpointer.checkpoint("timer") is None  # the head did not move
    await add(conn, 1)
    await client.close()  # the stop checkpoint
    rows = await conn.fetch("SELECT chain_seq, source FROM audit_checkpoints ORDER BY id")
    assert [r["source"] for r in rows] == ["timer", "stop"]
    assert rows[1]["chain_seq"] == (await store.chain_head(conn))[0]  # type: ignore[index]
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    logged = [e for e in events if e["event"] == "audit_checkpoint"]
    assert [(e["seq"], e["source"]) for e in logged] == [
        (r["chain_seq"], r["source"]) for r in rows]
    assert (await verify(audit_db, secret=PROXY_SECRET)).ok


async def test_the_timer_runs_at_the_injected_interval(
    aiohttp_client: Any, audit_db: str, clock: Clock, conn: asyncpg.Connection,
) -> None:
    await add(conn, 1)
    app = create_app(make_settings(audit_db), clock=clock)
    app[CHECKPOINTS].interval = 0.01
    await aiohttp_client(app)
    deadline = asyncio.get_running_loop().time() + 10
    while not await conn.fetchval("SELECT count(*) FROM audit_checkpoints"):
        assert asyncio.get_running_loop().time() < deadline, "no checkpoint from the timer"
        await asyncio.sleep(0.01)
    assert await conn.fetchval("SELECT source FROM audit_checkpoints") == "timer"


async def test_two_proxies_checkpoint_at_once(audit_db: str, clock: Clock) -> None:
    pools = [await db.create_pool(audit_db, min_size=1, max_size=3) for _ in range(2)]
    writers = [GroupCommit(pool) for pool in pools]
    checkpointers = [checkpoints.Checkpointer(PROXY_SECRET, clock) for _ in pools]
    for writer, checkpointer, pool in zip(writers, checkpointers, pools, strict=True):
        writer.start()
        checkpointer.pool = pool
    try:
        for _ in range(5):
            await asyncio.gather(
                *(writers[i % 2].decision(record(mobile()), None) for i in range(40)),
                *(checkpointers[i % 2].checkpoint("timer") for i in range(10)))
    finally:
        for writer in writers:
            await writer.close()
        for pool in pools:
            await pool.close()
    report = await verify(audit_db, secret=PROXY_SECRET)
    assert report.ok, report.problem
    assert report.checkpoints >= 5
