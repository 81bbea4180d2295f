"""The SQL of the dial API: claiming a call_id, keeping its answer, and attempt outcomes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

# A claim whose decision never got its answer stored (the store failed halfway) is taken
# over after this long, so a retransmit is not refused for the rest of the day.
ABANDONED = dt.timedelta(seconds=30)
REPLAY_WINDOW = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A call_id claimed earlier: its request and, once decided, its answer."""

    request_hash: str
    answer: dict[str, Any] | None


async def claim(pool: asyncpg.Pool, client_id: str, call_id: str, request_hash: str,
                now: dt.datetime) -> Attempt | None:
    """Claim this client's call_id for a new decision: None when claimed (decide now), else
    the attempt already on file. One statement: of two identical requests at once, one
    inserts and the other finds its row.

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
                      OR (dial_attempts.answer IS NULL
                          AND dial_attempts.claimed_at <= EXCLUDED.claimed_at - $6::interval)
               RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM taken) AS claimed""",
        client_id, call_id, request_hash, now, REPLAY_WINDOW, ABANDONED)
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
    await pool.execute(
        """UPDATE dial_attempts SET decision_id = $3, answer = $4
           WHERE client_id = $1 AND call_id = $2 AND answer IS NULL""",
        client_id, call_id, decision_id, answer)


async def release(pool: asyncpg.Pool, client_id: str, call_id: str) -> None:
    """Drop a claim that got no decision, so the next retransmit decides afresh."""
    await pool.execute(
        "DELETE FROM dial_attempts WHERE client_id = $1 AND call_id = $2 AND answer IS NULL",
        client_id, call_id)


@dataclass(frozen=True, slots=True)
class DialDecision:
    decision_id: int
    allowed: bool


async def dial_decision(pool: asyncpg.Pool, client_id: str,
                        decision_id: int) -> DialDecision | None:
    """A decision this client asked for through the dial API, or None."""
    row = await pool.fetchrow(
        """SELECT id, decision FROM decisions
           WHERE id = $1 AND client_id = $2 AND details ? 'dial'""",
        decision_id, client_id)
    return DialDecision(row["id"], row["decision"] == "allow") if row is not None else None


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
