"""Dial-time decisions under attack: the dial API and FastAGI.

Each test is one way to get a call placed, or a record written, that the rules do not
allow; what should happen is in its docstring. Real PostgreSQL, the injected clock and the
FastAGI client of tests/agi_client.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy.dial.request import DialRequest
from proxy.keys import POOL, WRITER
from tests import agi_client
from tests.agi_client import run, unique_id
from tests.conftest import AMS, REPO, Clock, mobile
from tests.test_dial_api import D, ask, call_id, consent, creds, report, rows
from tests.test_fastagi import listener, start_gate
from tests.world import World, make_world


@pytest.fixture
async def world(client: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(client, auth)


async def until(condition: Callable[[], Any], what: str) -> None:
    """Wait for what another task brings about: polled, bounded (no timing asserted)."""
    for _ in range(2000):
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"did not happen: {what}")


@pytest.fixture
async def locker(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own that can hold a consent row locked, so the group
    commit that consumes it waits (a slow store, made deterministic)."""
    conn = await pool.acquire()
    try:
        yield conn
    finally:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        await pool.release(conn)


async def hold(conn: asyncpg.Connection, consent_id: int) -> None:
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM consents WHERE id = $1 FOR UPDATE", consent_id)


async def someone_waits_for_a_lock(pool: asyncpg.Pool) -> bool:
    n: int = await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
    return n > 0


# --- a call_id replayed after its request was given back -------------------------------------

async def test_a_call_id_replayed_after_a_not_reached_outcome_is_not_allowed_again(
        world: World) -> None:
    """N6 (a contact request covers one contact),.

    The attack: the dialer is allowed call X (the contact request is consumed), reports
    `busy` (the request is given back), then asks again with the same call_id X: the first
    answer is replayed, `allow`, with the old decision id and nothing consumed. The call goes
    out (the person is reached) while the request stays free, so the next call_id is
    allowed on the same request too: two reached contacts on one contact request, and the
    record says the only decision reached nobody. Kamailio does exactly this when the
    carrier answers 407 (the dialer's authenticated re-INVITE keeps the Call-ID, RFC 3261
    22.2) or when a dialer retries an INVITE that got 503 at the deadline (tests/test_kamailio.py).
    The gate: once an outcome is recorded (or anything given back) for the decision a call_id
    holds, a repeat of that call_id is decided afresh (a new row that consumes again), or at
    least never answered `allow`."""
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    assert first["decision"] == "allow"
    await report(world, first["decision_id"], "busy")
    assert (await consent(pool, request_id))["consumed_at"] is None  # given back
    again = await ask(world, number, cid=cid)
    replayed_allow = (again["decision"], again["decision_id"]) == ("allow",
                                                                   first["decision_id"])
    consumed = (await consent(pool, request_id))["consumed_at"]
    assert not replayed_allow, (
        "an allow replayed on a decision whose request was given back: the call goes out "
        f"and the request stays free (consumed_at={consumed})")


async def test_a_given_back_request_is_not_good_for_two_reached_calls(world: World) -> None:
    """A call_id replayed after a give-back, in numbers: one contact request, two calls the
    dialer was told it may place and report `answered` for. Only one of them has a row that consumed
    the request (N6: "voor iedere afzonderlijke communicatie")."""
    pool = world.admin.app[POOL]
    number = mobile()
    await world.consent(number, "voice", kind="request")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    await report(world, first["decision_id"], "no_answer")
    retried = await ask(world, number, cid=cid)  # e.g. the re-INVITE after a 407
    other = await ask(world, number)  # the next attempt from the list
    allowed = [a for a in (retried, other) if a["decision"] == "allow"]
    assert len(allowed) <= 1, (
        f"{len(allowed)} calls allowed on one contact request; decision rows: "
        f"{[(r['id'], r['decision'], r['consumed_consent_id']) for r in await rows(pool, number)]}")


# --- a replayed allow and what changed since (objection, hours) ------------------------------

async def test_a_replayed_allow_does_not_survive_an_objection(world: World, clock: Clock) -> None:
    """N11: an objection blocks "from the moment it is recorded".

    The attack: call_id X is allowed at 10:00; the person objects at 10:05 (recorded); the
    dialer asks for X again at 10:10 and gets `allow` (sip.status 200), the old decision
    replayed with nothing looked up. The README ("Dial-time decisions") calls this a
    retransmitted INVITE, but nothing bounds it to one: any repeat within 24 hours gets it.
    The gate: replay an allow only within a SIP transaction's lifetime (Timer B, 32 s) and
    decide afresh after that; or re-check objections (and the time rules) before replaying an
    allow."""
    number = mobile()
    await world.consent(number, "voice")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    assert first["decision"] == "allow"
    clock.now += dt.timedelta(minutes=5)
    await world.objection(number, received_at=clock.now.isoformat())
    clock.now += dt.timedelta(minutes=5)
    fresh = await ask(world, number)
    assert fresh["reason"] == "OBJECTION_ON_FILE"  # what any new question gets
    again = await ask(world, number, cid=cid)
    assert again["decision"] != "allow", "an allow replayed after the person objected"


async def test_a_replayed_allow_does_not_reach_past_22_00(world: World, clock: Clock) -> None:
    """N13: calls on working days until 22:00.

    The attack: call_id X allowed at 21:59:50, asked again at 22:00:30 (and it would be at
    23:30 too): `allow`, sip.status 200. The FastAGI section of the README warns about reruns
    in one channel; the dial API section (and integrations/kamailio/README.md: "one asked
    again later gets the first decision") presents it as harmless retransmission.
    The gate: as above (replay only within a transaction's lifetime, else decide afresh), and
    the dial API section says what a replay means."""
    number = mobile()
    await world.consent(number, "voice")
    clock.now = dt.datetime(2026, 11, 30, 21, 59, 50, tzinfo=AMS)  # a Monday
    cid = call_id()
    first = await ask(world, number, cid=cid)
    assert first["decision"] == "allow"
    clock.now = dt.datetime(2026, 11, 30, 23, 30, tzinfo=AMS)
    again = await ask(world, number, cid=cid)
    assert (again["decision"], again["sip"]["status"]) != ("allow", 200), (
        "an allow at 23:30 on Monday night")


# --- a decision slower than ABANDONED (30 s) -------------------------------------------------

async def test_a_slow_decision_is_not_taken_over_and_decided_twice(
        world: World, clock: Clock, locker: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    """"Every gated request leaves exactly one decision record."

    The attack: the group commit of call_id X's decision waits (here: on a row lock, as it
    would behind a long transaction or a stalled disk). 30 s later a retransmission of X
    finds the claim without an answer and takes it over as "abandoned", though its decision
    is still under way: a second decision is made. Both commit: two rows for one call_id
    (`allow` consuming the request and `deny`), and the two askers got different answers.
    The gate: a claim is taken over only when its decider is known to be gone (claim the
    call_id in the decision's own commit, as the Twilio front claims its idempotency key in
    WRITE_SQL; or hold an advisory lock while deciding)."""
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    await hold(locker, request_id)
    first = asyncio.ensure_future(ask(world, number, cid=cid))
    await until(lambda: someone_waits_for_a_lock(pool), "the first commit waits")
    clock.now += dt.timedelta(seconds=31)
    second = asyncio.ensure_future(ask(world, number, cid=cid))

    async def taken_over() -> bool:
        claimed = await pool.fetchval(
            "SELECT claimed_at FROM dial_attempts WHERE client_id = $1 AND call_id = $2",
            world.sid, cid)
        return bool(claimed == clock.now)

    await until(taken_over, "the retransmission takes the claim over")
    await locker.execute("ROLLBACK")
    answers = await asyncio.gather(first, second)
    found = await rows(pool, number)
    assert len(found) == 1, (
        f"one call_id, {len(found)} decision rows "
        f"{[(r['decision'], r['reason']) for r in found]}; answers "
        f"{[(a['decision'], a['decision_id']) for a in answers]}")


# --- a contact request contested twice -------------------------------------------------------

async def test_three_concurrent_calls_on_two_requests_get_answers_not_500(
        world: World, locker: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    """"Never a 500."

    The attack: three calls to one number with two contact requests on file, at once (a
    dialer retrying, two agents). All three are evaluated on the first request; one commits
    with it, the other two fail (RequestAlreadyUsed) and decide `again`, both on the second
    request; one of them commits, and the other's second RequestAlreadyUsed is not caught:
    the dial API answers 500 (FastAGI: AGI_INTERNAL_ERROR), the claim is dropped and no
    decision row is left for that request.
    The gate: decide again until the request used is one nobody took (or, after a bounded
    number of tries, decide without any request: NO_LEGAL_BASIS), each time recording the
    decision; never a 500."""
    number = mobile()
    first_request = await world.consent(number, "voice", kind="request")
    await world.consent(number, "voice", kind="request")
    await hold(locker, first_request)

    def ask() -> asyncio.Future[Any]:
        return asyncio.ensure_future(world.admin.post(
            D, json={"to": number, "from": world.voice, "call_id": call_id()},
            headers=creds(world)))

    # The first alone, so that its commit is the batch that waits (had the second joined its
    # batch, the race would be decided inside one statement, not by deciding again).
    asks = [ask()]
    await until(lambda: someone_waits_for_a_lock(pool), "the first commit waits")
    asks += [ask(), ask()]
    writer = world.admin.app[WRITER]
    # The other two are decided, on the first request too (its use is not committed), and
    # queued behind it (the group commit's queue).
    await until(lambda: len(writer._queue) == 2, "two more decisions queued")
    await locker.execute("ROLLBACK")
    responses = await asyncio.gather(*asks)
    statuses = sorted(r.status for r in responses)
    bodies = [await r.json() for r in responses]
    assert statuses == [200, 200, 200], (statuses, bodies)


# --- FastAGI and the caller ID the channel presents ------------------------------------------

async def test_fastagi_a_caller_id_presented_restricted_is_withheld(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World) -> None:
    """N16: no withheld caller ID.

    The attack: the channel's caller ID is the organisation's registered number, but its
    presentation is restricted (`Set(CALLERID(pres)=prohib)` in the dialplan, or the
    dialer's CLIR): Asterisk sends `agi_callingpres: 32` (AST_PRES_RESTRICTED) and will send
    the call out with `Privacy: id` / a withheld number. The gate never reads
    agi_callingpres and answers `allow`: the person sees "anonymous".
    The gate: a presentation other than allowed (`agi_callingpres & 0x60` non-zero: restricted
    or unavailable) is CALLER_ID_WITHHELD, whatever `agi_callerid` or `from=` say."""
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    await world.consent(number, "voice")
    port = listener(gate).port
    lines = agi_client.environment("decide", [number], port=port, callerid=world.voice,
                                   uniqueid=unique_id())
    lines = [("agi_callingpres: 32" if line.startswith("agi_callingpres:") else line)
             for line in lines]
    reader, writer = await agi_client.connect(port)
    session = await agi_client.converse(reader, writer, agi_client.header_bytes(lines))
    assert session.variables["CONSENT_DECISION"] == "deny", session.variables
    assert session.variables["CONSENT_REASON"] == "CALLER_ID_WITHHELD"


async def test_fastagi_from_names_the_caller_id_the_channel_presents(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        auth: dict[str, str]) -> None:
    """N16 and the organisation restriction, on FastAGI.

    The attack: `from=` replaces the channel's caller ID for the decision only; the call
    still goes out with the channel's CALLERID(num). A dialplan (a tenant's, on a PBX whose
    listener serves several clients) passes `from=<its own organisation's number>` while its
    channel presents another organisation's number: `allow`, and the person sees a number
    the client may not use. The README's argument table presents `from=` as simply "the
    caller ID".
    The gate: refuse a `from=` that differs from a present agi_callerid (AGI_BAD_REQUEST naming
    `from`), or decide on both and deny unless both are the client's; at least the README
    says the decision holds only if the channel presents exactly `from=`."""
    other = await make_world(world.admin, auth)
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    await world.consent(number, "voice")
    session = await run(listener(gate).port, "decide", [number, f"from={world.voice}"],
                        callerid=other.voice)
    assert session.variables["CONSENT_DECISION"] != "allow", (
        f"allowed on {world.voice} for a channel presenting {other.voice}")


def test_readme_outcome_hook_names_the_client_where_the_listener_serves_several() -> None:
    """README "Asterisk (FastAGI)": `outcome` decides as `fastagi.client` unless `client=` is
    given. Were `client=` documented for `decide` only, with an h extension without it, a
    PBX that serves several clients (`fastagi.clients`, `client=` on decide) and copies the
    h extension would get AGI_CLIENT_UNKNOWN (no default client) or a NotFound (another
    client's decision) for every outcome, so nothing a BUSY or NOANSWER call used up would
    ever be given back.
    The gate: the README's outcome hook shows `[,client=AC…]` and says it must name the
    client that decided."""
    readme = (REPO / "README.md").read_text("utf-8")
    section = readme[readme.index("## Asterisk (FastAGI)"):readme.index("## The opt-out loop")]
    hook = section[section.index("**The outcome hook**"):section.index("**Who may ask.**")]
    assert "client=" in hook, "the outcome hook's client= argument is undocumented"


async def test_fastagi_an_allow_given_back_on_hangup_is_not_recorded_answered(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        pool: asyncpg.Pool) -> None:
    """The outcome hook after a hang-up give-back.

    The attack: Asterisk answers the last SET VARIABLE (CONSENT_DECISION=allow, already
    set on the channel) with a HANGUP line; the gate gives the contact request back
    (`not_reached`, `hangup`). The outcome hook then reports ANSWER for that decision and it
    is recorded `answered`: the record says the person was reached and that nobody was, and
    the request is free for another call. (The dial API's outcome route does the same for
    any decision given back without an outcome.)
    The gate: an outcome `answered` for a decision whose consumption was given back is a
    conflict (AGI_CONFLICT / 409), or consumes the request again; never both rows."""
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    decided = await run(listener(gate).port, "decide", [number], callerid=world.voice,
                        hangup_after=5)
    assert decided.variables["CONSENT_DECISION"] == "allow"
    decision_id = decided.variables["CONSENT_DECISION_ID"]
    given_back = await pool.fetch(
        "SELECT why, detail FROM consumption_reversals WHERE decision_id = $1",
        int(decision_id))
    assert [(r["why"], r["detail"]) for r in given_back] == [("not_reached", "hangup")]
    reported = await run(listener(gate).port, "outcome", [decision_id, "ANSWER"])
    consumed = await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                                   request_id)
    assert not (reported.variables["CONSENT_OUTCOME"] == "answered" and consumed is None), (
        "recorded answered, given back as not reached, and the request is free")


# --- a FastAGI session cancelled during its commit -------------------------------------------

async def test_fastagi_a_session_cancelled_at_shutdown_leaves_one_decision_per_call_id(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        locker: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    """The gate stopping while a FastAGI session's decision is being committed.

    The attack: the gate stops (Listener.close) while a session's decision waits for its
    group commit. The session is cancelled; `decisions.decide` drops the call_id's claim
    (`except BaseException: release`), but the decision is already queued in the group
    commit, which commits it anyway (a cancelled waiter does not take its row out of the
    batch). Left behind: an `allow` row that consumed the contact request, answered to
    nobody, never given back, and no claim, so the same call_id asked again (the channel's
    uniqueid, here over the dial API) is decided a second time: two rows for one call_id.
    The gate: shield the commit from cancellation and complete the claim with its answer (or
    give back what an answered-to-nobody allow consumed); release the claim only when
    nothing was queued."""
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid,
                            read_timeout_seconds=0.2)
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    uniqueid = unique_id()
    await hold(locker, request_id)
    session = asyncio.ensure_future(run(listener(gate).port, "decide", [number],
                                        callerid=world.voice, uniqueid=uniqueid))
    await until(lambda: someone_waits_for_a_lock(pool), "the session's commit waits")
    await listener(gate).close()  # the gate stops: the session is cancelled
    assert (await session).variables == {}  # the channel got no answer
    await locker.execute("ROLLBACK")
    await gate.app[WRITER].sync()
    (row,) = await rows(pool, number)
    assert (row["decision"], row["consumed_consent_id"]) == ("allow", request_id)
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is not None  # used up by a call never placed
    again = await ask(world, number, cid=uniqueid)
    found = await rows(pool, number)
    assert len(found) == 1, (
        f"one call_id, {len(found)} decision rows: "
        f"{[(r['decision'], r['reason']) for r in found]} (the rerun got {again['decision']})")


# --- what keeps working ----------------------------------------------------------------

async def test_an_allow_is_replayed_within_a_sip_transaction(world: World, clock: Clock) -> None:
    """A retransmitted INVITE (within Timer B, 32 s) gets the first answer, nothing more."""
    pool = world.admin.app[POOL]
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    clock.now += dt.timedelta(seconds=31)
    again = await ask(world, number, cid=cid)
    assert (again["decision"], again["decision_id"]) == ("allow", first["decision_id"])
    (row,) = await rows(pool, number)
    assert row["consumed_consent_id"] == request_id


async def test_a_call_id_asked_again_after_33_s_is_decided_afresh(
        world: World, clock: Clock) -> None:
    """N6: a new attempt with an old call_id uses up a request of its own (or is denied)."""
    pool = world.admin.app[POOL]
    number = mobile()
    await world.consent(number, "voice", kind="request")
    cid = call_id()
    first = await ask(world, number, cid=cid)
    clock.now += dt.timedelta(seconds=33)
    again = await ask(world, number, cid=cid)
    assert again["decision_id"] != first["decision_id"]
    assert (again["decision"], again["reason"]) == ("deny", "NO_LEGAL_BASIS")
    assert len(await rows(pool, number)) == 2


async def test_an_abandoned_claim_is_taken_over(world: World, clock: Clock) -> None:
    """A claim whose decider went away before committing (a crash) holds a call_id for 30 s
    only; then a retransmission decides, once."""
    pool = world.admin.app[POOL]
    number = mobile()
    await world.consent(number, "voice")
    cid = call_id()
    await pool.execute(
        "INSERT INTO dial_attempts (client_id, call_id, request_hash, claimed_at) "
        "VALUES ($1, $2, $3, $4)", world.sid, cid,
        DialRequest(number, world.voice, cid, False).fingerprint(),
        clock.now - dt.timedelta(seconds=31))
    taken = await ask(world, number, cid=cid)
    assert taken["decision"] == "allow"
    assert len(await rows(pool, number)) == 1


async def test_fastagi_from_equal_to_the_channels_caller_id_or_for_none_is_decided(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    await world.consent(number, "voice")
    port = listener(gate).port
    same = await run(port, "decide", [number, f"from={world.voice}"], callerid=world.voice)
    assert same.variables["CONSENT_DECISION"] == "allow", same.variables
    none = await run(port, "decide", [number, f"from={world.voice}"])  # callerid unknown
    assert none.variables["CONSENT_DECISION"] == "allow", none.variables
    other = await run(port, "decide", [number, "from=+31201111111"], callerid=world.voice)
    assert other.variables["CONSENT_REASON"] == "AGI_BAD_REQUEST"
    assert other.variables["CONSENT_ERROR"].startswith("from:")


async def test_fastagi_a_latin_1_caller_name_does_not_drop_the_session(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World) -> None:
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    await world.consent(number, "voice")
    port = listener(gate).port
    lines = agi_client.environment("decide", [number], port=port, callerid=world.voice,
                                   uniqueid=unique_id())
    header = agi_client.header_bytes(lines).replace(b"agi_calleridname: Energie BV",
                                                    "agi_calleridname: Énergie".encode("latin-1"))
    reader, writer = await agi_client.connect(port)
    session = await agi_client.converse(reader, writer, header)
    assert session.variables["CONSENT_DECISION"] == "allow", session.variables


async def test_fastagi_cancel_is_recorded_cancelled_and_gives_back(
        aiohttp_client: Any, database_url: str, clock: Clock, world: World,
        pool: asyncpg.Pool) -> None:
    """Asterisk's DIALSTATUS CANCEL is the outcome a SIP proxy reports for a CANCEL."""
    gate = await start_gate(aiohttp_client, database_url, clock, client=world.sid)
    number = mobile()
    request_id = await world.consent(number, "voice", kind="request")
    port = listener(gate).port
    decided = await run(port, "decide", [number], callerid=world.voice)
    decision_id = decided.variables["CONSENT_DECISION_ID"]
    reported = await run(port, "outcome", [decision_id, "CANCEL"])
    assert reported.variables["CONSENT_OUTCOME"] == "cancelled"
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None
