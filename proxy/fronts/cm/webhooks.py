"""CM's inbound-message (MO) webhook: STOP/START/HELP (N11, N12)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    return None
