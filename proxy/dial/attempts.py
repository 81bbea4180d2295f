"""The SQL of the dial API: claiming a call_id, keeping its answer, and attempt outcomes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

# A claim whose decision was never committed (the store failed halfway, the process died) is
# taken over after this long, so a retransmit is not refused for the rest of the day. Taking
# it over cannot make a second decision: the first one's commit then writes nothing
# (store.WRITE_SQL, DialClaimLost).
ABANDONED = dt.timedelta(seconds=30)
# How long a decided call_id gets its first answer again: a SIP transaction's lifetime (RFC
# 3261 Timer B, 64*T1 = 32 s), the retransmissions of one INVITE. A repeat after that is a
# new attempt and is decided afresh (N11: an objection recorded meanwhile; N13: the calling
# hours), as is a repeat after the attempt's outcome or a give-back (N6: the contact request
# it used may be used by another call by then). A denial is replayed for REPLAY_WINDOW: it
# lets nothing through, and its retry_after says when asking again is worth it.
ANSWER_REPLAY = dt.timedelta(seconds=32)
# Within this a call_id asked again for another to, from or automated is refused.
REPLAY_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A call_id claimed earlier: its request and, once decided, its answer."""

    request_hash: str
    answer: dict[str, Any] | None


async def claim(pool: asyncpg.Pool, client_id: str, call_id: str, request_hash: str,
                now: dt.datetime) -> Attempt | None:
    """Claim this client's call_id for a new decision: None when claimed (decide now, with
    `now` as the claim's token: store.DialClaim), else the attempt already on file. One
    statement: of two identical requests at once, one inserts and the other finds its row.

    Committed without waiting for the disk (`synchronous_commit` off for this transaction
    only): the decision that follows is committed durably, and its commit flushes the
    write-ahead log up to it, this claim included. A crash before that loses the claim
    together with a decision that was never made."""
    row = await pool.fetchrow(
        """WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
           taken AS (
               INSERT INTO dial_attempts (client_id, call_id, request_hash, claimed_at)
               SELECT $1::text, $2::text, $3::text, $4::timestamptz FROM async
               ON CONFLICT (client_id, call_id) DO UPDATE
                   SET request_hash = EXCLUDED.request_hash,
                       claimed_at = EXCLUDED.claimed_at, decision_id = NULL, answer = NULL
                   WHERE dial_attempts.claimed_at <= EXCLUDED.claimed_at - $5::interval
                      OR (dial_attempts.decision_id IS NULL
                          AND dial_attempts.claimed_at <= EXCLUDED.claimed_at - $6::interval)
                      OR (dial_attempts.decision_id IS NOT NULL
                          AND dial_attempts.request_hash = EXCLUDED.request_hash
                          AND ((dial_attempts.claimed_at <= EXCLUDED.claimed_at - $7::interval
                                AND coalesce(dial_attempts.answer->>'decision', 'allow')
                                    = 'allow')
                               OR EXISTS (SELECT 1 FROM dial_outcomes o
                                          WHERE o.decision_id = dial_attempts.decision_id)
                               OR EXISTS (SELECT 1 FROM consumption_reversals r
                                          WHERE r.decision_id = dial_attempts.decision_id)))
               RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM taken) AS claimed""",
        client_id, call_id, request_hash, now, REPLAY_WINDOW, ABANDONED, ANSWER_REPLAY)
    if row["claimed"]:
        return None
    found = await find(pool, client_id, call_id)
    # Gone between the two statements (pruned): treat as in flight, the caller asks again.
    return found or Attempt(request_hash, None)


async def find(pool: asyncpg.Pool, client_id: str, call_id: str) -> Attempt | None:
    row = await pool.fetchrow(
        "SELECT request_hash, answer FROM dial_attempts WHERE client_id = $1 AND call_id = $2",
        client_id, call_id)
    if row is None:
        return None
    return Attempt(row["request_hash"], row["answer"])


async def complete(pool: asyncpg.Pool, client_id: str, call_id: str, decision_id: int,
                   answer: dict[str, Any]) -> None:
    """Keep the answer for replays (its decision's commit marked the claim decided)."""
    await pool.execute(
        """UPDATE dial_attempts SET answer = $4
           WHERE client_id = $1 AND call_id = $2 AND decision_id = $3 AND answer IS NULL""",
        client_id, call_id, decision_id, answer)


async def release(pool: asyncpg.Pool, client_id: str, call_id: str,
                  claimed_at: dt.datetime) -> None:
    """Drop this claim if no decision was committed under it, so the next retransmit decides
    afresh (a claim taken over meanwhile is someone else's)."""
    await pool.execute(
        """DELETE FROM dial_attempts WHERE client_id = $1 AND call_id = $2
               AND claimed_at = $3 AND decision_id IS NULL""",
        client_id, call_id, claimed_at)


@dataclass(frozen=True, slots=True)
class DialDecision:
    decision_id: int
    allowed: bool
    given_back: bool  # what it consumed was given back (consumption_reversals)


async def dial_decision(pool: asyncpg.Pool, client_id: str,
                        decision_id: int) -> DialDecision | None:
    """A decision this client asked for through the dial API, or None."""
    row = await pool.fetchrow(
        """SELECT id, decision,
               EXISTS (SELECT 1 FROM consumption_reversals r WHERE r.decision_id = d.id)
                   AS given_back
           FROM decisions d
           WHERE id = $1 AND client_id = $2 AND details ? 'dial'""",
        decision_id, client_id)
    if row is None:
        return None
    return DialDecision(row["id"], row["decision"] == "allow", row["given_back"])


async def record_outcome(pool: asyncpg.Pool, decision_id: int, status: str,
                         now: dt.datetime) -> str:
    """Record how the attempt ended, once; answers the status on file (the first reported)."""
    inserted: str | None = await pool.fetchval(
        """INSERT INTO dial_outcomes (decision_id, status, reported_at) VALUES ($1, $2, $3)
           ON CONFLICT (decision_id) DO NOTHING RETURNING status""",
        decision_id, status, now)
    if inserted is not None:
        return inserted
    # A separate statement: a report committed by a concurrent request after this one's
    # snapshot is visible only to a new statement.
    stored: str = await pool.fetchval(
        "SELECT status FROM dial_outcomes WHERE decision_id = $1", decision_id)
    return stored
