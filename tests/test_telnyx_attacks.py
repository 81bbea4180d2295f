"""Attacks on the Telnyx front by a sender with valid credentials: raw bytes where the attack
is in the bytes, the fake Telnyx upstream's record as the proof of what went out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy.fronts.telnyx import settings as telnyx_settings
from proxy.fronts.telnyx import signatures
from proxy.settings import ConfigError
from tests.conftest import PROXY_SECRET, Clock, mobile
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import (
    api_key,
    fake_telnyx,
    telnyx_decisions,
    telnyx_proxy,
    telnyx_proxy_app,
    telnyx_world,
)
from tests.test_telnyx_bypass import _raw
from tests.test_telnyx_webhooks import _relaying_sender, deliver, event, relay_target
from tests.world import World, make_world

__all__ = ["fake_telnyx", "relay_target", "telnyx_proxy", "telnyx_world"]  # fixtures used below


async def _post(world: World, path: str, raw: bytes,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {api_key(world)}", "Content-Type": "application/json",
            **(headers or {})}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{world.base}{path}", headers=hdrs, data=raw)
        return resp.status, await resp.json(content_type=None)


async def _decisions(world: World, pool: asyncpg.Pool) -> int:
    await world.committed()
    found: int = await pool.fetchval("SELECT count(*) FROM decisions")
    return found


# A JSON escape of half a UTF-16 pair is valid JSON ASCII but no writable text: it must be
# refused before anything is decided, never reach the store, the upstream or an error body.
@pytest.mark.parametrize(("path", "template"), [
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "hoi \\ud800"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s\\udfff", "text": "hoi"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "x", '
                     b'"webhook_url": "https://a/\\ud83d"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "x", "\\ud800": 1}'),
    ("/v2/messages", b'{"\\ud800": 1, "\\ud800": 2}'),
    ("/v2/calls", b'{"to": "%(to)s", "from": "%(voice)s", "connection_id": "c\\ud800"}'),
    ("/v2/calls", b'{"to": "%(to)s", "from": "%(voice)s", "connection_id": "c", '
                  b'"custom_headers": [{"name": "X-A", "value": "\\udc00"}]}'),
])
async def test_lone_surrogates_are_refused_before_deciding(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool, path: str,
        template: bytes) -> None:
    number = mobile()
    await telnyx_world.consent(number, "sms" if path == "/v2/messages" else "voice")
    before = await _decisions(telnyx_world, pool)
    raw = template % {b"to": number.encode(), b"sms": telnyx_world.sms.encode(),
                      b"voice": telnyx_world.voice.encode()}
    status, answer = await _post(telnyx_world, path, raw)
    assert status == 400, answer
    assert answer["errors"][0]["code"] == "10015"
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []


# --- the upstream account's applications and profiles, per client --------------------------

async def _granted_proxy(aiohttp_client: Any, database_url: str, clock: Clock,
                         fake: FakeTelnyx, tmp_path: Path, world: World) -> TestClient[Any, Any]:
    """A second proxy on the same database, its grants naming the world's client."""
    return await telnyx_proxy_app(
        aiohttp_client, database_url, clock, fake, tmp_path,
        TELNYX_CONNECTIONS=f"{world.sid}:1494404757140276705, ACother:666",
        TELNYX_MESSAGING_PROFILES=f"{world.sid}:4001767e-ce0f-4cae-9d5f-0d5e636e7809",
        TELNYX_BILLING_GROUPS=f"{world.sid}:f5586561-8ff0-4291-a0ac-84fe544797bd")


async def _send(proxy: TestClient[Any, Any], world: World, path: str,
                body: dict[str, Any]) -> tuple[int, Any]:
    resp = await proxy.post(path, data=json.dumps(body), headers={
        "Authorization": f"Bearer {api_key(world)}", "Content-Type": "application/json"})
    return resp.status, await resp.json(content_type=None)


async def test_another_clients_connection_is_refused(
        telnyx_world: World, fake_telnyx: FakeTelnyx, aiohttp_client: Any, database_url: str,
        clock: Clock, tmp_path: Path) -> None:
    """Another client's Call Control application would get the call's events (the person's
    number, the call_control_id): with TELNYX_CONNECTIONS a client dials only with its own."""
    proxy = await _granted_proxy(aiohttp_client, database_url, clock, fake_telnyx, tmp_path,
                                 telnyx_world)
    number = mobile()
    await telnyx_world.consent(number, "voice")
    call = {"to": number, "from": telnyx_world.voice, "connection_id": "666"}
    status, answer = await _send(proxy, telnyx_world, "/v2/calls", call)
    assert status == 403, answer
    assert answer["errors"][0]["code"] == "10010"
    assert answer["errors"][0]["source"] == {"pointer": "/connection_id"}
    assert fake_telnyx.received == []
    assert await telnyx_decisions(telnyx_world, number) == []  # refused before deciding
    status, answer = await _send(proxy, telnyx_world, "/v2/calls",
                                 {**call, "connection_id": "1494404757140276705"})
    assert status == 200, answer
    assert [r.json["connection_id"] for r in fake_telnyx.creates("calls")] == [
        "1494404757140276705"]
    status, answer = await _send(proxy, telnyx_world, "/v2/calls", {
        **call, "connection_id": "1494404757140276705",
        "billing_group_id": "00000000-0000-0000-0000-000000000000"})
    assert status == 403, answer
    assert answer["errors"][0]["source"] == {"pointer": "/billing_group_id"}
    assert len(fake_telnyx.creates("calls")) == 1


async def test_another_clients_messaging_profile_is_refused(
        telnyx_world: World, fake_telnyx: FakeTelnyx, aiohttp_client: Any, database_url: str,
        clock: Clock, tmp_path: Path) -> None:
    proxy = await _granted_proxy(aiohttp_client, database_url, clock, fake_telnyx, tmp_path,
                                 telnyx_world)
    number = mobile()
    await telnyx_world.consent(number, "sms")
    message = {"to": number, "from": telnyx_world.sms, "text": "hoi",
               "messaging_profile_id": "00000000-0000-0000-0000-000000000000"}
    status, answer = await _send(proxy, telnyx_world, "/v2/messages", message)
    assert status == 403, answer
    assert answer["errors"][0]["source"] == {"pointer": "/messaging_profile_id"}
    assert fake_telnyx.received == []
    mine = "4001767e-ce0f-4cae-9d5f-0d5e636e7809"
    status, answer = await _send(proxy, telnyx_world, "/v2/messages",
                                 {**message, "messaging_profile_id": mine})
    assert status == 200, answer
    assert fake_telnyx.creates("messages")[0].json["messaging_profile_id"] == mine


@pytest.mark.parametrize("value", ["ACa", "ACa:", ":1", "ACa:1;ACb:2", "AC a:1", "ACa:1/2"])
@pytest.mark.parametrize("name", ["TELNYX_CONNECTIONS", "TELNYX_MESSAGING_PROFILES",
                                  "TELNYX_BILLING_GROUPS"])
def test_grants_are_checked_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        telnyx_settings.load({name: value})
    assert telnyx_settings.load({}).billing_groups is None


# --- conferences ------------------------------------------------------------------------------

async def test_a_conference_name_never_meets_another_clients(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], auth: dict[str, str],
        fake_telnyx: FakeTelnyx) -> None:
    """Conference names are the upstream account's: two clients' `sales` must be two
    conferences, or one client's person called would be joined to the other's agents."""
    other = await make_world(telnyx_proxy, auth)
    for world in (telnyx_world, other, telnyx_world):
        number = mobile()
        await world.consent(number, "voice")
        status, answer = await _send(telnyx_proxy, world, "/v2/calls", {
            "to": number, "from": world.voice, "connection_id": "c",
            "conference_config": {"conference_name": "sales", "early_media": False}})
        assert status == 200, answer
    names = [r.json["conference_config"]["conference_name"]
             for r in fake_telnyx.creates("calls")]
    assert names[0] == names[2] != names[1]  # one client's calls still meet each other
    assert "sales" not in names
    assert all(r.json["conference_config"]["early_media"] is False
               for r in fake_telnyx.creates("calls"))


@pytest.mark.parametrize("conference", [{"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"},
                                        {"conference_name": ["sales"]}, ["sales"]])
async def test_a_conference_by_id_is_refused(telnyx_world: World, fake_telnyx: FakeTelnyx,
                                             pool: asyncpg.Pool, conference: Any) -> None:
    number = mobile()
    await telnyx_world.consent(number, "voice")
    before = await _decisions(telnyx_world, pool)
    status, answer = await _post(telnyx_world, "/v2/calls", json.dumps({
        "to": number, "from": telnyx_world.voice, "connection_id": "c",
        "conference_config": conference}).encode())
    assert status == 422, answer
    assert answer["errors"][0]["source"]["pointer"].startswith("/conference_config")
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []


# --- what comes back ------------------------------------------------------------------------

async def test_the_upstream_account_id_never_reaches_the_client(
        telnyx_world: World, fake_telnyx: FakeTelnyx) -> None:
    """Telnyx names its account (`organization_id`) in every message: a client sees its own
    id there, in the create's answer, its idempotent replay and a read alike."""
    number = mobile()
    await telnyx_world.consent(number, "sms")
    raw = json.dumps({"to": number, "from": telnyx_world.sms, "text": "hoi"}).encode()
    answers = [await _post(telnyx_world, "/v2/messages", raw, {"Idempotency-Key": "k1"})
               for _ in range(2)]
    assert len(fake_telnyx.creates()) == 1
    message_id = answers[0][1]["data"]["id"]
    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"{telnyx_world.base}/v2/messages/{message_id}", headers={
            "Authorization": f"Bearer {api_key(telnyx_world)}"})
        answers.append((resp.status, await resp.json()))
    for status, answer in answers:
        assert status == 200, answer
        assert answer["data"]["organization_id"] == telnyx_world.sid
        assert fake_telnyx.organization_id not in json.dumps(answer)


async def test_a_relayed_message_names_the_clients_account(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        clock: Clock, auth: dict[str, str], relay_target: Any) -> None:
    """Telnyx's inbound events carry its account's `organization_id`: the copy relayed to the
    sender's webhook names the client's, and is signed as it is delivered."""
    server, received = relay_target
    await _relaying_sender(telnyx_proxy, telnyx_world, auth, str(server.make_url("/crm/sms")))
    sent = json.loads(event(telnyx_world, mobile(), "Kunt u mij terugbellen?"))
    sent["data"]["payload"]["organization_id"] = fake_telnyx.organization_id
    status, _ = await deliver(telnyx_proxy, fake_telnyx, clock, json.dumps(sent).encode())
    assert status == 200
    ((got, headers),) = received
    assert fake_telnyx.organization_id.encode() not in got
    sent["data"]["payload"]["organization_id"] = telnyx_world.sid
    assert json.loads(got) == sent
    key = signatures.relay_public_key(PROXY_SECRET, telnyx_world.sid, 1)
    signatures.verify(base64.b64decode(key), got, headers, clock())


@pytest.mark.parametrize("command_id", [12345, 1.5, True, ["dial-1"], {"id": "dial-1"}])
async def test_a_command_id_that_is_no_string_is_refused(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool,
        command_id: Any) -> None:
    """Only a string command_id is scoped to its client; any other would reach Telnyx as it
    came, where another client's same value answers with that client's call."""
    number = mobile()
    await telnyx_world.consent(number, "voice")
    before = await _decisions(telnyx_world, pool)
    status, answer = await _post(telnyx_world, "/v2/calls", json.dumps({
        "to": number, "from": telnyx_world.voice, "connection_id": "c",
        "command_id": command_id}).encode())
    assert status == 422, answer
    assert answer["errors"][0]["source"] == {"pointer": "/command_id"}
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []


# --- held: methods, paths and bytes that reach nothing ---------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("HEAD", "/v2/messages"), ("OPTIONS", "/v2/messages"), ("GET", "/v2/calls"),
    ("POST", "/v2/Messages"), ("POST", "/v2/messages/"), ("POST", "/V2/messages"),
    ("POST", "/v2/calls%2F"), ("PUT", "/v2/messages"), ("POST", "/v2/texml/calls/1"),
    ("POST", "/webhooks/telnyx/messaging/"), ("POST", "/webhooks/telnyx/Messaging"),
    ("GET", "/webhooks/telnyx/messaging"),
])
async def test_other_methods_and_spellings_send_nothing(
        telnyx_world: World, fake_telnyx: FakeTelnyx, method: str, path: str) -> None:
    body = (b'{"to": "%s", "from": "%s", "text": "x", "connection_id": "c"}'
            % (mobile().encode(), telnyx_world.sms.encode()))
    status, answer = await _raw(telnyx_world, method, path, body)
    assert 400 <= status < 500, answer
    assert fake_telnyx.received == []


@pytest.mark.parametrize("raw", [
    b'\xef\xbb\xbf{"to": "+31612345678", "from": "+31201234567", "text": "x"}',  # a BOM
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x", "parts": 1e400}',
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x", "n": ' + b"9" * 5000 + b"}",
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x", "a": ' + b"[" * 50000
    + b"]" * 50000 + b"}",
    b'{"to": "+\xef\xbc\x933\xef\xbc\x91612345678", "from": "+31201234567", "text": "x"}',
    b'{"to": ["+31612345678", "+31612345679"], "from": "+31201234567", "text": "x"}',
])
async def test_hostile_bytes_are_4xx_undecided(telnyx_world: World, fake_telnyx: FakeTelnyx,
                                               pool: asyncpg.Pool, raw: bytes) -> None:
    before = await _decisions(telnyx_world, pool)
    status, answer = await _post(telnyx_world, "/v2/messages", raw)
    assert status in (400, 413, 422), answer
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []


# --- an AI assistant that transfers -----------------------------------------------------------

TRANSFER = {"type": "transfer", "transfer": {"from": "+31201234567", "targets": [
    {"to": "+31612345679", "name": "sales"}]}}


@pytest.mark.parametrize(("assistant", "pointer"), [
    ({"id": "assistant-1"}, "/assistant/tools"),  # its stored tools, unseen, may transfer
    ({"id": "assistant-1", "tools": [TRANSFER]}, "/assistant/tools"),
    ({"id": "assistant-1", "tools": [{"type": "hangup", "hangup": {}}, TRANSFER]},
     "/assistant/tools"),
    ({"id": "assistant-1", "tools": [{"type": "send_message"}]}, "/assistant/tools"),
    ({"id": "assistant-1", "tools": ["transfer"]}, "/assistant/tools"),
    ({"id": "assistant-1", "tools": [], "mcp_servers": [{"url": "https://mcp.example"}]},
     "/assistant/mcp_servers"),
    ("assistant-1", "/assistant"),
])
async def test_an_assistant_that_could_transfer_is_refused(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool, assistant: Any,
        pointer: str) -> None:
    """Telnyx's AI assistant transfers the call with a `transfer` tool to numbers it picks
    (or a webhook returns): the person would be connected to someone never decided on."""
    number = mobile()
    await telnyx_world.consent(number, "voice")
    before = await _decisions(telnyx_world, pool)
    status, answer = await _post(telnyx_world, "/v2/calls", json.dumps({
        "to": number, "from": telnyx_world.voice, "connection_id": "c",
        "assistant": assistant}).encode())
    assert status == 422, answer
    assert answer["errors"][0]["source"] == {"pointer": pointer}
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []


async def test_an_assistant_with_its_tools_listed_is_decided(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool) -> None:
    number = mobile()
    await telnyx_world.consent(number, "voice")
    before = await _decisions(telnyx_world, pool)
    status, answer = await _post(telnyx_world, "/v2/calls", json.dumps({
        "to": number, "from": telnyx_world.voice, "connection_id": "c",
        "assistant": {"id": "assistant-1", "tools": [{"type": "hangup", "hangup": {}}]},
    }).encode())
    assert status in (200, 403), answer  # decided: as automated voice (N2)
    assert await _decisions(telnyx_world, pool) == before + 1
    (row,) = await telnyx_decisions(telnyx_world, number)
    assert row["details"]["automated"] is True


# --- the footer's segment accounting -----------------------------------------------------------

@pytest.mark.parametrize(("encoding", "before", "kind"), [
    (None, 1, "GSM-7"), ("auto", 1, "GSM-7"), ("gsm7", 1, "GSM-7"), ("ucs2", 2, "UCS-2")])
async def test_a_forced_encoding_is_counted_as_it_goes_out(
        telnyx_world: World, fake_telnyx: FakeTelnyx, encoding: str | None,
        before: int, kind: str) -> None:
    """`encoding: ucs2` sends a plain text at 70/67 characters a part: the decision row
    counts the parts that go out, not the ones GSM-7 would take."""
    number = mobile()
    await telnyx_world.consent(number, "sms")
    body: dict[str, Any] = {"to": number, "from": telnyx_world.sms, "text": "a" * 100}
    if encoding is not None:
        body["encoding"] = encoding
    status, answer = await _post(telnyx_world, "/v2/messages", json.dumps(body).encode())
    assert status == 200, answer
    assert fake_telnyx.creates()[0].json.get("encoding") == encoding
    (row,) = await telnyx_decisions(telnyx_world, number)
    details = row["details"]
    assert details["segments_before"] == before  # 100 characters: 1 part of 160, 2 of 67
    assert (details["encoding_before"], details["encoding"]) == (kind, kind)
    sent = fake_telnyx.creates()[0].json["text"]
    assert details["segments_after"] == (-(-len(sent) // 67) if kind == "UCS-2" else
                                         -(-len(sent) // 153) if len(sent) > 160 else 1)
