"""The Twilio drop-in front: `/2010-04-01/Accounts/{AccountSid}/…` as the official SDK speaks it.

Creates of calls and messages are gated: authenticate, validate as Twilio would, decide, commit
the decision, then forward (or answer the denial in Twilio's error shape). Everything else a
dialer reads or updates about its own calls, messages and recordings is passed through.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import orjson
import structlog
from aiohttp import web

from proxy import (
    consumption,
    credentials,
    form,
    gate,
    relays,
    sms,
    stops,
    store,
    twilio_messages,
    twilio_routes,
)
from proxy.body import read_body
from proxy.codes import DENIAL_CODES
from proxy.db import STORE_ERRORS
from proxy.errors import ProxyError
from proxy.keys import (
    CLIENTS,
    CLOCK,
    METRICS,
    POOL,
    READER,
    REQUEST_ID,
    SETTINGS,
    UPSTREAM,
    WRITER,
)
from proxy.logging import add_to_request
from proxy.policy import REASONS, Decision
from proxy.policy.facts import ContactChannel, Organisation
from proxy.twilio_errors import TwilioError
from proxy.twilio_routes import NOT_PASSED_THROUGH
from proxy.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable

log = structlog.get_logger("proxy.front")


API = "/2010-04-01/Accounts/{account_sid}"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
# Sent upstream with every forwarded create: which committed decision let it through.
DECISION_HEADER = "X-Consent-Decision-Id"
MAX_FIELDS = 200
SINGLE_FIELDS = ("To", "From", "MessagingServiceSid", "Body", "Url", "Twiml", "ApplicationSid")
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, as Twilio's SDKs send it
_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")

# Twilio's own code for "Attempt to send to unsubscribed recipient": dialers already handle it.
TWILIO_UNSUBSCRIBED = 21610

# Faults of the proxy's own, in the same shape: (status, code).
UPSTREAM_UNREACHABLE = (502, 930502)
UPSTREAM_TIMEOUT = (504, 930504)
IDEMPOTENCY_IN_FLIGHT = (409, 930409)
IDEMPOTENCY_MISMATCH = (422, 930422)
SCHEDULED_SEND_NOT_GATED = (400, 930052)
FAULTS: Mapping[tuple[int, int], tuple[str, str, str]] = {
    UPSTREAM_UNREACHABLE: (
        "UPSTREAM_UNREACHABLE", "The provider could not be reached; nothing was sent.",
        "Check TWILIO_API_BASE and the network; the dialer may retry."),
    UPSTREAM_TIMEOUT: (
        "UPSTREAM_TIMEOUT", "The provider did not answer within upstream.timeout_seconds; the "
        "request may or may not have been delivered, and it is not retried.",
        "Look the call or message up before trying again."),
    IDEMPOTENCY_IN_FLIGHT: (
        "IDEMPOTENCY_IN_FLIGHT", "A request with the same I-Twilio-Idempotency-Token is still "
        "being processed.", "Wait and repeat the request to get its answer."),
    IDEMPOTENCY_MISMATCH: (
        "IDEMPOTENCY_MISMATCH", "The I-Twilio-Idempotency-Token was used in the last 24 hours "
        "for a different request.", "Use a new token for a new request."),
    NOT_PASSED_THROUGH: (
        "NOT_PASSED_THROUGH", "Only the calls, messages and recordings this client created are "
        "reachable through consent-proxy.", "Use Twilio directly for account administration."),
    SCHEDULED_SEND_NOT_GATED: (
        "SCHEDULED_SEND_NOT_GATED", "A message scheduled for later (ScheduleType/SendAt) would "
        "leave long after its decision, past any objection made in between; consent-proxy "
        "decides at the moment of sending.", "Send the message at the desired time from the "
        "dialer itself, without ScheduleType and SendAt."),
}


def more_info(code: int, public_url: str) -> str:
    if code >= 100_000:
        return f"{public_url}/errors/{code}"
    return f"https://www.twilio.com/docs/errors/{code}"


def error_body(status: int, code: int, message: str, public_url: str,
               **extra: Any) -> dict[str, Any]:
    # Never all of type/title/status/code: twilio-python would raise a different class.
    return {"code": code, "message": message, "more_info": more_info(code, public_url),
            "status": status, **extra}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()  # every denial's body: a fraction of json.dumps' time


def error_response(request: web.Request, exc: ProxyError) -> web.Response:
    public_url = request.app[SETTINGS].public_url
    if isinstance(exc, TwilioError):
        status, code, extra = exc.status, exc.code, exc.extra
    else:
        status, code, extra = _generic(exc.status)
        if exc.status == 503:
            status, code = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]
            extra = {"reason": "CONSENT_STORE_UNAVAILABLE"}
    response = web.json_response(error_body(status, code, exc.message, public_url, **extra),
                                 status=status, dumps=_dumps)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def http_error_response(request: web.Request, status: int, message: str) -> web.Response:
    return error_response(request, TwilioError(*_generic(status)[:2], message))


def _generic(status: int) -> tuple[int, int, dict[str, Any]]:
    known = {400: 20001, 401: 20003, 403: 20403, 404: 20404, 405: 20004, 413: 20413,
             429: 20429}
    return status, known.get(status, 20000 + status), {}


# --- authentication -------------------------------------------------------------------------

def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


async def authenticate(request: web.Request) -> store.Client:
    """HTTP Basic with a client's account_sid:auth_token; the path must be its own account."""
    found = _basic_credentials(request)
    secret = request.app[SETTINGS].proxy_secret
    client = None
    if found is not None and secret and _ACCOUNT_SID.fullmatch(found[0]):
        client = await request.app[CLIENTS].get(request, found[0])
    if client is None or found is None or not secret or not credentials.token_matches(
        secret, client.account_sid, client.token_version, found[1]
    ):
        raise TwilioError(401, 20003, "Authenticate")
    if request.match_info["account_sid"] != client.account_sid:
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
    if twilio_messages.is_scheduled(pairs):
        raise TwilioError(*SCHEDULED_SEND_NOT_GATED, twilio_messages.SCHEDULED_MESSAGE,
                          reason="SCHEDULED_SEND_NOT_GATED")


# --- the gate -------------------------------------------------------------------------------

class _Gated(msgspec.Struct, frozen=True, gc=False):
    """What a create turned into: the decision and the body to forward."""

    evaluation: gate.Evaluation
    pairs: list[tuple[str, str]]
    details: dict[str, Any]
    refusal: TwilioError | None = None  # allowed by law, refused for its content (N17)
    dialed: relays.Dialed | None = None  # a call's TwiML destinations, decided with its To


def _sms_footer(pairs: list[tuple[str, str]], evaluation: gate.Evaluation,
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


def _body_has_opt_out(pairs: Sequence[tuple[str, str]],
                      sender: str) -> Callable[[Organisation], bool]:
    body = _first(pairs, "Body") or ""

    def check(org: Organisation) -> bool:
        footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
        return sms.has_opt_out(body, footer, sender)

    return check


async def _decide(request: web.Request, client: store.Client, channel: ContactChannel,
                  pairs: list[tuple[str, str]], plan: relays.Plan) -> _Gated:
    from_raw = _first(pairs, "From") or (
        _first(pairs, "MessagingServiceSid") if channel == "sms" else None)
    # The footer names the sender as registered, as it goes out (a look-alike spelling too).
    sender = gate.sender_key(from_raw) or from_raw or ""
    await stops.apply_before_deciding(request.app)
    evaluation = await gate.evaluate(
        request.app[READER].load_facts, request.app[SETTINGS].rules, channel=channel,
        to_raw=_first(pairs, "To"), from_raw=from_raw, now=request.app[CLOCK](),
        organisations=client.organisations,
        body_check=_body_has_opt_out(pairs, sender) if channel == "sms" else None,
        content_template=channel == "sms" and twilio_messages.uses_content_template(pairs),
    )
    # What goes out is what was decided on: the E.164 To, and the sender as registered.
    if evaluation.contact.to is not None:
        pairs = form.put(pairs, "To", evaluation.contact.to)
    if evaluation.contact.sender is not None and _first(pairs, "From") is not None:
        pairs = form.put(pairs, "From", evaluation.contact.sender.sender)
    if channel == "sms":
        return _sms_footer(pairs, evaluation, sender)
    dialed = await relays.decide_create(request, client, plan, pairs, evaluation)
    return _Gated(dialed.call, pairs, {}, dialed=dialed)


def _record(request: web.Request, client: store.Client, gated: _Gated,
            decided_at: Any) -> store.DecisionRecord:
    ev = gated.evaluation
    return store.DecisionRecord(
        decision=ev.decision, decided_at=decided_at, channel=ev.contact.channel,
        request_id=request.get(REQUEST_ID),
        account_sid=client.account_sid, sender=ev.contact.from_ or None,
        organisation_id=ev.facts.organisation.id if ev.facts.organisation else None,
        subject=ev.contact.to, topic=ev.contact.effective_topic, details=gated.details,
    )


def _denial(decision: Decision, channel: ContactChannel, decision_id: int,
            public_url: str) -> web.Response:
    if decision.reason == "OBJECTION_ON_FILE" and channel == "sms":
        status, code = 400, TWILIO_UNSUBSCRIBED
        message = "Attempt to send to unsubscribed recipient"
    else:
        status, code = DENIAL_CODES.get(decision.reason, (403, 930030))
        message = decision.explanation["en"]
    extra: dict[str, Any] = {"reason": decision.reason, "decision_id": decision_id}
    if decision.retry_after is not None:
        extra["retry_after"] = decision.retry_after.isoformat()
    return web.json_response(error_body(status, code, message, public_url, **extra),
                             status=status, dumps=_dumps)


def upstream_token(claim: store.IdempotencyClaim) -> str:
    """The idempotency token sent upstream: tokens are per client, and clients may share one
    upstream account, so the same token of two clients must never meet there."""
    return hashlib.sha256(f"{claim.account_sid}:{claim.token}".encode()).hexdigest()


def _request_hash(request: web.Request, raw: bytes) -> str:
    return hashlib.sha256(request.method.encode() + request.path.encode() + b"\n" + raw
                          ).hexdigest()


async def _replay(request: web.Request, client: store.Client,
                  raw: bytes) -> tuple[web.Response | None, store.IdempotencyClaim | None]:
    token = request.headers.get(IDEMPOTENCY_HEADER)
    if not token:
        return None, None
    if not _TOKEN.fullmatch(token):
        raise TwilioError(400, 20001, f"{IDEMPOTENCY_HEADER} must be 1-256 printable ASCII "
                          "characters")
    claim = store.IdempotencyClaim(client.account_sid, token, _request_hash(request, raw))
    stored = await store.find_idempotent(request.app[POOL], client.account_sid, token,
                                         request.app[CLOCK]())
    if stored is not None and stored.status is None:
        # The first request may be answered with its outcome still queued: wait for that.
        await request.app[WRITER].sync()
        stored = await store.find_idempotent(request.app[POOL], client.account_sid, token,
                                             request.app[CLOCK]())
    if stored is None:
        return None, claim
    if stored.request_hash != claim.request_hash:
        raise TwilioError(*IDEMPOTENCY_MISMATCH, f"{IDEMPOTENCY_HEADER} was already used "
                          "for a different request in the last 24 hours")
    if stored.status is None:
        raise TwilioError(*IDEMPOTENCY_IN_FLIGHT, "A request with this "
                          f"{IDEMPOTENCY_HEADER} is still being processed")
    log.info("idempotent_replay", status=stored.status)
    response = web.Response(status=stored.status, body=stored.body)
    response.headers["Content-Type"] = stored.content_type
    return response, claim


async def create(request: web.Request, channel: ContactChannel, tail: str) -> web.Response:
    route = twilio_routes.create_route(request.method, request.raw_path)
    client = await authenticate(request)
    raw = await read_body(request)
    pairs = parse_form(request, raw)
    twilio_routes.check_fields(route, pairs)
    (validate_call if channel == "voice" else validate_message)(pairs)
    # Bad URLs or TwiML: 400 before anything is decided.
    plan = relays.plan(channel, pairs, hosts=request.app[SETTINGS].rules.relay_hosts)
    replay, claim = await _replay(request, client, raw)
    if replay is not None:
        return replay
    decided_at = request.app[CLOCK]()
    gated = await _decide(request, client, channel, pairs, plan)
    writer = request.app[WRITER]
    try:
        decision_id, claimed = await writer.decision(
            _record(request, client, gated, decided_at), claim)
    except store.RequestAlreadyUsed:  # N6: a concurrent contact used the request; decide again
        gated = await _decide(request, client, channel, pairs, plan)
        decision_id, claimed = await writer.decision(
            _record(request, client, gated, decided_at), claim)
    decision = gated.evaluation.decision
    request.app[METRICS].decisions.labels(channel, decision.decision, decision.reason).inc()
    # One log line per request: the decision rides on the request's own `request_handled`.
    add_to_request(
        decision_id=decision_id, channel=channel, decision=decision.decision,
        reason=decision.reason, basis=decision.basis, to=gated.evaluation.contact.to)
    if not claimed:  # the same token arrived twice at once: only the first goes out
        claim = None
        response = error_response(request, TwilioError(*IDEMPOTENCY_IN_FLIGHT, "A request "
                                  f"with this {IDEMPOTENCY_HEADER} is still being processed"))
        await _finish(request, decision_id, None, None, "idempotency token in flight",
                      response, None)
        return response
    if not decision.allowed:
        response = _denial(decision, channel, decision_id, request.app[SETTINGS].public_url)
        await _finish(request, decision_id, None, None, None, response, claim, outcome=False)
        return response
    if gated.refusal is not None:
        response = error_response(request, gated.refusal)
        await consumption.give_back(request.app, decision_id, "not_sent",
                                    str(gated.refusal.extra.get("reason", gated.refusal.code)))
        await _finish(request, decision_id, None, None, gated.refusal.message, response, claim)
        return response
    ready = await relays.ready(request, client, decision_id, plan, gated.dialed, gated.pairs,
                               decided_at)
    if ready.denied is not None:  # a destination in its TwiML was refused: so is the call
        response = _denial(ready.denied.decision, channel, ready.denied.decision_id,
                           request.app[SETTINGS].public_url)
        await _finish(request, decision_id, None, None, "not forwarded: TwiML destination "
                      f"refused (decision {ready.denied.decision_id})", response, claim)
        return response
    return await _forward(request, client, decision_id, tail, ready.pairs, claim)


async def _forward(request: web.Request, client: store.Client, decision_id: int, tail: str,
                   pairs: list[tuple[str, str]], claim: store.IdempotencyClaim | None,
                   ) -> web.Response:
    """The decision is committed: now, and only now, the request leaves."""
    app = request.app
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Accept": "application/json", DECISION_HEADER: str(decision_id)}
    if claim is not None:
        headers[IDEMPOTENCY_HEADER] = upstream_token(claim)
    started = time.perf_counter()
    try:
        upstream = await app[UPSTREAM].send(
            "POST", client.account_sid, tail, body=form.encode(pairs), headers=headers)
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        status, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(label).inc()
        log.warning("upstream_failed", decision_id=decision_id, error=label)
        if not timeout:  # N6: nothing was sent; after a timeout it may have been
            await consumption.after_upstream(app, decision_id, None)
        message = ("The provider did not answer in time; the request may or may not have "
                   "been delivered. It is not retried automatically." if timeout else
                   "The provider could not be reached; nothing was sent.")
        response = error_response(request, TwilioError(status, code, message,
                                                       decision_id=decision_id))
        await _finish(request, decision_id, None, None, f"upstream {label}", response, claim)
        return response
    app[METRICS].upstream_latency.observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(str(upstream.status)).inc()
    response = _relay(upstream)
    sid = _sid(upstream)
    # On the request's log line too: its outcome row is committed after the answer.
    add_to_request(upstream_status=upstream.status, sid=sid)
    error = None if upstream.status < 400 else f"upstream {upstream.status}"
    if error:
        log.warning("upstream_refused", decision_id=decision_id, status=upstream.status)
        await consumption.after_upstream(app, decision_id, upstream.status)
    await _finish(request, decision_id, upstream.status, sid, error, response, claim)
    return response


def _relay(upstream: UpstreamResponse) -> web.Response:
    response = web.Response(status=upstream.status, body=upstream.body)
    response.headers["Content-Type"] = upstream.content_type
    return response


def _sid(upstream: UpstreamResponse) -> str | None:
    body = upstream.json()
    sid = body.get("sid") if isinstance(body, dict) else None
    return sid if isinstance(sid, str) else None


async def _finish(request: web.Request, decision_id: int, upstream_status: int | None,
                  sid: str | None, error: str | None, response: web.Response,
                  claim: store.IdempotencyClaim | None, *, outcome: bool = True) -> None:
    """Record what happened. The decision row is already committed; the outcome row goes
    with the next group commit, and the answer does not wait for it. If the store fails
    now, the dialer still gets the provider's answer: a 503 for a message that did go out
    would make it send again."""
    body = response.body if isinstance(response.body, bytes) else b""
    content_type = response.headers.get("Content-Type", "application/json")
    try:
        if outcome:
            queued = request.app[WRITER].outcome(store.outcome_args(
                decision_id, upstream_status=upstream_status, upstream_sid=sid, error=error,
                response_status=response.status, response=body, content_type=content_type,
                claim=claim))
            queued.add_done_callback(functools.partial(
                _outcome_written, decision_id, sid, upstream_status))
        elif claim is not None:
            await store.complete_idempotent(request.app[POOL], claim, response.status, body,
                                            content_type)
    except STORE_ERRORS as exc:
        _outcome_not_recorded(decision_id, sid, upstream_status, exc)


def _outcome_written(decision_id: int, sid: str | None, upstream_status: int | None,
                     queued: asyncio.Future[Any]) -> None:
    if not queued.cancelled() and (exc := queued.exception()) is not None:
        _outcome_not_recorded(decision_id, sid, upstream_status, exc)


def _outcome_not_recorded(decision_id: int, sid: str | None, upstream_status: int | None,
                          exc: BaseException) -> None:
    # The SID goes to the log instead, so what was sent can still be traced.
    log.error("outcome_not_recorded", decision_id=decision_id, sid=sid,
              upstream_status=upstream_status, error=type(exc).__name__)


async def create_call(request: web.Request) -> web.Response:
    return await create(request, "voice", "Calls.json")


async def create_message(request: web.Request) -> web.Response:
    return await create(request, "sms", "Messages.json")


# --- pass-through ---------------------------------------------------------------------------

async def passthrough(request: web.Request) -> web.StreamResponse:
    """Fetch, list, update and delete of this client's own calls, messages and recordings,
    on the routes proxy/twilio_routes.py serves."""
    route = twilio_routes.passthrough_route(request.method, request.raw_path)
    client = await authenticate(request)
    body = await _passthrough_body(request, route)
    if route.operation in twilio_routes.FILTERED_LISTS:
        return await _filtered_list(request, client, route)
    assert route.owner is not None  # every other route lies below a call, message or recording
    kind, sid = route.owner
    if kind == "Recordings":
        await _require_owned_recording(request, client, sid)
    else:
        await _require_owned(request, client, sid)
    body, denied = await relays.gate_call_update(request, client, route.tail, body)
    if denied is not None:
        return _denial(denied.decision, "voice", denied.decision_id,
                       request.app[SETTINGS].public_url)
    return await _stream(request, client, route, body)


async def _passthrough_body(request: web.Request, route: twilio_routes.Route) -> bytes | None:
    raw = await read_body(request)
    if route.method != "POST":
        if raw:
            raise TwilioError(400, 20001, f"A {route.method} request takes no body")
        return None
    pairs = parse_form(request, raw)
    twilio_routes.check_fields(route, pairs)
    return form.encode(pairs)


async def _owned_sids(request: web.Request, client: store.Client,
                      sids: Sequence[str]) -> set[str]:
    # A create is answered before its outcome (which holds the SID) is committed: a dialer
    # that fetches what it just created must find it.
    await request.app[WRITER].sync()
    return await store.owned_sids(request.app[POOL], client.account_sid, sids)


async def _require_owned(request: web.Request, client: store.Client, sid: str) -> None:
    if not await _owned_sids(request, client, [sid]):
        raise TwilioError(404, 20404, f"The requested resource {request.path} was not found")


async def _require_owned_recording(request: web.Request, client: store.Client,
                                   sid: str) -> None:
    meta = await _send(request, client, f"Recordings/{sid}.json")
    data = meta.json() if meta.status == 200 else None
    call_sid = data.get("call_sid") if isinstance(data, dict) else None
    if not isinstance(call_sid, str):
        raise TwilioError(404, 20404, f"The requested resource {request.path} was not found")
    await _require_owned(request, client, call_sid)


_JSON = {"Accept": "application/json"}


async def _send(request: web.Request, client: store.Client, tail: str,
                query: str = "") -> UpstreamResponse:
    """A GET of the proxy's own (a list to filter, a recording's call), read whole."""
    try:
        return await request.app[UPSTREAM].send("GET", client.account_sid, tail, query=query,
                                                headers=_JSON)
    except UpstreamTimeout as exc:
        raise TwilioError(*UPSTREAM_TIMEOUT, "The provider did not answer in time") from exc
    except UpstreamUnreachable as exc:
        raise TwilioError(*UPSTREAM_UNREACHABLE, "The provider could not be reached") from exc


# Upstream pages read for one filtered list page, at most: a client whose own items are rare
# in a shared account pages on from where the proxy stopped.
MAX_LIST_ROUNDS = 10


async def _filtered_list(request: web.Request, client: store.Client,
                         route: twilio_routes.Route) -> web.Response:
    """A list page with only this client's items: the upstream account may be shared. The
    page's own fields must not tell of other clients' items either (`next_page_uri` on a
    page filtered to nothing would say that someone else called the number in `To=`), so
    the proxy reads on through upstream pages until it has a page's worth of the client's
    own items or the list ends, and only then hands out a next page."""
    key, sid_field = twilio_routes.FILTERED_LISTS[route.operation]
    wanted = twilio_routes.page_size(route.query)
    first: dict[str, Any] | None = None
    mine: list[Any] = []
    query: str | None = route.query
    next_uri = None
    for _ in range(MAX_LIST_ROUNDS):
        assert query is not None  # the loop ends at the list's end
        upstream = await _send(request, client, route.tail, query)
        data = upstream.json()
        if upstream.status != 200 or not isinstance(data, dict) or not isinstance(
                data.get(key), list):
            if first is None:
                return _relay(upstream)
            raise TwilioError(502, 20502, "The provider failed while the list was read on")
        first = first or data
        items = [i for i in data[key] if isinstance(i, dict)]
        sids = [i[sid_field] for i in items if isinstance(i.get(sid_field), str)]
        owned = await _owned_sids(request, client, sids)
        mine += [i for i in items if i.get(sid_field) in owned]
        next_uri = data.get("next_page_uri")
        query = twilio_routes.next_page_query(route, client.account_sid, next_uri)
        if len(mine) >= wanted or query is None:
            break
    assert first is not None
    given = first.get("start")
    start = given if isinstance(given, int) else 0
    page = {**first, key: mine, "end": start + max(len(mine) - 1, 0),
            "next_page_uri": next_uri if query is not None else None}
    return web.json_response(page, dumps=_dumps)


async def _stream(request: web.Request, client: store.Client, route: twilio_routes.Route,
                  body: bytes | None) -> web.StreamResponse:
    stream = request.app[UPSTREAM].stream(
        route.method, client.account_sid, route.tail, query=route.query, body=body,
        headers=twilio_routes.upstream_headers(route))
    try:
        async with stream:
            headers = {"Content-Type": stream.content_type}
            if stream.location is not None:
                headers["Location"] = stream.location
            response = web.StreamResponse(status=stream.status, headers=headers)
            await response.prepare(request)
            async for chunk in stream.chunks():
                await response.write(chunk)
            await response.write_eof()
            return response
    except UpstreamTimeout as exc:
        raise TwilioError(*UPSTREAM_TIMEOUT, "The provider did not answer in time") from exc
    except UpstreamUnreachable as exc:
        raise TwilioError(*UPSTREAM_UNREACHABLE, "The provider could not be reached") from exc


# --- documentation of our own codes ---------------------------------------------------------

async def error_doc(request: web.Request) -> web.Response:
    """`more_info` of every denial points here: what the code means and what to do."""
    try:
        code = int(request.match_info["code"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    for reason, (status, number) in DENIAL_CODES.items():
        if number == code:
            doc = REASONS[reason]
            return web.json_response({"code": code, "status": status, "reason": reason,
                                      "rule": doc.rule, "meaning": doc.meaning,
                                      "fix": doc.fix})
    for (status, number), (name, meaning, fix) in FAULTS.items():
        if number == code:
            return web.json_response({"code": code, "status": status, "reason": name,
                                      "rule": None, "meaning": meaning, "fix": fix})
    raise web.HTTPNotFound()


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{API}/Calls.json", create_call)
    app.router.add_post(f"{API}/Messages.json", create_message)
    app.router.add_route("*", API + "/{tail:.+}", passthrough)
    app.router.add_get("/errors/{code}", error_doc)
