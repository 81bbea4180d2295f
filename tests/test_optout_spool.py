"""No STOP is lost (N11): STOP replies that arrive while PostgreSQL is down are spooled to disk,
answered, and applied with the time they arrived once the database is back, or at the next
start. The outage is real: a private PostgreSQL that the tests stop and start."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from multidict import MultiDict
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from proxy import db, stops
from proxy.app import create_app
from proxy.errors import StoreUnavailable
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import OPTOUT_SPOOL, SETTINGS, SPOOL_DRAIN
from proxy.optout_spool import SPOOL_FILE, OptOutSpool, SpoolDrain, SpoolEntry
from proxy.phone import subject_hash
from proxy.settings import ConfigError
from tests.conftest import AMS, REPO, UP_TOKEN, Clock, make_settings, mobile, uid
from tests.test_faults import EmbeddedPostgres
from tests.world import World, in_thread, landline, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PUBLIC = "https://gate.example.nl"
SMS = "/webhooks/twilio/sms"
ARRIVED = dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS)
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'
GENERIC_STOP = ("<Message>U bent afgemeld: u krijgt geen berichten meer en wordt niet meer "
                "gebeld.</Message>")


@pytest.fixture(scope="module")
async def private_pg() -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of its own, which these tests stop and start. Its data lives outside
    pytest's temporary directories: a pytest session started meanwhile (on a shared machine)
    resets their parent to mode 0700, which would lock out the server's own system user."""
    base = Path(tempfile.mkdtemp(prefix="consent-proxy-pg-"))
    try:
        pg = await asyncio.to_thread(EmbeddedPostgres, base / "pg")
        try:
            await db.migrate_url(pg.url)
            yield pg
        finally:
            # After a stop and start, pgserver's cleanup may signal the first postmaster just
            # as it is gone (ProcessLookupError); the server is stopped either way.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pg.destroy)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def new_sid() -> str:
    return "SM" + uid("")[1:].replace("-", "").ljust(32, "0")[:32]


async def start_app(aiohttp_client: Any, url: str, clock: Clock, spool: Path,
                    **env: str) -> TestClient[Any, Any]:
    settings = make_settings(url, TWILIO_AUTH_TOKEN=UP_TOKEN, PUBLIC_URL=PUBLIC,
                             OPTOUT_SPOOL_DIR=str(spool), **env)  # sandbox upstream
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    # A short backoff, so the test does not wait long for the retry after the restart.
    client.app[SPOOL_DRAIN].retry_initial = 0.1
    client.app[SPOOL_DRAIN].retry_max = 0.2
    return client


async def sms(client: TestClient[Any, Any], to: str, person: str, body: str,
              sid: str) -> tuple[int, str]:
    """An inbound SMS signed as Twilio signs it."""
    params = [("MessageSid", sid), ("SmsMessageSid", sid), ("AccountSid", "AC" + "f" * 32),
              ("From", person), ("To", to), ("Body", body), ("NumMedia", "0")]
    signature = RequestValidator(UP_TOKEN).compute_signature(PUBLIC + SMS, MultiDict(params))
    resp = await client.post(SMS, data=params, headers={"X-Twilio-Signature": signature})
    return resp.status, await resp.text()


async def readyz(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


async def spool_gauge(client: TestClient[Any, Any]) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r"^consent_proxy_optout_spool_entries (\S+)$", text, re.MULTILINE)
    assert found, "the spool gauge is missing"
    return float(found.group(1))


def spool_lines(directory: Path) -> list[dict[str, Any]]:
    path = directory / SPOOL_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


async def objections(url: str, number: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM objections WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
        return rows
    finally:
        await conn.close()


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Waits for the background drain (real time: it retries the database on its own)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def send_sms(world: World, number: str) -> Any:
    sdk = world.sdk()
    return await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="Hoi"))


async def test_stop_during_an_outage_is_spooled_and_applied_when_the_database_is_back(
    aiohttp_client: Any, private_pg: EmbeddedPostgres, clock: Clock, auth: dict[str, str],
    tmp_path: Path, log_output: Any,
) -> None:
    spool_dir = tmp_path / "spool"
    proxy = await start_app(aiohttp_client, private_pg.url, clock, spool_dir)
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    assert (await send_sms(world, number)).sid.startswith("SM")
    sid = new_sid()

    await asyncio.to_thread(private_pg.stop)
    try:
        clock.now = ARRIVED
        status, reply = await sms(proxy, world.sms, "0" + number[3:], "Stop aub!", sid)
        assert (status, reply) == (200, f'<?xml version="1.0" encoding="UTF-8"?><Response>'
                                        f"{GENERIC_STOP}</Response>")
        # On disk before the answer, as one line: the time it arrived, both numbers, what it
        # meant and a hash of the body, never the body itself; private.
        (line,) = spool_lines(spool_dir)
        assert line == {"message_sid": sid, "received_at": ARRIVED.isoformat(),
                        "to": world.sms, "subject": number, "intent": "stop",
                        "body_hash": stops.body_hash("Stop aub!"), "exceptions": [],
                        "provider": "twilio"}
        assert "Stop aub" not in (spool_dir / SPOOL_FILE).read_text("utf-8")
        assert stat.S_IMODE(os.stat(spool_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(spool_dir / SPOOL_FILE).st_mode) == 0o600
        assert await readyz(proxy) == (503, {"status": "unavailable",
                                             "reason": "CONSENT_STORE_UNAVAILABLE",
                                             "optout_spool": 1})
        assert await spool_gauge(proxy) == 1
        # Twilio delivers it again: the same answer; applied once all the same.
        assert await sms(proxy, world.sms, number, "Stop aub!", sid) == (200, reply)
        # A START cannot be stored now: it is not spooled and asks to try again later; a
        # message for the dialer cannot be relayed: 503, as every request in an outage.
        status, later = await sms(proxy, world.sms, number, "START", new_sid())
        assert status == 200
        assert "Stuur START later nog eens" in later
        assert (await sms(proxy, world.sms, number, "Bel me morgen", new_sid()))[0] == 503
        assert [entry["message_sid"] for entry in spool_lines(spool_dir)] == [sid, sid]
        clock.now = ARRIVED + dt.timedelta(hours=2)
    finally:
        await asyncio.to_thread(private_pg.start)

    spool = proxy.app[OPTOUT_SPOOL]
    await wait_until(lambda: spool.entries == 0, 30, "the spool to drain")
    assert not (spool_dir / SPOOL_FILE).exists()
    (row,) = await objections(private_pg.url, number)
    assert row["received_at"] == ARRIVED  # when it arrived, not when it was applied
    assert (row["organisation_id"], row["channel"], row["via"], row["source_ref"],
            row["body_hash"]) == (world.org, None, "sms", sid, stops.body_hash("Stop aub!"))
    assert await readyz(proxy) == (200, {"status": "ready"})
    assert await spool_gauge(proxy) == 0
    for _ in range(20):  # a dialer retries a 503: the gate's own connections reconnect
        with pytest.raises(TwilioRestException) as caught:
            await send_sms(world, number)
        if caught.value.status != 503:
            break
    assert (caught.value.status, caught.value.code) == (400, 21610)  # OBJECTION_ON_FILE
    # Delivered once more now: the reply it was given, and still one objection.
    assert await sms(proxy, world.sms, number, "Stop aub!", sid) == (200, reply)
    assert len(await objections(private_pg.url, number)) == 1
    events = [json.loads(line)["event"] for line in log_output.getvalue().splitlines()]
    assert {"optout_spooled", "optout_spool_apply_failed", "optout_spool_applied",
            "objection_recorded"} <= set(events)
    assert number not in log_output.getvalue()


async def test_spool_is_applied_at_start_up(
    aiohttp_client: Any, private_pg: EmbeddedPostgres, clock: Clock, auth: dict[str, str],
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    first = await start_app(aiohttp_client, private_pg.url, clock, spool_dir)
    world = await make_world(first, auth)
    number, stranger = mobile(), mobile()
    await world.consent(number, "voice")
    sid, global_sid = new_sid(), new_sid()
    unknown = landline()
    await asyncio.to_thread(private_pg.stop)
    try:
        clock.now = ARRIVED
        assert (await sms(first, world.voice, number, "UIT", sid))[0] == 200
        # To a number that is no registered sender: spooled too, and applied as a global
        # objection, as it would have been.
        assert (await sms(first, unknown, stranger, "stoppen", global_sid))[0] == 200
        assert len(spool_lines(spool_dir)) == 2
        await first.close()  # this instance goes away with the STOPs still spooled
    finally:
        await asyncio.to_thread(private_pg.start)

    clock.now = ARRIVED + dt.timedelta(days=1)
    second = await start_app(aiohttp_client, private_pg.url, clock, spool_dir)
    assert second.app[OPTOUT_SPOOL].entries == 0  # applied before the first request
    assert spool_lines(spool_dir) == []
    (row,) = await objections(private_pg.url, number)
    assert (row["organisation_id"], row["received_at"], row["source_ref"]) == (
        world.org, ARRIVED, sid)
    (row,) = await objections(private_pg.url, stranger)
    assert (row["organisation_id"], row["channel"], row["received_at"]) == (None, None, ARRIVED)
    world.admin = second
    world.base = str(second.make_url("")).rstrip("/")
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:  # a new instance: fresh connections
        await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                 url="https://dialer.example/twiml"))
    assert (caught.value.status, caught.value.code) == (
        403, DENIAL_CODES["OBJECTION_ON_FILE"][1])


async def test_readyz_applies_the_spool_before_the_gate_is_ready_again(
    aiohttp_client: Any, private_pg: EmbeddedPostgres, clock: Clock, auth: dict[str, str],
    tmp_path: Path,
) -> None:
    """Behind a balancer the other gates decide as soon as the database is back, and they do
    not know this gate's spool: a STOP spooled here must reach the database then, not when
    this gate's backoff next comes round (up to retry_max later) nor with its next request.
    The balancer's health check asks every second: the spool is applied before /readyz
    answers 200."""
    spool_dir = tmp_path / "spool"
    proxy = await start_app(aiohttp_client, private_pg.url, clock, spool_dir)
    drain = proxy.app[SPOOL_DRAIN]
    drain.retry_initial = drain.retry_max = 3600.0  # the backoff has grown long
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    sid = new_sid()
    await asyncio.to_thread(private_pg.stop)
    try:
        clock.now = ARRIVED
        assert (await sms(proxy, world.sms, number, "STOP", sid))[0] == 200
        assert len(spool_lines(spool_dir)) == 1
        status, body = await readyz(proxy)
        assert (status, body["status"], body["optout_spool"]) == (503, "unavailable", 1)
    finally:
        await asyncio.to_thread(private_pg.start)

    for _ in range(20):  # the pool's connections to the stopped server are replaced first
        status, body = await readyz(proxy)
        if status == 200:
            break
    assert (status, body) == (200, {"status": "ready"})
    (row,) = await objections(private_pg.url, number)
    assert (row["received_at"], row["source_ref"]) == (ARRIVED, sid)
    assert spool_lines(spool_dir) == []


# --- applying spooled entries (on the shared test database, no outage needed) ----------------

def entry(world: World, number: str, sid: str, at: dt.datetime, *, to: str | None = None,
          intent: str = "stop", exceptions: tuple[str, ...] = ()) -> SpoolEntry:
    return SpoolEntry(message_sid=sid, received_at=at, to=to or world.sms, subject=number,
                      body_hash="0" * 64, intent=intent,  # type: ignore[arg-type]
                      exceptions=exceptions)


OPZEG = uid("opzeg")  # an organisation with a STOP word of its own


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock,
                tmp_path: Path) -> TestClient[Any, Any]:
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[optout.organisations."{OPZEG}"]\nstop = ["opzeggen"]\n')
    return await start_app(aiohttp_client, database_url, clock, tmp_path / "spool",
                           PROXY_CONFIG=str(rules))


async def test_a_later_start_lifts_a_stop_applied_from_the_spool(
    proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool, clock: Clock,
) -> None:
    """STOP spooled, then (the database back) a START handled at once, then the STOP
    applied: the START came later, so it lifts the STOP, as if applied in order."""
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    spool = proxy.app[OPTOUT_SPOOL]
    await asyncio.to_thread(spool.append, entry(world, number, new_sid(), ARRIVED))
    clock.now = ARRIVED + dt.timedelta(minutes=5)
    start_sid = new_sid()
    status, reply = await sms(proxy, world.sms, number, "start", start_sid)
    assert (status, "weer aangemeld" in reply) == (200, True)
    await proxy.app[SPOOL_DRAIN].apply_pending()
    assert proxy.app[OPTOUT_SPOOL].entries == 0
    (row,) = await objections_pool(pool, number)
    assert (row["lifted_at"], row["lifted_ref"]) == (clock.now, start_sid)
    assert await pool.fetchval("SELECT lifted FROM inbound_messages WHERE message_id = $1",
                               start_sid) == 1
    assert (await send_sms(world, number)).sid.startswith("SM")


async def test_an_earlier_start_does_not_lift_a_spooled_stop(
    proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool, clock: Clock,
) -> None:
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "sms")
    clock.now = ARRIVED
    assert (await sms(proxy, world.sms, number, "start", new_sid()))[0] == 200
    await asyncio.to_thread(proxy.app[OPTOUT_SPOOL].append,
                            entry(world, number, new_sid(), ARRIVED + dt.timedelta(minutes=1)))
    clock.now = ARRIVED + dt.timedelta(minutes=2)
    await proxy.app[SPOOL_DRAIN].apply_pending()
    (row,) = await objections_pool(pool, number)
    assert row["lifted_at"] is None
    with pytest.raises(TwilioRestException):
        await send_sms(world, number)


async def objections_pool(pool: asyncpg.Pool, number: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM objections WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
    return rows


async def test_organisation_words_are_decided_when_the_entry_is_applied(
    proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool,
) -> None:
    """Without the database the organisation is unknown: a word only some organisations use
    for STOP is spooled with their names, and stops only for a sender of theirs."""
    app = proxy.app
    assert (await proxy.post("/admin/v1/organisations", json={
        "id": OPZEG, "name": "Opzeg BV", "sector": "commercial"}, headers=auth)).status == 201
    theirs = landline()
    assert (await proxy.post("/admin/v1/senders", json={
        "sender": theirs, "organisation": OPZEG, "topic": "energy"},
        headers=auth)).status == 201
    world = await make_world(proxy, auth)
    form = {"From": mobile(), "To": theirs, "Body": "Opzeggen aub"}
    sid = new_sid()
    answer = await stops.answer_in_outage(app, outage_sms(form, sid))
    assert answer.rendered == EMPTY  # the shared lists do not read it as STOP: no promise made
    assert answer.text is None
    (spooled,) = spool_lines(app[SETTINGS].optout_spool_dir)
    assert (spooled["intent"], spooled["exceptions"]) == ("other", [OPZEG])
    other_number = mobile()
    other_sid = new_sid()
    await stops.answer_in_outage(app, outage_sms(
        {**form, "From": other_number, "To": world.sms}, other_sid))
    await app[SPOOL_DRAIN].apply_pending()  # (the drain may have begun on its own)
    assert app[OPTOUT_SPOOL].entries == 0
    (row,) = await objections_pool(pool, form["From"])
    assert (row["organisation_id"], row["received_at"]) == (OPZEG, ARRIVED)
    assert await objections_pool(pool, other_number) == []
    assert await pool.fetchval("SELECT intent FROM inbound_messages WHERE message_id = $1",
                               other_sid) == "other"


def outage_sms(form: dict[str, str], sid: str | None = None) -> stops.InboundSms:
    """A Twilio inbound SMS as its webhook reads it (proxy/fronts/twilio/webhooks.py)."""
    return stops.InboundSms("twilio", sid or new_sid(), ARRIVED, form.get("To", ""),
                            form.get("From", ""), form.get("Body", ""))


async def test_outage_answers_without_the_database(proxy: TestClient[Any, Any]) -> None:
    app = proxy.app
    base = {"From": mobile(), "To": landline()}
    help_reply = await stops.answer_in_outage(app, outage_sms({**base, "Body": "info"}))
    assert help_reply.intent == "help"
    assert "Sms STOP naar dit nummer" in help_reply.rendered
    start = await stops.answer_in_outage(app, outage_sms({**base, "Body": "Start"}))
    assert start.intent == "start"
    assert start.text is not None
    assert "later" in start.text
    with pytest.raises(StoreUnavailable, match="not relayed"):
        await stops.answer_in_outage(app, outage_sms({**base, "Body": "Wie is dit?"}))
    assert (await stops.answer_in_outage(app, outage_sms(
        {**base, "From": "geen nummer", "Body": "stop"}))).rendered == EMPTY
    assert spool_lines(app[SETTINGS].optout_spool_dir) == []  # none of these was spooled


async def test_a_stop_that_cannot_be_spooled_either_is_a_503(
    log_output: Any, proxy: TestClient[Any, Any],
) -> None:
    """Fail closed: when even the disk refuses, Twilio gets an error (and its fallback URL,
    if one is set), never a reply that promises an opt-out nobody recorded."""
    app = proxy.app
    spool_dir = app[SETTINGS].optout_spool_dir
    spool_dir.parent.mkdir(parents=True, exist_ok=True)
    spool_dir.write_text("not a directory")  # made unusable after the start-up check
    with pytest.raises(StoreUnavailable, match="could not be spooled"):
        await stops.answer_in_outage(app, outage_sms(
            {"From": mobile(), "To": landline(), "Body": "STOP"}))
    await asyncio.sleep(0)  # the log writes a loop iteration's lines at its end
    assert "optout_spool_failed" in log_output.getvalue()
    assert app[OPTOUT_SPOOL].entries == 0


def test_the_spool_directory_setting() -> None:
    assert make_settings("postgresql://x/y", OPTOUT_SPOOL_DIR="").optout_spool_dir == Path(
        ".data/spool")
    assert make_settings("postgresql://x/y", OPTOUT_SPOOL_DIR="/srv/spool").optout_spool_dir \
        == Path("/srv/spool")


# --- the spool file ------------------------------------------------------------------------------

def sample(sid: str) -> SpoolEntry:
    return SpoolEntry(message_sid=sid, received_at=ARRIVED, to="+31201234567",
                      subject="+31612345678", body_hash="0" * 64, intent="stop")


async def test_an_entry_is_removed_only_after_it_was_applied(tmp_path: Path) -> None:
    spool = OptOutSpool(tmp_path / "a" / "b")
    for sid in ("SM1", "SM2", "SM3"):
        spool.append(sample(sid))
    applied: list[str] = []

    async def apply(item: SpoolEntry) -> None:
        if item.message_sid == "SM2" and not applied.count("SM2-failed"):
            applied.append("SM2-failed")
            raise ConnectionRefusedError("database down")
        applied.append(item.message_sid)

    drain = SpoolDrain(spool, apply)
    with pytest.raises(ConnectionRefusedError):
        await drain.apply_pending()
    # SM1 was committed and is gone; SM2 and what came after it wait, in order.
    assert [e["message_sid"] for e in spool_lines(spool.directory)] == ["SM2", "SM3"]
    assert spool.entries == 2
    assert await drain.apply_pending() == 2
    assert applied == ["SM1", "SM2-failed", "SM2", "SM3"]
    assert spool.entries == 0
    assert not spool.path.exists()


def test_a_line_cut_off_by_a_crash_is_kept_and_does_not_spoil_the_next(tmp_path: Path) -> None:
    spool = OptOutSpool(tmp_path)
    spool.append(sample("SM1"))
    with spool.path.open("ab") as fh:
        fh.write(b'{"message_sid": "SM-cut", "rec')  # a crash in the middle of a write
    spool.append(sample("SM2"))
    assert [e.message_sid for e in spool.load()] == ["SM1", "SM2"]
    spool.remove([("twilio", "SM1"), ("twilio", "SM2")])
    assert spool.path.read_bytes() == b'{"message_sid": "SM-cut", "rec\n'  # never dropped
    assert spool.entries == 0


def test_the_spool_directory_is_checked_at_start_up(tmp_path: Path) -> None:
    OptOutSpool(tmp_path / "not" / "yet").check()  # made when first needed
    assert not (tmp_path / "not").exists()
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"OPTOUT_SPOOL_DIR: .* is not a directory"):
        OptOutSpool(afile).check()
    with pytest.raises(ConfigError, match=r"OPTOUT_SPOOL_DIR: .* cannot be created"):
        OptOutSpool(afile / "spool").check()


def test_serve_refuses_an_unusable_spool_directory(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve"], cwd=REPO, text=True, capture_output=True,
        timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PROXY_SECRET": "s", "OPTOUT_SPOOL_DIR": str(afile),
             "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2
    assert "configuration error: OPTOUT_SPOOL_DIR:" in result.stderr
