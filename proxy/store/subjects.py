"""Everything held about one number: what is known about it, the reports of all that is on file
(for the admin API and, self-contained, as evidence on request), and erasure."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from proxy.errors import NotFound
from proxy.phone import subject_hash
from proxy.store.events import record_event
from proxy.store.rows import decision_json, jsonable


async def upsert_subject(
    pool: asyncpg.Pool, number: str, kind: str, published: bool, evidence: dict[str, Any], *,
    actor: str,
) -> bool:
    """Create or replace what is known about a number. Returns True when it was created.
    The event names the number by its one-way hash only."""
    async with pool.acquire() as conn, conn.transaction():
        created: bool = await conn.fetchval(
            """INSERT INTO subjects (number, kind, published_for_marketing, evidence)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (number) DO UPDATE SET kind = EXCLUDED.kind,
                   published_for_marketing = EXCLUDED.published_for_marketing,
                   evidence = EXCLUDED.evidence, updated_at = now()
               RETURNING (xmax = 0)""",
            number, kind, published, evidence,
        )
        await record_event(conn, actor=actor, action="create" if created else "update",
                           kind="subject", record_id=subject_hash(number))
    return created


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
        report.update(jsonable(subject, drop=("number",)))
    report["consents"] = [jsonable(r, drop=("subject",)) for r in consents]
    report["relationships"] = [jsonable(r, drop=("subject",)) for r in relationships]
    report["objections"] = [jsonable(r, drop=("subject", "subject_hash")) for r in objections]
    report["decisions"] = [decision_json(r) for r in latest]
    return report


async def erase_subject(pool: asyncpg.Pool, number: str, *, actor: str) -> dict[str, int]:
    """Erase personal data about a number; objections stay, keyed by the one-way hash (N11)."""
    digest = subject_hash(number)
    async with pool.acquire() as conn, conn.transaction():
        kept = await conn.fetchval(
            # the note of a lift is free text the person may be named in: it goes too
            "WITH u AS (UPDATE objections SET subject = NULL, lifted_note = NULL"
            " WHERE subject_hash = $1 RETURNING 1)"
            " SELECT count(*) FROM u", digest)
        consents = await conn.fetchval("SELECT count(*) FROM consents WHERE subject = $1", number)
        relations = await conn.fetchval(
            "SELECT count(*) FROM relationships WHERE subject = $1", number)
        deleted = await conn.fetchval(
            "WITH d AS (DELETE FROM subjects WHERE number = $1 RETURNING 1) SELECT count(*) FROM d",
            number)
        if not deleted and not kept:
            raise NotFound("nothing is held about this number", "number")
        await record_event(conn, actor=actor, action="erase", kind="subject",
                           record_id=digest, details={"consents_erased": consents,
                                                      "relationships_erased": relations,
                                                      "objections_kept": kept})
    return {"consents_erased": consents, "relationships_erased": relations,
            "objections_kept": kept}


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
        "subject": jsonable(subject, drop=("number",)) if subject is not None else None,
        "consents": [jsonable(r, drop=("subject",)) for r in consents],
        "relationships": [jsonable(r, drop=("subject",)) for r in relationships],
        "objections": [jsonable(r, drop=("subject", "subject_hash")) for r in objections],
        "decisions": [decision_json(r) for r in decisions],
        # N5/N6: what a contact that never happened gave back, per decision.
        "consumption_reversals": [jsonable(r) for r in reversals],
        "integrity": "Decisions carry chain_seq, prev_hash and row_hash; `consent-proxy audit "
                     "verify` recomputes the whole chain.",
    }
