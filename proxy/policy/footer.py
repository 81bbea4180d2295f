"""N12/N17: what the engine must know of an organisation's opt-out footer. Pure.

The front renders the footer and appends it (proxy/sms.py); the engine decides whether the
footer it would render can be used at all.
"""

from __future__ import annotations

from typing import Final

DEFAULT_FOOTER: Final = "Afmelden? Sms STOP naar {sender}"
SENDER: Final = "{sender}"


def template(sms_footer: str | None) -> str:
    """The footer an organisation uses: its own `sms_footer`, or the default."""
    return sms_footer or DEFAULT_FOOTER


def reply_is_unreachable(sms_footer: str | None, sender: str) -> bool:
    """N12/N17: would the footer tell the person to text STOP to a sender that cannot receive
    it? `sender` is the registered form: an E.164 number, or an alphanumeric sender ID or a
    MessagingServiceSid, neither of which a person can text (and which never start with +)."""
    return SENDER in template(sms_footer) and not sender.startswith("+")
