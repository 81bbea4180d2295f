"""Batching for the hot path: what concurrent requests ask of PostgreSQL goes out together.

One task per batcher takes whatever queued while its last batch was under way and sends it as
one statement (one round trip, one executor run, for writes one commit); each caller awaits
its own item's result (`enqueue` gives the item's future), or does not wait for it at all.
With one request in flight there is no waiting for company: a batch of one leaves at once.
Anyone may wait for everything queued so far (`sync`). Each batcher keeps one pooled
connection for itself (a pool acquire and release cost as much CPU as a small query) and
gives it back when the store fails or when it closes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from proxy.db import STORE_ERRORS, discard

log = structlog.get_logger("proxy.batch")

Item = TypeVar("Item")

# Queued by `sync`: never sent, answered once everything queued before it is.
_BARRIER: Any = object()


@dataclass(slots=True)
class _Pending(Generic[Item]):
    item: Item
    future: asyncio.Future[Any]


class BatchSizes:
    """How many items each round trip carried: plain counts, so a batch pays two additions
    rather than a metric's locks; the metrics read them when scraped (proxy/metrics.py)."""

    BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # 256: the largest batch

    def __init__(self) -> None:
        self.items = 0
        self.buckets = [0] * (len(self.BOUNDS) + 1)  # the last: over the largest bound

    def add(self, size: int) -> None:
        self.items += size
        self.buckets[bisect.bisect_left(self.BOUNDS, size)] += 1

    @property
    def trips(self) -> int:
        return sum(self.buckets)


class Batcher(Generic[Item]):
    """Subclasses say how one batch is sent (`_send`: one result per item, in order)."""

    name = "batch"

    def __init__(self, pool: asyncpg.Pool, max_batch: int = 256) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self.sizes = BatchSizes()
        self._queue: list[_Pending[Item]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._flushing = False
        self._conn: asyncpg.Connection | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Send everything already queued, then stop (graceful shutdown)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self._release()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            await self._release()
            self._conn = await self._pool.acquire()
        return self._conn

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*STORE_ERRORS):
                await self._pool.release(conn)

    async def _send(self, conn: asyncpg.Connection, items: Sequence[Item]) -> Sequence[Any]:
        raise NotImplementedError

    def enqueue(self, item: Item) -> asyncio.Future[Any]:
        """Queue an item for the next batch; its future holds the result or the error. Await
        the future itself rather than a coroutine around it: every frame between a request
        and its future is passed again on each resumption."""
        if self._closing:
            raise asyncpg.exceptions.InterfaceError(f"the {self.name} is shut down")
        pending = _Pending(item, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wakeup.set()
        return pending.future

    async def sync(self) -> None:
        """Return once every item queued before this call has been sent (and, for writes,
        committed) or has failed. At once when nothing is queued or under way."""
        idle = not self._queue and not self._flushing
        if idle or self._task is None or self._task.done():
            return
        pending = _Pending(_BARRIER, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wakeup.set()
        await pending.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[:self._max_batch]
                del self._queue[:self._max_batch]
                self._flushing = True
                try:
                    await self._flush([p for p in batch if p.item is not _BARRIER])
                finally:
                    self._flushing = False
                _done([p for p in batch if p.item is _BARRIER])
            if self._closing:
                return

    async def _flush(self, batch: list[_Pending[Item]]) -> None:
        if not batch:
            return
        self.sizes.add(len(batch))
        try:
            results = await self._send(await self._connection(), [p.item for p in batch])
        except STORE_ERRORS as exc:  # the store is gone: the whole batch fails at once
            await discard(self._pool)  # no connection it holds is trusted again
            await self._release()  # the next batch starts on a fresh connection
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


def _done(barriers: Sequence[_Pending[Any]]) -> None:
    for pending in barriers:
        if not pending.future.done():
            pending.future.set_result(None)


def _fail(batch: Sequence[_Pending[Any]], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
