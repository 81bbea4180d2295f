"""The public codes of every way in: each denial's HTTP status and stable numeric code, and
the gate's own faults with what they mean and what to do. Public contracts (README, "Error
codes"): never renumbered, never renamed. Provider-neutral: the Twilio front renders them in
Twilio's error shape, the dial API in its own answer, and `GET /errors/{code}` explains each."""

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

# Faults of the proxy's own, in the same numbering: (status, code).
UPSTREAM_UNREACHABLE = (502, 930502)
UPSTREAM_TIMEOUT = (504, 930504)
IDEMPOTENCY_IN_FLIGHT = (409, 930409)
IDEMPOTENCY_MISMATCH = (422, 930422)
NOT_PASSED_THROUGH = (403, 930403)
SCHEDULED_SEND_NOT_GATED = (400, 930052)
FAULTS: Mapping[tuple[int, int], tuple[str, str, str]] = {
    UPSTREAM_UNREACHABLE: (
        "UPSTREAM_UNREACHABLE", "The provider could not be reached; nothing was sent.",
        "Check the front's upstream setting (TWILIO_API_BASE and the like) and the network; "
        "the dialer may retry."),
    UPSTREAM_TIMEOUT: (
        "UPSTREAM_TIMEOUT", "The provider's answer did not arrive whole (none within "
        "upstream.timeout_seconds, or the connection broke once the request was sent); the "
        "request may or may not have been delivered, and it is not retried.",
        "Look the call or message up before trying again."),
    IDEMPOTENCY_IN_FLIGHT: (
        "IDEMPOTENCY_IN_FLIGHT", "A request with the same idempotency key (Twilio's "
        "I-Twilio-Idempotency-Token, Telnyx's Idempotency-Key) is still being processed.",
        "Wait and repeat the request to get its answer."),
    IDEMPOTENCY_MISMATCH: (
        "IDEMPOTENCY_MISMATCH", "The idempotency key was used in the last 24 hours for a "
        "different request.", "Use a new token for a new request."),
    NOT_PASSED_THROUGH: (
        "NOT_PASSED_THROUGH", "Only the calls, messages and recordings this client created are "
        "reachable through consent-proxy.", "Use the provider directly for account "
        "administration."),
    SCHEDULED_SEND_NOT_GATED: (
        "SCHEDULED_SEND_NOT_GATED", "A message scheduled for later (Twilio's ScheduleType/SendAt "
        "or another provider's scheduling) would leave long after its decision, past any "
        "objection made in between; consent-proxy "
        "decides at the moment of sending.", "Send the message at the desired time from the "
        "dialer itself, without scheduling it at the provider."),
}
