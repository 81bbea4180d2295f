"""Group commit: concurrent requests share one transaction, and each waits for the commit
that holds its own row.

A decision row is durable before anything is forwarded (the caller awaits it), yet under load
one commit (one fsync, the dearest part of a write here) carries many decisions, together
with the outcomes of earlier ones: every flush is one set-based statement over the whole
batch (store.WRITE_SQL), atomic, and retried row by row if one row cannot be written.
An answer waits for its decision's commit only, not for its outcome's: one commit on the
path of each request, not two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg

from proxy import store
from proxy.batch import Batcher

Row = tuple[Literal["decision", "outcome"], tuple[Any, ...]]


class GroupCommit(Batcher[Row]):
    name = "group-commit"

    async def decision(self, record: store.DecisionRecord,
                       claim: store.IdempotencyClaim | None) -> tuple[int, bool]:
        """Commit a decision row (see store.WRITE_SQL); returns (id, token claimed)."""
        row = await self.enqueue(("decision", store.record_args(record, claim)))
        if row["lost"]:
            raise store.DialClaimLost
        if row["id"] is None:
            raise store.RequestAlreadyUsed
        return row["id"], claim is None or bool(row["claimed"])

    def outcome(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue an outcome row (see store.WRITE_SQL) for the next commit. The request does
        not wait for it: it rides with the decisions of the next batch, and whoever reads
        outcomes waits for them with `sync`."""
        return self.enqueue(("outcome", args))

    async def _send(self, conn: asyncpg.Connection, items: Sequence[Row]) -> list[Any]:
        decisions = [args for kind, args in items if kind == "decision"]
        outcomes = [args for kind, args in items if kind == "outcome"]
        rows = iter(await store.write_batch(conn, decisions, outcomes))
        return [next(rows) if kind == "decision" else None for kind, _ in items]
