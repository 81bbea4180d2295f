"""Lists of what the registry holds, a page at a time: organisations, senders, consents and
objections (clients: proxy/store/clients.py). Keyset paging: each page ends with the cursor
(`next`) the following page starts after, so a page costs the same however deep it lies."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from proxy.errors import BadInput
from proxy.phone import InvalidNumber, parse_number, subject_hash
from proxy.store.rows import jsonable

MAX_LIMIT = 1000
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A sender key is ASCII: an E.164 number, an MG… id or an alphanumeric ID (proxy/fields.py).
_SENDER = re.compile(r"[+A-Za-z0-9 ]{1,40}")

Page = tuple[list[dict[str, Any]], str | None]


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadInput(f"expected an integer from 1 to {MAX_LIMIT}", "limit")


def id_cursor(after: str | None) -> int | None:
    """A numeric id cursor, or BadInput naming `after`."""
    if after is None:
        return None
    if not after.isascii() or not after.isdigit() or len(after) > 19 or int(after) >= 2**63:
        raise BadInput("not a cursor from a previous page", "after")
    return int(after)


def text_cursor(after: str | None, shape: re.Pattern[str]) -> str | None:
    if after is not None and not shape.fullmatch(after):
        raise BadInput("not a cursor from a previous page", "after")
    return after


def organisation_filter(organisation: str | None) -> str | None:
    """An organisation id to filter by; one that cannot exist is refused, naming it."""
    if organisation is not None and not _ORG_ID.fullmatch(organisation):
        raise BadInput("expected an organisation id (lowercase letters, digits, '-', '_')",
                       "organisation")
    return organisation


def subject_filter(subject: str | None) -> str | None:
    """A number in any common form to filter by, as E.164; not a number: BadInput."""
    if subject is None:
        return None
    try:
        return parse_number(subject)
    except InvalidNumber as exc:
        raise BadInput("not a valid phone number", "subject") from exc


def _page(items: list[dict[str, Any]], rows: list[asyncpg.Record], limit: int,
          key: str) -> Page:
    return items[:limit], (str(rows[limit - 1][key]) if len(rows) > limit else None)


async def list_organisations(pool: asyncpg.Pool, *, organisation: str | None = None,
                             subject: str | None = None, after: str | None = None,
                             limit: int = 50) -> Page:
    """Organisations by id; `subject` (E.164): those holding a consent or relationship of
    that number."""
    check_limit(limit)
    rows = await pool.fetch(
        """SELECT * FROM organisations o
           WHERE ($1::text IS NULL OR o.id = $1) AND ($2::text IS NULL OR o.id > $2)
             AND ($3::text IS NULL
                  OR EXISTS (SELECT 1 FROM consents c
                             WHERE c.subject = $3 AND c.organisation_id = o.id)
                  OR EXISTS (SELECT 1 FROM relationships r
                             WHERE r.subject = $3 AND r.organisation_id = o.id))
           ORDER BY o.id LIMIT $4""",
        organisation_filter(organisation), text_cursor(after, _ORG_ID), subject_filter(subject),
        limit + 1)
    return _page([jsonable(r) for r in rows], rows, limit, "id")


async def list_senders(pool: asyncpg.Pool, *, organisation: str | None = None,
                       subject: str | None = None, after: str | None = None,
                       limit: int = 50) -> Page:
    """Senders by their key, optionally of one organisation."""
    check_limit(limit)
    if subject is not None:
        raise BadInput("senders are not listed by subject", "subject")
    rows = await pool.fetch(
        """SELECT * FROM senders
           WHERE ($1::text IS NULL OR organisation_id = $1) AND ($2::text IS NULL OR sender > $2)
           ORDER BY sender LIMIT $3""",
        organisation_filter(organisation), text_cursor(after, _SENDER), limit + 1)
    items = []
    for row in rows:
        item = jsonable(row, drop=("organisation_id",))
        item["organisation"] = row["organisation_id"]
        items.append(item)
    return _page(items, rows, limit, "sender")


async def list_consents(pool: asyncpg.Pool, *, organisation: str | None = None,
                        subject: str | None = None, after: str | None = None,
                        limit: int = 50) -> Page:
    """Consents oldest first (by id), optionally of one organisation and/or one number."""
    check_limit(limit)
    rows = await pool.fetch(
        """SELECT * FROM consents
           WHERE ($1::text IS NULL OR organisation_id = $1) AND ($2::text IS NULL OR subject = $2)
             AND ($3::bigint IS NULL OR id > $3)
           ORDER BY id LIMIT $4""",
        organisation_filter(organisation), subject_filter(subject), id_cursor(after), limit + 1)
    return _page([jsonable(r) for r in rows], rows, limit, "id")


async def list_objections(pool: asyncpg.Pool, *, organisation: str | None = None,
                          subject: str | None = None, after: str | None = None,
                          limit: int = 50) -> Page:
    """Objections oldest first (by id), lifted ones too (`lifted_at`). `organisation`: those
    made to that organisation (an objection to every organisation has none); `subject`:
    those of that number, by its one-way hash, so objections of an erased number are found."""
    check_limit(limit)
    rows = await pool.fetch(
        """SELECT * FROM objections
           WHERE ($1::text IS NULL OR organisation_id = $1)
             AND ($2::text IS NULL OR subject_hash = $2) AND ($3::bigint IS NULL OR id > $3)
           ORDER BY id LIMIT $4""",
        organisation_filter(organisation), _hash(subject_filter(subject)),
        id_cursor(after), limit + 1)
    return _page([jsonable(r, drop=("subject_hash",)) for r in rows], rows, limit, "id")


def _hash(number: str | None) -> str | None:
    return None if number is None else subject_hash(number)
