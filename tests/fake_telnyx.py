"""A stand-in for api.telnyx.com/v2: a real aiohttp app on a real port, following Telnyx's
documented request validation and response shapes (API v2, the `telnyx` SDK's params and
models), recording what it received.

It accepts `Authorization: Bearer <api_key>`, answers errors as
`{"errors": [{"code", "title", "detail", "source"?}]}` with Telnyx's codes, stores the messages
and calls it created, and can be told to fail (`fail_with`), to be slow (`hang`) or to refuse
connections (`refuse`). It is stricter than Telnyx in one way: an unknown body field is
refused (10015), so a proxy that forwards garbage fails its tests. Like a real server it acts
on the decoded path with dot segments resolved. It also signs webhooks as Telnyx does
(Ed25519 over `f"{timestamp}|{body}"`) with a key pair of its own (`public_key`, `sign`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from nacl.signing import SigningKey
from telnyx.types.call_dial_params import CallDialParams
from telnyx.types.message_send_params import MessageSendParams
from yarl import URL


def _body_fields(params: Any) -> frozenset[str]:
    """A request's JSON fields as the SDK's own params declare them (`from_` is `from`; the
    idempotency key is a header)."""
    names = set(params.__annotations__) - {"idempotency_key"}
    return frozenset("from" if name == "from_" else name for name in names)


MESSAGE_FIELDS = _body_fields(MessageSendParams)
CALL_FIELDS = _body_fields(CallDialParams)

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_TITLES = {"10004": "Missing required parameter", "10005": "Resource not found",
           "10009": "Authentication failed", "10011": "Too many requests",
           "10015": "Bad Request", "10007": "Unexpected error", "40310": "Invalid 'to' address"}


class FakeError(Exception):
    def __init__(self, status: int, code: str, detail: str, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.pointer = status, code, detail, pointer

    def response(self) -> web.Response:
        item: dict[str, Any] = {"code": self.code, "title": _TITLES.get(self.code, "Error"),
                                "detail": self.detail}
        if self.pointer:
            item["source"] = {"pointer": self.pointer}
        return web.json_response({"errors": [item]}, status=self.status)


@dataclass
class Received:
    method: str
    path: str  # decoded, dot segments resolved: what the server acted on
    raw_path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    authenticated: bool = False


@dataclass
class _Fault:
    status: int
    code: str
    remaining: int | None


@dataclass
class _Hang:
    seconds: float
    remaining: int | None


@dataclass
class FakeTelnyx:
    api_key: str
    received: list[Received] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)  # command_id → call_control_id
    signing_key: SigningKey = field(default_factory=SigningKey.generate)
    # The account's id, which Telnyx writes into every message it answers with.
    organization_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._fault: _Fault | None = None
        self._hang: _Hang | None = None

    # lifecycle

    async def __aenter__(self) -> FakeTelnyx:
        await self._listen(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close()

    async def refuse(self) -> None:
        await self._close()

    async def resume(self) -> None:
        assert self._port is not None
        await self._listen(self._port)

    @property
    def base_url(self) -> str:
        assert self._port is not None
        return f"http://127.0.0.1:{self._port}/v2"

    async def _listen(self, port: int) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # fault injection

    def fail_with(self, status: int, code: str = "10007", times: int | None = None) -> None:
        self._fault = _Fault(status, code, times)

    def hang(self, seconds: float, times: int | None = None) -> None:
        self._hang = _Hang(seconds, times)

    # inspection

    def creates(self, kind: str | None = None) -> list[Received]:
        wanted = ("/v2/messages", "/v2/calls") if kind is None else (f"/v2/{kind}",)
        return [r for r in self.received if r.method == "POST" and r.path in wanted]

    # webhooks, signed as Telnyx signs them

    @property
    def public_key(self) -> str:
        return base64.b64encode(bytes(self.signing_key.verify_key)).decode()

    def sign(self, body: bytes, timestamp: int) -> dict[str, str]:
        signed = self.signing_key.sign(str(timestamp).encode() + b"|" + body).signature
        return {"telnyx-signature-ed25519": base64.b64encode(signed).decode(),
                "telnyx-timestamp": str(timestamp), "Content-Type": "application/json"}

    # serving

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        authenticated = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        self.received.append(Received(
            request.method, URL.build(path=request.path).path, request.raw_path,
            dict(request.headers), body, parsed, authenticated))
        try:
            if (fault := self._fault) is not None:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._fault = None
                raise FakeError(fault.status, fault.code, "Injected fault")
            if not authenticated:
                raise FakeError(401, "10009", "The required authentication headers were "
                                "either invalid or not included in the request.")
            return await handler(request)
        except FakeError as exc:
            return exc.response()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = URL.build(path=request.path).path  # dot segments resolved
        body = self.received[-1].json
        if path in ("/v2/messages", "/v2/calls"):
            if request.method != "POST":
                raise FakeError(405, "10015", "Method not allowed")
            if not request.content_type.startswith("application/json") or not isinstance(
                    body, dict):
                raise FakeError(400, "10015", "The request body must be a JSON object")
            await self._sleep_if_hanging()
            return (self._message(body) if path == "/v2/messages" else self._call(body))
        parts = path.removeprefix("/v2/").split("/")
        store = {"messages": self.messages, "calls": self.calls}.get(parts[0])
        if store is not None and len(parts) >= 2 and parts[1] in store:
            if request.method == "GET" and len(parts) == 2:
                return web.json_response({"data": store[parts[1]]})
            if request.method == "POST" and parts[0] == "calls" and parts[2:] == [
                    "actions", "hangup"]:
                store[parts[1]]["is_alive"] = False
                return web.json_response({"data": {"result": "ok"}})
        raise FakeError(404, "10005", "The requested resource or URL could not be found.")

    async def _sleep_if_hanging(self) -> None:
        hang = self._hang
        if hang is None:
            return
        if hang.remaining is not None:
            hang.remaining -= 1
            if hang.remaining <= 0:
                self._hang = None
        await asyncio.sleep(hang.seconds)

    @staticmethod
    def _unknown(body: dict[str, Any], known: frozenset[str]) -> None:
        for name in body:
            if name not in known:
                raise FakeError(400, "10015", f"Unknown parameter {name}", f"/{name}")

    def _message(self, body: dict[str, Any]) -> web.Response:
        self._unknown(body, MESSAGE_FIELDS)
        to = body.get("to")
        if not to:
            raise FakeError(400, "10004", "The 'to' parameter is required", "/to")
        if not isinstance(to, str) or not _E164.fullmatch(to):
            raise FakeError(400, "40310", "The 'to' address should be a single valid number",
                            "/to")
        if not (body.get("from") or body.get("messaging_profile_id")):
            raise FakeError(400, "10004", "'from' or 'messaging_profile_id' is required",
                            "/from")
        if not (body.get("text") or body.get("media_urls")):
            raise FakeError(400, "10004", "'text' or 'media_urls' is required", "/text")
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        message_id = str(uuid.uuid4())
        data = {"record_type": "message", "id": message_id, "direction": "outbound",
                "type": body.get("type") or ("MMS" if body.get("media_urls") else "SMS"),
                "from": {"phone_number": body.get("from")},
                "to": [{"phone_number": to, "status": "queued"}], "text": body.get("text"),
                "media": [{"url": u} for u in body.get("media_urls") or []],
                "messaging_profile_id": body.get("messaging_profile_id"), "errors": [],
                "organization_id": self.organization_id,
                "webhook_url": body.get("webhook_url"), "received_at": now}
        self.messages[message_id] = data
        return web.json_response({"data": data})

    def _call(self, body: dict[str, Any]) -> web.Response:
        self._unknown(body, CALL_FIELDS)
        for name in ("connection_id", "to", "from"):
            if not body.get(name):
                raise FakeError(422, "10004", f"The '{name}' parameter is required",
                                f"/{name}")
        command = body.get("command_id")
        if isinstance(command, str) and command in self.commands:
            # "Telnyx will ignore others Dial commands with the same command_id": the first
            # call is the answer.
            return web.json_response({"data": self.calls[self.commands[command]]})
        call_id = "v3:" + uuid.uuid4().hex
        if isinstance(command, str):
            self.commands[command] = call_id
        data = {"record_type": "call", "call_control_id": call_id,
                "call_leg_id": str(uuid.uuid4()), "call_session_id": str(uuid.uuid4()),
                "is_alive": True, "call_duration": 0}
        self.calls[call_id] = data
        return web.json_response({"data": data})
