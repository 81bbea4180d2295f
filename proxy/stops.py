"""STOP replies made objections (N11, N12), however they arrive.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web
from twilio.twiml.messaging_response import MessagingResponse

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

# inbound_messages.provider of the messages handled here: Twilio's webhook and the spool of
# what it delivered during an outage (sql/014).
PROVIDER = "twilio"

EMPTY_TWIML = str(MessagingResponse())
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


def twiml_message(text: str) -> str:
    response = MessagingResponse()
    response.message(text)
    return str(response)


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Stop:
    """A STOP reply, live or from the spool."""

    message_sid: str
    received_at: dt.datetime
    to: str  # our number, as Twilio sent it
    subject: str  # E.164
    body_hash: str


async def record_stop(pool: asyncpg.Pool, settings: Settings, stop: Stop,
                      found: tuple[Sender, Organisation] | None,
                      reply: str | None = None) -> tuple[int | None, str]:
    """Record the message and its objection; `found`: the sender and its organisation, None
    for a number that is no registered sender (a global objection). Returns the objection id
    (None: this MessageSid was handled before, nothing new) and the reply (TwiML)."""
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
    reply = reply or twiml_message(text)
    record = store.InboundRecord(
        provider=PROVIDER, message_id=stop.message_sid, received_at=stop.received_at,
        sender=sender, organisation_id=organisation, subject=stop.subject, intent="stop",
        body_hash=stop.body_hash)
    objection = store.ObjectionIn(
        subject=stop.subject, organisation=organisation, channel=channel,
        received_at=stop.received_at, via="sms", source_ref=stop.message_sid,
        body_hash=stop.body_hash)
    objection_id = await store.stop_by_sms(pool, record, objection, reply)
    if objection_id is not None and organisation is None:
        # N11: who texts STOP wants nothing; with no organisation to limit it to, it is global.
        log.info("objection_recorded", objection_id=objection_id, via="sms", scope="global",
                 why="unknown sender", channel=channel, subject=stop.subject)
    elif objection_id is not None:
        log.info("objection_recorded", objection_id=objection_id, via="sms",
                 scope="organisation", organisation=organisation, channel=channel,
                 subject=stop.subject)
    return objection_id, reply


# --- the outage spool ---------------------------------------------------------------------

def _reply_given(entry: SpoolEntry, settings: Settings) -> str:
    """What a spooled message was answered: the generic STOP reply when the shared keyword
    lists read it as STOP, else nothing (only some organisations' own words do)."""
    if entry.intent == "stop":
        return twiml_message(GENERIC_STOP_REPLY[settings.rules.optout.scope])
    return EMPTY_TWIML


async def answer_in_outage(app: web.Application, form: Mapping[str, str], message_sid: str,
                           received_at: dt.datetime) -> str:
    """The database failed while an inbound SMS was handled (its signature was checked):
    spool a STOP, answer START and HELP without the database, refuse the rest (503)."""
    settings = app[SETTINGS]
    optout = settings.rules.optout
    subject = try_parse_number(form.get("From"))
    body = form.get("Body", "")
    shared = classify(body, optout.keywords)
    # Without the database the organisation is unknown: note which organisations' own words
    # read the message otherwise, and decide when it is applied.
    exceptions = tuple(sorted(
        org for org, keywords in optout.organisations.items()
        if (classify(body, keywords) == "stop") != (shared == "stop")))
    if subject is None:
        log.warning("inbound_sms_unroutable", known_sender=None, valid_from=False)
        return EMPTY_TWIML
    if shared == "stop" or exceptions:
        entry = SpoolEntry(message_sid=message_sid, received_at=received_at,
                           to=form.get("To", ""), subject=subject, body_hash=body_hash(body),
                           intent="stop" if shared == "stop" else "other",
                           exceptions=exceptions)
        spool = app[OPTOUT_SPOOL]
        try:
            await asyncio.to_thread(spool.append, entry)
        except OSError as exc:
            log.error("optout_spool_failed", error=type(exc).__name__, subject=subject)
            raise StoreUnavailable("consent store unavailable and the STOP could not be "
                                   "spooled (CONSENT_STORE_UNAVAILABLE)") from exc
        app[SPOOL_DRAIN].wake()
        log.warning("optout_spooled", subject=subject, spool_entries=spool.entries)
        return _reply_given(entry, settings)
    if shared == "start":
        log.warning("inbound_sms_not_handled", intent="start", why="consent store unavailable")
        return twiml_message(OUTAGE_START_REPLY)
    if shared == "help":
        return twiml_message(OUTAGE_HELP_REPLY)
    log.warning("inbound_sms_not_relayed", why="consent store unavailable")
    raise StoreUnavailable("consent store unavailable (CONSENT_STORE_UNAVAILABLE); the message "
                           "was not relayed")


async def apply_spooled(pool: asyncpg.Pool, settings: Settings, entry: SpoolEntry) -> None:
    """Apply one spooled message as if it were handled when it arrived."""
    key = gate.sender_key(entry.to)
    found = await store.load_sender(pool, key) if key else None
    organisation = found[1].id if found else None
    is_stop = (entry.intent == "stop") != (
        organisation is not None and organisation in entry.exceptions)
    reply = _reply_given(entry, settings)
    stop = Stop(entry.message_sid, entry.received_at, entry.to, entry.subject, entry.body_hash)
    if is_stop:
        await record_stop(pool, settings, stop, found, reply)
        return
    # This organisation's own words do not read it as STOP: an ordinary message, which the
    # outage kept from being relayed. Recorded as handled, so a retry is not taken for new.
    record = store.InboundRecord(
        provider=PROVIDER, message_id=entry.message_sid, received_at=entry.received_at,
        sender=found[0].sender if found else key or entry.to, organisation_id=organisation,
        subject=entry.subject, intent="other", body_hash=entry.body_hash)
    if await store.claim_inbound(pool, record):
        await store.finish_inbound(pool, PROVIDER, entry.message_sid, reply)
        log.info("optout_spool_not_a_stop", organisation=organisation)


async def apply_before_deciding(app: web.Application) -> None:
    """N11: a STOP still in the spool is applied before any decision is made
    (Gate.apply_spool), for a handler that holds the app rather than the gate."""
    await app[GATE].apply_spool()


async def settle_spooled(app: web.Application, message_sid: str) -> None:
    """A MessageSid still in the spool (Twilio delivered it again): apply the spool first, so
    the message keeps the time it first arrived."""
    if app[OPTOUT_SPOOL].holds(message_sid):
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
    app[SPOOL_DRAIN] = SpoolDrain(
        spool, lambda entry: apply_spooled(app[POOL], app[SETTINGS], entry))
    app[METRICS].watch_spool(spool)
    app.cleanup_ctx.append(_spool_ctx)
