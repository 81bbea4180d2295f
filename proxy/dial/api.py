"""`POST /dial/v1/decisions` and `POST /dial/v1/decisions/{id}/outcome`: a SIP dialer asks the
gate at dial time and places the call itself; nothing is forwarded.

A decision is made as for a Twilio call create: the outage spool first, the same engine and
fact lookup, the same group commit (the decision row, a consumed contact request, a first
call). A call_id is claimed before deciding, so a retransmitted INVITE (or two identical
requests at once) gets the first answer and makes no second decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import structlog
from aiohttp import web

from proxy import gate, stops, store
from proxy.db import STORE_ERRORS
from proxy.dial import answer, attempts
from proxy.dial.request import DialRequest, authenticate, decision_id, dial_request, outcome_status
from proxy.errors import BadInput, Conflict, NotFound
from proxy.keys import CLOCK, GATE, METRICS, POOL, READER, REQUEST_ID, SETTINGS, WRITER
from proxy.logging import add_to_request

log = structlog.get_logger("proxy.dial")

PREFIX = "/dial/v1"
# How long a repeated call_id waits for the first request's answer before 409.
IN_FLIGHT_WAIT_SECONDS = 5.0
# N5/N6: attempts that reached nobody give back what their decision consumed.
NOT_REACHED = frozenset({"no_answer", "busy", "failed", "rejected", "cancelled"})


def is_dial_route(request: web.Request) -> bool:
    return request.path.startswith(PREFIX + "/")


error_response = answer.error_response


async def decide(request: web.Request) -> web.Response:
    client = await authenticate(request)
    dial = await dial_request(request)
    app = request.app
    now = app[CLOCK]()
    earlier = await attempts.claim(app[POOL], client.id, dial.call_id,
                                   dial.fingerprint(), now)
    if earlier is not None:
        return await _replay(request, client, dial, earlier)
    try:
        decision_id_, stored = await _decide(request, client, dial)
    except BaseException:
        with contextlib.suppress(*STORE_ERRORS):
            await attempts.release(app[POOL], client.id, dial.call_id)
        raise
    try:
        await attempts.complete(app[POOL], client.id, dial.call_id, decision_id_,
                                stored)
    except STORE_ERRORS as exc:  # decided and committed: the dialer gets its answer
        log.error("dial_answer_not_stored", decision_id=decision_id_,
                  error=type(exc).__name__)
    return answer.render(stored, now)


async def _decide(request: web.Request, client: store.Client,
                  dial: DialRequest) -> tuple[int, dict[str, Any]]:
    app = request.app
    decided_at = app[CLOCK]()
    await stops.apply_before_deciding(app)

    async def evaluate() -> gate.Evaluation:
        return await gate.evaluate(
            app[READER].load_facts, app[SETTINGS].rules, channel="voice", to_raw=dial.to,
            from_raw=dial.from_, now=decided_at, organisations=client.organisations,
            automated=dial.automated)

    evaluation = await evaluate()
    try:
        decision_id_, _ = await app[WRITER].decision(
            _record(request, client, dial, evaluation, decided_at), None)
    except store.RequestAlreadyUsed:  # N6: a concurrent contact used the request; decide again
        evaluation = await evaluate()
        decision_id_, _ = await app[WRITER].decision(
            _record(request, client, dial, evaluation, decided_at), None)
    decision = evaluation.decision
    app[METRICS].decisions.labels("voice", decision.decision, decision.reason).inc()
    add_to_request(decision_id=decision_id_, channel="voice", decision=decision.decision,
                   reason=decision.reason, basis=decision.basis, to=evaluation.contact.to)
    return decision_id_, answer.decided(decision, decision_id_)


def _record(request: web.Request, client: store.Client, dial: DialRequest,
            ev: gate.Evaluation, decided_at: dt.datetime) -> store.DecisionRecord:
    return store.DecisionRecord(
        decision=ev.decision, decided_at=decided_at,
        channel="voice", request_id=request.get(REQUEST_ID), client_id=client.id,
        sender=ev.contact.from_ or None,
        organisation_id=ev.facts.organisation.id if ev.facts.organisation else None,
        subject=ev.contact.to, topic=ev.contact.effective_topic,
        details={"dial": {"call_id": dial.call_id, "automated": dial.automated}})


async def _replay(request: web.Request, client: store.Client, dial: DialRequest,
                  earlier: attempts.Attempt) -> web.Response:
    """The same call_id again (a retransmitted INVITE): the first answer, once there is one."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    pause = 0.005
    while True:
        if earlier.request_hash != dial.fingerprint():
            raise BadInput("this call_id was used in the last 24 hours for another to, from "
                           "or automated", "call_id")
        if earlier.answer is not None:
            log.info("dial_replay", decision_id=earlier.answer["decision_id"])
            return answer.render(earlier.answer, request.app[CLOCK]())
        if time.monotonic() >= deadline:
            raise Conflict("a decision for this call_id is still being made; repeat the "
                           "request", "call_id")
        await asyncio.sleep(pause)  # the first request is deciding: a few milliseconds
        pause = min(pause * 2, 0.1)
        found = await attempts.find(request.app[POOL], client.id, dial.call_id)
        if found is None:  # its decision failed and the claim was dropped: decide now
            return await decide(request)
        earlier = found


async def outcome(request: web.Request) -> web.Response:
    client = await authenticate(request)
    wanted = decision_id(request)
    status = await outcome_status(request)
    app = request.app
    found = await attempts.dial_decision(app[POOL], client.id, wanted)
    if found is None:
        raise NotFound("no such decision of this client", "decision_id")
    if not found.allowed:
        raise Conflict("the decision denied the call: no attempt was made", "decision_id")
    stored = await attempts.record_outcome(app[POOL], wanted, status, app[CLOCK]())
    if stored != status:
        raise Conflict(f"the outcome {stored!r} is already recorded for this decision",
                       "status")
    if stored in NOT_REACHED:  # again on a repeat: giving back happens once (proxy/store/)
        await app[GATE].give_back(wanted, "not_reached", stored)
    add_to_request(decision_id=wanted, outcome=stored)
    return web.json_response({"decision_id": wanted, "status": stored})


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/decisions", decide)
    app.router.add_post(PREFIX + r"/decisions/{decision_id:\d+}/outcome", outcome)

