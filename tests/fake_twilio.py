"""A stand-in for api.twilio.com: a real aiohttp app on a real port, shaped by Twilio's spec.

Request fields, required fields and 201 bodies come from the public twilio-oai OpenAPI spec
(`shared/reference/twilio/twilio_api_v2010.json`); the error shape and codes, which the spec does
not describe, follow Twilio's documentation (`shared/reference/twilio.md`). The fake is deliberately
stricter than Twilio in one way: an unknown form field is refused (code 20001), so a proxy that
forwards garbage upstream fails its tests.

    async with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.api.base_url = fake.base_url
        ...
        assert fake.creates()[0].values("MediaUrl") == ["https://a", "https://b"]
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import datetime as dt
import email.utils
import functools
import http
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDict
from twilio.request_validator import RequestValidator
from yarl import URL

# The call and message part of Twilio's OpenAPI document (MIT), shipped with the tests;
# tests/twilio/extract_subset.py regenerates it from the full document.
SPEC_PATH = Path(__file__).resolve().parent / "twilio" / "twilio_api_v2010_subset.json"

ACCOUNT = "/2010-04-01/Accounts/{AccountSid}"
CALLS = ACCOUNT + "/Calls.json"
CALL = ACCOUNT + "/Calls/{Sid}.json"
MESSAGES = ACCOUNT + "/Messages.json"
MESSAGE = ACCOUNT + "/Messages/{Sid}.json"
RECORDINGS = ACCOUNT + "/Recordings.json"
RECORDING = ACCOUNT + "/Recordings/{Sid}.json"
CALL_RECORDINGS = ACCOUNT + "/Calls/{CallSid}/Recordings.json"
CALL_RECORDING = ACCOUNT + "/Calls/{CallSid}/Recordings/{Sid}.json"
# A recording's media: the recording's path with .mp3 or .wav (Twilio's docs; not in the spec).
RECORDING_MEDIA = {"mp3": "audio/mpeg", "wav": "audio/x-wav"}

CALL_SCHEMA = "api.v2010.account.call"
MESSAGE_SCHEMA = "api.v2010.account.message"
RECORDING_SCHEMA = "api.v2010.account.recording"

FORM = "application/x-www-form-urlencoded"
MAX_BODY = 1600  # Twilio refuses longer bodies with 21617
DEFAULT_PAGE_SIZE = 50

_CREATE_PATH = re.compile(r"/2010-04-01/Accounts/[^/]+/(Calls|Messages)\.json")

# Twilio's codes for a missing required field; the spec only lists which fields are required.
_MISSING: dict[tuple[str, str], tuple[int, str]] = {
    (CALLS, "To"): (21201, "No 'To' number is specified"),
    (CALLS, "From"): (21213, "No 'From' number is specified"),
    (MESSAGES, "To"): (21604, "A 'To' phone number is required."),
}
# "One of these" rules the spec cannot express (twilio.md, Create endpoints).
_ONE_OF: dict[str, tuple[tuple[tuple[str, ...], int, str], ...]] = {
    CALLS: ((("Url", "Twiml", "ApplicationSid"), 21205, "Url parameter is required."),),
    MESSAGES: (
        (("From", "MessagingServiceSid"), 21603, "A 'From' phone number is required."),
        (
            ("Body", "MediaUrl", "ContentSid"),
            21619,
            "A text message body or media URL must be specified.",
        ),
    ),
}
# Codes for fault injection and for HTTP-level errors when the caller names none.
_STATUS_CODES = {401: 20003, 403: 20403, 404: 20404, 405: 20004, 429: 20429, 500: 20500, 503: 20503}

# GSM 03.38: the basic set costs one septet, the extension set two (escape + char).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

JSONObject = dict[str, Any]
Clock = Callable[[], dt.datetime]


# --- the spec -------------------------------------------------------------------------------


def read_spec(path: Path) -> JSONObject:
    """Read the OpenAPI document, failing with a message that says where it was expected."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Twilio OpenAPI spec not found at {path}; regenerate it with "
            "tests/twilio/extract_subset.py from Twilio's full twilio_api_v2010.json."
        )
    spec: JSONObject = json.loads(path.read_text(encoding="utf-8"))
    return spec


@functools.cache
def load_spec() -> JSONObject:
    """The spec, read once per process."""
    return read_spec(SPEC_PATH)


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    target: Mapping[str, Any] = load_spec()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


@dataclass(frozen=True)
class FieldSpec:
    """One request form field as the spec describes it."""

    name: str
    type: str | None
    is_array: bool
    enum: frozenset[str] | None  # lower-cased
    pattern: re.Pattern[str] | None

    def check(self, value: str) -> None:
        """Raise TwilioError(400, 20001) when a non-empty value breaks the spec's constraints."""
        if value == "":
            return
        ok = True
        if self.type == "integer":
            ok = re.fullmatch(r"-?\d+", value) is not None
        elif self.type == "number":
            ok = re.fullmatch(r"-?\d+(\.\d+)?", value) is not None
        elif self.type == "boolean":
            ok = value.lower() in ("true", "false")
        if ok and self.enum is not None:
            ok = value.lower() in self.enum
        if ok and self.pattern is not None:
            ok = self.pattern.fullmatch(value) is not None
        if not ok:
            raise TwilioError(400, 20001, f"Invalid value for parameter {self.name}: {value!r}")

    @classmethod
    def from_schema(cls, name: str, schema: Mapping[str, Any]) -> FieldSpec:
        schema = _resolve(schema)
        is_array = schema.get("type") == "array"
        if is_array:
            schema = _resolve(schema.get("items", {}))
        enum = schema.get("enum")
        pattern = schema.get("pattern")
        return cls(
            name=name,
            type=schema.get("type"),
            is_array=is_array,
            enum=frozenset(str(v).lower() for v in enum) if enum else None,
            pattern=re.compile(pattern) if pattern else None,
        )


@dataclass(frozen=True)
class RequestSchema:
    """The form fields an operation accepts, and those the spec marks required."""

    fields: Mapping[str, FieldSpec]
    required: tuple[str, ...]


@functools.cache
def request_schema(path: str, method: Literal["post"] = "post") -> RequestSchema:
    """The form schema of `method path`, e.g. `request_schema(MESSAGES)` is CreateMessageRequest."""
    operation = load_spec()["paths"][path][method]
    schema = _resolve(operation["requestBody"]["content"][FORM]["schema"])
    properties: Mapping[str, Any] = schema.get("properties", {})
    return RequestSchema(
        fields={name: FieldSpec.from_schema(name, prop) for name, prop in properties.items()},
        required=tuple(schema.get("required", ())),
    )


@functools.cache
def schema_properties(name: str) -> tuple[str, ...]:
    """Property names of a component schema, e.g. `schema_properties(MESSAGE_SCHEMA)`."""
    schema = load_spec()["components"]["schemas"][name]
    return tuple(schema.get("properties", {}))


@functools.cache
def _list_properties(path: str) -> tuple[str, ...]:
    content = load_spec()["paths"][path]["get"]["responses"]["200"]["content"]
    return tuple(_resolve(content["application/json"]["schema"]).get("properties", {}))


@functools.cache
def _response_template(path: str, method: str, status: str, schema_name: str) -> JSONObject:
    """The spec's first example for this response, completed with every schema property."""
    content = load_spec()["paths"][path][method]["responses"][status]["content"]
    examples: Mapping[str, Any] = content["application/json"].get("examples", {})
    template: JSONObject = {}
    for example in examples.values():
        template = copy.deepcopy(example["value"])
        break
    for prop in schema_properties(schema_name):
        template.setdefault(prop, None)
    return template


def _instantiate(template: JSONObject, account_sid: str, sid: str) -> JSONObject:
    """Copy the example, swapping its placeholder account and resource SIDs for real ones."""
    swaps = {
        str(template.get("account_sid") or "\0"): account_sid,
        str(template.get("sid") or "\0"): sid,
    }

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in swaps.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    result: JSONObject = swap(copy.deepcopy(template))
    return result


# --- small helpers ----------------------------------------------------------------------------


def segments(body: str) -> int:
    """SMS parts for `body` (twilio.md, SMS segments); at least 1, as Twilio reports for media."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        units = [2 if c in GSM7_EXTENSION else 1 for c in body]
        single, per_part = 160, 153
    else:  # one character outside GSM-7 makes the whole message UCS-2, counted in UTF-16 units
        units = [len(c.encode("utf-16-le")) // 2 for c in body]
        single, per_part = 70, 67
    if sum(units) <= single:
        return 1
    parts, used = 1, 0
    for unit in units:  # an escaped pair or a surrogate pair is never split across parts
        if used + unit > per_part:
            parts, used = parts + 1, 0
        used += unit
    return parts


def rfc2822(moment: dt.datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(dt.UTC))


def resolve_path(path: str) -> str:
    """The path as a real HTTP server acts on it: percent-decoded (aiohttp's `request.path`
    decodes `%2e` and `%2f` too), then its dot segments removed as RFC 3986 (5.2.4) says, so
    `/Calls/CA…/../../Messages.json` is `/Messages.json`."""
    return URL.build(scheme="http", host="fake", path=path).path


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Ordered (name, value) pairs; repeated keys stay, in order."""
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def _first(form: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in form if k == name), None)


def _present(form: Iterable[tuple[str, str]], name: str) -> bool:
    return any(k == name and v != "" for k, v in form)


class TwilioError(Exception):
    """An error answered in Twilio's documented shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> JSONObject:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }

    def response(self) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if self.status == 401 else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def validate_form(path: str, form: list[tuple[str, str]], schema: RequestSchema) -> None:
    """Check a form against the spec's request schema and Twilio's required-field rules."""
    seen: set[str] = set()
    for name, value in form:
        spec = schema.fields.get(name)
        if spec is None:
            raise TwilioError(400, 20001, f"Unknown parameter: {name}")
        if name in seen and not spec.is_array:
            raise TwilioError(400, 20001, f"Parameter {name} was given more than once")
        seen.add(name)
        spec.check(value)
    for name in schema.required:
        if not _present(form, name):
            code, message = _MISSING.get((path, name), (20001, f"Missing parameter {name}"))
            raise TwilioError(400, code, message)
    for names, code, message in _ONE_OF.get(path, ()):
        if not any(_present(form, n) for n in names):
            raise TwilioError(400, code, message)


# --- what the fake saw ------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as it arrived. `path` is the path the fake acted on (decoded, dot segments
    resolved), `raw_path` the request target as sent (query included). `username` is the
    Basic-auth user presented (None without one)."""

    method: str
    path: str
    raw_path: str
    query_string: str
    headers: dict[str, str]
    form: list[tuple[str, str]]
    body: bytes
    username: str | None
    authenticated: bool

    def values(self, name: str) -> list[str]:
        """Every value of a form field, in order (repeated keys like MediaUrl)."""
        return [v for k, v in self.form if k == name]

    def value(self, name: str) -> str | None:
        """The first value of a form field."""
        return _first(self.form, name)


@dataclass
class _Fault:
    status: int
    code: int
    remaining: int | None  # None: until reset()


@dataclass
class _Hang:
    seconds: float
    remaining: int | None


@dataclass(frozen=True)
class _Kind:
    collection: str  # path segment: Calls / Messages
    list_key: str  # key of the list in a page: calls / messages
    prefix: str  # SID prefix
    schema: str
    list_path: str
    item_path: str
    filters: Mapping[str, str]  # list query parameter -> resource property


_CALLS = _Kind(
    "Calls", "calls", "CA", CALL_SCHEMA, CALLS, CALL,
    {"To": "to", "From": "from", "Status": "status", "ParentCallSid": "parent_call_sid"},
)  # fmt: skip
_MESSAGES = _Kind(
    "Messages", "messages", "SM", MESSAGE_SCHEMA, MESSAGES, MESSAGE, {"To": "to", "From": "from"}
)
_RECORDINGS = _Kind(
    "Recordings", "recordings", "RE", RECORDING_SCHEMA, RECORDINGS, RECORDING,
    {"CallSid": "call_sid"},
)  # fmt: skip

# A handler of the fake: the request and the path's parameters.
_Handler = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    handlers: Mapping[str, _Handler]  # by method


def _route(template: str, handlers: Mapping[str, _Handler]) -> _Route:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
    )
    return _Route(re.compile(regex), handlers)


# --- the fake ---------------------------------------------------------------------------------


class FakeTwilio:
    """A fake api.twilio.com on 127.0.0.1 and a free port, for `async with` or start()/stop().

    It accepts HTTP Basic `account_sid:auth_token` (or `key_sid:secret` from `api_keys`), records
    every request in `received`, stores created calls and messages in `calls` / `messages`, and
    can be told to fail (`fail_with`), to be slow (`hang`) or to refuse connections (`refuse`).
    Recordings (`recordings`) are made with `add_recording`, as a call would make them.

    Like a real HTTP server it acts on the decoded path with its dot segments resolved:
    `POST …/Calls/CA…/%2e%2e/%2e%2e/Calls.json` creates a call.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_keys: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_keys: dict[str, str] = dict(api_keys or {})
        self.clock: Clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.received: list[Received] = []
        self.calls: dict[str, JSONObject] = {}
        self.messages: dict[str, JSONObject] = {}
        self.recordings: dict[str, JSONObject] = {}
        # Set: recording media is answered with a redirect there, as Twilio may do.
        self.media_location: str | None = None
        self._routes = self._make_routes()
        # The URL fields (and their methods) of each call and message, updates included:
        # where Twilio would send its requests.
        self.urls: dict[str, dict[str, str]] = {}
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._fault: _Fault | None = None
        self._hang: _Hang | None = None
        self._cut_answers = 0
        self._sleepers: set[asyncio.Task[Any]] = set()
        # Awaited for every valid create before it is answered, e.g. to check what the caller
        # had committed by then.
        self.on_create: Callable[[web.Request], Awaitable[None]] | None = None

    # lifecycle

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on a free port (the spec is loaded here, so a missing file fails early)."""
        load_spec()
        if self._runner is None:
            await self._listen(0)

    async def stop(self) -> None:
        """Stop listening, cancelling any request still hanging."""
        await self._close()

    async def refuse(self) -> None:
        """Stop listening so new connections are refused; `base_url` keeps its port."""
        await self._close()

    async def resume(self) -> None:
        """Listen again on the same port after refuse()."""
        if self._port is None:
            raise RuntimeError("FakeTwilio was never started")
        if self._runner is None:
            await self._listen(self._port)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeTwilio is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def listening(self) -> bool:
        return self._runner is not None

    @property
    def hanging(self) -> int:
        """Creates currently sleeping in hang(); 0 again once the clients gave up."""
        return len(self._sleepers)

    async def _listen(self, port: int) -> None:
        # handler_cancellation: a hanging create is cancelled when its client disconnects.
        runner = web.AppRunner(
            self._make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def _close(self) -> None:
        runner, self._runner = self._runner, None
        for task in list(self._sleepers):
            task.cancel()
        if runner is not None:
            await runner.cleanup()  # also closes keep-alive connections

    def _make_app(self) -> web.Application:
        # One route for every path: the fake routes the resolved path itself (_dispatch).
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        return app

    def _make_routes(self) -> list[_Route]:
        routes = []
        for kind in (_CALLS, _MESSAGES):
            routes.append(_route(kind.list_path, {
                "GET": functools.partial(self._list, kind),
                "POST": functools.partial(self._create, kind)}))
            routes.append(_route(kind.item_path, {
                "GET": functools.partial(self._fetch, kind),
                "POST": functools.partial(self._update, kind),
                "DELETE": functools.partial(self._delete, kind)}))
        routes.append(_route(RECORDINGS, {"GET": functools.partial(self._list, _RECORDINGS)}))
        routes.append(_route(RECORDING, {
            "GET": functools.partial(self._fetch, _RECORDINGS),
            "DELETE": functools.partial(self._delete, _RECORDINGS)}))
        routes.append(_route(CALL_RECORDINGS, {
            "GET": functools.partial(self._list, _RECORDINGS)}))
        routes.append(_route(CALL_RECORDING, {
            "GET": functools.partial(self._fetch, _RECORDINGS),
            "POST": functools.partial(self._update, _RECORDINGS),
            "DELETE": functools.partial(self._delete, _RECORDINGS)}))
        for extension in RECORDING_MEDIA:
            routes.append(_route(
                ACCOUNT + "/Recordings/{Sid}." + extension,
                {"GET": functools.partial(self._media, extension)}))
        return routes

    # fault modes

    def fail_with(self, status: int, code: int | None = None, times: int | None = None) -> None:
        """Answer the next `times` requests (all of them when None) with a Twilio error."""
        if code is None:
            code = _STATUS_CODES.get(status, 20000 + status)
        self._fault = _Fault(status, code, times) if times is None or times > 0 else None

    def hang(self, seconds: float, times: int | None = None) -> None:
        """Make the next `times` creates (all when None) wait `seconds` before answering.

        The wait comes before the resource is created: a client that gives up leaves nothing.
        """
        self._hang = _Hang(seconds, times) if times is None or times > 0 else None

    def cut_answer(self, times: int = 1) -> None:
        """Create the next `times` resources, then break the connection halfway through the
        answer: the request went out, the caller cannot know it."""
        self._cut_answers = times

    def reset(self) -> None:
        """Clear fault modes; recorded requests and stored resources stay."""
        self._fault = None
        self._hang = None
        self._cut_answers = 0

    # inspection

    def add_recording(self, call_sid: str) -> JSONObject:
        """A completed recording of a call, as the call would have left it."""
        sid = "RE" + uuid.uuid4().hex
        template = _response_template(RECORDING, "get", "200", RECORDING_SCHEMA)
        resource = _instantiate(template, self.account_sid, sid)
        now = rfc2822(self.clock())
        resource.update(
            sid=sid,
            account_sid=self.account_sid,
            call_sid=call_sid,
            conference_sid=None,
            status="completed",
            date_created=now,
            date_updated=now,
            uri=f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{sid}.json",
        )
        self.recordings[sid] = resource
        return resource

    def creates(self, collection: Literal["Calls", "Messages"] | None = None) -> list[Received]:
        """The POSTs to Calls.json / Messages.json, in arrival order (whatever their outcome)."""
        result = []
        for r in self.received:
            match = _CREATE_PATH.fullmatch(r.path)
            if r.method == "POST" and match and collection in (None, match.group(1)):
                result.append(r)
        return result

    # request handling

    def _authenticate(self, request: web.Request) -> tuple[str | None, bool]:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        username, _, password = decoded.partition(":")
        expected = self.auth_token if username == self.account_sid else self.api_keys.get(username)
        ok = expected is not None and secrets.compare_digest(password, expected)
        return username, ok

    def _take_fault(self) -> _Fault | None:
        fault = self._fault
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        username, authenticated = self._authenticate(request)
        self.received.append(
            Received(
                method=request.method,
                path=resolve_path(request.path),
                raw_path=request.raw_path,
                query_string=request.query_string,
                headers=dict(request.headers),
                form=parse_form(body) if request.content_type == FORM else [],
                body=body,
                username=username,
                authenticated=authenticated,
            )
        )
        try:
            fault = self._take_fault()
            if fault is not None:
                phrase = http.HTTPStatus(fault.status).phrase
                raise TwilioError(fault.status, fault.code, phrase)
            if not authenticated:
                raise TwilioError(401, 20003, "Authenticate")
            return await handler(request)
        except TwilioError as exc:
            return exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 404:
                return _not_found(request.path).response()
            code = _STATUS_CODES.get(exc.status, 20000 + exc.status)
            return TwilioError(exc.status, code, exc.reason).response()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = resolve_path(request.path)
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found is None:
                continue
            handler = route.handlers.get(request.method)
            if handler is None:
                raise TwilioError(405, 20004, "Method not allowed")
            params = found.groupdict()
            if params["AccountSid"] != self.account_sid:
                raise _not_found(path)
            if await request.read() and request.content_type != FORM:
                raise TwilioError(400, 20001, f"Expected a {FORM} body")
            return await handler(request, params)
        raise _not_found(path)

    async def _sleep_if_hanging(self) -> None:
        hang = self._hang
        if hang is None:
            return
        if hang.remaining is not None:
            hang.remaining -= 1
            if hang.remaining <= 0:
                self._hang = None
        task = asyncio.current_task()
        assert task is not None
        self._sleepers.add(task)
        try:
            await asyncio.sleep(hang.seconds)
        finally:
            self._sleepers.discard(task)

    def _store(self, kind: _Kind) -> dict[str, JSONObject]:
        stores = {"Calls": self.calls, "Messages": self.messages, "Recordings": self.recordings}
        return stores[kind.collection]

    def _item(self, kind: _Kind, request: web.Request, params: Mapping[str, str]) -> JSONObject:
        resource = self._store(kind).get(params["Sid"])
        call = params.get("CallSid")  # a call's recording, by the call's path
        if resource is None or (call is not None and resource.get("call_sid") != call):
            raise _not_found(request.path)
        return resource

    async def _create(
        self, kind: _Kind, request: web.Request, params: Mapping[str, str]
    ) -> web.StreamResponse:
        form = parse_form(await request.read())
        validate_form(kind.list_path, form, request_schema(kind.list_path))
        body = _first(form, "Body")
        if body is not None and len(body) > MAX_BODY:
            raise TwilioError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if self.on_create is not None:
            await self.on_create(request)
        await self._sleep_if_hanging()
        account_sid = params["AccountSid"]
        sid = kind.prefix + uuid.uuid4().hex
        template = _response_template(kind.list_path, "post", "201", kind.schema)
        resource = _instantiate(template, account_sid, sid)
        now = rfc2822(self.clock())
        resource.update(
            sid=sid,
            account_sid=account_sid,
            api_version="2010-04-01",
            date_created=now,
            date_updated=now,
            status="queued",
            to=_first(form, "To"),
            uri=f"/2010-04-01/Accounts/{account_sid}/{kind.collection}/{sid}.json",
            price=None,
        )
        if kind is _CALLS:
            resource.update(
                {
                    "from": _first(form, "From"),
                    "to_formatted": _first(form, "To"),
                    "from_formatted": _first(form, "From"),
                    "direction": "outbound-api",
                    "price_unit": "USD",
                    "start_time": None,
                    "end_time": None,
                    "duration": None,
                    "answered_by": None,
                    "caller_name": None,
                    "forwarded_from": None,
                    "group_sid": None,
                    "parent_call_sid": None,
                    "phone_number_sid": None,
                    "trunk_sid": None,
                    "queue_time": "0",
                }
            )
        else:
            media = [v for k, v in form if k == "MediaUrl"]
            resource.update(
                {
                    "from": _first(form, "From"),
                    "messaging_service_sid": _first(form, "MessagingServiceSid"),
                    "body": body or "",
                    "num_segments": str(segments(body or "")),
                    "num_media": str(len(media)),
                    "direction": "outbound-api",
                    "date_sent": None,
                    "error_code": None,
                    "error_message": None,
                    "price_unit": None,
                }
            )
        self._store(kind)[sid] = resource
        self.urls[sid] = {k: v for k, v in form if k in _URL_FIELDS and v}
        if self._cut_answers > 0:  # created, and the connection breaks mid-answer
            self._cut_answers -= 1
            full = json.dumps(resource).encode()
            cut = web.StreamResponse(status=201, headers={"Content-Type": "application/json"})
            cut.content_length = len(full)
            await cut.prepare(request)
            await cut.write(full[: len(full) // 2])
            assert request.transport is not None
            request.transport.close()
            return cut
        return web.json_response(resource, status=201)

    async def _fetch(
        self, kind: _Kind, request: web.Request, params: Mapping[str, str]
    ) -> web.Response:
        return web.json_response(self._item(kind, request, params))

    async def _update(
        self, kind: _Kind, request: web.Request, params: Mapping[str, str]
    ) -> web.Response:
        resource = self._item(kind, request, params)
        path = CALL_RECORDING if kind is _RECORDINGS else kind.item_path
        form = parse_form(await request.read())
        validate_form(path, form, request_schema(path))
        now = rfc2822(self.clock())
        status = _first(form, "Status")
        if status is not None:
            resource["status"] = status
            if kind is _CALLS and status in ("completed", "canceled"):
                resource["end_time"] = now
        body = _first(form, "Body")
        if kind is _MESSAGES and body is not None:
            resource["body"] = body  # Twilio allows only "" here: redaction
        resource["date_updated"] = now
        self.urls.setdefault(resource["sid"], {}).update(
            {k: v for k, v in form if k in _URL_FIELDS and v})
        return web.json_response(resource)

    async def _delete(
        self, kind: _Kind, request: web.Request, params: Mapping[str, str]
    ) -> web.Response:
        self._item(kind, request, params)
        del self._store(kind)[params["Sid"]]
        return web.Response(status=204)

    async def _media(
        self, extension: str, request: web.Request, params: Mapping[str, str]
    ) -> web.Response:
        self._item(_RECORDINGS, request, params)
        if self.media_location is not None:
            raise web.HTTPFound(self.media_location)
        body = f"{extension} audio of {params['Sid']}".encode()
        return web.Response(body=body, content_type=RECORDING_MEDIA[extension])

    async def _list(
        self, kind: _Kind, request: web.Request, params: Mapping[str, str]
    ) -> web.Response:
        query = request.query
        try:
            page_size = max(1, min(1000, int(query.get("PageSize", DEFAULT_PAGE_SIZE))))
            page = max(0, int(query.get("Page", 0)))
        except ValueError as exc:
            raise TwilioError(400, 20001, "Invalid PageSize or Page") from exc
        filters = {p: query[p] for p in kind.filters if p in query}
        if "CallSid" in params:  # a call's recordings, by the call's path
            filters["CallSid"] = params["CallSid"]
        matching = [
            r
            for r in reversed(self._store(kind).values())  # newest first, as Twilio lists
            if all(r.get(kind.filters[p]) == v for p, v in filters.items())
        ]
        start = page * page_size
        items = matching[start : start + page_size]

        def page_uri(number: int) -> str:
            params = {**filters, "PageSize": page_size, "Page": number}
            return f"{request.path}?{urlencode(params)}"

        result: JSONObject = dict.fromkeys(_list_properties(kind.list_path))
        result.update(
            {
                kind.list_key: items,
                "page": page,
                "page_size": page_size,
                "start": start,
                "end": start + max(len(items) - 1, 0),
                "uri": page_uri(page),
                "first_page_uri": page_uri(0),
                "next_page_uri": page_uri(page + 1) if start + page_size < len(matching) else None,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            }
        )
        return web.json_response(result)


    # playing Twilio towards the URLs a call or message named

    async def request_url(self, url: str, params: list[tuple[str, str]], method: str = "POST"
                          ) -> tuple[int, str, str]:
        """Request `url` as Twilio does: its parameters in the body (POST) or the query
        (GET), with an X-Twilio-Signature made with this account's auth token. Returns the
        answer's (status, text, content type)."""
        validator = RequestValidator(self.auth_token)
        data: str | None = None
        if method.upper() == "GET":
            url += ("&" if "?" in url else "?") + urlencode(params)
            signature = validator.compute_signature(url, {})
        else:
            data = urlencode(params)
            signature = validator.compute_signature(url, MultiDict(params))
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1"}
        if data is not None:
            headers["Content-Type"] = FORM
        async with aiohttp.ClientSession() as session, session.request(
                method.upper(), url, data=data, headers=headers) as resp:
            return resp.status, await resp.text(), resp.headers.get("Content-Type", "")

    def call_params(self, sid: str, **extra: str) -> list[tuple[str, str]]:
        """The parameters of Twilio's requests about a call (or message), `extra` added."""
        if sid in self.calls:
            call = self.calls[sid]
            params = [("AccountSid", self.account_sid), ("ApiVersion", "2010-04-01"),
                      ("CallSid", sid), ("CallStatus", "in-progress"),
                      ("Direction", "outbound-api"), ("From", call["from"] or ""),
                      ("To", call["to"] or "")]
        else:
            message = self.messages[sid]
            params = [("AccountSid", self.account_sid), ("ApiVersion", "2010-04-01"),
                      ("MessageSid", sid), ("SmsSid", sid), ("From", message["from"] or ""),
                      ("To", message["to"] or "")]
        keys = set(extra)
        return [(k, v) for k, v in params if k not in keys] + list(extra.items())

    def url_of(self, sid: str, field: str) -> tuple[str, str]:
        """(URL, method) the call or message named in `field`, e.g. "StatusCallback"."""
        fields = self.urls[sid]
        method = fields.get(_METHOD_FIELDS.get(field, ""), "POST")
        return fields[field], method

    async def fetch_twiml(self, call_sid: str, field: str = "Url", **extra: str
                          ) -> tuple[int, str]:
        """Twilio fetching a call's TwiML from its `Url` (or `FallbackUrl`)."""
        url, method = self.url_of(call_sid, field)
        status, text, _ = await self.request_url(url, self.call_params(call_sid, **extra),
                                                 method)
        return status, text

    async def fire_status_callback(self, sid: str, status: str, field: str = "StatusCallback",
                                   **extra: str) -> tuple[int, str, str]:
        """Twilio reporting a call's or message's status to the URL in `field`."""
        url, method = self.url_of(sid, field)
        key = "CallStatus" if sid in self.calls else "MessageStatus"
        params = self.call_params(sid, **{key: status, **extra})
        if sid in self.messages:
            params.append(("SmsStatus", status))
        return await self.request_url(url, params, method)


# URL fields of creates and updates (the spec's format "uri"), and the fields of their methods.
_URL_FIELDS = frozenset({
    "Url", "Method", "FallbackUrl", "FallbackMethod", "StatusCallback", "StatusCallbackMethod",
    "RecordingStatusCallback", "RecordingStatusCallbackMethod", "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod", "ClientNotificationUrl",
})
_METHOD_FIELDS = {
    "Url": "Method", "FallbackUrl": "FallbackMethod", "StatusCallback": "StatusCallbackMethod",
    "RecordingStatusCallback": "RecordingStatusCallbackMethod",
    "AsyncAmdStatusCallback": "AsyncAmdStatusCallbackMethod",
}


def _not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path} was not found")
