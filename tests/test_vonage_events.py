"""A Vonage call's events through the proxy: recorded, a call that reached nobody gives back
what its decision used (N5, N6), passed on to the dialer signed with its token, and forged
events refused."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from proxy.keys import POOL
from tests.conftest import Clock, mobile
from tests.fake_vonage import FakeVonage
from tests.test_vonage_calls import token
from tests.test_vonage_front import decisions_for, digits
from tests.vonage_world import SIGNATURE_SECRET, VonageWorld

pytest_plugins = ["tests.vonage_fixtures"]


def signed_event(body: dict[str, Any], clock: Clock, secret: str = SIGNATURE_SECRET
                 ) -> tuple[bytes, str]:
    raw = json.dumps(body).encode()
    claims = {"iat": int(clock().timestamp()), "jti": str(uuid.uuid4()),
              "payload_hash": hashlib.sha256(raw).hexdigest()}
    return raw, jwt.encode(claims, secret, algorithm="HS256")


async def test_unanswered_call_gives_back_and_the_dialer_gets_its_event(
        vworld: VonageWorld, fake_vonage: FakeVonage, clock: Clock) -> None:
    w = vworld.world
    got: list[tuple[bytes, str]] = []

    async def events(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get("Authorization", "")))
        return web.json_response([{"action": "connect", "endpoint": [
            {"type": "phone", "number": digits(mobile())}]}])  # never reaches Vonage

    app = web.Application()
    app.router.add_post("/events", events)
    dialer = TestServer(app)
    await dialer.start_server()
    try:
        number = mobile()
        request_id = await w.consent(number, "voice", kind="request")
        resp = await w.admin.post("/v1/calls", json={
            "to": [{"type": "phone", "number": digits(number)}],
            "from": {"type": "phone", "number": digits(w.voice)},
            "ncco": [{"action": "talk", "text": "a"}],
            "event_url": [str(dialer.make_url("/events"))]}, headers={
                "Authorization": "Bearer " + token(vworld.app)})
        assert resp.status == 201
        call_uuid = (await resp.json())["uuid"]
        (received,) = fake_vonage.call_creates()
        relay = URL(received.json["event_url"][0])
        event = {"uuid": call_uuid, "conversation_uuid": "CON-1", "status": "unanswered",
                 "direction": "outbound", "timestamp": "2026-11-30T09:00:10.000Z"}
        # Forged and unsigned events are refused and change nothing.
        raw, forged = signed_event(event, clock, secret="x" * 40)
        bad = await w.admin.post(relay.path, data=raw, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {forged}"})
        assert bad.status == 403
        unsigned = await w.admin.post(relay.path, data=raw, headers={
            "Content-Type": "application/json"})
        assert unsigned.status == 401
        assert got == []
        # Another leg's final status (a connect leg) gives nothing back.
        raw, signature = signed_event({**event, "uuid": str(uuid.uuid4())}, clock)
        other = await w.admin.post(relay.path, data=raw, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {signature}"})
        assert other.status == 204
        (row,) = await decisions_for(w, number)
        pool = w.admin.app[POOL]
        assert await pool.fetchval("SELECT count(*) FROM consumption_reversals "
                                   "WHERE decision_id = $1", row["id"]) == 0
        raw, signature = signed_event(event, clock)
        resp = await w.admin.post(relay.path, data=raw, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {signature}"})
        assert resp.status == 204
        assert await resp.read() == b""  # the dialer's NCCO never goes to Vonage
    finally:
        await dialer.close()
    reversal = await pool.fetchrow(
        "SELECT why, detail, request_id FROM consumption_reversals WHERE decision_id = $1",
        row["id"])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_reached", "unanswered", request_id)
    recorded = await pool.fetch(
        "SELECT status FROM contact_outcomes WHERE decision_id = $1 ORDER BY id", row["id"])
    assert [r["status"] for r in recorded] == ["unanswered", "unanswered"]
    # The dialer got both events as Vonage sent them, signed with its own token.
    assert len(got) == 2
    body, authorization = got[-1]
    assert body == raw
    claims = jwt.decode(authorization.removeprefix("Bearer "), w.token, algorithms=["HS256"])
    assert claims["payload_hash"] == hashlib.sha256(body).hexdigest()


async def test_a_completed_call_keeps_what_it_used(vworld: VonageWorld,
                                                   fake_vonage: FakeVonage,
                                                   clock: Clock) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "voice", kind="request")
    resp = await w.admin.post("/v1/calls", json={
        "to": [{"type": "phone", "number": digits(number)}],
        "from": {"type": "phone", "number": digits(w.voice)},
        "ncco": [{"action": "talk", "text": "a"}],
        "event_url": ["https://dialer.invalid/events"]}, headers={
            "Authorization": "Bearer " + token(vworld.app)})
    call_uuid = (await resp.json())["uuid"]
    relay = URL(fake_vonage.call_creates()[0].json["event_url"][0])
    raw, signature = signed_event({"uuid": call_uuid, "status": "completed",
                                   "duration": "42"}, clock)
    done = await w.admin.post(relay.path, data=raw, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {signature}"})
    assert done.status == 204  # the dialer's URL does not resolve: logged, Vonage told 204
    (row,) = await decisions_for(w, number)
    pool = w.admin.app[POOL]
    assert await pool.fetchval("SELECT count(*) FROM consumption_reversals "
                               "WHERE decision_id = $1", row["id"]) == 0
    assert await pool.fetchval("SELECT duration_seconds FROM contact_outcomes "
                               "WHERE decision_id = $1", row["id"]) == 42
