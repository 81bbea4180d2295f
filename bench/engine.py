"""Item 2: decisions per second of the pure engine, in-process, on one core.

The facts look like a real organisation's file: several consents per number (the matching
one, one for the other channel, an old withdrawn one for another topic), a customer
relationship, sometimes an objection; calls and SMS; moments spread over a whole week, so
calls also meet closed hours, Sundays and their retry_after computation.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from proxy.policy import decide
from proxy.policy.facts import (
    Channel,
    Consent,
    Contact,
    ContactChannel,
    Facts,
    Objection,
    Organisation,
    Relationship,
    Sender,
    Subject,
)
from proxy.settings import RuleSettings

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
ORG = Organisation(id="bench-energie", name="Energie BV", sector="commercial")
SENDER = Sender(sender="+31201234567", organisation_id=ORG.id, topic="energy/electricity")
WEEK_START = dt.datetime(2026, 11, 23, tzinfo=AMSTERDAM)  # a Monday
CASES = 2_000


@dataclass(frozen=True, slots=True)
class Case:
    contact: Contact
    facts: Facts
    now: dt.datetime


def _consents(rng: random.Random, channel: ContactChannel, now: dt.datetime,
              ids: Counter[str]) -> tuple[Consent, ...]:
    def consent(channel: Channel, topics: tuple[str, ...], days_ago: int,
                withdrawn: bool = False) -> Consent:
        ids["consent"] += 1
        given = now - dt.timedelta(days=days_ago)
        return Consent(id=ids["consent"], organisation_id=ORG.id, channel=channel,
                       topics=topics, kind="opt_in", given_at=given, provenance="self_provided",
                       verified_at=given + dt.timedelta(minutes=5),
                       withdrawn_at=given + dt.timedelta(days=1) if withdrawn else None)

    other: Channel = "sms" if channel == "voice" else "voice"
    found = [consent(other, ("energy",), rng.randrange(1, 300)),
             consent(channel, ("insurance",), rng.randrange(200, 900), withdrawn=True)]
    if rng.random() < 0.8:  # the rest must fall back to the relationship, or fail
        found.append(consent(channel, ("energy",), rng.randrange(1, 170)))
    return tuple(found)


def _case(rng: random.Random, ids: Counter[str]) -> Case:
    channel: ContactChannel = rng.choice(("voice", "sms"))
    now = WEEK_START + dt.timedelta(minutes=rng.randrange(7 * 24 * 60))
    number = f"+3161{rng.randrange(10**7):07d}"
    ids["relationship"] += 1
    relationship = Relationship(
        id=ids["relationship"], organisation_id=ORG.id, kind="customer", topics=("energy/gas",),
        started_at=now - dt.timedelta(days=2000),
        ended_at=now - dt.timedelta(days=rng.randrange(100, 1500)),
        provenance="self_provided", opt_out_offered=True)
    objections: tuple[Objection, ...] = ()
    if rng.random() < 0.1:
        ids["objection"] += 1
        objections = (Objection(id=ids["objection"], organisation_id=ORG.id, channel=None,
                                received_at=now - dt.timedelta(days=3), via="letter"),)
    facts = Facts(organisation=ORG, subject=Subject(number=number),
                  consents=_consents(rng, channel, now, ids), relationships=(relationship,),
                  objections=objections)
    contact = Contact(channel=channel, to=number, from_=SENDER.sender, sender=SENDER,
                      body_has_opt_out=False if channel == "sms" else None)
    return Case(contact, facts, now)


def cases(count: int = CASES, seed: int = 3) -> list[Case]:
    rng = random.Random(seed)
    ids: Counter[str] = Counter()
    return [_case(rng, ids) for _ in range(count)]


def _rate(work: list[Case], rules: RuleSettings) -> float:
    started = time.perf_counter()
    for case in work:
        decide(case.contact, case.facts, rules, case.now)
    return len(work) / (time.perf_counter() - started)


def measure(decisions: int, rules: RuleSettings | None = None,
            repeats: int = 5) -> dict[str, Any]:
    """Time `decisions` calls of decide() over the cases, round-robin, single-threaded, in
    `repeats` equal parts; the median part's rate is the result (the bench VM's CPU speed
    drifts within seconds, so one long timing would be a lottery)."""
    rules = rules or RuleSettings()
    prepared = cases()
    outcomes = Counter(decide(c.contact, c.facts, rules, c.now).reason for c in prepared)
    per_part = max(1, decisions // repeats)
    rounds, rest = divmod(per_part, len(prepared))
    work = prepared * rounds + prepared[:rest]
    rates = [_rate(work, rules) for _ in range(repeats)]
    median = statistics.median(rates)
    return {
        "decisions": len(work) * repeats, "repeats": repeats,
        "decisions_per_s": round(median), "best_decisions_per_s": round(max(rates)),
        "all_decisions_per_s": [round(r) for r in rates],
        "us_per_decision": round(1e6 / median, 2), "distinct_cases": len(prepared),
        "reason_mix": {reason: round(n / len(prepared), 3) for reason, n in
                       outcomes.most_common()},
    }
