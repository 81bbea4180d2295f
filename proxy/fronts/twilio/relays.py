"""Relays: the URLs Twilio requests for a dialer's calls and messages lead through the proxy.

A create (or a live-call update) names URLs Twilio will request later, signed with the token
of the account that owns the call: the upstream account, not the dialer's client. Each one is
rewritten to a relay URL on the proxy (PUBLIC_URL + a random id, stored in `relay_targets`
before the request is forwarded):

- TwiML URLs (`Url`, `FallbackUrl`, and the TwiML-returning URLs inside TwiML, twiml.py)
  lead to `/webhooks/twilio/voice/relay/{id}`: the proxy fetches the dialer's TwiML, signed
  for it with the client's token, decides every destination in it (dials.py), replaces
  each refused `<Dial>` with a spoken refusal and a hang-up, rewrites its URLs in turn, and
  answers Twilio. A dialer that is slow, down or answers junk gets the call hung up.
- Callbacks (`StatusCallback`, recording and machine-detection callbacks, a Pay session's
  `StatusCallback` (UpdatePayments), and those inside TwiML) lead to
  `/webhooks/twilio/callback/{id}`: the proxy records how the call or message went
  (`contact_outcomes`), then passes the request on as if from the client's own account (its
  AccountSid, signed with its token) and answers Twilio with the dialer's answer.

Both routes accept only requests with a valid X-Twilio-Signature of the upstream account. A
client that is disabled (or gone) is not asked nor signed for any more: its TwiML requests are
answered with a hang-up, its callbacks are recorded and not passed on.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
import structlog
from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from proxy import credentials, form, store
from proxy.db import STORE_ERRORS
from proxy.errors import ProxyError
from proxy.fronts.twilio import dials, twiml
from proxy.fronts.twilio.keys import HTTP, NAME
from proxy.fronts.twilio.webhooks import signed_form
from proxy.fronts.twilio.webhooks import twiml as twiml_response
from proxy.gate import Caller, Evaluation, Gate, GiveBack
from proxy.keys import CLIENTS, CLOCK, GATE, POOL, REQUEST_ID, SETTINGS
from proxy.policy.facts import ContactChannel

log = structlog.get_logger("proxy.relays")

TWIML_PATH = "/webhooks/twilio/voice/relay/{relay_id}"
CALLBACK_PATH = "/webhooks/twilio/callback/{relay_id}"
MAX_FIELDS = 200
MAX_ANSWER = twiml.MAX_BYTES  # the most of a dialer's answer passed back to Twilio
_CALL = re.compile(r"Calls/(CA[0-9a-fA-F]{32})\.json")
_PAYMENT = re.compile(r"Calls/(CA[0-9a-fA-F]{32})/Payments/PK[0-9a-fA-F]{32}\.json")
# Twilio's final CallStatus values of a call that reached nobody (N5, N6).
NOT_REACHED = frozenset({"busy", "no-answer", "failed", "canceled"})
# ... and MessageStatus values of a message that reached nobody: Twilio could not send it
# (failed), the carrier could not deliver it (undelivered), or it was called off (canceled).
MESSAGE_NOT_REACHED = frozenset({"failed", "undelivered", "canceled"})
# The callback that reports on the call itself, as the create (or a live update) named it; the
# proxy adds it when the dialer set none. Callbacks inside TwiML report on other legs.
CALL_STATUS_FIELD = "StatusCallback"


@dataclass(frozen=True, slots=True)
class UrlField:
    name: str
    method: str | None  # the field naming its method; None: always POST
    kind: twiml.UrlKind
    label: str | None = None  # how the relay records it, where the name alone is ambiguous


# Every URL field of the operations passed on in Twilio's OpenAPI document: CreateCall,
# UpdateCall, CreateMessage and UpdatePayments (the others have none, tests/test_relays.py).
# ClientNotificationUrl delivers push notifications: a callback.
CALL_CREATE = (
    UrlField("Url", "Method", "twiml"), UrlField("FallbackUrl", "FallbackMethod", "twiml"),
    UrlField("StatusCallback", "StatusCallbackMethod", "callback"),
    UrlField("RecordingStatusCallback", "RecordingStatusCallbackMethod", "callback"),
    UrlField("AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod", "callback"),
    UrlField("ClientNotificationUrl", None, "callback"),
)
CALL_UPDATE = CALL_CREATE[:3]
MESSAGE_CREATE = (UrlField("StatusCallback", None, "callback"),)
# A Pay session's updates (Twilio requires the field), recorded under the call's decision.
PAYMENT_UPDATE = (UrlField("StatusCallback", None, "callback", "Payments.StatusCallback"),)


class BadField(ProxyError):
    """A URL or method field Twilio would refuse (400, before anything is decided)."""

    status = 400


@dataclass(frozen=True, slots=True)
class Plan:
    """What a create or update asks of Twilio besides its To: checked before deciding."""

    fields: tuple[UrlField, ...]
    document: twiml.Document | None  # the inline Twiml
    application: bool  # a call handled by an ApplicationSid, whose TwiML is never seen
    own_callback: bool  # no StatusCallback: the proxy adds one to learn the outcome


@dataclass(frozen=True, slots=True)
class Dialed:
    """A call's To and the destinations of its inline TwiML, decided and not yet recorded."""

    call: Evaluation  # the To's, without its contact when the call is refused
    decided: tuple[dials.Decided, ...] = ()


@dataclass(frozen=True, slots=True)
class Ready:
    pairs: list[tuple[str, str]]
    denied: dials.Denied | None = None


def _value(pairs: Sequence[tuple[str, str]], name: str | None) -> str | None:
    return next((v for k, v in pairs if k == name and v != ""), None) if name else None


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def host_allowed(url: str, hosts: Sequence[str]) -> bool:
    """`twilio.relay_hosts`: the URL's host is one of them, or below a `*.domain` one. An
    empty list allows any host."""
    if not hosts:
        return True
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:
        return False
    return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


def _hosts_checked(slots: Sequence[twiml.UrlSlot], hosts: Sequence[str]) -> None:
    for slot in slots:
        if not host_allowed(slot.url, hosts):
            raise BadField(f"{slot.field}: the URL's host is not one of twilio.relay_hosts")


def plan(channel: ContactChannel, pairs: Sequence[tuple[str, str]], *,
         update: bool = False, hosts: Sequence[str] = ()) -> Plan:
    """Check the URL and method fields and parse the inline Twiml (400 if Twilio would not
    take them), so a bad request is refused before anything is decided or stored."""
    fields = (CALL_UPDATE if update else CALL_CREATE) if channel == "voice" else MESSAGE_CREATE
    _check(fields, pairs, hosts)
    text = _value(pairs, "Twiml") if channel == "voice" else None
    document = twiml.parse(text) if text is not None else None
    if document is not None:
        # An inline URL Twilio could take otherwise, or one on a host not allowed: 400.
        _hosts_checked(twiml.urls(document), hosts)
    application = channel == "voice" and not update and bool(_value(pairs, "ApplicationSid"))
    # A message's own StatusCallback overrides its messaging service's or application's:
    # the proxy adds one only where it takes nothing away from the dialer.
    own = not update and _value(pairs, "StatusCallback") is None and (
        channel == "voice" or not (_value(pairs, "MessagingServiceSid")
                                   or _value(pairs, "ApplicationSid")))
    return Plan(fields, document, application, own)


def _check(fields: Sequence[UrlField], pairs: Sequence[tuple[str, str]],
           hosts: Sequence[str]) -> None:
    for field in fields:
        for key, value in pairs:
            if key == field.name and value and not _is_url(value):
                raise BadField(f"{key} must be an absolute http or https URL")
            if key == field.name and value and not host_allowed(value, hosts):
                raise BadField(f"{key}: the URL's host is not one of twilio.relay_hosts")
            if key == field.method and value and value.upper() not in ("GET", "POST"):
                raise BadField(f"{key} must be GET or POST")


async def decide_create(gate: Gate, caller: Caller, plan: Plan,
                        pairs: Sequence[tuple[str, str]], evaluation: Evaluation) -> Dialed:
    """Decide the destinations of an allowed call's inline TwiML (and its ApplicationSid)
    beside its To; a refused call uses up nothing on its To's behalf either."""
    targets = list(plan.document.targets) if plan.document is not None else []
    if plan.application:
        targets.append(dials.application_target(_value(pairs, "To")))
    if not targets or not evaluation.decision.allowed:
        return Dialed(evaluation)
    decided = await dials.evaluate(gate, caller, targets, _value(pairs, "From"),
                                   gate.clock())
    refused = bool(dials.blocked(decided))
    return Dialed(dials.without_contact(evaluation) if refused else evaluation, tuple(decided))


async def ready(request: web.Request, gate: Gate, caller: Caller, decision_id: int,
                plan: Plan, dialed: Dialed | None, pairs: list[tuple[str, str]],
                decided_at: dt.datetime) -> Ready:
    """After the request's own decision is committed: commit its destinations' rows; if one
    is refused, so is the request; else rewrite its URLs to relays (stored before it is
    forwarded)."""
    if dialed is not None and dialed.decided:
        recorded = await dials.record(
            gate, caller, dialed.decided, _value(pairs, "From"), decided_at,
            {"source": "create", "call_decision_id": decision_id},
            call_refused=bool(dials.blocked(dialed.decided)))
        denied = dials.first_denied(recorded)
        if denied is not None:
            return Ready(pairs, denied)
    return Ready(await rewrite(request, caller.client_id, decision_id, plan, pairs))


async def gate_call_update(request: web.Request, caller: Caller, tail: str,
                           body: bytes | None) -> tuple[bytes | None, dials.Denied | None]:
    """A live-call update (`POST Calls/CA….json`) with new TwiML, URLs or callbacks: decided
    and rewritten as a create is, from the From of the call's own create decision. A Pay
    session's update (`POST Calls/CA…/Payments/PK….json`): its callback is relayed too."""
    found = _CALL.fullmatch(tail) or _PAYMENT.fullmatch(tail)
    if request.method != "POST" or found is None or not body:
        return body, None
    try:
        pairs = form.decode(body.decode("utf-8"), MAX_FIELDS)
    except (UnicodeDecodeError, form.TooManyFields) as exc:
        raise BadField("The update is not a form-encoded UTF-8 body of at most "
                       f"{MAX_FIELDS} fields") from exc
    hosts = request.app[SETTINGS].rules.relay_hosts
    if found.re is _PAYMENT:
        _check(PAYMENT_UPDATE, pairs, hosts)
        update = Plan(PAYMENT_UPDATE, None, application=False, own_callback=False)
    else:
        if len([k for k, _ in pairs if k in ("Twiml", "Url")]) > 1:
            raise BadField("Twiml and Url may appear once, and not together")
        update = plan("voice", pairs, update=True, hosts=hosts)
    if update.document is None and not any(
            _value(pairs, f.name) for f in update.fields):
        return body, None
    call = await store.call_decision(request.app[POOL], caller.client_id, found.group(1))
    if call is None:
        raise web.HTTPNotFound()
    decision_id, call_from = call
    if update.document is not None:
        gate = request.app[GATE]
        now = gate.clock()
        decided = await dials.evaluate(gate, caller, update.document.targets, call_from, now)
        recorded = await dials.record(
            gate, caller, decided, call_from, now,
            {"source": "update", "call_decision_id": decision_id},
            call_refused=bool(dials.blocked(decided)))
        denied = dials.first_denied(recorded)
        if denied is not None:
            return body, denied
    return form.encode(await rewrite(request, caller.client_id, decision_id, update, pairs)), None


# --- rewriting ---------------------------------------------------------------------------

def relay_url(public_url: str, kind: twiml.UrlKind, relay_id: str) -> str:
    path = TWIML_PATH if kind == "twiml" else CALLBACK_PATH
    return public_url + path.format(relay_id=relay_id)


class _Relays:
    """New relay ids for one request, stored together."""

    def __init__(self, request: web.Request, client_id: str, decision_id: int) -> None:
        self._public = request.app[SETTINGS].public_url
        self._client_id, self._decision_id = client_id, decision_id
        self.targets: list[store.RelayTarget] = []

    def add(self, kind: twiml.UrlKind, field: str, url: str | None, method: str) -> str:
        relay_id = secrets.token_urlsafe(18)  # 144 random bits
        self.targets.append(store.RelayTarget(relay_id, self._decision_id, self._client_id,
                                              kind, field, url, method))
        return relay_url(self._public, kind, relay_id)

    def document(self, doc: twiml.Document, blocked: set[int], base: str | None) -> str:
        slots = twiml.urls(doc, blocked, base)
        return twiml.render(doc, blocked, [self.add(s.kind, s.field, s.url, s.method)
                                           for s in slots], base)


async def rewrite(request: web.Request, client_id: str, decision_id: int, plan: Plan,
                  pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    relays = _Relays(request, client_id, decision_id)
    by_name = {f.name: f for f in plan.fields}
    out = []
    for key, value in pairs:
        field = by_name.get(key)
        if field is not None and value:
            method = (_value(pairs, field.method) or "POST").upper()
            value = relays.add(field.kind, field.label or key, value.strip(), method)
        elif key == "Twiml" and plan.document is not None and twiml.urls(plan.document):
            value = relays.document(plan.document, set(), None)
        out.append((key, value))
    if plan.own_callback:  # recorded, never passed on: the dialer asked for none
        # An empty StatusCallback field is "none" too: it takes the relay, so that there is
        # never a second StatusCallback (Twilio refuses a repeated one).
        own = relays.add("callback", "StatusCallback", None, "POST")
        empty = next((i for i, (k, _) in enumerate(out) if k == "StatusCallback"), None)
        if empty is None:
            out.append(("StatusCallback", own))
        else:
            out = [(k, v) for k, v in out if k != "StatusCallback"]
            out.insert(empty, ("StatusCallback", own))
    await store.add_relay_targets(request.app[POOL], relays.targets)
    return out


# --- the relay routes --------------------------------------------------------------------

class _DialerFailed(Exception):
    pass


async def _twilio_params(request: web.Request) -> list[tuple[str, str]]:
    """Twilio's parameters, after checking its signature (upstream token) and its account."""
    signed = await signed_form(request)
    pairs = list(request.query.items()) if request.method == "GET" else list(signed.items())
    upstream = request.app[SETTINGS].twilio_account_sid
    if upstream and _value(pairs, "AccountSid") != upstream:
        log.warning("relay_account_mismatch", route=request.path.rsplit("/", 1)[0])
        raise web.HTTPForbidden(text="Forbidden: not the upstream account")
    return pairs


async def _target(request: web.Request, kind: Literal["twiml", "callback"]
                  ) -> store.RelayTarget:
    target = await store.get_relay_target(request.app[POOL], request.match_info["relay_id"],
                                          kind)
    if target is None:
        raise web.HTTPNotFound()
    return target


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > MAX_ANSWER:
            raise _DialerFailed("answer too large")
    return bytes(data)


async def _enabled_client(request: web.Request, target: store.RelayTarget
                          ) -> store.Client | None:
    """The client a relay speaks for; None (logged) when it is disabled or gone: its token
    signs nothing any more, and its dialer is not asked (README: a disabled client)."""
    client = await request.app[CLIENTS].get(request, target.client_id)
    if client is None:
        log.warning("relay_client_disabled", decision_id=target.decision_id,
                    kind=target.kind, field=target.field)
    return client


async def _call_dialer(request: web.Request, target: store.RelayTarget, client: store.Client,
                       pairs: list[tuple[str, str]]) -> tuple[int, bytes, str]:
    """Request the dialer's own URL as Twilio would have: its method, Twilio's parameters
    with the client's AccountSid, signed with the client's token."""
    settings = request.app[SETTINGS]
    if not settings.proxy_secret or target.url is None:
        raise _DialerFailed("no client")
    token = credentials.derive_token(settings.proxy_secret, client.id,
                                     client.token_version)
    upstream = settings.twilio_account_sid
    params = [(k, v.replace(upstream, client.id) if upstream else v) for k, v in pairs]
    url, data = target.url, None
    if target.method == "GET":
        url += ("&" if urlsplit(url).query else ("" if url.endswith("?") else "?")) + (
            urlencode(params))
        signature = RequestValidator(token).compute_signature(url, {})
    else:
        data = urlencode(params)
        signature = RequestValidator(token).compute_signature(url, MultiDict(params))
    headers = {"X-Twilio-Signature": signature, "User-Agent": "consent-proxy"}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token_header := request.headers.get("I-Twilio-Idempotency-Token"):
        headers["I-Twilio-Idempotency-Token"] = token_header
    timeout = aiohttp.ClientTimeout(total=settings.rules.relay_timeout_seconds)
    try:
        async with request.app[HTTP].request(target.method, url, data=data, headers=headers,
                                             timeout=timeout, allow_redirects=False) as resp:
            return resp.status, await _read(resp), resp.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise _DialerFailed(type(exc).__name__) from exc


async def twiml_relay(request: web.Request) -> web.Response:
    """Twilio fetches TwiML: the dialer's, with every destination decided."""
    pairs = await _twilio_params(request)
    target = await _target(request, "twiml")
    client = await _enabled_client(request, target)
    if client is None:
        return twiml_response(twiml.HANGUP)
    try:
        status, body, _ = await _call_dialer(request, target, client, pairs)
    except _DialerFailed as exc:
        log.warning("twiml_relay_failed", decision_id=target.decision_id, error=str(exc))
        return twiml_response(twiml.HANGUP)
    if not 200 <= status < 300:
        log.warning("twiml_relay_failed", decision_id=target.decision_id, status=status)
        return twiml_response(twiml.HANGUP)
    try:
        doc = twiml.parse(body)
        # A URL that cannot be relayed, or on a host not allowed: hung up (fail closed).
        _hosts_checked(twiml.urls(doc, (), target.url), request.app[SETTINGS].rules.relay_hosts)
    except BadField as exc:
        log.warning("twiml_relay_failed", decision_id=target.decision_id, error=exc.message)
        return twiml_response(twiml.HANGUP)
    except twiml.MalformedTwiml as exc:
        log.warning("twiml_relay_failed", decision_id=target.decision_id, error=exc.message)
        return twiml_response(twiml.HANGUP)
    gate, caller = request.app[GATE], Caller.of(client, request.get(REQUEST_ID), NAME)
    now, call_from = gate.clock(), _value(pairs, "From")
    decided = await dials.evaluate(gate, caller, doc.targets, call_from, now)
    recorded = await dials.record(
        gate, caller, decided, call_from, now,
        {"source": "relay", "call_decision_id": target.decision_id, "field": target.field,
         "call_sid": _value(pairs, "CallSid")})
    blocked = dials.blocked([d for d, _ in recorded])
    relays = _Relays(request, caller.client_id, target.decision_id)
    text = relays.document(doc, blocked, target.url)
    await store.add_relay_targets(request.app[POOL], relays.targets)
    return twiml_response(text)


def _after_callback(field: str, call_status: str | None,
                    message_status: str | None) -> GiveBack | None:
    """A status callback of the call or message a decision sent: nobody reached gives it
    back."""
    if field != CALL_STATUS_FIELD:
        return None
    if call_status is not None:
        return GiveBack("not_reached", call_status) if call_status in NOT_REACHED else None
    if message_status in MESSAGE_NOT_REACHED:
        return GiveBack("not_reached", message_status)
    return None


def _duration(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 10 else None


async def callback_relay(request: web.Request) -> web.StreamResponse:
    """Twilio reports on a call or message: recorded, then passed on to the dialer."""
    pairs = await _twilio_params(request)
    target = await _target(request, "callback")

    def first(*names: str) -> str | None:
        return next((v for n in names if (v := _value(pairs, n)) is not None), None)

    outcome = store.ContactOutcome(
        decision_id=target.decision_id, relay_id=target.id, field=target.field,
        sid=first("CallSid", "MessageSid", "SmsSid"),
        status=first("CallStatus", "MessageStatus", "SmsStatus", "RecordingStatus",
                     "TranscriptionStatus"),
        answered_by=first("AnsweredBy"), duration_seconds=_duration(first("CallDuration")),
        error_code=first("ErrorCode"), received_at=request.app[CLOCK]())
    try:
        await store.record_contact_outcome(request.app[POOL], outcome)
    except STORE_ERRORS as exc:  # the dialer still gets its callback
        log.error("contact_outcome_not_recorded", decision_id=target.decision_id,
                  error=type(exc).__name__)
    # N5/N6: a call or message that reached nobody made no contact.
    given = _after_callback(target.field, first("CallStatus"),
                            first("MessageStatus", "SmsStatus"))
    if given is not None:
        await request.app[GATE].give_back(target.decision_id, given.why, given.detail)
    if target.url is None:
        return web.Response(status=204)
    client = await _enabled_client(request, target)
    if client is None:  # recorded above; not passed on, so Twilio is told nothing went wrong
        return web.Response(status=204)
    try:
        status, body, content_type = await _call_dialer(request, target, client, pairs)
    except _DialerFailed as exc:
        log.warning("callback_relay_failed", decision_id=target.decision_id,
                    field=target.field, error=str(exc))
        return web.Response(status=502)
    if status in (204, 304) or status < 200:
        return web.Response(status=status if status >= 200 else 502)
    headers = {"Content-Type": content_type} if content_type else {}
    return web.Response(status=status, body=body, headers=headers)


def add_routes(app: web.Application) -> None:
    for path, handler in ((TWIML_PATH, twiml_relay), (CALLBACK_PATH, callback_relay)):
        app.router.add_get(path, handler, allow_head=False)
        app.router.add_post(path, handler)
