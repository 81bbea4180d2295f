"""Reason codes, allow bases and obligations: the public contract of the decision engine.

Codes are stable and documented (nl-rules §7): never rename one, only add. Each code names the
rule it comes from (nl-rules N1-N17), what it means, and what an operator typically does about it.
`REASONS` is the table the README and the admin API render.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple


class ReasonDoc(NamedTuple):
    """Documentation of one code: the rule it applies, its meaning, the usual operator fix."""

    rule: str
    meaning: str
    fix: str


# -- reason codes ------------------------------------------------------------------------------

ALLOWED: Final = "ALLOWED"
INVALID_NUMBER: Final = "INVALID_NUMBER"
UNKNOWN_SENDER: Final = "UNKNOWN_SENDER"
CALLER_ID_WITHHELD: Final = "CALLER_ID_WITHHELD"
CALLER_ID_NOT_CALLABLE: Final = "CALLER_ID_NOT_CALLABLE"
DESTINATION_NOT_ALLOWED: Final = "DESTINATION_NOT_ALLOWED"
OBJECTION_ON_FILE: Final = "OBJECTION_ON_FILE"
CONSENT_WITHDRAWN: Final = "CONSENT_WITHDRAWN"
CONSENT_EXPIRED: Final = "CONSENT_EXPIRED"
CONSENT_WRONG_TOPIC: Final = "CONSENT_WRONG_TOPIC"
CONSENT_WRONG_CHANNEL: Final = "CONSENT_WRONG_CHANNEL"
CONSENT_UNVERIFIED: Final = "CONSENT_UNVERIFIED"
CONSENT_FIRST_CONTACT_LATE: Final = "CONSENT_FIRST_CONTACT_LATE"
CUSTOMER_TERM_EXPIRED: Final = "CUSTOMER_TERM_EXPIRED"
TOPIC_NOT_SIMILAR: Final = "TOPIC_NOT_SIMILAR"
CUSTOMER_EXCEPTION_ENDED: Final = "CUSTOMER_EXCEPTION_ENDED"
NUMBER_PROVENANCE_INVALID: Final = "NUMBER_PROVENANCE_INVALID"
NO_LEGAL_BASIS: Final = "NO_LEGAL_BASIS"
OUTSIDE_CALLING_HOURS: Final = "OUTSIDE_CALLING_HOURS"
PROHIBITED_DAY: Final = "PROHIBITED_DAY"
OPT_OUT_NOT_APPENDABLE: Final = "OPT_OUT_NOT_APPENDABLE"
CONSENT_STORE_UNAVAILABLE: Final = "CONSENT_STORE_UNAVAILABLE"
TWIML_NOT_INSPECTABLE: Final = "TWIML_NOT_INSPECTABLE"

REASONS: Final[Mapping[str, ReasonDoc]] = MappingProxyType({
    ALLOWED: ReasonDoc(
        "N1/N3/N5-N9",
        "A legal basis holds (named in `basis`) and no rule forbids the contact now.",
        "None.",
    ),
    INVALID_NUMBER: ReasonDoc(
        "N4",
        "The destination is not a valid E.164 number, so no destination rule can be applied.",
        "Fix the number in the dialer or CRM.",
    ),
    UNKNOWN_SENDER: ReasonDoc(
        "N16",
        "The From number is not a registered sender of an organisation.",
        "Register the caller ID / SMS sender for the organisation, or use a registered one.",
    ),
    CALLER_ID_WITHHELD: ReasonDoc(
        "N16",
        "The caller ID is withheld or anonymous; marketing calls must show a callable number.",
        "Switch off number suppression in the dialer.",
    ),
    CALLER_ID_NOT_CALLABLE: ReasonDoc(
        "N16",
        "A call's From is an alphanumeric sender ID or a MessagingServiceSid, which cannot be "
        "called back; a call must show the organisation's own callable number (SMS may use "
        "them).",
        "Call from a registered phone number of the organisation.",
    ),
    DESTINATION_NOT_ALLOWED: ReasonDoc(
        "N4",
        "The destination is outside +31 and the configured policy for other destinations is deny.",
        "Remove the number from the campaign, or set destinations.other = \"consent_only\".",
    ),
    OBJECTION_ON_FILE: ReasonDoc(
        "N11",
        "The person objected (to this organisation or globally, for this channel or all); "
        "an objection beats every basis given before it, and only a verified consent or a "
        "contact request given after it lifts it.",
        "Remove the number from the campaign; only the person can lift the objection.",
    ),
    CONSENT_WITHDRAWN: ReasonDoc(
        "N5",
        "A consent or contact request of this organisation for this channel was withdrawn: "
        "that stops every contact through the channel, about any topic, whatever else is on "
        "file, until the person gives a new consent or contact request.",
        "Remove the number; do not ask again through the same channel.",
    ),
    CONSENT_EXPIRED: ReasonDoc(
        "N5",
        "The consent or contact request that would cover this contact has passed its expiry "
        "moment (expires_at).",
        "Obtain a new consent, or remove the number.",
    ),
    CONSENT_WRONG_TOPIC: ReasonDoc(
        "N5",
        "A consent or contact request is on file, but for other topics than this contact's.",
        "Use a sender/topic the consent covers, or obtain consent for this topic.",
    ),
    CONSENT_WRONG_CHANNEL: ReasonDoc(
        "N5",
        "A consent is on file, but for another channel; one consent never covers two channels, "
        "and a `voice` consent (calls by a person) does not cover automated calls (N2).",
        "Contact the person through the consented channel, or obtain consent for this one.",
    ),
    CONSENT_UNVERIFIED: ReasonDoc(
        "N5",
        "The consent was not verified as given by the person reached (SMS code, link, call-back).",
        "Complete the verification step and record verified_at.",
    ),
    CONSENT_FIRST_CONTACT_LATE: ReasonDoc(
        "N5",
        "The first call was not made within the consent's stated first-contact term (shorter or "
        "longer than 6 months), or without one within 6 months, so the consent lapsed for calls.",
        "Obtain a new consent before calling.",
    ),
    CUSTOMER_TERM_EXPIRED: ReasonDoc(
        "N7",
        "The customer or charity relationship ended longer ago than the organisation's term "
        "(default 36 months).",
        "Remove the number, or obtain opt-in consent.",
    ),
    TOPIC_NOT_SIMILAR: ReasonDoc(
        "N7",
        "The relationship is about products that are not similar to this contact's topic "
        "(different first topic segment).",
        "Use a topic within the relationship's product line, or obtain opt-in consent.",
    ),
    CUSTOMER_EXCEPTION_ENDED: ReasonDoc(
        "N7",
        "Since 2026-07-01 (Europe/Amsterdam) a customer relationship no longer allows "
        "telemarketing calls, except for charity, charity-lottery and press organisations.",
        "Obtain opt-in consent for calls; SMS under the relationship is still possible.",
    ),
    NUMBER_PROVENANCE_INVALID: ReasonDoc(
        "N10",
        "The number was bought, enriched or of unknown origin; only self-provided numbers support "
        "a basis.",
        "Remove the number; record a basis only for numbers the person gave themselves.",
    ),
    NO_LEGAL_BASIS: ReasonDoc(
        "N5",
        "No consent, contact request or relationship allows this contact (or a record on file "
        "gives no basis of its kind: named in the evidence).",
        "Obtain opt-in consent (or a contact request) before contacting the person.",
    ),
    OUTSIDE_CALLING_HOURS: ReasonDoc(
        "N13",
        "The call falls outside the calling hours of this day (Europe/Amsterdam).",
        "Retry at `retry_after`; when it is null the basis ends before the next opening (or no "
        "day within a year has calling hours): do not retry.",
    ),
    PROHIBITED_DAY: ReasonDoc(
        "N13",
        "No calls today: Sunday, Dutch public holiday or a configured commemoration day.",
        "Retry at `retry_after`; when it is null the basis ends before the next opening (or no "
        "day within a year has calling hours): do not retry.",
    ),
    OPT_OUT_NOT_APPENDABLE: ReasonDoc(
        "N17",
        "A marketing SMS whose opt-out line cannot be used: a content template (ContentSid), "
        "which the line cannot be appended to, while the organisation has not declared that "
        "its templates carry one; or an organisation's footer that names {sender} as where "
        "to send STOP, while the sender is an alphanumeric ID or a messaging service.",
        "Send the text as Body (the footer is then appended), or put the opt-out line in the "
        "organisation's templates and set content_templates_carry_opt_out; for senders that "
        "cannot receive replies, set an sms_footer that names a number that can receive STOP.",
    ),
    CONSENT_STORE_UNAVAILABLE: ReasonDoc(
        "SYSTEM",
        "The consent store could not be read, so the request was refused unchecked (HTTP 503).",
        "Restore the database connection; the dialer should retry later.",
    ),
    TWIML_NOT_INSPECTABLE: ReasonDoc(
        "N4",
        "The call's instructions reach a destination the gate cannot see (an ApplicationSid, "
        "a SIP address or an unknown TwiML element), so no rule can be applied to it.",
        "Dial phone numbers from the call's own TwiML (Url or Twiml), or switch on "
        "twilio.allow_sip / twilio.allow_application_sid and accept the risk.",
    ),
})

DENY_REASONS: Final[frozenset[str]] = frozenset(REASONS) - {ALLOWED}

# -- allow bases -------------------------------------------------------------------------------

NOT_MARKETING: Final = "NOT_MARKETING"
BUSINESS_ENTITY: Final = "BUSINESS_ENTITY"
CONTACT_REQUEST: Final = "CONTACT_REQUEST"
CONSENT: Final = "CONSENT"
CUSTOMER: Final = "CUSTOMER"
CHARITY_RELATION: Final = "CHARITY_RELATION"
PUBLISHED_NUMBER: Final = "PUBLISHED_NUMBER"

BASES: Final[Mapping[str, ReasonDoc]] = MappingProxyType({
    NOT_MARKETING: ReasonDoc(
        "N3", "The sender is configured for service traffic, which is not marketing.", "None."),
    BUSINESS_ENTITY: ReasonDoc(
        "N1", "Live call to a legal person, which stays opt-out.", "None."),
    CONTACT_REQUEST: ReasonDoc(
        "N6", "The person asked this organisation to contact them; used up by this contact.",
        "None."),
    CONSENT: ReasonDoc(
        "N5", "Verified opt-in consent for this organisation, channel and topic.", "None."),
    CUSTOMER: ReasonDoc(
        "N7", "Customer relationship with this organisation, similar products, within term.",
        "None."),
    CHARITY_RELATION: ReasonDoc(
        "N8", "Donor, volunteer or event attendee of this charity, within term.", "None."),
    PUBLISHED_NUMBER: ReasonDoc(
        "N9", "Only with bases.published_number on: the person published the number for "
        "marketing calls (live voice only).", "None."),
})

# -- obligations -------------------------------------------------------------------------------

# N17: the caller must append the organisation's opt-out footer to the SMS body.
OPT_OUT_APPENDED: Final = "OPT_OUT_APPENDED"
# N17: the message is a content template, which the organisation declared carries its opt-out
# line (content_templates_carry_opt_out); nothing is appended.
OPT_OUT_IN_TEMPLATE: Final = "OPT_OUT_IN_TEMPLATE"
