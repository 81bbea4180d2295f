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
    # Organisations known to exist, and those looked at for records keyed by source_id held
    # before this import (`keyed`): only rows of those can repeat a record on file.
    existing: set[str] = field(default_factory=set)
    looked_at: set[str] = field(default_factory=set)
    keyed: set[str] = field(default_factory=set)

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
    row of it is wrong. A check that cannot find anything is not run: rows of an
    organisation that held no keyed record before cannot repeat one, and an organisation
    known to exist needs no look-up."""
    await conn.execute(f"TRUNCATE {STAGE}")
    await conn.copy_records_to_table(STAGE, records=batch, columns=spec.copy_columns,
                                     timeout=STATEMENT_TIMEOUT)
    marked = 0
    orgs = spec.organisations(batch)
    if spec.organisation_key is not None:
        named = [o for o in orgs - tally.existing if o]
        if named:
            found = {r[0] for r in await conn.fetch(
                "SELECT id FROM organisations WHERE id = ANY($1::text[])", named)}
            tally.existing |= found
            if set(named) - found:  # like the single-record API's 404, that row's error
                marked += _count(await conn.execute(_ORGANISATION_CHECK))
        new = list(orgs - tally.looked_at)
        if new:  # before this import wrote any record of theirs
            tally.keyed |= {r[0] for r in await conn.fetch(spec.keyed_before_sql(), new)}
            tally.looked_at |= set(new)
    # A key repeated within the file (an earlier batch's line or this batch's): the first
    # line of each key is remembered; a later one with the same content is skipped, with
    # other content it is an error (which line holds the record would be unclear).
    keyed_rows = sum(1 for row in batch if row[2] is not None)
    first = _count(await conn.execute(
        f"""INSERT INTO {SEEN} (key_org, source_id, line, source_hash)
            SELECT key_org, source_id, line, source_hash FROM {STAGE}
            WHERE source_id IS NOT NULL AND action = 'insert' ORDER BY line
            ON CONFLICT (key_org, source_id) DO NOTHING""", timeout=STATEMENT_TIMEOUT))
    if marked or first < keyed_rows:
        marked += _count(await conn.execute(_repeats(spec), timeout=STATEMENT_TIMEOUT))
    # A key already on file before this import: the same content is skipped; other content
    # is an error, or, with mode=upsert, replaces what is on file.
    if spec.organisation_key is None or orgs & tally.keyed:
        marked += _count(await conn.execute(_on_file(spec, mode), timeout=STATEMENT_TIMEOUT))
    counts = {"insert": len(batch)} if not marked else dict(await conn.fetch(
        f"SELECT action, count(*) FROM {STAGE} GROUP BY action"))
    for action, count in counts.items():
        tally.counts[action] = tally.counts.get(action, 0) + count
    room = MAX_LISTED_ERRORS - len(tally.staged_errors)
    if counts.get("error") and room > 0:
        tally.staged_errors += [
            RowError(r["line"], r["error_field"], r["error_message"])
            for r in await conn.fetch(
                f"""SELECT line, error_field, error_message FROM {STAGE}
                    WHERE action = 'error' ORDER BY line LIMIT $1""", room)]
    if write and not tally.errors:
        await conn.execute(";\n".join(_writes(spec)), timeout=STATEMENT_TIMEOUT)
        if counts.get("update"):
            await conn.execute(spec.update_sql(), actor, timeout=STATEMENT_TIMEOUT)


def _count(status: str) -> int:
    """The rows a command touched, from its status ("UPDATE 3", "INSERT 0 5")."""
    return int(status.rsplit(" ", 1)[-1])


_ORGANISATION_CHECK = f"""
    UPDATE {STAGE} s SET action = 'error', error_field = 'organisation',
           error_message = 'no organisation ' || quote_literal(s.organisation_id)
    WHERE s.organisation_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM organisations o WHERE o.id = s.organisation_id)"""


def _repeats(spec: Kind) -> str:
    same = "s.source_hash = f.source_hash"
    return f"""
        UPDATE {STAGE} s SET
            action = CASE WHEN {same} THEN 'skip' ELSE 'error' END,
            error_field = CASE WHEN {same} THEN NULL ELSE '{spec.key_field}' END,
            error_message = CASE WHEN {same} THEN NULL
                ELSE 'repeats the {spec.key_field} of line ' || f.line
                     || ' with different content' END
        FROM {SEEN} f
        WHERE s.key_org = f.key_org AND s.source_id = f.source_id AND f.line <> s.line
          AND s.action = 'insert'"""


def _on_file(spec: Kind, mode: Mode) -> str:
    other = "'update'" if mode == "upsert" else "'error'"
    matched = f"{spec.existing_hash} = s.source_hash"
    return f"""
        UPDATE {STAGE} s SET target_id = {'t.id' if spec.name != 'subjects' else 'NULL'},
            action = CASE WHEN {matched} THEN 'skip' ELSE {other} END,
            error_field = CASE WHEN {matched} THEN NULL
                               WHEN {other} = 'error' THEN '{spec.key_field}' END,
            error_message = CASE WHEN {matched} THEN NULL
                WHEN {other} = 'error' THEN 'this {spec.key_field} is on file with '
                     || 'different content (mode=upsert replaces it)' END
        FROM {spec.table} t
        WHERE s.action = 'insert' AND s.source_id IS NOT NULL AND {spec.match}"""


def _writes(spec: Kind) -> list[str]:
    """The batch's inserts; made only when no row so far was wrong."""
    writes = []
    if spec.has_subject:  # the subjects the rows name exist first (sql/001 foreign key)
        writes.append(
            f"""INSERT INTO subjects (number)
                SELECT DISTINCT subject FROM {STAGE} WHERE action IN ('insert', 'update')
                ON CONFLICT (number) DO NOTHING""")
    writes.append(spec.insert_sql())
    return writes
