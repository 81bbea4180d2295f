"""The Twilio drop-in front: `/2010-04-01/Accounts/{AccountSid}/…` as the official SDK speaks it.

Creates of calls and messages are gated: authenticate and validate as Twilio would, then the
gate's steps (proxy/gate/): claim the idempotency token, decide and commit the decision, and
only then forward (or answer the denial in Twilio's error shape), and finish with the outcome.
Everything else a dialer reads or updates about its own calls, messages and recordings is
passed through (proxy/fronts/twilio/passthrough.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from aiohttp import web

from proxy import credentials, form, sms, store
from proxy.body import read_body
from proxy.front import answer_of, client_scoped, replayed, request_hash
from proxy.fronts.twilio import errors, messages, relays, routes
from proxy.fronts.twilio.errors import TwilioError
from proxy.fronts.twilio.keys import NAME, UPSTREAM
from proxy.fronts.twilio.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
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
    SCHEDULED_SEND_NOT_GATED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNREACHABLE,
)
from proxy.gate.evaluation import sender_key
from proxy.keys import CLIENTS, GATE, METRICS, REQUEST_ID, SETTINGS
from proxy.logging import add_to_request
from proxy.policy.facts import ContactChannel

log = structlog.get_logger("proxy.front")


API = "/2010-04-01/Accounts/{account_sid}"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
# Sent upstream with every forwarded create: which committed decision let it through.
DECISION_HEADER = "X-Consent-Decision-Id"
MAX_FIELDS = 200
SINGLE_FIELDS = ("To", "From", "MessagingServiceSid", "Body", "Url", "Twiml", "ApplicationSid")
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, as Twilio's SDKs send it
_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")


# --- authentication -------------------------------------------------------------------------

def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    return credentials.basic(request.headers.get("Authorization", ""))


async def authenticate(request: web.Request) -> store.Client:
    """HTTP Basic with a client's account_sid:auth_token; the path must be its own account."""
    found = _basic_credentials(request)
    secret = request.app[SETTINGS].proxy_secret
    client = None
    if found is not None and secret and _ACCOUNT_SID.fullmatch(found[0]):
        client = await request.app[CLIENTS].get(request, found[0])
    if client is None or found is None or not secret or not credentials.token_matches(
        secret, client.id, client.token_version, found[1]
    ):
        raise TwilioError(401, 20003, "Authenticate")
    if request.match_info["account_sid"] != client.id:
        raise TwilioError(404, 20404, "The requested resource "
                          f"{request.path} was not found")
    return client


# --- request parsing and Twilio's own validation --------------------------------------------

def parse_form(request: web.Request, raw: bytes) -> list[tuple[str, str]]:
    """The form body as ordered pairs: repeated keys and their order are kept."""
    content_type = request.headers.get("Content-Type", "application/x-www-form-urlencoded")
    if raw and not content_type.startswith("application/x-www-form-urlencoded"):
        raise TwilioError(400, 20001, "Expected an application/x-www-form-urlencoded body")
    try:
        text = raw.decode("utf-8")
        pairs = form.decode(text, MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise TwilioError(400, 20001, "The request body is not valid UTF-8") from exc
    except form.TooManyFields as exc:
        raise TwilioError(400, 20001, f"Too many form fields (at most {MAX_FIELDS})") from exc
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise TwilioError(400, 20001, f"Field {key!r} contains a NUL character")
    # The gate decides on these: a second To (or From, Body) would be checked once and could
    # reach someone else, or lose the opt-out footer. Lists such as MediaUrl may repeat.
    keys = [key for key, _ in pairs]
    for name in SINGLE_FIELDS:
        if keys.count(name) > 1:
            raise TwilioError(400, 20001, f"Field {name!r} may appear only once")
    return pairs


def _first(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name and value != "":
            return value
    return None


def validate_call(pairs: Sequence[tuple[str, str]]) -> None:
    if not _first(pairs, "To"):
        raise TwilioError(400, 21201, "No 'To' number is specified")
    if not _first(pairs, "From"):
        raise TwilioError(400, 21213, "No 'From' number is specified")
    if not any(_first(pairs, f) for f in ("Url", "Twiml", "ApplicationSid")):
        raise TwilioError(400, 21205, "A 'Url', 'Twiml' or 'ApplicationSid' is required")


def validate_message(pairs: Sequence[tuple[str, str]]) -> None:
    if not _first(pairs, "To"):
        raise TwilioError(400, 21604, "A 'To' phone number is required")
    if not (_first(pairs, "From") or _first(pairs, "MessagingServiceSid")):
        raise TwilioError(400, 21603, "A 'From' phone number or MessagingServiceSid is required")
    if not any(_first(pairs, f) for f in ("Body", "MediaUrl", "ContentSid")):
        raise TwilioError(400, 21619, "A text message body or media URL must be specified")
    if len(_first(pairs, "Body") or "") > sms.MAX_BODY:
        raise TwilioError(400, 21617, "The concatenated message body exceeds the 1600 "
                          "character limit")
    if messages.is_scheduled(pairs):
        raise TwilioError(*SCHEDULED_SEND_NOT_GATED, messages.SCHEDULED_MESSAGE,
                          reason="SCHEDULED_SEND_NOT_GATED")


# --- the gate -------------------------------------------------------------------------------

class _Gated(msgspec.Struct, frozen=True, gc=False):
    """What a create turned into: the decision, the details recorded with it and the body to
    forward (a gate.Recordable)."""

    evaluation: Evaluation
    pairs: list[tuple[str, str]]
    details: dict[str, Any]
    refusal: TwilioError | None = None  # allowed by law, refused for its content (N17)
    dialed: relays.Dialed | None = None  # a call's TwiML destinations, decided with its To


def _sms_footer(pairs: list[tuple[str, str]], evaluation: Evaluation,
                sender: str) -> _Gated:
    org = evaluation.facts.organisation
    decision = evaluation.decision
    body = _first(pairs, "Body") or ""
    if evaluation.contact.content_template:  # N17: Twilio sends the template, not Body
        return _Gated(evaluation, pairs, {"content_template": True, "footer_appended": False})
    if org is None or not decision.allowed or "OPT_OUT_APPENDED" not in decision.obligations:
        seg = sms.segments(body)
        details = {"segments_before": seg.count, "segments_after": seg.count,
                   "encoding": seg.encoding, "footer_appended": False}
        return _Gated(evaluation, pairs, details)
    footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
    result = sms.apply_footer(body, footer, needed=True)
    details = {"segments_before": result.before.count, "segments_after": result.after.count,
               "encoding_before": result.before.encoding, "encoding": result.after.encoding,
               "footer_appended": True}
    if result.too_long:
        # N17: never truncate. The message as it would have to go out does not fit.
        refusal = TwilioError(
            400, 21617, f"The message body with the opt-out footer is {len(result.body)} "
            f"characters; the limit is {sms.MAX_BODY}. Shorten the body.",
            reason="OPT_OUT_FOOTER_DOES_NOT_FIT")
        return _Gated(evaluation, pairs, details | {"footer_appended": False}, refusal)
    # A media-only message has no Body: the footer becomes its Body.
    return _Gated(evaluation, form.put(pairs, "Body", result.body), details)


def _proposal(channel: ContactChannel, pairs: Sequence[tuple[str, str]]) -> Proposal:
    from_raw = _first(pairs, "From") or (
        _first(pairs, "MessagingServiceSid") if channel == "sms" else None)
    if channel != "sms":
        return Proposal(channel, _first(pairs, "To"), from_raw)
    return Proposal(channel, _first(pairs, "To"), from_raw, body=_first(pairs, "Body") or "",
                    content_template=messages.uses_content_template(pairs))


async def _decide(gate: Gate, caller: Caller, proposal: Proposal,
                  pairs: list[tuple[str, str]], plan: relays.Plan) -> _Gated:
    evaluation = await gate.decide(proposal, caller)
    # What goes out is what was decided on: the E.164 To, and the sender as registered.
    if evaluation.contact.to is not None:
        pairs = form.put(pairs, "To", evaluation.contact.to)
    if evaluation.contact.sender is not None and _first(pairs, "From") is not None:
        pairs = form.put(pairs, "From", evaluation.contact.sender.sender)
    if proposal.channel == "sms":
        # The footer names the sender as registered, as it goes out (a look-alike spelling too).
        sender = sender_key(proposal.from_) or proposal.from_ or ""
        return _sms_footer(pairs, evaluation, sender)
    dialed = await relays.decide_create(gate, caller, plan, pairs, evaluation)
    return _Gated(dialed.call, pairs, {}, dialed=dialed)



async def _claim(request: web.Request, gate: Gate, caller: Caller, raw: bytes) -> Claim | None:
    """The request's idempotency token looked up: None without one, else a new claim or the
    first request's answer to replay; a token in flight or used for another request is
    refused in Twilio's shape."""
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise TwilioError(400, 20001, f"{IDEMPOTENCY_HEADER} must be 1-256 printable ASCII "
                          "characters")
    claim = await gate.claim(caller, token, request_hash(request, raw))
    if claim.state == "mismatch":
        raise TwilioError(*IDEMPOTENCY_MISMATCH, f"{IDEMPOTENCY_HEADER} was already used "
                          "for a different request in the last 24 hours")
    if claim.state == "in_flight":
        raise TwilioError(*IDEMPOTENCY_IN_FLIGHT, "A request with this "
                          f"{IDEMPOTENCY_HEADER} is still being processed")
    return claim


async def create(request: web.Request, channel: ContactChannel, tail: str) -> web.Response:
    route = routes.create_route(request.method, request.raw_path)
    client = await authenticate(request)
    raw = await read_body(request)
    pairs = parse_form(request, raw)
    routes.check_fields(route, pairs)
    (validate_call if channel == "voice" else validate_message)(pairs)
    # Bad URLs or TwiML: 400 before anything is decided.
    plan = relays.plan(channel, pairs, hosts=request.app[SETTINGS].rules.relay_hosts)
    gate, caller = request.app[GATE], Caller.of(client, request.get(REQUEST_ID), NAME)
    claim = await _claim(request, gate, caller, raw)
    if claim is not None and claim.answer is not None:
        return replayed(claim.answer)
    decided_at = gate.clock()
    proposal = _proposal(channel, pairs)

    async def decide() -> _Gated:
        return await _decide(gate, caller, proposal, pairs, plan)

    committed = await gate.commit(caller, await decide(), decided_at=decided_at, claim=claim,
                                  again=decide)
    gated, decision_id, decision = committed.entry, committed.decision_id, committed.decision
    public_url = request.app[SETTINGS].public_url
    # One log line per request: the decision rides on the request's own `request_handled`.
    add_to_request(
        decision_id=decision_id, channel=channel, decision=decision.decision,
        reason=decision.reason, basis=decision.basis, to=gated.evaluation.contact.to)
    if not committed.claimed:  # the same token arrived twice at once: only the first goes out
        response = errors.error_response(request, TwilioError(
            *IDEMPOTENCY_IN_FLIGHT, f"A request with this {IDEMPOTENCY_HEADER} is still being "
            "processed"))
        await _finish(gate, decision_id, response, Outcome(error="idempotency token in flight"))
        return response
    if not decision.allowed:
        response = errors.denial(decision, channel, decision_id, public_url)
        await _finish(gate, decision_id, response, None, claim)
        return response
    if gated.refusal is not None:
        response = errors.error_response(request, gated.refusal)
        why = str(gated.refusal.extra.get("reason", gated.refusal.code))
        await _finish(gate, decision_id, response, Outcome(error=gated.refusal.message), claim,
                      GiveBack("not_sent", why))
        return response
    ready = await relays.ready(request, gate, caller, decision_id, plan, gated.dialed,
                               gated.pairs, decided_at)
    if ready.denied is not None:  # a destination in its TwiML was refused: so is the call
        response = errors.denial(ready.denied.decision, channel, ready.denied.decision_id,
                                 public_url)
        await _finish(gate, decision_id, response, Outcome(
            error=f"not forwarded: TwiML destination refused (decision "
                  f"{ready.denied.decision_id})"), claim)
        return response
    return await _forward(request, gate, client, decision_id, tail, ready.pairs, claim)


async def _forward(request: web.Request, gate: Gate, client: store.Client, decision_id: int,
                   tail: str, pairs: list[tuple[str, str]], claim: Claim | None,
                   ) -> web.Response:
    """The decision is committed: now, and only now, the request leaves."""
    app = request.app
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Accept": "application/json", DECISION_HEADER: str(decision_id)}
    if claim is not None:
        headers[IDEMPOTENCY_HEADER] = client_scoped(claim.key.client_id, claim.key.token)
    started = time.perf_counter()
    try:
        upstream = await app[UPSTREAM].send(
            "POST", client.id, tail, body=form.encode(pairs), headers=headers)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        status, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(NAME, label).inc()
        log.warning("upstream_failed", decision_id=decision_id, error=label)
        message = ("The provider did not answer in time; the request may or may not have "
                   "been delivered. It is not retried automatically." if timeout else
                   "The provider could not be reached; nothing was sent.")
        response = errors.error_response(request, TwilioError(status, code, message,
                                                              decision_id=decision_id))
        # N6: nothing was sent when the provider could not be reached; after a timeout it
        # may have been.
        await _finish(gate, decision_id, response, Outcome(error=f"upstream {label}"), claim,
                      None if timeout else consumption.after_upstream(None))
        return response
    app[METRICS].upstream_latency.labels(NAME).observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(NAME, str(upstream.status)).inc()
    response = relayed(upstream)
    sid = _sid(upstream)
    # On the request's log line too: its outcome row is committed after the answer.
    add_to_request(upstream_status=upstream.status, sid=sid)
    error = None if upstream.status < 400 else f"upstream {upstream.status}"
    if error:
        log.warning("upstream_refused", decision_id=decision_id, status=upstream.status)
    await _finish(gate, decision_id, response, Outcome(upstream.status, sid, error), claim,
                  consumption.after_upstream(upstream.status))
    return response


def relayed(upstream: UpstreamResponse) -> web.Response:
    response = web.Response(status=upstream.status, body=upstream.body)
    response.headers["Content-Type"] = upstream.content_type
    return response


def _sid(upstream: UpstreamResponse) -> str | None:
    body = upstream.json()
    sid = body.get("sid") if isinstance(body, dict) else None
    return sid if isinstance(sid, str) else None

async def _finish(gate: Gate, decision_id: int, response: web.Response,
                  outcome: Outcome | None, claim: Claim | None = None,
                  give_back: GiveBack | None = None) -> None:
    """Record what happened (Gate.finish), with the answer as the dialer got it."""
    await gate.finish(decision_id, answer_of(response), outcome=outcome, claim=claim,
                      give_back=give_back)


async def create_call(request: web.Request) -> web.Response:
    return await create(request, "voice", "Calls.json")


async def create_message(request: web.Request) -> web.Response:
    return await create(request, "sms", "Messages.json")
