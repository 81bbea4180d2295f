"""Audit: the decision chain walked and checked, its head and checkpoints, and retention
(pruning a prefix of the chain, anchored so the rest still verifies)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from proxy.store import cursors


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
    async for row in cursors.rows(
            conn, """SELECT id, chain_seq, prev_hash, row_hash,
                             decision_row_hash(d, d.prev_hash) AS recomputed
                      FROM decisions d ORDER BY chain_seq""", batch=2000):
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
    status: str = await conn.execute(sql, *args)  # e.g. "DELETE 12"
    return int(status.rsplit(" ", 1)[-1])
