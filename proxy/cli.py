"""`consent-proxy serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from aiohttp import web

from proxy import db
from proxy.app import create_app
from proxy.logging import configure_logging
from proxy.settings import ConfigError, Settings, load_settings

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
    configure_logging(settings.log_level)
    return settings


def cmd_migrate(_args: argparse.Namespace) -> int:
    settings = _with_database(_load())
    assert settings.database_url is not None
    applied = asyncio.run(db.migrate_url(settings.database_url))
    log.info("migrations_done", applied=applied)
    return 0


def cmd_serve(_args: argparse.Namespace) -> int:
    settings = _load()
    if not settings.proxy_secret:
        print("consent-proxy: configuration error: PROXY_SECRET: required (client credentials "
              "are derived from it); `make run` generates one under .data/", file=sys.stderr)
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
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=30,
        access_log=None,
        print=None,
    )
    log.info("proxy_stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consent-proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="apply migrations and run the proxy").set_defaults(
        func=cmd_serve)
    commands.add_parser("migrate", help="apply pending database migrations").set_defaults(
        func=cmd_migrate)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
