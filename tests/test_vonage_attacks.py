"""Attacks on the Vonage front by a client with valid credentials: bodies built to crash the
front, endpoint fields that reach further than the decided number, and names shared with
other clients' calls."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from yarl import URL

from proxy.keys import POOL
from tests.conftest import Clock, mobile
from tests.fake_vonage import FakeVonage
from tests.test_vonage_calls import send_raw, token
from tests.test_vonage_events import signed_event
from tests.test_vonage_front import digits
from tests.vonage_world import KeyPair, Tls, VonageWorld, key_pair, register_application
from tests.world import make_world

pytest_plugins = ["tests.vonage_fixtures"]


def _call(w: VonageWorld, number: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": [{"type": "phone", "number": digits(number)}],
                            "from": {"type": "phone", "number": digits(w.world.voice)},
                            "ncco": [{"action": "talk", "text": "a"}]}
    body.update(extra)
    return body


@pytest.mark.parametrize("raw", [
    # An action name that is not a string (a list cannot be looked up in a set).
    b'{"to":[{"type":"phone","number":"31612345678"}],"from":{"type":"phone",'
    b'"number":"31201234567"},"ncco":[{"action":["connect"]}]}',
    b'{"to":[{"type":"phone","number":"31612345678"}],"from":{"type":"phone",'
    b'"number":"31201234567"},"ncco":[{"action":{"a":1}}]}',
])
async def test_non_string_ncco_action_is_400_not_500(
        vworld: VonageWorld, fake_vonage: FakeVonage, raw: bytes) -> None:
    resp = await vworld.world.admin.post("/v1/calls", data=raw, headers={
        "Authorization": "Bearer " + token(vworld.app), "Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["invalid_parameters"][0]["name"] == "ncco[0].action"
    assert fake_vonage.call_creates() == []


@pytest.mark.parametrize("body", [{"action": ["hangup"]}, {"action": {"hangup": 1}},
                                  {"action": 1}])
async def test_non_string_update_action_is_400_not_500(
        vworld: VonageWorld, fake_vonage: FakeVonage, body: dict[str, Any]) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    created = await w.admin.post("/v1/calls", json=_call(vworld, number), headers={
        "Authorization": "Bearer " + token(vworld.app)})
    assert created.status == 201, await created.text()
    call_uuid = (await created.json())["uuid"]
    resp = await w.admin.put(f"/v1/calls/{call_uuid}", json=body, headers={
        "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    assert [r for r in fake_vonage.received if r.method == "PUT"] == []


@pytest.mark.parametrize(("extra", "field"), [
    ({"to": [{"type": "phone", "number": "31612345678", "dtmfAnswer": "p9p0031201234567#"}]},
     "to[0].dtmfAnswer"),
    ({"ncco": [{"action": "connect", "endpoint": [
        {"type": "phone", "number": "31612345678", "dtmfAnswer": "1234#"}]}]},
     "ncco[0].endpoint[0].dtmfAnswer"),
])
async def test_dtmf_on_answer_is_refused(vworld: VonageWorld, fake_vonage: FakeVonage,
                                          extra: dict[str, Any], field: str) -> None:
    """Digits played on answer could make a PBX behind an allowed number dial out."""
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    body = _call(vworld, number, **extra)
    if "to" in extra:
        body["to"][0]["number"] = digits(number)
    resp = await w.admin.post("/v1/calls", json=body, headers={
        "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["invalid_parameters"][0]["name"] == field
    assert fake_vonage.call_creates() == []


async def test_conversations_are_not_shared_between_clients(
        vworld: VonageWorld, fake_vonage: FakeVonage, auth: dict[str, str]) -> None:
    """One upstream application carries every client's calls: a conversation named like
    another client's would bridge that client's callee into this client's call."""
    w = vworld.world
    other = await make_world(w.admin, auth)
    other_app = key_pair()
    await register_application(other, other_app)
    names = []
    for world, app in ((w, vworld.app), (other, other_app)):
        number = mobile()
        await world.consent(number, "voice")
        resp = await world.admin.post("/v1/calls", json={
            "to": [{"type": "phone", "number": digits(number)}],
            "from": {"type": "phone", "number": digits(world.voice)},
            "ncco": [{"action": "conversation", "name": "sales"}]}, headers={
                "Authorization": "Bearer " + token(app)})
        assert resp.status == 201, await resp.text()
        names.append(fake_vonage.call_creates()[-1].json["ncco"][0]["name"])
    assert names[0] != names[1]
    assert names == [f"{w.sid}:sales", f"{other.sid}:sales"]


async def test_a_conversation_without_a_name_is_400(vworld: VonageWorld,
                                                     fake_vonage: FakeVonage) -> None:
    number = mobile()
    await vworld.world.consent(number, "voice")
    for action in ({"action": "conversation"}, {"action": "conversation", "name": ["a"]}):
        resp = await vworld.world.admin.post("/v1/calls", json=_call(
            vworld, number, ncco=[action]), headers={
                "Authorization": "Bearer " + token(vworld.app)})
        assert resp.status == 400, await resp.text()
    assert fake_vonage.call_creates() == []


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(app: KeyPair, claims: dict[str, Any], alg: str) -> str:
    """A JWT MACed with the application's public key as an HMAC secret (alg confusion)."""
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(app.public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{_b64(mac.digest())}"


def _rs256_raw(app: KeyPair, payload: bytes) -> str:
    """An RS256 JWT over a payload written byte for byte (duplicate keys, NaN)."""
    key = serialization.load_pem_private_key(app.private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    head = _b64(b'{"alg":"RS256","typ":"JWT"}')
    signing_input = f"{head}.{_b64(payload)}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{_b64(payload)}.{_b64(signature)}"


async def test_jwt_tricks_are_401_never_500(vworld: VonageWorld, fake_vonage: FakeVonage,
                                            auth: dict[str, str]) -> None:
    w = vworld.world
    app = vworld.app
    other = await make_world(w.admin, auth)
    other_app = key_pair()
    await register_application(other, other_app)
    now = int(time.time())
    claims = {"application_id": app.application_id, "iat": now, "exp": now + 60,
              "jti": str(uuid.uuid4())}
    aid = app.application_id.encode()
    cases = {
        "HS256 with the public key": _hs256_with_public_key(app, claims, "HS256"),
        "RS256 header, HMAC with the public key": _hs256_with_public_key(app, claims, "RS256"),
        "none": _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(claims)
                                                                 .encode()) + ".",
        "NaN iat": _rs256_raw(app, b'{"application_id":"' + aid + b'","iat":NaN,"exp":'
                              + str(now + 60).encode() + b',"jti":"n1"}'),
        "Infinity exp": _rs256_raw(app, b'{"application_id":"' + aid + b'","iat":'
                                   + str(now).encode() + b',"exp":Infinity,"jti":"n2"}'),
        "string exp": _rs256_raw(app, b'{"application_id":"' + aid + b'","iat":'
                                 + str(now).encode() + b',"exp":"' + str(now + 60).encode()
                                 + b'","jti":"n3"}'),
        "numeric jti": token(app, jti=12345),
        "not before in the future": token(app, nbf=now + 3600),
        # Signed by this client's key, naming another client's application.
        "another client's application": token(KeyPair(app.private_pem, app.public_pem,
                                                       other_app.application_id)),
        # The second application_id names the other client's application.
        "duplicate application_id": _rs256_raw(
            app, b'{"application_id":"' + aid + b'","iat":' + str(now).encode()
            + b',"exp":' + str(now + 60).encode() + b',"jti":"d1","application_id":"'
            + other_app.application_id.encode() + b'"}'),
        "list application_id": token(app, application_id=[app.application_id]),
    }
    body = _call(vworld, mobile())
    for name, value in cases.items():
        resp = await w.admin.post("/v1/calls", json=body, headers={
            "Authorization": f"Bearer {value}"})
        assert resp.status == 401, (name, resp.status, await resp.text())
    assert fake_vonage.call_creates() == []


async def test_a_connects_event_url_leads_through_the_proxy(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    """The vonage SDKs document a connect's events as synchronous by default: what its
    eventUrl answers could be a new NCCO dialling anyone. It goes through the relay, which
    answers no NCCO."""
    w = vworld.world
    number, other = mobile(), mobile()
    await w.consent(number, "voice")
    await w.consent(other, "voice")
    resp = await w.admin.post("/v1/calls", json=_call(vworld, number, ncco=[
        {"action": "connect", "eventUrl": ["https://dialer.invalid/ncco"],
         "endpoint": [{"type": "phone", "number": digits(other)}]}]), headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 201, await resp.text()
    (received,) = fake_vonage.call_creates()
    (relay,) = received.json["ncco"][0]["eventUrl"]
    assert "/webhooks/vonage/event/" in relay
    raw, signature = signed_event({"uuid": str(uuid.uuid4()), "status": "timeout"}, clock)
    answer = await w.admin.post(URL(relay).path, data=raw, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {signature}"})
    assert answer.status == 204
    assert await answer.read() == b""


@pytest.mark.parametrize(("action", "field"), [
    ({"eventUrl": "https://dialer.invalid/ncco"}, "ncco[0].eventUrl"),
    ({"eventUrl": ["https://a.invalid/", "https://b.invalid/"]}, "ncco[0].eventUrl"),
    ({"eventUrl": ["/relative"]}, "ncco[0].eventUrl"),
    ({"eventUrl": ["https://dialer.invalid/ncco"], "eventMethod": "GET"},
     "ncco[0].eventMethod"),
])
async def test_a_connects_event_url_must_be_one_post_url(
        vworld: VonageWorld, fake_vonage: FakeVonage, action: dict[str, Any],
        field: str) -> None:
    number = mobile()
    await vworld.world.consent(number, "voice")
    resp = await vworld.world.admin.post("/v1/calls", json=_call(vworld, number, ncco=[
        {"action": "connect", "endpoint": [{"type": "phone", "number": digits(number)}],
         **action}]), headers={"Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["invalid_parameters"][0]["name"] == field
    assert fake_vonage.call_creates() == []


def _nested(depth: int) -> bytes:
    return b'{"to":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [200, 950, 1020])
async def test_deeply_nested_json_is_400_not_500(vworld: VonageWorld, fake_vonage: FakeVonage,
                                                 depth: int) -> None:
    w = vworld.world
    calls = await w.admin.post("/v1/calls", data=_nested(depth), headers={
        "Authorization": "Bearer " + token(vworld.app), "Content-Type": "application/json"})
    assert calls.status == 400, await calls.text()
    sms = await w.admin.post("/sms/json", data=_nested(depth), headers={
        "Content-Type": "application/json"})
    assert sms.status == 200  # Vonage's SMS API answers problems in its body
    assert (await sms.json())["messages"][0]["status"] == "3"
    assert fake_vonage.received == []


async def test_a_connect_with_an_unknown_option_is_400(vworld: VonageWorld,
                                                       fake_vonage: FakeVonage) -> None:
    number = mobile()
    await vworld.world.consent(number, "voice")
    resp = await vworld.world.admin.post("/v1/calls", json=_call(vworld, number, ncco=[
        {"action": "connect", "endpoint": [{"type": "phone", "number": digits(number)}],
         "fallbackNcco": [{"action": "connect", "endpoint": [
             {"type": "phone", "number": digits(mobile())}]}]}]), headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["invalid_parameters"][0]["name"] == "ncco[0].fallbackNcco"
    assert fake_vonage.call_creates() == []


def _spellings(number: str) -> list[str]:
    """An E.164 number written the ways a dialer might hide it."""
    bare = number.lstrip("+")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in bare)
    arabic = "".join(chr(0x0660 + int(c)) for c in bare)
    return [bare, "00" + bare, " " + bare + " ", "+" + bare, fullwidth, arabic,
            "0" + bare[2:], bare[:4] + " " + bare[4:]]


async def test_an_objected_number_in_any_spelling_is_never_called_or_texted(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    await w.consent(number, "sms")
    await w.objection(number)
    allowed = mobile()
    await w.consent(allowed, "voice")
    for spelling in _spellings(number):
        call = await w.admin.post("/v1/calls", json=_call(vworld, allowed, ncco=[
            {"action": "connect", "endpoint": [{"type": "phone", "number": spelling}]}]),
            headers={"Authorization": "Bearer " + token(vworld.app)})
        assert call.status in (400, 403), (spelling, await call.text())
        own = await w.admin.post("/v1/calls", json=_call(vworld, allowed, to=[
            {"type": "phone", "number": spelling}]), headers={
                "Authorization": "Bearer " + token(vworld.app)})
        assert own.status in (400, 403), (spelling, await own.text())
        text = await w.admin.post("/sms/json", data={
            "api_key": w.sid, "api_secret": w.token, "from": digits(w.sms),
            "to": spelling, "text": "hallo"})
        assert (await text.json())["messages"][0]["status"] != "0", spelling
    assert fake_vonage.received == []


@pytest.mark.parametrize(("method", "target", "content_type", "raw"), [
    ("GET", "/webhooks/vonage/inbound-sms?msisdn=%FF%FE&text=STOP&sig=00", "", b""),
    ("GET", "/webhooks/vonage/inbound-sms?msisdn=1&msisdn=2&text=STOP&sig=0", "", b""),
    ("GET", "/webhooks/vonage/inbound-sms?text=ST%00OP&sig=0&timestamp=1", "", b""),
    ("POST", "/webhooks/vonage/inbound-sms", "application/x-www-form-urlencoded",
     b"msisdn=\xff\xfe&text=START&sig=0"),
    ("POST", "/webhooks/vonage/inbound-sms", "application/json",
     b'{"msisdn":["31612345678"],"text":"START","sig":"0"}'),
    ("POST", "/webhooks/vonage/inbound-sms", "application/json", _nested(1020)),
    ("POST", "/webhooks/vonage/inbound-sms", "application/json",
     b'{"text":"START","sig":"0","timestamp":"99999999999999999999999"}'),
    ("POST", "/webhooks/vonage/event/abc", "application/json", b'{"status":"busy"}'),
    ("POST", "/webhooks/vonage/event/%2e%2e", "application/json", b"{}"),
    ("POST", "/webhooks/vonage/inbound-sms/../event/x", "application/json", b"{}"),
])
async def test_forged_webhook_bytes_are_refused_never_500(
        vworld: VonageWorld, fake_vonage: FakeVonage, tls: Tls, method: str, target: str,
        content_type: str, raw: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    pool = vworld.world.admin.app[POOL]
    before = await pool.fetchval("SELECT count(*) FROM inbound_messages")
    answer = await asyncio.to_thread(send_raw, vworld.host, tls, method, target, body=raw,
                                     headers=headers)
    assert answer.status in (400, 401, 403, 404, 405), (answer.status, answer.body)
    assert fake_vonage.received == []
    assert await pool.fetchval("SELECT count(*) FROM inbound_messages") == before


async def test_a_caller_id_with_extra_fields_is_400(vworld: VonageWorld,
                                                    fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    resp = await w.admin.post("/v1/calls", json=_call(vworld, number, **{"from": {
        "type": "phone", "number": digits(w.voice), "shaken": "eyJhbGciOiJFUzI1NiJ9..."}}),
        headers={"Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["invalid_parameters"][0]["name"] == "from.shaken"
    assert fake_vonage.call_creates() == []


async def test_one_jwt_sent_twice_at_once_is_accepted_once(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    once = token(vworld.app)
    answers = await asyncio.gather(*(w.admin.post("/v1/calls", json=_call(vworld, number),
                                                  headers={"Authorization": "Bearer " + once})
                                     for _ in range(4)))
    assert sorted(a.status for a in answers) == [201, 401, 401, 401]
    assert len(fake_vonage.call_creates()) == 1


async def test_calls_with_the_store_down_are_503_and_nothing_goes_out(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    w.admin.app[POOL].terminate()  # every connection drops
    resp = await w.admin.post("/v1/calls", json=_call(vworld, number), headers={
        "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["title"] == "Service Unavailable"
    assert fake_vonage.call_creates() == []


async def test_another_clients_sender_is_not_ours_to_use(
        vworld: VonageWorld, fake_vonage: FakeVonage, auth: dict[str, str]) -> None:
    """Consent given to this client's organisation, sent from the other client's number."""
    w = vworld.world
    other = await make_world(w.admin, auth)
    number = mobile()
    await w.consent(number, "voice")
    await w.consent(number, "sms")
    text = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "from": digits(other.sms),
        "to": digits(number), "text": "hallo"})
    assert (await text.json())["messages"][0]["status"] != "0"
    call = await w.admin.post("/v1/calls", json=_call(vworld, number, **{"from": {
        "type": "phone", "number": digits(other.voice)}}), headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert call.status == 403, await call.text()
    connect = await w.admin.post("/v1/calls", json=_call(vworld, number, ncco=[
        {"action": "connect", "from": digits(other.voice),
         "endpoint": [{"type": "phone", "number": digits(number)}]}]), headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert connect.status == 403, await connect.text()
    assert fake_vonage.received == []


async def test_a_connect_without_from_goes_out_with_the_decided_caller_id(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    """Left out, the caller ID of a connect leg would be Vonage's choice among the upstream
    account's numbers (another client's, perhaps): it is written out as decided (N16)."""
    w = vworld.world
    number, other = mobile(), mobile()
    await w.consent(number, "voice")
    await w.consent(other, "voice")
    resp = await w.admin.post("/v1/calls", json=_call(vworld, number, ncco=[
        {"action": "connect", "endpoint": [{"type": "phone", "number": digits(other)}]}]),
        headers={"Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 201, await resp.text()
    (received,) = fake_vonage.call_creates()
    assert received.json["ncco"][0]["from"] == digits(w.voice)
