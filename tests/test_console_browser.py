"""The console in a real browser: Debian's Chromium driven by a pinned Playwright (never
`playwright install`: the browser comes from apt-get, installed here when missing). A
screenshot of every page visited is kept under the test's own tmp directory."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from proxy.app import create_app
from proxy.phone import subject_hash
from proxy.settings import Settings
from tests.conftest import Clock, mobile
from tests.console_helpers import PASSWORD, make_user
from tests.world import World, make_world

CHROMIUM = "/usr/bin/chromium"


def _install_chromium() -> str:
    """Debian's chromium, installed when missing (we and CI run as root)."""
    if not Path(CHROMIUM).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        apt = shutil.which("apt-get")
        assert apt, "the console's browser tests need apt-get to install chromium"
        subprocess.run([apt, "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, env=env,
                       timeout=1200)
    assert Path(CHROMIUM).exists()
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return _install_chromium()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path,
                                                    headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def server(aiohttp_server: Any, settings: Settings, clock: Clock) -> TestServer:
    running: TestServer = await aiohttp_server(create_app(settings, clock=clock))
    return running


@pytest.fixture
async def world(aiohttp_client: Any, server: TestServer, auth: dict[str, str]) -> World:
    admin = await aiohttp_client(server)
    return await make_world(admin, auth)


class Officer:
    """One signed-in browser page; every page it visits is photographed."""

    def __init__(self, page: Page, base: str, shots: Path, role: str) -> None:
        self.page, self.base, self.shots, self.role = page, base, shots, role
        self.csp_violations: list[str] = []
        page.on("console", lambda msg: self.csp_violations.append(msg.text)
                if "Content Security Policy" in msg.text else None)

    async def shot(self, name: str) -> None:
        await self.page.screenshot(path=self.shots / f"{self.role}-{name}.png", full_page=True)

    async def go(self, path: str, name: str) -> None:
        response = await self.page.goto(self.base + path)
        assert response is not None
        assert response.status == 200, await response.text()
        await self.shot(name)


async def sign_in(browser: Browser, server: TestServer, pool: asyncpg.Pool, role: str,
                  tmp_path: Path) -> Officer:
    name = await make_user(pool, role)
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    base = str(server.make_url("")).rstrip("/")
    officer = Officer(page, base, tmp_path, role)
    await page.goto(base + "/console/")  # not signed in: the login page
    await expect(page).to_have_url(base + "/console/login")
    await officer.shot("login")
    # By keyboard: the name field has the focus, Tab to the password, Enter to submit.
    await page.keyboard.type(name)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(base + "/console/")
    await expect(page.locator(".who")).to_contain_text(name)
    return officer


async def dial(world: World, number: str) -> dict[str, Any]:
    basic = base64.b64encode(f"{world.sid}:{world.token}".encode()).decode()
    resp = await world.admin.post("/dial/v1/decisions", json={
        "to": number, "from": world.voice, "call_id": f"{uuid.uuid4().hex}@10.0.0.7"},
        headers={"Authorization": f"Basic {basic}"})
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_each_role_signs_in_and_sees_its_pages(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await dial(world, number)
    await dial(world, mobile())  # no basis: a denial for the charts
    for role in ("viewer", "officer", "admin"):
        officer = await sign_in(browser, server, pool, role, tmp_path)
        page = officer.page
        nav = page.get_by_role("navigation")
        await expect(nav.get_by_role("link", name="Management")).to_have_count(
            1 if role == "admin" else 0)
        await expect(nav.get_by_role("link", name="Import")).to_have_count(
            0 if role == "viewer" else 1)
        await officer.shot("overview")
        await officer.go("/console/decisions", "decisions")
        await officer.go(f"/console/evidence?number={number}", "evidence")
        await officer.go("/console/password", "password")
        if role != "viewer":
            await officer.go("/console/import", "import")
        if role == "admin":
            await officer.go("/console/manage", "manage")
        assert officer.csp_violations == []


async def test_the_overview_draws_its_charts(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    await dial(world, number)
    await dial(world, mobile())
    await world.objection(mobile(), via="agent")
    officer = await sign_in(browser, server, pool, "viewer", tmp_path)
    page = officer.page
    for chart in ("#chart-decisions", "#chart-reasons", "#chart-optouts", "#chart-share"):
        svg = page.locator(f"{chart} svg")
        await expect(svg).to_be_visible()
        box = await svg.bounding_box()
        assert box is not None
        assert box["width"] > 300  # drawn at its size, not collapsed
        assert await page.locator(f"{chart} svg rect").count() > 0
    await expect(page.locator("#chart-reasons")).to_contain_text("NO_LEGAL_BASIS")
    await officer.shot("charts")
    assert officer.csp_violations == []


async def test_an_officer_looks_up_a_number_reads_the_reason_and_records_an_objection(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    number = mobile()
    await world.consent(number, "voice")
    officer = await sign_in(browser, server, pool, "officer", tmp_path)
    page = officer.page
    await page.get_by_role("link", name="Number look-up").click()
    await page.get_by_label("Phone number").fill("0" + number[3:])  # as an officer types it
    await page.get_by_role("button", name="Look up").click()
    what_if = page.locator("#what-if")
    await expect(what_if).to_be_visible()
    voice = what_if.locator("tr", has_text=world.voice).filter(has_text="call").first
    await expect(voice).to_contain_text("allowed")
    sms = what_if.locator("tr", has_text=world.voice).filter(has_text="text message")
    await expect(sms).to_contain_text("CONSENT_WRONG_CHANNEL")
    await officer.shot("lookup")
    # htmx keeps no copy of a page with numbers in the browser's storage.
    assert number[3:] not in await page.evaluate("JSON.stringify(localStorage)")

    form = page.locator("#record-objection")
    await form.get_by_label("Organisation").select_option(world.org)
    await form.get_by_label("Via").select_option("letter")
    await form.get_by_role("button", name="Record an objection").click()
    await expect(page.locator("#objections")).to_contain_text("letter")
    await expect(voice).to_contain_text("OBJECTION_ON_FILE")
    await officer.shot("objection-recorded")
    assert (await dial(world, number))["reason"] == "OBJECTION_ON_FILE"

    # The person calls to lift it: the officer records how, and the call is allowed again.
    lift = page.locator("#objections form").first
    await lift.get_by_label("How the person asked").select_option("phone")
    await lift.get_by_label("Note").fill("called the service desk")
    await lift.get_by_role("button", name="Lift (at the person's request)").click()
    await expect(page.locator("#objections form")).to_have_count(0)
    await expect(voice).to_contain_text("allowed")
    await officer.shot("objection-lifted")
    assert (await dial(world, number))["decision"] == "allow"
    assert officer.csp_violations == []


async def test_an_officer_imports_a_file_with_a_bad_row_and_reads_its_report(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    numbers = [mobile() for _ in range(3)]
    bad = tmp_path / "consents-with-a-bad-row.csv"
    good = tmp_path / "consents.csv"
    header = "subject,organisation,channel,topics,kind,given_at,provenance\n"

    def row(number: str) -> str:
        return f"{number},{world.org},voice,energy,opt_in,2026-10-01T12:00:00+02:00,self_provided\n"

    bad.write_text(header + row(numbers[0]) + row("06-123") + row(numbers[2]))
    good.write_text(header + "".join(row(n) for n in numbers))
    officer = await sign_in(browser, server, pool, "officer", tmp_path)
    page = officer.page
    await page.get_by_role("link", name="Import").click()
    form = page.locator("#upload")
    await form.get_by_label("What the file holds").select_option("consents")
    await form.get_by_label("File (CSV or NDJSON)").set_input_files(bad)
    await form.get_by_role("button", name="Check (dry run)").click()
    errors = page.locator("#row-errors")
    await expect(errors).to_contain_text("subject")
    await expect(errors.locator("tr", has_text="subject").locator("td").first).to_have_text("3")
    await expect(page.locator("#commit")).to_have_count(0)  # nothing to commit
    await officer.shot("import-bad-row")

    await form.get_by_label("File (CSV or NDJSON)").set_input_files(good)
    await form.get_by_role("button", name="Check (dry run)").click()
    await expect(page.locator("#report-counts")).to_contain_text("3")
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = ANY($1)",
                               numbers) == 0
    await page.get_by_role("button", name="Commit this import").click()
    await expect(page.locator("#committed")).to_be_visible()
    await officer.shot("import-committed")
    assert await pool.fetchval("SELECT count(*) FROM consents WHERE subject = ANY($1)",
                               numbers) == 3
    assert officer.csp_violations == []


async def test_a_viewer_cannot_change_anything_and_csrf_less_posts_are_refused(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, world: World, tmp_path: Path
) -> None:
    number = mobile()
    consent_id = await world.consent(number, "voice")
    viewer = await sign_in(browser, server, pool, "viewer", tmp_path)
    page = viewer.page
    await viewer.go(f"/console/lookup?number={number}", "lookup")
    await expect(page.locator("#record-objection")).to_have_count(0)
    await expect(page.get_by_role("button", name="Withdraw")).to_have_count(0)
    token = await page.locator('input[name="csrf"]').first.get_attribute("value")
    assert token
    # The viewer's own session and token, posting the officer's forms directly.
    request = page.context.request
    resp = await request.post(viewer.base + "/console/objections",
                              form={"csrf": token, "number": number, "via": "agent"},
                              max_redirects=0)
    assert resp.status == 403
    resp = await request.post(viewer.base + f"/console/consents/{consent_id}/withdraw",
                              form={"csrf": token, "number": number}, max_redirects=0)
    assert resp.status == 403
    # An officer's post without the CSRF token is refused too.
    officer = await sign_in(browser, server, pool, "officer", tmp_path)
    resp = await officer.page.context.request.post(
        officer.base + "/console/objections", form={"number": number, "via": "agent"},
        max_redirects=0)
    assert resp.status == 403
    assert "CSRF" in await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM objections WHERE subject_hash = $1",
                               subject_hash(number)) == 0
    assert await pool.fetchval("SELECT withdrawn_at FROM consents WHERE id = $1",
                               consent_id) is None


async def test_the_console_switches_to_dutch(
    browser: Browser, server: TestServer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    officer = await sign_in(browser, server, pool, "officer", tmp_path)
    page = officer.page
    await page.get_by_role("link", name="NL").click()
    await expect(page.locator("h1")).to_have_text("Overzicht")
    await officer.shot("overview-nl")
