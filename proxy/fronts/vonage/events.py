"""A call's events (its `event_url`) lead through the proxy, so that a call that reached
nobody gives back what its decision used (N5, N6), as the Twilio front's status callbacks do.

When a create names an `event_url`, it goes upstream as a relay URL on the proxy
(`PUBLIC_URL/webhooks/vonage/event/{relay_id}`, stored in `relay_targets` before the call is
placed). Vonage's events arrive there signed (a JWT, HS256 with the account's signature
secret, whose `payload_hash` must match the body: proxy/fronts/vonage/webhooks.py); each is
recorded (`contact_outcomes`), a final status of the call's own leg that reached nobody
(busy, cancelled, failed, rejected, timeout, unanswered) gives back the decision's contact
request or first call, and the event is passed on to the dialer's URL as Vonage sent it,
signed the same way with the client's token as the secret. Vonage is answered 204 whatever
the dialer answers: an answer to an event can be a new NCCO, which the gate would never see.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid as uuidlib
from typing import Any

import aiohttp
import jwt
import structlog
from aiohttp import web

from proxy import credentials, store
from proxy.body import read_body
from proxy.db import STORE_ERRORS
from proxy.fronts.vonage import wire
from proxy.fronts.vonage.keys import CONFIG, HTTP
from proxy.fronts.vonage.webhooks import check_jwt, refused
from proxy.keys import CLIENTS, CLOCK, GATE, POOL, SETTINGS, WRITER

log = structlog.get_logger("proxy.relays")

PATH = "/webhooks/vonage/event/{relay_id}"
FIELD = "event_url"
# Vonage's final statuses of a leg that reached nobody (Voice API webhook reference).
NOT_REACHED = frozenset({"busy", "cancelled", "failed", "rejected", "timeout", "unanswered"})


async def relay_event_url(request: web.Request, client_id: str, decision_id: int,
                          body: dict[str, Any]) -> dict[str, Any]:
    """The create's body with its event_url, and each connect action's eventUrl, leading
    through the proxy (stored first)."""
    public = request.app[SETTINGS].public_url
    targets: list[store.RelayTarget] = []

    def relayed(urls: list[str]) -> list[str]:
        relay_id = secrets.token_urlsafe(18)  # 144 random bits
        targets.append(store.RelayTarget(relay_id, decision_id, client_id, "callback",
                                         FIELD, urls[0], "POST"))
        return [public + PATH.format(relay_id=relay_id)]

    out = dict(body)
    if body.get("event_url"):
        out["event_url"] = relayed(body["event_url"])
    actions = []
    for action in body.get("ncco") or []:
        if action.get("action") == "connect" and action.get("eventUrl"):
            action = {**action, "eventUrl": relayed(action["eventUrl"])}
        actions.append(action)
    if "ncco" in body:
        out["ncco"] = actions
    if targets:
        await store.add_relay_targets(request.app[POOL], targets)
    return out


async def _call_uuid(request: web.Request, decision_id: int) -> str | None:
    # The create is answered before its outcome row is committed; an event may come first.
    await request.app[WRITER].sync()
    found: str | None = await request.app[POOL].fetchval(
        "SELECT upstream_sid FROM decision_outcomes WHERE decision_id = $1", decision_id)
    return found


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


async def event(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    raw = await read_body(request)
    if config.signature_secret is None:
        raise refused(403, "VONAGE_SIGNATURE_SECRET is not set", PATH)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise refused(401, "the event is not signed", PATH)
    check_jwt(config, token, raw, request.app[CLOCK](), PATH)
    target = await store.get_relay_target(request.app[POOL], request.match_info["relay_id"],
                                          "callback")
    if target is None or target.field != FIELD:
        raise web.HTTPNotFound()
    try:
        data = wire.json_object(raw)
    except wire.Unreadable as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    status = data.get("status") if isinstance(data.get("status"), str) else None
    leg = data.get("uuid") if isinstance(data.get("uuid"), str) else None
    try:
        await store.record_contact_outcome(request.app[POOL], store.ContactOutcome(
            decision_id=target.decision_id, relay_id=target.id, field=FIELD, sid=leg,
            status=status, answered_by=None, duration_seconds=_int(data.get("duration")),
            error_code=None, received_at=request.app[CLOCK]()))
    except STORE_ERRORS as exc:  # the dialer still gets its event
        log.error("contact_outcome_not_recorded", decision_id=target.decision_id,
                  error=type(exc).__name__)
    # N5, N6: the call's own leg reached nobody (a connect leg has a uuid of its own).
    if status in NOT_REACHED and leg is not None and leg == await _call_uuid(
            request, target.decision_id):
        await request.app[GATE].give_back(target.decision_id, "not_reached", status)
    if target.url is not None:
        await _pass_on(request, target, raw)
    return web.Response(status=204)


async def _pass_on(request: web.Request, target: store.RelayTarget, raw: bytes) -> None:
    app = request.app
    secret = app[SETTINGS].proxy_secret
    client = await app[CLIENTS].get(request, target.client_id)
    if client is None or not secret or target.url is None:
        return  # a disabled client is told nothing more
    key = credentials.derive_token(secret, client.id, client.token_version)
    token = jwt.encode({"iat": int(time.time()), "jti": str(uuidlib.uuid4()),
                        "payload_hash": hashlib.sha256(raw).hexdigest()}, key,
                       algorithm="HS256")
    try:
        async with app[HTTP].post(target.url, data=raw, allow_redirects=False, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {token}"}) as resp:
            if not 200 <= resp.status < 300:
                log.warning("callback_relay_failed", decision_id=target.decision_id,
                            field=FIELD, status=resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("callback_relay_failed", decision_id=target.decision_id, field=FIELD,
                    error=type(exc).__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, event)
