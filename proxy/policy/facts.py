"""Plain data the decision engine reads: the proposed contact and the facts on file.

The store builds these from one query; the engine never sees a database row or a request.
All datetimes are timezone-aware. Frozen msgspec structs: immutable like frozen dataclasses,
and built a tenth as fast (a scrub builds one set of facts per number held). Values that
never refer back to what holds them, so the garbage collector need not track them
(gc=False).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

# N2: automated voice (pre-recorded / AI, no human) is a channel of its own: a consent to be
# called by a person does not cover it.
Channel = Literal["voice", "automated_voice", "sms", "email"]
ContactChannel = Literal["voice", "sms"]
Sector = Literal["commercial", "charity", "lottery", "press"]
SubjectKind = Literal["person", "business"]
Purpose = Literal["marketing", "service"]
ConsentKind = Literal["opt_in", "request"]
Provenance = Literal["self_provided", "purchased", "enriched", "unknown"]
RelationshipKind = Literal["customer", "donor", "volunteer", "attendee", "petition"]

CHANNELS: tuple[Channel, ...] = ("voice", "automated_voice", "sms", "email")
SECTORS: tuple[Sector, ...] = ("commercial", "charity", "lottery", "press")
SUBJECT_KINDS: tuple[SubjectKind, ...] = ("person", "business")
PURPOSES: tuple[Purpose, ...] = ("marketing", "service")
CONSENT_KINDS: tuple[ConsentKind, ...] = ("opt_in", "request")
PROVENANCES: tuple[Provenance, ...] = ("self_provided", "purchased", "enriched", "unknown")
RELATIONSHIP_KINDS: tuple[RelationshipKind, ...] = (
    "customer", "donor", "volunteer", "attendee", "petition",
)


class Organisation(msgspec.Struct, frozen=True, gc=False):
    id: str
    name: str
    sector: Sector
    customer_term_months: int = 36
    sms_footer: str | None = None
    stop_reply: str | None = None
    # N17: the organisation declares that its content templates (Twilio ContentSid) carry its
    # opt-out line; without it a marketing SMS sent as a template is refused.
    content_templates_carry_opt_out: bool = False


class Sender(msgspec.Struct, frozen=True, gc=False):
    """A caller ID / SMS sender: who is calling and about what (N16)."""

    sender: str
    organisation_id: str
    topic: str
    purpose: Purpose = "marketing"
    automated: bool = False
    inbound_webhook: str | None = None


class Subject(msgspec.Struct, frozen=True, gc=False):
    number: str
    kind: SubjectKind = "person"
    published_for_marketing: bool = False  # N9


class Consent(msgspec.Struct, frozen=True, gc=False):
    id: int
    organisation_id: str
    channel: Channel
    topics: tuple[str, ...]
    kind: ConsentKind
    given_at: dt.datetime
    provenance: Provenance
    expires_at: dt.datetime | None = None
    verified_at: dt.datetime | None = None
    first_contact_by: dt.datetime | None = None
    requested_start: dt.datetime | None = None  # N6/N14: requested time window
    requested_end: dt.datetime | None = None
    withdrawn_at: dt.datetime | None = None
    first_used_at: dt.datetime | None = None  # N5: first allowed contact made under it
    consumed_at: dt.datetime | None = None  # N6: a request covers one contact


class Relationship(msgspec.Struct, frozen=True, gc=False):
    id: int
    organisation_id: str
    kind: RelationshipKind
    topics: tuple[str, ...]
    started_at: dt.datetime
    provenance: Provenance
    ended_at: dt.datetime | None = None
    opt_out_offered: bool = False


class Objection(msgspec.Struct, frozen=True, gc=False):
    id: int
    organisation_id: str | None  # None: every organisation
    channel: Channel | None  # None: every channel
    received_at: dt.datetime
    via: str


class Facts(msgspec.Struct, frozen=True, gc=False):
    """Everything on file for one (subject, organisation), global objections included."""

    organisation: Organisation | None
    subject: Subject | None = None
    consents: tuple[Consent, ...] = ()
    relationships: tuple[Relationship, ...] = ()
    objections: tuple[Objection, ...] = ()


class Contact(msgspec.Struct, frozen=True, gc=False):
    """A proposed call or SMS.

    `to` is the E.164 destination, or None when it could not be parsed as a valid number.
    `sender` is None when `from_` is not a registered sender.
    `topic` overrides the sender's topic when set (check API).
    `body_has_opt_out` is None when there is no body to look at (dry-run check).
    `content_template` is True for an SMS sent as a content template, whose text the gate
    can neither read nor append to (N17).
    `from_key` is the registered form of `from_` (E.164, alphanumeric ID, MG…) or None when
    it has none: what tells a callable caller ID from one that is not (N16).
    `automated` marks a call as automated voice whatever its sender says (check API); a call
    from a sender with `automated` is automated voice too (N2).
    """

    channel: ContactChannel
    to: str | None
    from_: str
    sender: Sender | None
    topic: str | None = None
    caller_id_withheld: bool = False
    body_has_opt_out: bool | None = None
    content_template: bool = False
    from_key: str | None = None
    automated: bool = False

    @property
    def basis_channel(self) -> Channel:
        """The channel a consent or objection must name (N2): a call is `automated_voice`
        when automated, else `voice`; an SMS is `sms`."""
        if self.channel == "voice" and (
                self.automated or (self.sender is not None and self.sender.automated)):
            return "automated_voice"
        return self.channel

    @property
    def effective_topic(self) -> str | None:
        if self.topic:
            return self.topic
        return self.sender.topic if self.sender else None

    @property
    def to_is_nl(self) -> bool:
        return bool(self.to and self.to.startswith("+31"))
