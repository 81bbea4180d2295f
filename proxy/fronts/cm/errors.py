"""Errors in CM's shape: `{"details", "errorCode", "messages": []}` with CM's HTTP status.

`CmError` is raised by the front's modules for a request refused as a whole (nothing decided
or sent); the renderer turns every other error on the front's paths (the gate's faults, an
unknown path, a body too large) into the same shape, never a bare 500 page.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ProxyError
from proxy.gate.codes import DENIAL_CODES

# Where the front lies: its errors are CM-shaped.
API_PREFIX = "/v1.0/"
WEBHOOK_PREFIX = "/webhooks/cm/"

# CM's JSON gateway codes (errorCode for the request, messageErrorCode per recipient).
OK = 0
AUTHENTICATION_FAILED = 101
NOT_ALL_SENT = 201
REQUEST_MALFORMED = 202
MSG_ARRAY_INCORRECT = 203
INVALID_FROM = 301
INVALID_TO = 302
INVALID_MSISDN = 303
INVALID_BODY = 304
INVALID_FIELD = 305
BLACKLISTED = 402
REJECTED = 403
UNKNOWN = 999


class CmError(ProxyError):
    """A request refused as a whole, in CM's shape; `extra` adds keys (our `reason`)."""

    def __init__(self, status: int, error_code: int, details: str, **extra: Any) -> None:
        super().__init__(details)
        self.status = status
        self.error_code = error_code
        self.extra = extra


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def body(details: str, error_code: int, messages: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"details": details, "errorCode": error_code, "messages": messages or [], **extra}


def response(status: int, value: dict[str, Any]) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


def error_response(_request: web.Request, exc: ProxyError) -> web.Response:
    if isinstance(exc, CmError):
        answer = response(exc.status, body(exc.message, exc.error_code, **exc.extra))
        if exc.status == 401:  # only the inbound webhook asks for credentials this way
            answer.headers["WWW-Authenticate"] = 'Basic realm="consent-proxy CM webhook"'
        return answer
    if exc.status == 503:  # fail closed: the consent store cannot be read or written
        status, code = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]
        return response(status, body(exc.message, code, reason="CONSENT_STORE_UNAVAILABLE"))
    return http_error_response(_request, exc.status, exc.message)


def http_error_response(_request: web.Request, status: int, details: str) -> web.Response:
    code = {400: REQUEST_MALFORMED, 401: AUTHENTICATION_FAILED, 408: REQUEST_MALFORMED,
            413: REQUEST_MALFORMED}.get(status, UNKNOWN)
    return response(status, body(details, code))


class Renderer:
    """The app's error middleware calls this for every error on the front's paths."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        return error_response(request, exc)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return http_error_response(request, status, reason)


RENDERER = Renderer()
