"""`consent-proxy serve | migrate | evidence | audit | prune | user`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
import uvloop
from aiohttp import web

from proxy import audit, checkpoints, db
from proxy.app import create_app
from proxy.console.accounts import add_user
from proxy.errors import BadInput, Conflict, NotFound
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


def _load() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"consent-proxy: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    configure_logging(settings.log_level, once=True)
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
    applied = asyncio.run(db.migrate_url(settings.database_url))
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
    assert settings.database_url is not None
    asyncio.run(db.migrate_url(settings.database_url))
    if settings.sandbox:
        log.warning("sandbox_upstream_active",
                    note="no TWILIO_ACCOUNT_SID: allowed requests are answered by the built-in "
                         "sandbox, nothing reaches Twilio")
    log.info("proxy_starting", host=settings.host, port=settings.port,
             public_url=settings.public_url)
    # uvloop: the event loop asyncpg is built for; it measurably lowers the cost per request.
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    log.info("proxy_stopped")
    return 0


def cmd_evidence(args: argparse.Namespace) -> int:
    settings = _with_database(_load())
    assert settings.database_url is not None
    try:
        print(asyncio.run(audit.evidence_text(settings.database_url, args.number,
                                              dt.datetime.now(dt.UTC))))
    except (InvalidNumber, NotFound) as exc:
        print(f"consent-proxy: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _with_database(_load())
    assert settings.database_url is not None
    report = asyncio.run(audit.verify(settings.database_url, settings.proxy_secret,
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
    taken = asyncio.run(audit.checkpoint(settings.database_url, secret,
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
    settings = _with_database(_load())
    assert settings.database_url is not None
    result = asyncio.run(audit.prune(settings.database_url, settings.rules.retention_months,
                                     dt.datetime.now(dt.UTC)))
    log.info("pruned", **result)
    print(json.dumps(result))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    settings = _with_database(_load())
    assert settings.database_url is not None
    asyncio.run(db.migrate_url(settings.database_url))
    try:
        generated = asyncio.run(add_user(settings.database_url, args.name, args.role, password,
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
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
