"""Errors in Twilio's shape: `TwilioError` (raised by the front's modules) and the renderer the
app uses on the front's API paths, for denials, the gate's codes and every other error."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ProxyError
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import SETTINGS
from proxy.policy import Decision
from proxy.policy.facts import ContactChannel

# Where the front's API lies: its errors are Twilio-shaped.
PREFIX = "/2010-04-01/"
# Twilio's own code for "Attempt to send to unsubscribed recipient": dialers already handle it.
TWILIO_UNSUBSCRIBED = 21610


class TwilioError(ProxyError):
    """An error answered in Twilio's shape: {"code","message","more_info","status"} + extras."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def more_info(code: int, public_url: str) -> str:
    if code >= 100_000:
        return f"{public_url}/errors/{code}"
    return f"https://www.twilio.com/docs/errors/{code}"


def error_body(status: int, code: int, message: str, public_url: str,
               **extra: Any) -> dict[str, Any]:
    # Never all of type/title/status/code: twilio-python would raise a different class.
    return {"code": code, "message": message, "more_info": more_info(code, public_url),
            "status": status, **extra}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()  # every denial's body: a fraction of json.dumps' time


def error_response(request: web.Request, exc: ProxyError) -> web.Response:
    public_url = request.app[SETTINGS].public_url
    if isinstance(exc, TwilioError):
        status, code, extra = exc.status, exc.code, exc.extra
    else:
        status, code, extra = _generic(exc.status)
        if exc.status == 503:
            status, code = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]
            extra = {"reason": "CONSENT_STORE_UNAVAILABLE"}
    response = web.json_response(error_body(status, code, exc.message, public_url, **extra),
                                 status=status, dumps=dumps)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def http_error_response(request: web.Request, status: int, message: str) -> web.Response:
    return error_response(request, TwilioError(*_generic(status)[:2], message))


def _generic(status: int) -> tuple[int, int, dict[str, Any]]:
    known = {400: 20001, 401: 20003, 403: 20403, 404: 20404, 405: 20004, 413: 20413,
             429: 20429}
    return status, known.get(status, 20000 + status), {}


def denial(decision: Decision, channel: ContactChannel, decision_id: int,
           public_url: str) -> web.Response:
    """A committed denial: its public code (proxy/gate/codes.py), reason and decision id."""
    if decision.reason == "OBJECTION_ON_FILE" and channel == "sms":
        status, code = 400, TWILIO_UNSUBSCRIBED
        message = "Attempt to send to unsubscribed recipient"
    else:
        status, code = DENIAL_CODES.get(decision.reason, (403, 930030))
        message = decision.explanation["en"]
    extra: dict[str, Any] = {"reason": decision.reason, "decision_id": decision_id}
    if decision.retry_after is not None:
        extra["retry_after"] = decision.retry_after.isoformat()
    return web.json_response(error_body(status, code, message, public_url, **extra),
                             status=status, dumps=dumps)


class Renderer:
    """The app's error middleware calls this for every error on the front's API paths."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        return error_response(request, exc)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return http_error_response(request, status, reason)


RENDERER = Renderer()
