"""Every number a call can reach is decided: the destinations in a call's TwiML.

A call's `To` is decided like any contact (proxy/twilio_front.py). Its TwiML can reach more
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
from aiohttp import web

from proxy import gate, stops, store, twiml
from proxy.keys import METRICS, POOL, READER, REQUEST_ID, SETTINGS, WRITER
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
    evaluation: gate.Evaluation


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


async def evaluate(request: web.Request, client: store.Client,
                   targets: Sequence[twiml.Target], call_from: str | None,
                   now: dt.datetime) -> list[Decided]:
    """Decide every destination that is not an agent (agents pass and are not recorded)."""
    rules = request.app[SETTINGS].rules
    await stops.apply_before_deciding(request.app)
    out = []
    for target in targets:
        caller = target.caller_id or call_from
        if target.kind == "agent" or (target.kind == "sip" and rules.allow_sip) or (
                target.kind == "application" and rules.allow_application_sid):
            continue
        if target.kind == "number":
            evaluation = await gate.evaluate(
                request.app[READER].load_facts, rules, channel="voice", to_raw=target.value,
                from_raw=caller, now=now, organisations=client.organisations)
        else:
            what = (target.element if target.block == APPLICATION_SID
                    else f"<{target.element}>")
            evaluation = await _unseen(request, client, target, caller, not_inspectable(what))
        out.append(Decided(target, evaluation))
    return out


async def _unseen(request: web.Request, client: store.Client, target: twiml.Target,
                  caller: str | None, decision: Decision) -> gate.Evaluation:
    """An evaluation the engine did not make: the sender's organisation for the record."""
    key = gate.sender_key(caller)
    found = await store.load_sender(request.app[POOL], key) if key else None
    sender, org = found if found and found[0].organisation_id in client.organisations else (
        None, None)
    contact = Contact(channel="voice", to=try_parse_number(target.value) if target.value
                      else None, from_=caller or "", sender=sender)
    return gate.Evaluation(contact, Facts(organisation=org), decision)


def blocked(decided: Sequence[Decided]) -> set[int]:
    """The blocks (and APPLICATION_SID) holding a refused destination."""
    return {d.target.block for d in decided if not d.evaluation.decision.allowed}


def without_contact(evaluation: gate.Evaluation) -> gate.Evaluation:
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


async def record(request: web.Request, client: store.Client, decided: Sequence[Decided],
                 call_from: str | None, decided_at: dt.datetime, details: dict[str, Any], *,
                 call_refused: bool = False) -> list[tuple[Decided, int]]:
    """Commit one decision row per destination (one group commit for all of them). Allowed
    destinations in a refused block, or of a refused call, make no contact."""
    refused = blocked(decided)
    rows = [Decided(d.target, without_contact(d.evaluation))
            if call_refused or d.target.block in refused else d for d in decided]
    return list(await asyncio.gather(*(
        _commit(request, client, d, call_from, decided_at, details) for d in rows)))


async def _commit(request: web.Request, client: store.Client, decided: Decided,
                  call_from: str | None, decided_at: dt.datetime, details: dict[str, Any],
                  ) -> tuple[Decided, int]:
    writer = request.app[WRITER]
    try:
        decision_id, _ = await writer.decision(_row(request, client, decided, decided_at,
                                                    details), None)
    except store.RequestAlreadyUsed:  # N6: a concurrent contact used the request: decide again
        (decided,) = await evaluate(request, client, [decided.target], call_from, decided_at)
        decision_id, _ = await writer.decision(_row(request, client, decided, decided_at,
                                                    details), None)
    decision = decided.evaluation.decision
    request.app[METRICS].decisions.labels("voice", decision.decision, decision.reason).inc()
    log.info("twiml_destination_decided", decision_id=decision_id,
             element=decided.target.element, decision=decision.decision,
             reason=decision.reason, basis=decision.basis, to=decided.evaluation.contact.to)
    return decided, decision_id


def _row(request: web.Request, client: store.Client, decided: Decided,
         decided_at: dt.datetime, details: dict[str, Any]) -> store.DecisionRecord:
    ev = decided.evaluation
    return store.DecisionRecord(
        decision=ev.decision, decided_at=decided_at, channel="voice",
        request_id=request.get(REQUEST_ID), account_sid=client.account_sid,
        sender=ev.contact.from_ or None,
        organisation_id=ev.facts.organisation.id if ev.facts.organisation else None,
        subject=ev.contact.to, topic=ev.contact.effective_topic,
        details={"twiml": {**details, "element": decided.target.element}},
    )
