"""Worker processes for CPU-bound pure work that must not hold up the event loop: the
parsing and deciding of a scrub (proxy/scrub_batch.py). Started on first use, so a proxy that
never scrubs never starts them."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

# One per core: the event loop of the proxy itself mostly waits (on the upload, PostgreSQL
# and the client), and a scrub keeps two batches in flight.
PROCESSES = max(1, min(4, os.cpu_count() or 1))


# Collector settings of a worker: a batch of a scrub builds tens of thousands of fact objects,
# which at the default threshold (700 allocations) set off dozens of collections per batch
# (measured on a 1 M-number scrub: about a tenth more CPU for the proxy and its workers).
GC_THRESHOLD = (20_000, 10, 10)


def start_worker() -> None:
    """What each worker does first (also bench/instructions.py, to count work as here)."""
    gc.freeze()  # the modules just imported live as long as the worker
    gc.set_threshold(*GC_THRESHOLD)


class Workers:
    def __init__(self, processes: int = PROCESSES) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker process; fn must be a module-level function."""
        if self._pool is None:
            # spawn: a fresh interpreter, not a fork of a process with a running event loop
            self._pool = ProcessPoolExecutor(max_workers=self._processes,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=start_worker)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BrokenProcessPool:
            self._pool = None  # a worker died (killed, out of memory): new ones next time
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
