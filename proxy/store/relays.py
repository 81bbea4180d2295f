"""Relays: where each rewritten URL (TwiML, callbacks) leads, the decision of the call a
callback belongs to, and what the callbacks report about how a contact ended."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Where a relay URL leads: the dialer's own URL (None: recorded, not passed on)."""

    id: str
    decision_id: int
    client_id: str
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
           INSERT INTO relay_targets (id, decision_id, client_id, kind, field, url, method)
           SELECT t.* FROM async, unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                                         $5::text[], $6::text[], $7::text[]) AS t""",
        [t.id for t in targets], [t.decision_id for t in targets],
        [t.client_id for t in targets], [t.kind for t in targets],
        [t.field for t in targets], [t.url for t in targets], [t.method for t in targets])


async def get_relay_target(conn: asyncpg.Pool | asyncpg.Connection, relay_id: str,
                           kind: str) -> RelayTarget | None:
    row = await conn.fetchrow(
        """SELECT id, decision_id, client_id, kind, field, url, method FROM relay_targets
           WHERE id = $1 AND kind = $2""", relay_id, kind)
    return RelayTarget(*row.values()) if row is not None else None


async def call_decision(conn: asyncpg.Pool | asyncpg.Connection, client_id: str,
                        call_sid: str) -> tuple[int, str | None] | None:
    """(decision id, From as given) of the create that placed this client's call."""
    row = await conn.fetchrow(
        """SELECT d.id, d.sender FROM decision_outcomes o JOIN decisions d ON d.id = o.decision_id
           WHERE o.upstream_sid = $1 AND d.client_id = $2 ORDER BY d.id LIMIT 1""",
        call_sid, client_id)
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
