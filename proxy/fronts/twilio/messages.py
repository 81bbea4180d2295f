"""Fields of a Twilio Messages create that change what the gate can promise, besides To, From
and Body: a content template (N17) and a schedule (SendAt).

Pure functions of the form's (name, value) pairs; the Twilio front calls them and renders
what follows in Twilio's error shape.
"""

from __future__ import annotations

from collections.abc import Sequence

# Twilio sends a content template instead of Body and MediaUrl ("superseded by the
# ContentSid"): text appended to Body would not reach the person, and the proxy cannot see
# or change what the template says.
CONTENT_TEMPLATE_FIELD = "ContentSid"
# Message scheduling: Twilio holds the message and sends it at SendAt, up to 35 days later.
SCHEDULE_FIELDS = ("ScheduleType", "SendAt")

SCHEDULED_MESSAGE = (
    "consent-proxy decides at the moment a message is sent, so it does not pass on messages "
    "scheduled for later (ScheduleType/SendAt): an objection made before the send time would "
    "not stop them. Send the message from the dialer at the desired time instead.")


def uses_content_template(pairs: Sequence[tuple[str, str]]) -> bool:
    """N17: the message is a content template (a non-empty ContentSid), whatever its Body."""
    return any(key == CONTENT_TEMPLATE_FIELD and value.strip() for key, value in pairs)


def is_scheduled(pairs: Sequence[tuple[str, str]]) -> bool:
    """The message asks Twilio to send it later. Any ScheduleType or SendAt counts, empty or
    not: a schedule is refused before anything else is read from it."""
    return any(key in SCHEDULE_FIELDS for key, _ in pairs)
