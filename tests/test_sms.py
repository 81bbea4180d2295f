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


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Actie! Afmelden? Sms STOP naar +31201234567", True),
        ("Actie!\nafmelden?   sms stop naar +31201234567", True),
        ("Korting. Sms STOP naar 1234 om af te melden", True),
        ("Great deal. Reply STOP to opt out", True),
        ("Stuur UIT naar 4040", True),
        ("We stoppen met de oude tarieven", False),
        ("Stop met te veel betalen!", False),
        ("Korting op zonnepanelen", False),
    ],
)
def test_has_opt_out(body: str, expected: bool) -> None:
    footer = render_footer(None, sender="+31201234567", organisation="Energie BV")
    assert has_opt_out(body, footer) is expected
