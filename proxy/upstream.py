"""What every front's upstream shares: the answer as bytes, the two ways a provider can fail
to answer, one request made and classified, and the HTTP session for the dialer's own URLs.

Which failure it was decides what a front gives back (N6): `UpstreamUnreachable` means no
connection was made, so nothing reached the provider; `UpstreamTimeout` means the answer did
not arrive whole (none in time, a connection broken once the request was sent, an answer far
larger than any provider gives), so whether it went out is unknown and what it used stays used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import msgspec
import orjson
from aiohttp import web

from proxy.keys import SETTINGS

# Providers' answers to a create or a read are kilobytes; beyond this it is not an answer.
MAX_ANSWER_BYTES = 4 << 20


class UpstreamResponse(msgspec.Struct, frozen=True, gc=False):
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class UpstreamUnreachable(Exception):
    """No connection could be made (refused, no route, name or TLS failure): nothing reached
    the provider."""


class UpstreamTimeout(Exception):
    """No whole answer: none within the configured timeout, or the connection broke after
    the request may have gone out. Whether it reached the provider is unknown."""


async def read_whole(resp: aiohttp.ClientResponse) -> bytes:
    """The whole answer, up to MAX_ANSWER_BYTES (UpstreamTimeout beyond); one cut off raises
    aiohttp's ClientPayloadError."""
    parts, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UpstreamTimeout("the answer is larger than any provider gives")
        parts.append(chunk)
    return b"".join(parts)


async def exchange(session: aiohttp.ClientSession, method: str, url: str, *,
                   headers: Mapping[str, str], data: bytes | None,
                   within: aiohttp.ClientTimeout) -> UpstreamResponse:
    """One request to the provider, never retried (a retried send is a second message) and
    never redirected, its failure classified as above."""
    try:
        async with session.request(method, url, data=data, headers=headers, timeout=within,
                                   allow_redirects=False) as resp:
            raw = await read_whole(resp)
            return UpstreamResponse(resp.status, raw,
                                    resp.headers.get("Content-Type", "application/json"))
    except TimeoutError as exc:
        raise UpstreamTimeout from exc
    except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
        raise UpstreamUnreachable(type(exc).__name__) from exc
    except aiohttp.ClientError as exc:  # broken once the request may have gone out
        raise UpstreamTimeout(type(exc).__name__) from exc


def provider_session(app: web.Application) -> aiohttp.ClientSession:
    """The one pooled session a front sends to its provider through, bounded by
    upstream.timeout_seconds. Never a retrying client: a retried send is a second message or
    call."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=app[SETTINGS].rules.upstream_timeout_seconds))


def dialer_session(key: web.AppKey[aiohttp.ClientSession]
                   ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context holding, under `key`, the session a front uses for the dialer's
    own URLs (relays of webhooks and callbacks), bounded by webhooks.relay_timeout_seconds."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50),
            timeout=aiohttp.ClientTimeout(total=app[SETTINGS].rules.relay_timeout_seconds),
        ) as session:
            app[key] = session
            yield

    return context
