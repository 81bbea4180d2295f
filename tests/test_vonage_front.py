"""The Vonage front end to end: the official vonage SDK as the dialer over TLS, real sockets,
real PostgreSQL, and a fake Vonage upstream that records what reached it."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from vonage_sms import SmsError, SmsMessage

from proxy.fronts.vonage import settings as vonage_settings
from proxy.fronts.vonage.errors import SMS_STATUS
from proxy.fronts.vonage.keys import UPSTREAM
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from proxy.phone import subject_hash
from proxy.settings import ConfigError
from tests.conftest import REPO, Clock, mobile
from tests.fake_vonage import FakeVonage
from tests.vonage_world import Tls, VonageWorld, key_pair, start_proxy, vonage_env
from tests.world import World, in_thread, make_world

pytest_plugins = ["tests.vonage_fixtures"]


async def decisions_for(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.upstream_sid, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows


def digits(number: str) -> str:
    return number.removeprefix("+")


# --- SMS ------------------------------------------------------------------------------------

async def test_allowed_sms_gets_the_footer_and_upstream_credentials(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    sdk = vworld.sdk(with_app=False)
    response = await in_thread(lambda: sdk.sms.send(SmsMessage(
        to=digits(number), from_=digits(w.sms), text="Uw nieuwe tarief: 10% korting!",
        client_ref="ref-1")))
    assert response.messages[0].status == "0"
    (received,) = fake_vonage.sms()
    assert received.authenticated
    assert received.headers["Authorization"].startswith("Basic ")
    assert received.value("to") == digits(number)
    assert received.value("from") == digits(w.sms)
    assert received.value("client-ref") == "ref-1"
    assert received.value("text") == (
        f"Uw nieuwe tarief: 10% korting!\nAfmelden? Sms STOP naar {w.sms}")
    assert not any(k in ("api_key", "api_secret") for k, _ in received.form)
    (row,) = await decisions_for(w, number)
    assert row["decision"] == "allow"
    assert row["front"] == "vonage"
    assert row["details"]["footer_appended"] is True
    assert row["upstream_status"] == 200
    assert row["upstream_sid"] == response.messages[0].message_id
    assert received.headers["X-Consent-Decision-Id"] == str(row["id"])
    metrics = await (await w.admin.get("/metrics")).text()
    assert ('consent_proxy_decisions_total{channel="sms",decision="allow",front="vonage",'
            'reason="ALLOWED"}') in metrics
    assert 'consent_proxy_upstream_responses_total{front="vonage",status="200"}' in metrics


async def test_objection_is_number_barred_with_our_reason(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    await w.objection(number)
    sdk = vworld.sdk(with_app=False)
    with pytest.raises(SmsError, match="error code 7: Number barred"):
        await in_thread(lambda: sdk.sms.send(SmsMessage(
            to=digits(number), from_=digits(w.sms), text="Hallo")))
    assert fake_vonage.sms() == []
    (row,) = await decisions_for(w, number)
    assert row["decision"] == "deny"
    assert row["reason"] == "OBJECTION_ON_FILE"
    assert row["front"] == "vonage"
    # The raw answer: HTTP 200 with our reason and decision id beside Vonage's fields.
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "Hallo"})
    assert resp.status == 200
    (message,) = (await resp.json())["messages"]
    assert message["status"] == "7"
    assert message["error-text"].startswith("Number barred")
    assert message["reason"] == "OBJECTION_ON_FILE"
    assert message["code"] == DENIAL_CODES["OBJECTION_ON_FILE"][1]
    rows = await decisions_for(w, number)
    assert message["decision_id"] == rows[-1]["id"]
    assert fake_vonage.sms() == []


async def test_no_consent_is_non_whitelisted_destination(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    resp = await w.admin.post("/sms/json", json={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "Hallo"})
    (message,) = (await resp.json())["messages"]
    assert (message["status"], message["reason"]) == ("29", "NO_LEGAL_BASIS")
    assert fake_vonage.sms() == []


async def test_json_body_with_body_credentials_is_forwarded_as_a_form(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    resp = await w.admin.post("/sms/json", json={
        "api_key": w.sid, "api_secret": w.token, "to": "+" + digits(number),
        "from": digits(w.sms), "text": "Hallo", "ttl": 90000, "status-report-req": True})
    body = await resp.json()
    assert body["messages"][0]["status"] == "0", body
    (received,) = fake_vonage.sms()
    assert received.value("to") == digits(number)  # Vonage's spelling: no +
    assert received.value("ttl") == "90000"
    assert received.value("status-report-req") == "true"


async def test_long_text_is_several_parts_upstream(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    sdk = vworld.sdk(with_app=False)
    response = await in_thread(lambda: sdk.sms.send(SmsMessage(
        to=digits(number), from_=digits(w.sms), text="x" * 150)))
    # 150 + the footer is more than one part of 160: two parts, each listed.
    assert response.message_count == "2"
    assert len(response.messages) == 2
    (row,) = await decisions_for(w, number)
    assert (row["details"]["segments_before"], row["details"]["segments_after"]) == (1, 2)


async def test_footer_that_does_not_fit_is_message_too_long(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "x" * 1590})
    (message,) = (await resp.json())["messages"]
    assert (message["status"], message["reason"]) == ("12", "OPT_OUT_FOOTER_DOES_NOT_FIT")
    assert fake_vonage.sms() == []
    (row,) = await decisions_for(w, number)
    assert row["error"].startswith("the text with the opt-out footer")


@pytest.mark.parametrize(("creds", "status"), [
    ({"api_key": "ACnope", "api_secret": "nope"}, "4"),
    ({}, "2"),
    ({"api_key": "{sid}", "sig": "0" * 32, "timestamp": "1"}, "4"),
])
async def test_bad_credentials_are_refused(vworld: VonageWorld, fake_vonage: FakeVonage,
                                           creds: dict[str, str], status: str) -> None:
    w = vworld.world
    data = {k: v.format(sid=w.sid) for k, v in creds.items()} | {
        "to": digits(mobile()), "from": digits(w.sms), "text": "Hallo"}
    resp = await w.admin.post("/sms/json", data=data)
    assert resp.status == 200
    assert (await resp.json())["messages"][0]["status"] == status
    assert fake_vonage.sms() == []


async def test_wrong_secret_through_the_sdk_raises(vworld: VonageWorld,
                                                   fake_vonage: FakeVonage) -> None:
    w = vworld.world
    sdk = vworld.sdk(with_app=False)
    sdk.http_client.auth._api_secret = "0" * 32
    with pytest.raises(SmsError, match="error code 4"):
        await in_thread(lambda: sdk.sms.send(SmsMessage(
            to=digits(mobile()), from_=digits(w.sms), text="Hallo")))
    assert fake_vonage.sms() == []


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"to=31612345678&to=31612345679&from={sms}&text=a", None, "3"),  # two recipients
    (b'{"to":"31612345678","to":"31612345679","from":"{sms}","text":"a"}', "json", "3"),
    (b'{"to":["31612345678","31612345679"],"from":"{sms}","text":"a"}', "json", "3"),
    (b"to=31612345678&from={sms}&text=a%00b", None, "3"),
    (b"to=31612345678&from={sms}&text=%ff", None, "3"),
    (b"to=31612345678&from={sms}&text=a&type=binary&body=00", None, "6"),
    (b"to=31612345678&from={sms}", None, "2"),
    (b"to=31612345678&from={sms}&text=a&bogus=1", None, "3"),
    (b"\xff\xfe", "json", "3"),
])
async def test_malformed_bodies_are_clear_statuses(
        vworld: VonageWorld, fake_vonage: FakeVonage, body: bytes, content_type: str | None,
        status: str) -> None:
    w = vworld.world
    raw = body.replace(b"{sms}", digits(w.sms).encode())
    headers = {"Authorization": aiohttp.encode_basic_auth(w.sid, w.token),
               "Content-Type": "application/json" if content_type else
               "application/x-www-form-urlencoded"}
    resp = await w.admin.post("/sms/json", data=raw, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["messages"][0]["status"] == status
    assert fake_vonage.sms() == []


async def test_query_string_recipient_is_refused(vworld: VonageWorld,
                                                 fake_vonage: FakeVonage) -> None:
    w = vworld.world
    resp = await w.admin.post(f"/sms/json?to={digits(mobile())}", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(mobile()),
        "from": digits(w.sms), "text": "a"})
    assert (await resp.json())["messages"][0]["status"] == "3"
    assert fake_vonage.sms() == []


# --- upstream faults ------------------------------------------------------------------------

async def test_upstream_status_is_relayed_and_recorded(vworld: VonageWorld,
                                                       fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    request_id = await w.consent(number, "sms", kind="request")
    fake_vonage.sms_status(1)
    sdk = vworld.sdk(with_app=False)
    with pytest.raises(SmsError, match="error code 1"):
        await in_thread(lambda: sdk.sms.send(SmsMessage(
            to=digits(number), from_=digits(w.sms), text="Hallo")))
    (row,) = await decisions_for(w, number)
    assert row["error"] == "vonage status 1"
    assert row["upstream_sid"] is None
    # N6: Vonage sent no part, so the contact request is given back.
    reversal = await w.admin.app[POOL].fetchrow(
        "SELECT why, request_id FROM consumption_reversals WHERE decision_id = $1", row["id"])
    assert (reversal["why"], reversal["request_id"]) == ("provider_refused", request_id)


async def test_upstream_5xx_is_relayed(vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    fake_vonage.fail_with(503)
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "a"})
    assert resp.status == 503
    (row,) = await decisions_for(w, number)
    assert row["error"] == "upstream 503"


async def test_upstream_unreachable_is_internal_error(vworld: VonageWorld,
                                                      fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    await fake_vonage.refuse()
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "a"})
    (message,) = (await resp.json())["messages"]
    assert (message["status"], message["reason"]) == ("5", "UPSTREAM_UNREACHABLE")
    (row,) = await decisions_for(w, number)
    assert row["error"] == "upstream unreachable"
    assert message["decision_id"] == row["id"]


async def test_upstream_timeout(aiohttp_client: Any, database_url: str, clock: Clock,
                                tls: Tls, fake_vonage: FakeVonage, upstream_key_path: Path,
                                tmp_path: Path, trust_test_ca: None, auth: dict[str, str]
                                ) -> None:
    proxy = await start_proxy(aiohttp_client, database_url, clock, tls,
                              vonage_env(fake_vonage, upstream_key_path), tmp_path,
                              timeout=0.2)
    w = await make_world(proxy, auth)
    number = mobile()
    await w.consent(number, "sms")
    fake_vonage.hang(5)
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "a"})
    (message,) = (await resp.json())["messages"]
    assert (message["status"], message["reason"]) == ("5", "UPSTREAM_TIMEOUT")
    (row,) = await decisions_for(w, number)
    assert row["error"] == "upstream timeout"


# --- fail closed ----------------------------------------------------------------------------

async def test_store_down_sends_nothing_and_answers_in_vonages_shape(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    w.admin.app[POOL].terminate()  # every connection drops
    resp = await w.admin.post("/sms/json", data={
        "api_key": w.sid, "api_secret": w.token, "to": digits(number),
        "from": digits(w.sms), "text": "a"})
    assert resp.status == 200
    (message,) = (await resp.json())["messages"]
    assert (message["status"], message["reason"]) == ("5", "CONSENT_STORE_UNAVAILABLE")
    call = await w.admin.post("/v1/calls", json={
        "to": [{"type": "phone", "number": digits(number)}],
        "from": {"type": "phone", "number": digits(w.voice)},
        "ncco": [{"action": "talk", "text": "a"}]}, headers={
            "Authorization": "Bearer " + jwt.encode(
                {"application_id": vworld.app.application_id, "iat": int(time.time()),
                 "exp": int(time.time()) + 60, "jti": "j1"}, vworld.app.private_pem,
                algorithm="RS256")})
    assert call.status == 503
    assert (await call.json())["reason"] == "CONSENT_STORE_UNAVAILABLE"
    assert fake_vonage.received == []


# --- the sandbox and the configuration ------------------------------------------------------

async def test_sandbox_answers_without_credentials(
        aiohttp_client: Any, database_url: str, clock: Clock, tls: Tls, tmp_path: Path,
        trust_test_ca: None, auth: dict[str, str], log_output: io.StringIO) -> None:
    proxy = await start_proxy(aiohttp_client, database_url, clock, tls, {}, tmp_path)
    events = [json.loads(line) for line in log_output.getvalue().splitlines() if line]
    assert any(e["event"] == "sandbox_upstream_active" and e.get("front") == "vonage"
               for e in events)
    w = await make_world(proxy, auth)
    number = mobile()
    await w.consent(number, "sms")
    vw = VonageWorld(w, key_pair(), f"127.0.0.1:{proxy.port}")
    sdk = vw.sdk(with_app=False)
    response = await in_thread(lambda: sdk.sms.send(SmsMessage(
        to=digits(number), from_=digits(w.sms), text="Hallo")))
    assert response.messages[0].status == "0"
    sandbox = proxy.app[UPSTREAM]._sandbox
    assert sandbox.sent[-1]["text"].endswith(f"Sms STOP naar {w.sms}")


@pytest.mark.parametrize(("env", "key"), [
    ({"VONAGE_API_KEY": "k"}, "VONAGE_API_SECRET"),
    ({"VONAGE_APPLICATION_ID": "a"}, "VONAGE_PRIVATE_KEY_PATH"),
    ({"VONAGE_APPLICATION_ID": "a", "VONAGE_PRIVATE_KEY_PATH": "/nonexistent"},
     "VONAGE_PRIVATE_KEY_PATH"),
    ({"VONAGE_SIGNATURE_METHOD": "md5hash"}, "VONAGE_SIGNATURE_METHOD"),
    ({"VONAGE_REST_BASE": "ftp://x"}, "VONAGE_REST_BASE"),
])
def test_bad_configuration_names_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        vonage_settings.load(env)


# --- documentation --------------------------------------------------------------------------

README = (REPO / "README.md").read_text("utf-8")


@pytest.mark.parametrize("variable", [
    "VONAGE_API_KEY", "VONAGE_API_SECRET", "VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY_PATH",
    "VONAGE_REST_BASE", "VONAGE_API_BASE", "VONAGE_SIGNATURE_SECRET",
    "VONAGE_SIGNATURE_METHOD"])
def test_vonage_environment_variable_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in README


@pytest.mark.parametrize(("reason", "status"), sorted(SMS_STATUS.items()))
def test_vonage_sms_status_mapping_is_documented(reason: str, status: int) -> None:
    rows = [line for line in README.splitlines()
            if line.startswith("| ") and f"`{reason}`" in line and f"| {status} (" in line]
    assert rows, f"{reason} → {status} is not in the README's Vonage table"
