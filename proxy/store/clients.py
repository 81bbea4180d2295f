"""Clients: a dialer's credentials (their tokens are derived, never stored), the organisations
each may act for, rotation and disabling, and which client signs an organisation's relayed
webhooks."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from proxy.errors import BadInput, NotFound
from proxy.store.events import record_event
from proxy.store.listing import Page, check_limit, organisation_filter
from proxy.store.registry import require_organisations

# What the schema accepts as a client id (sql/014). The admin API issues AC + 32 hex digits,
# the shape the Twilio SDK puts in its URLs; any other id is one made by hand.
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The admin API's route parameter: an error about a client id names it (a public contract).
_ROUTE_FIELD = "account_sid"


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    token_version: int
    organisations: tuple[str, ...]
    enabled: bool = True


async def create_client(
    pool: asyncpg.Pool, client_id: str, name: str, organisations: Sequence[str], *, actor: str
) -> Client:
    async with pool.acquire() as conn, conn.transaction():
        await require_organisations(conn, organisations, "organisations")
        row = await conn.fetchrow(
            "INSERT INTO clients (client_id, name) VALUES ($1, $2) RETURNING *",
            client_id, name,
        )
        await conn.executemany(
            "INSERT INTO client_organisations (client_id, organisation_id) VALUES ($1, $2)",
            [(client_id, org) for org in dict.fromkeys(organisations)],
        )
        await record_event(conn, actor=actor, action="create", kind="client",
                           record_id=client_id, details={"organisations": list(organisations)})
    return Client(client_id, row["name"], row["token_version"], tuple(organisations))


_CLIENTS_SQL = """
SELECT c.client_id, c.name, c.token_version, c.enabled, c.created_at, c.disabled_at,
       coalesce(array_agg(co.organisation_id ORDER BY co.organisation_id)
                FILTER (WHERE co.organisation_id IS NOT NULL), '{}') AS organisations
FROM clients c LEFT JOIN client_organisations co USING (client_id)
"""


async def get_client(conn: asyncpg.Pool | asyncpg.Connection, client_id: str) -> Client | None:
    row = await conn.fetchrow(
        _CLIENTS_SQL + "WHERE c.client_id = $1 GROUP BY c.client_id", client_id)
    if row is None:
        return None
    return Client(row["client_id"], row["name"], row["token_version"],
                  tuple(row["organisations"]), row["enabled"])


def _client_json(row: asyncpg.Record) -> dict[str, Any]:
    # `account_sid`: the name the admin API has always answered with; `client_id` the same.
    return {"account_sid": row["client_id"], "client_id": row["client_id"],
            "name": row["name"], "organisations": list(row["organisations"]),
            "token_version": row["token_version"], "enabled": row["enabled"],
            "created_at": row["created_at"].isoformat(),
            "disabled_at": row["disabled_at"].isoformat() if row["disabled_at"] else None}


async def list_clients(pool: asyncpg.Pool, *, organisation: str | None = None,
                       subject: str | None = None, after: str | None = None,
                       limit: int = 50) -> Page:
    """Clients oldest first, without tokens (they are never stored), optionally those acting
    for one organisation; `after` is the client id a previous page ended with."""
    check_limit(limit)
    if subject is not None:
        raise BadInput("clients are not listed by subject", "subject")
    if after is not None and not CLIENT_ID.fullmatch(after):
        raise BadInput("not a cursor from a previous page", "after")
    rows = await pool.fetch(
        _CLIENTS_SQL + """WHERE ($1::text IS NULL OR EXISTS (
                              SELECT 1 FROM client_organisations f
                              WHERE f.client_id = c.client_id AND f.organisation_id = $1))
                            AND ($2::text IS NULL OR (c.created_at, c.client_id) >
                                 (SELECT a.created_at, a.client_id FROM clients a
                                  WHERE a.client_id = $2))
                          GROUP BY c.client_id ORDER BY c.created_at, c.client_id LIMIT $3""",
        organisation_filter(organisation), after, limit + 1)
    items = [_client_json(r) for r in rows[:limit]]
    return items, (rows[limit - 1]["client_id"] if len(rows) > limit else None)


async def _client_report(conn: asyncpg.Connection, client_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        _CLIENTS_SQL + "WHERE c.client_id = $1 GROUP BY c.client_id", client_id)
    return _client_json(row)


async def rotate_client(pool: asyncpg.Pool, client_id: str, *, actor: str) -> dict[str, Any]:
    """A new token version: the old token stops the moment this commits (every gate is told
    by the clients_notify trigger, sql/009 and sql/014)."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            """UPDATE clients SET token_version = token_version + 1 WHERE client_id = $1
               RETURNING 1""", client_id)
        if found is None:
            raise NotFound(f"no client {client_id!r}", _ROUTE_FIELD)
        await record_event(conn, actor=actor, action="rotate", kind="client",
                           record_id=client_id)
        return await _client_report(conn, client_id)


async def set_client_enabled(pool: asyncpg.Pool, client_id: str, enabled: bool,
                             at: dt.datetime, *, actor: str) -> dict[str, Any]:
    """Disable (refused everywhere from the commit on) or enable a client. Idempotent: a
    second disable keeps the first disabled_at."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            """UPDATE clients SET enabled = $2,
                      disabled_at = CASE WHEN $2 THEN NULL ELSE coalesce(disabled_at, $3) END
               WHERE client_id = $1 RETURNING 1""", client_id, enabled, at)
        if found is None:
            raise NotFound(f"no client {client_id!r}", _ROUTE_FIELD)
        await record_event(conn, actor=actor, action="enable" if enabled else "disable",
                           kind="client", record_id=client_id)
        return await _client_report(conn, client_id)


async def relay_client(conn: asyncpg.Pool | asyncpg.Connection, organisation_id: str
                       ) -> tuple[str, int] | None:
    """(client id, token version) of the client whose token signs relayed webhooks for an
    organisation: its oldest enabled client (a disabled client's token signs nothing)."""
    row = await conn.fetchrow(
        """SELECT c.client_id, c.token_version FROM clients c
           JOIN client_organisations co USING (client_id)
           WHERE co.organisation_id = $1 AND c.enabled
           ORDER BY c.created_at, c.client_id LIMIT 1""",
        organisation_id)
    return (row["client_id"], row["token_version"]) if row else None
