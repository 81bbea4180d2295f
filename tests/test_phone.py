"""Number parsing: the Dutch fast path agrees with phonenumbers' full parse."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.fields import parse_sender_id
from proxy.gate import sender_key
from proxy.phone import InvalidNumber, mask_text, parse_number, try_parse_number


def full_parse(raw: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, "NL")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@given(st.integers(min_value=10**8, max_value=10**9 - 1), st.sampled_from(["+31", "0"]))
def test_fast_path_agrees_with_phonenumbers(nsn: int, prefix: str) -> None:
    raw = f"{prefix}{nsn}"
    assert try_parse_number(raw) == full_parse(raw)


@pytest.mark.parametrize("raw", ["0612345670", "+31600000000", "0000000000", "+31012345678",
                                 "06123456789012", "31612345678"])
def test_invalid_numbers_raise_with_a_masked_message(raw: str) -> None:
    if full_parse(raw) is not None:
        assert parse_number(raw) == full_parse(raw)
        return
    with pytest.raises(InvalidNumber) as caught:
        parse_number(raw)
    assert raw[-8:] not in str(caught.value)


def test_masking_text_with_an_invalid_number_terminates() -> None:
    # An invalid number inside text once made masking and parsing call each other forever.
    assert mask_text("bel 0600000000 of 0612345678") == "bel ****0000 of +31 6 ****5678"


def test_mobile_first_validity_is_phonenumbers_verdict_for_every_prefix() -> None:
    """proxy.phone._valid_nl tries the mobile type first: the verdict must still be
    is_valid_number's, for every three-digit prefix of the Dutch number space."""
    from random import Random

    from proxy.phone import _valid_nl

    rng = Random(31)
    checked = valid = 0
    for prefix in range(100, 1000):
        for _ in range(6):
            nsn = f"{prefix}{rng.randrange(10**6):06d}"
            expected = phonenumbers.is_valid_number(phonenumbers.PhoneNumber(31, int(nsn)))
            assert _valid_nl(nsn) == expected, nsn
            checked, valid = checked + 1, valid + expected
    assert checked == 5400
    assert 0 < valid < checked  # both verdicts were exercised


# --- look-alike spellings: one number, one key ---------------------------------------------

ASCII_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)


@pytest.mark.parametrize("raw", [
    "+316\uff11\uff12\uff13\uff14\uff10\uff10\uff10\uff12",  # +316 then full-width 12340002
    "\uff10\uff16\uff11\uff12\uff13\uff14\uff10\uff10\uff10\uff12",  # all full-width, 06…
    "\uff0b\uff13\uff11\uff16\uff11\uff12\uff13\uff14\uff10\uff10\uff10\uff12",  # full-width + too
    "06\u00a01234\u30000002",  # no-break and ideographic spaces
    "06\uff0d12340002",  # a full-width hyphen
])
def test_full_width_digits_name_the_same_number(raw: str) -> None:
    """NFKC first: a full-width spelling of a number is that number, never a new key (an
    objection on the ASCII form must be found)."""
    assert try_parse_number(raw) == "+31612340002"


@pytest.mark.parametrize("raw", [
    "+31 \u0666\u0661\u0662\u0663\u0664\u0660\u0660\u0660\u0662",  # Arabic-Indic digits
    "\u0966\u096c\u0967\u0968\u0969\u096a\u0966\u0966\u0966\u0968",  # Devanagari
    "+31 6 1234 \U0001d7ce\U0001d7ce\U0001d7ce2",  # mathematical bold zeros: NFKC makes 0
])
def test_digits_of_other_scripts_are_refused_or_folded(raw: str) -> None:
    """phonenumbers reads Arabic-Indic and Devanagari digits itself; after NFKC they are still
    not ASCII, so they are refused, not parsed into a number under another spelling."""
    found = try_parse_number(raw)
    if raw.startswith("+31 6 1234"):
        assert found == "+31612340002"  # NFKC folds mathematical digits to ASCII
    else:
        assert found is None


DIGITISH = st.text(
    alphabet=st.one_of(st.characters(categories=["Nd"]), st.sampled_from("+-(). 0123456789"),
                       st.characters(categories=["Zs"])),
    min_size=3, max_size=20)


@given(DIGITISH)
def test_a_parsed_number_is_always_ascii(raw: str) -> None:
    found = try_parse_number(raw)
    assert found is None or ASCII_E164.fullmatch(found)


@given(st.integers(min_value=10**8, max_value=10**9 - 1), st.sampled_from(["+31", "0"]))
def test_full_width_agrees_with_ascii(nsn: int, prefix: str) -> None:
    raw = f"{prefix}{nsn}"
    wide = "".join(chr(ord(ch) + 0xFEE0) if ch.isdigit() or ch == "+" else ch for ch in raw)
    assert try_parse_number(wide) == try_parse_number(raw)


@pytest.mark.parametrize(("raw", "key"), [
    ("\uff25\uff4e\uff45\uff52\uff47\uff49\uff45", "Energie"),  # full-width letters
    ("\uff10\uff12\uff10\uff0d\uff11\uff12\uff13\uff14\uff15\uff16\uff17", "+31201234567"),
    ("MG" + "\uff41" * 32, "MG" + "a" * 32),
])
def test_sender_keys_are_folded_too(raw: str, key: str) -> None:
    assert parse_sender_id(raw) == key
    assert sender_key(raw) == key
