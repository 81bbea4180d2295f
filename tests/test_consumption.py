"""Consumption follows the call, not the attempt (N5, N6): what a decision used up is given back
when no contact followed, as an event of its own, once. The official SDK as the dialer, the
fake upstream playing Twilio (also firing the call's status callbacks at the proxy), real
PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from twilio.base.exceptions import TwilioRestException

from proxy import db, store
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from proxy.phone import subject_hash
from proxy.policy import Decision
from tests.conftest import Clock, mobile
from tests.fake_twilio import FakeTwilio
from tests.test_relays import start_proxy
from tests.world import World, in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AMS = ZoneInfo("Europe/Amsterdam")
NO_LEGAL_BASIS = DENIAL_CODES["NO_LEGAL_BASIS"][1]
FIRST_CONTACT_LATE = DENIAL_CODES["CONSENT_FIRST_CONTACT_LATE"][1]


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path,
                             "[upstream]\ntimeout_seconds = 0.5\n")


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def call(world: World, to: str) -> Any:
    sdk = world.sdk()
    return await in_thread(lambda: sdk.calls.create(to=to, from_=world.voice,
                                                    url="https://dialer.example/t"))


async def refused(world: World, to: str) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        await call(world, to)
    return caught.value


async def decisions(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows


async def reversals(pool: asyncpg.Pool, decision_ids: list[int]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM consumption_reversals WHERE decision_id = ANY($1::bigint[]) ORDER BY id",
        decision_ids)
    return rows


async def consent_row(pool: asyncpg.Pool, consent_id: int) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow("SELECT * FROM consents WHERE id = $1", consent_id)
    return row


async def requested(world: World, channel: str = "voice") -> tuple[str, int]:
    number = mobile()
    return number, await world.consent(number, channel, kind="request")


async def used_again(world: World, fake: FakeTwilio, number: str, request_id: int) -> None:
    """The request is usable again: the next call goes out on it."""
    before = len(fake.creates())
    created = await call(world, number)
    assert created.sid.startswith("CA")
    assert len(fake.creates()) == before + 1
    last = (await decisions(world, number))[-1]
    assert (last["decision"], last["basis"], last["consumed_consent_id"]) == (
        "allow", "CONTACT_REQUEST", request_id)


# --- the provider refuses or cannot be reached: nothing was sent ---------------------------

@pytest.mark.parametrize(("status", "code"), [(400, 21211), (429, 20429), (500, None)])
async def test_provider_refusal_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, clock: Clock, status: int,
        code: int | None) -> None:
    number, request_id = await requested(world)
    fake.fail_with(status, code, times=1)
    error = await refused(world, number)
    assert error.status == status
    (row,) = await decisions(world, number)
    assert (row["decision"], row["consumed_consent_id"]) == ("allow", request_id)
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["why"], reversal["detail"]) == ("provider_refused", f"upstream {status}")
    assert (reversal["request_id"], reversal["first_use_consent_id"]) == (request_id, None)
    assert reversal["reversed_at"] == clock.now
    assert (await consent_row(pool, request_id))["consumed_at"] is None
    await used_again(world, fake, number, request_id)
    report = await (await world.admin.get(f"/admin/v1/subjects/{number}/evidence",
                                          headers=world.auth)).json()
    assert [(r["decision_id"], r["why"], r["request_id"]) for r in
            report["consumption_reversals"]] == [(row["id"], "provider_refused", request_id)]


async def test_unreachable_provider_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world)
    await fake.refuse()
    try:
        error = await refused(world, number)
    finally:
        await fake.resume()
    assert (error.status, error.code) == (502, 930502)
    (row,) = await decisions(world, number)
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["why"], reversal["request_id"]) == ("provider_unreachable", request_id)
    await used_again(world, fake, number, request_id)


async def test_timeout_keeps_the_request_consumed(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world)
    fake.hang(5, times=1)  # far beyond upstream.timeout_seconds = 0.5: it may have gone out
    error = await refused(world, number)
    assert (error.status, error.code) == (504, 930504)
    (row,) = await decisions(world, number)
    assert await reversals(pool, [row["id"]]) == []
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    assert (await refused(world, number)).code == NO_LEGAL_BASIS


async def test_an_answer_cut_off_keeps_the_request_consumed(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    """The call was created and the connection broke during Twilio's answer: whether it
    went out is unknown to the proxy, so it is a 504 as after a timeout, never "nothing was
    sent" with the request given back (which would let a second call through)."""
    number, request_id = await requested(world)
    fake.cut_answer()
    error = await refused(world, number)
    assert (error.status, error.code) == (504, 930504)
    assert len(fake.creates("Calls")) == 1  # it did go out
    (row,) = await decisions(world, number)
    assert await reversals(pool, [row["id"]]) == []
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    assert (await refused(world, number)).code == NO_LEGAL_BASIS


async def test_sms_refused_by_the_provider_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world, "sms")
    fake.fail_with(400, 21211, times=1)
    sdk = world.sdk()
    with pytest.raises(TwilioRestException):
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="Hoi"))
    (row,) = await decisions(world, number)
    (reversal,) = await reversals(pool, [row["id"]])
    assert reversal["request_id"] == request_id
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          body="Hoi"))
    assert message.sid.startswith("SM")


async def test_sms_the_proxy_refuses_to_send_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world, "sms")
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:  # N17: the footer does not fit
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                    body="x" * 1590))
    assert (caught.value.status, caught.value.code) == (400, 21617)
    assert fake.creates() == []
    (row,) = await decisions(world, number)
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_sent", "OPT_OUT_FOOTER_DOES_NOT_FIT", request_id)
    assert (await consent_row(pool, request_id))["consumed_at"] is None


# --- the call's status: nobody reached is no contact -----------------------------------------

@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
async def test_a_call_that_reached_nobody_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, status: str) -> None:
    number, request_id = await requested(world)
    created = await call(world, number)
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    answer, _, _ = await fake.fire_status_callback(created.sid, status)
    assert answer == 204  # the proxy's own callback: recorded, nothing passed on
    (row,) = await decisions(world, number)
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_reached", status, request_id)
    await used_again(world, fake, number, request_id)


@pytest.mark.parametrize("status", ["failed", "undelivered"])
async def test_a_message_that_reached_nobody_gives_the_request_back(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, status: str) -> None:
    number, request_id = await requested(world, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          body="Hoi"))
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    await fake.fire_status_callback(message.sid, "sent")  # not final: nothing given back
    (row,) = await decisions(world, number)
    assert await reversals(pool, [row["id"]]) == []
    answer, _, _ = await fake.fire_status_callback(message.sid, status)
    assert answer == 204  # the proxy's own callback: recorded, nothing passed on
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_reached", status, request_id)
    assert (await consent_row(pool, request_id))["consumed_at"] is None


async def test_a_delivered_message_keeps_the_request_consumed(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          body="Hoi"))
    await fake.fire_status_callback(message.sid, "delivered")
    (row,) = await decisions(world, number)
    assert await reversals(pool, [row["id"]]) == []
    assert (await consent_row(pool, request_id))["consumed_at"] is not None


@pytest.mark.parametrize("answered_by", [None, "human", "machine_start", "machine_end_beep",
                                         "fax", "unknown"])
async def test_a_completed_call_keeps_the_request_consumed(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, answered_by: str | None) -> None:
    number, request_id = await requested(world)
    created = await call(world, number)
    extra = {"AnsweredBy": answered_by} if answered_by else {}
    await fake.fire_status_callback(created.sid, "completed", CallDuration="12", **extra)
    (row,) = await decisions(world, number)
    assert await reversals(pool, [row["id"]]) == []
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    assert (await refused(world, number)).code == NO_LEGAL_BASIS


@pytest.mark.parametrize("status", ["queued", "initiated", "ringing", "in-progress"])
async def test_a_call_still_under_way_keeps_the_request_consumed(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, status: str) -> None:
    number, request_id = await requested(world)
    created = await call(world, number)
    await fake.fire_status_callback(created.sid, status)
    assert (await consent_row(pool, request_id))["consumed_at"] is not None


async def test_the_same_callback_twice_gives_back_once(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number, request_id = await requested(world)
    first = await call(world, number)
    await asyncio.gather(*(fake.fire_status_callback(first.sid, "no-answer")
                           for _ in range(3)))
    await fake.fire_status_callback(first.sid, "no-answer")
    await used_again(world, fake, number, request_id)  # a second call uses the request
    # A late repeat of the first call's callback must not free the second call's use.
    await fake.fire_status_callback(first.sid, "busy")
    rows = await decisions(world, number)
    assert len(await reversals(pool, [r["id"] for r in rows])) == 1
    assert (await consent_row(pool, request_id))["consumed_at"] is not None
    assert (await refused(world, number)).code == NO_LEGAL_BASIS


async def test_a_dialed_legs_callback_does_not_give_back_the_call(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    """Only the call's own StatusCallback reports on the contact; a <Number statusCallback>
    reports on a leg the TwiML dialed from an answered call."""
    number, request_id = await requested(world)
    target = mobile()
    await world.consent(target, "voice")
    sdk = world.sdk()
    document = (f'<Response><Dial><Number statusCallback="https://dialer.example/leg">'
                f"{target}</Number></Dial></Response>")
    created = await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                       twiml=document))
    (received,) = fake.creates()
    relay = received.value("Twiml")
    assert relay is not None
    assert "/webhooks/twilio/callback/" in relay
    leg_url = relay.split('statusCallback="', 1)[1].split('"', 1)[0]
    params = fake.call_params(created.sid, CallStatus="no-answer")
    await fake.request_url(leg_url, params)
    assert (await consent_row(pool, request_id))["consumed_at"] is not None


# --- N5: a first call that never connected is not a first call ------------------------------

async def test_unanswered_first_call_is_not_the_first_call(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, clock: Clock) -> None:
    number = mobile()
    consent_id = await world.consent(number, "voice")  # given 2026-10-01 12:00 (Amsterdam)
    created = await call(world, number)
    (row,) = await decisions(world, number)
    marked = await consent_row(pool, consent_id)
    assert (marked["first_used_at"], marked["first_used_by"]) == (clock.now, row["id"])
    await fake.fire_status_callback(created.sid, "no-answer")
    (reversal,) = await reversals(pool, [row["id"]])
    assert (reversal["first_use_consent_id"], reversal["request_id"]) == (consent_id, None)
    cleared = await consent_row(pool, consent_id)
    assert (cleared["first_used_at"], cleared["first_used_by"]) == (None, None)
    # Six months after the consent, with no first call made, it has lapsed for calls.
    clock.now = dt.datetime(2027, 4, 6, 10, 0, tzinfo=AMS)
    assert (await refused(world, number)).code == FIRST_CONTACT_LATE


async def test_answered_first_call_is_the_first_call(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, clock: Clock) -> None:
    number = mobile()
    consent_id = await world.consent(number, "voice")
    created = await call(world, number)
    await fake.fire_status_callback(created.sid, "completed", AnsweredBy="human")
    assert (await consent_row(pool, consent_id))["first_used_at"] == clock.now
    clock.now = dt.datetime(2027, 4, 6, 10, 0, tzinfo=AMS)
    assert (await call(world, number)).sid.startswith("CA")
    rows = await decisions(world, number)
    assert await reversals(pool, [r["id"] for r in rows]) == []


async def test_a_later_call_does_not_lose_its_first_call_to_an_older_reversal(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    """The marker is cleared only while the reversed decision still holds it."""
    number = mobile()
    consent_id = await world.consent(number, "voice")
    first = await call(world, number)
    await fake.fire_status_callback(first.sid, "busy")
    second = await call(world, number)
    rows = await decisions(world, number)
    assert (await consent_row(pool, consent_id))["first_used_by"] == rows[1]["id"]
    await fake.fire_status_callback(first.sid, "failed")  # a late repeat
    assert (await consent_row(pool, consent_id))["first_used_by"] == rows[1]["id"]
    await fake.fire_status_callback(second.sid, "completed")
    assert (await consent_row(pool, consent_id))["first_used_by"] == rows[1]["id"]


# --- the store: concurrency and idempotency ---------------------------------------------------

def _allow_request(request_id: int, number: str, at: dt.datetime) -> store.DecisionRecord:
    decision = Decision("allow", "ALLOWED", "N6", {"en": "-", "nl": "-"}, "CONTACT_REQUEST",
                        ({"type": "consent", "id": request_id},), consumes=request_id)
    return store.DecisionRecord(decision, at, "voice", subject=number)


async def _request_on_file(world: World) -> tuple[str, int, int]:
    number, request_id = await requested(world)
    pool = world.admin.app[POOL]
    decision_id, _ = await store.record_decision(pool, _allow_request(request_id, number,
                                                                      dt.datetime.now(dt.UTC)))
    return number, request_id, decision_id


async def _use(conn: asyncpg.Connection, request_id: int, number: str) -> int | None:
    """A contact decided on the request commits (its id), or finds it used (None)."""
    try:
        decision_id, _ = await store.record_decision(
            conn, _allow_request(request_id, number, dt.datetime.now(dt.UTC)))
    except store.RequestAlreadyUsed:
        return None
    return decision_id


async def _consumed_on_file(conn: asyncpg.Connection, world: World, number: str,
                            request_id: int) -> bool:
    """What the facts loader tells the engine about the request."""
    _, facts = await store.load_facts(conn, world.voice, number)
    (request,) = [c for c in facts.consents if c.id == request_id]
    return request.consumed_at is not None


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_request_is_used_again_only_after_the_reversal_commits(
        world: World, database_url: str, outcome: str) -> None:
    number, request_id, decision_id = await _request_on_file(world)
    holder = await db.connect(database_url)
    other = await db.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        reversal = await store.reverse_consumption(holder, decision_id, "not_reached",
                                                   "busy", dt.datetime.now(dt.UTC))
        assert reversal is not None
        # While the reversal is not committed, another contact sees the request used and
        # cannot use it.
        assert await _consumed_on_file(other, world, number, request_id)
        assert await _use(other, request_id, number) is None
        await (tx.commit() if outcome == "commit" else tx.rollback())
        assert await _consumed_on_file(other, world, number, request_id) == (
            outcome == "rollback")
        second = await _use(other, request_id, number)
        if outcome == "commit":
            assert second is not None
            assert second > decision_id
            assert await _use(other, request_id, number) is None  # once
        else:
            assert second is None
    finally:
        await holder.close()
        await other.close()


async def test_a_reversal_waits_for_a_contact_using_the_request(
        world: World, database_url: str) -> None:
    """A reversal after the request was given back and taken again by a contact still being
    committed frees nothing that contact holds."""
    number, request_id, decision_id = await _request_on_file(world)
    pool = world.admin.app[POOL]
    assert await store.reverse_consumption(pool, decision_id, "not_reached", "busy",
                                           dt.datetime.now(dt.UTC))
    holder = await db.connect(database_url)
    try:
        tx = holder.transaction()
        await tx.start()
        second = await _use(holder, request_id, number)  # uncommitted use
        assert second is not None
        late = asyncio.create_task(store.reverse_consumption(
            pool, decision_id, "not_reached", "busy", dt.datetime.now(dt.UTC)))
        await asyncio.sleep(0.2)
        await tx.commit()
        assert await asyncio.wait_for(late, 5) is None
        assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                                   request_id) is not None
    finally:
        await holder.close()


async def test_concurrent_reversals_of_one_decision_give_back_once(
        world: World, pool: asyncpg.Pool) -> None:
    _, request_id, decision_id = await _request_on_file(world)
    results = await asyncio.gather(*(store.reverse_consumption(
        pool, decision_id, "not_reached", "busy", dt.datetime.now(dt.UTC)) for _ in range(4)))
    assert [r for r in results if r is not None] == [
        store.Reversal(decision_id, request_id, None)]
    assert len(await reversals(pool, [decision_id])) == 1


async def test_a_decision_that_consumed_nothing_leaves_no_reversal(
        world: World, pool: asyncpg.Pool) -> None:
    number = mobile()
    decision = Decision("deny", "NO_LEGAL_BASIS", "N5", {"en": "-", "nl": "-"})
    decision_id, _ = await store.record_decision(pool, store.DecisionRecord(
        decision, dt.datetime.now(dt.UTC), "voice", subject=number))
    assert await store.reverse_consumption(pool, decision_id, "provider_refused",
                                           "upstream 400", dt.datetime.now(dt.UTC)) is None
    assert await reversals(pool, [decision_id]) == []


async def test_reversals_are_append_only_and_pruned_with_their_decisions(
        fresh_database: str) -> None:
    await db.migrate_url(fresh_database)
    conn = await db.connect(fresh_database)
    try:
        old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        await conn.execute("INSERT INTO organisations (id, name, sector) "
                           "VALUES ('o', 'O', 'commercial')")
        await conn.execute("INSERT INTO subjects (number) VALUES ('+31612345678')")
        request_id = await conn.fetchval(
            """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
                   provenance) VALUES ('+31612345678', 'o', 'automated_voice', '{energy}',
                   'request', $1, 'self_provided') RETURNING id""", old)
        decision_id, _ = await store.record_decision(
            conn, _allow_request(request_id, "+31612345678", old))
        assert await store.reverse_consumption(conn, decision_id, "not_reached", "busy", old)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM consumption_reversals")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE consumption_reversals SET why = 'not_sent'")
        counts = await store.prune(conn, dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
        assert (counts["decisions"], counts["consumption_reversals"]) == (1, 1)
    finally:
        await conn.close()
