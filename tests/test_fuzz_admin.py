"""Fuzz the admin API from the OpenAPI document it ships (proxy/openapi.yaml) with schemathesis.

The app runs on a real port against the real PostgreSQL. Every generated request, valid or
not, must be answered without a server error and as the document says; a refused request
(4xx) must leave every table as it was, and the read-only routes (GETs, check, scrub) must
never write at all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import tomllib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proxy import db
from proxy.admin import PREFIX
from proxy.app import create_app
from tests.conftest import ADMIN_TOKEN, AMS, REPO, Clock, make_settings, mobile

OPENAPI = REPO / "proxy" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(OPENAPI)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Per operation, valid and invalid requests mixed; 18 operations take ~25 s on 2 cores.
MAX_EXAMPLES = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
# Every table an admin request can write. (count, newest row version): an INSERT or DELETE
# changes the count, an UPDATE writes a row version with a newer xmin.
TABLES = ("organisations", "senders", "clients", "client_organisations", "subjects", "consents",
          "relationships", "objections", "decisions", "decision_outcomes", "registry_events")
FINGERPRINT_SQL = "SELECT " + ", ".join(
    f"(SELECT count(*)::text || '/' || coalesce(max(xmin::text::bigint), 0)::text FROM {t})"
    f" AS {t}" for t in TABLES)
READ_ONLY = {"POST /check", "POST /scrub"}

T = TypeVar("T")
Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]


@dataclass
class Fuzz:
    """The app on a real port, a pool to look at its tables, and records it can refer to."""

    base: str
    pool: asyncpg.Pool
    loop: asyncio.AbstractEventLoop
    org: str
    sender: str
    number: str
    consent: int
    client: str

    def run(self, coro: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the test's event loop from the hypothesis thread."""
        return asyncio.run_coroutine_threadsafe(_call(coro), self.loop).result(timeout=60)

    def fingerprint(self) -> dict[str, str]:
        async def query() -> dict[str, str]:
            row = await self.pool.fetchrow(FINGERPRINT_SQL)
            return dict(row.items())
        return self.run(query)


async def _call(coro: Callable[[], Awaitable[T]]) -> T:
    return await coro()


@pytest.fixture(scope="module")
async def fuzz(database_url: str) -> AsyncIterator[Fuzz]:
    clock = Clock(dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS))
    app = create_app(make_settings(database_url), clock=clock)
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    async with TestServer(app) as server:
        base = str(server.make_url(PREFIX))
        org, sender, number = f"fuzz-{uuid.uuid4().hex[:10]}", _landline(), mobile()
        created: dict[str, Any] = {}
        async with aiohttp.ClientSession(headers=AUTH) as http:
            for path, body in (
                ("/organisations", {"id": org, "name": "Fuzz BV", "sector": "commercial"}),
                ("/senders", {"sender": sender, "organisation": org, "topic": "energy"}),
                ("/consents", {"subject": number, "organisation": org, "channel": "voice",
                               "topics": ["energy"], "kind": "opt_in",
                               "given_at": "2026-10-01T12:00:00+02:00",
                               "verified_at": "2026-10-01T12:05:00+02:00",
                               "provenance": "self_provided"}),
                ("/clients", {"name": "Fuzz dialer", "organisations": [org]}),
            ):
                async with http.post(base + path, json=body) as resp:
                    assert resp.status == 201, await resp.text()
                    created[path] = await resp.json()
        yield Fuzz(base, pool, asyncio.get_running_loop(), org, sender, number,
                   created["/consents"]["id"], created["/clients"]["account_sid"])
    await pool.close()


def _landline() -> str:
    return f"+3120{uuid.uuid4().int % 9_000_000 + 1_000_000}"


def _steer(case: Case, fuzz: Fuzz) -> None:
    """Point a valid request at records that exist, so it gets past the 404s and reaches the
    store: the organisation, sender, number and consent made for this run."""
    refs: dict[str, Any] = {"organisation": fuzz.org, "org_id": fuzz.org, "sender": fuzz.sender,
                            "from": fuzz.sender, "subject": fuzz.number, "to": fuzz.number,
                            "number": fuzz.number, "id": fuzz.consent,
                            "organisations": [fuzz.org], "account_sid": fuzz.client}
    if isinstance(case.body, dict):
        for key in list(case.body):
            if key in refs and key != "id" and not (key == "sender"
                                                    and case.operation.path == "/senders"):
                case.body[key] = refs[key]
    for params in (case.path_parameters, case.query):
        if params:
            for key in list(params):
                if key in refs:
                    params[key] = refs[key]


def _is_positive(case: Case) -> bool:
    return case.meta is None or case.meta.generation.mode.is_positive


def _strategy(operation: APIOperation[Any, Any, Any, Any]) -> st.SearchStrategy[Any]:
    modes = [GenerationMode.POSITIVE]
    if operation.label != "GET /openapi.yaml":  # nothing to get wrong but the token
        modes.append(GenerationMode.NEGATIVE)
    return st.one_of([operation.as_strategy(generation_mode=mode) for mode in modes])


@pytest.mark.parametrize("label", [op.label for op in OPERATIONS])
async def test_fuzz_admin_operation(fuzz: Fuzz, label: str) -> None:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None
    statuses: Counter[int] = Counter()

    def run() -> None:
        with requests.Session() as session:

            @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None,
                      database=None, suppress_health_check=list(HealthCheck))
            @given(case=_strategy(operation), steer=st.booleans())
            def one(case: Case, steer: bool) -> None:
                if steer and _is_positive(case):
                    _steer(case, fuzz)
                before = fuzz.fingerprint()
                response = case.call(base_url=fuzz.base, session=session, headers=AUTH,
                                     timeout=30)
                after = fuzz.fingerprint()
                status = response.status_code
                statuses[status] += 1
                where = f"{label} -> {status}\n{case.as_curl_command(headers=AUTH)}"
                assert status < 500, where
                if 400 <= status < 500:
                    assert after == before, f"a refused request stored something: {where}"
                if case.method == "GET" or label in READ_ONLY:
                    assert after == before, f"a read-only request stored something: {where}"
                case.validate_response(response, checks=CHECKS, headers=AUTH,
                                       transport_kwargs={"base_url": fuzz.base,
                                                         "headers": AUTH,
                                                         "session": session})

            one()

    await asyncio.to_thread(run)
    assert set(statuses) - {401}, f"{label}: every request was refused at the door: {statuses}"


# --- the document itself --------------------------------------------------------------------

async def test_openapi_document_is_served_behind_the_token(fuzz: Fuzz) -> None:
    url = f"{fuzz.base}/openapi.yaml"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert set(await resp.json()) == {"error", "field"}
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.get(url, headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/yaml"
            served = await resp.read()
    assert served == OPENAPI.read_bytes()
    loaded = schemathesis.openapi.from_file(served.decode())
    assert loaded.raw_schema["openapi"] == "3.0.3"
    assert loaded.raw_schema["security"] == [{"adminToken": []}]


def _router_operations(settings_: Any) -> set[tuple[str, str]]:
    app = create_app(settings_)
    found = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or not canonical.startswith(PREFIX + "/"):
            continue
        found.add((route.method, canonical.removeprefix(PREFIX)))
    return found


async def test_every_admin_route_is_documented_and_nothing_else(database_url: str) -> None:
    routes = _router_operations(make_settings(database_url))
    documented = {(method.upper(), path) for path, item in SCHEMA.raw_schema["paths"].items()
                  for method in item if method in {"get", "put", "post", "delete", "patch"}}
    assert len(routes) >= 17
    assert len(OPERATIONS) == len(documented), "schemathesis could not read every operation"
    assert routes - documented == set(), "admin routes missing from proxy/openapi.yaml"
    assert documented - routes == set(), "proxy/openapi.yaml documents routes that do not exist"
    for method, path in routes:  # every operation says what a missing token gets
        responses = SCHEMA.raw_schema["paths"][path][method.lower()]["responses"]
        assert "401" in responses, (method, path)


def test_the_document_ships_with_the_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "openapi.yaml" in pyproject["tool"]["setuptools"]["package-data"]["proxy"]


# --- what fuzzing found, kept as plain regressions ----------------------------------------------

HOSTILE = [
    # (method, path, raw body, status, field)
    ("POST", "/organisations", '{"id": "a", "name": "x\\u0000y", "sector": "commercial"}',
     422, "name"),
    ("POST", "/organisations", '{"id": "a", "name": "x\\ud800y", "sector": "commercial"}',
     422, "name"),
    ("POST", "/organisations", '{"id": "abc\\n", "name": "x", "sector": "commercial"}',
     422, "id"),
    ("POST", "/organisations", '{"id": "a", "name": "x", "sector": "commercial", '
     '"customer_term_months": ' + "9" * 5000 + "}", 422, None),
    ("POST", "/organisations", "[" * 100_000, 422, None),
    ("POST", "/organisations", '{"id": "a", "name": "x", "sector": "commercial", '
     '"customer_term_months": NaN}', 422, None),
    ("PUT", "/subjects/0612345678", '{"evidence": {"a": NaN}}', 422, None),
    ("PUT", "/subjects/0612345678", '{"evidence": {"a": Infinity}}', 422, None),
    ("PUT", "/subjects/0612345678", '{"evidence": {"a": 1e400}}', 422, None),
    ("PUT", "/subjects/0612345678", '{"evidence": {"a": "\\u0000"}}', 422, "evidence.a"),
    ("PUT", "/subjects/0612345678", '{"evidence": {"\\ud800": 1}}', 422, "evidence"),
    ("PUT", "/subjects/0612345678", '{"evidence": ' + '{"a": ' * 80 + "1" + "}" * 81,
     422, None),
    ("POST", "/objections", '{"subject": "0612345678", "via": "api", '
     '"received_at": "0001-01-01T00:00:00+14:00"}', 422, "received_at"),
    ("POST", "/senders", '{"sender": "+31201234567", "organisation": "x", '
     '"topic": "energy\\n"}', 422, "topic"),
    ("POST", "/senders", '{"sender": "+31201234567", "organisation": "x", "topic": "energy", '
     '"inbound_webhook": "http://a\\n"}', 422, "inbound_webhook"),
    ("GET", "/organisations/a%00b", None, 404, "id"),
    ("GET", "/organisations/ABC", None, 404, "id"),
    # digits of another script: phonenumbers would read them, consent-proxy refuses them
    ("PUT", "/subjects/%D9%A0%D9%A6%D9%A1%D9%A2%D9%A3%D9%A4%D9%A5%D9%A6%D9%A7%D9%A8",
     '{"kind": "person"}', 422, "number"),
    ("POST", "/objections", '{"subject": "\u0966\u096c\u0967\u0968\u0969\u096a\u0966'
     '\u0966\u0966\u0968", "via": "api"}', 422, "subject"),
    # far-future times that mean no "no end": refused, naming the field
    ("POST", "/consents", '{"subject": "0612345678", "organisation": "x", "channel": "sms", '
     '"topics": ["energy"], "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00", '
     '"first_contact_by": "9999-12-31T23:59:59+00:00", "provenance": "self_provided"}',
     422, "first_contact_by"),
    ("POST", "/relationships", '{"subject": "0612345678", "organisation": "x", '
     '"kind": "customer", "topics": ["energy"], "started_at": "9999-12-31T23:59:59-12:00", '
     '"provenance": "self_provided", "opt_out_offered": true}', 422, "started_at"),
    ("POST", "/clients/AC%EF%BC%90/rotate", None, 404, "account_sid"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field_"), HOSTILE)
async def test_hostile_input_is_refused_and_stores_nothing(
    fuzz: Fuzz, method: str, path: str, body: str | None, status: int, field_: str | None,
) -> None:
    before = await _fingerprint(fuzz.pool)
    async with aiohttp.ClientSession() as http, http.request(
        method, fuzz.base + path, data=body, headers={**AUTH, "Content-Type": "application/json"}
    ) as resp:
        answer = await resp.json()
        assert resp.status == status, answer
    assert set(answer) == {"error", "field"}
    if field_ is not None:
        assert answer["field"] == field_, answer
    assert await _fingerprint(fuzz.pool) == before


async def _fingerprint(pool: asyncpg.Pool) -> dict[str, str]:
    row = await pool.fetchrow(FINGERPRINT_SQL)
    return dict(row.items())


async def test_fingerprint_sees_updates(fuzz: Fuzz) -> None:
    """The invariant above is only as good as the fingerprint: an UPDATE must change it."""
    before = await _fingerprint(fuzz.pool)
    await fuzz.pool.execute("UPDATE organisations SET name = name WHERE id = $1", fuzz.org)
    assert (await _fingerprint(fuzz.pool))["organisations"] != before["organisations"]


async def test_non_utf8_bearer_token_is_401(fuzz: Fuzz) -> None:
    response = await asyncio.to_thread(lambda: requests.get(
        f"{fuzz.base}/decisions", headers={"Authorization": b"Bearer \xff"}, timeout=30))
    assert response.status_code == 401, response.text


async def _business(fuzz: Fuzz) -> str:
    number = mobile()
    async with aiohttp.ClientSession(headers=AUTH) as http, http.put(
            f"{fuzz.base}/subjects/{number}", json={"kind": "business"}) as resp:
        assert resp.status == 201
    return number  # a live call to it has a basis (N1), so calling hours are checked next


END_OF_TIME = "9999-12-31T23:30:00+00:00"  # valid, but 00:30 on 1 January 10000 in Amsterdam


# --- look-alike numbers and extreme dates, generated ------------------------------------------

# Numbers spelled with digits of every script (full-width ones fold to ASCII, the others are
# refused), and times from the first to the last instant a datetime holds, in any offset.
SPELLINGS = st.text(alphabet=st.one_of(
    st.sampled_from("0123456789+-() "), st.characters(categories=["Nd"]),
    st.sampled_from([chr(0xFF10 + d) for d in range(10)] + ["\uff0b", "\u3000"])),
    min_size=8, max_size=16)
EXTREME_TIMES = st.builds(
    lambda naive, minutes: naive.replace(
        tzinfo=dt.timezone(dt.timedelta(minutes=minutes))).isoformat(),
    st.one_of(st.datetimes(), st.datetimes(min_value=dt.datetime(9000, 1, 1)),
              st.datetimes(max_value=dt.datetime(1, 1, 3)),
              st.sampled_from([dt.datetime.max, dt.datetime.min])),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1))
ASCII_E164 = st.from_regex(r"\A\+[1-9][0-9]{6,14}\Z")


async def test_fuzz_numbers_and_dates_never_make_a_500(fuzz: Fuzz) -> None:
    """Consents and relationships with look-alike subjects and extreme dates, then a check of
    the number: never a 500; what is stored is an ASCII E.164 subject and times a decision
    can be made on (none after the year 9000), and the check still decides."""
    ascii_number = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)

    def run() -> None:
        with requests.Session() as http:
            http.headers.update(AUTH)

            @settings(max_examples=150, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(subject=st.one_of(SPELLINGS, st.just(fuzz.number).map(_wide)),
                   given_at=EXTREME_TIMES, end=st.none() | EXTREME_TIMES,
                   relationship=st.booleans())
            def one(subject: str, given_at: str, end: str | None, relationship: bool) -> None:
                if relationship:
                    path, body = "/relationships", {
                        "subject": subject, "organisation": fuzz.org, "kind": "customer",
                        "topics": ["energy"], "started_at": given_at, "ended_at": end,
                        "provenance": "self_provided", "opt_out_offered": True}
                else:
                    path, body = "/consents", {
                        "subject": subject, "organisation": fuzz.org, "channel": "voice",
                        "topics": ["energy"], "kind": "opt_in", "given_at": given_at,
                        "expires_at": end, "verified_at": given_at,
                        "provenance": "self_provided"}
                created = http.post(fuzz.base + path, json=body, timeout=30)
                assert created.status_code in (201, 422), created.text
                if created.status_code != 201:
                    return
                table = path.strip("/")
                row = fuzz.run(lambda: fuzz.pool.fetchrow(
                    f"SELECT * FROM {table} WHERE id = $1", created.json()["id"]))
                assert ascii_number.fullmatch(row["subject"]), row["subject"]
                for key in ("given_at", "expires_at", "started_at", "ended_at"):
                    if row.get(key) is not None:
                        assert row[key].year <= 9000 + 1, (key, row[key])
                checked = http.post(fuzz.base + "/check", timeout=30, json={
                    "channel": "voice", "to": subject, "from": fuzz.sender,
                    "at": "2026-11-30T10:00:00+01:00"})
                assert checked.status_code == 200, checked.text
                assert checked.json()["to"] == row["subject"]

            one()

    await asyncio.to_thread(run)


def _wide(number: str) -> str:
    return "".join(chr(0xFF10 + int(ch)) if ch.isdigit() else "\uff0b" for ch in number)


async def test_check_at_the_end_of_time_is_not_a_500(fuzz: Fuzz) -> None:
    number = await _business(fuzz)
    async with aiohttp.ClientSession(headers=AUTH) as http, http.post(
            f"{fuzz.base}/check", json={"channel": "voice", "to": number, "from": fuzz.sender,
                                        "at": END_OF_TIME}) as resp:
        assert resp.status in (200, 422), await resp.text()


async def test_scrub_at_the_end_of_time_is_not_cut_off(fuzz: Fuzz) -> None:
    number = await _business(fuzz)
    params = {"channel": "voice", "from": fuzz.sender, "at": END_OF_TIME}
    async with aiohttp.ClientSession(headers=AUTH) as http, http.post(
            f"{fuzz.base}/scrub", params=params, data=f"{number}\n",
            headers={"Content-Type": "text/csv"}) as resp:
        assert resp.status in (200, 422)
        await resp.read()
