"""Audit checkpoints: the head of the decision chain, kept outside the decisions table.

The hash chain (sql/005_audit.sql) shows a changed row, or a row removed from the middle, but
not the newest rows removed from its end: the chain that is left is whole. So the head (its
chain_seq and row_hash) is checkpointed in `audit_checkpoints` (sql/010), every minute by every
running proxy (`Checkpointer`, a background task), at its stop, and by `consent-proxy audit
checkpoint`, each with an HMAC-SHA256 keyed from PROXY_SECRET over seq, hash and time, and each
also written to the log as `audit_checkpoint` (seq, hash, mac): a copy outside the database,
which `audit verify --checkpoint SEQ:HASH` takes back, so even a deleted checkpoints table
cannot hide a truncation.

`verify` fails when a checkpointed row is gone or has another hash, or a checkpoint's MAC
does not verify (forged or altered). Checkpoints at or below where `consent-proxy prune` cut
the chain are removed with the rows they name; one from the log below that point is checked
against the prune's anchor where it can be (at the cut itself) and otherwise passes as pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web

from proxy import store
from proxy.db import STORE_ERRORS
from proxy.keys import CHECKPOINTS, CLOCK, POOL, SETTINGS, Clock

log = structlog.get_logger("proxy.checkpoints")

INTERVAL_SECONDS = 60.0
_KEY_LABEL = b"consent-proxy/audit-checkpoint/v1"
_SEQ_HASH = re.compile(r"^(\d{1,19}):([0-9a-f]{64})$")


def _key(proxy_secret: str) -> bytes:
    # A key of its own, derived from PROXY_SECRET: a checkpoint MAC is never a client token.
    return hmac.new(proxy_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def canonical(chain_seq: int, row_hash: str, taken_at: dt.datetime) -> bytes:
    """What the MAC covers: seq, hash and time (UTC, microseconds, as the database keeps it)."""
    when = taken_at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return f"{_KEY_LABEL.decode()}|{chain_seq}|{row_hash}|{when}".encode()


def mac(proxy_secret: str, chain_seq: int, row_hash: str, taken_at: dt.datetime) -> str:
    return hmac.new(_key(proxy_secret), canonical(chain_seq, row_hash, taken_at),
                    hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    chain_seq: int
    row_hash: str
    taken_at: dt.datetime
    mac: str
    source: str


async def take(conn: asyncpg.Pool | asyncpg.Connection, proxy_secret: str,
               taken_at: dt.datetime, source: str, *, if_moved: bool = False
               ) -> Checkpoint | None:
    """Checkpoint the chain's head and log it. None when there is no decision yet, or (with
    `if_moved`) when the newest checkpoint, by any instance, already names this head."""
    head = await store.chain_head(conn)
    if head is None or (if_moved and await store.latest_checkpoint(conn) == head):
        return None
    seq, row_hash = head
    taken_at = taken_at.astimezone(dt.UTC)
    signature = mac(proxy_secret, seq, row_hash, taken_at)
    checkpoint_id = await store.insert_checkpoint(conn, seq, row_hash, taken_at, signature,
                                                  source)
    log.info("audit_checkpoint", checkpoint_id=checkpoint_id, seq=seq, hash=row_hash,
             mac=signature, taken_at=taken_at.isoformat(), source=source)
    return Checkpoint(checkpoint_id, seq, row_hash, taken_at, signature, source)


class Checkpointer:
    """The background task of a running proxy: a checkpoint every `interval` seconds when
    the head moved, and one at its stop. The pool is attached when the app starts."""

    def __init__(self, proxy_secret: str, clock: Clock,
                 interval: float = INTERVAL_SECONDS) -> None:
        self.proxy_secret = proxy_secret
        self.clock = clock
        self.interval = interval
        self.pool: asyncpg.Pool | None = None

    async def checkpoint(self, source: str) -> Checkpoint | None:
        assert self.pool is not None, "the app has not started"
        try:
            return await take(self.pool, self.proxy_secret, self.clock(), source,
                              if_moved=True)
        except (*STORE_ERRORS, asyncpg.PostgresError) as exc:
            # The next one will do; the chain itself is unharmed. Never stops a proxy.
            log.warning("audit_checkpoint_failed", error=type(exc).__name__, source=source)
            return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.checkpoint("timer")


async def _checkpoints_ctx(app: web.Application) -> AsyncIterator[None]:
    checkpointer = app[CHECKPOINTS]
    checkpointer.pool = app[POOL]
    task = asyncio.create_task(checkpointer.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Every decision of an answered request is committed by now (each waits for its commit).
    await checkpointer.checkpoint("stop")


async def _off_ctx(_app: web.Application) -> AsyncIterator[None]:
    log.warning("audit_checkpoints_off", why="PROXY_SECRET is not set")
    yield


def install(app: web.Application) -> None:
    """After the pool's cleanup context: the stop checkpoint is taken before the pool closes.
    `app[CHECKPOINTS].interval` may be changed until the app starts."""
    secret = app[SETTINGS].proxy_secret
    if not secret:
        app.cleanup_ctx.append(_off_ctx)
        return
    app[CHECKPOINTS] = Checkpointer(secret, app[CLOCK])
    app.cleanup_ctx.append(_checkpoints_ctx)


# --- verification --------------------------------------------------------------------------

def parse_seq_hash(text: str) -> tuple[int, str]:
    """`SEQ:HASH` as in an `audit_checkpoint` log line (seq, then the 64 hex digits)."""
    found = _SEQ_HASH.match(text.strip().lower())
    if not found:
        raise ValueError(f"expected SEQ:HASH (a number, a colon, 64 hex digits), got {text!r}")
    return int(found.group(1)), found.group(2)


@dataclass(frozen=True, slots=True)
class AuditReport:
    chain: store.ChainReport
    checkpoints: int  # how many held (from the table and given)
    problem: str | None = None  # the first checkpoint that does not hold, named

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.problem is None


def _against_chain(chain: store.ChainReport, seq: int, row_hash: str,
                   present: str | None) -> str | None:
    """Why a checkpointed (seq, hash) does not hold against the chain, or None."""
    if chain.pruned_through is not None and seq <= chain.pruned_through:
        if seq == chain.pruned_through and row_hash != chain.anchor_hash:
            return "the prune anchor at this chain_seq has another hash"
        return None  # removed by `prune`, on purpose
    if present is None:
        return "the decision row it names is gone: rows were deleted from the log"
    if present != row_hash:
        return "the decision row it names has another row_hash now: it was changed"
    return None


def check(chain: store.ChainReport, proxy_secret: str | None,
          given: Sequence[tuple[int, str]] = ()) -> AuditReport:
    """Hold the checkpoints (and any given from the log) against the chain read with them."""
    held = 0
    if chain.checkpoints and not proxy_secret:
        return AuditReport(chain, held, f"PROXY_SECRET is needed to check the MACs of "
                                        f"{len(chain.checkpoints)} checkpoints")
    for cp in chain.checkpoints:
        name = (f"checkpoint {cp.id} (chain_seq {cp.chain_seq}, taken "
                f"{cp.taken_at.astimezone(dt.UTC).isoformat()}, {cp.source})")
        assert proxy_secret is not None
        expected = mac(proxy_secret, cp.chain_seq, cp.row_hash, cp.taken_at)
        if not hmac.compare_digest(expected, cp.mac):
            return AuditReport(chain, held, f"{name}: its MAC does not verify: forged or "
                                            "altered (or made with another PROXY_SECRET)")
        why = _against_chain(chain, cp.chain_seq, cp.row_hash, cp.present_hash)
        if why:
            return AuditReport(chain, held, f"{name}: {why}")
        held += 1
    for seq, row_hash in given:
        why = _against_chain(chain, seq, row_hash, chain.hashes_at.get(seq))
        if why:
            return AuditReport(chain, held, f"given checkpoint {seq}:{row_hash}: {why}")
        held += 1
    return AuditReport(chain, held)
