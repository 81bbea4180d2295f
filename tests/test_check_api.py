"""The check and scrub APIs against real PostgreSQL: dry runs that agree with each other."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import random
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import check, gate, scrub_batch, store
from proxy.keys import POOL
from proxy.phone import subject_hash
from proxy.policy.facts import Subject
from proxy.settings import RuleSettings
from tests.conftest import BULK_PREFIX, Clock, mobile, uid

A = "/admin/v1"
AMS = ZoneInfo("Europe/Amsterdam")
MONDAY_10 = dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS)
SUNDAY_12 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=AMS)


def landline() -> str:
    n = random.randrange(10**6, 10**7)
    return f"+3120{n}"


async def setup_org(client: Any, auth: dict[str, str], *, purpose: str = "marketing",
                    sector: str = "commercial") -> tuple[str, str]:
    org_id = uid()
    resp = await client.post(f"{A}/organisations", json={
        "id": org_id, "name": "Energie BV", "sector": sector}, headers=auth)
    assert resp.status == 201
    sender = landline()
    resp = await client.post(f"{A}/senders", json={
        "sender": sender, "organisation": org_id, "topic": "energy/electricity",
        "purpose": purpose}, headers=auth)
    assert resp.status == 201, await resp.text()
    return org_id, sender


async def add_consent(client: Any, auth: dict[str, str], number: str, org_id: str,
                      **extra: Any) -> int:
    body = {"subject": number, "organisation": org_id, "channel": "voice",
            "topics": ["energy"], "kind": "opt_in",
            "given_at": "2026-10-01T12:00:00+02:00", "verified_at": "2026-10-01T12:05:00+02:00",
            "provenance": "self_provided", **extra}
    resp = await client.post(f"{A}/consents", json=body, headers=auth)
    assert resp.status == 201, await resp.text()
    consent_id: int = (await resp.json())["id"]
    return consent_id


async def do_check(client: Any, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post(f"{A}/check", json=body, headers=auth)
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def test_check_allows_with_consent_and_records_nothing(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    consent_id = await add_consent(client, auth, number, org_id)
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    result = await do_check(client, auth, channel="voice", to="0" + number[3:], **{
        "from": sender, "at": MONDAY_10.isoformat()})
    assert result["decision"] == "allow"
    assert result["basis"] == "CONSENT"
    assert result["reason"] == "ALLOWED"
    assert {"type": "consent", "id": consent_id} in result["evidence"]
    assert result["to"] == number
    assert result["organisation"] == org_id
    assert result["explanation"]["en"]
    assert result["explanation"]["nl"]
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before
    row = await pool.fetchrow("SELECT first_used_at FROM consents WHERE id = $1", consent_id)
    assert row["first_used_at"] is None


async def test_check_sunday_gives_retry_after(client: Any, auth: dict[str, str]) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    await add_consent(client, auth, number, org_id)
    result = await do_check(client, auth, channel="voice", to=number,
                            **{"from": sender, "at": SUNDAY_12.isoformat()})
    assert result["decision"] == "deny"
    assert result["reason"] == "PROHIBITED_DAY"
    assert dt.datetime.fromisoformat(result["retry_after"]) == MONDAY_10.replace(hour=9)


async def test_check_retry_after_is_null_when_the_basis_ends_first(
    client: Any, auth: dict[str, str]
) -> None:
    """N15: on the evening of 30 June 2026 a customer relationship still covers calls, but at
    the next opening (1 July 09:00) it no longer does: no retry_after, and the explanation and
    evidence say why. A charity's relationship keeps calls: retry at the opening."""
    evening = "2026-06-30T22:30:00+02:00"
    for sector, retry in (("commercial", None), ("charity", "2026-07-01T09:00:00+02:00")):
        org_id, sender = await setup_org(client, auth, sector=sector)
        number = mobile()
        resp = await client.post(f"{A}/relationships", json={
            "subject": number, "organisation": org_id, "kind": "customer",
            "topics": ["energy"], "started_at": "2024-01-01T00:00:00+01:00",
            "provenance": "self_provided", "opt_out_offered": True}, headers=auth)
        assert resp.status == 201, await resp.text()
        relationship_id = (await resp.json())["id"]
        result = await do_check(client, auth, channel="voice", to=number,
                                **{"from": sender, "at": evening})
        assert (result["decision"], result["reason"]) == ("deny", "OUTSIDE_CALLING_HOURS")
        assert result["retry_after"] == retry
        if retry is None:
            assert "the basis ends first" in result["explanation"]["en"]
            assert "CUSTOMER" not in result["explanation"]["en"]  # words, not codes
            assert "2026-07-01 09:00 (Europe/Amsterdam)" in result["explanation"]["en"]
            assert result["evidence"] == [{"type": "weekday", "id": "2026-06-30"},
                                          {"type": "relationship", "id": relationship_id}]
        else:
            assert result["evidence"] == [{"type": "weekday", "id": "2026-06-30"}]


async def test_check_denials_are_200(client: Any, auth: dict[str, str]) -> None:
    _org_id, sender = await setup_org(client, auth)
    at = MONDAY_10.isoformat()
    result = await do_check(client, auth, channel="voice", to="12", **{"from": sender, "at": at})
    assert (result["decision"], result["reason"]) == ("deny", "INVALID_NUMBER")
    result = await do_check(client, auth, channel="sms", to=mobile(),
                            **{"from": "+31209999999", "at": at})
    assert (result["decision"], result["reason"]) == ("deny", "UNKNOWN_SENDER")
    result = await do_check(client, auth, channel="voice", to=mobile(),
                            **{"from": "anonymous", "at": at})
    assert (result["decision"], result["reason"]) == ("deny", "CALLER_ID_WITHHELD")
    result = await do_check(client, auth, channel="voice", to=mobile(),
                            **{"from": sender, "at": at})
    assert (result["decision"], result["reason"]) == ("deny", "NO_LEGAL_BASIS")


async def test_check_objection_and_topic_override(client: Any, auth: dict[str, str]) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    await add_consent(client, auth, number, org_id)
    at = MONDAY_10.isoformat()
    result = await do_check(client, auth, channel="voice", to=number,
                            **{"from": sender, "at": at, "topic": "insurance/car"})
    assert result["reason"] == "CONSENT_WRONG_TOPIC"
    resp = await client.post(f"{A}/objections", json={
        "subject": number, "organisation": org_id, "via": "agent",
        "received_at": "2026-11-01T10:00:00+01:00"}, headers=auth)
    assert resp.status == 201
    result = await do_check(client, auth, channel="voice", to=number,
                            **{"from": sender, "at": at})
    assert result["reason"] == "OBJECTION_ON_FILE"
    assert result["evidence"][0]["type"] == "objection"


async def test_check_contact_request_is_not_consumed(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    request_id = await add_consent(client, auth, number, org_id, kind="request")
    for _ in range(2):
        result = await do_check(client, auth, channel="voice", to=number,
                                **{"from": sender, "at": MONDAY_10.isoformat()})
        assert result["basis"] == "CONTACT_REQUEST"
        assert result["consumes"] == request_id
    row = await pool.fetchrow("SELECT consumed_at FROM consents WHERE id = $1", request_id)
    assert row["consumed_at"] is None


async def test_n5_withdrawal_beats_a_customer_relationship_until_a_later_consent(
    client: Any, auth: dict[str, str], clock: Clock,
) -> None:
    """End to end: a withdrawn SMS consent stops SMS despite a customer relationship (which
    allowed SMS before any consent existed), until a consent given after the withdrawal."""
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    resp = await client.post(f"{A}/relationships", json={
        "subject": number, "organisation": org_id, "kind": "customer",
        "topics": ["energy/gas"], "started_at": "2023-01-01T00:00:00+01:00",
        "provenance": "self_provided", "opt_out_offered": True}, headers=auth)
    assert resp.status == 201, await resp.text()
    old = await add_consent(client, auth, number, org_id, channel="sms")
    clock.now = dt.datetime(2026, 11, 20, 9, 0, tzinfo=AMS)
    resp = await client.delete(f"{A}/consents/{old}", headers=auth)
    assert resp.status == 200
    clock.now = MONDAY_10
    sms = {"channel": "sms", "to": number, "from": sender}
    before = await do_check(client, auth, **sms, at="2026-11-20T08:59:59+01:00")
    assert (before["reason"], before["basis"]) == ("ALLOWED", "CONSENT")
    result = await do_check(client, auth, **sms, at=MONDAY_10.isoformat())
    assert (result["decision"], result["reason"], result["rule"]) == (
        "deny", "CONSENT_WITHDRAWN", "N5")
    assert result["evidence"] == [{"type": "consent", "id": old}]
    assert "2026-11-20" in result["explanation"]["en"]
    voice = await do_check(client, auth, channel="voice", to=number, **{"from": sender},
                           at=MONDAY_10.isoformat())
    assert voice["reason"] != "CONSENT_WITHDRAWN"  # the withdrawal is for SMS only
    new = await add_consent(client, auth, number, org_id, channel="sms",
                            given_at="2026-11-25T12:00:00+01:00",
                            verified_at="2026-11-25T12:05:00+01:00")
    result = await do_check(client, auth, **sms, at=MONDAY_10.isoformat())
    assert (result["reason"], result["basis"]) == ("ALLOWED", "CONSENT")
    assert result["evidence"] == [{"type": "consent", "id": new}, {"type": "consent", "id": old}]
    assert "withdrawal of consent" in result["explanation"]["en"]


async def test_n11_later_consent_lifts_an_objection_which_stays_on_file(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool,
) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    await add_consent(client, auth, number, org_id)  # 2026-10-01: before the objection
    resp = await client.post(f"{A}/objections", json={
        "subject": number, "organisation": org_id, "via": "agent",
        "received_at": "2026-11-01T10:00:00+01:00"}, headers=auth)
    assert resp.status == 201
    objection_id = (await resp.json())["id"]
    call = {"channel": "voice", "to": number, "from": sender, "at": MONDAY_10.isoformat()}
    result = await do_check(client, auth, **call)
    assert result["reason"] == "OBJECTION_ON_FILE"
    # A consent given on the very instant the objection was received is not later.
    await add_consent(client, auth, number, org_id, given_at="2026-11-01T10:00:00+01:00",
                      verified_at="2026-11-01T10:05:00+01:00")
    assert (await do_check(client, auth, **call))["reason"] == "OBJECTION_ON_FILE"
    later = await add_consent(client, auth, number, org_id,
                              given_at="2026-11-10T12:00:00+01:00",
                              verified_at="2026-11-10T12:05:00+01:00")
    result = await do_check(client, auth, **call)
    assert (result["decision"], result["basis"], result["rule"]) == ("allow", "CONSENT", "N5")
    assert result["evidence"] == [{"type": "consent", "id": later},
                                  {"type": "objection", "id": objection_id}]
    assert "N11" in result["explanation"]["en"]
    assert "N11" in result["explanation"]["nl"]
    insurance = await do_check(client, auth, **call, topic="insurance/car")
    assert insurance["reason"] == "OBJECTION_ON_FILE"  # the later consent covers energy only
    row = await pool.fetchrow("SELECT lifted_at FROM objections WHERE id = $1", objection_id)
    assert row is not None
    assert row["lifted_at"] is None  # on file, unchanged: not START's lifting


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "fax", "to": "0612345678", "from": "x"}, "channel"),
        ({"channel": "voice", "from": "x"}, "to"),
        ({"channel": "voice", "to": "0612345678"}, "from"),
        ({"channel": "voice", "to": "0612345678", "from": "x", "at": "2026-11-30T10:00"}, "at"),
        ({"channel": "voice", "to": "0612345678", "from": "x", "topic": "A B"}, "topic"),
        ({"channel": "voice", "to": "0612345678", "from": "x", "body": "hi"}, "body"),
    ],
)
async def test_check_bad_input_is_422(
    client: Any, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    resp = await client.post(f"{A}/check", json=body, headers=auth)
    assert resp.status == 422
    assert (await resp.json())["field"] == field


# --- scrub --------------------------------------------------------------------------------

def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_scrub_small_file(client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org_id, sender = await setup_org(client, auth)
    allowed, objected = mobile(), mobile()
    await add_consent(client, auth, allowed, org_id)
    await add_consent(client, auth, objected, org_id)
    await client.post(f"{A}/objections", json={
        "subject": objected, "via": "letter", "received_at": "2026-11-01T10:00:00+01:00"},
        headers=auth)
    body = (f"telefoonnummer\n{allowed}\n0{objected[3:]}\nnot a number\n\n"
            f'"{mobile()}",extra column\n')
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    resp = await client.post(
        f"{A}/scrub", params={"channel": "voice", "from": sender, "at": MONDAY_10.isoformat()},
        data=body.encode(), headers={**auth, "Content-Type": "text/csv"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = parse_csv(await resp.text())
    assert [(r["decision"], r["reason"]) for r in rows] == [
        ("allow", "ALLOWED"), ("deny", "OBJECTION_ON_FILE"), ("deny", "INVALID_NUMBER"),
        ("deny", "NO_LEGAL_BASIS")]
    assert rows[0]["number"] == allowed
    assert rows[2]["number"] == "not a number"
    assert all(r["retry_after"] == "" for r in rows)
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before


async def test_scrub_on_sunday_has_retry_after(client: Any, auth: dict[str, str]) -> None:
    org_id, sender = await setup_org(client, auth)
    number = mobile()
    await add_consent(client, auth, number, org_id)
    resp = await client.post(
        f"{A}/scrub", params={"channel": "voice", "from": sender, "at": SUNDAY_12.isoformat()},
        data=f"{number}\n".encode(), headers=auth)
    (row,) = parse_csv(await resp.text())
    assert row["reason"] == "PROHIBITED_DAY"
    assert dt.datetime.fromisoformat(row["retry_after"]) == MONDAY_10.replace(hour=9)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"from": "+31200000001"}, "channel"), ({"channel": "voice"}, "from"),
     ({"channel": "voice", "from": "+31209999998"}, "from"),
     ({"channel": "voice", "from": "x", "at": "2026-11-30"}, "at"),
     ({"channel": "voice", "from": "x", "limit": "3"}, "limit")],
)
async def test_scrub_bad_query_is_422(
    client: Any, auth: dict[str, str], params: dict[str, str], field: str
) -> None:
    resp = await client.post(f"{A}/scrub", params=params, data=b"0612345678\n", headers=auth)
    assert resp.status == 422
    assert (await resp.json())["field"] == field


async def test_scrub_answers_numbers_of_every_shape_as_the_check_api_does(
    client: Any, auth: dict[str, str]
) -> None:
    """Numbers with nothing on file are decided once per shape; a valid foreign number too
    short for E.164 as the engine reads it (+683, Niue) must not share the answer of a
    longer foreign one, nor a Dutch number that of a foreign one. Blank lines before the
    header are skipped like the header."""
    _org_id, sender = await setup_org(client, auth)
    lines = ["+447911123456", "+6834002", mobile(), "+4779123456", "0" + mobile()[3:]]
    resp = await client.post(
        f"{A}/scrub", params={"channel": "sms", "from": sender, "at": MONDAY_10.isoformat()},
        data="\n\n".join(["", "number", *lines]).encode(), headers=auth)
    rows = parse_csv(await resp.text())
    expected = []
    for raw in lines:
        result = await do_check(client, auth, channel="sms", to=raw,
                                **{"from": sender, "at": MONDAY_10.isoformat()})
        expected.append((raw, result["decision"], result["reason"]))
    assert [(r["number"], r["decision"], r["reason"]) for r in rows] == expected
    assert {e[2] for e in expected} >= {"INVALID_NUMBER", "NO_LEGAL_BASIS"}


async def test_a_scrub_cut_short_by_the_store_never_looks_complete(
    client: Any, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed, for lists too: when the consent store goes away halfway, the rows already
    decided have been sent, but the answer stops without its final chunk, so no client can
    take a partial scrub for a whole one."""
    monkeypatch.setattr(check, "SCRUB_BATCH", 50)
    _org_id, sender = await setup_org(client, auth)
    store_gone = asyncio.Event()

    async def upload() -> AsyncIterator[bytes]:
        yield "".join(f"{mobile()}\n" for _ in range(200)).encode()  # four batches
        await store_gone.wait()
        for _ in range(10):
            yield "".join(f"{mobile()}\n" for _ in range(100)).encode()

    resp = await client.post(
        f"{A}/scrub", params={"channel": "sms", "from": sender, "at": MONDAY_10.isoformat()},
        data=upload(), headers=auth)
    assert resp.status == 200
    assert await resp.content.readline() == b"number,decision,reason,retry_after\n"
    assert (await resp.content.readline()).endswith(b",deny,NO_LEGAL_BASIS,\n")
    client.app[POOL].terminate()
    store_gone.set()
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


@given(st.text(st.characters(exclude_characters="\n", exclude_categories=["Cs"]),
               min_size=1, max_size=40))
@settings(max_examples=500)
def test_scrub_rows_are_what_the_csv_module_writes(raw: str) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [raw, "deny", "PROHIBITED_DAY", "2026-11-30T09:00:00+01:00"])
    assert (scrub_batch.number_field(raw) + ",deny,PROHIBITED_DAY,2026-11-30T09:00:00+01:00\n"
            == out.getvalue())


async def test_bulk_facts_leave_out_what_cannot_change_a_decision(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    """A subject record that is neither a business (N1) nor published (N9) decides like no
    record at all: the scrub's lookup does not bring it back."""
    org_id, _sender = await setup_org(client, auth)
    plain, business, published, consented, unknown = (mobile() for _ in range(5))
    await pool.executemany(
        "INSERT INTO subjects (number, kind, published_for_marketing) VALUES ($1, $2, $3)",
        [(plain, "person", False), (business, "business", False), (published, "person", True)])
    await add_consent(client, auth, consented, org_id)
    organisation = await store.get_organisation(pool, org_id)
    found = await store.load_facts_bulk(
        pool, organisation, [plain, business, published, consented, unknown])
    assert set(found) == {business, published, consented}
    assert found[business].subject == Subject(business, "business", False)
    assert found[published].subject == Subject(published, "person", True)
    assert found[consented].subject is None
    assert [c.organisation_id for c in found[consented].consents] == [org_id]


async def _seed(pool: asyncpg.Pool, org_id: str, numbers: list[str]) -> None:
    """Varied facts for a slice of the numbers, loaded with COPY."""
    rng = random.Random(7)
    given = dt.datetime(2026, 6, 1, 12, tzinfo=AMS)
    subjects, consents, relationships, objections = [], [], [], []
    for i, number in enumerate(numbers):
        pick = i % 20
        if pick > 5:
            continue
        subjects.append((number, "business" if pick == 5 else "person", pick == 4))
        if pick in (0, 1):
            consents.append((
                number, org_id, "voice", [rng.choice(["energy", "energy/gas", "insurance"])],
                rng.choice(["opt_in", "opt_in", "request"]), given,
                given + dt.timedelta(days=5) if rng.random() < 0.9 else None,
                rng.choice(["self_provided", "self_provided", "purchased"]),
                given + dt.timedelta(days=rng.choice([30, 400])) if rng.random() < 0.3 else None,
            ))
        if pick in (1, 2):
            ended = rng.choice([None, dt.datetime(2023, 1, 1, tzinfo=AMS)])
            relationships.append((number, org_id, "customer", ["energy/gas"],
                                  dt.datetime(2020, 1, 1, tzinfo=AMS), ended, "self_provided",
                                  rng.random() < 0.8))
        if pick == 3 or (pick == 0 and rng.random() < 0.2):
            objections.append((subject_hash(number), number,
                               rng.choice([org_id, None]), rng.choice(["voice", "sms", None]),
                               dt.datetime(2026, 10, 1, tzinfo=AMS), "api"))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "subjects", records=subjects,
            columns=["number", "kind", "published_for_marketing"])
        await conn.copy_records_to_table(
            "consents", records=consents,
            columns=["subject", "organisation_id", "channel", "topics", "kind", "given_at",
                     "verified_at", "provenance", "expires_at"])
        await conn.copy_records_to_table(
            "relationships", records=relationships,
            columns=["subject", "organisation_id", "kind", "topics", "started_at", "ended_at",
                     "provenance", "opt_out_offered"])
        await conn.copy_records_to_table(
            "objections", records=objections,
            columns=["subject_hash", "subject", "organisation_id", "channel", "received_at",
                     "via"])


async def test_scrub_of_100000_numbers_matches_per_number_checks(
    client: Any, auth: dict[str, str], pool: asyncpg.Pool
) -> None:
    org_id, sender = await setup_org(client, auth)
    block = random.randrange(0, 100)  # a fresh block of +3168 numbers, away from mobile()
    numbers = [f"{BULK_PREFIX}{block:02d}{i:05d}" for i in range(100_000)]
    await _seed(pool, org_id, numbers)
    lines = list(numbers)
    for i in range(0, len(lines), 997):
        lines[i] = "0" + lines[i][3:]  # national form
    lines[5] = "not-a-number"
    lines[77] = "+31 6"
    resp = await client.post(
        f"{A}/scrub", params={"channel": "voice", "from": sender, "at": MONDAY_10.isoformat()},
        data="\n".join(["number", *lines]).encode(), headers=auth)
    assert resp.status == 200
    rows = parse_csv(await resp.text())
    assert len(rows) == 100_000
    assert [r["number"] for r in rows] == lines

    rules = RuleSettings()
    sem = asyncio.Semaphore(8)

    async def one(raw: str) -> tuple[str, str, str]:
        async with sem:
            ev = await gate.evaluate(gate.store_facts(pool), rules, channel="voice",
                                     to_raw=raw, from_raw=sender, now=MONDAY_10)
        retry = ev.decision.retry_after.isoformat() if ev.decision.retry_after else ""
        return ev.decision.decision, ev.decision.reason, retry

    expected = await asyncio.gather(*(one(raw) for raw in lines))
    got = [(r["decision"], r["reason"], r["retry_after"]) for r in rows]
    mismatches = [(lines[i], got[i], expected[i]) for i in range(len(lines))
                  if got[i] != expected[i]]
    assert mismatches == []
    reasons = {r[1] for r in got}
    assert {"ALLOWED", "OBJECTION_ON_FILE", "NO_LEGAL_BASIS", "INVALID_NUMBER"} <= reasons
    assert len(reasons) >= 6
