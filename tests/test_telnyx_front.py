"""The Telnyx front end to end: the official `telnyx` SDK as the sender, real sockets, real
PostgreSQL, and a fake Telnyx upstream that records what reached it."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
import telnyx
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.fronts.telnyx import fields
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from proxy.settings import ConfigError
from tests import fake_telnyx as sdk_fields
from tests.conftest import Clock, make_settings, mobile, uid
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import (
    UP_KEY,
    api_key,
    fake_telnyx,
    telnyx_decisions,
    telnyx_proxy,
    telnyx_proxy_app,
    telnyx_sdk,
    telnyx_world,
)
from tests.world import World, make_world

__all__ = ["fake_telnyx", "telnyx_proxy", "telnyx_world"]  # fixtures used below

AMS = ZoneInfo("Europe/Amsterdam")


def _error(exc: telnyx.APIStatusError) -> dict[str, Any]:
    body = exc.body
    assert isinstance(body, dict), body
    item: dict[str, Any] = body["errors"][0]
    return item


async def _post(world: World, path: str, body: Any, *, key: str | None = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None
                ) -> tuple[int, dict[str, Any]]:
    hdrs = {"Authorization": f"Bearer {key or api_key(world)}",
            "Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        resp = await session.request(
            "POST", f"{world.base}{path}", headers=hdrs,
            data=raw if raw is not None else json.dumps(body))
        return resp.status, await resp.json(content_type=None)


# --- SMS ------------------------------------------------------------------------------------

async def test_allowed_sms_gets_footer_and_upstream_key(telnyx_world: World,
                                                        fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    sdk = telnyx_sdk(world)
    sent = await sdk.messages.send(
        to=number, from_=world.sms, text="Uw nieuwe tarief: 10% korting!",
        webhook_url="https://dialer.example/dlr", media_urls=["https://a/1.png"],
        use_profile_webhooks=False, type="MMS")
    assert sent.data is not None
    assert sent.data.id
    (received,) = fake_telnyx.creates("messages")
    assert received.headers["Authorization"] == f"Bearer {UP_KEY}"  # never the client's key
    assert api_key(world) not in str(received.headers)
    assert received.json == {
        "to": number, "from": world.sms,
        "text": f"Uw nieuwe tarief: 10% korting!\nAfmelden? Sms STOP naar {world.sms}",
        "webhook_url": "https://dialer.example/dlr", "media_urls": ["https://a/1.png"],
        "use_profile_webhooks": False, "type": "MMS"}
    (row,) = await telnyx_decisions(world, number)
    assert (row["decision"], row["front"], row["client_id"]) == ("allow", "telnyx", world.sid)
    assert row["details"]["footer_appended"] is True
    assert (row["details"]["segments_before"], row["details"]["segments_after"]) == (1, 1)
    assert row["upstream_status"] == 200
    assert row["upstream_sid"] == sent.data.id
    assert received.headers["X-Consent-Decision-Id"] == str(row["id"])
    # The sender reads its own message back through the proxy.
    fetched = await sdk.messages.retrieve(sent.data.id)
    assert fetched.data is not None


async def test_media_only_message_gets_the_footer_as_text(telnyx_world: World,
                                                          fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await telnyx_sdk(world).messages.send(to=number, from_=world.sms,
                                          media_urls=["https://a/1.png"])
    assert fake_telnyx.creates()[0].json["text"] == f"Afmelden? Sms STOP naar {world.sms}"


async def test_objection_blocks_sms_with_40300(telnyx_world: World,
                                               fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await world.objection(number, organisation=world.org, channel="sms")
    with pytest.raises(telnyx.APIStatusError) as caught:
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="Hoi")
    assert caught.value.status_code == 403
    error = _error(caught.value)
    assert (error["code"], error["title"]) == ("40300", "Blocked due to STOP message")
    assert error["meta"]["reason"] == "OBJECTION_ON_FILE"
    assert fake_telnyx.creates() == []
    (row,) = await telnyx_decisions(world, number)
    assert (row["decision"], row["reason"], row["front"]) == ("deny", "OBJECTION_ON_FILE",
                                                              "telnyx")
    assert error["meta"]["decision_id"] == row["id"]


async def test_no_legal_basis_is_the_gates_code_with_reason(telnyx_world: World,
                                                            fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    with pytest.raises(telnyx.PermissionDeniedError) as caught:
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="Hoi")
    error = _error(caught.value)
    assert error["code"] == str(DENIAL_CODES["NO_LEGAL_BASIS"][1])
    assert error["meta"]["reason"] == "NO_LEGAL_BASIS"
    assert error["meta"]["url"].endswith(f"/errors/{error['code']}")
    (row,) = await telnyx_decisions(world, number)
    assert error["meta"]["decision_id"] == row["id"]
    assert fake_telnyx.creates() == []


async def test_footer_that_does_not_fit_is_refused(telnyx_world: World,
                                                   fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    with pytest.raises(telnyx.UnprocessableEntityError) as caught:
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="x" * 1590)
    assert _error(caught.value)["meta"]["reason"] == "OPT_OUT_FOOTER_DOES_NOT_FIT"
    assert fake_telnyx.creates() == []
    (row,) = await telnyx_decisions(world, number)
    assert row["upstream_status"] is None
    assert "1600" in row["error"]


async def test_scheduled_message_is_refused_undecided(telnyx_world: World, pool: asyncpg.Pool,
                                                      fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    with pytest.raises(telnyx.BadRequestError) as caught:
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="Later",
                                              send_at="2026-12-24T10:00:00Z")
    error = _error(caught.value)
    assert (error["code"], error["meta"]["reason"]) == ("930052", "SCHEDULED_SEND_NOT_GATED")
    assert error["source"] == {"pointer": "/send_at"}
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


# --- calls ----------------------------------------------------------------------------------

async def test_allowed_call_forwarded_then_read_and_hung_up(telnyx_world: World,
                                                            fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "voice")
    sdk = telnyx_sdk(world)
    call = await sdk.calls.dial(connection_id="1494404757140276705", to=number,
                                from_=world.voice, timeout_secs=30,
                                webhook_url="https://dialer.example/events")
    assert call.data is not None
    call_id = call.data.call_control_id
    (received,) = fake_telnyx.creates("calls")
    assert received.headers["Authorization"] == f"Bearer {UP_KEY}"
    assert received.json == {"connection_id": "1494404757140276705", "to": number,
                             "from": world.voice, "timeout_secs": 30,
                             "webhook_url": "https://dialer.example/events"}
    (row,) = await telnyx_decisions(world, number)
    assert (row["decision"], row["channel"], row["front"]) == ("allow", "voice", "telnyx")
    assert row["upstream_sid"] == call_id
    status = await sdk.calls.retrieve_status(call_id)
    assert status.data is not None
    await sdk.calls.actions.hangup(call_id)
    assert fake_telnyx.calls[call_id]["is_alive"] is False


async def test_denied_call_on_a_sunday(telnyx_world: World, clock: Clock,
                                       fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=AMS)  # Sunday
    with pytest.raises(telnyx.PermissionDeniedError) as caught:
        await telnyx_sdk(world).calls.dial(connection_id="c", to=number, from_=world.voice)
    error = _error(caught.value)
    assert error["code"] == str(DENIAL_CODES["PROHIBITED_DAY"][1])
    assert error["meta"]["reason"] == "PROHIBITED_DAY"
    assert error["meta"]["retry_after"] == "2026-11-30T09:00:00+01:00"
    assert fake_telnyx.creates() == []


@pytest.mark.parametrize("extra", [
    {"link_to": "v3:abc"}, {"bridge_on_answer": True}, {"bridge_intent": True},
    {"supervise_call_control_id": "v3:abc"}, {"privacy": "id"},
    {"custom_headers": [{"name": "P-Asserted-Identity", "value": "<sip:+31201234567@x>"}]},
    {"sip_headers": [{"name": "Diversion", "value": "x"}]},
    {"to": ["+31612345678", "+31612345679"]},
])
async def test_call_options_that_bypass_the_decision_are_refused(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool,
        extra: dict[str, Any]) -> None:
    world = telnyx_world
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    body = {"connection_id": "c", "to": mobile(), "from": world.voice, **extra}
    status, answer = await _post(world, "/v2/calls", body)
    assert status == 422, answer
    assert answer["errors"][0]["code"] == "10015"
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


async def test_call_playing_a_recording_is_automated_voice(telnyx_world: World,
                                                           fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "voice")  # a consent to calls, not to automated calls (N2)
    with pytest.raises(telnyx.PermissionDeniedError):
        await telnyx_sdk(world).calls.dial(connection_id="c", to=number, from_=world.voice,
                                           audio_url="https://dialer.example/promo.mp3")
    (row,) = await telnyx_decisions(world, number)
    assert row["decision"] == "deny"
    assert row["details"]["automated"] is True
    assert fake_telnyx.creates() == []


# --- authentication and validation ----------------------------------------------------------

async def test_bad_keys_are_401_in_telnyx_shape(telnyx_world: World,
                                                fake_telnyx: FakeTelnyx) -> None:
    world = telnyx_world
    for key in (f"{world.sid}.wrong", world.token, "", f"AC{'0' * 32}.{world.token}", UP_KEY):
        with pytest.raises(telnyx.AuthenticationError) as caught:
            await telnyx_sdk(world, key or "x").messages.send(to=mobile(), from_=world.sms,
                                                              text="x")
        assert _error(caught.value)["code"] == "10009"
    assert fake_telnyx.received == []


@pytest.mark.parametrize(("body", "code", "pointer"), [
    ({"from": "+31201234567", "text": "x"}, "10004", "/to"),
    ({"to": "+31612345678", "text": "x"}, "10004", "/from"),
    ({"to": "+31612345678", "from": "+31201234567"}, "10004", "/text"),
    ({"to": "0612345678", "from": "+31201234567", "text": "x"}, "10016", "/to"),
    ({"to": "+31612345678", "from": "+31201234567", "text": 5}, "10015", "/text"),
    ({"to": "+31612345678", "from": "+31201234567", "text": "x", "cc": ["+31"]}, "10015",
     "/cc"),
])
async def test_message_validation_as_telnyx(telnyx_world: World, fake_telnyx: FakeTelnyx,
                                            pool: asyncpg.Pool, body: dict[str, Any],
                                            code: str, pointer: str) -> None:
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    status, answer = await _post(telnyx_world, "/v2/messages", body)
    assert status in (400, 422)
    assert (answer["errors"][0]["code"], answer["errors"][0]["source"]["pointer"]) == (
        code, pointer)
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


@pytest.mark.parametrize("raw", [
    b'{"to": "+31612345678", "to": "+31612345679", "from": "+31201234567", "text": "x"}',
    b'{"to": "+3161234\xff5678", "from": "+31201234567", "text": "x"}',
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x\\u0000"}',
    b'["+31612345678"]', b'{"to": NaN}', b'{' * 5000, b"not json",
    b'[' * 100_000 + b']' * 100_000,
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x", "type": 1e999}',
    b'{"to": "+31612345678", "from": "+31201234567", "text": "x", "type": %d}' % 2**80,
])
async def test_malformed_bodies_are_4xx_without_a_record(telnyx_world: World, raw: bytes,
                                                         pool: asyncpg.Pool,
                                                         fake_telnyx: FakeTelnyx) -> None:
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    status, answer = await _post(telnyx_world, "/v2/messages", None, raw=raw)
    assert status == 400, answer
    assert answer["errors"][0]["code"] == "10015"
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


async def test_huge_body_is_413(telnyx_world: World, fake_telnyx: FakeTelnyx) -> None:
    raw = b'{"to": "+31612345678", "from": "+31201234567", "text": "' + b"x" * 3_000_000 + b'"}'
    status, answer = await _post(telnyx_world, "/v2/messages", None, raw=raw)
    assert status == 413
    assert answer["errors"][0]["code"] == "10015"
    assert fake_telnyx.received == []


# --- idempotency ----------------------------------------------------------------------------

async def test_idempotency_key_replays_and_is_hashed_upstream(telnyx_world: World,
                                                              fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    sdk, key = telnyx_sdk(world), uid("idem")
    first = await sdk.messages.send(to=number, from_=world.sms, text="Eenmalig",
                                    idempotency_key=key)
    again = await sdk.messages.send(to=number, from_=world.sms, text="Eenmalig",
                                    idempotency_key=key)
    assert first.data is not None
    assert again.data is not None
    assert first.data.id == again.data.id
    (received,) = fake_telnyx.creates()
    assert received.headers["Idempotency-Key"] not in (key, "")
    with pytest.raises(telnyx.UnprocessableEntityError) as caught:
        await sdk.messages.send(to=number, from_=world.sms, text="Anders",
                                idempotency_key=key)
    assert _error(caught.value)["code"] == "930422"
    assert len(await telnyx_decisions(world, number)) == 1


# --- upstream faults ------------------------------------------------------------------------

async def test_upstream_500_is_passed_on_and_recorded(telnyx_world: World,
                                                      fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    fake_telnyx.fail_with(500, times=1)
    with pytest.raises(telnyx.InternalServerError) as caught:
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="x")
    assert _error(caught.value)["code"] == "10007"
    assert len(fake_telnyx.creates()) == 1  # never retried
    (row,) = await telnyx_decisions(world, number)
    assert (row["upstream_status"], row["error"]) == (500, "upstream 500")


async def test_upstream_4xx_gives_back_the_contact_request(telnyx_world: World,
                                                           fake_telnyx: FakeTelnyx,
                                                           pool: asyncpg.Pool) -> None:
    world, number = telnyx_world, mobile()
    request_id = await world.consent(number, "sms", kind="request")
    fake_telnyx.fail_with(400, "40310", times=1)
    with pytest.raises(telnyx.BadRequestError):
        await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="x")
    await world.committed()
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None  # N6: nothing was sent
    await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="x")
    assert len(fake_telnyx.creates()) == 2


async def test_upstream_timeout_is_504(aiohttp_client: Any, database_url: str, clock: Clock,
                                       fake_telnyx: FakeTelnyx, tmp_path: Path,
                                       auth: dict[str, str]) -> None:
    proxy = await telnyx_proxy_app(aiohttp_client, database_url, clock, fake_telnyx,
                                   tmp_path, timeout=0.5)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "voice")
    fake_telnyx.hang(5, times=1)
    with pytest.raises(telnyx.APIStatusError) as caught:
        await telnyx_sdk(world).calls.dial(connection_id="c", to=number, from_=world.voice)
    assert caught.value.status_code == 504
    assert _error(caught.value)["code"] == "930504"
    (row,) = await telnyx_decisions(world, number)
    assert row["error"] == "upstream timeout"


async def test_upstream_unreachable_is_502(telnyx_world: World,
                                           fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await fake_telnyx.refuse()
    try:
        with pytest.raises(telnyx.APIStatusError) as caught:
            await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="x")
    finally:
        await fake_telnyx.resume()
    assert caught.value.status_code == 502
    assert _error(caught.value)["code"] == "930502"
    (row,) = await telnyx_decisions(world, number)
    assert (row["decision"], row["error"]) == ("allow", "upstream unreachable")


async def test_consent_store_down_is_503_and_nothing_forwarded(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any],
        fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    sdk = telnyx_sdk(world)
    await sdk.messages.send(to=number, from_=world.sms, text="x")
    telnyx_proxy.app[POOL].terminate()
    with pytest.raises(telnyx.APIStatusError) as caught:
        await sdk.messages.send(to=number, from_=world.sms, text="y")
    assert caught.value.status_code == 503
    assert _error(caught.value)["code"] == "930503"
    assert _error(caught.value)["meta"]["reason"] == "CONSENT_STORE_UNAVAILABLE"
    assert len(fake_telnyx.creates()) == 1


async def test_sandbox_answers_without_a_telnyx_key(aiohttp_client: Any, database_url: str,
                                                    clock: Clock, auth: dict[str, str],
                                                    log_output: Any) -> None:
    proxy = await aiohttp_client(create_app(make_settings(database_url), clock=clock))
    started = [json.loads(line) for line in log_output.getvalue().splitlines()
               if "sandbox_upstream_active" in line]
    assert [line["front"] for line in started if line["front"] == "telnyx"] == ["telnyx"]
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    sdk = telnyx_sdk(world)
    sent = await sdk.messages.send(to=number, from_=world.sms, text="Proef")
    assert sent.data is not None
    assert sent.data.id
    assert (await sdk.messages.retrieve(sent.data.id)).data is not None
    (row,) = await telnyx_decisions(world, number)
    assert (row["front"], row["upstream_status"]) == ("telnyx", 200)


# --- public contracts -----------------------------------------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")


@pytest.mark.parametrize("variable", [
    "TELNYX_API_KEY", "TELNYX_API_BASE", "TELNYX_PUBLIC_KEY", "TELNYX_CONNECTIONS",
    "TELNYX_MESSAGING_PROFILES", "TELNYX_BILLING_GROUPS"])
def test_telnyx_variable_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in README


@pytest.mark.parametrize(("reason", "status", "code"), [
    ("OBJECTION_ON_FILE", 403, "40300"), ("SCHEDULED_SEND_NOT_GATED", 400, "930052"),
    ("CONSENT_STORE_UNAVAILABLE", 503, "930503"), ("UPSTREAM_UNREACHABLE", 502, "930502"),
    ("UPSTREAM_TIMEOUT", 504, "930504"), ("IDEMPOTENCY_MISMATCH", 422, "930422"),
    ("NOT_PASSED_THROUGH", 403, "930403"), ("OPT_OUT_FOOTER_DOES_NOT_FIT", 422, "10015"),
])
def test_telnyx_error_mapping_is_documented(reason: str, status: int, code: str) -> None:
    assert re.search(rf"^\| `{code}` \| {status} \| `{reason}`[^|]* \|", README, re.MULTILINE)


async def test_bad_public_key_stops_start_up(database_url: str) -> None:
    with pytest.raises(ConfigError, match="TELNYX_PUBLIC_KEY"):
        create_app(make_settings(database_url, TELNYX_PUBLIC_KEY="not base64!"))
    with pytest.raises(ConfigError, match="TELNYX_API_BASE"):
        create_app(make_settings(database_url, TELNYX_API_BASE="ftp://x"))


async def test_call_with_a_number_past_64_bits_is_400_without_a_record(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "voice")
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    raw = (b'{"connection_id": "c", "to": "%s", "from": "%s", "timeout_secs": %d}'
           % (number.encode(), world.voice.encode(), 2**80))
    status, answer = await _post(world, "/v2/calls", None, raw=raw)
    assert (status, answer["errors"][0]["code"]) == (400, "10015")
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


async def test_metrics_and_log_name_the_telnyx_front(
        telnyx_world: World, telnyx_proxy: TestClient[Any, Any], fake_telnyx: FakeTelnyx,
        log_output: Any) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    await telnyx_sdk(world).messages.send(to=number, from_=world.sms, text="Geheim 12345")
    with pytest.raises(telnyx.PermissionDeniedError):
        await telnyx_sdk(world).messages.send(to=mobile(), from_=world.sms, text="Geheim 12345")
    text = await (await telnyx_proxy.get("/metrics")).text()
    assert ('consent_proxy_decisions_total{channel="sms",decision="allow",front="telnyx",'
            'reason="ALLOWED"}') in text
    assert 'consent_proxy_upstream_responses_total{front="telnyx",status="200"} 1.0' in text
    assert 'consent_proxy_upstream_seconds_count{front="telnyx"} 1.0' in text
    logged = log_output.getvalue()
    assert "decision_id" in logged
    for secret in ("Geheim", number, world.token, UP_KEY):
        assert secret not in logged


async def test_number_pool_send_without_from_is_an_unknown_sender(
        telnyx_world: World, fake_telnyx: FakeTelnyx) -> None:
    world, number = telnyx_world, mobile()
    await world.consent(number, "sms")
    with pytest.raises(telnyx.PermissionDeniedError) as caught:
        await telnyx_sdk(world).messages.send(
            to=number, messaging_profile_id="40017d4e-0f68-4f8a-9c7a-8e8f6b5d4e3a", text="x")
    assert _error(caught.value)["meta"]["reason"] == "UNKNOWN_SENDER"
    assert fake_telnyx.creates() == []


async def test_the_sdk_does_not_retry_a_timeout_by_itself(
        aiohttp_client: Any, database_url: str, clock: Clock, fake_telnyx: FakeTelnyx,
        tmp_path: Path, auth: dict[str, str]) -> None:
    """The SDK's default is two retries of every 5xx; after a timeout the message may be out,
    and a retry would send it twice."""
    proxy = await telnyx_proxy_app(aiohttp_client, database_url, clock, fake_telnyx,
                                   tmp_path, timeout=0.5)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    fake_telnyx.hang(5)
    sdk = telnyx.AsyncTelnyx(api_key=api_key(world), base_url=f"{world.base}/v2")
    assert sdk.max_retries == 2
    with pytest.raises(telnyx.APIStatusError) as caught:
        await sdk.messages.send(to=number, from_=world.sms, text="x")
    assert caught.value.status_code == 504
    assert len(fake_telnyx.creates()) == 1
    assert len(await telnyx_decisions(world, number)) == 1


async def test_a_form_body_is_415_without_a_record(telnyx_world: World, pool: asyncpg.Pool,
                                                   fake_telnyx: FakeTelnyx) -> None:
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    status, answer = await _post(
        telnyx_world, "/v2/messages", None, raw=b"to=%2B31612345678&from=x&text=y",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, answer["errors"][0]["code"]) == (415, "10014")
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    assert fake_telnyx.received == []


def test_serve_refuses_a_bad_telnyx_key_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve"], cwd=Path(__file__).resolve().parent.parent,
        text=True, capture_output=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PROXY_SECRET": "s", "ADMIN_TOKEN": "a",
             "OPTOUT_SPOOL_DIR": str(tmp_path / "spool"), "TELNYX_PUBLIC_KEY": "c2hvcnQ=",
             "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2
    assert "configuration error: TELNYX_PUBLIC_KEY:" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_served_fields_are_the_sdks() -> None:
    """fields.py lists what Telnyx documents; the SDK's own params are generated from the same
    spec, so a field added there shows here."""
    assert fields.MESSAGE_FIELDS == sdk_fields.MESSAGE_FIELDS
    assert fields.CALL_FIELDS == sdk_fields.CALL_FIELDS
