"""Inbound SMS from Vonage: `/webhooks/vonage/inbound-sms` (GET with a query, POST with a form
or JSON, as the dashboard's "HTTP method" is set).

Only signed deliveries are read (N11: an objection must come from the person, not from
whoever can reach this URL), in either of Vonage's schemes:

- signed parameters (`sig`, `timestamp`, `nonce`): the signature secret and method of the
  account (`VONAGE_SIGNATURE_SECRET`, `VONAGE_SIGNATURE_METHOD`), checked with the vonage
  SDK's `Auth.check_signature`;
- a signed JWT (`Authorization: Bearer`, HS256 with the signature secret), checked with
  `vonage_jwt.verify_signature`; its `payload_hash` (SHA-256 of the body) is checked here,
  since the helper does not.

A signature older than `MAX_AGE` (by the app's clock) is refused as a replay. What is read
goes to proxy/inbound.py (STOP/START/HELP, once per messageId); the reply is sent back to the
person through the upstream as a plain message, not gated (it answers the person's own
message); a message that is no keyword is relayed to the sender's inbound webhook, signed
with the client's token as the signature secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
import structlog
from aiohttp import web
from vonage_http_client import Auth
from vonage_jwt.errors import VonageVerifyJwtError
from vonage_jwt.verify_jwt import verify_signature

from proxy import credentials, inbound, store
from proxy.body import read_body
from proxy.fronts.vonage import wire
from proxy.fronts.vonage.keys import CONFIG, HTTP, NAME, UPSTREAM
from proxy.fronts.vonage.settings import VonageSettings
from proxy.fronts.vonage.upstream import UpstreamTimeout, UpstreamUnreachable
from proxy.keys import CLOCK, POOL, SETTINGS

log = structlog.get_logger("proxy.webhooks")

PATH = "/webhooks/vonage/inbound-sms"
MAX_AGE = dt.timedelta(minutes=5)
SINGLE = ("msisdn", "to", "messageId", "text", "type", "keyword", "message-timestamp",
          "timestamp", "nonce", "sig", "api-key")


def refused(status: int, why: str, route: str = PATH) -> web.HTTPException:
    log.warning("webhook_signature_invalid", route=route, why=why, front=NAME)
    cls = web.HTTPUnauthorized if status == 401 else web.HTTPForbidden
    return cls(text=f"{'Unauthorized' if status == 401 else 'Forbidden'}: {why}")


async def _params(request: web.Request, raw: bytes) -> dict[str, str]:
    if request.method == "GET":
        pairs = list(request.query.items())
    elif request.headers.get("Content-Type", "").startswith("application/json"):
        pairs = wire.scalar_pairs(wire.json_object(raw))
    else:
        pairs = wire.form_pairs(raw)
    wire.check_text(pairs, SINGLE)
    return dict(pairs)


def _fresh(moment: dt.datetime, now: dt.datetime) -> bool:
    return abs(now - moment) <= MAX_AGE


def _check_params(config: VonageSettings, params: Mapping[str, str], now: dt.datetime) -> None:
    assert config.signature_secret is not None
    stamp = params.get("timestamp", "")
    if not stamp.isdigit():
        raise refused(403, "a signed delivery carries its timestamp")
    # The SDK's Auth insists on an api_key beside a signature secret; it is not signed.
    auth = Auth(api_key=config.api_key or NAME, signature_secret=config.signature_secret,
                signature_method=config.signature_method)
    if not auth.check_signature(dict(params)):
        raise refused(403, "signature does not match")
    if not _fresh(dt.datetime.fromtimestamp(int(stamp), dt.UTC), now):
        raise refused(403, "timestamp outside the accepted window (replay)")


def check_jwt(config: VonageSettings, token: str, raw: bytes, now: dt.datetime,
              route: str = PATH) -> None:
    """A Vonage JWT (HS256, the signature secret) whose payload_hash is the body's."""
    assert config.signature_secret is not None
    try:
        if not verify_signature(token, config.signature_secret):
            raise refused(403, "JWT signature does not match", route)
        claims: dict[str, Any] = jwt.decode(token, config.signature_secret,
                                            algorithms=["HS256"], options={"verify_exp": True})
    except (VonageVerifyJwtError, jwt.PyJWTError) as exc:
        raise refused(403, "JWT not valid", route) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if not isinstance(claims.get("payload_hash"), str) or not secrets.compare_digest(
            claims["payload_hash"], digest):
        raise refused(403, "payload_hash does not match the body", route)
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or not _fresh(
            dt.datetime.fromtimestamp(iat, dt.UTC), now):
        raise refused(403, "JWT iat outside the accepted window (replay)", route)


async def signed_params(request: web.Request) -> dict[str, str]:
    """The delivery's parameters, once its signature is checked (else 401/403)."""
    config = request.app[CONFIG]
    raw = await read_body(request)
    if config.signature_secret is None:
        raise refused(403, "VONAGE_SIGNATURE_SECRET is not set")
    try:
        params = await _params(request, raw)
    except wire.Unreadable as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    now = request.app[CLOCK]()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        # A GET has no body: its payload is the query string, as it came.
        check_jwt(config, token, raw if request.method != "GET" else
                   request.rel_url.raw_query_string.encode(), now)
    elif "sig" in params:
        _check_params(config, params, now)
    else:
        raise refused(401, "the delivery is not signed")
    return params


async def inbound_sms(request: web.Request) -> web.Response:
    params = await signed_params(request)
    message_id = params.get("messageId")
    if not message_id:
        raise web.HTTPBadRequest(text="messageId is missing")
    handled = await inbound.handle_sms(request.app, inbound.InboundSms(
        NAME, message_id, request.app[CLOCK](), wire.gate_number(params.get("to")) or "",
        wire.gate_number(params.get("msisdn")) or "", params.get("text", ""),
        sent_at=inbound.provider_time(params.get("message-timestamp"))))
    if handled.reply and not handled.duplicate:
        await _reply(request.app, params, handled.reply)
    if handled.relay is not None:
        status = await _relay(request, params, handled.relay)
        await inbound.relayed(request.app, handled.relay, None, status)
    return web.Response(status=204)


async def _reply(app: web.Application, params: Mapping[str, str], text: str) -> None:
    """Best effort, after the message was recorded: a failure is logged and never undoes an
    objection."""
    pairs = [("from", params.get("to", "")), ("to", params.get("msisdn", "")), ("text", text)]
    try:
        answer = await app[UPSTREAM].send_sms(pairs)
    except (UpstreamTimeout, UpstreamUnreachable) as exc:
        log.warning("inbound_reply_failed", error=type(exc).__name__, front=NAME)
        return
    if answer.status != 200:
        log.warning("inbound_reply_failed", status=answer.status, front=NAME)


async def _relay(request: web.Request, params: Mapping[str, str],
                 relay: inbound.Relay) -> int | None:
    """The message in Vonage's inbound format, signed with the client's token as signature
    secret (the method is the account's), to the sender's inbound webhook."""
    app = request.app
    settings, config = app[SETTINGS], app[CONFIG]
    client = await store.relay_client(app[POOL], relay.organisation.id)
    if client is None or not settings.proxy_secret:
        log.warning("inbound_relay_skipped", why="no client for the organisation",
                    organisation=relay.organisation.id)
        return None
    client_id, version = client
    token = credentials.derive_token(settings.proxy_secret, client_id, version)
    fields = {k: v for k, v in params.items() if k not in ("sig", "timestamp", "nonce")}
    fields |= {"api-key": client_id, "nonce": secrets.token_hex(16),
               "timestamp": str(int(app[CLOCK]().timestamp()))}
    auth = Auth(api_key=client_id, signature_secret=token,
                signature_method=config.signature_method)
    fields["sig"] = auth.sign_params(dict(fields))
    try:
        async with app[HTTP].post(
                relay.url, data=urlencode(fields), allow_redirects=False,
                headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("inbound_relay_failed", error=type(exc).__name__)
        return None
    if not 200 <= status < 300:
        log.warning("inbound_relay_failed", status=status)
    return status


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, inbound_sms, allow_head=False)
    app.router.add_post(PATH, inbound_sms)
