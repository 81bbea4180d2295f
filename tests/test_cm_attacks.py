"""Attacks on the CM.com front: a sender with valid consent-proxy credentials trying to reach
someone it may not reach, send without a decision, crash the proxy or have CM cut the opt-out
line; and an outsider forging CM's inbound webhook. Raw bytes where the attack is in the bytes.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from proxy.keys import POOL
from tests import cm_fixtures
from tests.cm_fixtures import api_key, cm_proxy, rows_for
from tests.conftest import Clock, mobile
from tests.fake_cm import FakeCm
from tests.world import World, make_world

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


# --- N17: CM counts a UCS-2 part as 66 characters and cuts what does not fit ---------------------

def _ucs2_parts_cm(world: World) -> tuple[str, str]:
    """A UCS-2 text that, with the footer, is 134 UTF-16 units: two parts of 67, but three of
    CM's 66, so CM limited to two parts would cut the footer."""
    footer = f"Afmelden? Sms STOP naar {world.sms}"
    text = "ł" * (134 - 1 - len(footer))
    return text, footer


async def test_a_footer_cm_would_cut_from_a_ucs2_text_is_refused(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    text, _ = _ucs2_parts_cm(cm_world)
    status, answer = await send(cm_world, request(api_key(cm_world), msg(
        cm_world.sms, number, content=text, minimumNumberOfMessageParts=1,
        maximumNumberOfMessageParts=2)))
    assert status == 400, answer
    (entry,) = answer["messages"]
    assert (entry["messageErrorCode"], entry["reason"]) == (304, "OPT_OUT_FOOTER_DOES_NOT_FIT")
    assert "3 parts" in entry["messageDetails"]
    assert fake_cm.requests == []  # nothing CM would cut
    (row,) = await rows_for(cm_world, number)
    assert row["details"]["segments_after"] == 3


async def test_a_ucs2_text_that_fits_cms_parts_keeps_its_footer_whole(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    text, footer = _ucs2_parts_cm(cm_world)
    status, answer = await send(cm_world, request(api_key(cm_world), msg(
        cm_world.sms, number, content=text, minimumNumberOfMessageParts=1,
        maximumNumberOfMessageParts=3)))
    assert (status, answer["messages"][0]["status"]) == (200, "Accepted"), answer
    ((sent, _),) = fake_cm.sent()
    assert sent["body"]["content"] == f"{text}\n{footer}"
    assert answer["messages"][0]["parts"] == 3


async def test_a_ucs2_text_over_cms_parts_is_refused_before_deciding(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    status, answer = await send(cm_world, request(api_key(cm_world), msg(
        cm_world.sms, number, content="ł" * 134, minimumNumberOfMessageParts=1,
        maximumNumberOfMessageParts=2)))
    assert (status, answer["errorCode"], answer.get("reason")) == (
        400, 304, "MESSAGE_PARTS_EXCEEDED"), answer
    assert await rows_for(cm_world, number) == []


# --- upstream answers that do not say what became of a message -----------------------------------

async def _reversals(pool: asyncpg.Pool, decision_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT why FROM consumption_reversals WHERE decision_id = $1", decision_id)
    return rows


@pytest.mark.parametrize("garbage", ["<html>ok</html>", '{"details": "Created 1 message(s)"}',
                                     '{"errorCode": 0, "messages": "x"}'])
async def test_a_2xx_answer_without_the_recipient_keeps_the_request_used(
        cm_world: World, fake_cm: FakeCm, garbage: str) -> None:
    """CM said 200: the message may have left. The contact request it used stays used (N6),
    or the sender could reach the person a second time on one request."""
    number = mobile()
    request_id = await cm_world.consent(number, "sms", kind="request")
    fake_cm.fail_with(200, garbage)
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    (entry,) = answer["messages"]
    assert (status, entry["status"]) == (502, "Unknown"), answer
    (row,) = await rows_for(cm_world, number)
    assert row["consumed_consent_id"] == request_id
    pool = cm_world.admin.app[POOL]
    assert await _reversals(pool, row["id"]) == []
    # The request is used: the next send has no basis.
    fake_cm._fail = None
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert (status, answer["messages"][0]["reason"]) == (400, "NO_LEGAL_BASIS")
    assert len(fake_cm.requests) == 1


async def _stays_used(world: World, fake: FakeCm, number: str, request_id: int,
                      answer: Any) -> None:
    (entry,) = answer["messages"]
    assert entry["status"] == "Unknown", answer
    (row,) = await rows_for(world, number)
    assert row["consumed_consent_id"] == request_id
    assert await _reversals(world.admin.app[POOL], row["id"]) == []


async def test_an_answer_that_breaks_off_is_unknown_not_unreachable(
        cm_world: World, fake_cm: FakeCm) -> None:
    """CM answered 200 and the connection dropped in the body: CM has the message."""
    number = mobile()
    request_id = await cm_world.consent(number, "sms", kind="request")
    fake_cm.break_off(200)
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert status == 502
    await _stays_used(cm_world, fake_cm, number, request_id, answer)


async def test_an_answer_larger_than_cm_gives_is_not_read_whole(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    request_id = await cm_world.consent(number, "sms", kind="request")
    fake_cm.fail_with(200, {"details": "x" * (5 * 1024 * 1024), "errorCode": 0, "messages": [
        {"to": "00" + number[1:], "status": "Accepted", "reference": None, "parts": 1,
         "messageDetails": None, "messageErrorCode": 0}]})
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert status == 502
    await _stays_used(cm_world, fake_cm, number, request_id, answer)


# --- what held ----------------------------------------------------------------------------------

async def test_one_contact_request_named_twice_in_one_request_is_used_once(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms", kind="request")
    national = "0" + number[3:]
    status, answer = await send(cm_world, request(api_key(cm_world),
                                                  msg(cm_world.sms, number, national),
                                                  msg(cm_world.sms, number)))
    assert status == 200
    assert sorted(m["status"] for m in answer["messages"]) == ["Accepted", "Rejected",
                                                               "Rejected"]
    assert len(fake_cm.sent()) == 1
    assert len(await rows_for(cm_world, number)) == 3


async def test_concurrent_requests_for_one_contact_request_send_once(
        cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms", kind="request")
    body = request(api_key(cm_world), msg(cm_world.sms, number))
    results = await asyncio.gather(*(send(cm_world, body) for _ in range(6)))
    assert sorted(status for status, _ in results) == [200] + [400] * 5
    assert len(fake_cm.sent()) == 1


async def _raw(world: World, head: str, body: bytes = b"") -> tuple[int, bytes]:
    host, port = world.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head.encode("latin-1") + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head_, _, rest = data.partition(b"\r\n\r\n")
    return int(head_.split(b" ")[1]), rest


@pytest.mark.parametrize("query", ["secret=%ED%A0%80", "secret=%FF%FE", "secret=%00",
                                   "secret=" + SECRET + "%00", "secret=" + SECRET.upper(),
                                   "Secret=" + SECRET, "secret=" + SECRET + "&secret=x"])
async def test_odd_webhook_secrets_are_refused_not_crashed(
        cm_world: World, fake_cm: FakeCm, query: str) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = json.dumps({"from": {"number": "00" + number[1:]},
                       "to": {"number": "00" + cm_world.sms[1:]},
                       "message": {"text": "STOP"}}).encode()
    status, _ = await _raw(cm_world, f"POST {INBOUND}?{query} HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n", body)
    assert status in (400, 401, 403)
    assert fake_cm.sent() == []
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert answer["messages"][0]["status"] == "Accepted"


@pytest.mark.parametrize("authorization", [
    "Basic " + "Y206" + "/w==",  # "cm:" and a byte that is no UTF-8
    "Basic !!!", "Basic", "basic " + "Y206Y20td2ViaG9vay1zZWNyZXQ=",
])
async def test_odd_basic_credentials_are_refused(
        cm_world: World, fake_cm: FakeCm, authorization: str) -> None:
    status, _ = await _raw(cm_world, f"POST {INBOUND} HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: {authorization}\r\nContent-Length: 2\r\n"
                           "Connection: close\r\n\r\n", b"{}")
    assert status in (401, 403)


@pytest.mark.parametrize(("method", "path"), [
    ("HEAD", MESSAGE), ("OPTIONS", MESSAGE), ("PUT", MESSAGE), ("PATCH", MESSAGE),
    ("POST", "/v1.0/message/../message"), ("POST", "/v1.0/messag%65"),
    ("POST", "/v1.0/message%2F"), ("POST", "/V1.0/message"), ("POST", "/gateway.ashx"),
    ("POST", "/v1.0/message?producttoken=x"), ("POST", "/v1.0/message#x"),
    ("POST", "http://x/v1.0/messages"),
])
async def test_only_the_one_send_path_sends(
        cm_world: World, fake_cm: FakeCm, method: str, path: str) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = json.dumps(request(api_key(cm_world), msg(cm_world.sms, number))).encode()
    status, _ = await _raw(cm_world, f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n", body)
    sent = path.startswith("/v1.0/message?") and method == "POST"
    assert (status == 200) is sent, status
    assert len(fake_cm.sent()) == int(sent)
    assert len(await rows_for(cm_world, number)) == int(sent)


async def test_a_smuggled_second_length_is_refused(cm_world: World, fake_cm: FakeCm) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = json.dumps(request(api_key(cm_world), msg(cm_world.sms, number))).encode()
    status, _ = await _raw(cm_world, f"POST {MESSAGE} HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n"
                           "Connection: close\r\n\r\n", body)
    assert status == 400
    assert fake_cm.sent() == []


@pytest.mark.parametrize("text", [b"STOP \\ud83d", b"STOP\\u0000", b"Stop \\udc00 aub"])
async def test_a_stop_with_a_broken_character_is_taken_not_refused(
        cm_world: World, fake_cm: FakeCm, text: bytes) -> None:
    """A 400 would have CM deliver it again for a month and never record it: a STOP is never
    dropped for a character the person's phone or a network mangled."""
    number = mobile()
    await cm_world.consent(number, "sms")
    raw = (b'{"reference": "r\\ud800", "from": {"number": "00' + number[1:].encode()
           + b'"}, "to": '
           b'{"number": "00' + cm_world.sms[1:].encode() + b'"}, "message": {"text": "'
           + text + b'"}, "timeUtc": "2026-11-30T09:00:00", "channel": "SMS"}')
    status, answer = await post_raw(cm_world, f"{INBOUND}?secret={SECRET}", raw)
    assert status == 200, answer
    status, answer = await send(cm_world, request(api_key(cm_world), msg(cm_world.sms, number)))
    assert answer["messages"][0]["reason"] == "OBJECTION_ON_FILE"


async def test_another_organisations_sender_sends_nothing(
        cm_world: World, fake_cm: FakeCm) -> None:
    other = await make_world(cm_world.admin, cm_world.auth)
    number = mobile()
    await other.consent(number, "sms")
    status, answer = await send(cm_world, request(api_key(cm_world), msg(other.sms, number)))
    assert status == 400
    assert answer["messages"][0]["status"] == "Rejected"
    assert fake_cm.requests == []


async def test_a_footer_that_turns_the_text_into_ucs2_is_counted_as_cm_splits_it(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_cm: FakeCm,
        tmp_path: Path, auth: dict[str, str]) -> None:
    """A GSM-7 text of 100 characters fits one part; the organisation's footer names it
    "Łódź Energie", which is no GSM-7: the whole text becomes UCS-2, over 70 characters."""
    proxy = await cm_proxy(aiohttp_client, database_url, clock, fake_cm, tmp_path)
    world = await make_world(proxy, auth, footer="Łódź Energie: sms STOP naar {sender}")
    number = mobile()
    await world.consent(number, "sms")
    status, answer = await send(world, request(api_key(world), msg(
        world.sms, number, content="a" * 100)))
    (entry,) = answer["messages"]
    assert (status, entry["reason"]) == (400, "OPT_OUT_FOOTER_DOES_NOT_FIT")
    (row,) = await rows_for(world, number)
    assert (row["details"]["encoding_before"], row["details"]["encoding"]) == ("GSM-7",
                                                                              "UCS-2")
    assert fake_cm.requests == []


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/xml", b"<MESSAGES><AUTHENTICATION><PRODUCTTOKEN>KEY</PRODUCTTOKEN></AUTHENTICATION>"
                 b"<MSG><FROM>SENDER</FROM><TO>NUMBER</TO><BODY>Hoi</BODY></MSG></MESSAGES>"),
    ("application/x-www-form-urlencoded",
     b"producttoken=KEY&body=Hoi&to=NUMBER&from=SENDER"),
])
async def test_cms_other_formats_send_nothing(
        cm_world: World, fake_cm: FakeCm, content_type: str, body: bytes) -> None:
    number = mobile()
    await cm_world.consent(number, "sms")
    body = (body.replace(b"KEY", api_key(cm_world).encode())
            .replace(b"NUMBER", number.encode()).replace(b"SENDER", cm_world.sms.encode()))
    async with aiohttp.ClientSession() as session, session.post(
            cm_world.base + MESSAGE, data=body,
            headers={"Content-Type": content_type}) as resp:
        assert resp.status == 400
        assert (await resp.json())["errorCode"] == 202
    assert fake_cm.requests == []
    assert await rows_for(cm_world, number) == []
