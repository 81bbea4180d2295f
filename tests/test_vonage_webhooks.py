"""Vonage's inbound SMS webhook: signed STOP, START and HELP (N11, N12) through the
provider-neutral loop, replies sent back through the (fake) upstream, relays to a sender's
own webhook, and forged, stale or unsigned deliveries refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from vonage_http_client import Auth
from vonage_sms import SmsError, SmsMessage
from vonage_voice import CreateCallRequest, Talk
from yarl import URL

from proxy.keys import OPTOUT_SPOOL, POOL
from tests.conftest import Clock, mobile
from tests.fake_vonage import FakeVonage
from tests.test_vonage_front import digits
from tests.vonage_world import (
    SIGNATURE_METHOD,
    SIGNATURE_SECRET,
    UP_SECRET,
    Tls,
    VonageWorld,
    start_proxy,
    vonage_env,
)
from tests.world import World, in_thread, make_world

pytest_plugins = ["tests.vonage_fixtures"]

PATH = "/webhooks/vonage/inbound-sms"


def message(w: World, person: str, text: str, clock: Clock, **extra: str) -> dict[str, str]:
    return {"msisdn": digits(person), "to": digits(w.sms), "messageId": secrets.token_hex(8),
            "text": text, "type": "text", "keyword": text.split()[0].upper(),
            "message-timestamp": clock().strftime("%Y-%m-%d %H:%M:%S"), **extra}


def signed(params: dict[str, str], clock: Clock, secret: str = SIGNATURE_SECRET
           ) -> dict[str, str]:
    out = {**params, "timestamp": str(int(clock().timestamp())),
           "nonce": secrets.token_hex(8)}
    auth = Auth(api_key="upkey123", signature_secret=secret, signature_method=SIGNATURE_METHOD)
    out["sig"] = auth.sign_params(dict(out))
    return out


async def deliver(w: World, params: dict[str, str]) -> int:
    resp = await w.admin.post(PATH, data=urlencode(params), headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    return resp.status


async def sms_status(w: World, number: str) -> str:
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number), "from": digits(w.sms),
        "text": "Aanbieding"})
    status: str = (await resp.json())["messages"][0]["status"]
    return status


async def test_signed_stop_blocks_the_next_send_and_start_lifts_it(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    person = mobile()
    await w.consent(person, "sms")
    assert await sms_status(w, person) == "0"
    stop = signed(message(w, person, "STOP", clock), clock)
    assert await deliver(w, stop) == 204
    assert await sms_status(w, person) == "7"  # Number barred
    # The reply went back to the person through the upstream, from our number.
    replies = [r for r in fake_vonage.sms() if r.value("to") == digits(person)
               and r.value("from") == digits(w.sms) and "STOP" not in (r.value("text") or "")
               and r.value("text") != "Aanbieding" and not (r.value("text") or "").startswith(
                   "Aanbieding")]
    assert len(replies) == 1
    assert replies[0].authenticated
    # Vonage delivers the same message again: no second reply, still blocked.
    before = len(fake_vonage.sms())
    assert await deliver(w, signed({k: v for k, v in stop.items()
                                    if k not in ("sig", "timestamp", "nonce")}, clock)) == 204
    assert len(fake_vonage.sms()) == before
    row = await w.admin.app[POOL].fetchrow(
        "SELECT provider, intent FROM inbound_messages WHERE provider = 'vonage' AND "
        "message_id = $1", stop["messageId"])
    assert (row["provider"], row["intent"]) == ("vonage", "stop")
    start = signed(message(w, person, "START", clock), clock)
    assert await deliver(w, start) == 204
    assert await sms_status(w, person) == "0"


async def test_help_is_answered(vworld: VonageWorld, fake_vonage: FakeVonage,
                                clock: Clock) -> None:
    w = vworld.world
    person = mobile()
    assert await deliver(w, signed(message(w, person, "HELP", clock), clock)) == 204
    (reply,) = fake_vonage.sms()
    assert reply.value("to") == digits(person)
    assert "STOP" in (reply.value("text") or "")


async def test_jwt_signed_json_delivery_and_get_delivery(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    person, other = mobile(), mobile()
    await w.consent(person, "sms")
    await w.consent(other, "sms")
    body = json.dumps(message(w, person, "Stop", clock)).encode()
    token = jwt.encode({"iat": int(clock().timestamp()), "jti": secrets.token_hex(8),
                        "payload_hash": hashlib.sha256(body).hexdigest()},
                       SIGNATURE_SECRET, algorithm="HS256")
    resp = await w.admin.post(PATH, data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert resp.status == 204
    assert await sms_status(w, person) == "7"
    query = urlencode(signed(message(w, other, "STOP", clock), clock))
    resp = await w.admin.get(f"{PATH}?{query}")
    assert resp.status == 204
    assert await sms_status(w, other) == "7"


async def test_forged_stale_and_unsigned_deliveries_are_refused(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    person = mobile()
    await w.consent(person, "sms")
    params = message(w, person, "STOP", clock)
    good = signed(params, clock)
    cases: dict[str, tuple[dict[str, str], int]] = {
        "unsigned": (params, 401),
        "wrong secret": (signed(params, clock, secret="not-the-secret"), 403),
        "tampered": ({**good, "msisdn": digits(mobile())}, 403),
        "stale": (signed(params, Clock(clock() - dt.timedelta(minutes=10))), 403),
    }
    for name, (data, status) in cases.items():
        assert await deliver(w, data) == status, name
    body = json.dumps(params).encode()
    jwt_cases: dict[str, dict[str, Any]] = {
        "wrong payload_hash": {"payload_hash": hashlib.sha256(b"other").hexdigest()},
        "no payload_hash": {},
        "stale": {"payload_hash": hashlib.sha256(body).hexdigest(),
                  "iat": int(clock().timestamp()) - 3600},
    }
    for name, claims in jwt_cases.items():
        token = jwt.encode({"iat": int(clock().timestamp()), **claims}, SIGNATURE_SECRET,
                           algorithm="HS256")
        resp = await w.admin.post(PATH, data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert resp.status == 403, name
    forged = jwt.encode({"iat": int(clock().timestamp()),
                         "payload_hash": hashlib.sha256(body).hexdigest()},
                        "x" * 40, algorithm="HS256")
    resp = await w.admin.post(PATH, data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {forged}"})
    assert resp.status == 403
    assert await sms_status(w, person) == "0"
    assert [r for r in fake_vonage.sms() if r.value("text") != "Aanbieding" and not (
        r.value("text") or "").startswith("Aanbieding")] == []


async def test_other_messages_are_relayed_signed_for_the_client(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock, auth: dict[str, str]
        ) -> None:
    w = vworld.world
    got: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append({k: str(v) for k, v in (await request.post()).items()})
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/inbound", hook)
    server = TestServer(app)
    await server.start_server()
    try:
        sender = "+3120" + str(secrets.randbelow(9_000_000) + 1_000_000)
        resp = await w.admin.post("/admin/v1/senders", json={
            "sender": sender, "organisation": w.org, "topic": "energy/electricity",
            "inbound_webhook": str(server.make_url("/inbound"))}, headers=auth)
        assert resp.status == 201, await resp.text()
        person = mobile()
        params = message(w, person, "Wanneer belt u?", clock, to=digits(sender))
        assert await deliver(w, signed(params, clock)) == 204
    finally:
        await server.close()
    (relayed,) = got
    assert relayed["text"] == "Wanneer belt u?"
    assert relayed["api-key"] == w.sid
    check = Auth(api_key=w.sid, signature_secret=w.token, signature_method=SIGNATURE_METHOD)
    assert check.check_signature(dict(relayed))
    assert fake_vonage.sms() == []  # no reply to an ordinary message




async def test_stop_during_a_database_outage_is_spooled_and_answered(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    person = mobile()
    w.admin.app[POOL].terminate()  # the consent store goes away
    assert await deliver(w, signed(message(w, person, "STOP", clock), clock)) == 204
    assert w.admin.app[OPTOUT_SPOOL].entries == 1  # N11: never dropped
    (reply,) = fake_vonage.sms()
    assert reply.value("to") == digits(person)


async def test_without_a_signature_secret_every_delivery_is_refused(
        aiohttp_client: Any, database_url: str, clock: Clock, tls: Tls,
        fake_vonage: FakeVonage, upstream_key_path: Path, tmp_path: Path,
        trust_test_ca: None, auth: dict[str, str]) -> None:
    env = vonage_env(fake_vonage, upstream_key_path)
    del env["VONAGE_SIGNATURE_SECRET"]
    proxy = await start_proxy(aiohttp_client, database_url, clock, tls, env, tmp_path)
    w = await make_world(proxy, auth)
    assert await deliver(w, signed(message(w, mobile(), "STOP", clock), clock)) == 403


async def test_no_number_text_or_secret_in_the_log(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock,
        log_output: io.StringIO) -> None:
    w = vworld.world
    allowed, denied, stopper = mobile(), mobile(), mobile()
    await w.consent(allowed, "sms")
    await w.consent(allowed, "voice")
    secret_text = "Geheime aanbieding 4711 voor u"
    sdk = vworld.sdk()
    await in_thread(lambda: sdk.sms.send(SmsMessage(
        to=digits(allowed), from_=digits(w.sms), text=secret_text)))
    with pytest.raises(SmsError):
        await in_thread(lambda: sdk.sms.send(SmsMessage(
            to=digits(denied), from_=digits(w.sms), text=secret_text)))
    await in_thread(lambda: sdk.voice.create_call(CreateCallRequest(
        to=[{"type": "phone", "number": digits(allowed)}],
        from_={"type": "phone", "number": digits(w.voice)}, ncco=[Talk(text=secret_text)])))
    assert await deliver(w, signed(message(w, stopper, "Stop aub", clock), clock)) == 204
    assert await deliver(w, signed(message(w, stopper, "Stop aub", clock), clock,
                                   secret="forged-secret")) == 403
    raw = log_output.getvalue()
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert any(e.get("front") == "vonage" for e in lines)
    for number in (allowed, denied, stopper):
        assert number[3:] not in raw, number
    for secret in (secret_text, "Stop aub", w.token, SIGNATURE_SECRET, UP_SECRET,
                   vworld.app.private_pem.splitlines()[1]):
        assert secret not in raw, secret
    decided = [e for e in lines if e.get("decision")]
    assert {e["decision"] for e in decided} == {"allow", "deny"}
    assert all(e["to"].startswith("+31 6 ****") for e in decided)


async def test_a_jwt_binds_the_query_of_a_get_delivery(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    person, victim = mobile(), mobile()
    await w.consent(victim, "sms")
    mine = urlencode(message(w, person, "Hallo", clock))
    token = jwt.encode({"iat": int(clock().timestamp()),
                        "payload_hash": hashlib.sha256(mine.encode()).hexdigest()},
                       SIGNATURE_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    base = w.admin.make_url(PATH)

    def url(query: str) -> Any:  # the query exactly as signed, not re-encoded
        return URL.build(scheme=base.scheme, host=base.host or "", port=base.port, path=PATH,
                         query_string=query, encoded=True)

    assert (await w.admin.session.get(url(mine), headers=headers)).status == 204
    theirs = urlencode(message(w, victim, "STOP", clock))
    assert (await w.admin.session.get(url(theirs), headers=headers)).status == 403
    assert await sms_status(w, victim) == "0"


async def test_a_start_vonage_delivers_late_never_lifts_a_newer_stop(
        vworld: VonageWorld, clock: Clock) -> None:
    """N11: Vonage's message-timestamp (UTC) says when the person sent it; a START sent
    before the STOP but delivered after it leaves the STOP standing."""
    w = vworld.world
    person = mobile()
    await w.consent(person, "sms")
    now = clock().astimezone(dt.UTC)

    def at(text: str, moment: dt.datetime) -> dict[str, str]:
        return signed(message(w, person, text, clock,
                              **{"message-timestamp": moment.strftime("%Y-%m-%d %H:%M:%S")}),
                      clock)

    assert await deliver(w, at("STOP", now)) == 204
    assert await deliver(w, at("START", now - dt.timedelta(minutes=3))) == 204
    assert await sms_status(w, person) == "7"  # still barred
    assert await deliver(w, at("START", now)) == 204
    assert await sms_status(w, person) == "0"
