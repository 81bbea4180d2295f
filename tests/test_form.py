"""proxy/form.py against urllib.parse, which it replaces on the hot path: the same pairs, the
same body bytes, the same errors, on random input."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy import form

MAX = 20

# Pieces that meet every branch: separators, escapes of ASCII and of UTF-8 bytes (valid or
# not), stray and short escapes, "+" and plain text in and outside ASCII.
_PIECES = st.one_of(
    st.sampled_from(["&", "=", "+", "%", "%2", "%2B", "%2b", "%3D", "%26", "%zz", "%C3%A9",
                     "%C3", "%A9", "%E2%82%AC", "%FF", "%00", "%7F", "%80", "To", "Body",
                     " ", "é", "€", ";"]),
    st.text(max_size=6),
    st.binary(max_size=4).map(lambda b: quote(b, safe="")),
)
_FORMS = st.lists(_PIECES, max_size=30).map("".join)


def _urllib(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                         max_num_fields=MAX, errors="strict")
    except UnicodeDecodeError:
        return UnicodeDecodeError
    except ValueError:
        return ValueError


def _ours(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return form.decode(text, MAX)
    except UnicodeDecodeError:
        return UnicodeDecodeError
    except form.TooManyFields:
        return ValueError


@settings(max_examples=1000)
@given(_FORMS)
@example("")
@example("&" * (MAX - 1))
@example("&" * MAX)
@example("To=%2B31612345678&Body=Hallo+daar%21&From=%2b3197")
@example("a=%C3&b=%A9")
@example("Body=%C3%A9%2B")
def test_decode_is_parse_qsl(text: str) -> None:
    assert _ours(text) == _urllib(text)


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # no lone surrogates


@settings(max_examples=1000)
@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=6))
@example([("Body", "Hallo daar!\nAfmelden? Sms STOP naar +31201234567 ~_.-")])
@example([("To", "+31612345678"), ("Body", "é € 😀 %&=+")])
def test_encode_is_urlencode(pairs: list[tuple[str, str]]) -> None:
    assert form.encode(pairs) == urlencode(pairs).encode()


@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=6))
def test_encode_then_decode_gives_the_pairs_back(pairs: list[tuple[str, str]]) -> None:
    # Every pair encodes to at least "=", so none is dropped as an empty field.
    assert form.decode(form.encode(pairs).decode(), 100) == pairs


def test_too_many_fields_counts_separators_as_urllib_does() -> None:
    form.decode("a=1" + "&" * (MAX - 1), MAX)
    with pytest.raises(form.TooManyFields):
        form.decode("a=1" + "&" * MAX, MAX)
