"""N17: segment counting and the opt-out footer."""

from __future__ import annotations

import pytest

from proxy.sms import MAX_BODY, apply_footer, has_opt_out, render_footer, segments


@pytest.mark.parametrize(
    ("body", "encoding", "units", "count"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters cost two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€", "GSM-7", 154, 1),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),  # the escape is never split
        ("ä ö ü é Ñ £ ¥ §", "GSM-7", 15, 1),
        ("a" * 70 + "\u2019", "UCS-2", 71, 2),  # a curly apostrophe switches to UCS-2
        ("a" * 69 + "\u2019", "UCS-2", 70, 1),
        ("ł" * 134, "UCS-2", 134, 2),
        ("ł" * 135, "UCS-2", 135, 3),
        ("🎉" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
        ("a" * 66 + "🎉" + "a", "UCS-2", 69, 1),
        ("a" * 66 + "🎉" + "a" * 2, "UCS-2", 70, 1),
        ("a" * 66 + "🎉" + "a" * 3, "UCS-2", 71, 2),
    ],
)
def test_segments(body: str, encoding: str, units: int, count: int) -> None:
    result = segments(body)
    assert (result.encoding, result.units, result.count) == (encoding, units, count)


def test_surrogate_pair_is_not_split() -> None:
    # 66 units then an emoji: the emoji would straddle the 67-unit boundary, so it moves.
    result = segments("a" * 66 + "🎉" + "b" * 70)
    assert result.count == 3


def test_footer_rendering_and_append() -> None:
    footer = render_footer(None, sender="+31201234567", organisation="Energie BV")
    assert footer == "Afmelden? Sms STOP naar +31201234567"
    custom = render_footer("Stop? Sms STOP naar {sender} ({organisation})", sender="1234",
                           organisation="X")
    assert custom == "Stop? Sms STOP naar 1234 (X)"
    result = apply_footer("Hallo", footer, needed=True)
    assert result.body == "Hallo\nAfmelden? Sms STOP naar +31201234567"
    assert result.appended
    assert not result.too_long
    assert apply_footer("Hallo", footer, needed=False).body == "Hallo"
    long = apply_footer("x" * (MAX_BODY - 10), footer, needed=True)
    assert long.too_long
    assert long.body.startswith("x" * (MAX_BODY - 10))  # never truncated


SENDER = "+31201234567"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # The organisation's own rendered footer, whitespace and case aside.
        ("Actie! Afmelden? Sms STOP naar +31201234567", True),
        ("Actie!\nafmelden?   sms stop naar +31201234567", True),
        # An instruction naming the keyword and the sender's number, E.164 or national.
        ("Korting. Sms STOP naar +31201234567 om af te melden", True),
        ("Korting. Stuur UIT naar 020 123 4567", True),
        ("Korting. Antwoord 'STOP' naar 020-1234567.", True),
        ("Great deal. Reply STOP to +31 20 123 4567", True),
        ("Great deal. Text stop to 0201234567", True),
        # Ordinary copy, or an instruction that does not say where STOP goes.
        ("Stuur een sms en kies uit drie aanbiedingen!", False),
        ("Text us today and stop paying too much for energy.", False),
        ("Antwoord JA en stop met te veel betalen", False),
        ("Great deal. Reply STOP to opt out", False),
        ("Sms STOP om af te melden", False),
        ("We stoppen met de oude tarieven", False),
        ("Stop met te veel betalen!", False),
        ("Korting op zonnepanelen", False),
        # A number that is neither the footer's nor the sender's, or more digits than it.
        ("Korting. Sms STOP naar 1234 om af te melden", False),
        ("Stuur UIT naar 4040", False),
        ("Sms STOP naar +31201234568", False),
        ("Sms STOP naar 020 123 45678", False),
        ("Sms STOP naar +3120123456", False),
        # Keyword and number, but not as one instruction.
        ("Sms ons: STOP naar +31201234567", False),
        ("Sms STOP, naar +31201234567", False),
    ],
)
def test_has_opt_out(body: str, expected: bool) -> None:
    footer = render_footer(None, sender=SENDER, organisation="Energie BV")
    assert has_opt_out(body, footer, SENDER) is expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Actie! Stop? Sms UIT naar 4040 (Energie BV)", True),  # the footer itself
        ("Actie! Stuur STOP naar 4040", True),  # the footer's reply number
        ("Actie! Sms STOP naar 020 123 4567", True),  # the sender's own number
        ("Actie! Sms STOP naar 40400", False),
        ("Actie! Sms STOP naar 1234", False),
    ],
)
def test_has_opt_out_names_the_footers_reply_number(body: str, expected: bool) -> None:
    footer = render_footer("Stop? Sms UIT naar 4040 ({organisation})", sender=SENDER,
                           organisation="Energie BV")
    assert has_opt_out(body, footer, SENDER) is expected


@pytest.mark.parametrize("sender", ["EnergieBV", "MG" + "b" * 32])
def test_has_opt_out_from_a_sender_that_is_no_number(sender: str) -> None:
    """Only the footer's own line or its reply number count: the sender names no number."""
    footer = render_footer("Afmelden? Sms STOP naar 4040", sender=sender, organisation="X")
    assert has_opt_out("Sms STOP naar 4040", footer, sender)
    assert not has_opt_out(f"Sms STOP naar {sender}", footer, sender)
    assert not has_opt_out("Sms STOP naar 0201234567", footer, sender)
