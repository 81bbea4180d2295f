"""Reading and validating JSON request bodies. Every failure names the offending field."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from proxy.errors import BadInput
from proxy.phone import InvalidNumber, parse_number, plain_text

T = TypeVar("T", bound=str)

# `\Z`, not `$`: `$` also matches before a trailing newline, and "abc\n" is no id or topic.
ORG_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
TOPIC = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}(/[a-z0-9][a-z0-9_-]{0,62}){0,7}\Z")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}\Z")
ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}\Z")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?\Z")
# What PostgreSQL text and jsonb cannot hold: NUL, and UTF-16 surrogates (a lone "\ud800"
# escape decodes to one; a proper pair decodes to one character outside this range).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = 64
# Times after this year are no real moments but ways of writing "never" (9999-12-31 is
# common): an end time there means no end, any other time there is refused. Below it, the
# engine's calendar arithmetic (a term of up to 240 months) stays inside year 9999.
FAR_FUTURE_YEAR = 9000
_MISSING = object()


def _refuse_constant(name: str) -> Any:
    raise BadInput(f"malformed JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadInput(f"malformed JSON: number {text[:20]}... is out of range")
    return value


def load_json(raw: bytes) -> Any:
    """A request body as JSON that PostgreSQL can store: no NaN/Infinity, no number beyond a
    float, no NUL or unpaired surrogate in any string or key, at most MAX_JSON_DEPTH deep."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise BadInput("malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # also UnicodeDecodeError and too many integer digits
        raise BadInput(f"malformed JSON: {exc}") from exc
    _check_storable(data)
    return data


def _check_storable(data: Any) -> None:
    # Iterative: a deeply nested body must not cost recursion.
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadInput(f"nested more than {MAX_JSON_DEPTH} levels deep", path or None)
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise BadInput("contains a NUL character or an unpaired surrogate",
                               path or None)
        elif isinstance(value, dict):
            for key, item in value.items():
                name = f"{path}.{key}" if path else key
                if _UNSTORABLE.search(key):
                    raise BadInput("a key contains a NUL character or an unpaired surrogate",
                                   path or None)
                stack.append((item, name, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def parse_time(value: Any, name: str) -> dt.datetime:
    """ISO 8601 with an offset. Naive times are refused: a consent time must be unambiguous.
    So are times after FAR_FUTURE_YEAR (`parse_end` reads those as no end)."""
    parsed = _parse_iso(value, name)
    if parsed.year > FAR_FUTURE_YEAR:
        raise BadInput(f"lies after the year {FAR_FUTURE_YEAR}; not a real moment", name)
    return _in_range(parsed, name)


def parse_end(value: Any, name: str) -> dt.datetime | None:
    """An end time (a consent's expiry, a relationship's end), where a date after
    FAR_FUTURE_YEAR is a way of writing "never": that is no end, None."""
    parsed = _parse_iso(value, name)
    return None if parsed.year > FAR_FUTURE_YEAR else _in_range(parsed, name)


def _parse_iso(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise BadInput("expected an ISO 8601 time with offset", name)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadInput("not an ISO 8601 time", name) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadInput("time has no UTC offset (naive times are refused)", name)
    return parsed


def _in_range(parsed: dt.datetime, name: str) -> dt.datetime:
    try:
        parsed.astimezone(dt.UTC)  # 0001-01-01T00:00+01:00 is before the first instant
    except OverflowError as exc:
        raise BadInput("time is out of range", name) from exc
    return parsed


def parse_topic(value: Any, name: str) -> str:
    if not isinstance(value, str) or not TOPIC.match(value):
        raise BadInput("expected a topic path like 'energy/electricity' (lowercase)", name)
    return value


def parse_sender_id(value: Any, name: str = "sender") -> str:
    """A sender is an E.164 number, a MessagingServiceSid or an alphanumeric sender ID.
    Look-alike spellings (full-width letters and digits) are folded to the plain one by NFKC,
    so they name the same sender; the key is always ASCII."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput("expected a phone number, MessagingServiceSid or alphanumeric ID", name)
    text = plain_text(value).strip()
    if MESSAGING_SERVICE_SID.match(text):
        return text
    if ALPHANUMERIC_SENDER.match(text):
        return text
    try:
        return parse_number(text)
    except InvalidNumber as exc:
        raise BadInput("not a valid phone number, MessagingServiceSid or alphanumeric "
                       "sender ID (1-11 letters/digits)", name) from exc


class Fields:
    """A JSON object being read field by field; unknown fields are refused."""

    def __init__(self, data: Any, allowed: Iterable[str], prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise BadInput("expected a JSON object", prefix.rstrip(".") or None)
        self._data: Mapping[str, Any] = data
        self._prefix = prefix
        for key in data:
            if key not in allowed:
                raise BadInput("unknown field", prefix + str(key))

    def name(self, key: str) -> str:
        return self._prefix + key

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def _get(self, key: str, required: bool) -> Any:
        value = self._data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise BadInput("required field is missing", self.name(key))
            return None
        return value

    def text(self, key: str, *, required: bool = True, max_len: int = 200) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise BadInput("expected a non-empty string", self.name(key))
        if len(value) > max_len:
            raise BadInput(f"longer than {max_len} characters", self.name(key))
        return value

    def choice(self, key: str, options: Iterable[T], *, required: bool = True,
               default: T | None = None) -> T | None:
        value = self._get(key, required)
        if value is None:
            return default
        allowed = tuple(options)
        if value not in allowed:
            raise BadInput(f"expected one of {', '.join(allowed)}", self.name(key))
        found: T = value
        return found

    def boolean(self, key: str, *, required: bool = False, default: bool = False) -> bool:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise BadInput("expected true or false", self.name(key))
        return value

    def integer(self, key: str, *, low: int, high: int, default: int) -> int:
        value = self._get(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadInput(f"expected an integer from {low} to {high}", self.name(key))
        return value

    def time(self, key: str, *, required: bool = True) -> dt.datetime | None:
        value = self._get(key, required)
        return None if value is None else parse_time(value, self.name(key))

    def end(self, key: str) -> dt.datetime | None:
        """An optional end time; one after FAR_FUTURE_YEAR is no end (parse_end)."""
        value = self._get(key, False)
        return None if value is None else parse_end(value, self.name(key))

    def number(self, key: str, *, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadInput("expected a phone number as a string", self.name(key))
        try:
            return parse_number(value)
        except InvalidNumber as exc:
            raise BadInput("not a valid phone number", self.name(key)) from exc

    def topics(self, key: str) -> tuple[str, ...]:
        value = self._get(key, True)
        if not isinstance(value, list) or not value:
            raise BadInput("expected a non-empty list of topics", self.name(key))
        if len(value) > 50:
            raise BadInput("at most 50 topics", self.name(key))
        return tuple(dict.fromkeys(
            parse_topic(t, f"{self.name(key)}[{i}]") for i, t in enumerate(value)))

    def obj(self, key: str) -> dict[str, Any]:
        value = self._get(key, False)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise BadInput("expected a JSON object", self.name(key))
        return value

    def sub(self, key: str, allowed: Iterable[str]) -> Fields | None:
        value = self._get(key, False)
        return None if value is None else Fields(value, allowed, prefix=self.name(key) + ".")

    def string_list(self, key: str, *, max_items: int = 100) -> list[str]:
        value = self._get(key, True)
        if not isinstance(value, list) or not value or len(value) > max_items:
            raise BadInput(f"expected a list of 1 to {max_items} strings", self.name(key))
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise BadInput("expected a non-empty string", f"{self.name(key)}[{i}]")
        return list(value)

    def url(self, key: str) -> str | None:
        value = self.text(key, required=False, max_len=2000)
        if value is not None and not _URL.match(value):
            raise BadInput("expected an http(s) URL", self.name(key))
        return value
