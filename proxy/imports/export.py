"""Everything held of one kind, streamed in the import format (CSV or NDJSON), so that an
export re-imports cleanly: the same columns, source_id included. What is held but no longer
in force stays out, because re-imported it would grant or block again what no longer does:
withdrawn consents, contact requests already used (N6) and lifted objections; so do
objections of an erased number (they hold only its hash). The evidence report keeps them all."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncGenerator
from typing import Any, Literal

import asyncpg

from proxy.errors import BadInput
from proxy.imports.run import kind_of
from proxy.store import cursors
from proxy.store.listing import organisation_filter

FETCH_ROWS = 2_000  # rows a server-side cursor hands over at a time: bounded memory

_WHERE = {
    "consents": "withdrawn_at IS NULL AND consumed_at IS NULL AND organisation_id = $1",
    "relationships": "organisation_id = $1",
    # without an organisation: the objections to every organisation
    "objections": "lifted_at IS NULL AND subject IS NOT NULL"
                  " AND organisation_id IS NOT DISTINCT FROM $1",
    # a subject belongs to no organisation: the subjects the organisation holds records of
    "subjects": """(EXISTS (SELECT 1 FROM consents c
                            WHERE c.subject = subjects.number AND c.organisation_id = $1)
                    OR EXISTS (SELECT 1 FROM relationships r
                               WHERE r.subject = subjects.number AND r.organisation_id = $1))""",
}
_ORDER = {"consents": "id", "relationships": "id", "objections": "id", "subjects": "number"}
# The columns of a CSV export, in order; evidence.* columns follow.
COLUMNS = {
    "consents": ("source_id", "subject", "organisation", "channel", "topics", "kind",
                 "given_at", "expires_at", "verified_at", "verification", "first_contact_by",
                 "requested_for.start", "requested_for.end", "provenance",
                 "consent_text_version", "consent_text_sha256", "collection_method",
                 "policy_url", "evidence_ref"),
    "relationships": ("source_id", "subject", "organisation", "kind", "topics", "started_at",
                      "ended_at", "provenance", "opt_out_offered"),
    "objections": ("source_id", "subject", "organisation", "channel", "received_at", "via"),
    "subjects": ("number", "kind", "published_for_marketing"),
}


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def as_import_row(kind: str, row: asyncpg.Record) -> dict[str, Any]:
    """A stored record as the single-record API's JSON object (what an import row reads as)."""
    if kind == "subjects":
        out: dict[str, Any] = {"number": row["number"], "kind": row["kind"],
                               "published_for_marketing": row["published_for_marketing"]}
    elif kind == "objections":
        out = {"source_id": row["source_id"], "subject": row["subject"],
               "organisation": row["organisation_id"], "channel": row["channel"],
               "received_at": _time(row["received_at"]), "via": row["via"]}
    elif kind == "relationships":
        out = {"source_id": row["source_id"], "subject": row["subject"],
               "organisation": row["organisation_id"], "kind": row["kind"],
               "topics": list(row["topics"]), "started_at": _time(row["started_at"]),
               "ended_at": _time(row["ended_at"]), "provenance": row["provenance"],
               "opt_out_offered": row["opt_out_offered"]}
    else:
        out = {"source_id": row["source_id"], "subject": row["subject"],
               "organisation": row["organisation_id"], "channel": row["channel"],
               "topics": list(row["topics"]), "kind": row["kind"],
               "given_at": _time(row["given_at"]), "expires_at": _time(row["expires_at"]),
               "verified_at": _time(row["verified_at"]), "verification": row["verification"],
               "first_contact_by": _time(row["first_contact_by"]),
               "requested_for": None if row["requested_start"] is None else {
                   "start": _time(row["requested_start"]),
                   "end": _time(row["requested_end"])},
               "provenance": row["provenance"],
               "consent_text_version": row["consent_text_version"],
               "consent_text_sha256": row["consent_text_sha256"],
               "collection_method": row["collection_method"],
               "policy_url": row["policy_url"], "evidence_ref": row["evidence_ref"]}
    if kind != "objections" and row["evidence"]:
        out["evidence"] = row["evidence"]
    return {k: v for k, v in out.items() if v is not None}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)  # an evidence value that is no text


def _csv_line(values: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode()


async def export_rows(pool: asyncpg.Pool, *, kind: str, organisation: str | None,
                      fmt: Literal["csv", "ndjson"]) -> AsyncGenerator[bytes, None]:
    """The export of one organisation, a chunk of bytes at a time, read through a
    server-side cursor in one snapshot (a repeatable-read transaction), so it is consistent
    however long it takes. Objections without an organisation: those to every organisation."""
    kind_of(kind)
    org = organisation_filter(organisation)
    if org is None and kind != "objections":
        raise BadInput("required: the organisation whose records to export", "organisation")
    where, order = _WHERE[kind], _ORDER[kind]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        keys: list[str] = []
        if fmt == "csv":
            if kind != "objections":
                keys = [r[0] for r in await conn.fetch(
                    f"""SELECT DISTINCT jsonb_object_keys(evidence) AS k FROM {kind}
                        WHERE {where} ORDER BY k""", org, timeout=None)]
            yield _csv_line([*COLUMNS[kind], *(f"evidence.{k}" for k in keys)])
        chunk: list[bytes] = []
        async for row in cursors.rows(
                conn, f"SELECT * FROM {kind} WHERE {where} ORDER BY {order}", org,
                batch=FETCH_ROWS):
            data = as_import_row(kind, row)
            if fmt == "ndjson":
                chunk.append(json.dumps(data, ensure_ascii=False).encode() + b"\n")
            else:
                flat = {**data, **{f"evidence.{k}": v
                                   for k, v in data.get("evidence", {}).items()}}
                if "topics" in data:
                    flat["topics"] = ";".join(data["topics"])
                window = data.get("requested_for") or {}
                flat["requested_for.start"] = window.get("start")
                flat["requested_for.end"] = window.get("end")
                chunk.append(_csv_line([_cell(flat.get(c)) for c in COLUMNS[kind]]
                                       + [_cell(flat.get(f"evidence.{k}")) for k in keys]))
            if len(chunk) >= FETCH_ROWS:
                yield b"".join(chunk)
                chunk = []
        if chunk:
            yield b"".join(chunk)
