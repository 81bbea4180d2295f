"""The admin API's list routes (paging), lifting an objection at the person's request, and
the registry's events (who changed what), against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import pytest

from proxy import store
from proxy.errors import Conflict
from proxy.phone import subject_hash
from tests.conftest import Clock, mobile, uid

A = "/admin/v1"


async def make_org(client: Any, auth: dict[str, str]) -> str:
    org = uid()
    resp = await client.post(f"{A}/organisations", headers=auth,
                             json={"id": org, "name": "Energie BV", "sector": "commercial"})
    assert resp.status == 201
    return org


async def pages(client: Any, auth: dict[str, str], path: str, name: str,
                **params: str) -> list[list[Any]]:
    """Every page of a list route, following `next`."""
    found: list[list[Any]] = []
    after: str | None = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        resp = await client.get(f"{A}/{path}", params=query, headers=auth)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert set(body) == {name, "next"}
        found.append(body[name])
        after = body["next"]
        if after is None:
            return found


async def test_consents_are_listed_a_page_at_a_time(client: Any, auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    number = mobile()
    ids = []
    for i in range(5):
        resp = await client.post(f"{A}/consents", headers=auth, json={
            "subject": number if i % 2 else mobile(), "organisation": org, "channel": "sms",
            "topics": ["energy"], "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
            "provenance": "self_provided"})
        ids.append((await resp.json())["id"])
    got = await pages(client, auth, "consents", "consents", organisation=org, limit="2")
    assert [len(p) for p in got] == [2, 2, 1]
    assert [c["id"] for p in got for c in p] == ids
    mine = await pages(client, auth, "consents", "consents", organisation=org,
                       subject=number.replace("+31", "0"))
    assert [c["id"] for p in mine for c in p] == [ids[1], ids[3]]


async def test_organisations_senders_clients_objections_are_listed(
        client: Any, auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    got = await pages(client, auth, "organisations", "organisations", organisation=org)
    assert [o["id"] for p in got for o in p] == [org]
    sender = f"+3120{uid('')[-7:].translate(str.maketrans('abcdef', '123456'))}"
    resp = await client.post(f"{A}/senders", headers=auth, json={
        "sender": sender, "organisation": org, "topic": "energy"})
    assert resp.status == 201, await resp.text()
    got = await pages(client, auth, "senders", "senders", organisation=org)
    assert [(s["sender"], s["organisation"]) for p in got for s in p] == [(sender, org)]
    resp = await client.post(f"{A}/clients", headers=auth,
                             json={"name": "Dialer", "organisations": [org]})
    sid = (await resp.json())["client_id"]
    got = await pages(client, auth, "clients", "clients", organisation=org)
    assert [c["client_id"] for p in got for c in p] == [sid]
    number = mobile()
    resp = await client.post(f"{A}/objections", headers=auth,
                             json={"subject": number, "organisation": org, "via": "letter"})
    got = await pages(client, auth, "objections", "objections", subject=number)
    (objection,) = [o for p in got for o in p]
    assert objection["subject"] == number
    assert "subject_hash" not in objection
    # the whole registry, paged: every organisation once, in order
    every = [o["id"] for p in await pages(client, auth, "organisations", "organisations",
                                          limit="1000") for o in p]
    assert every == sorted(set(every))
    assert org in every


@pytest.mark.parametrize(("path", "query", "field"), [
    ("consents", {"after": "x"}, "after"), ("consents", {"limit": "0"}, "limit"),
    ("consents", {"subject": "12"}, "subject"), ("consents", {"colour": "red"}, "colour"),
    ("organisations", {"after": "A\x00"}, "after"), ("senders", {"subject": "0612345678"},
                                                      "subject"),
    ("objections", {"organisation": "BAD ORG"}, "organisation"),
    ("clients", {"after": "-x"}, "after"),
])
async def test_bad_list_queries_are_422(client: Any, auth: dict[str, str], path: str,
                                        query: dict[str, str], field: str) -> None:
    resp = await client.get(f"{A}/{path}", params=query, headers=auth)
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["field"] == field


async def _objection(client: Any, auth: dict[str, str], org: str, number: str) -> int:
    resp = await client.post(f"{A}/objections", headers=auth,
                             json={"subject": number, "organisation": org, "via": "agent"})
    assert resp.status == 201
    objection_id: int = (await resp.json())["id"]
    return objection_id


async def test_lifting_an_objection_at_the_persons_request(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool, clock: Clock) -> None:
    """N11: the objection stops counting from the lift on; the lift is its own event."""
    org = await make_org(client, auth)
    number = mobile()
    resp = await client.post(f"{A}/consents", headers=auth, json={
        "subject": number, "organisation": org, "channel": "sms", "topics": ["energy"],
        "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
        "verified_at": "2026-10-01T12:05:00+02:00", "provenance": "self_provided"})
    assert resp.status == 201
    sender = f"+3120{uid('')[-7:].translate(str.maketrans('abcdef', '123456'))}"
    await client.post(f"{A}/senders", headers=auth, json={
        "sender": sender, "organisation": org, "topic": "energy"})
    objection = await _objection(client, auth, org, number)

    async def decision() -> str:
        resp = await client.post(f"{A}/check", headers=auth, json={
            "channel": "sms", "to": number, "from": sender})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        verdict: str = body["decision"] + ":" + body["reason"]
        return verdict

    assert await decision() == "deny:OBJECTION_ON_FILE"
    clock.now += dt.timedelta(hours=1)
    resp = await client.post(f"{A}/objections/{objection}/lift", headers=auth,
                             json={"how": "phone", "note": "asked to hear offers again"})
    assert resp.status == 200, await resp.text()
    lifted = await resp.json()
    assert dt.datetime.fromisoformat(lifted["lifted_at"]) == clock.now
    assert (lifted["lifted_how"], lifted["lifted_by"]) == ("phone", "admin-api")
    assert (await decision()).startswith("allow:")
    event = await pool.fetchrow(
        """SELECT * FROM registry_events WHERE kind = 'objection' AND action = 'lift'
             AND record_id = $1""", str(objection))
    assert event["actor"] == "admin-api"
    assert event["details"] == {"how": "phone", "at": clock.now.isoformat()}
    # lifted once only; an objection that does not exist is 404
    resp = await client.post(f"{A}/objections/{objection}/lift", headers=auth,
                             json={"how": "phone"})
    assert resp.status == 409
    resp = await client.post(f"{A}/objections/{2**62}/lift", headers=auth,
                             json={"how": "phone"})
    assert resp.status == 404
    resp = await client.post(f"{A}/objections/{objection}/lift", headers=auth,
                             json={"how": "pigeon"})
    assert (resp.status, (await resp.json())["field"]) == (422, "how")


async def test_lift_objection_from_the_console(pool: asyncpg.Pool, client: Any,
                                               auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    objection = await _objection(client, auth, org, mobile())
    at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    lifted = await store.lift_objection(pool, objection, at=at, actor="console:anna",
                                        how="letter")
    assert (lifted["lifted_by"], lifted["lifted_how"]) == ("console:anna", "letter")
    with pytest.raises(Conflict):
        await store.lift_objection(pool, objection, at=at, actor="console:anna", how="letter")


async def test_every_registry_change_is_an_event_without_a_number(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    start = await pool.fetchval("SELECT coalesce(max(id), 0) FROM registry_events")
    org = await make_org(client, auth)
    number = mobile()
    await client.put(f"{A}/organisations/{org}", headers=auth,
                     json={"name": "Energie NL", "sector": "commercial"})
    resp = await client.post(f"{A}/consents", headers=auth, json={
        "subject": number, "organisation": org, "channel": "voice", "topics": ["energy"],
        "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
        "provenance": "self_provided"})
    consent = (await resp.json())["id"]
    await client.delete(f"{A}/consents/{consent}", headers=auth)
    await client.delete(f"{A}/consents/{consent}", headers=auth)  # idempotent: no 2nd event
    await client.post(f"{A}/relationships", headers=auth, json={
        "subject": number, "organisation": org, "kind": "customer", "topics": ["energy"],
        "started_at": "2024-01-01T00:00:00+01:00", "provenance": "self_provided",
        "opt_out_offered": True})
    await client.put(f"{A}/subjects/{number}", headers=auth, json={"kind": "business"})
    resp = await client.post(f"{A}/clients", headers=auth,
                             json={"name": "Dialer", "organisations": [org]})
    sid = (await resp.json())["client_id"]
    await client.post(f"{A}/clients/{sid}/rotate", headers=auth)
    await client.post(f"{A}/clients/{sid}/disable", headers=auth)
    await client.delete(f"{A}/subjects/{number}", headers=auth)
    rows = await pool.fetch("SELECT * FROM registry_events WHERE id > $1 ORDER BY id", start)
    mine = [(r["action"], r["kind"]) for r in rows
            if r["record_id"] in (org, str(consent), sid, subject_hash(number))
            or (r["details"] or {}).get("organisation") == org]
    assert mine == [("create", "organisation"), ("update", "organisation"),
                    ("create", "consent"), ("withdraw", "consent"),
                    ("create", "relationship"), ("update", "subject"), ("create", "client"),
                    ("rotate", "client"), ("disable", "client"), ("erase", "subject")]
    assert all(r["actor"] == "admin-api" for r in rows)
    assert not any(number in str(dict(r)) or number[1:] in str(dict(r)) for r in rows)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("UPDATE registry_events SET actor = 'x' WHERE id = $1",
                           rows[0]["id"])
