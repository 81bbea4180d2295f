"""What goes into the gate and what comes out of it: plain frozen values that know no wire
format. An adapter reads its request into a `Proposal` and a `Caller`, and renders what comes
back (`Claim`, `Evaluation`, `Committed`) in its own protocol."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import msgspec

from proxy import store
from proxy.gate.evaluation import Evaluation
from proxy.policy import Decision
from proxy.policy.facts import ContactChannel

Clock = Callable[[], dt.datetime]


class Proposal(msgspec.Struct, frozen=True, gc=False):
    """A proposed contact, as the caller spelled it: the gate parses and decides it."""

    channel: ContactChannel
    to: str | None
    from_: str | None
    topic: str | None = None
    automated: bool = False  # N2: a call is automated voice whatever its sender says
    # N17: an SMS's text; the gate tells whether it already carries the opt-out line of the
    # sender's organisation (None: not an SMS, nothing to check).
    body: str | None = None
    content_template: bool = False  # N17: the SMS is a template, whose body is not what is sent


class Caller(msgspec.Struct, frozen=True, gc=False):
    """Who asks: a client (a dialer's credentials), the organisations whose senders it may
    use, the request's id and the way in it came through (a front's name), both for the
    decision row."""

    client_id: str
    organisations: tuple[str, ...]
    request_id: str | None = None
    front: str | None = None

    @classmethod
    def of(cls, client: store.Client, request_id: str | None, front: str) -> Caller:
        return cls(client.id, client.organisations, request_id, front)


class Recordable(Protocol):
    """What a decision row records: the evaluation and the adapter's own details."""

    @property
    def evaluation(self) -> Evaluation: ...

    @property
    def details(self) -> dict[str, Any]: ...


class Entry(msgspec.Struct, frozen=True, gc=False):
    """The plain Recordable: an evaluation and the details stored beside it."""

    evaluation: Evaluation
    details: dict[str, Any] = msgspec.field(default_factory=dict)


E = TypeVar("E", bound=Recordable)


@dataclass(frozen=True, slots=True)
class Committed(Generic[E]):
    """A decision whose row is committed (with the request it consumed, N5/N6): only now may
    anything go out on it."""

    entry: E
    decision_id: int
    claimed: bool  # the idempotency key, if any, was claimed with the row

    @property
    def evaluation(self) -> Evaluation:
        return self.entry.evaluation

    @property
    def decision(self) -> Decision:
        return self.entry.evaluation.decision


class Answer(msgspec.Struct, frozen=True, gc=False):
    """What the caller was answered, as bytes: kept for a replay of its idempotency key."""

    status: int
    body: bytes
    content_type: str


ClaimState = Literal["new", "replay", "in_flight", "mismatch"]


class Claim(msgspec.Struct, frozen=True, gc=False):
    """An idempotency key looked up before deciding. `new`: decide, and the decision's commit
    claims the key; `replay`: the first request's `answer`, nothing is decided again;
    `in_flight`: the first request has no answer yet; `mismatch`: the key was used in the last
    24 hours for another request."""

    key: store.IdempotencyClaim
    state: ClaimState
    answer: Answer | None = None


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What happened to a committed decision after it was made."""

    upstream_status: int | None = None
    upstream_sid: str | None = None
    error: str | None = None


class GiveBack(msgspec.Struct, frozen=True, gc=False):
    """N5/N6: no contact followed the decision; what it consumed is given back."""

    why: store.ReversalWhy
    detail: str | None = None
