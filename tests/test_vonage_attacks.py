"""Attacks on the Vonage front by a client with valid credentials: bodies built to crash the
front, endpoint fields that reach further than the decided number, and names shared with
other clients' calls."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import mobile
from tests.fake_vonage import FakeVonage
from tests.test_vonage_calls import token
from tests.test_vonage_front import digits
from tests.vonage_world import VonageWorld, key_pair, register_application
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
