"""Batching for the hot path: what concurrent requests ask of PostgreSQL goes out together.

One task per batcher takes whatever queued while its last batch was under way and sends it as
one statement (one round trip, one executor run, for writes one commit); each caller awaits
its own item's result. With one request in flight there is no waiting for company: a batch
of one leaves at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from proxy.db import STORE_ERRORS

log = structlog.get_logger("proxy.batch")

Item = TypeVar("Item")


@dataclass
class _Pending(Generic[Item]):
    item: Item
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher(Generic[Item]):
    """Subclasses say how one batch is sent (`_send`: one result per item, in order)."""

    name = "batch"

    def __init__(self, pool: asyncpg.Pool, max_batch: int = 256) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: list[_Pending[Item]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Send everything already queued, then stop (graceful shutdown)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _send(self, conn: asyncpg.Connection, items: Sequence[Item]) -> Sequence[Any]:
        raise NotImplementedError

    async def submit(self, item: Item) -> Any:
        if self._closing:
            raise asyncpg.exceptions.InterfaceError(f"the {self.name} is shut down")
        pending = _Pending(item)
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

    async def _flush(self, batch: list[_Pending[Item]]) -> None:
        try:
            async with self._pool.acquire() as conn:
                results = await self._send(conn, [p.item for p in batch])
        except STORE_ERRORS as exc:  # the store is gone: the whole batch fails at once
            _fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # A data error in one item failed the whole statement (and rolled it back): send
            # item by item so only that one fails.
            log.warning("batch_isolating", batcher=self.name, size=len(batch),
                        error=type(exc).__name__)
            for pending in batch:
                await self._flush([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _fail(batch: Sequence[_Pending[Any]], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
