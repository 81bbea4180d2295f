"""The decision log: filters (period, organisation, channel, decision, reason, client, number,
the way in), pages of 50 newest first, and the same selection as a CSV download."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from proxy.console import auth
from proxy.console.pages import AMSTERDAM, render, secure_headers
from proxy.errors import BadInput
from proxy.keys import POOL
from proxy.phone import InvalidNumber, parse_number
from proxy.policy import REASONS
from proxy.store import decision_log
from proxy.store.decision_log import DecisionFilter

PAGE = 50
FILTERS = ("from", "until", "organisation", "channel", "decision", "reason", "client",
           "number", "front")
_FRONT = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # decisions.front (sql/018)


def _date(query: Mapping[str, str], key: str) -> dt.date | None:
    value = query.get(key, "").strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise BadInput("expected a date YYYY-MM-DD", key) from exc


def _start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), AMSTERDAM)


def parse_filter(query: Mapping[str, str]) -> DecisionFilter:
    unknown = set(query) - {*FILTERS, "before"}
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    since, until = _date(query, "from"), _date(query, "until")
    channel = query.get("channel") or None
    if channel not in (None, "voice", "sms"):
        raise BadInput("expected voice or sms", "channel")
    decision = query.get("decision") or None
    if decision not in (None, "allow", "deny"):
        raise BadInput("expected allow or deny", "decision")
    reason = query.get("reason") or None
    if reason is not None and reason not in REASONS:
        raise BadInput("not a reason code", "reason")
    front = query.get("front") or None
    if front is not None and not _FRONT.fullmatch(front):
        raise BadInput("not the name of a way in", "front")
    number = None
    if query.get("number", "").strip():
        try:
            number = parse_number(query["number"].strip()[:64])
        except InvalidNumber as exc:
            raise BadInput("not a valid phone number", "number") from exc
    return DecisionFilter(
        since=_start_of(since) if since else None,
        # `until` is inclusive for the officer: up to the start of the next day.
        until=_start_of(until + dt.timedelta(days=1)) if until else None,
        organisation=(query.get("organisation") or "").strip()[:63] or None,
        channel=channel, decision=decision, reason=reason,
        client=(query.get("client") or "").strip()[:64] or None,
        number=number, front=front,
    )


def _before(query: Mapping[str, str]) -> int | None:
    raw = query.get("before")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise BadInput("expected a decision id", "before")
    return int(raw)


@auth.requires("viewer")
async def decisions(request: web.Request) -> web.Response:
    query = request.rel_url.query
    f = parse_filter(query)
    pool = request.config_dict[POOL]
    rows, next_id = await decision_log.search(pool, f, before_id=_before(query), limit=PAGE)
    kept = {k: query[k] for k in FILTERS if query.get(k)}
    values: dict[str, Any] = {
        "rows": rows, "query": kept, "reasons": sorted(REASONS),
        "next_url": ("/console/decisions?" + urlencode({**kept, "before": next_id}))
        if next_id is not None else None,
        "csv_url": "/console/decisions.csv" + ("?" + urlencode(kept) if kept else ""),
        **await decision_log.choices(pool),
    }
    return render(request, "decisions.html", values)


@auth.requires("viewer")
async def decisions_csv(request: web.Request) -> web.StreamResponse:
    f = parse_filter({k: v for k, v in request.rel_url.query.items() if k != "before"})
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="decisions.csv"'})
    secure_headers(response)
    await response.prepare(request)
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(decision_log.COLUMNS)
    async for row in decision_log.export(request.config_dict[POOL], f):
        out.writerow(_cell(row[c]) for c in decision_log.COLUMNS)
        if buffer.tell() > 1 << 16:
            await response.write(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
    await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


# A spreadsheet runs a cell that starts with one of these as a formula. Senders and topics
# are free text an administrator typed, so such a cell is written with a leading apostrophe
# (shown as text, the apostrophe hidden); a number (masked or not) stays as it is.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9][0-9* ]*")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text
