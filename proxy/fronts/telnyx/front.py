"""The Telnyx drop-in front: `POST /v2/messages` and `POST /v2/calls` as the official SDK
speaks them, gated like every way in.

authenticate (Bearer `<client_id>.<token>`) → parse and validate as Telnyx does (fields.py) →
gate.claim (`Idempotency-Key`) → gate.commit → the denial, a refusal, or the request forwarded
with the upstream key → gate.finish with the outcome (and what no contact followed given back).
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import orjson
import structlog
from aiohttp import web

from proxy import credentials, sms, store
from proxy.body import read_body
from proxy.front import answer_of, client_scoped, replayed, request_hash
from proxy.fronts.telnyx import errors, fields
from proxy.fronts.telnyx.errors import TelnyxError
from proxy.fronts.telnyx.keys import CONFIG, NAME, UPSTREAM
from proxy.fronts.telnyx.settings import Grants, granted
from proxy.fronts.telnyx.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from proxy.gate import (
    Caller,
    Claim,
    Evaluation,
    Gate,
    GiveBack,
    Outcome,
    Proposal,
    consumption,
)
from proxy.gate.codes import (
    IDEMPOTENCY_IN_FLIGHT,
    IDEMPOTENCY_MISMATCH,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
)
from proxy.gate.evaluation import sender_key
from proxy.keys import CLIENTS, GATE, METRICS, REQUEST_ID, SETTINGS
from proxy.logging import add_to_request
from proxy.policy.facts import ContactChannel

log = structlog.get_logger("proxy.front")

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Sent upstream with every forwarded create: which committed decision let it through.
DECISION_HEADER = "X-Consent-Decision-Id"
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")
_PATHS: dict[ContactChannel, str] = {"sms": "messages", "voice": "calls"}


# --- authentication -------------------------------------------------------------------------

async def authenticate(request: web.Request) -> store.Client:
    """`Authorization: Bearer <client_id>.<token>`: a consent-proxy client's API key."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    found = credentials.split_api_key(key.strip()) if scheme.lower() == "bearer" else None
    secret = request.app[SETTINGS].proxy_secret
    client = None
    if found is not None and secret and len(found[0]) <= 64:
        client = await request.app[CLIENTS].get(request, found[0])
    if client is None or found is None or not secret or not credentials.token_matches(
            secret, client.id, client.token_version, found[1]):
        raise TelnyxError(401, "10009", "The required authentication headers were either "
                          "invalid or not included in the request.")
    return client


# --- the gate -------------------------------------------------------------------------------

class _Gated(msgspec.Struct, frozen=True, gc=False):
    """What a create turned into: the decision, its details and the body to forward."""

    evaluation: Evaluation
    body: dict[str, Any]
    details: dict[str, Any]
    refusal: TelnyxError | None = None  # allowed by law, refused for its content (N17)


def _footer(body: dict[str, Any], evaluation: Evaluation, sender: str) -> _Gated:
    org, decision = evaluation.facts.organisation, evaluation.decision
    text = body.get("text") or ""
    # `encoding: ucs2` makes Telnyx send even a GSM-7 text in UCS-2: counted as it goes out.
    ucs2 = body.get("encoding") == "ucs2"
    if org is None or not decision.allowed or "OPT_OUT_APPENDED" not in decision.obligations:
        seg = sms.segments(text, ucs2=ucs2)
        return _Gated(evaluation, body, {"segments_before": seg.count,
                                         "segments_after": seg.count,
                                         "encoding": seg.encoding, "footer_appended": False})
    footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
    result = sms.apply_footer(text, footer, needed=True)
    before, after = ((sms.segments(text, ucs2=True), sms.segments(result.body, ucs2=True))
                     if ucs2 else (result.before, result.after))
    details = {"segments_before": before.count, "segments_after": after.count,
               "encoding_before": before.encoding, "encoding": after.encoding,
               "footer_appended": True}
    if result.too_long:
        # N17: never truncate. The message as it would have to go out does not fit.
        refusal = TelnyxError(
            422, "10015", f"The message text with the opt-out footer is {len(result.body)} "
            f"characters; the limit is {sms.MAX_BODY}. Shorten the text.", pointer="/text",
            reason="OPT_OUT_FOOTER_DOES_NOT_FIT")
        return _Gated(evaluation, body, details | {"footer_appended": False}, refusal)
    # A media-only message has no text: the footer becomes its text.
    return _Gated(evaluation, {**body, "text": result.body}, details)


def _proposal(channel: ContactChannel, body: dict[str, Any], automated: bool) -> Proposal:
    from_raw = body.get("from") or (
        body.get("messaging_profile_id") if channel == "sms" else None)
    if channel != "sms":
        return Proposal(channel, body["to"], from_raw, automated=automated)
    return Proposal(channel, body["to"], from_raw, body=body.get("text") or "")


async def _decide(gate: Gate, caller: Caller, proposal: Proposal,
                  body: dict[str, Any]) -> _Gated:
    evaluation = await gate.decide(proposal, caller)
    # What goes out is what was decided on: the E.164 `to`, and the sender as registered.
    if evaluation.contact.to is not None:
        body = {**body, "to": evaluation.contact.to}
    if evaluation.contact.sender is not None and body.get("from"):
        body = {**body, "from": evaluation.contact.sender.sender}
    if proposal.channel == "sms":
        sender = sender_key(proposal.from_) or proposal.from_ or ""
        return _footer(body, evaluation, sender)
    return _Gated(evaluation, body, {"automated": proposal.automated})


def _own(grants: Grants, client: store.Client, body: dict[str, Any], name: str) -> None:
    """A Call Control application or messaging profile of the upstream account receives the
    events (numbers, texts) of what is sent with it, a billing group pays for it: on an
    account shared by several clients, each uses only its own (TELNYX_CONNECTIONS,
    TELNYX_MESSAGING_PROFILES, TELNYX_BILLING_GROUPS)."""
    value = body.get(name)
    if isinstance(value, str) and value and not granted(grants, client.id, value):
        raise TelnyxError(403, "10010", f"The '{name}' is not one this client may use",
                          pointer=f"/{name}")


async def _claim(request: web.Request, gate: Gate, caller: Caller, raw: bytes) -> Claim | None:
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise TelnyxError(400, "10015", f"{IDEMPOTENCY_HEADER} must be 1-256 printable ASCII "
                          "characters")
    claim = await gate.claim(caller, token, request_hash(request, raw))
    if claim.state == "mismatch":
        raise TelnyxError(IDEMPOTENCY_MISMATCH[0], str(IDEMPOTENCY_MISMATCH[1]),
                          f"{IDEMPOTENCY_HEADER} was already used for a different request in "
                          "the last 24 hours", title="Idempotency key reused")
    if claim.state == "in_flight":
        raise _in_flight()
    return claim


def _in_flight() -> TelnyxError:
    return TelnyxError(IDEMPOTENCY_IN_FLIGHT[0], str(IDEMPOTENCY_IN_FLIGHT[1]),
                       f"A request with this {IDEMPOTENCY_HEADER} is still being processed",
                       title="Idempotency key in flight")


async def create(request: web.Request, channel: ContactChannel) -> web.Response:
    if request.raw_path.partition("?")[0] != request.path or request.query_string:
        raise TelnyxError(404, "10005", "The requested resource or URL could not be found.")
    client = await authenticate(request)
    raw = await read_body(request)
    body = fields.parse(raw, request.headers.get("Content-Type", ""))
    automated = False
    config = request.app[CONFIG]
    if channel == "sms":
        fields.validate_message(body)
        _own(config.messaging_profiles, client, body, "messaging_profile_id")
    else:
        automated = fields.validate_call(body)
        _own(config.connections, client, body, "connection_id")
        _own(config.billing_groups, client, body, "billing_group_id")
        if isinstance(body.get("command_id"), str):
            # Telnyx answers a repeated command_id with the first call's ids: clients sharing
            # the upstream account must never meet there (another's call id would become this
            # client's to read and hang up).
            body = {**body, "command_id": client_scoped(client.id, body["command_id"])}
        conference = body.get("conference_config")
        if isinstance(conference, dict) and isinstance(conference.get("conference_name"), str):
            # Conference names are the upstream account's: scoped like command_id, so that a
            # person called is never joined to another client's conference.
            body = {**body, "conference_config": {
                **conference,
                "conference_name": client_scoped(client.id, conference["conference_name"])}}
    gate, caller = request.app[GATE], Caller.of(client, request.get(REQUEST_ID), NAME)
    claim = await _claim(request, gate, caller, raw)
    if claim is not None and claim.answer is not None:
        return replayed(claim.answer)
    decided_at = gate.clock()
    proposal = _proposal(channel, body, automated)

    async def decide() -> _Gated:
        return await _decide(gate, caller, proposal, body)

    committed = await gate.commit(caller, await decide(), decided_at=decided_at, claim=claim,
                                  again=decide)
    gated, decision_id, decision = committed.entry, committed.decision_id, committed.decision
    public_url = request.app[SETTINGS].public_url
    add_to_request(
        decision_id=decision_id, channel=channel, decision=decision.decision,
        reason=decision.reason, basis=decision.basis, to=gated.evaluation.contact.to)
    if not committed.claimed:  # the same key arrived twice at once: only the first goes out
        response = errors.render(public_url, _in_flight())
        await _finish(gate, decision_id, response, Outcome(error="idempotency token in flight"))
        return response
    if not decision.allowed:
        response = errors.denial(decision, channel, decision_id, public_url)
        await _finish(gate, decision_id, response, None, claim)
        return response
    if gated.refusal is not None:
        response = errors.render(public_url, gated.refusal)
        why = str(gated.refusal.meta.get("reason", gated.refusal.code))
        await _finish(gate, decision_id, response, Outcome(error=gated.refusal.message), claim,
                      GiveBack("not_sent", why))
        return response
    return await _forward(request, gate, decision_id, _PATHS[channel], gated.body, claim,
                          client.id)


async def _forward(request: web.Request, gate: Gate, decision_id: int, path: str,
                   body: dict[str, Any], claim: Claim | None, client_id: str) -> web.Response:
    app = request.app
    headers = {"Content-Type": "application/json", DECISION_HEADER: str(decision_id)}
    if claim is not None:
        headers[IDEMPOTENCY_HEADER] = client_scoped(claim.key.client_id, claim.key.token)
    started = time.perf_counter()
    try:
        upstream = await app[UPSTREAM].send("POST", path, body=orjson.dumps(body),
                                            headers=headers)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        status, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(NAME, label).inc()
        log.warning("upstream_failed", decision_id=decision_id, error=label)
        message = ("The provider did not answer in time; the request may or may not have "
                   "been delivered. It is not retried automatically." if timeout else
                   "The provider could not be reached; nothing was sent.")
        response = errors.render(app[SETTINGS].public_url, TelnyxError(
            status, str(code), message, title="Upstream " + label, decision_id=decision_id))
        if timeout:
            # The telnyx SDK retries a 5xx by itself (twice by default), with no idempotency
            # key: after a timeout the message or call may be out already, and a retry would
            # be a second one. The SDK honours this header.
            response.headers["x-should-retry"] = "false"
        # N6: nothing was sent when the provider could not be reached; after a timeout it
        # may have been.
        await _finish(gate, decision_id, response, Outcome(error=f"upstream {label}"), claim,
                      None if timeout else consumption.after_upstream(None))
        return response
    app[METRICS].upstream_latency.labels(NAME).observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(NAME, str(upstream.status)).inc()
    response = relayed(upstream, client_id)
    sid = resource_id(upstream)
    add_to_request(upstream_status=upstream.status, sid=sid)
    error = None if upstream.status < 400 else f"upstream {upstream.status}"
    if error:
        log.warning("upstream_refused", decision_id=decision_id, status=upstream.status)
    await _finish(gate, decision_id, response, Outcome(upstream.status, sid, error), claim,
                  consumption.after_upstream(upstream.status))
    return response


# Fields of Telnyx's answers that name the upstream account, which a client does not share:
# swapped for the client's own id, as the Twilio front swaps the AccountSid.
ACCOUNT_FIELDS = ("organization_id",)


def _swap_account(value: Any, client_id: str, depth: int = 0) -> bool:
    # Telnyx puts it in `data` (an answer) or `data.payload` (a webhook event): a few levels.
    if depth > 3:
        return False
    items = value.values() if isinstance(value, dict) else value if isinstance(
        value, list) else ()
    swapped = any([_swap_account(item, client_id, depth + 1) for item in items])
    if isinstance(value, dict):
        for name in ACCOUNT_FIELDS:
            if name in value:
                value[name], swapped = client_id, True
    return swapped


def own_account(body: bytes, client_id: str) -> bytes:
    """A Telnyx JSON body with the upstream account's id swapped for the client's."""
    parsed = UpstreamResponse(200, body, "application/json").json()
    return orjson.dumps(parsed) if _swap_account(parsed, client_id) else body


def relayed(upstream: UpstreamResponse, client_id: str) -> web.Response:
    """Telnyx's answer as the client gets it: the upstream account's id swapped for its own."""
    response = web.Response(status=upstream.status, body=own_account(upstream.body, client_id))
    response.headers["Content-Type"] = upstream.content_type
    return response


def resource_id(upstream: UpstreamResponse) -> str | None:
    """A message's `id`, a call's `call_control_id`: what the client reads it back by."""
    body = upstream.json()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    found = data.get("call_control_id") or data.get("id")
    return found if isinstance(found, str) else None


async def _finish(gate: Gate, decision_id: int, response: web.Response,
                  outcome: Outcome | None, claim: Claim | None = None,
                  give_back: GiveBack | None = None) -> None:
    await gate.finish(decision_id, answer_of(response), outcome=outcome, claim=claim,
                      give_back=give_back)


async def create_message(request: web.Request) -> web.Response:
    return await create(request, "sms")


async def create_call(request: web.Request) -> web.Response:
    return await create(request, "voice")
