"""Telnyx's messaging webhook: signed STOP / START / HELP handled through the neutral inbound
module, replies sent through the upstream, forged webhooks refused, other messages relayed
re-signed so the sender verifies them with the telnyx SDK's own helper."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nacl.signing import SigningKey
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from proxy.fronts.telnyx import signatures, webhooks
from proxy.fronts.telnyx.keys import UPSTREAM
from proxy.fronts.telnyx.upstream import SandboxUpstream
from proxy.keys import OPTOUT_SPOOL, POOL
from proxy.phone import subject_hash
from tests.conftest import PROXY_SECRET, Clock, mobile
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import (
    UP_KEY,
    api_key,
    fake_telnyx,
    telnyx_proxy,
    telnyx_proxy_app,
    telnyx_sdk,
    telnyx_world,
)
from tests.world import World, make_world

__all__ = ["fake_telnyx", "telnyx_proxy", "telnyx_world"]  # fixtures used below


def event(world: World, person: str, text: str, *, message_id: str | None = None,
          event_type: str = "message.received") -> bytes:
    """A Telnyx messaging webhook as Telnyx sends it (API v2, `message.received`)."""
    return json.dumps({"data": {
        "event_type": event_type, "id": str(uuid.uuid4()), "record_type": "event",
        "occurred_at": "2026-11-30T09:00:00.000+00:00",
        "payload": {
            "id": message_id or str(uuid.uuid4()), "record_type": "message",
            "direction": "inbound", "type": "SMS", "text": text,
            "from": {"phone_number": person, "carrier": "KPN", "line_type": "Wireless"},
            "to": [{"phone_number": world.sms, "status": "webhook_delivered"}],
            "received_at": "2026-11-30T09:00:00.000+00:00", "parts": 1, "encoding": "GSM-7"}},
        "meta": {"attempt": 1, "delivered_to": "https://proxy.example/webhooks/telnyx/messaging"},
    }).encode()


async def deliver(proxy: TestClient[Any, Any], fake: FakeTelnyx, clock: Clock, body: bytes,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    signed = fake.sign(body, int(clock().timestamp())) if headers is None else headers
    resp = await proxy.post(webhooks.PATH, data=body, headers=signed)
    answer = await resp.json(content_type=None)
    await webhooks.settle(proxy.app)
    return resp.status, answer


async def send(world: World, number: str) -> Any:
    return await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="Hoi")


def replies(fake: FakeTelnyx, person: str) -> list[dict[str, Any]]:
    return [r.json for r in fake.creates("messages") if r.json["to"] == person
            and r.json["text"] != "Hoi" and not r.json["text"].startswith("Hoi\n")]


async def test_signed_stop_blocks_the_next_send_and_is_answered(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, pool: asyncpg.Pool) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await send(world, number)
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, event(world, number, "STOP"))
    assert status == 200
    with pytest.raises(telnyx.PermissionDeniedError) as caught:
        await send(world, number)
    assert caught.value.body["errors"][0]["code"] == "40300"  # type: ignore[index]
    (reply,) = replies(fake_telnyx, number)
    assert reply["from"] == world.sms
    assert "afgemeld" in reply["text"]
    reply_request = next(r for r in fake_telnyx.creates("messages") if r.json == reply)
    assert reply_request.headers["Authorization"] == f"Bearer {UP_KEY}"
    row = await pool.fetchrow("SELECT * FROM objections WHERE subject_hash = $1",
                              subject_hash(number))
    assert row["source_provider"] == "telnyx"


async def test_repeated_delivery_is_answered_once(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, pool: asyncpg.Pool) -> None:
    world, number, message_id = telnyx_world, mobile(), str(uuid.uuid4())
    body = event(world, number, "stop", message_id=message_id)
    for _ in range(2):
        status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, body)
        assert status == 200
    assert len(replies(fake_telnyx, number)) == 1
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 1


async def test_start_lifts_and_help_answers(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await deliver(telnyx_proxy, fake_telnyx, clock, event(world, number, "Stop"))
    with pytest.raises(telnyx.PermissionDeniedError):
        await send(world, number)
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, event(world, number, "START"))
    assert status == 200
    assert (await send(world, number)).data is not None
    await deliver(telnyx_proxy, fake_telnyx, clock, event(world, number, "HELP"))
    texts = [r["text"] for r in replies(fake_telnyx, number)]
    assert len(texts) == 3
    assert "Energie BV" in texts[2]


@pytest.mark.parametrize("forgery", ["other_key", "tampered", "stale", "future", "missing",
                                     "garbage"])
async def test_forged_webhooks_are_refused_and_record_nothing(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, pool: asyncpg.Pool, forgery: str) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    body = event(world, number, "STOP")
    now = int(clock().timestamp())
    headers = fake_telnyx.sign(body, now)
    if forgery == "other_key":
        signed = SigningKey.generate().sign(f"{now}|".encode() + body).signature
        headers["telnyx-signature-ed25519"] = base64.b64encode(signed).decode()
    elif forgery == "tampered":
        body = body.replace(b'"STOP"', b'"STOP "')
    elif forgery == "stale":
        headers = fake_telnyx.sign(body, now - 301)
    elif forgery == "future":
        headers = fake_telnyx.sign(body, now + 301)
    elif forgery == "missing":
        headers = {"Content-Type": "application/json"}
    else:
        headers["telnyx-signature-ed25519"] = "not base64!"
    status, answer = await deliver(telnyx_proxy, fake_telnyx, clock, body, headers)
    assert status == (401 if forgery == "missing" else 403)
    assert "errors" in answer
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 0
    assert (await send(world, number)).data is not None
    assert replies(fake_telnyx, number) == []


async def test_a_delivery_within_300_seconds_is_accepted(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock) -> None:
    body = event(telnyx_world, mobile(), "HELP")
    headers = fake_telnyx.sign(body, int(clock().timestamp()) - 299)
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, body, headers)
    assert status == 200


@pytest.mark.parametrize("event_type", ["message.sent", "message.finalized"])
async def test_events_of_sent_messages_are_acknowledged(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, pool: asyncpg.Pool, event_type: str) -> None:
    number = mobile()
    body = event(telnyx_world, number, "STOP", event_type=event_type)
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, body)
    assert status == 200
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 0


@pytest.fixture
async def relay_target() -> AsyncIterator[tuple[TestServer, list[tuple[bytes, dict[str, str]]]]]:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/crm/sms", hook)
    server = TestServer(app)
    await server.start_server()
    yield server, received
    await server.close()


async def _relaying_sender(proxy: TestClient[Any, Any], world: World, auth: dict[str, str],
                           url: str) -> None:
    sender = f"+3120{mobile()[-7:]}"
    resp = await proxy.post("/admin/v1/senders", json={
        "sender": sender, "organisation": world.org, "topic": "energy",
        "inbound_webhook": url}, headers=auth)
    assert resp.status == 201
    world.sms = sender


async def test_other_messages_are_relayed_signed_for_the_sdk_helper(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, auth: dict[str, str], relay_target: Any) -> None:
    server, received = relay_target
    world = telnyx_world
    await _relaying_sender(telnyx_proxy, world, auth, str(server.make_url("/crm/sms")))
    number = mobile()
    body = event(world, number, "Kunt u mij morgen terugbellen?")
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, body)
    assert status == 200
    ((got, headers),) = received
    assert got == body
    resp = await telnyx_proxy.get(webhooks.KEY_PATH, headers={
        "Authorization": f"Bearer {api_key(world)}"})
    key = (await resp.json())["public_key"]
    assert key == signatures.relay_public_key(PROXY_SECRET, world.sid, 1)
    stamp = headers["telnyx-timestamp"]
    assert stamp == str(int(clock().timestamp()))
    relayed = {"telnyx-signature-ed25519": headers["telnyx-signature-ed25519"],
               "telnyx-timestamp": stamp}
    signatures.verify(base64.b64decode(key), got, relayed, clock())
    with pytest.raises(signatures.SignatureError):  # not Telnyx's own key
        signatures.verify(base64.b64decode(fake_telnyx.public_key), got, relayed, clock())
    # The SDK's helper checks freshness against the wall clock: the same key signs a copy now.
    fresh = signatures.sign_relay(PROXY_SECRET, world.sid, 1, got, dt.datetime.now(dt.UTC))
    verify_webhook_signature(got, fresh, key)
    assert replies(fake_telnyx, number) == []
    resp = await telnyx_proxy.get(webhooks.KEY_PATH)
    assert resp.status == 401


async def test_a_disabled_client_gets_no_relays(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, auth: dict[str, str], relay_target: Any) -> None:
    server, received = relay_target
    world = telnyx_world
    await _relaying_sender(telnyx_proxy, world, auth, str(server.make_url("/crm/sms")))
    resp = await telnyx_proxy.post(f"/admin/v1/clients/{world.sid}/disable", headers=auth)
    assert resp.status == 200
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock,
                              event(world, mobile(), "Wanneer komt de monteur?"))
    assert status == 200
    assert received == []


async def test_relay_signature_verifies_with_the_sdk_helper() -> None:
    body = b'{"data": {"event_type": "message.received"}}'
    headers = signatures.sign_relay(PROXY_SECRET, "AC1", 1, body, dt.datetime.now(dt.UTC))
    verify_webhook_signature(body, headers, signatures.relay_public_key(PROXY_SECRET, "AC1", 1))
    for key in (signatures.relay_public_key(PROXY_SECRET, "AC1", 2),  # rotated token
                signatures.relay_public_key(PROXY_SECRET, "AC2", 1)):  # another client
        with pytest.raises(WebhookVerificationError):
            verify_webhook_signature(body, headers, key)
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(body + b" ", headers,
                                 signatures.relay_public_key(PROXY_SECRET, "AC1", 1))


async def test_webhooks_refused_without_a_public_key(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_telnyx: FakeTelnyx,
        tmp_path: Any, auth: dict[str, str]) -> None:
    proxy = await telnyx_proxy_app(aiohttp_client, database_url, clock, fake_telnyx, tmp_path,
                                   TELNYX_PUBLIC_KEY="")
    world = await make_world(proxy, auth)
    status, _ = await deliver(proxy, fake_telnyx, clock, event(world, mobile(), "STOP"))
    assert status == 403



async def test_stop_in_a_database_outage_is_spooled_and_answered(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock) -> None:
    world, number, message_id = telnyx_world, mobile(), str(uuid.uuid4())
    telnyx_proxy.app[POOL].terminate()
    body = event(world, number, "STOP", message_id=message_id)
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, body)
    assert status == 200
    assert telnyx_proxy.app[OPTOUT_SPOOL].holds("telnyx", message_id)  # N11: never lost
    (reply,) = replies(fake_telnyx, number)
    assert reply["from"] == world.sms
    # Anything but a keyword cannot be recorded now: refused, so Telnyx delivers it again.
    status, answer = await deliver(telnyx_proxy, fake_telnyx, clock,
                                   event(world, number, "Wanneer komt de monteur?"))
    assert status == 503
    assert "errors" in answer


async def test_sandbox_records_the_reply(aiohttp_client: Any, database_url: str, clock: Clock,
                                         fake_telnyx: FakeTelnyx, tmp_path: Any,
                                         auth: dict[str, str]) -> None:
    proxy = await telnyx_proxy_app(aiohttp_client, database_url, clock, fake_telnyx, tmp_path,
                                   TELNYX_API_KEY="")
    world, number = await make_world(proxy, auth), mobile()
    status, _ = await deliver(proxy, fake_telnyx, clock, event(world, number, "STOP"))
    assert status == 200
    sandbox = proxy.app[UPSTREAM]
    assert isinstance(sandbox, SandboxUpstream)
    (reply,) = sandbox.sent
    assert (reply["kind"], reply["from"], reply["to"]) == ("messages", world.sms, number)
    assert fake_telnyx.received == []


async def test_a_failing_relay_target_still_gets_telnyx_a_200(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    async def broken(_request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=500)

    app = web.Application()
    app.router.add_post("/crm/sms", broken)
    server = TestServer(app)
    await server.start_server()
    try:
        world, message_id = telnyx_world, str(uuid.uuid4())
        await _relaying_sender(telnyx_proxy, world, auth, str(server.make_url("/crm/sms")))
        status, _ = await deliver(telnyx_proxy, fake_telnyx, clock,
                                  event(world, mobile(), "Bel mij", message_id=message_id))
    finally:
        await server.close()
    assert status == 200
    row = await pool.fetchrow("SELECT * FROM inbound_messages WHERE provider = 'telnyx' AND "
                              "message_id = $1", message_id)
    assert (row["intent"], row["relay_status"]) == ("other", 500)


async def test_a_start_telnyx_delivers_late_never_lifts_a_newer_stop(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock) -> None:
    """N11: Telnyx's payload.received_at says when the person sent it. A START sent before
    the STOP but delivered after it (Telnyx's retry) leaves the STOP standing."""
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")

    def at(text: str, moment: dt.datetime) -> bytes:
        return event(world, number, text).replace(
            b'"received_at": "2026-11-30T09:00:00.000+00:00"',
            f'"received_at": "{moment.isoformat()}"'.encode())

    now = clock()
    await deliver(telnyx_proxy, fake_telnyx, clock, at("STOP", now))
    await deliver(telnyx_proxy, fake_telnyx, clock,
                  at("START", now - dt.timedelta(minutes=3)))
    with pytest.raises(telnyx.PermissionDeniedError):
        await send(world, number)
    await deliver(telnyx_proxy, fake_telnyx, clock, at("START", now))
    assert (await send(world, number)).data is not None
