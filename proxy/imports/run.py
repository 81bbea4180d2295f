"""One import: the file is read as it streams in, each row judged by the single-record API's
parser, and written batch by batch (staged with COPY, checked and written set-based, never a
query per row) inside one transaction: all or nothing. While PostgreSQL writes one batch the
next is parsed. A file with one bad row changes nothing (the transaction is rolled back); a
dry run changes nothing and answers what a real run would do."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import structlog

from proxy.errors import BadInput, ProxyError
from proxy.imports.kinds import KINDS, SEEN, STAGE, Kind
from proxy.imports.reader import Format, read_rows
from proxy.imports.report import MAX_LISTED_ERRORS, ImportReport, RowError
from proxy.store.events import record_event

log = structlog.get_logger(__name__)

Mode = Literal["insert", "upsert"]
BATCH_ROWS = 10_000  # rows staged and written at a time: memory stays bounded
YIELD_ROWS = 500  # rows parsed between two turns of the event loop
# The pool's command timeout suits single requests; a batch of an import may take longer.
STATEMENT_TIMEOUT = 600.0


def kind_of(kind: str) -> Kind:
    found = KINDS.get(kind)
    if found is None:
        raise BadInput(f"expected one of {', '.join(KINDS)}", "kind")
    return found


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    staged_errors: list[RowError] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.counts.get("error", 0)


async def run_import(pool: asyncpg.Pool, *, kind: str, body: AsyncIterator[bytes],
                     fmt: Literal["csv", "ndjson"], dry_run: bool,
                     mode: Literal["insert", "upsert"], actor: str,
                     now: dt.datetime) -> ImportReport:
    """Import a file of one kind. Raises BadInput for a problem with the file as a whole;
    rows that are wrong are listed in the report, and then nothing is written."""
    spec = kind_of(kind)
    if mode not in ("insert", "upsert"):
        raise BadInput("expected insert or upsert", "mode")
    if fmt not in ("csv", "ndjson"):
        raise BadInput("expected csv or ndjson", "format")
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            report = await _run(conn, spec, body, fmt, dry_run, mode, actor, now)
        except BaseException:
            await tx.rollback()
            raise
        if report.committed:
            await tx.commit()
        else:
            await tx.rollback()
    log.info("import_done", kind=kind, format=fmt, mode=mode, dry_run=dry_run,
             committed=report.committed, rows=report.rows, inserted=report.inserted,
             updated=report.updated, skipped=report.skipped, errors=report.error_count)
    return report


async def _run(conn: asyncpg.Connection, spec: Kind, body: AsyncIterator[bytes], fmt: Format,
               dry_run: bool, mode: Mode, actor: str, now: dt.datetime) -> ImportReport:
    for ddl in spec.stage_ddl():
        await conn.execute(ddl)
    tally = _Tally()
    rows = parse_error_count = 0
    parse_errors: list[RowError] = []
    batch: list[tuple[Any, ...]] = []
    writing: asyncio.Task[None] | None = None

    async def flush() -> None:
        nonlocal writing, batch
        if writing is not None:
            await writing
        # Nothing is written once a row is wrong (it would all be rolled back): the rest of
        # the file is only checked, as in a dry run.
        write = not dry_run and parse_error_count == 0 and tally.errors == 0
        writing = asyncio.create_task(_batch(conn, spec, batch, mode, actor, write, tally))
        batch = []

    try:
        async for chunk in read_rows(body, fmt, spec.fields):
            for row in chunk:
                rows += 1
                if not rows % YIELD_ROWS:
                    await asyncio.sleep(0)  # let the batch being written go on meanwhile
                error = row.error
                if error is None:
                    try:
                        batch.append(spec.staged(spec.parse(row.data, now), row.line))
                        continue
                    except ProxyError as exc:
                        error = exc
                parse_error_count += 1
                if len(parse_errors) < MAX_LISTED_ERRORS:
                    parse_errors.append(RowError(row.line, error.field, error.message))
            if len(batch) >= BATCH_ROWS:
                await flush()
        if batch:
            await flush()
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
    error_count = parse_error_count + tally.errors
    listed = tuple(sorted(parse_errors + tally.staged_errors, key=lambda e: e.line)
                   [:MAX_LISTED_ERRORS])
    commit = not dry_run and error_count == 0
    counts = tally.counts
    if commit:
        await record_event(conn, actor=actor, action="import", kind=spec.singular,
                           record_id=None,
                           details={"format": fmt, "mode": mode, "rows": rows,
                                    "inserted": counts.get("insert", 0),
                                    "updated": counts.get("update", 0),
                                    "skipped": counts.get("skip", 0)})
    return ImportReport(
        kind=spec.name, fmt=fmt, mode=mode, dry_run=dry_run, committed=commit, rows=rows,
        inserted=counts.get("insert", 0), updated=counts.get("update", 0),
        skipped=counts.get("skip", 0), errors=listed, error_count=error_count)


async def _batch(conn: asyncpg.Connection, spec: Kind, batch: list[tuple[Any, ...]],
                 mode: Mode, actor: str, write: bool, tally: _Tally) -> None:
    """Stage one batch, mark what each row will do, count, and (`write`) write it unless a
    row of it is wrong. The checks and writes go as one round trip: their statements carry
    no values, only names from kinds.py."""
    await conn.execute(f"TRUNCATE {STAGE}")
    await conn.copy_records_to_table(STAGE, records=batch, columns=spec.copy_columns,
                                     timeout=STATEMENT_TIMEOUT)
    await conn.execute(";\n".join(_checks(spec, mode) + (_writes(spec) if write else [])),
                       timeout=STATEMENT_TIMEOUT)
    counts = dict(await conn.fetch(f"SELECT action, count(*) FROM {STAGE} GROUP BY action"))
    for action, count in counts.items():
        tally.counts[action] = tally.counts.get(action, 0) + count
    room = MAX_LISTED_ERRORS - len(tally.staged_errors)
    if counts.get("error") and room > 0:
        tally.staged_errors += [
            RowError(r["line"], r["error_field"], r["error_message"])
            for r in await conn.fetch(
                f"""SELECT line, error_field, error_message FROM {STAGE}
                    WHERE action = 'error' ORDER BY line LIMIT $1""", room)]
    if write and counts.get("update") and not tally.errors:
        await conn.execute(spec.update_sql(), actor, timeout=STATEMENT_TIMEOUT)


def _checks(spec: Kind, mode: Mode) -> list[str]:
    """Set-based checks of a staged batch, each marking what it finds: an organisation that
    does not exist, a key repeated within the file, one already on file."""
    checks = []
    if spec.name != "subjects":
        # Like the single-record API's 404 (no organisation 'x'), here that row's error.
        checks.append(
            f"""UPDATE {STAGE} s SET action = 'error', error_field = 'organisation',
                       error_message = 'no organisation ' || quote_literal(s.organisation_id)
                WHERE s.organisation_id IS NOT NULL AND NOT EXISTS (
                    SELECT 1 FROM organisations o WHERE o.id = s.organisation_id)""")
    # A key repeated within the file (an earlier batch's line, or this batch's): the same
    # content is skipped, other content is an error (which line holds the record is unclear).
    same = "s.source_hash = f.source_hash"
    repeat = f"""action = CASE WHEN {same} THEN 'skip' ELSE 'error' END,
                 error_field = CASE WHEN {same} THEN NULL ELSE '{spec.key_field}' END,
                 error_message = CASE WHEN {same} THEN NULL
                     ELSE 'repeats the {spec.key_field} of line ' || f.line
                          || ' with different content' END"""
    checks.append(
        f"""UPDATE {STAGE} s SET {repeat} FROM {SEEN} f
            WHERE s.key_org = f.key_org AND s.source_id = f.source_id
              AND s.action = 'insert'""")
    checks.append(
        f"""WITH f AS (
                SELECT DISTINCT ON (key_org, source_id) line, key_org, source_id, source_hash
                FROM {STAGE} WHERE source_id IS NOT NULL AND action = 'insert'
                ORDER BY key_org, source_id, line)
            UPDATE {STAGE} s SET {repeat} FROM f
            WHERE s.key_org = f.key_org AND s.source_id = f.source_id AND s.line > f.line
              AND s.action = 'insert'""")
    checks.append(
        f"""INSERT INTO {SEEN} (key_org, source_id, line, source_hash)
            SELECT key_org, source_id, line, source_hash FROM {STAGE}
            WHERE source_id IS NOT NULL AND action = 'insert'""")
    # A key already on file (before this import): the same content is skipped; other
    # content is an error, or, with mode=upsert, replaces what is on file.
    other = "'update'" if mode == "upsert" else "'error'"
    matched = f"{spec.existing_hash} = s.source_hash"
    checks.append(
        f"""UPDATE {STAGE} s SET target_id = {'t.id' if spec.name != 'subjects' else 'NULL'},
                action = CASE WHEN {matched} THEN 'skip' ELSE {other} END,
                error_field = CASE WHEN {matched} THEN NULL
                                   WHEN {other} = 'error' THEN '{spec.key_field}' END,
                error_message = CASE WHEN {matched} THEN NULL
                    WHEN {other} = 'error' THEN 'this {spec.key_field} is on file with '
                         || 'different content (mode=upsert replaces it)' END
            FROM {spec.table} t
            WHERE s.action = 'insert' AND s.source_id IS NOT NULL AND {spec.match}""")
    return checks


def _writes(spec: Kind) -> list[str]:
    """The batch's inserts, made only when none of its rows is wrong."""
    clean = f"NOT EXISTS (SELECT 1 FROM {STAGE} WHERE action = 'error')"
    writes = []
    if spec.has_subject:  # the subjects the rows name exist first (sql/001 foreign key)
        writes.append(
            f"""INSERT INTO subjects (number)
                SELECT DISTINCT subject FROM {STAGE}
                WHERE action IN ('insert', 'update') AND {clean}
                ON CONFLICT (number) DO NOTHING""")
    writes.append(spec.insert_sql() + f" AND {clean}")
    return writes
