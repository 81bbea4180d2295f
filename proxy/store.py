"""Every SQL statement of consent-proxy. Returns plain dataclasses and dicts; knows no HTTP."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from proxy.errors import Conflict, NotFound
from proxy.phone import mask, subject_hash
from proxy.policy.facts import Organisation, Sender


@dataclass(frozen=True, slots=True)
class Client:
    account_sid: str
    name: str
    token_version: int
    organisations: tuple[str, ...]


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


def _organisation(row: asyncpg.Record) -> Organisation:
    return Organisation(
        id=row["id"],
        name=row["name"],
        sector=row["sector"],
        customer_term_months=row["customer_term_months"],
        sms_footer=row["sms_footer"],
        stop_reply=row["stop_reply"],
    )


def _sender(row: asyncpg.Record) -> Sender:
    return Sender(
        sender=row["sender"],
        organisation_id=row["organisation_id"],
        topic=row["topic"],
        purpose=row["purpose"],
        automated=row["automated"],
        inbound_webhook=row["inbound_webhook"],
    )


# --- organisations -----------------------------------------------------------------------

async def create_organisation(pool: asyncpg.Pool, org: Organisation) -> Organisation:
    try:
        row = await pool.fetchrow(
            """INSERT INTO organisations
                   (id, name, sector, customer_term_months, sms_footer, stop_reply)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"organisation {org.id!r} already exists", "id") from exc
    return _organisation(row)


async def get_organisation(pool: asyncpg.Pool, org_id: str) -> Organisation:
    row = await pool.fetchrow("SELECT * FROM organisations WHERE id = $1", org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id!r}", "id")
    return _organisation(row)


async def update_organisation(pool: asyncpg.Pool, org: Organisation) -> Organisation:
    row = await pool.fetchrow(
        """UPDATE organisations SET name = $2, sector = $3, customer_term_months = $4,
                  sms_footer = $5, stop_reply = $6, updated_at = now()
           WHERE id = $1 RETURNING *""",
        org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
    )
    if row is None:
        raise NotFound(f"no organisation {org.id!r}", "id")
    return _organisation(row)


async def _require_organisations(conn: asyncpg.Connection, ids: Sequence[str], name: str) -> None:
    found = await conn.fetch("SELECT id FROM organisations WHERE id = ANY($1::text[])", list(ids))
    missing = sorted(set(ids) - {r["id"] for r in found})
    if missing:
        raise NotFound(f"no organisation {missing[0]!r}", name)


# --- senders -----------------------------------------------------------------------------

async def create_sender(pool: asyncpg.Pool, sender: Sender) -> Sender:
    async with pool.acquire() as conn:
        await _require_organisations(conn, [sender.organisation_id], "organisation")
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
    return _sender(row)


async def get_sender(pool: asyncpg.Pool, sender: str) -> Sender:
    row = await pool.fetchrow("SELECT * FROM senders WHERE sender = $1", sender)
    if row is None:
        raise NotFound(f"no sender {sender!r}", "sender")
    return _sender(row)


# --- clients -----------------------------------------------------------------------------

async def create_client(
    pool: asyncpg.Pool, account_sid: str, name: str, organisations: Sequence[str]
) -> Client:
    async with pool.acquire() as conn, conn.transaction():
        await _require_organisations(conn, organisations, "organisations")
        row = await conn.fetchrow(
            "INSERT INTO clients (account_sid, name) VALUES ($1, $2) RETURNING *",
            account_sid, name,
        )
        await conn.executemany(
            "INSERT INTO client_organisations (account_sid, organisation_id) VALUES ($1, $2)",
            [(account_sid, org) for org in dict.fromkeys(organisations)],
        )
    return Client(account_sid, row["name"], row["token_version"], tuple(organisations))


async def get_client(pool: asyncpg.Pool, account_sid: str) -> Client | None:
    row = await pool.fetchrow(
        """SELECT c.account_sid, c.name, c.token_version,
                  coalesce(array_agg(co.organisation_id ORDER BY co.organisation_id)
                           FILTER (WHERE co.organisation_id IS NOT NULL), '{}') AS organisations
           FROM clients c LEFT JOIN client_organisations co USING (account_sid)
           WHERE c.account_sid = $1 GROUP BY c.account_sid""",
        account_sid,
    )
    if row is None:
        return None
    return Client(row["account_sid"], row["name"], row["token_version"],
                  tuple(row["organisations"]))


# --- subjects ----------------------------------------------------------------------------

async def upsert_subject(
    pool: asyncpg.Pool, number: str, kind: str, published: bool, evidence: dict[str, Any]
) -> bool:
    """Create or replace what is known about a number. Returns True when it was created."""
    created: bool = await pool.fetchval(
        """INSERT INTO subjects (number, kind, published_for_marketing, evidence)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (number) DO UPDATE SET kind = EXCLUDED.kind,
               published_for_marketing = EXCLUDED.published_for_marketing,
               evidence = EXCLUDED.evidence, updated_at = now()
           RETURNING (xmax = 0)""",
        number, kind, published, evidence,
    )
    return created


async def _ensure_subject(conn: asyncpg.Connection, number: str) -> None:
    await conn.execute(
        "INSERT INTO subjects (number) VALUES ($1) ON CONFLICT (number) DO NOTHING", number
    )


def _jsonable(row: asyncpg.Record, drop: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in drop:
            continue
        out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out


async def subject_report(pool: asyncpg.Pool, number: str, decisions: int = 20) -> dict[str, Any]:
    """Everything held about a number. Raises NotFound when nothing at all is held."""
    digest = subject_hash(number)
    async with pool.acquire() as conn:
        subject = await conn.fetchrow("SELECT * FROM subjects WHERE number = $1", number)
        consents = await conn.fetch(
            "SELECT * FROM consents WHERE subject = $1 ORDER BY id", number)
        relationships = await conn.fetch(
            "SELECT * FROM relationships WHERE subject = $1 ORDER BY id", number)
        objections = await conn.fetch(
            "SELECT * FROM objections WHERE subject_hash = $1 ORDER BY id", digest)
        latest = await conn.fetch(
            "SELECT * FROM decisions WHERE subject_hash = $1 ORDER BY id DESC LIMIT $2",
            digest, decisions)
    if subject is None and not objections and not latest:
        raise NotFound("nothing is held about this number", "number")
    report: dict[str, Any] = {"number": number}
    if subject is not None:
        report.update(_jsonable(subject, drop=("number",)))
    report["consents"] = [_jsonable(r, drop=("subject",)) for r in consents]
    report["relationships"] = [_jsonable(r, drop=("subject",)) for r in relationships]
    report["objections"] = [_jsonable(r, drop=("subject", "subject_hash")) for r in objections]
    report["decisions"] = [decision_json(r) for r in latest]
    return report


async def erase_subject(pool: asyncpg.Pool, number: str) -> dict[str, int]:
    """Erase personal data about a number; objections stay, keyed by the one-way hash (N11)."""
    digest = subject_hash(number)
    async with pool.acquire() as conn, conn.transaction():
        kept = await conn.fetchval(
            "WITH u AS (UPDATE objections SET subject = NULL WHERE subject_hash = $1 RETURNING 1)"
            " SELECT count(*) FROM u", digest)
        consents = await conn.fetchval("SELECT count(*) FROM consents WHERE subject = $1", number)
        relations = await conn.fetchval(
            "SELECT count(*) FROM relationships WHERE subject = $1", number)
        deleted = await conn.fetchval(
            "WITH d AS (DELETE FROM subjects WHERE number = $1 RETURNING 1) SELECT count(*) FROM d",
            number)
    if not deleted and not kept:
        raise NotFound("nothing is held about this number", "number")
    return {"consents_erased": consents, "relationships_erased": relations,
            "objections_kept": kept}


# --- consents, relationships, objections --------------------------------------------------

async def create_consent(pool: asyncpg.Pool, consent: ConsentIn) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await _require_organisations(conn, [consent.organisation], "organisation")
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
        await _require_organisations(conn, [rel.organisation], "organisation")
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
            await _require_organisations(conn, [obj.organisation], "organisation")
        obj_id: int = await conn.fetchval(
            """INSERT INTO objections (subject_hash, subject, organisation_id, channel,
                   received_at, via, source_ref, body_hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
            subject_hash(obj.subject), obj.subject, obj.organisation, obj.channel,
            obj.received_at, obj.via, obj.source_ref, obj.body_hash,
        )
    return obj_id


# --- decisions ---------------------------------------------------------------------------

def decision_json(row: asyncpg.Record) -> dict[str, Any]:
    return _jsonable(row, drop=("subject_hash",))


async def list_decisions(
    pool: asyncpg.Pool, number: str | None, limit: int
) -> list[dict[str, Any]]:
    if number is None:
        rows = await pool.fetch("SELECT * FROM decisions ORDER BY id DESC LIMIT $1", limit)
    else:
        rows = await pool.fetch(
            "SELECT * FROM decisions WHERE subject_hash = $1 ORDER BY id DESC LIMIT $2",
            subject_hash(number), limit,
        )
    return [decision_json(r) for r in rows]


def masked(number: str | None) -> str | None:
    return mask(number) if number else None
