"""Where allowed requests go: Telnyx's API v2 with the upstream key, or the built-in sandbox
when no key is set. The client's own API key never leaves the proxy."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from proxy import sms

# The shared answer and failures (proxy/upstream.py), re-exported for this front.
from proxy.upstream import UpstreamResponse as UpstreamResponse
from proxy.upstream import UpstreamTimeout as UpstreamTimeout
from proxy.upstream import UpstreamUnreachable as UpstreamUnreachable
from proxy.upstream import exchange

FORWARDED_HEADERS = ("Content-Type", "Accept", "Idempotency-Key", "X-Consent-Decision-Id")
# What the front may ask for (it builds every path itself): plain segments, no escapes, no
# dot segments. Anything else is a bug: refused, never sent.
_SEGMENT = r"[A-Za-z0-9_:-]+"
CANONICAL_PATH = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


class Upstream(Protocol):
    async def send(self, method: str, path: str, *, body: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse: ...


class TelnyxUpstream:
    """The real provider, through one pooled ClientSession."""

    def __init__(self, session: aiohttp.ClientSession, base: str, api_key: str,
                 timeout: float) -> None:
        self._session = session
        self._base = base.rstrip("/")
        self._authorization = f"Bearer {api_key}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def _url(self, path: str) -> str:
        if not CANONICAL_PATH.fullmatch(path):
            raise ValueError(f"not a canonical upstream path: {path[:100]!r}")
        return f"{self._base}/{path}"

    async def send(self, method: str, path: str, *, body: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        out = {"User-Agent": "consent-proxy", "Authorization": self._authorization,
               "Accept": "application/json"}
        for name in FORWARDED_HEADERS:
            if headers and name in headers:
                out[name] = headers[name]
        return await exchange(self._session, method, self._url(path), headers=out, data=body,
                              within=self._timeout)


# --- the sandbox ------------------------------------------------------------------------------

def _error(status: int, code: str, title: str, detail: str) -> UpstreamResponse:
    body = {"errors": [{"code": code, "title": title, "detail": detail}]}
    return UpstreamResponse(status, orjson.dumps(body), "application/json")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class SandboxUpstream:
    """Answers allowed requests itself with Telnyx-shaped bodies, so the proxy works without
    a Telnyx account. Nothing is sent anywhere. Keeps the last `keep` resources for fetches;
    `sent` holds what was sent (replies to inbound messages too), newest last."""

    def __init__(self, keep: int = 10_000) -> None:
        self._resources: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._keep = keep
        self.sent: list[dict[str, Any]] = []

    async def send(self, method: str, path: str, *, body: bytes | None = None,
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        await asyncio.sleep(0)
        parts = path.split("/")
        if not CANONICAL_PATH.fullmatch(path):
            return _error(404, "10005", "Resource not found", "Not found (sandbox)")
        if method == "POST" and parts in (["messages"], ["calls"]):
            try:
                data = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                return _error(400, "10015", "Bad Request", "Invalid JSON (sandbox)")
            return self._create(parts[0], data if isinstance(data, dict) else {})
        if len(parts) >= 2 and (parts[0], parts[1]) in self._resources:
            resource = self._resources[(parts[0], parts[1])]
            if method == "GET" and len(parts) == 2:
                return UpstreamResponse(200, orjson.dumps({"data": resource}),
                                        "application/json")
            if method == "POST" and parts[0] == "calls" and parts[2:] == ["actions", "hangup"]:
                resource["is_alive"] = False
                return UpstreamResponse(200, orjson.dumps({"data": {"result": "ok"}}),
                                        "application/json")
        return _error(404, "10005", "Resource not found", "Not found (sandbox)")

    def _create(self, kind: str, data: dict[str, Any]) -> UpstreamResponse:
        now = _iso(dt.datetime.now(dt.UTC))
        if kind == "calls":
            key = f"v3:{uuid.uuid4().hex}"
            resource: dict[str, Any] = {
                "record_type": "call", "call_control_id": key, "call_leg_id": str(uuid.uuid4()),
                "call_session_id": str(uuid.uuid4()), "is_alive": True,
                "call_duration": 0}
        else:
            key = str(uuid.uuid4())
            given = data.get("text")
            text = given if isinstance(given, str) else ""
            resource = {
                "record_type": "message", "id": key, "direction": "outbound",
                "type": data.get("type") or ("MMS" if data.get("media_urls") else "SMS"),
                "from": {"phone_number": data.get("from")},
                "to": [{"phone_number": data.get("to"), "status": "queued"}],
                "text": text, "media": [{"url": u} for u in data.get("media_urls") or []],
                "parts": sms.segments(text).count or 1, "encoding": sms.segments(text).encoding,
                "messaging_profile_id": data.get("messaging_profile_id"),
                "webhook_url": data.get("webhook_url"), "errors": [],
                "received_at": now, "sent_at": None, "completed_at": None}
        self.sent.append({"kind": kind, **data})
        del self.sent[:-self._keep]
        self._resources[(kind, key)] = resource
        while len(self._resources) > self._keep:
            self._resources.popitem(last=False)
        return UpstreamResponse(200, orjson.dumps({"data": resource}), "application/json")
