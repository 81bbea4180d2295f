"""The facts the decision engine reads: for one proposed contact, for a group of them in one
query (group fetch, proxy/reader.py), and for a scrub's batch of numbers of one organisation."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import orjson

from proxy.phone import subject_hash
from proxy.policy.facts import (
    Consent,
    Facts,
    Objection,
    Organisation,
    Relationship,
    Sender,
    Subject,
)

T = TypeVar("T")


def organisation_from_row(row: asyncpg.Record) -> Organisation:
    return Organisation(
        id=row["id"],
        name=row["name"],
        sector=row["sector"],
        customer_term_months=row["customer_term_months"],
        sms_footer=row["sms_footer"],
        stop_reply=row["stop_reply"],
        content_templates_carry_opt_out=row["content_templates_carry_opt_out"],
    )


def sender_from_row(row: asyncpg.Record) -> Sender:
    return Sender(
        sender=row["sender"],
        organisation_id=row["organisation_id"],
        topic=row["topic"],
        purpose=row["purpose"],
        automated=row["automated"],
        inbound_webhook=row["inbound_webhook"],
    )


# Fact rows arrive as JSON arrays (the hot-path and the bulk query alike), read by position
# in the order of the `_*_COLUMNS` lists below; timestamps arrive as UTC text.
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)
_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_INFINITE = {"infinity": _LATEST, "-infinity": _EARLIEST}


def _ts(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    # The offset parsed with the rest: a fifth of the time of .replace(tzinfo=…) afterwards.
    try:
        return _INFINITE.get(value) or dt.datetime.fromisoformat(value + "+00:00")
    except ValueError:
        return _beyond(value)


def _beyond(value: str) -> dt.datetime:
    """A timestamp PostgreSQL holds and Python cannot (after 9999, or BC: "0044-03-15T… BC",
    written only by hand) as the last or first instant Python has, so a fact row never fails
    to load; anything else is not a timestamp from the fact query at all."""
    if value.endswith(" BC"):
        return _EARLIEST
    year = value.split("-", 1)[0]
    if year.isascii() and year.isdigit() and len(year) > 4:
        return _LATEST
    raise ValueError(f"not a timestamp: {value[:40]!r}")


def _given(value: str) -> dt.datetime:
    found = _ts(value)
    assert found is not None  # NOT NULL columns
    return found


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(number=row[0], kind=row[1], published_for_marketing=row[2])


def _consent(row: Sequence[Any]) -> Consent:
    return Consent(
        id=row[0], organisation_id=row[2], channel=row[3], topics=tuple(row[4]), kind=row[5],
        given_at=_given(row[6]), provenance=row[7], expires_at=_ts(row[8]),
        verified_at=_ts(row[9]), first_contact_by=_ts(row[10]),
        requested_start=_ts(row[11]), requested_end=_ts(row[12]),
        withdrawn_at=_ts(row[13]), first_used_at=_ts(row[14]), consumed_at=_ts(row[15]),
    )


def _relationship(row: Sequence[Any]) -> Relationship:
    return Relationship(
        id=row[0], organisation_id=row[2], kind=row[3], topics=tuple(row[4]),
        started_at=_given(row[5]), provenance=row[6], ended_at=_ts(row[7]),
        opt_out_offered=row[8],
    )


def _objection(row: Sequence[Any]) -> Objection:
    return Objection(id=row[0], organisation_id=row[2], channel=row[3],
                     received_at=_given(row[4]), via=row[5])


# The columns of each fact row, in the order the builders above read them; `@` marks a
# timestamp.
_SUBJECT_COLUMNS = ("sj.number", "sj.kind", "sj.published_for_marketing")
_CONSENT_COLUMNS = ("c.id", "c.subject", "c.organisation_id", "c.channel", "c.topics",
                    "c.kind", "@c.given_at", "c.provenance", "@c.expires_at",
                    "@c.verified_at", "@c.first_contact_by", "@c.requested_start",
                    "@c.requested_end", "@c.withdrawn_at", "@c.first_used_at",
                    "@c.consumed_at")
_RELATIONSHIP_COLUMNS = ("r.id", "r.subject", "r.organisation_id", "r.kind", "r.topics",
                         "@r.started_at", "r.provenance", "@r.ended_at", "r.opt_out_offered")
_OBJECTION_COLUMNS = ("ob.id", "ob.subject_hash", "ob.organisation_id", "ob.channel",
                      "@ob.received_at", "ob.via")
# Organisation and Sender, in the order of their dataclass fields.
_ORGANISATION_COLUMNS = ("o.id", "o.name", "o.sector", "o.customer_term_months",
                         "o.sms_footer", "o.stop_reply", "o.content_templates_carry_opt_out")
_SENDER_COLUMNS = ("s.sender", "s.organisation_id", "s.topic", "s.purpose", "s.automated",
                   "s.inbound_webhook")


def _json_array(columns: Sequence[str]) -> str:
    # Timestamps as UTC text, whatever the session's TimeZone.
    return "json_build_array(" + ", ".join(
        f"{c[1:]} AT TIME ZONE 'UTC'" if c.startswith("@") else c for c in columns) + ")"


# One round trip for any number of lookups (group fetch, proxy/reader.py): for each
# (sender, number), the sender, its organisation, the subject, and every consent,
# relationship and live objection that can bear on (subject, organisation). One row per
# lookup, in order, as one JSON array: decoding that costs the proxy a fraction of what the
# same facts as composite rows did.
_FACTS_SQL = f"""
SELECT json_build_array(
    CASE WHEN s.sender IS NULL THEN NULL ELSE {_json_array(_SENDER_COLUMNS)} END,
    CASE WHEN o.id IS NULL THEN NULL ELSE {_json_array(_ORGANISATION_COLUMNS)} END,
    CASE WHEN sj.number IS NULL THEN NULL ELSE {_json_array(_SUBJECT_COLUMNS)} END,
    (SELECT json_agg({_json_array(_CONSENT_COLUMNS)} ORDER BY c.id) FROM consents c
     WHERE c.subject = q.number AND c.organisation_id = s.organisation_id),
    (SELECT json_agg({_json_array(_RELATIONSHIP_COLUMNS)} ORDER BY r.id) FROM relationships r
     WHERE r.subject = q.number AND r.organisation_id = s.organisation_id),
    (SELECT json_agg({_json_array(_OBJECTION_COLUMNS)} ORDER BY ob.id) FROM objections ob
     WHERE ob.subject_hash = q.hash AND ob.lifted_at IS NULL
       AND (ob.organisation_id IS NULL OR ob.organisation_id = s.organisation_id))
)::text AS facts
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS q(sender, number, hash, n)
LEFT JOIN senders s ON s.sender = q.sender
LEFT JOIN organisations o ON o.id = s.organisation_id
LEFT JOIN subjects sj ON sj.number = q.number
ORDER BY q.n
"""


class _Interned(Generic[T]):
    """One object per distinct row value: the few organisations and senders come back on
    every lookup, and their (frozen) objects can be shared instead of built each time. A row
    that changes is a different key, so a stale object is never handed out."""

    def __init__(self, build: Callable[..., T], limit: int = 1024) -> None:
        self._build = build
        self._limit = limit
        self._seen: dict[tuple[Any, ...], T] = {}

    def __call__(self, row: Sequence[Any]) -> T:
        key = tuple(row)
        found = self._seen.get(key)
        if found is None:
            if len(self._seen) >= self._limit:
                self._seen.clear()
            found = self._seen[key] = self._build(*key)
        return found


_interned_organisation = _Interned(Organisation)
_interned_sender = _Interned(Sender)


def _facts(text: str) -> tuple[Sender | None, Facts]:
    sender_row, org_row, subject_row, consents, relationships, objections = orjson.loads(text)
    facts = Facts(
        organisation=_interned_organisation(org_row) if org_row is not None else None,
        subject=_subject(subject_row) if subject_row is not None else None,
        consents=tuple(_consent(c) for c in consents or ()),
        relationships=tuple(_relationship(r) for r in relationships or ()),
        objections=tuple(_objection(o) for o in objections or ()),
    )
    return (_interned_sender(sender_row) if sender_row is not None else None), facts


async def load_facts_many(
    conn: asyncpg.Pool | asyncpg.Connection, lookups: Sequence[tuple[str, str]]
) -> list[tuple[Sender | None, Facts]]:
    """Everything the engine needs for each proposed (sender, number), in a single query."""
    senders = [sender for sender, _ in lookups]
    numbers = [number for _, number in lookups]
    rows = await conn.fetch(_FACTS_SQL, senders, numbers, [subject_hash(n) for n in numbers])
    return [_facts(row[0]) for row in rows]


async def load_facts(
    conn: asyncpg.Pool | asyncpg.Connection, sender: str, number: str
) -> tuple[Sender | None, Facts]:
    """Everything the engine needs for one proposed contact."""
    (found,) = await load_facts_many(conn, [(sender, number)])
    return found


async def load_sender(
    conn: asyncpg.Pool | asyncpg.Connection, sender: str
) -> tuple[Sender, Organisation] | None:
    row = await conn.fetchrow(
        "SELECT s AS sender_row, o AS org_row FROM senders s "
        "JOIN organisations o ON o.id = s.organisation_id WHERE s.sender = $1", sender)
    if row is None:
        return None
    return sender_from_row(row["sender_row"]), organisation_from_row(row["org_row"])


# Bulk variant for scrubbing: one round trip per batch of numbers, set-based (= ANY of an
# array), never a query per number. Only what can change a decision comes back: a subject
# record only when it is a business (N1) or published for marketing (N9), through the
# partial index of sql/007, since the engine treats any other subject as it treats an
# unknown number; so most numbers of a scrub come back as nothing at all. The numbers and
# hashes arrive as comma-separated text (asyncpg checks every element of an array parameter
# for nesting, a microsecond each; E.164 numbers and hex digests hold no comma) and the
# facts leave as one JSON text, the rows in the hot path's format.
_BULK_FACTS_SQL = f"""
SELECT json_build_array(
    (SELECT json_agg({_json_array(_SUBJECT_COLUMNS)}) FROM subjects sj
     WHERE sj.number = ANY(string_to_array($1, ','))
       AND (sj.kind = 'business' OR sj.published_for_marketing)),
    (SELECT json_agg({_json_array(_CONSENT_COLUMNS)} ORDER BY c.id) FROM consents c
     WHERE c.subject = ANY(string_to_array($1, ',')) AND c.organisation_id = $2),
    (SELECT json_agg({_json_array(_RELATIONSHIP_COLUMNS)} ORDER BY r.id) FROM relationships r
     WHERE r.subject = ANY(string_to_array($1, ',')) AND r.organisation_id = $2),
    (SELECT json_agg({_json_array(_OBJECTION_COLUMNS)} ORDER BY ob.id) FROM objections ob
     WHERE ob.subject_hash = ANY(string_to_array($3, ',')) AND ob.lifted_at IS NULL
       AND (ob.organisation_id IS NULL OR ob.organisation_id = $2))
)::text
"""
# A batch of a scrub holds tens of thousands of numbers, against a store of any size: only
# a plan made for the batch at hand picks well between scanning a table once and probing its
# index per number (measured on 1 M subjects: 3-5 us of server time per number when a batch
# of 50,000 scans the fact tables, 16 us when each number probes the indexes). No parallel
# workers: the scrub's own workers need the other cores.
_BULK_SETTINGS = ("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                  "set_config('max_parallel_workers_per_gather', '0', true)")


async def fetch_facts_bulk(
    pool: asyncpg.Pool, organisation_id: str, numbers: str, hashes: str,
) -> str:
    """The facts for many numbers of one organisation, as the query's JSON text (read with
    facts_from_bulk). `numbers`: E.164 numbers, comma-separated; `hashes`: the subject_hash
    of each, in the same order."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(_BULK_SETTINGS)
        text: str = await conn.fetchval(_BULK_FACTS_SQL, numbers, organisation_id, hashes)
    return text


def facts_from_bulk(text: str, organisation: Organisation, numbers: str, hashes: str,
                    unreadable: set[str] | None = None) -> dict[str, Facts]:
    """Facts per number from fetch_facts_bulk's answer for these numbers and hashes. Numbers
    with nothing on file that bears on a decision are absent, and so is a subject record
    that is neither a business nor published. Pure: the scrub runs it in a worker.

    With `unreadable`, a number with a row that cannot be read is left out and added to it,
    so one bad row costs its own number an answer, not the whole batch (the caller must
    tell such a number from one with nothing on file). Without it, such a row raises."""
    subject_rows, consent_rows, relationship_rows, objection_rows = (
        rows or () for rows in orjson.loads(text))
    subjects = {r[0]: _subject(r) for r in subject_rows}
    consents: defaultdict[str, list[Consent]] = defaultdict(list)
    relationships: defaultdict[str, list[Relationship]] = defaultdict(list)
    objections: defaultdict[str, list[Objection]] = defaultdict(list)
    broken: set[str] = set()
    for r in consent_rows:
        try:
            consents[r[1]].append(_consent(r))
        except Exception:
            _unreadable(broken, r[1], unreadable)
    for r in relationship_rows:
        try:
            relationships[r[1]].append(_relationship(r))
        except Exception:
            _unreadable(broken, r[1], unreadable)
    if objection_rows:
        by_hash = dict(zip(hashes.split(","), numbers.split(","), strict=True))
        for r in objection_rows:
            try:
                objections[by_hash[r[1]]].append(_objection(r))
            except Exception:
                _unreadable(broken, by_hash[r[1]], unreadable)
    held = subjects.keys() | consents.keys() | relationships.keys() | objections.keys()
    return {
        number: Facts(organisation=organisation, subject=subjects.get(number),
                      consents=tuple(consents.get(number, ())),
                      relationships=tuple(relationships.get(number, ())),
                      objections=tuple(objections.get(number, ())))
        for number in held - broken
    }


def _unreadable(broken: set[str], number: str, unreadable: set[str] | None) -> None:
    if unreadable is None:
        raise  # (called in an except block) a caller without `unreadable` takes no gaps
    broken.add(number)
    unreadable.add(number)


async def load_facts_bulk(
    pool: asyncpg.Pool, organisation: Organisation, numbers: Sequence[str],
) -> dict[str, Facts]:
    """fetch_facts_bulk and facts_from_bulk in one."""
    unique = list(dict.fromkeys(numbers))
    joined, hashes = ",".join(unique), ",".join(subject_hash(n) for n in unique)
    text = await fetch_facts_bulk(pool, organisation.id, joined, hashes)
    return facts_from_bulk(text, organisation, joined, hashes)
