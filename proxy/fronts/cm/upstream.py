"""Where allowed messages go: CM's gateway, or the built-in sandbox when no product token is
set. Both take the JSON body the front built (the upstream product token already in it) and
answer in CM's shape."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

import aiohttp
import orjson

from proxy.fronts.cm.request import parts as cm_parts

# The shared answer and failures (proxy/upstream.py), re-exported for this front.
from proxy.upstream import UpstreamResponse as UpstreamResponse
from proxy.upstream import UpstreamTimeout as UpstreamTimeout
from proxy.upstream import UpstreamUnreachable as UpstreamUnreachable

# CM's answer names each recipient in about 200 bytes; a request has at most 1,000.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class Upstream(Protocol):
    def payload(self, msgs: list[dict[str, Any]]) -> dict[str, Any]: ...

    async def send(self, payload: dict[str, Any]) -> UpstreamResponse: ...


class CmUpstream:
    """CM's gateway, through one pooled ClientSession. Sends are never retried: a retried
    send is a second message."""

    def __init__(self, session: aiohttp.ClientSession, url: str, product_token: str,
                 timeout: float) -> None:
        self._session, self._url, self._token = session, url, product_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def payload(self, msgs: list[dict[str, Any]]) -> dict[str, Any]:
        # The upstream token, never the client's: the body is built anew.
        return {"messages": {"authentication": {"producttoken": self._token}, "msg": msgs}}

    async def send(self, payload: dict[str, Any]) -> UpstreamResponse:
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Accept": "application/json", "User-Agent": "consent-proxy"}
        try:
            async with self._session.post(self._url, data=orjson.dumps(payload),
                                          headers=headers, timeout=self._timeout,
                                          allow_redirects=False) as resp:
                raw = await _read(resp)
                return UpstreamResponse(resp.status, raw,
                                        resp.headers.get("Content-Type", "application/json"))
        except TimeoutError as exc:
            raise UpstreamTimeout from exc
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
            raise UpstreamUnreachable(type(exc).__name__) from exc
        except aiohttp.ClientError as exc:  # broken once the request may have gone out
            raise UpstreamTimeout(type(exc).__name__) from exc


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    """CM's answer, or b"" when it broke off or is larger than any answer CM gives: CM has
    answered (its status stands), but no longer says what became of each message. Never
    "unreachable": that would claim nothing was sent (N6)."""
    raw = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(64 * 1024):
            raw += chunk
            if len(raw) > MAX_ANSWER_BYTES:
                return b""
    except (aiohttp.ClientError, TimeoutError):
        return b""
    return bytes(raw)


class SandboxUpstream:
    """Answers allowed messages itself, as CM's gateway would accept them, so `make run` works
    without a CM account. Nothing is sent anywhere; the last `keep` messages are kept
    (`sent`), replies to inbound STOP/HELP messages included."""

    TOKEN = "00000000-0000-0000-0000-000000000000"  # noqa: S105 (nothing is sent)

    def __init__(self, keep: int = 10_000) -> None:
        self.sent: deque[dict[str, Any]] = deque(maxlen=keep)

    def payload(self, msgs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"messages": {"authentication": {"producttoken": self.TOKEN}, "msg": msgs}}

    async def send(self, payload: dict[str, Any]) -> UpstreamResponse:
        await asyncio.sleep(0)
        answers = []
        for msg in payload["messages"]["msg"]:
            parts = cm_parts(msg["body"]["content"]).count or 1
            for recipient in msg["to"]:
                self.sent.append({"from": msg["from"], "to": recipient["number"],
                                  "body": msg["body"]["content"],
                                  "reference": msg.get("reference")})
                answers.append({"to": recipient["number"], "status": "Accepted",
                                "reference": msg.get("reference"), "parts": parts,
                                "messageDetails": None, "messageErrorCode": 0})
        body = {"details": f"Created {len(answers)} message(s)", "errorCode": 0,
                "messages": answers}
        return UpstreamResponse(200, orjson.dumps(body), "application/json; charset=utf-8")
