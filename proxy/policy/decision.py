"""The engine's answer: allow or deny, why, on what basis, and what the caller must do next."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypedDict

import msgspec

Verdict = Literal["allow", "deny"]


class EvidenceRef(TypedDict):
    """A reference to a record on file, e.g. {"type": "consent", "id": 12}.

    Types: consent (opt-in consents and contact requests alike), relationship, objection,
    sender (id: the sender number), subject (id: the number), and for calendar denials the day
    kind (closed_date, holiday, sunday, saturday, weekday, short_day; id: the ISO local date).
    """

    type: str
    id: int | str


class Explanation(TypedDict):
    """One sentence a compliance officer can read, in English and Dutch."""

    en: str
    nl: str


class Decision(msgspec.Struct, frozen=True, gc=False):
    """One decision, a frozen struct like the facts (proxy/policy/facts.py). `consumes` and
    `first_use` are instructions to the store, which records them in the same transaction as
    the decision (N6: a request covers one contact; N5: the first call under a consent starts
    no new term once made)."""

    decision: Verdict
    reason: str
    rule: str
    explanation: Explanation
    basis: str | None = None
    evidence: tuple[EvidenceRef, ...] = ()
    retry_after: dt.datetime | None = None
    obligations: tuple[str, ...] = ()
    consumes: int | None = None
    first_use: int | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: lists for tuples, ISO 8601 strings for datetimes."""
        return {
            "decision": self.decision,
            "reason": self.reason,
            "basis": self.basis,
            "rule": self.rule,
            "evidence": [dict(ref) for ref in self.evidence],
            "retry_after": self.retry_after.isoformat() if self.retry_after else None,
            "obligations": list(self.obligations),
            "explanation": dict(self.explanation),
            "consumes": self.consumes,
            "first_use": self.first_use,
        }
