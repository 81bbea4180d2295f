"""What a FastAGI session answers with: the channel variables it sets, and the errors a
request is answered with when nothing could be decided or recorded. Public contracts (README,
"Asterisk (FastAGI)")."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import asyncpg
import structlog

from proxy.db import STORE_ERRORS, constraint_refusal
from proxy.dial.answer import STORE_UNAVAILABLE
from proxy.errors import ProxyError
from proxy.gate import DENIAL_CODES

log = structlog.get_logger("proxy.fastagi")
T = TypeVar("T")

# Channel variables a `decide` sets, CONSENT_DECISION last: a session cut off half-way never
# leaves a fresh `allow` beside stale other values.
DECISION, REASON, CODE = "CONSENT_DECISION", "CONSENT_REASON", "CONSENT_CODE"
RETRY_AFTER, DECISION_ID, ERROR = "CONSENT_RETRY_AFTER", "CONSENT_DECISION_ID", "CONSENT_ERROR"
# ... and an `outcome`.
OUTCOME, OUTCOME_ERROR = "CONSENT_OUTCOME", "CONSENT_OUTCOME_ERROR"

# CONSENT_REASON when CONSENT_DECISION is `error` (and the start of CONSENT_OUTCOME_ERROR):
# public contracts (README, "Asterisk (FastAGI)"). Nothing was decided; never dial.
ERRORS: Mapping[str, str] = {
    "AGI_BAD_REQUEST": "a missing or malformed argument or header variable, or an unknown "
                       "script; CONSENT_ERROR names it",
    "AGI_CLIENT_UNKNOWN": "no client to decide as: none configured, one this listener does "
                          "not serve, or an unknown or disabled client",
    "AGI_CONFLICT": "the call_id is being decided by another request, or another outcome is "
                    "recorded",
    "AGI_INTERNAL_ERROR": "the gate failed; the proxy log has the request id",
    STORE_UNAVAILABLE: "the consent store could not be reached",
}


class AgiError(Exception):
    """A request answered with `error`: its reason (ERRORS) and what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def refusal(exc: ProxyError) -> AgiError:
    """A refused request (a ProxyError) as an AGI error, by its HTTP status."""
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    if exc.status == 503:
        return AgiError(STORE_UNAVAILABLE, message)
    if exc.status == 401:
        return AgiError("AGI_CLIENT_UNKNOWN", message)
    if exc.status == 409:
        return AgiError("AGI_CONFLICT", message)
    if 400 <= exc.status < 500:
        return AgiError("AGI_BAD_REQUEST", message)
    return AgiError("AGI_INTERNAL_ERROR", message)


async def guarded(work: Awaitable[T]) -> T:
    """`work`, its failures as AgiError: fail closed, as the HTTP middleware does."""
    try:
        return await work
    except AgiError:
        raise
    except ProxyError as exc:
        raise refusal(exc) from exc
    except asyncpg.IntegrityConstraintViolationError as exc:
        log.warning("constraint_refused", constraint=exc.constraint_name)
        raise refusal(constraint_refusal(exc)) from exc
    except STORE_ERRORS as exc:
        log.warning("consent_store_unavailable", error=type(exc).__name__)
        raise AgiError(STORE_UNAVAILABLE, "consent store unavailable; nothing was decided "
                                          "or recorded") from exc
    except Exception as exc:
        log.exception("fastagi_crashed")
        raise AgiError("AGI_INTERNAL_ERROR", "internal error; see the proxy log for this "
                                             "request id") from exc


Variables = list[tuple[str, str]]


def decision_variables(stored: dict[str, Any], retry_after: int | None) -> Variables:
    """A decision (`answer.decided`'s shape) as `decide` sets it."""
    code = stored["code"]
    return [(REASON, str(stored["reason"])), (CODE, "" if code is None else str(code)),
            (RETRY_AFTER, "" if retry_after is None else str(retry_after)),
            (DECISION_ID, str(stored["decision_id"])), (ERROR, ""),
            (DECISION, str(stored["decision"]))]


def error_variables(exc: AgiError) -> Variables:
    """Nothing decided: `error`, its reason and what was wrong."""
    code = str(DENIAL_CODES[STORE_UNAVAILABLE][1]) if exc.reason == STORE_UNAVAILABLE else ""
    return [(REASON, exc.reason), (CODE, code), (RETRY_AFTER, ""), (DECISION_ID, ""),
            (ERROR, exc.message), (DECISION, "error")]


def outcome_variables(stored: str) -> Variables:
    """An outcome recorded, as `outcome` sets it (CONSENT_OUTCOME last)."""
    return [(OUTCOME_ERROR, ""), (OUTCOME, stored)]


def outcome_error_variables(exc: AgiError) -> Variables:
    return [(OUTCOME_ERROR, f"{exc.reason}: {exc.message}"), (OUTCOME, "error")]
