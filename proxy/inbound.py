"""Inbound SMS, whichever provider delivered it: STOP, START and HELP (N11, N12), and the
rest handed back to the front to relay to the sender's own webhook.

A front checks its provider's signature, reads the message into an `InboundSms` and calls
`handle_sms`. What comes back is provider-neutral: the reply text for the person (the front
answers it in its own way: TwiML for Twilio, a message through its upstream for others), the
reply as stored for a repeat delivery (`answer`), and for a message that is no keyword and
goes to a sender with an inbound webhook, a `Relay` the front delivers in its provider's
webhook format before calling `relayed`.

- A message id is handled once per provider: a repeat gets the stored answer and no new reply.
- A STOP to a number that is no registered sender objects globally (proxy/stops.py).
- While the database is out a STOP is spooled and answered, START and HELP are answered
  without being stored, and anything else is refused (503): proxy/stops.py.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import structlog
from aiohttp import web

from proxy import gate, store
from proxy.db import STORE_ERRORS
from proxy.keys import POOL, SETTINGS
from proxy.phone import try_parse_number
from proxy.policy.facts import Organisation, Sender
from proxy.policy.optout import classify
from proxy.stops import (
    InboundSms,
    ReplyRenderer,
    Stop,
    answer_in_outage,
    body_hash,
    plain,
    record_stop,
    register_replies,
    renderer,
    settle_spooled,
)

__all__ = ["HELP_REPLY", "START_REPLY", "Handled", "InboundSms", "Relay", "ReplyRenderer",
           "handle_sms", "plain", "provider_time", "register_replies", "relayed"]

log = structlog.get_logger("proxy.inbound")

START_REPLY = ("U bent weer aangemeld voor sms van {organisation}. Sms STOP naar dit nummer om "
               "u af te melden.")
HELP_REPLY = ("{organisation}: sms STOP naar dit nummer om u af te melden, START om u weer aan "
              "te melden.")

Intent = Literal["stop", "start", "help", "other", "unroutable"]


@dataclass(frozen=True, slots=True)
class Relay:
    """A message that is no keyword, to a registered sender with an inbound webhook: the
    front delivers it to `url` (signed for the client that sends for `organisation`), then
    calls `relayed` with what the webhook answered."""

    provider: str
    message_id: str
    url: str
    sender: Sender
    organisation: Organisation


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of an inbound SMS. `reply`: the text to send the person (None: nothing,
    also for a repeat delivery); `answer`: the reply as the front renders it, or as it was
    stored for a repeat; `relay`: the front's to deliver."""

    intent: Intent
    reply: str | None
    answer: str
    duplicate: bool = False
    relay: Relay | None = None


async def handle_sms(app: web.Application, sms: InboundSms) -> Handled:
    """Handle one inbound SMS (its signature checked): once per provider and message id."""
    render = renderer(app, sms.provider)
    try:
        await settle_spooled(app, sms.provider, sms.message_id)
        return await _handle(app, sms, render)
    except STORE_ERRORS:
        # N11: no STOP is lost in a database outage (proxy/stops.py).
        outage = await answer_in_outage(app, sms)
        return Handled(outage.intent, outage.text, outage.rendered)


async def relayed(app: web.Application, relay: Relay, answer: str | None = None,
                  status: int | None = None) -> None:
    """The relay was tried: store what the webhook answered (`answer`, rendered as the front
    answers its provider) and its HTTP status (None: no answer)."""
    stored = answer if answer is not None else renderer(app, relay.provider)(None)
    await store.finish_inbound(app[POOL], relay.provider, relay.message_id, stored, status)


async def _handle(app: web.Application, sms: InboundSms, render: ReplyRenderer) -> Handled:
    pool, rules = app[POOL], app[SETTINGS].rules
    key = gate.sender_key(sms.to)
    found = await store.load_sender(pool, key) if key else None
    subject = try_parse_number(sms.from_)
    digest = body_hash(sms.body)
    if found is None and subject is not None and classify(
            sms.body, rules.optout.keywords) == "stop":
        return await _stop(app, sms, Stop(sms.provider, sms.message_id, sms.received_at,
                                          sms.to, subject, digest), None, render)
    if found is None or subject is None:
        log.warning("inbound_sms_unroutable", known_sender=found is not None,
                    valid_from=subject is not None, provider=sms.provider)
        return Handled("unroutable", None, render(None))
    sender, org = found
    intent = classify(sms.body, rules.optout.for_organisation(org.id))
    record = store.InboundRecord(
        provider=sms.provider, message_id=sms.message_id, received_at=sms.received_at,
        sender=sender.sender, organisation_id=org.id, subject=subject,
        intent=intent or "other", body_hash=digest)
    if intent == "stop":
        return await _stop(app, sms, Stop(sms.provider, sms.message_id, sms.received_at,
                                          sms.to, subject, digest), found, render)
    if intent == "start":
        text = _text(START_REPLY, org)
        lifted = await store.start_by_sms(pool, record, render(text),
                                          sent_at=_sent_at(sms))
        if lifted is None:
            return await _repeat(app, sms, "start")
        log.info("objection_lifted", organisation=org.id, lifted=lifted, subject=subject,
                 provider=sms.provider)
        return Handled("start", text, render(text))
    if intent == "help":
        text = _text(HELP_REPLY, org)
        if not await store.claim_inbound(pool, record):
            return await _repeat(app, sms, "help")
        await store.finish_inbound(pool, sms.provider, sms.message_id, render(text))
        return Handled("help", text, render(text))
    if not await store.claim_inbound(pool, record):
        return await _repeat(app, sms, "other")
    if sender.inbound_webhook:
        return Handled("other", None, render(None), relay=Relay(
            sms.provider, sms.message_id, sender.inbound_webhook, sender, org))
    await store.finish_inbound(pool, sms.provider, sms.message_id, render(None))
    return Handled("other", None, render(None))


def provider_time(value: object) -> dt.datetime | None:
    """A provider's timestamp of when the person sent a message (ISO 8601; without a zone it
    is UTC, as Telnyx, CM.com and Vonage give it), or None when there is none to read."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _sent_at(sms: InboundSms) -> dt.datetime | None:
    """When the person sent it, never later than it arrived (a provider's clock may run
    ahead of ours)."""
    if sms.sent_at is None:
        return None
    return min(sms.sent_at, sms.received_at)


def _text(template: str, org: Organisation) -> str:
    return template.replace("{organisation}", org.name)


async def _stop(app: web.Application, sms: InboundSms, stop: Stop,
                found: tuple[Sender, Organisation] | None, render: ReplyRenderer) -> Handled:
    objection_id, text, stored = await record_stop(app[POOL], app[SETTINGS], stop, found,
                                                   render)
    if objection_id is None:
        return await _repeat(app, sms, "stop")
    return Handled("stop", text, stored)


async def _repeat(app: web.Application, sms: InboundSms, intent: Intent) -> Handled:
    """The provider delivered this message before: answer as then, store nothing new."""
    log.info("inbound_sms_duplicate", provider=sms.provider)
    stored = await store.inbound_reply(app[POOL], sms.provider, sms.message_id)
    return Handled(intent, None, stored if stored is not None else renderer(
        app, sms.provider)(None), duplicate=True)
