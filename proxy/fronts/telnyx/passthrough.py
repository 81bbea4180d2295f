"""Everything on `/v2/` but the two gated creates: reads of the client's own messages and
calls, and a hangup of its own call, passed through; every other way to send or to reach a
person refused (403); anything else 404 in Telnyx's shape.

Read from the raw request path: aiohttp's router matches the percent-decoded path, and
servers resolve dot segments, so `calls/X/%2e%2e/%2e%2e/messages` or `messages//x` is refused
(404) before anything else, and the path sent upstream is rebuilt from what matched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson
from aiohttp import web

from proxy import store
from proxy.body import read_body
from proxy.fronts.telnyx import fields
from proxy.fronts.telnyx.errors import TelnyxError
from proxy.fronts.telnyx.front import authenticate, relayed
from proxy.fronts.telnyx.keys import UPSTREAM
from proxy.fronts.telnyx.upstream import UpstreamTimeout, UpstreamUnreachable
from proxy.gate.codes import NOT_PASSED_THROUGH, UPSTREAM_TIMEOUT, UPSTREAM_UNREACHABLE
from proxy.keys import POOL, WRITER

# An id as Telnyx spells them: a message's UUID, a call's `v3:…` call_control_id.
_ID = r"[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)?"
_CANONICAL = re.compile(r"/v2/([A-Za-z0-9_-]+(?:/[A-Za-z0-9_:-]+)*)")
_MESSAGE = re.compile(rf"messages/({_ID})")
_CALL = re.compile(rf"calls/({_ID})")
_HANGUP = re.compile(rf"calls/({_ID})/actions/hangup")
_CALL_ACTION = re.compile(rf"calls/({_ID})/actions/[A-Za-z0-9_-]+")
HANGUP_FIELDS = frozenset({"client_state", "command_id"})

# Telnyx's other ways to send a message, to dial or to bring a person into a call: refused,
# whatever their method (a create outside the gate would reach someone undecided).
REFUSED = re.compile(
    r"messages/(?:long_code|number_pool|short_code|alphanumeric_sender_id|group_mms|"
    r"schedule|whatsapp|rcs)(?:/.*)?|messages/group/.*|calls/.*/actions/.*|"
    r"conferences(?:/.*)?|faxes(?:/.*)?|verifications(?:/.*)?|text_to_speech(?:/.*)?|"
    r"calls/[^/]+/actions")
_REFUSED_WHY = ("consent-proxy sends only through POST /v2/messages and POST /v2/calls, "
                "where every message and call is decided first; of the call actions only a "
                "hangup of the client's own call is passed through")


def _not_found() -> TelnyxError:
    return TelnyxError(404, "10005", "The requested resource or URL could not be found.")


async def passthrough(request: web.Request) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    canonical = _CANONICAL.fullmatch(raw_path)
    if canonical is None or query:
        raise _not_found()
    tail = canonical.group(1)
    client = await authenticate(request)
    if request.method == "POST" and (found := _HANGUP.fullmatch(tail)):
        body = fields.parse(await read_body(request) or b"{}",
                            request.headers.get("Content-Type") or "application/json")
        for name in body:
            if name not in HANGUP_FIELDS:
                raise TelnyxError(400, "10015", f"Unknown parameter {name[:64]!r}",
                                  pointer=f"/{name[:64]}")
        await _require_owned(request, client, found.group(1))
        return await _send(request, client, "POST",
                           f"calls/{found.group(1)}/actions/hangup", orjson.dumps(body))
    if REFUSED.fullmatch(tail) or _CALL_ACTION.fullmatch(tail):
        raise TelnyxError(NOT_PASSED_THROUGH[0], str(NOT_PASSED_THROUGH[1]),
                          f"Not passed through: {tail[:100]}. {_REFUSED_WHY}.",
                          title="Not passed through")
    for pattern, kind in ((_MESSAGE, "messages"), (_CALL, "calls")):
        found = pattern.fullmatch(tail)
        if found is None:
            continue
        if request.method != "GET":
            raise TelnyxError(405, "10015", f"Method {request.method[:16]} is not allowed on "
                              f"{kind}/{{id}} through consent-proxy")
        if await read_body(request):
            raise TelnyxError(400, "10015", "A GET request takes no body")
        await _require_owned(request, client, found.group(1))
        return await _send(request, client, "GET", f"{kind}/{found.group(1)}", None)
    raise _not_found()


async def _owned(request: web.Request, client: store.Client, ids: Sequence[str]) -> set[str]:
    # A create is answered before its outcome (which holds the id) is committed: a sender
    # that reads what it just created must find it.
    await request.app[WRITER].sync()
    return await store.owned_sids(request.app[POOL], client.id, ids)


async def _require_owned(request: web.Request, client: store.Client, resource: str) -> None:
    if not await _owned(request, client, [resource]):
        raise _not_found()


async def _send(request: web.Request, client: store.Client, method: str, path: str,
                body: bytes | None) -> web.Response:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        upstream = await request.app[UPSTREAM].send(method, path, body=body, headers=headers)
    except UpstreamTimeout as exc:
        raise TelnyxError(UPSTREAM_TIMEOUT[0], str(UPSTREAM_TIMEOUT[1]),
                          "The provider did not answer in time", title="Upstream timeout"
                          ) from exc
    except UpstreamUnreachable as exc:
        raise TelnyxError(UPSTREAM_UNREACHABLE[0], str(UPSTREAM_UNREACHABLE[1]),
                          "The provider could not be reached", title="Upstream unreachable"
                          ) from exc
    return relayed(upstream, client.id)
