"""Evidence and audit: `GET /admin/v1/subjects/{number}/evidence` and the CLI commands
`consent-proxy evidence NUMBER`, `consent-proxy audit verify`, `consent-proxy audit
checkpoint` and `consent-proxy prune`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from proxy import checkpoints, db, store
from proxy.admin import PREFIX
from proxy.errors import BadInput
from proxy.keys import CLOCK, POOL, WRITER
from proxy.phone import InvalidNumber, parse_number
from proxy.policy.hours import add_months


async def subject_evidence(request: web.Request) -> web.Response:
    try:
        number = parse_number(request.match_info["number"])
    except InvalidNumber as exc:
        raise BadInput("not a valid phone number", "number") from exc
    await request.app[WRITER].sync()  # outcomes of answered requests may still be queued
    report = await store.evidence_report(request.app[POOL], number, request.app[CLOCK]())
    return web.json_response(report, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/subjects/{{number}}/evidence", subject_evidence)


async def evidence_text(database_url: str, raw_number: str, now: dt.datetime) -> str:
    number = parse_number(raw_number)
    conn = await db.connect(database_url)
    try:
        return _dumps(await store.evidence_report(conn, number, now))
    finally:
        await conn.close()


async def verify(database_url: str, proxy_secret: str | None,
                 given: Sequence[tuple[int, str]] = ()) -> checkpoints.AuditReport:
    """The chain, and the checkpoints (and those `given` from the log) held against it."""
    conn = await db.connect(database_url)
    try:
        chain = await store.verify_chain(conn, [seq for seq, _hash in given])
    finally:
        await conn.close()
    return checkpoints.check(chain, proxy_secret, given)


async def checkpoint(database_url: str, proxy_secret: str,
                     now: dt.datetime) -> checkpoints.Checkpoint | None:
    conn = await db.connect(database_url)
    try:
        return await checkpoints.take(conn, proxy_secret, now, "cli")
    finally:
        await conn.close()


async def prune(database_url: str, months: int, now: dt.datetime) -> dict[str, Any]:
    # Retention counts calendar months back from now; objections are never pruned (N11).
    before = add_months(now, -months)
    conn = await db.connect(database_url)
    try:
        counts = await store.prune(conn, before)
    finally:
        await conn.close()
    return {"before": before.isoformat(), **counts}
