"""One import: the file is read as it streams in, each row judged by the single-record API's
parser, the good ones staged with COPY in batches, then checked and written set-based, in one
transaction: all or nothing. A file with one bad row changes nothing; a dry run changes
nothing and answers what a real run would do."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import structlog

from proxy.errors import BadInput, ProxyError
from proxy.imports.kinds import KINDS, STAGE, Kind
from proxy.imports.reader import Format, read_rows
from proxy.imports.report import MAX_LISTED_ERRORS, ImportReport, RowError
from proxy.store.events import record_event

log = structlog.get_logger(__name__)

Mode = Literal["insert", "upsert"]
BATCH_ROWS = 5_000  # rows staged per COPY: memory stays bounded whatever the file's size
# The pool's command timeout suits single requests; a million-row statement needs longer.
STATEMENT_TIMEOUT = 3600.0


def kind_of(kind: str) -> Kind:
    found = KINDS.get(kind)
    if found is None:
        raise BadInput(f"expected one of {', '.join(KINDS)}", "kind")
    return found


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
    await conn.execute(spec.stage_ddl())
    rows = 0
    parse_errors: list[RowError] = []
    parse_error_count = 0
    batch: list[tuple[Any, ...]] = []
    async for chunk in read_rows(body, fmt, spec.fields):
        for row in chunk:
            rows += 1
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
            await _copy(conn, spec, batch)
            batch = []
    if batch:
        await _copy(conn, spec, batch)
    await conn.execute(f"ANALYZE {STAGE}", timeout=STATEMENT_TIMEOUT)
    await _check(conn, spec, mode)
    counts = dict(await conn.fetch(
        f"SELECT action, count(*) FROM {STAGE} GROUP BY action", timeout=STATEMENT_TIMEOUT))
    staged_errors = [RowError(r["line"], r["error_field"], r["error_message"])
                     for r in await conn.fetch(
                         f"""SELECT line, error_field, error_message FROM {STAGE}
                             WHERE action = 'error' ORDER BY line LIMIT $1""",
                         MAX_LISTED_ERRORS, timeout=STATEMENT_TIMEOUT)]
    error_count = parse_error_count + counts.get("error", 0)
    listed = tuple(sorted(parse_errors + staged_errors, key=lambda e: e.line)
                   [:MAX_LISTED_ERRORS])
    commit = not dry_run and error_count == 0
    if commit:
        await _write(conn, spec, actor, mode, fmt, rows, counts)
    return ImportReport(
        kind=spec.name, fmt=fmt, mode=mode, dry_run=dry_run, committed=commit, rows=rows,
        inserted=counts.get("insert", 0), updated=counts.get("update", 0),
        skipped=counts.get("skip", 0), errors=listed, error_count=error_count)


async def _copy(conn: asyncpg.Connection, spec: Kind, batch: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table(STAGE, records=batch, columns=spec.copy_columns,
                                     timeout=STATEMENT_TIMEOUT)


async def _check(conn: asyncpg.Connection, spec: Kind, mode: Mode) -> None:
    """Set-based checks of the staged rows, each marking what it finds: an organisation that
    does not exist, a source_id repeated within the file, one already on file."""
    # Like the single-record API's 404 (no organisation 'x'), here that row's error.
    await conn.execute(
        f"""UPDATE {STAGE} s SET action = 'error', error_field = 'organisation',
                   error_message = 'no organisation ' || quote_literal(s.organisation_id)
            WHERE s.organisation_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM organisations o WHERE o.id = s.organisation_id)"""
        if spec.name != "subjects" else "SELECT 1", timeout=STATEMENT_TIMEOUT)
    # A key repeated within the file: a later line with the same content is skipped, with
    # other content it is an error (which line holds the record is then unclear).
    await conn.execute(
        f"""WITH firsts AS (
                SELECT DISTINCT ON (key_org, source_id) line, key_org, source_id, source_hash
                FROM {STAGE} WHERE source_id IS NOT NULL AND action <> 'error'
                ORDER BY key_org, source_id, line)
            UPDATE {STAGE} s SET
                action = CASE WHEN s.source_hash = f.source_hash THEN 'skip' ELSE 'error' END,
                error_field = CASE WHEN s.source_hash = f.source_hash THEN NULL
                                   ELSE '{spec.key_field}' END,
                error_message = CASE WHEN s.source_hash = f.source_hash THEN NULL
                    ELSE 'repeats the {spec.key_field} of line ' || f.line
                         || ' with different content' END
            FROM firsts f
            WHERE s.key_org = f.key_org AND s.source_id = f.source_id AND s.line > f.line
              AND s.action <> 'error'""", timeout=STATEMENT_TIMEOUT)
    # A key already on file: the same content is skipped; other content is an error, or,
    # with mode=upsert, replaces what is on file.
    other = "'update'" if mode == "upsert" else "'error'"
    await conn.execute(
        f"""UPDATE {STAGE} s SET target_id = {'t.id' if spec.name != 'subjects' else 'NULL'},
                action = CASE WHEN {spec.existing_hash} = s.source_hash THEN 'skip'
                              ELSE {other} END,
                error_field = CASE WHEN {spec.existing_hash} = s.source_hash THEN NULL
                                   WHEN {other} = 'error' THEN '{spec.key_field}' END,
                error_message = CASE WHEN {spec.existing_hash} = s.source_hash THEN NULL
                    WHEN {other} = 'error' THEN 'this {spec.key_field} is on file with '
                         || 'different content (mode=upsert replaces it)' END
            FROM {spec.table} t
            WHERE s.action = 'insert' AND s.source_id IS NOT NULL AND {spec.match}""",
        timeout=STATEMENT_TIMEOUT)


async def _write(conn: asyncpg.Connection, spec: Kind, actor: str, mode: Mode, fmt: Format,
                 rows: int, counts: dict[str, int]) -> None:
    if spec.has_subject:  # the subjects the rows name exist first (sql/001 foreign key)
        await conn.execute(
            f"""INSERT INTO subjects (number)
                SELECT DISTINCT subject FROM {STAGE} WHERE action IN ('insert', 'update')
                ORDER BY subject
                ON CONFLICT (number) DO NOTHING""", timeout=STATEMENT_TIMEOUT)
    await conn.execute(spec.insert_sql(), timeout=STATEMENT_TIMEOUT)
    if counts.get("update"):
        await conn.execute(spec.update_sql(), actor, timeout=STATEMENT_TIMEOUT)
    await record_event(conn, actor=actor, action="import", kind=spec.singular, record_id=None,
                       details={"format": fmt, "mode": mode, "rows": rows,
                                "inserted": counts.get("insert", 0),
                                "updated": counts.get("update", 0),
                                "skipped": counts.get("skip", 0)})
