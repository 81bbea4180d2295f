"""The Vonage Voice API front: calls through the official vonage SDK (an RS256 JWT of the
dialer's registered application), every number of the NCCO decided, reads of the client's own
calls, and the ways around refused."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from vonage_http_client.errors import AuthenticationError, ForbiddenError
from vonage_voice import Connect, CreateCallRequest, PhoneEndpoint, Talk

from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from tests.conftest import REPO, mobile
from tests.fake_vonage import FakeVonage
from tests.test_vonage_front import decisions_for, digits
from tests.vonage_world import KeyPair, Tls, VonageWorld, key_pair, register_application
from tests.world import in_thread, make_world

pytest_plugins = ["tests.vonage_fixtures"]


def call_request(w: VonageWorld, number: str, *ncco: Any) -> CreateCallRequest:
    return CreateCallRequest(
        to=[{"type": "phone", "number": digits(number)}],
        from_={"type": "phone", "number": digits(w.world.voice)},
        ncco=list(ncco) or [Talk(text="Goedemorgen")])


def token(app: KeyPair, **claims: Any) -> str:
    now = int(time.time())
    body = {"application_id": app.application_id, "iat": now, "exp": now + 900,
            "jti": str(uuid.uuid4()), **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, app.private_pem,
                      algorithm="RS256")


async def test_allowed_call_goes_out_with_the_upstream_application(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    sdk = vworld.sdk()
    call = await in_thread(lambda: sdk.voice.create_call(call_request(vworld, "0" + number[3:]
                                                                      .lstrip("+"))))
    (received,) = fake_vonage.call_creates()
    assert received.authenticated  # the upstream application's JWT, not the dialer's
    claims = jwt.decode(received.headers["Authorization"].removeprefix("Bearer "),
                        options={"verify_signature": False})
    assert claims["application_id"] == fake_vonage.application_id
    assert received.json["to"] == [{"type": "phone", "number": digits(number)}]
    assert received.json["from"] == {"type": "phone", "number": digits(w.voice)}
    assert received.json["ncco"] == [{"action": "talk", "text": "Goedemorgen"}]

    (row,) = await decisions_for(w, number)
    assert row["decision"] == "allow"
    assert row["channel"] == "voice"
    assert row["front"] == "vonage"
    assert row["upstream_status"] == 201
    assert row["upstream_sid"] == call.uuid
    assert received.headers["X-Consent-Decision-Id"] == str(row["id"])
    # The client reads its own call.
    info = await in_thread(lambda: sdk.voice.get_call(call.uuid))
    assert info.uuid == call.uuid


async def test_objection_refuses_the_call_in_vonages_shape(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    await w.objection(number)
    sdk = vworld.sdk()
    with pytest.raises(ForbiddenError) as raised:
        await in_thread(lambda: sdk.voice.create_call(call_request(vworld, number)))
    body = raised.value.response.json()
    assert body["title"] == "Forbidden"
    assert body["reason"] == "OBJECTION_ON_FILE"
    assert body["code"] == DENIAL_CODES["OBJECTION_ON_FILE"][1]
    assert set(body) >= {"type", "title", "detail", "instance", "decision_id"}
    assert fake_vonage.call_creates() == []
    (row,) = await decisions_for(w, number)
    assert row["id"] == body["decision_id"]


async def test_connect_to_an_objected_number_refuses_the_call(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number, other = mobile(), mobile()
    await w.consent(number, "voice")
    await w.consent(other, "voice")
    await w.objection(other)
    sdk = vworld.sdk()
    request = call_request(vworld, number, Talk(text="Een moment"), Connect(
        endpoint=[PhoneEndpoint(number=digits(other))], from_=digits(w.voice)))
    with pytest.raises(ForbiddenError) as raised:
        await in_thread(lambda: sdk.voice.create_call(request))
    assert raised.value.response.json()["reason"] == "OBJECTION_ON_FILE"
    assert fake_vonage.call_creates() == []
    (call_row,) = await decisions_for(w, number)
    (connect_row,) = await decisions_for(w, other)
    assert call_row["decision"] == "allow"
    assert call_row["error"].startswith("not forwarded: NCCO destination refused")
    assert connect_row["decision"] == "deny"
    assert connect_row["details"]["endpoint"] == "ncco[1].endpoint[0]"
    assert connect_row["details"]["call_decision_id"] == call_row["id"]


async def test_connect_to_an_allowed_number_goes_out_decided(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number, other = mobile(), mobile()
    await w.consent(number, "voice")
    await w.consent(other, "voice")
    sdk = vworld.sdk()
    request = call_request(vworld, number, Connect(
        endpoint=[PhoneEndpoint(number=digits(other))], from_=digits(w.voice)))
    await in_thread(lambda: sdk.voice.create_call(request))
    (received,) = fake_vonage.call_creates()
    assert received.json["ncco"][0]["endpoint"][0]["number"] == digits(other)
    assert len(await decisions_for(w, other)) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"answer_url": ["https://dialer.example/ncco"]}, "answer_url"),
    ({"random_from_number": True}, "random_from_number"),
    ({"ncco": [{"action": "input", "type": ["dtmf"]}]}, "ncco[0].action"),
    ({"ncco": [{"action": "notify", "payload": {}, "eventUrl": ["https://x/e"]}]},
     "ncco[0].action"),
    ({"ncco": [{"action": "connect", "eventType": "synchronous",
                "endpoint": [{"type": "app", "user": "a"}]}]}, "ncco[0].eventType"),
    ({"ncco": [{"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:a@b"}]}]},
     "ncco[0].endpoint[0].type"),
    ({"ncco": [{"action": "connect", "endpoint": [
        {"type": "websocket", "uri": "wss://x", "content-type": "audio/l16;rate=16000"}]}]},
     "ncco[0].endpoint[0].type"),
    ({"ncco": [{"action": "connect", "endpoint": [{"type": "vbc", "extension": "1"}]}]},
     "ncco[0].endpoint[0].type"),
    ({"ncco": [{"action": "connect", "endpoint": [
        {"type": "phone", "number": "31612345678", "onAnswer": {"url": "https://x"}}]}]},
     "ncco[0].endpoint[0].onAnswer"),
    ({"to": [{"type": "sip", "uri": "sip:a@b"}]}, "to[0].type"),
    ({"to": [{"type": "phone", "number": "31612345678", "shaken": "eyJ..."}]}, "to[0].shaken"),
    ({"ncco": [{"action": "transfer"}]}, "ncco[0].action"),
    ({"bogus": 1}, "bogus"),
])
async def test_what_the_gate_cannot_see_is_refused_naming_the_field(
        vworld: VonageWorld, fake_vonage: FakeVonage, body: dict[str, Any], field: str
        ) -> None:
    w = vworld.world
    base: dict[str, Any] = {"to": [{"type": "phone", "number": digits(mobile())}],
                            "from": {"type": "phone", "number": digits(w.voice)},
                            "ncco": [{"action": "talk", "text": "a"}]}
    base.update(body)
    if "answer_url" in body or "random_from_number" in body:
        base.pop("ncco" if "answer_url" in body else "from")
    resp = await w.admin.post("/v1/calls", json=base, headers={
        "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 400, await resp.text()
    problem = await resp.json()
    assert problem["title"] == "Bad Request"
    assert problem["invalid_parameters"][0]["name"] == field
    assert fake_vonage.call_creates() == []


@pytest.mark.parametrize("raw", [
    b'{"to":[{"type":"phone","number":"31612345678"}],"to":[],"from":{"type":"phone",'
    b'"number":"31201234567"},"ncco":[{"action":"talk","text":"a"}]}',
    b'{"to":[{"type":"phone","number":"31612345678","number":"31612345679"}],'
    b'"from":{"type":"phone","number":"31201234567"},"ncco":[]}',
    b"\xff",
    b"[]",
    b'{"to":[{"type":"phone","number":"3161234\\u00005678"}],"from":{"type":"phone",'
    b'"number":"31201234567"},"ncco":[{"action":"talk","text":"a"}]}',
])
async def test_malformed_call_bodies_are_400(vworld: VonageWorld, fake_vonage: FakeVonage,
                                             raw: bytes) -> None:
    resp = await vworld.world.admin.post("/v1/calls", data=raw, headers={
        "Authorization": "Bearer " + token(vworld.app), "Content-Type": "application/json"})
    assert resp.status == 400
    assert fake_vonage.call_creates() == []


# --- authentication -------------------------------------------------------------------------

async def test_jwts_that_are_not_the_clients_own_are_refused(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    stranger = key_pair()
    body = {"to": [{"type": "phone", "number": digits(mobile())}],
            "from": {"type": "phone", "number": digits(w.voice)},
            "ncco": [{"action": "talk", "text": "a"}]}
    now = int(time.time())
    forged = KeyPair(stranger.private_pem, stranger.public_pem, vworld.app.application_id)
    cases = {
        "none": None,
        "unregistered application": token(stranger),
        "forged signature": token(forged),
        "expired": token(vworld.app, iat=now - 3600, exp=now - 600),
        "future": token(vworld.app, iat=now + 3600, exp=now + 4000),
        "no jti": token(vworld.app, jti=None),
        "too long-lived": token(vworld.app, exp=now + 3 * 86400),
        "HS256": jwt.encode({"application_id": vworld.app.application_id, "iat": now,
                             "exp": now + 60, "jti": "x"}, "s" * 32, algorithm="HS256"),
    }
    for name, value in cases.items():
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        resp = await w.admin.post("/v1/calls", json=body, headers=headers)
        assert resp.status == 401, name
        assert (await resp.json())["title"] == "Unauthorized"
    # A replayed JWT: accepted once.
    once = token(vworld.app)
    first = await w.admin.post("/v1/calls", json=body, headers={"Authorization": "Bearer " +
                                                                   once})
    assert first.status == 403  # decided (no consent), so authenticated
    again = await w.admin.post("/v1/calls", json=body, headers={"Authorization": "Bearer " +
                                                                   once})
    assert again.status == 401
    assert "replayed" in (await again.json())["detail"]
    assert fake_vonage.call_creates() == []


async def test_sdk_with_an_unregistered_application_gets_authentication_error(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    vworld.app = key_pair()  # never registered
    sdk = vworld.sdk()
    with pytest.raises(AuthenticationError):
        await in_thread(lambda: sdk.voice.create_call(call_request(vworld, mobile())))
    assert fake_vonage.call_creates() == []
    del w


async def test_an_application_belongs_to_one_client(vworld: VonageWorld,
                                                     auth: dict[str, str]) -> None:
    other = await make_world(vworld.world.admin, auth)
    resp = await other.admin.put(
        f"/admin/v1/clients/{other.sid}/vonage-applications/{vworld.app.application_id}",
        json={"public_key": vworld.app.public_pem}, headers=auth)
    assert resp.status == 409
    bad = await other.admin.put(
        f"/admin/v1/clients/{other.sid}/vonage-applications/{uuid.uuid4()}",
        json={"public_key": "not a key"}, headers=auth)
    assert bad.status == 422
    assert (await bad.json())["field"] == "public_key"
    unauthenticated = await other.admin.put(
        f"/admin/v1/clients/{other.sid}/vonage-applications/{uuid.uuid4()}",
        json={"public_key": vworld.app.public_pem})
    assert unauthenticated.status == 401
    await register_application(other, key_pair())


# --- the client's own calls -----------------------------------------------------------------

async def test_only_own_calls_are_read_and_transfer_is_refused(
        vworld: VonageWorld, fake_vonage: FakeVonage, auth: dict[str, str]) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    sdk = vworld.sdk()
    call = await in_thread(lambda: sdk.voice.create_call(call_request(vworld, number)))
    # Another client of the proxy, with its own application, cannot read it.
    other = await make_world(w.admin, auth)
    other_app = key_pair()
    await register_application(other, other_app)
    resp = await w.admin.get(f"/v1/calls/{call.uuid}", headers={
        "Authorization": "Bearer " + token(other_app)})
    assert resp.status == 404
    assert (await resp.json())["title"] == "Not Found"
    # A transfer would reach numbers nobody decided.
    with pytest.raises(ForbiddenError) as raised:
        await in_thread(lambda: sdk.voice.transfer_call_ncco(call.uuid, [
            Connect(endpoint=[PhoneEndpoint(number=digits(mobile()))],
                    from_=digits(w.voice))]))
    assert raised.value.response.json()["reason"] == "NOT_PASSED_THROUGH"
    with pytest.raises(ForbiddenError):
        await in_thread(lambda: sdk.voice.transfer_call_answer_url(call.uuid,
                                                                   "https://x/ncco"))
    # Hanging up one's own call passes.
    await in_thread(lambda: sdk.voice.hangup(call.uuid))
    assert fake_vonage.calls[call.uuid]["status"] == "completed"
    puts = [r for r in fake_vonage.received if r.method == "PUT"]
    assert [r.json for r in puts] == [{"action": "hangup"}]


@pytest.mark.parametrize("path", [
    "/v1/calls", "/v1/messages", "/v1/calls/{uuid}/talk", "/v1/calls/{uuid}/../../messages",
    "/v1/calls/%2e%2e/messages", "/v1/calls//{uuid}", "/v1/calls/{uuid}%2f..%2f..%2fmessages",
    "/v0.1/messages", "/sms/json/../../v1/messages", "/sms/xml", "/sms/json/", "/sms//json",
    "/sms/json%2f", "/sc/us/alert/json", "/v1/calls/%2e%2e/%2e%2e/sms/json",
])
async def test_other_paths_are_404_or_405_and_never_forwarded(
        vworld: VonageWorld, fake_vonage: FakeVonage, tls: Tls, path: str) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    sdk = vworld.sdk()
    call = await in_thread(lambda: sdk.voice.create_call(call_request(vworld, number)))
    before = len(fake_vonage.received)
    raw = path.format(uuid=call.uuid)
    body = json.dumps({"to": digits(mobile()), "action": "transfer"}).encode()
    for method in ("GET", "POST", "PUT", "DELETE"):
        answer = await asyncio.to_thread(
            send_raw, vworld.host, tls, method, raw, body=body, headers={
                "Authorization": "Bearer " + token(vworld.app),
                "Content-Type": "application/json"})
        # 200: a path that is the SMS API after all answers in its shape (here a refusal).
        assert answer.status in (200, 400, 401, 404, 405), (method, raw, answer.status)
    assert fake_vonage.received[before:] == []


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def send_raw(host: str, tls: Tls, method: str, target: str, *, body: bytes = b"",
             headers: dict[str, str] | None = None) -> Answer:
    """One request with `target` exactly as given on the request line (blocking)."""
    name, _, port = host.partition(":")
    conn = http.client.HTTPSConnection(name, int(port), timeout=30, context=tls.client)
    try:
        conn.request(method, target, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.read())
    finally:
        conn.close()


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`consent-proxy vonage-application …` in a process of its own, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "proxy.cli", "vonage-application", *args],
                          cwd=REPO, env=env, text=True, capture_output=True, timeout=120,
                          check=False)


async def test_cli_registers_an_application_the_sdk_then_calls_with(
        vworld: VonageWorld, fake_vonage: FakeVonage, database_url: str,
        tmp_path: Path) -> None:
    w = vworld.world
    app = key_pair()
    pem = tmp_path / "public.pem"
    pem.write_text(app.public_pem)
    done = await asyncio.to_thread(cli, database_url, w.sid, app.application_id, str(pem))
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    refused = await asyncio.to_thread(cli, database_url, w.sid, str(uuid.uuid4()), str(bad))
    assert refused.returncode == 1
    assert "public_key" in refused.stderr
    number = mobile()
    await w.consent(number, "voice")
    vworld.app = app
    sdk = vworld.sdk()
    await in_thread(lambda: sdk.voice.create_call(call_request(vworld, number)))
    assert len(fake_vonage.call_creates()) == 1


async def test_every_to_and_connect_caller_id_is_decided(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    first, second, third = mobile(), mobile(), mobile()
    for number in (first, second, third):
        await w.consent(number, "voice")
    await w.objection(second)
    sdk = vworld.sdk()
    # Two recipients in `to`: the second objected, so the call is refused, one row each.
    request = CreateCallRequest(
        to=[{"type": "phone", "number": digits(first)},
            {"type": "phone", "number": digits(second)}],
        from_={"type": "phone", "number": digits(w.voice)}, ncco=[Talk(text="a")])
    with pytest.raises(ForbiddenError) as raised:
        await in_thread(lambda: sdk.voice.create_call(request))
    assert raised.value.response.json()["reason"] == "OBJECTION_ON_FILE"
    assert len(await decisions_for(w, first)) == 1
    assert len(await decisions_for(w, second)) == 1
    # A connect whose caller ID is no registered sender of the client: refused as such.
    request = call_request(vworld, third, Connect(
        endpoint=[PhoneEndpoint(number=digits(first)), {"type": "app", "user": "agent-1"}],
        from_="31209999999"))
    with pytest.raises(ForbiddenError) as raised:
        await in_thread(lambda: sdk.voice.create_call(request))
    assert raised.value.response.json()["reason"] == "UNKNOWN_SENDER"
    assert fake_vonage.call_creates() == []


async def test_a_disabled_client_is_refused_on_both_apis(
        vworld: VonageWorld, fake_vonage: FakeVonage, auth: dict[str, str]) -> None:
    w = vworld.world
    resp = await w.admin.post(f"/admin/v1/clients/{w.sid}/disable", headers=auth)
    assert resp.status == 200
    sdk = vworld.sdk()
    with pytest.raises(AuthenticationError):
        await in_thread(lambda: sdk.voice.create_call(call_request(vworld, mobile())))
    sms = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(mobile()),
        "from": digits(w.sms), "text": "a"})
    assert (await sms.json())["messages"][0]["status"] == "4"
    assert fake_vonage.received == []


async def test_huge_bodies_are_413_and_decide_nothing(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    big = "x" * (2 * 1024 * 1024)
    sms = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": big})
    assert sms.status == 413
    call = await w.admin.post("/v1/calls", json={
        "to": [{"type": "phone", "number": digits(number)}],
        "from": {"type": "phone", "number": digits(w.voice)},
        "ncco": [{"action": "talk", "text": big}]}, headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert call.status == 413
    assert await decisions_for(w, number) == []
    assert fake_vonage.received == []


# --- upstream faults ------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["unreachable", "500", "400"])
async def test_upstream_faults_on_calls(vworld: VonageWorld, fake_vonage: FakeVonage,
                                        fault: str) -> None:
    w = vworld.world
    number = mobile()
    request_id = await w.consent(number, "voice", kind="request")
    if fault == "unreachable":
        await fake_vonage.refuse()
    else:
        fake_vonage.fail_with(int(fault))
    resp = await w.admin.post("/v1/calls", json={
        "to": [{"type": "phone", "number": digits(number)}],
        "from": {"type": "phone", "number": digits(w.voice)},
        "ncco": [{"action": "talk", "text": "a"}]}, headers={
            "Authorization": "Bearer " + token(vworld.app)})
    body = await resp.json()
    (row,) = await decisions_for(w, number)
    if fault == "unreachable":
        assert resp.status == 502
        assert (body["reason"], body["decision_id"]) == ("UPSTREAM_UNREACHABLE", row["id"])
        assert row["error"] == "upstream unreachable"
    else:
        assert resp.status == int(fault)  # Vonage's own answer, as it came
        assert row["error"] == f"upstream {fault}"
        assert row["upstream_status"] == int(fault)
    reversal = await w.admin.app[POOL].fetchrow(
        "SELECT why, request_id FROM consumption_reversals WHERE decision_id = $1", row["id"])
    # N6: nothing was placed, so the contact request the decision used is given back.
    assert row["consumed_consent_id"] == request_id
    assert (reversal["why"], reversal["request_id"]) == (
        "provider_unreachable" if fault == "unreachable" else "provider_refused", request_id)


async def test_an_ncco_that_reaches_nobody_else_goes_as_written(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice")
    ncco = [{"action": "wait", "timeout": 2}, {"action": "talk", "text": "Goedemorgen"},
            {"action": "record", "eventUrl": ["https://dialer.example/rec"]},
            {"action": "stream", "streamUrl": ["https://dialer.example/a.mp3"]},
            {"action": "conversation", "name": "team-1"}]
    resp = await w.admin.post("/v1/calls", json={
        "to": [{"type": "phone", "number": digits(number)}],
        "from": {"type": "phone", "number": digits(w.voice)}, "ncco": ncco,
        "event_url": ["https://dialer.example/events"]}, headers={
            "Authorization": "Bearer " + token(vworld.app)})
    assert resp.status == 201, await resp.text()
    (received,) = fake_vonage.call_creates()
    assert received.json["ncco"] == [
        *ncco[:-1], {"action": "conversation", "name": f"{w.sid}:team-1"}]
    # The events lead through the proxy (test_vonage_events.py).
    (relayed,) = received.json["event_url"]
    assert "/webhooks/vonage/event/" in relayed
