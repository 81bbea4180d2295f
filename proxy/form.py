"""application/x-www-form-urlencoded, the body of every create (twilio.md).

`decode` gives what `urllib.parse.parse_qsl(text, keep_blank_values=True, errors="strict")`
gives and `encode` what `urllib.parse.urlencode(pairs).encode()` gives (tests/test_form.py
holds them to that on random input); both run on every create, so they do the common case
without urllib's per-character Python work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote


class TooManyFields(ValueError):
    """More fields than the caller allows."""


def decode(text: str, max_fields: int) -> list[tuple[str, str]]:
    """Ordered (name, value) pairs; blank values kept, empty fields skipped. Raises
    TooManyFields, and UnicodeDecodeError for percent-escapes that are not UTF-8."""
    if not text:
        return []
    if text.count("&") >= max_fields:  # counted as parse_qsl does: empty fields too
        raise TooManyFields(max_fields)
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote(name), _unquote(value)))
    return pairs


# Escapes of ASCII characters ("%2B" for "+"): the usual ones. Anything else (a UTF-8
# sequence, a stray "%") goes to urllib.
_ASCII_ESCAPES = {f"{byte:02{case}}": chr(byte) for byte in range(128) for case in "xX"}


def _unquote(piece: str) -> str:
    if "+" in piece:
        piece = piece.replace("+", " ")
    if "%" not in piece:
        return piece
    head, *escaped = piece.split("%")
    out = [head]
    for part in escaped:
        char = _ASCII_ESCAPES.get(part[:2])
        if char is None:
            return unquote(piece, errors="strict")
        out += (char, part[2:])
    return "".join(out)


# quote_plus with safe="": unreserved characters stay, space becomes "+", every other UTF-8
# byte "%XX". The regular expression finds the (usually few) characters to escape.
_ESCAPED = re.compile(r"[^A-Za-z0-9_.~ -]")
_PERCENT = {chr(byte): f"%{byte:02X}" for byte in range(128)}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    return _PERCENT.get(char) or "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _quote(text: str) -> str:
    return _ESCAPED.sub(_escape, text).replace(" ", "+")


_NAMES: dict[str, str] = {}  # field names: a few dozen, the same on every request


def _quote_name(name: str) -> str:
    quoted = _NAMES.get(name)
    if quoted is None:
        quoted = _quote(name)
        if len(_NAMES) < 256:
            _NAMES[name] = quoted
    return quoted


def encode(pairs: Iterable[tuple[str, str]]) -> bytes:
    return "&".join([f"{_quote_name(name)}={_quote(value)}"
                     for name, value in pairs]).encode("ascii")


def put(pairs: Iterable[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    """The pairs with the first `name` field set to `value` (its place kept), or with
    (`name`, `value`) appended when there is none. Later repeats are left as they are."""
    out, done = [], False
    for key, old in pairs:
        if key == name and not done:
            out.append((key, value))
            done = True
        else:
            out.append((key, old))
    if not done:
        out.append((name, value))
    return out
