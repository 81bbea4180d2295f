"""The README's walk-through runs as written: its marked shell blocks, in order, in one bash
process, against the real proxy on a real port (a throw-away database, the sandbox upstream),
with the proxy's clock pinned once inside and once outside calling hours (N13)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from proxy import db
from proxy.app import create_app
from proxy.policy import hours
from proxy.policy.hours import AMSTERDAM
from tests.conftest import ADMIN_TOKEN, REPO, Clock, make_settings

MARK = "<!-- walkthrough -->"
BLOCK = re.compile(r"^<!-- walkthrough -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SEPARATOR = "=== walkthrough block "
ALLOWED, OBJECTED = "+31612345678", "+31687654321"
SENT = "Uw aanbieding\nAfmelden? Sms STOP naar +31201234567"  # N17: the footer appended


def walkthrough_blocks() -> list[str]:
    """The README's marked blocks, in order; every mark must stand right before a sh block."""
    text = (REPO / "README.md").read_text("utf-8")
    blocks = BLOCK.findall(text)
    marks = re.findall(rf"^{MARK}$", text, re.MULTILINE)
    assert len(blocks) == len(marks), "a walkthrough mark without a ```sh block after it"
    return blocks


def sdk_snippet() -> str:
    """The Twilio SDK example of "Point your dialer at consent-proxy"."""
    text = (REPO / "README.md").read_text("utf-8")
    section = text[text.index("## Point your dialer at consent-proxy"):]
    found = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert found
    return found.group(1)


def documents(text: str) -> tuple[list[Any], str]:
    """The JSON documents a block printed one after another, and the text after the last."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    rest = text.lstrip()
    while rest.startswith(("{", "[")):
        value, end = decoder.raw_decode(rest)
        found.append(value)
        rest = rest[end:].lstrip()
    return found, rest


def in_hours() -> dt.datetime:
    """An hour after the next opening from tomorrow on (later than any 'an hour ago' the
    blocks compute from the real clock), inside the calling hours of the default settings."""
    tomorrow = dt.datetime.now(AMSTERDAM).date() + dt.timedelta(days=1)
    start = dt.datetime.combine(tomorrow, dt.time(0), tzinfo=AMSTERDAM)
    rules = make_settings("postgresql://unused/none").rules
    opening = hours.next_allowed(start, rules.calling_hours)
    assert opening is not None
    moment = opening + dt.timedelta(hours=1)
    assert hours.is_allowed(moment, rules.calling_hours)
    return moment


def out_of_hours() -> dt.datetime:
    """23:00 on that day: after every day's calling hours (N13)."""
    day = in_hours().astimezone(AMSTERDAM).date()
    moment = dt.datetime.combine(day, dt.time(23), tzinfo=AMSTERDAM)
    assert not hours.is_allowed(moment, make_settings("postgresql://unused/none").rules.calling_hours)
    return moment


@pytest.fixture
async def migrated(fresh_database: str) -> str:
    await db.migrate_url(fresh_database)
    return fresh_database


async def run(*command: str, workdir: Path, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, env={"PATH": os.environ["PATH"], "HOME": str(workdir),
                                    "LANG": "C.UTF-8", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, f"{command[0]} failed:\n{err.decode()}\n{out.decode()}"
    return out.decode()


async def run_sdk_snippet(base_url: str, workdir: Path) -> Any:
    """The SDK example as the walk-through's dialer, pointed at the test's port; what it
    created, or the TwilioRestException it raised."""
    snippet = sdk_snippet()
    assert snippet.count('"http://127.0.0.1:8080"') == 1
    snippet = snippet.replace('"http://127.0.0.1:8080"', repr(base_url))
    script = (
        "import json\nfrom twilio.base.exceptions import TwilioRestException\ntry:\n"
        + textwrap.indent(snippet, "    ")
        + "    print(json.dumps({'message': [message.status, message.to, message.body],"
          " 'call': [call.status, call.to]}))\n"
        + "except TwilioRestException as exc:\n"
          "    print(json.dumps({'refused': [exc.status, exc.code]}))\n")
    sid, token = (workdir / "credentials").read_text().split()
    out = await run(sys.executable, "-c", script, workdir=workdir,
                    env={"CLIENT_SID": sid, "CLIENT_TOKEN": token})
    return json.loads(out)


async def run_walkthrough(aiohttp_server: Any, database_url: str, at: dt.datetime,
                          workdir: Path) -> tuple[list[str], Any]:
    """Start the proxy with its clock at `at`, run every block in one shell, then the SDK
    example with the credentials the blocks made; return what each printed."""
    app = create_app(make_settings(database_url), clock=Clock(at))
    server: TestServer = await aiohttp_server(app)
    (workdir / ".data").mkdir()
    (workdir / ".data" / "admin-token").write_text(ADMIN_TOKEN + "\n")
    blocks = walkthrough_blocks()
    script = "\n".join(f"printf '\\n{SEPARATOR}{i}\\n'\n{block}" for i, block in enumerate(blocks))
    script += '\nprintf "%s %s\\n" "$CLIENT_SID" "$CLIENT_TOKEN" > credentials\n'
    base_url = str(server.make_url("")).rstrip("/")
    out = await run("bash", "-euo", "pipefail", "-c", script, workdir=workdir,
                    env={"CP": base_url})
    parts = re.split(rf"^{SEPARATOR}(\d+)$", out, flags=re.MULTILINE)
    assert [int(n) for n in parts[1::2]] == list(range(len(blocks)))
    return parts[2::2], await run_sdk_snippet(base_url, workdir)


def check_setup(printed: str) -> None:
    docs, rest = documents(printed)
    assert rest == ""
    organisation, sender, client, subject, *consents, relationship = docs[:7]
    assert organisation["id"] == "energie-bv"
    assert sender["organisation"] == "energie-bv"
    assert re.fullmatch(r"AC[0-9a-f]{32}", client["account_sid"])
    assert client["auth_token"]
    assert subject["kind"] == "person"
    assert [type(c["id"]) for c in consents] == [int, int]
    assert isinstance(relationship["id"], int)
    objected, *more_consents, objection, held, log = docs[7:]
    assert (objected["number"], objected["kind"]) == (OBJECTED, "person")
    assert [type(c["id"]) for c in more_consents] == [int, int]
    assert isinstance(objection["id"], int)
    assert held["number"] == ALLOWED
    assert sorted(c["channel"] for c in held["consents"]) == ["sms", "voice"]
    assert log == {"decisions": []}


def check_check_and_scrub(printed: str, *, calls_open: bool) -> None:
    docs, csv = documents(printed)
    [check] = docs
    assert (check["to"], check["organisation"]) == (ALLOWED, "energie-bv")
    if calls_open:
        assert (check["decision"], check["reason"], check["basis"]) == (
            "allow", "ALLOWED", "CONSENT")
    else:
        assert (check["decision"], check["reason"]) == ("deny", "OUTSIDE_CALLING_HOURS")
        assert check["retry_after"]
    rows = csv.strip().splitlines()
    assert rows[0] == "number,decision,reason,retry_after"
    assert rows[1:] == ["0612345678,allow,ALLOWED,", "0687654321,deny,OBJECTION_ON_FILE,",
                        "0611111111,deny,NO_LEGAL_BASIS,", "not a number,deny,INVALID_NUMBER,"]


async def test_the_walkthrough_runs_within_calling_hours(
        migrated: str, aiohttp_server: Any, tmp_path: Path) -> None:
    (setup, twilio, dial, check), sdk = await run_walkthrough(
        aiohttp_server, migrated, in_hours(), tmp_path)
    check_setup(setup)

    docs, rest = documents(twilio)
    assert rest == ""
    sms, call, sms_refused, call_refused = docs
    assert (sms["status"], sms["to"], sms["sid"][:2]) == ("queued", ALLOWED, "SM")
    assert sms["body"] == SENT
    assert (call["status"], call["to"], call["sid"][:2]) == ("queued", ALLOWED, "CA")
    assert (sms_refused["status"], sms_refused["code"], sms_refused["reason"]) == (
        400, 21610, "OBJECTION_ON_FILE")
    assert (call_refused["status"], call_refused["code"], call_refused["reason"]) == (
        403, 930005, "OBJECTION_ON_FILE")

    docs, rest = documents(dial)
    assert rest == ""
    allowed, outcome, refused = docs
    assert (allowed["decision"], allowed["reason"], allowed["code"]) == ("allow", "ALLOWED", None)
    assert allowed["sip"]["status"] == 200
    assert outcome == {"decision_id": allowed["decision_id"], "status": "no_answer"}
    assert (refused["decision"], refused["reason"], refused["code"]) == (
        "deny", "OBJECTION_ON_FILE", 930005)
    assert refused["sip"]["status"] == 403

    check_check_and_scrub(check, calls_open=True)
    assert sdk == {"message": ["queued", ALLOWED, SENT], "call": ["queued", ALLOWED]}


async def test_the_walkthrough_runs_outside_calling_hours(
        migrated: str, aiohttp_server: Any, tmp_path: Path) -> None:
    (setup, twilio, dial, check), sdk = await run_walkthrough(
        aiohttp_server, migrated, out_of_hours(), tmp_path)
    check_setup(setup)

    docs, rest = documents(twilio)
    assert rest == ""
    sms, call, sms_refused, call_refused = docs
    assert (sms["status"], sms["to"]) == ("queued", ALLOWED)  # SMS has no calling hours
    assert (call["status"], call["code"], call["reason"]) == (403, 930040, "OUTSIDE_CALLING_HOURS")
    assert call["retry_after"]
    assert (sms_refused["code"], call_refused["code"]) == (21610, 930005)  # objection first

    docs, rest = documents(dial)
    assert rest == ""
    refused_by_hours, outcome, refused = docs
    assert (refused_by_hours["decision"], refused_by_hours["reason"], refused_by_hours["code"]) == (
        "deny", "OUTSIDE_CALLING_HOURS", 930040)
    assert refused_by_hours["sip"]["retry_after_seconds"] > 0
    assert "error" in outcome  # a denied decision has no outcome (409)
    assert (refused["reason"], refused["code"]) == ("OBJECTION_ON_FILE", 930005)

    check_check_and_scrub(check, calls_open=False)
    assert sdk == {"refused": [403, 930040]}  # the SMS went out; the call raised
