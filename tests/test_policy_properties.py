"""Hypothesis properties of the decision engine: invariants that hold for any facts on file.

Pure: no database, no network, no clock; the example database is off so nothing is written.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import structs

from proxy.policy import (
    ALLOWED,
    BASES,
    BUSINESS_ENTITY,
    CONSENT,
    CONSENT_WITHDRAWN,
    CONTACT_REQUEST,
    DENY_REASONS,
    NOT_MARKETING,
    OBJECTION_ON_FILE,
    OPT_OUT_APPENDED,
    OPT_OUT_IN_TEMPLATE,
    OPT_OUT_NOT_APPENDABLE,
    OUTSIDE_CALLING_HOURS,
    PROHIBITED_DAY,
    REASONS,
    Decision,
    decide,
)
from proxy.policy.facts import (
    CHANNELS,
    CONSENT_KINDS,
    RELATIONSHIP_KINDS,
    SECTORS,
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
from proxy.policy.hours import AMSTERDAM, classify, is_allowed, local_date, next_allowed
from proxy.policy.topics import covers, similar
from proxy.settings import CallingHours, RuleSettings, TimeRange

UTC = dt.UTC
BASE = dt.datetime(2026, 3, 1, tzinfo=UTC)
MINUTES_PER_YEAR = 365 * 24 * 60
HOURS_DENIALS = {OUTSIDE_CALLING_HOURS, PROHIBITED_DAY}
TO_NL = "+31612345678"
FROM = "+31201234567"

PROPERTY = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

TOPICS = ("energy", "energy/gas", "energy/electricity", "energy/gas/fixed", "insurance",
          "insurance/car", "press/magazine", "press/newspaper", "")
topics = st.sampled_from(("energy/gas",) * 4 + TOPICS)  # mostly within the `energy` family
topic_sets = st.one_of(st.just(("energy",)), st.just(("energy/gas",)),
                       st.lists(st.sampled_from(TOPICS), min_size=1, max_size=2).map(tuple))
org_ids = st.sampled_from(("org-1",) * 4 + ("org-2",))
provenances = st.sampled_from(("self_provided",) * 4 + ("purchased", "enriched", "unknown"))
channels = st.sampled_from(CHANNELS)
maybe_channels = st.none() | channels
maybe_org_ids = st.none() | org_ids
consent_kinds = st.sampled_from(CONSENT_KINDS)
relationship_kinds = st.sampled_from(RELATIONSHIP_KINDS)
# 2024-03 .. 2028-09: both N7 regimes, many DST changes, holidays and short days.
nows = st.integers(-2 * MINUTES_PER_YEAR, 2 * MINUTES_PER_YEAR + 200_000).map(
    lambda m: BASE + dt.timedelta(minutes=m, seconds=m % 61))


# Record times are drawn as minute offsets from `now` (strategies built once: building them per
# draw is what makes hypothesis slow).
RECENT = st.integers(-4 * MINUTES_PER_YEAR, MINUTES_PER_YEAR)
MAYBE_RECENT = st.none() | RECENT
PAST = st.integers(-4 * MINUTES_PER_YEAR, 0)
MOSTLY_PAST = st.one_of(st.none(), PAST, PAST, PAST)  # e.g. verified_at: usually done
MOSTLY_NONE = st.one_of(st.none(), st.none(), st.none(), RECENT)  # withdrawn_at, consumed_at
NEAR = st.integers(-3 * 24 * 60, 3 * 24 * 60)
MAYBE_NEAR = st.none() | NEAR
LONG_AGO = st.integers(-6 * MINUTES_PER_YEAR, MINUTES_PER_YEAR // 2)
MAYBE_LONG_AGO = st.none() | LONG_AGO


def shift(now: dt.datetime, minutes: int) -> dt.datetime:
    return now + dt.timedelta(minutes=minutes)


def maybe_shift(now: dt.datetime, minutes: int | None) -> dt.datetime | None:
    return None if minutes is None else now + dt.timedelta(minutes=minutes)


def _range(pair: tuple[dt.time, dt.time]) -> TimeRange:
    return TimeRange(min(pair), max(pair))


maybe_ranges = st.none() | st.tuples(st.times(), st.times()).filter(
    lambda p: p[0] != p[1]).map(_range)
organisations = st.builds(
    Organisation, id=st.just("org-1"), name=st.just("Acme"), sector=st.sampled_from(SECTORS),
    customer_term_months=st.sampled_from((36, 36, 12, 60)),
    sms_footer=st.sampled_from((None, None, "Stop? Sms UIT naar {sender}",
                                "Afmelden? Sms STOP naar 4040")),
    content_templates_carry_opt_out=st.booleans())
senders = st.builds(
    Sender, sender=st.just(FROM), organisation_id=st.sampled_from(("org-1",) * 9 + ("org-2",)),
    topic=topics,
    purpose=st.sampled_from(("marketing",) * 9 + ("service",)), automated=st.booleans())
subjects = st.none() | st.builds(
    Subject, number=st.just(TO_NL), kind=st.sampled_from(("person", "person", "business")),
    published_for_marketing=st.booleans())
VOICE_MOSTLY: tuple[ContactChannel, ...] = ("voice", "voice", "sms")
contact_channels = st.sampled_from(VOICE_MOSTLY)
destinations = st.sampled_from((TO_NL,) * 12 + ("+4915112345678",) * 2 + (None, "0612"))
maybe_topics = st.one_of(st.none(), topics, topics)
maybe_booleans = st.none() | st.booleans()
few = st.sampled_from((0, 0, 0, 1, 2))
usually = st.sampled_from((True,) * 19 + (False,))  # 1 in 20: sender unknown, ID withheld
rarely = st.sampled_from((False,) * 4 + (True,))  # e.g. an SMS sent as a content template
other_destinations = st.sampled_from(("consent_only", "consent_only", "deny"))


@dataclass(frozen=True)
class Scenario:
    contact: Contact
    facts: Facts
    settings: RuleSettings
    now: dt.datetime

    def decide(self, **changes: object) -> Decision:
        s = replace(self, **changes)  # type: ignore[arg-type]
        return decide(s.contact, s.facts, s.settings, s.now)


@st.composite
def consents(draw: st.DrawFn, now: dt.datetime, ident: int) -> Consent:
    return Consent(
        id=ident, organisation_id=draw(org_ids), channel=draw(channels),
        topics=draw(topic_sets), kind=draw(consent_kinds), given_at=shift(now, draw(RECENT)),
        provenance=draw(provenances), expires_at=maybe_shift(now, draw(MAYBE_RECENT)),
        verified_at=maybe_shift(now, draw(MOSTLY_PAST)),
        first_contact_by=maybe_shift(now, draw(MAYBE_RECENT)),
        requested_start=maybe_shift(now, draw(MAYBE_NEAR)),
        requested_end=maybe_shift(now, draw(MAYBE_NEAR)),
        withdrawn_at=maybe_shift(now, draw(MOSTLY_NONE)),
        first_used_at=maybe_shift(now, draw(MAYBE_RECENT)),
        consumed_at=maybe_shift(now, draw(MOSTLY_NONE)),
    )


@st.composite
def relationships(draw: st.DrawFn, now: dt.datetime, ident: int) -> Relationship:
    return Relationship(
        id=ident, organisation_id=draw(org_ids), kind=draw(relationship_kinds),
        topics=draw(topic_sets), started_at=shift(now, draw(LONG_AGO)),
        provenance=draw(provenances), ended_at=maybe_shift(now, draw(MAYBE_LONG_AGO)),
        opt_out_offered=draw(st.booleans()),
    )


@st.composite
def objections(draw: st.DrawFn, now: dt.datetime, ident: int) -> Objection:
    return Objection(
        id=ident, organisation_id=draw(maybe_org_ids), channel=draw(maybe_channels),
        received_at=shift(now, draw(NEAR if draw(st.booleans()) else RECENT)), via="sms",
    )


@st.composite
def calling_hours(draw: st.DrawFn, now: dt.datetime) -> CallingHours:
    if draw(st.booleans()):
        return CallingHours()
    today = now.date()
    closed = draw(st.lists(st.integers(-3, 10), max_size=3))
    return CallingHours(
        weekday=draw(maybe_ranges), saturday=draw(maybe_ranges), sunday=draw(maybe_ranges),
        holiday=draw(maybe_ranges), short_day_end=draw(st.times()),
        closed_dates=frozenset(today + dt.timedelta(days=d) for d in closed),
    )



@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    now = draw(nows)
    org = draw(organisations) if draw(usually) else None
    contact = Contact(
        channel=draw(contact_channels),
        to=draw(destinations),
        from_=FROM,
        sender=draw(senders) if draw(usually) else None,
        topic=draw(maybe_topics),
        caller_id_withheld=not draw(usually),
        body_has_opt_out=draw(maybe_booleans),
        content_template=draw(rarely),
        automated=draw(rarely),
    )
    subject = draw(subjects)
    n_c, n_r, n_o = draw(st.integers(0, 4)), draw(st.integers(0, 3)), draw(few)
    on_file = [draw(consents(now, i + 1)) for i in range(n_c)]
    if draw(st.booleans()):  # often one record that is valid by construction, anywhere in line
        on_file.insert(draw(st.integers(0, n_c)), sound_consent(contact, now, 50))
    facts = Facts(
        organisation=org, subject=subject,
        consents=tuple(on_file),
        relationships=tuple(draw(relationships(now, i + 100)) for i in range(n_r)),
        objections=tuple(draw(objections(now, i + 200)) for i in range(n_o)),
    )
    rules = RuleSettings(
        calling_hours=draw(calling_hours(now)),
        other_destinations=draw(other_destinations),
        petition_signers_are_relations=draw(st.booleans()),
    )
    return Scenario(contact, facts, rules, now)


def sound_consent(contact: Contact, now: dt.datetime, ident: int) -> Consent:
    return Consent(ident, "org-1", contact.basis_channel, ("energy",), "opt_in",
                   now - dt.timedelta(days=30), "self_provided",
                   verified_at=now - dt.timedelta(days=29))


def decided_before_objections(s: Scenario) -> bool:
    """§7.1-2: the steps that come before the objection check."""
    c, org = s.contact, s.facts.organisation
    to = c.to or ""
    invalid = not (to.startswith("+") and to[1:].isdigit() and 9 <= len(to) <= 16)
    unknown = c.sender is None or org is None or org.id != c.sender.organisation_id
    abroad_denied = not c.to_is_nl and s.settings.other_destinations == "deny"
    service = c.sender is not None and c.sender.purpose == "service"
    return invalid or unknown or c.caller_id_withheld or abroad_denied or service


# -- N11 -------------------------------------------------------------------------------------


def later_basis(s: Scenario, d: Decision, stop: dt.datetime) -> bool:
    """N11: the decision was not stopped because a verified opt-in consent or a contact
    request given to this organisation for this channel after `stop` lifted the stops."""
    org = s.facts.organisation
    assert org is not None
    later = {c.id: c for c in s.facts.consents
             if c.given_at > stop and c.given_at <= s.now and c.organisation_id == org.id
             and c.channel == s.contact.basis_channel
             and (c.kind == "request" or (c.verified_at is not None and c.verified_at <= s.now))}
    if not later:
        return False
    if d.allowed:  # allowed on one of them, which comes first in the evidence
        assert d.basis in {CONSENT, CONTACT_REQUEST}
        assert d.evidence[0]["type"] == "consent"
        assert d.evidence[0]["id"] in later
    return True


@PROPERTY
@given(scenarios(), st.data())
def test_n11_covering_objection_always_denies(s: Scenario, data: st.DataObject) -> None:
    """Unless a consent or request given after it holds: then it is lifted, and named."""
    org = s.facts.organisation
    covering = Objection(
        id=999,
        organisation_id=data.draw(st.sampled_from((None, org.id if org else None))),
        channel=data.draw(st.sampled_from((None, s.contact.channel))),
        received_at=s.now - dt.timedelta(minutes=data.draw(st.integers(0, 10_000))),
        via="admin",
    )
    objected = structs.replace(s.facts, objections=(*s.facts.objections, covering))
    d = s.decide(facts=objected)
    if decided_before_objections(s):
        assert d == s.decide()  # an earlier step decided; the objection changes nothing
    elif d.reason == OBJECTION_ON_FILE:
        assert {"type": "objection", "id": 999} in d.evidence
    else:
        assert later_basis(replace(s, facts=objected), d, covering.received_at)
        if d.allowed:
            assert {"type": "objection", "id": 999} in d.evidence


@PROPERTY
@given(scenarios(), st.data())
def test_n5_withdrawal_always_denies_unless_a_later_consent(
    s: Scenario, data: st.DataObject,
) -> None:
    """A consent or request withdrawn for this organisation and channel denies whatever else
    is on file (relationship, business entity, published number, other consents), unless a
    consent or request given after the withdrawal holds."""
    org = s.facts.organisation
    withdrawn_at = s.now - dt.timedelta(minutes=data.draw(st.integers(0, 10_000)))
    withdrawal = Consent(
        id=997, organisation_id=org.id if org else "org-1", channel=s.contact.channel,
        topics=data.draw(topic_sets), kind=data.draw(consent_kinds),
        given_at=withdrawn_at - dt.timedelta(days=data.draw(st.integers(0, 400))),
        provenance=data.draw(provenances), withdrawn_at=withdrawn_at,
    )
    on_file = list(s.facts.consents)
    on_file.insert(data.draw(st.integers(0, len(on_file))), withdrawal)
    stopped = replace(s, facts=structs.replace(s.facts, consents=tuple(on_file)))
    d = stopped.decide()
    if decided_before_objections(s):
        assert d == s.decide()
    elif d.reason == CONSENT_WITHDRAWN:
        assert {"type": "consent", "id": 997} in d.evidence
    elif d.reason != OBJECTION_ON_FILE:  # an objection on file is named first
        assert later_basis(stopped, d, withdrawn_at)
        if d.allowed:
            assert {"type": "consent", "id": 997} in d.evidence


@PROPERTY
@given(scenarios(), st.data())
def test_n11_an_objection_never_turns_a_deny_into_an_allow(
    s: Scenario, data: st.DataObject,
) -> None:
    extra = data.draw(objections(s.now, 998))
    before = s.decide()
    after = s.decide(facts=structs.replace(s.facts, objections=(*s.facts.objections, extra)))
    if after.allowed:
        assert before.allowed
        if {"type": "objection", "id": 998} in after.evidence:
            assert after.basis in {CONSENT, CONTACT_REQUEST}  # lifted by a later one (N11)
        else:
            assert after == before  # allowed despite the objection: it did not concern this contact


# -- N2 ---------------------------------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_n2_an_automated_call_needs_an_automated_voice_consent_or_request(s: Scenario) -> None:
    if s.contact.basis_channel != "automated_voice":
        return
    d = s.decide()
    if not d.allowed or d.basis == NOT_MARKETING:
        return
    assert d.basis in (CONSENT, CONTACT_REQUEST)
    used = {c.id: c for c in s.facts.consents}[int(d.evidence[0]["id"])]
    assert used.channel == "automated_voice"


@PROPERTY
@given(scenarios())
def test_n2_without_an_automated_voice_basis_an_automated_call_is_denied(s: Scenario) -> None:
    """Whatever else is on file (a sound consent to be called by a person included): no
    relationship, business subject or published number lets a robocall through."""
    robot = structs.replace(s.contact, channel="voice", automated=True)
    on_file = tuple(c for c in s.facts.consents if c.channel != "automated_voice")
    voice = structs.replace(sound_consent(s.contact, s.now, 50), channel="voice")
    d = s.decide(contact=robot, facts=structs.replace(s.facts, consents=(voice, *on_file)))
    assert not d.allowed or d.basis == NOT_MARKETING


@PROPERTY
@given(scenarios())
def test_n2_a_voice_objection_covers_the_automated_call(s: Scenario) -> None:
    if s.contact.channel != "voice" or s.facts.organisation is None:
        return
    robot = structs.replace(s.contact, automated=True)
    voice_objection = Objection(997, None, "voice", s.now, "api")
    d = s.decide(contact=robot, facts=structs.replace(
        s.facts, objections=(*s.facts.objections, voice_objection)))
    assert not d.allowed or d.basis == NOT_MARKETING


# -- shape of every decision -----------------------------------------------------------------


@PROPERTY
@given(scenarios())
def test_allow_names_a_basis_and_evidence(s: Scenario) -> None:
    d = s.decide()
    if not d.allowed:
        return
    assert d.reason == ALLOWED
    assert d.basis in BASES
    assert d.evidence
    assert d.retry_after is None
    assert d.rule
    if d.basis == NOT_MARKETING:
        assert d.evidence == ({"type": "sender", "id": FROM},)
    if d.basis == BUSINESS_ENTITY:
        assert d.evidence[0]["type"] == "subject"


@PROPERTY
@given(scenarios())
def test_deny_reasons_are_documented_codes(s: Scenario) -> None:
    d = s.decide()
    if d.allowed:
        return
    assert d.reason in DENY_REASONS
    assert d.basis is None
    assert d.rule
    assert (d.consumes, d.first_use, d.obligations) == (None, None, ())
    assert REASONS[d.reason].rule
    if d.retry_after is not None:
        assert d.reason in HOURS_DENIALS


@PROPERTY
@given(scenarios())
def test_store_instructions_and_obligations_match_the_basis(s: Scenario) -> None:
    d = s.decide()
    if not d.allowed:
        return
    assert (d.consumes is not None) == (d.basis == CONTACT_REQUEST)
    if d.first_use is not None:
        assert (d.basis, s.contact.channel) == (CONSENT, "voice")
    n17 = s.contact.channel == "sms" and d.basis != NOT_MARKETING
    if n17 and s.contact.content_template:  # nothing can be appended to a template
        assert s.facts.organisation is not None
        assert s.facts.organisation.content_templates_carry_opt_out
        assert d.obligations == (OPT_OUT_IN_TEMPLATE,)
        return
    footer = n17 and s.contact.body_has_opt_out is not True
    assert d.obligations == ((OPT_OUT_APPENDED,) if footer else ())


@PROPERTY
@given(scenarios())
def test_n17_a_marketing_template_needs_the_organisations_word(s: Scenario) -> None:
    """A marketing SMS sent as a content template is allowed only when the organisation
    declared its templates carry the opt-out line; otherwise, where it would have been
    allowed, it is denied OPT_OUT_NOT_APPENDABLE, whatever its body says."""
    template = structs.replace(s.contact, content_template=True, channel="sms")
    plain = structs.replace(template, content_template=False, body_has_opt_out=True)
    as_template, as_text = s.decide(contact=template), s.decide(contact=plain)
    org = s.facts.organisation
    if not as_text.allowed or as_text.basis == NOT_MARKETING:
        assert as_template == as_text  # decided before N17, or not marketing
    elif org is not None and org.content_templates_carry_opt_out:
        assert as_template.allowed
        assert as_template.obligations == (OPT_OUT_IN_TEMPLATE,)
    else:
        assert as_template.reason == OPT_OUT_NOT_APPENDABLE
        assert as_template.rule == "N17"
        assert (as_template.consumes, as_template.first_use) == (None, None)


@PROPERTY
@given(scenarios(), st.sampled_from(("EnergieBV", "MG" + "0" * 32)))
def test_n17_an_opt_out_line_names_a_number_that_can_receive_stop(s: Scenario,
                                                                  name: str) -> None:
    """N12: from an alphanumeric ID or a messaging service, a marketing SMS whose footer
    names {sender} (the default does) is denied OPT_OUT_NOT_APPENDABLE where it would have been
    allowed from a phone number, whatever its body says; everything else decides alike."""
    if s.contact.sender is None:
        return
    by_number = structs.replace(s.contact, channel="sms", content_template=False)
    by_name = structs.replace(by_number, from_=name,
                              sender=structs.replace(s.contact.sender, sender=name))
    as_number, as_name = s.decide(contact=by_number), s.decide(contact=by_name)
    org = s.facts.organisation
    names_sender = org is not None and "{sender}" in (org.sms_footer or "{sender}")
    if as_number.allowed and as_number.basis != NOT_MARKETING and names_sender:
        assert (as_name.decision, as_name.reason, as_name.rule) == (
            "deny", OPT_OUT_NOT_APPENDABLE, "N17")
        assert (as_name.consumes, as_name.first_use, as_name.obligations) == (None, None, ())
    else:
        assert (as_name.decision, as_name.reason, as_name.basis, as_name.obligations) == (
            as_number.decision, as_number.reason, as_number.basis, as_number.obligations)


@PROPERTY
@given(scenarios())
def test_engine_is_deterministic(s: Scenario) -> None:
    first = s.decide()
    again = decide(copy.deepcopy(s.contact), copy.deepcopy(s.facts), s.settings, s.now)
    assert first == again
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(again.to_dict(),
                                                                     sort_keys=True)
    assert first.explanation["en"].endswith(".")
    assert first.explanation["nl"].endswith(".")


# -- N13/N15: retry_after --------------------------------------------------------------------


def assert_retry_is_allowed_or_explained(s: Scenario, d: Decision) -> None:
    """N15: retry_after is a moment at which the same facts allow the contact, no later than
    the next opening of the calling hours; null only when there is none, and then the
    explanation says why."""
    hours = s.settings.calling_hours
    opening = next_allowed(s.now, hours)
    if d.retry_after is not None:
        assert d.retry_after > s.now
        assert s.decide(now=d.retry_after).allowed
        assert opening is None or d.retry_after <= opening
        if opening is None or d.retry_after < opening:  # only a requested time comes first
            assert any(c.kind == "request" and c.requested_start == d.retry_after
                       for c in s.facts.consents)
        return
    assert d.explanation["en"].endswith("(N15).")
    assert d.explanation["nl"].endswith("(N15).")
    if opening is None:
        assert "no day within a year has calling hours" in d.explanation["en"]
        return
    later = s.decide(now=opening)
    assert not later.allowed
    assert "the basis ends first" in d.explanation["en"]
    assert "de grondslag vervalt eerder" in d.explanation["nl"]
    assert d.evidence[1:] == later.evidence


@PROPERTY
@given(scenarios())
def test_n15_retry_after_is_a_moment_the_same_facts_allow(s: Scenario) -> None:
    d = s.decide()
    if d.reason in HOURS_DENIALS:
        assert_retry_is_allowed_or_explained(s, d)


LAPSE = st.integers(-60, 4 * 24 * 60)  # minutes from `now` to a basis' end: around the opening


@st.composite
def ending_bases(draw: st.DrawFn) -> Scenario:
    """A call at night or at the weekend whose basis ends around the next opening: an expiry,
    a first-call deadline, a withdrawal, an objection, a term end, the 2026-07-01 switch, or a
    contact request with a requested time tonight."""
    switch = dt.datetime(2026, 7, 1, tzinfo=AMSTERDAM)
    now = draw(st.one_of(nows, st.integers(-4 * 24 * 60, 60).map(
        lambda m: switch + dt.timedelta(minutes=m))))
    end = now + dt.timedelta(minutes=draw(LAPSE), microseconds=draw(st.integers(-1, 1)))
    kind = draw(st.sampled_from(("expiry", "deadline", "withdrawal", "objection", "term",
                                 "customer", "request")))
    org = Organisation("org-1", "Acme", draw(st.sampled_from(SECTORS)))
    sender = Sender(FROM, "org-1", "energy/gas")
    contact = Contact("voice", TO_NL, FROM, sender)
    given = now - dt.timedelta(days=30)
    consent = Consent(1, "org-1", "voice", ("energy",), "opt_in", given, "self_provided",
                      verified_at=given)
    consents: tuple[Consent, ...] = (consent,)
    relationships: tuple[Relationship, ...] = ()
    objections_: tuple[Objection, ...] = ()
    if kind == "expiry":
        consents = (structs.replace(consent, expires_at=end),)
    elif kind == "deadline":
        consents = (structs.replace(consent, given_at=end - dt.timedelta(days=182),
                                    verified_at=end - dt.timedelta(days=182)),)
    elif kind == "withdrawal":
        consents = (structs.replace(consent, withdrawn_at=end),)
    elif kind == "objection":
        objections_ = (Objection(200, draw(maybe_org_ids), draw(maybe_channels), end, "sms"),)
    else:
        ended = None if kind == "customer" else end - dt.timedelta(days=365)
        relationships = (Relationship(100, "org-1", "customer", ("energy",),
                                      now - dt.timedelta(days=3000), "self_provided",
                                      ended_at=ended, opt_out_offered=True),)
        consents = ()
        if kind == "request":
            start = now + dt.timedelta(minutes=draw(LAPSE))
            consents = (Consent(5, "org-1", "voice", ("energy",), "request", given,
                                "self_provided", expires_at=draw(st.none() | st.just(end)),
                                requested_start=start,
                                requested_end=start + dt.timedelta(minutes=draw(LAPSE))),)
    facts = Facts(org, Subject(TO_NL), consents, relationships, objections_)
    rules = RuleSettings(calling_hours=draw(calling_hours(now)))
    return Scenario(contact, facts, rules, now)


@PROPERTY
@given(ending_bases())
def test_n15_a_basis_ending_before_the_opening_leaves_no_retry(s: Scenario) -> None:
    d = s.decide()
    if d.reason in HOURS_DENIALS:
        assert_retry_is_allowed_or_explained(s, d)


@PROPERTY
@given(nows, st.data())
def test_n15_retry_after_allows_a_call_on_standing_consent(
    now: dt.datetime, data: st.DataObject,
) -> None:
    hours = data.draw(calling_hours(now))
    standing = Consent(1, "org-1", "voice", ("energy",), "opt_in", now - dt.timedelta(days=900),
                       "self_provided", verified_at=now - dt.timedelta(days=899),
                       first_used_at=now - dt.timedelta(days=800))
    facts = Facts(Organisation("org-1", "Acme", "commercial"), Subject(TO_NL), (standing,))
    contact = Contact("voice", TO_NL, FROM, Sender(FROM, "org-1", "energy/gas"))
    rules = RuleSettings(calling_hours=hours)
    d = decide(contact, facts, rules, now)
    if d.allowed:
        assert is_allowed(now, hours)
        return
    day = classify(local_date(now), hours)
    assert d.reason == (PROHIBITED_DAY if day.closed else OUTSIDE_CALLING_HOURS)
    assert d.evidence == ({"type": day.kind, "id": day.date.isoformat()},)
    if d.retry_after is not None:
        assert d.retry_after > now
        assert decide(contact, facts, rules, d.retry_after).allowed


@PROPERTY
@given(nows, st.data())
def test_n15_next_allowed_is_allowed_and_not_earlier(now: dt.datetime, data: st.DataObject) -> None:
    hours = data.draw(calling_hours(now))
    moment = next_allowed(now, hours)
    if moment is not None:
        assert moment >= now
        assert is_allowed(moment, hours)


# -- topics ----------------------------------------------------------------------------------

segments = st.text(alphabet="abcxyz", min_size=1, max_size=4)


@PROPERTY
@given(st.lists(segments, min_size=1, max_size=3).map("/".join), segments, segments)
def test_n5_topic_cover_is_segment_wise(granted: str, child: str, suffix: str) -> None:
    assert covers(granted, granted)
    assert covers(granted, f"{granted}/{child}")
    assert not covers(granted, f"{granted}{suffix}")
    assert not covers(granted, None)
    assert similar(granted, f"{granted}/{child}")  # N7: covered implies similar


@PROPERTY
@given(st.sampled_from(TOPICS), st.sampled_from(TOPICS))
def test_n7_similarity_is_symmetric_and_needs_a_topic(a: str, b: str) -> None:
    assert similar(a, b) == similar(b, a)
    if not a or not b:
        assert not similar(a, b)


# -- the ends of the calendar ----------------------------------------------------------------

# Any UTC offset a datetime can carry, and naive times at and near the ends of the calendar
# (year 1 and 9999): facts may hold "9999-12-31T23:59:59+00:00" as "never", or whatever a
# hand-written row says, and `now` is anything a caller passes.
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))
NAIVE_EXTREMES = st.one_of(
    st.sampled_from((dt.datetime.min, dt.datetime.max, dt.datetime(1, 1, 1, 12),
                     dt.datetime(9999, 12, 31, 23, 59, 59), dt.datetime(9998, 12, 31))),
    st.datetimes(max_value=dt.datetime(1, 1, 3)),
    st.datetimes(min_value=dt.datetime(9999, 12, 25)),
    st.datetimes(),
)
extreme_times = st.builds(lambda naive, tz: naive.replace(tzinfo=tz), NAIVE_EXTREMES, OFFSETS)
maybe_extreme = st.none() | extreme_times


@st.composite
def extreme_scenarios(draw: st.DrawFn) -> Scenario:
    now = draw(extreme_times)
    org = Organisation("org-1", "Acme", draw(st.sampled_from(SECTORS)),
                       customer_term_months=draw(st.sampled_from((0, 36, 240))),
                       content_templates_carry_opt_out=draw(st.booleans()))
    channel = draw(contact_channels)
    sender = Sender(FROM, "org-1", "energy/gas", automated=draw(st.booleans()))
    contact = Contact(channel, draw(st.sampled_from((TO_NL, "+4915112345678"))), FROM, sender,
                      body_has_opt_out=draw(maybe_booleans),
                      content_template=draw(st.booleans()))
    consents_ = tuple(Consent(
        i, "org-1", channel, ("energy",), draw(consent_kinds), draw(extreme_times),
        "self_provided", expires_at=draw(maybe_extreme), verified_at=draw(maybe_extreme),
        first_contact_by=draw(maybe_extreme), requested_start=draw(maybe_extreme),
        requested_end=draw(maybe_extreme), withdrawn_at=draw(maybe_extreme),
        first_used_at=draw(maybe_extreme), consumed_at=draw(maybe_extreme),
    ) for i in range(draw(st.integers(0, 3))))
    relationships_ = tuple(Relationship(
        100 + i, "org-1", draw(relationship_kinds), ("energy",), draw(extreme_times),
        "self_provided", ended_at=draw(maybe_extreme), opt_out_offered=True,
    ) for i in range(draw(st.integers(0, 2))))
    objections_ = tuple(Objection(200 + i, draw(maybe_org_ids), draw(maybe_channels),
                                  draw(extreme_times), "sms")
                        for i in range(draw(st.integers(0, 1))))
    subject = Subject(TO_NL, draw(st.sampled_from(("person", "business"))),
                      published_for_marketing=draw(st.booleans()))
    facts = Facts(org, subject, consents_, relationships_, objections_)
    closed = frozenset(d for d in (dt.date.min, dt.date.max) if draw(st.booleans()))
    rules = RuleSettings(calling_hours=CallingHours(closed_dates=closed),
                         other_destinations=draw(other_destinations))
    return Scenario(contact, facts, rules, now)


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(extreme_scenarios())
def test_extreme_times_anywhere_still_give_a_decision(s: Scenario) -> None:
    """No time on file and no `now` makes the engine raise: far-future "never" dates, the
    first and last instants a datetime holds, any UTC offset (nothing overflows in calendar
    arithmetic, Amsterdam wall time or the search for the next allowed moment)."""
    d = s.decide()
    assert isinstance(d, Decision)
    assert d.reason in REASONS
    json.dumps(d.to_dict())
    if d.retry_after is not None:
        assert d.retry_after > s.now
