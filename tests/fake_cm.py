"""A stand-in for CM.com's JSON gateway (`POST /v1.0/message`): a real aiohttp app on a real
port, following CM's documentation (developers.cm.com, "Business Messaging" and "Responses &
Errors - JSON") and the official SDK's request shape.

What it checks, as CM does: JSON keys in any case; a product token it knows (else 400,
errorCode 101, no messages); a `msg` array (203); per msg a `from` (301), recipients (302),
numbers that are numbers (303, "Gsm '…' is not a number."), a body with content (304), and
the message parts allowed (a text longer than one part needs maximumNumberOfMessageParts;
a UCS-2 part holds 66 characters at CM).
A faulty msg is rejected alone and the others are created, as CM's JSON gateway does; the
request's answer is 200 with errorCode 0 (all created) or 201 (not all), or 400 with 201
(none). Everything it received is kept (`requests`), for the tests to assert on.

    async with FakeCm(TOKEN) as fake:
        client = TextClient(api_key, gateway=fake.url)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from proxy import sms

PATH = "/v1.0/message"
_NUMBER = re.compile(r"(\+|00)?[1-9][0-9]{6,15}")


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]  # as sent (its own spelling of keys)

    @property
    def token(self) -> Any:
        return _fold(self.body)["messages"]["authentication"]["producttoken"]

    @property
    def msgs(self) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = self.body["messages"]["msg"]
        return msgs


@dataclass
class FakeCm:
    token: str
    requests: list[Received] = field(default_factory=list)
    _fail: tuple[int, bytes] | None = None
    _hang: float = 0.0
    _break: int | None = None
    _reject: dict[str, int] = field(default_factory=dict)  # number → messageErrorCode
    # Called with each request before it is answered (a test checks what was committed).
    on_request: Callable[[Received], Awaitable[None]] | None = None
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + PATH

    def sent(self) -> list[tuple[dict[str, Any], str]]:
        """Every (msg, number) received, in order."""
        return [(msg, to["number"]) for r in self.requests for msg in r.msgs for to in msg["to"]]

    def fail_with(self, status: int, body: dict[str, Any] | str) -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self._fail = (status, raw)

    def break_off(self, status: int) -> None:
        """Answer `status` and part of a body, then drop the connection."""
        self._break = status

    def hang(self, seconds: float) -> None:
        self._hang = seconds

    def reject(self, number: str, code: int = 303) -> None:
        """CM refuses this number (as it would an unrouteable one)."""
        self._reject[number] = code

    async def __aenter__(self) -> FakeCm:
        app = web.Application()
        app.router.add_post(PATH, self._message)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                        ) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def stop(self) -> None:
        """Stop listening: the port refuses connections."""
        assert self._site is not None
        await self._site.stop()

    async def _message(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _answer(400, "Invalid JSON", 202, [])
        received = Received(dict(request.headers), body)
        self.requests.append(received)
        if self.on_request is not None:
            await self.on_request(received)
        if self._hang:
            await asyncio.sleep(self._hang)
        if self._break is not None:
            response = web.StreamResponse(status=self._break)
            response.content_type = "application/json"
            response.content_length = 1000
            await response.prepare(request)
            await response.write(b'{"details": "Created 1 message(s)", "err')
            assert request.transport is not None
            request.transport.close()
            return response
        if self._fail is not None:
            status, data = self._fail
            return web.Response(status=status, body=data, content_type="application/json")
        data = _fold(body)
        messages = data.get("messages") if isinstance(data, dict) else None
        auth = messages.get("authentication") if isinstance(messages, dict) else None
        token = (auth.get("producttoken") if isinstance(auth, dict) else None) or \
            request.headers.get("X-CM-PRODUCTTOKEN")
        if token != self.token:
            return _answer(400, "No account found for the given authentication", 101, [])
        assert isinstance(messages, dict)
        msgs = messages.get("msg")
        if not isinstance(msgs, list) or not msgs:
            return _answer(400, "A MESSAGES node requires at least one MSG node", 203, [])
        answers = [a for msg in msgs for a in self._msg(msg)]
        created = sum(1 for a in answers if a["status"] == "Accepted")
        code = 0 if created == len(answers) else 201
        return _answer(200 if created else 400, f"Created {created} message(s)", code, answers)

    def _msg(self, given: Any) -> list[dict[str, Any]]:
        msg = _fold(given) if isinstance(given, dict) else {}
        reference = msg.get("reference")
        recipients = msg.get("to") if isinstance(msg.get("to"), list) else []
        numbers = [r.get("number") for r in recipients or [] if isinstance(r, dict)]

        def each(status: str, parts: int, details: str | None, code: int
                 ) -> list[dict[str, Any]]:
            return [{"to": n, "status": status, "reference": reference, "parts": parts,
                     "messageDetails": details, "messageErrorCode": code} for n in numbers]

        if not msg.get("from"):
            return each("Rejected", 0, "No FROM field found in a MSG node", 301)
        if not numbers:
            return [{"to": None, "status": "Rejected", "reference": reference, "parts": 0,
                     "messageDetails": "No phone numbers found", "messageErrorCode": 302}]
        body = msg.get("body")
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, str) or not content:
            return each("Rejected", 0, "A body without content was found", 304)
        parts = _parts(content)
        if parts > (msg.get("maximumnumberofmessageparts") or 1):
            return each("Rejected", 0, "The message needs more parts than allowed", 304)
        out = []
        for number in numbers:
            if not isinstance(number, str) or not _NUMBER.fullmatch(number):
                out.append({"to": number, "status": "Rejected", "reference": reference,
                            "parts": 0, "messageDetails": f"Gsm '{number}' is not a number.",
                            "messageErrorCode": 303})
            elif number in self._reject:
                out.append({"to": number, "status": "Rejected", "reference": reference,
                            "parts": 0, "messageDetails": "Message is unrouteable.",
                            "messageErrorCode": self._reject[number]})
            else:
                out.append({"to": number, "status": "Accepted", "reference": reference,
                            "parts": parts, "messageDetails": None, "messageErrorCode": 0})
        return out


def _parts(content: str) -> int:
    """CM's count: GSM-7 160 / 153 per part; UCS-2 70, and 66 per part of a longer text (CM's
    SDK documentation of `body.content`)."""
    seg = sms.segments(content)
    if seg.encoding == "GSM-7" or seg.units <= 70:
        return seg.count
    return -(-seg.units // 66)


def _fold(value: Any) -> Any:
    """Keys in lower case, as CM reads them (its JSON keys are case insensitive)."""
    if isinstance(value, dict):
        return {k.lower(): _fold(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fold(v) for v in value]
    return value


def _answer(status: int, details: str, code: int, messages: Sequence[dict[str, Any]]
            ) -> web.Response:
    return web.json_response({"details": details, "errorCode": code,
                              "messages": list(messages)}, status=status)
