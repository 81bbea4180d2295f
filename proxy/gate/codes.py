"""Every denial's HTTP status and stable numeric code, for every way in: a public contract
(README, "Error codes"). Provider-neutral: the Twilio front renders them in Twilio's error
shape, the dial API in its own answer."""

from __future__ import annotations

from collections.abc import Mapping

# Six digits, so they can never collide with Twilio's five-digit codes.
DENIAL_CODES: Mapping[str, tuple[int, int]] = {
    "INVALID_NUMBER": (403, 930001),
    "UNKNOWN_SENDER": (403, 930002),
    "CALLER_ID_WITHHELD": (403, 930003),
    "CALLER_ID_NOT_CALLABLE": (403, 930006),
    "DESTINATION_NOT_ALLOWED": (403, 930004),
    "OBJECTION_ON_FILE": (403, 930005),  # calls; SMS gets Twilio's 21610 / 400
    "CONSENT_WITHDRAWN": (403, 930010),
    "CONSENT_EXPIRED": (403, 930011),
    "CONSENT_WRONG_TOPIC": (403, 930012),
    "CONSENT_WRONG_CHANNEL": (403, 930013),
    "CONSENT_UNVERIFIED": (403, 930014),
    "CONSENT_FIRST_CONTACT_LATE": (403, 930015),
    "CUSTOMER_TERM_EXPIRED": (403, 930020),
    "TOPIC_NOT_SIMILAR": (403, 930021),
    "CUSTOMER_EXCEPTION_ENDED": (403, 930022),
    "NUMBER_PROVENANCE_INVALID": (403, 930023),
    "NO_LEGAL_BASIS": (403, 930030),
    "OUTSIDE_CALLING_HOURS": (403, 930040),
    "PROHIBITED_DAY": (403, 930041),
    "OPT_OUT_NOT_APPENDABLE": (403, 930050),
    "TWIML_NOT_INSPECTABLE": (403, 930051),
    "CONSENT_STORE_UNAVAILABLE": (503, 930503),
}
