"""CM's inbound-message webhook: STOP, START and HELP through `/webhooks/cm/inbound`, its
secret, repeats, the replies sent back through the (fake) CM gateway, and a STOP blocking the
next send through the official SDK."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import credentials
from proxy.keys import CLOCK, OPTOUT_SPOOL, POOL
from tests import cm_fixtures
from tests.cm_fixtures import UP_CM_TOKEN, cm_proxy, rows_for, sdk
from tests.conftest import PROXY_SECRET, Clock, mobile
from tests.fake_cm import FakeCm
from tests.world import World, in_thread, make_world

SECRET = "cm-webhook-secret-0123456789"  # as cm_fixtures.cm_world sets it
INBOUND = "/webhooks/cm/inbound"
fake_cm = cm_fixtures.fake_cm
cm_world = cm_fixtures.cm_world


def mo(person: str, ours: str, text: str, **extra: Any) -> dict[str, Any]:
    """CM's Business Messaging inbound JSON (its numbers in CM's 00 spelling)."""
    return {"reference": "ref-1", "messageContext": "", "from": {"number": "00" + person[1:],
            "name": ""}, "to": {"number": "00" + ours[1:]}, "message": {"text": text},
            "groupings": ["", "", ""], "timeUtc": "2026-11-30T09:00:00", "channel": "SMS",
            **extra}


async def deliver(world: World, body: Any, *, secret: str | None = SECRET,
                  headers: dict[str, str] | None = None) -> tuple[int, str]:
    url = world.base + INBOUND + (f"?secret={secret}" if secret is not None else "")
    async with aiohttp.ClientSession() as session, session.post(
            url, data=json.dumps(body), headers={"Content-Type": "application/json",
                                                 **(headers or {})}) as resp:
        return resp.status, await resp.text()


async def send(world: World, number: str) -> dict[str, Any]:
    client = sdk(world)
    response = await in_thread(lambda: client.SendSingleMessage("Aanbieding", world.sms,
                                                                [number]))
    entry: dict[str, Any] = response.json()["messages"][0]
    return entry


async def test_stop_blocks_the_next_send_and_is_answered_once(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    assert (await send(cm_world, number))["status"] == "Accepted"
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP"))
    assert status == 200
    replies = fake_cm.sent()[1:]
    (reply, to), = replies
    assert to == "00" + number[1:]
    assert reply["from"] == "00" + cm_world.sms[1:]
    assert reply["allowedChannels"] == ["SMS"]
    entry = await send(cm_world, number)
    assert (entry["status"], entry["reason"], entry["messageErrorCode"]) == (
        "Rejected", "OBJECTION_ON_FILE", 402)
    # CM delivers it again (no 200 seen): recognised, no second reply, nothing new.
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP"))
    assert status == 200
    assert len(fake_cm.sent()) == 2
    objections = await cm_world.admin.get(f"/admin/v1/objections?subject={number}",
                                          headers=cm_world.auth)
    assert len((await objections.json())["objections"]) == 1


async def test_a_second_stop_to_the_same_send_is_not_a_repeat(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    await deliver(cm_world, mo(number, cm_world.sms, "STOP"))
    await deliver(cm_world, mo(number, cm_world.sms, "START", timeUtc="2026-11-30T09:05:00"))
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP",
                                           timeUtc="2026-11-30T09:10:00"))
    assert status == 200
    assert (await send(cm_world, number))["reason"] == "OBJECTION_ON_FILE"


async def test_start_lifts_and_help_is_answered(cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    await deliver(cm_world, mo(number, cm_world.sms, "STOP"))
    assert (await send(cm_world, number))["reason"] == "OBJECTION_ON_FILE"
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "START",
                                           timeUtc="2026-11-30T09:01:00"))
    assert status == 200
    assert (await send(cm_world, number))["status"] == "Accepted"
    # The older SMS form of CM's JSON, and HELP.
    status, _ = await deliver(cm_world, {"reference": "r", "from": "00" + number[1:],
                                         "to": "00" + cm_world.sms[1:], "body": "help",
                                         "groupings": ["", "", ""]})
    assert status == 200
    (help_reply, _) = fake_cm.sent()[-1]
    assert "STOP" in help_reply["body"]["content"]
    assert "Energie BV" in help_reply["body"]["content"]


@pytest.mark.parametrize(("secret", "headers", "status"), [
    (None, None, 401),
    ("wrong-secret-0123456789", None, 403),
    (SECRET[:-1], None, 403),
    (None, {"Authorization": "Basic " + base64.b64encode(b"cm:nope").decode()}, 403),
    (None, {"Authorization": "Bearer " + SECRET}, 401),
])
async def test_forged_deliveries_are_refused_and_change_nothing(
        cm_world: World, fake_cm: FakeCm, secret: str | None,
        headers: dict[str, str] | None, status: int) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    got, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP"), secret=secret,
                           headers=headers)
    assert got == status
    assert fake_cm.sent() == []
    assert (await send(cm_world, number))["status"] == "Accepted"


async def test_basic_auth_is_accepted(cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    header = {"Authorization": "Basic " + base64.b64encode(f"cm:{SECRET}".encode()).decode()}
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP"), secret=None,
                              headers=header)
    assert status == 200
    assert (await send(cm_world, number))["reason"] == "OBJECTION_ON_FILE"


async def test_without_a_secret_set_nothing_is_taken(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_cm: FakeCm,
        tmp_path: Path, auth: dict[str, str]) -> None:
    proxy = await cm_proxy(aiohttp_client, database_url, clock, fake_cm, tmp_path)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    status, _ = await deliver(world, mo(number, world.sms, "STOP"), secret="anything-at-all")
    assert status == 503  # CM keeps it and delivers it again once the secret is set
    assert (await send(world, number))["status"] == "Accepted"


async def test_malformed_deliveries_are_400(cm_world: World, fake_cm: FakeCm) -> None:
    for body in ({"from": {"number": "0031612345678"}}, [1], "STOP",
                 {"from": {"name": "x"}, "to": {"number": "0031201234567"}}):
        status, text = await deliver(cm_world, body)
        assert status == 400, text
    async with aiohttp.ClientSession() as session, session.get(
            f"{cm_world.base}{INBOUND}?secret={SECRET}") as resp:
        assert resp.status == 405


@pytest.fixture
async def sender_webhook() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/mo", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/mo", got
    await runner.cleanup()


async def test_other_messages_are_relayed_signed_with_the_clients_token(
        cm_world: World, fake_cm: FakeCm,
        sender_webhook: tuple[str, list[tuple[dict[str, str], bytes]]]) -> None:
    url, got = sender_webhook
    ours = "+3197010" + str(mobile())[-6:]
    resp = await cm_world.admin.post("/admin/v1/senders", json={
        "sender": ours, "organisation": cm_world.org, "topic": "energy",
        "inbound_webhook": url}, headers=cm_world.auth)
    assert resp.status == 201, await resp.text()
    number = mobile()
    body = mo(number, ours, "Wanneer komt de monteur?")
    status, _ = await deliver(cm_world, body)
    assert status == 200
    ((headers, raw),) = got
    assert json.loads(raw) == body  # as CM posted it
    token = credentials.derive_token(PROXY_SECRET, cm_world.sid, 1)
    expected = hmac.new(token.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-Consent-Proxy-Signature"] == f"sha256={expected}"
    assert fake_cm.sent() == []  # no reply to an ordinary message
    assert await rows_for(cm_world, number) == []  # nothing decided: no contact was made


async def test_a_stop_in_a_database_outage_is_spooled_and_answered(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    cm_world.admin.app[POOL].terminate()
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "STOP"))
    assert status == 200  # N11: never lost, CM need not retry it
    assert cm_world.admin.app[OPTOUT_SPOOL].entries == 1
    (reply, to), = fake_cm.sent()
    assert (to, reply["from"]) == ("00" + number[1:], "00" + cm_world.sms[1:])
    # Anything else cannot be stored now: refused, so CM delivers it again later.
    status, _ = await deliver(cm_world, mo(number, cm_world.sms, "Hallo",
                                           timeUtc="2026-11-30T09:02:00"))
    assert status == 503


async def test_no_number_body_token_or_secret_in_any_log_line(
        cm_world: World, fake_cm: FakeCm, log_output: io.StringIO) -> None:
    allowed, denied, stopper = mobile(), mobile(), mobile()
    await cm_world.consent(allowed, "sms")
    client = sdk(cm_world)
    client.AddMessage("Geheime aanbieding 4711", cm_world.sms, [allowed, denied])
    response = await in_thread(client.send)
    assert response.status_code == 200
    status, _ = await deliver(cm_world, mo(stopper, cm_world.sms, "Stop aub"))
    assert status == 200
    assert (await deliver(cm_world, mo(stopper, cm_world.sms, "x"), secret="w" * 20))[0] == 403
    raw = log_output.getvalue()
    assert "decision_ids" in raw  # the request's line was written
    digits = re.sub(r"[^\d\n]", "", raw)
    for number in (allowed, denied, stopper):
        assert number[3:] not in raw, number
        assert number[1:] not in digits, number
    for secret in ("Geheime aanbieding", "Stop aub", SECRET, UP_CM_TOKEN, cm_world.token,
                   PROXY_SECRET):
        assert secret not in raw, secret


async def test_a_message_without_text_is_taken_not_refused(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    body = mo(number, cm_world.sms, "")
    body["message"] = {"media": {"mediaUri": "https://cm.example/x.jpg"}}
    status, _ = await deliver(cm_world, body)
    assert status == 200  # else CM would deliver it again for a month
    assert fake_cm.sent() == []


async def test_a_start_cm_delivers_late_never_lifts_a_newer_stop(cm_world: World) -> None:
    """N11: CM's timeUtc says when the person sent it; a START sent before the STOP but
    delivered after it leaves the STOP standing."""
    number = mobile()
    await cm_world.consent(number, "sms")
    now = cm_world.admin.app[CLOCK]().astimezone(dt.UTC).replace(tzinfo=None)
    await deliver(cm_world, mo(number, cm_world.sms, "STOP", timeUtc=now.isoformat()))
    early = (now - dt.timedelta(minutes=3)).isoformat()
    await deliver(cm_world, mo(number, cm_world.sms, "START", timeUtc=early))
    assert (await send(cm_world, number))["reason"] == "OBJECTION_ON_FILE"
    await deliver(cm_world, mo(number, cm_world.sms, "START", timeUtc=now.isoformat()))
    assert (await send(cm_world, number))["status"] == "Accepted"
