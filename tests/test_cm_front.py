"""The CM.com front end to end: the official SDK (`cm-text-sdk-python`) as the sender, real
sockets, real PostgreSQL, and a fake CM gateway that records what reached it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.keys import POOL
from proxy.settings import ConfigError
from tests import cm_fixtures
from tests.cm_fixtures import UP_CM_TOKEN, api_key, cm_proxy, rows_for, sdk
from tests.conftest import Clock, make_settings, mobile
from tests.fake_cm import FakeCm
from tests.world import World, in_thread, make_world

MESSAGE = "/v1.0/message"
# The CM fixtures, for this module's tests.
fake_cm = cm_fixtures.fake_cm
cm_world = cm_fixtures.cm_world


def cm00(e164: str) -> str:
    return "00" + e164[1:]


async def post(world: World, body: Any, *, raw: bytes | None = None,
               headers: dict[str, str] | None = None, path: str = MESSAGE
               ) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.post(
            world.base + path, data=data,
            headers={"Content-Type": "application/json", **(headers or {})}) as resp:
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


# --- SMS through the SDK --------------------------------------------------------------------

async def test_allowed_sms_gets_the_footer_and_the_upstream_token(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage(
        "Uw nieuwe tarief: 10% korting!", cm_world.sms, ["0" + number[3:]], reference="batch7"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["errorCode"] == 0
    (entry,) = answer["messages"]
    assert entry["status"] == "Accepted"
    assert entry["to"] == "0" + number[3:]  # as the sender spelled it
    assert entry["reference"] == "batch7"
    (received,) = fake_cm.requests
    assert received.token == UP_CM_TOKEN  # never the client's
    assert api_key(cm_world) not in json.dumps(received.body)
    (sent,) = received.msgs
    assert sent["to"] == [{"number": cm00(number)}]  # the number decided on, CM's spelling
    assert sent["from"] == cm00(cm_world.sms)
    assert sent["body"] == {"type": "AUTO", "content": "Uw nieuwe tarief: 10% korting!\n"
                            f"Afmelden? Sms STOP naar {cm_world.sms}"}
    assert sent["allowedChannels"] == ["SMS"]
    assert sent["reference"] == "batch7"
    assert sent["customGrouping3"].startswith("text-sdk-python-")  # the SDK's own, kept
    (row,) = await rows_for(cm_world, number)
    assert (row["decision"], row["front"], row["client_id"]) == ("allow", "cm", cm_world.sid)
    assert row["obligations"] == ["OPT_OUT_APPENDED"]
    assert row["details"]["footer_appended"] is True
    assert (row["details"]["segments_before"], row["details"]["segments_after"]) == (1, 1)
    assert row["upstream_status"] == 200
    assert entry["decision_id"] == row["id"]


async def test_objection_is_blacklisted_with_reason_and_decision(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    await cm_world.objection(number, organisation=cm_world.org, channel="sms")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", cm_world.sms, [number]))
    assert response.status_code == 400
    answer = response.json()
    assert (answer["errorCode"], answer["details"]) == (201, "Created 0 message(s)")
    (entry,) = answer["messages"]
    (row,) = await rows_for(cm_world, number)
    assert entry["status"] == "Rejected"
    assert entry["messageErrorCode"] == 402
    assert (entry["reason"], entry["decision_id"]) == ("OBJECTION_ON_FILE", row["id"])
    assert f"OBJECTION_ON_FILE (decision {row['id']})" in entry["messageDetails"]
    assert fake_cm.requests == []
    assert (row["decision"], row["reason"], row["front"]) == ("deny", "OBJECTION_ON_FILE", "cm")


async def test_each_recipient_is_decided_and_only_the_allowed_ones_leave(
        cm_world: World, fake_cm: FakeCm) -> None:
    consented, objected, unknown, second = mobile(), mobile(), mobile(), mobile()
    for number in (consented, objected, second):
        await cm_world.consent(number, "sms")
    await cm_world.objection(objected)
    client = sdk(cm_world)
    client.AddMessage("Eerste", cm_world.sms, [consented, objected, unknown],
                      reference="a")
    client.AddMessage("Tweede", cm_world.sms, [second], reference="b")
    response = await in_thread(client.send)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["errorCode"], answer["details"]) == (201, "Created 2 message(s)")
    assert [(m["to"], m["status"], m["reference"]) for m in answer["messages"]] == [
        (consented, "Accepted", "a"), (objected, "Rejected", "a"),
        (unknown, "Rejected", "a"), (second, "Accepted", "b")]
    assert [m.get("reason") for m in answer["messages"]] == [
        None, "OBJECTION_ON_FILE", "NO_LEGAL_BASIS", None]
    assert [m["messageErrorCode"] for m in answer["messages"]] == [0, 402, 403, 0]
    (received,) = fake_cm.requests  # one upstream request, the allowed ones only
    assert [(m["body"]["content"].split("\n")[0], [t["number"] for t in m["to"]])
            for m in received.msgs] == [("Eerste", [cm00(consented)]),
                                        ("Tweede", [cm00(second)])]
    for number in (consented, objected, unknown, second):
        (row,) = await rows_for(cm_world, number)  # one decision row per recipient
        assert row["front"] == "cm"


async def test_every_decision_is_committed_before_anything_reaches_cm(
        cm_world: World, fake_cm: FakeCm) -> None:
    numbers = [mobile() for _ in range(20)]
    for number in numbers[:15]:
        await cm_world.consent(number, "sms")
    seen: list[int] = []

    async def committed_rows(_received: Any) -> None:
        # A fresh connection: only what is committed is visible.
        seen.append(await cm_world.admin.app[POOL].fetchval(
            "SELECT count(*) FROM decisions WHERE client_id = $1", cm_world.sid))

    fake_cm.on_request = committed_rows
    status, answer = await post(cm_world, request(api_key(cm_world),
                                                  msg(cm_world.sms, *numbers[:10]),
                                                  msg(cm_world.sms, *numbers[10:])))
    assert (status, answer["errorCode"]) == (200, 201)
    assert seen == [20]  # one request upstream, after all twenty rows were committed
    assert [m["status"] for m in answer["messages"]] == ["Accepted"] * 15 + ["Rejected"] * 5
    assert len(fake_cm.sent()) == 15


async def test_the_sdk_rich_and_other_channels_are_refused_before_deciding(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage(
        "Hoi", cm_world.sms, [number], allowedChannels=["SMS", "Whatsapp"]))
    assert response.status_code == 400
    answer = response.json()
    assert (answer["errorCode"], answer["reason"]) == (305, "CHANNEL_NOT_GATED")
    assert "Whatsapp" in answer["details"]
    client.AddRichMessage("Kijk", {"mediaName": "x", "mediaUri": "https://a/x.png",
                                   "mimeType": "image/png"}, cm_world.sms, [number],
                          allowedChannels=["SMS"])
    response = await in_thread(client.send)
    assert (response.status_code, response.json()["reason"]) == (400, "CHANNEL_NOT_GATED")
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []


async def test_without_allowed_channels_only_sms_is_forwarded(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    status, _ = await post(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert status == 200
    assert fake_cm.requests[0].msgs[0]["allowedChannels"] == ["SMS"]


# --- N17: parts, never truncated ------------------------------------------------------------

async def test_footer_needing_more_parts_than_allowed_is_refused(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world)  # the SDK sets no parts: CM sends one
    response = await in_thread(lambda: client.SendSingleMessage("x" * 150, cm_world.sms,
                                                                [number]))
    assert response.status_code == 400
    (entry,) = response.json()["messages"]
    assert (entry["messageErrorCode"], entry["reason"]) == (304, "OPT_OUT_FOOTER_DOES_NOT_FIT")
    assert fake_cm.requests == []
    (row,) = await rows_for(cm_world, number)
    assert row["decision"] == "allow"
    assert row["details"]["segments_after"] == 2
    assert "parts" in row["error"]
    # Allowing three parts lets it through, with the footer whole.
    body = request(api_key(cm_world), msg(cm_world.sms, number, content="x" * 150,
                                          minimumNumberOfMessageParts=1,
                                          maximumNumberOfMessageParts=3))
    status, answer = await post(cm_world, body)
    assert (status, answer["messages"][0]["status"]) == (200, "Accepted")
    (sent, _), = fake_cm.sent()
    assert sent["body"]["content"].endswith(f"STOP naar {cm_world.sms}")
    assert sent["maximumNumberOfMessageParts"] == 3


async def test_a_text_longer_than_its_parts_is_refused_before_deciding(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    status, answer = await post(cm_world, request(api_key(cm_world), msg(
        cm_world.sms, number, content="y" * 200)))
    assert (status, answer["errorCode"], answer["reason"]) == (400, 304,
                                                               "MESSAGE_PARTS_EXCEEDED")
    assert await rows_for(cm_world, number) == []


# --- authentication -------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["nonsense", "AC" + "0" * 32 + ".abc", "{sid}.wrong"])
async def test_unknown_product_token_is_101(cm_world: World, fake_cm: FakeCm, key: str) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world, key.format(sid=cm_world.sid))
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", cm_world.sms, [number]))
    assert response.status_code == 400
    assert response.json() == {"details": "No account found for the given authentication",
                               "errorCode": 101, "messages": []}
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []


async def test_header_token_works_and_a_conflicting_one_is_refused(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = {"messages": {"msg": [msg(cm_world.sms, number)]}}
    status, _ = await post(cm_world, body, headers={"X-CM-PRODUCTTOKEN": api_key(cm_world)})
    assert status == 200
    other = await make_world(cm_world.admin, cm_world.auth)
    status, answer = await post(cm_world, request(api_key(other), msg(cm_world.sms, number)),
                                headers={"X-CM-PRODUCTTOKEN": api_key(cm_world)})
    assert (status, answer["errorCode"]) == (400, 101)
    assert len(fake_cm.requests) == 1


async def test_a_disabled_client_is_refused(cm_world: World, fake_cm: FakeCm) -> None:
    resp = await cm_world.admin.post(f"/admin/v1/clients/{cm_world.sid}/disable",
                                     headers=cm_world.auth)
    assert resp.status == 200
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", cm_world.sms,
                                                                [mobile()]))
    assert (response.status_code, response.json()["errorCode"]) == (400, 101)


# --- bad input: a clear 4xx, nothing decided ------------------------------------------------

@pytest.mark.parametrize(("raw", "code"), [
    (b"not json", 202),
    (b"\xff\xfe{}", 202),
    (b'{"messages": {"msg": []}, "messages": {}}', 202),
    (b"[1, 2]", 202),
    (b'{"messages": {"authentication": {"producttoken": "KEY"}, "msg": [NaN]}}', 202),
])
async def test_malformed_bodies_are_202(cm_world: World, fake_cm: FakeCm, raw: bytes,
                                        code: int) -> None:
    status, answer = await post(cm_world, None, raw=raw.replace(b"KEY",
                                                                api_key(cm_world).encode()))
    assert (status, answer["errorCode"]) == (400, code)
    assert fake_cm.requests == []


@pytest.mark.parametrize(("change", "code"), [
    ({"To": [{"number": "+31612345678"}]}, 202),  # a second `to`, in another case
    ({"from": ""}, 301),
    ({"to": []}, 302),
    ({"to": "+31612345678"}, 302),
    ({"to": [{"number": "+31612345678", "extra": 1}]}, 302),
    ({"body": {"type": "auto", "content": ""}}, 304),
    ({"body": {"type": "BINARY", "content": "AAEC"}}, 304),
    ({"dcs": 8}, 305),
    ({"udh": "050003CC0201"}, 305),
    ({"appKey": "2c5a1c2a-0000-0000-0000-000000000000"}, 305),
    ({"scheduledAt": "2027-01-01T10:00:00Z"}, 305),
    ({"minimumNumberOfMessageParts": 1}, 305),
    ({"minimumNumberOfMessageParts": 1, "maximumNumberOfMessageParts": 9}, 305),
    ({"reference": "r" * 33}, 305),
    ({"body": {"type": "auto", "content": "a\u0000b"}}, 202),
    ({"body": {"type": "auto", "content": "a\ud800b"}}, 202),
    ({"from": "\ud83d"}, 202),
])
async def test_invalid_msg_is_refused_as_cm_would_name_it(
        cm_world: World, fake_cm: FakeCm, change: dict[str, Any], code: int) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    status, answer = await post(cm_world, request(api_key(cm_world),
                                                  {**msg(cm_world.sms, number), **change}))
    assert (status, answer["errorCode"]) == (400, code), answer
    assert answer["messages"] == []
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []


async def test_an_oversized_body_is_413_in_cm_shape(cm_world: World, fake_cm: FakeCm) -> None:
    status, answer = await post(cm_world, None, raw=b'{"messages": "' + b"x" * 2_000_000
                                + b'"}')
    assert status == 413
    assert answer["errorCode"] == 202


async def test_too_many_recipients_are_refused(cm_world: World, fake_cm: FakeCm) -> None:
    numbers = [f"+3161{i:07d}" for i in range(1001)]
    status, answer = await post(cm_world, request(api_key(cm_world),
                                                  msg(cm_world.sms, *numbers)))
    assert (status, answer["errorCode"]) == (400, 302)


# --- paths: only POST /v1.0/message, as a real server would read the path -------------------

async def _raw(world: World, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    host, port = world.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


@pytest.mark.parametrize("path", [
    "/v1.0/%6Dessage", "/v1.0/x/../message", "/v1.0/./message", "//v1.0/message",
    "/v1.0/message/", "/v1.0//message", "/v1.0%2Fmessage", "/v1.0/message;x",
    "/v1.0/Message", "/v1.0/%2e%2e/v1.0/message",
])
async def test_non_canonical_paths_are_404_and_send_nothing(
        cm_world: World, fake_cm: FakeCm, path: str) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = json.dumps(request(api_key(cm_world), msg(cm_world.sms, number))).encode()
    status, _ = await _raw(cm_world, "POST", path, body)
    assert status == 404
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []


async def test_other_methods_and_paths(cm_world: World, fake_cm: FakeCm) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(cm_world.base + MESSAGE) as resp:
            assert resp.status == 405
            assert (await resp.json())["errorCode"] == 999
        async with session.post(cm_world.base + "/v1.0/messages/batch") as resp:
            assert resp.status == 404
            assert (await resp.json())["messages"] == []


# --- upstream faults ------------------------------------------------------------------------

async def test_upstream_rejecting_a_number_is_merged_and_given_back(
        cm_world: World, fake_cm: FakeCm) -> None:
    good, bad = mobile(), mobile()
    for number in (good, bad):
        await cm_world.consent(number, "sms")
    fake_cm.reject(cm00(bad), 303)
    status, answer = await post(cm_world, request(api_key(cm_world),
                                                  msg(cm_world.sms, bad, good)))
    assert (status, answer["errorCode"]) == (200, 201)
    assert [(m["to"], m["status"], m["messageErrorCode"]) for m in answer["messages"]] == [
        (bad, "Rejected", 303), (good, "Accepted", 0)]
    (row,) = await rows_for(cm_world, bad)
    assert (row["upstream_status"], row["error"]) == (200, "upstream rejected: "
                                                      "messageErrorCode 303")
    reversal = await cm_world.admin.app[POOL].fetchval(
        "SELECT why FROM consumption_reversals WHERE decision_id = $1", row["id"])
    assert reversal in (None, "provider_refused")  # nothing consumed by a consent send


async def test_upstream_error_without_messages_keeps_its_status(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    fake_cm.fail_with(503, "<html>busy</html>")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", cm_world.sms, [number]))
    assert response.status_code == 503
    assert response.json()["errorCode"] == 999
    (row,) = await rows_for(cm_world, number)
    assert (row["upstream_status"], row["decision"]) == (503, "allow")


async def test_upstream_refusing_the_request_says_it_is_cms_answer(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    fake_cm.fail_with(400, {"details": "No account found for the given authentication",
                            "errorCode": 101, "messages": []})
    status, answer = await post(cm_world, request(api_key(cm_world), msg(cm_world.sms,
                                                                         number)))
    assert (status, answer["errorCode"]) == (400, 101)
    assert answer["details"] == "CM answered: No account found for the given authentication"
    (entry,) = answer["messages"]
    assert (entry["status"], entry["messageErrorCode"]) == ("Rejected", 101)
    (row,) = await rows_for(cm_world, number)
    assert (row["upstream_status"], row["error"]) == (400, "upstream rejected: "
                                                      "messageErrorCode 101")


async def test_upstream_timeout_is_504_and_not_retried(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_cm: FakeCm,
        tmp_path: Path, auth: dict[str, str]) -> None:
    proxy = await cm_proxy(aiohttp_client, database_url, clock, fake_cm, tmp_path, 0.5)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    fake_cm.hang(5)
    client = sdk(world)
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", world.sms, [number]))
    assert response.status_code == 504
    answer = response.json()
    assert answer["errorCode"] == 930504
    assert answer["messages"][0]["status"] == "Unknown"
    assert len(fake_cm.requests) == 1
    (row,) = await rows_for(world, number)
    assert row["error"] == "upstream timeout"


async def test_upstream_unreachable_is_502(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_cm: FakeCm,
        tmp_path: Path, auth: dict[str, str]) -> None:
    proxy = await cm_proxy(aiohttp_client, database_url, clock, fake_cm, tmp_path)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    await fake_cm.stop()
    client = sdk(world)
    response = await in_thread(lambda: client.SendSingleMessage("Hoi", world.sms, [number]))
    assert response.status_code == 502
    assert response.json()["errorCode"] == 930502
    (row,) = await rows_for(world, number)
    assert (row["decision"], row["error"]) == ("allow", "upstream unreachable")


async def test_consent_store_down_is_503_and_nothing_forwarded(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage("x", cm_world.sms, [number]))
    assert response.status_code == 200
    cm_world.admin.app[POOL].terminate()
    client.AddMessage("y", cm_world.sms, [number, mobile()])
    response = await in_thread(client.send)
    assert response.status_code == 503
    answer = response.json()
    assert (answer["errorCode"], answer["reason"]) == (930503, "CONSENT_STORE_UNAVAILABLE")
    assert len(fake_cm.requests) == 1


# --- sandbox and settings -------------------------------------------------------------------

async def test_sandbox_answers_without_a_product_token(
        aiohttp_client: Any, database_url: str, clock: Clock, tmp_path: Path,
        auth: dict[str, str]) -> None:
    proxy = await cm_proxy(aiohttp_client, database_url, clock, None, tmp_path)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    client = sdk(world)
    response = await in_thread(lambda: client.SendSingleMessage("Proef", world.sms, [number]))
    assert response.status_code == 200
    assert response.json()["messages"][0]["status"] == "Accepted"


@pytest.mark.parametrize(("env", "key"), [
    ({"CM_PRODUCT_TOKEN": "not-a-uuid"}, "CM_PRODUCT_TOKEN"),
    ({"CM_API_BASE": "ftp://x"}, "CM_API_BASE"),
    ({"CM_API_BASE": "https://gw.messaging.cm.com/v1.0/message"}, "CM_API_BASE"),
    ({"CM_WEBHOOK_SECRET": "short"}, "CM_WEBHOOK_SECRET"),
])
def test_bad_settings_name_the_key(database_url: str, env: dict[str, str], key: str) -> None:
    from proxy.app import create_app

    with pytest.raises(ConfigError, match=key):
        create_app(make_settings(database_url, **env))



# --- public contracts are documented --------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")


@pytest.mark.parametrize("variable", ["CM_PRODUCT_TOKEN", "CM_API_BASE", "CM_WEBHOOK_SECRET"])
def test_cm_environment_variable_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in README


@pytest.mark.parametrize("reason", ["OBJECTION_ON_FILE", "INVALID_NUMBER", "UNKNOWN_SENDER",
                                    "OPT_OUT_FOOTER_DOES_NOT_FIT", "MESSAGE_PARTS_EXCEEDED",
                                    "CHANNEL_NOT_GATED", "UPSTREAM_TIMEOUT"])
def test_cm_error_mapping_is_documented(reason: str) -> None:
    section = README.split("## Point your sender at consent-proxy: CM.com", 1)[1]
    assert f"`{reason}`" in section.split("\n## ", 1)[0]


# --- ways around ----------------------------------------------------------------------------

async def test_look_alike_numbers_leave_as_decided(cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    wide = "".join(chr(ord(c) + 0xFEE0) for c in "0" + number[3:])  # full-width digits
    status, answer = await post(cm_world, request(api_key(cm_world), msg(
        cm_world.sms, wide, "0" + number[3:])))
    assert status == 200
    assert [m["to"] for m in answer["messages"]] == [wide, "0" + number[3:]]
    assert [n for _, n in fake_cm.sent()] == [cm00(number), cm00(number)]
    assert len(await rows_for(cm_world, number)) == 2  # each recipient decided


async def test_alphanumeric_sender_whose_footer_names_itself_is_denied(
        cm_world: World, fake_cm: FakeCm) -> None:
    alphanumeric = "E" + uuid.uuid4().hex[:8]
    resp = await cm_world.admin.post("/admin/v1/senders", json={
        "sender": alphanumeric, "organisation": cm_world.org, "topic": "energy"},
        headers=cm_world.auth)
    assert resp.status == 201
    number = mobile()
    await cm_world.consent(number, "sms")
    client = sdk(cm_world)
    response = await in_thread(lambda: client.SendSingleMessage("Actie", alphanumeric,
                                                                [number]))
    (entry,) = response.json()["messages"]
    assert (entry["reason"], entry["messageErrorCode"]) == ("OPT_OUT_NOT_APPENDABLE", 403)
    assert fake_cm.requests == []


async def test_metrics_carry_the_cm_front(cm_world: World, fake_cm: FakeCm) -> None:
    allowed, denied = mobile(), mobile()
    await cm_world.consent(allowed, "sms")
    status, _ = await post(cm_world, request(api_key(cm_world),
                                             msg(cm_world.sms, allowed, denied)))
    assert status == 200
    resp = await cm_world.admin.get("/metrics")
    text = await resp.text()
    assert 'consent_proxy_upstream_responses_total{front="cm",status="200"}' in text
    assert 'consent_proxy_upstream_seconds_count{front="cm"}' in text
    assert ('consent_proxy_decisions_total{channel="sms",decision="deny",front="cm",'
            'reason="NO_LEGAL_BASIS"}') in text


def test_serve_refuses_a_bad_cm_key_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve"], cwd=Path(__file__).resolve().parent.parent,
        text=True, capture_output=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PROXY_SECRET": "s", "ADMIN_TOKEN": "a",
             "OPTOUT_SPOOL_DIR": str(tmp_path / "spool"), "CM_PRODUCT_TOKEN": "not-a-uuid",
             "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2
    assert "configuration error: CM_PRODUCT_TOKEN:" in result.stderr
    assert "Traceback" not in result.stderr
