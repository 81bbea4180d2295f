"""The provider-neutral inbound loop (proxy/inbound.py): a front that is not Twilio hands in
an `InboundSms` and gets STOP, START and HELP handled, its replies rendered its own way, each
message id once per provider; and spool lines from before providers were named still apply."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy import inbound
from proxy.keys import OPTOUT_SPOOL, SPOOL_DRAIN
from proxy.optout_spool import SPOOL_FILE, OptOutSpool
from proxy.phone import subject_hash
from tests.conftest import Clock, mobile, uid
from tests.test_optout_spool import start_app
from tests.world import make_world

AT = dt.datetime(2026, 12, 3, 11, tzinfo=dt.UTC)


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await start_app(aiohttp_client, database_url, clock, tmp_path / "spool")


def shout(text: str | None) -> str:
    """A made-up provider's reply format, to see that its rendering is what is stored."""
    return f"<<{text or ''}>>"


async def test_another_provider_gets_stop_start_and_help(
        proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool) -> None:
    world = await make_world(proxy, auth)
    app = proxy.app
    inbound.register_replies(app, "acme", shout)
    person = mobile()

    def sms(body: str, message_id: str) -> inbound.InboundSms:
        return inbound.InboundSms("acme", message_id, AT, world.sms, person, body)

    stop_id = uid("m")
    stop = await inbound.handle_sms(app, sms("Stop aub", stop_id))
    assert (stop.intent, stop.duplicate) == ("stop", False)
    assert stop.reply is not None
    assert stop.answer == shout(stop.reply)
    (objection,) = await pool.fetch(
        "SELECT * FROM objections WHERE subject_hash = $1", subject_hash(person))
    assert (objection["source_provider"], objection["source_ref"], objection["via"]) == (
        "acme", stop_id, "sms")

    again = await inbound.handle_sms(app, sms("Stop aub", stop_id))  # delivered twice
    assert (again.intent, again.duplicate, again.reply, again.answer) == (
        "stop", True, None, stop.answer)
    # The same id from Twilio is another message (sql/014).
    twilio = await inbound.handle_sms(app, inbound.InboundSms(
        "twilio", stop_id, AT, world.sms, person, "Stop"))
    assert twilio.duplicate is False

    help_ = await inbound.handle_sms(app, sms("info", uid("m")))
    assert help_.intent == "help"
    assert help_.reply is not None
    assert "STOP" in help_.reply

    start = await inbound.handle_sms(app, sms("start", uid("m")))
    assert start.intent == "start"
    assert await pool.fetchval(
        "SELECT count(*) FROM objections WHERE subject_hash = $1 AND lifted_at IS NULL",
        subject_hash(person)) == 0

    other = await inbound.handle_sms(app, sms("Hoe laat komt de monteur?", uid("m")))
    assert (other.intent, other.reply, other.relay) == ("other", None, None)
    assert other.answer == shout(None)  # no inbound webhook for this sender: nothing relayed


async def test_an_unknown_provider_renders_plain_text(
        proxy: TestClient[Any, Any], auth: dict[str, str]) -> None:
    world = await make_world(proxy, auth)
    handled = await inbound.handle_sms(proxy.app, inbound.InboundSms(
        "unregistered", uid("m"), AT, world.sms, mobile(), "STOP"))
    assert handled.intent == "stop"
    assert handled.answer == handled.reply


async def test_a_spool_line_from_before_providers_were_named_applies_as_twilio(
        proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool) -> None:
    world = await make_world(proxy, auth)
    app = proxy.app
    spool: OptOutSpool = app[OPTOUT_SPOOL]
    person, sid = mobile(), "SM" + "7" * 32
    spool.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (spool.directory / SPOOL_FILE).open("a") as fh:  # as written before the field
        fh.write(f'{{"message_sid": "{sid}", "received_at": "{AT.isoformat()}", '
                 f'"to": "{world.sms}", "subject": "{person}", "intent": "stop", '
                 '"body_hash": "00", "exceptions": []}\n')
    spool.load()
    assert spool.holds("twilio", sid)
    await app[SPOOL_DRAIN].apply_pending()
    row = await pool.fetchrow("SELECT provider, reply FROM inbound_messages "
                              "WHERE message_id = $1", sid)
    assert row["provider"] == "twilio"
    assert row["reply"].startswith("<?xml")  # rendered as the Twilio front answers
    assert await pool.fetchval("SELECT source_provider FROM objections WHERE source_ref = $1",
                               sid) == "twilio"


async def test_a_start_delivered_late_never_lifts_a_stop_sent_after_it(
        proxy: TestClient[Any, Any], auth: dict[str, str], pool: asyncpg.Pool) -> None:
    """N11: the person sent START at 10:00 and STOP at 10:03; the provider could deliver the
    START only at 10:05 (its retry). The STOP stands. A START sent after the STOP lifts it."""
    world = await make_world(proxy, auth)
    app = proxy.app
    person = mobile()
    ten = dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC)

    def sms(body: str, sent: int, arrived: int) -> inbound.InboundSms:
        return inbound.InboundSms("acme", uid("m"), ten + dt.timedelta(minutes=arrived),
                                  world.sms, person, body,
                                  sent_at=ten + dt.timedelta(minutes=sent))

    async def open_objections() -> int:
        count: int = await pool.fetchval(
            "SELECT count(*) FROM objections WHERE subject_hash = $1 AND lifted_at IS NULL",
            subject_hash(person))
        return count

    assert (await inbound.handle_sms(app, sms("STOP", 3, 3))).intent == "stop"
    late = await inbound.handle_sms(app, sms("START", 0, 5))
    assert late.intent == "start"
    assert await open_objections() == 1
    await inbound.handle_sms(app, sms("START", 4, 6))
    assert await open_objections() == 0
