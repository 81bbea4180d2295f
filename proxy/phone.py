"""Phone numbers: parsing to E.164 (phonenumbers), masking for logs, one-way hashing."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import phonenumbers

# phonenumbers' own test of a national number against one description (what its number-type
# check runs for each type in turn).
from phonenumbers.phonenumberutil import _is_number_matching_desc as _matching_desc

# phonenumbers looks its metadata patterns up in `re`'s cache on every use unless asked to
# keep them compiled itself (as the Java library's RegexCache does); measured: 4.9 -> 3.4 us
# per Dutch number parsed.
phonenumbers.enable_pattern_cache()

DEFAULT_REGION = "NL"
_ALLOWED_CHARS = re.compile(r"^[0-9+()\-./\s]{3,40}$", re.ASCII)


class InvalidNumber(ValueError):
    """The text is not a valid phone number."""


# The common Dutch shapes (+31 or 0, then 9 digits) skip phonenumbers.parse, the slow part
# (~17 us); validity is still phonenumbers.is_valid_number's verdict, on the same number.
_NL_FAST = re.compile(r"(?:\+31|0)([1-9][0-9]{8})")


_NL_METADATA = phonenumbers.PhoneMetadata.metadata_for_region("NL")
assert _NL_METADATA is not None
_NL: phonenumbers.PhoneMetadata = _NL_METADATA


def _valid_nl(nsn: str) -> bool:
    """phonenumbers.is_valid_number for +31 `nsn`. Valid means: the general pattern matches and
    so does one number type. The ten types are tried in turn there (~11 us); most numbers
    dialled are mobile, so that type is tried first, and the full check runs for the rest.
    tests/test_phone.py holds the two to the same verdict."""
    if _matching_desc(nsn, _NL.general_desc) and _matching_desc(nsn, _NL.mobile):
        return True
    return phonenumbers.is_valid_number(phonenumbers.PhoneNumber(31, int(nsn)))


def plain_text(raw: str) -> str:
    """User text as the ASCII it stands for, when it has any: NFKC folds full-width digits and
    signs (U+FF0B, U+FF10-U+FF19), circled digits and odd spaces into their plain forms, so a
    look-alike spelling names the same number or sender as the plain one. ASCII text (nearly
    all of it) is returned as is; what is not ASCII even after NFKC stays so, and callers
    refuse it."""
    if raw.isascii():
        return raw
    return unicodedata.normalize("NFKC", raw)


def parse_number(raw: str, region: str = DEFAULT_REGION) -> str:
    """Any common written form (`0612345678`, `06-12345678`, `0031 6 12345678`) -> E.164,
    always ASCII `+` and digits. Full-width digits name the same number as ASCII ones (NFKC);
    digits of other scripts, which phonenumbers would read too, are refused rather than
    turned into a number under another spelling."""
    text = plain_text(raw).strip()
    if not text.isascii():
        raise InvalidNumber(f"not a phone number: {_mask_digits(text)!r}")
    fast = _NL_FAST.fullmatch(text)
    if fast is not None and (region == "NL" or text.startswith("+")):
        nsn = fast.group(1)
        if _valid_nl(nsn):
            return "+31" + nsn
        raise InvalidNumber(f"not a valid phone number: {_mask_digits(text)!r}")
    if not _ALLOWED_CHARS.match(text):
        raise InvalidNumber(f"not a phone number: {_mask_digits(text)!r}")
    if text.startswith("00"):
        text = "+" + text[2:].lstrip()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"not a phone number: {_mask_digits(text)!r}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber(f"not a valid phone number: {_mask_digits(text)!r}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not E164.fullmatch(e164):  # the key of a subject: nothing but ASCII `+` and digits
        raise InvalidNumber(f"not a valid phone number: {_mask_digits(text)!r}")
    return e164


def try_parse_number(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    if not raw:
        return None
    try:
        return parse_number(raw, region)
    except InvalidNumber:
        return None


# The shape of an E.164 number (`E164.fullmatch`): ASCII digits only.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def mask(e164: str) -> str:
    """`+31612345678` -> `+31 6 ****5678`: enough to recognise, not enough to dial."""
    digits = e164[1:] if e164.startswith("+") else e164
    # Country codes are prefix-free: the first of 1-3 leading digits that phonenumbers knows
    # as a country code is it (no full parse needed on this per-log-line path).
    for size in (1, 2, 3):
        head = digits[:size]
        if head.isdigit() and int(head) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if len(national) < 6 or not national.isdigit():
                return f"+{head} ****"
            return f"+{head} {national[0]} ****{national[-4:]}"
    return _mask_digits(e164)


def _mask_digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return f"****{digits[-4:]}" if len(digits) >= 8 else "****"


# What looks like a phone number inside free text: international (+ or %2B or 00),
# Dutch national (0 + 9 digits, separators allowed) or any run of 9+ digits.
_NUMBER_IN_TEXT = re.compile(
    r"(?:\+|%2[bB]|\b00)\d(?:[\s\-.]?\d){6,14}"
    r"|\b0\d(?:[\s\-.]?\d){8}\b"
    r"|(?<![\w.])\d{9,15}(?![\w.])"
)


def mask_text(text: str) -> str:
    """Mask every phone-number-like run inside arbitrary text."""
    return _NUMBER_IN_TEXT.sub(lambda m: _mask_match(m.group(0)), text)


def _mask_match(found: str) -> str:
    candidate = found.replace("%2B", "+").replace("%2b", "+")
    e164 = try_parse_number(candidate)
    return mask(e164) if e164 else _mask_digits(candidate)


def subject_hash(e164: str) -> str:
    """One-way key for a number: objections and decisions survive erasure of the subject."""
    return hashlib.sha256(b"consent-proxy/subject/v1:" + e164.encode()).hexdigest()
