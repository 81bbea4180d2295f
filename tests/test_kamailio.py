"""Kamailio in front of the trunk (integrations/kamailio/kamailio.cfg), for real: Debian's
kamailio with the shipped configuration, SIPp as the dialer and as the carrier, consent-proxy
on a real port over real PostgreSQL with its clock pinned. Each test checks what the dialer
got, what the carrier really received (SIPp's message trace) and the decision rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.keys import POOL
from tests import sip_stack
from tests.conftest import AMS, Clock, mobile
from tests.sip_stack import Carrier, DialRun, Kamailio, Message
from tests.world import World, make_world

# A consent-proxy answer that no test waits for longer than this (a loaded machine).
WITHIN = 60.0

StartGate = Callable[..., Awaitable[Kamailio]]


@pytest.fixture(scope="session")
def sip_installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    sip_stack.ensure_installed(tmp_path_factory.mktemp("sip-install"))


@pytest.fixture
async def world(client: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(client, auth)


@pytest.fixture
async def uas(sip_installed: None, tmp_path: Path) -> AsyncIterator[Carrier]:
    async with sip_stack.carrier(tmp_path) as carrier:
        yield carrier


@pytest.fixture
async def gate(world: World, uas: Carrier, tmp_path: Path) -> AsyncIterator[StartGate]:
    """Starts Kamailio with the shipped configuration, asking consent-proxy (or `url`) with
    the world's client credentials and relaying to the SIPp carrier; stopped at the end.

    On a loaded machine a cold consent-proxy's first decision has taken over a second, so
    tests not about the deadline give it `deadline_ms` (and http_client as long); None keeps
    the shipped 500 ms."""
    started: list[Kamailio] = []

    async def start(url: str | None = None, *, deadline_ms: int | None = 60_000,
                    **defines: str | int) -> Kamailio:
        workdir = tmp_path / f"kamailio-{len(started)}"
        workdir.mkdir()
        if deadline_ms is not None:
            defines = {"DECISION_MS": deadline_ms, "GATE_TIMEOUT": deadline_ms // 1000,
                       **defines}
        kamailio = await sip_stack.start_kamailio(
            workdir, gate_url=url or str(world.admin.make_url("/dial/v1")),
            username=world.sid, password=world.token, carrier_port=uas.port, **defines)
        started.append(kamailio)
        return kamailio

    yield start
    for kamailio in started:
        await kamailio.stop()


async def dial(kamailio: Kamailio, tmp_path: Path, calls: list[tuple[str, str]],
               **options: Any) -> DialRun:
    run = await sip_stack.dial(tmp_path, kamailio.port, calls, **options)
    assert run.returncode == 0, run.errors
    assert set(run.calls) == {to for to, _ in calls}
    return run


def reason(message: Message) -> str | None:
    return message.header("Reason")


async def decisions(pool: asyncpg.Pool, client_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        """SELECT id, decision, reason, retry_after, details->'dial'->>'call_id' AS call_id
           FROM decisions WHERE client_id = $1 ORDER BY id""", client_id)
    return rows


async def outcomes(pool: asyncpg.Pool, decision_ids: list[int], *,
                   within: float = WITHIN) -> dict[int, str]:
    """The outcome of each decision, once all are reported: Kamailio reports them from an
    async worker after the call, so the rows come a little after SIPp is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        rows = await pool.fetch("SELECT decision_id, status FROM dial_outcomes "
                                "WHERE decision_id = ANY($1::bigint[])", decision_ids)
        if len(rows) == len(decision_ids) or loop.time() > deadline:
            return {r["decision_id"]: r["status"] for r in rows}
        await asyncio.sleep(0.05)  # until the rows are there (bounded by `within`)


def assert_not_logged(kamailio: Kamailio, *numbers: str) -> None:
    text = kamailio.log.read_text("utf-8", "replace")
    for number in numbers:
        assert number[3:] not in text, "a number in Kamailio's log"


# --- allow, deny --------------------------------------------------------------------------------

async def test_an_allowed_invite_reaches_the_carrier_and_is_answered(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    kamailio = await gate()
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    call = run.calls[number]
    assert call.final.status == 200
    (invite,) = uas.invites()
    assert (invite.call_id, invite.to_user) == (call.call_id, number)
    # The dialog followed Record-Route: the carrier got the ACK and the BYE through the gate
    # (in either order: two of Kamailio's processes relay them).
    assert sorted(m.method or "" for m in uas.received() if m.method) == ["ACK", "BYE",
                                                                           "INVITE"]
    (row,) = await decisions(pool, world.sid)
    assert (row["decision"], row["reason"], row["call_id"]) == ("allow", "ALLOWED",
                                                                 call.call_id)
    assert await outcomes(pool, [row["id"]]) == {row["id"]: "answered"}
    # Answered: the contact request stays used (N6).
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is not None
    assert_not_logged(kamailio, number)


async def test_a_denied_invite_gets_403_with_its_reason_and_never_reaches_the_carrier(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    nothing, objecting = mobile(), mobile()
    await world.consent(objecting, "voice")
    await world.objection(objecting)
    kamailio = await gate()
    run = await dial(kamailio, tmp_path, [(nothing, world.voice), (objecting, world.voice)])
    for number, code in ((nothing, "NO_LEGAL_BASIS"), (objecting, "OBJECTION_ON_FILE")):
        final = run.calls[number].final
        assert (final.status, reason(final)) == (403, f'SIP;cause=403;text="{code}"')
        assert final.header("Retry-After") is None
    assert uas.received() == []
    rows = await decisions(pool, world.sid)
    assert {(r["call_id"], r["decision"], r["reason"]) for r in rows} == {
        (run.calls[nothing].call_id, "deny", "NO_LEGAL_BASIS"),
        (run.calls[objecting].call_id, "deny", "OBJECTION_ON_FILE")}
    assert_not_logged(kamailio, nothing, objecting)


async def test_an_hour_denial_carries_retry_after_in_seconds(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool, clock: Clock,
        tmp_path: Path) -> None:
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 30, 22, 15, 7, 250_000, tzinfo=AMS)  # a Monday night
    kamailio = await gate()
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    final = run.calls[number].final
    assert (final.status, reason(final)) == (403, 'SIP;cause=403;text="OUTSIDE_CALLING_HOURS"')
    opening = dt.datetime(2026, 12, 1, 9, 0, tzinfo=AMS)  # N13: Tuesday 09:00
    assert final.header("Retry-After") == str(math.ceil((opening - clock.now).total_seconds()))
    assert uas.received() == []
    (row,) = await decisions(pool, world.sid)
    assert (row["reason"], row["retry_after"]) == ("OUTSIDE_CALLING_HOURS", opening)


# --- consent-proxy down, slow, broken: 503 and nothing reaches the carrier ------------------------

async def test_consent_proxy_stopped_is_503_and_nothing_reaches_the_carrier(
        world: World, uas: Carrier, gate: StartGate, client: TestClient[Any, Any],
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    number = mobile()
    await world.consent(number, "voice")
    kamailio = await gate()
    await client.close()  # consent-proxy stops: its port refuses connections
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    final = run.calls[number].final
    assert (final.status, reason(final)) == (
        503, 'SIP;cause=503;text="CONSENT_PROXY_UNAVAILABLE"')
    assert uas.received() == []
    assert await decisions(pool, world.sid) == []


async def test_consent_store_down_is_503_naming_it(
        world: World, uas: Carrier, gate: StartGate, client: TestClient[Any, Any],
        pool: asyncpg.Pool, tmp_path: Path) -> None:
    number = mobile()
    await world.consent(number, "voice")
    kamailio = await gate()
    client.app[POOL].terminate()  # consent-proxy runs, its database connections are gone
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    final = run.calls[number].final
    assert (final.status, reason(final)) == (
        503, 'SIP;cause=503;text="CONSENT_STORE_UNAVAILABLE"')
    assert uas.received() == []
    assert await decisions(pool, world.sid) == []


@dataclass
class Hop:
    """The HTTP path from Kamailio to consent-proxy, in the test's hands: each request goes on
    as it came, unless decisions are held (until `release` is set) or answered with junk in
    consent-proxy's place. `asked` is set when a decision request arrives, `reported` when
    consent-proxy has answered an outcome report."""

    target: str  # consent-proxy's base URL
    session: aiohttp.ClientSession
    url: str = ""  # the dial API's URL through this hop, for Kamailio
    hold: bool = False
    junk: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    asked: asyncio.Event = field(default_factory=asyncio.Event)
    reported: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        deciding = request.path.endswith("/decisions")
        if deciding:
            self.asked.set()
            if self.junk:
                return web.Response(text="<html>502 Bad Gateway</html>",
                                    content_type="text/html")
            if self.hold:
                await self.release.wait()
        headers = {k: v for k, v in request.headers.items()
                   if k in ("Authorization", "Content-Type")}
        async with self.session.post(self.target + request.path, data=body,
                                     headers=headers) as upstream:
            answer = web.Response(body=await upstream.read(), status=upstream.status,
                                  content_type=upstream.content_type)
        if not deciding:
            self.reported.set()
        return answer


@pytest.fixture
async def hop(aiohttp_server: Any, client: TestClient[Any, Any]) -> AsyncIterator[Hop]:
    async with aiohttp.ClientSession() as session:
        me = Hop(str(client.make_url("")).rstrip("/"), session)
        app = web.Application()
        app.router.add_post("/{tail:.*}", me.handle)
        server: TestServer = await aiohttp_server(app)
        me.url = str(server.make_url("/dial/v1"))
        yield me
        me.release.set()  # a held request ends before the server does


async def test_a_slow_answer_is_503_at_the_deadline_and_the_late_allow_is_dropped(
        world: World, uas: Carrier, gate: StartGate, hop: Hop, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    hop.hold = True
    # The shipped 500 ms deadline; http_client waits longer, so the answer still comes in.
    kamailio = await gate(hop.url, deadline_ms=None, GATE_TIMEOUT=60)
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    final = run.calls[number].final
    assert (final.status, reason(final)) == (
        503, 'SIP;cause=503;text="CONSENT_PROXY_UNAVAILABLE"')
    hop.release.set()  # consent-proxy decides now: allow, after the caller had its 503
    await asyncio.wait_for(hop.reported.wait(), WITHIN)
    (row,) = await decisions(pool, world.sid)
    assert (row["decision"], row["call_id"]) == ("allow", run.calls[number].call_id)
    assert await outcomes(pool, [row["id"]]) == {row["id"]: "cancelled"}
    # Not connected: the contact request it used is usable again (N6).
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None
    assert uas.received() == []


async def test_a_junk_answer_is_503(
        world: World, uas: Carrier, gate: StartGate, hop: Hop, tmp_path: Path) -> None:
    number = mobile()
    await world.consent(number, "voice")
    hop.junk = True
    kamailio = await gate(hop.url)
    run = await dial(kamailio, tmp_path, [(number, world.voice)])
    final = run.calls[number].final
    assert (final.status, reason(final)) == (
        503, 'SIP;cause=503;text="CONSENT_PROXY_UNAVAILABLE"')
    assert hop.asked.is_set()
    assert uas.received() == []


async def test_a_cancel_while_the_decision_is_pending_is_487_and_the_late_allow_is_dropped(
        world: World, uas: Carrier, gate: StartGate, hop: Hop, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    number = mobile()
    consent_id = await world.consent(number, "voice")
    hop.hold = True
    # The deadline is far off: the CANCEL, not the deadline, ends this call.
    kamailio = await gate(hop.url)
    run = await dial(kamailio, tmp_path, [(number, world.voice)],
                     scenario="dialer_cancel.xml")
    call = run.calls[number]
    assert call.final.status == 487
    assert [m.status for m in call.received if m.cseq_method == "CANCEL"] == [200]
    await asyncio.wait_for(hop.asked.wait(), WITHIN)
    hop.release.set()  # consent-proxy allows the call nobody waits for any more
    await asyncio.wait_for(hop.reported.wait(), WITHIN)
    (row,) = await decisions(pool, world.sid)
    assert (row["decision"], row["call_id"]) == ("allow", call.call_id)
    assert await outcomes(pool, [row["id"]]) == {row["id"]: "cancelled"}
    # Not connected: the consent's first call counts as not made (N5).
    first = await pool.fetchrow("SELECT first_used_at, first_used_by FROM consents "
                                "WHERE id = $1", consent_id)
    assert (first["first_used_at"], first["first_used_by"]) == (None, None)
    assert uas.received() == []


# --- many at once ------------------------------------------------------------------------------

async def test_200_concurrent_invites_each_get_their_own_decision(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    numbers = [mobile() for _ in range(200)]
    expected: dict[str, str] = {}
    setup = []
    for i, number in enumerate(numbers):
        kind = ("ALLOWED", "ALLOWED", "OBJECTION_ON_FILE", "NO_LEGAL_BASIS")[i % 4]
        expected[number] = kind
        if kind != "NO_LEGAL_BASIS":
            setup.append(world.consent(number, "voice"))
    await asyncio.gather(*setup)
    await asyncio.gather(*(world.objection(n) for n, k in expected.items()
                           if k == "OBJECTION_ON_FILE"))
    # A loaded machine takes longer than 500 ms to decide 200 calls with 8 workers; the
    # deadline is far off (the fixture's), as this test is about each call's own decision.
    kamailio = await gate()
    run = await dial(kamailio, tmp_path, [(n, world.voice) for n in numbers], rate=200)
    for number, code in expected.items():
        final = run.calls[number].final
        if code == "ALLOWED":
            assert final.status == 200, (number, final.start)
        else:
            assert (final.status, reason(final)) == (403, f'SIP;cause=403;text="{code}"')
    rows = await decisions(pool, world.sid)
    assert len(rows) == 200
    assert {r["call_id"] for r in rows} == {c.call_id for c in run.calls.values()}
    allowed = {r["call_id"] for r in rows if r["decision"] == "allow"}
    assert allowed == {run.calls[n].call_id for n, k in expected.items() if k == "ALLOWED"}
    # The carrier saw exactly the allowed calls, each once.
    invites = [m.call_id for m in uas.invites()]
    assert sorted(invites) == sorted(allowed)
    allowed_ids = [r["id"] for r in rows if r["decision"] == "allow"]
    assert await outcomes(pool, allowed_ids) == dict.fromkeys(allowed_ids, "answered")


# --- what is not an initial INVITE from a dialer ---------------------------------------------

async def test_nothing_but_a_decided_invite_reaches_the_carrier(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool) -> None:
    number = mobile()
    await world.consent(number, "voice")
    kamailio = await gate()
    port = kamailio.port
    here = f"sip:127.0.0.1:{port}"
    carrier = f"sip:{number}@127.0.0.1:{uas.port}"

    async def answer(req: str) -> tuple[int | None, str | None]:
        reply = await sip_stack.exchange(port, req)
        return reply.status, reply.header("Reason")

    # Keep-alives are answered here; other methods outside a dialog are refused.
    assert await answer(sip_stack.request("OPTIONS", here)) == (200, None)
    for method in ("REGISTER", "MESSAGE", "SUBSCRIBE", "INFO"):
        assert (await answer(sip_stack.request(method, here)))[0] == 405
    # A request dressed up as part of a dialog (a To tag, a Route through the gate) belongs
    # to no dialog the gate let through.
    forged = sip_stack.request("INVITE", carrier, from_user=world.voice, to_user=number,
                               to_tag="x1", extra=[f"Route: <{here};lr>"])
    assert (await answer(forged))[0] == 481
    bye = sip_stack.request("BYE", carrier, to_user=number, to_tag="x1",
                            extra=[f"Route: <{here};lr>"])
    assert (await answer(bye))[0] == 481
    stray = sip_stack.request("INVITE", carrier, from_user=world.voice, to_user=number,
                              to_tag="x1")
    assert (await answer(stray))[0] == 404
    # An INVITE without a number to decide on.
    assert (await answer(sip_stack.request("INVITE", here, from_user=world.voice)))[0] == 484
    # What consent-proxy refuses as bad input (422) is a 400 naming the field.
    no_caller = sip_stack.request("INVITE", f"sip:{number}@127.0.0.1:{port}", from_user="")
    assert await answer(no_caller) == (400, 'SIP;cause=400;text="BAD_INPUT from"')
    long_id = sip_stack.request("INVITE", f"sip:{number}@127.0.0.1:{port}",
                                from_user=world.voice, call_id="x" * 300)
    assert await answer(long_id) == (400, 'SIP;cause=400;text="BAD_INPUT call_id"')
    assert uas.received() == []
    assert await decisions(pool, world.sid) == []


async def test_only_the_dialers_addresses_may_place_calls(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool,
        tmp_path: Path) -> None:
    refused, allowed = mobile(), mobile()
    await world.consent(refused, "voice")
    await world.consent(allowed, "voice")
    elsewhere = await gate(DIALER_NET='"192.0.2.0/24,198.51.100.7"')
    invite = sip_stack.request("INVITE", f"sip:{refused}@127.0.0.1:{elsewhere.port}",
                               from_user=world.voice, to_user=refused)
    assert (await sip_stack.exchange(elsewhere.port, invite)).status == 403
    assert await decisions(pool, world.sid) == []
    # A list of a subnet and a plain address.
    here = await gate(DIALER_NET='"192.0.2.0/24,127.0.0.1"')
    run = await dial(here, tmp_path, [(allowed, world.voice)])
    assert run.calls[allowed].final.status == 200
    assert [m.to_user for m in uas.invites()] == [allowed]


# --- what the carrier is asked to do beyond the decided call ----------------------------------

def invite(port: int, number: str, caller: str, *, cid: str | None = None, cseq: int = 1,
           extra: tuple[str, ...] = ()) -> str:
    """An initial INVITE from 127.0.0.1:LOCALPORT (`sip_stack.exchange` fills it in)."""
    text = sip_stack.request("INVITE", f"sip:{number}@127.0.0.1:{port}", from_user=caller,
                             to_user=number, call_id=cid, extra=extra)
    return text.replace("CSeq: 1 INVITE", f"CSeq: {cseq} INVITE")


async def test_the_carrier_presents_only_the_decided_caller_id(
        world: World, uas: Carrier, gate: StartGate, auth: dict[str, str]) -> None:
    """N16: the number shown is the organisation's own, never withheld. The dialer's From is
    its organisation's number; it also writes another organisation's number into the headers
    a trunk presents instead of From (RFC 3325 P-Asserted-Identity, P-Preferred-Identity,
    Remote-Party-ID, in any case) and asks to withhold it (Privacy: id). None of that was
    decided on: the carrier gets the decided From user asserted, and nothing else."""
    other = await make_world(world.admin, auth)  # another organisation and its sender
    number = mobile()
    await world.consent(number, "voice")
    kamailio = await gate()
    reply = await sip_stack.exchange(kamailio.port, invite(
        kamailio.port, number, world.voice,
        extra=(f"P-Asserted-Identity: <sip:{other.voice}@127.0.0.1>",
               f"p-preferred-identity: <sip:{other.voice}@127.0.0.1>",
               f"Remote-Party-ID: <sip:{other.voice}@127.0.0.1>;party=calling;privacy=full",
               "Privacy: id")))
    assert reply.status == 200  # allowed on the From user
    (sent,) = uas.invites()
    names = [name.lower() for name, _ in sent.headers]
    assert names.count("p-asserted-identity") == 1
    assert sent.header("P-Asserted-Identity") == f"<sip:{world.voice}@127.0.0.1>"
    for name in ("P-Preferred-Identity", "Remote-Party-ID", "Privacy"):
        assert sent.header(name) is None, name
    assert other.voice not in str(sent.headers)


async def test_an_invite_retried_with_its_call_id_is_asked_about_again(
        world: World, uas: Carrier, gate: StartGate, hop: Hop, pool: asyncpg.Pool) -> None:
    """A dialer retries an INVITE with the same Call-ID and a higher CSeq (after a 503, or a
    carrier's 401/407, RFC 3261 22.2). That is a new transaction: Kamailio asks consent-proxy
    again rather than answering from anything of its own (the dial API says whether the
    repeat is decided afresh)."""
    number = mobile()  # no consent: denied
    kamailio = await gate(hop.url)
    cid = f"{uuid.uuid4().hex}@127.0.0.1"
    first = await sip_stack.exchange(kamailio.port, invite(kamailio.port, number, world.voice,
                                                            cid=cid))
    assert (first.status, reason(first)) == (403, 'SIP;cause=403;text="NO_LEGAL_BASIS"')
    assert hop.asked.is_set()
    hop.asked.clear()
    again = await sip_stack.exchange(kamailio.port, invite(kamailio.port, number, world.voice,
                                                            cid=cid, cseq=2))
    assert (again.status, reason(again)) == (403, 'SIP;cause=403;text="NO_LEGAL_BASIS"')
    assert hop.asked.is_set(), "the retry was answered without asking consent-proxy"
    assert {r["call_id"] for r in await decisions(pool, world.sid)} == {cid}
    assert uas.received() == []


async def test_an_invite_retried_with_its_call_id_after_503_is_decided_afresh(
        world: World, uas: Carrier, gate: StartGate, hop: Hop, pool: asyncpg.Pool) -> None:
    """N6. The decision comes after DECISION_MS: the dialer gets 503, the late allow is
    dropped and reported `cancelled`, and the contact request is given back. The dialer
    retries the INVITE with the same Call-ID and CSeq 2. If that reaches the carrier, the
    contact request must be used up again: a repeat of a call_id whose decision has an
    outcome is decided afresh, never replayed as the first `allow`."""
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    hop.hold = True
    kamailio = await gate(hop.url, deadline_ms=None, GATE_TIMEOUT=60)
    cid = f"{uuid.uuid4().hex}@127.0.0.1"
    first = await sip_stack.exchange(kamailio.port, invite(kamailio.port, number, world.voice,
                                                            cid=cid))
    assert first.status == 503
    hop.release.set()  # allow, after the caller had its 503: reported `cancelled`
    await asyncio.wait_for(hop.reported.wait(), WITHIN)
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None
    hop.reported.clear()
    retry = await sip_stack.exchange(kamailio.port, invite(kamailio.port, number, world.voice,
                                                            cid=cid, cseq=2))
    reached = [m for m in uas.invites() if m.call_id == cid]
    if reached:  # the carrier's 200 is reported as the outcome
        await asyncio.wait_for(hop.reported.wait(), WITHIN)
    consumed = await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                                   request_id)
    outcome = await pool.fetch(
        "SELECT o.status FROM dial_outcomes o JOIN decisions d ON d.id = o.decision_id "
        "WHERE d.details->'dial'->>'call_id' = $1", cid)
    assert not (reached and consumed is None), (
        f"the retry got {retry.status}, the carrier got the INVITE, the contact request it "
        f"placed the call on is free again, outcomes on file: {[r['status'] for r in outcome]}")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[Message] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.got.put_nowait(sip_stack.parse_message("received",
                                                    data.decode("utf-8", "replace")))


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for what another process brings about: polled, bounded (no timing asserted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"did not happen: {what}")
        await asyncio.sleep(0.01)


async def test_an_allowed_dialog_cannot_refer_the_carrier_to_another_number(
        world: World, uas: Carrier, gate: StartGate, pool: asyncpg.Pool) -> None:
    """An allowed call is up; the dialer sends an in-dialog REFER with `Refer-To: <another
    number at the carrier>`. A trunk that takes REFER (most do, for blind transfer) would call
    that number: a contact nothing was decided on. Kamailio refuses it (405, with the methods
    a call may use), and the carrier never sees it. An in-dialog request that is allowed
    (INFO) still goes through, without caller-ID headers of the dialer's own (N16)."""
    number, victim = mobile(), mobile()
    await world.consent(number, "voice")
    kamailio = await gate()
    loop = asyncio.get_running_loop()
    transport, udp = await loop.create_datagram_endpoint(
        _Udp, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", kamailio.port))
    try:
        local = transport.get_extra_info("sockname")[1]
        cid = f"{uuid.uuid4().hex}@127.0.0.1"
        sent = invite(kamailio.port, number, world.voice, cid=cid).replace("LOCALPORT",
                                                                            str(local))
        transport.sendto(sent.encode())
        while True:
            ok = await asyncio.wait_for(udp.got.get(), WITHIN)
            if (ok.status or 0) >= 200:
                break
        assert ok.status == 200
        route = ok.header("Record-Route")
        contact = (ok.header("Contact") or "").strip("<>")
        from_ = next(line for line in sent.split("\r\n") if line.startswith("From:"))

        def in_dialog(method: str, cseq: int, *extra: str) -> str:
            return "\r\n".join([
                f"{method} {contact} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}",
                f"Route: {route}", from_, f"To: {ok.header('To')}", f"Call-ID: {cid}",
                f"CSeq: {cseq} {method}", f"Contact: <sip:dialer@127.0.0.1:{local}>",
                "Max-Forwards: 70", *extra, "Content-Length: 0"]) + "\r\n\r\n"

        transport.sendto(in_dialog("ACK", 1).encode())
        transport.sendto(in_dialog(
            "REFER", 2, f"Refer-To: <sip:{victim}@127.0.0.1:{uas.port}>",
            f"Referred-By: <sip:{world.voice}@127.0.0.1>").encode())
        answered: list[Message] = []

        def refer_done() -> bool:
            while not udp.got.empty():
                got = udp.got.get_nowait()
                if got.cseq_method == "REFER" and (got.status or 0) >= 200:
                    answered.append(got)
            # The carrier does not answer a REFER: tm would take 32 s to give up.
            return bool(answered) or any(m.method == "REFER" for m in uas.received())

        await _until(refer_done, "the REFER is answered or relayed")
        transport.sendto(in_dialog("INFO", 3, "P-Asserted-Identity: <sip:+3185@127.0.0.1>",
                                   "Privacy: id").encode())
        await _until(lambda: any(m.method == "INFO" for m in uas.received()),
                     "the INFO reaches the carrier")
    finally:
        transport.close()
    refers = [m for m in uas.received() if m.method == "REFER"]
    assert refers == [], f"the carrier got REFER to {refers[0].header('Refer-To')}"
    (refused,) = answered
    assert refused.status == 405
    assert "REFER" not in (refused.header("Allow") or "REFER")
    # The carrier does not answer INFO either: tm may have sent it again meanwhile.
    infos = [m for m in uas.received() if m.method == "INFO"]
    assert {(m.header("P-Asserted-Identity"), m.header("Privacy")) for m in infos} == {
        (None, None)}
    assert [r["call_id"] for r in await decisions(pool, world.sid)] == [cid]
