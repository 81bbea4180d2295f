"""SQL aggregates for the console's overview (days in Europe/Amsterdam), and the registry as
the console lists it: organisations, senders, the organisations a number is known to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg

from proxy.phone import subject_hash
from proxy.policy.facts import Sender
from proxy.store.facts import sender_from_row

_DAY = "(({col} AT TIME ZONE 'Europe/Amsterdam')::date)"


@dataclass(frozen=True, slots=True)
class DayCount:
    day: dt.date
    key: str
    count: int


async def decisions_per_day(conn: asyncpg.Pool | asyncpg.Connection, since: dt.datetime
                            ) -> list[DayCount]:
    day = _DAY.format(col="decided_at")
    rows = await conn.fetch(
        f"""SELECT {day} AS day, decision AS key, count(*) AS n FROM decisions
            WHERE decided_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2""", since)
    return [DayCount(r["day"], r["key"], r["n"]) for r in rows]


async def denial_reasons(conn: asyncpg.Pool | asyncpg.Connection, since: dt.datetime
                         ) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        """SELECT reason, count(*) AS n FROM decisions
           WHERE decided_at >= $1 AND decision = 'deny' GROUP BY reason ORDER BY n DESC, reason""",
        since)
    return [(r["reason"], r["n"]) for r in rows]


async def optouts_per_day(conn: asyncpg.Pool | asyncpg.Connection, since: dt.datetime
                          ) -> list[DayCount]:
    """Objections received per day, by the way they came in (`via`: sms is a STOP reply, ivr
    a keypress in a call, agent an agent's record)."""
    day = _DAY.format(col="received_at")
    rows = await conn.fetch(
        f"""SELECT {day} AS day, via AS key, count(*) AS n FROM objections
            WHERE received_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2""", since)
    return [DayCount(r["day"], r["key"], r["n"]) for r in rows]


async def list_organisations(conn: asyncpg.Pool | asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, name, sector, customer_term_months FROM organisations ORDER BY id")
    return [dict(r) for r in rows]


async def list_senders(conn: asyncpg.Pool | asyncpg.Connection,
                       organisations: list[str] | None = None) -> list[Sender]:
    """Every registered sender, or those of these organisations."""
    if organisations is None:
        rows = await conn.fetch("SELECT * FROM senders ORDER BY organisation_id, sender")
    else:
        rows = await conn.fetch(
            """SELECT * FROM senders WHERE organisation_id = ANY($1::text[])
               ORDER BY organisation_id, sender""", organisations)
    return [sender_from_row(r) for r in rows]


async def organisations_of(conn: asyncpg.Pool | asyncpg.Connection, number: str) -> list[str]:
    """The organisations that hold a consent, relationship or objection of this number, or
    have decided about it."""
    rows = await conn.fetch(
        """SELECT organisation_id FROM consents WHERE subject = $1
           UNION SELECT organisation_id FROM relationships WHERE subject = $1
           UNION SELECT organisation_id FROM objections
                 WHERE subject_hash = $2 AND organisation_id IS NOT NULL
           UNION SELECT organisation_id FROM decisions
                 WHERE subject_hash = $2 AND organisation_id IS NOT NULL
           ORDER BY 1""", number, subject_hash(number))
    return [r["organisation_id"] for r in rows]


# --- health: the audit chain's last checkpoint and whole-chain verification -----------------

async def checkpoint_state(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, Any] | None:
    """The newest checkpoint, and whether the decision it names still has its hash."""
    row = await conn.fetchrow(
        """SELECT c.chain_seq, c.taken_at, (d.row_hash IS NOT DISTINCT FROM c.row_hash) AS holds
           FROM audit_checkpoints c LEFT JOIN decisions d ON d.chain_seq = c.chain_seq
           ORDER BY c.id DESC LIMIT 1""")
    return None if row is None else dict(row)


async def record_verification(conn: asyncpg.Pool | asyncpg.Connection, at: dt.datetime,
                              actor: str, rows: int, ok: bool, broken_id: int | None,
                              why: str | None) -> None:
    await conn.execute(
        """INSERT INTO audit_verifications (verified_at, actor, rows, ok, broken_id, why)
           VALUES ($1, $2, $3, $4, $5, $6)""", at, actor, rows, ok, broken_id, why)


async def last_verification(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM audit_verifications ORDER BY id DESC LIMIT 1")
    return None if row is None else dict(row)
