"""TwiML taken apart: whom a call can reach from it, and which of its URLs Twilio will fetch.

Pure: no I/O. Parsed with defusedxml (no DTDs, no entities: a billion-laughs document is
refused, not expanded). Element and attribute names are matched without regard to case, so
`<dial>` cannot slip past an inspection that looks for `<Dial>`.

What can reach a person (decided by the gate, dials.py):
- `<Dial>`: its bare text and every `<Number>` are phone numbers; `<Client>`, `<Queue>`,
  `<Conference>`, `<Sim>` are the organisation's own agents and rooms; `<Sip>` and
  `<Application>` hide the real destination; any other noun is unknown.
- `<Refer>` (a SIP transfer): its `<Sip>` target, as above.
- `<Sms>` / `<Message>` in a call send a text to any `to`: never inspectable here.
- An element that is not TwiML at all: unknown, so not inspectable either (fail closed). Inside
  `<Say>` only SSML's elements may appear; anything else there is unknown too.

Which URLs return TwiML (rewritten to the TwiML relay), per Twilio's TwiML reference: the text
of `<Redirect>`; `action` of `<Gather>`, `<Dial>`, `<Record>`, `<Enqueue>`, `<Pay>`,
`<Connect>`, `<Refer>`; `<Dial referUrl>`; `<Enqueue waitUrl>`; the whisper `url` of
`<Number>`, `<Client>`, `<Sip>`, `<Queue>`; `<Conversation url>`. Not rewritten: `<Play>`
(audio) and `<Conference waitUrl>` (audio, or TwiML limited to Say/Play/Pause/Redirect that
cannot dial). Status and recording callbacks are rewritten to the callback relay. A URL in one
of these places that is not an absolute http(s) URL (after resolving against the document's own
URL, where it has one) makes the document malformed: left as written it would reach Twilio
undecided (fail closed).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urljoin, urlsplit

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from proxy.errors import ProxyError

MAX_BYTES = 64 * 1024  # Twilio's own limit for a TwiML document
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
REFUSAL = "Deze verbinding is niet toegestaan. Het gesprek wordt beëindigd."

TargetKind = Literal["number", "agent", "sip", "application", "unknown"]
UrlKind = Literal["twiml", "callback"]

# Every verb and noun of TwiML Voice that cannot reach anyone by itself (lower case). `say`
# holds SSML, whose elements are only checked to be SSML's.
_BENIGN = frozenset({
    "response", "say", "play", "pause", "gather", "record", "redirect", "reject", "hangup",
    "enqueue", "task", "leave", "connect", "stream", "room", "autopilot", "virtualagent",
    "conversation", "conversationrelay", "assistant", "config", "language", "parameter",
    "start", "stop", "siprec", "transcription", "pay", "prompt", "echo", "identity",
})
_REACH = frozenset({"dial", "refer"})
_AGENTS = frozenset({"client", "queue", "conference", "sim"})
_OPAQUE = frozenset({"say"})
# The SSML elements Twilio takes inside <Say> (its TwiML reference), and SSML's root `speak`;
# `amazon:` ones carry a namespace prefix, refused as malformed. Nothing else can be inspected.
_SSML = frozenset({
    "break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w",
    "speak"})

# (element, attribute) -> the attribute that names its method. TwiML first, then callbacks.
_TWIML_URLS: dict[tuple[str, str], str | None] = {
    ("gather", "action"): "method", ("dial", "action"): "method",
    ("record", "action"): "method", ("enqueue", "action"): "method",
    ("pay", "action"): "method", ("connect", "action"): "method",
    ("refer", "action"): "method", ("dial", "referurl"): "refermethod",
    ("enqueue", "waiturl"): "waiturlmethod", ("number", "url"): "method",
    ("client", "url"): "method", ("sip", "url"): "method", ("queue", "url"): "method",
    ("conversation", "url"): "method",
}
_CALLBACK_URLS: dict[tuple[str, str], str | None] = {
    ("dial", "recordingstatuscallback"): "recordingstatuscallbackmethod",
    ("number", "statuscallback"): "statuscallbackmethod",
    ("client", "statuscallback"): "statuscallbackmethod",
    ("sip", "statuscallback"): "statuscallbackmethod",
    ("conference", "statuscallback"): "statuscallbackmethod",
    ("conference", "recordingstatuscallback"): "recordingstatuscallbackmethod",
    ("record", "recordingstatuscallback"): "recordingstatuscallbackmethod",
    ("record", "transcribecallback"): None,
    ("gather", "partialresultcallback"): "partialresultcallbackmethod",
    ("pay", "statuscallback"): "statuscallbackmethod",
    ("stream", "statuscallback"): "statuscallbackmethod",
    ("siprec", "statuscallback"): "statuscallbackmethod",
    ("transcription", "statuscallbackurl"): None,
    ("virtualagent", "statuscallback"): "statuscallbackmethod",
    ("conversation", "statuscallback"): "statuscallbackmethod",
    ("conversation", "recordingstatuscallback"): "recordingstatuscallbackmethod",
}


class MalformedTwiml(ProxyError):
    """Not a TwiML document: not XML, a DTD or entity, no <Response> root (400)."""

    status = 400


@dataclass(frozen=True, slots=True)
class Target:
    """One destination in the document. `block` is the reaching element (a `<Dial>`, `<Refer>`
    or unknown element) it belongs to: a refusal replaces the whole block."""

    block: int
    kind: TargetKind
    element: str  # as written: "Dial" (bare text), "Number", "Sip", …
    value: str  # the number as written, for kind "number"
    caller_id: str | None  # the block's callerId; None: the call's own From


@dataclass(frozen=True, slots=True)
class UrlSlot:
    """A URL Twilio will request: TwiML to inspect, or a callback to record and pass on."""

    kind: UrlKind
    field: str  # "Redirect", "Gather.action", …
    url: str  # absolute
    method: str  # GET | POST


@dataclass(slots=True)
class Document:
    """A parsed TwiML document. `render` changes it in place, so it is rendered once."""

    root: ET.Element
    blocks: list[ET.Element] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def _local(tag: object) -> str:
    if not isinstance(tag, str) or "}" in tag or ":" in tag:
        raise MalformedTwiml("TwiML elements take no namespace")
    return tag.lower()


def _attr(element: ET.Element, name: str) -> tuple[str, str] | None:
    """(the attribute's name as written, its value), matched without regard to case."""
    for key, value in element.attrib.items():
        if key.lower() == name:
            return key, value
    return None


def parse(text: str | bytes) -> Document:
    if len(text) > MAX_BYTES:
        raise MalformedTwiml(f"the TwiML is longer than {MAX_BYTES} bytes")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise MalformedTwiml(f"the TwiML is not well-formed XML ({type(exc).__name__})") from exc
    if _local(root.tag) != "response":
        raise MalformedTwiml("the TwiML's root element must be <Response>")
    for element in root.iter():
        _local(element.tag)
    doc = Document(root)
    _scan(root, doc)
    return doc


def _scan(parent: ET.Element, doc: Document) -> None:
    for child in parent:
        name = _local(child.tag)
        if name in _REACH:
            _reach(child, name, doc)
        elif name not in _BENIGN:  # <Sms>, <Message>, or not TwiML: cannot be decided
            doc.targets.append(Target(_block(child, doc), "unknown", child.tag, "", None))
        elif name not in _OPAQUE:
            _scan(child, doc)
        else:
            _ssml(child, doc)


def _ssml(say: ET.Element, doc: Document) -> None:
    """A `<Say>` holding anything but SSML (a `<Dial>`, say) is not inspectable: the whole
    `<Say>` is the block a refusal replaces."""
    for element in say.iter():
        if element is not say and _local(element.tag) not in _SSML:
            doc.targets.append(Target(_block(say, doc), "unknown", element.tag, "", None))
            return


def _block(element: ET.Element, doc: Document) -> int:
    doc.blocks.append(element)
    return len(doc.blocks) - 1


def _reach(element: ET.Element, name: str, doc: Document) -> None:
    block = _block(element, doc)
    found = _attr(element, "callerid")
    caller = found[1] if found else None
    texts = [(element.tag, element.text)]
    for noun in element:
        kind = _local(noun.tag)
        texts.append((element.tag, noun.tail))  # text between nouns still reaches Twilio
        if kind == "number" and name == "dial":
            doc.targets.append(Target(block, "number", noun.tag, (noun.text or "").strip(),
                                      caller))
        elif kind in _AGENTS and name == "dial":
            doc.targets.append(Target(block, "agent", noun.tag, "", caller))
        elif kind in ("sip", "application"):
            doc.targets.append(Target(block, kind, noun.tag, "", caller))  # type: ignore[arg-type]
        else:
            doc.targets.append(Target(block, "unknown", noun.tag, "", caller))
    for tag, text in texts:
        if text and text.strip():
            kind_: TargetKind = "number" if name == "dial" else "unknown"
            doc.targets.append(Target(block, kind_, tag, text.strip(), caller))


def _inside(element: ET.Element, blocked: set[int], doc: Document) -> bool:
    return any(element is doc.blocks[i] or _contains(doc.blocks[i], element)
               for i in blocked if 0 <= i < len(doc.blocks))


def _contains(outer: ET.Element, element: ET.Element) -> bool:
    return any(e is element for e in outer.iter())


def _absolute(raw: str, base: str | None, field: str) -> str | None:
    """An http(s) URL Twilio can fetch; relative ones resolve against the document's URL.
    None for an empty value (Twilio's default applies); anything else that is no absolute
    http(s) URL is refused: left as written, Twilio might resolve or clean it up and fetch
    TwiML the gate never saw."""
    url = raw.strip()
    if not url:
        return None
    try:
        if base is not None:
            url = urljoin(base, url)
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise MalformedTwiml(f"the TwiML's {field} must be an absolute http or https URL")
    return url


def _method(element: ET.Element, name: str | None) -> str:
    found = _attr(element, name) if name else None
    method = found[1].strip().upper() if found else "POST"
    return method if method in ("GET", "POST") else "POST"


def _slots(doc: Document, blocked: Collection[int], base: str | None
           ) -> list[tuple[ET.Element, str | None, UrlSlot]]:
    """Every URL Twilio will request, outside refused blocks: (element, attribute as written
    or None for the element's text, slot)."""
    skip = set(blocked)
    out: list[tuple[ET.Element, str | None, UrlSlot]] = []
    for element in doc.root.iter():
        name = _local(element.tag)
        if skip and _inside(element, skip, doc):
            continue
        if name == "redirect" and element.text:
            url = _absolute(element.text, base, element.tag)
            if url:
                out.append((element, None, UrlSlot("twiml", element.tag, url,
                                                   _method(element, "method"))))
        for key, value in element.attrib.items():
            pair = (name, key.lower())
            kind: UrlKind
            if pair in _TWIML_URLS:
                kind, method_attr = "twiml", _TWIML_URLS[pair]
            elif pair in _CALLBACK_URLS:
                kind, method_attr = "callback", _CALLBACK_URLS[pair]
            else:
                continue
            url = _absolute(value, base, f"{element.tag}.{key}")
            if url:
                out.append((element, key, UrlSlot(kind, f"{element.tag}.{key}", url,
                                                  _method(element, method_attr))))
    return out


def urls(doc: Document, blocked: Collection[int] = (), base: str | None = None
         ) -> list[UrlSlot]:
    """What `render` will ask new URLs for, in the same order. Raises MalformedTwiml for a
    URL that is not an absolute http(s) URL (after resolving against `base`)."""
    return [slot for _, _, slot in _slots(doc, blocked, base)]


def render(doc: Document, blocked: Collection[int] = (), new_urls: Sequence[str] = (),
           base: str | None = None) -> str:
    """The document with every refused block replaced by a spoken refusal and a hang-up, and
    the URLs of `urls(doc, blocked, base)` replaced by `new_urls`, in order."""
    slots = _slots(doc, blocked, base)
    if len(slots) != len(new_urls):
        raise ValueError("one new URL is needed for every slot")
    for (element, key, _slot), url in zip(slots, new_urls, strict=True):
        if key is None:
            element.text = url
        else:
            element.set(key, url)
    if base is not None:  # Twilio resolves what is left against the relay's URL, not the dialer's
        for element in doc.root.iter():
            name = _local(element.tag)
            if name == "play" and element.text and element.text.strip():
                element.text = urljoin(base, element.text.strip())
            found = _attr(element, "waiturl") if name == "conference" else None
            if found is not None and found[1].strip():
                element.set(found[0], urljoin(base, found[1].strip()))
    parents = {child: parent for parent in doc.root.iter() for child in parent}
    for index in sorted(i for i in set(blocked) if 0 <= i < len(doc.blocks)):
        element = doc.blocks[index]
        parent = parents.get(element)
        if parent is None:  # inside a block already replaced
            continue
        position = list(parent).index(element)
        say = ET.Element("Say", {"language": "nl-NL"})
        say.text = REFUSAL
        hangup = ET.Element("Hangup")
        hangup.tail = element.tail
        parent.remove(element)
        parent.insert(position, say)
        parent.insert(position + 1, hangup)
    return DECLARATION + ET.tostring(doc.root, encoding="unicode")


HANGUP = DECLARATION + "<Response><Hangup /></Response>"
