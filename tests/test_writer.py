"""Group commit: shared transactions, each caller waits for its own committed row."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from proxy import store
from proxy.policy.decision import Decision
from proxy.writer import GroupCommit
from tests.conftest import mobile, uid

NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)


def record(number: str, consumes: int | None = None,
           account_sid: str | None = None) -> store.DecisionRecord:
    decision = Decision("allow", "ALLOWED", "N6", {"en": "x", "nl": "x"}, "CONTACT_REQUEST",
                        ({"type": "consent", "id": consumes or 0},), consumes=consumes)
    return store.DecisionRecord(decision=decision, decided_at=NOW, channel="sms",
                                subject=number, client_id=account_sid)


@pytest.fixture
async def writer(pool: asyncpg.Pool) -> AsyncIterator[GroupCommit]:
    w = GroupCommit(pool)
    w.start()
    yield w
    await w.close()


async def commits(pool: asyncpg.Pool) -> int:
    value: int = await pool.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return value


async def test_concurrent_decisions_share_commits(writer: GroupCommit,
                                                  pool: asyncpg.Pool) -> None:
    numbers = [mobile() for _ in range(200)]
    before = await commits(pool)
    results = await asyncio.gather(*(writer.decision(record(n), None) for n in numbers))
    ids = [decision_id for decision_id, _claimed in results]
    assert len(set(ids)) == 200
    assert await pool.fetchval("SELECT count(*) FROM decisions WHERE id = ANY($1)", ids) == 200
    await asyncio.sleep(0.5)  # let the statistics collector catch up
    assert await commits(pool) - before < 100  # far fewer commits than decisions


async def test_a_bad_row_fails_alone(writer: GroupCommit, pool: asyncpg.Pool) -> None:
    good = [writer.decision(record(mobile()), None) for _ in range(20)]
    bad = writer.outcome(store.outcome_args(
        -1, upstream_status=201, upstream_sid="SMx", error=None, response_status=201,
        response=b"", content_type="application/json"))  # no decision -1: FK violation
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], asyncpg.ForeignKeyViolationError)
    assert all(isinstance(r, tuple) for r in results[:-1])


async def test_sync_waits_for_what_was_queued_before_it(writer: GroupCommit,
                                                       pool: asyncpg.Pool) -> None:
    await asyncio.wait_for(writer.sync(), 5)  # nothing queued: at once
    decision_id, _ = await writer.decision(record(mobile()), None)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE decision_outcomes IN SHARE MODE")
        queued = writer.outcome(store.outcome_args(
            decision_id, upstream_status=201, upstream_sid="SM" + "1" * 32, error=None,
            response_status=201, response=b"{}", content_type="application/json"))
        synced = asyncio.ensure_future(writer.sync())
        await asyncio.sleep(0.3)
        assert not queued.done()
        assert not synced.done()
    await asyncio.wait_for(synced, 5)
    assert queued.done()
    assert queued.exception() is None
    assert await pool.fetchval("SELECT upstream_sid FROM decision_outcomes WHERE "
                               "decision_id = $1", decision_id) == "SM" + "1" * 32


async def test_sync_returns_after_a_failed_batch(writer: GroupCommit) -> None:
    bad = writer.outcome(store.outcome_args(
        -1, upstream_status=201, upstream_sid="SMx", error=None, response_status=201,
        response=b"", content_type="application/json"))
    await asyncio.wait_for(writer.sync(), 5)
    assert isinstance(bad.exception(), asyncpg.ForeignKeyViolationError)


async def test_outcome_keeps_the_response_only_for_a_replay() -> None:
    args = dict(upstream_status=201, upstream_sid="SMx", error=None, response_status=201,
                response=b'{"sid": "SMx"}', content_type="application/json")
    claim = store.IdempotencyClaim("AC" + "0" * 32, "t", "h")
    assert store.outcome_args(1, **args)[5] is None  # type: ignore[arg-type]
    assert bytes.fromhex(store.outcome_args(1, claim=claim, **args)[5]  # type: ignore[arg-type]
                         ) == b'{"sid": "SMx"}'


async def test_a_contact_request_is_consumed_once(writer: GroupCommit,
                                                  pool: asyncpg.Pool) -> None:
    number = mobile()
    org = uid()
    await pool.execute("INSERT INTO organisations (id, name, sector) VALUES ($1, 'X', "
                       "'commercial')", org)
    await pool.execute("INSERT INTO subjects (number) VALUES ($1)", number)
    request_id = await pool.fetchval(
        """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
               provenance) VALUES ($1, $2, 'sms', '{energy}', 'request', $3, 'self_provided')
           RETURNING id""", number, org, NOW - dt.timedelta(days=1))
    results = await asyncio.gather(
        *(writer.decision(record(number, consumes=request_id), None) for _ in range(5)),
        return_exceptions=True)
    assert sum(isinstance(r, tuple) for r in results) == 1
    assert sum(isinstance(r, store.RequestAlreadyUsed) for r in results) == 4
    assert await pool.fetchval(
        "SELECT count(*) FROM decisions WHERE consumed_consent_id = $1", request_id) == 1


async def test_close_drains_the_queue(pool: asyncpg.Pool) -> None:
    w = GroupCommit(pool)
    w.start()
    pending = [asyncio.ensure_future(w.decision(record(mobile()), None)) for _ in range(30)]
    await asyncio.sleep(0)
    await w.close()
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(asyncpg.InterfaceError):
        await w.decision(record(mobile()), None)


async def _client(pool: asyncpg.Pool) -> str:
    sid = "AC" + uuid.uuid4().hex
    await pool.execute("INSERT INTO clients (client_id, name) VALUES ($1, 'dialer')", sid)
    return sid


async def test_one_token_twice_in_a_batch_is_claimed_once(writer: GroupCommit,
                                                          pool: asyncpg.Pool) -> None:
    sid = await _client(pool)
    claim = store.IdempotencyClaim(sid, "token-1", "hash-1")
    results = await asyncio.gather(*(writer.decision(record(mobile(), account_sid=sid), claim)
                                     for _ in range(4)))
    assert sorted(claimed for _id, claimed in results) == [False, False, False, True]
    (winner,) = [decision_id for decision_id, claimed in results if claimed]
    assert await pool.fetchval("SELECT decision_id FROM idempotency_keys WHERE "
                               "client_id = $1 AND token = 'token-1'", sid) == winner


async def test_outcomes_complete_their_idempotency_entries(writer: GroupCommit,
                                                           pool: asyncpg.Pool) -> None:
    sid = await _client(pool)
    claims = [store.IdempotencyClaim(sid, f"t-{i}", f"h-{i}") for i in range(10)]
    decided = await asyncio.gather(*(writer.decision(record(mobile(), account_sid=sid), c)
                                     for c in claims))
    # Outcomes of these and decisions of new requests share the next batches.
    await asyncio.gather(
        *(writer.outcome(store.outcome_args(
            decision_id, upstream_status=201, upstream_sid=f"SM{i:032x}", error=None,
            response_status=201, response=b'{"sid": "x"}', content_type="application/json",
            claim=c)) for i, ((decision_id, _), c) in enumerate(zip(decided, claims,
                                                                   strict=True))),
        *(writer.decision(record(mobile()), None) for _ in range(10)))
    rows = await pool.fetch("SELECT k.token, k.status, k.response, o.upstream_sid "
                            "FROM idempotency_keys k JOIN decision_outcomes o "
                            "ON o.decision_id = k.decision_id WHERE k.client_id = $1 "
                            "ORDER BY k.token", sid)
    assert len(rows) == 10
    assert all(r["status"] == 201 and r["response"] == b'{"sid": "x"}' for r in rows)
    assert {r["upstream_sid"] for r in rows} == {f"SM{i:032x}" for i in range(10)}
