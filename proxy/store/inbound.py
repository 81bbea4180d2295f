"""The opt-out loop: inbound messages, each handled once (keyed by provider and the provider's
own message id), STOP and START by SMS (N11, N12), and objections made in a call."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from proxy.phone import mask, subject_hash
from proxy.store.registry import ObjectionIn


@dataclass(frozen=True, slots=True)
class InboundRecord:
    provider: str  # the way in the message came by ("twilio")
    message_id: str  # the provider's own id for it (Twilio: MessageSid); retries repeat it
    received_at: dt.datetime
    sender: str
    organisation_id: str | None  # None: the number is no registered sender
    subject: str
    intent: str
    body_hash: str


_INBOUND_INSERT = """
INSERT INTO inbound_messages (provider, message_id, received_at, sender, organisation_id,
    subject_hash, subject_masked, intent, body_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (provider, message_id) DO NOTHING
RETURNING message_id"""


async def _claim_inbound(conn: asyncpg.Connection, rec: InboundRecord) -> bool:
    claimed = await conn.fetchval(
        _INBOUND_INSERT, rec.provider, rec.message_id, rec.received_at, rec.sender,
        rec.organisation_id, subject_hash(rec.subject), mask(rec.subject), rec.intent,
        rec.body_hash)
    return claimed is not None


async def inbound_reply(conn: asyncpg.Pool | asyncpg.Connection, provider: str,
                        message_id: str) -> str | None:
    """The reply given to a message already handled (None while it is still in flight)."""
    reply: str | None = await conn.fetchval(
        "SELECT reply FROM inbound_messages WHERE provider = $1 AND message_id = $2",
        provider, message_id)
    return reply


async def stop_by_sms(pool: asyncpg.Pool, rec: InboundRecord, objection: ObjectionIn,
                      reply: str) -> int | None:
    """N11/N12: record the message and its objection together. None: a retry, nothing new.

    A STOP applied late (from the outage spool) may find a START of the same number to the
    same organisation that arrived after it: that START lifts it at once, as it would have
    had the STOP been recorded when it arrived."""
    digest = subject_hash(objection.subject)
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim_inbound(conn, rec):
            return None
        later_start = None if objection.organisation is None else await conn.fetchrow(
            """SELECT provider, message_id, received_at FROM inbound_messages
               WHERE subject_hash = $1 AND organisation_id = $2 AND intent = 'start'
                 AND received_at > $3 ORDER BY received_at, provider, message_id LIMIT 1""",
            digest, objection.organisation, objection.received_at)
        objection_id: int = await conn.fetchval(
            """INSERT INTO objections (subject_hash, subject, organisation_id, channel,
                   received_at, via, source_ref, body_hash, lifted_at, lifted_ref,
                   source_provider)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
            digest, objection.subject, objection.organisation, objection.channel,
            objection.received_at, objection.via, objection.source_ref, objection.body_hash,
            *((later_start["received_at"], later_start["message_id"]) if later_start
              else (None, None)), rec.provider)
        await conn.execute(
            """UPDATE inbound_messages SET objection_id = $3, reply = $4
               WHERE provider = $1 AND message_id = $2""",
            rec.provider, rec.message_id, objection_id, reply)
        if later_start is not None:
            await conn.execute(
                """UPDATE inbound_messages SET lifted = lifted + 1
                   WHERE provider = $1 AND message_id = $2""",
                later_start["provider"], later_start["message_id"])
    return objection_id


async def start_by_sms(pool: asyncpg.Pool, rec: InboundRecord, reply: str, *,
                       sent_at: dt.datetime | None = None) -> int | None:
    """N12: START lifts the objections this number made by SMS keyword to this organisation
    only, and (N11) only those received before the START was sent (`sent_at`, when the
    provider says; else when it arrived). Returns how many were lifted; None for a retry."""
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim_inbound(conn, rec):
            return None
        lifted: int = await conn.fetchval(
            """WITH l AS (
                   UPDATE objections SET lifted_at = $3, lifted_ref = $4
                   WHERE subject_hash = $1 AND organisation_id = $2 AND via = 'sms'
                     AND source_ref IS NOT NULL AND lifted_at IS NULL
                     AND received_at <= $5 RETURNING 1)
               SELECT count(*) FROM l""",
            subject_hash(rec.subject), rec.organisation_id, rec.received_at, rec.message_id,
            sent_at or rec.received_at)
        await conn.execute(
            """UPDATE inbound_messages SET lifted = $3, reply = $4
               WHERE provider = $1 AND message_id = $2""",
            rec.provider, rec.message_id, lifted, reply)
    return lifted


async def claim_inbound(pool: asyncpg.Pool, rec: InboundRecord) -> bool:
    """Record a message as being handled; False when it was handled before (a retry)."""
    async with pool.acquire() as conn:
        return await _claim_inbound(conn, rec)


async def finish_inbound(pool: asyncpg.Pool, provider: str, message_id: str, reply: str,
                         relay_status: int | None = None) -> None:
    await pool.execute(
        """UPDATE inbound_messages SET reply = $3, relay_status = $4
           WHERE provider = $1 AND message_id = $2""",
        provider, message_id, reply, relay_status)


async def object_by_voice(pool: asyncpg.Pool, objection: ObjectionIn) -> int | None:
    """An objection made in a call (IVR). None when this call already recorded it."""
    objection_id: int | None = await pool.fetchval(
        """INSERT INTO objections (subject_hash, subject, organisation_id, channel, received_at,
               via, source_ref, source_provider)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (coalesce(source_provider, ''), source_ref) WHERE source_ref IS NOT NULL
           DO NOTHING RETURNING id""",
        subject_hash(objection.subject), objection.subject, objection.organisation,
        objection.channel, objection.received_at, objection.via, objection.source_ref,
        objection.source_provider)
    return objection_id
