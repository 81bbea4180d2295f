"""STOP replies made objections (N11, N12), whichever provider delivered them.

- To a registered sender: an objection to its organisation (every channel, or SMS only with
  `optout.scope = "channel"`), answered with the organisation's `stop_reply`.
- To a number that is no registered sender: a **global** objection (organisation NULL): who
  texts STOP wants nothing, and there is no organisation to limit it to. Generic reply.
- While the database cannot be written: spooled to disk (proxy/optout_spool.py), answered
  with the generic reply (the organisation is not known without the database), and applied
  as soon as the database is back, with the time it arrived, exactly as above.

During an outage a START gets a reply asking to try again later and a HELP the generic help
text; neither is stored, so a START never overtakes an earlier STOP. A message that is no
keyword reply cannot be relayed (the relay needs the database): 503, as every other request.

Replies are text here. What is stored as a message's answer (and given again to a provider
that delivers it twice) is that text as its front renders it (TwiML for Twilio): each front
registers its renderer (`register_replies`), and a spooled STOP is rendered for the provider
that delivered it when it is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg
import structlog
from aiohttp import web

from proxy import gate, store
from proxy.db import STORE_ERRORS
from proxy.errors import StoreUnavailable
from proxy.keys import GATE, METRICS, OPTOUT_SPOOL, POOL, SETTINGS, SPOOL_DRAIN
from proxy.optout_spool import OptOutSpool, SpoolDrain, SpoolEntry
from proxy.phone import try_parse_number
from proxy.policy.facts import Channel, Organisation, Sender
from proxy.policy.optout import classify
from proxy.settings import Settings

log = structlog.get_logger("proxy.stops")

STOP_REPLY = {
    "organisation": "U bent afgemeld: {organisation} stuurt u geen berichten meer en belt u "
                    "niet meer. Sms START naar dit nummer om u weer aan te melden.",
    "channel": "U bent afgemeld: {organisation} stuurt u geen sms meer. Sms START naar dit "
               "nummer om u weer aan te melden.",
}
# Without an organisation: a STOP to an unknown number, or one spooled in an outage.
GENERIC_STOP_REPLY = {
    "organisation": "U bent afgemeld: u krijgt geen berichten meer en wordt niet meer gebeld.",
    "channel": "U bent afgemeld: u krijgt geen sms meer.",
}
OUTAGE_START_REPLY = ("Aanmelden lukt op dit moment niet. Stuur START later nog eens om u weer "
                     "aan te melden.")
OUTAGE_HELP_REPLY = "Sms STOP naar dit nummer om u af te melden, START om u weer aan te melden."


# A front's rendering of a reply text (None: no reply) as stored and answered to its provider.
ReplyRenderer = Callable[[str | None], str]
REPLIES: web.AppKey[dict[str, ReplyRenderer]] = web.AppKey("reply_renderers")


def register_replies(app: web.Application, provider: str, render: ReplyRenderer) -> None:
    """`provider`'s replies are stored and answered as `render` makes them (call at mount)."""
    app.setdefault(REPLIES, {})[provider] = render


def plain(text: str | None) -> str:
    """A reply as plain text: for a provider that has no reply format of its own."""
    return text or ""


def renderer(app: web.Application, provider: str) -> ReplyRenderer:
    return app.get(REPLIES, {}).get(provider, plain)


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Stop:
    """A STOP reply, live or from the spool."""

    provider: str  # the front it came through
    message_id: str  # the provider's id for the message
    received_at: dt.datetime
    to: str  # our number, as the provider sent it
    subject: str  # E.164
    body_hash: str


async def record_stop(pool: asyncpg.Pool, settings: Settings, stop: Stop,
                      found: tuple[Sender, Organisation] | None,
                      render: ReplyRenderer) -> tuple[int | None, str, str]:
    """Record the message and its objection; `found`: the sender and its organisation, None
    for a number that is no registered sender (a global objection). Returns the objection id
    (None: this message was handled before, nothing new), the reply text and the reply as
    stored (`render`ed)."""
    scope = settings.rules.optout.scope
    # N12: "organisation" blocks every channel; "channel" SMS only.
    channel: Channel | None = None if scope == "organisation" else "sms"
    if found is None:
        sender, organisation = gate.sender_key(stop.to) or stop.to, None
        text = GENERIC_STOP_REPLY[scope]
    else:
        sender_row, org = found
        sender, organisation = sender_row.sender, org.id
        text = (org.stop_reply or STOP_REPLY[scope]).replace("{organisation}", org.name)
    reply = render(text)
    record = store.InboundRecord(
        provider=stop.provider, message_id=stop.message_id, received_at=stop.received_at,
        sender=sender, organisation_id=organisation, subject=stop.subject, intent="stop",
        body_hash=stop.body_hash)
    objection = store.ObjectionIn(
        subject=stop.subject, organisation=organisation, channel=channel,
        received_at=stop.received_at, via="sms", source_ref=stop.message_id,
        body_hash=stop.body_hash, source_provider=stop.provider)
    objection_id = await store.stop_by_sms(pool, record, objection, reply)
    if objection_id is not None and organisation is None:
        # N11: who texts STOP wants nothing; with no organisation to limit it to, it is global.
        log.info("objection_recorded", objection_id=objection_id, via="sms", scope="global",
                 why="unknown sender", channel=channel, subject=stop.subject)
    elif objection_id is not None:
        log.info("objection_recorded", objection_id=objection_id, via="sms",
                 scope="organisation", organisation=organisation, channel=channel,
                 subject=stop.subject)
    return objection_id, text, reply


# --- the outage spool ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class InboundSms:
    """One inbound SMS as a front read it, its provider's signature already checked."""

    provider: str  # the front's name (inbound_messages.provider)
    message_id: str  # the provider's id for the message: a retry repeats it
    received_at: dt.datetime
    to: str  # our number (the sender it was sent to), as the provider gave it
    from_: str  # the person's number, as the provider gave it
    body: str
    # When the person sent it, as the provider says (None: it does not say). A START lifts
    # only the objections received before it was sent: a START that the provider delivers
    # late (its retry after an outage) never lifts a STOP sent after it (N11).
    sent_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class OutageReply:
    """What a message was answered while the database was out: what it was read as, the
    text (None: nothing) and that text as its front renders it."""

    intent: Literal["stop", "start", "help", "other", "unroutable"]
    text: str | None
    rendered: str


def _reply_given(entry: SpoolEntry, settings: Settings) -> str | None:
    """What a spooled message was answered: the generic STOP reply when the shared keyword
    lists read it as STOP, else nothing (only some organisations' own words do)."""
    if entry.intent == "stop":
        return GENERIC_STOP_REPLY[settings.rules.optout.scope]
    return None


async def answer_in_outage(app: web.Application, sms: InboundSms) -> OutageReply:
    """The database failed while an inbound SMS was handled (its signature was checked):
    spool a STOP, answer START and HELP without the database, refuse the rest (503)."""
    settings = app[SETTINGS]
    render = renderer(app, sms.provider)
    optout = settings.rules.optout
    subject = try_parse_number(sms.from_)
    shared = classify(sms.body, optout.keywords)
    # Without the database the organisation is unknown: note which organisations' own words
    # read the message otherwise, and decide when it is applied.
    exceptions = tuple(sorted(
        org for org, keywords in optout.organisations.items()
        if (classify(sms.body, keywords) == "stop") != (shared == "stop")))
    if subject is None:
        log.warning("inbound_sms_unroutable", known_sender=None, valid_from=False,
                    provider=sms.provider)
        return OutageReply("unroutable", None, render(None))
    if shared == "stop" or exceptions:
        entry = SpoolEntry(message_sid=sms.message_id, received_at=sms.received_at,
                           to=sms.to, subject=subject, body_hash=body_hash(sms.body),
                           intent="stop" if shared == "stop" else "other",
                           exceptions=exceptions, provider=sms.provider)
        spool = app[OPTOUT_SPOOL]
        try:
            await asyncio.to_thread(spool.append, entry)
        except OSError as exc:
            log.error("optout_spool_failed", error=type(exc).__name__, subject=subject)
            raise StoreUnavailable("consent store unavailable and the STOP could not be "
                                   "spooled (CONSENT_STORE_UNAVAILABLE)") from exc
        app[SPOOL_DRAIN].wake()
        log.warning("optout_spooled", subject=subject, spool_entries=spool.entries,
                    provider=sms.provider)
        text = _reply_given(entry, settings)
        return OutageReply(entry.intent, text, render(text))
    if shared == "start":
        log.warning("inbound_sms_not_handled", intent="start", why="consent store unavailable")
        return OutageReply("start", OUTAGE_START_REPLY, render(OUTAGE_START_REPLY))
    if shared == "help":
        return OutageReply("help", OUTAGE_HELP_REPLY, render(OUTAGE_HELP_REPLY))
    log.warning("inbound_sms_not_relayed", why="consent store unavailable")
    raise StoreUnavailable("consent store unavailable (CONSENT_STORE_UNAVAILABLE); the message "
                           "was not relayed")


async def apply_spooled(pool: asyncpg.Pool, settings: Settings, entry: SpoolEntry,
                        render: ReplyRenderer = plain) -> None:
    """Apply one spooled message as if it were handled when it arrived; its reply is stored
    as `render` (its provider's front) makes it."""
    key = gate.sender_key(entry.to)
    found = await store.load_sender(pool, key) if key else None
    organisation = found[1].id if found else None
    is_stop = (entry.intent == "stop") != (
        organisation is not None and organisation in entry.exceptions)
    reply = _reply_given(entry, settings)
    stop = Stop(entry.provider, entry.message_sid, entry.received_at, entry.to, entry.subject,
                entry.body_hash)
    if is_stop:
        await record_stop(pool, settings, stop, found, lambda _text: render(reply))
        return
    # This organisation's own words do not read it as STOP: an ordinary message, which the
    # outage kept from being relayed. Recorded as handled, so a retry is not taken for new.
    record = store.InboundRecord(
        provider=entry.provider, message_id=entry.message_sid, received_at=entry.received_at,
        sender=found[0].sender if found else key or entry.to, organisation_id=organisation,
        subject=entry.subject, intent="other", body_hash=entry.body_hash)
    if await store.claim_inbound(pool, record):
        await store.finish_inbound(pool, entry.provider, entry.message_sid, render(reply))
        log.info("optout_spool_not_a_stop", organisation=organisation)


async def apply_before_deciding(app: web.Application) -> None:
    """N11: a STOP still in the spool is applied before any decision is made
    (Gate.apply_spool), for a handler that holds the app rather than the gate."""
    await app[GATE].apply_spool()


async def settle_spooled(app: web.Application, provider: str, message_id: str) -> None:
    """A message still in the spool (its provider delivered it again): apply the spool
    first, so the message keeps the time it first arrived."""
    if app[OPTOUT_SPOOL].holds(provider, message_id):
        await app[SPOOL_DRAIN].apply_pending()


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    spool, drain = app[OPTOUT_SPOOL], app[SPOOL_DRAIN]
    await asyncio.to_thread(spool.check)
    await asyncio.to_thread(spool.load)
    if spool.entries:  # left by an earlier run: applied before the first request
        log.info("optout_spool_found", entries=spool.entries)
        try:
            await drain.apply_pending()
        except STORE_ERRORS as exc:
            log.warning("optout_spool_apply_failed", error=type(exc).__name__,
                        entries=spool.entries)
    task = asyncio.create_task(drain.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def install(app: web.Application) -> None:
    """The spool, its drain (a background task while the app runs) and its gauge; after the
    pool's cleanup context, so the drain stops before the pool closes."""
    spool = OptOutSpool(app[SETTINGS].optout_spool_dir)
    app[OPTOUT_SPOOL] = spool
    app[SPOOL_DRAIN] = SpoolDrain(spool, lambda entry: apply_spooled(
        app[POOL], app[SETTINGS], entry, renderer(app, entry.provider)))
    app[METRICS].watch_spool(spool)
    app.cleanup_ctx.append(_spool_ctx)
