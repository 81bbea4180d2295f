"""A send request read as CM's JSON gateway reads it, into frozen values the front decides on.

CM reads JSON keys in any case (`producttoken`, `productToken`); so does this module, and a key
given twice in any spelling is refused (the gate would check one `to` and CM could send to
the other). What the gate cannot promise is refused here, before anything is decided, with a
400 in CM's shape naming the field:

- a channel other than SMS (`allowedChannels`; WhatsApp, RCS, Viber, Voice, ... reach people
  through channels this gate does not decide on), and the fields only those channels use
  (`richContent`, `appKey`);
- a body that is not text (`type` BINARY), or a `dcs`/`udh` that would change how the text is
  split into parts (the gate counts the parts of the footer, N17);
- a body needing more parts than `maximumNumberOfMessageParts` allows (CM would cut it; N17:
  nothing is ever truncated);
- any field CM does not document for a `msg`.

Where CM would refuse only the faulty `msg` and send the others, consent-proxy refuses the
whole request, so that nothing is half-sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from proxy import sms
from proxy.fronts.cm.errors import (
    AUTHENTICATION_FAILED,
    INVALID_BODY,
    INVALID_FIELD,
    INVALID_FROM,
    INVALID_TO,
    MSG_ARRAY_INCORRECT,
    REQUEST_MALFORMED,
    CmError,
)

MAX_MSGS = 100  # the official SDKs' MESSAGES_MAXIMUM
MAX_RECIPIENTS = 1000  # per request: each one is a decision
MAX_PARTS = 8  # CM's maximumNumberOfMessageParts
# CM's gateway puts 66 UTF-16 units in each part of a longer UCS-2 message, not the usual 67
# (CM's SDK documentation of `body.content`), and cuts what does not fit the parts allowed.
UCS2_SINGLE, UCS2_PER_PART = 70, 66
# A send nests six deep (messages.msg[].to[].number); CM's inbound messages a few more.
MAX_DEPTH = 16
SMS = "sms"
# CM: "11 alphanumerical characters or 16 digits" (a number may start with + or 00).
_FROM = re.compile(r"[A-Za-z0-9 ]{1,11}|\+?[0-9]{1,16}")
_BODY_TYPES = ("auto", "text")
# The fields of a msg, by their folded spelling, as forwarded (CM's own spelling).
_FORWARDED = {name.lower(): name for name in (
    "reference", "customGrouping", "customGrouping2", "customGrouping3", "validity",
    "minimumNumberOfMessageParts", "maximumNumberOfMessageParts")}
# Fields of other channels, or that change how the text is split: refused by name.
_REFUSED = {
    "richcontent": "richContent is content for channels other than SMS",
    "appkey": "appKey sends through CM's push channel",
    "dcs": "dcs changes how the text is encoded and split into parts",
    "udh": "udh (a user data header) changes how the message is split into parts",
}
_MSG_FIELDS = {"from", "to", "body", "allowedchannels", *_FORWARDED, *_REFUSED}


class Msg(msgspec.Struct, frozen=True, gc=False):
    """One `msg`: a sender, its recipients as the client spelled them, one text."""

    index: int
    from_: str
    recipients: tuple[str, ...]
    content: str
    body_type: str
    reference: str | None
    # Kept and forwarded as given (canonical spelling → value).
    fields: dict[str, Any]
    max_parts: int | None

    @property
    def allowed_parts(self) -> int:
        """How many parts CM may send: maximumNumberOfMessageParts, else one (CM sends a
        single part unless told otherwise)."""
        return self.max_parts or 1


class SendRequest(msgspec.Struct, frozen=True, gc=False):
    token: str | None  # messages.authentication.producttoken
    msgs: tuple[Msg, ...]

    @property
    def recipients(self) -> int:
        return sum(len(msg.recipients) for msg in self.msgs)


class _DuplicateKey(ValueError):
    pass


def _object(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        folded = key.lower()
        if folded in out:
            raise _DuplicateKey(key)
        out[folded] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bad_text(text: str) -> bool:
    """A NUL, or a lone surrogate (`"\\ud800"` is valid JSON, but no UTF-8 text)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unsendable(data: Any, *, text: bool) -> str | None:
    """Why this JSON cannot be taken, or None: a string holding a NUL or a lone surrogate
    (`text`), or nesting deeper than any CM body. Walked without recursion: a body nested a
    few hundred deep (which the parser still takes) must be refused, not exhaust the stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if text and _bad_text(value):
                return ("The request holds a NUL character or a lone surrogate (\\u0000, "
                        "\\ud800): not text that can be sent")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            return f"The request body is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack.extend((key, depth) for key in value)
            stack.extend((item, depth + 1) for item in value.values())
        else:
            stack.extend((item, depth + 1) for item in value)
    return None


def decode(raw: bytes, *, sendable: bool = True) -> dict[str, Any]:
    """The body as JSON with folded keys; malformed → 400, errorCode 202. `sendable`: every
    string must be text that can be sent (no NUL, no lone surrogate); an inbound message is
    read whatever a phone or network did to its characters (N11)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CmError(400, REQUEST_MALFORMED, "The request body is not valid UTF-8") from exc
    try:
        data = json.loads(text, object_pairs_hook=_object, parse_constant=_refuse_constant)
    except _DuplicateKey as exc:
        raise CmError(400, REQUEST_MALFORMED, f"The key {str(exc)!r} appears more than once "
                      "in one object (keys are read in any case)") from exc
    except (ValueError, RecursionError) as exc:
        raise CmError(400, REQUEST_MALFORMED, "The request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise CmError(400, REQUEST_MALFORMED, "The request body must be a JSON object")
    refused = _unsendable(data, text=sendable)
    if refused is not None:
        raise CmError(400, REQUEST_MALFORMED, refused)
    return data


def product_token(data: dict[str, Any]) -> str | None:
    messages = data.get("messages")
    auth = messages.get("authentication") if isinstance(messages, dict) else None
    token = auth.get("producttoken") if isinstance(auth, dict) else None
    if token is not None and not isinstance(token, str):
        raise CmError(400, AUTHENTICATION_FAILED, "The product token must be a string")
    return token


def parse(data: dict[str, Any]) -> SendRequest:
    if set(data) != {"messages"}:
        extra = sorted(set(data) - {"messages"})
        raise CmError(400, REQUEST_MALFORMED, f"Unknown field {extra[0]!r}" if extra else
                      "A 'messages' object is required")
    messages = data["messages"]
    if not isinstance(messages, dict):
        raise CmError(400, REQUEST_MALFORMED, "'messages' must be an object")
    unknown = sorted(set(messages) - {"authentication", "msg"})
    if unknown:
        raise CmError(400, REQUEST_MALFORMED, f"Unknown field 'messages.{unknown[0]}'")
    auth = messages.get("authentication")
    if auth is not None and (not isinstance(auth, dict) or set(auth) - {"producttoken"}):
        raise CmError(400, AUTHENTICATION_FAILED,
                      "'authentication' holds only a 'producttoken'")
    msgs = messages.get("msg")
    if not isinstance(msgs, list) or not msgs:
        raise CmError(400, MSG_ARRAY_INCORRECT,
                      "A MESSAGES node requires at least one MSG node ('msg', an array)")
    if len(msgs) > MAX_MSGS:
        raise CmError(400, MSG_ARRAY_INCORRECT, f"At most {MAX_MSGS} msg entries per request")
    parsed = tuple(_msg(i, item) for i, item in enumerate(msgs))
    total = sum(len(msg.recipients) for msg in parsed)
    if total > MAX_RECIPIENTS:
        raise CmError(400, INVALID_TO, f"At most {MAX_RECIPIENTS} recipients per request "
                      "(each one is decided on its own); split the request")
    return SendRequest(product_token(data), parsed)


def _msg(index: int, item: Any) -> Msg:
    where = f"msg[{index}]"
    if not isinstance(item, dict):
        raise CmError(400, MSG_ARRAY_INCORRECT, f"{where} must be an object")
    for key in item:
        if key in _REFUSED:
            raise CmError(400, INVALID_FIELD, f"{where}.{key}: {_REFUSED[key]}; consent-proxy "
                          "passes on plain SMS only", reason="CHANNEL_NOT_GATED")
        if key not in _MSG_FIELDS:
            raise CmError(400, INVALID_FIELD, f"{where}: unknown field {key!r}")
    _channels(where, item.get("allowedchannels"))
    from_ = item.get("from")
    if not isinstance(from_, str) or not from_.strip():
        raise CmError(400, INVALID_FROM, f"{where}: No FROM field found in a MSG node")
    if not _FROM.fullmatch(from_.strip()):
        raise CmError(400, INVALID_FROM, f"{where}.from: at most 11 letters and digits, or "
                      "a number of at most 16 digits")
    recipients = _recipients(where, item.get("to"))
    content, body_type = _body(where, item.get("body"))
    fields = {_FORWARDED[key]: value for key, value in item.items() if key in _FORWARDED}
    reference = _text(where, "reference", fields.get("reference"), 32)
    for name in ("customGrouping", "customGrouping2", "customGrouping3"):
        _text(where, name, fields.get(name), 100)
    if "validity" in fields:
        _text(where, "validity", fields["validity"], 64)
    max_parts = _parts(where, fields)
    seg = parts(content)
    allowed = max_parts or 1
    if seg.count > allowed:
        # N17: CM would cut the text to fit; nothing is ever truncated.
        raise CmError(400, INVALID_BODY, f"{where}.body: the text needs {seg.count} parts "
                      f"({seg.encoding}) and at most {allowed} are allowed; set "
                      "minimumNumberOfMessageParts and maximumNumberOfMessageParts (up to "
                      f"{MAX_PARTS}) or shorten it", reason="MESSAGE_PARTS_EXCEEDED")
    return Msg(index, from_.strip(), recipients, content, body_type, reference, fields,
               max_parts)


def _channels(where: str, value: Any) -> None:
    """Only SMS may be allowed. Without allowedChannels CM picks any channel the account has;
    the front then forwards allowedChannels ["SMS"] itself."""
    if value is None:
        return
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise CmError(400, INVALID_FIELD, f"{where}.allowedChannels: expected a non-empty "
                      "array of channel names")
    others = sorted({v.strip() for v in value if v.strip().lower() != SMS})
    if others:
        raise CmError(400, INVALID_FIELD, f"{where}.allowedChannels: {', '.join(others)} "
                      "reach people through channels consent-proxy does not decide on; "
                      "only [\"SMS\"] is passed on", reason="CHANNEL_NOT_GATED")


def _recipients(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise CmError(400, INVALID_TO, f"{where}: No phone numbers found ('to', an array of "
                      "{\"number\": …})")
    numbers = []
    for j, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != {"number"}:
            raise CmError(400, INVALID_TO, f"{where}.to[{j}]: expected {{\"number\": …}}")
        number = entry["number"]
        if not isinstance(number, str) or not number.strip():
            raise CmError(400, INVALID_TO, f"{where}.to[{j}].number: expected a phone number")
        numbers.append(number)
    return tuple(numbers)


def _body(where: str, value: Any) -> tuple[str, str]:
    if not isinstance(value, dict) or set(value) - {"type", "content"}:
        raise CmError(400, INVALID_BODY, f"{where}.body: expected {{\"type\", \"content\"}}")
    content, body_type = value.get("content"), value.get("type", "auto")
    if not isinstance(body_type, str) or body_type.lower() not in _BODY_TYPES:
        raise CmError(400, INVALID_BODY, f"{where}.body.type: only AUTO or TEXT are passed "
                      "on (a binary body cannot carry the opt-out line, N17)",
                      reason="CHANNEL_NOT_GATED")
    if not isinstance(content, str) or not content:
        raise CmError(400, INVALID_BODY, f"{where}: A body without content was found")
    if len(content) > sms.MAX_BODY:
        raise CmError(400, INVALID_BODY, f"{where}.body.content: longer than "
                      f"{sms.MAX_BODY} characters")
    return content, body_type


def parts(text: str) -> sms.Segments:
    """How many parts CM sends `text` in (N17: counted as CM counts, so that nothing it would
    cut is ever forwarded): GSM-7 as everywhere, a longer UCS-2 text in parts of 66."""
    seg = sms.segments(text)
    if seg.encoding != "UCS-2" or seg.units <= UCS2_SINGLE:
        return seg
    count, used = 1, 0
    for ch in text:
        cost = 2 if ord(ch) > 0xFFFF else 1  # a surrogate pair is never split
        if used + cost > UCS2_PER_PART:
            count, used = count + 1, 0
        used += cost
    return sms.Segments(seg.encoding, seg.units, count)


def _text(where: str, name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise CmError(400, INVALID_FIELD, f"{where}.{name}: expected 1-{limit} characters")
    return value


def _parts(where: str, fields: dict[str, Any]) -> int | None:
    low = fields.get("minimumNumberOfMessageParts")
    high = fields.get("maximumNumberOfMessageParts")
    if low is None and high is None:
        return None
    for name, value in (("minimumNumberOfMessageParts", low),
                        ("maximumNumberOfMessageParts", high)):
        if type(value) is not int or not 1 <= value <= MAX_PARTS:
            raise CmError(400, INVALID_FIELD, f"{where}.{name}: expected an integer from 1 "
                          f"to {MAX_PARTS} (the two are always given together)")
    assert isinstance(low, int)
    assert isinstance(high, int)
    if low > high:
        raise CmError(400, INVALID_FIELD, f"{where}: minimumNumberOfMessageParts is above "
                      "maximumNumberOfMessageParts")
    return high
