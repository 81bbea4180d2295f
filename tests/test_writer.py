"""Group commit: shared transactions, each caller waits for its own committed row."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from proxy import store
from proxy.policy.decision import Decision
from proxy.writer import GroupCommit
from tests.conftest import mobile, uid

NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)


def record(number: str, consumes: int | None = None) -> store.DecisionRecord:
    decision = Decision("allow", "ALLOWED", "N6", {"en": "x", "nl": "x"}, "CONTACT_REQUEST",
                        ({"type": "consent", "id": consumes or 0},), consumes=consumes)
    return store.DecisionRecord(decision=decision, decided_at=NOW, channel="sms",
                                subject=number, account_sid=None)


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
