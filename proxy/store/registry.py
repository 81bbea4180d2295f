"""What the operator registers through the admin API: organisations, senders, consents,
relationships and objections."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg

from proxy.errors import BadInput, Conflict, NotFound
from proxy.phone import subject_hash
from proxy.policy.facts import Organisation, Sender
from proxy.store.events import record_event
from proxy.store.facts import organisation_from_row, sender_from_row
from proxy.store.listing import (
    list_consents,
    list_objections,
    list_organisations,
    list_senders,
)
from proxy.store.rows import jsonable

__all__ = [
    "LIFT_HOW", "ConsentIn", "ObjectionIn", "Record", "RelationshipIn", "SubjectIn",
    "content_hash", "create_consent", "create_objection", "create_organisation",
    "create_relationship", "create_sender", "get_organisation", "get_sender", "lift_objection",
    "list_consents", "list_objections", "list_organisations", "list_senders",
    "require_organisations", "update_organisation", "withdraw_consent",
]


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
    # Evidence worth the name (ACM; ISO/IEC 27560, Kantara consent receipt), sql/016.
    consent_text_version: str | None = None
    consent_text_sha256: str | None = None
    collection_method: str | None = None
    policy_url: str | None = None
    evidence_ref: str | None = None
    source_id: str | None = None  # the organisation's own id for the record


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
    source_id: str | None = None


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
    source_id: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectIn:
    number: str
    kind: str = "person"
    published_for_marketing: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)


Record = ConsentIn | RelationshipIn | ObjectionIn | SubjectIn
# What the person may ask through when lifting their own objection (sql/016 lifted_how).
LIFT_HOW = ("phone", "email", "letter", "in_person", "console", "sms")
_NOT_CONTENT = frozenset({"source_id", "source_ref", "body_hash", "source_provider"})


def content_hash(record: Record) -> str:
    """SHA-256 of a record's content, its source_id aside: a repeated source_id with the same
    digest is the same record (skipped on re-import), with another digest a different one.
    Instants count in UTC, so the same moment written in two offsets is the same content."""
    names, values_of = _content_fields(type(record).__name__)
    values = [v.astimezone(dt.UTC).isoformat() if type(v) is dt.datetime else v
              for v in values_of(record)]
    text = json.dumps([names, values], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache  # one per record class
def _content_fields(name: str) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    cls = {c.__name__: c for c in (ConsentIn, RelationshipIn, ObjectionIn, SubjectIn)}[name]
    names = tuple(f.name for f in fields(cls) if f.name not in _NOT_CONTENT)
    return names, operator.attrgetter(*names)


def _source_hash(record: ConsentIn | RelationshipIn | ObjectionIn) -> str | None:
    return None if record.source_id is None else content_hash(record)


def _source_conflict(exc: asyncpg.UniqueViolationError) -> Conflict:
    return Conflict("this organisation already holds a record with this source_id",
                    "source_id")


# --- organisations -----------------------------------------------------------------------

async def create_organisation(pool: asyncpg.Pool, org: Organisation, *, actor: str
                              ) -> Organisation:
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await conn.fetchrow(
                """INSERT INTO organisations
                       (id, name, sector, customer_term_months, sms_footer, stop_reply,
                        content_templates_carry_opt_out)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
                org.id, org.name, org.sector, org.customer_term_months, org.sms_footer,
                org.stop_reply, org.content_templates_carry_opt_out,
            )
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"organisation {org.id!r} already exists", "id") from exc
        await record_event(conn, actor=actor, action="create", kind="organisation",
                           record_id=org.id)
    return organisation_from_row(row)


async def get_organisation(pool: asyncpg.Pool, org_id: str) -> Organisation:
    row = await pool.fetchrow("SELECT * FROM organisations WHERE id = $1", org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id!r}", "id")
    return organisation_from_row(row)


async def update_organisation(pool: asyncpg.Pool, org: Organisation, *, actor: str
                              ) -> Organisation:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE organisations SET name = $2, sector = $3, customer_term_months = $4,
                      sms_footer = $5, stop_reply = $6, content_templates_carry_opt_out = $7,
                      updated_at = now()
               WHERE id = $1 RETURNING *""",
            org.id, org.name, org.sector, org.customer_term_months, org.sms_footer,
            org.stop_reply, org.content_templates_carry_opt_out,
        )
        if row is None:
            raise NotFound(f"no organisation {org.id!r}", "id")
        await record_event(conn, actor=actor, action="update", kind="organisation",
                           record_id=org.id)
    return organisation_from_row(row)


async def require_organisations(conn: asyncpg.Connection, ids: Sequence[str], name: str) -> None:
    found = await conn.fetch("SELECT id FROM organisations WHERE id = ANY($1::text[])", list(ids))
    missing = sorted(set(ids) - {r["id"] for r in found})
    if missing:
        raise NotFound(f"no organisation {missing[0]!r}", name)


# --- senders -----------------------------------------------------------------------------

async def create_sender(pool: asyncpg.Pool, sender: Sender, *, actor: str) -> Sender:
    async with pool.acquire() as conn, conn.transaction():
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
        await record_event(conn, actor=actor, action="create", kind="sender",
                           record_id=sender.sender,
                           details={"organisation": sender.organisation_id})
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


async def create_consent(pool: asyncpg.Pool, consent: ConsentIn, *, actor: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await require_organisations(conn, [consent.organisation], "organisation")
        await _ensure_subject(conn, consent.subject)
        try:
            consent_id: int = await conn.fetchval(
                """INSERT INTO consents (subject, organisation_id, channel, topics, kind,
                       given_at, expires_at, verified_at, verification, first_contact_by,
                       requested_start, requested_end, provenance, evidence,
                       consent_text_version, consent_text_sha256, collection_method,
                       policy_url, evidence_ref, source_id, source_hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                           $16, $17, $18, $19, $20, $21)
                   RETURNING id""",
                consent.subject, consent.organisation, consent.channel, list(consent.topics),
                consent.kind, consent.given_at, consent.expires_at, consent.verified_at,
                consent.verification, consent.first_contact_by, consent.requested_start,
                consent.requested_end, consent.provenance, consent.evidence,
                consent.consent_text_version, consent.consent_text_sha256,
                consent.collection_method, consent.policy_url, consent.evidence_ref,
                consent.source_id, _source_hash(consent),
            )
        except asyncpg.UniqueViolationError as exc:
            raise _source_conflict(exc) from exc
        await record_event(conn, actor=actor, action="create", kind="consent",
                           record_id=consent_id, details={"organisation": consent.organisation})
    return consent_id


async def withdraw_consent(pool: asyncpg.Pool, consent_id: int, at: dt.datetime, *,
                           actor: str) -> dt.datetime:
    """Mark a consent withdrawn (N5: as easy to withdraw as to give). Idempotent: a second
    withdrawal keeps the first instant and records no event."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE consents SET withdrawn_at = coalesce(withdrawn_at, $2)
               WHERE id = $1
               RETURNING withdrawn_at, (SELECT withdrawn_at FROM consents WHERE id = $1) AS was""",
            consent_id, at,
        )
        if row is None:
            raise NotFound(f"no consent {consent_id}", "id")
        if row["was"] is None:
            await record_event(conn, actor=actor, action="withdraw", kind="consent",
                               record_id=consent_id, details={"at": at.isoformat()})
    withdrawn: dt.datetime = row["withdrawn_at"]
    return withdrawn


async def create_relationship(pool: asyncpg.Pool, rel: RelationshipIn, *, actor: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await require_organisations(conn, [rel.organisation], "organisation")
        await _ensure_subject(conn, rel.subject)
        try:
            rel_id: int = await conn.fetchval(
                """INSERT INTO relationships (subject, organisation_id, kind, topics,
                       started_at, ended_at, provenance, opt_out_offered, evidence, source_id,
                       source_hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
                rel.subject, rel.organisation, rel.kind, list(rel.topics), rel.started_at,
                rel.ended_at, rel.provenance, rel.opt_out_offered, rel.evidence,
                rel.source_id, _source_hash(rel),
            )
        except asyncpg.UniqueViolationError as exc:
            raise _source_conflict(exc) from exc
        await record_event(conn, actor=actor, action="create", kind="relationship",
                           record_id=rel_id, details={"organisation": rel.organisation})
    return rel_id


async def create_objection(pool: asyncpg.Pool, obj: ObjectionIn, *, actor: str) -> int:
    async with pool.acquire() as conn, conn.transaction():
        if obj.organisation is not None:
            await require_organisations(conn, [obj.organisation], "organisation")
        try:
            obj_id: int = await conn.fetchval(
                """INSERT INTO objections (subject_hash, subject, organisation_id, channel,
                       received_at, via, source_ref, body_hash, source_provider, source_id,
                       source_hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
                subject_hash(obj.subject), obj.subject, obj.organisation, obj.channel,
                obj.received_at, obj.via, obj.source_ref, obj.body_hash, obj.source_provider,
                obj.source_id, _source_hash(obj),
            )
        except asyncpg.UniqueViolationError as exc:
            raise _source_conflict(exc) from exc
        await record_event(conn, actor=actor, action="create", kind="objection",
                           record_id=obj_id, details={"organisation": obj.organisation,
                                                      "via": obj.via})
    return obj_id


async def lift_objection(pool: asyncpg.Pool, objection_id: int, *, at: dt.datetime,
                         actor: str, how: str, note: str | None = None) -> dict[str, Any]:
    """N11: the person lifts their own objection (asked by phone, letter, ...). It stops
    counting from `at`: the fact query reads only objections with no lifted_at, as for a
    START (N12). Recorded as its own event, with who and how. NotFound when there is no such
    objection, Conflict when it was lifted before."""
    if how not in LIFT_HOW:
        raise BadInput(f"expected one of {', '.join(LIFT_HOW)}", "how")
    if note is not None and len(note) > 1000:
        raise BadInput("longer than 1000 characters", "note")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE objections SET lifted_at = $2, lifted_how = $3, lifted_by = $4,
                      lifted_note = $5
               WHERE id = $1 AND lifted_at IS NULL RETURNING *""",
            objection_id, at, how, actor, note)
        if row is None:
            lifted = await conn.fetchval(
                "SELECT lifted_at FROM objections WHERE id = $1", objection_id)
            if lifted is None:
                raise NotFound(f"no objection {objection_id}", "id")
            raise Conflict(f"objection {objection_id} was lifted at {lifted.isoformat()}",
                           "id")
        await record_event(conn, actor=actor, action="lift", kind="objection",
                           record_id=objection_id,
                           # the note stays on the objection, which erasure clears; an
                           # event is never erased, so it holds no free text
                           details={"how": how, "at": at.isoformat()})
    return jsonable(row, drop=("subject_hash",))
