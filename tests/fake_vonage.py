"""A fake Vonage (rest.nexmo.com's SMS API and api.nexmo.com's Voice API) on 127.0.0.1 and a
free port, plain HTTP (the proxy's upstream bases are configurable).

As strict as Vonage: the SMS API takes the account's api_key/api_secret (HTTP Basic or in the
body), answers every outcome with HTTP 200 and a per-part `status`, splits a long text into
parts (each listed with its own message-id) and wants international numbers without `+`; the
Voice API takes only an RS256 JWT signed by the application's private key with its
`application_id`, `iat`, `exp` and `jti`, validates the body as Vonage documents it, and
answers errors in its problem shape. Every request is recorded in `received`; it can be told
to fail (`fail_with`, `sms_status`), to be slow (`hang`) or to refuse connections (`refuse`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import jwt
from aiohttp import web
from yarl import URL

from proxy import sms

FORM = "application/x-www-form-urlencoded"
_NUMBER = "0123456789"


@dataclass
class Received:
    method: str
    path: str  # decoded, dot segments resolved (what a real server acts on)
    raw_path: str
    headers: dict[str, str]
    body: bytes
    form: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    authenticated: bool = False

    def value(self, name: str) -> str | None:
        return next((v for k, v in self.form if k == name), None)


def _problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    kind = f"https://developer.nexmo.com/api-errors#{title.lower().replace(' ', '-')}"
    body = {"type": kind, "title": title, "detail": detail,
            "instance": str(uuid.uuid4()), **extra}
    return web.json_response(body, status=status)


def _sms_error(status: int, text: str) -> web.Response:
    return web.json_response({"message-count": "1",
                              "messages": [{"status": str(status), "error-text": text}]})


class FakeVonage:
    def __init__(self, api_key: str, api_secret: str, application_id: str,
                 public_key_pem: str) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.application_id, self.public_key = application_id, public_key_pem
        self.received: list[Received] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._fault: tuple[int, int | None] | None = None  # (HTTP status, times)
        self._sms_status: int | None = None
        self._hang: float | None = None
        self._jtis: set[str] = set()

    async def __aenter__(self) -> FakeVonage:
        await self._listen(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close()

    async def refuse(self) -> None:
        await self._close()

    @property
    def base_url(self) -> str:
        assert self._port is not None
        return f"http://127.0.0.1:{self._port}"

    async def _listen(self, port: int) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                               shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runner, self._port = runner, int(runner.addresses[0][1])

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # faults

    def fail_with(self, status: int) -> None:
        """Answer every request with this HTTP status (Vonage's problem shape)."""
        self._fault = (status, None)

    def sms_status(self, status: int) -> None:
        """Answer SMS sends with HTTP 200 and this per-message status (e.g. 1 throttled)."""
        self._sms_status = status

    def hang(self, seconds: float) -> None:
        self._hang = seconds

    # inspection

    def sms(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST" and r.path == "/sms/json"]

    def call_creates(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST" and r.path == "/v1/calls"]

    # handling

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        body = await request.read()
        path = URL.build(path=request.path).path  # dot segments resolved, as a server does
        received = Received(request.method, path, request.raw_path, dict(request.headers),
                            body)
        if request.content_type == FORM:
            received.form = parse_qsl(body.decode(), keep_blank_values=True)
        elif request.content_type == "application/json" and body:
            received.json = json.loads(body)
        self.received.append(received)
        if self._hang is not None:
            await asyncio.sleep(self._hang)
        if self._fault is not None:
            status = self._fault[0]
            return _problem(status, "Error", "fault injected")
        return await handler(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received = self.received[-1]
        if received.path == "/sms/json" and request.method == "POST":
            return self._send_sms(request, received)
        if received.path == "/v1/calls" and request.method == "POST":
            return self._create_call(request, received)
        if received.path.startswith("/v1/calls/") and request.method in ("GET", "PUT"):
            return self._call(request, received)
        return _problem(404, "Not Found", "The requested resource does not exist")

    def _sms_credentials(self, request: web.Request, form: dict[str, str]) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
        else:
            key, secret = form.get("api_key", ""), form.get("api_secret", "")
        return secrets.compare_digest(key, self.api_key) and secrets.compare_digest(
            secret, self.api_secret)

    def _send_sms(self, request: web.Request, received: Received) -> web.Response:
        form = dict(received.form) if received.form else (
            {k: str(v) for k, v in received.json.items()} if isinstance(received.json, dict)
            else {})
        received.authenticated = self._sms_credentials(request, form)
        if not received.authenticated:
            return _sms_error(4, "Bad Credentials")
        for name in ("from", "to", "text"):
            if not form.get(name):
                return _sms_error(2, f"Missing {name} param")
        to = form["to"]
        if not (to.isascii() and to.isdigit() and 7 <= len(to) <= 15 and to[0] != "0"):
            return _sms_error(3, "Invalid to address")
        if self._sms_status is not None:
            return _sms_error(self._sms_status, "Throttled" if self._sms_status == 1 else
                              "Error")
        parts = max(sms.segments(form["text"]).count, 1)
        messages = [{"to": to, "message-id": secrets.token_hex(8).upper(), "status": "0",
                     "remaining-balance": "3.14159265", "message-price": "0.03330000",
                     "network": "20408", **({"client-ref": form["client-ref"]}
                                            if "client-ref" in form else {})}
                    for _ in range(parts)]
        return web.json_response({"message-count": str(parts), "messages": messages})

    def _jwt_ok(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return False
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"],
                                options={"require": ["exp", "iat", "jti"]})
        except jwt.PyJWTError:
            return False
        if claims.get("application_id") != self.application_id or claims["jti"] in self._jtis:
            return False
        self._jtis.add(claims["jti"])
        return True

    def _create_call(self, request: web.Request, received: Received) -> web.Response:
        received.authenticated = self._jwt_ok(request)
        if not received.authenticated:
            return _problem(401, "Unauthorized", "You did not provide correct credentials.")
        body = received.json
        invalid = []
        if not isinstance(body, dict):
            return _problem(400, "Bad Request", "Invalid JSON body")
        if not isinstance(body.get("to"), list) or not body["to"]:
            invalid.append({"name": "to", "reason": "is required"})
        if ("ncco" in body) == ("answer_url" in body):
            invalid.append({"name": "ncco", "reason": "exactly one of ncco and answer_url"})
        if "from" not in body and not body.get("random_from_number"):
            invalid.append({"name": "from", "reason": "is required"})
        for endpoint in body.get("to") or []:
            number = endpoint.get("number", "") if isinstance(endpoint, dict) else ""
            if endpoint.get("type") == "phone" and not (number.isdigit() and number[0] != "0"):
                invalid.append({"name": "to.number", "reason": "must be E.164 without +"})
        if invalid:
            return _problem(400, "Bad Request", "The request failed due to validation errors",
                            invalid_parameters=invalid)
        call_uuid = str(uuid.uuid4())
        self.calls[call_uuid] = {
            "uuid": call_uuid, "conversation_uuid": "CON-" + str(uuid.uuid4()),
            "to": body["to"][0], "from": body.get("from"), "status": "started",
            "direction": "outbound", "rate": "0.01000000", "price": "0.00",
            "duration": "0", "network": "20408",
            "_links": {"self": {"href": f"/v1/calls/{call_uuid}"}}}
        return web.json_response({k: self.calls[call_uuid][k] for k in
                                  ("uuid", "status", "direction", "conversation_uuid")},
                                 status=201)

    def _call(self, request: web.Request, received: Received) -> web.Response:
        received.authenticated = self._jwt_ok(request)
        if not received.authenticated:
            return _problem(401, "Unauthorized", "You did not provide correct credentials.")
        found = self.calls.get(received.path.removeprefix("/v1/calls/"))
        if found is None:
            return _problem(404, "Not Found", "Call not found")
        if request.method == "PUT":
            action = (received.json or {}).get("action")
            if action == "hangup":
                found["status"] = "completed"
            return web.Response(status=204)
        return web.json_response(found)
