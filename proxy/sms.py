"""SMS content helpers (N17): segment counting and the organisation's opt-out footer. Pure."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

import msgspec
import phonenumbers

from proxy.phone import try_parse_number
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


def segments(body: str, *, ucs2: bool = False) -> Segments:
    """How many parts a body is sent in (twilio.md: 160/153 GSM-7, 70/67 UCS-2); `ucs2`: the
    sender forces UCS-2 (a provider's encoding option), whatever the characters."""
    if not ucs2 and _NOT_GSM7.search(body) is None:
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


# N12/N17: an opt-out instruction of the body's own counts only when it names both the keyword
# and where to send it: "sms STOP naar 4040", "Reply 'STOP' to +31 20 123 4567". Looser
# wording is ordinary copy ("stuur een sms en kies uit …", "text us and stop paying …").
_QUOTE = "[\"'\u2018\u2019\u201c\u201d]?"
_INSTRUCTION = re.compile(
    r"\b(?:sms|stuur|reply|text|antwoord) " + _QUOTE + "(?:stop|uit)" + _QUOTE
    + r" (?:naar|to) (\+?[0-9](?:[ -]?[0-9])*)(?!\w)")


@functools.lru_cache(maxsize=256)
def _fold_footer(footer: str) -> str:
    return _fold(footer)  # an organisation's footer: the same on every one of its messages


@functools.lru_cache(maxsize=1024)  # an organisation's senders: the same few on every message
def _reply_numbers(footer: str, sender: str) -> frozenset[str]:
    """Where STOP may be sent: the number the footer's own instruction names, and the sender
    in E.164 and national form (when it is a phone number), without spaces or dashes."""
    numbers = {_compact(found) for found in _INSTRUCTION.findall(_fold_footer(footer))}
    e164 = try_parse_number(sender)
    if e164 is not None:
        national = phonenumbers.format_number(phonenumbers.parse(e164),
                                              phonenumbers.PhoneNumberFormat.NATIONAL)
        numbers |= {e164, _compact(national)}
    return frozenset(numbers)


def _compact(number: str) -> str:
    return number.replace(" ", "").replace("-", "")


def has_opt_out(body: str, footer: str, sender: str) -> bool:
    """N17: does the body already say how to opt out? Only if it holds this organisation's
    rendered footer (whitespace and case aside), or an instruction naming STOP or UIT and the
    footer's reply number or the sender's own number ("Sms STOP naar 020 123 4567")."""
    folded = _fold(body)
    if _fold_footer(footer) in folded:
        return True
    if "stop" not in folded and "uit" not in folded:  # most bodies: no search needed
        return False
    named = {_compact(found) for found in _INSTRUCTION.findall(folded)}
    return not named.isdisjoint(_reply_numbers(footer, sender))


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
