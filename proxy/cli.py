"""`consent-proxy serve | migrate | evidence | audit | prune | import | export | user |
vonage-application`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, TextIO

import structlog
import uvloop
from aiohttp import web

from proxy import audit, checkpoints, db
from proxy.app import create_app
from proxy.console.accounts import add_user
from proxy.errors import BadInput, Conflict, NotFound, ProxyError
from proxy.fronts.vonage import applications as vonage_applications
from proxy.imports import KINDS, ImportReport, export_rows, run_import
from proxy.keys import DRAINING
from proxy.logging import configure_logging
from proxy.optout_spool import OptOutSpool
from proxy.phone import InvalidNumber
from proxy.settings import ConfigError, RuleSettings, Settings, load_settings

EMBEDDED_DATA_DIR = Path(".data/postgres")
log = structlog.get_logger("proxy")


def _with_database(settings: Settings) -> Settings:
    """DATABASE_URL unset: start the embedded PostgreSQL (data in .data/postgres)."""
    if settings.database_url:
        return settings
    url = db.start_embedded(EMBEDDED_DATA_DIR)
    log.info("embedded_database_started", data_dir=str(EMBEDDED_DATA_DIR))
    return dataclasses.replace(settings, database_url=url)


def _session_url(settings: Settings) -> str:
    """The CLI's commands run on a session of their own: DATABASE_URL_DIRECT when set (a
    transaction pooler refuses the startup settings db.connect sends)."""
    url = settings.session_database_url
    assert url is not None  # _with_database has set DATABASE_URL
    return url


def _load(log_to: TextIO | None = None) -> Settings:
    """`log_to`: sys.stderr for a command whose standard output is its result."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"consent-proxy: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, log_to, once=True)
    return settings


def warn_risky_rules(rules: RuleSettings) -> None:
    """Start-up warnings for rule settings an operator switched on at its own risk."""
    if rules.published_number_basis:
        # N9: since 2021 Tw 11.7 knows no published-number basis for natural persons.
        log.warning("published_number_basis_on",
                    note="bases.published_number = true: a number published for marketing "
                         "counts as a basis for live calls, which the law does not recognise "
                         "for natural persons since 2021 (N9)")


def cmd_migrate(_args: argparse.Namespace) -> int:
    settings = _with_database(_load())
    assert settings.database_url is not None
    applied = asyncio.run(db.migrate_url(_session_url(settings)))
    log.info("migrations_done", applied=applied)
    return 0


def cmd_serve(_args: argparse.Namespace) -> int:
    settings = _load()
    warn_risky_rules(settings.rules)
    if not settings.proxy_secret:
        print("consent-proxy: configuration error: PROXY_SECRET: required (client credentials "
              "are derived from it); `make run` generates one under .data/", file=sys.stderr)
        return 2
    try:
        OptOutSpool(settings.optout_spool_dir).check()
    except ConfigError as exc:
        print(f"consent-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    settings = _with_database(settings)
    if not settings.admin_token:
        token = secrets.token_urlsafe(32)
        settings = dataclasses.replace(settings, admin_token=token)
        # Printed once, to the terminal only: tokens never go into the JSON log.
        print(f"\n  ADMIN_TOKEN was not set; generated for this run:\n\n    {token}\n",
              file=sys.stderr, flush=True)
    try:  # the fronts read and check their own provider keys as they mount
        app = create_app(settings)
    except ConfigError as exc:
        print(f"consent-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    assert settings.database_url is not None
    migrated = asyncio.run(_migrate_at_start(_session_url(settings)))
    log.info("proxy_starting", host=settings.host, port=settings.port,
             public_url=settings.public_url)
    # uvloop: the event loop asyncpg is built for; it measurably lowers the cost per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(app, settings, migrated=migrated))
    log.info("proxy_stopped")
    return 0


# While the database cannot be reached at start-up, the migrations are tried again this often.
MIGRATE_RETRY_SECONDS = 2.0


async def _migrate_at_start(url: str) -> bool:
    """Whether the migrations are done. A database that cannot be reached (a failover under
    way, the primary down) does not stop the gate: it serves, failing closed like a running
    gate (503 in the caller's protocol, /readyz 503), and migrates once it can (_serve)."""
    try:
        await db.migrate_url(url)
    except db.STORE_ERRORS as exc:
        log.warning("migrations_deferred", error=type(exc).__name__,
                    retry_in_seconds=MIGRATE_RETRY_SECONDS)
        return False
    return True


async def _migrate_when_reachable(url: str) -> None:
    while True:
        await asyncio.sleep(MIGRATE_RETRY_SECONDS)
        try:
            if await _migrate_at_start(url):
                return
        except db.MigrationError as exc:  # /readyz says so (schema_newer_than_code)
            log.error("migrations_refused", error=str(exc))
            return


async def _serve(app: web.Application, settings: Settings, *, migrated: bool = True) -> None:
    """Serve until SIGTERM or SIGINT; then drain: for PROXY_DRAIN_SECONDS /readyz answers 503
    (a balancer's health check takes the gate out) while requests are still served, each
    answer closing its connection; then the listener closes and requests under way finish
    (up to 30 s) before the pool and the group commit close."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=30)
    await runner.setup()
    migrating = None if migrated else asyncio.create_task(
        _migrate_when_reachable(_session_url(settings)))
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if settings.drain_seconds:
            app[DRAINING].set()
            log.info("proxy_draining", seconds=settings.drain_seconds)
            await asyncio.sleep(settings.drain_seconds)
    finally:
        if migrating is not None:
            migrating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await migrating
        await runner.cleanup()


def cmd_evidence(args: argparse.Namespace) -> int:
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    try:
        print(asyncio.run(audit.evidence_text(_session_url(settings), args.number,
                                              dt.datetime.now(dt.UTC))))
    except (InvalidNumber, NotFound) as exc:
        print(f"consent-proxy: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    report = asyncio.run(audit.verify(_session_url(settings), settings.proxy_secret,
                                      args.checkpoint))
    chain = report.chain
    if not chain.ok:
        print(f"audit chain BROKEN at decision id {chain.broken_id} (chain_seq "
              f"{chain.broken_seq}): {chain.why}", file=sys.stderr)
        return 1
    if report.problem:
        print(f"audit chain BROKEN: {report.problem}", file=sys.stderr)
        return 1
    note = "" if report.checkpoints else (
        " (no checkpoints: rows removed from the end could not be noticed)")
    print(f"audit chain ok: {chain.rows} decision rows verified, {report.checkpoints} "
          f"checkpoints hold{note}")
    return 0


def cmd_audit_checkpoint(_args: argparse.Namespace) -> int:
    settings = _load()
    if not settings.proxy_secret:
        print("consent-proxy: configuration error: PROXY_SECRET: required (checkpoints are "
              "signed with a key derived from it)", file=sys.stderr)
        return 2
    secret = settings.proxy_secret
    settings = _with_database(settings)
    assert settings.database_url is not None
    taken = asyncio.run(audit.checkpoint(_session_url(settings), secret,
                                         dt.datetime.now(dt.UTC)))
    if taken is None:
        print("consent-proxy: no decisions yet, nothing to checkpoint", file=sys.stderr)
        return 1
    print(json.dumps({"id": taken.id, "seq": taken.chain_seq, "hash": taken.row_hash,
                      "mac": taken.mac, "taken_at": taken.taken_at.isoformat()}))
    return 0


def _seq_hash(text: str) -> tuple[int, str]:
    try:
        return checkpoints.parse_seq_hash(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_prune(_args: argparse.Namespace) -> int:
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    result = asyncio.run(audit.prune(_session_url(settings), settings.rules.retention_months,
                                     dt.datetime.now(dt.UTC)))
    log.info("pruned", **result)
    print(json.dumps(result))
    return 0


CLI_ACTOR = "cli"  # who the registry's events name for a change made here


async def _file_chunks(stream: BinaryIO) -> AsyncIterator[bytes]:
    """A file a chunk at a time: a file of any size in bounded memory. Reads of a local
    file are short enough to make on the event loop."""
    while chunk := stream.read(1 << 16):
        yield chunk


def _format_of(path: str, given: str | None) -> Literal["csv", "ndjson"]:
    if given is not None:
        return "ndjson" if given == "ndjson" else "csv"
    return "ndjson" if path.endswith((".ndjson", ".jsonl")) else "csv"


def _statement_cache(settings: Settings) -> int:
    """DATABASE_STATEMENT_CACHE_SIZE when the command line goes through DATABASE_URL (no
    DATABASE_URL_DIRECT: it may be a transaction pooler); PostgreSQL itself caches."""
    return 100 if settings.database_url_direct else settings.statement_cache_size


async def _import(url: str, args: argparse.Namespace, stream: BinaryIO,
                  cache: int = 100) -> ImportReport:
    pool = await db.create_pool(url, min_size=1, max_size=1, statement_cache_size=cache)
    try:
        return await run_import(
            pool, kind=args.kind, body=_file_chunks(stream),
            fmt=_format_of(args.file, args.format), dry_run=args.dry_run,
            mode="upsert" if args.mode == "upsert" else "insert", actor=CLI_ACTOR,
            now=dt.datetime.now(dt.UTC))
    finally:
        await pool.close()


def cmd_import(args: argparse.Namespace) -> int:
    """Print the report as JSON; exit 1 when rows are wrong (nothing was imported), 2 when the
    file as a whole is."""
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    try:
        with contextlib.ExitStack() as files:
            stream = sys.stdin.buffer if args.file == "-" else files.enter_context(
                Path(args.file).open("rb"))
            report = asyncio.run(_import(_session_url(settings), args, stream,
                                         _statement_cache(settings)))
    except OSError as exc:
        print(f"consent-proxy: {exc}", file=sys.stderr)
        return 2
    except ProxyError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"consent-proxy: {exc.message}{where}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2))
    if args.errors is not None:
        Path(args.errors).write_text(report.errors_csv(), "utf-8")
    return 1 if report.error_count else 0


async def _export(url: str, args: argparse.Namespace, cache: int = 100) -> None:
    pool = await db.create_pool(url, min_size=1, max_size=1, statement_cache_size=cache)
    try:
        async for chunk in export_rows(pool, kind=args.kind, organisation=args.organisation,
                                       fmt="ndjson" if args.format == "ndjson" else "csv"):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    finally:
        await pool.close()


def cmd_export(args: argparse.Namespace) -> int:
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    try:
        asyncio.run(_export(_session_url(settings), args, _statement_cache(settings)))
    except ProxyError as exc:
        print(f"consent-proxy: {exc.message}", file=sys.stderr)
        return 2
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    asyncio.run(db.migrate_url(_session_url(settings)))
    try:
        generated = asyncio.run(add_user(_session_url(settings), args.name, args.role, password,
                                         only_if_none=args.if_none))
    except (BadInput, Conflict) as exc:
        print(f"consent-proxy: {exc.field or 'user'}: {exc.message}", file=sys.stderr)
        return 1
    if generated is not None:
        # Printed once, to the terminal only: passwords never go into the JSON log.
        print(f"\n  console user {args.name!r} ({args.role}) created; one-time password "
              f"(to be replaced at the first login):\n\n    {generated}\n", flush=True)
    elif not (args.if_none and password is None):
        print(f"console user {args.name!r} ({args.role}) created")
    return 0


def cmd_vonage_application(args: argparse.Namespace) -> int:
    settings = _with_database(_load(sys.stderr))
    assert settings.database_url is not None
    try:
        pem = Path(args.public_key).read_text()
    except OSError as exc:
        print(f"consent-proxy: public_key: {exc}", file=sys.stderr)
        return 1
    asyncio.run(db.migrate_url(settings.database_url))
    try:
        asyncio.run(vonage_applications.register_from_cli(
            settings.database_url, args.client_id, args.application_id, pem))
    except (BadInput, Conflict, NotFound) as exc:
        print(f"consent-proxy: {exc.field}: {exc.message}", file=sys.stderr)
        return 1
    print(f"Vonage application {args.application_id} registered for client {args.client_id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consent-proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply migrations and run the proxy").set_defaults(
        func=cmd_serve)
    commands.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=cmd_migrate)
    evidence = commands.add_parser(
        "evidence", help="print the evidence report (JSON) for a phone number")
    evidence.add_argument("number")
    evidence.set_defaults(func=cmd_evidence)
    audit_cmd = commands.add_parser("audit", help="audit the decision log")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="recompute the decision hash chain and hold the checkpoints against it")
    verify.add_argument(
        "--checkpoint", metavar="SEQ:HASH", action="append", default=[], type=_seq_hash,
        help="also hold this checkpoint against the chain (seq and hash of an "
             "audit_checkpoint log line); repeatable")
    verify.set_defaults(func=cmd_audit_verify)
    audit_sub.add_parser(
        "checkpoint", help="checkpoint the head of the decision chain (signed, logged)"
    ).set_defaults(func=cmd_audit_checkpoint)
    commands.add_parser(
        "prune", help="delete decision rows older than retention.decisions_months"
    ).set_defaults(func=cmd_prune)
    kinds = sorted(KINDS)
    imp = commands.add_parser(
        "import", help="import a CSV or NDJSON file of one kind, all or nothing")
    imp.add_argument("kind", choices=kinds)
    imp.add_argument("file", help="the file; - reads standard input")
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    imp.add_argument("--mode", choices=("insert", "upsert"), default="insert",
                     help="upsert: a known source_id with other content replaces the record")
    imp.add_argument("--format", choices=("csv", "ndjson"),
                     help="default: ndjson for .ndjson/.jsonl files, else csv")
    imp.add_argument("--errors", metavar="CSV", help="also write the row errors to this file")
    imp.set_defaults(func=cmd_import)
    exp = commands.add_parser(
        "export", help="write everything held of one kind to standard output, in the import "
                       "format")
    exp.add_argument("kind", choices=kinds)
    exp.add_argument("--organisation")
    exp.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    exp.set_defaults(func=cmd_export)
    user_cmd = commands.add_parser("user", help="console users (/console/)")
    user_sub = user_cmd.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser(
        "add", help="add a console user; prints a one-time password unless one is given")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("viewer", "officer", "admin"))
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.add_argument("--if-none", action="store_true",
                     help="only when no console user exists yet (the first administrator)")
    add.set_defaults(func=cmd_user_add)
    vapp = commands.add_parser(
        "vonage-application", help="register a client's Vonage application by its public key "
                                   "(the Voice API's JWTs are verified with it)")
    vapp.add_argument("client_id")
    vapp.add_argument("application_id")
    vapp.add_argument("public_key", help="the application's public key, a PEM file")
    vapp.set_defaults(func=cmd_vonage_application)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
