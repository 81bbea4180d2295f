"""From raw request values to a decision: number parsing, one fact query, the pure engine.

Every way in decides through `evaluate` (the Gate for the fronts, the check API directly), so
all decide alike.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Collection

import asyncpg
import msgspec

from proxy import store
from proxy.errors import BadInput
from proxy.fields import parse_sender_id
from proxy.phone import plain_text, try_parse_number
from proxy.policy import Decision, decide
from proxy.policy.facts import Contact, ContactChannel, Facts, Organisation, Sender
from proxy.settings import RuleSettings

# N16: what dialers and carriers put in From when the caller ID is withheld.
WITHHELD = frozenset(
    {"", "anonymous", "private", "withheld", "restricted", "unknown", "unavailable", "blocked"}
)


class Evaluation(msgspec.Struct, frozen=True, gc=False):
    contact: Contact
    facts: Facts
    decision: Decision


@functools.lru_cache(maxsize=4096)  # a dialer sends from a handful of senders, every request
def sender_key(raw: str | None) -> str | None:
    """The registered form of a sender (E.164, alphanumeric ID, MG…), or None if it has none."""
    if raw is None:
        return None
    try:
        return parse_sender_id(raw)
    except BadInput:
        return None


# Where the facts of one (sender key, E.164 number) come from: the Gate uses its GroupFetch's
# load_facts (the query shared with concurrent lookups), other callers the store itself
# (`store_facts`).
FactLoader = Callable[[str, str], Awaitable[tuple[Sender | None, Facts]]]


def store_facts(conn: asyncpg.Pool | asyncpg.Connection) -> FactLoader:
    """Facts straight from the store, one query per lookup (the check API, tools)."""
    return functools.partial(store.load_facts, conn)


async def evaluate(
    load_facts: FactLoader,
    rules: RuleSettings,
    *,
    channel: ContactChannel,
    to_raw: str | None,
    from_raw: str | None,
    now: dt.datetime,
    topic: str | None = None,
    body_has_opt_out: bool | None = None,
    organisations: Collection[str] | None = None,
    body_check: Callable[[Organisation], bool] | None = None,
    content_template: bool = False,
    automated: bool = False,
) -> Evaluation:
    """Decide one proposed contact, on facts from `load_facts`. `organisations` limits which
    senders count as registered (a dialer may only use senders of its own organisations).
    `body_check` tells, once the organisation is known, whether an SMS body already carries
    its opt-out line (N17); `content_template`: the SMS is a content template, whose body
    is not what is sent (N17); `automated`: a call is automated voice whatever its sender
    says (N2)."""
    to = try_parse_number(to_raw)
    key = sender_key(from_raw)
    if to is not None and key is not None:
        sender, facts = await load_facts(key, to)
    else:  # the engine denies on the request alone; nothing to look up
        sender, facts = None, Facts(organisation=None)
    if sender is not None and organisations is not None and (
        sender.organisation_id not in organisations
    ):
        sender, facts = None, Facts(organisation=None)
    if body_check is not None and facts.organisation is not None:
        body_has_opt_out = body_check(facts.organisation)
    contact = Contact(
        channel=channel,
        to=to,
        from_=from_raw or "",
        sender=sender,
        topic=topic,
        caller_id_withheld=plain_text(from_raw or "").strip().lower() in WITHHELD,
        body_has_opt_out=body_has_opt_out,
        content_template=content_template,
        from_key=key,
        automated=automated,
    )
    return Evaluation(contact, facts, decide(contact, facts, rules, now))
