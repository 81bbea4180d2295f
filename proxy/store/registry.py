"""What the operator registers through the admin API: organisations, senders, consents,
relationships and objections."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from proxy.errors import Conflict, NotFound
from proxy.phone import subject_hash
from proxy.policy.facts import Organisation, Sender
from proxy.store.facts import organisation_from_row, sender_from_row


@dataclass(frozen=True, slots=True)
class ConsentIn:
    subject: str
    organisation: str
    channel: str
    topics: tuple[str, ...]
    kind: str
    given_at: dt.datetime
    provenance: str
    expires_at: dt.datetime | None = None
    verified_at: dt.datetime | None = None
    verification: str | None = None
    first_contact_by: dt.datetime | None = None
    requested_start: dt.datetime | None = None
    requested_end: dt.datetime | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RelationshipIn:
    subject: str
    organisation: str
    kind: str
    topics: tuple[str, ...]
    started_at: dt.datetime
    provenance: str
    opt_out_offered: bool
    ended_at: dt.datetime | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ObjectionIn:
    subject: str
    organisation: str | None
    channel: str | None
    received_at: dt.datetime
    via: str
    source_ref: str | None = None
    body_hash: str | None = None
    # The provider whose message or call `source_ref` names (None: recorded through the API).
    source_provider: str | None = None


# --- organisations -----------------------------------------------------------------------

async def create_organisation(pool: asyncpg.Pool, org: Organisation) -> Organisation:
    try:
        row = await pool.fetchrow(
            """INSERT INTO organisations
                   (id, name, sector, customer_term_months, sms_footer, stop_reply,
                    content_templates_carry_opt_out)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
            org.content_templates_carry_opt_out,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"organisation {org.id!r} already exists", "id") from exc
    return organisation_from_row(row)


async def get_organisation(pool: asyncpg.Pool, org_id: str) -> Organisation:
    row = await pool.fetchrow("SELECT * FROM organisations WHERE id = $1", org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id!r}", "id")
    return organisation_from_row(row)


async def update_organisation(pool: asyncpg.Pool, org: Organisation) -> Organisation:
    row = await pool.fetchrow(
        """UPDATE organisations SET name = $2, sector = $3, customer_term_months = $4,
                  sms_footer = $5, stop_reply = $6, content_templates_carry_opt_out = $7,
                  updated_at = now()
           WHERE id = $1 RETURNING *""",
        org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
        org.content_templates_carry_opt_out,
    )
    if row is None:
        raise NotFound(f"no organisation {org.id!r}", "id")
    return organisation_from_row(row)


async def require_organisations(conn: asyncpg.Connection, ids: Sequence[str], name: str) -> None:
    found = await conn.fetch("SELECT id FROM organisations WHERE id = ANY($1::text[])", list(ids))
    missing = sorted(set(ids) - {r["id"] for r in found})
    if missing:
        raise NotFound(f"no organisation {missing[0]!r}", name)


# --- senders -----------------------------------------------------------------------------

async def create_sender(pool: asyncpg.Pool, sender: Sender) -> Sender:
    async with pool.acquire() as conn:
        await require_organisations(conn, [sender.organisation_id], "organisation")
        try:
            row = await conn.fetchrow(
                """INSERT INTO senders
                       (sender, organisation_id, topic, purpose, automated, inbound_webhook)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
                sender.sender, sender.organisation_id, sender.topic, sender.purpose,
                sender.automated, sender.inbound_webhook,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"sender {sender.sender!r} is already registered", "sender") from exc
    return sender_from_row(row)


async def get_sender(pool: asyncpg.Pool, sender: str) -> Sender:
    row = await pool.fetchrow("SELECT * FROM senders WHERE sender = $1", sender)
    if row is None:
        raise NotFound(f"no sender {sender!r}", "sender")
    return sender_from_row(row)


# --- consents, relationships, objections --------------------------------------------------

async def _ensure_subject(conn: asyncpg.Connection, number: str) -> None:
    await conn.execute(
        "INSERT INTO subjects (number) VALUES ($1) ON CONFLICT (number) DO NOTHING", number
    )


async def create_consent(pool: asyncpg.Pool, consent: ConsentIn) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await require_organisations(conn, [consent.organisation], "organisation")
        await _ensure_subject(conn, consent.subject)
        consent_id: int = await conn.fetchval(
            """INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at,
                   expires_at, verified_at, verification, first_contact_by, requested_start,
                   requested_end, provenance, evidence)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
               RETURNING id""",
            consent.subject, consent.organisation, consent.channel, list(consent.topics),
            consent.kind, consent.given_at, consent.expires_at, consent.verified_at,
            consent.verification, consent.first_contact_by, consent.requested_start,
            consent.requested_end, consent.provenance, consent.evidence,
        )
    return consent_id


async def withdraw_consent(pool: asyncpg.Pool, consent_id: int, at: dt.datetime) -> dt.datetime:
    """Mark a consent withdrawn (N5: as easy to withdraw as to give). Idempotent."""
    withdrawn: dt.datetime | None = await pool.fetchval(
        """UPDATE consents SET withdrawn_at = coalesce(withdrawn_at, $2)
           WHERE id = $1 RETURNING withdrawn_at""",
        consent_id, at,
    )
    if withdrawn is None:
        raise NotFound(f"no consent {consent_id}", "id")
    return withdrawn


async def create_relationship(pool: asyncpg.Pool, rel: RelationshipIn) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await require_organisations(conn, [rel.organisation], "organisation")
        await _ensure_subject(conn, rel.subject)
        rel_id: int = await conn.fetchval(
            """INSERT INTO relationships (subject, organisation_id, kind, topics, started_at,
                   ended_at, provenance, opt_out_offered, evidence)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            rel.subject, rel.organisation, rel.kind, list(rel.topics), rel.started_at,
            rel.ended_at, rel.provenance, rel.opt_out_offered, rel.evidence,
        )
    return rel_id


async def create_objection(pool: asyncpg.Pool, obj: ObjectionIn) -> int:
    async with pool.acquire() as conn, conn.transaction():
        if obj.organisation is not None:
            await require_organisations(conn, [obj.organisation], "organisation")
        obj_id: int = await conn.fetchval(
            """INSERT INTO objections (subject_hash, subject, organisation_id, channel,
                   received_at, via, source_ref, body_hash, source_provider)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            subject_hash(obj.subject), obj.subject, obj.organisation, obj.channel,
            obj.received_at, obj.via, obj.source_ref, obj.body_hash, obj.source_provider,
        )
    return obj_id
