"""Reading a large result a batch at a time, through a transaction pooler as well.

asyncpg's own cursors prepare a named statement, which outlives the transaction on the
server connection: behind PgBouncer in transaction mode (DATABASE_STATEMENT_CACHE_SIZE=0)
the next client handed that server connection (another gate, or this one after a restart)
fails with "prepared statement __asyncpg_stmt_1__ already exists". A cursor declared in
SQL lives and dies with the transaction, and every statement here is unnamed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

_names = itertools.count(1)


async def rows(conn: asyncpg.Connection, query: str, *args: Any,
               batch: int) -> AsyncIterator[asyncpg.Record]:
    """Every row of `query`, read `batch` at a time through a cursor; call it inside the
    transaction the rows are to be read in (the cursor closes with it)."""
    if not conn.is_in_transaction():
        raise RuntimeError("a cursor is read inside a transaction")
    name = f"consent_proxy_cursor_{next(_names)}"
    await conn.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {query}", *args)
    while True:  # a reader that stops early leaves the cursor to the transaction's end
        fetched = await conn.fetch(f"FETCH FORWARD {int(batch)} FROM {name}", timeout=None)
        for row in fetched:
            yield row
        if len(fetched) < batch:
            return
