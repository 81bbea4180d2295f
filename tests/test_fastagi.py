"""FastAGI end to end: Asterisk's side of the protocol (tests/agi_client.py) over a real TCP
socket against the listener the app factory starts, real PostgreSQL, the injected clock.
Every answer is read as the channel variables it set, and checked against the rows it left;
every dropped session is checked to have left no task and no open connection behind."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.dial import agi, agi_requests
from proxy.dial.agi_answers import ERRORS
from proxy.dial.fastagi import LISTENER, SESSION_TASK, Listener
from proxy.keys import POOL
from proxy.phone import mask, subject_hash
from proxy.settings import FastAgiSettings, load_settings
from tests import agi_client
from tests.agi_client import Session, connect, run, unique_id
from tests.conftest import AMS, REPO, Clock, make_settings, mobile
from tests.test_embedded import free_port
from tests.world import A, World, make_world

# The variables a decide sets, in the order it sets them: CONSENT_DECISION last.
DECIDE_VARIABLES = ["CONSENT_REASON", "CONSENT_CODE", "CONSENT_RETRY_AFTER",
                    "CONSENT_DECISION_ID", "CONSENT_ERROR", "CONSENT_DECISION"]


@pytest.fixture
async def world(client: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(client, auth)


async def start_gate(aiohttp_client: Any, database_url: str, clock: Clock,
                     **fastagi: Any) -> TestClient[Any, Any]:
    """A second gate on the test database, with the FastAGI listener on a free port."""
    settings = make_settings(database_url)
    options = {"listen": ("127.0.0.1", 0), **fastagi}
    rules = dataclasses.replace(settings.rules, fastagi=FastAgiSettings(**options))
    gate: TestClient[Any, Any] = await aiohttp_client(
        create_app(dataclasses.replace(settings, rules=rules), clock=clock))
    return gate


@pytest.fixture
async def gate(aiohttp_client: Any, database_url: str, clock: Clock,
               world: World) -> TestClient[Any, Any]:
    return await start_gate(aiohttp_client, database_url, clock, client=world.sid)


def listener(gate: TestClient[Any, Any]) -> Listener:
    found: Listener = gate.app[LISTENER]
    return found


async def decide(gate: TestClient[Any, Any], world: World, number: str, *extra: str,
                 **options: Any) -> Session:
    options.setdefault("callerid", world.voice)
    session = await run(listener(gate).port, "decide", [number, *extra], **options)
    assert session.refused == [], session.refused  # only commands Asterisk knows
    return session


async def no_session_left(gate: TestClient[Any, Any]) -> None:
    """Every session has ended: no task of the listener is left, none is counted."""
    await asyncio.wait_for(listener(gate).drained(), agi_client.SAFETY_SECONDS)
    assert listener(gate).sessions == 0
    assert [t for t in asyncio.all_tasks() if t.get_name() == SESSION_TASK] == []
    await asyncio.sleep(0)  # the loop's turn ends: its log lines are written (LineLogger)


async def rows(pool: asyncpg.Pool, number: str) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM decisions WHERE subject_hash = $1 ORDER BY id", subject_hash(number))
    return found


async def count(pool: asyncpg.Pool, table: str) -> int:
    n: int = await pool.fetchval(f"SELECT count(*) FROM {table}")  # a constant
    return n


def sessions(log_output: Any) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    return [line for line in lines if line["event"] == "fastagi_session"]


# --- deciding ---------------------------------------------------------------------------------

async def test_allow_sets_the_variables_and_commits_the_row(
        gate: TestClient[Any, Any], world: World) -> None:
    pool = gate.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    uniqueid = unique_id()
    session = await decide(gate, world, "0" + number[3:], uniqueid=uniqueid)
    assert session.names == DECIDE_VARIABLES
    (row,) = await rows(pool, number)  # committed before the first variable was set
    assert session.variables == {
        "CONSENT_DECISION": "allow", "CONSENT_REASON": "ALLOWED", "CONSENT_CODE": "",
        "CONSENT_RETRY_AFTER": "", "CONSENT_DECISION_ID": str(row["id"]), "CONSENT_ERROR": ""}
    assert (row["decision"], row["basis"], row["channel"]) == ("allow", "CONTACT_REQUEST",
                                                                "voice")
    assert row["client_id"] == world.sid
    assert row["front"] == "fastagi"
    assert row["details"] == {"dial": {"call_id": uniqueid, "automated": False}}
    assert re.fullmatch(r"[0-9a-f]{32}", row["request_id"])
    assert row["consumed_consent_id"] == request_id
    # N6: the request covered one contact; the next channel is denied.
    again = await decide(gate, world, number)
    assert again.variables["CONSENT_DECISION"] == "deny"
    await no_session_left(gate)


async def test_deny_outside_calling_hours_counts_seconds_to_retry(
        gate: TestClient[Any, Any], world: World, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 30, 22, 15, 7, 250_000, tzinfo=AMS)  # a Monday night
    session = await decide(gate, world, number)
    assert session.variables["CONSENT_DECISION"] == "deny"
    assert session.variables["CONSENT_REASON"] == "OUTSIDE_CALLING_HOURS"
    assert session.variables["CONSENT_CODE"] == "930040"
    (row,) = await rows(gate.app[POOL], number)
    assert session.variables["CONSENT_DECISION_ID"] == str(row["id"])
    # N13: Tuesday 09:00, rounded up to whole seconds.
    retry_at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=AMS)
    expected = math.ceil((retry_at - clock.now).total_seconds())
    assert session.variables["CONSENT_RETRY_AFTER"] == str(expected) == "38693"


async def test_deny_without_a_basis_has_its_code(gate: TestClient[Any, Any],
                                                 world: World) -> None:
    session = await decide(gate, world, mobile())
    assert (session.variables["CONSENT_DECISION"], session.variables["CONSENT_REASON"],
            session.variables["CONSENT_CODE"], session.variables["CONSENT_RETRY_AFTER"]) == (
        "deny", "NO_LEGAL_BASIS", "930030", "")


async def test_the_caller_id_is_the_channels_unless_an_argument_names_one(
        gate: TestClient[Any, Any], world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")
    assert (await decide(gate, world, number, callerid="unknown")).variables[
        "CONSENT_REASON"] == "CALLER_ID_WITHHELD"  # N16: Asterisk's "no caller ID"
    assert (await decide(gate, world, number, callerid="+31201111111")).variables[
        "CONSENT_REASON"] == "UNKNOWN_SENDER"
    named = await decide(gate, world, number, f"from={world.voice}", callerid="unknown")
    assert named.variables["CONSENT_DECISION"] == "allow"


async def test_automated_asks_for_an_automated_voice_consent(
        gate: TestClient[Any, Any], world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")  # N2: a call by a person only
    robocall = await decide(gate, world, number, "automated=true")
    assert robocall.variables["CONSENT_REASON"] == "CONSENT_WRONG_CHANNEL"
    (row,) = await rows(gate.app[POOL], number)
    assert row["details"]["dial"]["automated"] is True


async def test_a_rerun_in_the_same_channel_gets_the_first_decision(
        gate: TestClient[Any, Any], world: World, clock: Clock) -> None:
    pool = gate.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    uniqueid = unique_id()
    first = await decide(gate, world, number, uniqueid=uniqueid)
    clock.now += dt.timedelta(seconds=30)
    again = await decide(gate, world, number, uniqueid=uniqueid)
    assert again.variables == first.variables
    assert first.variables["CONSENT_DECISION"] == "allow"
    (row,) = await rows(pool, number)  # one decision; the request was used once (N6)
    assert row["consumed_consent_id"] == request_id
    # Another number in the same channel is refused, unless it has a call_id of its own.
    other = await decide(gate, world, mobile(), uniqueid=uniqueid)
    assert (other.variables["CONSENT_DECISION"], other.variables["CONSENT_REASON"]) == (
        "error", "AGI_BAD_REQUEST")
    assert other.variables["CONSENT_ERROR"].startswith("call_id:")
    own = await decide(gate, world, mobile(), f"call_id={uniqueid}-2", uniqueid=uniqueid)
    assert own.variables["CONSENT_DECISION"] == "deny"


async def test_two_sessions_for_one_channel_at_once_make_one_decision(
        gate: TestClient[Any, Any], world: World) -> None:
    number = mobile()
    await world.consent(number, "voice", kind="request")
    uniqueid = unique_id()
    found = await asyncio.gather(*(decide(gate, world, number, uniqueid=uniqueid)
                                   for _ in range(4)))
    assert {s.variables["CONSENT_DECISION_ID"] for s in found} == {
        found[0].variables["CONSENT_DECISION_ID"]}
    assert {s.variables["CONSENT_DECISION"] for s in found} == {"allow"}
    assert len(await rows(gate.app[POOL], number)) == 1


# --- the client -------------------------------------------------------------------------------

async def test_an_unknown_configured_client_is_an_error_never_a_decision(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client="AC" + "0" * 32)
    before = await count(gate.app[POOL], "decisions")
    session = await decide(gate, world, mobile())
    assert session.names == DECIDE_VARIABLES
    assert session.variables == {
        "CONSENT_DECISION": "error", "CONSENT_REASON": "AGI_CLIENT_UNKNOWN",
        "CONSENT_CODE": "", "CONSENT_RETRY_AFTER": "", "CONSENT_DECISION_ID": "",
        "CONSENT_ERROR": "client: unknown or disabled"}
    assert await count(gate.app[POOL], "decisions") == before


async def test_a_disabled_client_is_an_error(gate: TestClient[Any, Any],
                                             world: World) -> None:
    resp = await world.admin.post(f"{A}/clients/{world.sid}/disable", headers=world.auth)
    assert resp.status == 200
    number = mobile()
    await world.consent(number, "voice")
    session = await decide(gate, world, number)
    assert (session.variables["CONSENT_DECISION"], session.variables["CONSENT_REASON"]) == (
        "error", "AGI_CLIENT_UNKNOWN")
    assert await rows(gate.app[POOL], number) == []


async def test_a_dialplan_names_only_a_client_the_listener_serves(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        auth: dict[str, str]) -> None:
    other = await make_world(world.admin, auth)
    stranger = await make_world(world.admin, auth)
    gate = await start_gate(aiohttp_client, database_url, clock, clients=(other.sid,))
    number = mobile()
    await other.consent(number, "voice")
    # No default client: a request must name one.
    unnamed = await decide(gate, other, number)
    assert unnamed.variables["CONSENT_REASON"] == "AGI_CLIENT_UNKNOWN"
    refused = await decide(gate, stranger, number, f"client={stranger.sid}")
    assert refused.variables["CONSENT_REASON"] == "AGI_CLIENT_UNKNOWN"
    assert await rows(gate.app[POOL], number) == []
    served = await decide(gate, other, number, f"client={other.sid}")
    assert served.variables["CONSENT_DECISION"] == "allow"
    (row,) = await rows(gate.app[POOL], number)
    assert row["client_id"] == other.sid


# --- failing closed -----------------------------------------------------------------------

async def test_store_down_is_an_error_and_nothing_is_recorded(
        gate: TestClient[Any, Any], world: World, pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "voice")
    assert (await decide(gate, world, mobile())).variables["CONSENT_DECISION"] == "deny"
    before = await count(pool, "decisions")
    gate.app[POOL].terminate()  # every connection, pooled or held by a batcher, drops
    uniqueid = unique_id()
    session = await decide(gate, world, number, uniqueid=uniqueid)
    assert session.names == DECIDE_VARIABLES
    assert {k: v for k, v in session.variables.items() if k != "CONSENT_ERROR"} == {
        "CONSENT_DECISION": "error", "CONSENT_REASON": "CONSENT_STORE_UNAVAILABLE",
        "CONSENT_CODE": "930503", "CONSENT_RETRY_AFTER": "", "CONSENT_DECISION_ID": ""}
    assert await count(pool, "decisions") == before  # read through a pool of the test's own
    assert await pool.fetchval("SELECT count(*) FROM dial_attempts WHERE call_id = $1",
                               uniqueid) == 0
    await no_session_left(gate)


@pytest.mark.parametrize(("args", "field"), [
    ([], "arg_1"),
    ([""], "arg_1"),
    (["0612345678", "automated=yes"], "automated"),
    (["0612345678", "colour=blue"], "arg_2"),
    (["0612345678", "from=+31201234567", "from=+31201234568"], "from"),
    (["0612345678", "client=nobody"], "client"),
    (["0612345678", "call_id=a b"], "call_id"),
    (["0" * 65], "arg_1"),
])
async def test_bad_arguments_are_an_error_naming_them(
        gate: TestClient[Any, Any], world: World, args: list[str], field: str) -> None:
    before = await count(gate.app[POOL], "decisions")
    session = await run(listener(gate).port, "decide", args, callerid=world.voice)
    assert session.names == DECIDE_VARIABLES
    assert (session.variables["CONSENT_DECISION"], session.variables["CONSENT_REASON"]) == (
        "error", "AGI_BAD_REQUEST")
    assert session.variables["CONSENT_ERROR"].startswith(f"{field}: ")
    assert await count(gate.app[POOL], "decisions") == before


async def test_an_unknown_script_is_an_error(gate: TestClient[Any, Any],
                                             world: World) -> None:
    session = await run(listener(gate).port, "decidee", [mobile()], callerid=world.voice)
    assert (session.variables["CONSENT_DECISION"], session.variables["CONSENT_REASON"]) == (
        "error", "AGI_BAD_REQUEST")
    assert session.variables["CONSENT_ERROR"].startswith("agi_network_script: ")


# --- outcomes ---------------------------------------------------------------------------------

async def outcome(gate: TestClient[Any, Any], *args: str) -> Session:
    session = await run(listener(gate).port, "outcome", list(args))
    assert session.refused == []
    assert session.names == ["CONSENT_OUTCOME_ERROR", "CONSENT_OUTCOME"]
    return session


@pytest.mark.parametrize(("dialstatus", "status"), sorted(agi_requests.DIALSTATUS.items()))
async def test_the_dialstatus_is_recorded_as_the_outcome(
        gate: TestClient[Any, Any], world: World, dialstatus: str, status: str) -> None:
    pool = gate.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    decision_id = (await decide(gate, world, number)).variables["CONSENT_DECISION_ID"]
    done = await outcome(gate, decision_id, dialstatus)
    assert done.variables == {"CONSENT_OUTCOME": status, "CONSENT_OUTCOME_ERROR": ""}
    assert await pool.fetchval("SELECT status FROM dial_outcomes WHERE decision_id = $1",
                               int(decision_id)) == status
    consumed = await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                                   request_id)
    # N5/N6: an attempt that reached nobody gives the request back.
    assert (consumed is not None) == (status == "answered")


async def test_outcome_errors_name_what_was_wrong(gate: TestClient[Any, Any],
                                                  world: World) -> None:
    denied = (await decide(gate, world, mobile())).variables["CONSENT_DECISION_ID"]
    number = mobile()
    await world.consent(number, "voice")
    allowed = (await decide(gate, world, number)).variables["CONSENT_DECISION_ID"]
    for args, reason in (((denied, "BUSY"), "AGI_CONFLICT"),
                         ((allowed, "RINGING"), "AGI_BAD_REQUEST"),
                         ((allowed,), "AGI_BAD_REQUEST"),
                         (("12x", "BUSY"), "AGI_BAD_REQUEST"),
                         (("9" * 18, "BUSY"), "AGI_BAD_REQUEST")):
        failed = await outcome(gate, *args)
        assert failed.variables["CONSENT_OUTCOME"] == "error"
        assert failed.variables["CONSENT_OUTCOME_ERROR"].startswith(f"{reason}: ")
    await outcome(gate, allowed, "ANSWER")
    again = await outcome(gate, allowed, "NOANSWER")  # the first report stands
    assert again.variables["CONSENT_OUTCOME_ERROR"].startswith("AGI_CONFLICT: status: ")


# --- dropped sessions -------------------------------------------------------------------------

def header(*lines: str) -> bytes:
    return agi_client.header_bytes(lines)


JUNK = {
    "no colon": header("agi_network yes"),
    "not an agi variable": header("agi_network: yes", "X-Forwarded-For: 10.0.0.1"),
    "twice": header("agi_network_script: decide", "agi_network_script: outcome"),
    "an argument missing": header("agi_network_script: decide", "agi_arg_2: 0612345678"),
    "not utf-8": b"agi_network_script: decide\nagi_arg_1: \xff\xfe\n\n",
    "binary": bytes(range(256)) + b"\n\n",
    "http": b"GET / HTTP/1.1\r\nHost: gate\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(JUNK))
async def test_a_malformed_header_is_dropped_and_leaves_nothing(
        gate: TestClient[Any, Any], log_output: Any, case: str) -> None:
    before = await count(gate.app[POOL], "decisions")
    reader, writer = await connect(listener(gate).port)
    writer.write(JUNK[case])
    await writer.drain()
    assert await agi_client.closed_by_gate(reader) == b""  # closed without a command
    writer.close()
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == ["malformed"]
    assert await count(gate.app[POOL], "decisions") == before


async def test_a_header_too_large_is_dropped(aiohttp_client: Any, database_url: str,
                                             clock: Clock, world: World,
                                             log_output: Any) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid,
                            max_header_bytes=1024, max_header_lines=30)
    port = listener(gate).port
    for raw in (header("agi_network: yes", "agi_calleridname: " + "x" * 2000),  # one line
                header(*(f"agi_arg_{i}: {i}" for i in range(1, 32))),  # too many lines
                header(*(f"agi_arg_{i}: {'9' * 60}" for i in range(1, 20)))):  # too many bytes
        reader, writer = await connect(port)
        writer.write(raw)
        await writer.drain()
        assert await agi_client.closed_by_gate(reader) == b""
        writer.close()
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == ["too_large"] * 3
    # Asterisk's own header, with arguments, is well within the limits.
    assert (await decide(gate, world, mobile(), "automated=false")).variables[
        "CONSENT_DECISION"] == "deny"


async def test_a_stalled_client_is_dropped_after_the_read_timeout(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        log_output: Any) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid,
                            read_timeout_seconds=0.2)
    port = listener(gate).port
    # Half a header, then nothing: the header as a whole has one read timeout.
    reader, writer = await connect(port)
    writer.write(b"agi_network: yes\nagi_network_script: decide\n")
    await writer.drain()
    assert await agi_client.closed_by_gate(reader) == b""
    writer.close()
    # A whole header, then no answer to the first command: decided, but not waited for.
    number = mobile()
    session = await run(port, "decide", [number], callerid=world.voice, answer_after=0)
    assert [agi_client.parse_args(c)[2] for c in session.commands] == ["CONSENT_REASON"]
    assert len(await rows(gate.app[POOL], number)) == 1
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == ["timeout", "timeout"]


async def test_a_hangup_mid_session_ends_it_and_gives_back_the_request(
        gate: TestClient[Any, Any], world: World, log_output: Any) -> None:
    pool = gate.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    session = await decide(gate, world, number, hangup_after=1)
    # The channel hung up while the second variable was set: nothing more is sent.
    assert session.names == DECIDE_VARIABLES[:2]
    (row,) = await rows(pool, number)
    assert row["decision"] == "allow"
    # N6: the dialplan dials nobody after a hang-up; the request is usable again.
    (reversal,) = await pool.fetch("SELECT * FROM consumption_reversals WHERE decision_id = $1",
                                   row["id"])
    assert (reversal["why"], reversal["detail"], reversal["request_id"]) == (
        "not_reached", "hangup", request_id)
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == ["hangup"]


async def test_a_connection_closed_mid_session_is_dropped(
        gate: TestClient[Any, Any], world: World, log_output: Any) -> None:
    pool = gate.app[POOL]
    # Gone in the middle of the header: nothing is decided.
    _reader, writer = await connect(listener(gate).port)
    writer.write(b"agi_network: yes\nagi_network_script: decide\nagi_arg_1: 06")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # Gone right after the header: the decision is made and kept (it may have been used).
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    lines = agi_client.environment("decide", [number], port=listener(gate).port,
                                   callerid=world.voice, uniqueid=unique_id())
    _reader, writer = await connect(listener(gate).port)
    writer.write(header(*lines))
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == ["closed", "closed"]
    (row,) = await rows(pool, number)
    assert row["consumed_consent_id"] == request_id
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is not None


async def until(condition: Callable[[], bool]) -> None:
    """Wait for what another task brings about: polled, bounded."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("did not happen")


async def test_sessions_beyond_the_limit_are_refused(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        log_output: Any) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid,
                            max_sessions=2)
    port = listener(gate).port
    held = [await connect(port) for _ in range(2)]  # connected, header still to come
    await until(lambda: listener(gate).sessions == 2)
    reader, writer = await connect(port)
    assert await agi_client.closed_by_gate(reader) == b""  # refused at once
    writer.close()
    await until(lambda: listener(gate).sessions == 2)
    for held_reader, held_writer in held:  # the two sessions within the limit are served
        lines = agi_client.environment("decide", [mobile()], port=port, callerid=world.voice,
                                       uniqueid=unique_id())
        session = await agi_client.converse(held_reader, held_writer, header(*lines))
        assert session.variables["CONSENT_REASON"] == "NO_LEGAL_BASIS"
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == [
        "too_many_sessions", "answered", "answered"]
    assert (await decide(gate, world, mobile())).variables["CONSENT_DECISION"] == "deny"


async def test_a_peer_outside_allow_peers_is_refused(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        log_output: Any) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid,
                            allow_peers=(ipaddress.ip_network("192.0.2.0/24"),))
    before = await count(gate.app[POOL], "decisions")
    session = await run(listener(gate).port, "decide", [mobile()], callerid=world.voice)
    assert session.commands == []
    await no_session_left(gate)
    assert [(s["end"], s["peer"]) for s in sessions(log_output)] == [
        ("peer_not_allowed", "127.0.0.1")]
    assert await count(gate.app[POOL], "decisions") == before


# --- what it leaves behind --------------------------------------------------------------------

async def test_metrics_count_decisions_and_sessions(gate: TestClient[Any, Any],
                                                    world: World) -> None:
    number = mobile()
    await world.consent(number, "voice")
    uniqueid = unique_id()
    await decide(gate, world, number, uniqueid=uniqueid)
    await decide(gate, world, number, uniqueid=uniqueid)  # a replay is no decision
    reader, writer = await connect(listener(gate).port)
    writer.write(b"junk\n")
    await agi_client.closed_by_gate(reader)
    writer.close()
    await no_session_left(gate)
    text = await (await gate.get("/metrics")).text()
    assert ('consent_proxy_decisions_total{channel="voice",decision="allow",front="fastagi",'
            'reason="ALLOWED"} 1.0') in text
    assert 'consent_proxy_fastagi_sessions_total{end="answered"} 2.0' in text
    assert 'consent_proxy_fastagi_sessions_total{end="malformed"} 1.0' in text


async def test_the_log_line_masks_the_number(gate: TestClient[Any, Any], world: World,
                                             log_output: Any) -> None:
    number = mobile()
    await world.consent(number, "voice")
    session = await decide(gate, world, number)
    await no_session_left(gate)
    text = log_output.getvalue()
    assert number not in text
    assert number[3:] not in text
    (line,) = sessions(log_output)
    assert (line["end"], line["script"], line["decision"], line["reason"]) == (
        "answered", "decide", "allow", "ALLOWED")
    assert line["decision_id"] == int(session.variables["CONSENT_DECISION_ID"])
    assert line["to"] == mask(number)
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])


async def test_every_error_reason_and_variable_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    for reason in ERRORS:
        assert f"| `{reason}` |" in readme, reason
    for variable in [*DECIDE_VARIABLES, "CONSENT_OUTCOME", "CONSENT_OUTCOME_ERROR"]:
        assert f"| `{variable}` |" in readme, variable
    for dialstatus, status in agi_requests.DIALSTATUS.items():
        assert f"| `{dialstatus}` | `{status}`" in readme, dialstatus


async def test_consent_proxy_serve_starts_and_stops_the_listener(
        world: World, database_url: str, tmp_path: Path) -> None:
    agi_port, http_port = free_port(), free_port()
    config = tmp_path / "rules.toml"
    config.write_text(f'[fastagi]\nlisten = "127.0.0.1:{agi_port}"\nclient = "{world.sid}"\n')
    settings = make_settings(database_url)  # the test run's PROXY_SECRET and ADMIN_TOKEN
    env = {**os.environ, "DATABASE_URL": database_url, "PROXY_PORT": str(http_port),
           "PROXY_CONFIG": str(config), "PROXY_SECRET": settings.proxy_secret or "",
           "ADMIN_TOKEN": settings.admin_token or "",
           "OPTOUT_SPOOL_DIR": str(tmp_path / "spool")}
    assert load_settings(env).rules.fastagi.listen == ("127.0.0.1", agi_port)
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        number = mobile()
        await world.consent(number, "voice")
        session = None
        for _ in range(300):  # until it listens (it migrates first), at most a minute
            try:
                session = await run(agi_port, "decide", [number], callerid=world.voice)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, proc.communicate()
                await asyncio.sleep(0.2)
        assert session is not None
        assert session.variables["CONSENT_DECISION"] == "allow"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    events = [json.loads(line)["event"] for line in out.decode().splitlines()
              if line.startswith("{")]
    assert "fastagi_listening" in events
    assert "fastagi_session" in events
    with pytest.raises(ConnectionRefusedError):  # stopped with the proxy
        await connect(agi_port)


# --- the wire ---------------------------------------------------------------------------------

def test_a_value_reaches_the_channel_as_it_was_set() -> None:
    """Quotes and backslashes are escaped for Asterisk's parser; a control character, which
    would end the command line, goes out as a blank."""
    line = agi.set_variable("CONSENT_ERROR", 'arg_2: "x" \\ y\nz')
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert agi_client.parse_args(line.decode().rstrip("\n")) == [
        "SET", "VARIABLE", "CONSENT_ERROR", 'arg_2: "x" \\ y z']
    assert agi_client.parse_args(agi.set_variable("X", "").decode().rstrip("\n")) == [
        "SET", "VARIABLE", "X", ""]


@pytest.mark.parametrize(("reply", "end"), [
    (b"510 Invalid or unknown command\n", "command_refused"),
    (b"511 Command Not Permitted on a dead channel or intercept routine\n", "command_refused"),
    (b"520-Invalid command syntax.  Proper usage follows:\nUsage: SET VARIABLE <name> <value>\n"
     b"520 End of proper usage.\n", "command_refused"),
    (b"OK\n", "malformed"),
    (b"100 Trying...\n200 result=1\n", "answered"),
    (b"HANGUP\nHANGUP\n200 result=1\n", "hangup"),
])
async def test_each_answer_asterisk_can_give_is_read(
        gate: TestClient[Any, Any], world: World, log_output: Any, reply: bytes,
        end: str) -> None:
    reader, writer = await connect(listener(gate).port)
    lines = agi_client.environment("decide", [mobile()], port=listener(gate).port,
                                   callerid=world.voice, uniqueid=unique_id())
    writer.write(header(*lines))
    first = await reader.readline()
    assert first.startswith(b"SET VARIABLE CONSENT_REASON ")
    writer.write(reply)
    rest = []
    while line := await reader.readline():  # the gate closes when it is done
        rest.append(line)
        writer.write(b"200 result=1\n")
    writer.close()
    await no_session_left(gate)
    assert [s["end"] for s in sessions(log_output)] == [end]
    assert len(rest) == (len(DECIDE_VARIABLES) - 1 if end == "answered" else 0)
