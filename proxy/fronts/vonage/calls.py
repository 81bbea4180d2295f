"""The Voice API: `POST /v1/calls` gated, `GET /v1/calls/{uuid}` of the client's own calls
passed through, `PUT /v1/calls/{uuid}` limited to what reaches nobody new.

A call is decided for every phone number it can reach (proxy/fronts/vonage/ncco.py): its `to`
first, then each `connect` endpoint of its NCCO, one decision row each, all committed before
anything is forwarded. One refused number refuses the call; the allowed numbers of a refused
call are recorded without using up a contact request or marking a first call (N5, N6).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiohttp import web

from proxy import store
from proxy.body import read_body
from proxy.fronts.vonage import auth, events, ncco, wire
from proxy.fronts.vonage.errors import VoiceError, voice_denial, voice_response
from proxy.fronts.vonage.keys import NAME, UPSTREAM
from proxy.fronts.vonage.messages import finish
from proxy.fronts.vonage.upstream import (
    CALL_UUID,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.gate import Caller, Evaluation, Gate, GiveBack, Outcome, Proposal, consumption
from proxy.gate.codes import NOT_PASSED_THROUGH, UPSTREAM_TIMEOUT, UPSTREAM_UNREACHABLE
from proxy.keys import GATE, METRICS, POOL, REQUEST_ID, WRITER
from proxy.logging import add_to_request

log = structlog.get_logger("proxy.front")

CALLS = "/v1/calls"
CALL = "/v1/calls/{uuid}"
# PUT actions on a live call that reach nobody new; `transfer` (to a new NCCO or answer_url)
# is refused: what it connects to has not been decided.
HARMLESS_ACTIONS = frozenset({"hangup", "mute", "unmute", "earmuff", "unearmuff"})


def _bad(exc: ncco.BadCall | wire.Unreadable) -> VoiceError:
    extra: dict[str, Any] = {}
    if isinstance(exc, ncco.BadCall):
        extra["invalid_parameters"] = [{"name": exc.field, "reason": str(exc)}]
    return VoiceError(400, str(exc), **extra)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        raise VoiceError(415, "expected an application/json body")
    try:
        return wire.json_object(raw)
    except wire.Unreadable as exc:
        raise _bad(exc) from exc


def _no_nul(value: Any, field: str = "body") -> None:
    if isinstance(value, str) and "\x00" in value:
        raise VoiceError(400, f"{field}: contains a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, field)
            _no_nul(item, f"{field}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_nul(item, f"{field}[{i}]")


@dataclass(frozen=True, slots=True)
class _Row:
    """One number's decision row (a gate.Recordable)."""

    evaluation: Evaluation
    details: dict[str, Any]


def _without_contact(evaluation: Evaluation) -> Evaluation:
    """The same decision, recorded as not made: nothing consumed, no first call (N5, N6)."""
    decision = evaluation.decision
    if decision.consumes is None and decision.first_use is None:
        return evaluation
    return msgspec.structs.replace(evaluation, decision=msgspec.structs.replace(
        decision, consumes=None, first_use=None))


def _where(target: ncco.Target) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in target.where)[1:]


async def create(request: web.Request) -> web.Response:
    client = await auth.voice_client(request)
    body = await _json_body(request)
    _no_nul(body)
    try:
        plan = ncco.plan(body)
    except ncco.BadCall as exc:
        raise _bad(exc) from exc
    gate, caller = request.app[GATE], Caller.of(client, request.get(REQUEST_ID), NAME)
    decided_at = gate.clock()
    first, rest = plan.targets[0], plan.targets[1:]

    def proposal(target: ncco.Target) -> Proposal:
        return Proposal("voice", wire.gate_number(target.number),
                        wire.gate_number(target.caller_id))

    async def decide_all() -> list[Evaluation]:
        call = await gate.decide(proposal(first), caller, now=decided_at)
        if not call.decision.allowed:
            return [call]
        others = [await gate.evaluate(proposal(t), caller, now=decided_at) for t in rest]
        if any(not e.decision.allowed for e in others):  # the call is refused: no contact
            return [_without_contact(call), *[_without_contact(e) for e in others]]
        return [call, *others]

    evaluations = await decide_all()

    def row(i: int, evaluation: Evaluation) -> _Row:
        return _Row(evaluation, {"endpoint": _where(plan.targets[i])} if i else {})

    async def again_first() -> _Row:  # N6: a concurrent contact used the request first
        return row(0, (await decide_all())[0])

    committed = await gate.commit(caller, row(0, evaluations[0]), decided_at=decided_at,
                                  again=again_first)
    decision_id, decision = committed.decision_id, committed.decision
    add_to_request(decision_id=decision_id, channel="voice", decision=decision.decision,
                   reason=decision.reason, basis=decision.basis,
                   to=committed.evaluation.contact.to)
    if not decision.allowed:
        response = voice_denial(request, decision, decision_id)
        await finish(gate, decision_id, response, None)
        return response

    def again_for(target: ncco.Target) -> Callable[[], Awaitable[Evaluation]]:
        return lambda: gate.evaluate(proposal(target), caller, now=decided_at)

    rows = await asyncio.gather(*(
        _commit_other(gate, caller, row(i, e), decided_at, decision_id,
                      again_for(plan.targets[i]))
        for i, e in enumerate(evaluations[1:], start=1)))
    refused = next(((r.evaluation, d) for r, d in rows if not r.evaluation.decision.allowed),
                   None)
    if refused is not None:
        denied_eval, denied_id = refused
        response = voice_denial(request, denied_eval.decision, denied_id)
        # The call's own row consumed nothing when the refusal was known before it was
        # committed; if a destination was refused only on deciding again, give it back.
        await finish(gate, decision_id, response, Outcome(
            error=f"not forwarded: NCCO destination refused (decision {denied_id})"),
            GiveBack("not_sent", "NCCO destination refused"))
        return response
    decided = [committed.evaluation, *[r.evaluation for r, _ in rows]]
    return await _forward(request, gate, client.id, decision_id, plan, decided)


async def _commit_other(gate: Gate, caller: Caller, row: _Row, decided_at: dt.datetime,
                        call_decision_id: int,
                        again: Callable[[], Awaitable[Evaluation]]) -> tuple[_Row, int]:
    details = {**row.details, "call_decision_id": call_decision_id}

    async def fresh() -> _Row:
        return _Row(await again(), details)

    committed = await gate.commit(caller, _Row(row.evaluation, details),
                                  decided_at=decided_at, again=fresh)
    decision = committed.decision
    log.info("ncco_destination_decided", decision_id=committed.decision_id,
             decision=decision.decision, reason=decision.reason,
             to=committed.evaluation.contact.to)
    return committed.entry, committed.decision_id


def _registered(evaluation: Evaluation, written: str) -> str:
    sender = evaluation.contact.sender
    return wire.vonage_number(sender.sender) if sender is not None else written


async def _forward(request: web.Request, gate: Gate, client_id: str, decision_id: int,
                   plan: ncco.Plan, decided: list[Evaluation]) -> web.Response:
    """Every number is decided and committed: now, and only now, the call is placed."""
    numbers = [wire.vonage_number(e.contact.to) if e.contact.to else t.number
               for e, t in zip(decided, plan.targets, strict=True)]
    call_from = _registered(decided[0], plan.call_from)
    # Every connect that dials a number presents the caller ID decided for it, written out
    # even where the dialer left it to Vonage (N16: no caller ID the gate did not see).
    connect_from = {t.where[1]: _registered(e, t.caller_id or "")
                    for e, t in zip(decided, plan.targets, strict=True)
                    if t.where[0] == "ncco" and isinstance(t.where[1], int)}
    body = ncco.rewritten(plan, numbers, call_from, connect_from, client_id)
    # The call's events lead through the proxy: a call that reaches nobody is no contact.
    body = await events.relay_event_url(request, client_id, decision_id, body)
    app = request.app
    started = time.perf_counter()
    try:
        upstream = await app[UPSTREAM].call("POST", None, body, decision_id=decision_id)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(NAME, label).inc()
        log.warning("upstream_failed", decision_id=decision_id, error=label)
        status, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        response = voice_response(
            request, status, "Vonage did not answer in time; the call may or may not have "
            "been placed. It is not retried." if timeout else
            "Vonage could not be reached; no call was placed.",
            reason="UPSTREAM_TIMEOUT" if timeout else "UPSTREAM_UNREACHABLE", code=code,
            decision_id=decision_id)
        await finish(gate, decision_id, response, Outcome(error=f"upstream {label}"),
                     None if timeout else consumption.after_upstream(None))
        return response
    app[METRICS].upstream_latency.labels(NAME).observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(NAME, str(upstream.status)).inc()
    response = _relayed(upstream)
    data = upstream.json()
    call_uuid = data.get("uuid") if isinstance(data, dict) else None
    call_uuid = call_uuid if isinstance(call_uuid, str) else None
    add_to_request(upstream_status=upstream.status, sid=call_uuid)
    error = None if upstream.status < 400 else f"upstream {upstream.status}"
    if error:
        log.warning("upstream_refused", decision_id=decision_id, status=upstream.status)
    await finish(gate, decision_id, response, Outcome(upstream.status, call_uuid, error),
                 consumption.after_upstream(upstream.status))
    return response


def _relayed(upstream: UpstreamResponse) -> web.Response:
    response = web.Response(status=upstream.status, body=upstream.body)
    response.headers["Content-Type"] = upstream.content_type
    return response


# --- the client's own calls -------------------------------------------------------------------

async def _own_call(request: web.Request, client: store.Client) -> str:
    call_uuid = request.match_info["uuid"]
    if CALL_UUID.fullmatch(call_uuid):
        # A create is answered before its outcome (which holds the uuid) is committed.
        await request.app[WRITER].sync()
        if await store.owned_sids(request.app[POOL], client.id, [call_uuid]):
            return call_uuid
    raise VoiceError(404, f"call {request.match_info['uuid'][:64]!r} not found")


async def _passed(request: web.Request, method: Any, call_uuid: str,
                  body: dict[str, Any] | None = None) -> web.Response:
    try:
        upstream = await request.app[UPSTREAM].call(method, call_uuid, body)
    except UpstreamTimeout as exc:
        raise VoiceError(*UPSTREAM_TIMEOUT[:1], "Vonage did not answer in time") from exc
    except UpstreamUnreachable as exc:
        raise VoiceError(UPSTREAM_UNREACHABLE[0], "Vonage could not be reached") from exc
    return _relayed(upstream)


async def get_call(request: web.Request) -> web.Response:
    client = await auth.voice_client(request)
    if await read_body(request):
        raise VoiceError(400, "a GET takes no body")
    return await _passed(request, "GET", await _own_call(request, client))


async def update_call(request: web.Request) -> web.Response:
    """Hang up, mute or earmuff one of the client's own calls. A transfer is refused: the
    NCCO or answer_url it moves the call to would connect numbers nobody decided."""
    client = await auth.voice_client(request)
    body = await _json_body(request)
    call_uuid = await _own_call(request, client)
    action = body.get("action")
    if action == "transfer":
        status, code = NOT_PASSED_THROUGH
        raise VoiceError(status, "transfer: a call moved to a new NCCO or answer_url would "
                         "reach numbers consent-proxy has not decided; end the call and "
                         "create a new one", reason="NOT_PASSED_THROUGH", code=code)
    if not isinstance(action, str) or action not in HARMLESS_ACTIONS or \
            set(body) != {"action"}:
        raise VoiceError(400, "action: expected one of " + ", ".join(sorted(HARMLESS_ACTIONS)),
                         invalid_parameters=[{"name": "action", "reason": "not accepted"}])
    return await _passed(request, "PUT", call_uuid, body)
