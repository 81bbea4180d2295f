"""The Gate on its own: plain values in and out, no web request, real PostgreSQL.

Built as the app builds it (pool, group fetch, group commit, rules, clock, metrics, the outage
spool's drain), with the data written through the store: allow, deny, only the caller's own
senders, idempotent claims and their replay, the outcome with what it gives back (N5, N6), a
request used by a concurrent contact (decided again), and the spool applied first (N11).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from proxy import stops, store
from proxy.gate import (
    DENIAL_CODES,
    Answer,
    Caller,
    Entry,
    Gate,
    GiveBack,
    Outcome,
    Proposal,
    consumption,
)
from proxy.metrics import Metrics
from proxy.optout_spool import OptOutSpool, SpoolDrain, SpoolEntry
from proxy.phone import subject_hash
from proxy.policy.facts import Organisation, Sender
from proxy.reader import GroupFetch
from proxy.settings import Settings
from proxy.writer import GroupCommit
from tests.conftest import Clock, mobile, uid
from tests.world import landline

GIVEN = dt.datetime(2026, 10, 1, 12, 0, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Parties:
    """An organisation with a voice and an SMS sender, and a client of it."""

    org: str
    voice: str
    sms: str
    caller: Caller


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def spool(tmp_path: Path) -> OptOutSpool:
    return OptOutSpool(tmp_path / "spool")


@pytest.fixture
async def gate(pool: asyncpg.Pool, settings: Settings, clock: Clock, metrics: Metrics,
               spool: OptOutSpool) -> AsyncIterator[Gate]:
    reader, writer = GroupFetch(pool), GroupCommit(pool)
    reader.start()
    writer.start()
    drain = SpoolDrain(spool, lambda entry: stops.apply_spooled(pool, settings, entry))
    yield Gate(pool=pool, load_facts=reader.load_facts, writer=writer, rules=settings.rules,
               clock=clock, metrics=metrics, drain=drain)
    await reader.close()
    await writer.close()


@pytest.fixture
async def parties(pool: asyncpg.Pool) -> Parties:
    org = uid()
    await store.create_organisation(pool, Organisation(org, "Energie BV", "commercial"),
                                   actor="test")
    voice, text = landline(), landline()
    for sender in (voice, text):
        await store.create_sender(pool, Sender(sender, org, "energy/electricity"), actor="test")
    client_id = "AC" + secrets.token_hex(16)
    client = await store.create_client(pool, client_id, "Dialer", [org], actor="test")
    return Parties(org, voice, text, Caller.of(client, "req-" + uuid.uuid4().hex, "test"))


async def consent(pool: asyncpg.Pool, parties: Parties, number: str, channel: str,
                  kind: str = "opt_in") -> int:
    return await store.create_consent(pool, store.ConsentIn(
        subject=number, organisation=parties.org, channel=channel, topics=("energy",),
        kind=kind, given_at=GIVEN, verified_at=GIVEN + dt.timedelta(minutes=5),
        provenance="self_provided"), actor="test")


async def row(pool: asyncpg.Pool, decision_id: int) -> asyncpg.Record:
    found: asyncpg.Record = await pool.fetchrow("SELECT * FROM decisions WHERE id = $1",
                                                decision_id)
    return found


def decisions_counted(metrics: Metrics, channel: str, decision: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "consent_proxy_decisions_total",
        {"front": "test", "channel": channel, "decision": decision, "reason": reason})
    return value or 0.0


async def test_an_allowed_contact_is_committed_with_its_row(
        gate: Gate, parties: Parties, pool: asyncpg.Pool, clock: Clock,
        metrics: Metrics) -> None:
    number = mobile()
    await consent(pool, parties, number, "voice")
    committed = await gate.decide_and_commit(
        Proposal("voice", number, parties.voice), parties.caller, details={"via": "test"})
    assert committed.decision.allowed
    assert committed.claimed
    assert committed.evaluation.contact.to == number
    found = await row(pool, committed.decision_id)
    assert (found["decision"], found["channel"], found["client_id"], found["request_id"],
            found["organisation_id"], found["subject_hash"], found["decided_at"]) == (
        "allow", "voice", parties.caller.client_id, parties.caller.request_id, parties.org,
        subject_hash(number), clock.now)
    assert found["details"] == {"via": "test"}
    assert found["front"] == "test"  # the way in, named by the caller
    assert decisions_counted(metrics, "voice", "allow", committed.decision.reason) == 1


async def test_a_denial_is_committed_too(gate: Gate, parties: Parties, pool: asyncpg.Pool,
                                         metrics: Metrics) -> None:
    committed = await gate.decide_and_commit(
        Proposal("voice", mobile(), parties.voice), parties.caller)
    assert (committed.decision.decision, committed.decision.reason) == ("deny",
                                                                        "NO_LEGAL_BASIS")
    assert DENIAL_CODES[committed.decision.reason] == (403, 930030)
    assert (await row(pool, committed.decision_id))["reason"] == "NO_LEGAL_BASIS"
    assert decisions_counted(metrics, "voice", "deny", "NO_LEGAL_BASIS") == 1


async def test_only_the_callers_own_senders_count(gate: Gate, parties: Parties,
                                                  pool: asyncpg.Pool) -> None:
    number = mobile()
    await consent(pool, parties, number, "voice")
    stranger = Caller(parties.caller.client_id, ("another-organisation",), front="test")
    evaluation = await gate.decide(Proposal("voice", number, parties.voice), stranger)
    assert evaluation.decision.reason == "UNKNOWN_SENDER"
    assert (await gate.sender_of(stranger, parties.voice)) == (None, None)
    sender, org = await gate.sender_of(parties.caller, parties.voice)
    assert sender is not None
    assert org is not None
    assert (sender.sender, org.id) == (parties.voice, parties.org)


async def test_an_sms_body_is_checked_for_its_opt_out_line(
        gate: Gate, parties: Parties, pool: asyncpg.Pool) -> None:
    """N17: the gate tells whether the body already carries the organisation's footer."""
    number = mobile()
    await consent(pool, parties, number, "sms")
    plain = await gate.decide(Proposal("sms", number, parties.sms, body="Hallo"),
                              parties.caller)
    assert plain.decision.allowed
    assert "OPT_OUT_APPENDED" in plain.decision.obligations
    assert plain.contact.body_has_opt_out is False
    with_line = await gate.decide(Proposal(
        "sms", number, parties.sms, body=f"Hallo. Afmelden? Sms STOP naar {parties.sms}"),
        parties.caller)
    assert with_line.contact.body_has_opt_out is True


async def test_an_idempotency_key_is_claimed_once_and_replayed(
        gate: Gate, parties: Parties, pool: asyncpg.Pool) -> None:
    number = mobile()
    await consent(pool, parties, number, "voice")
    token = uuid.uuid4().hex
    claim = await gate.claim(parties.caller, token, "hash-1")
    assert (claim.state, claim.answer) == ("new", None)
    proposal = Proposal("voice", number, parties.voice)
    evaluation = await gate.decide(proposal, parties.caller)
    first, second = await asyncio.gather(*(
        gate.commit(parties.caller, Entry(evaluation), decided_at=gate.clock(), claim=claim)
        for _ in range(2)))
    assert sorted([first.claimed, second.claimed]) == [False, True]
    winner = first if first.claimed else second
    # Decided and committed, not yet answered: in flight.
    assert (await gate.claim(parties.caller, token, "hash-1")).state == "in_flight"
    answer = Answer(201, b'{"sid": "CA1"}', "application/json")
    await gate.finish(winner.decision_id, answer, outcome=Outcome(201, "CA1"), claim=claim)
    replay = await gate.claim(parties.caller, token, "hash-1")
    assert (replay.state, replay.answer) == ("replay", answer)
    assert (await gate.claim(parties.caller, token, "hash-2")).state == "mismatch"
    other = Caller("AC" + secrets.token_hex(16), parties.caller.organisations, front="test")
    assert (await gate.claim(other, token, "hash-1")).state == "new"  # keys are per client
    outcome = await pool.fetchrow(
        "SELECT upstream_status, upstream_sid FROM decision_outcomes WHERE decision_id = $1",
        winner.decision_id)
    assert tuple(outcome) == (201, "CA1")


async def test_a_denial_keeps_its_answer_for_replays_without_an_outcome(
        gate: Gate, parties: Parties, pool: asyncpg.Pool) -> None:
    token = uuid.uuid4().hex
    claim = await gate.claim(parties.caller, token, "h")
    committed = await gate.decide_and_commit(
        Proposal("voice", mobile(), parties.voice), parties.caller, claim=claim)
    assert not committed.decision.allowed
    answer = Answer(403, b'{"code": 930030}', "application/json")
    await gate.finish(committed.decision_id, answer, outcome=None, claim=claim)
    assert (await gate.claim(parties.caller, token, "h")).answer == answer
    assert await pool.fetchval("SELECT count(*) FROM decision_outcomes WHERE decision_id = $1",
                               committed.decision_id) == 0


async def test_finish_gives_back_what_no_contact_used(
        gate: Gate, parties: Parties, pool: asyncpg.Pool) -> None:
    """N5/N6: the provider could not be reached, so the contact request is usable again;
    a timeout gives nothing back."""
    number = mobile()
    request_id = await consent(pool, parties, number, "voice", kind="request")
    proposal = Proposal("voice", number, parties.voice)
    committed = await gate.decide_and_commit(proposal, parties.caller)
    assert (committed.decision.basis, committed.decision.consumes) == ("CONTACT_REQUEST",
                                                                       request_id)
    # Used up: the next contact has no basis.
    assert not (await gate.decide(proposal, parties.caller)).decision.allowed
    assert consumption.after_upstream(201) is None
    given = consumption.after_upstream(None)
    assert given == GiveBack("provider_unreachable")
    await gate.finish(committed.decision_id, Answer(502, b"{}", "application/json"),
                      outcome=Outcome(error="upstream unreachable"), give_back=given)
    reversal = await pool.fetchrow(
        "SELECT why, request_id FROM consumption_reversals WHERE decision_id = $1",
        committed.decision_id)
    assert tuple(reversal) == ("provider_unreachable", request_id)
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None
    assert await gate.give_back(committed.decision_id, "not_reached") is None  # once
    again = await gate.decide_and_commit(proposal, parties.caller)
    assert (again.decision.allowed, again.decision.consumes) == (True, request_id)
    await gate.finish(again.decision_id, Answer(504, b"{}", "application/json"),
                      outcome=Outcome(error="upstream timeout"))  # may have gone out
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is not None


async def test_a_request_used_by_a_concurrent_contact_is_decided_again(
        gate: Gate, parties: Parties, pool: asyncpg.Pool) -> None:
    """N6: of contacts decided at once on one request, one uses it; each other one is
    decided again on fresh facts (no basis left) and committed, one row each."""
    number = mobile()
    request_id = await consent(pool, parties, number, "voice", kind="request")
    proposal = Proposal("voice", number, parties.voice)
    evaluations = [await gate.decide(proposal, parties.caller) for _ in range(4)]
    assert all(e.decision.consumes == request_id for e in evaluations)

    async def again() -> Entry:
        return Entry(await gate.decide(proposal, parties.caller), {"again": True})

    committed = await asyncio.gather(*(
        gate.commit(parties.caller, Entry(e), decided_at=gate.clock(), again=again)
        for e in evaluations))
    allowed = [c for c in committed if c.decision.allowed]
    assert len(allowed) == 1
    assert allowed[0].entry.details == {}
    assert all(c.entry.details == {"again": True} and c.decision.reason == "NO_LEGAL_BASIS"
               for c in committed if c is not allowed[0])
    ids = [c.decision_id for c in committed]
    assert len(set(ids)) == 4
    assert await pool.fetchval(
        "SELECT count(*) FROM decisions WHERE consumed_consent_id = $1", request_id) == 1
    with pytest.raises(store.RequestAlreadyUsed):  # without `again`, the caller is told
        await gate.commit(parties.caller, Entry(evaluations[0]), decided_at=gate.clock())


async def test_a_spooled_stop_is_applied_before_deciding(
        gate: Gate, parties: Parties, pool: asyncpg.Pool, clock: Clock,
        spool: OptOutSpool) -> None:
    """N11: a STOP answered during an outage blocks the next decision, not the drain's
    next round."""
    number = mobile()
    await consent(pool, parties, number, "voice")
    await asyncio.to_thread(spool.append, SpoolEntry(
        message_sid="SM" + uuid.uuid4().hex, received_at=clock.now - dt.timedelta(minutes=5),
        to=parties.sms, subject=number, body_hash="0" * 64, intent="stop"))
    assert spool.entries == 1
    evaluation = await gate.decide(Proposal("voice", number, parties.voice), parties.caller)
    assert (evaluation.decision.decision, evaluation.decision.reason) == (
        "deny", "OBJECTION_ON_FILE")
    assert spool.entries == 0
