"""Consumption follows the call, not the attempt (N5, N6).

A decision that allows a contact uses up its contact request, or marks the first call under a
consent, in the transaction that commits it: nothing can go out on a request another contact
is using. When no contact followed, that is given back as an event of its own
(`consumption_reversals`, store.reverse_consumption):

- the provider refused the request (an HTTP error) or could not be reached: nothing was sent;
- the proxy refused to forward what was allowed (nothing was sent);
- the call's own status report says nobody was reached (busy, no answer, failed, cancelled;
  each adapter reads that from its provider): a contact request covers one contact, and an
  unanswered call is none.

A timeout gives nothing back (the request may have gone out), nor does a completed call,
whoever or whatever answered it (a machine too). The Gate gives back (`Gate.give_back`,
`Gate.finish`) through `give_back` here.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import structlog

from proxy import store
from proxy.db import STORE_ERRORS
from proxy.gate.values import GiveBack

log = structlog.get_logger("proxy.consumption")


async def give_back(pool: asyncpg.Pool, decision_id: int, why: store.ReversalWhy,
                    detail: str | None, now: dt.datetime) -> store.Reversal | None:
    """Reverse what `decision_id` consumed. A store failure leaves it consumed (fail closed:
    the request stays unusable rather than being used twice) and is logged."""
    try:
        reversal = await store.reverse_consumption(pool, decision_id, why, detail, now)
    except STORE_ERRORS as exc:
        log.error("consumption_not_given_back", decision_id=decision_id, why=why,
                  error=type(exc).__name__)
        return None
    if reversal is not None:
        log.info("consumption_given_back", decision_id=decision_id, why=why, detail=detail,
                 request_id=reversal.request_id,
                 first_use_consent_id=reversal.first_use_consent_id)
    return reversal


def after_upstream(status: int | None) -> GiveBack | None:
    """After forwarding: an HTTP error means the provider sent nothing; None means it could not
    be reached at all."""
    if status is None:
        return GiveBack("provider_unreachable")
    if status >= 400:
        return GiveBack("provider_refused", f"upstream {status}")
    return None

