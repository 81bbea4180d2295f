"""Every way around the gate, closed: attacks by a dialer that holds valid
credentials, against a real proxy on a real port, the fake Twilio behind it and real
PostgreSQL. Every test asserts on what the fake upstream received and on the decision rows.

Tests marked `FINDING n` each showed a way around the gate when it was reviewed, explained in
their docstrings; they now assert the fix. The others are attacks the gate withstood. All are
kept as regression tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from proxy.fronts.twilio import twiml
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import OPTOUT_SPOOL, SPOOL_DRAIN
from tests import test_optout_spool, test_relays
from tests.conftest import UP_SID, UP_TOKEN, Clock, mobile
from tests.fake_twilio import FakeTwilio
from tests.test_faults import EmbeddedPostgres
from tests.test_optout_spool import new_sid, start_app
from tests.test_optout_spool import sms as inbound_sms
from tests.test_relays import (
    Dialer,
    consented,
    objected,
    outcomes,
    rows_for,
    rows_of_client,
    start_proxy,
)
from tests.test_twilio_routes import basic, send_raw
from tests.world import A, World, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ACCOUNT = "/2010-04-01/Accounts/{sid}/"
OBJECTION = DENIAL_CODES["OBJECTION_ON_FILE"][1]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# Fixtures shared with the modules these attacks extend: the dialer's own web server, and a
# private PostgreSQL that can be stopped and started.
dialer = test_relays.dialer
private_pg = test_optout_spool.private_pg


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def post(world: World, tail: str, pairs: list[tuple[str, str]] | bytes,
               method: str = "POST", headers: dict[str, str] | None = None,
               ) -> tuple[int, Any]:
    """A request to the Twilio front as the dialer (Basic auth), its form as given."""
    data = pairs if isinstance(pairs, bytes) else aiohttp.FormData(pairs)
    resp = await world.admin.request(
        method, ACCOUNT.format(sid=world.sid) + tail, data=data,
        auth=aiohttp.BasicAuth(world.sid, world.token), headers=headers)
    text = await resp.text()
    try:
        return resp.status, await resp.json(content_type=None)
    except ValueError:
        return resp.status, text


async def sender(world: World, value: str, topic: str = "energy/electricity") -> None:
    resp = await world.admin.post(f"{A}/senders", json={
        "sender": value, "organisation": world.org, "topic": topic}, headers=world.auth)
    assert resp.status == 201, await resp.text()


# --- FINDINGS -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("CallToken", '{"parentCallInfoToken":"x","identityHeaderTokens":[]}'),
    ("CallerId", "+3120555012"),
])
async def test_finding_1_call_token_shows_another_caller_id(
        world: World, fake: FakeTwilio, name: str, value: str) -> None:
    """FINDING 1 (fixed). `CallToken` (a forwarded call "bears the same CallerID of the
    original incoming call") and `CallerId` made the person called see another number than
    the registered From the gate decided on (N16); both were passed through. Now refused with
    400 (20001) naming the field, before anything is decided or sent."""
    to = await consented(world)
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t"), (name, value)])
    assert (status, body["code"]) == (400, 20001), body
    assert repr(name) in body["message"]
    assert fake.creates() == []
    assert await rows_for(world, to) == []


async def test_finding_2_sms_fallback_sender_is_never_decided(world: World, fake: FakeTwilio
                                                              ) -> None:
    """FINDING 2 (fixed). `FallbackFrom` names a second sender, used when the first channel
    fails; the gate decided on `From` only, so the fallback went out from a sender registered
    to no organisation (N16/N17) while the footer named the decided one. Now refused with 400
    (20001) naming the field, before anything is decided or sent, even when the fallback is
    one of the client's own senders."""
    number = mobile()
    await world.consent(number, "sms")
    for fallback in ("+3120555012", world.sms):
        status, body = await post(world, "Messages.json", [
            ("To", number), ("From", world.sms), ("Body", "Hoi"), ("FallbackFrom", fallback)])
        assert (status, body["code"]) == (400, 20001), body
        assert "'FallbackFrom'" in body["message"]
    assert fake.creates() == []
    assert await rows_for(world, number) == []


@pytest.mark.parametrize("kind", ["alphanumeric", "messaging service"])
async def test_finding_3_call_from_an_id_that_cannot_be_called_back(
        world: World, fake: FakeTwilio, kind: str) -> None:
    """FINDING 3 (fixed). N16: an alphanumeric sender ID or a messaging-service id is never a
    caller ID for a call. A call from a registered alphanumeric SMS sender (or MG…) was
    allowed and forwarded; now it is denied `CALLER_ID_NOT_CALLABLE`."""
    unique = uuid.uuid4().hex
    # Registered once per database: each run of the test registers its own.
    caller = "E" + unique[:10] if kind == "alphanumeric" else "MG" + unique
    await sender(world, caller)
    to = await consented(world)
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", caller), ("Url", "https://dialer.example/t")])
    (row,) = await rows_for(world, to)
    assert (row["decision"], row["reason"]) == ("deny", "CALLER_ID_NOT_CALLABLE"), (
        status, body)
    assert fake.creates() == []


@pytest.mark.parametrize("url", ["//dialer.example/next", "/next", "\ufeffhttps://d.example/n"])
async def test_finding_4_inline_twiml_url_not_recognised_is_forwarded_unrelayed(
        world: World, fake: FakeTwilio, url: str) -> None:
    """FINDING 4 (fixed). In inline `Twiml` (create or live update) a URL the proxy did not
    take for an absolute http(s) URL (`//host/path`, a relative path, a leading BOM) was
    neither relayed nor refused: it reached Twilio as written, which could resolve or clean it
    up and fetch TwiML nothing decided. Now the TwiML is refused with 400 (20001) naming the
    element, before anything is decided or sent (in TwiML fetched through the relay, such a
    URL hangs the call up: tests/test_relays.py::test_twiml_relay_fails_closed)."""
    to = await consented(world)
    document = f'<Response><Redirect method="POST">{url}</Redirect></Response>'
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Twiml", document)])
    assert (status, body["code"]) == (400, 20001), body
    assert "Redirect" in body["message"]
    assert fake.creates() == []
    assert await rows_for(world, to) == []
    status, created = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t")])
    assert status == 201
    tail = f"Calls/{created['sid']}.json"
    status, body = await post(world, tail, [("Twiml", document.replace("Redirect", "redirect"))])
    assert (status, body["code"]) == (400, 20001), body
    assert [r for r in fake.received if r.path.endswith(tail)] == []


async def test_finding_5_a_spooled_stop_is_applied_before_the_next_decision(
        aiohttp_client: Any, private_pg: EmbeddedPostgres, clock: Clock, fake: FakeTwilio,
        auth: dict[str, str], tmp_path: Path) -> None:
    """FINDING 5 (fixed). A STOP spooled during a database outage used to wait for the drain's
    backoff (up to 30 s) while creates were decided on the database alone, so an SMS reached
    the person who had sent STOP. Now every decision first applies what the spool holds; the
    drain's own timer no longer matters."""
    proxy = await start_app(aiohttp_client, private_pg.url, clock, tmp_path / "spool",
                            TWILIO_ACCOUNT_SID=UP_SID, TWILIO_API_BASE=fake.base_url)
    proxy.app[SPOOL_DRAIN].retry_initial = 30.0  # the backoff after an outage of a minute
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    await asyncio.to_thread(private_pg.stop)
    try:
        status, _ = await inbound_sms(proxy, world.sms, number, "STOP", new_sid())
        assert status == 200
        assert proxy.app[OPTOUT_SPOOL].entries == 1
        # Still down: the decision cannot see the spool applied, so it is refused unchecked.
        status, body = await post(world, "Messages.json", [
            ("To", number), ("From", world.sms), ("Body", "Aanbieding!")])
        assert status == 503, body
    finally:
        await asyncio.to_thread(private_pg.start)
    for _ in range(20):  # the pool reconnects: a dialer retries a 503
        status, body = await post(world, "Messages.json", [
            ("To", number), ("From", world.sms), ("Body", "Aanbieding!")])
        if status != 503:
            break
    assert (status, body["reason"]) == (400, "OBJECTION_ON_FILE"), body
    assert proxy.app[OPTOUT_SPOOL].entries == 0  # applied by the decision, not the timer
    assert fake.creates("Messages") == []


async def test_finding_6_filtered_lists_tell_of_other_clients_calls(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], auth: dict[str, str]
        ) -> None:
    """FINDING 6 (fixed). The three lists were filtered to the client's own items, but the
    page's own fields came from the whole upstream account: with `To=<number>&PageSize=1` a
    client that never called the number learned from `next_page_uri` that other clients of
    the same upstream account had called it. The proxy now reads on through upstream pages
    and hands out a next page only when it has a page's worth of the client's own items."""
    other = await make_world(proxy, auth)
    number = await consented(other)
    for _ in range(2):
        status, _ = await post(other, "Calls.json", [
            ("To", number), ("From", other.voice), ("Url", "https://dialer.example/t")])
        assert status == 201
    resp = await world.admin.get(
        ACCOUNT.format(sid=world.sid) + "Calls.json",
        params={"To": number, "PageSize": "1"}, auth=aiohttp.BasicAuth(world.sid, world.token))
    page = await resp.json()
    assert page["calls"] == []
    assert page["next_page_uri"] is None, page
    assert page["end"] == page["start"]


async def test_own_items_are_all_listed_across_the_pages_of_a_shared_account(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], auth: dict[str, str]
        ) -> None:
    """The other side of finding 6's fix: a client paging through a list that other clients'
    items interleave (the official SDK, one item a page) still gets every item of its own."""
    other = await make_world(proxy, auth)
    mine = []
    for _ in range(3):
        for who in (other, world, other):
            status, body = await post(who, "Calls.json", [
                ("To", await consented(who)), ("From", who.voice),
                ("Url", "https://dialer.example/t")])
            assert status == 201, body
            if who is world:
                mine.append(body["sid"])
    sdk = world.sdk()
    listed = await asyncio.to_thread(lambda: [c.sid for c in sdk.calls.list(page_size=1)])
    assert sorted(listed) == sorted(mine)
    assert len(fake.received) > 3  # it read on through the other client's pages


async def test_finding_7_idempotency_tokens_are_shared_upstream(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], auth: dict[str, str]
        ) -> None:
    """FINDING 7 (fixed). Idempotency tokens are per client in the proxy, but the client's
    token went unchanged to the one upstream account all clients share: two clients using the
    same token ("retry-1") sent Twilio the same I-Twilio-Idempotency-Token, so where Twilio
    honours it one client got the other's message. Now the token sent upstream is the SHA-256
    of the client's AccountSid and its token: per client, the same for the same client."""
    other = await make_world(proxy, auth)
    for who in (world, other):
        number = mobile()
        await who.consent(number, "sms")
        status, _ = await post(who, "Messages.json", [
            ("To", number), ("From", who.sms), ("Body", "Hoi")],
            headers={"I-Twilio-Idempotency-Token": "retry-1"})
        assert status == 201
    first, second = (r.headers.get("I-Twilio-Idempotency-Token") for r in fake.creates())
    assert (first, second) == tuple(
        hashlib.sha256(f"{who.sid}:retry-1".encode()).hexdigest() for who in (world, other))


async def test_finding_8_say_hides_a_dial_from_inspection(world: World, fake: FakeTwilio
                                                          ) -> None:
    """FINDING 8 (fixed, low). `<Say>` was never looked into (its children taken for SSML), so
    an element that is no SSML at all, here a `<Dial>` to an objected number, reached Twilio
    undecided. Now only SSML's elements may appear in `<Say>`; anything else is refused as
    TWIML_NOT_INSPECTABLE (403, 930051), recorded, like any unknown element. SSML passes."""
    to, target = await consented(world), await objected(world)
    document = f"<Response><Say>Hallo<Dial>{target}</Dial></Say></Response>"
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Twiml", document)])
    assert (status, body["code"], body["reason"]) == (
        403, DENIAL_CODES["TWIML_NOT_INSPECTABLE"][1], "TWIML_NOT_INSPECTABLE"), body
    assert fake.creates() == []
    assert [r["reason"] for r in await rows_of_client(world)] == ["ALLOWED",
                                                                  "TWIML_NOT_INSPECTABLE"]
    ssml = ('<Response><Say>Hallo <break time="1s"/><prosody rate="slow"><say-as '
            'interpret-as="digits">12</say-as></prosody><w>dag</w></Say></Response>')
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Twiml", ssml)])
    assert status == 201, body


async def test_finding_9_payment_status_callback_bypasses_the_callback_relay(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], dialer: Dialer) -> None:
    """FINDING 9 (fixed, low). UpdatePayments (`POST Calls/{CA}/Payments/{PK}.json`, passed
    through) carried a `StatusCallback` forwarded as given: Twilio called the dialer directly,
    signed with the upstream token and showing the upstream AccountSid, and the proxy recorded
    nothing. Now it is rewritten to the callback relay like every other callback: recorded
    under the call's decision, passed on to the dialer as from its own account; a URL that is
    not absolute http(s) is refused with 400 (20001)."""
    to = await consented(world)
    status, created = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t")])
    assert status == 201
    tail = f"Calls/{created['sid']}/Payments/PK{'0' * 32}.json"
    status, body = await post(world, tail, [("IdempotencyKey", "k0"),
                                            ("StatusCallback", "/pay")])
    assert (status, body["code"]) == (400, 20001), body
    await post(world, tail, [("IdempotencyKey", "k1"), ("StatusCallback",
                                                         dialer.url("/status/pay"))])
    (sent,) = [r for r in fake.received if r.path.endswith(tail)]
    public = str(proxy.make_url("")).rstrip("/")
    relay = sent.value("StatusCallback") or ""
    assert relay.startswith(f"{public}/webhooks/twilio/callback/")
    status, text, _ = await fake.request_url(relay, fake.call_params(
        created["sid"], Result="success", PaymentConfirmationCode="x1"))
    assert (status, text) == (200, "noted")
    (seen,) = dialer.seen
    assert seen.url == dialer.url("/status/pay")
    assert dict(seen.params)["AccountSid"] == world.sid
    assert dialer.valid_for(world.sid, seen)
    (call_row,) = await rows_for(world, to)
    (outcome,) = await outcomes(world)
    assert (outcome["decision_id"], outcome["field"]) == (call_row["id"],
                                                           "Payments.StatusCallback")


async def test_finding_10_a_disabled_client_is_still_served_by_the_relays(
        world: World, fake: FakeTwilio, dialer: Dialer, proxy: TestClient[Any, Any]) -> None:
    """FINDING 10 (fixed). README: a disabled client's "token signs no relayed webhook". The
    TwiML and callback relays loaded the client without looking at `enabled`: after the
    disable, Twilio's next TwiML fetch on a live call was still passed to the dialer signed
    with the disabled client's token, and the `<Dial>`s it answered were served (a leaked
    token's call redirecting to itself kept dialing). Now the TwiML relay answers a hang-up
    without asking the dialer (logged `relay_client_disabled`), and the callback relay
    records the outcome and answers 204 without passing it on."""
    allowed = await consented(world)
    dialer.twiml = f"<Response><Dial>{allowed}</Dial></Response>"
    status, created = await post(world, "Calls.json", [
        ("To", await consented(world)), ("From", world.voice), ("Url", dialer.url("/twiml")),
        ("StatusCallback", dialer.url("/status"))])
    assert status == 201
    resp = await proxy.post(f"{A}/clients/{world.sid}/disable", headers=world.auth)
    assert resp.status == 200
    assert await fake.fetch_twiml(created["sid"]) == (200, twiml.HANGUP)
    assert await rows_for(world, allowed) == []  # nothing in the dialer's TwiML was decided
    status, text, _ = await fake.fire_status_callback(created["sid"], "completed")
    assert (status, text) == (204, "")
    assert dialer.seen == [], "a disabled client's dialer was asked, signed with its token"
    (outcome,) = await outcomes(world)
    assert outcome["status"] == "completed"


@pytest.mark.parametrize("body", [
    "Stuur een sms en kies uit drie aanbiedingen!",
    "Text us today and stop paying too much for energy.",
    "Antwoord JA en stop met te veel betalen",
])
async def test_finding_11_ordinary_marketing_copy_is_taken_for_an_opt_out_line(
        world: World, fake: FakeTwilio, body: str) -> None:
    """FINDING 11 (fixed). N17: the footer is appended unless the body already carries an
    opt-out line. `has_opt_out` used to take "sms|stuur|reply|text|antwoord|send" followed
    within 25 characters by "stop", "uit" or "afmelden" for one, so ordinary copy ("… kies
    uit …") went out without the opt-out and the sender's identity. Now only the organisation's
    own footer or "<sms|stuur|reply|text|antwoord> STOP|UIT naar|to <its reply number>" counts,
    and this copy gets the footer."""
    number = mobile()
    await world.consent(number, "sms")
    status, answer = await post(world, "Messages.json", [
        ("To", number), ("From", world.sms), ("Body", body)])
    assert status == 201, answer
    (sent,) = fake.creates()
    assert sent.value("Body") == f"{body}\nAfmelden? Sms STOP naar {world.sms}"
    (row,) = await rows_for(world, number)
    assert row["obligations"] == ["OPT_OUT_APPENDED"]
    assert row["details"]["footer_appended"] is True


@pytest.mark.parametrize("kind", ["alphanumeric", "messaging service"])
async def test_finding_12_opt_out_line_names_a_sender_no_one_can_text(
        world: World, fake: FakeTwilio, kind: str) -> None:
    """FINDING 12 (fixed). The default footer is "Afmelden? Sms STOP naar {sender}"; from an
    alphanumeric sender ID or a MessagingServiceSid it told the person to text STOP to
    "EnergieBV" or "MG…", an opt-out no one can use (N12, N17), recorded as OPT_OUT_APPENDED.
    Now a marketing SMS whose organisation's footer names {sender} is denied
    OPT_OUT_NOT_APPENDABLE (403, 930050) when the sender is not a phone number."""
    tail = world.org[-10:]  # hex, unique to this test: senders are registered once
    sms_sender = "E" + tail if kind == "alphanumeric" else "MG" + (tail * 4)[:32]
    await sender(world, sms_sender)
    number = mobile()
    await world.consent(number, "sms")
    field = "MessagingServiceSid" if kind == "messaging service" else "From"
    status, answer = await post(world, "Messages.json", [
        ("To", number), (field, sms_sender), ("Body", "Nieuwe aanbieding")])
    assert (status, answer["code"], answer["reason"]) == (403, 930050, "OPT_OUT_NOT_APPENDABLE")
    assert "number that can receive STOP" in answer["message"]
    assert fake.creates() == []
    (row,) = await rows_for(world, number)
    assert (row["decision"], row["reason"], row["rule"]) == ("deny", "OPT_OUT_NOT_APPENDABLE",
                                                             "N17")
    assert row["id"] == answer["decision_id"]


# --- attacks the gate withstood (regression tests) ----------------------------------------

@pytest.mark.parametrize("spelling", [
    "+\uff13\uff11{nsn}",  # full-width digits
    "+31\u00a0{nsn}",  # no-break space
    "0031 {nsn}",
    "+31 (0){nsn}",
    " {national}\n",
])
async def test_look_alike_spellings_of_an_objected_number_are_refused(
        world: World, fake: FakeTwilio, spelling: str) -> None:
    target = await objected(world)
    nsn = target[3:]
    to = spelling.format(nsn=nsn, national="0" + nsn)
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t")])
    assert (status, body["code"]) == (403, OBJECTION)
    assert fake.creates() == []


@pytest.mark.parametrize("mark", ["\u200b", "\u200f", "\u200e", "\ufeff", "\u2060"])
async def test_invisible_characters_in_to_reach_no_one(world: World, fake: FakeTwilio,
                                                       mark: str) -> None:
    target = await objected(world)
    for to in (mark + target, target[:6] + mark + target[6:], target + mark):
        status, body = await post(world, "Calls.json", [
            ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t")])
        assert status in (400, 403), body
    # Digits of another script are refused rather than read as the same number.
    arabic = "+" + "".join(chr(0x0660 + int(d)) for d in target[1:])
    status, _ = await post(world, "Calls.json", [
        ("To", arabic), ("From", world.voice), ("Url", "https://dialer.example/t")])
    assert status == 403
    assert fake.creates() == []


async def test_form_encoding_games_reach_no_one(world: World, fake: FakeTwilio) -> None:
    allowed, target = await consented(world), await objected(world)
    q = {"a": allowed.replace("+", "%2B"), "t": target.replace("+", "%2B"), "f":
         world.voice.replace("+", "%2B")}
    tail = "&From={f}&Url=https%3A%2F%2Fd.example%2Ft"
    bodies = [
        "To={a};To={t}" + tail,  # ';' is no separator, for the proxy nor for Twilio
        "To={a}&To={t}" + tail,  # a second To
        "To={a}&to={t}" + tail,  # the same name in another case
        "To={a}&To%20={t}" + tail,
        "To={a}&To%5B%5D={t}" + tail,
        "To={a}%00{t}" + tail,
        "To=%C0%AB31" + target[3:] + tail,  # an overlong '+'
        "To={t}%FF" + tail,
    ]
    for raw in bodies:
        status, body = await post(world, "Calls.json", raw.format(**q).encode(),
                                  headers=FORM)
        assert status in (400, 403), (raw, body)
    assert fake.creates() == []
    # A literal '+' is a space: `To=+316…` is decided (and sent) as the number it spells.
    status, _ = await post(world, "Calls.json", (
        "To=" + target + tail.format(**q)).encode(), headers=FORM)
    assert status in (400, 403)
    assert fake.creates() == []


@pytest.mark.parametrize("dial", [
    "<Dial>{a}<!-- x -->{b}</Dial>",
    "<Dial><![CDATA[{t}]]></Dial>",
    "<Dial>&#43;&#51;&#49;{rest}</Dial>",
    "<dial><number>{t}</number></dial>",
    "<Dial>\n  {t}\n</Dial>",
    "<Gather><Say>Kies</Say><Dial>{t}</Dial></Gather>",
    "<Dial><Client>agent</Client>{t}</Dial>",
    "<Dial><Number sendDigits=\"1\" url=\"https://d.example/w\">{full}</Number></Dial>",
    "<Connect><Dial>{t}</Dial></Connect>",
    "<Dial><WhatsApp>{t}</WhatsApp></Dial>",
    "<Refer><Sip>sip:{t}@carrier.example</Sip></Refer>",
    "<Message to=\"{t}\">Hoi</Message>",
    "<Enqueue><Task>{{}}</Task></Enqueue><Dial>{t}</Dial>",
])
async def test_twiml_hiding_an_objected_number_is_refused(world: World, fake: FakeTwilio,
                                                          dial: str) -> None:
    target = await objected(world)
    full = "+" + "".join(chr(0xFF10 + int(d)) for d in target[1:])
    document = "<Response>" + dial.format(t=target, a=target[:7], b=target[7:],
                                          rest=target[3:], full=full) + "</Response>"
    status, body = await post(world, "Calls.json", [
        ("To", await consented(world)), ("From", world.voice), ("Twiml", document)])
    assert status in (400, 403), body
    assert fake.creates() == []


@pytest.mark.parametrize("element", [
    '<Dial action="https://d.example/a"><Number url="https://d.example/w">{n}</Number></Dial>',
    '<Enqueue waitUrl="https://d.example/w" action="https://d.example/a">q</Enqueue>',
    '<Connect action="https://d.example/a"><Stream url="wss://d.example/s"/></Connect>',
    '<Gather ACTION="https://d.example/a"/>',
    '<Redirect>HTTPS://d.example/r</Redirect>',
    '<Redirect> https://user:pw@d.example/r </Redirect>',
    '<Dial referUrl="https://d.example/r"><Queue url="https://d.example/q">q</Queue></Dial>',
])
async def test_twiml_urls_in_a_create_lead_through_the_relay(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], element: str) -> None:
    document = "<Response>" + element.format(n=await consented(world)) + "</Response>"
    status, body = await post(world, "Calls.json", [
        ("To", await consented(world)), ("From", world.voice), ("Twiml", document)])
    assert status == 201, body
    (sent,) = fake.creates()
    text = (sent.value("Twiml") or "").lower()
    assert "https://d.example" not in text  # wss: a media stream, not TwiML: left as is
    assert "pw@" not in text


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "PATCH", "DELETE", "GET"])
async def test_other_methods_on_a_create_path_create_nothing(
        world: World, fake: FakeTwilio, method: str) -> None:
    target = await objected(world)
    status, _ = await post(world, "Calls.json", [
        ("To", target), ("From", world.voice), ("Url", "https://d.example/t")], method=method,
        headers={"X-HTTP-Method-Override": "POST", "X-Method-Override": "POST"})
    assert status >= 400
    assert fake.creates() == []
    assert not [r for r in fake.received if r.method != "GET"]


async def test_request_smuggling_headers_create_nothing(world: World, fake: FakeTwilio) -> None:
    target = await objected(world)
    form = f"To={target.replace('+', '%2B')}&From={world.voice.replace('+', '%2B')}&Url=x"
    body = f"{len(form):x}\r\n{form}\r\n0\r\n\r\n".encode()
    answer = await asyncio.to_thread(
        send_raw, world.base, "POST", ACCOUNT.format(sid=world.sid) + "Calls.json",
        body=body, headers={**basic(world.sid, world.token), **FORM,
                            "Transfer-Encoding": "chunked", "Content-Length": "4"})
    assert answer.status == 400
    assert fake.creates() == []


async def test_live_updates_of_others_and_ambiguous_updates_are_refused(
        world: World, fake: FakeTwilio, proxy: TestClient[Any, Any], auth: dict[str, str]
        ) -> None:
    status, created = await post(world, "Calls.json", [
        ("To", await consented(world)), ("From", world.voice), ("Url", "https://d.example/t")])
    assert status == 201
    tail = f"Calls/{created['sid']}.json"
    other = await make_world(proxy, auth)
    target = await objected(world)
    dial = f"<Response><Dial>{target}</Dial></Response>"
    assert (await post(other, tail, [("Twiml", dial)]))[0] == 404
    assert (await post(world, tail, [("Twiml", "<Response/>"), ("Url", "https://x/y")]))[0] \
        == 400
    assert (await post(world, tail, [("Twiml", dial)]))[0] == 403
    assert (await post(world, tail, [("Url", "//d.example/t")]))[0] == 400
    assert [r for r in fake.received if r.path.endswith(tail)] == []
    (row,) = await rows_for(world, target)
    assert row["decision"] == "deny"


async def test_relay_ids_cannot_be_replayed_across_kinds_urls_or_accounts(
        world: World, fake: FakeTwilio, dialer: Dialer) -> None:
    status, created = await post(world, "Calls.json", [
        ("To", await consented(world)), ("From", world.voice), ("Url", dialer.url("/t")),
        ("StatusCallback", dialer.url("/status"))])
    assert status == 201
    sid = created["sid"]
    twiml_url, _ = fake.url_of(sid, "Url")
    callback_url, _ = fake.url_of(sid, "StatusCallback")
    relay_id = callback_url.rsplit("/", 1)[1]
    # A callback's id on the TwiML route (and the other way round): unknown.
    swapped = twiml_url.rsplit("/", 1)[0] + "/" + relay_id
    assert (await fake.request_url(swapped, fake.call_params(sid)))[0] == 404
    # Signed by the upstream account, but for another URL than the one requested.
    params = fake.call_params(sid)
    signature = RequestValidator(UP_TOKEN).compute_signature(callback_url, MultiDict(params))
    async with aiohttp.ClientSession() as session, session.post(
            twiml_url, data=params, headers={"X-Signature": "", "X-Twilio-Signature":
                                             signature}) as resp:
        assert resp.status == 403
    # Properly signed, but naming the client's account instead of the upstream one.
    status, _, _ = await fake.request_url(twiml_url, fake.call_params(sid, AccountSid=world.sid))
    assert status == 403
    assert dialer.seen == []


async def test_finding_13_calls_on_liberation_day_outside_lustrum_years(
        world: World, fake: FakeTwilio, clock: Clock) -> None:
    """FINDING 13 (fixed). nl-rules.md N13 (revised 2026-12-03): the public holidays are the
    Algemene termijnenwet list every year, 5 May included; the `holidays` package lists 5 May
    only in lustrum years, and a marketing call on Wednesday 5 May 2027 at 11:00 was placed.
    Now it is refused as PROHIBITED_DAY."""
    to = mobile()
    clock.now = dt.datetime(2027, 5, 4, 11, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    await world.consent(to, "voice", given_at="2027-05-03T12:00:00+02:00",
                        verified_at="2027-05-03T12:05:00+02:00")
    clock.now = dt.datetime(2027, 5, 5, 11, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    status, body = await post(world, "Calls.json", [
        ("To", to), ("From", world.voice), ("Url", "https://dialer.example/t")])
    assert fake.creates() == [], (status, body)
    (row,) = await rows_for(world, to)
    assert row["reason"] == "PROHIBITED_DAY"
