"""The admin API against a real PostgreSQL: every route's success path and its bad inputs."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import asyncpg
import pytest

from proxy import credentials
from proxy.phone import subject_hash
from tests.conftest import ADMIN_TOKEN, PROXY_SECRET, mobile, uid

A = "/admin/v1"


async def make_org(client: Any, auth: dict[str, str], **extra: Any) -> str:
    org_id = uid()
    body = {"id": org_id, "name": "Energie BV", "sector": "commercial", **extra}
    resp = await client.post(f"{A}/organisations", json=body, headers=auth)
    assert resp.status == 201, await resp.text()
    return org_id


def consent_body(subject: str, org: str, **extra: Any) -> dict[str, Any]:
    body = {
        "subject": subject, "organisation": org, "channel": "voice",
        "topics": ["energy/electricity"], "kind": "opt_in",
        "given_at": "2026-10-01T12:00:00+02:00", "verified_at": "2026-10-01T12:05:00+02:00",
        "verification": "sms_code", "provenance": "self_provided",
        "evidence": {"form": "web-2026-10", "ip": "203.0.113.7"},
    }
    body.update(extra)
    return body


async def assert_error(resp: Any, status: int, field: str | None) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) == {"error", "field"}
    assert body["error"]
    assert body["field"] == field
    return body


# --- auth ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
     {"Authorization": "Bearer"}],
)
async def test_admin_routes_require_the_token(client: Any, headers: dict[str, str]) -> None:
    resp = await client.post(f"{A}/organisations", json={"id": "x"}, headers=headers)
    await assert_error(resp, 401, None)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get(f"{A}/decisions", headers=headers)
    assert resp.status == 401


async def test_every_admin_route_is_protected(client: Any) -> None:
    """Enumerate the router: a new admin route cannot be added without the token check."""
    routes = [r for r in client.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith(A)]
    assert len(routes) >= 14
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "1", route.resource.canonical)
        resp = await client.request(route.method, path)
        assert resp.status == 401, (route.method, path)


# --- organisations ------------------------------------------------------------------------

async def test_organisation_create_get_put(client: Any, auth: dict[str, str]) -> None:
    org_id = uid()
    resp = await client.post(
        f"{A}/organisations",
        json={"id": org_id, "name": "Goede Doelen", "sector": "charity",
              "customer_term_months": 24, "sms_footer": "Stop? Sms STOP naar {sender}"},
        headers=auth,
    )
    assert resp.status == 201
    created = await resp.json()
    assert created == {"id": org_id, "name": "Goede Doelen", "sector": "charity",
                       "customer_term_months": 24,
                       "sms_footer": "Stop? Sms STOP naar {sender}", "stop_reply": None,
                       "content_templates_carry_opt_out": False}
    resp = await client.get(f"{A}/organisations/{org_id}", headers=auth)
    assert resp.status == 200
    assert await resp.json() == created
    resp = await client.put(f"{A}/organisations/{org_id}",
                            json={"name": "Goede Doelen NL", "sector": "lottery",
                                  "content_templates_carry_opt_out": True}, headers=auth)
    assert resp.status == 200
    updated = await resp.json()
    assert updated["name"] == "Goede Doelen NL"
    assert updated["sector"] == "lottery"
    assert updated["customer_term_months"] == 36
    assert updated["content_templates_carry_opt_out"] is True
    resp = await client.get(f"{A}/organisations/{org_id}", headers=auth)
    assert (await resp.json())["content_templates_carry_opt_out"] is True


async def test_organisation_defaults(client: Any, auth: dict[str, str]) -> None:
    org_id = await make_org(client, auth)
    body = await (await client.get(f"{A}/organisations/{org_id}", headers=auth)).json()
    assert body["customer_term_months"] == 36
    assert body["sms_footer"] is None


async def test_organisation_duplicate_is_409(client: Any, auth: dict[str, str]) -> None:
    org_id = await make_org(client, auth)
    resp = await client.post(f"{A}/organisations",
                             json={"id": org_id, "name": "X", "sector": "commercial"},
                             headers=auth)
    await assert_error(resp, 409, "id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "sector": "commercial"}, "id"),
        ({"id": "Bad Id!", "name": "X", "sector": "commercial"}, "id"),
        ({"id": "ok-id", "sector": "commercial"}, "name"),
        ({"id": "ok-id", "name": "X", "sector": "bank"}, "sector"),
        ({"id": "ok-id", "name": "X", "sector": "commercial", "customer_term_months": -1},
         "customer_term_months"),
        ({"id": "ok-id", "name": "X", "sector": "commercial", "customer_term_months": "36"},
         "customer_term_months"),
        ({"id": "ok-id", "name": "X", "sector": "commercial", "colour": "red"}, "colour"),
        ({"id": "ok-id", "name": "", "sector": "commercial"}, "name"),
    ],
)
async def test_organisation_bad_input_is_422(
    client: Any, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    resp = await client.post(f"{A}/organisations", json=body, headers=auth)
    await assert_error(resp, 422, field)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b"null"])
async def test_malformed_json_is_422(client: Any, auth: dict[str, str], raw: bytes) -> None:
    resp = await client.post(f"{A}/organisations", data=raw,
                             headers={**auth, "Content-Type": "application/json"})
    await assert_error(resp, 422, None)


async def test_oversize_body_is_413(client: Any, auth: dict[str, str]) -> None:
    big = {"id": "x", "name": "y" * (2 * 1024 * 1024), "sector": "commercial"}
    resp = await client.post(f"{A}/organisations", json=big, headers=auth)
    await assert_error(resp, 413, None)


async def test_unknown_organisation_is_404(client: Any, auth: dict[str, str]) -> None:
    resp = await client.get(f"{A}/organisations/{uid()}", headers=auth)
    await assert_error(resp, 404, "id")
    resp = await client.put(f"{A}/organisations/{uid()}",
                            json={"name": "X", "sector": "commercial"}, headers=auth)
    await assert_error(resp, 404, "id")


# --- senders ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("020-1234567", "+31201234567"),
        ("+31 20 123 4567", "+31201234567"),
        ("EnergieBV", "EnergieBV"),
    ],
)
async def test_sender_is_normalised(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool, raw: str, stored: str
) -> None:
    org_id = await make_org(client, auth)
    await pool.execute("DELETE FROM senders WHERE sender = $1", stored)
    resp = await client.post(f"{A}/senders", json={
        "sender": raw, "organisation": org_id, "topic": "energy/electricity",
        "purpose": "marketing"}, headers=auth)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body == {"sender": stored, "organisation": org_id, "topic": "energy/electricity",
                    "purpose": "marketing", "automated": False, "inbound_webhook": None}
    resp = await client.get(f"{A}/senders/{stored}", headers=auth)
    assert (await resp.json())["organisation"] == org_id
    await pool.execute("DELETE FROM senders WHERE sender = $1", stored)


async def test_sender_messaging_service_and_duplicates(client: Any, auth: dict[str, str]) -> None:
    org_id = await make_org(client, auth)
    sid = "MG" + uid("")[1:].replace("-", "").ljust(32, "a")[:32]
    body = {"sender": sid, "organisation": org_id, "topic": "energy", "purpose": "service",
            "automated": True, "inbound_webhook": "https://crm.example.nl/sms"}
    resp = await client.post(f"{A}/senders", json=body, headers=auth)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["automated"] is True
    resp = await client.post(f"{A}/senders", json=body, headers=auth)
    await assert_error(resp, 409, "sender")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"sender": "not a number!!"}, "sender"),
        ({"sender": "ThisIsTooLongForAnAlphaId"}, "sender"),
        ({"topic": "Energy Stuff"}, "topic"),
        ({"purpose": "sales"}, "purpose"),
        ({"automated": "yes"}, "automated"),
        ({"inbound_webhook": "ftp://x"}, "inbound_webhook"),
    ],
)
async def test_sender_bad_input_is_422(
    client: Any, auth: dict[str, str], patch: dict[str, Any], field: str
) -> None:
    org_id = await make_org(client, auth)
    body = {"sender": "+31201234599", "organisation": org_id, "topic": "energy",
            "purpose": "marketing", **patch}
    await assert_error(await client.post(f"{A}/senders", json=body, headers=auth), 422, field)


async def test_sender_unknown_organisation_is_404(client: Any, auth: dict[str, str]) -> None:
    body = {"sender": "+31201234598", "organisation": uid(), "topic": "energy"}
    await assert_error(await client.post(f"{A}/senders", json=body, headers=auth),
                       404, "organisation")


# --- clients ------------------------------------------------------------------------------

async def test_client_credentials_are_never_stored(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    org_id = await make_org(client, auth)
    resp = await client.post(f"{A}/clients", json={"name": "Dialer 1",
                                                   "organisations": [org_id]}, headers=auth)
    assert resp.status == 201
    body = await resp.json()
    assert re.fullmatch(r"AC[0-9a-f]{32}", body["account_sid"])
    assert re.fullmatch(r"[0-9a-f]{32}", body["auth_token"])
    assert body["organisations"] == [org_id]
    assert credentials.token_matches(PROXY_SECRET, body["account_sid"], 1, body["auth_token"])
    assert not credentials.token_matches(PROXY_SECRET, body["account_sid"], 2,
                                         body["auth_token"])
    dump = await pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM clients) t")
    assert body["account_sid"] in dump
    assert body["auth_token"] not in dump


async def test_client_bad_input(client: Any, auth: dict[str, str]) -> None:
    resp = await client.post(f"{A}/clients", json={"name": "D", "organisations": [uid()]},
                             headers=auth)
    await assert_error(resp, 404, "organisations")
    resp = await client.post(f"{A}/clients", json={"name": "D", "organisations": []},
                             headers=auth)
    await assert_error(resp, 422, "organisations")
    resp = await client.post(f"{A}/clients", json={"organisations": ["x"]}, headers=auth)
    await assert_error(resp, 422, "name")


# --- subjects -----------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["0612345678", "06-12345678", "0031 6 12345678",
                                  "+31612345678", "+31 (0)6 1234 5678"])
async def test_subject_number_forms(client: Any, auth: dict[str, str], form: str) -> None:
    resp = await client.put(f"{A}/subjects/{form}",
                            json={"kind": "person", "published_for_marketing": False},
                            headers=auth)
    assert resp.status in (200, 201), await resp.text()
    assert (await resp.json())["number"] == "+31612345678"


async def test_subject_put_get_and_report(client: Any, auth: dict[str, str]) -> None:
    number = mobile()
    org_id = await make_org(client, auth)
    resp = await client.put(f"{A}/subjects/{number}", json={
        "kind": "business", "published_for_marketing": True,
        "evidence": {"source": "kvk profile"}}, headers=auth)
    assert resp.status == 201
    resp = await client.put(f"{A}/subjects/{number}", json={"kind": "business"}, headers=auth)
    assert resp.status == 200
    await client.post(f"{A}/consents", json=consent_body(number, org_id), headers=auth)
    await client.post(f"{A}/objections", json={"subject": number, "organisation": org_id,
                                               "via": "agent"}, headers=auth)
    report = await (await client.get(f"{A}/subjects/{number}", headers=auth)).json()
    assert report["number"] == number
    assert report["kind"] == "business"
    assert report["published_for_marketing"] is False
    assert len(report["consents"]) == 1
    assert report["consents"][0]["evidence"] == {"form": "web-2026-10", "ip": "203.0.113.7"}
    assert len(report["objections"]) == 1
    assert report["decisions"] == []


async def test_subject_bad_input(client: Any, auth: dict[str, str]) -> None:
    resp = await client.put(f"{A}/subjects/12345", json={"kind": "person"}, headers=auth)
    await assert_error(resp, 422, "number")
    resp = await client.put(f"{A}/subjects/{mobile()}", json={"kind": "robot"}, headers=auth)
    await assert_error(resp, 422, "kind")
    resp = await client.get(f"{A}/subjects/{mobile()}", headers=auth)
    await assert_error(resp, 404, "number")


async def test_subject_erasure_keeps_objections_as_hash(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    number = mobile()
    org_id = await make_org(client, auth)
    await client.put(f"{A}/subjects/{number}", json={"kind": "person"}, headers=auth)
    await client.post(f"{A}/consents", json=consent_body(number, org_id), headers=auth)
    await client.post(f"{A}/relationships", json={
        "subject": number, "organisation": org_id, "kind": "customer", "topics": ["energy"],
        "started_at": "2024-01-01T00:00:00+01:00", "provenance": "self_provided",
        "opt_out_offered": True}, headers=auth)
    await client.post(f"{A}/objections", json={"subject": number, "via": "letter"}, headers=auth)
    resp = await client.delete(f"{A}/subjects/{number}", headers=auth)
    assert resp.status == 200
    assert await resp.json() == {"erased": True, "consents_erased": 1,
                                 "relationships_erased": 1, "objections_kept": 1}
    assert await pool.fetchval("SELECT count(*) FROM subjects WHERE number = $1", number) == 0
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = $1", number) == 0
    row = await pool.fetchrow("SELECT * FROM objections WHERE subject_hash = $1",
                              subject_hash(number))
    assert row is not None
    assert row["subject"] is None
    dump = await pool.fetchval("SELECT string_agg(t::text, ' ') FROM objections t")
    assert number not in dump
    report = await (await client.get(f"{A}/subjects/{number}", headers=auth)).json()
    assert len(report["objections"]) == 1
    assert "kind" not in report


# --- consents -----------------------------------------------------------------------------

async def test_consent_create_and_withdraw(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool, clock: Any
) -> None:
    org_id = await make_org(client, auth)
    number = mobile()
    resp = await client.post(f"{A}/consents", json=consent_body(
        "0" + number[3:], org_id, expires_at="2027-10-01T00:00:00+02:00",
        first_contact_by="2027-06-01T00:00:00+02:00"), headers=auth)
    assert resp.status == 201, await resp.text()
    consent_id = (await resp.json())["id"]
    row = await pool.fetchrow("SELECT * FROM consents WHERE id = $1", consent_id)
    assert row["subject"] == number
    assert row["topics"] == ["energy/electricity"]
    assert row["provenance"] == "self_provided"
    assert row["withdrawn_at"] is None
    resp = await client.delete(f"{A}/consents/{consent_id}", headers=auth)
    assert resp.status == 200
    first = (await resp.json())["withdrawn_at"]
    assert dt.datetime.fromisoformat(first) == clock.now
    clock.now = clock.now.replace(hour=11)
    resp = await client.delete(f"{A}/consents/{consent_id}", headers=auth)
    assert (await resp.json())["withdrawn_at"] == first


async def test_contact_request_with_window(client: Any, auth: dict[str, str]) -> None:
    org_id = await make_org(client, auth)
    body = consent_body(mobile(), org_id, kind="request",
                        requested_for={"start": "2026-12-01T19:00:00+01:00",
                                       "end": "2026-12-01T20:00:00+01:00"})
    resp = await client.post(f"{A}/consents", json=body, headers=auth)
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"subject": "not-a-number"}, "subject"),
        ({"given_at": "2026-10-01T12:00:00"}, "given_at"),
        ({"given_at": "yesterday"}, "given_at"),
        ({"given_at": "2099-01-01T00:00:00+00:00"}, "given_at"),
        ({"expires_at": "2026-09-01T00:00:00+02:00"}, "expires_at"),
        ({"verified_at": "2026-10-01T12:05:00"}, "verified_at"),
        ({"channel": "fax"}, "channel"),
        ({"topics": []}, "topics"),
        ({"topics": ["Energy"]}, "topics[0]"),
        ({"kind": "maybe"}, "kind"),
        ({"provenance": "bought"}, "provenance"),
        ({"requested_for": {"start": "2026-12-01T19:00:00+01:00",
                            "end": "2026-12-01T20:00:00+01:00"}}, "requested_for"),
        ({"kind": "request", "requested_for": {"start": "2026-12-01T19:00:00+01:00",
                                               "end": "2026-12-01T18:00:00+01:00"}},
         "requested_for.end"),
        ({"kind": "request", "requested_for": {"start": "2026-12-01T19:00:00"}},
         "requested_for.start"),
        ({"evidence": "signed"}, "evidence"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_consent_bad_input_is_422(
    client: Any, auth: dict[str, str], patch: dict[str, Any], field: str
) -> None:
    body = consent_body(mobile(), "some-org")
    body.update(patch)
    await assert_error(await client.post(f"{A}/consents", json=body, headers=auth), 422, field)


async def test_consent_unknown_references(client: Any, auth: dict[str, str],
                                          pool: asyncpg.Pool) -> None:
    number = mobile()
    resp = await client.post(f"{A}/consents", json=consent_body(number, uid()), headers=auth)
    await assert_error(resp, 404, "organisation")
    assert await pool.fetchval("SELECT count(*) FROM subjects WHERE number = $1", number) == 0
    await assert_error(await client.delete(f"{A}/consents/999999999", headers=auth), 404, "id")
    await assert_error(await client.delete(f"{A}/consents/abc", headers=auth), 422, "id")


# --- relationships and objections ---------------------------------------------------------

async def test_relationship_create_and_bad_input(client: Any, auth: dict[str, str]) -> None:
    org_id = await make_org(client, auth)
    body: dict[str, Any] = {"subject": mobile(), "organisation": org_id, "kind": "donor",
            "topics": ["charity/water"], "started_at": "2020-01-01T00:00:00+01:00",
            "ended_at": "2024-06-30T00:00:00+02:00", "provenance": "self_provided",
            "opt_out_offered": True}
    resp = await client.post(f"{A}/relationships", json=body, headers=auth)
    assert resp.status == 201
    assert isinstance((await resp.json())["id"], int)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"opt_out_offered": None}, "opt_out_offered"),
        ({"kind": "friend"}, "kind"),
        ({"ended_at": "2019-01-01T00:00:00+01:00"}, "ended_at"),
        ({"started_at": "2020-01-01"}, "started_at"),
    ]
    for patch, field in cases:
        resp = await client.post(f"{A}/relationships", json={**body, **patch}, headers=auth)
        await assert_error(resp, 422, field)
    resp = await client.post(f"{A}/relationships", json={**body, "organisation": uid()},
                             headers=auth)
    await assert_error(resp, 404, "organisation")


async def test_objection_create(client: Any, auth: dict[str, str], pool: asyncpg.Pool,
                                clock: Any) -> None:
    org_id = await make_org(client, auth)
    number = mobile()
    resp = await client.post(f"{A}/objections", json={
        "subject": number, "organisation": org_id, "channel": "sms", "via": "email"},
        headers=auth)
    assert resp.status == 201
    row = await pool.fetchrow("SELECT * FROM objections WHERE id = $1",
                              (await resp.json())["id"])
    assert row["subject_hash"] == subject_hash(number)
    assert row["received_at"] == clock.now
    resp = await client.post(f"{A}/objections", json={"subject": number, "via": "ivr"},
                             headers=auth)
    assert resp.status == 201
    row = await pool.fetchrow("SELECT * FROM objections WHERE id = $1",
                              (await resp.json())["id"])
    assert row["organisation_id"] is None
    assert row["channel"] is None
    for patch, field in [({"via": "pigeon"}, "via"), ({"channel": "post"}, "channel"),
                         ({"received_at": "2026-01-01T00:00:00"}, "received_at")]:
        resp = await client.post(f"{A}/objections",
                                 json={"subject": number, "via": "api", **patch}, headers=auth)
        await assert_error(resp, 422, field)
    resp = await client.post(f"{A}/objections",
                             json={"subject": number, "organisation": uid(), "via": "api"},
                             headers=auth)
    await assert_error(resp, 404, "organisation")


# --- decisions ----------------------------------------------------------------------------

async def _insert_decision(pool: asyncpg.Pool, number: str, reason: str) -> int:
    decision_id: int = await pool.fetchval(
        """INSERT INTO decisions (decided_at, channel, sender, subject_hash, subject_masked,
               decision, reason) VALUES (now(), 'voice', '+31201234567', $1, 'masked', 'deny', $2)
           RETURNING id""", subject_hash(number), reason)
    return decision_id


async def test_decisions_listing_newest_first(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    number = mobile()
    first = await _insert_decision(pool, number, "NO_LEGAL_BASIS")
    second = await _insert_decision(pool, number, "OBJECTION_ON_FILE")
    resp = await client.get(f"{A}/decisions", params={"subject": number}, headers=auth)
    body = await resp.json()
    assert [d["id"] for d in body["decisions"]] == [second, first]
    assert "subject_hash" not in body["decisions"][0]
    resp = await client.get(f"{A}/decisions", params={"subject": number, "limit": "1"},
                            headers=auth)
    assert len((await resp.json())["decisions"]) == 1
    for params, field in [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"subject": "123"}, "subject"), ({"foo": "1"}, "foo")]:
        resp = await client.get(f"{A}/decisions", params=params, headers=auth)
        await assert_error(resp, 422, field)


async def test_decisions_are_append_only(pool: asyncpg.Pool) -> None:
    decision_id = await _insert_decision(pool, mobile(), "NO_LEGAL_BASIS")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("UPDATE decisions SET reason = 'X' WHERE id = $1", decision_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("DELETE FROM decisions WHERE id = $1", decision_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("TRUNCATE decisions CASCADE")
    await pool.execute(
        "INSERT INTO decision_outcomes (decision_id, upstream_status) VALUES ($1, 201)",
        decision_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "INSERT INTO decision_outcomes (decision_id, upstream_status) VALUES ($1, 500)",
            decision_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute(
            "UPDATE decision_outcomes SET upstream_status = 500 WHERE decision_id = $1",
            decision_id)


# --- operations ---------------------------------------------------------------------------

async def test_health_ready_and_request_id(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])
    resp = await client.get("/readyz", headers={"X-Request-Id": "dialer-42"})
    assert resp.status == 200
    assert await resp.json() == {"status": "ready"}
    assert resp.headers["X-Request-Id"] == "dialer-42"
    resp = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith tab"})
    assert resp.headers["X-Request-Id"] != "bad id\twith tab"


async def test_unknown_route_is_json_404(client: Any, auth: dict[str, str]) -> None:
    resp = await client.get(f"{A}/nothing-here", headers=auth)
    await assert_error(resp, 404, None)
    resp = await client.patch(f"{A}/organisations/x", headers=auth)
    await assert_error(resp, 405, None)
