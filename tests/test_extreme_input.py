"""No input makes a 500: far-future "never" dates through the admin API, whatever rows the
database holds (written by hand, past what Python's datetime holds), look-alike numbers, and
writes the schema refuses. Real PostgreSQL; the fake Twilio records what was forwarded."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from proxy import scrub_batch, store
from proxy.phone import subject_hash
from proxy.policy.facts import Organisation, Sender
from proxy.settings import RuleSettings
from tests.conftest import Clock, mobile, uid
from tests.fake_twilio import FakeTwilio
from tests.test_twilio_front import _proxy
from tests.world import A, World, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MONDAY_10 = "2026-11-30T10:00:00+01:00"
NEVER = "9999-12-31T23:59:59+00:00"  # a common way of writing "no end"


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def _post(world: World, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await world.admin.post(f"{A}{path}", json=body, headers=world.auth)
    return resp.status, await resp.json()


def _consent(world: World, number: str, **extra: Any) -> dict[str, Any]:
    return {"subject": number, "organisation": world.org, "channel": "sms",
            "topics": ["energy"], "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
            "verified_at": "2026-10-01T12:05:00+02:00", "provenance": "self_provided",
            **extra}


async def _sms(world: World, number: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"{world.base}/2010-04-01/Accounts/{world.sid}/Messages.json",
            data={"To": number, "From": world.sms, "Body": "Hallo"},
            auth=aiohttp.BasicAuth(world.sid, world.token))
        return resp.status, await resp.json()


async def _check(world: World, number: str, channel: str = "sms") -> dict[str, Any]:
    status, body = await _post(world, "/check", {"channel": channel, "to": number,
                                                 "from": world.sms, "at": MONDAY_10})
    assert status == 200, body
    return body


async def _scrub(world: World, numbers: list[str]) -> list[list[str]]:
    resp = await world.admin.post(
        f"{A}/scrub", params={"channel": "sms", "from": world.sms, "at": MONDAY_10},
        data="\n".join(numbers) + "\n", headers={**world.auth, "Content-Type": "text/csv"})
    assert resp.status == 200
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0] == ["number", "decision", "reason", "retry_after"]
    return rows[1:]


# --- far-future dates through the admin API ---------------------------------------------------

@pytest.mark.parametrize("never", [NEVER, "9999-12-31T23:59:59-05:00", "9001-01-01T00:00:00Z"])
async def test_expiry_in_the_year_9999_is_no_expiry(world: World, fake: FakeTwilio,
                                                    pool: asyncpg.Pool, never: str) -> None:
    """Accepted and stored as no end; the number can then be checked, scrubbed and texted
    (these answered 500 with an OverflowError once such a date was stored)."""
    number = mobile()
    status, body = await _post(world, "/consents", _consent(world, number, expires_at=never))
    assert status == 201, body
    assert await pool.fetchval("SELECT expires_at FROM consents WHERE id = $1",
                               body["id"]) is None
    assert (await _check(world, number))["decision"] == "allow"
    assert await _scrub(world, [number]) == [[number, "allow", "ALLOWED", ""]]
    assert (await _sms(world, number))[0] == 201
    assert fake.creates("Messages")[-1].value("To") == number


async def test_relationship_ending_in_9998_is_still_running(world: World,
                                                            pool: asyncpg.Pool) -> None:
    number = mobile()
    status, body = await _post(world, "/relationships", {
        "subject": number, "organisation": world.org, "kind": "customer",
        "topics": ["energy"], "started_at": "2020-01-01T00:00:00+01:00",
        "ended_at": "9998-12-31T00:00:00+01:00", "provenance": "self_provided",
        "opt_out_offered": True})
    assert status == 201, body
    assert await pool.fetchval("SELECT ended_at FROM relationships WHERE id = $1",
                               body["id"]) is None
    checked = await _check(world, number)
    assert (checked["decision"], checked["basis"]) == ("allow", "CUSTOMER")
    assert "ongoing" in checked["explanation"]["en"]


@pytest.mark.parametrize(("field", "value"), [
    ("first_contact_by", NEVER),  # no end here would mean the default 6 months: refused
    ("verified_at", NEVER),
    ("given_at", "9500-01-01T00:00:00+00:00"),
])
async def test_other_far_future_times_are_refused_naming_the_field(
        world: World, pool: asyncpg.Pool, field: str, value: str) -> None:
    before = await pool.fetchval("SELECT count(*) FROM consents")
    status, body = await _post(world, "/consents", _consent(world, mobile(), **{field: value}))
    assert (status, body["field"]) == (422, field), body
    assert "9000" in body["error"]
    assert await pool.fetchval("SELECT count(*) FROM consents") == before


async def test_a_request_window_ending_in_9999_is_refused(world: World) -> None:
    status, body = await _post(world, "/consents", _consent(
        world, mobile(), kind="request",
        requested_for={"start": "2026-11-30T09:00:00+01:00", "end": NEVER}))
    assert (status, body["field"]) == (422, "requested_for.end")


# --- whatever the database holds --------------------------------------------------------------

# Values PostgreSQL stores and the admin API no longer writes: infinity, the last second of
# 9999 in UTC (past the end of the calendar in Amsterdam), a year after 9999, a date BC.
HAND_WRITTEN = {
    "expires_infinity": ("expires_at", "infinity"),
    "expires_9999": ("expires_at", "9999-12-31 23:59:59+00"),
    "expires_12000": ("expires_at", "12000-06-01 00:00:00+00"),
    "first_contact_by_12000": ("first_contact_by", "12000-06-01 00:00:00+00"),
}


@pytest.mark.parametrize("case", sorted(HAND_WRITTEN))
async def test_rows_beyond_the_calendar_never_make_a_500(
        world: World, fake: FakeTwilio, pool: asyncpg.Pool, case: str) -> None:
    column, value = HAND_WRITTEN[case]
    number = mobile()
    await pool.execute("INSERT INTO subjects (number) VALUES ($1)", number)
    for channel in ("sms", "voice"):
        await pool.execute(
            f"""INSERT INTO consents (subject, organisation_id, channel, topics, kind,
                    given_at, verified_at, provenance, {column})
                VALUES ($1, $2, $3, '{{energy}}', 'opt_in', '2026-10-01 12:00+02',
                        '2026-10-01 12:05+02', 'self_provided', $4::text::timestamptz)""",
            number, world.org, channel, value)
    assert (await _check(world, number))["decision"] == "allow"
    assert (await _check(world, number, "voice"))["decision"] == "allow"
    other = mobile()
    assert await _scrub(world, [number, other]) == [
        [number, "allow", "ALLOWED", ""], [other, "deny", "NO_LEGAL_BASIS", ""]]
    status, body = await _sms(world, number)
    assert status == 201, body


async def test_relationship_rows_beyond_the_calendar_and_bc(world: World,
                                                            pool: asyncpg.Pool) -> None:
    number = mobile()
    await pool.execute("INSERT INTO subjects (number) VALUES ($1)", number)
    await pool.execute(
        """INSERT INTO relationships (subject, organisation_id, kind, topics, started_at,
               ended_at, provenance, opt_out_offered)
           VALUES ($1, $2, 'customer', '{energy}', '0044-03-15 00:00+00 BC',
                   '12000-01-01 00:00+00', 'self_provided', true)""", number, world.org)
    checked = await _check(world, number)
    assert (checked["decision"], checked["basis"]) == ("allow", "CUSTOMER")
    assert (await _sms(world, number))[0] == 201


# --- look-alike numbers in the admin API ------------------------------------------------------

async def test_full_width_digits_in_the_admin_api_name_the_same_subject(
        world: World, pool: asyncpg.Pool) -> None:
    """A consent for a full-width 0612…: was a 500 (the subjects check constraint); now it is the
    consent of the ASCII number, and an objection so spelled blocks that number."""
    number = mobile()
    wide = "".join(chr(0xFF10 + int(d)) for d in "0" + number[3:])
    status, body = await _post(world, "/consents", _consent(world, wide))
    assert status == 201, body
    assert await pool.fetchval("SELECT subject FROM consents WHERE id = $1",
                               body["id"]) == number
    status, _ = await _post(world, "/objections", {"subject": "+31" + wide[1:], "via": "api",
                                                   "received_at": "2026-11-01T10:00:00+01:00"})
    assert status == 201
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 1
    assert (await _check(world, wide))["reason"] == "OBJECTION_ON_FILE"
    resp = await world.admin.get(f"{A}/subjects/{wide}", headers=world.auth)
    assert (await resp.json())["number"] == number


# --- writes the schema refuses ----------------------------------------------------------------

async def test_a_check_constraint_violation_is_422_naming_the_constraint(
        world: World, pool: asyncpg.Pool) -> None:
    """Whatever constraint the handlers' own validation does not foresee (here one added for
    the test) answers 422 naming it, stores nothing, and is no 500."""
    constraint = f"test_refused_{uid('c')[2:].replace('-', '_')}"
    await pool.execute(f"ALTER TABLE organisations ADD CONSTRAINT {constraint} "
                       "CHECK (name <> 'Refused By The Schema') NOT VALID")
    try:
        org_id = uid()
        status, body = await _post(world, "/organisations", {
            "id": org_id, "name": "Refused By The Schema", "sector": "commercial"})
    finally:
        await pool.execute(f"ALTER TABLE organisations DROP CONSTRAINT {constraint}")
    assert (status, body["field"]) == (422, constraint), body
    assert constraint in body["error"]
    assert await pool.fetchval("SELECT count(*) FROM organisations WHERE id = $1", org_id) == 0


# --- one bad row never aborts a scrub ---------------------------------------------------------

ORG = Organisation("org-1", "Acme", "commercial")
SENDER = Sender("+31201234567", "org-1", "energy")
JOB = scrub_batch.ScrubJob("sms", SENDER, ORG, None, RuleSettings(),
                           dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC))


def _consent_row(number: str, *, channel: str = "sms", expires: str | None = None
                 ) -> list[Any]:
    return [1, number, "org-1", channel, ["energy"], "opt_in", "2026-10-01T10:00:00",
            "self_provided", expires, "2026-10-01T10:05:00", None, None, None, None, None, None]


@pytest.mark.parametrize("bad", [
    _consent_row("+31612340001", expires="not a time"),  # cannot be read
    _consent_row("+31612340001", channel="fax"),  # read, but cannot be decided
])
def test_a_row_that_cannot_be_decided_is_an_error_row_and_the_rest_continue(
        bad: list[Any]) -> None:
    numbers = ["+31612340001", "+31612340002", "+31612340003"]
    parsed = scrub_batch.parse_numbers("\n".join(numbers))
    text = orjson.dumps([None, [bad, _consent_row("+31612340002")], None, None]).decode()
    out = scrub_batch.rows(JOB, "\n".join(numbers), parsed, text).decode()
    assert out.splitlines() == ["+31612340001,error,DECISION_FAILED,",
                                "+31612340002,allow,ALLOWED,",
                                "+31612340003,deny,NO_LEGAL_BASIS,"]
    unreadable: set[str] = set()
    facts = store.facts_from_bulk(text, ORG, parsed.valid, parsed.hashes, unreadable)
    assert set(facts) | unreadable == {"+31612340001", "+31612340002"}
