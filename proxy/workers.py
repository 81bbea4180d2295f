"""A worker process for CPU-bound pure work that must not hold up the event loop: parsing the
numbers of a scrub (phonenumbers' validity check is a third of a scrub's time). Started on
first use, so a proxy that never scrubs never starts it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from proxy.phone import try_parse_number


def parse_numbers(raw: Sequence[str]) -> list[str | None]:
    """E.164 for each text, or None where it is not a valid number (in the worker)."""
    return [try_parse_number(text) for text in raw]


class Workers:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def parse_numbers(self, raw: Sequence[str]) -> list[str | None]:
        if self._pool is None:
            # spawn: a fresh interpreter, not a fork of a process with a running event loop
            self._pool = ProcessPoolExecutor(max_workers=1,
                                             mp_context=multiprocessing.get_context("spawn"))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, parse_numbers, list(raw))
        except BrokenProcessPool:
            self._pool = None  # the worker died (killed, out of memory): a new one next time
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
