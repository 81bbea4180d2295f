"""What leaves for the provider is what was decided: the E.164 number decided on (not a
look-alike spelling of it), an opt-out line on every marketing SMS (N17: media-only messages
get it as their Body, content templates are refused unless the organisation vouches for
them), and no message scheduled to leave after its decision. The official SDK as the dialer,
a fake Twilio that records what reached it, real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from twilio.base.exceptions import TwilioRestException

from proxy.gate.codes import DENIAL_CODES
from proxy.phone import subject_hash
from tests.conftest import Clock, mobile
from tests.fake_twilio import FakeTwilio
from tests.test_twilio_front import _proxy, decisions_for
from tests.world import A, World, in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TEMPLATE = "HX" + "0123456789abcdef" * 2  # a ContentSid as Twilio's spec shapes it
FULL_WIDTH = str.maketrans("+0123456789", "\uff0b" + "".join(chr(0xFF10 + d) for d in range(10)))


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def _post(world: World, kind: str, data: list[tuple[str, str]]
                ) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{world.base}/2010-04-01/Accounts/{world.sid}/{kind}.json", data=data,
            auth=aiohttp.BasicAuth(world.sid, world.token))
        return resp.status, await resp.json()


async def _templates_carry_opt_out(world: World, carry: bool) -> None:
    resp = await world.admin.put(f"{A}/organisations/{world.org}", json={
        "name": "Energie BV", "sector": "commercial",
        "content_templates_carry_opt_out": carry}, headers=world.auth)
    assert resp.status == 200, await resp.text()


# --- the number that goes out -----------------------------------------------------------------

async def test_full_width_to_meets_the_objection_on_the_number(world: World,
                                                               fake: FakeTwilio) -> None:
    """+316 followed by full-width digits is that +316 number: its objection is found."""
    number = mobile()
    await world.consent(number, "sms")
    await world.objection(number, organisation=world.org)
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(
            to=number[:4] + number[4:].translate(FULL_WIDTH), from_=world.sms, body="Hoi"))
    assert (caught.value.status, caught.value.code) == (400, 21610)
    assert fake.creates() == []
    (row,) = await decisions_for(world, number)  # keyed by the ASCII number's hash
    assert row["reason"] == "OBJECTION_ON_FILE"


@pytest.mark.parametrize("kind", ["Messages", "Calls"])
async def test_the_decided_e164_number_is_what_goes_upstream(
        world: World, fake: FakeTwilio, kind: Literal["Messages", "Calls"]) -> None:
    number = mobile()
    await world.consent(number, "sms" if kind == "Messages" else "voice")
    spelled = "0" + number[3:].translate(FULL_WIDTH)  # national form, full-width digits
    data = [("To", spelled), ("From", world.sms if kind == "Messages" else world.voice),
            ("Body" if kind == "Messages" else "Url", "https://dialer.example/t")]
    status, body = await _post(world, kind, data)
    assert status == 201, body
    (received,) = fake.creates(kind)
    assert received.value("To") == number
    assert received.form[0][0] == "To"  # in its place, not appended


async def test_the_sender_goes_upstream_as_registered(world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    spelled = world.sms.translate(FULL_WIDTH)  # full-width, as a look-alike sender
    status, body = await _post(world, "Messages", [("To", number), ("From", spelled),
                                                   ("Body", "Hoi")])
    assert status == 201, body
    (received,) = fake.creates("Messages")
    assert received.value("From") == world.sms


async def test_digits_of_another_script_are_an_invalid_number(world: World,
                                                              fake: FakeTwilio) -> None:
    arabic = "".join(chr(0x0660 + int(d)) for d in "0612340002")  # phonenumbers reads these
    status, body = await _post(world, "Messages", [("To", arabic), ("From", world.sms),
                                                   ("Body", "Hoi")])
    assert (status, body["code"], body["reason"]) == (403, DENIAL_CODES["INVALID_NUMBER"][1],
                                                      "INVALID_NUMBER")
    assert fake.creates() == []


# --- N17: the opt-out line is never skipped ---------------------------------------------------

async def test_n17_media_only_marketing_sms_gets_the_footer_as_its_body(
        world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                media_url=["https://a/1.png"]))
    (received,) = fake.creates("Messages")
    assert received.value("Body") == f"Afmelden? Sms STOP naar {world.sms}"
    assert received.values("MediaUrl") == ["https://a/1.png"]
    (row,) = await decisions_for(world, number)
    assert row["obligations"] == ["OPT_OUT_APPENDED"]
    assert row["details"]["footer_appended"] is True


@pytest.mark.parametrize("body", [None, "Uw aanbieding", "Actie! Sms STOP naar 1234 om af te "
                                                       "melden"])
async def test_n17_content_template_is_refused_when_nothing_vouches_for_its_opt_out(
        world: World, fake: FakeTwilio, body: str | None) -> None:
    """Twilio sends the template instead of Body, so neither an appended footer nor an
    opt-out line in Body would reach the person."""
    number = mobile()
    await world.consent(number, "sms")
    data = [("To", number), ("From", world.sms), ("ContentSid", TEMPLATE)]
    if body is not None:
        data.append(("Body", body))
    status, answer = await _post(world, "Messages", data)
    assert (status, answer["code"]) == (403, 930050)
    assert DENIAL_CODES["OPT_OUT_NOT_APPENDABLE"] == (403, 930050)
    assert answer["reason"] == "OPT_OUT_NOT_APPENDABLE"
    assert fake.creates() == []
    (row,) = await decisions_for(world, number)
    assert (row["decision"], row["reason"], row["rule"]) == ("deny", "OPT_OUT_NOT_APPENDABLE",
                                                             "N17")
    assert row["obligations"] == []
    assert row["id"] == answer["decision_id"]


async def test_n17_content_template_goes_out_when_the_organisation_vouches(
        world: World, fake: FakeTwilio) -> None:
    await _templates_carry_opt_out(world, True)
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          content_sid=TEMPLATE))
    (received,) = fake.creates("Messages")
    assert received.value("ContentSid") == TEMPLATE
    assert received.value("Body") is None  # nothing added that Twilio would ignore
    (row,) = await decisions_for(world, number)
    assert (row["decision"], row["upstream_sid"]) == ("allow", message.sid)
    assert row["obligations"] == ["OPT_OUT_IN_TEMPLATE"]  # what satisfied N17
    assert row["details"] == {"content_template": True, "footer_appended": False}


async def test_n17_no_decision_claims_a_footer_that_did_not_go_out(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool) -> None:
    """Over every shape of message: a decision that records OPT_OUT_APPENDED forwarded a
    Body ending in the footer, and every forwarded marketing SMS either carries the footer
    or rests on OPT_OUT_IN_TEMPLATE."""
    await _templates_carry_opt_out(world, True)
    footer = f"Afmelden? Sms STOP naar {world.sms}"
    shapes: list[list[tuple[str, str]]] = [
        [("Body", "Hallo")], [("MediaUrl", "https://a/1.png")],
        [("Body", ""), ("MediaUrl", "https://a/1.png")], [("ContentSid", TEMPLATE)],
        [("ContentSid", TEMPLATE), ("Body", "Hallo")],
    ]
    for shape in shapes:
        number = mobile()
        await world.consent(number, "sms")
        status, answer = await _post(world, "Messages",
                                     [("To", number), ("From", world.sms), *shape])
        assert status == 201, (shape, answer)
        received = fake.creates("Messages")[-1]
        assert received.value("To") == number
        (row,) = await decisions_for(world, number)
        if "OPT_OUT_APPENDED" in row["obligations"]:
            assert (received.value("Body") or "").endswith(footer), shape
        else:
            assert row["obligations"] == ["OPT_OUT_IN_TEMPLATE"], shape
            assert received.value("ContentSid") == TEMPLATE


async def test_n17_sender_id_with_a_footer_naming_a_number_gets_that_footer(
        world: World, fake: FakeTwilio) -> None:
    """N12: an alphanumeric sender cannot receive STOP, so its organisation's footer names a
    number that can; that footer goes out (the default, naming the sender, is refused:
    tests/test_attack_review.py::test_finding_12_opt_out_line_names_a_sender_no_one_can_text)."""
    resp = await world.admin.put(f"{A}/organisations/{world.org}", json={
        "name": "Energie BV", "sector": "commercial",
        "sms_footer": "{organisation}: afmelden? Sms STOP naar 4040"}, headers=world.auth)
    assert resp.status == 200, await resp.text()
    sender_id = "E" + world.org[-10:]  # an alphanumeric ID only this test registers
    resp = await world.admin.post(f"{A}/senders", json={
        "sender": sender_id, "organisation": world.org, "topic": "energy/electricity"},
        headers=world.auth)
    assert resp.status == 201, await resp.text()
    number = mobile()
    await world.consent(number, "sms")
    status, answer = await _post(world, "Messages", [("To", number), ("From", sender_id),
                                                     ("Body", "Nieuwe aanbieding")])
    assert status == 201, answer
    (received,) = fake.creates("Messages")
    assert received.value("Body") == "Nieuwe aanbieding\nEnergie BV: afmelden? Sms STOP naar 4040"
    (row,) = await decisions_for(world, number)
    assert row["obligations"] == ["OPT_OUT_APPENDED"]


# --- scheduled messages -----------------------------------------------------------------------

@pytest.mark.parametrize("schedule", [
    [("ScheduleType", "fixed"), ("SendAt", "2026-12-05T10:00:00Z")],
    [("SendAt", "2026-12-05T10:00:00Z")],
    [("ScheduleType", "fixed")],
])
async def test_scheduled_messages_are_refused_before_deciding(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool,
        schedule: list[tuple[str, str]]) -> None:
    """Twilio would send them up to 35 days later, after any objection made meanwhile."""
    number = mobile()
    await world.consent(number, "sms")
    status, body = await _post(world, "Messages", [("To", number), ("From", world.sms),
                                                   ("Body", "Later"), *schedule])
    assert (status, body["code"], body["reason"]) == (400, 930052, "SCHEDULED_SEND_NOT_GATED")
    assert "at the desired time" in body["message"]
    assert body["more_info"].endswith("/errors/930052")
    assert fake.received == []
    assert await pool.fetchval("SELECT count(*) FROM decisions WHERE subject_hash = $1",
                               subject_hash(number)) == 0


async def test_scheduled_message_through_the_sdk_and_its_error_document(
        world: World, fake: FakeTwilio) -> None:
    sdk = world.sdk()
    send_at = dt.datetime(2026, 12, 20, 10, 0, tzinfo=dt.UTC)
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(
            to=mobile(), messaging_service_sid="MG" + "0" * 32, body="Later",
            schedule_type="fixed", send_at=send_at))
    assert (caught.value.status, caught.value.code) == (400, 930052)
    async with aiohttp.ClientSession() as session:
        doc = await (await session.get(f"{world.base}/errors/930052")).json()
    assert doc["reason"] == "SCHEDULED_SEND_NOT_GATED"
    assert doc["status"] == 400
