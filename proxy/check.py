"""Dry-run decisions: `POST /admin/v1/check` for one contact, `POST /admin/v1/scrub` for a list.

Neither records a decision nor consumes a contact request.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import datetime as dt
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from aiohttp import web

from proxy import gate, store
from proxy.admin import PREFIX, read_json
from proxy.errors import BadInput
from proxy.fields import Fields, parse_time, parse_topic
from proxy.keys import CLOCK, POOL, SETTINGS, WORKERS
from proxy.policy import Decision, decide
from proxy.policy.facts import Contact, ContactChannel, Facts

log = structlog.get_logger("proxy.scrub")
SCRUB_BATCH = 5000
SCRUB_AHEAD = 2  # batches parsed and looked up ahead of the one being decided
MAX_LINE = 256
CONTACT_CHANNELS: tuple[ContactChannel, ...] = ("voice", "sms")


# A dry run may look ahead or back, but not to where calendar arithmetic overflows.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _in_range(at: dt.datetime) -> dt.datetime:
    if not EARLIEST <= at < LATEST:
        raise BadInput("must lie between 2000-01-01 and 2100-01-01", "at")
    return at


async def check(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), ("channel", "to", "from", "at", "topic"))
    channel = f.choice("channel", CONTACT_CHANNELS)
    assert channel is not None
    to_raw = f.text("to", max_len=64)
    from_raw = f.text("from", max_len=64)
    at = f.time("at", required=False)
    now = _in_range(at) if at is not None else request.app[CLOCK]()
    topic = f.text("topic", required=False)
    evaluation = await gate.evaluate(
        gate.store_facts(request.app[POOL]), request.app[SETTINGS].rules, channel=channel,
        to_raw=to_raw, from_raw=from_raw, now=now,
        topic=parse_topic(topic, "topic") if topic else None,
    )
    body: dict[str, Any] = evaluation.decision.to_dict()
    body["to"] = evaluation.contact.to
    body["organisation"] = evaluation.facts.organisation.id if evaluation.facts.organisation \
        else None
    body["at"] = now.isoformat()
    return web.json_response(body)


async def _lines(request: web.Request) -> AsyncIterator[str]:
    """The body's lines, read in chunks so a huge upload is never held in memory."""
    pending = b""
    async for chunk in request.content.iter_chunked(1 << 16):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", "replace")
        if len(pending) > 1 << 20:  # one absurd line: keep its head, drop the rest
            pending = pending[:MAX_LINE]
    if pending:
        yield pending.decode("utf-8", "replace")


def _first_field(line: str) -> str:
    line = line.strip().lstrip("\ufeff")
    if not line:
        return ""
    if len(line) > MAX_LINE:
        return line[:MAX_LINE]
    return next(csv.reader([line]), [""])[0].strip() if ("," in line or '"' in line) else line


def _row(decision: Decision) -> tuple[str, str, str]:
    retry = decision.retry_after.isoformat() if decision.retry_after else ""
    return decision.decision, decision.reason, retry


def _csv(rows: Sequence[tuple[str, str, str, str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


async def scrub(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    unknown = set(query) - {"channel", "from", "at", "topic"}
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    channel = query.get("channel")
    if channel not in CONTACT_CHANNELS:
        raise BadInput("expected one of voice, sms", "channel")
    now = _in_range(parse_time(query["at"], "at")) if query.get("at") else request.app[CLOCK]()
    topic = parse_topic(query["topic"], "topic") if query.get("topic") else None
    key = gate.sender_key(query.get("from"))
    if not query.get("from"):
        raise BadInput("required query parameter is missing", "from")
    pool, rules, workers = request.app[POOL], request.app[SETTINGS].rules, request.app[WORKERS]
    found = await store.load_sender(pool, key) if key else None
    if found is None:
        raise BadInput("not a registered sender (UNKNOWN_SENDER)", "from")
    sender, organisation = found

    def contact(number: str | None) -> Contact:
        return Contact(channel, number, sender.sender, sender, topic)

    nothing = Facts(organisation=organisation)

    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8"})
    await response.prepare(request)
    await response.write(b"number,decision,reason,retry_after\n")
    unheld: dict[tuple[bool, bool, str | None, bool | None], tuple[str, str, str]] = {}

    async def look_up(batch: list[str]) -> tuple[list[str], list[str | None], dict[str, Facts]]:
        numbers = await workers.parse_numbers(batch)
        facts = await store.load_facts_bulk(pool, organisation, [n for n in numbers if n])
        return batch, numbers, facts

    def rows(batch: list[str], numbers: list[str | None], facts: dict[str, Facts]) -> bytes:
        out = []
        for raw, number in zip(batch, numbers, strict=True):
            on_file = facts.get(number) if number else None
            if on_file is None or not (
                    on_file.consents or on_file.relationships or on_file.objections):
                # The engine reads `to` only for validity and "+31 or not", and a subject
                # record only for its kind and publication (the number itself only goes into
                # evidence, which a scrub does not return): with nothing else on file, every
                # number of the same kind gets the same answer in this scrub.
                subject = on_file.subject if on_file else None
                key = (number is not None, bool(number and number.startswith("+31")),
                       subject.kind if subject else None,
                       subject.published_for_marketing if subject else None)
                line = unheld.get(key)
                if line is None:
                    line = unheld[key] = _row(decide(contact(number), on_file or nothing,
                                                     rules, now))
            else:
                line = _row(decide(contact(number), on_file, rules, now))
            out.append((raw, *line))
        return _csv(out)

    # Batches in flight: while one is decided and written here, the next ones' numbers are
    # parsed in the worker process and their facts are on their way from PostgreSQL.
    ahead: collections.deque[asyncio.Task[tuple[list[str], list[str | None],
                                               dict[str, Facts]]]] = collections.deque()

    async def flush(batch: list[str]) -> None:
        ahead.append(asyncio.create_task(look_up(batch)))
        if len(ahead) > SCRUB_AHEAD:
            await response.write(rows(*await ahead.popleft()))

    total = 0
    try:
        batch: list[str] = []
        first = True
        async for line in _lines(request):
            value = _first_field(line)
            if first:
                first = False
                if value and not any(ch.isdigit() for ch in value):
                    continue  # a header line such as "number" or "telefoon"
            if not value:
                continue
            batch.append(value)
            total += 1
            if len(batch) >= SCRUB_BATCH:
                await flush(batch)
                batch = []
        if batch:
            await flush(batch)
        while ahead:
            await response.write(rows(*await ahead.popleft()))
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
