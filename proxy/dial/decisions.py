"""A dial-time decision and its outcome, whoever asks: the HTTP API (`api.py`) and FastAGI
(`fastagi.py`) both come here with a client and a `DialRequest`, so they decide alike.

A decision is made as for a Twilio call create: the outage spool first, the same engine and
fact lookup, the same group commit (the decision row, a consumed contact request, a first
call). A call_id is claimed before deciding, so a repeated call_id (a retransmitted INVITE,
an AGI run again in the same channel, two identical requests at once) gets the first answer
and makes no second decision: within a SIP transaction's lifetime, and only while the attempt
has no outcome and nothing was given back (attempts.ANSWER_REPLAY); after that it is decided
afresh. A decision once started is carried to its commit and its answer kept even if the one
who asked goes away (a FastAGI session cancelled at shutdown): a decision committed with no
answer kept would be made a second time when asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from proxy import store
from proxy.db import STORE_ERRORS
from proxy.dial import answer, attempts
from proxy.dial.request import DialRequest, OutcomeStatus
from proxy.errors import BadInput, Conflict, NotFound
from proxy.gate import Caller, Proposal
from proxy.keys import CLOCK, GATE, POOL
from proxy.logging import add_to_request

log = structlog.get_logger("proxy.dial")

# How long a repeated call_id waits for the first request's answer before 409.
IN_FLIGHT_WAIT_SECONDS = 5.0
# N5/N6: attempts that reached nobody give back what their decision consumed.
NOT_REACHED = frozenset({"no_answer", "busy", "failed", "rejected", "cancelled"})


@dataclass(frozen=True, slots=True)
class Decided:
    """The answer to a dial request (`answer.decided`'s shape), and whether this request made
    its decision (`new`) or got the first answer to the same call_id again."""

    answer: dict[str, Any]
    new: bool


# Decisions carried on after their asker went away (`decide`), until committed and kept.
_SETTLING: set[asyncio.Task[Decided]] = set()


async def settled(wait_seconds: float) -> None:
    """Return once every decision under way has been committed and its answer kept (or
    failed), or after `wait_seconds`: for a listener that stops. The rest go on with the
    group commit, which the application stops after the listener."""
    if _SETTLING:
        await asyncio.wait(set(_SETTLING), timeout=wait_seconds)


def _settled(work: asyncio.Task[Decided]) -> None:
    _SETTLING.discard(work)
    if not work.cancelled() and isinstance(work.exception(), Exception):
        # Retrieved here too: an asker that went away never sees it (the log does).
        log.info("dial_decision_ended", error=type(work.exception()).__name__)


async def decide(app: web.Application, client: store.Client, dial: DialRequest,
                 request_id: str | None, front: str) -> Decided:
    """A new decision, committed before this returns, or the first answer to the same
    call_id of this client. `front`: the way in (`dial` or `fastagi`), for the row."""
    now = app[CLOCK]()
    earlier = await attempts.claim(app[POOL], client.id, dial.call_id,
                                   dial.fingerprint(), now)
    if earlier is not None:
        return await _replay(app, client, dial, request_id, front, earlier)
    # Shielded: cancelling the asker must not cancel its commit halfway (the group commit
    # writes a queued row anyway) and drop the claim, which would let the same call_id be
    # decided twice.
    work = asyncio.ensure_future(_decide_claimed(app, client, dial, request_id, front, now))
    _SETTLING.add(work)
    work.add_done_callback(_settled)
    try:
        return await asyncio.shield(work)
    except store.DialClaimLost:
        # Taken over as abandoned while this waited for its commit: nothing was written;
        # the answer is the one who took it over's.
        log.warning("dial_claim_taken_over")
        found = await attempts.find(app[POOL], client.id, dial.call_id)
        return await _replay(app, client, dial, request_id, front,
                             found or attempts.Attempt(dial.fingerprint(), None))


async def _decide_claimed(app: web.Application, client: store.Client, dial: DialRequest,
                          request_id: str | None, front: str, claimed_at: dt.datetime
                          ) -> Decided:
    try:
        decision_id, stored = await _decide(app, client, dial, request_id, front, claimed_at)
    except store.DialClaimLost:
        raise  # the claim is someone else's now
    except BaseException:
        # Released only if nothing was committed under it (attempts.release).
        with contextlib.suppress(*STORE_ERRORS):
            await attempts.release(app[POOL], client.id, dial.call_id, claimed_at)
        raise
    try:
        await attempts.complete(app[POOL], client.id, dial.call_id, decision_id,
                                stored)
    except STORE_ERRORS as exc:  # decided and committed: the dialer gets its answer
        log.error("dial_answer_not_stored", decision_id=decision_id,
                  error=type(exc).__name__)
    return Decided(stored, new=True)


async def _decide(app: web.Application, client: store.Client, dial: DialRequest,
                  request_id: str | None, front: str, claimed_at: dt.datetime
                  ) -> tuple[int, dict[str, Any]]:
    committed = await app[GATE].decide_and_commit(
        Proposal("voice", dial.to, dial.from_, automated=dial.automated),
        Caller.of(client, request_id, front),
        details={"dial": {"call_id": dial.call_id, "automated": dial.automated}},
        dial_claim=store.DialClaim(dial.call_id, claimed_at))
    evaluation = committed.entry.evaluation
    decision = evaluation.decision
    add_to_request(decision_id=committed.decision_id, channel="voice",
                   decision=decision.decision, reason=decision.reason, basis=decision.basis,
                   to=evaluation.contact.to)
    return committed.decision_id, answer.decided(decision, committed.decision_id)


async def _replay(app: web.Application, client: store.Client, dial: DialRequest,
                  request_id: str | None, front: str, earlier: attempts.Attempt
                  ) -> Decided:
    """The same call_id again: the first answer, once there is one."""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
    pause = 0.005
    while True:
        if earlier.request_hash != dial.fingerprint():
            raise BadInput("this call_id was used in the last 24 hours for another to, from "
                           "or automated", "call_id")
        if earlier.answer is not None:
            log.info("dial_replay", decision_id=earlier.answer["decision_id"])
            return Decided(earlier.answer, new=False)
        if time.monotonic() >= deadline:
            raise Conflict("a decision for this call_id is still being made; repeat the "
                           "request", "call_id")
        await asyncio.sleep(pause)  # the first request is deciding: a few milliseconds
        pause = min(pause * 2, 0.1)
        found = await attempts.find(app[POOL], client.id, dial.call_id)
        if found is None:  # its decision failed and the claim was dropped: decide now
            return await decide(app, client, dial, request_id, front)
        earlier = found


async def record_outcome(app: web.Application, client: store.Client, decision_id: int,
                         status: OutcomeStatus) -> str:
    """Record how the attempt `decision_id` allowed ended, once. An attempt that reached
    nobody gives back what its decision used up (N5, N6). Only the client's own dial
    decisions are found (NotFound); a denial's outcome, or a second status, is a Conflict."""
    found = await attempts.dial_decision(app[POOL], client.id, decision_id)
    if found is None:
        raise NotFound("no such decision of this client", "decision_id")
    if not found.allowed:
        raise Conflict("the decision denied the call: no attempt was made", "decision_id")
    if status == "answered" and found.given_back:
        # N6: what it consumed was given back (the channel hung up, or an outcome said
        # nobody was reached): recording it answered would leave a reached contact whose
        # request is free for another.
        raise Conflict("what this decision consumed was given back as not reached: no call "
                       "was placed under it", "status")
    stored = await attempts.record_outcome(app[POOL], decision_id, status, app[CLOCK]())
    if stored != status:
        raise Conflict(f"the outcome {stored!r} is already recorded for this decision",
                       "status")
    if stored in NOT_REACHED:  # again on a repeat: giving back happens once (proxy/store/)
        await app[GATE].give_back(decision_id, "not_reached", stored)
    add_to_request(decision_id=decision_id, outcome=stored)
    return stored
