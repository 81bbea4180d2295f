"""The Twilio front end to end: the official SDK as the dialer, real sockets, real PostgreSQL,
and a fake Twilio upstream that records what reached it."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client as TwilioClient

from proxy.app import create_app
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL, SETTINGS
from proxy.phone import subject_hash
from tests.conftest import UP_SID, UP_TOKEN, Clock, make_settings, mobile, uid
from tests.fake_twilio import FakeTwilio
from tests.world import World, in_thread, make_world, write_config

AMS = ZoneInfo("Europe/Amsterdam")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

async def _proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                 tmp_path: Path, upstream_timeout: float) -> TestClient[Any, Any]:
    settings = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID,
                             TWILIO_AUTH_TOKEN=UP_TOKEN, TWILIO_API_BASE=fake.base_url,
                             PROXY_CONFIG=write_config(tmp_path, upstream_timeout))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return client


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    # The configured default timeout: a slow machine must not turn an answer into a 504.
    return await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def decisions_for(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.upstream_sid, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows


# --- SMS ------------------------------------------------------------------------------------

async def test_allowed_sms_gets_the_footer_and_upstream_credentials(
    world: World, fake: FakeTwilio
) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(
        to="0" + number[3:], from_=world.sms, body="Uw nieuwe tarief: 10% korting!",
        status_callback="https://dialer.example/cb", media_url=["https://a/1.png",
                                                                "https://a/2.png"]))
    assert message.sid.startswith("SM")
    assert message.account_sid == world.sid  # the dialer sees its own account
    assert message.status == "queued"
    (received,) = fake.creates("Messages")
    assert received.username == UP_SID
    assert received.path == f"/2010-04-01/Accounts/{UP_SID}/Messages.json"
    assert received.values("MediaUrl") == ["https://a/1.png", "https://a/2.png"]
    assert sorted(k for k, _ in received.form) == ["Body", "From", "MediaUrl", "MediaUrl",
                                                   "StatusCallback", "To"]
    assert received.value("To") == number  # the E.164 number decided on, not the dialer's form
    assert received.value("Body") == (
        f"Uw nieuwe tarief: 10% korting!\nAfmelden? Sms STOP naar {world.sms}")
    (row,) = await decisions_for(world, number)
    assert row["decision"] == "allow"
    assert row["basis"] == "CONSENT"
    assert row["obligations"] == ["OPT_OUT_APPENDED"]
    assert row["details"]["footer_appended"] is True
    assert row["details"]["segments_before"] == 1
    assert row["details"]["segments_after"] == 1
    assert row["upstream_status"] == 201
    assert row["upstream_sid"] == message.sid
    assert received.headers["X-Consent-Decision-Id"] == str(row["id"])
    assert row["client_id"] == world.sid
    assert row["front"] == "twilio"
    assert row["subject_masked"].endswith(number[-4:])


async def test_form_is_forwarded_field_for_field_in_order(world: World, fake: FakeTwilio
                                                         ) -> None:
    number = mobile()
    await world.consent(number, "sms")
    pairs = [("MediaUrl", "https://a/2.png"), ("To", number), ("StatusCallback", "https://cb"),
             ("MediaUrl", "https://a/1.png"), ("From", world.sms), ("Body", "Hallo & dag +")]
    status, _ = await _post(world, f"/2010-04-01/Accounts/{world.sid}/Messages.json", pairs)
    assert status == 201
    (received,) = fake.creates()
    footer = f"\nAfmelden? Sms STOP naar {world.sms}"
    # The StatusCallback leads through the proxy's callback relay (tests/test_relays.py).
    relayed = received.value("StatusCallback") or ""
    assert relayed.startswith(f"{world.admin.app[SETTINGS].public_url}/webhooks/twilio/callback/")
    assert received.form == [(k, v + footer if k == "Body" else relayed
                              if k == "StatusCallback" else v) for k, v in pairs]


@pytest.mark.parametrize("line", [
    "Afmelden? sms stop naar {e164}",  # the organisation's footer, whitespace and case aside
    "Stuur UIT naar {national}",  # STOP/UIT and the sender's number, in its national form
])
async def test_body_with_its_own_opt_out_is_left_alone(world: World, fake: FakeTwilio,
                                                       line: str) -> None:
    number = mobile()
    await world.consent(number, "sms")
    body = "Actie! " + line.format(e164=world.sms, national="0" + world.sms[3:])
    sdk = world.sdk()
    await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body=body))
    assert fake.creates("Messages")[0].value("Body") == body
    (row,) = await decisions_for(world, number)
    assert row["obligations"] == []
    assert row["details"]["footer_appended"] is False


async def test_footer_that_does_not_fit_is_21617(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                    body="x" * 1590))
    assert (caught.value.status, caught.value.code) == (400, 21617)
    assert fake.creates() == []
    (row,) = await decisions_for(world, number)
    assert row["upstream_status"] is None
    assert "1600" in row["error"]


async def test_objection_blocks_sms_with_21610(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    await world.objection(number, organisation=world.org, channel="sms")
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="Hoi"))
    assert caught.value.status == 400
    assert caught.value.code == 21610
    assert fake.creates() == []
    (row,) = await decisions_for(world, number)
    assert (row["decision"], row["reason"]) == ("deny", "OBJECTION_ON_FILE")


async def test_segments_switch_to_ucs2(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                body="Korting 🎉 " + "a" * 50))
    (row,) = await decisions_for(world, number)
    assert row["details"]["encoding"] == "UCS-2"
    assert row["details"]["segments_before"] == 1
    assert row["details"]["segments_after"] == 2


# --- calls ----------------------------------------------------------------------------------

async def test_denied_call_reason_code(world: World, fake: FakeTwilio) -> None:
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.calls.create(to=mobile(), from_=world.voice,
                                                 url="https://dialer.example/twiml"))
    assert caught.value.status == 403
    assert caught.value.code == DENIAL_CODES["NO_LEGAL_BASIS"][1]
    assert fake.creates() == []


async def test_denied_call_body_names_reason_and_retry(world: World, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=AMS)  # Sunday
    auth = aiohttp.BasicAuth(world.sid, world.token)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{world.base}/2010-04-01/Accounts/{world.sid}/Calls.json", auth=auth,
            data={"To": number, "From": world.voice, "Url": "https://x/t"})
        body = await resp.json()
    assert resp.status == 403
    assert body["code"] == DENIAL_CODES["PROHIBITED_DAY"][1]
    assert body["reason"] == "PROHIBITED_DAY"
    assert body["retry_after"] == "2026-11-30T09:00:00+01:00"
    assert body["status"] == 403
    assert body["more_info"].endswith(f"/errors/{body['code']}")
    assert isinstance(body["decision_id"], int)
    async with aiohttp.ClientSession() as session:
        doc = await (await session.get(f"{world.base}/errors/{body['code']}")).json()
    assert doc["reason"] == "PROHIBITED_DAY"


async def test_allowed_call_with_async_sdk_then_fetch(world: World, fake: FakeTwilio,
                                                     pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "voice")
    sdk = world.async_sdk()
    try:
        call = await sdk.calls.create_async(
            to=number, from_=world.voice, url="https://dialer.example/twiml",
            status_callback_event=["initiated", "answered"])
        assert call.sid.startswith("CA")
        fetched = await sdk.calls(call.sid).fetch_async()
        assert fetched.sid == call.sid
        assert fetched.account_sid == world.sid
    finally:
        await sdk.http_client.close()
    (create,) = fake.creates("Calls")
    assert create.values("StatusCallbackEvent") == ["initiated", "answered"]
    (row,) = await decisions_for(world, number)
    assert (row["decision"], row["basis"], row["upstream_sid"]) == ("allow", "CONSENT",
                                                                    call.sid)
    consent = await pool.fetchrow("SELECT first_used_at FROM consents WHERE subject = $1",
                                  number)
    assert consent["first_used_at"] is not None  # N5: the first call is on record


async def test_answer_does_not_wait_for_its_outcome_but_a_fetch_by_sid_does(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "sms")
    blocker = await pool.acquire()
    hold = blocker.transaction()

    async def hold_outcomes(_request: web.Request) -> None:
        # The decision is committed by now; from here on no outcome row can be written.
        await hold.start()
        await blocker.execute("LOCK TABLE decision_outcomes IN SHARE MODE")

    fake.on_create = hold_outcomes
    sdk = world.sdk()
    try:
        message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                              body="Hallo"))
        fake.on_create = None
        (decided,) = await pool.fetch("SELECT id FROM decisions WHERE subject_hash = $1",
                                      subject_hash(number))
        assert await pool.fetchval("SELECT count(*) FROM decision_outcomes WHERE "
                                   "decision_id = $1", decided["id"]) == 0
        fetch = asyncio.ensure_future(in_thread(lambda: sdk.messages(message.sid).fetch()))
        await asyncio.sleep(0.3)
        assert not fetch.done()  # it waits for the outcome instead of answering 404
    finally:
        if blocker.is_in_transaction():
            await hold.rollback()
        await pool.release(blocker)
    assert (await fetch).sid == message.sid
    (row,) = await decisions_for(world, number)
    assert row["upstream_sid"] == message.sid


async def test_contact_request_is_consumed_once(world: World, fake: FakeTwilio,
                                               pool: asyncpg.Pool) -> None:
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    sdk = world.sdk()
    await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice, url="https://x/t"))
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                 url="https://x/t"))
    assert caught.value.code == DENIAL_CODES["NO_LEGAL_BASIS"][1]
    rows = await decisions_for(world, number)
    assert [r["decision"] for r in rows] == ["allow", "deny"]
    assert rows[0]["consumed_consent_id"] == request_id
    consumed = await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                                   request_id)
    assert consumed is not None


async def test_pass_through_is_limited_to_own_resources(
    world: World, proxy: TestClient[Any, Any], auth: dict[str, str], fake: FakeTwilio
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    sdk = world.sdk()
    call = await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                    url="https://x/t"))
    updated = await in_thread(lambda: sdk.calls(call.sid).update(status="completed"))
    assert updated.status == "completed"
    listed = await in_thread(lambda: sdk.calls.list(limit=20))
    assert [c.sid for c in listed] == [call.sid]
    other = await make_world(proxy, auth)
    other_number = mobile()
    await other.consent(other_number, "voice")
    other_sdk = other.sdk()
    await in_thread(lambda: other_sdk.calls.create(to=other_number, from_=other.voice,
                                                   url="https://x/t"))
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: other_sdk.calls(call.sid).fetch())
    assert caught.value.status == 404
    assert call.sid not in [c.sid for c in await in_thread(lambda: other_sdk.calls.list())]
    assert len(fake.calls) == 2
    with pytest.raises(TwilioException, match="930403"):
        await in_thread(lambda: sdk.api.v2010.account.incoming_phone_numbers.list())


# --- auth and Twilio's validation -----------------------------------------------------------

async def _post(world: World, path: str, data: Any, *, user: str | None = None,
                password: str | None = None, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, Any]]:
    auth = aiohttp.BasicAuth(user or world.sid, password or world.token)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{world.base}{path}", auth=auth, data=data,
                                  headers=headers or {})
        return resp.status, await resp.json()


async def test_bad_credentials_and_foreign_account(world: World, fake: FakeTwilio) -> None:
    path = f"/2010-04-01/Accounts/{world.sid}/Messages.json"
    data = {"To": mobile(), "From": world.sms, "Body": "x"}
    status, body = await _post(world, path, data, password="wrong")
    assert (status, body["code"]) == (401, 20003)
    status, body = await _post(world, path, data, user="AC" + "0" * 32)
    assert (status, body["code"]) == (401, 20003)
    status, body = await _post(world, f"/2010-04-01/Accounts/{UP_SID}/Messages.json", data)
    assert (status, body["code"]) == (404, 20404)
    sdk = TwilioClient(world.sid, "not-the-token")
    sdk.api.base_url = world.base
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=mobile(), from_=world.sms, body="x"))
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert fake.received == []


@pytest.mark.parametrize(
    ("kind", "drop", "code"),
    [("Messages", "To", 21604), ("Messages", "From", 21603), ("Messages", "Body", 21619),
     ("Calls", "To", 21201), ("Calls", "From", 21213), ("Calls", "Url", 21205)],
)
async def test_twilio_validation(world: World, fake: FakeTwilio, pool: asyncpg.Pool,
                                 kind: str, drop: str, code: int) -> None:
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    data = {"To": mobile(), "From": world.sms if kind == "Messages" else world.voice}
    data["Body" if kind == "Messages" else "Url"] = "https://x/t"
    del data[drop]
    status, body = await _post(world, f"/2010-04-01/Accounts/{world.sid}/{kind}.json", data)
    assert (status, body["code"]) == (400, code)
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake.received == []


async def test_bad_bodies_are_4xx_with_no_record(world: World, pool: asyncpg.Pool) -> None:
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    path = f"/2010-04-01/Accounts/{world.sid}/Messages.json"
    for data, headers in [
        (b"To=%FF%FE&From=x&Body=y", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b'{"To": "x"}', {"Content-Type": "application/json"}),
        ("&".join(f"f{i}=1" for i in range(500)).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}),
    ]:
        status, body = await _post(world, path, data, headers=headers)
        assert status == 400, body
        assert body["code"] == 20001
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before


async def test_unknown_or_foreign_sender_is_denied(world: World, proxy: TestClient[Any, Any],
                                                   auth: dict[str, str]) -> None:
    other = await make_world(proxy, auth)
    for sender in ("+31209999997", other.sms):
        status, body = await _post(world, f"/2010-04-01/Accounts/{world.sid}/Messages.json",
                                   {"To": mobile(), "From": sender, "Body": "x"})
        assert (status, body["reason"]) == (403, "UNKNOWN_SENDER")
        assert body["code"] == DENIAL_CODES["UNKNOWN_SENDER"][1]


# --- idempotency ----------------------------------------------------------------------------

async def test_repeated_idempotency_token_is_not_forwarded_twice(
    world: World, fake: FakeTwilio
) -> None:
    number = mobile()
    await world.consent(number, "sms")
    path = f"/2010-04-01/Accounts/{world.sid}/Messages.json"
    data = {"To": number, "From": world.sms, "Body": "Eenmalig"}
    token = {"I-Twilio-Idempotency-Token": uid("tok")}
    first = await _post(world, path, data, headers=token)
    second = await _post(world, path, data, headers=token)
    assert first[0] == second[0] == 201
    assert first[1]["sid"] == second[1]["sid"]
    assert len(fake.creates()) == 1
    # Upstream, the token is the client's own: clients may share the upstream account.
    assert fake.creates()[0].headers["I-Twilio-Idempotency-Token"] == hashlib.sha256(
        f"{world.sid}:{token['I-Twilio-Idempotency-Token']}".encode()).hexdigest()
    assert len(await decisions_for(world, number)) == 1
    status, body = await _post(world, path, {**data, "Body": "Anders"}, headers=token)
    assert (status, body["code"]) == (422, 930422)
    denied = {"To": mobile(), "From": world.sms, "Body": "x"}
    deny_token = {"I-Twilio-Idempotency-Token": uid("tok")}
    one = await _post(world, path, denied, headers=deny_token)
    two = await _post(world, path, denied, headers=deny_token)
    assert one == two
    assert one[0] == 403


async def test_idempotency_tokens_are_per_client(world: World, proxy: TestClient[Any, Any],
                                                auth: dict[str, str], fake: FakeTwilio) -> None:
    other = await make_world(proxy, auth)
    token = {"I-Twilio-Idempotency-Token": uid("shared")}
    for w in (world, other):
        number = mobile()
        await w.consent(number, "sms")
        status, _ = await _post(w, f"/2010-04-01/Accounts/{w.sid}/Messages.json",
                                {"To": number, "From": w.sms, "Body": "x"}, headers=token)
        assert status == 201
    assert len(fake.creates()) == 2


# --- upstream faults ------------------------------------------------------------------------

async def test_upstream_500_is_passed_through_and_recorded(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    fake.fail_with(500, times=1)
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="x"))
    assert caught.value.status == 500
    assert caught.value.code == 20500
    assert len(fake.creates()) == 1  # never retried
    (row,) = await decisions_for(world, number)
    assert (row["upstream_status"], row["error"]) == (500, "upstream 500")


async def test_upstream_429_is_passed_through(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    fake.fail_with(429, 20429)
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="x"))
    assert (caught.value.status, caught.value.code) == (429, 20429)


async def test_upstream_timeout_is_504_and_not_retried(
    aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio, tmp_path: Path,
    auth: dict[str, str]
) -> None:
    proxy = await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 0.5)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "voice")
    fake.hang(5)  # far beyond upstream.timeout_seconds = 0.5
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                 url="https://x/t"))
    assert (caught.value.status, caught.value.code) == (504, 930504)
    assert len(fake.creates()) == 1
    (row,) = await decisions_for(world, number)
    assert row["error"] == "upstream timeout"


async def test_upstream_refused_is_502(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    await fake.refuse()
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="x"))
    assert (caught.value.status, caught.value.code) == (502, 930502)
    (row,) = await decisions_for(world, number)
    assert (row["decision"], row["error"]) == ("allow", "upstream unreachable")
    await fake.resume()


async def test_consent_store_down_is_503_and_nothing_forwarded(
    aiohttp_client: Any, fake: FakeTwilio, clock: Clock, database_url: str,
    auth: dict[str, str],
) -> None:
    settings = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID,
                             TWILIO_AUTH_TOKEN=UP_TOKEN, TWILIO_API_BASE=fake.base_url)
    proxy = await aiohttp_client(create_app(settings, clock=clock))
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="x"))
    # The consent store goes away: every connection, pooled or held by a batcher, drops.
    proxy.app[POOL].terminate()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="y"))
    assert (caught.value.status, caught.value.code) == (503, 930503)
    assert len(fake.creates()) == 1


# --- sandbox and metrics --------------------------------------------------------------------

async def test_sandbox_answers_when_no_twilio_account(
    aiohttp_client: Any, database_url: str, clock: Clock, auth: dict[str, str]
) -> None:
    settings = make_settings(database_url)
    assert settings.sandbox
    proxy = await aiohttp_client(create_app(settings, clock=clock))
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          body="Proef"))
    assert message.sid.startswith("SM")
    assert message.status == "queued"
    assert message.num_segments == "1"
    assert message.body.startswith("Proef\nAfmelden?")
    fetched = await in_thread(lambda: sdk.messages(message.sid).fetch())
    assert fetched.sid == message.sid
    (row,) = await decisions_for(world, number)
    assert row["upstream_sid"] == message.sid


async def test_metrics(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="x"))
    with pytest.raises(TwilioRestException):
        await in_thread(lambda: sdk.messages.create(to=mobile(), from_=world.sms, body="x"))
    async with aiohttp.ClientSession() as session:
        text = await (await session.get(f"{world.base}/metrics")).text()
    assert ('consent_proxy_decisions_total{channel="sms",decision="allow",front="twilio",'
            'reason="ALLOWED"} 1.0') in text
    assert 'reason="NO_LEGAL_BASIS"} 1.0' in text
    assert 'consent_proxy_upstream_responses_total{front="twilio",status="201"} 1.0' in text
    assert "consent_proxy_request_seconds_bucket" in text
    assert 'consent_proxy_upstream_seconds_count{front="twilio"} 1.0' in text
    assert "consent_proxy_db_pool_in_use" in text
    # Two lookups; two decisions and the allowed one's outcome, committed by the time the
    # second answer came (each request waits for its decision's commit).
    assert 'consent_proxy_batch_items_sum{batcher="group-fetch"} 2.0' in text
    assert 'consent_proxy_batch_items_sum{batcher="group-commit"} 3.0' in text
    assert 'consent_proxy_batch_items_count{batcher="group-commit"}' in text


# --- concurrency ----------------------------------------------------------------------------

async def test_200_concurrent_creates(world: World, fake: FakeTwilio,
                                      pool: asyncpg.Pool) -> None:
    allowed = [mobile() for _ in range(120)]
    denied = [mobile() for _ in range(80)]
    for number in allowed:
        await world.consent(number, "sms")
    forwarded_before_commit: list[str] = []

    async def check_committed(request: web.Request) -> None:
        decision_id = int(request.headers["X-Consent-Decision-Id"])
        exists = await pool.fetchval(
            "SELECT decision FROM decisions WHERE id = $1", decision_id)
        if exists != "allow":
            forwarded_before_commit.append(request.headers["X-Consent-Decision-Id"])

    fake.on_create = check_committed
    auth = aiohttp.BasicAuth(world.sid, world.token)
    path = f"{world.base}/2010-04-01/Accounts/{world.sid}/Messages.json"
    numbers = allowed + denied
    random.shuffle(numbers)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:

        async def send(number: str) -> tuple[str, int, dict[str, Any]]:
            resp = await session.post(path, auth=auth, data={
                "To": number, "From": world.sms, "Body": "Aanbieding"})
            return number, resp.status, await resp.json()

        results = await asyncio.gather(*(send(n) for n in numbers))
    by_status = {201: 0, 403: 0}
    for _number, status, _body in results:
        by_status[status] += 1
    assert by_status == {201: 120, 403: 80}
    await world.committed()
    rows = await pool.fetch(
        """SELECT d.decision, o.upstream_sid FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id WHERE d.client_id = $1""",
        world.sid)
    assert len(rows) == 200
    assert sum(r["decision"] == "allow" for r in rows) == 120
    assert all(r["upstream_sid"] for r in rows if r["decision"] == "allow")
    assert len(fake.creates()) == 120
    assert forwarded_before_commit == []
    sids = {body["sid"] for _n, status, body in results if status == 201}
    assert sids == {r["upstream_sid"] for r in rows if r["decision"] == "allow"}


@pytest.mark.parametrize("field", ["To", "From", "Body"])
async def test_repeated_decisive_fields_are_refused(world: World, fake: FakeTwilio,
                                                    pool: asyncpg.Pool, field: str) -> None:
    """A second To would be checked once and could reach someone else: refuse it."""
    number = mobile()
    await world.consent(number, "sms")
    pairs = [("To", number), ("From", world.sms), ("Body", "Hoi")]
    pairs.append((field, {"To": mobile(), "From": world.sms, "Body": "Nog eens"}[field]))
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    status, body = await _post(world, f"/2010-04-01/Accounts/{world.sid}/Messages.json", pairs)
    assert (status, body["code"]) == (400, 20001)
    assert field in body["message"]
    assert fake.received == []
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    media = [("To", number), ("From", world.sms), ("Body", "Foto's"),
             ("MediaUrl", "https://a/1.png"), ("MediaUrl", "https://a/2.png")]
    status, _ = await _post(world, f"/2010-04-01/Accounts/{world.sid}/Messages.json", media)
    assert status == 201
