"""Where allowed requests go: Twilio itself, or the built-in sandbox when no account is set.

The dialer only ever sees its own AccountSid: requests get the upstream AccountSid and
credentials swapped in, and JSON responses get the dialer's AccountSid swapped back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl

import aiohttp
from yarl import URL

from proxy import sms

# The shared answer and failures (proxy/upstream.py), re-exported for this front.
from proxy.upstream import UpstreamResponse as UpstreamResponse
from proxy.upstream import UpstreamTimeout as UpstreamTimeout
from proxy.upstream import UpstreamUnreachable as UpstreamUnreachable
from proxy.upstream import exchange

API = "/2010-04-01/Accounts"


class Upstream(Protocol):
    async def send(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse: ...

    def stream(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> StreamedResponse: ...


class StreamedResponse(Protocol):
    status: int
    content_type: str
    # Where a redirect points (Twilio may redirect a recording's media to where it is
    # stored): passed to the dialer as it came, the proxy follows no redirect itself.
    location: str | None

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


FORWARDED_HEADERS = ("Content-Type", "Accept", "I-Twilio-Idempotency-Token",
                     "X-Consent-Decision-Id")
# What the front may ask for (routes.py builds every path from its allow-list):
# plain segments, no escapes, no dot segments. Anything else is a bug: refused, never sent.
_SEGMENT = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
CANONICAL_TAIL = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


def _is_text(content_type: str) -> bool:
    return content_type.startswith(("application/json", "text/", "application/xml"))


class TwilioUpstream:
    """The real provider, through one pooled ClientSession."""

    def __init__(self, session: aiohttp.ClientSession, base: str, account_sid: str,
                 auth_token: str, timeout: float) -> None:
        self._session = session
        self._base = base.rstrip("/")
        self._sid = account_sid
        # Encoded once: the header is the same on every request.
        self._authorization = aiohttp.BasicAuth(account_sid, auth_token).encode()
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def _url(self, tail: str, query: str) -> str:
        if not CANONICAL_TAIL.fullmatch(tail):
            raise ValueError(f"not a canonical upstream path: {tail[:100]!r}")
        return f"{self._base}{API}/{self._sid}/{tail}" + (f"?{query}" if query else "")

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        out = {"User-Agent": "consent-proxy", "Authorization": self._authorization}
        for name in FORWARDED_HEADERS:
            if headers and name in headers:
                out[name] = headers[name]
        return out

    def _swap_back(self, body: bytes, client_sid: str) -> bytes:
        return body.replace(self._sid.encode(), client_sid.encode())

    async def send(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        answer = await exchange(self._session, method, self._url(tail, query),
                                headers=self._headers(headers), data=body,
                                within=self._timeout)
        if not _is_text(answer.content_type):
            return answer
        return UpstreamResponse(answer.status, self._swap_back(answer.body, client_sid),
                                answer.content_type)

    def stream(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> _TwilioStream:
        return _TwilioStream(self, method, client_sid, tail, query, body, headers)


class _TwilioStream:
    """A pass-through response read chunk by chunk (recordings can be large)."""

    def __init__(self, up: TwilioUpstream, method: str, client_sid: str, tail: str, query: str,
                 body: bytes | None, headers: Mapping[str, str] | None) -> None:
        self._up, self._client_sid = up, client_sid
        self._args = (method, up._url(tail, query))
        self._body, self._headers = body, up._headers(headers)
        self._resp: aiohttp.ClientResponse | None = None
        self.status = 0
        self.content_type = "application/octet-stream"
        self.location: str | None = None

    async def __aenter__(self) -> _TwilioStream:
        try:
            self._resp = await self._up._session.request(
                *self._args, data=self._body, headers=self._headers,
                timeout=self._up._timeout, allow_redirects=False)
        except TimeoutError as exc:
            raise UpstreamTimeout from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(type(exc).__name__) from exc
        self.status = self._resp.status
        self.content_type = self._resp.headers.get("Content-Type", self.content_type)
        if 300 <= self.status < 400:
            self.location = self._resp.headers.get("Location")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._resp is not None:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._resp is not None
        sid, client = self._up._sid.encode(), self._client_sid.encode()
        if not _is_text(self.content_type):
            async for chunk in self._resp.content.iter_chunked(1 << 16):
                yield chunk
            return
        carry = b""  # an AccountSid may straddle two chunks
        async for chunk in self._resp.content.iter_chunked(1 << 16):
            data = (carry + chunk).replace(sid, client)
            keep = len(sid) - 1
            data, carry = (data[:-keep], data[-keep:]) if len(data) > keep else (b"", data)
            if data:
                yield data
        if carry:
            yield carry.replace(sid, client)


# --- the sandbox ------------------------------------------------------------------------------

def _rfc2822(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC), usegmt=False)


def _error(status: int, code: int, message: str) -> UpstreamResponse:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return UpstreamResponse(status, json.dumps(body).encode(), "application/json")


class SandboxUpstream:
    """Answers allowed requests itself with Twilio-shaped bodies, so `make run` works without
    a Twilio account. Nothing is sent anywhere. Keeps the last `keep` resources for fetches."""

    def __init__(self, keep: int = 10_000) -> None:
        self._resources: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._keep = keep

    async def send(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        await asyncio.sleep(0)
        parts = resolve_path(tail).removesuffix(".json").split("/")
        if method == "POST" and parts in (["Calls"], ["Messages"]):
            return self._create(parts[0], client_sid, _form(body))
        if method == "GET" and len(parts) == 2 and (parts[0], parts[1]) in self._resources:
            resource = self._resources[(parts[0], parts[1])]
            if resource["account_sid"] == client_sid:
                return UpstreamResponse(200, json.dumps(resource).encode(), "application/json")
        if method == "GET" and parts in (["Calls"], ["Messages"]):
            key = parts[0].lower()
            items = [r for (kind, _), r in reversed(self._resources.items())
                     if kind == parts[0] and r["account_sid"] == client_sid]
            page = {key: items[:50], "page": 0, "page_size": 50, "start": 0,
                    "end": max(len(items[:50]) - 1, 0), "uri": f"{API}/{client_sid}/{tail}",
                    "first_page_uri": f"{API}/{client_sid}/{tail}?PageSize=50&Page=0",
                    "next_page_uri": None, "previous_page_uri": None}
            return UpstreamResponse(200, json.dumps(page).encode(), "application/json")
        return _error(404, 20404, "The requested resource was not found (sandbox)")

    def stream(
        self, method: str, client_sid: str, tail: str, *, query: str = "",
        body: bytes | None = None, headers: Mapping[str, str] | None = None,
    ) -> _SandboxStream:
        return _SandboxStream(self.send(method, client_sid, tail, query=query, body=body))

    def _create(self, kind: str, client_sid: str, form: Mapping[str, str]) -> UpstreamResponse:
        now = dt.datetime.now(dt.UTC)
        prefix = "CA" if kind == "Calls" else "SM"
        sid = prefix + secrets.token_hex(16)
        uri = f"{API}/{client_sid}/{kind}/{sid}.json"
        resource: dict[str, Any] = {
            "sid": sid, "account_sid": client_sid, "to": form.get("To"),
            "from": form.get("From"), "status": "queued", "date_created": _rfc2822(now),
            "date_updated": _rfc2822(now), "api_version": "2010-04-01", "uri": uri,
            "price": None, "price_unit": "EUR",
        }
        if kind == "Calls":
            resource.update({
                "direction": "outbound-api", "parent_call_sid": None, "phone_number_sid": None,
                "start_time": None, "end_time": None, "duration": None, "answered_by": None,
                "forwarded_from": None, "caller_name": None, "group_sid": None,
                "queue_time": "0", "trunk_sid": None, "annotation": None,
                "to_formatted": form.get("To"), "from_formatted": form.get("From"),
                "subresource_uris": {
                    name: f"{API}/{client_sid}/Calls/{sid}/{path}.json" for name, path in (
                        ("notifications", "Notifications"), ("recordings", "Recordings"),
                        ("payments", "Payments"), ("events", "Events"), ("siprec", "Siprec"),
                        ("streams", "Streams"), ("transcriptions", "Transcriptions"),
                        ("user_defined_message_subscriptions",
                         "UserDefinedMessageSubscriptions"),
                        ("user_defined_messages", "UserDefinedMessages"))},
            })
        else:
            text = form.get("Body", "")
            resource.update({
                "body": text, "num_segments": str(sms.segments(text).count or 1),
                "num_media": "0", "direction": "outbound-api",
                "messaging_service_sid": form.get("MessagingServiceSid"), "error_code": None,
                "error_message": None, "date_sent": None,
                "subresource_uris": {"media": f"{API}/{client_sid}/Messages/{sid}/Media.json"},
            })
        self._resources[(kind, sid)] = resource
        while len(self._resources) > self._keep:
            self._resources.popitem(last=False)
        return UpstreamResponse(201, json.dumps(resource).encode(), "application/json")


class _SandboxStream:
    def __init__(self, pending: Any) -> None:
        self._pending = pending
        self._response: UpstreamResponse | None = None
        self.status = 0
        self.content_type = "application/json"
        self.location: str | None = None

    async def __aenter__(self) -> _SandboxStream:
        self._response = await self._pending
        self.status, self.content_type = self._response.status, self._response.content_type
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._response is not None
        yield self._response.body


def resolve_path(tail: str) -> str:
    """The path below the account as an HTTP server acts on it: dot segments resolved
    (RFC 3986, 5.2.4), `Calls/CA…/../../Messages.json` is `Messages.json`. The sandbox does
    what a real server does, so that a path the front failed to refuse shows in the tests."""
    resolved = URL.build(scheme="http", host="sandbox", path=f"{API}/AC/{tail}").path
    return resolved.removeprefix(f"{API}/AC/") if resolved.startswith(f"{API}/AC/") else resolved


def _form(body: bytes | None) -> dict[str, str]:
    pairs: Sequence[tuple[str, str]] = parse_qsl((body or b"").decode("utf-8", "replace"),
                                                 keep_blank_values=True)
    return dict(pairs)
