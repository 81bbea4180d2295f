"""Every number a call can reach is decided: the destinations in a call's TwiML.

A call's `To` is decided like any contact (proxy/fronts/twilio/front.py). Its TwiML can reach more
people: every `<Dial>` target is decided as a voice contact from the block's `callerId` (or the
call's own From) by the same engine and fact lookup as the `To`, and recorded as a decision row
of its own. Destinations the gate cannot see (`<Sip>`, `<Application>`, an `ApplicationSid`,
anything that is not TwiML) are refused as TWIML_NOT_INSPECTABLE unless configured, and
recorded too; the call's own agents (`<Client>`, `<Queue>`, `<Conference>`, `<Sim>`) pass.

A refused block reaches nobody: allowed targets within it are recorded without using up a
contact request or marking a consent's first call (N5, N6), since no contact is made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from proxy.fronts.twilio import twiml
from proxy.gate import Caller, Evaluation, Gate, Proposal
from proxy.phone import try_parse_number
from proxy.policy import Decision
from proxy.policy.facts import Contact, Facts
from proxy.policy.reasons import TWIML_NOT_INSPECTABLE

log = structlog.get_logger("proxy.dials")

# The request's own ApplicationSid: not a block of a document, it refuses the whole call.
APPLICATION_SID = -1


@dataclass(frozen=True, slots=True)
class Decided:
    target: twiml.Target
    evaluation: Evaluation


@dataclass(frozen=True, slots=True)
class _Row:
    """A destination's decision row (a gate.Recordable)."""

    decided: Decided
    details: dict[str, Any]

    @property
    def evaluation(self) -> Evaluation:
        return self.decided.evaluation


@dataclass(frozen=True, slots=True)
class Denied:
    """The first refused destination of a request: its decision and committed row."""

    decision: Decision
    decision_id: int


def not_inspectable(what: str) -> Decision:
    return Decision(
        decision="deny", reason=TWIML_NOT_INSPECTABLE, rule="N4",
        explanation={
            "en": f"The call's {what} reaches a destination the gate cannot see, so no rule "
                  "can be applied to it.",
            "nl": f"De {what} van het gesprek bereikt een bestemming die de poort niet kan "
                  "zien, dus er kan geen regel op worden toegepast.",
        })


def application_target(to_raw: str | None) -> twiml.Target:
    return twiml.Target(APPLICATION_SID, "application", "ApplicationSid", to_raw or "", None)


async def evaluate(gate: Gate, caller: Caller, targets: Sequence[twiml.Target],
                   call_from: str | None, now: dt.datetime) -> list[Decided]:
    """Decide every destination that is not an agent (agents pass and are not recorded)."""
    rules = gate.rules
    await gate.apply_spool()
    out = []
    for target in targets:
        caller_id = target.caller_id or call_from
        if target.kind == "agent" or (target.kind == "sip" and rules.allow_sip) or (
                target.kind == "application" and rules.allow_application_sid):
            continue
        if target.kind == "number":
            evaluation = await gate.evaluate(Proposal("voice", target.value, caller_id),
                                             caller, now=now)
        else:
            what = (target.element if target.block == APPLICATION_SID
                    else f"<{target.element}>")
            evaluation = await _unseen(gate, caller, target, caller_id, not_inspectable(what))
        out.append(Decided(target, evaluation))
    return out


async def _unseen(gate: Gate, caller: Caller, target: twiml.Target, caller_id: str | None,
                  decision: Decision) -> Evaluation:
    """An evaluation the engine did not make: the sender's organisation for the record."""
    sender, org = await gate.sender_of(caller, caller_id)
    contact = Contact(channel="voice", to=try_parse_number(target.value) if target.value
                      else None, from_=caller_id or "", sender=sender)
    return Evaluation(contact, Facts(organisation=org), decision)


def blocked(decided: Sequence[Decided]) -> set[int]:
    """The blocks (and APPLICATION_SID) holding a refused destination."""
    return {d.target.block for d in decided if not d.evaluation.decision.allowed}


def without_contact(evaluation: Evaluation) -> Evaluation:
    """The same decision, recorded as not made: nothing consumed, no first call (N5, N6)."""
    decision = evaluation.decision
    if decision.consumes is None and decision.first_use is None:
        return evaluation
    return msgspec.structs.replace(evaluation, decision=msgspec.structs.replace(
        decision, consumes=None, first_use=None))


def first_denied(recorded: Sequence[tuple[Decided, int]]) -> Denied | None:
    for decided, decision_id in recorded:
        if not decided.evaluation.decision.allowed:
            return Denied(decided.evaluation.decision, decision_id)
    return None


async def record(gate: Gate, caller: Caller, decided: Sequence[Decided],
                 call_from: str | None, decided_at: dt.datetime, details: dict[str, Any], *,
                 call_refused: bool = False) -> list[tuple[Decided, int]]:
    """Commit one decision row per destination (one group commit for all of them). Allowed
    destinations in a refused block, or of a refused call, make no contact."""
    refused = blocked(decided)
    rows = [Decided(d.target, without_contact(d.evaluation))
            if call_refused or d.target.block in refused else d for d in decided]
    return list(await asyncio.gather(*(
        _commit(gate, caller, d, call_from, decided_at, details) for d in rows)))


async def _commit(gate: Gate, caller: Caller, decided: Decided, call_from: str | None,
                  decided_at: dt.datetime, details: dict[str, Any]) -> tuple[Decided, int]:
    def row(d: Decided) -> _Row:
        return _Row(d, {"twiml": {**details, "element": d.target.element}})

    async def again() -> _Row:  # N6: a concurrent contact used the request: decide again
        (fresh,) = await evaluate(gate, caller, [decided.target], call_from, decided_at)
        return row(fresh)

    committed = await gate.commit(caller, row(decided), decided_at=decided_at, again=again)
    decided, decision_id = committed.entry.decided, committed.decision_id
    decision = decided.evaluation.decision
    log.info("twiml_destination_decided", decision_id=decision_id,
             element=decided.target.element, decision=decision.decision,
             reason=decision.reason, basis=decision.basis, to=decided.evaluation.contact.to)
    return decided, decision_id
