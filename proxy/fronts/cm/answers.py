"""CM's answer to a send, one entry per recipient in the order of the request:
`{"to", "status", "reference", "parts", "messageDetails", "messageErrorCode"}`, with our
`reason` and `decision_id` beside them (and in `messageDetails`, where every CM client
already looks), and the request's summary: `{"details", "errorCode", "messages"}`.

CM's own rules for the summary: every message accepted → 200, errorCode 0; some rejected →
200, errorCode 201 ("not all sent"); none accepted → 400, errorCode 201. A fault of the
provider or the proxy on the messages that were to go out keeps its own status (502, 504, or
the provider's own 5xx).
"""

from __future__ import annotations

from typing import Any

from proxy.fronts.cm.errors import (
    BLACKLISTED,
    INVALID_FROM,
    INVALID_MSISDN,
    NOT_ALL_SENT,
    OK,
    REJECTED,
)
from proxy.policy import Decision

ACCEPTED = "Accepted"
REJECTED_STATUS = "Rejected"
# A send whose fate is not known (the provider did not answer in time).
UNKNOWN_STATUS = "Unknown"

# Our denial reasons in CM's per-message codes: an objection is CM's "blacklisted"; a number
# or sender the gate cannot use, CM's own codes for those; every other denial "rejected".
MESSAGE_CODES = {"OBJECTION_ON_FILE": BLACKLISTED, "INVALID_NUMBER": INVALID_MSISDN,
                 "UNKNOWN_SENDER": INVALID_FROM}


def entry(to: str, reference: str | None, status: str, parts: int, details: str | None,
          code: int, **extra: Any) -> dict[str, Any]:
    return {"to": to, "status": status, "reference": reference, "parts": parts,
            "messageDetails": details, "messageErrorCode": code, **extra}


def denied(to: str, reference: str | None, decision: Decision,
           decision_id: int) -> dict[str, Any]:
    """A committed denial: CM's code for it, our reason and decision id."""
    extra: dict[str, Any] = {"reason": decision.reason, "decision_id": decision_id}
    if decision.retry_after is not None:
        extra["retry_after"] = decision.retry_after.isoformat()
    details = (f"Denied by consent-proxy: {decision.reason} (decision {decision_id}): "
               f"{decision.explanation['en']}")
    return entry(to, reference, REJECTED_STATUS, 0, details,
                 MESSAGE_CODES.get(decision.reason, REJECTED), **extra)


def refused(to: str, reference: str | None, code: int, details: str, reason: str,
            decision_id: int) -> dict[str, Any]:
    """Allowed by law, refused for what it would send (N17): not forwarded."""
    return entry(to, reference, REJECTED_STATUS, 0,
                 f"Refused by consent-proxy: {reason} (decision {decision_id}): {details}",
                 code, reason=reason, decision_id=decision_id)


def summary(messages: list[dict[str, Any]],
            fault: tuple[int, int, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body for these entries. `fault`: (status, errorCode, details) of
    a failure of the forwarded part, which nothing accepted outweighs."""
    accepted = sum(1 for m in messages if m["status"] == ACCEPTED)
    if fault is not None and not accepted:
        status, code, details = fault
        return status, {"details": details, "errorCode": code, "messages": messages}
    code = OK if accepted == len(messages) else NOT_ALL_SENT
    body = {"details": f"Created {accepted} message(s)", "errorCode": code,
            "messages": messages}
    return (200 if accepted else 400), body
