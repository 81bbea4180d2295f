"""Ways around the Telnyx front's gate, tried by a sender with valid credentials: other send
endpoints, call actions that reach a new party, other clients' resources, path tricks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import telnyx
from aiohttp.test_utils import TestClient

from tests.conftest import mobile
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import (
    api_key,
    fake_telnyx,
    telnyx_proxy,
    telnyx_sdk,
    telnyx_world,
)
from tests.world import World, make_world

__all__ = ["fake_telnyx", "telnyx_proxy", "telnyx_world"]  # fixtures used below


async def _raw(world: World, method: str, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
    """A request with its path sent byte for byte, as no HTTP client library would."""
    host, port = world.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
            f"{api_key(world)}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\nConnection: close\r\n\r\n").encode()
    writer.write(head + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


async def _allowed_call(world: World) -> str:
    number = mobile()
    await world.consent(number, "voice")
    call = await telnyx_sdk(world).calls.dial(connection_id="c", to=number, from_=world.voice)
    assert call.data is not None
    assert call.data.call_control_id is not None
    return call.data.call_control_id


@pytest.mark.parametrize("path", [
    "/v2/messages/long_code", "/v2/messages/number_pool", "/v2/messages/short_code",
    "/v2/messages/alphanumeric_sender_id", "/v2/messages/group_mms", "/v2/messages/schedule",
    "/v2/messages/whatsapp",
])
async def test_other_send_endpoints_are_refused(telnyx_world: World, fake_telnyx: FakeTelnyx,
                                                path: str) -> None:
    body = (b'{"to": "%s", "from": "%s", "text": "x"}'
            % (mobile().encode(), telnyx_world.sms.encode()))
    status, answer = await _raw(telnyx_world, "POST", path, body)
    assert status == 403, answer
    assert b'"930403"' in answer
    assert fake_telnyx.received == []


async def test_sdk_long_code_send_is_refused(telnyx_world: World,
                                             fake_telnyx: FakeTelnyx) -> None:
    with pytest.raises(telnyx.PermissionDeniedError):
        await telnyx_sdk(telnyx_world).messages.send_long_code(
            to=mobile(), from_=telnyx_world.sms, text="x")
    assert fake_telnyx.received == []


@pytest.mark.parametrize("action", ["transfer", "bridge", "refer", "speak", "playback_start",
                                    "gather_using_ai", "fork_start", "enqueue"])
async def test_call_actions_other_than_hangup_are_refused(telnyx_world: World,
                                                          fake_telnyx: FakeTelnyx,
                                                          action: str) -> None:
    call_id = await _allowed_call(telnyx_world)
    status, answer = await _raw(telnyx_world, "POST", f"/v2/calls/{call_id}/actions/{action}",
                                b'{"to": "+31612345678"}')
    assert status == 403, answer
    assert [r.path for r in fake_telnyx.received] == ["/v2/calls"]


async def test_sdk_transfer_is_refused(telnyx_world: World, fake_telnyx: FakeTelnyx) -> None:
    call_id = await _allowed_call(telnyx_world)
    with pytest.raises(telnyx.PermissionDeniedError):
        await telnyx_sdk(telnyx_world).calls.actions.transfer(call_id, to=mobile())
    assert len(fake_telnyx.received) == 1


async def test_other_clients_resources_are_not_found(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], auth: dict[str, str],
        fake_telnyx: FakeTelnyx) -> None:
    call_id = await _allowed_call(telnyx_world)
    number = mobile()
    await telnyx_world.consent(number, "sms")
    sent = await telnyx_sdk(telnyx_world).messages.send(to=number, from_=telnyx_world.sms,
                                                        text="x")
    assert sent.data is not None
    assert sent.data.id is not None
    other = telnyx_sdk(await make_world(telnyx_proxy, auth))
    for attempt in (other.messages.retrieve(sent.data.id), other.calls.retrieve_status(call_id),
                    other.calls.actions.hangup(call_id)):
        with pytest.raises(telnyx.NotFoundError):
            await attempt
    assert fake_telnyx.calls[call_id]["is_alive"] is True
    assert len(fake_telnyx.received) == 2  # the two creates


async def test_hangup_takes_only_its_own_fields(telnyx_world: World,
                                                fake_telnyx: FakeTelnyx) -> None:
    call_id = await _allowed_call(telnyx_world)
    status, _ = await _raw(telnyx_world, "POST", f"/v2/calls/{call_id}/actions/hangup",
                           b'{"to": "+31612345678"}')
    assert status == 400
    assert fake_telnyx.calls[call_id]["is_alive"] is True


@pytest.mark.parametrize("path", [
    "/v2/calls/x/%2e%2e/%2e%2e/messages", "/v2/calls/x/../../messages",
    "/v2/messages/x/..", "/v2//messages", "//v2/messages", "/v2/messages/",
    "/v2/%6Dessages", "/v2/messages%2Flong_code", "/v2/messages?to=x",
    "/v2/./messages", "/v2/messages;x", "/v2/calls/%2E%2E/messages", "/v2/x/..%2fmessages",
])
async def test_path_tricks_reach_nothing(telnyx_world: World, fake_telnyx: FakeTelnyx,
                                         path: str) -> None:
    body = (b'{"to": "%s", "from": "%s", "text": "x"}'
            % (mobile().encode(), telnyx_world.sms.encode()))
    status, answer = await _raw(telnyx_world, "POST", path, body)
    assert status in (400, 403, 404), answer
    # `//v2/…` lies outside the front's paths: the proxy's own error shape answers it.
    assert b'"errors"' in answer or path.startswith("//")
    assert fake_telnyx.received == []


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/phone_numbers"), ("POST", "/v2/faxes"), ("GET", "/v2/messages"),
    ("DELETE", "/v2/messages/00000000-0000-0000-0000-000000000000"),
    ("POST", "/v2/conferences/x/actions/join"), ("POST", "/v2/verifications/sms"),
])
async def test_everything_else_is_refused_in_telnyx_shape(telnyx_world: World,
                                                          fake_telnyx: FakeTelnyx,
                                                          method: str, path: str) -> None:
    status, answer = await _raw(telnyx_world, method, path, b"")
    assert status in (403, 404, 405), answer
    assert b'"errors"' in answer
    assert fake_telnyx.received == []


async def test_a_command_id_never_meets_another_clients(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], auth: dict[str, str],
        fake_telnyx: FakeTelnyx) -> None:
    """Telnyx answers a repeated dial command_id with the first call: another client's call
    id must never become this client's to read or hang up."""
    first = await _allowed_call_with(telnyx_world, command_id="dial-1")
    other = await make_world(telnyx_proxy, auth)
    second = await _allowed_call_with(other, command_id="dial-1")
    assert second != first
    sent = [r.json["command_id"] for r in fake_telnyx.creates("calls")]
    assert len(set(sent)) == 2
    assert "dial-1" not in sent
    with pytest.raises(telnyx.NotFoundError):
        await telnyx_sdk(other).calls.actions.hangup(first)


async def _allowed_call_with(world: World, **extra: Any) -> str:
    number = mobile()
    await world.consent(number, "voice")
    call = await telnyx_sdk(world).calls.dial(connection_id="c", to=number, from_=world.voice,
                                              **extra)
    assert call.data is not None
    assert call.data.call_control_id is not None
    return call.data.call_control_id
