"""Which `/2010-04-01/Accounts/{AccountSid}/…` requests the Twilio front serves, read from the
raw request path.

aiohttp's router matches the percent-decoded path, and HTTP clients and servers resolve dot
segments: `Calls/CA…/%2e%2e/%2e%2e/Calls.json` reaches Twilio as a plain create. So the raw
path (`request.raw_path`, before any decoding) must be canonical, or the request is refused
with 404 before anything else happens; it must then match one of the shapes Twilio documents
(fields.py, generated from Twilio's OpenAPI document) with a method documented
for it; and the path sent upstream is rebuilt from that shape and the parameters it matched,
never copied from the request.

Served: the creates (gated, front.py), the three lists `Calls.json`,
`Messages.json` and `Recordings.json` (filtered to the client's own items), and every read,
update and delete of a call, message or recording and of what the spec documents below them.
Creating anything below them (a recording, a stream, feedback, …) is not passed through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

from proxy import form
from proxy.fronts.twilio.errors import TwilioError
from proxy.fronts.twilio.fields import OPERATIONS, Operation
from proxy.gate.codes import NOT_PASSED_THROUGH

FORM = "application/x-www-form-urlencoded"
MAX_QUERY_FIELDS = 50

# Gated: decided and recorded before they are forwarded (front.py).
GATED = frozenset({"CreateCall", "CreateMessage"})
# Lists of the whole upstream account, which several clients may share: filtered to the
# client's own items, by the field that names the call or message each item belongs to.
FILTERED_LISTS: Mapping[str, tuple[str, str]] = {
    "ListCall": ("calls", "sid"), "ListMessage": ("messages", "sid"),
    "ListRecording": ("recordings", "call_sid")}
# What the pass-through serves below an owned call, message or recording: the spec's
# operations of these kinds. Its other operations there create something (Create…).
_PASSED = ("Fetch", "List", "Update", "Delete")
_RECORDING = "^RE[0-9a-fA-F]{32}$"
# A recording's media (Twilio's docs, not in the spec): the same path with .mp3 or .wav.
MEDIA = tuple(
    Operation(name="FetchRecordingMedia", method="GET", path=f"Recordings/{{Sid}}.{ext}",
              parameters=(("Sid", _RECORDING),), fields=frozenset())
    for ext in ("mp3", "wav"))
# The resources whose own paths are served: a canonical path below them that matches no
# documented shape is unknown (404); any other is an account resource, not passed (403).
OWNED = ("Calls", "Messages", "Recordings")

# Fields Twilio documents that the proxy refuses (400, 20001), with why: each would make what
# goes out differ from what was decided.
REFUSED_FIELDS: Mapping[tuple[str, str], str] = {
    # N16: the caller ID shown must be the From the gate decided on, as registered.
    ("CreateCall", "CallToken"): "a forwarded call shows the caller ID of the incoming call it "
    "forwards, not the From decided on (N16)",
    ("CreateCall", "CallerId"): "it sets another caller ID than the From decided on (N16)",
    # N16, N17: a second sender that is never decided, while the footer names the first.
    ("CreateMessage", "FallbackFrom"): "it names a second sender that is never decided (N16, "
    "N17); send from a registered sender with From or MessagingServiceSid",
}

# A canonical raw path: letters, digits, '_' and '-', with single dots only inside a segment.
# So: no percent-escape, no dot segment, no empty segment ('//', a trailing '/'), no ';', no
# backslash, nothing a server could decode or resolve into another path.
_SEGMENT = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_CANONICAL = re.compile(
    rf"/2010-04-01/Accounts/(AC[0-9a-fA-F]{{32}})/({_SEGMENT}(?:/{_SEGMENT})*)")
# A path parameter the spec gives no pattern for: a Stream's or Siprec's name, the
# recording `Twilio.CURRENT`. One canonical segment, never a dot segment.
_NAME = _SEGMENT


class Route(msgspec.Struct, frozen=True, gc=False):
    """A request as the front serves it."""

    operation: str  # the spec's operationId (or FetchRecordingMedia)
    method: str
    tail: str  # the upstream path below the account: rebuilt from the shape, never copied
    owner: tuple[str, str] | None  # ("Calls" | "Messages" | "Recordings", SID) to own
    fields: frozenset[str]  # the form fields a POST may carry, exact case
    query: str  # the query of a GET, re-encoded from its parsed pairs


_PARAMETER = re.compile(r"\{(\w+)\}")  # `{CallSid}` in a path of the spec


class _Shape(msgspec.Struct, frozen=True, gc=False):
    operation: Operation
    pattern: re.Pattern[str]


def _compile(operation: Operation) -> _Shape:
    patterns = dict(operation.parameters)
    parts = _PARAMETER.split(operation.path)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else
        f"(?P<{part}>{(patterns.get(part) or _NAME).removeprefix('^').removesuffix('$')})"
        for i, part in enumerate(parts))
    return _Shape(operation, re.compile(regex))


_SHAPES = tuple(_compile(op) for op in (*OPERATIONS, *MEDIA))
# The shapes without parameters, by path: a create is found with one lookup.
_LITERAL: Mapping[str, tuple[_Shape, ...]] = {
    shape.operation.path: tuple(s for s in _SHAPES if s.operation.path == shape.operation.path)
    for shape in _SHAPES if "{" not in shape.operation.path}


def _not_found(path: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {path[:200]} was not found")


def _matches(tail: str) -> Iterator[tuple[Operation, dict[str, str]]]:
    literal = _LITERAL.get(tail)
    if literal is not None:
        yield from ((shape.operation, {}) for shape in literal)
        return
    for shape in _SHAPES:
        found = shape.pattern.fullmatch(tail)
        if found is not None:
            yield shape.operation, found.groupdict()


def resolve(method: str, raw_path: str) -> Route:
    """The route of a request, from its method and raw path (with the query, as
    `request.raw_path` holds it). Raises TwilioError: 404 for a non-canonical or unknown
    path, 405 for a method the spec does not document there, 403 (930403) for what is not
    passed through, 400 (20001) for a bad query string."""
    path, _, raw_query = raw_path.partition("?")
    canonical = _CANONICAL.fullmatch(path)
    if canonical is None or "#" in raw_query:
        raise _not_found(path)
    tail = canonical.group(2)
    found = list(_matches(tail))
    if not found:
        if tail.split("/", 1)[0] in OWNED:
            raise _not_found(path)
        raise TwilioError(*NOT_PASSED_THROUGH, "consent-proxy passes through only the calls, "
                          f"messages and recordings of this client, not {tail!r}")
    for operation, parameters in found:
        if operation.method == method:
            return _route(operation, parameters, raw_query)
    allowed = ", ".join(sorted({operation.method for operation, _ in found}))
    raise TwilioError(405, 20004, f"Method {method[:16]!r} is not allowed on {tail} "
                      f"(allowed: {allowed})")


def _route(operation: Operation, parameters: dict[str, str], raw_query: str) -> Route:
    if operation.name not in GATED and not operation.name.startswith(_PASSED):
        raise TwilioError(*NOT_PASSED_THROUGH, f"consent-proxy does not pass through "
                          f"{operation.name}: nothing is created below a call, message or "
                          "recording through it")
    # The first parameter in the path is the call, message or recording the rest is below.
    first = _PARAMETER.search(operation.path)
    owner = None
    if first is not None:
        owner = (operation.path.split("/", 1)[0], parameters[first.group(1)])
    return Route(operation=operation.name, method=operation.method,
                 tail=operation.path.format(**parameters), owner=owner,
                 fields=operation.fields, query=_query(operation.method, raw_query))


def _query(method: str, raw: str) -> str:
    """A GET's query, decoded and encoded again: only well-formed pairs go upstream."""
    if not raw:
        return ""
    if method != "GET":
        raise TwilioError(400, 20001, f"A query string is accepted only on GET; a {method} "
                          "takes its parameters in the form body")
    try:
        pairs = form.decode(raw, MAX_QUERY_FIELDS)
    except UnicodeDecodeError as exc:
        raise TwilioError(400, 20001, "The query string is not valid UTF-8") from exc
    except form.TooManyFields as exc:
        raise TwilioError(400, 20001, "Too many query parameters (at most "
                          f"{MAX_QUERY_FIELDS})") from exc
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise TwilioError(400, 20001, "The query string contains a NUL character")
    return form.encode(pairs).decode("ascii")


DEFAULT_PAGE_SIZE = 50  # Twilio's, when a list request names none


def page_size(query: str) -> int:
    """The PageSize a list request asks for (Twilio's default when none or not a number)."""
    for name, value in form.decode(query, MAX_QUERY_FIELDS) if query else ():
        if name == "PageSize" and value.isascii() and value.isdigit():
            return max(1, min(1000, int(value)))
    return DEFAULT_PAGE_SIZE


def next_page_query(route: Route, account_sid: str, next_uri: Any) -> str | None:
    """The query of a list page's `next_page_uri` (with the client's AccountSid swapped in),
    when it continues the same list; None at the end of the list or for anything else."""
    if not isinstance(next_uri, str):
        return None
    path, _, raw_query = next_uri.partition("?")
    if path != f"/2010-04-01/Accounts/{account_sid}/{route.tail}":
        return None
    try:
        return _query("GET", raw_query)
    except TwilioError:
        return None


def create_route(method: str, raw_path: str) -> Route:
    """The route of a create (POST Calls.json / Messages.json), which aiohttp's router found
    by the decoded path: its raw path must be canonical too, else 404."""
    route = resolve(method, raw_path)
    if route.operation not in GATED:
        raise _not_found(raw_path.partition("?")[0])
    return route


def passthrough_route(method: str, raw_path: str) -> Route:
    """The route of anything but a create. A create never goes through the pass-through:
    it would be forwarded undecided."""
    route = resolve(method, raw_path)
    if route.operation in GATED:
        raise _not_found(raw_path.partition("?")[0])
    return route


def check_fields(route: Route, pairs: Sequence[tuple[str, str]]) -> None:
    """Only the field names Twilio documents for the operation, in their exact case: `to`,
    `To ` or `To[]` would reach Twilio undecided, or be taken for `To` by a lenient parser.
    Nor those of REFUSED_FIELDS, even empty."""
    for name, _ in pairs:
        if name not in route.fields:
            raise TwilioError(400, 20001, f"Unknown parameter {name[:64]!r}: Twilio documents "
                              f"no such field for {route.operation} (names are case-sensitive)")
        why = REFUSED_FIELDS.get((route.operation, name))
        if why is not None:
            raise TwilioError(400, 20001, f"Parameter {name!r} is not accepted by "
                              f"consent-proxy: {why}")


def upstream_headers(route: Route) -> dict[str, str]:
    """The headers a pass-through sends upstream: set here, none copied from the client (a
    client's X-Consent-Decision-Id or idempotency token must never reach Twilio)."""
    headers = {"Accept": "application/json"} if route.tail.endswith(".json") else {}
    if route.method == "POST":
        headers["Content-Type"] = FORM
    return headers
