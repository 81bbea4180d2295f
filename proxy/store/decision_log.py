"""The decision log as the console reads it: filtered, paged newest first, or streamed whole
for a CSV export. Never the subject's hash or number: the masked number only."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from proxy.phone import subject_hash
from proxy.store import cursors

# The CSV export's columns, in order: new ones are added at the end.
COLUMNS = ("id", "decided_at", "channel", "decision", "reason", "basis", "rule",
           "organisation_id", "sender", "client_id", "subject_masked", "topic", "retry_after",
           "front")
_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM decisions"


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Every field optional; `until` is exclusive."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    organisation: str | None = None
    channel: str | None = None
    decision: str | None = None
    reason: str | None = None
    client: str | None = None
    number: str | None = None  # E.164; matched through its hash
    front: str | None = None  # the way in (sql/018)


def _where(f: DecisionFilter, args: list[Any]) -> str:
    terms: list[str] = []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        terms.append(sql.replace("?", f"${len(args)}"))

    if f.since is not None:
        add("decided_at >= ?", f.since)
    if f.until is not None:
        add("decided_at < ?", f.until)
    if f.organisation:
        add("organisation_id = ?", f.organisation)
    if f.channel:
        add("channel = ?", f.channel)
    if f.decision:
        add("decision = ?", f.decision)
    if f.reason:
        add("reason = ?", f.reason)
    if f.client:
        add("client_id = ?", f.client)
    if f.number:
        add("subject_hash = ?", subject_hash(f.number))
    if f.front:
        add("front = ?", f.front)
    return (" WHERE " + " AND ".join(terms)) if terms else ""


async def search(conn: asyncpg.Pool | asyncpg.Connection, f: DecisionFilter, *,
                 before_id: int | None, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """One page, newest first, and the cursor of the next page (None: this is the last)."""
    args: list[Any] = []
    where = _where(f, args)
    if before_id is not None:
        args.append(before_id)
        where += (" AND " if where else " WHERE ") + f"id < ${len(args)}"
    args.append(limit + 1)
    rows = await conn.fetch(f"{_SELECT}{where} ORDER BY id DESC LIMIT ${len(args)}", *args)
    page = [dict(r) for r in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


async def export(pool: asyncpg.Pool, f: DecisionFilter) -> AsyncIterator[dict[str, Any]]:
    """Every matching row, newest first, read through a cursor (bounded memory)."""
    args: list[Any] = []
    where = _where(f, args)
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in cursors.rows(conn, f"{_SELECT}{where} ORDER BY id DESC", *args,
                                      batch=1000):
            yield dict(row)


async def choices(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, list[str]]:
    """What the filters offer: organisations and clients on file, the ways in seen."""
    orgs = await conn.fetch("SELECT id FROM organisations ORDER BY id")
    clients = await conn.fetch("SELECT client_id FROM clients ORDER BY client_id")
    # Each distinct front by one index probe (decisions_front_idx), not a read of the log.
    fronts = await conn.fetch(
        """WITH RECURSIVE f AS (
               SELECT min(front) AS front FROM decisions WHERE front IS NOT NULL
               UNION ALL
               SELECT (SELECT min(front) FROM decisions WHERE front > f.front)
               FROM f WHERE f.front IS NOT NULL)
           SELECT front FROM f WHERE front IS NOT NULL""")
    return {"organisations": [r["id"] for r in orgs],
            "clients": [r["client_id"] for r in clients],
            "fronts": [r["front"] for r in fronts]}
