"""Group fetch: concurrent fact lookups share one query, and each gets exactly its own facts."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from proxy import store
from proxy.phone import subject_hash
from proxy.policy.facts import Facts, Sender
from proxy.reader import GroupFetch, Lookup
from tests.conftest import mobile, uid

GIVEN = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC)


class CountingFetch(GroupFetch):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batches: list[int] = []

    async def _send(self, conn: asyncpg.Connection, items: Sequence[Lookup]
                    ) -> list[tuple[Sender | None, Facts]]:
        self.batches.append(len(items))
        return await super()._send(conn, items)


@pytest.fixture
async def reader(pool: asyncpg.Pool) -> AsyncIterator[CountingFetch]:
    r = CountingFetch(pool)
    r.start()
    yield r
    await r.close()


async def _organisation(pool: asyncpg.Pool) -> tuple[str, str]:
    org, sender = uid(), f"+3120{mobile()[-7:]}"
    await pool.execute("INSERT INTO organisations (id, name, sector) VALUES ($1, 'X', "
                       "'commercial')", org)
    await pool.execute("INSERT INTO senders (sender, organisation_id, topic, purpose) "
                       "VALUES ($1, $2, 'energy', 'marketing')", sender, org)
    return org, sender


async def test_concurrent_lookups_share_queries_and_get_their_own_facts(
        reader: CountingFetch, pool: asyncpg.Pool) -> None:
    (org_a, sender_a), (org_b, sender_b) = await _organisation(pool), await _organisation(pool)
    numbers = [mobile() for _ in range(60)]
    for i, number in enumerate(numbers):
        await pool.execute("INSERT INTO subjects (number, kind) VALUES ($1, $2)", number,
                           "business" if i % 7 == 0 else "person")
        if i % 2 == 0:  # a consent with one organisation or the other
            await pool.execute(
                """INSERT INTO consents (subject, organisation_id, channel, topics, kind,
                       given_at, provenance) VALUES ($1, $2, 'sms', '{energy}', 'opt_in', $3,
                       'self_provided')""", number, org_a if i % 4 == 0 else org_b, GIVEN)
        if i % 5 == 0:
            await pool.execute(
                """INSERT INTO objections (subject_hash, subject, organisation_id, received_at,
                       via) VALUES ($1, $2, $3, $4, 'api')""",
                subject_hash(number), number, None if i % 10 == 0 else org_a, GIVEN)
    lookups = [(sender_a if i % 3 else sender_b, number) for i, number in enumerate(numbers)]
    lookups += [("+31209999999", numbers[0]), (sender_a, mobile())]  # no such sender, subject

    shared = await asyncio.gather(*(reader.load_facts(s, n) for s, n in lookups))
    alone = [await store.load_facts(pool, s, n) for s, n in lookups]

    assert shared == alone
    assert sum(reader.batches) == len(lookups)
    assert len(reader.batches) < len(lookups) // 4  # far fewer queries than lookups
    assert any(facts.consents for _, facts in shared)
    assert any(facts.objections for _, facts in shared)
    assert shared[-2][0] is None
    assert shared[-1][1].subject is None


async def test_one_lookup_goes_at_once(reader: CountingFetch, pool: asyncpg.Pool) -> None:
    _org, sender = await _organisation(pool)
    found, facts = await reader.load_facts(sender, mobile())
    assert found is not None
    assert found.sender == sender
    assert facts.organisation is not None
    assert reader.batches == [1]


async def test_a_closed_reader_refuses(pool: asyncpg.Pool) -> None:
    r = GroupFetch(pool)
    r.start()
    await r.close()
    with pytest.raises(asyncpg.InterfaceError):
        await r.load_facts("+31201234567", mobile())


async def test_hot_path_facts_equal_the_bulk_facts_in_any_session_time_zone(
        pool: asyncpg.Pool, database_url: str) -> None:
    """The hot path reads facts one JSON array per lookup, the scrub one JSON document per
    batch (from another query, through a partial index for the subject): both must give the
    engine the same objects, to the microsecond, whatever TimeZone the session has."""
    org, sender = await _organisation(pool)
    number = mobile()
    at = dt.datetime(2026, 3, 29, 0, 59, 59, 123456, tzinfo=dt.UTC)  # DST starts at 01:00 UTC
    await pool.execute("INSERT INTO subjects (number, kind, published_for_marketing) "
                       "VALUES ($1, 'business', true)", number)
    await pool.execute(
        """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
               provenance, expires_at, verified_at, first_contact_by, requested_start,
               requested_end, withdrawn_at, first_used_at, consumed_at)
           VALUES ($1, $2, 'voice', '{energy,solar}', 'request', $3::timestamptz, 'purchased',
               $3 + interval '400 days', $3 + interval '1 second', $3 + interval '2 days',
               $3 + interval '1 hour', $3 + interval '2 hours', $3 + interval '3 days',
               $3 + interval '1.5 seconds', $3 + interval '0.000001 seconds')""",
        number, org, at)
    await pool.execute(
        """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
               provenance) VALUES ($1, $2, 'sms', '{energy}', 'opt_in', $3, 'self_provided')""",
        number, org, at.replace(microsecond=0))
    await pool.execute(
        """INSERT INTO relationships (subject, organisation_id, kind, topics, started_at,
               provenance, ended_at, opt_out_offered)
           VALUES ($1, $2, 'customer', '{energy}', $3::timestamptz, 'self_provided',
               $3::timestamptz + interval '1 day',
               true)""", number, org, at)
    await pool.execute(
        """INSERT INTO objections (subject, subject_hash, organisation_id, channel, received_at,
               via) VALUES ($1, $2, $3, 'sms', $4, 'sms')""",
        number, subject_hash(number), org, at)
    organisation = await store.get_organisation(pool, org)
    bulk = (await store.load_facts_bulk(pool, organisation, [number]))[number]
    for zone in ("UTC", "Europe/Amsterdam", "America/St_Johns"):
        conn = await asyncpg.connect(database_url, server_settings={"TimeZone": zone})
        try:
            found_sender, facts = await store.load_facts(conn, sender, number)
        finally:
            await conn.close()
        assert found_sender is not None
        assert found_sender.organisation_id == org
        assert facts == bulk, zone
        assert len(facts.consents) == 2
        assert facts.consents[0].consumed_at == at + dt.timedelta(microseconds=1)
        assert facts.relationships[0].opt_out_offered is True
        assert all(t.tzinfo is dt.UTC for t in (facts.consents[0].given_at,
                                                facts.objections[0].received_at))


async def test_every_round_trip_is_counted(pool: asyncpg.Pool) -> None:
    """What the batch-size metric reads (consent_proxy_batch_items): trips, items, sizes."""
    _org, sender = await _organisation(pool)
    r = GroupFetch(pool)
    r.start()
    try:
        await asyncio.gather(*(r.load_facts(sender, mobile()) for _ in range(20)))
        await r.load_facts(sender, mobile())
    finally:
        await r.close()
    sizes = r.sizes
    assert sizes.items == 21
    assert sizes.trips < 21  # the twenty concurrent lookups shared trips
    assert sizes.buckets[0] >= 1  # the last lookup went alone
    assert sizes.buckets[-1] == 0  # nothing over the largest batch
