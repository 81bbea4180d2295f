"""Number parsing: the Dutch fast path agrees with phonenumbers' full parse."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
