"""Consumption follows the call, not the attempt (N5, N6).

A decision that allows a contact uses up its contact request, or marks the first call under a
consent, in the transaction that commits it: nothing can go out on a request another contact
is using. When no contact followed, that is given back as an event of its own
(`consumption_reversals`, store.reverse_consumption):

- the provider refused the request (an HTTP error) or could not be reached: nothing was sent;
- the proxy refused to forward what was allowed (nothing was sent);
- the call's own status callback says nobody was reached (`busy`, `no-answer`, `failed`,
  `canceled`): a contact request covers one contact, and an unanswered call is none.

A timeout gives nothing back (the request may have gone out), nor does a completed call,
whoever or whatever answered it (`AnsweredBy` machine_*).
"""

from __future__ import annotations

import structlog
from aiohttp import web

from proxy import store
from proxy.db import STORE_ERRORS
from proxy.keys import CLOCK, POOL

log = structlog.get_logger("proxy.consumption")

# Twilio's final CallStatus values of a call that reached nobody.
NOT_REACHED = frozenset({"busy", "no-answer", "failed", "canceled"})
# The callback that reports on the call itself, as the create (or a live update) named it; the
# proxy adds it when the dialer set none. Callbacks inside TwiML report on other legs.
CALL_STATUS_FIELD = "StatusCallback"


async def give_back(app: web.Application, decision_id: int, why: store.ReversalWhy,
                    detail: str | None) -> store.Reversal | None:
    """Reverse what `decision_id` consumed. A store failure leaves it consumed (fail closed:
    the request stays unusable rather than being used twice) and is logged."""
    try:
        reversal = await store.reverse_consumption(app[POOL], decision_id, why, detail,
                                                   app[CLOCK]())
    except STORE_ERRORS as exc:
        log.error("consumption_not_given_back", decision_id=decision_id, why=why,
                  error=type(exc).__name__)
        return None
    if reversal is not None:
        log.info("consumption_given_back", decision_id=decision_id, why=why, detail=detail,
                 request_id=reversal.request_id,
                 first_use_consent_id=reversal.first_use_consent_id)
    return reversal


async def after_upstream(app: web.Application, decision_id: int, status: int | None) -> None:
    """After forwarding: an HTTP error means the provider sent nothing; None means it could not
    be reached at all."""
    if status is None:
        await give_back(app, decision_id, "provider_unreachable", None)
    elif status >= 400:
        await give_back(app, decision_id, "provider_refused", f"upstream {status}")


async def after_callback(app: web.Application, decision_id: int, field: str,
                         call_status: str | None) -> None:
    """A status callback of the call a decision placed: nobody reached gives it back."""
    if field == CALL_STATUS_FIELD and call_status in NOT_REACHED:
        await give_back(app, decision_id, "not_reached", call_status)
