"""Errors in Telnyx's shape, `{"errors": [{"code", "title", "detail", "source"?, "meta"?}]}`:
`TelnyxError` (raised by the front's modules) and the renderer the app uses on `/v2/`.

Telnyx's codes are strings (10004 "Missing required parameter", 10009 "Authentication
failed", …). A denial carries the gate's public code (proxy/gate/codes.py) as its code, and
our `reason` and `decision_id` in `meta`; an SMS to someone who objected gets Telnyx's own
40300 "Blocked due to STOP message", which senders already handle.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.errors import ProxyError
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import SETTINGS
from proxy.policy import Decision
from proxy.policy.facts import ContactChannel

# Where the front's API lies: its errors are Telnyx-shaped.
PREFIX = "/v2/"
# Telnyx's code for a message to a recipient under a STOP block rule.
TELNYX_STOP_BLOCK = "40300"

# Telnyx's general API codes (developers.telnyx.com, "API error codes").
TITLES: dict[str, str] = {
    "10002": "Invalid phone number",
    "10004": "Missing required parameter",
    "10005": "Resource not found",
    "10006": "Invalid ID",
    "10007": "Unexpected error",
    "10009": "Authentication failed",
    "10010": "Authorization failed",
    "10011": "Too many requests",
    "10014": "Unsupported Media Type",
    "10015": "Bad Request",
    "10016": "Phone number must be in +E.164 format",
    TELNYX_STOP_BLOCK: "Blocked due to STOP message",
}
_BY_STATUS = {400: "10015", 401: "10009", 403: "10010", 404: "10005", 405: "10015",
              413: "10015", 415: "10014", 429: "10011"}


class TelnyxError(ProxyError):
    """An error answered in Telnyx's shape. `pointer` names the offending field (JSON
    Pointer, as Telnyx's `source.pointer`); `meta` holds our reason, decision id, …"""

    def __init__(self, status: int, code: str, detail: str, *, title: str | None = None,
                 pointer: str | None = None, **meta: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title or TITLES.get(code) or "Request refused"
        self.pointer = pointer
        self.meta = meta


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def more_info(code: str, public_url: str) -> str:
    if len(code) == 6:  # the gate's own codes: explained by the proxy itself
        return f"{public_url}/errors/{code}"
    return f"https://developers.telnyx.com/docs/overview/errors/{code}"


def error_body(code: str, title: str, detail: str, public_url: str, *,
               pointer: str | None = None, **meta: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"code": code, "title": title, "detail": detail}
    if pointer is not None:
        item["source"] = {"pointer": pointer}
    item["meta"] = {"url": more_info(code, public_url), **meta}
    return {"errors": [item]}


def render(public_url: str, exc: TelnyxError) -> web.Response:
    body = error_body(exc.code, exc.title, exc.message, public_url, pointer=exc.pointer,
                      **exc.meta)
    return web.json_response(body, status=exc.status, dumps=dumps)


def error_response(request: web.Request, exc: ProxyError) -> web.Response:
    public_url = request.app[SETTINGS].public_url
    if isinstance(exc, TelnyxError):
        return render(public_url, exc)
    if exc.status == 503:  # fail closed: the consent store could not be read or written
        status, code = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]
        return render(public_url, TelnyxError(status, str(code), exc.message,
                                              title="Consent store unavailable",
                                              reason="CONSENT_STORE_UNAVAILABLE"))
    return render(public_url, TelnyxError(exc.status, _BY_STATUS.get(exc.status, "10007"),
                                          exc.message))


def http_error_response(request: web.Request, status: int, message: str) -> web.Response:
    code = _BY_STATUS.get(status, "10007")
    return render(request.app[SETTINGS].public_url, TelnyxError(status, code, message))


def denial(decision: Decision, channel: ContactChannel, decision_id: int,
           public_url: str) -> web.Response:
    """A committed denial: its public code (proxy/gate/codes.py), reason and decision id."""
    meta: dict[str, Any] = {"reason": decision.reason, "decision_id": decision_id}
    if decision.retry_after is not None:
        meta["retry_after"] = decision.retry_after.isoformat()
    if decision.reason == "OBJECTION_ON_FILE" and channel == "sms":
        exc = TelnyxError(403, TELNYX_STOP_BLOCK, "Messages cannot be sent to this recipient: "
                          "an objection is on file (STOP).", **meta)
    else:
        status, code = DENIAL_CODES.get(decision.reason, (403, 930030))
        exc = TelnyxError(status, str(code), decision.explanation["en"],
                          title="Refused by consent-proxy", **meta)
    return render(public_url, exc)


class Renderer:
    """The app's error middleware calls this for every error on the front's API paths."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        return error_response(request, exc)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return http_error_response(request, status, reason)


RENDERER = Renderer()
