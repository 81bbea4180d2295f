"""Recording decisions: the group-commit statement (decision rows, consumed contact requests,
idempotency claims, outcomes), idempotent replays, the decision log, and giving back what a
contact that never happened consumed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import msgspec
import orjson

from proxy.phone import mask, subject_hash
from proxy.policy.decision import Decision
from proxy.store.rows import decision_json


class DialClaim(msgspec.Struct, frozen=True, gc=False):
    """A dial decision's call_id as claimed (proxy/dial/attempts.py): the decision row is
    written only while the claim is still this one, and marks it decided."""

    call_id: str
    claimed_at: dt.datetime


class DecisionRecord(msgspec.Struct, frozen=True, gc=False):
    """One gated request and what the engine decided about it."""

    decision: Decision
    decided_at: dt.datetime
    channel: str
    request_id: str | None = None
    client_id: str | None = None
    sender: str | None = None
    organisation_id: str | None = None
    subject: str | None = None  # E.164; stored only as hash and mask
    topic: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    dial_claim: DialClaim | None = None
    front: str | None = None  # the way in: a provider's front, `dial` or `fastagi` (sql/018)


class IdempotencyClaim(msgspec.Struct, frozen=True, gc=False):
    client_id: str
    token: str
    request_hash: str


class RequestAlreadyUsed(Exception):
    """N6: the contact request was consumed by a concurrent contact; decide again."""


class DialClaimLost(Exception):
    """The call_id's claim was taken over (its decision was thought abandoned) before this
    decision was committed: nothing is written, the one who took it over decides."""


# One statement for a whole batch (group commit): one round trip, one executor run, one
# commit, and atomic. For the decisions: consume the contact requests / mark the first call
# of a consent, insert each decision only if its consumption succeeded, and claim the
# idempotency tokens. For the outcomes of earlier decisions: insert them and complete their
# idempotency entries. The batch arrives as two JSON arrays of rows (record_args,
# outcome_args), which costs the proxy a fraction of what thirty array parameters did.
# Decision rows are numbered by `n` in queue order and the answer has one row per decision,
# in that order, with a NULL id where the request was used (N6): within a batch the earliest
# decision gets a contact request, as it would one by one. A dial decision is written only
# while its call_id's claim is still its own (`lost` otherwise), and marks the claim decided
# in the same commit, so a claim is never taken over from a decision that commits: the
# contact requests it may consume are locked first (`lk`, waiting here for whoever holds
# them, not holding the claim meanwhile), then the claim, re-read as it is then (`ok`).
WRITE_SQL = """
WITH i AS (
    SELECT (e.r->>0)::timestamptz AS decided_at, e.r->>1 AS request_id,
        e.r->>2 AS client_id, e.r->>3 AS channel, e.r->>4 AS sender,
        e.r->>5 AS organisation_id, e.r->>6 AS subject_hash, e.r->>7 AS subject_masked,
        e.r->>8 AS topic, e.r->>9 AS decision, e.r->>10 AS reason, e.r->>11 AS basis,
        e.r->>12 AS rule, (e.r->>13)::bigint AS consumes, (e.r->>14)::bigint AS first_use,
        e.r->15 AS evidence, (e.r->>16)::timestamptz AS retry_after,
        ARRAY(SELECT jsonb_array_elements_text(e.r->17)) AS obligations, e.r->18 AS details,
        e.r->>19 AS token, e.r->>20 AS request_hash, e.r->>21 AS call_id,
        (e.r->>22)::timestamptz AS claimed_at, e.r->>23 AS front, e.n
    FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS e(r, n)),
lk AS MATERIALIZED (
    SELECT consents.id FROM i JOIN consents ON consents.id = i.consumes
    WHERE i.call_id IS NOT NULL
    ORDER BY consents.id FOR UPDATE OF consents),
ok AS MATERIALIZED (
    SELECT i.n, a.ctid AS tid FROM i JOIN dial_attempts a ON a.client_id = i.client_id
        AND a.call_id = i.call_id
    WHERE a.claimed_at = i.claimed_at AND a.decision_id IS NULL
      AND (SELECT count(*) FROM lk) >= 0  -- the requests locked before the claim
    FOR UPDATE OF a),
g AS (SELECT * FROM i WHERE call_id IS NULL OR n IN (SELECT n FROM ok)),
c AS (
    UPDATE consents SET consumed_at = w.decided_at
    FROM (SELECT DISTINCT ON (consumes) consumes, decided_at, n FROM g
          WHERE consumes IS NOT NULL ORDER BY consumes, n) AS w
    WHERE consents.id = w.consumes AND consents.consumed_at IS NULL
    RETURNING w.n),
r AS MATERIALIZED (
    SELECT g.*, nextval('decisions_id_seq') AS id FROM g
    WHERE g.consumes IS NULL OR g.n IN (SELECT n FROM c)),
da AS (
    -- By the row `ok` locked (a TID scan): a join on the key would be planned, once per
    -- connection, while dial_attempts may still be empty, as a scan of the whole table.
    UPDATE dial_attempts a SET decision_id = r.id FROM r JOIN ok USING (n)
    WHERE a.ctid = ok.tid
    RETURNING 1),
d AS (
    INSERT INTO decisions (id, decided_at, request_id, client_id, channel, sender,
        organisation_id, subject_hash, subject_masked, topic, decision, reason, basis, rule,
        consumed_consent_id, evidence, retry_after, obligations, details, front)
    OVERRIDING SYSTEM VALUE
    SELECT id, decided_at, request_id, client_id, channel, sender, organisation_id,
        subject_hash, subject_masked, topic, decision, reason, basis, rule, consumes,
        evidence, retry_after, obligations, details, front
    FROM r ORDER BY n  -- the audit chain (sql/005) follows queue order
    RETURNING 1),
f AS (
    UPDATE consents SET first_used_at = w.decided_at, first_used_by = w.id
    FROM (SELECT DISTINCT ON (first_use) first_use, decided_at, id FROM r
          WHERE first_use IS NOT NULL ORDER BY first_use, n) AS w
    WHERE consents.id = w.first_use AND consents.first_used_at IS NULL
    RETURNING 1),
k AS (
    INSERT INTO idempotency_keys (client_id, token, request_hash, decision_id, created_at)
    SELECT client_id, token, request_hash, id, decided_at FROM r
    WHERE token IS NOT NULL ORDER BY n
    ON CONFLICT DO NOTHING RETURNING decision_id),
oi AS (
    SELECT (e.r->>0)::bigint AS decision_id, (e.r->>1)::int AS upstream_status,
        e.r->>2 AS upstream_sid, e.r->>3 AS error, (e.r->>4)::int AS status,
        decode(e.r->>5, 'hex') AS response, e.r->>6 AS content_type,
        e.r->>7 AS client_id, e.r->>8 AS token
    FROM jsonb_array_elements($2::text::jsonb) AS e(r)),
o AS (
    INSERT INTO decision_outcomes (decision_id, upstream_status, upstream_sid, error)
    SELECT decision_id, upstream_status, upstream_sid, error FROM oi RETURNING decision_id),
u AS (
    UPDATE idempotency_keys ik SET status = oi.status, response = oi.response,
        content_type = oi.content_type
    FROM oi
    WHERE oi.client_id IS NOT NULL AND ik.client_id = oi.client_id
      AND ik.token = oi.token AND ik.decision_id = oi.decision_id
      AND oi.decision_id IN (SELECT decision_id FROM o)
    RETURNING 1)
SELECT r.id, r.id IN (SELECT decision_id FROM k) AS claimed,
    i.call_id IS NOT NULL AND i.n NOT IN (SELECT n FROM ok) AS lost
FROM i LEFT JOIN r USING (n) ORDER BY i.n
"""


def record_args(rec: DecisionRecord, claim: IdempotencyClaim | None) -> tuple[Any, ...]:
    """One decision row of WRITE_SQL (its fields in order)."""
    d = rec.decision
    return (
        rec.decided_at, rec.request_id, rec.client_id, rec.channel, rec.sender,
        rec.organisation_id, subject_hash(rec.subject) if rec.subject else None,
        _masked(rec.subject), rec.topic, d.decision, d.reason, d.basis, d.rule,
        d.consumes if d.allowed else None, d.first_use if d.allowed else None,
        [dict(e) for e in d.evidence], d.retry_after, list(d.obligations), rec.details,
        claim.token if claim else None, claim.request_hash if claim else None,
        rec.dial_claim.call_id if rec.dial_claim else None,
        rec.dial_claim.claimed_at if rec.dial_claim else None, rec.front,
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
            claim.client_id if claim else None, claim.token if claim else None)


def _masked(number: str | None) -> str | None:
    return mask(number) if number else None


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
    if row["lost"]:
        raise DialClaimLost
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
           WHERE client_id = $1 AND token = $2 AND status IS NULL""",
        claim.client_id, claim.token, status, response, content_type,
    )


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status: int | None  # None: the first request is still in flight
    body: bytes
    content_type: str


async def find_idempotent(
    conn: asyncpg.Pool | asyncpg.Connection, client_id: str, token: str, now: dt.datetime
) -> StoredResponse | None:
    """The first response for this client's token within 24 hours; older entries are dropped."""
    row = await conn.fetchrow(
        """WITH stale AS (
               DELETE FROM idempotency_keys WHERE client_id = $1 AND token = $2
                   AND created_at < $3::timestamptz - interval '24 hours')
           SELECT request_hash, status, response, content_type FROM idempotency_keys
           WHERE client_id = $1 AND token = $2
             AND created_at >= $3::timestamptz - interval '24 hours'""",
        client_id, token, now,
    )
    if row is None:
        return None
    return StoredResponse(row["request_hash"], row["status"], row["response"] or b"",
                          row["content_type"] or "application/json")


async def owned_sids(
    conn: asyncpg.Pool | asyncpg.Connection, client_id: str, sids: Sequence[str]
) -> set[str]:
    """Which of these upstream call/message SIDs this client created through the proxy."""
    if not sids:
        return set()
    rows = await conn.fetch(
        """SELECT o.upstream_sid FROM decision_outcomes o JOIN decisions d ON d.id = o.decision_id
           WHERE o.upstream_sid = ANY($1::text[]) AND d.client_id = $2""",
        list(sids), client_id,
    )
    return {r["upstream_sid"] for r in rows}


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
