"""The opt-out loop end to end: webhooks signed exactly as Twilio signs them, then the official
SDK through the front sees the objection at once."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from proxy import credentials
from proxy.app import create_app
from proxy.gate.codes import DENIAL_CODES
from proxy.phone import mask, subject_hash
from tests.conftest import PROXY_SECRET, UP_SID, UP_TOKEN, Clock, make_settings, mobile, uid
from tests.fake_twilio import FakeTwilio
from tests.world import World, in_thread, landline, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PUBLIC = "https://gate.example.nl"  # what Twilio calls; the proxy sits behind a reverse proxy
SMS = "/webhooks/twilio/sms"
VOICE = "/webhooks/twilio/voice/objection"
GATHER = VOICE + "/gather"


def config(tmp_path: Path, scope: str = "organisation") -> str:
    path = tmp_path / "rules.toml"
    path.write_text(f'[optout]\nscope = "{scope}"\n\n[webhooks]\nrelay_timeout_seconds = 1\n')
    return str(path)


async def start_proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                      tmp_path: Path, scope: str = "organisation") -> TestClient[Any, Any]:
    settings = make_settings(
        database_url, TWILIO_ACCOUNT_SID=UP_SID, TWILIO_AUTH_TOKEN=UP_TOKEN,
        TWILIO_API_BASE=fake.base_url, PUBLIC_URL=PUBLIC,
        PROXY_CONFIG=config(tmp_path, scope))
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return client


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


def sms_params(world: World, person: str, body: str, sid: str | None = None
               ) -> list[tuple[str, str]]:
    """What Twilio posts for an inbound SMS (field names as Twilio sends them)."""
    return [("ToCountry", "NL"), ("SmsMessageSid", sid or "SM" + uid("")[1:11].ljust(32, "0")),
            ("NumMedia", "0"), ("From", person), ("To", world.sms), ("Body", body),
            ("MessageSid", sid or "SM" + uid("")[1:11].ljust(32, "0")),
            ("AccountSid", UP_SID), ("NumSegments", "1"), ("FromCountry", "NL"),
            ("ApiVersion", "2010-04-01")]


def new_sid(prefix: str = "SM") -> str:
    return prefix + uid("")[1:].replace("-", "").ljust(32, "0")[:32]


async def twilio_post(proxy: TestClient[Any, Any], path: str, params: list[tuple[str, str]],
                      *, token: str = UP_TOKEN, signature: str | None = None,
                      query: str = "") -> tuple[int, str]:
    url = PUBLIC + path + (f"?{query}" if query else "")
    signed = RequestValidator(token).compute_signature(url, MultiDict(params))
    headers = {"X-Twilio-Signature": signature if signature is not None else signed}
    resp = await proxy.post(path + (f"?{query}" if query else ""), data=params, headers=headers)
    return resp.status, await resp.text()


async def inbound(proxy: TestClient[Any, Any], world: World, person: str, body: str,
                  sid: str | None = None) -> tuple[int, str]:
    params = sms_params(world, person, body)
    message_sid = sid or new_sid()
    params = [(k, message_sid if k in ("MessageSid", "SmsMessageSid") else v)
              for k, v in params]
    return await twilio_post(proxy, SMS, params)


async def objections(pool: asyncpg.Pool, number: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM objections WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
    return rows


async def send_sms(world: World, number: str) -> Any:
    sdk = world.sdk()
    return await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="Hoi"))


async def call(world: World, number: str) -> Any:
    sdk = world.sdk()
    return await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                    url="https://dialer.example/twiml"))


# --- STOP -----------------------------------------------------------------------------------

async def test_stop_blocks_sms_and_calls_at_once(world: World, proxy: TestClient[Any, Any],
                                                 pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "sms")
    await world.consent(number, "voice")
    await send_sms(world, number)
    status, reply = await inbound(proxy, world, "0" + number[3:], "Stop aub!")
    assert status == 200
    assert "<Message>U bent afgemeld: Energie BV" in reply
    (row,) = await objections(pool, number)
    assert (row["via"], row["organisation_id"], row["channel"]) == ("sms", world.org, None)
    assert row["source_ref"].startswith("SM")
    assert len(row["body_hash"]) == 64
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(world, number)
    assert (caught.value.status, caught.value.code) == (400, 21610)
    with pytest.raises(TwilioRestException) as caught:  # scope "organisation": no call either
        await call(world, number)
    assert (caught.value.status, caught.value.code) == (403, DENIAL_CODES["OBJECTION_ON_FILE"][1])


async def test_channel_scope_blocks_sms_only(aiohttp_client: Any, database_url: str,
                                             clock: Clock, fake: FakeTwilio, tmp_path: Path,
                                             auth: dict[str, str]) -> None:
    proxy = await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path, "channel")
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    await world.consent(number, "voice")
    status, reply = await inbound(proxy, world, number, "STOP")
    assert status == 200
    assert "geen sms meer" in reply
    with pytest.raises(TwilioRestException):
        await send_sms(world, number)
    assert (await call(world, number)).sid.startswith("CA")


@pytest.mark.parametrize("body", ["ik wil de bezorging stoppen?", "Wanneer stopt mijn contract",
                                  "Top, bedankt!"])
async def test_ordinary_messages_do_not_opt_out(world: World, proxy: TestClient[Any, Any],
                                                pool: asyncpg.Pool, body: str) -> None:
    number = mobile()
    status, reply = await inbound(proxy, world, number, body)
    assert status == 200
    assert reply == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert await objections(pool, number) == []
    row = await pool.fetchrow("SELECT intent FROM inbound_messages WHERE subject_hash = $1",
                              subject_hash(number))
    assert row["intent"] == "other"


async def test_duplicate_message_sid_stores_nothing_new(world: World, proxy: TestClient[Any, Any],
                                                       pool: asyncpg.Pool) -> None:
    number = mobile()
    sid = new_sid()
    first = await inbound(proxy, world, number, "STOP", sid)
    second = await inbound(proxy, world, number, "STOP", sid)
    assert first == second
    assert len(await objections(pool, number)) == 1
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages WHERE message_id = $1",
                               sid) == 1


# --- START and HELP -------------------------------------------------------------------------

async def test_start_lifts_only_sms_keyword_objections_of_this_organisation(
    world: World, proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    number = mobile()
    await world.consent(number, "sms")
    other = await make_world(proxy, auth)
    await other.consent(number, "sms")
    await inbound(proxy, world, number, "stop")
    await inbound(proxy, other, number, "stop")
    with pytest.raises(TwilioRestException):
        await send_sms(world, number)
    status, reply = await inbound(proxy, world, number, "START")
    assert status == 200
    assert "weer aangemeld" in reply
    assert (await send_sms(world, number)).sid.startswith("SM")  # restored for this one
    with pytest.raises(TwilioRestException):
        await send_sms(other, number)  # the other organisation's objection stands
    rows = await objections(pool, number)
    lifted = {r["organisation_id"]: r["lifted_at"] is not None for r in rows}
    assert lifted == {world.org: True, other.org: False}
    event = await pool.fetchrow(
        "SELECT * FROM inbound_messages WHERE subject_hash = $1 AND intent = 'start'",
        subject_hash(number))
    assert event["lifted"] == 1
    assert rows[0]["lifted_ref"] == event["message_id"]


async def test_start_does_not_lift_an_objection_made_another_way(
    world: World, proxy: TestClient[Any, Any]
) -> None:
    number = mobile()
    await world.consent(number, "sms")
    await world.objection(number, organisation=world.org, via="agent")
    await inbound(proxy, world, number, "start")
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(world, number)
    assert caught.value.code == 21610


async def test_help_names_the_organisation(world: World, proxy: TestClient[Any, Any]) -> None:
    status, reply = await inbound(proxy, world, mobile(), "Info?")
    assert status == 200
    assert "Energie BV: sms STOP naar dit nummer" in reply


# --- signatures -----------------------------------------------------------------------------

async def test_forged_signatures_are_403_and_store_nothing(
    world: World, proxy: TestClient[Any, Any], pool: asyncpg.Pool, log_output: Any
) -> None:
    number = mobile()
    params = sms_params(world, number, "STOP")
    before = await pool.fetchval("SELECT count(*) FROM inbound_messages")
    assert (await twilio_post(proxy, SMS, params, token="not-the-token"))[0] == 403
    assert (await twilio_post(proxy, SMS, params, signature=""))[0] == 403
    good = RequestValidator(UP_TOKEN).compute_signature(PUBLIC + SMS, MultiDict(params))
    tampered = [(k, "+31699999999" if k == "From" else v) for k, v in params]
    resp = await proxy.post(SMS, data=tampered, headers={"X-Twilio-Signature": good})
    assert resp.status == 403
    wrong_url = RequestValidator(UP_TOKEN).compute_signature(
        "http://127.0.0.1:8080" + SMS, MultiDict(params))
    assert (await twilio_post(proxy, SMS, params, signature=wrong_url))[0] == 403
    assert await objections(pool, number) == []
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == before
    assert "webhook_signature_invalid" in log_output.getvalue()


async def test_webhooks_refused_without_twilio_token(
    aiohttp_client: Any, database_url: str, clock: Clock, auth: dict[str, str],
) -> None:
    proxy = await aiohttp_client(create_app(make_settings(database_url, PUBLIC_URL=PUBLIC),
                                            clock=clock))
    world = await make_world(proxy, auth)
    status, _ = await twilio_post(proxy, SMS, sms_params(world, mobile(), "STOP"))
    assert status == 403


# --- relay of everything else ---------------------------------------------------------------

@pytest.fixture
async def relay_target() -> Any:
    received: list[tuple[str, list[tuple[str, str]], str]] = []
    mode = {"status": 200, "delay": 0.0}

    async def hook(request: web.Request) -> web.Response:
        form = await request.post()
        received.append((str(request.url), [(k, str(v)) for k, v in form.items()],
                         request.headers.get("X-Twilio-Signature", "")))
        await asyncio.sleep(mode["delay"])
        return web.Response(status=int(mode["status"]), content_type="text/xml",
                            text="<Response><Message>Dank voor uw bericht</Message></Response>")

    app = web.Application()
    app.router.add_post("/crm/sms", hook)
    server = TestServer(app)
    await server.start_server()
    yield server, received, mode
    await server.close()


async def test_other_messages_are_relayed_signed_for_the_client(
    proxy: TestClient[Any, Any], auth: dict[str, str], relay_target: Any, pool: asyncpg.Pool
) -> None:
    server, received, _mode = relay_target
    world = await make_world(proxy, auth)
    url = str(server.make_url("/crm/sms"))
    sender = f"+3120{mobile()[-7:]}"
    resp = await proxy.post("/admin/v1/senders", json={
        "sender": sender, "organisation": world.org, "topic": "energy",
        "inbound_webhook": url}, headers=auth)
    assert resp.status == 201
    world.sms = sender
    number = mobile()
    status, reply = await inbound(proxy, world, number, "Kunt u mij morgen terugbellen?")
    assert status == 200
    assert reply == "<Response><Message>Dank voor uw bericht</Message></Response>"
    ((got_url, form, signature),) = received
    assert got_url == url
    fields = dict(form)
    assert fields["Body"] == "Kunt u mij morgen terugbellen?"
    assert fields["AccountSid"] == world.sid  # the dialer sees its own account
    token = credentials.derive_token(PROXY_SECRET, world.sid, 1)
    assert RequestValidator(token).validate(url, MultiDict(form), signature)
    assert not RequestValidator(UP_TOKEN).validate(url, MultiDict(form), signature)
    assert await objections(pool, number) == []


async def test_a_disabled_client_signs_no_relayed_webhook(
    proxy: TestClient[Any, Any], auth: dict[str, str], relay_target: Any
) -> None:
    """The oldest enabled client of the organisation signs; with none left, nothing is
    relayed (a disabled client's token must not speak for the organisation any more)."""
    server, received, _mode = relay_target
    world = await make_world(proxy, auth)
    url = str(server.make_url("/crm/sms"))
    world.sms = f"+3120{mobile()[-7:]}"
    resp = await proxy.post("/admin/v1/senders", json={
        "sender": world.sms, "organisation": world.org, "topic": "energy",
        "inbound_webhook": url}, headers=auth)
    assert resp.status == 201
    resp = await proxy.post("/admin/v1/clients", json={
        "name": "Dialer B", "organisations": [world.org]}, headers=auth)
    later = (await resp.json())["account_sid"]
    resp = await proxy.post(f"/admin/v1/clients/{world.sid}/disable", headers=auth)
    assert resp.status == 200
    assert (await inbound(proxy, world, mobile(), "Wanneer komt de monteur?"))[0] == 200
    ((_url, form, signature),) = received
    assert dict(form)["AccountSid"] == later
    token = credentials.derive_token(PROXY_SECRET, later, 1)
    assert RequestValidator(token).validate(url, MultiDict(form), signature)
    resp = await proxy.post(f"/admin/v1/clients/{later}/disable", headers=auth)
    assert resp.status == 200
    status, reply = await inbound(proxy, world, mobile(), "Hallo?")
    assert (status, reply) == (200, '<?xml version="1.0" encoding="UTF-8"?><Response />')
    assert len(received) == 1


@pytest.mark.parametrize(("status", "delay"), [(500, 0.0), (200, 3.0)])
async def test_failed_relay_answers_empty_twiml(
    proxy: TestClient[Any, Any], auth: dict[str, str], relay_target: Any,
    status: int, delay: float
) -> None:
    server, received, mode = relay_target
    mode.update(status=status, delay=delay)
    world = await make_world(proxy, auth)
    sender = f"+3120{mobile()[-7:]}"
    await proxy.post("/admin/v1/senders", json={
        "sender": sender, "organisation": world.org, "topic": "energy",
        "inbound_webhook": str(server.make_url("/crm/sms"))}, headers=auth)
    world.sms = sender
    code, reply = await inbound(proxy, world, mobile(), "Hallo?")
    assert code == 200
    assert reply == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert len(received) == 1


async def test_unknown_number_gets_empty_twiml(world: World, proxy: TestClient[Any, Any],
                                               pool: asyncpg.Pool) -> None:
    world.sms = landline()  # no registered sender
    number = mobile()
    for body in ("Hallo, wie is dit?", "START", "Help"):
        status, reply = await inbound(proxy, world, number, body)
        assert (status, reply) == (200, '<?xml version="1.0" encoding="UTF-8"?><Response />')
    assert await objections(pool, number) == []
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages WHERE subject_hash = $1",
                               subject_hash(number)) == 0


async def test_stop_to_an_unknown_number_objects_globally(
    world: World, proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool,
    log_output: Any,
) -> None:
    number = mobile()
    other = await make_world(proxy, auth)  # another organisation, with the number's consent
    await other.consent(number, "sms")
    await other.consent(number, "voice")
    assert (await send_sms(other, number)).sid.startswith("SM")
    unknown = landline()
    world.sms = unknown
    sid = new_sid()
    status, reply = await inbound(proxy, world, number, "Niet meer bellen aub", sid)
    assert status == 200
    assert "<Message>U bent afgemeld: u krijgt geen berichten meer en wordt niet meer gebeld." \
        "</Message>" in reply
    (row,) = await objections(pool, number)
    assert (row["organisation_id"], row["channel"], row["via"], row["source_ref"]) == (
        None, None, "sms", sid)
    event = await pool.fetchrow("SELECT * FROM inbound_messages WHERE message_id = $1", sid)
    assert (event["organisation_id"], event["sender"], event["intent"], event["objection_id"]) \
        == (None, unknown, "stop", row["id"])
    # N11: a global objection blocks every organisation, on every channel.
    with pytest.raises(TwilioRestException) as caught:
        await send_sms(other, number)
    assert caught.value.code == 21610
    with pytest.raises(TwilioRestException) as caught:
        await call(other, number)
    assert caught.value.code == DENIAL_CODES["OBJECTION_ON_FILE"][1]
    # A retry of the same MessageSid: the same reply, nothing new.
    assert await inbound(proxy, world, number, "Niet meer bellen aub", sid) == (200, reply)
    assert len(await objections(pool, number)) == 1
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    (recorded,) = [line for line in lines if line["event"] == "objection_recorded"]
    assert (recorded["scope"], recorded["why"], recorded["subject"]) == (
        "global", "unknown sender", mask(number))
    assert number not in log_output.getvalue()


# --- objection during a call ----------------------------------------------------------------

def call_params(world: World, person: str, call_sid: str, **extra: str) -> list[tuple[str, str]]:
    params = [("CallSid", call_sid), ("AccountSid", UP_SID), ("From", world.voice),
              ("To", person), ("Direction", "outbound-api"), ("CallStatus", "in-progress")]
    return params + list(extra.items())


async def test_voice_objection_by_pressing_9(world: World, proxy: TestClient[Any, Any],
                                             pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await world.consent(number, "sms")
    call_sid = new_sid("CA")
    status, twiml = await twilio_post(proxy, VOICE, call_params(world, number, call_sid))
    assert status == 200
    assert re.search(rf'<Gather action="{re.escape(PUBLIC + GATHER)}" method="POST" '
                     r'numDigits="1"', twiml)
    assert "recht om bezwaar te maken" in twiml
    assert 'language="nl-NL"' in twiml
    status, twiml = await twilio_post(proxy, GATHER,
                                      call_params(world, number, call_sid, Digits="9"))
    assert status == 200
    assert "Uw bezwaar is vastgelegd" in twiml
    assert "<Hangup />" in twiml
    await twilio_post(proxy, GATHER, call_params(world, number, call_sid, Digits="9"))
    (row,) = await objections(pool, number)
    assert (row["via"], row["organisation_id"], row["channel"]) == ("ivr", world.org, None)
    with pytest.raises(TwilioRestException) as caught:
        await call(world, number)
    assert caught.value.code == DENIAL_CODES["OBJECTION_ON_FILE"][1]
    with pytest.raises(TwilioRestException):
        await send_sms(world, number)


async def test_voice_other_digit_records_nothing_and_returns(
    world: World, proxy: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    number = mobile()
    query = "return_to=https://dialer.example/continue"
    status, twiml = await twilio_post(
        proxy, VOICE, call_params(world, number, new_sid("CA")), query=query)
    assert status == 200
    assert f'action="{PUBLIC}{GATHER}?{query}"' in twiml.replace("&amp;", "&")
    status, twiml = await twilio_post(
        proxy, GATHER, call_params(world, number, new_sid("CA"), Digits="1"), query=query)
    assert status == 200
    assert "Er is geen bezwaar vastgelegd" in twiml
    assert '<Redirect method="POST">https://dialer.example/continue</Redirect>' in twiml
    assert await objections(pool, number) == []


async def test_voice_webhook_signature_is_checked(world: World, proxy: TestClient[Any, Any],
                                                  pool: asyncpg.Pool) -> None:
    number = mobile()
    params = call_params(world, number, new_sid("CA"), Digits="9")
    status, _ = await twilio_post(proxy, GATHER, params, token="forged")
    assert status == 403
    assert await objections(pool, number) == []
