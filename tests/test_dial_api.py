"""The dial-time decision API (`/dial/v1`) end to end: a SIP dialer's questions over HTTP,
real PostgreSQL, the injected clock. Every answer is checked against the rows it left."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy import db, store
from proxy.app import create_app
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import OPTOUT_SPOOL, POOL
from proxy.optout_spool import SpoolEntry
from proxy.phone import mask, subject_hash
from tests.conftest import AMS, Clock, make_settings, mobile
from tests.world import A, World, make_world

D = "/dial/v1/decisions"


@pytest.fixture
async def world(client: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(client, auth)


def basic(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


def creds(world: World) -> dict[str, str]:
    return basic(world.sid, world.token)


def call_id() -> str:
    return f"{uuid.uuid4().hex}@10.0.0.7"


async def ask(world: World, to: str, *, cid: str | None = None, status: int = 200,
              headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"to": to, "from": world.voice, "call_id": cid or call_id(), **extra}
    resp = await world.admin.post(D, json=body, headers=headers or creds(world))
    assert resp.status == status, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def rows(pool: asyncpg.Pool, number: str) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM decisions WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
    return found


async def count_decisions(pool: asyncpg.Pool) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM decisions")
    return n


async def consent(pool: asyncpg.Pool, consent_id: int) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow("SELECT * FROM consents WHERE id = $1",
                                              consent_id)
    return row


# --- deciding ---------------------------------------------------------------------------------

async def test_allow_commits_the_row_and_consumes_the_request(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    answer = await ask(world, "0" + number[3:], cid=cid)
    assert answer["decision"] == "allow"
    assert (answer["reason"], answer["code"], answer["retry_after"]) == ("ALLOWED", None, None)
    assert answer["sip"] == {"status": 200, "reason": "ALLOWED", "retry_after_seconds": None}
    assert set(answer["explanation"]) == {"en", "nl"}
    (row,) = await rows(pool, number)  # committed before the answer: no sync needed
    assert row["id"] == answer["decision_id"]
    assert (row["decision"], row["basis"], row["channel"]) == ("allow", "CONTACT_REQUEST",
                                                                "voice")
    assert row["consumed_consent_id"] == request_id
    assert row["client_id"] == world.sid
    assert row["front"] == "dial"
    assert row["details"] == {"dial": {"call_id": cid, "automated": False}}
    assert (await consent(pool, request_id))["consumed_at"] is not None
    # N6: the request covered one contact; the next attempt (a new call_id) is denied.
    again = await ask(world, number)
    assert again["decision"] == "deny"


async def test_first_call_under_a_consent_is_recorded(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    consent_id = await world.consent(number, "voice")
    answer = await ask(world, number)
    assert (answer["decision"], answer["reason"]) == ("allow", "ALLOWED")
    assert (await consent(pool, consent_id))["first_used_by"] == answer["decision_id"]


async def test_deny_has_its_code_and_a_sip_403(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    answer = await ask(world, number, cid="a1b2c3@dialer")
    assert answer["decision"] == "deny"
    assert answer["reason"] == "NO_LEGAL_BASIS"
    assert answer["code"] == DENIAL_CODES["NO_LEGAL_BASIS"][1] == 930030
    assert answer["sip"] == {"status": 403, "reason": "NO_LEGAL_BASIS",
                             "retry_after_seconds": None}
    (row,) = await rows(pool, number)
    assert (row["id"], row["decision"], row["reason"]) == (answer["decision_id"], "deny",
                                                           "NO_LEGAL_BASIS")


async def test_objection_and_unknown_sender_are_denied_with_their_codes(world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await world.objection(number)
    answer = await ask(world, number)
    assert (answer["reason"], answer["code"]) == ("OBJECTION_ON_FILE", 930005)
    other = await world.admin.post(D, json={"to": mobile(), "from": "+31201111111",
                                            "call_id": call_id()}, headers=creds(world))
    assert (await other.json())["reason"] == "UNKNOWN_SENDER"


async def test_only_the_clients_own_organisations_senders_count(world: World) -> None:
    other = await make_world(world.admin, world.auth)  # another organisation, its own sender
    number = mobile()
    await other.consent(number, "voice")
    body = {"to": number, "from": other.voice, "call_id": call_id()}
    resp = await world.admin.post(D, json=body, headers=creds(world))
    assert (await resp.json())["reason"] == "UNKNOWN_SENDER"
    resp = await world.admin.post(D, json=body, headers=creds(other))
    assert (await resp.json())["decision"] == "allow"


async def test_a_stop_in_the_outage_spool_is_applied_before_deciding(
        world: World, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "voice")
    # A STOP answered while the database was out, not yet applied (the drain was not woken).
    world.admin.app[OPTOUT_SPOOL].append(SpoolEntry(
        message_sid="SM" + uuid.uuid4().hex, received_at=clock.now - dt.timedelta(minutes=5),
        to=world.sms, subject=number, body_hash="0" * 64, intent="stop"))
    answer = await ask(world, number)
    assert (answer["decision"], answer["reason"]) == ("deny", "OBJECTION_ON_FILE")
    assert world.admin.app[OPTOUT_SPOOL].entries == 0


async def test_automated_asks_for_an_automated_voice_consent(world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")  # N2: a call by a person only
    assert (await ask(world, number, automated=True))["reason"] == "CONSENT_WRONG_CHANNEL"
    assert (await ask(world, number, automated=False))["decision"] == "allow"


async def test_outside_calling_hours_counts_whole_seconds_to_retry(
        world: World, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 30, 22, 15, 7, 250_000, tzinfo=AMS)  # a Monday night
    answer = await ask(world, number)
    assert (answer["decision"], answer["reason"]) == ("deny", "OUTSIDE_CALLING_HOURS")
    assert answer["code"] == 930040
    retry_after = dt.datetime.fromisoformat(answer["retry_after"])
    assert retry_after > clock.now
    expected = math.ceil((retry_after - clock.now).total_seconds())
    assert answer["sip"] == {"status": 403, "reason": "OUTSIDE_CALLING_HOURS",
                             "retry_after_seconds": expected}
    assert (retry_after - clock.now).total_seconds() % 1  # rounded up, not down


# --- a call_id is decided once ----------------------------------------------------------------

async def test_retransmitted_call_id_returns_the_first_decision(
        world: World, clock: Clock) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    clock.now += dt.timedelta(seconds=2)
    again = await ask(world, number, cid=cid)
    assert again == first  # the request it consumed is not asked for twice (N6)
    assert len(await rows(pool, number)) == 1
    assert (await consent(pool, request_id))["consumed_at"] is not None


async def test_a_replayed_denial_counts_its_retry_from_now(world: World, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 30, 22, 0, tzinfo=AMS)
    cid = call_id()
    first = await ask(world, number, cid=cid)
    clock.now += dt.timedelta(minutes=10)
    again = await ask(world, number, cid=cid)
    assert again["decision_id"] == first["decision_id"]
    assert again["retry_after"] == first["retry_after"]
    assert again["sip"]["retry_after_seconds"] == first["sip"]["retry_after_seconds"] - 600


async def test_two_identical_requests_at_once_make_one_decision(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    answers = await asyncio.gather(*(ask(world, number, cid=cid) for _ in range(5)))
    assert {a["decision_id"] for a in answers} == {answers[0]["decision_id"]}
    assert {a["decision"] for a in answers} == {"allow"}
    (row,) = await rows(pool, number)
    assert row["consumed_consent_id"] == request_id


async def test_the_same_call_id_for_another_number_is_refused(world: World) -> None:
    pool = world.admin.app[POOL]
    cid = call_id()
    await ask(world, mobile(), cid=cid)
    before = await count_decisions(pool)
    refused = await ask(world, mobile(), cid=cid, status=422)
    assert refused["field"] == "call_id"
    assert await count_decisions(pool) == before


async def test_another_clients_same_call_id_is_decided_on_its_own(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    await world.consent(number, "voice")
    resp = await world.admin.post(f"{A}/clients", json={"name": "Second dialer",
                                                        "organisations": [world.org]},
                                  headers=world.auth)
    second = await resp.json()
    cid = call_id()
    mine = await ask(world, number, cid=cid)
    theirs = await ask(world, number, cid=cid,
                       headers=basic(second["account_sid"], second["auth_token"]))
    assert mine["decision_id"] != theirs["decision_id"]
    assert [r["client_id"] for r in await rows(pool, number)] == [
        world.sid, second["account_sid"]]


async def test_a_call_id_is_decided_afresh_after_24_hours(world: World, clock: Clock) -> None:
    number = mobile()
    cid = call_id()
    first = await ask(world, number, cid=cid)
    clock.now += dt.timedelta(hours=24)
    later = await ask(world, number, cid=cid)
    assert later["decision_id"] != first["decision_id"]


# --- refused requests -------------------------------------------------------------------------

async def test_bad_credentials_are_401(world: World) -> None:
    pool = world.admin.app[POOL]
    before = await count_decisions(pool)
    for headers in ({}, basic(world.sid, "wrong"), basic("AC" + "0" * 32, world.token),
                    {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
        resp = await world.admin.post(D, json={"to": mobile(), "from": world.voice,
                                               "call_id": call_id()}, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
        assert set(await resp.json()) == {"error", "field"}
    assert await count_decisions(pool) == before


async def test_a_disabled_client_is_401(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    first = await ask(world, number)
    resp = await world.admin.post(f"{A}/clients/{world.sid}/disable", headers=world.auth)
    assert resp.status == 200
    before = await count_decisions(pool)
    await ask(world, number, status=401)
    assert await count_decisions(pool) == before
    # Its own earlier decisions are closed to it too.
    resp = await world.admin.post(f"{D}/{first['decision_id']}/outcome",
                                  json={"status": "busy"}, headers=creds(world))
    assert resp.status == 401


BAD_BODIES = [
    ({"from": "+31201234567", "call_id": "x"}, "to"),
    ({"to": "0612345678", "call_id": "x"}, "from"),
    ({"to": "0612345678", "from": "+31201234567"}, "call_id"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": ""}, "call_id"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": "a b"}, "call_id"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": "é@host"}, "call_id"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": "x" * 257}, "call_id"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": "x", "automated": "yes"},
     "automated"),
    ({"to": 612345678, "from": "+31201234567", "call_id": "x"}, "to"),
    ({"to": "0612345678", "from": "+31201234567", "call_id": "x", "url": "u"}, "url"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
async def test_bad_input_names_the_field_and_writes_nothing(
        world: World, body: dict[str, Any], field: str) -> None:
    pool = world.admin.app[POOL]
    before = await count_decisions(pool)
    resp = await world.admin.post(D, json=body, headers=creds(world))
    assert resp.status == 422, await resp.text()
    assert await resp.json() == {"error": (await resp.json())["error"], "field": field}
    assert await count_decisions(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM dial_attempts WHERE client_id = $1",
                               world.sid) == 0


async def test_a_form_body_is_read_like_json(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    await world.consent(number, "automated_voice")
    resp = await world.admin.post(D, data={"to": number, "from": world.voice,
                                           "call_id": call_id(), "automated": "true"},
                                  headers=creds(world))
    assert resp.status == 200
    assert (await resp.json())["decision"] == "allow"
    before = await count_decisions(pool)
    for raw in (f"to={number}&to=%2B31612345678&from=x&call_id=y", "to=1&from=2&call_id=3&"
                "automated=maybe"):
        resp = await world.admin.post(D, data=raw, headers={
            **creds(world), "Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 422
        assert (await resp.json())["field"] in ("to", "automated")
    resp = await world.admin.post(D, data=b"to=1", headers={**creds(world),
                                                            "Content-Type": "text/plain"})
    assert resp.status == 422
    resp = await world.admin.post(D, data=b"{not json", headers={
        **creds(world), "Content-Type": "application/json"})
    assert resp.status == 422
    assert await count_decisions(pool) == before


async def test_store_down_is_503_and_nothing_recorded(
        world: World, client: TestClient[Any, Any], pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await ask(world, mobile())  # the client is known
    before = await count_decisions(pool)
    # The consent store goes away: every connection, pooled or held by a batcher, drops.
    client.app[POOL].terminate()
    cid = call_id()
    resp = await client.post(D, json={"to": number, "from": world.voice, "call_id": cid},
                             headers=creds(world))
    assert resp.status == 503
    body = await resp.json()
    assert (body["decision"], body["reason"], body["code"], body["decision_id"]) == (
        "deny", "CONSENT_STORE_UNAVAILABLE", 930503, None)
    assert body["sip"] == {"status": 503, "reason": "CONSENT_STORE_UNAVAILABLE",
                           "retry_after_seconds": None}
    assert await count_decisions(pool) == before  # read through a pool of the test's own
    assert await pool.fetchval("SELECT count(*) FROM dial_attempts WHERE call_id = $1",
                               cid) == 0


# --- outcomes -------------------------------------------------------------------------------

async def report(world: World, decision_id: int, status: str, *, expect: int = 200,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = await world.admin.post(f"{D}/{decision_id}/outcome", json={"status": status},
                                  headers=headers or creds(world))
    assert resp.status == expect, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_answered_keeps_the_request_used(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    decided = await ask(world, number)
    done = await report(world, decided["decision_id"], "answered")
    assert done == {"decision_id": decided["decision_id"], "status": "answered"}
    assert await report(world, decided["decision_id"], "answered") == done  # idempotent
    (row,) = await pool.fetch("SELECT * FROM dial_outcomes WHERE decision_id = $1",
                              decided["decision_id"])
    assert row["status"] == "answered"
    assert (await consent(pool, request_id))["consumed_at"] is not None
    assert await pool.fetchval("SELECT count(*) FROM consumption_reversals WHERE "
                               "decision_id = $1", decided["decision_id"]) == 0
    conflict = await report(world, decided["decision_id"], "busy", expect=409)
    assert conflict["field"] == "status"


@pytest.mark.parametrize("status", ["no_answer", "busy", "failed", "rejected", "cancelled"])
async def test_nobody_reached_gives_the_request_back(world: World, status: str) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    decided = await ask(world, number)
    await report(world, decided["decision_id"], status)
    await report(world, decided["decision_id"], status)  # a repeat gives back nothing more
    (reversal,) = await pool.fetch("SELECT * FROM consumption_reversals WHERE decision_id = $1",
                                   decided["decision_id"])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_reached", status, request_id)
    assert (await consent(pool, request_id))["consumed_at"] is None
    again = await ask(world, number)  # N6: the request is usable again
    assert (again["decision"], again["reason"]) == ("allow", "ALLOWED")


async def test_no_answer_undoes_the_first_call_under_a_consent(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    consent_id = await world.consent(number, "voice")
    decided = await ask(world, number)
    await report(world, decided["decision_id"], "no_answer")
    row = await consent(pool, consent_id)
    assert (row["first_used_at"], row["first_used_by"]) == (None, None)


async def test_outcome_of_a_foreign_or_unknown_decision_is_404(world: World) -> None:
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    decided = await ask(world, number)
    resp = await world.admin.post(f"{A}/clients", json={"name": "Other",
                                                        "organisations": [world.org]},
                                  headers=world.auth)
    other = await resp.json()
    foreign = await report(world, decided["decision_id"], "no_answer", expect=404,
                           headers=basic(other["account_sid"], other["auth_token"]))
    assert foreign["field"] == "decision_id"
    await report(world, 10**15, "busy", expect=404)
    await report(world, 10**30, "busy", expect=404)
    resp = await world.admin.post(f"{D}/abc/outcome", json={"status": "busy"},
                                  headers=creds(world))
    assert resp.status == 404
    assert (await consent(pool, request_id))["consumed_at"] is not None
    assert await pool.fetchval("SELECT count(*) FROM dial_outcomes WHERE decision_id = $1",
                               decided["decision_id"]) == 0


async def test_outcome_of_a_twilio_front_decision_is_404(world: World) -> None:
    """A call placed through the Twilio front reports its own outcome (Twilio's signed
    callbacks); its dialer cannot claim it reached nobody."""
    pool = world.admin.app[POOL]
    decision_id = await pool.fetchval(
        """INSERT INTO decisions (decided_at, client_id, channel, decision, reason, rule,
               details) VALUES (now(), $1, 'voice', 'allow', 'ALLOWED', 'N5', '{}')
           RETURNING id""", world.sid)
    await report(world, decision_id, "busy", expect=404)


async def test_outcome_of_a_denial_is_409(world: World) -> None:
    decided = await ask(world, mobile())
    assert decided["decision"] == "deny"
    assert (await report(world, decided["decision_id"], "busy", expect=409))["field"] == \
        "decision_id"


@pytest.mark.parametrize("body", [{"status": "completed"}, {"status": "no-answer"}, {},
                                  {"status": "busy", "extra": 1}])
async def test_bad_outcome_status_is_422(world: World, body: dict[str, Any]) -> None:
    pool = world.admin.app[POOL]
    decided = await ask(world, mobile())
    resp = await world.admin.post(f"{D}/{decided['decision_id']}/outcome", json=body,
                                  headers=creds(world))
    assert resp.status == 422
    assert (await resp.json())["field"] in ("status", "extra")
    assert await pool.fetchval("SELECT count(*) FROM dial_outcomes WHERE decision_id = $1",
                               decided["decision_id"]) == 0


async def test_metrics_count_dial_decisions(world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")
    cid = call_id()
    await ask(world, number, cid=cid)
    await ask(world, number, cid=cid)  # a replay is no decision
    text = await (await world.admin.get("/metrics")).text()
    assert ('consent_proxy_decisions_total{channel="voice",decision="allow",front="dial",'
            'reason="ALLOWED"} 1.0') in text


async def test_the_log_line_masks_the_number(world: World, log_output: Any) -> None:
    number = mobile()
    await world.consent(number, "voice")
    decided = await ask(world, number)
    text = log_output.getvalue()
    assert number not in text
    assert number[3:] not in text
    lines = [json.loads(line) for line in text.splitlines()]
    (line,) = [x for x in lines if x.get("decision_id") == decided["decision_id"]]
    assert (line["event"], line["route"], line["decision"]) == (
        "request_handled", D, "allow")
    assert line["to"] == mask(number)


async def test_prune_removes_dial_rows_with_their_decisions(
        fresh_database: str, aiohttp_client: Any, clock: Clock, auth: dict[str, str]) -> None:
    await db.migrate_url(fresh_database)
    app = create_app(make_settings(fresh_database), clock=clock)
    world = await make_world(await aiohttp_client(app), auth)
    number = mobile()
    await world.consent(number, "voice", kind="request")
    decided = await ask(world, number)
    await report(world, decided["decision_id"], "busy")
    conn = await db.connect(fresh_database)
    try:
        counts = await store.prune(conn, clock.now + dt.timedelta(days=1))
        assert (counts["decisions"], counts["dial_attempts"], counts["dial_outcomes"],
                counts["consumption_reversals"]) == (1, 1, 1, 1)
        assert await conn.fetchval("SELECT count(*) FROM dial_attempts") == 0
    finally:
        await conn.close()
