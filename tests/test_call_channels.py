"""Calls end to end: a callable caller ID (N16) and automated voice as a channel of its own (N2),
through the admin, check and scrub APIs and the Twilio front (official SDK, fake upstream,
real PostgreSQL), and migration 012 keeping what is on file."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from twilio.base.exceptions import TwilioRestException

from proxy import db
from proxy.app import create_app
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from proxy.phone import subject_hash
from tests.conftest import UP_SID, UP_TOKEN, Clock, make_settings, mobile
from tests.fake_twilio import FakeTwilio
from tests.world import World, in_thread, make_world, write_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

A = "/admin/v1"
AMS = ZoneInfo("Europe/Amsterdam")
MONDAY_10 = dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS)
NOT_CALLABLE = DENIAL_CODES["CALLER_ID_NOT_CALLABLE"]
WRONG_CHANNEL = DENIAL_CODES["CONSENT_WRONG_CHANNEL"]


def sender_id() -> str:
    """A fresh alphanumeric sender ID (senders are unique across the test run)."""
    return "Acme" + uuid.uuid4().hex[:7]


def messaging_service() -> str:
    return "MG" + uuid.uuid4().hex


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    settings = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID,
                             TWILIO_AUTH_TOKEN=UP_TOKEN, TWILIO_API_BASE=fake.base_url,
                             PROXY_CONFIG=write_config(tmp_path))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return client


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def add_sender(world: World, sender: str, **extra: Any) -> None:
    resp = await world.admin.post(f"{A}/senders", json={
        "sender": sender, "organisation": world.org, "topic": "energy/electricity", **extra},
        headers=world.auth)
    assert resp.status == 201, await resp.text()


async def reply_footer(world: World) -> None:
    """N17: a sender ID cannot receive STOP, so the organisation's footer names a number."""
    resp = await world.admin.put(f"{A}/organisations/{world.org}", json={
        "name": "Energie BV", "sector": "commercial",
        "sms_footer": "Afmelden? Sms STOP naar +31201234567"}, headers=world.auth)
    assert resp.status == 200, await resp.text()


async def robot(world: World) -> str:
    """A second voice sender of the organisation that plays a recording (automated)."""
    sender = f"+3120{mobile()[-7:]}"
    await add_sender(world, sender, automated=True)
    return sender


async def check(world: World, **body: Any) -> dict[str, Any]:
    resp = await world.admin.post(f"{A}/check", json={"at": MONDAY_10.isoformat(), **body},
                                  headers=world.auth)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def call(world: World, to: str, from_: str, **kwargs: Any) -> Any:
    sdk = world.sdk()
    if not kwargs:
        kwargs = {"url": "https://dialer.example/t"}
    return await in_thread(lambda: sdk.calls.create(to=to, from_=from_, **kwargs))


async def refused(world: World, to: str, from_: str, **kwargs: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        await call(world, to, from_, **kwargs)
    return caught.value


async def decisions(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        "SELECT * FROM decisions WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
    return rows


# --- N16: a call shows a number that can be called back --------------------------------------

@pytest.mark.parametrize("kind", ["alphanumeric", "messaging_service"])
async def test_a_call_from_a_registered_non_number_is_refused(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, kind: str) -> None:
    caller = sender_id() if kind == "alphanumeric" else messaging_service()
    await add_sender(world, caller)
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    error = await refused(world, number, caller)
    assert (error.status, error.code) == NOT_CALLABLE
    assert fake.creates() == []
    (row,) = await decisions(world, number)
    assert (row["decision"], row["reason"], row["rule"]) == (
        "deny", "CALLER_ID_NOT_CALLABLE", "N16")
    assert row["consumed_consent_id"] is None  # nothing consumed
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None


async def test_a_call_from_an_unregistered_sender_id_is_named_not_callable(
        world: World, fake: FakeTwilio) -> None:
    error = await refused(world, mobile(), "Reclame")
    assert (error.status, error.code) == NOT_CALLABLE
    assert fake.creates() == []


async def test_an_sms_keeps_its_alphanumeric_sender(world: World, fake: FakeTwilio) -> None:
    caller = sender_id()
    await add_sender(world, caller)
    await reply_footer(world)
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=caller,
                                                          body="Hoi"))
    assert message.sid.startswith("SM")
    assert len(fake.creates("Messages")) == 1


async def test_a_dial_caller_id_that_cannot_be_called_back_refuses_the_call(
        world: World, fake: FakeTwilio) -> None:
    caller = sender_id()
    await add_sender(world, caller)
    to, target = mobile(), mobile()
    await world.consent(to, "voice")
    await world.consent(target, "voice")
    error = await refused(world, to, world.voice, twiml=(
        f'<Response><Dial callerId="{caller}">{target}</Dial></Response>'))
    assert (error.status, error.code) == NOT_CALLABLE
    assert fake.creates() == []
    (target_row,) = await decisions(world, target)
    assert (target_row["reason"], target_row["sender"]) == (
        "CALLER_ID_NOT_CALLABLE", caller)


async def test_the_error_code_is_documented(world: World) -> None:
    doc = await (await world.admin.get(f"/errors/{NOT_CALLABLE[1]}")).json()
    assert (doc["reason"], doc["status"], doc["rule"]) == ("CALLER_ID_NOT_CALLABLE", 403, "N16")


async def test_check_api_names_a_caller_id_that_cannot_be_called_back(world: World) -> None:
    caller = sender_id()
    await add_sender(world, caller)
    await reply_footer(world)
    number = mobile()
    await world.consent(number, "voice")
    await world.consent(number, "sms")
    result = await check(world, channel="voice", to=number, **{"from": caller})
    assert (result["decision"], result["reason"]) == ("deny", "CALLER_ID_NOT_CALLABLE")
    result = await check(world, channel="sms", to=number, **{"from": caller})
    assert (result["decision"], result["basis"]) == ("allow", "CONSENT")


# --- N2: automated voice ----------------------------------------------------------------------

async def test_admin_api_takes_the_automated_voice_channel(world: World,
                                                           pool: asyncpg.Pool) -> None:
    number = mobile()
    consent_id = await world.consent(number, "automated_voice")
    assert await pool.fetchval("SELECT channel FROM consents WHERE id = $1",
                               consent_id) == "automated_voice"
    await world.objection(number, organisation=world.org, channel="automated_voice")
    report = await (await world.admin.get(f"{A}/subjects/{number}", headers=world.auth)).json()
    assert [o["channel"] for o in report["objections"]] == ["automated_voice"]
    for path, body in ((f"{A}/consents", {"channel": "robocall"}),
                       (f"{A}/objections", {"channel": "robocall", "via": "api"})):
        resp = await world.admin.post(path, json={
            "subject": number, "organisation": world.org, "topics": ["energy"],
            "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
            "provenance": "self_provided", **body} if "consents" in path else
            {"subject": number, **body}, headers=world.auth)
        assert resp.status == 422
        error = await resp.json()
        assert error["field"] == "channel"
        assert "automated_voice" in error["error"]


async def test_an_automated_call_needs_an_automated_voice_consent(
        world: World, fake: FakeTwilio) -> None:
    sender = await robot(world)
    number = mobile()
    await world.consent(number, "voice")  # to be called by a person
    error = await refused(world, number, sender)
    assert (error.status, error.code) == WRONG_CHANNEL
    assert fake.creates() == []
    # The same consent still covers a live call.
    assert (await call(world, number, world.voice)).sid.startswith("CA")
    await world.consent(number, "automated_voice")
    assert (await call(world, number, sender)).sid.startswith("CA")
    rows = await decisions(world, number)
    assert [(r["reason"], r["basis"]) for r in rows] == [
        ("CONSENT_WRONG_CHANNEL", None), ("ALLOWED", "CONSENT"), ("ALLOWED", "CONSENT")]


async def test_check_api_asks_about_automated_voice(world: World) -> None:
    sender = await robot(world)
    number = mobile()
    await world.consent(number, "voice")
    by_flag = await check(world, channel="voice", to=number, **{"from": sender})
    asked = await check(world, channel="automated_voice", to=number, **{"from": world.voice})
    live = await check(world, channel="voice", to=number, **{"from": world.voice})
    assert by_flag["reason"] == asked["reason"] == "CONSENT_WRONG_CHANNEL"
    assert "automated calls" in asked["explanation"]["en"]
    assert live["reason"] == "ALLOWED"
    await world.consent(number, "automated_voice")
    asked = await check(world, channel="automated_voice", to=number, **{"from": world.voice})
    assert (asked["decision"], asked["basis"]) == ("allow", "CONSENT")


async def test_objection_scopes_for_calls(world: World) -> None:
    sender = await robot(world)
    to_calls, to_robots = mobile(), mobile()
    for number in (to_calls, to_robots):
        await world.consent(number, "voice")
        await world.consent(number, "automated_voice")
    await world.objection(to_calls, organisation=world.org, channel="voice")
    await world.objection(to_robots, organisation=world.org, channel="automated_voice")
    # An objection to calls covers robocalls too; one to robocalls only those.
    assert (await check(world, channel="voice", to=to_calls, **{"from": sender}))[
        "reason"] == "OBJECTION_ON_FILE"
    assert (await check(world, channel="voice", to=to_robots, **{"from": sender}))[
        "reason"] == "OBJECTION_ON_FILE"
    assert (await check(world, channel="voice", to=to_robots, **{"from": world.voice}))[
        "reason"] == "ALLOWED"


async def test_scrub_takes_automated_voice(world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")
    resp = await world.admin.post(
        f"{A}/scrub", params={"channel": "automated_voice", "from": world.voice,
                              "at": MONDAY_10.isoformat()},
        data=f"{number}\n".encode(), headers={**world.auth, "Content-Type": "text/csv"})
    assert resp.status == 200
    assert (await resp.text()).splitlines()[1] == f"{number},deny,CONSENT_WRONG_CHANNEL,"


async def test_check_refuses_an_unknown_channel(world: World) -> None:
    resp = await world.admin.post(f"{A}/check", json={
        "channel": "robocall", "to": mobile(), "from": world.voice}, headers=world.auth)
    assert resp.status == 422
    assert (await resp.json())["field"] == "channel"


# --- migration 012 keeps what is on file ------------------------------------------------------

async def test_migration_012_keeps_every_row_and_finds_earlier_first_calls(
        fresh_database: str) -> None:
    migrations = db.load_migrations()
    before = [m for m in migrations if m.version < 12]
    conn = await db.connect(fresh_database)
    try:
        await db.migrate(conn, before)
        given = dt.datetime(2026, 10, 1, 10, tzinfo=dt.UTC)
        called = dt.datetime(2026, 11, 2, 10, tzinfo=dt.UTC)
        await conn.execute("INSERT INTO organisations (id, name, sector) "
                           "VALUES ('o', 'O', 'commercial')")
        await conn.execute("INSERT INTO subjects (number) VALUES ('+31612345678')")
        consent_id = await conn.fetchval(
            """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
                   provenance, verified_at, first_used_at) VALUES ('+31612345678', 'o',
                   'voice', '{energy}', 'opt_in', $1, 'self_provided', $1, $2) RETURNING id""",
            given, called)
        await conn.execute(
            """INSERT INTO objections (subject_hash, organisation_id, channel, received_at, via)
               VALUES ('h', 'o', 'voice', $1, 'api')""", given)
        decision_id = await conn.fetchval(
            """INSERT INTO decisions (decided_at, channel, decision, reason, basis, evidence)
               VALUES ($1, 'voice', 'allow', 'ALLOWED', 'CONSENT', $2) RETURNING id""",
            called, [{"type": "consent", "id": consent_id}])
        chain = await conn.fetchval("SELECT row_hash FROM decisions WHERE id = $1",
                                    decision_id)
        # Up to 012 only: later migrations are no part of this test.
        assert await db.migrate(conn, [m for m in migrations if m.version <= 12]) == [12]
        consent = await conn.fetchrow("SELECT * FROM consents WHERE id = $1", consent_id)
        assert (consent["channel"], consent["first_used_at"], consent["first_used_by"]) == (
            "voice", called, decision_id)
        assert await conn.fetchval("SELECT channel FROM objections") == "voice"
        assert await conn.fetchval("SELECT row_hash FROM decisions WHERE id = $1",
                                   decision_id) == chain
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE consents SET channel = 'robocall'")
        await conn.execute("UPDATE consents SET channel = 'automated_voice'")
        await conn.execute("UPDATE objections SET channel = 'automated_voice'")
    finally:
        await conn.close()
