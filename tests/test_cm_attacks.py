"""Attacks on the CM.com front: a sender with valid consent-proxy credentials trying to reach
someone it may not reach, send without a decision, crash the proxy or have CM cut the opt-out
line; and an outsider forging CM's inbound webhook. Raw bytes where the attack is in the bytes.
"""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest

from tests import cm_fixtures
from tests.cm_fixtures import api_key, rows_for
from tests.conftest import mobile
from tests.fake_cm import FakeCm
from tests.world import World

MESSAGE = "/v1.0/message"
SECRET = "cm-webhook-secret-0123456789"  # as cm_fixtures.cm_world sets it
INBOUND = "/webhooks/cm/inbound"
fake_cm = cm_fixtures.fake_cm
cm_world = cm_fixtures.cm_world


async def post_raw(world: World, path: str, raw: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            world.base + path, data=raw,
            headers={"Content-Type": "application/json"}) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def request(key: str, *msgs: dict[str, Any]) -> dict[str, Any]:
    return {"messages": {"authentication": {"producttoken": key}, "msg": list(msgs)}}


def msg(sender: str, *numbers: str, content: str = "Uw aanbieding", **extra: Any
        ) -> dict[str, Any]:
    return {"from": sender, "to": [{"number": n} for n in numbers],
            "body": {"type": "auto", "content": content}, **extra}


async def send(world: World, body: dict[str, Any]) -> tuple[int, Any]:
    return await post_raw(world, MESSAGE, json.dumps(body).encode())


# --- bodies that crashed the request -----------------------------------------------------------

def _nested(depth: int) -> bytes:
    """A JSON value nested `depth` arrays deep: within what the JSON parser takes."""
    return b"[" * depth + b'"x"' + b"]" * depth


@pytest.mark.parametrize("depth", [200, 400, 700, 990])
async def test_a_deeply_nested_send_is_malformed_not_a_crash(
        cm_world: World, fake_cm: FakeCm, log_output: io.StringIO, depth: int) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    raw = json.dumps(request(api_key(cm_world), msg(cm_world.sms, number))).encode()
    raw = b'{"x": ' + _nested(depth) + b", " + raw[1:]
    status, answer = await post_raw(cm_world, MESSAGE, raw)
    assert status == 400, answer
    assert answer["errorCode"] == 202
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []
    assert "request_crashed" not in log_output.getvalue()


@pytest.mark.parametrize("depth", [400, 990])
async def test_a_deeply_nested_inbound_message_is_malformed_not_a_crash(
        cm_world: World, fake_cm: FakeCm, log_output: io.StringIO, depth: int) -> None:
    number = mobile()
    raw = (b'{"from": {"number": "00' + number[1:].encode() + b'"}, "to": {"number": "00'
           + cm_world.sms[1:].encode() + b'"}, "message": {"text": "STOP"}, "x": '
           + _nested(depth) + b"}")
    status, answer = await post_raw(cm_world, f"{INBOUND}?secret={SECRET}", raw)
    assert status == 400, answer
    assert answer["errorCode"] == 202
    assert fake_cm.requests == []
    assert "request_crashed" not in log_output.getvalue()
