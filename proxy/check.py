"""Dry-run decisions: `POST /admin/v1/check` for one contact, `POST /admin/v1/scrub` for a list.

Neither records a decision nor consumes a contact request.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from proxy import gate, scrub_batch, store
from proxy.admin import PREFIX, read_json
from proxy.errors import BadInput
from proxy.fields import Fields, parse_time, parse_topic
from proxy.keys import CLOCK, GATE, POOL, SETTINGS, WORKERS
from proxy.policy.facts import ContactChannel

log = structlog.get_logger("proxy.scrub")
# Measured on 2 cores, 1 M numbers against 1 M subjects: a batch's fact query scans small
# fact tables once, so bigger batches share that scan (20,000 a batch: 71-79 k numbers/s and a
# third more PostgreSQL CPU than 50,000); one batch in flight behind the one being written
# keeps both workers as busy as two or three did (80-83 k numbers/s), with the proxy's peak
# RSS at 117 MiB instead of 134-148 MiB.
SCRUB_BATCH = 50_000
SCRUB_AHEAD = 1
MAX_LINE = 256
CONTACT_CHANNELS: tuple[ContactChannel, ...] = ("voice", "sms")
# N2: `automated_voice` asks about an automated call (a call, whatever the sender's flag).
CHECK_CHANNELS = ("voice", "automated_voice", "sms")


def _contact_channel(channel: str) -> tuple[ContactChannel, bool]:
    """The contact's channel and whether it is automated voice."""
    return ("voice", True) if channel == "automated_voice" else (
        "sms" if channel == "sms" else "voice", False)


# A dry run may look ahead or back, but not to where calendar arithmetic overflows.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _in_range(at: dt.datetime) -> dt.datetime:
    if not EARLIEST <= at < LATEST:
        raise BadInput("must lie between 2000-01-01 and 2100-01-01", "at")
    return at


async def check(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), ("channel", "to", "from", "at", "topic"))
    chosen = f.choice("channel", CHECK_CHANNELS)
    assert chosen is not None
    channel, automated = _contact_channel(chosen)
    to_raw = f.text("to", max_len=64)
    from_raw = f.text("from", max_len=64)
    at = f.time("at", required=False)
    now = _in_range(at) if at is not None else request.app[CLOCK]()
    topic = f.text("topic", required=False)
    await request.app[GATE].apply_spool()
    evaluation = await gate.evaluate(
        gate.store_facts(request.app[POOL]), request.app[SETTINGS].rules, channel=channel,
        to_raw=to_raw, from_raw=from_raw, now=now,
        topic=parse_topic(topic, "topic") if topic else None, automated=automated,
    )
    body: dict[str, Any] = evaluation.decision.to_dict()
    body["to"] = evaluation.contact.to
    body["organisation"] = evaluation.facts.organisation.id if evaluation.facts.organisation \
        else None
    body["at"] = now.isoformat()
    return web.json_response(body)


async def _values(request: web.Request) -> AsyncIterator[list[str]]:
    """The first field of each line of the body, a chunk at a time, so a huge upload is
    never held in memory; empty lines are dropped."""
    pending = b""
    async for chunk in request.content.iter_chunked(1 << 16):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        values = [_first_field(raw.decode("utf-8", "replace")) for raw in complete]
        yield [v for v in values if v]
        if len(pending) > 1 << 20:  # one absurd line: keep its head, drop the rest
            pending = pending[:MAX_LINE]
    if pending and (value := _first_field(pending.decode("utf-8", "replace"))):
        yield [value]


def _first_field(line: str) -> str:
    line = line.strip().lstrip("\ufeff")
    if len(line) > MAX_LINE:
        return line[:MAX_LINE]
    return next(csv.reader([line]), [""])[0].strip() if ("," in line or '"' in line) else line


async def scrub(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    unknown = set(query) - {"channel", "from", "at", "topic"}
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    chosen = query.get("channel")
    if chosen not in CHECK_CHANNELS:
        raise BadInput("expected one of voice, automated_voice, sms", "channel")
    channel, automated = _contact_channel(chosen)
    now = _in_range(parse_time(query["at"], "at")) if query.get("at") else request.app[CLOCK]()
    topic = parse_topic(query["topic"], "topic") if query.get("topic") else None
    key = gate.sender_key(query.get("from"))
    if not query.get("from"):
        raise BadInput("required query parameter is missing", "from")
    pool, rules, workers = request.app[POOL], request.app[SETTINGS].rules, request.app[WORKERS]
    await request.app[GATE].apply_spool()
    found = await store.load_sender(pool, key) if key else None
    if found is None:
        raise BadInput("not a registered sender (UNKNOWN_SENDER)", "from")
    sender, organisation = found

    job = scrub_batch.ScrubJob(channel, sender, organisation, topic, rules, now, automated)

    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
    await response.prepare(request)
    await response.write(b"number,decision,reason,retry_after\n")

    async def look_up(batch: list[str]) -> bytes:
        lines = "\n".join(batch)  # one string to pickle, not 50,000
        parsed = await workers.run(scrub_batch.parse_numbers, lines)
        text = await store.fetch_facts_bulk(pool, organisation.id, parsed.valid, parsed.hashes)
        return await workers.run(scrub_batch.rows, job, lines, parsed, text)

    # Batches in flight: while one is written here, the next ones are parsed and decided in
    # the worker processes or their facts are on their way from PostgreSQL.
    ahead: collections.deque[asyncio.Task[bytes]] = collections.deque()

    async def flush(batch: list[str]) -> None:
        ahead.append(asyncio.create_task(look_up(batch)))
        if len(ahead) > SCRUB_AHEAD:
            await response.write(await ahead.popleft())

    total = 0
    try:
        batch: list[str] = []
        first = True
        async for values in _values(request):
            if first and values:
                first = False
                if not any(ch.isdigit() for ch in values[0]):
                    del values[0]  # a header line such as "number" or "telefoon"
            batch += values
            total += len(values)
            while len(batch) >= SCRUB_BATCH:
                await flush(batch[:SCRUB_BATCH])
                del batch[:SCRUB_BATCH]
        if batch:
            await flush(batch)
        while ahead:
            await response.write(await ahead.popleft())
    except Exception as exc:
        for task in ahead:
            task.cancel()
        # The status line is gone already: cut the stream so the client cannot mistake a
        # partial result for a complete one (the chunked body never terminates).
        log.warning("scrub_aborted", numbers_done=total, error=type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    log.info("scrub_done", numbers=total, channel=channel)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/check", check)
    app.router.add_post(f"{PREFIX}/scrub", scrub)
