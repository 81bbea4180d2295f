"""Table tests for the Dutch rule pack, one table per rule (nl-rules N1-N17, §7 order).

Pure: no database, no network, no clock. Every case pins `now`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest
from msgspec.structs import replace

from proxy.policy import (
    ALLOWED,
    BUSINESS_ENTITY,
    CALLER_ID_NOT_CALLABLE,
    CALLER_ID_WITHHELD,
    CHARITY_RELATION,
    CONSENT,
    CONSENT_EXPIRED,
    CONSENT_FIRST_CONTACT_LATE,
    CONSENT_UNVERIFIED,
    CONSENT_WITHDRAWN,
    CONSENT_WRONG_CHANNEL,
    CONSENT_WRONG_TOPIC,
    CONTACT_REQUEST,
    CUSTOMER,
    CUSTOMER_EXCEPTION_ENDED,
    CUSTOMER_TERM_EXPIRED,
    DENY_REASONS,
    DESTINATION_NOT_ALLOWED,
    INVALID_NUMBER,
    NO_LEGAL_BASIS,
    NOT_MARKETING,
    NUMBER_PROVENANCE_INVALID,
    OBJECTION_ON_FILE,
    OPT_OUT_APPENDED,
    OPT_OUT_NOT_APPENDABLE,
    OUTSIDE_CALLING_HOURS,
    PROHIBITED_DAY,
    PUBLISHED_NUMBER,
    REASONS,
    TOPIC_NOT_SIMILAR,
    UNKNOWN_SENDER,
    Decision,
    decide,
)
from proxy.policy.facts import (
    Channel,
    Consent,
    Contact,
    ContactChannel,
    Facts,
    Objection,
    Organisation,
    Provenance,
    Relationship,
    RelationshipKind,
    Sender,
    Subject,
)
from proxy.policy.hours import next_allowed
from proxy.settings import CallingHours, RuleSettings

AMS = ZoneInfo("Europe/Amsterdam")
UTC = dt.UTC


def at(y: int, mo: int, d: int, h: int = 14, mi: int = 0, s: int = 0, us: int = 0) -> dt.datetime:
    """Amsterdam wall time."""
    return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=AMS)


NOW = at(2026, 3, 10)  # a Tuesday afternoon, before the 2026-07-01 regime change
AFTER = at(2026, 7, 7)  # a Tuesday afternoon, after it
SUNDAY = at(2026, 3, 15, 12)
DAY = dt.timedelta(days=1)
STARTED = at(2020, 1, 6)

ORG = Organisation("org-1", "Acme Energie", "commercial")
CHARITY = Organisation("org-1", "Goed Doel", "charity")
LOTTERY = Organisation("org-1", "Loterij", "lottery")
PRESS = Organisation("org-1", "Krant", "press")
SENDER = Sender("+31201234567", "org-1", "energy/gas")
ROBOT = replace(SENDER, automated=True)
SERVICE = replace(SENDER, purpose="service")
TO = "+31612345678"
ABROAD = "+4915112345678"
PERSON = Subject(TO)
BUSINESS = Subject(TO, kind="business")
PUBLISHED = Subject(TO, published_for_marketing=True)
DEFAULT = RuleSettings()
DENY_ABROAD = RuleSettings(other_destinations="deny")
PETITIONS = RuleSettings(petition_signers_are_relations=True)
PUBLISHED_ON = RuleSettings(published_number_basis=True)
US = dt.timedelta(microseconds=1)


def contact(
    channel: ContactChannel = "voice", *, to: str | None = TO, sender: Sender | None = SENDER,
    topic: str | None = None, withheld: bool = False, body_has_opt_out: bool | None = None,
    from_key: str | None = None, automated: bool = False,
) -> Contact:
    """`from_key`: the From as given and as the gate keys it (default: the sender's)."""
    key = from_key if from_key is not None else (sender.sender if sender else None)
    return Contact(channel, to, key or "+31201234567", sender, topic, withheld,
                   body_has_opt_out, from_key=key, automated=automated)


VOICE = contact()
SMS = contact("sms")


def consent(
    ident: int = 1, *, channel: Channel = "voice", topics: tuple[str, ...] = ("energy",),
    org: str = "org-1", given: dt.datetime = NOW - 30 * DAY,
    provenance: Provenance = "self_provided",
    verified: dt.datetime | str | None = "given", expires: dt.datetime | None = None,
    withdrawn: dt.datetime | None = None, first_used: dt.datetime | None = None,
    first_contact_by: dt.datetime | None = None,
) -> Consent:
    verified_at = given + DAY if verified == "given" else verified
    assert not isinstance(verified_at, str)
    return Consent(
        ident, org, channel, topics, "opt_in", given, provenance,
        expires_at=expires, verified_at=verified_at, first_contact_by=first_contact_by,
        withdrawn_at=withdrawn, first_used_at=first_used,
    )


def request(
    ident: int = 5, *, channel: Channel = "voice", topics: tuple[str, ...] = ("energy/gas",),
    org: str = "org-1", given: dt.datetime = NOW - DAY, provenance: Provenance = "self_provided",
    start: dt.datetime | None = None, end: dt.datetime | None = None,
    consumed: dt.datetime | None = None, expires: dt.datetime | None = None,
    withdrawn: dt.datetime | None = None,
) -> Consent:
    return Consent(
        ident, org, channel, topics, "request", given, provenance,
        expires_at=expires, requested_start=start, requested_end=end, consumed_at=consumed,
        withdrawn_at=withdrawn,
    )


def relation(
    ident: int = 10, *, kind: RelationshipKind = "customer",
    topics: tuple[str, ...] = ("energy/electricity",), org: str = "org-1",
    started: dt.datetime = STARTED, ended: dt.datetime | None = None,
    provenance: Provenance = "self_provided", opt_out: bool = True,
) -> Relationship:
    return Relationship(ident, org, kind, topics, started, provenance, ended_at=ended,
                        opt_out_offered=opt_out)


def objection(
    ident: int = 20, *, org: str | None = "org-1", channel: Channel | None = None,
    received: dt.datetime = NOW - DAY,
) -> Objection:
    return Objection(ident, org, channel, received, "sms")


def facts(
    *records: Consent | Relationship | Objection, org: Organisation | None = ORG,
    subject: Subject | None = PERSON,
) -> Facts:
    return Facts(
        org, subject,
        tuple(r for r in records if isinstance(r, Consent)),
        tuple(r for r in records if isinstance(r, Relationship)),
        tuple(r for r in records if isinstance(r, Objection)),
    )


Refs = tuple[tuple[str, int | str], ...]


@dataclass(frozen=True)
class Case:
    contact: Contact
    facts: Facts
    reason: str
    rule: str
    basis: str | None = None
    now: dt.datetime = NOW
    settings: RuleSettings = field(default=DEFAULT)
    evidence: Refs | None = None


def case(
    name: str, contact: Contact, facts: Facts, reason: str, rule: str, basis: str | None = None,
    *, now: dt.datetime = NOW, settings: RuleSettings = DEFAULT, evidence: Refs | None = None,
) -> object:
    """One table row; `name` starts with the rule id and becomes the test id."""
    return pytest.param(Case(contact, facts, reason, rule, basis, now, settings, evidence),
                        id=name)


def check(c: Case) -> Decision:
    d = decide(c.contact, c.facts, c.settings, c.now)
    assert (d.reason, d.rule, d.basis) == (c.reason, c.rule, c.basis), d.explanation["en"]
    assert d.decision == ("allow" if c.reason == ALLOWED else "deny")
    if c.evidence is not None:
        assert tuple((e["type"], e["id"]) for e in d.evidence) == c.evidence
    assert d.explanation["en"]
    assert d.explanation["nl"]
    return d


# -- §7.1: the request itself (N4 invalid number, N16 sender and caller ID, N4 destinations) ---

PRECONDITIONS = [
    case("N4-deny-no-number", contact(to=None), facts(consent()), INVALID_NUMBER, "N4"),
    case("N4-deny-not-e164", contact(to="0612345678"), facts(consent()), INVALID_NUMBER, "N4"),
    case("N4-deny-letters", contact(to="+31 6 1234"), facts(consent()), INVALID_NUMBER, "N4"),
    case("N4-allow-valid-number", VOICE, facts(consent()), ALLOWED, "N5", CONSENT),
    case("N4-deny-invalid-before-unknown-sender", contact(to=None, sender=None), facts(),
         INVALID_NUMBER, "N4"),
    case("N16-deny-unknown-sender", contact(sender=None), facts(consent()), UNKNOWN_SENDER, "N16"),
    case("N16-deny-organisation-missing", VOICE, facts(consent(), org=None), UNKNOWN_SENDER,
         "N16"),
    case("N16-deny-sender-of-other-organisation", contact(sender=replace(SENDER,
         organisation_id="org-2")), facts(consent()), UNKNOWN_SENDER, "N16"),
    case("N16-deny-caller-id-withheld", contact(withheld=True), facts(consent()),
         CALLER_ID_WITHHELD, "N16"),
    # A withheld From is never registered: it must be named as withheld, not as unknown.
    case("N16-deny-withheld-before-unknown", contact(sender=None, withheld=True), facts(),
         CALLER_ID_WITHHELD, "N16"),
    case("N16-allow-registered-sender-shown", VOICE, facts(consent()), ALLOWED, "N5", CONSENT),
    case("N4-deny-abroad-when-configured-deny", contact(to=ABROAD), facts(consent()),
         DESTINATION_NOT_ALLOWED, "N4", settings=DENY_ABROAD),
    case("N4-deny-abroad-beats-service-sender", contact(to=ABROAD, sender=SERVICE), facts(),
         DESTINATION_NOT_ALLOWED, "N4", settings=DENY_ABROAD),
    case("N4-allow-abroad-consent-only-with-consent", contact(to=ABROAD), facts(consent()),
         ALLOWED, "N5", CONSENT),
    case("N4-allow-abroad-consent-only-with-request", contact(to=ABROAD), facts(request()),
         ALLOWED, "N6", CONTACT_REQUEST),
    case("N4-allow-abroad-no-dutch-calling-hours", contact(to=ABROAD), facts(consent()),
         ALLOWED, "N5", CONSENT, now=SUNDAY),
    case("N4-deny-abroad-relationship-is-not-enough", contact(to=ABROAD), facts(relation()),
         NO_LEGAL_BASIS, "N4"),
    case("N4-deny-abroad-published-number-is-not-enough", contact(to=ABROAD),
         facts(subject=PUBLISHED), NO_LEGAL_BASIS, "N4", settings=PUBLISHED_ON),
    case("N4-deny-abroad-business-is-not-enough", contact(to=ABROAD), facts(subject=BUSINESS),
         NO_LEGAL_BASIS, "N4"),
    case("N4-deny-abroad-consent-failure-is-reported", contact(to=ABROAD),
         facts(consent(expires=NOW - DAY)), CONSENT_EXPIRED, "N5"),
]


@pytest.mark.parametrize("c", PRECONDITIONS)
def test_n4_n16_preconditions(c: Case) -> None:
    check(c)


# -- N3: service senders -----------------------------------------------------------------------

SERVICE_CASES = [
    case("N3-allow-service-without-basis", contact(sender=SERVICE), facts(), ALLOWED, "N3",
         NOT_MARKETING, evidence=(("sender", "+31201234567"),)),
    case("N3-allow-service-despite-objection", contact(sender=SERVICE), facts(objection()),
         ALLOWED, "N3", NOT_MARKETING),
    case("N3-allow-service-call-on-sunday", contact(sender=SERVICE), facts(), ALLOWED, "N3",
         NOT_MARKETING, now=SUNDAY),
    case("N3-deny-marketing-sender-is-gated", VOICE, facts(), NO_LEGAL_BASIS, "N5",
         evidence=()),
    case("N3-deny-withheld-service-call", contact(sender=SERVICE, withheld=True), facts(),
         CALLER_ID_WITHHELD, "N16"),
]


@pytest.mark.parametrize("c", SERVICE_CASES)
def test_n3_service_sender(c: Case) -> None:
    check(c)


def test_n3_service_sms_carries_no_opt_out_obligation() -> None:
    d = decide(contact("sms", sender=SERVICE), facts(), DEFAULT, NOW)
    assert d.basis == NOT_MARKETING
    assert d.obligations == ()


# -- N11: objections ---------------------------------------------------------------------------

OBJECTIONS = [
    case("N11-deny-objection-beats-consent", VOICE, facts(consent(), objection()),
         OBJECTION_ON_FILE, "N11", evidence=(("objection", 20),)),
    case("N11-deny-objection-beats-request", VOICE, facts(request(), objection()),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-objection-beats-relationship", VOICE, facts(relation(), objection()),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-objection-beats-business-entity", VOICE,
         facts(objection(), subject=BUSINESS), OBJECTION_ON_FILE, "N11"),
    case("N11-deny-global-objection", VOICE, facts(consent(), objection(org=None)),
         OBJECTION_ON_FILE, "N11"),
    case("N11-allow-objection-to-other-organisation", VOICE,
         facts(consent(), objection(org="org-2")), ALLOWED, "N5", CONSENT),
    case("N11-deny-objection-for-this-channel", VOICE,
         facts(consent(), objection(channel="voice")), OBJECTION_ON_FILE, "N11"),
    case("N11-allow-objection-for-other-channel", VOICE,
         facts(consent(), objection(channel="sms")), ALLOWED, "N5", CONSENT),
    case("N11-allow-email-objection-does-not-cover-sms", SMS,
         facts(consent(channel="sms"), objection(channel="email")), ALLOWED, "N5", CONSENT),
    case("N11-deny-sms-objection-covers-sms", SMS,
         facts(consent(channel="sms"), objection(org=None, channel="sms")), OBJECTION_ON_FILE,
         "N11"),
    case("N11-deny-objection-effective-at-the-moment-recorded", VOICE,
         facts(consent(), objection(received=NOW)), OBJECTION_ON_FILE, "N11"),
    case("N11-allow-objection-not-yet-received", VOICE,
         facts(consent(), objection(received=NOW + dt.timedelta(seconds=1))), ALLOWED, "N5",
         CONSENT),
    case("N11-deny-all-covering-objections-are-evidence", VOICE,
         facts(consent(), objection(20), objection(21, org=None), objection(22, org="org-2")),
         OBJECTION_ON_FILE, "N11", evidence=(("objection", 20), ("objection", 21))),
]


@pytest.mark.parametrize("c", OBJECTIONS)
def test_n11_objection(c: Case) -> None:
    check(c)


# -- N1/N2: legal persons and channels that always need a basis --------------------------------

BUSINESS_CASES = [
    case("N1-allow-live-call-to-legal-person", VOICE, facts(subject=BUSINESS), ALLOWED, "N1",
         BUSINESS_ENTITY, evidence=(("subject", TO),)),
    case("N1-deny-business-call-on-sunday", VOICE, facts(subject=BUSINESS), PROHIBITED_DAY,
         "N13", now=SUNDAY),
    case("N1-deny-business-call-at-22h", VOICE, facts(subject=BUSINESS), OUTSIDE_CALLING_HOURS,
         "N13", now=at(2026, 3, 10, 22)),
    case("N1-deny-unknown-subject-is-a-person", VOICE, facts(subject=None), NO_LEGAL_BASIS,
         "N5"),
    case("N2-deny-automated-call-to-legal-person", contact(sender=ROBOT),
         facts(subject=BUSINESS), NO_LEGAL_BASIS, "N5"),
    case("N2-deny-sms-to-legal-person", SMS, facts(subject=BUSINESS), NO_LEGAL_BASIS, "N5"),
    case("N2-allow-sms-to-legal-person-with-consent", SMS,
         facts(consent(channel="sms"), subject=BUSINESS), ALLOWED, "N5", CONSENT),
    case("N2-allow-automated-call-with-automated-voice-consent", contact(sender=ROBOT),
         facts(consent(channel="automated_voice")), ALLOWED, "N5", CONSENT),
]


@pytest.mark.parametrize("c", BUSINESS_CASES)
def test_n1_n2_subject_and_channel(c: Case) -> None:
    check(c)


# -- N2: automated voice is a channel of its own -----------------------------------------------

AUTOMATED = contact(sender=ROBOT)
# The check API asks about an automated call with an ordinary sender.
ASKED_AUTOMATED = contact(automated=True)

AUTOMATED_CASES = [
    # N5 with N2: like an objection, a withdrawn `voice` consent stops robocalls too; a
    # withdrawn `automated_voice` one stops robocalls only.
    case("N2-deny-withdrawn-voice-consent-stops-automated-call", AUTOMATED,
         facts(consent(withdrawn=NOW - DAY), consent(2, channel="automated_voice",
                                                     given=NOW - 40 * DAY)),
         CONSENT_WITHDRAWN, "N5"),
    case("N2-deny-withdrawn-automated-consent-stops-automated-call", AUTOMATED,
         facts(consent(channel="automated_voice", withdrawn=NOW - DAY)),
         CONSENT_WITHDRAWN, "N5"),
    case("N2-allow-withdrawn-automated-consent-leaves-live-calls", VOICE,
         facts(consent(channel="automated_voice", withdrawn=NOW - DAY), consent(2)),
         ALLOWED, "N5", CONSENT),
    case("N2-deny-voice-consent-does-not-cover-automated-call", AUTOMATED, facts(consent()),
         CONSENT_WRONG_CHANNEL, "N5", evidence=(("consent", 1),)),
    case("N2-deny-voice-consent-does-not-cover-asked-automated-call", ASKED_AUTOMATED,
         facts(consent()), CONSENT_WRONG_CHANNEL, "N5"),
    case("N2-allow-automated-voice-consent-for-asked-automated-call", ASKED_AUTOMATED,
         facts(consent(channel="automated_voice")), ALLOWED, "N5", CONSENT),
    case("N2-deny-automated-voice-consent-does-not-cover-live-call", VOICE,
         facts(consent(channel="automated_voice")), CONSENT_WRONG_CHANNEL, "N5"),
    case("N2-deny-automated-voice-consent-does-not-cover-sms", SMS,
         facts(consent(channel="automated_voice")), CONSENT_WRONG_CHANNEL, "N5"),
    case("N2-allow-live-call-with-voice-consent-beside-automated", VOICE,
         facts(consent(1, channel="automated_voice"), consent(2)), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 2),)),
    case("N2-allow-automated-call-with-automated-consent-beside-voice", AUTOMATED,
         facts(consent(1), consent(2, channel="automated_voice")), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 2),)),
    case("N2-deny-voice-request-does-not-cover-automated-call", AUTOMATED, facts(request()),
         CONSENT_WRONG_CHANNEL, "N6"),
    case("N2-allow-automated-voice-request", AUTOMATED,
         facts(request(channel="automated_voice")), ALLOWED, "N6", CONTACT_REQUEST),
    case("N2-deny-automated-call-to-legal-person-with-voice-consent", AUTOMATED,
         facts(consent(), subject=BUSINESS), CONSENT_WRONG_CHANNEL, "N5"),
    case("N2-allow-automated-call-to-legal-person-with-automated-consent", AUTOMATED,
         facts(consent(channel="automated_voice"), subject=BUSINESS), ALLOWED, "N5", CONSENT),
    case("N2-deny-asked-automated-call-to-legal-person", ASKED_AUTOMATED,
         facts(subject=BUSINESS), NO_LEGAL_BASIS, "N5"),
    # Tw 11.7(1): automated calls need prior consent; the relationship exception (11.7(3))
    # is for electronic messages.
    case("N2-deny-customer-relationship-gives-no-automated-call", AUTOMATED,
         facts(relation()), NO_LEGAL_BASIS, "N2", evidence=(("relationship", 10),)),
    case("N2-deny-charity-relation-gives-no-automated-call", AUTOMATED,
         facts(relation(kind="donor", topics=("energy",)), org=CHARITY), NO_LEGAL_BASIS, "N2",
         evidence=(("relationship", 10),)),
    case("N2-deny-press-customer-automated-call-after-2026-07-01", AUTOMATED,
         facts(relation(), org=PRESS), NO_LEGAL_BASIS, "N2", now=AFTER),
    case("N2-allow-customer-relationship-live-call", VOICE, facts(relation()), ALLOWED, "N7",
         CUSTOMER),
    case("N2-deny-voice-consent-wins-precedence-over-relationship", AUTOMATED,
         facts(consent(), relation()), CONSENT_WRONG_CHANNEL, "N5"),
    case("N2-deny-first-automated-call-after-six-months", AUTOMATED,
         facts(consent(channel="automated_voice", given=at(2025, 9, 10, 14))),
         CONSENT_FIRST_CONTACT_LATE, "N5", now=at(2026, 3, 10, 14, 0, 1)),
    case("N2-allow-first-automated-call-at-six-months", AUTOMATED,
         facts(consent(channel="automated_voice", given=at(2025, 9, 10, 14))), ALLOWED, "N5",
         CONSENT, now=at(2026, 3, 10, 14)),
    case("N13-deny-automated-call-before-nine", AUTOMATED,
         facts(consent(channel="automated_voice")), OUTSIDE_CALLING_HOURS, "N13",
         now=at(2026, 3, 10, 8, 59, 59, 999999)),
    case("N13-allow-automated-call-at-nine", AUTOMATED,
         facts(consent(channel="automated_voice")), ALLOWED, "N5", CONSENT,
         now=at(2026, 3, 10, 9)),
    case("N13-deny-automated-call-at-22h", AUTOMATED,
         facts(consent(channel="automated_voice")), OUTSIDE_CALLING_HOURS, "N13",
         now=at(2026, 3, 10, 22)),
    case("N13-deny-automated-call-on-sunday", AUTOMATED,
         facts(consent(channel="automated_voice")), PROHIBITED_DAY, "N13", now=SUNDAY),
]


@pytest.mark.parametrize("c", AUTOMATED_CASES)
def test_n2_automated_voice(c: Case) -> None:
    check(c)


def test_n2_automated_voice_texts_name_the_channel() -> None:
    d = decide(AUTOMATED, facts(consent()), DEFAULT, NOW)
    assert "not automated calls" in d.explanation["en"]
    assert "geautomatiseerd bellen" in d.explanation["nl"]
    d = decide(AUTOMATED, facts(relation()), DEFAULT, NOW)
    assert "automated calls" in d.explanation["en"]
    assert "(N2)" in d.explanation["nl"]


def test_n5_first_automated_call_is_reported_for_the_store() -> None:
    d = decide(AUTOMATED, facts(consent(channel="automated_voice")), DEFAULT, NOW)
    assert d.first_use == 1
    d = decide(AUTOMATED, facts(request(channel="automated_voice")), DEFAULT, NOW)
    assert d.consumes == 5


# N11 with N2: an objection to calls covers robocalls; one to automated calls only those.
AUTOMATED_OBJECTIONS = [
    case("N11-deny-voice-objection-covers-automated-call", AUTOMATED,
         facts(consent(channel="automated_voice"), objection(channel="voice")),
         OBJECTION_ON_FILE, "N11", evidence=(("objection", 20),)),
    case("N11-deny-automated-objection-covers-automated-call", AUTOMATED,
         facts(consent(channel="automated_voice"), objection(channel="automated_voice")),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-automated-objection-at-the-moment-recorded", AUTOMATED,
         facts(consent(channel="automated_voice"),
               objection(channel="automated_voice", received=NOW)), OBJECTION_ON_FILE, "N11"),
    case("N11-allow-automated-objection-an-instant-before-recorded", AUTOMATED,
         facts(consent(channel="automated_voice"), objection(
             channel="automated_voice", received=NOW + dt.timedelta(microseconds=1))),
         ALLOWED, "N5", CONSENT),
    case("N11-allow-automated-objection-does-not-cover-live-call", VOICE,
         facts(consent(), objection(channel="automated_voice")), ALLOWED, "N5", CONSENT),
    case("N11-allow-automated-objection-does-not-cover-sms", SMS,
         facts(consent(channel="sms"), objection(channel="automated_voice")), ALLOWED, "N5",
         CONSENT),
    case("N11-deny-automated-objection-beats-automated-request", ASKED_AUTOMATED,
         facts(request(channel="automated_voice"), objection(channel="automated_voice")),
         OBJECTION_ON_FILE, "N11"),
    case("N11-allow-sms-objection-does-not-cover-automated-call", AUTOMATED,
         facts(consent(channel="automated_voice"), objection(channel="sms")), ALLOWED, "N5",
         CONSENT),
    case("N11-deny-all-channel-objection-covers-automated-call", AUTOMATED,
         facts(consent(channel="automated_voice"), objection(org=None)), OBJECTION_ON_FILE,
         "N11"),
]


@pytest.mark.parametrize("c", AUTOMATED_OBJECTIONS)
def test_n11_objection_scope_for_automated_voice(c: Case) -> None:
    check(c)


def test_n11_automated_objection_text_names_the_channel() -> None:
    d = decide(AUTOMATED, facts(consent(channel="automated_voice"),
                                objection(channel="automated_voice")), DEFAULT, NOW)
    assert "automated calls" in d.explanation["en"]


# -- N16: a call shows a number that can be called back ----------------------------------------

ALPHA = Sender("AcmeEnergie", "org-1", "energy/gas")
SERVICE_MG = Sender("MG" + "0" * 32, "org-1", "energy/gas")
ALPHA_SERVICE = replace(ALPHA, purpose="service")
REPLY_ORG = replace(ORG, sms_footer="Afmelden? Sms STOP naar +31201234567")

NOT_CALLABLE = [
    case("N16-deny-alphanumeric-caller-id", contact(sender=ALPHA), facts(consent()),
         CALLER_ID_NOT_CALLABLE, "N16", evidence=()),
    case("N16-deny-messaging-service-as-caller-id", contact(sender=SERVICE_MG),
         facts(consent()), CALLER_ID_NOT_CALLABLE, "N16"),
    case("N16-deny-unregistered-alphanumeric-caller-id-before-unknown",
         contact(sender=None, from_key="Acme"), facts(), CALLER_ID_NOT_CALLABLE, "N16"),
    case("N16-deny-unregistered-number-is-unknown-sender",
         contact(sender=None, from_key="+31201234568"), facts(), UNKNOWN_SENDER, "N16"),
    case("N16-deny-withheld-before-not-callable", contact(sender=None, from_key="Anonymous",
         withheld=True), facts(), CALLER_ID_WITHHELD, "N16"),
    case("N16-deny-invalid-number-before-not-callable", contact(to=None, sender=ALPHA),
         facts(), INVALID_NUMBER, "N4"),
    case("N16-deny-not-callable-service-call", contact(sender=ALPHA_SERVICE), facts(),
         CALLER_ID_NOT_CALLABLE, "N16"),
    case("N16-deny-not-callable-automated-call", contact(sender=ALPHA, automated=True),
         facts(consent(channel="automated_voice")), CALLER_ID_NOT_CALLABLE, "N16"),
    case("N16-deny-not-callable-before-objection", contact(sender=ALPHA),
         facts(consent(), objection()), CALLER_ID_NOT_CALLABLE, "N16"),
    # SMS keeps them, with an opt-out line that names a number that can receive STOP (N17).
    case("N16-allow-alphanumeric-sms-sender", contact("sms", sender=ALPHA),
         facts(consent(channel="sms"), org=REPLY_ORG), ALLOWED, "N5", CONSENT),
    case("N16-allow-messaging-service-sms", contact("sms", sender=SERVICE_MG),
         facts(consent(channel="sms"), org=REPLY_ORG), ALLOWED, "N5", CONSENT),
    case("N16-allow-callable-number", VOICE, facts(consent()), ALLOWED, "N5", CONSENT),
]


@pytest.mark.parametrize("c", NOT_CALLABLE)
def test_n16_caller_id_not_callable(c: Case) -> None:
    check(c)


def test_n16_not_callable_consumes_nothing() -> None:
    d = decide(contact(sender=ALPHA), facts(request(), consent(2)), DEFAULT, NOW)
    assert d.reason == CALLER_ID_NOT_CALLABLE
    assert (d.consumes, d.first_use) == (None, None)
    assert "AcmeEnergie" in d.explanation["en"]
    assert "terugbelbare" in d.explanation["nl"]


# -- N5: opt-in consent ------------------------------------------------------------------------

CONSENTS = [
    case("N5-allow-verified-consent", VOICE, facts(consent()), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 1),)),
    case("N5-allow-consent-covers-subtopic", contact(topic="energy/gas/fixed"),
         facts(consent(topics=("energy/gas",))), ALLOWED, "N5", CONSENT),
    case("N5-deny-consent-prefix-is-segment-wise", contact(topic="energy/gasoline"),
         facts(consent(topics=("energy/gas",))), CONSENT_WRONG_TOPIC, "N5"),
    case("N5-deny-consent-wrong-topic", contact(topic="insurance/car"), facts(consent()),
         CONSENT_WRONG_TOPIC, "N5", evidence=(("consent", 1),)),
    case("N5-deny-magazine-consent-does-not-cover-newspaper", contact(topic="press/newspaper"),
         facts(consent(topics=("press/magazine",))), CONSENT_WRONG_TOPIC, "N5"),
    case("N5-deny-contact-without-topic", contact(sender=replace(SENDER, topic="")),
         facts(consent()), CONSENT_WRONG_TOPIC, "N5"),
    case("N5-allow-contact-topic-overrides-sender-topic", contact(topic="insurance/car"),
         facts(consent(topics=("insurance",))), ALLOWED, "N5", CONSENT),
    case("N5-deny-email-consent-never-covers-voice", VOICE, facts(consent(channel="email")),
         CONSENT_WRONG_CHANNEL, "N5"),
    case("N5-deny-sms-consent-does-not-cover-voice", VOICE, facts(consent(channel="sms")),
         CONSENT_WRONG_CHANNEL, "N5"),
    case("N5-deny-email-consent-never-covers-sms", SMS, facts(consent(channel="email")),
         CONSENT_WRONG_CHANNEL, "N5"),
    case("N5-deny-consent-withdrawn", VOICE, facts(consent(withdrawn=NOW - DAY)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1),)),
    case("N5-allow-consent-withdrawn-later", VOICE, facts(consent(withdrawn=NOW + DAY)),
         ALLOWED, "N5", CONSENT),
    case("N5-deny-consent-expired", VOICE, facts(consent(expires=NOW - DAY)), CONSENT_EXPIRED,
         "N5"),
    case("N5-deny-consent-expires-at-this-instant", VOICE, facts(consent(expires=NOW)),
         CONSENT_EXPIRED, "N5"),
    case("N5-allow-consent-expires-just-after", VOICE,
         facts(consent(expires=NOW + dt.timedelta(microseconds=1))), ALLOWED, "N5", CONSENT),
    case("N5-deny-consent-unverified", VOICE, facts(consent(verified=None)), CONSENT_UNVERIFIED,
         "N5"),
    case("N5-deny-consent-verified-only-later", VOICE, facts(consent(verified=NOW + DAY)),
         CONSENT_UNVERIFIED, "N5"),
    case("N5-deny-unverified-sms-consent", SMS, facts(consent(channel="sms", verified=None)),
         CONSENT_UNVERIFIED, "N5"),
    case("N5-deny-first-call-later-than-6-months", VOICE,
         facts(consent(given=at(2025, 9, 9))), CONSENT_FIRST_CONTACT_LATE, "N5"),
    case("N5-allow-first-call-on-last-day-of-6-months", VOICE,
         facts(consent(given=at(2025, 9, 10))), ALLOWED, "N5", CONSENT),
    case("N5-allow-later-first-contact-term-in-consent", VOICE,
         facts(consent(given=at(2025, 6, 1), first_contact_by=at(2026, 6, 1))), ALLOWED, "N5",
         CONSENT),
    case("N5-deny-first-contact-term-passed", VOICE,
         facts(consent(given=at(2025, 1, 1), first_contact_by=at(2026, 3, 1))),
         CONSENT_FIRST_CONTACT_LATE, "N5"),
    case("N5-allow-first-call-made-in-time-keeps-consent", VOICE,
         facts(consent(given=at(2025, 1, 1), first_used=at(2025, 2, 1))), ALLOWED, "N5",
         CONSENT),
    case("N5-allow-first-contact-rule-is-voice-only", SMS,
         facts(consent(channel="sms", given=at(2025, 1, 1))), ALLOWED, "N5", CONSENT),
    case("N5-deny-consent-of-sister-company", VOICE, facts(consent(org="org-2")),
         NO_LEGAL_BASIS, "N5", evidence=()),
    case("N5-deny-consent-given-in-the-future", VOICE, facts(consent(given=NOW + DAY)),
         NO_LEGAL_BASIS, "N5"),
]


@pytest.mark.parametrize("c", CONSENTS)
def test_n5_consent(c: Case) -> None:
    check(c)


def test_n5_first_voice_use_is_reported_for_the_store() -> None:
    d = decide(VOICE, facts(consent(7)), DEFAULT, NOW)
    assert (d.first_use, d.consumes) == (7, None)
    used = decide(VOICE, facts(consent(7, first_used=NOW - DAY)), DEFAULT, NOW)
    assert used.first_use is None
    sms = decide(SMS, facts(consent(7, channel="sms")), DEFAULT, NOW)
    assert sms.first_use is None


# -- N5: a stated first-contact term binds, shorter or longer than 6 months ---------------------

SHORT_GIVEN = at(2026, 1, 10)  # two months before NOW: well inside the default 6 months
LONG_GIVEN = at(2025, 6, 1)  # more than 6 months before NOW

FIRST_CONTACT_TERMS = [
    case("N5-allow-shorter-term-last-instant", VOICE,
         facts(consent(given=SHORT_GIVEN, first_contact_by=NOW)), ALLOWED, "N5", CONSENT),
    case("N5-deny-shorter-term-just-passed", VOICE,
         facts(consent(given=SHORT_GIVEN, first_contact_by=NOW - US)),
         CONSENT_FIRST_CONTACT_LATE, "N5", evidence=(("consent", 1),)),
    case("N5-allow-shorter-term-just-ahead", VOICE,
         facts(consent(given=SHORT_GIVEN, first_contact_by=NOW + US)), ALLOWED, "N5", CONSENT),
    case("N5-deny-shorter-term-within-default-months", VOICE,
         facts(consent(given=SHORT_GIVEN, first_contact_by=at(2026, 2, 10))),
         CONSENT_FIRST_CONTACT_LATE, "N5"),
    case("N5-allow-shorter-term-met-by-first-call", VOICE,
         facts(consent(given=SHORT_GIVEN, first_contact_by=at(2026, 2, 10),
                       first_used=at(2026, 2, 1))), ALLOWED, "N5", CONSENT),
    case("N5-allow-shorter-term-is-voice-only", SMS,
         facts(consent(channel="sms", given=SHORT_GIVEN, first_contact_by=at(2026, 2, 10))),
         ALLOWED, "N5", CONSENT),
    case("N5-allow-longer-term-last-instant", VOICE,
         facts(consent(given=LONG_GIVEN, first_contact_by=NOW)), ALLOWED, "N5", CONSENT),
    case("N5-deny-longer-term-just-passed", VOICE,
         facts(consent(given=LONG_GIVEN, first_contact_by=NOW - US)),
         CONSENT_FIRST_CONTACT_LATE, "N5"),
]


@pytest.mark.parametrize("c", FIRST_CONTACT_TERMS)
def test_n5_stated_first_contact_term_binds(c: Case) -> None:
    check(c)


def test_n5_shorter_first_contact_term_is_named_in_the_explanation() -> None:
    d = decide(VOICE, facts(consent(given=SHORT_GIVEN, first_contact_by=at(2026, 2, 10))),
               DEFAULT, NOW)
    assert "2026-02-10" in d.explanation["en"]
    assert "2026-02-10" in d.explanation["nl"]


# -- N5: a withdrawal is the person's stop button ----------------------------------------------

WITHDRAWN = NOW - 10 * DAY

WITHDRAWALS = [
    case("N5-deny-withdrawn-sms-consent-beats-customer-relationship", SMS,
         facts(consent(1, channel="sms", withdrawn=WITHDRAWN), relation()), CONSENT_WITHDRAWN,
         "N5", evidence=(("consent", 1),)),
    case("N5-deny-withdrawn-call-consent-beats-charity-relation", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), relation(kind="donor"), org=CHARITY),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1),)),
    case("N5-deny-withdrawn-call-consent-beats-charity-customer-after-2026-07-01", VOICE,
         facts(consent(1, given=AFTER - 40 * DAY, withdrawn=AFTER - DAY), relation(),
               org=CHARITY), CONSENT_WITHDRAWN, "N5", now=AFTER),
    case("N5-deny-withdrawn-call-consent-beats-published-number", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), subject=PUBLISHED), CONSENT_WITHDRAWN, "N5",
         settings=PUBLISHED_ON),
    case("N5-deny-withdrawn-call-consent-beats-business-entity", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), subject=BUSINESS), CONSENT_WITHDRAWN, "N5"),
    case("N5-deny-withdrawal-covers-every-topic", VOICE,
         facts(consent(1, topics=("insurance",), withdrawn=WITHDRAWN), consent(2)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1),)),
    case("N5-deny-withdrawn-consent-beats-request-given-before", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), request(5, given=WITHDRAWN - DAY)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1),)),
    case("N6-deny-withdrawn-request-beats-consent", VOICE,
         facts(request(5, given=WITHDRAWN - DAY, withdrawn=WITHDRAWN), consent(1)),
         CONSENT_WITHDRAWN, "N6", evidence=(("consent", 5),)),
    case("N5-deny-every-withdrawal-is-evidence", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), consent(2, topics=("insurance",),
               withdrawn=NOW - DAY)), CONSENT_WITHDRAWN, "N5",
         evidence=(("consent", 1), ("consent", 2))),
    case("N5-deny-withdrawal-abroad", contact(to=ABROAD),
         facts(consent(1, withdrawn=WITHDRAWN), consent(2)), CONSENT_WITHDRAWN, "N5"),
    case("N5-deny-withdrawn-at-this-instant", VOICE,
         facts(consent(1, withdrawn=NOW), relation()), CONSENT_WITHDRAWN, "N5"),
    case("N5-deny-withdrawn-just-before", VOICE,
         facts(consent(1, withdrawn=NOW - US), relation()), CONSENT_WITHDRAWN, "N5"),
    case("N5-allow-withdrawn-just-after", VOICE,
         facts(consent(1, withdrawn=NOW + US), relation()), ALLOWED, "N5", CONSENT),
    case("N5-allow-withdrawal-for-other-channel", VOICE,
         facts(consent(1, channel="sms", withdrawn=WITHDRAWN), relation()), ALLOWED, "N7",
         CUSTOMER),
    case("N5-allow-withdrawal-to-other-organisation", VOICE,
         facts(consent(1, org="org-2", withdrawn=WITHDRAWN), consent(2)), ALLOWED, "N5",
         CONSENT),
    case("N3-allow-service-despite-withdrawal", contact(sender=SERVICE),
         facts(consent(1, withdrawn=WITHDRAWN)), ALLOWED, "N3", NOT_MARKETING),
    case("N11-deny-objection-is-named-before-withdrawal", VOICE,
         facts(consent(1, withdrawn=WITHDRAWN), objection()), OBJECTION_ON_FILE, "N11",
         evidence=(("objection", 20),)),
]


@pytest.mark.parametrize("c", WITHDRAWALS)
def test_n5_withdrawal_wins_over_every_other_basis(c: Case) -> None:
    check(c)


def test_n5_withdrawal_explanation_names_consent_date_and_reach() -> None:
    d = decide(SMS, facts(consent(3, channel="sms", withdrawn=at(2026, 3, 1)), relation()),
               DEFAULT, NOW)
    for part in ("consent 3", "2026-03-01", "any topic"):
        assert part in d.explanation["en"]
    for part in ("toestemming 3", "2026-03-01", "elk onderwerp"):
        assert part in d.explanation["nl"]


# -- N11 (and N5): a later consent or request lifts an objection or a withdrawal ---------------

OBJECTED = NOW - 10 * DAY
LATER = NOW - 5 * DAY


def later_consent(
    ident: int = 7, *, given: dt.datetime = LATER, channel: Channel = "voice",
    topics: tuple[str, ...] = ("energy",), org: str = "org-1",
    provenance: Provenance = "self_provided", verified: dt.datetime | str | None = "given",
    expires: dt.datetime | None = None, withdrawn: dt.datetime | None = None,
) -> Consent:
    return consent(ident, given=given, channel=channel, topics=topics, org=org,
                   provenance=provenance, verified=verified, expires=expires,
                   withdrawn=withdrawn)


LIFTS = [
    case("N11-allow-consent-given-after-objection-lifts-it", VOICE,
         facts(objection(received=OBJECTED), later_consent()), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 7), ("objection", 20))),
    case("N11-allow-request-given-after-objection-lifts-it", VOICE,
         facts(objection(received=OBJECTED), request(5, given=LATER)), ALLOWED, "N6",
         CONTACT_REQUEST, evidence=(("consent", 5), ("objection", 20))),
    case("N11-deny-consent-given-at-the-instant-of-the-objection", VOICE,
         facts(objection(received=OBJECTED), later_consent(given=OBJECTED)), OBJECTION_ON_FILE,
         "N11", evidence=(("objection", 20),)),
    case("N11-allow-consent-given-just-after-the-objection", VOICE,
         facts(objection(received=OBJECTED), later_consent(given=OBJECTED + US)), ALLOWED,
         "N5", CONSENT),
    case("N11-deny-consent-given-before-the-objection", VOICE,
         facts(objection(received=OBJECTED), later_consent(given=OBJECTED - US)),
         OBJECTION_ON_FILE, "N11"),
    case("N11-allow-global-objection-lifted-for-this-organisation", VOICE,
         facts(objection(org=None, received=OBJECTED), later_consent()), ALLOWED, "N5",
         CONSENT, evidence=(("consent", 7), ("objection", 20))),
    case("N11-allow-later-sms-consent-lifts-for-sms", SMS,
         facts(objection(received=OBJECTED), later_consent(channel="sms")), ALLOWED, "N5",
         CONSENT),
    case("N11-deny-later-sms-consent-does-not-lift-for-calls", VOICE,
         facts(objection(received=OBJECTED), later_consent(channel="sms")), OBJECTION_ON_FILE,
         "N11"),
    case("N11-deny-unverified-later-consent-does-not-lift", VOICE,
         facts(objection(received=OBJECTED), later_consent(verified=None)), OBJECTION_ON_FILE,
         "N11"),
    case("N11-deny-later-consent-verified-only-after-now", VOICE,
         facts(objection(received=OBJECTED), later_consent(verified=NOW + US)),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-later-consent-to-other-organisation", VOICE,
         facts(objection(org=None, received=OBJECTED), later_consent(org="org-2")),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-later-consent-on-bought-number", VOICE,
         facts(objection(received=OBJECTED), later_consent(provenance="purchased")),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-later-consent-for-other-topic-revives-nothing", VOICE,
         facts(consent(1), relation(), objection(received=OBJECTED),
               later_consent(topics=("insurance",))), OBJECTION_ON_FILE, "N11",
         evidence=(("objection", 20),)),
    case("N11-deny-expired-later-consent-lifts-no-more", VOICE,
         facts(objection(received=OBJECTED), later_consent(expires=NOW - DAY)),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-used-later-request-lifts-no-more", VOICE,
         facts(objection(received=OBJECTED), request(5, given=LATER, consumed=NOW - DAY)),
         OBJECTION_ON_FILE, "N11"),
    case("N11-deny-relationship-started-after-objection-does-not-lift", VOICE,
         facts(objection(received=OBJECTED), relation(started=LATER)), OBJECTION_ON_FILE,
         "N11"),
    case("N11-deny-objection-after-the-later-consent", VOICE,
         facts(objection(20, received=OBJECTED), later_consent(),
               objection(21, received=NOW - DAY)), OBJECTION_ON_FILE, "N11",
         evidence=(("objection", 20), ("objection", 21))),
    case("N11-allow-lift-names-every-lifted-objection", VOICE,
         facts(objection(20, received=OBJECTED), objection(21, org=None, channel="voice",
               received=OBJECTED + DAY), later_consent()), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 7), ("objection", 20), ("objection", 21))),
    case("N11-deny-lifted-call-still-keeps-calling-hours", VOICE,
         facts(objection(received=OBJECTED), later_consent()), PROHIBITED_DAY, "N13",
         now=SUNDAY),
    case("N5-allow-consent-given-after-withdrawal-lifts-it", VOICE,
         facts(consent(1, withdrawn=OBJECTED), later_consent()), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 7), ("consent", 1))),
    case("N5-allow-request-given-after-withdrawal-lifts-it", SMS,
         facts(consent(1, channel="sms", withdrawn=OBJECTED),
               request(5, channel="sms", given=LATER)), ALLOWED, "N6", CONTACT_REQUEST,
         evidence=(("consent", 5), ("consent", 1))),
    case("N5-deny-consent-given-at-the-instant-of-withdrawal", VOICE,
         facts(consent(1, withdrawn=OBJECTED), later_consent(given=OBJECTED)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1),)),
    case("N5-allow-consent-given-just-after-withdrawal", VOICE,
         facts(consent(1, withdrawn=OBJECTED), later_consent(given=OBJECTED + US)), ALLOWED,
         "N5", CONSENT),
    case("N5-deny-later-consent-withdrawn-too", VOICE,
         facts(consent(1, withdrawn=OBJECTED), later_consent(withdrawn=NOW - DAY)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 1), ("consent", 7))),
    case("N11-allow-consent-after-objection-and-withdrawal-lifts-both", VOICE,
         facts(consent(1, withdrawn=OBJECTED), objection(received=OBJECTED + DAY),
               later_consent()), ALLOWED, "N5", CONSENT,
         evidence=(("consent", 7), ("objection", 20), ("consent", 1))),
    case("N11-deny-consent-between-withdrawal-and-objection", VOICE,
         facts(consent(1, withdrawn=OBJECTED), later_consent(), objection(received=NOW - DAY)),
         OBJECTION_ON_FILE, "N11"),
]


@pytest.mark.parametrize("c", LIFTS)
def test_n11_later_consent_or_request_lifts_a_stop(c: Case) -> None:
    check(c)


def test_n11_lift_is_explained_and_store_instructions_kept() -> None:
    d = decide(VOICE, facts(objection(20, received=at(2026, 2, 27)),
                            later_consent(7, given=at(2026, 3, 5))), DEFAULT, NOW)
    assert (d.reason, d.first_use) == (ALLOWED, 7)
    en, nl = d.explanation["en"], d.explanation["nl"]
    for part in ("consent 7", "objection 20", "2026-02-27", "newer expression of will", "N11"):
        assert part in en
    for part in ("toestemming 7", "bezwaar 20", "2026-02-27", "nieuwere wilsuiting", "N11"):
        assert part in nl
    request_lift = decide(VOICE, facts(objection(received=OBJECTED), request(5, given=LATER)),
                          DEFAULT, NOW)
    assert request_lift.consumes == 5
    withdrawn = decide(VOICE, facts(consent(1, withdrawn=at(2026, 3, 1)), later_consent()),
                       DEFAULT, NOW)
    assert "withdrawal of consent 1" in withdrawn.explanation["en"]
    assert "intrekking van toestemming 1" in withdrawn.explanation["nl"]


def test_n8_ignored_relations_explain_why() -> None:
    petition = decide(VOICE, facts(relation(kind="petition"), org=CHARITY), DEFAULT, NOW)
    assert "relations.petition_signers" in petition.explanation["en"]
    assert "relations.petition_signers" in petition.explanation["nl"]
    donor = decide(VOICE, facts(relation(kind="donor")), DEFAULT, NOW)
    assert "relationship 10" in donor.explanation["en"]
    assert "charity" in donor.explanation["en"]
    assert "goed doel" in donor.explanation["nl"]
    # a relation that counts but fails for lack of an opt-out keeps its own explanation
    no_opt_out = decide(VOICE, facts(relation(kind="petition", opt_out=False), org=CHARITY),
                        PETITIONS, NOW)
    assert "opt-out" in no_opt_out.explanation["en"]


def test_n9_published_number_off_is_explained() -> None:
    d = decide(VOICE, facts(subject=PUBLISHED), DEFAULT, NOW)
    assert "bases.published_number" in d.explanation["en"]
    assert "bases.published_number" in d.explanation["nl"]


# -- N10: provenance ---------------------------------------------------------------------------

PROVENANCE = [
    case("N10-deny-purchased-consent", VOICE, facts(consent(provenance="purchased")),
         NUMBER_PROVENANCE_INVALID, "N10", evidence=(("consent", 1),)),
    case("N10-deny-enriched-relationship", VOICE, facts(relation(provenance="enriched")),
         NUMBER_PROVENANCE_INVALID, "N10", evidence=(("relationship", 10),)),
    case("N10-deny-request-of-unknown-origin", VOICE, facts(request(provenance="unknown")),
         NUMBER_PROVENANCE_INVALID, "N10"),
    case("N10-deny-purchased-beats-expiry-within-one-record", VOICE,
         facts(consent(provenance="purchased", expires=NOW - DAY)), NUMBER_PROVENANCE_INVALID,
         "N10"),
    case("N10-allow-self-provided", VOICE, facts(consent(provenance="self_provided")), ALLOWED,
         "N5", CONSENT),
]


@pytest.mark.parametrize("c", PROVENANCE)
def test_n10_provenance(c: Case) -> None:
    check(c)


# -- N6/N14: contact requests ------------------------------------------------------------------

WINDOW = (at(2026, 3, 15, 19), at(2026, 3, 15, 20))  # a Sunday evening

REQUESTS = [
    case("N6-allow-contact-request", VOICE, facts(request()), ALLOWED, "N6", CONTACT_REQUEST,
         evidence=(("consent", 5),)),
    case("N6-allow-request-before-consent", VOICE, facts(consent(), request()), ALLOWED, "N6",
         CONTACT_REQUEST),
    case("N6-deny-request-already-used", VOICE, facts(request(consumed=NOW - DAY)),
         NO_LEGAL_BASIS, "N6", evidence=(("consent", 5),)),
    case("N6-allow-consent-after-used-request", VOICE,
         facts(request(consumed=NOW - DAY), consent()), ALLOWED, "N5", CONSENT),
    case("N6-deny-request-for-other-topic", contact(topic="insurance"), facts(request()),
         CONSENT_WRONG_TOPIC, "N6"),
    case("N6-deny-request-for-other-channel", VOICE, facts(request(channel="sms")),
         CONSENT_WRONG_CHANNEL, "N6"),
    case("N6-deny-request-to-other-organisation", VOICE, facts(request(org="org-2")),
         NO_LEGAL_BASIS, "N5", evidence=()),
    case("N6-deny-request-withdrawn", VOICE, facts(request(withdrawn=NOW - DAY)),
         CONSENT_WITHDRAWN, "N6"),
    case("N6-deny-request-expired", VOICE, facts(request(expires=NOW - DAY)), CONSENT_EXPIRED,
         "N6"),
    case("N6-allow-sms-request", SMS, facts(request(channel="sms")), ALLOWED, "N6",
         CONTACT_REQUEST),
    case("N14-allow-requested-time-lifts-sunday", VOICE,
         facts(request(given=at(2026, 3, 12), start=WINDOW[0], end=WINDOW[1])), ALLOWED, "N6",
         CONTACT_REQUEST, now=at(2026, 3, 15, 19, 30)),
    case("N14-allow-requested-window-is-inclusive", VOICE,
         facts(request(given=at(2026, 3, 12), start=WINDOW[0], end=WINDOW[1])), ALLOWED, "N6",
         CONTACT_REQUEST, now=WINDOW[1]),
    case("N14-deny-outside-requested-window", VOICE,
         facts(request(given=at(2026, 3, 12), start=WINDOW[0], end=WINDOW[1])), PROHIBITED_DAY,
         "N13", now=at(2026, 3, 15, 20, 1)),
    case("N14-deny-request-without-time-keeps-hours", VOICE,
         facts(request(given=at(2026, 3, 12))), PROHIBITED_DAY, "N13", now=SUNDAY),
    case("N14-deny-start-without-end-lifts-nothing", VOICE,
         facts(request(given=at(2026, 3, 12), start=WINDOW[0])), PROHIBITED_DAY, "N13",
         now=at(2026, 3, 15, 19, 30)),
    case("N14-allow-requested-time-lifts-late-evening", VOICE,
         facts(request(start=at(2026, 3, 10, 22), end=at(2026, 3, 10, 23))), ALLOWED, "N6",
         CONTACT_REQUEST, now=at(2026, 3, 10, 22, 15)),
    case("N14-deny-consent-has-no-requested-time", VOICE, facts(consent()),
         OUTSIDE_CALLING_HOURS, "N13", now=at(2026, 3, 10, 22, 15)),
]


@pytest.mark.parametrize("c", REQUESTS)
def test_n6_n14_contact_request(c: Case) -> None:
    check(c)


def test_n6_allowed_request_is_consumed_denied_one_is_not() -> None:
    allowed = decide(VOICE, facts(request(8)), DEFAULT, NOW)
    assert (allowed.consumes, allowed.first_use) == (8, None)
    late = decide(VOICE, facts(request(8)), DEFAULT, at(2026, 3, 10, 22, 30))
    assert late.reason == OUTSIDE_CALLING_HOURS
    assert late.consumes is None


def test_n14_request_whose_window_covers_now_is_preferred() -> None:
    plain = request(5, given=at(2026, 3, 12))
    timed = request(6, given=at(2026, 3, 12), start=WINDOW[0], end=WINDOW[1])
    d = decide(VOICE, facts(plain, timed), DEFAULT, at(2026, 3, 15, 19, 30))
    assert (d.reason, d.consumes) == (ALLOWED, 6)
    assert "N14" in d.explanation["en"]


# -- N7: customer relationship -----------------------------------------------------------------

CUSTOMERS = [
    case("N7-allow-ongoing-customer-call", VOICE, facts(relation()), ALLOWED, "N7", CUSTOMER,
         evidence=(("relationship", 10),)),
    case("N7-allow-customer-within-term", VOICE, facts(relation(ended=at(2024, 3, 10))),
         ALLOWED, "N7", CUSTOMER),
    case("N7-allow-similar-product", contact(topic="energy/heat"), facts(relation()),
         ALLOWED, "N7", CUSTOMER),
    case("N7-deny-not-similar-product", contact(topic="insurance/car"), facts(relation()),
         TOPIC_NOT_SIMILAR, "N7", evidence=(("relationship", 10),)),
    case("N7-deny-no-opt-out-offered-at-collection", VOICE, facts(relation(opt_out=False)),
         NO_LEGAL_BASIS, "N7", evidence=(("relationship", 10),)),
    case("N7-deny-sister-company-customer", VOICE, facts(relation(org="org-2")),
         NO_LEGAL_BASIS, "N5", evidence=()),
    case("N7-deny-customer-term-expired", VOICE, facts(relation(ended=at(2022, 3, 10))),
         CUSTOMER_TERM_EXPIRED, "N7"),
    case("N7-allow-longer-term-per-organisation", VOICE,
         facts(relation(ended=at(2022, 3, 10)), org=replace(ORG, customer_term_months=60)),
         ALLOWED, "N7", CUSTOMER),
    case("N7-deny-relationship-not-yet-started", VOICE, facts(relation(started=NOW + DAY)),
         NO_LEGAL_BASIS, "N5"),
    case("N7-deny-customer-calls-ended-2026-07-01", VOICE, facts(relation()),
         CUSTOMER_EXCEPTION_ENDED, "N7", now=AFTER),
    case("N7-allow-customer-sms-after-2026-07-01", SMS, facts(relation()), ALLOWED, "N7",
         CUSTOMER, now=AFTER),
    case("N7-allow-charity-customer-call-after-2026-07-01", VOICE, facts(relation(), org=CHARITY),
         ALLOWED, "N7", CUSTOMER, now=AFTER),
    case("N7-allow-lottery-customer-call-after-2026-07-01", VOICE, facts(relation(), org=LOTTERY),
         ALLOWED, "N7", CUSTOMER, now=AFTER),
    case("N7-allow-press-customer-call-after-2026-07-01", VOICE, facts(relation(), org=PRESS),
         ALLOWED, "N7", CUSTOMER, now=AFTER),
    case("N7-deny-automated-customer-call-after-2026-07-01", contact(sender=ROBOT),
         facts(relation()), CUSTOMER_EXCEPTION_ENDED, "N7", now=AFTER),
]


@pytest.mark.parametrize("c", CUSTOMERS)
def test_n7_customer_relationship(c: Case) -> None:
    check(c)


TERM_END = at(2026, 3, 3, 12)  # ended 2023-03-03 12:00 + 36 calendar months


@pytest.mark.parametrize(("channel", "now", "reason"), [
    pytest.param("voice", TERM_END, ALLOWED, id="N7-allow-voice-last-instant-of-term"),
    pytest.param("voice", TERM_END + dt.timedelta(microseconds=1), CUSTOMER_TERM_EXPIRED,
                 id="N7-deny-voice-just-after-term"),
    pytest.param("sms", TERM_END, ALLOWED, id="N7-allow-sms-last-instant-of-term"),
    pytest.param("sms", TERM_END + dt.timedelta(seconds=1), CUSTOMER_TERM_EXPIRED,
                 id="N7-deny-sms-just-after-term"),
])
def test_n7_term_is_three_calendar_years(
    channel: ContactChannel, now: dt.datetime, reason: str,
) -> None:
    d = decide(contact(channel), facts(relation(ended=at(2023, 3, 3, 12))), DEFAULT, now)
    assert d.reason == reason
    if reason == CUSTOMER_TERM_EXPIRED:
        assert "2026-03-03" in d.explanation["en"]


def test_n7_term_clamps_to_end_of_month() -> None:
    # Calendar months: 31 August + 6 months ends on the last day of February.
    org = replace(ORG, customer_term_months=6)
    ended = at(2025, 8, 31, 12)
    assert decide(SMS, facts(relation(ended=ended), org=org), DEFAULT,
                  at(2026, 2, 28, 12)).reason == ALLOWED
    assert decide(SMS, facts(relation(ended=ended), org=org), DEFAULT,
                  at(2026, 2, 28, 12, 0, 1)).reason == CUSTOMER_TERM_EXPIRED


@pytest.mark.parametrize(("org", "now", "reason", "rule"), [
    pytest.param(ORG, at(2026, 6, 30), ALLOWED, "N7", id="N7-allow-commercial-2026-06-30"),
    pytest.param(ORG, at(2026, 7, 1), CUSTOMER_EXCEPTION_ENDED, "N7",
                 id="N7-deny-commercial-2026-07-01"),
    pytest.param(ORG, dt.datetime(2026, 6, 30, 21, 59, tzinfo=UTC), OUTSIDE_CALLING_HOURS, "N13",
                 id="N7-old-regime-until-amsterdam-midnight"),
    pytest.param(ORG, dt.datetime(2026, 6, 30, 22, 0, tzinfo=UTC), CUSTOMER_EXCEPTION_ENDED,
                 "N7", id="N7-new-regime-from-amsterdam-midnight"),
    pytest.param(CHARITY, at(2026, 6, 30), ALLOWED, "N7", id="N7-allow-charity-2026-06-30"),
    pytest.param(CHARITY, at(2026, 7, 1), ALLOWED, "N7", id="N7-allow-charity-2026-07-01"),
])
def test_n7_regime_change_day_before_and_after(
    org: Organisation, now: dt.datetime, reason: str, rule: str,
) -> None:
    d = decide(VOICE, facts(relation(), org=org), DEFAULT, now)
    assert (d.reason, d.rule) == (reason, rule)


# -- N8: charity relations ---------------------------------------------------------------------

CHARITIES = [
    case("N8-allow-donor", VOICE, facts(relation(kind="donor"), org=CHARITY), ALLOWED, "N8",
         CHARITY_RELATION, evidence=(("relationship", 10),)),
    case("N8-allow-volunteer", VOICE, facts(relation(kind="volunteer"), org=CHARITY), ALLOWED,
         "N8", CHARITY_RELATION),
    case("N8-allow-event-attendee", SMS, facts(relation(kind="attendee"), org=CHARITY), ALLOWED,
         "N8", CHARITY_RELATION),
    case("N8-allow-donor-call-after-2026-07-01", VOICE, facts(relation(kind="donor"),
         org=CHARITY), ALLOWED, "N8", CHARITY_RELATION, now=AFTER),
    case("N8-deny-petition-signer-by-default", VOICE, facts(relation(kind="petition"),
         org=CHARITY), NO_LEGAL_BASIS, "N8", evidence=(("relationship", 10),)),
    case("N8-allow-petition-signer-when-configured", VOICE, facts(relation(kind="petition"),
         org=CHARITY), ALLOWED, "N8", CHARITY_RELATION, settings=PETITIONS),
    case("N8-deny-donor-of-commercial-organisation", VOICE, facts(relation(kind="donor")),
         NO_LEGAL_BASIS, "N8", evidence=(("relationship", 10),)),
    case("N8-deny-lottery-volunteer-is-no-charity-relation", VOICE,
         facts(relation(kind="volunteer"), org=LOTTERY), NO_LEGAL_BASIS, "N8",
         evidence=(("relationship", 10),)),
    case("N8-deny-attendee-of-press-organisation-is-named", SMS,
         facts(relation(kind="attendee"), org=PRESS), NO_LEGAL_BASIS, "N8",
         evidence=(("relationship", 10),)),
    case("N8-deny-every-ignored-relation-is-named", VOICE,
         facts(relation(10, kind="donor"), relation(11, kind="petition")), NO_LEGAL_BASIS,
         "N8", evidence=(("relationship", 10), ("relationship", 11))),
    case("N8-deny-ignored-relation-ranks-below-a-specific-failure", VOICE,
         facts(relation(kind="donor"), consent(expires=NOW - DAY)), CONSENT_EXPIRED, "N5",
         evidence=(("consent", 1),)),
    case("N8-deny-sister-company-donor-stays-unnamed", VOICE,
         facts(relation(kind="donor", org="org-2"), org=CHARITY), NO_LEGAL_BASIS, "N5",
         evidence=()),
    case("N8-deny-donor-term-expired", VOICE, facts(relation(kind="donor",
         ended=at(2022, 3, 1)), org=CHARITY), CUSTOMER_TERM_EXPIRED, "N8"),
    case("N8-deny-donor-topic-not-similar", contact(topic="lottery/tickets"),
         facts(relation(kind="donor", topics=("donations/monthly",)), org=CHARITY),
         TOPIC_NOT_SIMILAR, "N8"),
]


@pytest.mark.parametrize("c", CHARITIES)
def test_n8_charity_relation(c: Case) -> None:
    check(c)


# -- N9: published number ----------------------------------------------------------------------

PUBLISHED_CASES = [
    # Off by default: since 2021 a published number is no basis for natural persons. The
    # subject's flag stays on file and is named as evidence of why it did not count.
    case("N9-deny-published-number-by-default", VOICE, facts(subject=PUBLISHED),
         NO_LEGAL_BASIS, "N9", evidence=(("subject", TO),)),
    case("N9-deny-published-number-off-explicitly", VOICE, facts(subject=PUBLISHED),
         NO_LEGAL_BASIS, "N9", settings=RuleSettings(published_number_basis=False),
         evidence=(("subject", TO),)),
    case("N9-deny-failed-consent-beats-published-number-off", VOICE,
         facts(consent(expires=NOW - DAY), subject=PUBLISHED), CONSENT_EXPIRED, "N5",
         evidence=(("consent", 1),)),
    case("N9-deny-published-sms-is-never-named", SMS, facts(subject=PUBLISHED),
         NO_LEGAL_BASIS, "N5", evidence=()),
    case("N9-allow-consent-with-published-number-off", VOICE,
         facts(consent(), subject=PUBLISHED), ALLOWED, "N5", CONSENT),
    case("N9-allow-business-entity-with-published-number-off", VOICE,
         facts(subject=replace(BUSINESS, published_for_marketing=True)), ALLOWED, "N1",
         BUSINESS_ENTITY),
    # Switched on ([bases] published_number = true): as before 2021, live voice only.
    case("N9-allow-published-number-live-call-when-on", VOICE, facts(subject=PUBLISHED),
         ALLOWED, "N9", PUBLISHED_NUMBER, settings=PUBLISHED_ON, evidence=(("subject", TO),)),
    case("N9-deny-published-number-automated-call-when-on", contact(sender=ROBOT),
         facts(subject=PUBLISHED), NO_LEGAL_BASIS, "N5", settings=PUBLISHED_ON),
    case("N9-deny-published-number-sms-when-on", SMS, facts(subject=PUBLISHED), NO_LEGAL_BASIS,
         "N5", settings=PUBLISHED_ON),
    case("N9-allow-relationship-before-published-number-when-on", VOICE,
         facts(relation(), subject=PUBLISHED), ALLOWED, "N7", CUSTOMER, settings=PUBLISHED_ON),
    case("N9-allow-published-number-after-failed-consent-when-on", VOICE,
         facts(consent(expires=NOW - DAY), subject=PUBLISHED), ALLOWED, "N9", PUBLISHED_NUMBER,
         settings=PUBLISHED_ON),
]


@pytest.mark.parametrize("c", PUBLISHED_CASES)
def test_n9_published_number(c: Case) -> None:
    check(c)


# -- N13: calling hours through the engine (the calendar itself: test_policy_hours.py) ---------

HOURS = [
    case("N13-allow-2159", VOICE, facts(consent()), ALLOWED, "N5", CONSENT,
         now=at(2026, 3, 10, 21, 59)),
    case("N13-deny-2200", VOICE, facts(consent()), OUTSIDE_CALLING_HOURS, "N13",
         now=at(2026, 3, 10, 22, 0), evidence=(("weekday", "2026-03-10"),)),
    case("N13-allow-1829-on-5-december", VOICE, facts(consent(given=at(2025, 11, 1))), ALLOWED,
         "N5", CONSENT, now=at(2025, 12, 5, 18, 29)),
    case("N13-deny-1830-on-5-december", VOICE, facts(consent(given=at(2025, 11, 1))),
         OUTSIDE_CALLING_HOURS, "N13", now=at(2025, 12, 5, 18, 30),
         evidence=(("short_day", "2025-12-05"),)),
    case("N13-deny-sunday", VOICE, facts(consent()), PROHIBITED_DAY, "N13", now=SUNDAY,
         evidence=(("sunday", "2026-03-15"),)),
    case("N13-deny-kings-day-2025-on-saturday", VOICE, facts(consent(given=at(2025, 4, 1))),
         PROHIBITED_DAY, "N13", now=at(2025, 4, 26, 11), evidence=(("holiday", "2025-04-26"),)),
    case("N13-deny-liberation-day-2026-not-a-lustrum", VOICE,
         facts(consent(given=at(2026, 4, 1))), PROHIBITED_DAY, "N13", now=at(2026, 5, 5, 10),
         evidence=(("holiday", "2026-05-05"),)),
    case("N13-deny-closed-commemoration-date", VOICE, facts(consent(given=at(2026, 4, 1))),
         PROHIBITED_DAY, "N13", now=at(2026, 5, 4, 10),
         settings=RuleSettings(CallingHours(closed_dates=frozenset({dt.date(2026, 5, 4)})))),
    case("N13-allow-sms-on-sunday", SMS, facts(consent(channel="sms")), ALLOWED, "N5", CONSENT,
         now=SUNDAY),
    case("N13-deny-automated-call-at-night", contact(sender=ROBOT),
         facts(consent(channel="automated_voice")), OUTSIDE_CALLING_HOURS, "N13",
         now=at(2026, 3, 10, 23)),
    case("N13-deny-basis-failure-before-hours", VOICE, facts(consent(expires=NOW - DAY)),
         CONSENT_EXPIRED, "N5", now=SUNDAY),
]


@pytest.mark.parametrize("c", HOURS)
def test_n13_calling_hours(c: Case) -> None:
    check(c)


def test_n15_hours_denial_names_the_next_allowed_moment() -> None:
    d = decide(VOICE, facts(consent()), DEFAULT, at(2026, 3, 10, 22, 0))
    assert d.retry_after == at(2026, 3, 11, 9, 0)
    assert d.retry_after is not None
    assert d.retry_after.utcoffset() == dt.timedelta(hours=1)
    assert "2026-03-11 09:00" in d.explanation["en"]
    sunday = decide(VOICE, facts(consent()), DEFAULT, SUNDAY)
    assert sunday.retry_after == at(2026, 3, 16, 9, 0)
    assert decide(VOICE, facts(consent(expires=NOW - DAY)), DEFAULT, SUNDAY).retry_after is None


LATE = at(2026, 3, 10, 22, 0)  # Tuesday, calls closed until...
OPENING = at(2026, 3, 11, 9, 0)  # ... Wednesday 09:00
US = dt.timedelta(microseconds=1)
SWITCH_EVE = at(2026, 6, 30, 22, 0)  # Tuesday night before the N7 regime change
SWITCH_OPENING = at(2026, 7, 1, 9, 0)


def retry_case(
    name: str, records: Facts, retry: dt.datetime | None, lapse: str | None = None, *,
    now: dt.datetime = LATE, call: Contact = VOICE, org: Organisation = ORG,
) -> object:
    """An hour denial at `now`: `retry` the next allowed moment, or None with the reason the
    basis has ended by the next opening (`lapse`)."""
    return pytest.param(call, replace(records, organisation=org), now, retry, lapse, id=name)


RETRIES = [
    retry_case("N15-consent-expires-before-opening", facts(consent(expires=OPENING - US)), None,
               CONSENT_EXPIRED),
    retry_case("N15-consent-expires-at-opening", facts(consent(expires=OPENING)), None,
               CONSENT_EXPIRED),
    retry_case("N15-consent-expires-after-opening", facts(consent(expires=OPENING + US)),
               OPENING),
    retry_case("N15-first-call-deadline-before-opening",
               facts(consent(given=at(2025, 9, 11, 9, 0) - US)), None,
               CONSENT_FIRST_CONTACT_LATE),
    retry_case("N15-first-call-deadline-at-opening", facts(consent(given=at(2025, 9, 11, 9, 0))),
               OPENING),
    retry_case("N15-first-call-deadline-after-opening",
               facts(consent(given=at(2025, 9, 11, 9, 0) + US)), OPENING),
    retry_case("N15-first-call-made-no-deadline",
               facts(consent(given=at(2025, 9, 1), first_used=at(2025, 9, 5))), OPENING),
    retry_case("N15-customer-calls-end-2026-07-01", facts(relation()), None,
               CUSTOMER_EXCEPTION_ENDED, now=SWITCH_EVE),
    retry_case("N15-customer-calls-before-the-switch-weekend", facts(relation()),
               at(2026, 6, 29, 9, 0), now=at(2026, 6, 27, 16, 0)),
    retry_case("N15-charity-customer-calls-go-on", facts(relation()), SWITCH_OPENING,
               now=SWITCH_EVE, org=CHARITY),
    retry_case("N15-consent-takes-over-after-the-switch",
               facts(relation(), consent(given=at(2026, 6, 1))), SWITCH_OPENING, now=SWITCH_EVE),
    retry_case("N15-relationship-term-ends-before-opening",
               facts(relation(ended=at(2023, 3, 11, 9, 0) - US)), None, CUSTOMER_TERM_EXPIRED),
    retry_case("N15-relationship-term-ends-at-opening",
               facts(relation(ended=at(2023, 3, 11, 9, 0))), OPENING),
    retry_case("N15-consent-withdrawn-before-opening",
               facts(consent(withdrawn=OPENING - US)), None, CONSENT_WITHDRAWN),
    retry_case("N15-objection-recorded-before-opening",
               facts(consent(), objection(received=OPENING - US)), None, OBJECTION_ON_FILE),
    retry_case("N15-objection-recorded-after-opening",
               facts(consent(), objection(received=OPENING + US)), OPENING),
    retry_case("N15-requested-time-tonight-comes-first",
               facts(request(start=at(2026, 3, 10, 23, 0), end=at(2026, 3, 10, 23, 30))),
               at(2026, 3, 10, 23, 0)),
    retry_case("N15-requested-time-after-opening-is-not-first",
               facts(request(start=at(2026, 3, 11, 12, 0), end=at(2026, 3, 11, 13, 0))),
               OPENING),
    retry_case("N15-request-expired-before-its-requested-time",
               facts(request(start=at(2026, 3, 10, 23, 0), end=at(2026, 3, 10, 23, 30),
                             expires=at(2026, 3, 10, 22, 30))), None, CONSENT_EXPIRED),
    retry_case("N15-request-expired-consent-remains",
               facts(request(start=at(2026, 3, 10, 23, 0), end=at(2026, 3, 10, 23, 30),
                             expires=at(2026, 3, 10, 22, 30)), consent()), OPENING),
    # N14: a legal person's requested time lifts the hours as a natural person's does.
    retry_case("N15-business-call-retries-at-its-requested-time",
               facts(request(start=at(2026, 3, 10, 23, 0), end=at(2026, 3, 10, 23, 30)),
                     subject=BUSINESS), at(2026, 3, 10, 23, 0)),
    retry_case("N15-sunday-consent-expires-monday-morning",
               facts(consent(expires=at(2026, 3, 16, 8, 0))), None, CONSENT_EXPIRED,
               now=SUNDAY),
]


@pytest.mark.parametrize(("call", "records", "now", "retry", "lapse"), RETRIES)
def test_n15_retry_after_is_a_moment_the_same_facts_allow(
    call: Contact, records: Facts, now: dt.datetime, retry: dt.datetime | None,
    lapse: str | None,
) -> None:
    d = decide(call, records, DEFAULT, now)
    assert d.reason in (OUTSIDE_CALLING_HOURS, PROHIBITED_DAY), d.explanation["en"]
    assert d.retry_after == retry
    if retry is not None:
        assert lapse is None
        assert decide(call, records, DEFAULT, retry).allowed
        assert len(d.evidence) == 1  # the day only
        return
    later = next_allowed(now, DEFAULT.calling_hours)
    assert later is not None
    at_opening = decide(call, records, DEFAULT, later)
    assert at_opening.reason == lapse
    # N15: the explanation says the basis ends first, and the evidence names its records.
    assert "the basis ends first" in d.explanation["en"]
    assert "de grondslag vervalt eerder" in d.explanation["nl"]
    assert d.evidence[1:] == at_opening.evidence
    assert d.explanation["en"].endswith("(N15).")


def test_n15_explanation_of_a_basis_ending_first() -> None:
    d = decide(VOICE, facts(relation()), DEFAULT, SWITCH_EVE)
    assert d.retry_after is None
    assert d.explanation["en"] == (
        "Denied: 22:00 on Tuesday 2026-06-30 is outside the calling hours 09:00-22:00 "
        "(Europe/Amsterdam) (N13); no allowed moment, as the basis ends first: at the next "
        "opening, 2026-07-01 09:00 (Europe/Amsterdam), since 2026-07-01 00:00 "
        "(Europe/Amsterdam) relationship 10 no "
        "longer allows telemarketing calls except for charities, charity lotteries and "
        "publishers; SMS and e-mail still may (N7) (N15).")
    assert d.explanation["nl"] == (
        "Geweigerd: 22:00 op dinsdag 2026-06-30 valt buiten de beltijden 09:00-22:00 "
        "(Europe/Amsterdam) (N13); geen toegestaan moment, want de grondslag vervalt eerder: "
        "bij de eerstvolgende opening, 2026-07-01 09:00 (Europe/Amsterdam), sinds 2026-07-01 "
        "00:00 (Europe/Amsterdam) geeft relatie 10 geen grond meer om te bellen, behalve voor "
        "goede doelen, loterijen en uitgevers; sms en e-mail mogen nog (N7) (N15).")
    assert d.evidence == ({"type": "weekday", "id": "2026-06-30"},
                          {"type": "relationship", "id": 10})


def test_n15_no_calling_hours_within_a_year_is_explained() -> None:
    never = RuleSettings(CallingHours(weekday=None, saturday=None))
    d = decide(VOICE, facts(consent()), never, NOW)
    assert (d.reason, d.retry_after) == (PROHIBITED_DAY, None)
    assert "no day within a year has calling hours (N15)" in d.explanation["en"]
    assert "geen dag binnen een jaar heeft beltijden (N15)" in d.explanation["nl"]


# -- N17: SMS opt-out footer -------------------------------------------------------------------


@pytest.mark.parametrize(("body_has_opt_out", "obligations"), [
    pytest.param(None, (OPT_OUT_APPENDED,), id="N17-no-body-footer-obligation"),
    pytest.param(False, (OPT_OUT_APPENDED,), id="N17-body-without-opt-out"),
    pytest.param(True, (), id="N17-body-with-opt-out"),
])
def test_n17_marketing_sms_gets_opt_out(
    body_has_opt_out: bool | None, obligations: tuple[str, ...],
) -> None:
    d = decide(contact("sms", body_has_opt_out=body_has_opt_out), facts(consent(channel="sms")),
               DEFAULT, NOW)
    assert d.obligations == obligations


@pytest.mark.parametrize("sender", ["EnergieBV", "MG" + "0" * 32])
@pytest.mark.parametrize("sms_footer", [None, "Stop? Sms STOP naar {sender}"])
@pytest.mark.parametrize("body_has_opt_out", [None, False, True])
def test_n17_footer_naming_a_sender_no_one_can_text_is_denied(
    sender: str, sms_footer: str | None, body_has_opt_out: bool | None,
) -> None:
    """N12/N17: the footer would say to text STOP to an alphanumeric ID or a messaging
    service: a line no one can use, in the footer or in a body carrying it."""
    org = replace(ORG, sms_footer=sms_footer)
    sms = replace(contact("sms", body_has_opt_out=body_has_opt_out),
                  from_=sender, sender=replace(SENDER, sender=sender))
    d = decide(sms, facts(consent(channel="sms"), org=org), DEFAULT, NOW)
    assert (d.decision, d.reason, d.rule) == ("deny", OPT_OUT_NOT_APPENDABLE, "N17")
    assert "number that can receive STOP" in d.explanation["en"]


@pytest.mark.parametrize(("sender", "sms_footer"), [
    pytest.param("EnergieBV", "Afmelden? Sms STOP naar 4040", id="N17-footer-names-a-number"),
    pytest.param("+31201234567", None, id="N17-sender-is-a-number"),
])
def test_n17_footer_naming_a_number_is_appended(sender: str, sms_footer: str | None) -> None:
    org = replace(ORG, sms_footer=sms_footer)
    sms = replace(SMS, from_=sender, sender=replace(SENDER, sender=sender))
    d = decide(sms, facts(consent(channel="sms"), org=org), DEFAULT, NOW)
    assert (d.decision, d.obligations) == ("allow", (OPT_OUT_APPENDED,))


def test_n17_service_sms_from_a_sender_id_needs_no_footer() -> None:
    sender = replace(SERVICE, sender="EnergieBV")
    d = decide(replace(SMS, from_="EnergieBV", sender=sender), facts(), DEFAULT, NOW)
    assert (d.decision, d.basis, d.obligations) == ("allow", NOT_MARKETING, ())


def test_n17_voice_has_no_sms_obligation() -> None:
    assert decide(VOICE, facts(consent()), DEFAULT, NOW).obligations == ()


# -- §7.5: the most specific failure -----------------------------------------------------------

PRECEDENCE = [
    case("N5-withdrawn-beats-wrong-topic", VOICE,
         facts(consent(1, topics=("insurance",)), consent(2, withdrawn=NOW - DAY)),
         CONSENT_WITHDRAWN, "N5", evidence=(("consent", 2),)),
    case("N5-wrong-topic-beats-wrong-channel", VOICE,
         facts(consent(1, channel="sms"), consent(2, topics=("insurance",))),
         CONSENT_WRONG_TOPIC, "N5", evidence=(("consent", 2),)),
    case("N5-expired-beats-purchased", VOICE,
         facts(consent(1, provenance="purchased"), consent(2, expires=NOW - DAY)),
         CONSENT_EXPIRED, "N5"),
    case("N10-purchased-on-topic-beats-other-topic", VOICE,
         facts(consent(1, topics=("insurance",)), consent(2, provenance="purchased")),
         NUMBER_PROVENANCE_INVALID, "N10", evidence=(("consent", 2),)),
    case("N7-exception-ended-beats-wrong-topic-consent", VOICE,
         facts(consent(1, topics=("insurance",), given=AFTER - 30 * DAY), relation()),
         CUSTOMER_EXCEPTION_ENDED, "N7", now=AFTER),
    case("N5-expired-consent-beats-expired-relationship", VOICE,
         facts(consent(1, expires=NOW - DAY), relation(ended=at(2020, 1, 1))),
         CONSENT_EXPIRED, "N5"),
    case("N7-term-expired-beats-wrong-channel", VOICE,
         facts(consent(1, channel="email"), relation(ended=at(2020, 1, 1))),
         CUSTOMER_TERM_EXPIRED, "N7"),
    case("N6-used-request-is-least-specific", VOICE,
         facts(request(consumed=NOW - DAY), consent(1, channel="sms")),
         CONSENT_WRONG_CHANNEL, "N5"),
    case("N5-same-failure-lists-every-record", VOICE,
         facts(consent(1, expires=NOW - DAY), consent(2, expires=NOW - 2 * DAY)),
         CONSENT_EXPIRED, "N5", evidence=(("consent", 1), ("consent", 2))),
    case("N5-valid-consent-beats-any-failure", VOICE,
         facts(consent(1, channel="sms", withdrawn=NOW - DAY), consent(2, expires=NOW - DAY),
               consent(3)), ALLOWED, "N5", CONSENT, evidence=(("consent", 3),)),
]


@pytest.mark.parametrize("c", PRECEDENCE)
def test_s7_failure_precedence(c: Case) -> None:
    check(c)


# -- the Decision contract ---------------------------------------------------------------------


def test_decision_to_dict_is_json_ready() -> None:
    d = decide(VOICE, facts(consent()), DEFAULT, SUNDAY)
    data = json.loads(json.dumps(d.to_dict()))
    assert data == {
        "decision": "deny",
        "reason": PROHIBITED_DAY,
        "basis": None,
        "rule": "N13",
        "evidence": [{"type": "sunday", "id": "2026-03-15"}],
        "retry_after": "2026-03-16T09:00:00+01:00",
        "obligations": [],
        "explanation": d.explanation,
        "consumes": None,
        "first_use": None,
    }


def test_allow_to_dict_names_basis_and_store_instructions() -> None:
    data = decide(VOICE, facts(request(9)), DEFAULT, NOW).to_dict()
    assert (data["decision"], data["reason"], data["basis"]) == ("allow", ALLOWED,
                                                                 CONTACT_REQUEST)
    assert (data["consumes"], data["evidence"]) == (9, [{"type": "consent", "id": 9}])


def test_explanations_name_the_date() -> None:
    d = decide(VOICE, facts(consent(expires=at(2026, 3, 1))), DEFAULT, NOW)
    assert "2026-03-01" in d.explanation["en"]
    assert "2026-03-01" in d.explanation["nl"]


AMS_ = "(Europe/Amsterdam)"
TEXTS = [
    pytest.param(
        VOICE, facts(consent(given=dt.datetime(2025, 9, 10, 12, 0, tzinfo=UTC))),
        at(2026, 3, 10, 14, 0, 1),
        f"Denied: consent 1 lapsed for calls because no first call was made by 2026-03-10 14:00 "
        f"{AMS_} (N5).",
        f"Geweigerd: toestemming 1 is vervallen voor bellen omdat de eerste oproep niet uiterlijk "
        f"op 2026-03-10 14:00 {AMS_} is gedaan (N5).",
        id="N5-first-contact-late-names-the-instant"),
    pytest.param(
        VOICE, facts(consent(expires=dt.datetime(2026, 3, 1, 8, 30, 15, tzinfo=UTC))), NOW,
        f"Denied: consent 1 expired at 2026-03-01 09:30:15 {AMS_} (N5).",
        f"Geweigerd: toestemming 1 is verlopen op 2026-03-01 09:30:15 {AMS_} (N5).",
        id="N5-expired-names-the-instant-in-amsterdam-time"),
    pytest.param(
        VOICE, facts(consent(withdrawn=at(2026, 3, 9, 17, 45))), NOW,
        f"Denied: consent 1 was withdrawn at 2026-03-09 17:45 {AMS_}, which stops calls by "
        "Acme Energie about any topic, whatever else is on file; only a consent or contact "
        "request given after it can lift it (N5).",
        f"Geweigerd: toestemming 1 is ingetrokken op 2026-03-09 17:45 {AMS_}, wat bellen door "
        "Acme Energie over elk onderwerp stopt, wat er verder ook is vastgelegd; alleen een "
        "later gegeven toestemming of contactverzoek heft dat op (N5).",
        id="N5-withdrawn-names-the-instant"),
    pytest.param(
        VOICE, facts(consent(), objection(received=dt.datetime(2026, 3, 9, 23, 30, tzinfo=UTC))),
        NOW,
        f"Denied: objection 20, received at 2026-03-10 00:30 {AMS_}, covers Acme Energie and "
        "all channels, and an objection beats every basis given before it; only a consent or "
        "contact request given after it can lift it (N11).",
        f"Geweigerd: bezwaar 20, ontvangen op 2026-03-10 00:30 {AMS_}, geldt voor Acme Energie "
        "en alle kanalen, en bezwaar gaat boven elke eerder gegeven grondslag; alleen een later "
        "gegeven toestemming of contactverzoek heft het op (N11).",
        id="N11-objection-names-the-instant-in-amsterdam-time"),
    pytest.param(
        VOICE, facts(request(consumed=at(2026, 3, 9, 10, 5))), NOW,
        f"Denied: contact request 5 was already used at 2026-03-09 10:05 {AMS_}, and a request "
        "covers one contact (N6).",
        f"Geweigerd: contactverzoek 5 is al gebruikt op 2026-03-09 10:05 {AMS_}, en een verzoek "
        "geldt voor één contact (N6).", id="N6-used-request-names-the-instant"),
    pytest.param(
        VOICE, facts(relation(ended=at(2023, 3, 3, 12))), at(2026, 3, 4, 12),
        f"Denied: relationship 10 ended at 2023-03-03 12:00 {AMS_} and its 36-month term ran out "
        f"at 2026-03-03 12:00 {AMS_} (N7).",
        f"Geweigerd: relatie 10 is beëindigd op 2023-03-03 12:00 {AMS_} en de termijn van 36 "
        f"maanden liep af op 2026-03-03 12:00 {AMS_} (N7).", id="N7-term-names-the-instants"),
    pytest.param(
        VOICE, facts(relation()), AFTER,
        f"Denied: since 2026-07-01 00:00 {AMS_} relationship 10 no longer allows telemarketing "
        "calls except for charities, charity lotteries and publishers; SMS and e-mail still may "
        "(N7).",
        f"Geweigerd: sinds 2026-07-01 00:00 {AMS_} geeft relatie 10 geen grond meer om te bellen, "
        "behalve voor goede doelen, loterijen en uitgevers; sms en e-mail mogen nog (N7).",
        id="N7-switch-names-amsterdam-midnight"),
    pytest.param(
        VOICE, facts(consent(expires=at(2026, 6, 1, 0, 0))), NOW,
        f"Allowed: consent 1 covers calls about 'energy/gas' by Acme Energie until 2026-06-01 "
        f"00:00 {AMS_} (N5).",
        f"Toegestaan: toestemming 1 dekt bellen over 'energy/gas' door Acme Energie tot "
        f"2026-06-01 00:00 {AMS_} (N5).", id="N5-allow-names-the-expiry-instant"),
    pytest.param(
        VOICE, facts(relation(ended=at(2025, 1, 31, 23, 0))), NOW,
        f"Allowed: customer relationship 10 with Acme Energie, ended at 2025-01-31 23:00 {AMS_} "
        f"and valid until 2028-01-31 23:00 {AMS_}, covers the similar topic 'energy/gas' (N7).",
        f"Toegestaan: relatie 10 (klant) met Acme Energie, beëindigd op 2025-01-31 23:00 {AMS_} "
        f"en geldig tot 2028-01-31 23:00 {AMS_}, dekt het soortgelijke onderwerp 'energy/gas' "
        "(N7).", id="N7-allow-names-the-term-instants"),
    pytest.param(
        VOICE, facts(consent()), dt.datetime(2026, 3, 10, 21, 0, tzinfo=UTC),
        f"Denied: 22:00 on Tuesday 2026-03-10 is outside the calling hours 09:00-22:00 {AMS_} "
        f"(N13); next allowed moment 2026-03-11 09:00 {AMS_}.",
        f"Geweigerd: 22:00 op dinsdag 2026-03-10 valt buiten de beltijden 09:00-22:00 {AMS_} "
        f"(N13); eerstvolgend toegestaan moment 2026-03-11 09:00 {AMS_}.",
        id="N13-outside-hours-in-amsterdam-time"),
    pytest.param(
        VOICE, facts(consent(given=at(2026, 4, 1))), at(2026, 5, 5, 10),
        f"Denied: Tuesday 2026-05-05 {AMS_} is a day without calls, a Dutch public holiday "
        f"(Liberation Day) (N13); next allowed moment 2026-05-06 09:00 {AMS_}.",
        f"Geweigerd: dinsdag 2026-05-05 {AMS_} is een dag zonder belmomenten, een officiële "
        f"feestdag (Bevrijdingsdag) (N13); eerstvolgend toegestaan moment 2026-05-06 09:00 "
        f"{AMS_}.", id="N13-liberation-day-text"),
]


@pytest.mark.parametrize(("call", "records", "now", "en", "nl"), TEXTS)
def test_explanations_give_instants_in_amsterdam_time(
    call: Contact, records: Facts, now: dt.datetime, en: str, nl: str,
) -> None:
    d = decide(call, records, DEFAULT, now)
    assert d.explanation == {"en": en, "nl": nl}


def test_n5_first_contact_deadline_instant_is_still_in_time() -> None:
    given = dt.datetime(2025, 9, 10, 12, 0, tzinfo=UTC)  # 14:00 in Amsterdam
    deadline = at(2026, 3, 10, 14, 0)  # six calendar months on, Amsterdam wall time (CET)
    assert decide(VOICE, facts(consent(given=given)), DEFAULT, deadline).allowed
    late = decide(VOICE, facts(consent(given=given)), DEFAULT, deadline + US)
    assert late.reason == CONSENT_FIRST_CONTACT_LATE


def test_every_reason_is_documented_with_rule_and_fix() -> None:
    assert ALLOWED in REASONS
    for code, doc in REASONS.items():
        assert code.isupper()
        assert doc.rule
        assert doc.meaning
        assert doc.fix
    assert set(DENY_REASONS) == set(REASONS) - {ALLOWED}


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(VOICE, facts(consent()), DEFAULT, dt.datetime(2026, 3, 10, 14))
