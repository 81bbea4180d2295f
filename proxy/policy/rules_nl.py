"""The Dutch rule pack: `decide(contact, facts, settings, now) -> Decision`.

Follows the decision order of nl-rules §7; the first step that decides wins. Pure: no I/O, no
clock (the caller passes `now`), no mutable module state.

Failure precedence. When no basis holds, every record on file that was looked at and failed
leaves a failure; the decision reports the most specific one (`_PRECEDENCE`, first wins):
records that matched organisation, channel and topic and failed on their state come first (the
person withdrew > ran out > lapsed > never verified > the relationship rule changed or ran out >
the number was never self-provided), then records for another topic, then records for another
channel, then records that give no basis for a reason without its own code (NO_LEGAL_BASIS with
that record as evidence). Nothing looked at: NO_LEGAL_BASIS without evidence. Within one record
the checks run org -> channel -> topic -> withdrawn -> provenance -> (request: used) -> expiry ->
verification -> first contact, so a bought number is reported as such rather than as merely
expired; relationships run regime (2026-07-01) -> similar topic -> provenance -> opt-out offered
-> term.

Stops (§7.3). An objection, and a consent or contact request withdrawn for this organisation and
channel, beat every basis given before them (N11, N5). Only a verified opt-in consent or a
contact request given after the latest of them can still be the basis; it lifts them for this
contact, they stay on file and the decision names them as evidence next to it.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Final

import msgspec

from proxy.policy import footer, hours
from proxy.policy.decision import Decision, EvidenceRef, Explanation
from proxy.policy.facts import (
    Consent,
    Contact,
    Facts,
    Objection,
    Organisation,
    Relationship,
    Sender,
    Subject,
)
from proxy.policy.reasons import (
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
    DESTINATION_NOT_ALLOWED,
    INVALID_NUMBER,
    NO_LEGAL_BASIS,
    NOT_MARKETING,
    NUMBER_PROVENANCE_INVALID,
    OBJECTION_ON_FILE,
    OPT_OUT_APPENDED,
    OPT_OUT_IN_TEMPLATE,
    OPT_OUT_NOT_APPENDABLE,
    OUTSIDE_CALLING_HOURS,
    PROHIBITED_DAY,
    PUBLISHED_NUMBER,
    TOPIC_NOT_SIMILAR,
    UNKNOWN_SENDER,
)
from proxy.policy.topics import any_covers, any_similar
from proxy.settings import RuleSettings

# N7: from this Amsterdam date the customer relationship no longer allows telemarketing calls...
CUSTOMER_CALLS_END: Final = dt.date(2026, 7, 1)
# ... except for charity/ideological organisations, charity lotteries and press publishers.
CALL_EXCEPTION_SECTORS: Final = frozenset({"charity", "lottery", "press"})
# N8: only charity/ideological organisations have donor/volunteer/attendee relations. A charity
# lottery is named by N7 (keeps customer calls) but not by N8: its players are customers.
CHARITY_SECTORS: Final = frozenset({"charity"})
CHARITY_KINDS: Final = frozenset({"donor", "volunteer", "attendee"})
# N5: without a later first-contact term in the consent, the first call must follow within this.
FIRST_CONTACT_MONTHS: Final = 6
_SURELY_WITHIN_FIRST_TERM: Final = dt.timedelta(days=180)
SELF_PROVIDED: Final = "self_provided"

_PRECEDENCE: Final[tuple[str, ...]] = (
    CONSENT_WITHDRAWN,
    CONSENT_EXPIRED,
    CONSENT_FIRST_CONTACT_LATE,
    CONSENT_UNVERIFIED,
    CUSTOMER_EXCEPTION_ENDED,
    CUSTOMER_TERM_EXPIRED,
    NUMBER_PROVENANCE_INVALID,
    CONSENT_WRONG_TOPIC,
    TOPIC_NOT_SIMILAR,
    CONSENT_WRONG_CHANNEL,
    NO_LEGAL_BASIS,
)
_RANK: Final[dict[str, int]] = {code: rank for rank, code in enumerate(_PRECEDENCE)}
_SKIP: Final = ""  # a record that does not concern this contact: no failure either

Record = Consent | Relationship | Subject  # Subject: a published number that gives no basis (N9)
Stop = Objection | Consent  # an objection, or a withdrawn consent or request (N11, N5)


class _Grant(msgspec.Struct, frozen=True, gc=False):
    basis: str
    rule: str
    evidence: tuple[EvidenceRef, ...]
    record: Record | None = None
    consumes: int | None = None
    first_use: int | None = None
    lifts_hours: bool = False
    lifted: tuple[Stop, ...] = ()  # N11: the stops this later consent or request lifts


class _Failures:
    """The most specific failure seen so far, and every record that failed with that code."""

    __slots__ = ("code", "rank", "records", "rule")

    def __init__(self) -> None:
        self.rank = len(_PRECEDENCE)
        self.code: str = NO_LEGAL_BASIS
        self.rule = "N5"
        self.records: list[Record] = []

    def add(self, code: str, rule: str, record: Record) -> None:
        rank = _RANK[code]
        if rank < self.rank:
            self.rank, self.code, self.rule, self.records = rank, code, rule, [record]
        elif rank == self.rank:
            self.records.append(record)


class _Discard(_Failures):
    """Failures nobody reports (N11: a later record that fails lifts nothing; the objection
    or withdrawal is the answer). Stateless, so one instance serves every decision."""

    __slots__ = ()

    def add(self, code: str, rule: str, record: Record) -> None:
        pass


_DISCARD: Final = _Discard()


# -- the decision order ------------------------------------------------------------------------


def decide(contact: Contact, facts: Facts, settings: RuleSettings, now: dt.datetime) -> Decision:
    """Decide one proposed contact, following nl-rules §7 step by step."""
    if now.tzinfo is None:  # every comparison below is between aware datetimes
        raise ValueError("decide() needs a timezone-aware `now`")
    sender, org = contact.sender, facts.organisation
    # §7.1: checks on the request itself.
    if not _valid_number(contact.to):
        return _deny(INVALID_NUMBER, "N4", _text_invalid_number())
    # N16: From must be a registered sender of the organisation whose facts were loaded.
    # N16: a withheld caller ID is never a registered sender, so it is named first; otherwise
    # it would always surface as UNKNOWN_SENDER and the operator would look in the wrong place.
    if contact.caller_id_withheld:
        return _deny(CALLER_ID_WITHHELD, "N16", _text_withheld())
    # N16: a call must show a number that can be called back; an alphanumeric sender ID or a
    # messaging service is no caller ID (SMS keeps them). Named before UNKNOWN_SENDER, as
    # registering it would not help.
    if contact.channel == "voice" and _not_callable(contact):
        return _deny(CALLER_ID_NOT_CALLABLE, "N16", _text_not_callable(contact.from_))
    if sender is None or org is None or org.id != sender.organisation_id:
        return _deny(UNKNOWN_SENDER, "N16", _text_unknown_sender(contact.from_))
    domestic = contact.to_is_nl
    if not domestic and settings.other_destinations == "deny":
        return _deny(DESTINATION_NOT_ALLOWED, "N4", _text_destination())
    # §7.2, N3: service traffic is not marketing; objections and hours concern marketing only.
    if sender.purpose == "service":
        return _allow(_Grant(NOT_MARKETING, "N3", (_sender_ref(sender),)), contact, org)
    # §7.3, N11: an objection beats every basis given before it, from the moment it is
    # recorded; N5: so does a withdrawal, for its organisation and channel (all topics).
    objections = _objections(facts.objections, contact, org, now)
    withdrawn = _withdrawals(facts.consents, contact, org, now)
    found: _Grant | _Failures | None
    if objections or withdrawn:
        found = _lifted(contact, facts.consents, org, now, objections, withdrawn)
        if found is None:
            return _stopped(objections, withdrawn, contact, org)
    else:
        # §7.4-5: the legal basis.
        found = _business_entity(contact, facts) if domestic else None
        if found is not None:
            # N14 (§7.6): a contact request's requested time covering now lifts the hours for
            # a legal person too; the request is then the basis (and is used up).
            requested = _request_basis(facts.consents, contact, org, contact.effective_topic,
                                       now, _DISCARD)
            if requested is not None and requested.lifts_hours:
                found = requested
        if found is None:
            found = _find_basis(contact, facts, org, settings, now, domestic)
        if isinstance(found, _Failures):
            return _no_basis(found, contact, org, settings, domestic)
    # §7.6, N13: calling hours for calls to Dutch numbers (N4: not for other destinations). They
    # also apply to BUSINESS_ENTITY calls: N1 only lifts the need for consent, and the CTM hours
    # govern telemarketing calls as such. N14: a requested time covering now lifts them.
    if contact.channel == "voice" and domestic and not found.lifts_hours:
        denial = hours.check(now, settings.calling_hours)
        if denial is not None:
            return _hours_denied(denial, found, contact, facts, settings, org)
    return _allow(found, contact, org)


def _valid_number(to: str | None) -> bool:
    # The front parses numbers; this only guards the E.164 shape ("+" and 8-15 ASCII digits:
    # str.isdigit alone also takes full-width and other scripts' digits).
    return (to is not None and 9 <= len(to) <= 16 and to[0] == "+" and to.isascii()
            and to[1:].isdigit())


def _not_callable(contact: Contact) -> bool:
    key = contact.sender.sender if contact.sender is not None else contact.from_key
    return key is not None and not key.startswith("+")


def _objections(
    objections: tuple[Objection, ...], contact: Contact, org: Organisation, now: dt.datetime,
) -> list[Objection]:
    # N11: per organisation or global, per channel or all; effective from received_at.
    # N2: an objection to calls (`voice`) covers automated calls too; one to
    # `automated_voice` covers automated calls only.
    if not objections:
        return []
    channel = contact.basis_channel
    return [
        o for o in objections
        if o.received_at <= now
        and (o.organisation_id is None or o.organisation_id == org.id)
        and (o.channel is None or o.channel == contact.channel or o.channel == channel)
    ]


def _withdrawals(
    consents: tuple[Consent, ...], contact: Contact, org: Organisation, now: dt.datetime,
) -> list[Consent]:
    # N5: withdrawing is the person's stop button. From withdrawn_at a withdrawn consent or
    # request acts as an objection for its organisation and channel, whatever its topics, and
    # no other basis may take over (EDPB 05/2020 §123). N2: like an objection, a withdrawn
    # `voice` consent stops robocalls too; a withdrawn `automated_voice` one only robocalls.
    channel = contact.basis_channel
    return [
        c for c in consents
        if c.withdrawn_at is not None and c.withdrawn_at <= now
        and c.organisation_id == org.id and (c.channel == contact.channel or c.channel == channel)
    ]


def _lifted(
    contact: Contact, consents: tuple[Consent, ...], org: Organisation, now: dt.datetime,
    objections: list[Objection], withdrawn: list[Consent],
) -> _Grant | None:
    """N11: a verified opt-in consent or a contact request given to this organisation for
    this channel after every stop that covers the contact is a newer expression of will: when
    it holds as a basis, it lifts them. Nothing given before a stop revives."""
    # The latest stop. Seeded from the records themselves: comparing datetimes of different
    # tzinfo costs an offset lookup each.
    moments = [o.received_at for o in objections]
    moments += [c.withdrawn_at for c in withdrawn if c.withdrawn_at is not None]
    cutoff = max(moments)
    later = tuple([c for c in consents if c.given_at > cutoff])
    if not later:
        return None
    topic = contact.effective_topic
    grant = _request_basis(later, contact, org, topic, now, _DISCARD)
    if grant is None:
        grant = _consent_basis(later, contact, org, topic, now, _DISCARD)
    if grant is None:
        return None
    stops: tuple[Stop, ...] = (*objections, *withdrawn)
    evidence = grant.evidence + tuple([_stop_ref(s) for s in stops])
    return msgspec.structs.replace(grant, evidence=evidence, lifted=stops)


def _business_entity(contact: Contact, facts: Facts) -> _Grant | None:
    # N1: live calls to legal persons stay opt-out. N2: automated voice and SMS still need a
    # basis. An unknown subject is treated as a natural person.
    subject = facts.subject
    if subject is None or subject.kind != "business":
        return None
    if contact.basis_channel != "voice" or contact.sender is None:
        return None
    return _Grant(BUSINESS_ENTITY, "N1", (_subject_ref(subject.number),))


def _find_basis(
    contact: Contact, facts: Facts, org: Organisation, settings: RuleSettings,
    now: dt.datetime, domestic: bool,
) -> _Grant | _Failures:
    """§7.5: contact request, consent, relationship, published number (when switched on) —
    first that holds."""
    failures = _Failures()
    topic = contact.effective_topic
    grant = _request_basis(facts.consents, contact, org, topic, now, failures)
    if grant is None:
        grant = _consent_basis(facts.consents, contact, org, topic, now, failures)
    # N4: outside +31 only explicit consent or a contact request counts.
    if grant is None and domestic:
        grant = _relationship_basis(facts.relationships, contact, org, settings, topic, now,
                                    failures)
    if grant is None and domestic:
        grant = _published_basis(contact, facts, settings, failures)
    return grant if grant is not None else failures


# -- N6: contact requests ----------------------------------------------------------------------


def _request_basis(
    consents: tuple[Consent, ...], contact: Contact, org: Organisation, topic: str | None,
    now: dt.datetime, failures: _Failures,
) -> _Grant | None:
    usable: Consent | None = None
    for c in consents:
        if c.kind != "request":
            continue
        code = _request_failure(c, contact, org, topic, now)
        if code is None:
            if _window_covers(c, now):
                return _request_grant(c, lifts_hours=True)
            usable = usable or c
        elif code:
            failures.add(code, _rule(code, "N6"), c)
    return _request_grant(usable, lifts_hours=False) if usable else None


def _request_failure(
    c: Consent, contact: Contact, org: Organisation, topic: str | None, now: dt.datetime,
) -> str | None:
    # N6 asks no verification step (the person initiated the contact); N5's verification is
    # about opt-in consent collected by the organisation.
    shared = _given_failure(c, contact, org, topic, now)
    if shared is not None:
        return shared
    if c.consumed_at is not None:
        return NO_LEGAL_BASIS  # N6: one request, one contact; used means no basis left
    if c.expires_at is not None and c.expires_at <= now:
        return CONSENT_EXPIRED
    return None


def _given_failure(
    c: Consent, contact: Contact, org: Organisation, topic: str | None, now: dt.datetime,
) -> str | None:
    """What opt-in consents and contact requests share: whose, which channel and topic,
    still standing, and a number the person gave themselves."""
    if c.organisation_id != org.id or c.given_at > now:
        return _SKIP  # N5/N6: given to this organisation; a sister company's is not ours
    if c.channel != contact.basis_channel:
        # N5: one consent never covers two channels; N2: nor a call by a person a robocall.
        return CONSENT_WRONG_CHANNEL
    if not any_covers(c.topics, topic):
        return CONSENT_WRONG_TOPIC
    if c.withdrawn_at is not None and c.withdrawn_at <= now:
        return CONSENT_WITHDRAWN
    if c.provenance != SELF_PROVIDED:
        return NUMBER_PROVENANCE_INVALID  # N10
    return None


def _window_covers(c: Consent, now: dt.datetime) -> bool:
    # N14: only a complete requested window [start, end] lifts the hours; a bare start time is
    # not stretched into a window of our own choosing.
    start, end = c.requested_start, c.requested_end
    return start is not None and end is not None and start <= now <= end


def _request_grant(c: Consent, *, lifts_hours: bool) -> _Grant:
    return _Grant(CONTACT_REQUEST, "N6", (_consent_ref(c.id),), c, consumes=c.id,
                  lifts_hours=lifts_hours)


# -- N5: opt-in consent ------------------------------------------------------------------------


def _consent_basis(
    consents: tuple[Consent, ...], contact: Contact, org: Organisation, topic: str | None,
    now: dt.datetime, failures: _Failures,
) -> _Grant | None:
    for c in consents:
        if c.kind != "opt_in":
            continue
        code = _consent_failure(c, contact, org, topic, now)
        if code is None:
            # N5: the store marks the first call so the 6-month first-contact rule is met.
            first = c.id if contact.channel == "voice" and c.first_used_at is None else None
            return _Grant(CONSENT, "N5", (_consent_ref(c.id),), c, first_use=first)
        if code:
            failures.add(code, _rule(code, "N5"), c)
    return None


def _consent_failure(
    c: Consent, contact: Contact, org: Organisation, topic: str | None, now: dt.datetime,
) -> str | None:
    shared = _given_failure(c, contact, org, topic, now)
    if shared is not None:
        return shared
    if c.expires_at is not None and c.expires_at <= now:
        return CONSENT_EXPIRED
    # N5: verified before the first contact. Required for SMS too: the point is that the person
    # who consented is the person reached, which matters as much for a message as for a call.
    if c.verified_at is None or c.verified_at > now:
        return CONSENT_UNVERIFIED
    if contact.channel == "voice" and c.first_used_at is None and _first_contact_late(c, now):
        return CONSENT_FIRST_CONTACT_LATE
    return None


def _first_contact_late(c: Consent, now: dt.datetime) -> bool:
    if c.first_contact_by is not None:
        return now > c.first_contact_by
    # Fast path: 6 calendar months are never shorter than 181 days (less an hour for DST).
    if now - c.given_at <= _SURELY_WITHIN_FIRST_TERM:
        return False
    return now > _first_contact_by(c)


def _first_contact_by(c: Consent) -> dt.datetime:
    # N5: a term stated in the consent binds, shorter or longer than 6 months; without one,
    # 6 months after consent.
    if c.first_contact_by is not None:
        return c.first_contact_by
    return hours.add_months(c.given_at, FIRST_CONTACT_MONTHS)


# -- N7/N8: customer and charity relationships -------------------------------------------------


def _relationship_basis(
    relationships: tuple[Relationship, ...], contact: Contact, org: Organisation,
    settings: RuleSettings, topic: str | None, now: dt.datetime, failures: _Failures,
) -> _Grant | None:
    for r in relationships:
        if r.organisation_id != org.id or r.started_at > now:
            continue
        basis = _relation_kind(r, org, settings)
        if basis is None:
            # N8: a petition signer (unless configured) or a donor, volunteer or attendee of a
            # non-charity gives no basis; named as evidence rather than "nothing on file".
            failures.add(NO_LEGAL_BASIS, "N8", r)
            continue
        rule = "N7" if basis == CUSTOMER else "N8"
        code = _relationship_failure(r, basis, contact, org, topic, now)
        if code is None:
            return _Grant(basis, rule, (_relationship_ref(r.id),), r)
        if code == NO_LEGAL_BASIS and contact.basis_channel == "automated_voice":
            rule = "N2"
        failures.add(code, _rule(code, rule), r)
    return None


def _relation_kind(r: Relationship, org: Organisation, settings: RuleSettings) -> str | None:
    if r.kind == "customer":
        return CUSTOMER
    if org.sector not in CHARITY_SECTORS:
        return None  # N8: donors etc. of a non-charity are no relation at all
    if r.kind in CHARITY_KINDS:
        return CHARITY_RELATION
    # N8 (open point): petition signers only when configured so.
    if r.kind == "petition" and settings.petition_signers_are_relations:
        return CHARITY_RELATION
    return None


def _relationship_failure(
    r: Relationship, basis: str, contact: Contact, org: Organisation, topic: str | None,
    now: dt.datetime,
) -> str | None:
    # N7: from 2026-07-01 no calls on a customer relationship, whatever its topic or term.
    if basis == CUSTOMER and contact.channel == "voice" and _customer_calls_ended(org, now):
        return CUSTOMER_EXCEPTION_ENDED
    # N2: automated calls need prior consent (Tw 11.7(1)); the relationship exception of
    # Tw 11.7(3) covers electronic messages only.
    if contact.basis_channel == "automated_voice":
        return NO_LEGAL_BASIS
    if not any_similar(r.topics, topic):
        return TOPIC_NOT_SIMILAR  # N7: only the organisation's own similar products
    if r.provenance != SELF_PROVIDED:
        return NUMBER_PROVENANCE_INVALID  # N10
    if not r.opt_out_offered:
        return NO_LEGAL_BASIS  # N7: no opt-out offered at collection -> no relationship basis
    if r.ended_at is not None and _term_over(r.ended_at, org, now):
        return CUSTOMER_TERM_EXPIRED
    return None


def _term_over(ended_at: dt.datetime, org: Organisation, now: dt.datetime) -> bool:
    # Fast path: n calendar months are never shorter than 28 * n days (less a day for DST).
    months = org.customer_term_months
    if now - ended_at < dt.timedelta(days=28 * months - 1):
        return False
    return now > _term_end(ended_at, org)


def _customer_calls_ended(org: Organisation, now: dt.datetime) -> bool:
    return hours.local_date(now) >= CUSTOMER_CALLS_END and org.sector not in CALL_EXCEPTION_SECTORS


def _term_end(ended_at: dt.datetime, org: Organisation) -> dt.datetime:
    # N7/N8: valid up to and including ended_at + term (calendar months, Amsterdam time).
    return hours.add_months(ended_at, org.customer_term_months)


# -- N9: published number ----------------------------------------------------------------------


def _published_basis(
    contact: Contact, facts: Facts, settings: RuleSettings, failures: _Failures,
) -> _Grant | None:
    subject = facts.subject
    if subject is None or not subject.published_for_marketing:
        return None
    # N9: live voice only: not automated voice, not SMS.
    if contact.basis_channel != "voice" or contact.sender is None:
        return None
    # N9: since 2021 no basis for natural persons; only when the operator switches it on.
    if not settings.published_number_basis:
        failures.add(NO_LEGAL_BASIS, "N9", subject)
        return None
    return _Grant(PUBLISHED_NUMBER, "N9", (_subject_ref(subject.number),))


def _rule(code: str, default: str) -> str:
    return "N10" if code == NUMBER_PROVENANCE_INVALID else default


# -- building decisions ------------------------------------------------------------------------


def _deny(
    reason: str, rule: str, explanation: Explanation, evidence: tuple[EvidenceRef, ...] = (),
    retry_after: dt.datetime | None = None,
) -> Decision:
    return Decision("deny", reason, rule, explanation, None, evidence, retry_after)


def _allow(grant: _Grant, contact: Contact, org: Organisation) -> Decision:
    obligations: tuple[str, ...] = ()
    # N17: marketing SMS carry the opt-out line; the front appends it when the body lacks one.
    # A content template replaces the body (its Body is not what is sent), so nothing can be
    # appended: it goes out only when the organisation vouches that its templates carry it.
    if contact.channel == "sms" and grant.basis != NOT_MARKETING:
        if contact.content_template:
            if not org.content_templates_carry_opt_out:
                return _deny(OPT_OUT_NOT_APPENDABLE, "N17", _text_not_appendable(org),
                             grant.evidence)
            obligations = (OPT_OUT_IN_TEMPLATE,)
        elif footer.reply_is_unreachable(org.sms_footer, _sender_key(contact)):
            # N12: an opt-out line naming an alphanumeric ID or a messaging service as where
            # to send STOP cannot be used, in the footer or in a body that carries it.
            return _deny(OPT_OUT_NOT_APPENDABLE, "N17", _text_footer_unreachable(org),
                         grant.evidence)
        elif contact.body_has_opt_out is not True:
            obligations = (OPT_OUT_APPENDED,)
    text = _text_allow(grant, contact, org)
    if grant.lifted:
        text = _text_lifted(text, grant, contact)
    return Decision(
        "allow", ALLOWED, grant.rule, text, grant.basis,
        grant.evidence, None, obligations, grant.consumes, grant.first_use,
    )


def _sender_key(contact: Contact) -> str:
    return contact.sender.sender if contact.sender is not None else contact.from_


def _stopped(
    objections: list[Objection], withdrawn: list[Consent], contact: Contact, org: Organisation,
) -> Decision:
    # §7.3: an objection is named first; a withdrawal alone is CONSENT_WITHDRAWN (N5).
    if objections:
        evidence = tuple(_ref("objection", o.id) for o in objections)
        return _deny(OBJECTION_ON_FILE, "N11", _text_objection(objections[0], org), evidence)
    evidence = tuple(_consent_ref(c.id) for c in withdrawn)
    rule = "N6" if withdrawn[0].kind == "request" else "N5"
    return _deny(CONSENT_WITHDRAWN, rule, _text_withdrawn(withdrawn[0], rule, contact, org),
                 evidence)


def _no_basis(
    failures: _Failures, contact: Contact, org: Organisation, settings: RuleSettings,
    domestic: bool,
) -> Decision:
    if not failures.records:
        return _deny(NO_LEGAL_BASIS, "N5" if domestic else "N4", _text_nothing(contact, domestic))
    evidence = tuple(_record_ref(r) for r in failures.records)
    text = _text_failure(failures.code, failures.rule, failures.records[0], contact, org,
                         settings)
    return _deny(failures.code, failures.rule, text, evidence)


def _hours_denied(
    denial: hours.HoursDenial, found: _Grant, contact: Contact, facts: Facts,
    settings: RuleSettings, org: Organisation,
) -> Decision:
    day = denial.day
    reason = PROHIBITED_DAY if day.closed else OUTSIDE_CALLING_HOURS
    evidence: tuple[EvidenceRef, ...] = (_ref(day.kind, day.date.isoformat()),)
    retry, lapse = _retry(denial, found, contact, facts, settings, org)
    if lapse is not None:
        evidence += lapse.evidence  # N15: the records whose end leaves no later moment
    return _deny(reason, "N13", _text_hours(denial, retry, lapse), evidence, retry)


def _retry(
    denial: hours.HoursDenial, found: _Grant, contact: Contact, facts: Facts,
    settings: RuleSettings, org: Organisation,
) -> tuple[dt.datetime | None, Decision | None]:
    """N15: the next moment at which the same facts allow the contact: a contact request's
    requested time that comes first (N14), else the next opening of the calling hours. The
    basis may end before then (an expiry, a first-call deadline, a term end, the 2026-07-01
    switch): each candidate is decided again, and when the opening is refused there is no
    such moment: (None, the decision at the opening, which says why)."""
    opening = denial.retry_after
    # Deciding at a requested start ends in the request's own lift (for a legal person too),
    # and deciding at an opening is within hours: no recursion.
    for start in _requested_starts(facts.consents, contact, org, denial.local, opening):
        if decide(contact, facts, settings, start).allowed:
            return start, None
    if opening is None:
        return None, None
    later = decide(contact, facts, settings, opening)
    return (opening, None) if later.allowed else (None, later)


def _requested_starts(
    consents: tuple[Consent, ...], contact: Contact, org: Organisation, now: dt.datetime,
    opening: dt.datetime | None,
) -> list[dt.datetime]:
    # N14: a request's requested window lifts the hours from its start, when the request is
    # still good for this contact then.
    topic = contact.effective_topic
    starts = [
        c.requested_start for c in consents
        if c.kind == "request" and c.requested_start is not None
        and c.requested_end is not None and now < c.requested_start <= c.requested_end
        and (opening is None or c.requested_start < opening)
        and _request_failure(c, contact, org, topic, c.requested_start) is None
    ]
    return sorted(starts)


def _ref(kind: str, ident: int | str) -> EvidenceRef:
    return {"type": kind, "id": ident}


def _consent_ref(ident: int) -> EvidenceRef:
    return {"type": "consent", "id": ident}


def _relationship_ref(ident: int) -> EvidenceRef:
    return {"type": "relationship", "id": ident}


def _subject_ref(number: str) -> EvidenceRef:
    return {"type": "subject", "id": number}


def _sender_ref(sender: Sender) -> EvidenceRef:
    return {"type": "sender", "id": sender.sender}


def _record_ref(record: Record) -> EvidenceRef:
    if isinstance(record, Consent):
        return _consent_ref(record.id)
    if isinstance(record, Subject):
        return _subject_ref(record.number)
    return _relationship_ref(record.id)


def _stop_ref(stop: Stop) -> EvidenceRef:
    if isinstance(stop, Objection):
        return _ref("objection", stop.id)
    return _consent_ref(stop.id)


# -- explanations (one sentence each, English and Dutch) ---------------------------------------

_CHANNEL_EN: Final = {"voice": "calls", "automated_voice": "automated calls", "sms": "SMS",
                      "email": "e-mail"}
_CHANNEL_NL: Final = {"voice": "bellen", "automated_voice": "geautomatiseerd bellen",
                      "sms": "sms", "email": "e-mail"}
_KIND_NL: Final = {
    "customer": "klant", "donor": "donateur", "volunteer": "vrijwilliger",
    "attendee": "deelnemer aan een evenement", "petition": "ondertekenaar van een petitie",
}
_PROVENANCE_EN: Final = {
    "purchased": "bought from a list", "enriched": "added by data enrichment",
    "unknown": "of unknown origin",
}
_PROVENANCE_NL: Final = {
    "purchased": "gekocht van een lijst", "enriched": "toegevoegd door verrijking",
    "unknown": "van onbekende herkomst",
}
AMSTERDAM: Final = "Europe/Amsterdam"  # the zone every date and time in a text is given in
# N7: the switch is a date in Amsterdam, so the first instant it applies is local midnight.
_SWITCH: Final = f"{CUSTOMER_CALLS_END.isoformat()} 00:00 ({AMSTERDAM})"
_DAY_EN: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_NL: Final = ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag")


def _topic_en(topic: str | None) -> str:
    return f"'{topic}'" if topic else "no topic"


def _topic_nl(topic: str | None) -> str:
    return f"'{topic}'" if topic else "geen onderwerp"


def _noun(record: Consent | Relationship) -> tuple[str, str]:
    if isinstance(record, Relationship):
        return f"relationship {record.id}", f"relatie {record.id}"
    if record.kind == "request":
        return f"contact request {record.id}", f"contactverzoek {record.id}"
    return f"consent {record.id}", f"toestemming {record.id}"


def _text_invalid_number() -> Explanation:
    return {
        "en": "Denied: the destination is not a valid phone number, so no rule can be applied "
              "(N4).",
        "nl": "Geweigerd: de bestemming is geen geldig telefoonnummer, dus er is geen regel toe "
              "te passen (N4).",
    }


def _text_unknown_sender(from_: str) -> Explanation:
    return {
        "en": f"Denied: {from_} is not a registered sender of an organisation (N16).",
        "nl": f"Geweigerd: {from_} is geen geregistreerde afzender van een organisatie (N16).",
    }


def _text_not_callable(from_: str) -> Explanation:
    return {
        "en": f"Denied: {from_} is an alphanumeric sender ID or a messaging service, which "
              "cannot be called back; a call must show the organisation's own callable number "
              "(N16).",
        "nl": f"Geweigerd: {from_} is een alfanumerieke afzender of een berichtendienst, die "
              "niet teruggebeld kan worden; een oproep moet het eigen, terugbelbare nummer van "
              "de organisatie tonen (N16).",
    }


def _text_withheld() -> Explanation:
    return {
        "en": "Denied: the caller ID is withheld, while marketing calls must show the "
              "organisation's own callable number (N16).",
        "nl": "Geweigerd: het nummer is afgeschermd, terwijl marketingoproepen het eigen, "
              "terugbelbare nummer van de organisatie moeten tonen (N16).",
    }


def _text_destination() -> Explanation:
    return {
        "en": "Denied: the destination is outside +31 and the policy for other destinations is "
              "deny (N4).",
        "nl": "Geweigerd: de bestemming ligt buiten +31 en het beleid voor andere bestemmingen is "
              "weigeren (N4).",
    }


def _text_objection(o: Objection, org: Organisation) -> Explanation:
    org_en = "all organisations" if o.organisation_id is None else org.name
    org_nl = "alle organisaties" if o.organisation_id is None else org.name
    ch_en = "all channels" if o.channel is None else _CHANNEL_EN[o.channel]
    ch_nl = "alle kanalen" if o.channel is None else _CHANNEL_NL[o.channel]
    when = _instant(o.received_at)
    return {
        "en": f"Denied: objection {o.id}, received at {when}, covers {org_en} and {ch_en}, and "
              "an objection beats every basis given before it; only a consent or contact "
              "request given after it can lift it (N11).",
        "nl": f"Geweigerd: bezwaar {o.id}, ontvangen op {when}, geldt voor {org_nl} en {ch_nl}, "
              "en bezwaar gaat boven elke eerder gegeven grondslag; alleen een later gegeven "
              "toestemming of contactverzoek heft het op (N11).",
    }


def _text_withdrawn(c: Consent, rule: str, contact: Contact, org: Organisation) -> Explanation:
    en, nl = _noun(c)
    when = _instant(c.withdrawn_at) if c.withdrawn_at else ""
    return {
        "en": f"Denied: {en} was withdrawn at {when}, which stops {_CHANNEL_EN[c.channel]} "
              f"by {org.name} about any topic, whatever else is on file; only a consent or "
              f"contact request given after it can lift it ({rule}).",
        "nl": f"Geweigerd: {nl} is ingetrokken op {when}, wat {_CHANNEL_NL[c.channel]} "
              f"door {org.name} over elk onderwerp stopt, wat er verder ook is vastgelegd; "
              f"alleen een later gegeven toestemming of contactverzoek heft dat op ({rule}).",
    }


def _text_lifted(text: Explanation, grant: _Grant, contact: Contact) -> Explanation:
    # N11: the later record is a newer expression of will; the stops it lifts stay on file.
    record = grant.record
    assert isinstance(record, Consent)
    en, nl = _noun(record)
    if len(grant.lifted) == 1:  # the usual case, without building lists
        stop_en, stop_nl = _stop_phrase(grant.lifted[0])
    else:
        phrases = [_stop_phrase(stop) for stop in grant.lifted]
        stop_en = " and ".join([phrase[0] for phrase in phrases])
        stop_nl = " en ".join([phrase[1] for phrase in phrases])
    return {
        "en": f"{text['en'][:-1]}; {en} was given after {stop_en}: a newer expression of will "
              f"that lifts it for {_CHANNEL_EN[contact.basis_channel]}, and it stays on file "
              "(N11).",
        "nl": f"{text['nl'][:-1]}; {nl} is gegeven na {stop_nl}: een nieuwere wilsuiting die "
              f"dat voor {_CHANNEL_NL[contact.basis_channel]} opheft, en het blijft bewaard "
              "(N11).",
    }


def _stop_phrase(stop: Stop) -> tuple[str, str]:
    if isinstance(stop, Objection):
        when = _instant(stop.received_at)
        return (f"objection {stop.id} (received at {when})",
                f"bezwaar {stop.id} (ontvangen op {when})")
    when = _instant(stop.withdrawn_at) if stop.withdrawn_at else ""
    return (f"the withdrawal of consent {stop.id} (at {when})" if stop.kind == "opt_in" else
            f"the withdrawal of contact request {stop.id} (at {when})",
            f"de intrekking van toestemming {stop.id} (op {when})" if stop.kind == "opt_in" else
            f"de intrekking van contactverzoek {stop.id} (op {when})")


def _text_nothing(contact: Contact, domestic: bool) -> Explanation:
    if not domestic:
        return {
            "en": "Denied: numbers outside +31 may only be contacted with explicit consent or a "
                  "contact request, and none is on file (N4).",
            "nl": "Geweigerd: nummers buiten +31 mogen alleen benaderd worden met uitdrukkelijke "
                  "toestemming of een contactverzoek, en die zijn er niet (N4).",
        }
    ch = contact.basis_channel
    return {
        "en": "Denied: no consent, contact request or relationship on file allows "
              f"{_CHANNEL_EN[ch]} about {_topic_en(contact.effective_topic)} (N5).",
        "nl": "Geweigerd: er is geen toestemming, contactverzoek of relatie voor "
              f"{_CHANNEL_NL[ch]} over {_topic_nl(contact.effective_topic)} (N5).",
    }


def _text_failure(
    code: str, rule: str, record: Record, contact: Contact, org: Organisation,
    settings: RuleSettings,
) -> Explanation:
    if isinstance(record, Subject):
        return _text_published_off()
    en, nl = _noun(record)
    topic = contact.effective_topic
    if code == CONSENT_WITHDRAWN and isinstance(record, Consent) and record.withdrawn_at:
        when = _instant(record.withdrawn_at)
        return {"en": f"Denied: {en} was withdrawn at {when} ({rule}).",
                "nl": f"Geweigerd: {nl} is ingetrokken op {when} ({rule})."}
    if code == CONSENT_EXPIRED and isinstance(record, Consent) and record.expires_at:
        when = _instant(record.expires_at)
        return {"en": f"Denied: {en} expired at {when} ({rule}).",
                "nl": f"Geweigerd: {nl} is verlopen op {when} ({rule})."}
    if code == CONSENT_WRONG_TOPIC:
        return _text_wrong_topic(en, nl, rule, record, topic)
    if code == CONSENT_WRONG_CHANNEL and isinstance(record, Consent):
        return _text_wrong_channel(en, nl, rule, record, contact)
    if code == CONSENT_UNVERIFIED:
        return {"en": f"Denied: {en} was never verified as given by the person reached (N5).",
                "nl": f"Geweigerd: {nl} is niet geverifieerd als gegeven door de bereikte "
                      "persoon (N5)."}
    if code == CONSENT_FIRST_CONTACT_LATE and isinstance(record, Consent):
        # N5: the deadline is an instant, and a call at that very instant is still in time.
        when = _instant(_first_contact_by(record))
        return {"en": f"Denied: {en} lapsed for calls because no first call was made by {when} "
                      "(N5).",
                "nl": f"Geweigerd: {nl} is vervallen voor bellen omdat de eerste oproep niet "
                      f"uiterlijk op {when} is gedaan (N5)."}
    if isinstance(record, Relationship):
        return _text_relationship_failure(code, rule, en, nl, record, contact, org, settings)
    return _text_request_or_provenance(code, en, nl, record)


def _text_published_off() -> Explanation:
    return {
        "en": "Denied: the number is published for marketing, but since 2021 a published "
              "number is no basis for calling a natural person, and bases.published_number is "
              "off (N9).",
        "nl": "Geweigerd: het nummer is gepubliceerd voor marketing, maar sinds 2021 is een "
              "gepubliceerd nummer geen grondslag om een natuurlijk persoon te bellen, en "
              "bases.published_number staat uit (N9).",
    }


def _text_wrong_topic(
    en: str, nl: str, rule: str, record: Consent | Relationship, topic: str | None,
) -> Explanation:
    topics = ", ".join(record.topics)
    if not topic:
        return {"en": f"Denied: {en} covers {topics}, but this contact names no topic ({rule}).",
                "nl": f"Geweigerd: {nl} geldt voor {topics}, maar dit contact noemt geen "
                      f"onderwerp ({rule})."}
    return {"en": f"Denied: {en} covers {topics}, not '{topic}' ({rule}).",
            "nl": f"Geweigerd: {nl} geldt voor {topics}, niet voor '{topic}' ({rule})."}


def _text_wrong_channel(
    en: str, nl: str, rule: str, c: Consent, contact: Contact,
) -> Explanation:
    return {
        "en": f"Denied: {en} is for {_CHANNEL_EN[c.channel]}, not "
              f"{_CHANNEL_EN[contact.basis_channel]}, and one consent never covers two channels "
              f"({rule}).",
        "nl": f"Geweigerd: {nl} geldt voor {_CHANNEL_NL[c.channel]}, niet voor "
              f"{_CHANNEL_NL[contact.basis_channel]}, en één toestemming dekt nooit twee kanalen "
              f"({rule}).",
    }


def _text_relationship_failure(
    code: str, rule: str, en: str, nl: str, r: Relationship, contact: Contact,
    org: Organisation, settings: RuleSettings,
) -> Explanation:
    topic = contact.effective_topic
    if code == NO_LEGAL_BASIS and _relation_kind(r, org, settings) is None:
        return _text_not_a_relation(en, nl, r)
    if code == CUSTOMER_EXCEPTION_ENDED:
        return {"en": f"Denied: since {_SWITCH} {en} no longer allows telemarketing calls "
                      "except for charities, charity lotteries and publishers; SMS and e-mail "
                      "still may (N7).",
                "nl": f"Geweigerd: sinds {_SWITCH} geeft {nl} geen grond meer om te bellen, "
                      "behalve voor goede doelen, loterijen en uitgevers; sms en e-mail mogen nog "
                      "(N7)."}
    if code == TOPIC_NOT_SIMILAR:
        topics = ", ".join(r.topics)
        return {"en": f"Denied: {en} concerns {topics}, which is not similar to "
                      f"{_topic_en(topic)} ({rule}).",
                "nl": f"Geweigerd: {nl} betreft {topics}, wat niet soortgelijk is aan "
                      f"{_topic_nl(topic)} ({rule})."}
    if code == CUSTOMER_TERM_EXPIRED and r.ended_at is not None:
        ended, until = _instant(r.ended_at), _instant(_term_end(r.ended_at, org))
        months = org.customer_term_months
        return {"en": f"Denied: {en} ended at {ended} and its {months}-month term ran out at "
                      f"{until} ({rule}).",
                "nl": f"Geweigerd: {nl} is beëindigd op {ended} en de termijn van {months} "
                      f"maanden liep af op {until} ({rule})."}
    if code == NO_LEGAL_BASIS and contact.basis_channel == "automated_voice":
        return {"en": f"Denied: {en} gives no basis for automated calls, which need prior "
                      "consent or a contact request for automated calls (N2).",
                "nl": f"Geweigerd: {nl} geeft geen grondslag voor geautomatiseerd bellen, "
                      "waarvoor vooraf toestemming of een contactverzoek voor geautomatiseerd "
                      "bellen nodig is (N2)."}
    if code == NO_LEGAL_BASIS:
        return {"en": f"Denied: {en} gives no basis because no opt-out was offered when the "
                      f"number was collected ({rule}).",
                "nl": f"Geweigerd: {nl} geeft geen grondslag omdat bij het verzamelen van het "
                      f"nummer geen afmeldmogelijkheid is geboden ({rule})."}
    return _text_request_or_provenance(code, en, nl, r)


def _text_not_a_relation(en: str, nl: str, r: Relationship) -> Explanation:
    # N8: why a relationship on file was not counted at all.
    if r.kind == "petition":
        return {"en": f"Denied: {en} is a petition signer, and petition signers count as "
                      "charity relations only when relations.petition_signers is on (N8).",
                "nl": f"Geweigerd: {nl} is een ondertekenaar van een petitie, en die telt "
                      "alleen als relatie van een goed doel als relations.petition_signers aan "
                      "staat (N8)."}
    article = "an" if r.kind[0] in "aeiou" else "a"
    return {"en": f"Denied: {en} is {article} {r.kind}, which is a relation only of a charity or "
                  "ideological organisation, and this organisation is not one (N8).",
            "nl": f"Geweigerd: {nl} is {_KIND_NL[r.kind]}, wat alleen een relatie is van een "
                  "goed doel of ideële organisatie, en deze organisatie is dat niet (N8)."}


def _text_request_or_provenance(
    code: str, en: str, nl: str, record: Consent | Relationship,
) -> Explanation:
    if code == NUMBER_PROVENANCE_INVALID:
        how_en = _PROVENANCE_EN.get(record.provenance, record.provenance)
        how_nl = _PROVENANCE_NL.get(record.provenance, record.provenance)
        return {"en": f"Denied: the number in {en} was {how_en}, not provided by the person, so "
                      "it supports no basis (N10).",
                "nl": f"Geweigerd: het nummer in {nl} is {how_nl} en niet door de persoon zelf "
                      "gegeven, dus het draagt geen grondslag (N10)."}
    if isinstance(record, Consent) and record.consumed_at is not None:
        when = _instant(record.consumed_at)
        return {"en": f"Denied: {en} was already used at {when}, and a request covers one "
                      "contact (N6).",
                "nl": f"Geweigerd: {nl} is al gebruikt op {when}, en een verzoek geldt voor één "
                      "contact (N6)."}
    return {"en": f"Denied: {en} gives no basis for this contact (N5).",
            "nl": f"Geweigerd: {nl} geeft geen grondslag voor dit contact (N5)."}


def _text_not_appendable(org: Organisation) -> Explanation:
    return {
        "en": "Denied: a marketing SMS must say how to opt out, and this one is a content "
              f"template the opt-out line cannot be appended to, while {org.name} has not "
              "declared that its templates carry it (N17).",
        "nl": "Geweigerd: een marketing-sms moet vermelden hoe de ontvanger zich afmeldt, en "
              "dit bericht is een inhoudssjabloon waaraan de afmeldregel niet kan worden "
              f"toegevoegd, terwijl {org.name} niet heeft verklaard dat de sjablonen die regel "
              "bevatten (N17).",
    }


def _text_footer_unreachable(org: Organisation) -> Explanation:
    return {
        "en": f"Denied: a marketing SMS must say how to opt out, and {org.name}'s opt-out line "
              "would tell the person to send STOP to this message's sender, an alphanumeric "
              "sender ID or messaging service that cannot receive it; the organisation's "
              "sms_footer must name a number that can receive STOP (N12, N17).",
        "nl": "Geweigerd: een marketing-sms moet vermelden hoe de ontvanger zich afmeldt, en "
              f"de afmeldregel van {org.name} zou de ontvanger STOP laten sturen naar de "
              "afzender van dit bericht, een alfanumerieke afzender of berichtendienst die "
              "geen antwoord kan ontvangen; de sms_footer van de organisatie moet een nummer "
              "noemen dat STOP kan ontvangen (N12, N17).",
    }


def _text_hours(
    denial: hours.HoursDenial, retry: dt.datetime | None, lapse: Decision | None,
) -> Explanation:
    day, here = denial.day, denial.local
    next_en, next_nl = _text_retry(denial, retry, lapse)
    weekday = day.date.weekday()
    date = day.date.isoformat()
    if day.window is not None:
        span = f"{_hhmm(day.window.start)}-{_hhmm(day.window.end)}"
        now = _hhmm(here.time())
        return {"en": f"Denied: {now} on {_DAY_EN[weekday]} {date} is outside the calling hours "
                      f"{span} ({AMSTERDAM}) (N13); {next_en}.",
                "nl": f"Geweigerd: {now} op {_DAY_NL[weekday]} {date} valt buiten de beltijden "
                      f"{span} ({AMSTERDAM}) (N13); {next_nl}."}
    why_en, why_nl = _closed_day(day)
    return {"en": f"Denied: {_DAY_EN[weekday]} {date} ({AMSTERDAM}) is a day without "
                  f"calls{why_en} (N13); {next_en}.",
            "nl": f"Geweigerd: {_DAY_NL[weekday]} {date} ({AMSTERDAM}) is een dag zonder "
                  f"belmomenten{why_nl} (N13); {next_nl}."}


def _text_retry(
    denial: hours.HoursDenial, retry: dt.datetime | None, lapse: Decision | None,
) -> tuple[str, str]:
    if retry is not None:
        when = _instant(retry)
        return f"next allowed moment {when}", f"eerstvolgend toegestaan moment {when}"
    opening = denial.retry_after
    if lapse is None or opening is None:
        return ("no allowed moment, as no day within a year has calling hours (N15)",
                "geen toegestaan moment, want geen dag binnen een jaar heeft beltijden (N15)")
    # N15: the basis ends before the calls open again; the decision at the opening says how.
    when = _instant(opening)
    then_en = lapse.explanation["en"].removeprefix("Denied: ").rstrip(".")
    then_nl = lapse.explanation["nl"].removeprefix("Geweigerd: ").rstrip(".")
    return (f"no allowed moment, as the basis ends first: at the next opening, {when}, "
            f"{then_en} (N15)",
            f"geen toegestaan moment, want de grondslag vervalt eerder: bij de eerstvolgende "
            f"opening, {when}, {then_nl} (N15)")


# The same few instants (a number's consents and objections) are named decision after
# decision: the zone conversion and formatting are done once per instant (equal instants in
# other offsets are equal keys, and give the same text).
@functools.lru_cache(maxsize=16_384)
def _instant(moment: dt.datetime) -> str:
    """An instant as Europe/Amsterdam wall time: date, time (seconds only when set), zone."""
    here = hours.local(moment)
    clock = _hhmm(here.time())
    if here.second:
        clock = f"{clock}:{here.second:02d}"
    return f"{here.date().isoformat()} {clock} ({AMSTERDAM})"


def _hhmm(moment: dt.time) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}"  # strftime is slow on the hot path


def _closed_day(day: hours.Day) -> tuple[str, str]:
    if day.kind == "holiday":
        return (f", a Dutch public holiday ({day.holiday_en})",
                f", een officiële feestdag ({day.holiday_nl})")
    if day.kind == "closed_date":
        return ", a configured commemoration day", ", een ingestelde herdenkingsdag"
    if day.kind == "sunday":
        return "", ""
    return " under the configured calling hours", " volgens de ingestelde beltijden"


def _text_allow(grant: _Grant, contact: Contact, org: Organisation) -> Explanation:
    record, topic = grant.record, contact.effective_topic
    if isinstance(record, Consent):
        if grant.basis == CONTACT_REQUEST:
            return _text_request_allow(record, contact, org, grant.lifts_hours)
        until = _instant(record.expires_at) if record.expires_at else ""
        until_en, until_nl = (f" until {until}", f" tot {until}") if until else ("", "")
        ch = contact.basis_channel
        return {"en": f"Allowed: consent {record.id} covers {_CHANNEL_EN[ch]} about "
                      f"{_topic_en(topic)} by {org.name}{until_en} (N5).",
                "nl": f"Toegestaan: toestemming {record.id} dekt {_CHANNEL_NL[ch]} "
                      f"over {_topic_nl(topic)} door {org.name}{until_nl} (N5)."}
    if isinstance(record, Relationship):
        return _text_relationship_allow(record, grant, contact, org)
    return _text_fixed_allow(grant.basis, contact)


def _text_request_allow(
    c: Consent, contact: Contact, org: Organisation, lifted: bool,
) -> Explanation:
    topic = contact.effective_topic
    lift_en = lift_nl = ""
    if lifted and contact.channel == "voice":
        lift_en = " and, at the requested time, calling hours do not apply (N14)"
        lift_nl = " en op het gevraagde tijdstip gelden de beltijden niet (N14)"
    return {"en": f"Allowed: contact request {c.id} asked {org.name} to get in touch about "
                  f"{_topic_en(topic)}; this contact uses it up (N6){lift_en}.",
            "nl": f"Toegestaan: contactverzoek {c.id} vroeg {org.name} contact op te nemen over "
                  f"{_topic_nl(topic)}; dit contact verbruikt het (N6){lift_nl}."}


def _text_relationship_allow(
    r: Relationship, grant: _Grant, contact: Contact, org: Organisation,
) -> Explanation:
    topic = contact.effective_topic
    if r.ended_at is None:
        status_en, status_nl = "ongoing", "lopend"
    else:
        ended, until = _instant(r.ended_at), _instant(_term_end(r.ended_at, org))
        status_en = f"ended at {ended} and valid until {until}"
        status_nl = f"beëindigd op {ended} en geldig tot {until}"
    return {"en": f"Allowed: {r.kind} relationship {r.id} with {org.name}, {status_en}, covers "
                  f"the similar topic {_topic_en(topic)} ({grant.rule}).",
            "nl": f"Toegestaan: relatie {r.id} ({_KIND_NL[r.kind]}) met {org.name}, {status_nl}, "
                  f"dekt het soortgelijke onderwerp {_topic_nl(topic)} ({grant.rule})."}


def _text_fixed_allow(basis: str, contact: Contact) -> Explanation:
    if basis == NOT_MARKETING:
        return {"en": f"Allowed: sender {contact.from_} is registered for service traffic, which "
                      "is not marketing and not gated on consent (N3).",
                "nl": f"Toegestaan: afzender {contact.from_} is geregistreerd voor "
                      "serviceverkeer, dat geen marketing is en niet van toestemming afhangt "
                      "(N3)."}
    if basis == BUSINESS_ENTITY:
        return {"en": "Allowed: the number belongs to a legal person, and live calls to legal "
                      "persons are allowed unless they objected (N1).",
                "nl": "Toegestaan: het nummer is van een rechtspersoon, en live bellen naar "
                      "rechtspersonen mag zolang zij geen bezwaar hebben gemaakt (N1)."}
    return {"en": "Allowed: the holder published this number for marketing contact, which allows "
                  "live calls because bases.published_number is on (N9).",
            "nl": "Toegestaan: de houder heeft dit nummer gepubliceerd voor marketingcontact, wat "
                  "live bellen toestaat omdat bases.published_number aan staat (N9)."}
