"""Who changed what in the registry (sql/016 registry_events): one append-only row per
mutation, written in the mutation's own transaction, never holding a phone number."""

from __future__ import annotations

from typing import Any

import asyncpg

from proxy.store.listing import check_limit, id_cursor
from proxy.store.rows import jsonable


async def record_event(conn: asyncpg.Connection, *, actor: str, action: str, kind: str,
                       record_id: str | int | None, details: dict[str, Any] | None = None
                       ) -> int:
    """Append one event. `record_id` names the record (a subject by its one-way hash)."""
    event_id: int = await conn.fetchval(
        """INSERT INTO registry_events (actor, action, kind, record_id, details)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        actor, action, kind, None if record_id is None else str(record_id), details or {})
    return event_id


async def list_events(pool: asyncpg.Pool, *, kind: str | None = None,
                      record_id: str | None = None, after: str | None = None,
                      limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first, optionally of one kind or one record; `after` is the cursor a
    previous page returned."""
    check_limit(limit)
    before = id_cursor(after)
    rows = await pool.fetch(
        """SELECT * FROM registry_events
           WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR record_id = $2)
             AND ($3::bigint IS NULL OR id < $3)
           ORDER BY id DESC LIMIT $4""",
        kind, record_id, before, limit + 1)
    items = [jsonable(r) for r in rows[:limit]]
    return items, (str(rows[limit - 1]["id"]) if len(rows) > limit else None)

