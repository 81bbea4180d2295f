"""Dialer credentials as the gate sees them: a short-lived cache of clients by AccountSid, and
the PostgreSQL channel that tells every gate at once when a client changed.

A rotated or disabled client must stop at once on every gate, not when a cache entry runs
out. Every change to a client (rotation, disabling, its organisations, also one made by hand
in SQL) sends a NOTIFY from the changing transaction (the clients_notify trigger, sql/009);
each gate LISTENs on a dedicated connection and drops the client from its cache when the
change commits. While that connection is down the cache holds nothing, so every request reads
the client from the database: slower, never stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web

from proxy import store
from proxy.db import SERVER_SETTINGS, connect_writable
from proxy.keys import POOL

log = structlog.get_logger("proxy.clients")

CHANNEL = "consent_proxy_clients"  # sql/009, sql/014: the payload is the client id
APPLICATION_NAME = "consent-proxy client events"  # how the listener shows in pg_stat_activity


@dataclass
class _Cached:
    client: store.Client | None
    until: float


class ClientDirectory:
    """Clients by AccountSid, cached briefly so the hot path does not pay a query per request.
    A disabled client is not found. Entries are dropped the moment a change is announced
    (`forget`); `listening` says whether announcements can arrive, and without them nothing is
    cached. `ttl` bounds the staleness should an announcement ever be missed; a new client
    is seen at once (misses are kept for `miss_ttl` only)."""

    def __init__(self, ttl: float = 10.0, miss_ttl: float = 1.0) -> None:
        self._cache: dict[str, _Cached] = {}
        self._ttl, self._miss_ttl = ttl, miss_ttl
        # Bumped by every forget: a lookup that was under way when a change was announced
        # may have read the old row, so its answer is not kept.
        self._generation = 0
        self.listening = False

    async def get(self, request: web.Request, account_sid: str) -> store.Client | None:
        return await self.find(request.app[POOL], account_sid)

    async def find(self, pool: asyncpg.Pool, account_sid: str) -> store.Client | None:
        """`get` for a way in without a web.Request (FastAGI)."""
        now = time.monotonic()
        hit = self._cache.get(account_sid)
        if hit is not None and hit.until > now:
            return hit.client
        generation = self._generation
        client = await store.get_client(pool, account_sid)
        if client is not None and not client.enabled:
            client = None  # refused like an unknown client: 401 on every route
        if self.listening and generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            ttl = self._ttl if client is not None else self._miss_ttl
            self._cache[account_sid] = _Cached(client, now + ttl)
        return client

    def holds(self, account_sid: str) -> bool:
        """Whether a live cache entry would answer for this client (for tests and probes)."""
        hit = self._cache.get(account_sid)
        return hit is not None and hit.until > time.monotonic()

    def forget(self, account_sid: str) -> None:
        self._generation += 1
        self._cache.pop(account_sid, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._cache.clear()


class ClientEvents:
    """LISTEN on CHANNEL on a connection of its own, and drop each announced client from the
    directory. A lost connection (noticed when the socket closes, or by a ping every
    `ping_seconds`) turns caching off until a new connection listens again, tried every
    `retry_seconds`; whatever changed meanwhile is forgotten then."""

    def __init__(self, database_url: str, directory: ClientDirectory, *,
                 retry_seconds: float = 1.0, ping_seconds: float = 5.0) -> None:
        self._url = database_url
        self._directory = directory
        self._retry, self._ping = retry_seconds, ping_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="client-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._directory.listening = False

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:  # whatever broke it, listen again (caching is off till then)
                log.warning("client_events_lost", error=type(exc).__name__)
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        # A primary's session (LISTEN is refused on a standby), never a transaction
        # pooler's: DATABASE_URL_DIRECT when one is in front.
        conn: asyncpg.Connection = await connect_writable(
            self._url, timeout=self._ping,
            server_settings={**SERVER_SETTINGS, "application_name": APPLICATION_NAME})
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._announced)
            self._directory.forget_all()  # what changed while nobody listened
            self._directory.listening = True
            log.info("client_events_listening")
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), self._ping)
                except TimeoutError:  # a connection can also die without a word
                    await conn.fetchval("SELECT 1", timeout=self._ping)
            raise ConnectionResetError("the listening connection was closed")
        finally:
            self._directory.listening = False
            self._directory.forget_all()
            conn.terminate()

    def _announced(self, _conn: object, _pid: int, _channel: str, account_sid: str) -> None:
        self._directory.forget(account_sid)
