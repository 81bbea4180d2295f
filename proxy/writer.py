"""Group commit for the hot path: concurrent requests share one transaction, and each waits
for the commit that holds its own row.

A decision row is durable before anything is forwarded (the caller awaits it), yet under load
one commit (one fsync) carries many decisions and outcomes, sent as one pipelined batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import structlog

from proxy import store
from proxy.db import STORE_ERRORS

log = structlog.get_logger("proxy.writer")



@dataclass
class _Pending:
    kind: Literal["decision", "outcome"]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    def __init__(self, pool: asyncpg.Pool, max_batch: int = 256) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Write everything already queued, then stop (graceful shutdown)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def decision(self, record: store.DecisionRecord,
                       claim: store.IdempotencyClaim | None) -> tuple[int, bool]:
        """Commit a decision row (see store.RECORD_SQL); returns (id, token claimed)."""
        row = await self._submit("decision", store.record_args(record, claim))
        if row["id"] is None:
            raise store.RequestAlreadyUsed
        return row["id"], claim is None or row["claimed"] == 1

    async def outcome(self, args: tuple[Any, ...]) -> None:
        await self._submit("outcome", args)

    async def _submit(self, kind: Literal["decision", "outcome"], args: tuple[Any, ...]) -> Any:
        if self._closing:
            raise asyncpg.exceptions.InterfaceError("the decision writer is shut down")
        pending = _Pending(kind, args)
        self._queue.append(pending)
        self._wakeup.set()
        return await pending.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            results = await self._write(batch)
        except STORE_ERRORS as exc:  # the store is gone: the whole batch fails at once
            _fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # A data error in one row: retry row by row so only that one fails.
            log.warning("group_commit_isolating", size=len(batch), error=type(exc).__name__)
            for pending in batch:  # find the one row that cannot be written
                await self._flush([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _write(self, batch: Sequence[_Pending]) -> list[Any]:
        decisions = [p.args for p in batch if p.kind == "decision"]
        outcomes = [p.args for p in batch if p.kind == "outcome"]
        rows: list[Any] = []
        async with self._pool.acquire() as conn:
            if len(decisions) == 1:  # nothing to share: one statement, its own commit
                rows = [await conn.fetchrow(store.RECORD_SQL, *decisions[0])]
            elif decisions:
                async with conn.transaction():
                    rows = await conn.fetchmany(store.RECORD_SQL, decisions)
            if outcomes:
                # Decisions are flushed to disk before their commit returns (they gate what
                # leaves). Outcomes need not hold the dialer for an fsync: they reach disk
                # within wal_writer_delay; a database crash in that window can lose an outcome
                # row, never a decision.
                async with conn.transaction():
                    await conn.execute("SET LOCAL synchronous_commit TO OFF")
                    await conn.executemany(store.OUTCOME_SQL, outcomes)
        by_decision = iter(rows)
        return [next(by_decision) if p.kind == "decision" else None for p in batch]


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
