"""CM's inbound-message (MO) webhook, `POST /webhooks/cm/inbound`: STOP, START and HELP
(N11, N12, proxy/inbound.py), and any other message relayed to the sender's own webhook.

CM signs nothing it delivers. Its webhook is a URL set up in CM's Channels or Gateway app, so
the secret travels in it: `…/webhooks/cm/inbound?secret=CM_WEBHOOK_SECRET`, or as the password
of HTTP Basic (`https://cm:SECRET@proxy.example/webhooks/cm/inbound`); compared in constant
time. No secret → 401, a wrong one → 403, CM_WEBHOOK_SECRET unset → 503 (nothing is taken
unauthenticated, and CM keeps the message and retries every 5 minutes for a month).

CM posts JSON: `{"reference", "messageContext", "from": {"number", "name"}, "to": {"number"},
"message": {"text", …}, "groupings", "timeUtc", "channel"}` (Business Messaging), or the older
SMS form `{"reference", "from", "to", "body", "groupings"}`; both are read. CM gives an MO no
id of its own (`reference` is the outgoing message it answers, shared by every reply to it),
and a retry repeats the same JSON: the message id is a hash of what identifies the message
(reference, messageContext, timeUtc, from, to, text), so a retry is recognised and a second
message, even a second STOP in reply to the same send, is not.

CM takes 200 as delivered; anything else is retried. The reply to a STOP, START or HELP is
sent as a plain SMS through the upstream (not gated: it answers the person's own message;
best effort after the objection is recorded; never for a repeat delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy import credentials, inbound, store
from proxy.body import read_body
from proxy.fronts.cm import request as cm_request
from proxy.fronts.cm.errors import REQUEST_MALFORMED, UNKNOWN, CmError
from proxy.fronts.cm.keys import CM_SETTINGS, HTTP, NAME, UPSTREAM
from proxy.fronts.cm.upstream import UpstreamTimeout, UpstreamUnreachable
from proxy.gate import sender_key
from proxy.keys import CLOCK, POOL, SETTINGS
from proxy.phone import try_parse_number

log = structlog.get_logger("proxy.front.cm")

INBOUND = "/webhooks/cm/inbound"
# The relayed message carries HMAC-SHA256(client token, body): CM signs nothing, so the
# sender's webhook checks this with its consent-proxy credentials instead.
SIGNATURE_HEADER = "X-Consent-Proxy-Signature"


def add_routes(app: web.Application) -> None:
    app.router.add_post(INBOUND, inbound_message)
    app.router.add_route("*", "/webhooks/cm/{tail:.*}", _not_served)


async def _not_served(request: web.Request) -> web.Response:
    status = 405 if request.path == INBOUND else 404
    raise CmError(status, UNKNOWN, "Not served: CM delivers inbound messages with POST "
                  f"{INBOUND}")


def _presented(request: web.Request) -> str | None:
    """The secret from the query (`secret`) or HTTP Basic's password."""
    values = request.query.getall("secret", [])
    if len(values) > 1:
        raise CmError(400, REQUEST_MALFORMED, "'secret' may appear only once")
    if values:
        return values[0]
    found = credentials.basic(request.headers.get("Authorization", ""))
    return found[1] if found else None


def check_secret(request: web.Request) -> None:
    expected = request.app[CM_SETTINGS].webhook_secret
    if expected is None:
        log.error("cm_webhook_secret_unset")
        raise CmError(503, UNKNOWN, "Inbound messages are not accepted until "
                      "CM_WEBHOOK_SECRET is set; CM will deliver this one again")
    presented = _presented(request)
    if presented is None:
        raise CmError(401, UNKNOWN, "The webhook secret is missing")
    if not credentials.constant_time_equals(presented, expected):
        log.warning("cm_webhook_secret_wrong")
        raise CmError(403, UNKNOWN, "The webhook secret is wrong")


def _clean(text: str) -> str:
    """A lone surrogate (a character a phone or network broke) as U+FFFD, NULs dropped: the
    message is still read, so that no STOP is refused for it (N11)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "")


def _number(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("number")
    return _clean(value) if isinstance(value, str) else ""


def read_message(data: dict[str, Any]) -> tuple[str, str, str, str]:
    """(message id, to, from, text) of CM's JSON, in either form."""
    message = data.get("message")
    text = message.get("text") if isinstance(message, dict) else data.get("body")
    # A message without text (a picture, a location) is no keyword, but it is taken: a
    # refusal would have CM deliver it again for a month.
    text = _clean(text) if isinstance(text, str) else ""
    from_, to = _number(data.get("from")), _number(data.get("to"))
    if not from_ or not to:
        raise CmError(400, REQUEST_MALFORMED, "Expected CM's inbound message: from.number "
                      "and to.number (or from and to)")
    identity = [data.get("reference"), data.get("messagecontext"), data.get("timeutc"),
                from_, to, text]
    try:
        key = orjson.dumps(identity, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate in a field CM gave: still one message
        key = json.dumps(identity, ensure_ascii=True, default=repr).encode()
    digest = hashlib.sha256(key).hexdigest()
    return f"cm-{digest[:40]}", to, from_, text


async def inbound_message(request: web.Request) -> web.Response:
    check_secret(request)
    raw = await read_body(request)
    data = cm_request.decode(raw, sendable=False)
    message_id, to, from_, text = read_message(data)
    handled = await inbound.handle_sms(request.app, inbound.InboundSms(
        NAME, message_id, request.app[CLOCK](), to, from_, text,
        sent_at=inbound.provider_time(data.get("timeutc"))))
    if handled.relay is not None:
        status = await _relay(request, raw, handled.relay)
        await inbound.relayed(request.app, handled.relay, None, status)
    elif handled.reply is not None and not handled.duplicate:
        await _reply(request.app, to, from_, handled.reply)
    return web.Response(status=200)


async def _reply(app: web.Application, our_number: str, person: str, text: str) -> None:
    """Best effort: the objection (or its lifting) is recorded whatever becomes of this."""
    sender = sender_key(our_number) or our_number
    to = try_parse_number(person)
    if to is None:
        return
    upstream = app[UPSTREAM]
    msg = {"from": "00" + sender[1:] if sender.startswith("+") else sender,
           "to": [{"number": "00" + to[1:]}], "body": {"type": "auto", "content": text},
           "allowedChannels": ["SMS"]}
    try:
        answer = await upstream.send(upstream.payload([msg]))
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        log.warning("inbound_reply_failed", error=type(exc).__name__)
        return
    if answer.status != 200:
        log.warning("inbound_reply_failed", status=answer.status)
    else:
        log.info("inbound_reply_sent")


async def _relay(request: web.Request, body: bytes, relay: inbound.Relay
                 ) -> int | None:
    """The message as CM posted it (the same bytes), to the sender's webhook, with an HMAC
    of the client's token over the body (the client whose token signs for the
    organisation)."""
    settings = request.app[SETTINGS]
    client = await store.relay_client(request.app[POOL], relay.organisation.id)
    if client is None or not settings.proxy_secret:
        log.warning("inbound_relay_skipped", why="no client for the organisation",
                    organisation=relay.organisation.id)
        return None
    token = credentials.derive_token(settings.proxy_secret, *client)
    signature = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    timeout = aiohttp.ClientTimeout(total=settings.rules.relay_timeout_seconds)
    try:
        async with request.app[HTTP].post(
            relay.url, data=body, timeout=timeout, allow_redirects=False,
            headers={"Content-Type": "application/json",
                     SIGNATURE_HEADER: f"sha256={signature}"}) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("inbound_relay_failed", error=type(exc).__name__)
        return None
