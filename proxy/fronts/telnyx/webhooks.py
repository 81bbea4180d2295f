"""Telnyx's messaging webhook: inbound messages turned into STOP / START / HELP handling
(proxy/inbound.py; N11, N12), everything else accepted.

`POST /webhooks/telnyx/messaging`      Telnyx's events, Ed25519-signed (signatures.py); a
                                       `message.received` is handled, other events (a sent
                                       message's `message.sent`, `message.finalized`) are
                                       acknowledged with 200 and nothing else.
`GET /webhooks/telnyx/relay-public-key` the public key a client's relayed messages are signed
                                       with (asked for with the client's API key).

Telnyx retries a webhook that is not answered 2xx, so the answer comes as soon as the
message is recorded: the reply to the person (sent through the upstream, not gated: it
answers the person's own message) and a relay to the sender's own webhook follow in tasks of
their own, which never undo what was recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy import inbound, store
from proxy.body import read_body
from proxy.db import STORE_ERRORS
from proxy.errors import ProxyError
from proxy.fronts.telnyx import signatures
from proxy.fronts.telnyx.errors import TelnyxError, render
from proxy.fronts.telnyx.front import authenticate, own_account
from proxy.fronts.telnyx.keys import CONFIG, HTTP, NAME, UPSTREAM
from proxy.fronts.telnyx.upstream import UpstreamTimeout, UpstreamUnreachable
from proxy.keys import CLOCK, POOL, SETTINGS

log = structlog.get_logger("proxy.webhooks")

PATH = "/webhooks/telnyx/messaging"
KEY_PATH = "/webhooks/telnyx/relay-public-key"
# A message that could not be recorded (and was not spooled: proxy/inbound.py).
_NOT_RECORDED: tuple[type[BaseException], ...] = (*STORE_ERRORS, ProxyError)
# The replies and relays still under way: kept so that none is collected early, and awaited
# at shutdown (`settle` waits for them in tests).
TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("telnyx_webhook_tasks")


def _refused(request: web.Request, status: int, code: str, detail: str) -> web.Response:
    return render(request.app[SETTINGS].public_url, TelnyxError(status, code, detail))


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TelnyxError(400, "10015", "The webhook body is not JSON") from exc
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("event_type"), str):
        raise TelnyxError(400, "10015", "The webhook has no data.event_type")
    return data


def _inbound_sms(request: web.Request, data: dict[str, Any]) -> inbound.InboundSms:
    payload = data.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    sender = payload.get("from")
    to = payload.get("to")
    first = to[0] if isinstance(to, list) and to else None
    message_id = payload.get("id")
    from_ = sender.get("phone_number") if isinstance(sender, dict) else None
    ours = first.get("phone_number") if isinstance(first, dict) else None
    text = payload.get("text")
    if not (isinstance(message_id, str) and message_id and isinstance(from_, str)
            and isinstance(ours, str)):
        raise TelnyxError(400, "10015", "A message.received needs payload.id, "
                          "payload.from.phone_number and payload.to[0].phone_number")
    return inbound.InboundSms(
        provider=NAME, message_id=message_id, received_at=request.app[CLOCK](), to=ours,
        from_=from_, body=text if isinstance(text, str) else "",
        sent_at=inbound.provider_time(payload.get("received_at")))


async def messaging(request: web.Request) -> web.Response:
    app = request.app
    raw = await read_body(request)
    try:
        signatures.verify(app[CONFIG].public_key, raw, request.headers, app[CLOCK]())
    except signatures.SignatureError as exc:
        log.warning("webhook_signature_invalid", front=NAME, route=request.path, why=exc.why)
        return _refused(request, 401 if exc.missing else 403, "10009" if exc.missing else
                        "10010", f"Webhook signature refused: {exc.why}")
    try:
        data = _parse(raw)
        if data["event_type"] != "message.received":
            # A sent message's own events: acknowledged, so Telnyx does not retry them.
            log.info("webhook_event_acknowledged", front=NAME, event_type=data["event_type"][:64])
            return web.json_response({})
        sms = _inbound_sms(request, data)
    except TelnyxError as exc:
        return render(app[SETTINGS].public_url, exc)
    try:
        handled = await inbound.handle_sms(app, sms)
    except _NOT_RECORDED as exc:
        # Not recorded: a non-2xx makes Telnyx deliver it again.
        log.error("inbound_sms_not_recorded", front=NAME, error=type(exc).__name__)
        return _refused(request, 503, "10007", "The message could not be recorded; deliver "
                        "it again")
    if not handled.duplicate and handled.reply:
        _spawn(app, _reply(app, sms, handled.reply))
    if not handled.duplicate and handled.relay is not None:
        _spawn(app, _relay(app, handled.relay, raw))
    return web.json_response({})


def _spawn(app: web.Application, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    app[TASKS].add(task)
    task.add_done_callback(app[TASKS].discard)


async def _reply(app: web.Application, sms: inbound.InboundSms, text: str) -> None:
    """The answer to a STOP/START/HELP, from the number it was sent to. Best effort: the
    objection is recorded already, and a failure here never undoes it."""
    body = orjson.dumps({"from": sms.to, "to": sms.from_, "text": text})
    try:
        answer = await app[UPSTREAM].send("POST", "messages", body=body,
                                          headers={"Content-Type": "application/json"})
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        log.warning("inbound_reply_failed", front=NAME, error=type(exc).__name__)
        return
    if answer.status >= 400:
        log.warning("inbound_reply_failed", front=NAME, status=answer.status)
    else:
        log.info("inbound_reply_sent", front=NAME)


async def _relay(app: web.Application, relay: inbound.Relay, raw: bytes) -> None:
    """A non-keyword message to the sender's own webhook: Telnyx's event as it came,
    signed with the proxy's relay key, so the sender verifies it as it would Telnyx's."""
    secret = app[SETTINGS].proxy_secret
    # The organisation's oldest enabled client signs, as for Twilio's relays: with none left
    # (or no PROXY_SECRET), nothing speaks for the organisation and nothing is relayed.
    client = await store.relay_client(app[POOL], relay.organisation.id)
    if client is None or not secret:
        log.warning("inbound_relay_skipped", front=NAME, why="no client for the organisation",
                    organisation=relay.organisation.id)
        await _relayed(app, relay, None)
        return
    # The event as Telnyx sent it, but naming the client's account, not the upstream one.
    raw = own_account(raw, client[0])
    headers = {"Content-Type": "application/json",
               **signatures.sign_relay(secret, *client, raw, app[CLOCK]())}
    timeout = aiohttp.ClientTimeout(total=app[SETTINGS].rules.relay_timeout_seconds)
    status: int | None = None
    try:
        async with app[HTTP].post(relay.url, data=raw, headers=headers, timeout=timeout,
                                  allow_redirects=False) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("inbound_relay_failed", front=NAME, error=type(exc).__name__)
    await _relayed(app, relay, status)


async def _relayed(app: web.Application, relay: inbound.Relay, status: int | None) -> None:
    try:
        await inbound.relayed(app, relay, status=status)
    except STORE_ERRORS as exc:  # the message is recorded; only the relay's status is lost
        log.error("inbound_relay_not_recorded", front=NAME, error=type(exc).__name__)


async def relay_public_key(request: web.Request) -> web.Response:
    """The key a client verifies its relayed messages with, asked for with its own API key."""
    try:
        client = await authenticate(request)
    except TelnyxError as exc:
        return render(request.app[SETTINGS].public_url, exc)
    secret = request.app[SETTINGS].proxy_secret
    assert secret  # authenticate refuses every key without it
    return web.json_response({
        "public_key": signatures.relay_public_key(secret, client.id, client.token_version),
        "algorithm": "ed25519"})


async def _tasks_ctx(app: web.Application) -> Any:
    tasks: set[asyncio.Task[None]] = set()
    app[TASKS] = tasks
    yield
    await settle(app)


async def settle(app: web.Application) -> None:
    """Wait for the replies and relays under way (tests; shutdown does the same)."""
    tasks = app[TASKS]
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)


def add_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(_tasks_ctx)
    app.router.add_post(PATH, messaging)
    app.router.add_get(KEY_PATH, relay_public_key)
