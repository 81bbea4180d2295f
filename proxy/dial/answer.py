"""The dial API's answers: a decision as JSON with what a SIP proxy needs to reply to the
INVITE, and its errors in the same family of shapes."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from aiohttp import web

from proxy.errors import ProxyError, Unauthorized
from proxy.gate.codes import DENIAL_CODES
from proxy.policy import REASONS, Decision

STORE_UNAVAILABLE = "CONSENT_STORE_UNAVAILABLE"
STORE_UNAVAILABLE_NL = ("De toestemmingsgegevens konden niet worden gelezen, dus het verzoek is "
                        "ongecontroleerd geweigerd (HTTP 503).")


def decided(decision: Decision, decision_id: int) -> dict[str, Any]:
    """The answer as stored for replays: nothing relative to the moment of answering."""
    denied = not decision.allowed
    return {
        "decision": decision.decision,
        "reason": decision.reason,
        # Every deny reason has a code (tests/test_readme.py); NO_LEGAL_BASIS's as a fallback,
        # as on the Twilio front.
        "code": DENIAL_CODES[decision.reason][1] if denied else None,
        "decision_id": decision_id,
        "retry_after": decision.retry_after.isoformat() if decision.retry_after else None,
        "explanation": dict(decision.explanation),
    }


def retry_after_seconds(answer: dict[str, Any], now: dt.datetime) -> int | None:
    """Whole seconds from now until the answer's `retry_after`, rounded up; None without one.
    SIP proxies and dialplans cannot parse ISO dates (reference/sip.md)."""
    retry_after = answer["retry_after"]
    if retry_after is None:
        return None
    left = (dt.datetime.fromisoformat(retry_after) - now).total_seconds()
    return max(0, math.ceil(left))


def render(answer: dict[str, Any], now: dt.datetime) -> web.Response:
    """200 with the decision and its SIP reply; `retry_after_seconds` counts from now."""
    allowed = answer["decision"] == "allow"
    sip = {"status": 200 if allowed else 403, "reason": answer["reason"],
           "retry_after_seconds": retry_after_seconds(answer, now)}
    return web.json_response({**answer, "sip": sip})


def error_response(exc: ProxyError) -> web.Response:
    """A refused request: `{"error", "field"}`; the store out of reach: 503 in the shape of a
    decision (deny, nothing recorded), so a SIP proxy reads it like any answer."""
    if exc.status == 503:
        doc = REASONS[STORE_UNAVAILABLE]
        return web.json_response({
            "decision": "deny", "reason": STORE_UNAVAILABLE,
            "code": DENIAL_CODES[STORE_UNAVAILABLE][1], "decision_id": None,
            "retry_after": None, "explanation": {"en": doc.meaning, "nl": STORE_UNAVAILABLE_NL},
            "sip": {"status": 503, "reason": STORE_UNAVAILABLE, "retry_after_seconds": None},
            "error": exc.message, "field": None,
        }, status=503)
    response = web.json_response({"error": exc.message, "field": exc.field},
                                 status=exc.status)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Basic realm="consent-proxy dial"'
    return response
