"""Group fetch: the fact lookups of concurrent requests share one query (store._FACTS_SQL),
so under load a request's one round trip for its facts is shared with its neighbours'."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from proxy import store
from proxy.batch import Batcher
from proxy.policy.facts import Facts, Sender

Lookup = tuple[str, str]  # (sender key, E.164 number)


class GroupFetch(Batcher[Lookup]):
    name = "group-fetch"

    def load_facts(self, sender: str, number: str
                   ) -> asyncio.Future[tuple[Sender | None, Facts]]:
        """A gate.FactLoader: the awaitable is the batch item's own future."""
        return self.enqueue((sender, number))

    async def _send(self, conn: asyncpg.Connection, items: Sequence[Lookup]
                    ) -> list[tuple[Sender | None, Facts]]:
        return await store.load_facts_many(conn, items)
