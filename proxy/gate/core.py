"""The Gate: the steps every gated request takes, whichever way it came in.

claim (an idempotency key) → decide (the outage spool first, then number parsing, one fact
lookup, the engine) → commit (the decision row, with the request it consumes, in the group
commit; nothing may go out before) → finish (the outcome row; what no contact followed is
given back). Built once per app from its pool, batchers, rules, clock and metrics; adapters
reach it under one app key and speak to it in plain values (proxy/gate/values.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from proxy import sms, store
from proxy.db import STORE_ERRORS
from proxy.errors import StoreUnavailable
from proxy.gate import consumption
from proxy.gate.evaluation import Evaluation, FactLoader, evaluate, sender_key
from proxy.gate.values import (
    Answer,
    Caller,
    Claim,
    Clock,
    Committed,
    E,
    Entry,
    GiveBack,
    Outcome,
    Proposal,
    Recordable,
)
from proxy.optout_spool import SpoolDrain
from proxy.policy.facts import Organisation, Sender
from proxy.settings import RuleSettings
from proxy.writer import GroupCommit

if TYPE_CHECKING:
    from proxy.metrics import Metrics

log = structlog.get_logger("proxy.gate")

# How often a decision is made again after a concurrent contact used its request first: once
# per contender, so a few; beyond this the request is refused (503) rather than looped on.
MAX_DECIDE_AGAIN = 8


class Gate:
    def __init__(self, *, pool: asyncpg.Pool, load_facts: FactLoader, writer: GroupCommit,
                 rules: RuleSettings, clock: Clock, metrics: Metrics,
                 drain: SpoolDrain) -> None:
        self._pool, self._load_facts, self._writer = pool, load_facts, writer
        self.rules, self.clock = rules, clock
        self._metrics, self._drain = metrics, drain

    # --- idempotency ----------------------------------------------------------------------

    async def claim(self, caller: Caller, token: str, request_hash: str) -> Claim:
        """Look up this client's idempotency key. A new key is claimed by the commit of the
        decision it leads to (`commit(..., claim=)`), atomically, so of two identical
        requests at once only one is decided."""
        key = store.IdempotencyClaim(caller.client_id, token, request_hash)
        stored = await store.find_idempotent(self._pool, caller.client_id, token, self.clock())
        if stored is not None and stored.status is None:
            # The first request may be answered with its outcome still queued: wait for that.
            await self._writer.sync()
            stored = await store.find_idempotent(self._pool, caller.client_id, token,
                                                 self.clock())
        if stored is None:
            return Claim(key, "new")
        if stored.request_hash != request_hash:
            return Claim(key, "mismatch")
        if stored.status is None:
            return Claim(key, "in_flight")
        log.info("idempotent_replay", status=stored.status)
        return Claim(key, "replay", Answer(stored.status, stored.body, stored.content_type))

    # --- deciding -------------------------------------------------------------------------

    async def apply_spool(self) -> None:
        """N11: an objection blocks from the moment it is received. A STOP still in the spool
        (it came while the database could not be written) is applied before any decision is
        made, rather than when the drain's backoff next comes round: a decision never
        overlooks a STOP this gate has answered. While the database is still out, the store's
        error fails the decision closed (503); an entry that cannot be applied for another
        reason also stops every decision (503, `optout_spool_blocks_decisions`) until it is
        dealt with, because deciding past it could reach the person who sent it."""
        if not self._drain.spool.entries:
            return
        try:
            await self._drain.apply_pending()
        except STORE_ERRORS:
            raise
        except Exception as exc:
            log.exception("optout_spool_blocks_decisions", entries=self._drain.spool.entries)
            raise StoreUnavailable("a STOP received during an outage cannot be applied; no "
                                   "decision is made until it is (see the proxy log)") from exc

    async def decide(self, proposal: Proposal, caller: Caller, *,
                     now: dt.datetime | None = None) -> Evaluation:
        """The outage spool first, then the decision (not yet recorded)."""
        if self._drain.spool.entries:
            await self.apply_spool()
        return await self.evaluate(proposal, caller, now=now)

    def evaluate(self, proposal: Proposal, caller: Caller, *,
                 now: dt.datetime | None = None) -> Awaitable[Evaluation]:
        """A decision without applying the spool first: for more contacts of one request
        (a call's destinations) once `decide` or `apply_spool` has. Only senders of the
        caller's organisations count as registered."""
        return evaluate(
            self._load_facts, self.rules, channel=proposal.channel, to_raw=proposal.to,
            from_raw=proposal.from_, now=now or self.clock(), topic=proposal.topic,
            organisations=caller.organisations, body_check=_body_check(proposal),
            content_template=proposal.content_template, automated=proposal.automated)

    async def sender_of(self, caller: Caller, from_raw: str | None
                        ) -> tuple[Sender | None, Organisation | None]:
        """The registered sender behind `from_raw` and its organisation, if it is one of the
        caller's: for a decision the engine did not make (nothing to look up but that)."""
        key = sender_key(from_raw)
        found = await store.load_sender(self._pool, key) if key else None
        if found is None or found[0].organisation_id not in caller.organisations:
            return None, None
        return found

    # --- committing -----------------------------------------------------------------------

    async def commit(self, caller: Caller, entry: E, *, decided_at: dt.datetime,
                     claim: Claim | None = None,
                     again: Callable[[], Awaitable[E]] | None = None,
                     dial_claim: store.DialClaim | None = None) -> Committed[E]:
        """Commit the decision row (the group commit: the request it consumes, the first call
        it marks and the idempotency key go with it). N6: when a concurrent contact used the
        request first, nothing is written and `again` decides once more on fresh facts. With
        `dial_claim`, nothing is written either once that call_id's claim was taken over
        (store.DialClaimLost)."""
        assert claim is None or claim.state == "new"
        key = claim.key if claim is not None else None
        for tries in itertools.count(1):
            try:
                decision_id, claimed = await self._writer.decision(
                    _record(caller, entry, decided_at, dial_claim), key)
                break
            except store.RequestAlreadyUsed as exc:
                # N6: each lost race means a concurrent contact took a request; the next
                # evaluation sees it used. Bounded, so a storm of contenders fails closed.
                if again is None:
                    raise
                if tries >= MAX_DECIDE_AGAIN:
                    raise StoreUnavailable("the contact requests on file kept being used by "
                                           "concurrent contacts; ask again") from exc
                entry = await again()
        decision = entry.evaluation.decision
        self._metrics.decisions.labels(caller.front or "", entry.evaluation.contact.channel,
                                       decision.decision, decision.reason).inc()
        return Committed(entry, decision_id, claimed)

    async def decide_and_commit(self, proposal: Proposal, caller: Caller, *,
                                details: dict[str, Any] | None = None,
                                claim: Claim | None = None,
                                dial_claim: store.DialClaim | None = None
                                ) -> Committed[Entry]:
        """`decide` and `commit` for a request that is one contact and nothing more."""
        decided_at = self.clock()

        async def attempt() -> Entry:
            evaluation = await self.decide(proposal, caller, now=decided_at)
            return Entry(evaluation, details or {})

        return await self.commit(caller, await attempt(), decided_at=decided_at, claim=claim,
                                 again=attempt, dial_claim=dial_claim)

    # --- finishing ------------------------------------------------------------------------

    async def finish(self, decision_id: int, answer: Answer, *, outcome: Outcome | None,
                     claim: Claim | None = None, give_back: GiveBack | None = None) -> None:
        """Record what happened: `give_back` first (N5/N6: no contact followed), then the
        outcome row, queued for the next group commit (the answer does not wait for it), or
        with no outcome (a denial) only the answer for the claim's replays. If the store
        fails now, the caller still gets its answer: a 503 for a message that did go out
        would make it send again."""
        if give_back is not None:
            await self.give_back(decision_id, give_back.why, give_back.detail)
        key = claim.key if claim is not None else None
        try:
            if outcome is not None:
                queued = self._writer.outcome(store.outcome_args(
                    decision_id, upstream_status=outcome.upstream_status,
                    upstream_sid=outcome.upstream_sid, error=outcome.error,
                    response_status=answer.status, response=answer.body,
                    content_type=answer.content_type, claim=key))
                queued.add_done_callback(functools.partial(_outcome_written, decision_id,
                                                           outcome))
                if key is not None:
                    # A replay of this token may reach another gate, which cannot wait for
                    # this gate's queue: the answer leaves once the answer stored for the
                    # replays is committed (a failure is logged by _outcome_written).
                    await asyncio.wait((queued,))
            elif key is not None:
                await store.complete_idempotent(self._pool, key, answer.status, answer.body,
                                                answer.content_type)
        except STORE_ERRORS as exc:
            _outcome_not_recorded(decision_id, outcome, exc)

    async def give_back(self, decision_id: int, why: store.ReversalWhy,
                        detail: str | None = None) -> store.Reversal | None:
        """N5/N6: reverse what a decision consumed, once (proxy/gate/consumption.py)."""
        return await consumption.give_back(self._pool, decision_id, why, detail, self.clock())


def _body_check(proposal: Proposal) -> Callable[[Organisation], bool] | None:
    """N17: once the organisation is known, does the SMS body carry its opt-out line? The
    footer names the sender as registered, as it goes out (a look-alike spelling too)."""
    if proposal.body is None:
        return None
    body = proposal.body
    sender = sender_key(proposal.from_) or proposal.from_ or ""

    def check(org: Organisation) -> bool:
        footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
        return sms.has_opt_out(body, footer, sender)

    return check


def _record(caller: Caller, entry: Recordable, decided_at: dt.datetime,
            dial_claim: store.DialClaim | None = None) -> store.DecisionRecord:
    ev = entry.evaluation
    return store.DecisionRecord(
        decision=ev.decision, decided_at=decided_at, channel=ev.contact.channel,
        request_id=caller.request_id, client_id=caller.client_id,
        sender=ev.contact.from_ or None,
        organisation_id=ev.facts.organisation.id if ev.facts.organisation else None,
        subject=ev.contact.to, topic=ev.contact.effective_topic, details=entry.details,
        dial_claim=dial_claim, front=caller.front,
    )


def _outcome_written(decision_id: int, outcome: Outcome, queued: asyncio.Future[Any]) -> None:
    if not queued.cancelled() and (exc := queued.exception()) is not None:
        _outcome_not_recorded(decision_id, outcome, exc)


def _outcome_not_recorded(decision_id: int, outcome: Outcome | None,
                          exc: BaseException) -> None:
    # The SID goes to the log instead, so what was sent can still be traced.
    log.error("outcome_not_recorded", decision_id=decision_id,
              sid=outcome.upstream_sid if outcome else None,
              upstream_status=outcome.upstream_status if outcome else None,
              error=type(exc).__name__)
