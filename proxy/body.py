"""Request bodies read whole, within limits.body_timeout_seconds: a client that trickles its
body (a byte a second) cannot hold a connection and a handler open indefinitely. Every route
that reads a whole body reads it here: the Twilio front, the admin and check APIs, and the
Twilio webhooks."""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.errors import RequestTimeout
from proxy.keys import SETTINGS


async def read_body(request: web.Request) -> bytes:
    """The whole body (cached by aiohttp, so `request.post()` afterwards reads no more), or
    RequestTimeout (408) when it has not all arrived within the limit."""
    if request.content.is_eof():  # already all here (a small form usually is): no timer
        return await request.read()
    timeout = request.app[SETTINGS].rules.body_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} seconds "
                             "(limits.body_timeout_seconds)") from exc
