"""Errors in Vonage's shapes, and the renderers the app uses on the front's paths.

- SMS API (`/sms/…`): HTTP 200 with `{"message-count": "1", "messages": [{"status": "N",
  "error-text": …}]}` as Vonage answers every refusal; our `reason`, `decision_id` and public
  `code` (proxy/gate/codes.py) ride as extra keys of the message object.
- Voice API (`/v1/…`): Vonage's problem shape `{"type","title","detail","instance"}` with a 4xx
  or 5xx status, and the same extra keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ProxyError
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import REQUEST_ID, SETTINGS
from proxy.policy import Decision

SMS_PREFIX = "/sms/"
VOICE_PREFIX = "/v1/"

# Vonage's documented SMS API statuses (developer.vonage.com, SMS API "Troubleshooting").
THROTTLED = 1
MISSING_PARAMS = 2
INVALID_PARAMS = 3
INVALID_CREDENTIALS = 4
INTERNAL_ERROR = 5
INVALID_MESSAGE = 6
NUMBER_BARRED = 7
MESSAGE_TOO_LONG = 12
INVALID_SENDER = 15
NON_WHITELISTED_DESTINATION = 29
SMS_TEXTS: Mapping[int, str] = {
    THROTTLED: "Throttled", MISSING_PARAMS: "Missing Parameters",
    INVALID_PARAMS: "Invalid Parameters", INVALID_CREDENTIALS: "Bad Credentials",
    INTERNAL_ERROR: "Internal Error", INVALID_MESSAGE: "Invalid Message",
    NUMBER_BARRED: "Number barred", MESSAGE_TOO_LONG: "Message too long",
    INVALID_SENDER: "Invalid Sender Address",
    NON_WHITELISTED_DESTINATION: "Non-Whitelisted Destination",
}

# Our reasons → Vonage SMS statuses (README, "Vonage error mapping"). A public contract.
SMS_STATUS: Mapping[str, int] = {
    "OBJECTION_ON_FILE": NUMBER_BARRED,  # the person objected: a number barred for this sender
    "INVALID_NUMBER": INVALID_PARAMS,
    "UNKNOWN_SENDER": INVALID_SENDER,
    "CALLER_ID_WITHHELD": INVALID_SENDER,
    "CALLER_ID_NOT_CALLABLE": INVALID_SENDER,
    "OUTSIDE_CALLING_HOURS": THROTTLED,  # may be sent later: retry_after says when
    "PROHIBITED_DAY": THROTTLED,
    "OPT_OUT_NOT_APPENDABLE": INVALID_MESSAGE,
    "OPT_OUT_FOOTER_DOES_NOT_FIT": MESSAGE_TOO_LONG,
    "CONSENT_STORE_UNAVAILABLE": INTERNAL_ERROR,
    "UPSTREAM_UNREACHABLE": INTERNAL_ERROR,
    "UPSTREAM_TIMEOUT": INTERNAL_ERROR,
}
# Every other denial (no legal basis, consent withdrawn, expired, …): this destination is not
# open to this sender, Vonage's "Non-Whitelisted Destination".
SMS_DEFAULT_STATUS = NON_WHITELISTED_DESTINATION

_TYPE = "https://developer.nexmo.com/api-errors"
VOICE_TITLES: Mapping[int, str] = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class SmsError(ProxyError):
    """A refusal answered in the SMS API's shape (HTTP 200, a non-zero status)."""

    status = 200

    def __init__(self, sms_status: int, text: str, **extra: Any) -> None:
        super().__init__(text)
        self.sms_status = sms_status
        self.extra = extra


class VoiceError(ProxyError):
    """A refusal answered in the Voice API's problem shape."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.extra = extra


def sms_body(sms_status: int, text: str, **extra: Any) -> dict[str, Any]:
    title = SMS_TEXTS.get(sms_status, "Error")
    message = {"status": str(sms_status), "error-text": f"{title}: {text}", **extra}
    return {"message-count": "1", "messages": [message]}


def sms_response(sms_status: int, text: str, **extra: Any) -> web.Response:
    return web.json_response(sms_body(sms_status, text, **extra), dumps=dumps)


def voice_response(request: web.Request, status: int, detail: str,
                   **extra: Any) -> web.Response:
    code = extra.get("code")
    public_url = request.app[SETTINGS].public_url
    kind = (f"{public_url}/errors/{code}" if isinstance(code, int)
            else f"{_TYPE}#{VOICE_TITLES.get(status, 'error').lower().replace(' ', '-')}")
    body = {"type": kind, "title": VOICE_TITLES.get(status, "Error"), "detail": detail,
            "instance": request.get(REQUEST_ID) or "", **extra}
    response = web.json_response(body, status=status, dumps=dumps)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="Vonage API"'
    return response


def _denial_extra(decision: Decision, decision_id: int) -> dict[str, Any]:
    _, code = DENIAL_CODES.get(decision.reason, (403, 930030))
    extra: dict[str, Any] = {"reason": decision.reason, "decision_id": decision_id,
                             "code": code}
    if decision.retry_after is not None:
        extra["retry_after"] = decision.retry_after.isoformat()
    return extra


def sms_denial(decision: Decision, decision_id: int) -> web.Response:
    """A committed SMS denial: Vonage's status for our reason, our reason and decision id."""
    status = SMS_STATUS.get(decision.reason, SMS_DEFAULT_STATUS)
    return sms_response(status, decision.explanation["en"], **_denial_extra(decision,
                                                                            decision_id))


def voice_denial(request: web.Request, decision: Decision, decision_id: int) -> web.Response:
    status, _ = DENIAL_CODES.get(decision.reason, (403, 930030))
    return voice_response(request, status, decision.explanation["en"],
                          **_denial_extra(decision, decision_id))


def _store_unavailable(exc: ProxyError) -> tuple[str, int]:
    return "CONSENT_STORE_UNAVAILABLE", DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"][1]


class SmsRenderer:
    """Every error on the SMS API's paths, in its shape: HTTP 200 and a status."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        if isinstance(exc, SmsError):
            return sms_response(exc.sms_status, exc.message, **exc.extra)
        if exc.status == 503:  # fail closed: nothing was forwarded
            reason, code = _store_unavailable(exc)
            return sms_response(INTERNAL_ERROR, exc.message, reason=reason, code=code)
        if exc.status == 401:
            return sms_response(INVALID_CREDENTIALS, exc.message)
        if exc.status >= 500:
            return sms_response(INTERNAL_ERROR, exc.message)
        return sms_response(INVALID_PARAMS, exc.message)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        # A path or method the SMS API does not have: Vonage answers those with HTTP errors.
        return web.json_response({"error-code": str(status), "error-code-label": reason},
                                 status=status, dumps=dumps)


class VoiceRenderer:
    """Every error on the Voice API's paths (and every other `/v1/` path), in its shape."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        if isinstance(exc, VoiceError):
            return voice_response(request, exc.status, exc.message, **exc.extra)
        if exc.status == 503:
            reason, code = _store_unavailable(exc)
            return voice_response(request, 503, exc.message, reason=reason, code=code)
        status = exc.status if 400 <= exc.status < 600 else 500
        return voice_response(request, status, exc.message)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return voice_response(request, status, reason)


SMS_RENDERER = SmsRenderer()
VOICE_RENDERER = VoiceRenderer()
