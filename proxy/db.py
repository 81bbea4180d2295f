"""Connection pool, embedded PostgreSQL and schema migrations."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog

from proxy.errors import BadInput, Conflict, ProxyError

log = structlog.get_logger(__name__)

# Failures that mean "the consent store cannot be reached": callers fail closed (503).
STORE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    # A server shutting down sends FATAL to idle connections; a pooled connection handed out
    # before asyncpg has seen the disconnect fails with this ("cannot switch to state …;
    # another operation (2) is in progress"), not with a connection error.
    asyncpg.exceptions.InternalClientError,
    # A connection that reached a standby (a failed-over primary rejoined as one, or a pooler
    # in front of a node that was demoted): nothing can be recorded there, so nothing goes
    # out; the pool's connections are replaced (`discard`) and the next ones look for the
    # primary again.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # Every host of a multi-host DATABASE_URL answered, none as a writable primary (the
    # standby before its promotion).
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)


def constraint_refusal(exc: asyncpg.IntegrityConstraintViolationError) -> ProxyError:
    """A write the schema refused (a CHECK, NOT NULL, foreign or unique key the handler's own
    validation did not foresee) is the request's fault: 422 naming the column or constraint,
    409 for a duplicate; never a 500. The row's values (exc.detail) are not repeated: they
    may hold a number."""
    name = exc.constraint_name or type(exc).__name__
    field = exc.column_name or exc.constraint_name
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(f"already exists (constraint {name})", field)
    return BadInput(f"refused by the database (constraint {name})", field)


# Advisory lock key: ASCII "consentp". Held by each migration's transaction, so instances can
# start at once.
MIGRATION_LOCK_KEY = 0x636F6E73656E7470
_MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """The database holds a migration history this code does not recognise."""


def sql_dir() -> Path:
    """`sql/` beside the package (source checkout or container), else in the working directory."""
    beside = Path(__file__).resolve().parent.parent / "sql"
    return beside if beside.is_dir() else Path.cwd() / "sql"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    found = []
    for path in sorted((directory or sql_dir()).glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    if not found:
        raise MigrationError(f"no migrations found in {directory or sql_dir()}")
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations in order, each in its own transaction. Returns what was applied.

    Each transaction takes the migration lock (pg_advisory_xact_lock) and reads what is
    applied under it: another instance migrating at once waits, then finds the work done. No
    lock outlives its transaction, so this holds through a transaction pooler too (PgBouncer
    runs each transaction on whichever server connection is free; a session lock taken on
    one would stay held there, and block every later start)."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    async with conn.transaction():
        applied = await _locked_history(conn, create=True)
        newer = sorted(set(applied) - {m.version for m in load_migrations()})
        if newer:
            raise MigrationError(_newer_schema(newer))
    for migration in migrations:
        if migration.version in applied:
            _check_unchanged(migration, applied)
            continue
        async with conn.transaction():
            applied = await _locked_history(conn)
            if migration.version in applied:  # another instance applied it meanwhile
                _check_unchanged(migration, applied)
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
        applied_now.append(migration.version)
        log.info("migration_applied", version=migration.version, name=migration.name)
    return applied_now


async def _locked_history(conn: asyncpg.Connection, *, create: bool = False) -> dict[int, str]:
    """Take the migration lock for this transaction; the applied migrations' checksums."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
    if create:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


def _check_unchanged(migration: Migration, applied: dict[int, str]) -> None:
    if applied[migration.version] != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:03d}_{migration.name} was changed after "
            "it was applied; add a new migration instead"
        )


def _newer_schema(versions: list[int]) -> str:
    listed = ", ".join(f"{v:03d}" for v in versions)
    return (f"the database holds migrations this consent-proxy does not know ({listed}): a "
            "newer version migrated it; run that version")


async def migration_state(conn: asyncpg.Connection) -> tuple[list[int], list[int]]:
    """(pending, unknown): migrations this code has and the database lacks, and ones the
    database holds that this code does not know (a newer version migrated it, whose schema
    this code may no longer read or write correctly)."""
    wanted = {m.version for m in load_migrations()}
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return sorted(wanted), []
    have = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return sorted(wanted - have), sorted(have - wanted)


async def pending_migrations(conn: asyncpg.Connection) -> list[int]:
    return (await migration_state(conn))[0]


async def migrate_url(database_url: str) -> list[int]:
    """Migrate through `database_url` (DATABASE_URL_DIRECT when set; DATABASE_URL, even a
    transaction pooler, works too: `migrate` keeps nothing across transactions)."""
    conn = await connect_writable(database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + json.dumps(value).encode()


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])  # binary jsonb: a version byte, then the text


def _json_encode(value: Any) -> bytes:
    return json.dumps(value).encode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary codecs: whole-row composites (the fact query) can only carry binary-format codecs.
    await conn.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode,
                              schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=_json_encode, decoder=json.loads,
                              schema="pg_catalog", format="binary")


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection set up like the pool's (JSON codecs), for the CLI and tools. Neither a
    startup setting nor named statements: through a transaction pooler (DATABASE_URL_DIRECT
    unset) PgBouncer refuses a startup parameter it does not know, and a named statement
    stays on the server connection for the next client to collide with; the CLI's
    statements, run once each, gain nothing from either."""
    conn = await connect_writable(database_url, statement_cache_size=0)
    await _init_connection(conn)
    return conn


# How long one host of a multi-host DATABASE_URL may take to connect and say it is a
# writable primary before the next is tried (`connect_timeout` in the URL overrides it).
HOST_TIMEOUT_SECONDS = 5.0
_WRITABLE = {"read-write", "primary"}
# True on a standby, or where transactions are read-only.
READ_ONLY_SQL = ("SELECT pg_catalog.pg_is_in_recovery() "
                 "OR pg_catalog.current_setting('transaction_read_only')::bool")


def split_hosts(database_url: str) -> tuple[list[str], float, bool]:
    """(one URL per host, the per-host timeout, whether only a writable primary will do) for
    a URL like postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write."""
    parts = urlsplit(database_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    attrs = dict(query).get("target_session_attrs", "any")
    timeout = float(dict(query).get("connect_timeout") or HOST_TIMEOUT_SECONDS)
    rest = urlencode([(k, v) for k, v in query if k not in {"target_session_attrs",
                                                             "connect_timeout"}])
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    urls = [urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}", query=rest))
            for host in hostlist.split(",") if host]
    return urls or [database_url], timeout, attrs in _WRITABLE


async def connect_writable(database_url: str, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect, except that with target_session_attrs=read-write (or primary) every
    host is tried in turn until one is a writable primary, whatever the others do: refuse,
    hang, answer as a standby, or answer through a connection pooler whose server is down
    (asyncpg itself moves on only when a host refuses the connection). A connection to a
    standby is never handed out, so nothing is ever written to one. Also the pool's
    `connect` (create_pool)."""
    urls, timeout, writable = split_hosts(database_url)
    if not writable:
        return await asyncpg.connect(database_url, **kwargs)
    kwargs.pop("timeout", None)
    last: BaseException | None = None
    for url in urls:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(url, timeout=timeout, **kwargs)
            if not await conn.fetchval(READ_ONLY_SQL, timeout=timeout):
                return conn
            last = asyncpg.exceptions.TargetServerAttributeNotMatched(
                "a host of DATABASE_URL is a standby or read-only")
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.exceptions.InterfaceError) as exc:
            last = exc
            log.info("database_host_unusable", host=urlsplit(url).hostname,
                     port=urlsplit(url).port, error=type(exc).__name__)
        if conn is not None:
            conn.terminate()
    log.warning("no_writable_database_host", hosts=len(urls), error=type(last).__name__)
    assert last is not None
    raise last


async def _reset(_conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool, beyond what asyncpg always
    does (drop listeners, roll back an open transaction): nothing. The proxy keeps no session
    state (no SET, LISTEN, session advisory lock or cursor outside a transaction), so the
    default reset query would cost a round trip per query for nothing."""


# Every statement is prepared (asyncpg caches them) and its parameters are keys, so one
# generic plan per statement serves every call. Left to choose, PostgreSQL plans the
# hot-path statements afresh on every call for the lengths of their arrays (store.WRITE_SQL,
# store._FACTS_SQL): measured, 250 us of server CPU for a one-lookup fact query instead of
# 65 us.
SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}


async def create_pool(database_url: str, *, statement_cache_size: int = 100,
                      **kwargs: Any) -> asyncpg.Pool:
    """The request path's pool. `statement_cache_size` 0 (DATABASE_STATEMENT_CACHE_SIZE) for
    a transaction pooler (PgBouncer pool_mode = transaction): every statement is then
    unnamed, so none is looked for on a server connection that never prepared it; and
    plan_cache_mode is not sent, as PgBouncer refuses startup parameters it does not know
    (with nothing cached there is no plan to keep anyway)."""
    settings = SERVER_SETTINGS if statement_cache_size else {}
    options: dict[str, Any] = {"min_size": 2, "max_size": 10, "command_timeout": 10,
                               "reset": _reset, "server_settings": settings,
                               "statement_cache_size": statement_cache_size,
                               "connect": connect_writable}
    options.update(kwargs)
    pool = await asyncpg.create_pool(database_url, init=_init_connection, **options)
    assert pool is not None
    return pool


async def discard(pool: asyncpg.Pool) -> None:
    """After a store error: every connection the pool holds is replaced on its next use
    (asyncpg closes a connection only when its socket closes; one to a pooler whose server
    died, or to a demoted primary, stays open and fails every query). The new ones look for
    the writable primary again (connect_writable)."""
    await pool.expire_connections()


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL whose data lives in `data_dir`; return its URL.

    The server stops when this process exits; the data stays for the next start.
    """
    from pgserver import get_server  # type: ignore[attr-defined]

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri())
