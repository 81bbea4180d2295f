"""Every SQL statement of consent-proxy. Returns plain dataclasses and dicts; knows no HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import asyncpg
import msgspec
import orjson

from proxy.errors import Conflict, NotFound
from proxy.phone import mask, subject_hash
from proxy.policy.decision import Decision
from proxy.policy.facts import (
    Consent,
    Facts,
    Objection,
    Organisation,
    Relationship,
    Sender,
    Subject,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Client:
    account_sid: str
    name: str
    token_version: int
    organisations: tuple[str, ...]
    enabled: bool = True


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
        content_templates_carry_opt_out=row["content_templates_carry_opt_out"],
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
                   (id, name, sector, customer_term_months, sms_footer, stop_reply,
                    content_templates_carry_opt_out)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
            org.content_templates_carry_opt_out,
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
                  sms_footer = $5, stop_reply = $6, content_templates_carry_opt_out = $7,
                  updated_at = now()
           WHERE id = $1 RETURNING *""",
        org.id, org.name, org.sector, org.customer_term_months, org.sms_footer, org.stop_reply,
        org.content_templates_carry_opt_out,
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


_CLIENTS_SQL = """
SELECT c.account_sid, c.name, c.token_version, c.enabled, c.created_at, c.disabled_at,
       coalesce(array_agg(co.organisation_id ORDER BY co.organisation_id)
                FILTER (WHERE co.organisation_id IS NOT NULL), '{}') AS organisations
FROM clients c LEFT JOIN client_organisations co USING (account_sid)
"""


async def get_client(pool: asyncpg.Pool, account_sid: str) -> Client | None:
    row = await pool.fetchrow(
        _CLIENTS_SQL + "WHERE c.account_sid = $1 GROUP BY c.account_sid", account_sid)
    if row is None:
        return None
    return Client(row["account_sid"], row["name"], row["token_version"],
                  tuple(row["organisations"]), row["enabled"])


def _client_json(row: asyncpg.Record) -> dict[str, Any]:
    return {"account_sid": row["account_sid"], "name": row["name"],
            "organisations": list(row["organisations"]),
            "token_version": row["token_version"], "enabled": row["enabled"],
            "created_at": row["created_at"].isoformat(),
            "disabled_at": row["disabled_at"].isoformat() if row["disabled_at"] else None}


async def list_clients(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every client, oldest first, without tokens (they are never stored)."""
    rows = await pool.fetch(
        _CLIENTS_SQL + "GROUP BY c.account_sid ORDER BY c.created_at, c.account_sid")
    return [_client_json(r) for r in rows]


async def _client_report(conn: asyncpg.Connection, account_sid: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        _CLIENTS_SQL + "WHERE c.account_sid = $1 GROUP BY c.account_sid", account_sid)
    return _client_json(row)


async def rotate_client(pool: asyncpg.Pool, account_sid: str) -> dict[str, Any]:
    """A new token version: the old token stops the moment this commits (every gate is told
    by the clients_notify trigger, sql/009)."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            """UPDATE clients SET token_version = token_version + 1 WHERE account_sid = $1
               RETURNING 1""", account_sid)
        if found is None:
            raise NotFound(f"no client {account_sid!r}", "account_sid")
        return await _client_report(conn, account_sid)


async def set_client_enabled(pool: asyncpg.Pool, account_sid: str, enabled: bool,
                             at: dt.datetime) -> dict[str, Any]:
    """Disable (refused everywhere from the commit on) or enable a client. Idempotent: a
    second disable keeps the first disabled_at."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            """UPDATE clients SET enabled = $2,
                      disabled_at = CASE WHEN $2 THEN NULL ELSE coalesce(disabled_at, $3) END
               WHERE account_sid = $1 RETURNING 1""", account_sid, enabled, at)
        if found is None:
            raise NotFound(f"no client {account_sid!r}", "account_sid")
        return await _client_report(conn, account_sid)


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


# --- facts for the decision engine -------------------------------------------------------

# Fact rows arrive as JSON arrays (the hot-path and the bulk query alike), read by position
# in the order of the `_*_COLUMNS` lists below; timestamps arrive as UTC text.
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_INFINITE = {"infinity": _LATEST, "-infinity": _EARLIEST}


def _ts(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    # The offset parsed with the rest: a fifth of the time of .replace(tzinfo=…) afterwards.
    try:
        return _INFINITE.get(value) or dt.datetime.fromisoformat(value + "+00:00")
    except ValueError:
        return _beyond(value)


def _beyond(value: str) -> dt.datetime:
    """A timestamp PostgreSQL holds and Python cannot (after 9999, or BC: "0044-03-15T… BC",
    written only by hand) as the last or first instant Python has, so a fact row never fails
    to load; anything else is not a timestamp from the fact query at all."""
    if value.endswith(" BC"):
        return _EARLIEST
    year = value.split("-", 1)[0]
    if year.isascii() and year.isdigit() and len(year) > 4:
        return _LATEST
    raise ValueError(f"not a timestamp: {value[:40]!r}")


def _given(value: str) -> dt.datetime:
    found = _ts(value)
    assert found is not None  # NOT NULL columns
    return found


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(number=row[0], kind=row[1], published_for_marketing=row[2])


def _consent(row: Sequence[Any]) -> Consent:
    return Consent(
        id=row[0], organisation_id=row[2], channel=row[3], topics=tuple(row[4]), kind=row[5],
        given_at=_given(row[6]), provenance=row[7], expires_at=_ts(row[8]),
        verified_at=_ts(row[9]), first_contact_by=_ts(row[10]),
        requested_start=_ts(row[11]), requested_end=_ts(row[12]),
        withdrawn_at=_ts(row[13]), first_used_at=_ts(row[14]), consumed_at=_ts(row[15]),
    )


def _relationship(row: Sequence[Any]) -> Relationship:
    return Relationship(
        id=row[0], organisation_id=row[2], kind=row[3], topics=tuple(row[4]),
        started_at=_given(row[5]), provenance=row[6], ended_at=_ts(row[7]),
        opt_out_offered=row[8],
    )


def _objection(row: Sequence[Any]) -> Objection:
    return Objection(id=row[0], organisation_id=row[2], channel=row[3],
                     received_at=_given(row[4]), via=row[5])


# The columns of each fact row, in the order the builders above read them; `@` marks a
# timestamp.
_SUBJECT_COLUMNS = ("sj.number", "sj.kind", "sj.published_for_marketing")
_CONSENT_COLUMNS = ("c.id", "c.subject", "c.organisation_id", "c.channel", "c.topics",
                    "c.kind", "@c.given_at", "c.provenance", "@c.expires_at",
                    "@c.verified_at", "@c.first_contact_by", "@c.requested_start",
                    "@c.requested_end", "@c.withdrawn_at", "@c.first_used_at",
                    "@c.consumed_at")
_RELATIONSHIP_COLUMNS = ("r.id", "r.subject", "r.organisation_id", "r.kind", "r.topics",
                         "@r.started_at", "r.provenance", "@r.ended_at", "r.opt_out_offered")
_OBJECTION_COLUMNS = ("ob.id", "ob.subject_hash", "ob.organisation_id", "ob.channel",
                      "@ob.received_at", "ob.via")
# Organisation and Sender, in the order of their dataclass fields.
_ORGANISATION_COLUMNS = ("o.id", "o.name", "o.sector", "o.customer_term_months",
                         "o.sms_footer", "o.stop_reply", "o.content_templates_carry_opt_out")
_SENDER_COLUMNS = ("s.sender", "s.organisation_id", "s.topic", "s.purpose", "s.automated",
                   "s.inbound_webhook")


def _json_array(columns: Sequence[str]) -> str:
    # Timestamps as UTC text, whatever the session's TimeZone.
    return "json_build_array(" + ", ".join(
        f"{c[1:]} AT TIME ZONE 'UTC'" if c.startswith("@") else c for c in columns) + ")"


# One round trip for any number of lookups (group fetch, proxy/reader.py): for each
# (sender, number), the sender, its organisation, the subject, and every consent,
# relationship and live objection that can bear on (subject, organisation). One row per
# lookup, in order, as one JSON array: decoding that costs the proxy a fraction of what the
# same facts as composite rows did.
_FACTS_SQL = f"""
SELECT json_build_array(
    CASE WHEN s.sender IS NULL THEN NULL ELSE {_json_array(_SENDER_COLUMNS)} END,
    CASE WHEN o.id IS NULL THEN NULL ELSE {_json_array(_ORGANISATION_COLUMNS)} END,
    CASE WHEN sj.number IS NULL THEN NULL ELSE {_json_array(_SUBJECT_COLUMNS)} END,
    (SELECT json_agg({_json_array(_CONSENT_COLUMNS)} ORDER BY c.id) FROM consents c
     WHERE c.subject = q.number AND c.organisation_id = s.organisation_id),
    (SELECT json_agg({_json_array(_RELATIONSHIP_COLUMNS)} ORDER BY r.id) FROM relationships r
     WHERE r.subject = q.number AND r.organisation_id = s.organisation_id),
    (SELECT json_agg({_json_array(_OBJECTION_COLUMNS)} ORDER BY ob.id) FROM objections ob
     WHERE ob.subject_hash = q.hash AND ob.lifted_at IS NULL
       AND (ob.organisation_id IS NULL OR ob.organisation_id = s.organisation_id))
)::text AS facts
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(sender, number, hash, n)
LEFT JOIN senders s ON s.sender = q.sender
LEFT JOIN organisations o ON o.id = s.organisation_id
LEFT JOIN subjects sj ON sj.number = q.number
ORDER BY q.n
"""


class _Interned(Generic[T]):
    """One object per distinct row value: the few organisations and senders come back on
    every lookup, and their (frozen) objects can be shared instead of built each time. A row
    that changes is a different key, so a stale object is never handed out."""

    def __init__(self, build: Callable[..., T], limit: int = 1024) -> None:
        self._build = build
        self._limit = limit
        self._seen: dict[tuple[Any, ...], T] = {}

    def __call__(self, row: Sequence[Any]) -> T:
        key = tuple(row)
        found = self._seen.get(key)
        if found is None:
            if len(self._seen) >= self._limit:
                self._seen.clear()
            found = self._seen[key] = self._build(*key)
        return found


_interned_organisation = _Interned(Organisation)
_interned_sender = _Interned(Sender)


def _facts(text: str) -> tuple[Sender | None, Facts]:
    sender_row, org_row, subject_row, consents, relationships, objections = orjson.loads(text)
    facts = Facts(
        organisation=_interned_organisation(org_row) if org_row is not None else None,
        subject=_subject(subject_row) if subject_row is not None else None,
        consents=tuple(_consent(c) for c in consents or ()),
        relationships=tuple(_relationship(r) for r in relationships or ()),
        objections=tuple(_objection(o) for o in objections or ()),
    )
    return (_interned_sender(sender_row) if sender_row is not None else None), facts


async def load_facts_many(
    conn: asyncpg.Pool | asyncpg.Connection, lookups: Sequence[tuple[str, str]]
) -> list[tuple[Sender | None, Facts]]:
    """Everything the engine needs for each proposed (sender, number), in a single query."""
    senders = [sender for sender, _ in lookups]
    numbers = [number for _, number in lookups]
    rows = await conn.fetch(_FACTS_SQL, senders, numbers, [subject_hash(n) for n in numbers])
    return [_facts(row[0]) for row in rows]


async def load_facts(
    conn: asyncpg.Pool | asyncpg.Connection, sender: str, number: str
) -> tuple[Sender | None, Facts]:
    """Everything the engine needs for one proposed contact."""
    (found,) = await load_facts_many(conn, [(sender, number)])
    return found


async def load_sender(
    conn: asyncpg.Pool | asyncpg.Connection, sender: str
) -> tuple[Sender, Organisation] | None:
    row = await conn.fetchrow(
        "SELECT s AS sender_row, o AS org_row FROM senders s "
        "JOIN organisations o ON o.id = s.organisation_id WHERE s.sender = $1", sender)
    if row is None:
        return None
    return _sender(row["sender_row"]), _organisation(row["org_row"])


# Bulk variant for scrubbing: one round trip per batch of numbers, set-based (= ANY of an
# array), never a query per number. Only what can change a decision comes back: a subject
# record only when it is a business (N1) or published for marketing (N9), through the
# partial index of sql/007, since the engine treats any other subject as it treats an
# unknown number; so most numbers of a scrub come back as nothing at all. The numbers and
# hashes arrive as comma-separated text (asyncpg checks every element of an array parameter
# for nesting, a microsecond each; E.164 numbers and hex digests hold no comma) and the
# facts leave as one JSON text, the rows in the hot path's format.
_BULK_FACTS_SQL = f"""
SELECT json_build_array(
    (SELECT json_agg({_json_array(_SUBJECT_COLUMNS)}) FROM subjects sj
     WHERE sj.number = ANY(string_to_array($1, ','))
       AND (sj.kind = 'business' OR sj.published_for_marketing)),
    (SELECT json_agg({_json_array(_CONSENT_COLUMNS)} ORDER BY c.id) FROM consents c
     WHERE c.subject = ANY(string_to_array($1, ',')) AND c.organisation_id = $2),
    (SELECT json_agg({_json_array(_RELATIONSHIP_COLUMNS)} ORDER BY r.id) FROM relationships r
     WHERE r.subject = ANY(string_to_array($1, ',')) AND r.organisation_id = $2),
    (SELECT json_agg({_json_array(_OBJECTION_COLUMNS)} ORDER BY ob.id) FROM objections ob
     WHERE ob.subject_hash = ANY(string_to_array($3, ',')) AND ob.lifted_at IS NULL
       AND (ob.organisation_id IS NULL OR ob.organisation_id = $2))
)::text
"""
# A batch of a scrub holds tens of thousands of numbers, against a store of any size: only
# a plan made for the batch at hand picks well between scanning a table once and probing its
# index per number (measured on 1 M subjects: 3-5 us of server time per number when a batch
# of 50,000 scans the fact tables, 16 us when each number probes the indexes). No parallel
# workers: the scrub's own workers need the other cores.
_BULK_SETTINGS = ("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                  "set_config('max_parallel_workers_per_gather', '0', true)")


async def fetch_facts_bulk(
    pool: asyncpg.Pool, organisation_id: str, numbers: str, hashes: str,
) -> str:
    """The facts for many numbers of one organisation, as the query's JSON text (read with
    facts_from_bulk). `numbers`: E.164 numbers, comma-separated; `hashes`: the subject_hash
    of each, in the same order."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(_BULK_SETTINGS)
        text: str = await conn.fetchval(_BULK_FACTS_SQL, numbers, organisation_id, hashes)
    return text


def facts_from_bulk(text: str, organisation: Organisation, numbers: str, hashes: str,
                    unreadable: set[str] | None = None) -> dict[str, Facts]:
    """Facts per number from fetch_facts_bulk's answer for these numbers and hashes. Numbers
    with nothing on file that bears on a decision are absent, and so is a subject record
    that is neither a business nor published. Pure: the scrub runs it in a worker.

    With `unreadable`, a number with a row that cannot be read is left out and added to it,
    so one bad row costs its own number an answer, not the whole batch (the caller must
    tell such a number from one with nothing on file). Without it, such a row raises."""
    subject_rows, consent_rows, relationship_rows, objection_rows = (
        rows or () for rows in orjson.loads(text))
    subjects = {r[0]: _subject(r) for r in subject_rows}
    consents: defaultdict[str, list[Consent]] = defaultdict(list)
    relationships: defaultdict[str, list[Relationship]] = defaultdict(list)
    objections: defaultdict[str, list[Objection]] = defaultdict(list)
    broken: set[str] = set()
    for r in consent_rows:
        try:
            consents[r[1]].append(_consent(r))
        except Exception:
            _unreadable(broken, r[1], unreadable)
    for r in relationship_rows:
        try:
            relationships[r[1]].append(_relationship(r))
        except Exception:
            _unreadable(broken, r[1], unreadable)
    if objection_rows:
        by_hash = dict(zip(hashes.split(","), numbers.split(","), strict=True))
        for r in objection_rows:
            try:
                objections[by_hash[r[1]]].append(_objection(r))
            except Exception:
                _unreadable(broken, by_hash[r[1]], unreadable)
    held = subjects.keys() | consents.keys() | relationships.keys() | objections.keys()
    return {
        number: Facts(organisation=organisation, subject=subjects.get(number),
                      consents=tuple(consents.get(number, ())),
                      relationships=tuple(relationships.get(number, ())),
                      objections=tuple(objections.get(number, ())))
        for number in held - broken
    }


def _unreadable(broken: set[str], number: str, unreadable: set[str] | None) -> None:
    if unreadable is None:
        raise  # (called in an except block) a caller without `unreadable` takes no gaps
    broken.add(number)
    unreadable.add(number)


async def load_facts_bulk(
    pool: asyncpg.Pool, organisation: Organisation, numbers: Sequence[str],
) -> dict[str, Facts]:
    """fetch_facts_bulk and facts_from_bulk in one."""
    unique = list(dict.fromkeys(numbers))
    joined, hashes = ",".join(unique), ",".join(subject_hash(n) for n in unique)
    text = await fetch_facts_bulk(pool, organisation.id, joined, hashes)
    return facts_from_bulk(text, organisation, joined, hashes)


# --- recording decisions, outcomes and idempotency ---------------------------------------

class DecisionRecord(msgspec.Struct, frozen=True, gc=False):
    """One gated request and what the engine decided about it."""

    decision: Decision
    decided_at: dt.datetime
    channel: str
    request_id: str | None = None
    account_sid: str | None = None
    sender: str | None = None
    organisation_id: str | None = None
    subject: str | None = None  # E.164; stored only as hash and mask
    topic: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class IdempotencyClaim(msgspec.Struct, frozen=True, gc=False):
    account_sid: str
    token: str
    request_hash: str


class RequestAlreadyUsed(Exception):
    """N6: the contact request was consumed by a concurrent contact; decide again."""


# One statement for a whole batch (group commit): one round trip, one executor run, one
# commit, and atomic. For the decisions: consume the contact requests / mark the first call
# of a consent, insert each decision only if its consumption succeeded, and claim the
# idempotency tokens. For the outcomes of earlier decisions: insert them and complete their
# idempotency entries. The batch arrives as two JSON arrays of rows (record_args,
# outcome_args), which costs the proxy a fraction of what thirty array parameters did.
# Decision rows are numbered by `n` in queue order and the answer has one row per decision,
# in that order, with a NULL id where the request was used (N6): within a batch the earliest
# decision gets a contact request, as it would one by one.
WRITE_SQL = """
WITH i AS (
    SELECT (e.r->>0)::timestamptz AS decided_at, e.r->>1 AS request_id,
        e.r->>2 AS account_sid, e.r->>3 AS channel, e.r->>4 AS sender,
        e.r->>5 AS organisation_id, e.r->>6 AS subject_hash, e.r->>7 AS subject_masked,
        e.r->>8 AS topic, e.r->>9 AS decision, e.r->>10 AS reason, e.r->>11 AS basis,
        e.r->>12 AS rule, (e.r->>13)::bigint AS consumes, (e.r->>14)::bigint AS first_use,
        e.r->15 AS evidence, (e.r->>16)::timestamptz AS retry_after,
        ARRAY(SELECT jsonb_array_elements_text(e.r->17)) AS obligations, e.r->18 AS details,
        e.r->>19 AS token, e.r->>20 AS request_hash, e.n
    FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS e(r, n)),
c AS (
    UPDATE consents SET consumed_at = w.decided_at
    FROM (SELECT DISTINCT ON (consumes) consumes, decided_at, n FROM i
          WHERE consumes IS NOT NULL ORDER BY consumes, n) AS w
    WHERE consents.id = w.consumes AND consents.consumed_at IS NULL
    RETURNING w.n),
r AS MATERIALIZED (
    SELECT i.*, nextval('decisions_id_seq') AS id FROM i
    WHERE i.consumes IS NULL OR i.n IN (SELECT n FROM c)),
d AS (
    INSERT INTO decisions (id, decided_at, request_id, account_sid, channel, sender,
        organisation_id, subject_hash, subject_masked, topic, decision, reason, basis, rule,
        consumed_consent_id, evidence, retry_after, obligations, details)
    OVERRIDING SYSTEM VALUE
    SELECT id, decided_at, request_id, account_sid, channel, sender, organisation_id,
        subject_hash, subject_masked, topic, decision, reason, basis, rule, consumes,
        evidence, retry_after, obligations, details
    FROM r ORDER BY n  -- the audit chain (sql/005) follows queue order
    RETURNING 1),
f AS (
    UPDATE consents SET first_used_at = w.decided_at, first_used_by = w.id
    FROM (SELECT DISTINCT ON (first_use) first_use, decided_at, id FROM r
          WHERE first_use IS NOT NULL ORDER BY first_use, n) AS w
    WHERE consents.id = w.first_use AND consents.first_used_at IS NULL
    RETURNING 1),
k AS (
    INSERT INTO idempotency_keys (account_sid, token, request_hash, decision_id, created_at)
    SELECT account_sid, token, request_hash, id, decided_at FROM r
    WHERE token IS NOT NULL ORDER BY n
    ON CONFLICT DO NOTHING RETURNING decision_id),
oi AS (
    SELECT (e.r->>0)::bigint AS decision_id, (e.r->>1)::int AS upstream_status,
        e.r->>2 AS upstream_sid, e.r->>3 AS error, (e.r->>4)::int AS status,
        decode(e.r->>5, 'hex') AS response, e.r->>6 AS content_type,
        e.r->>7 AS account_sid, e.r->>8 AS token
    FROM jsonb_array_elements($2::text::jsonb) AS e(r)),
o AS (
    INSERT INTO decision_outcomes (decision_id, upstream_status, upstream_sid, error)
    SELECT decision_id, upstream_status, upstream_sid, error FROM oi RETURNING decision_id),
u AS (
    UPDATE idempotency_keys ik SET status = oi.status, response = oi.response,
        content_type = oi.content_type
    FROM oi
    WHERE oi.account_sid IS NOT NULL AND ik.account_sid = oi.account_sid
      AND ik.token = oi.token AND ik.decision_id = oi.decision_id
      AND oi.decision_id IN (SELECT decision_id FROM o)
    RETURNING 1)
SELECT r.id, r.id IN (SELECT decision_id FROM k) AS claimed
FROM i LEFT JOIN r USING (n) ORDER BY i.n
"""


def record_args(rec: DecisionRecord, claim: IdempotencyClaim | None) -> tuple[Any, ...]:
    """One decision row of WRITE_SQL (its fields in order)."""
    d = rec.decision
    return (
        rec.decided_at, rec.request_id, rec.account_sid, rec.channel, rec.sender,
        rec.organisation_id, subject_hash(rec.subject) if rec.subject else None,
        masked(rec.subject), rec.topic, d.decision, d.reason, d.basis, d.rule,
        d.consumes if d.allowed else None, d.first_use if d.allowed else None,
        [dict(e) for e in d.evidence], d.retry_after, list(d.obligations), rec.details,
        claim.token if claim else None, claim.request_hash if claim else None,
    )


def outcome_args(
    decision_id: int, *, upstream_status: int | None, upstream_sid: str | None,
    error: str | None, response_status: int, response: bytes, content_type: str,
    claim: IdempotencyClaim | None = None,
) -> tuple[Any, ...]:
    """One outcome row of WRITE_SQL. The response is kept only for idempotent replays, so
    only with a claim (as hex: JSON has no bytes)."""
    return (decision_id, upstream_status, upstream_sid, error, response_status,
            response.hex() if claim else None, content_type,
            claim.account_sid if claim else None, claim.token if claim else None)


def _json(value: Any) -> str:
    # Naive datetimes as UTC, as asyncpg encodes them for timestamptz.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC).decode()


async def write_batch(
    conn: asyncpg.Pool | asyncpg.Connection, decisions: Sequence[tuple[Any, ...]],
    outcomes: Sequence[tuple[Any, ...]] = (),
) -> list[asyncpg.Record]:
    """Commit record_args and outcome_args rows together; one (id, claimed) per decision."""
    rows: list[asyncpg.Record] = await conn.fetch(WRITE_SQL, _json(decisions),
                                                  _json(outcomes))
    return rows


async def record_decision(
    conn: asyncpg.Pool | asyncpg.Connection, rec: DecisionRecord,
    claim: IdempotencyClaim | None = None,
) -> tuple[int, bool]:
    """Commit the decision row (with its side effects). Returns (decision id, token claimed).

    Raises RequestAlreadyUsed when a concurrent contact consumed the request first; nothing
    is written then, and the caller decides again on fresh facts.
    """
    (row,) = await write_batch(conn, [record_args(rec, claim)])
    if row["id"] is None:
        raise RequestAlreadyUsed
    return row["id"], claim is None or bool(row["claimed"])


async def complete_idempotent(
    conn: asyncpg.Pool | asyncpg.Connection, claim: IdempotencyClaim, status: int,
    response: bytes, content_type: str,
) -> None:
    """Store the answer given to a request that had no outcome (a denial) for replays."""
    await conn.execute(
        """UPDATE idempotency_keys SET status = $3, response = $4, content_type = $5
           WHERE account_sid = $1 AND token = $2 AND status IS NULL""",
        claim.account_sid, claim.token, status, response, content_type,
    )


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status: int | None  # None: the first request is still in flight
    body: bytes
    content_type: str


async def find_idempotent(
    conn: asyncpg.Pool | asyncpg.Connection, account_sid: str, token: str, now: dt.datetime
) -> StoredResponse | None:
    """The first response for this client's token within 24 hours; older entries are dropped."""
    row = await conn.fetchrow(
        """WITH stale AS (
               DELETE FROM idempotency_keys WHERE account_sid = $1 AND token = $2
                   AND created_at < $3::timestamptz - interval '24 hours')
           SELECT request_hash, status, response, content_type FROM idempotency_keys
           WHERE account_sid = $1 AND token = $2
             AND created_at >= $3::timestamptz - interval '24 hours'""",
        account_sid, token, now,
    )
    if row is None:
        return None
    return StoredResponse(row["request_hash"], row["status"], row["response"] or b"",
                          row["content_type"] or "application/json")


async def owned_sids(
    conn: asyncpg.Pool | asyncpg.Connection, account_sid: str, sids: Sequence[str]
) -> set[str]:
    """Which of these upstream call/message SIDs this client created through the proxy."""
    if not sids:
        return set()
    rows = await conn.fetch(
        """SELECT o.upstream_sid FROM decision_outcomes o JOIN decisions d ON d.id = o.decision_id
           WHERE o.upstream_sid = ANY($1::text[]) AND d.account_sid = $2""",
        list(sids), account_sid,
    )
    return {r["upstream_sid"] for r in rows}


# --- inbound SMS and voice objections (the opt-out loop) ---------------------------------

@dataclass(frozen=True, slots=True)
class InboundRecord:
    message_sid: str
    received_at: dt.datetime
    sender: str
    organisation_id: str | None  # None: the number is no registered sender
    subject: str
    intent: str
    body_hash: str


_INBOUND_INSERT = """
INSERT INTO inbound_messages (message_sid, received_at, sender, organisation_id, subject_hash,
    subject_masked, intent, body_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (message_sid) DO NOTHING
RETURNING message_sid"""


async def _claim_inbound(conn: asyncpg.Connection, rec: InboundRecord) -> bool:
    claimed = await conn.fetchval(
        _INBOUND_INSERT, rec.message_sid, rec.received_at, rec.sender, rec.organisation_id,
        subject_hash(rec.subject), mask(rec.subject), rec.intent, rec.body_hash)
    return claimed is not None


async def inbound_reply(conn: asyncpg.Pool | asyncpg.Connection, message_sid: str
                        ) -> str | None:
    """The reply given to a MessageSid already handled (None while it is still in flight)."""
    reply: str | None = await conn.fetchval(
        "SELECT reply FROM inbound_messages WHERE message_sid = $1", message_sid)
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
            """SELECT message_sid, received_at FROM inbound_messages
               WHERE subject_hash = $1 AND organisation_id = $2 AND intent = 'start'
                 AND received_at > $3 ORDER BY received_at, message_sid LIMIT 1""",
            digest, objection.organisation, objection.received_at)
        objection_id: int = await conn.fetchval(
            """INSERT INTO objections (subject_hash, subject, organisation_id, channel,
                   received_at, via, source_ref, body_hash, lifted_at, lifted_ref)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
            digest, objection.subject, objection.organisation, objection.channel,
            objection.received_at, objection.via, objection.source_ref, objection.body_hash,
            *((later_start["received_at"], later_start["message_sid"]) if later_start
              else (None, None)))
        await conn.execute(
            "UPDATE inbound_messages SET objection_id = $2, reply = $3 WHERE message_sid = $1",
            rec.message_sid, objection_id, reply)
        if later_start is not None:
            await conn.execute(
                "UPDATE inbound_messages SET lifted = lifted + 1 WHERE message_sid = $1",
                later_start["message_sid"])
    return objection_id


async def start_by_sms(pool: asyncpg.Pool, rec: InboundRecord, reply: str) -> int | None:
    """N12: START lifts the objections this number made by SMS keyword to this organisation
    only. Returns how many were lifted; None for a retry."""
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim_inbound(conn, rec):
            return None
        lifted: int = await conn.fetchval(
            """WITH l AS (
                   UPDATE objections SET lifted_at = $3, lifted_ref = $4
                   WHERE subject_hash = $1 AND organisation_id = $2 AND via = 'sms'
                     AND source_ref IS NOT NULL AND lifted_at IS NULL RETURNING 1)
               SELECT count(*) FROM l""",
            subject_hash(rec.subject), rec.organisation_id, rec.received_at, rec.message_sid)
        await conn.execute(
            "UPDATE inbound_messages SET lifted = $2, reply = $3 WHERE message_sid = $1",
            rec.message_sid, lifted, reply)
    return lifted


async def claim_inbound(pool: asyncpg.Pool, rec: InboundRecord) -> bool:
    async with pool.acquire() as conn:
        return await _claim_inbound(conn, rec)


async def finish_inbound(pool: asyncpg.Pool, message_sid: str, reply: str,
                         relay_status: int | None = None) -> None:
    await pool.execute(
        "UPDATE inbound_messages SET reply = $2, relay_status = $3 WHERE message_sid = $1",
        message_sid, reply, relay_status)


async def object_by_voice(pool: asyncpg.Pool, objection: ObjectionIn) -> int | None:
    """An objection made in a call (IVR). None when this call already recorded it."""
    objection_id: int | None = await pool.fetchval(
        """INSERT INTO objections (subject_hash, subject, organisation_id, channel, received_at,
               via, source_ref)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (source_ref) WHERE source_ref IS NOT NULL DO NOTHING RETURNING id""",
        subject_hash(objection.subject), objection.subject, objection.organisation,
        objection.channel, objection.received_at, objection.via, objection.source_ref)
    return objection_id


async def relay_client(pool: asyncpg.Pool, organisation_id: str) -> tuple[str, int] | None:
    """The client whose token signs relayed webhooks for an organisation: its oldest enabled
    client (a disabled client's token signs nothing)."""
    row = await pool.fetchrow(
        """SELECT c.account_sid, c.token_version FROM clients c
           JOIN client_organisations co USING (account_sid)
           WHERE co.organisation_id = $1 AND c.enabled
           ORDER BY c.created_at, c.account_sid LIMIT 1""",
        organisation_id)
    return (row["account_sid"], row["token_version"]) if row else None


# --- audit: the decision chain, evidence reports, retention --------------------------------

@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A row of audit_checkpoints, with the row_hash the decision at its chain_seq has now
    (None: no such row)."""

    id: int
    chain_seq: int
    row_hash: str
    taken_at: dt.datetime
    mac: str
    source: str
    present_hash: str | None


@dataclass(frozen=True, slots=True)
class ChainReport:
    rows: int
    broken_id: int | None = None
    broken_seq: int | None = None
    why: str | None = None
    # Read in the same snapshot as the walk: where pruning last cut the chain, the
    # checkpoints, and the row_hash at each chain_seq asked for (None: no such row).
    pruned_through: int | None = None
    anchor_hash: str | None = None
    checkpoints: tuple[StoredCheckpoint, ...] = ()
    hashes_at: dict[int, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.broken_id is None


async def verify_chain(conn: asyncpg.Connection, seqs: Sequence[int] = ()) -> ChainReport:
    """Walk the decision chain in commit order; name the first row whose hash or link is off.
    Also reads the checkpoints and the row hashes at `seqs`, for `proxy.checkpoints`."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        anchor = await conn.fetchrow(
            "SELECT through_seq, anchor_hash FROM audit_anchors ORDER BY id DESC LIMIT 1")
        walked = await _walk_chain(conn, anchor["anchor_hash"] if anchor else None)
        checkpoints = tuple(StoredCheckpoint(**row) for row in await conn.fetch(
            """SELECT c.id, c.chain_seq, c.row_hash, c.taken_at, c.mac, c.source,
                      d.row_hash AS present_hash
               FROM audit_checkpoints c LEFT JOIN decisions d ON d.chain_seq = c.chain_seq
               ORDER BY c.id"""))
        found = {row["chain_seq"]: row["row_hash"] for row in await conn.fetch(
            "SELECT chain_seq, row_hash FROM decisions WHERE chain_seq = ANY($1::bigint[])",
            list(seqs))}
    return dataclasses.replace(
        walked, pruned_through=anchor["through_seq"] if anchor else None,
        anchor_hash=anchor["anchor_hash"] if anchor else None, checkpoints=checkpoints,
        hashes_at={seq: found.get(seq) for seq in seqs})


async def _walk_chain(conn: asyncpg.Connection, expected_prev: str | None) -> ChainReport:
    rows = 0
    cursor = conn.cursor(
        """SELECT id, chain_seq, prev_hash, row_hash,
                  decision_row_hash(d, d.prev_hash) AS recomputed
           FROM decisions d ORDER BY chain_seq""", prefetch=2000)
    async for row in cursor:
        rows += 1
        if row["prev_hash"] != expected_prev:
            return ChainReport(rows, row["id"], row["chain_seq"],
                               "prev_hash does not match the row before it")
        if row["row_hash"] != row["recomputed"]:
            return ChainReport(rows, row["id"], row["chain_seq"],
                               "the row's content does not match its row_hash")
        expected_prev = row["row_hash"]
    return ChainReport(rows)


async def chain_head(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[int, str] | None:
    """The newest committed decision row's (chain_seq, row_hash); None with no rows."""
    row = await conn.fetchrow(
        "SELECT chain_seq, row_hash FROM decisions ORDER BY chain_seq DESC LIMIT 1")
    return (row["chain_seq"], row["row_hash"]) if row else None


async def latest_checkpoint(conn: asyncpg.Pool | asyncpg.Connection) -> tuple[int, str] | None:
    row = await conn.fetchrow(
        "SELECT chain_seq, row_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1")
    return (row["chain_seq"], row["row_hash"]) if row else None


async def insert_checkpoint(conn: asyncpg.Pool | asyncpg.Connection, chain_seq: int,
                            row_hash: str, taken_at: dt.datetime, mac: str, source: str) -> int:
    checkpoint_id: int = await conn.fetchval(
        """INSERT INTO audit_checkpoints (chain_seq, row_hash, taken_at, mac, source)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        chain_seq, row_hash, taken_at, mac, source)
    return checkpoint_id


async def prune(conn: asyncpg.Connection, before: dt.datetime) -> dict[str, int]:
    """Retention: delete decisions (with outcomes and idempotency entries) decided before
    `before`, as a prefix of the chain; inbound message records too. Objections are kept."""
    async with conn.transaction():
        through: int | None = await conn.fetchval(
            """SELECT max(chain_seq) FROM decisions WHERE chain_seq <= coalesce(
                   (SELECT min(chain_seq) - 1 FROM decisions WHERE decided_at >= $1),
                   (SELECT max(chain_seq) FROM decisions))""", before)
        counts = {"decisions": 0, "outcomes": 0, "idempotency_keys": 0, "contact_outcomes": 0,
                  "relay_targets": 0, "consumption_reversals": 0, "inbound_messages": 0,
                  "checkpoints": 0, "dial_attempts": 0, "dial_outcomes": 0}
        if through is not None:
            anchor = await conn.fetchval(
                "SELECT row_hash FROM decisions WHERE chain_seq = $1", through)
            await conn.execute("SELECT set_config('consent_proxy.prune_through', $1, true)",
                               str(through))
            counts["idempotency_keys"] = await _count(conn, """DELETE FROM idempotency_keys k
                USING decisions d WHERE d.id = k.decision_id AND d.chain_seq <= $1""", through)
            counts["contact_outcomes"] = await _count(conn, """DELETE FROM contact_outcomes c
                USING decisions d WHERE d.id = c.decision_id AND d.chain_seq <= $1""", through)
            counts["relay_targets"] = await _count(conn, """DELETE FROM relay_targets r
                USING decisions d WHERE d.id = r.decision_id AND d.chain_seq <= $1""", through)
            counts["consumption_reversals"] = await _count(conn, """DELETE FROM
                consumption_reversals v USING decisions d
                WHERE d.id = v.decision_id AND d.chain_seq <= $1""", through)
            counts["dial_attempts"] = await _count(conn, """DELETE FROM dial_attempts a
                USING decisions d WHERE d.id = a.decision_id AND d.chain_seq <= $1""", through)
            counts["dial_outcomes"] = await _count(conn, """DELETE FROM dial_outcomes o
                USING decisions d WHERE d.id = o.decision_id AND d.chain_seq <= $1""", through)
            counts["outcomes"] = await _count(conn, """DELETE FROM decision_outcomes o
                USING decisions d WHERE d.id = o.decision_id AND d.chain_seq <= $1""", through)
            counts["decisions"] = await _count(
                conn, "DELETE FROM decisions WHERE chain_seq <= $1", through)
            # A checkpoint of a pruned row names a row that is gone on purpose; the anchor
            # below vouches for where the chain now starts.
            counts["checkpoints"] = await _count(
                conn, "DELETE FROM audit_checkpoints WHERE chain_seq <= $1", through)
            await conn.execute(
                """INSERT INTO audit_anchors (through_seq, anchor_hash, pruned_rows,
                       pruned_before) VALUES ($1, $2, $3, $4)""",
                through, anchor, counts["decisions"], before)
        counts["inbound_messages"] = await _count(
            conn, "DELETE FROM inbound_messages WHERE received_at < $1", before)
    return counts


async def _count(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    status: str = await conn.execute(sql, *args)
    return int(status.rsplit(" ", 1)[-1])


async def evidence_report(conn: asyncpg.Pool | asyncpg.Connection, number: str,
                          generated_at: dt.datetime) -> dict[str, Any]:
    """Everything on file about one number, self-contained (CTM: proof of consent on request):
    the subject, consents and relationships with their evidence, objections, and every
    decision with its outcome and chain hashes. Raises NotFound when nothing is held."""
    digest = subject_hash(number)
    subject = await conn.fetchrow("SELECT * FROM subjects WHERE number = $1", number)
    consents = await conn.fetch(
        """SELECT c.*, o.name AS organisation_name FROM consents c
           JOIN organisations o ON o.id = c.organisation_id WHERE c.subject = $1
           ORDER BY c.id""", number)
    relationships = await conn.fetch(
        """SELECT r.*, o.name AS organisation_name FROM relationships r
           JOIN organisations o ON o.id = r.organisation_id WHERE r.subject = $1
           ORDER BY r.id""", number)
    objections = await conn.fetch(
        """SELECT ob.*, o.name AS organisation_name FROM objections ob
           LEFT JOIN organisations o ON o.id = ob.organisation_id
           WHERE ob.subject_hash = $1 ORDER BY ob.id""", digest)
    decisions = await conn.fetch(
        """SELECT d.*, oc.upstream_status, oc.upstream_sid, oc.error AS outcome_error,
                  oc.recorded_at AS outcome_recorded_at
           FROM decisions d LEFT JOIN decision_outcomes oc ON oc.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.chain_seq""", digest)
    reversals = await conn.fetch(
        """SELECT v.* FROM consumption_reversals v JOIN decisions d ON d.id = v.decision_id
           WHERE d.subject_hash = $1 ORDER BY v.id""", digest)
    if subject is None and not (consents or relationships or objections or decisions):
        raise NotFound("nothing is held about this number", "number")
    return {
        "report": "consent-proxy evidence",
        "generated_at": generated_at.isoformat(),
        "number": number,
        "subject": _jsonable(subject, drop=("number",)) if subject is not None else None,
        "consents": [_jsonable(r, drop=("subject",)) for r in consents],
        "relationships": [_jsonable(r, drop=("subject",)) for r in relationships],
        "objections": [_jsonable(r, drop=("subject", "subject_hash")) for r in objections],
        "decisions": [decision_json(r) for r in decisions],
        # N5/N6: what a contact that never happened gave back, per decision.
        "consumption_reversals": [_jsonable(r) for r in reversals],
        "integrity": "Decisions carry chain_seq, prev_hash and row_hash; `consent-proxy audit "
                     "verify` recomputes the whole chain.",
    }


# --- relays: TwiML and callbacks that Twilio requests through the proxy --------------------

@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where a relay URL leads: the dialer's own URL (None: recorded, not passed on)."""

    id: str
    decision_id: int
    account_sid: str
    kind: str  # twiml | callback
    field: str
    url: str | None
    method: str  # GET | POST


async def add_relay_targets(conn: asyncpg.Pool | asyncpg.Connection,
                            targets: Sequence[RelayTarget]) -> None:
    if not targets:
        return
    # Committed without waiting for the disk: the row is needed seconds later, when Twilio
    # calls back, and a crash within the moment before the disk has it costs that callback
    # (an unknown id is a 404; a TwiML relay's call ends), never a decision: those are
    # committed durably. A create does not pay a second fsync for it.
    await conn.execute(
        """WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
           INSERT INTO relay_targets (id, decision_id, account_sid, kind, field, url, method)
           SELECT t.* FROM async, unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                                         $5::text[], $6::text[], $7::text[]) AS t""",
        [t.id for t in targets], [t.decision_id for t in targets],
        [t.account_sid for t in targets], [t.kind for t in targets],
        [t.field for t in targets], [t.url for t in targets], [t.method for t in targets])


async def get_relay_target(conn: asyncpg.Pool | asyncpg.Connection, relay_id: str,
                           kind: str) -> RelayTarget | None:
    row = await conn.fetchrow(
        """SELECT id, decision_id, account_sid, kind, field, url, method FROM relay_targets
           WHERE id = $1 AND kind = $2""", relay_id, kind)
    return RelayTarget(*row.values()) if row is not None else None


async def call_decision(conn: asyncpg.Pool | asyncpg.Connection, account_sid: str,
                        call_sid: str) -> tuple[int, str | None] | None:
    """(decision id, From as given) of the create that placed this client's call."""
    row = await conn.fetchrow(
        """SELECT d.id, d.sender FROM decision_outcomes o JOIN decisions d ON d.id = o.decision_id
           WHERE o.upstream_sid = $1 AND d.account_sid = $2 ORDER BY d.id LIMIT 1""",
        call_sid, account_sid)
    return (row["id"], row["sender"]) if row is not None else None


@dataclass(frozen=True, slots=True)
class ContactOutcome:
    decision_id: int
    relay_id: str
    field: str
    sid: str | None
    status: str | None
    answered_by: str | None
    duration_seconds: int | None
    error_code: str | None
    received_at: dt.datetime


async def record_contact_outcome(conn: asyncpg.Pool | asyncpg.Connection,
                                 outcome: ContactOutcome) -> None:
    await conn.execute(
        """INSERT INTO contact_outcomes (decision_id, relay_id, field, sid, status, answered_by,
               duration_seconds, error_code, received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        outcome.decision_id, outcome.relay_id, outcome.field, outcome.sid, outcome.status,
        outcome.answered_by, outcome.duration_seconds, outcome.error_code, outcome.received_at)


# --- giving back what a contact that never happened consumed (N5, N6) -----------------------

# Why a decision's consumption is given back (consumption_reversals.why).
ReversalWhy = Literal["provider_refused", "provider_unreachable", "not_sent", "not_reached"]


@dataclass(frozen=True, slots=True)
class Reversal:
    """What one reversal gave back: the contact request usable again, the consent whose first
    call counts as not made."""

    decision_id: int
    request_id: int | None
    first_use_consent_id: int | None


# One statement: record the reversal and give back what the decision consumed, atomically.
# The unique decision_id makes it happen once (a second callback inserts nothing and so gives
# back nothing). A decision that consumed a request is that request's only consumer until it
# is reversed (WRITE_SQL consumes only an unused request), so clearing consumed_at never
# frees another contact's use; the first-call marker is cleared only while this decision
# still holds it. The rows of consents are locked by the update: a contact being decided
# meanwhile can use the request only once this commits (its WRITE_SQL waits for the lock
# and then finds the request unused).
_REVERSE_SQL = """
WITH v AS (
    INSERT INTO consumption_reversals (decision_id, request_id, first_use_consent_id, why,
        detail, reversed_at)
    SELECT d.id, d.consumed_consent_id,
        (SELECT c.id FROM consents c WHERE c.first_used_by = d.id ORDER BY c.id LIMIT 1),
        $2, $3, $4
    FROM decisions d
    WHERE d.id = $1 AND (d.consumed_consent_id IS NOT NULL
                         OR EXISTS (SELECT 1 FROM consents c WHERE c.first_used_by = d.id))
    ON CONFLICT (decision_id) DO NOTHING
    RETURNING request_id, first_use_consent_id),
r AS (
    UPDATE consents SET consumed_at = NULL FROM v
    WHERE consents.id = v.request_id AND consents.consumed_at IS NOT NULL RETURNING 1),
f AS (
    UPDATE consents SET first_used_at = NULL, first_used_by = NULL FROM v
    WHERE consents.id = v.first_use_consent_id AND consents.first_used_by = $1 RETURNING 1)
SELECT request_id, first_use_consent_id FROM v
"""


async def reverse_consumption(
    conn: asyncpg.Pool | asyncpg.Connection, decision_id: int, why: ReversalWhy,
    detail: str | None, at: dt.datetime,
) -> Reversal | None:
    """Give back what a decision consumed when its contact never happened: the provider refused
    it or could not be reached, or the call reached nobody. None when there was nothing to give
    back, or it was given back before."""
    row = await conn.fetchrow(_REVERSE_SQL, decision_id, why, detail, at)
    if row is None:
        return None
    return Reversal(decision_id, row["request_id"], row["first_use_consent_id"])
