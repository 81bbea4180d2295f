"""The console (/console/) at handler level against real PostgreSQL: roles, sessions, CSRF,
login throttling, every page, and what each role may change (checked by posting directly)."""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy import store
from proxy.app import create_app
from proxy.console import auth, i18n
from proxy.console.accounts import add_user
from proxy.keys import POOL
from proxy.phone import subject_hash
from proxy.policy.facts import CHANNELS
from proxy.store import console_users as users
from tests.conftest import REPO, Clock, make_settings, mobile
from tests.console_helpers import PASSWORD, csrf_of, log_in, make_user, page_csrf
from tests.world import World, make_world

TEMPLATES = Path(__file__).resolve().parent.parent / "proxy" / "console" / "templates"
Browser = Callable[[], "Any"]


@pytest.fixture
async def browsers(client: TestClient[Any, Any]) -> AsyncIterator[Callable[[], Any]]:
    """Each call: another browser (its own cookie jar) on the same running proxy."""
    made: list[TestClient[Any, Any]] = []

    async def make() -> TestClient[Any, Any]:
        other: TestClient[Any, Any] = TestClient(client.server)
        await other.start_server()
        made.append(other)
        return other

    yield make
    for other in made:
        await other.close()


@pytest.fixture
async def world(client: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(client, auth)


async def signed_in(browsers: Any, pool: asyncpg.Pool, role: str) -> TestClient[Any, Any]:
    browser: TestClient[Any, Any] = await browsers()
    name = await make_user(pool, role)
    assert await log_in(browser, name) == "/console/"
    return browser


async def dial(world: World, number: str) -> dict[str, Any]:
    """A decision through the dial API: a real gated request, recorded like any other."""
    basic = base64.b64encode(f"{world.sid}:{world.token}".encode()).decode()
    resp = await world.admin.post("/dial/v1/decisions", json={
        "to": number, "from": world.voice, "call_id": f"{uuid.uuid4().hex}@10.0.0.7"},
        headers={"Authorization": f"Basic {basic}"})
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


# --- security headers, sessions, CSRF ---------------------------------------------------------

async def test_login_page_carries_the_security_headers(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/console/login")
    assert resp.status == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script>" not in await resp.text()  # no inline script anywhere
    static = await client.get("/console/static/console.css")
    assert static.status == 200
    assert (await client.get("/console/static/htmx-2.0.11.min.js")).status == 200


async def test_session_cookie_is_httponly_and_samesite_strict(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    name = await make_user(pool, "viewer")
    token = csrf_of(await (await client.get("/console/login")).text())
    resp = await client.post("/console/login", data={"csrf": token, "name": name,
                                                     "password": PASSWORD},
                             allow_redirects=False)
    assert resp.status == 303
    cookie = resp.cookies[auth.SESSION_COOKIE]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert not cookie["secure"]  # plain http and an http PUBLIC_URL
    assert cookie["path"] == "/console/"
    # Only the token's hash is stored.
    stored = await pool.fetchval("SELECT token_hash FROM console_sessions WHERE user_name = $1",
                                 name)
    assert stored == auth.token_hash(cookie.value)
    assert cookie.value not in stored


async def test_session_cookie_is_secure_behind_tls(
    aiohttp_client: Any, database_url: str, clock: Clock, pool: asyncpg.Pool
) -> None:
    settings = make_settings(database_url, PUBLIC_URL="https://proxy.example.nl")
    browser = await aiohttp_client(create_app(settings, clock=clock))
    name = await make_user(pool, "viewer")
    page = await browser.get("/console/login")
    login_cookie = page.cookies[auth.LOGIN_CSRF_COOKIE]
    assert login_cookie["secure"]
    # A browser sends a Secure cookie over TLS only; the test speaks plain http, so by hand.
    resp = await browser.post("/console/login", data={
        "csrf": csrf_of(await page.text()), "name": name, "password": PASSWORD},
        headers={"Cookie": f"{auth.LOGIN_CSRF_COOKIE}={login_cookie.value}"},
        allow_redirects=False)
    assert resp.cookies[auth.SESSION_COOKIE]["secure"]


async def test_login_without_its_csrf_token_is_refused(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    name = await make_user(pool, "admin")
    await client.get("/console/login")
    resp = await client.post("/console/login", data={"name": name, "password": PASSWORD},
                             allow_redirects=False)
    assert resp.status == 403
    assert "CSRF" in await resp.text()
    assert await pool.fetchval(
        "SELECT count(*) FROM console_sessions WHERE user_name = $1", name) == 0


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    for data in ({"number": number, "via": "agent"},
                 {"number": number, "via": "agent", "csrf": "forged"}):
        resp = await officer.post("/console/objections", data=data, allow_redirects=False)
        assert resp.status == 403
        assert "CSRF" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 0
    # Another session's token is no better.
    other = await signed_in(browsers, pool, "officer")
    foreign = await page_csrf(other)
    resp = await officer.post("/console/objections", data={
        "number": number, "via": "agent", "csrf": foreign}, allow_redirects=False)
    assert resp.status == 403


async def test_pages_need_a_session(client: TestClient[Any, Any]) -> None:
    for path in ("/console/", "/console/lookup", "/console/decisions", "/console/manage",
                 "/console/decisions.csv", "/console/evidence?number=0612345678"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"] == "/console/login"
    resp = await client.post("/console/objections", data={"number": "0612345678"},
                             allow_redirects=False)
    assert resp.status == 401
    assert "text/html" in resp.headers["Content-Type"]


async def test_logout_ends_the_session(browsers: Any, pool: asyncpg.Pool) -> None:
    browser = await signed_in(browsers, pool, "viewer")
    cookie = browser.session.cookie_jar.filter_cookies(browser.make_url("/console/"))[
        auth.SESSION_COOKIE].value
    resp = await browser.post("/console/logout", data={"csrf": await page_csrf(browser)},
                              allow_redirects=False)
    assert resp.status == 303
    # The old cookie, presented again, opens nothing.
    again = await browsers()
    again.session.cookie_jar.update_cookies({auth.SESSION_COOKIE: cookie},
                                            again.make_url("/console/"))
    resp = await again.get("/console/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/login"


async def test_a_session_expires(browsers: Any, pool: asyncpg.Pool, clock: Clock) -> None:
    """Used every 20 minutes, a session lasts its 8 hours and not a second more."""
    browser = await signed_in(browsers, pool, "viewer")
    signed_in_at = clock.now
    step = dt.timedelta(minutes=20)
    while clock.now + step < signed_in_at + auth.SESSION_LIFETIME:
        clock.now += step
        assert (await browser.get("/console/", allow_redirects=False)).status == 200
    clock.now = signed_in_at + auth.SESSION_LIFETIME + dt.timedelta(seconds=1)
    assert (await browser.get("/console/", allow_redirects=False)).status == 303


async def test_an_idle_session_ends(browsers: Any, pool: asyncpg.Pool, clock: Clock) -> None:
    browser = await signed_in(browsers, pool, "viewer")
    clock.now += auth.SESSION_IDLE - dt.timedelta(seconds=1)
    assert (await browser.get("/console/", allow_redirects=False)).status == 200
    clock.now += auth.SESSION_IDLE + dt.timedelta(seconds=1)  # nothing asked meanwhile
    resp = await browser.get("/console/", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/login"


# --- login throttling -------------------------------------------------------------------------

async def test_failed_logins_throttle_the_user_name_then_lift(
    client: TestClient[Any, Any], pool: asyncpg.Pool, clock: Clock
) -> None:
    name = await make_user(pool, "viewer")
    for _ in range(auth.MAX_FAILURES_PER_USER):
        text = await log_in(client, name, "wrong password!", status=401)
        assert "wrong user name or password" in text
    # Now even the right password waits, with a message that says until when.
    text = await log_in(client, name, PASSWORD, status=429)
    assert "too many failed logins; try again after" in text
    clock.now += auth.THROTTLE_WINDOW + dt.timedelta(seconds=1)
    assert await log_in(client, name, PASSWORD) == "/console/"


async def test_failed_logins_throttle_the_address(
    client: TestClient[Any, Any], pool: asyncpg.Pool, clock: Clock
) -> None:
    clock.now += dt.timedelta(days=1)  # clear of other tests' failures from this address
    for i in range(auth.MAX_FAILURES_PER_ADDRESS):
        await log_in(client, f"nobody-{i}-{uuid.uuid4().hex[:6]}", "guess guess guess",
                     status=401)
    name = await make_user(pool, "viewer")
    text = await log_in(client, name, PASSWORD, status=429)
    assert "too many failed logins" in text
    clock.now += auth.THROTTLE_WINDOW + dt.timedelta(seconds=1)
    assert await log_in(client, name, PASSWORD) == "/console/"


async def test_a_disabled_user_cannot_log_in(client: TestClient[Any, Any],
                                             pool: asyncpg.Pool, clock: Clock) -> None:
    name = await make_user(pool, "officer")
    await users.update_user(pool, name, role="officer", disabled_at=clock(), actor="test")
    await log_in(client, name, status=401)


# --- one-time passwords and the command line -------------------------------------------------

async def test_a_one_time_password_must_be_replaced_first(
    client: TestClient[Any, Any], pool: asyncpg.Pool, database_url: str
) -> None:
    name = f"first-{uuid.uuid4().hex[:8]}"
    generated = await add_user(database_url, name, "admin", None)
    assert generated is not None
    assert len(generated) >= 16
    assert await log_in(client, name, generated) == "/console/password"
    resp = await client.get("/console/manage", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/password"
    token = await page_csrf(client, "/console/password")
    resp = await client.post("/console/password", data={
        "csrf": token, "current": generated, "password": "short", "repeat": "short"})
    assert resp.status == 422
    assert "12 to 256" in await resp.text()
    new = "a much better passphrase"
    resp = await client.post("/console/password", data={
        "csrf": token, "current": generated, "password": new, "repeat": new},
        allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console/login"
    # The old session ended with the old password; the new one works.
    assert (await client.get("/console/", allow_redirects=False)).status == 303
    await log_in(client, name, generated, status=401)
    assert await log_in(client, name, new) == "/console/"
    assert (await client.get("/console/manage")).status == 200


async def test_user_add_takes_a_password_and_refuses_bad_input(
    database_url: str, pool: asyncpg.Pool
) -> None:
    name = f"given-{uuid.uuid4().hex[:8]}"
    assert await add_user(database_url, name, "viewer", "a given password 1") is None
    user = await users.get_user(pool, name)
    assert user is not None
    assert not user.must_change_password
    assert user.role == "viewer"
    assert user.password_hash.startswith("$argon2id$")
    from proxy.errors import BadInput, Conflict
    with pytest.raises(Conflict):
        await add_user(database_url, name, "viewer", "a given password 1")
    with pytest.raises(BadInput):
        await add_user(database_url, "Bad Name", "viewer", None)
    with pytest.raises(BadInput):
        await add_user(database_url, f"r-{uuid.uuid4().hex[:6]}", "root", None)
    # --if-none: users exist, so nothing is made.
    assert await add_user(database_url, f"x-{uuid.uuid4().hex[:6]}", "admin", None,
                          only_if_none=True) is None


def user_add(database_url: str, *args: str, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """`consent-proxy user add …` in a process of its own, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "proxy.cli", "user", "add", *args],
                          cwd=REPO, env=env, input=stdin, text=True, capture_output=True,
                          timeout=120, check=False)


async def test_cli_user_add_prints_the_one_time_password_once(
    database_url: str, pool: asyncpg.Pool
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    done = await asyncio.to_thread(user_add, database_url, name, "--role", "officer")
    assert done.returncode == 0, done.stderr
    password = done.stdout.strip().splitlines()[-1].strip()
    assert password not in done.stderr  # never in the log
    user = await users.get_user(pool, name)
    assert user is not None
    assert user.must_change_password
    assert auth.password_matches(user.password_hash, password)
    again = await asyncio.to_thread(user_add, database_url, name, "--role", "officer")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    given = f"cli-{uuid.uuid4().hex[:8]}"
    done = await asyncio.to_thread(user_add, database_url, given, "--role", "viewer",
                                   "--password-stdin", stdin="a password from stdin\n")
    assert done.returncode == 0, done.stderr
    user = await users.get_user(pool, given)
    assert user is not None
    assert not user.must_change_password
    assert auth.password_matches(user.password_hash, "a password from stdin")


# --- roles: what each may see and change ------------------------------------------------------

async def test_every_page_renders_for_every_role(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await dial(world, number)
    pages = ["/console/", f"/console/lookup?number=0{number[3:]}", "/console/lookup",
             f"/console/evidence?number={number}", "/console/decisions",
             "/console/decisions.csv", "/console/password"]
    for role in auth.ROLES:
        browser = await signed_in(browsers, pool, role)
        for path in pages:
            resp = await browser.get(path)
            assert resp.status == 200, (role, path, await resp.text())
            assert resp.headers["Cache-Control"] == "no-store"
        manage = await browser.get("/console/manage")
        assert manage.status == (200 if role == "admin" else 403), role
        html = await (await browser.get("/console/")).text()
        assert ('href="/console/manage"' in html) == (role == "admin")


async def test_a_viewer_cannot_change_anything_even_by_posting_directly(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    number = mobile()
    consent_id = await world.consent(number, "voice")
    lookup = await (await viewer.get(f"/console/lookup?number={number}")).text()
    assert "/withdraw" not in lookup
    assert 'id="record-objection"' not in lookup
    token = csrf_of(lookup)
    org = f"org-{uuid.uuid4().hex[:8]}"
    posts = [
        ("/console/objections", {"number": number, "via": "agent"}),
        (f"/console/consents/{consent_id}/withdraw", {"number": number}),
        ("/console/audit/verify", {}),
        ("/console/manage/organisations", {"id": org, "name": "X", "sector": "commercial"}),
        ("/console/manage/senders", {"sender": "+31201111111", "organisation": world.org,
                                     "topic": "energy", "purpose": "marketing"}),
        ("/console/manage/clients", {"name": "d", "organisations": world.org}),
        ("/console/manage/users", {"name": "intruder", "role": "admin"}),
    ]
    for path, data in posts:
        resp = await viewer.post(path, data={"csrf": token, **data}, allow_redirects=False)
        assert resp.status == 403, (path, await resp.text())
        assert "viewer" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 0
    assert await pool.fetchval("SELECT withdrawn_at FROM consents WHERE id = $1",
                               consent_id) is None
    assert await pool.fetchval("SELECT count(*) FROM organisations WHERE id = $1", org) == 0
    assert await users.get_user(pool, "intruder") is None


async def test_an_officer_cannot_manage(browsers: Any, pool: asyncpg.Pool) -> None:
    officer = await signed_in(browsers, pool, "officer")
    token = await page_csrf(officer)
    org = f"org-{uuid.uuid4().hex[:8]}"
    resp = await officer.post("/console/manage/organisations", data={
        "csrf": token, "id": org, "name": "X", "sector": "commercial"})
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM organisations WHERE id = $1", org) == 0


# --- look-up and the officer's actions --------------------------------------------------------

async def test_lookup_shows_what_is_held_and_what_would_happen_now(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    number = mobile()
    await world.consent(number, "voice", evidence={"form_id": "F-17"})
    before = await pool.fetchval("SELECT count(*) FROM decisions")
    # Any format: national, spaces, 0031.
    html = await (await viewer.get(
        "/console/lookup", params={"number": f"0031 {number[3:4]} {number[4:]}"})).text()
    assert number in html
    assert "F-17" in html
    table = html[html.index('id="what-if"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr class="(allow|deny)"><td>([^<]+)</td>', table)
    # Both senders, three channels each: voice allowed by the consent.
    assert len(rows) == 6
    assert ("allow", world.voice) in rows
    assert "CONSENT_WRONG_CHANNEL" in table  # SMS: the consent is for calls
    assert re.search(r"<td>Allowed: [^<]+</td>", table)  # the engine's explanation
    # A dry run: nothing recorded.
    assert await pool.fetchval("SELECT count(*) FROM decisions") == before


async def test_lookup_in_dutch_explains_in_dutch(browsers: Any, pool: asyncpg.Pool,
                                                 world: World) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    number = mobile()
    await world.consent(number, "voice")
    resp = await viewer.get(f"/console/lang/nl?next=/console/lookup%3Fnumber%3D{number[1:]}",
                            allow_redirects=False)
    assert resp.status == 303
    html = await (await viewer.get("/console/lookup", params={"number": number})).text()
    assert '<html lang="nl">' in html
    assert "Wat er zou gebeuren" in html
    assert "toegestaan" in html
    # Accept-Language alone picks Dutch too.
    other = await signed_in(browsers, pool, "viewer")
    html = await (await other.get("/console/", headers={"Accept-Language": "nl-NL,nl;q=0.9"})
                  ).text()
    assert "Overzicht" in html


async def test_lookup_refuses_a_bad_number_with_a_clear_message(
    browsers: Any, pool: asyncpg.Pool
) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    resp = await viewer.get("/console/lookup", params={"number": "not-a-number"})
    assert resp.status == 422
    text = await resp.text()
    assert "not a valid phone number" in text
    assert "<html" in text


async def test_an_officer_records_an_objection_and_the_gate_then_denies(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    await world.consent(number, "voice")
    assert (await dial(world, number))["decision"] == "allow"
    token = await page_csrf(officer, f"/console/lookup?number={number}")
    resp = await officer.post("/console/objections", data={
        "csrf": token, "number": number, "organisation": world.org, "channel": "",
        "via": "letter"}, allow_redirects=False)
    assert resp.status == 303
    row = await pool.fetchrow("SELECT * FROM objections WHERE subject_hash = $1",
                              subject_hash(number))
    assert (row["organisation_id"], row["channel"], row["via"]) == (world.org, None, "letter")
    html = await (await officer.get(resp.headers["Location"])).text()
    assert "OBJECTION_ON_FILE" in html
    assert (await dial(world, number))["reason"] == "OBJECTION_ON_FILE"


async def test_an_officer_withdraws_a_consent(browsers: Any, pool: asyncpg.Pool,
                                              world: World, clock: Clock) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    consent_id = await world.consent(number, "voice")
    html = await (await officer.get(f"/console/lookup?number={number}")).text()
    assert f"/console/consents/{consent_id}/withdraw" in html
    resp = await officer.post(f"/console/consents/{consent_id}/withdraw", data={
        "csrf": csrf_of(html), "number": number}, allow_redirects=False)
    assert resp.status == 303
    assert await pool.fetchval("SELECT withdrawn_at FROM consents WHERE id = $1",
                               consent_id) == clock()
    assert (await dial(world, number))["reason"] == "CONSENT_WITHDRAWN"


async def test_a_bad_objection_form_gets_a_clear_4xx(browsers: Any, pool: asyncpg.Pool) -> None:
    officer = await signed_in(browsers, pool, "officer")
    token = await page_csrf(officer)
    resp = await officer.post("/console/objections", data={
        "csrf": token, "number": mobile(), "via": "pigeon"})
    assert resp.status == 422
    assert "via" in await resp.text()
    resp = await officer.post("/console/objections", data={
        "csrf": token, "number": mobile(), "via": "agent", "organisation": "no-such-org"})
    assert resp.status == 404
    assert "no-such-org" in await resp.text()


async def test_the_evidence_report_is_a_printable_page(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    number = mobile()
    await world.consent(number, "voice", evidence={"recording": "REC-99"})
    await dial(world, number)
    resp = await viewer.get("/console/evidence", params={"number": number})
    html = await resp.text()
    assert resp.status == 200
    assert "REC-99" in html
    assert "ALLOWED" in html
    assert 'class="report"' in html
    resp = await viewer.get("/console/evidence", params={"number": mobile()})
    assert resp.status == 404
    assert "nothing is held" in await resp.text()


# --- decisions -------------------------------------------------------------------------------

async def test_decisions_filter_page_and_export(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    allowed = mobile()
    await world.consent(allowed, "voice")
    for _ in range(3):
        await dial(world, allowed)
    for _ in range(52):
        await dial(world, mobile())  # no basis: denied
    query = {"organisation": world.org, "decision": "deny"}
    html = await (await viewer.get("/console/decisions", params=query)).text()
    ids = [int(i) for i in re.findall(r'<tr class="deny"><td>(\d+)</td>', html)]
    assert len(ids) == 50
    assert ids == sorted(ids, reverse=True)
    assert 'class="allow"' not in html
    older = re.search(r'href="([^"]+)" id="next-page"', html)
    assert older
    html = await (await viewer.get(older.group(1).replace("&amp;", "&"))).text()
    rest = [int(i) for i in re.findall(r'<tr class="deny"><td>(\d+)</td>', html)]
    assert len(rest) == 2
    assert max(rest) < min(ids)
    assert 'id="next-page"' not in html
    resp = await viewer.get("/console/decisions.csv", params={"organisation": world.org})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 55
    assert {r["decision"] for r in rows} == {"allow", "deny"}
    assert {r["front"] for r in rows} == {"dial"}  # the way in, as the decision row says
    assert allowed not in await resp.text()  # the masked number only
    resp = await viewer.get("/console/decisions", params={"number": allowed})
    assert len(re.findall(r'<tr class="allow">', await resp.text())) == 3
    html = await (await viewer.get("/console/decisions", params={"front": "dial"})).text()
    assert '<option value="dial" selected>' in html  # offered because it was seen
    assert len(re.findall(r'<tr class="(?:allow|deny)">', html)) == 50
    html = await (await viewer.get("/console/decisions", params={
        "organisation": world.org, "front": "telnyx"})).text()
    assert 'id="no-decisions"' in html


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text() -> None:
    from proxy.console.decisions import _cell
    for formula in ("=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                    "\t=1", "\r=1"):
        assert _cell(formula) == "'" + formula
    for kept in ("+31 6 ****5678", "+31612345678", "-1", "energy", "ALLOWED", None):
        assert _cell(kept) == ("" if kept is None else kept)


async def test_decision_filters_refuse_bad_values(browsers: Any, pool: asyncpg.Pool) -> None:
    viewer = await signed_in(browsers, pool, "viewer")
    for params, field in (({"from": "yesterday"}, "from"), ({"channel": "fax"}, "channel"),
                          ({"reason": "NOPE"}, "reason"), ({"colour": "red"}, "colour"),
                          ({"before": "x"}, "before"), ({"front": "Twilio!"}, "front")):
        resp = await viewer.get("/console/decisions", params=params)
        assert resp.status == 422, params
        assert field in await resp.text()


# --- overview ---------------------------------------------------------------------------------

async def test_overview_draws_its_charts_and_health(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    await world.consent(number, "voice")
    await dial(world, number)
    await dial(world, mobile())
    await world.objection(mobile())
    html = await (await officer.get("/console/")).text()
    for chart in ("chart-decisions", "chart-reasons", "chart-optouts", "chart-share"):
        section = html[html.index(f'id="{chart}"'):]
        assert "<svg" in section[:200], chart
    assert "NO_LEGAL_BASIS" in html
    assert 'id="health-db"' in html
    assert "reachable" in html
    resp = await officer.post("/console/audit/verify", data={"csrf": csrf_of(html)},
                              allow_redirects=False)
    assert resp.status == 303
    row = await pool.fetchrow("SELECT * FROM audit_verifications ORDER BY id DESC LIMIT 1")
    assert row["ok"]
    assert row["actor"].startswith("console:officer-")
    html = await (await officer.get("/console/")).text()
    assert "intact" in html


# --- management ------------------------------------------------------------------------------

async def test_an_admin_manages_organisations_senders_clients_and_users(
    browsers: Any, pool: asyncpg.Pool
) -> None:
    admin = await signed_in(browsers, pool, "admin")
    token = await page_csrf(admin, "/console/manage")
    org = f"org-{uuid.uuid4().hex[:8]}"
    resp = await admin.post("/console/manage/organisations", data={
        "csrf": token, "id": org, "name": "Loterij", "sector": "lottery",
        "customer_term_months": "24"}, allow_redirects=False)
    assert resp.status == 303
    assert (await store.get_organisation(pool, org)).customer_term_months == 24
    resp = await admin.post("/console/manage/organisations", data={
        "csrf": token, "id": org, "name": "Again", "sector": "lottery"})
    assert resp.status == 409
    assert "already exists" in await resp.text()
    resp = await admin.post("/console/manage/organisations", data={
        "csrf": token, "id": "Bad Id", "name": "x", "sector": "lottery"})
    assert resp.status == 422
    sender = f"+3120{uuid.uuid4().int % 10**7:07d}"
    resp = await admin.post("/console/manage/senders", data={
        "csrf": token, "sender": sender, "organisation": org, "topic": "lottery",
        "purpose": "marketing", "automated": "on"}, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert (await store.get_sender(pool, sender)).automated
    resp = await admin.post("/console/manage/clients", data={
        "csrf": token, "name": "Dialer", "organisations": org})
    html = await resp.text()
    assert resp.status == 200
    assert 'id="shown-token"' in html
    resp = await admin.post("/console/manage/users", data={
        "csrf": token, "name": "new-officer-" + uuid.uuid4().hex[:6], "role": "officer"})
    html = await resp.text()
    shown = re.search(r'id="shown-password">[^:]+\(([^)]+)\)[^:]*: ([^<]+)<', html)
    assert shown, html
    name = re.search(r"for (\S+) ", html[html.index('id="shown-password"'):])
    assert name
    newcomer = await browsers()
    assert await log_in(newcomer, name.group(1), shown.group(2).strip()) == "/console/password"


async def test_an_admin_cannot_lock_itself_out(browsers: Any, pool: asyncpg.Pool) -> None:
    admin = await browsers()
    name = await make_user(pool, "admin")
    await log_in(admin, name)
    token = await page_csrf(admin)
    resp = await admin.post(f"/console/manage/users/{name}", data={
        "csrf": token, "role": "viewer", "enabled": "on"})
    assert resp.status == 422
    user = await users.get_user(pool, name)
    assert user is not None
    assert user.role == "admin"


# --- the message catalogue -------------------------------------------------------------------

def test_every_message_exists_in_both_languages_and_every_key_used_exists() -> None:
    for key, texts in i18n.MESSAGES.items():
        assert len(texts) == len(i18n.LANGUAGES), key
        assert all(texts), key
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r'\bt\("([a-z_]+)"\s*[,)]', template.read_text()))
    # Keys the templates compose: a channel's, a role's, a decision's name.
    used |= {f"ch_{c}" for c in CHANNELS} | {f"role_{r}" for r in auth.ROLES}
    used |= {"allow", "deny"}
    assert len(used) > 50
    assert used <= set(i18n.MESSAGES), sorted(used - set(i18n.MESSAGES))


def test_the_console_is_mounted_by_the_app_factory(database_url: str) -> None:
    app = create_app(make_settings(database_url))
    assert any(getattr(r, "canonical", "").startswith("/console") for r in app.router.resources())
    assert POOL not in app  # resources come at start-up, not at mount


# --- lifting an objection, import, who changed what --------------------------------------------

def consents_csv(org: str, numbers: list[str], *, bad_line: int | None = None) -> str:
    """A consents file in the import format; the row on `bad_line` (1 is the header) gets a
    number that is none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source_id", "subject", "organisation", "channel", "topics", "kind",
                     "given_at", "provenance", "evidence.form"])
    for i, number in enumerate(numbers):
        subject = "06-123" if bad_line == i + 2 else number
        writer.writerow([f"crm-{uuid.uuid4().hex[:8]}", subject, org, "voice", "energy",
                         "opt_in", "2026-10-01T12:00:00+02:00", "self_provided", "web"])
    return out.getvalue()


def upload_form(token: str, kind: str, body: str, filename: str = "consents.csv") -> Any:
    from aiohttp import FormData
    data = FormData()
    data.add_field("csrf", token)  # first: checked before the file is read
    data.add_field("kind", kind)
    data.add_field("mode", "insert")
    data.add_field("file", body.encode(), filename=filename, content_type="text/csv")
    return data


async def test_an_officer_lifts_an_objection_at_the_persons_request(
    browsers: Any, pool: asyncpg.Pool, world: World, clock: Clock
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    await world.consent(number, "voice")
    await world.objection(number)
    assert (await dial(world, number))["reason"] == "OBJECTION_ON_FILE"
    objection_id = await pool.fetchval(
        "SELECT id FROM objections WHERE subject_hash = $1", subject_hash(number))
    html = await (await officer.get(f"/console/lookup?number={number}")).text()
    assert f"/console/objections/{objection_id}/lift" in html
    # A viewer may not.
    viewer = await signed_in(browsers, pool, "viewer")
    resp = await viewer.post(f"/console/objections/{objection_id}/lift", data={
        "csrf": await page_csrf(viewer), "number": number, "how": "phone"})
    assert resp.status == 403
    resp = await officer.post(f"/console/objections/{objection_id}/lift", data={
        "csrf": csrf_of(html), "number": number, "how": "phone", "note": "called us"},
        allow_redirects=False)
    assert resp.status == 303
    row = await pool.fetchrow("SELECT * FROM objections WHERE id = $1", objection_id)
    assert row["lifted_at"] == clock()
    event = await pool.fetchrow(
        """SELECT * FROM registry_events WHERE kind = 'objection' AND action = 'lift'
           AND record_id = $1""", str(objection_id))
    assert event["actor"].startswith("console:officer-")
    assert event["details"]["how"] == "phone"
    assert (await dial(world, number))["decision"] == "allow"
    # Lifted already: a clear 409.
    resp = await officer.post(f"/console/objections/{objection_id}/lift", data={
        "csrf": csrf_of(html), "number": number, "how": "phone"})
    assert resp.status == 409
    assert "was lifted" in await resp.text()


async def test_console_changes_are_recorded_with_the_users_name(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    number = mobile()
    token = await page_csrf(officer)
    await officer.post("/console/objections", data={"csrf": token, "number": number,
                                                    "via": "agent"})
    objection_id = await pool.fetchval(
        "SELECT id FROM objections WHERE subject_hash = $1", subject_hash(number))
    actor = await pool.fetchval(
        "SELECT actor FROM registry_events WHERE kind = 'objection' AND record_id = $1",
        str(objection_id))
    name = re.search(r"Signed in as (\S+) ", await (await officer.get("/console/")).text())
    assert name
    assert actor == f"console:{name.group(1)}"
    admin = await signed_in(browsers, pool, "admin")
    await admin.post("/console/manage/users", data={
        "csrf": await page_csrf(admin), "name": "events-" + uuid.uuid4().hex[:6],
        "role": "viewer"})
    event = await pool.fetchrow(
        "SELECT * FROM registry_events WHERE kind = 'console_user' ORDER BY id DESC LIMIT 1")
    assert event["action"] == "create"
    assert event["actor"].startswith("console:admin-")


async def test_import_dry_run_then_commit(browsers: Any, pool: asyncpg.Pool,
                                          world: World) -> None:
    officer = await signed_in(browsers, pool, "officer")
    numbers = [mobile() for _ in range(3)]
    token = await page_csrf(officer, "/console/import")
    resp = await officer.post("/console/import",
                              data=upload_form(token, "consents", consents_csv(world.org, numbers)))
    html = await resp.text()
    assert resp.status == 200, html
    assert re.search(r"<tbody><tr><td>3</td><td>3</td>", html)
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = ANY($1)",
                               numbers) == 0  # a dry run
    commit = re.search(r'name="upload" value="([^"]+)"', html)
    assert commit
    resp = await officer.post("/console/import/commit", data={
        "csrf": token, "upload": commit.group(1)})
    html = await resp.text()
    assert resp.status == 200, html
    assert 'id="committed"' in html
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = ANY($1)",
                               numbers) == 3
    event = await pool.fetchrow(
        "SELECT * FROM registry_events WHERE action = 'import' ORDER BY id DESC LIMIT 1")
    assert event["actor"].startswith("console:officer-")
    # The same upload cannot be committed twice.
    resp = await officer.post("/console/import/commit", data={
        "csrf": token, "upload": commit.group(1)})
    assert resp.status == 404


async def test_import_with_a_bad_row_shows_its_report_and_changes_nothing(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    officer = await signed_in(browsers, pool, "officer")
    numbers = [mobile() for _ in range(3)]
    token = await page_csrf(officer, "/console/import")
    resp = await officer.post("/console/import", data=upload_form(
        token, "consents", consents_csv(world.org, numbers, bad_line=3)))
    html = await resp.text()
    assert resp.status == 422
    errors = html[html.index('id="row-errors"'):]
    assert re.search(r"<tr><td>3</td><td>subject</td><td>[^<]+</td></tr>", errors), errors
    assert 'name="upload"' not in html  # nothing to commit
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = ANY($1)",
                               numbers) == 0


async def test_import_refuses_viewers_missing_csrf_and_disordered_forms(
    browsers: Any, pool: asyncpg.Pool, world: World
) -> None:
    body = consents_csv(world.org, [mobile()])
    viewer = await signed_in(browsers, pool, "viewer")
    assert (await viewer.get("/console/import")).status == 403
    resp = await viewer.post("/console/import",
                             data=upload_form(await page_csrf(viewer), "consents", body))
    assert resp.status == 403
    officer = await signed_in(browsers, pool, "officer")
    resp = await officer.post("/console/import", data=upload_form("forged", "consents", body))
    assert resp.status == 403
    from aiohttp import FormData
    disordered = FormData()
    disordered.add_field("kind", "consents")
    disordered.add_field("csrf", await page_csrf(officer))
    disordered.add_field("file", body.encode(), filename="c.csv", content_type="text/csv")
    resp = await officer.post("/console/import", data=disordered)
    assert resp.status == 403  # the CSRF field must come first
    token = await page_csrf(officer)
    resp = await officer.post("/console/import", data=upload_form(token, "pets", body))
    assert resp.status == 422
    assert "kind" in await resp.text()
    resp = await officer.post("/console/import/commit", data={"csrf": token,
                                                              "upload": "../../etc/passwd"})
    assert resp.status == 422


async def test_numbers_and_passwords_never_reach_the_log(
    browsers: Any, pool: asyncpg.Pool, world: World, log_output: io.StringIO
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    browser = await browsers()
    name = await make_user(pool, "officer")
    await log_in(browser, name, "a wrong password!!", status=401)
    await log_in(browser, name)
    await browser.get("/console/lookup", params={"number": number})
    await browser.get("/console/decisions", params={"number": number})
    await browser.post("/console/objections", data={
        "csrf": await page_csrf(browser), "number": number, "via": "agent"})
    logged = log_output.getvalue()
    assert "console_login_failed" in logged
    assert "console_login" in logged
    for secret in (number, number[1:], number[3:], PASSWORD, "a wrong password!!"):
        assert secret not in logged
