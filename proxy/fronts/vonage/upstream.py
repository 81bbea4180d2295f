"""Where allowed requests go: Vonage itself, or the built-in sandbox when no account is set.

The SMS API (`VONAGE_REST_BASE`/sms/json) takes the upstream api_key and api_secret (HTTP
Basic, as the vonage SDK sends them); the Voice API (`VONAGE_API_BASE`/v1/calls) takes a JWT
signed with the upstream application's private key, minted per request by the vonage SDK's
JWT helper (`vonage_jwt.JwtClient`). The dialer's own credentials never leave the proxy.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import aiohttp
import orjson
from vonage_jwt.jwt import JwtClient

from proxy import form, sms

# The shared answer and failures (proxy/upstream.py), re-exported for this front.
from proxy.upstream import UpstreamResponse as UpstreamResponse
from proxy.upstream import UpstreamTimeout as UpstreamTimeout
from proxy.upstream import UpstreamUnreachable as UpstreamUnreachable
from proxy.upstream import exchange

# A call's uuid as Vonage writes it: the only thing the front puts into an upstream path.
CALL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Upstream(Protocol):
    async def send_sms(self, pairs: Sequence[tuple[str, str]], *,
                       decision_id: int | None = None) -> UpstreamResponse: ...

    async def call(self, method: Literal["GET", "POST", "PUT"], call_uuid: str | None,
                   body: Mapping[str, Any] | None = None, *,
                   decision_id: int | None = None) -> UpstreamResponse: ...


def call_path(call_uuid: str | None) -> str:
    if call_uuid is None:
        return "/v1/calls"
    if not CALL_UUID.fullmatch(call_uuid):
        raise ValueError("not a call uuid")  # the front checks first: a bug, never sent
    return f"/v1/calls/{call_uuid}"


# Sent upstream with every forwarded create: which committed decision let it through.
DECISION_HEADER = "X-Consent-Decision-Id"


class VonageUpstream:
    """The real provider, through one pooled ClientSession. Each channel without credentials
    is answered by `sandbox` instead."""

    def __init__(self, session: aiohttp.ClientSession, *, rest_base: str, api_base: str,
                 api_key: str | None, api_secret: str | None, application_id: str | None,
                 private_key: str | None, timeout: float, sandbox: SandboxUpstream) -> None:
        self._session = session
        self._rest, self._api = rest_base, api_base
        self._basic = (aiohttp.encode_basic_auth(api_key, api_secret)
                       if api_key and api_secret else None)
        self._jwt = (JwtClient(application_id, private_key)
                     if application_id and private_key else None)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sandbox = sandbox

    async def _request(self, method: str, url: str, headers: dict[str, str],
                       data: bytes | None) -> UpstreamResponse:
        headers = {"User-Agent": "consent-proxy", "Accept": "application/json", **headers}
        return await exchange(self._session, method, url, headers=headers, data=data,
                              within=self._timeout)

    async def send_sms(self, pairs: Sequence[tuple[str, str]], *,
                       decision_id: int | None = None) -> UpstreamResponse:
        if self._basic is None:
            return await self._sandbox.send_sms(pairs, decision_id=decision_id)
        headers = {"Authorization": self._basic,
                   "Content-Type": "application/x-www-form-urlencoded"}
        if decision_id is not None:
            headers[DECISION_HEADER] = str(decision_id)
        return await self._request("POST", f"{self._rest}/sms/json", headers,
                                   form.encode(pairs))

    async def call(self, method: Literal["GET", "POST", "PUT"], call_uuid: str | None,
                   body: Mapping[str, Any] | None = None, *,
                   decision_id: int | None = None) -> UpstreamResponse:
        if self._jwt is None:
            return await self._sandbox.call(method, call_uuid, body, decision_id=decision_id)
        token = self._jwt.generate_application_jwt()  # a fresh jti per request
        headers = {"Authorization": "Bearer " + token.decode()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if decision_id is not None:
            headers[DECISION_HEADER] = str(decision_id)
        data = orjson.dumps(body) if body is not None else None
        return await self._request(method, self._api + call_path(call_uuid), headers, data)


# --- the sandbox ------------------------------------------------------------------------------

def _json(status: int, body: Any) -> UpstreamResponse:
    return UpstreamResponse(status, orjson.dumps(body), "application/json")


class SandboxUpstream:
    """Answers allowed requests itself with Vonage-shaped bodies, so the proxy works without a
    Vonage account. Nothing is sent anywhere; what it was asked is kept (`sent`, the last
    `keep` entries) so that replies to inbound messages can be seen."""

    def __init__(self, keep: int = 10_000) -> None:
        self._calls: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.sent: list[dict[str, str]] = []
        self._keep = keep

    async def send_sms(self, pairs: Sequence[tuple[str, str]], *,
                       decision_id: int | None = None) -> UpstreamResponse:
        await asyncio.sleep(0)
        values = dict(pairs)
        self.sent.append(values)
        del self.sent[:-self._keep]
        parts = max(sms.segments(values.get("text", "")).count, 1)
        messages = [{"to": values.get("to", ""), "message-id": secrets.token_hex(8).upper(),
                     "status": "0", "remaining-balance": "10.00000000",
                     "message-price": "0.07000000", "network": "20408"}
                    for _ in range(parts)]
        return _json(200, {"message-count": str(parts), "messages": messages})

    async def call(self, method: Literal["GET", "POST", "PUT"], call_uuid: str | None,
                   body: Mapping[str, Any] | None = None, *,
                   decision_id: int | None = None) -> UpstreamResponse:
        await asyncio.sleep(0)
        if method == "POST" and call_uuid is None and body is not None:
            made = str(uuid.uuid4())
            self._calls[made] = {"uuid": made, "status": "started", "direction": "outbound",
                                 "conversation_uuid": "CON-" + str(uuid.uuid4()),
                                 "to": body.get("to", [{}])[0], "from": body.get("from")}
            while len(self._calls) > self._keep:
                self._calls.popitem(last=False)
            return _json(201, {k: self._calls[made][k] for k in
                               ("uuid", "status", "direction", "conversation_uuid")})
        found = self._calls.get(call_uuid or "")
        if found is None:
            return _json(404, {"type": "https://developer.nexmo.com/api-errors#not-found",
                               "title": "Not Found", "detail": "Call not found (sandbox)"})
        if method == "PUT":
            return UpstreamResponse(204, b"", "application/json")
        return _json(200, found)


