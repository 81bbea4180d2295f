"""Reading Vonage requests: forms and JSON objects as ordered pairs, numbers as Vonage writes
them (E.164 without the `+`), and the checks every route shares (no duplicate fields, no NUL,
UTF-8 only)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from proxy import form

MAX_FIELDS = 100
# The deepest a Vonage request nests (a call: body > ncco > action > endpoint > object) is
# well under this; deeper would run the recursive stdlib parser out of stack (a 500).
MAX_DEPTH = 32


class Unreadable(ValueError):
    """A body Vonage would not read, with what is wrong (the front answers it in its shape)."""


def form_pairs(raw: bytes) -> list[tuple[str, str]]:
    try:
        pairs = form.decode(raw.decode("utf-8"), MAX_FIELDS)
    except UnicodeDecodeError as exc:
        raise Unreadable("the request body is not valid UTF-8") from exc
    except form.TooManyFields as exc:
        raise Unreadable(f"too many form fields (at most {MAX_FIELDS})") from exc
    return pairs


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Unreadable(f"the JSON key {key!r} appears more than once")
        seen[key] = value
    return seen


def _shallow(value: Any) -> None:
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [child for item in level if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return
    raise Unreadable(f"the JSON document nests deeper than {MAX_DEPTH} levels")


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object whose keys each appear once, at any depth (a second `to` would be
    checked once and could reach someone else)."""
    try:
        _shallow(orjson.loads(raw))  # strict UTF-8 and JSON first, then not too deep
        # The stdlib parser is the one with a hook that sees repeated keys.
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, Unreadable):
            raise
        raise Unreadable("the request body is not a valid UTF-8 JSON document") from exc
    if not isinstance(value, dict):
        raise Unreadable("the request body must be a JSON object")
    return value


def scalar_pairs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A flat JSON object as form pairs: strings, numbers and booleans, nothing nested (an
    array where Vonage takes one value would be one check for several recipients)."""
    out = []
    for key, value in data.items():
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        elif isinstance(value, str | int | float):
            out.append((key, str(value)))
        elif value is None:
            continue
        else:
            raise Unreadable(f"{key!r} must be a single value, not {type(value).__name__}")
    return out


def check_text(pairs: Sequence[tuple[str, str]], single: Sequence[str]) -> None:
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise Unreadable(f"{key!r} contains a NUL character")
    keys = [key for key, _ in pairs]
    for key in set(keys):
        if keys.count(key) > 1 and key in single:
            raise Unreadable(f"{key!r} may appear only once")


def first(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in pairs if k == name and v != ""), None)


def gate_number(raw: str | None) -> str | None:
    """A number as Vonage takes it (international digits, no `+`: `31612345678`) in the form
    the gate reads: `+31612345678`. Anything else (a `+`, a national `06…`, an alphanumeric
    sender) is left as written."""
    if raw is None:
        return None
    text = raw.strip()
    if text.isdigit() and text.isascii() and not text.startswith("0"):
        return "+" + text
    return text


def vonage_number(e164: str) -> str:
    """An E.164 number as Vonage writes it: without the `+`."""
    return e164.removeprefix("+")


def deep_copy(value: Any) -> Any:
    """A copy of a JSON document (what orjson reads back is always fresh)."""
    return orjson.loads(orjson.dumps(value))
