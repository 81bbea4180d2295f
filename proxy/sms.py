"""SMS content helpers (N17): segment counting and the organisation's opt-out footer. Pure."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

import msgspec

from proxy.policy import footer as policy_footer

MAX_BODY = 1600  # Twilio's limit; above it Twilio answers 21617
DEFAULT_FOOTER = policy_footer.DEFAULT_FOOTER

# GSM 03.38 basic character set, and the extension table whose characters cost two septets.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7 = GSM7_BASIC | GSM7_EXTENSION

Encoding = Literal["GSM-7", "UCS-2"]


class Segments(msgspec.Struct, frozen=True, gc=False):
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int


# The same sets as character classes: one scan in C instead of a set built from every body.
_NOT_GSM7 = re.compile("[^" + "".join(re.escape(ch) for ch in sorted(GSM7)) + "]")
_GSM7_ESCAPED = re.compile("[" + "".join(re.escape(ch) for ch in sorted(GSM7_EXTENSION)) + "]")


def segments(body: str) -> Segments:
    """How many parts a body is sent in (twilio.md: 160/153 GSM-7, 70/67 UCS-2)."""
    if _NOT_GSM7.search(body) is None:
        return _gsm7(body, len(_GSM7_ESCAPED.findall(body)))
    return _ucs2(body)


def _gsm7(body: str, escapes: int) -> Segments:
    total = len(body) + escapes  # an escape costs two septets
    if not total:
        return Segments("GSM-7", 0, 0)
    if not escapes:
        return Segments("GSM-7", total, _even_parts(total, single=160, per_part=153))
    costs = [2 if ch in GSM7_EXTENSION else 1 for ch in body]
    return Segments("GSM-7", total, _parts(costs, single=160, per_part=153))


def _ucs2(body: str) -> Segments:
    total = len(body.encode("utf-16-le")) // 2
    if total == len(body):  # no surrogate pairs
        return Segments("UCS-2", total, _even_parts(total, single=70, per_part=67))
    costs = [len(ch.encode("utf-16-le")) // 2 for ch in body]
    return Segments("UCS-2", total, _parts(costs, single=70, per_part=67))


def _even_parts(total: int, *, single: int, per_part: int) -> int:
    """_parts when every character costs one unit: nothing can straddle a part boundary."""
    return 1 if total <= single else -(-total // per_part)


def _parts(costs: list[int], *, single: int, per_part: int) -> int:
    """How many parts: one if it all fits, else packed greedily, because an escape sequence
    (GSM-7) or a surrogate pair (UCS-2, an emoji) is never split across two parts."""
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


@functools.lru_cache(maxsize=1024)  # an organisation's senders: the same few on every message
def render_footer(template: str | None, *, sender: str, organisation: str) -> str:
    text = policy_footer.template(template)
    return text.replace(policy_footer.SENDER, sender).replace("{organisation}", organisation)


def _fold(text: str) -> str:
    if text.isascii():  # nothing to decompose, no combining marks
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


# A generic opt-out instruction already in the body ("sms STOP naar 1234", "reply STOP").
_INSTRUCTION = re.compile(
    r"\b(sms|stuur|reply|text|antwoord|beantwoord|send)\b[^.\n]{0,25}\b(stop|uit|afmelden)\b",
    re.IGNORECASE,
)


# The instruction's last word: without one of them the search cannot match, and most bodies
# have none, so the search is skipped for them.
_INSTRUCTION_WORDS = ("stop", "uit", "afmelden")


@functools.lru_cache(maxsize=256)
def _fold_footer(footer: str) -> str:
    return _fold(footer)  # an organisation's footer: the same on every one of its messages


def has_opt_out(body: str, footer: str) -> bool:
    """N17: does the body already say how to opt out (this organisation's line, or a STOP
    instruction of its own)?"""
    folded = _fold(body)
    if _fold_footer(footer) in folded:
        return True
    return any(word in folded for word in _INSTRUCTION_WORDS) and bool(
        _INSTRUCTION.search(folded))


class FooterResult(msgspec.Struct, frozen=True, gc=False):
    body: str
    appended: bool
    before: Segments
    after: Segments

    @property
    def too_long(self) -> bool:
        return len(self.body) > MAX_BODY


def apply_footer(body: str, footer: str, *, needed: bool) -> FooterResult:
    """Append the footer on a new line when `needed`; never truncate (the caller refuses a
    result over MAX_BODY with 21617)."""
    before = segments(body)
    if not needed:
        return FooterResult(body, False, before, before)
    new_body = f"{body}\n{footer}" if body else footer
    return FooterResult(new_body, True, before, segments(new_body))
