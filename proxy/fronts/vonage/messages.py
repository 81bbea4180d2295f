"""`POST /sms/json`: an SMS as the vonage SDK sends it, gated.

Authenticate (proxy/fronts/vonage/auth.py) → read the form or JSON body and check it as Vonage
would → decide its one recipient → commit the decision → answer a denial in Vonage's shape
(HTTP 200, a status, our reason and decision id), or forward with the N17 footer appended and
the upstream credentials swapped in → record the outcome. Vonage's SMS API has no idempotency
key, so none is claimed.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog
from aiohttp import web

from proxy import sms
from proxy.body import read_body
from proxy.front import answer_of
from proxy.fronts.vonage import auth, wire
from proxy.fronts.vonage.errors import (
    INTERNAL_ERROR,
    INVALID_MESSAGE,
    INVALID_PARAMS,
    MESSAGE_TOO_LONG,
    MISSING_PARAMS,
    SmsError,
    sms_denial,
    sms_response,
)
from proxy.fronts.vonage.keys import NAME, UPSTREAM
from proxy.fronts.vonage.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from proxy.gate import Caller, Evaluation, Gate, GiveBack, Outcome, Proposal, consumption
from proxy.gate.codes import UPSTREAM_TIMEOUT, UPSTREAM_UNREACHABLE
from proxy.gate.evaluation import sender_key
from proxy.keys import GATE, METRICS, REQUEST_ID
from proxy.logging import add_to_request

log = structlog.get_logger("proxy.front")

PATH = "/sms/json"
# The SMS API's parameters (developer.vonage.com, SMS API reference). Each may appear once.
FIELDS = ("api_key", "api_secret", "sig", "from", "to", "text", "type", "ttl",
          "status-report-req", "callback", "message-class", "client-ref", "account-ref",
          "entity-id", "content-id", "trusted-number", "body", "udh", "protocol-id",
          "timestamp")
# A binary message's payload (`body`, `udh`, `protocol-id`) is not text the gate can read
# nor append the opt-out line to (N17); wap-push, vCard and vCalendar neither.
TEXT_TYPES = ("text", "unicode")
BINARY_FIELDS = ("body", "udh", "protocol-id")


class _Gated(msgspec.Struct, frozen=True, gc=False):
    """What the request turned into: the decision, its details and the form to forward."""

    evaluation: Evaluation
    pairs: list[tuple[str, str]]
    details: dict[str, Any]
    refusal: SmsError | None = None  # allowed by law, refused for its content (N17)


async def _pairs(request: web.Request) -> list[tuple[str, str]]:
    if request.query_string:
        # Vonage reads query parameters too: one `to` in the query and another in the body
        # would be two recipients. Nothing is read from the query.
        raise SmsError(INVALID_PARAMS, "parameters belong in the body, not the query string")
    raw = await read_body(request)
    content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
    try:
        if content_type.startswith("application/json"):
            pairs = wire.scalar_pairs(wire.json_object(raw))
        elif content_type.startswith("application/x-www-form-urlencoded") or not raw:
            pairs = wire.form_pairs(raw)
        else:
            raise wire.Unreadable("expected a form (application/x-www-form-urlencoded) or "
                                  "JSON body")
        wire.check_text(pairs, FIELDS)
    except wire.Unreadable as exc:
        raise SmsError(INVALID_PARAMS, str(exc)) from exc
    return pairs


def validate(pairs: list[tuple[str, str]]) -> None:
    for key, _ in pairs:
        if key not in FIELDS:
            raise SmsError(INVALID_PARAMS, f"unknown parameter {key!r}")
    for name in ("from", "to"):
        if wire.first(pairs, name) is None:
            raise SmsError(MISSING_PARAMS, f"missing parameter {name!r}")
    kind = wire.first(pairs, "type") or "text"
    if kind not in TEXT_TYPES or any(wire.first(pairs, f) for f in BINARY_FIELDS):
        raise SmsError(INVALID_MESSAGE, "only text and unicode messages can be decided: the "
                       "opt-out line (N17) cannot be read in or added to other types")
    text = wire.first(pairs, "text")
    if text is None:
        raise SmsError(MISSING_PARAMS, "missing parameter 'text'")
    if len(text) > sms.MAX_BODY:
        raise SmsError(MESSAGE_TOO_LONG, f"the text is {len(text)} characters; at most "
                       f"{sms.MAX_BODY} are sent")


def _footer(pairs: list[tuple[str, str]], evaluation: Evaluation, sender: str) -> _Gated:
    """N17: the organisation's opt-out line appended when the decision obliges it; never
    truncated, and the parts counted before and after (Vonage bills each part)."""
    org, decision = evaluation.facts.organisation, evaluation.decision
    text = wire.first(pairs, "text") or ""
    if org is None or not decision.allowed or "OPT_OUT_APPENDED" not in decision.obligations:
        seg = sms.segments(text)
        return _Gated(evaluation, pairs, {"segments_before": seg.count,
                                          "segments_after": seg.count,
                                          "encoding": seg.encoding, "footer_appended": False})
    footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
    result = sms.apply_footer(text, footer, needed=True)
    details = {"segments_before": result.before.count, "segments_after": result.after.count,
               "encoding_before": result.before.encoding, "encoding": result.after.encoding,
               "footer_appended": True}
    if result.too_long:
        refusal = SmsError(MESSAGE_TOO_LONG, f"the text with the opt-out footer is "
                           f"{len(result.body)} characters; at most {sms.MAX_BODY} are sent. "
                           "Shorten the text.", reason="OPT_OUT_FOOTER_DOES_NOT_FIT")
        return _Gated(evaluation, pairs, details | {"footer_appended": False}, refusal)
    out = [(k, result.body if k == "text" else v) for k, v in pairs]
    if result.after.encoding == "UCS-2" and (wire.first(pairs, "type") or "text") == "text":
        # A footer with characters outside GSM-7 would arrive garbled as type=text.
        out = [(k, v) for k, v in out if k != "type"] + [("type", "unicode")]
    return _Gated(evaluation, out, details)


async def _decide(gate: Gate, caller: Caller, proposal: Proposal,
                  pairs: list[tuple[str, str]]) -> _Gated:
    evaluation = await gate.decide(proposal, caller)
    contact = evaluation.contact
    # What goes out is what was decided on: the E.164 `to` and the sender as registered, in
    # Vonage's spelling (no `+`).
    if contact.to is not None:
        pairs = [(k, wire.vonage_number(contact.to) if k == "to" else v) for k, v in pairs]
    if contact.sender is not None:
        registered = contact.sender.sender
        pairs = [(k, wire.vonage_number(registered) if k == "from" else v) for k, v in pairs]
    sender = sender_key(proposal.from_) or proposal.from_ or ""
    return _footer(pairs, evaluation, sender)


async def send(request: web.Request) -> web.Response:
    pairs = await _pairs(request)
    client, pairs = await auth.sms_client(request, pairs)
    validate(pairs)
    gate, caller = request.app[GATE], Caller.of(client, request.get(REQUEST_ID), NAME)
    proposal = Proposal("sms", wire.gate_number(wire.first(pairs, "to")),
                        wire.gate_number(wire.first(pairs, "from")),
                        body=wire.first(pairs, "text") or "")
    decided_at = gate.clock()

    async def decide() -> _Gated:
        return await _decide(gate, caller, proposal, pairs)

    committed = await gate.commit(caller, await decide(), decided_at=decided_at, again=decide)
    gated, decision_id, decision = committed.entry, committed.decision_id, committed.decision
    add_to_request(decision_id=decision_id, channel="sms", decision=decision.decision,
                   reason=decision.reason, basis=decision.basis,
                   to=gated.evaluation.contact.to)
    if not decision.allowed:
        response = sms_denial(decision, decision_id)
        await finish(gate, decision_id, response, None)
        return response
    if gated.refusal is not None:
        refusal = gated.refusal
        response = sms_response(refusal.sms_status, refusal.message,
                                decision_id=decision_id, **refusal.extra)
        why = str(refusal.extra.get("reason", refusal.sms_status))
        await finish(gate, decision_id, response, Outcome(error=refusal.message),
                     GiveBack("not_sent", why))
        return response
    return await _forward(request, gate, decision_id, gated.pairs)


async def _forward(request: web.Request, gate: Gate, decision_id: int,
                   pairs: list[tuple[str, str]]) -> web.Response:
    """The decision is committed: now, and only now, the message leaves."""
    app = request.app
    started = time.perf_counter()
    try:
        upstream = await app[UPSTREAM].send_sms(pairs, decision_id=decision_id)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(NAME, label).inc()
        log.warning("upstream_failed", decision_id=decision_id, error=label)
        _, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        response = sms_response(
            INTERNAL_ERROR, "Vonage did not answer in time; the message may or may not have "
            "been sent. It is not retried." if timeout else
            "Vonage could not be reached; nothing was sent.",
            reason="UPSTREAM_TIMEOUT" if timeout else "UPSTREAM_UNREACHABLE", code=code,
            decision_id=decision_id)
        # N6: nothing was sent when Vonage could not be reached; after a timeout it may have.
        await finish(gate, decision_id, response, Outcome(error=f"upstream {label}"),
                     None if timeout else consumption.after_upstream(None))
        return response
    app[METRICS].upstream_latency.labels(NAME).observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(NAME, str(upstream.status)).inc()
    response = web.Response(status=upstream.status, body=upstream.body,
                            content_type=upstream.content_type.split(";")[0])
    message_id, refused = _sent(upstream)
    add_to_request(upstream_status=upstream.status, sid=message_id)
    error = None if refused is None else f"vonage status {refused}"
    if upstream.status >= 400:
        error = f"upstream {upstream.status}"
    if error:
        log.warning("upstream_refused", decision_id=decision_id, status=upstream.status,
                    vonage_status=refused)
    give_back = consumption.after_upstream(upstream.status)
    if give_back is None and refused is not None and message_id is None:
        # Vonage answered 200 but sent no part: nothing went out (N5, N6).
        give_back = GiveBack("provider_refused", error)
    await finish(gate, decision_id, response, Outcome(upstream.status, message_id, error),
                 give_back)
    return response


def _sent(upstream: UpstreamResponse) -> tuple[str | None, str | None]:
    """The first part's message-id (None if no part was accepted) and the first non-zero
    status of a part (None if every part went)."""
    body = upstream.json()
    parts = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(parts, list):
        return None, "unreadable"
    ids = [p.get("message-id") for p in parts if isinstance(p, dict) and p.get("status") == "0"]
    bad = [p.get("status") for p in parts if not isinstance(p, dict) or p.get("status") != "0"]
    message_id = next((i for i in ids if isinstance(i, str)), None)
    return message_id, (str(bad[0]) if bad else None)


async def finish(gate: Gate, decision_id: int, response: web.Response,
                 outcome: Outcome | None, give_back: GiveBack | None = None) -> None:
    await gate.finish(decision_id, answer_of(response), outcome=outcome, give_back=give_back)
