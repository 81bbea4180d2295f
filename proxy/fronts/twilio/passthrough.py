"""The pass-through: what a dialer reads, updates and deletes of its own calls, messages and
recordings, on the routes proxy/fronts/twilio/routes.py serves. Lists of the (possibly shared)
upstream account are filtered to the client's own items; a live call's new TwiML is decided
first (proxy/fronts/twilio/relays.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from proxy import form, store
from proxy.body import read_body
from proxy.fronts.twilio import errors, relays, routes
from proxy.fronts.twilio.errors import TwilioError
from proxy.fronts.twilio.front import authenticate, parse_form, relayed
from proxy.fronts.twilio.keys import NAME, UPSTREAM
from proxy.fronts.twilio.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from proxy.gate import Caller
from proxy.gate.codes import UPSTREAM_TIMEOUT, UPSTREAM_UNREACHABLE
from proxy.keys import POOL, REQUEST_ID, SETTINGS, WRITER


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Fetch, list, update and delete of this client's own calls, messages and recordings,
    on the routes proxy/fronts/twilio/routes.py serves."""
    route = routes.passthrough_route(request.method, request.raw_path)
    client = await authenticate(request)
    body = await _passthrough_body(request, route)
    if route.operation in routes.FILTERED_LISTS:
        return await _filtered_list(request, client, route)
    assert route.owner is not None  # every other route lies below a call, message or recording
    kind, sid = route.owner
    if kind == "Recordings":
        await _require_owned_recording(request, client, sid)
    else:
        await _require_owned(request, client, sid)
    caller = Caller.of(client, request.get(REQUEST_ID), NAME)
    body, denied = await relays.gate_call_update(request, caller, route.tail, body)
    if denied is not None:
        return errors.denial(denied.decision, "voice", denied.decision_id,
                             request.app[SETTINGS].public_url)
    return await _stream(request, client, route, body)


async def _passthrough_body(request: web.Request, route: routes.Route) -> bytes | None:
    raw = await read_body(request)
    if route.method != "POST":
        if raw:
            raise TwilioError(400, 20001, f"A {route.method} request takes no body")
        return None
    pairs = parse_form(request, raw)
    routes.check_fields(route, pairs)
    return form.encode(pairs)


async def _owned_sids(request: web.Request, client: store.Client,
                      sids: Sequence[str]) -> set[str]:
    # A create is answered before its outcome (which holds the SID) is committed: a dialer
    # that fetches what it just created must find it.
    await request.app[WRITER].sync()
    return await store.owned_sids(request.app[POOL], client.id, sids)


async def _require_owned(request: web.Request, client: store.Client, sid: str) -> None:
    if not await _owned_sids(request, client, [sid]):
        raise TwilioError(404, 20404, f"The requested resource {request.path} was not found")


async def _require_owned_recording(request: web.Request, client: store.Client,
                                   sid: str) -> None:
    meta = await _send(request, client, f"Recordings/{sid}.json")
    data = meta.json() if meta.status == 200 else None
    call_sid = data.get("call_sid") if isinstance(data, dict) else None
    if not isinstance(call_sid, str):
        raise TwilioError(404, 20404, f"The requested resource {request.path} was not found")
    await _require_owned(request, client, call_sid)


_JSON = {"Accept": "application/json"}


async def _send(request: web.Request, client: store.Client, tail: str,
                query: str = "") -> UpstreamResponse:
    """A GET of the proxy's own (a list to filter, a recording's call), read whole."""
    try:
        return await request.app[UPSTREAM].send("GET", client.id, tail, query=query,
                                                headers=_JSON)
    except UpstreamTimeout as exc:
        raise TwilioError(*UPSTREAM_TIMEOUT, "The provider did not answer in time") from exc
    except UpstreamUnreachable as exc:
        raise TwilioError(*UPSTREAM_UNREACHABLE, "The provider could not be reached") from exc


# Upstream pages read for one filtered list page, at most: a client whose own items are rare
# in a shared account pages on from where the proxy stopped.
MAX_LIST_ROUNDS = 10


async def _filtered_list(request: web.Request, client: store.Client,
                         route: routes.Route) -> web.Response:
    """A list page with only this client's items: the upstream account may be shared. The
    page's own fields must not tell of other clients' items either (`next_page_uri` on a
    page filtered to nothing would say that someone else called the number in `To=`), so
    the proxy reads on through upstream pages until it has a page's worth of the client's
    own items or the list ends, and only then hands out a next page."""
    key, sid_field = routes.FILTERED_LISTS[route.operation]
    wanted = routes.page_size(route.query)
    first: dict[str, Any] | None = None
    mine: list[Any] = []
    query: str | None = route.query
    next_uri = None
    for _ in range(MAX_LIST_ROUNDS):
        assert query is not None  # the loop ends at the list's end
        upstream = await _send(request, client, route.tail, query)
        data = upstream.json()
        if upstream.status != 200 or not isinstance(data, dict) or not isinstance(
                data.get(key), list):
            if first is None:
                return relayed(upstream)
            raise TwilioError(502, 20502, "The provider failed while the list was read on")
        first = first or data
        items = [i for i in data[key] if isinstance(i, dict)]
        sids = [i[sid_field] for i in items if isinstance(i.get(sid_field), str)]
        owned = await _owned_sids(request, client, sids)
        mine += [i for i in items if i.get(sid_field) in owned]
        next_uri = data.get("next_page_uri")
        query = routes.next_page_query(route, client.id, next_uri)
        if len(mine) >= wanted or query is None:
            break
    assert first is not None
    given = first.get("start")
    start = given if isinstance(given, int) else 0
    page = {**first, key: mine, "end": start + max(len(mine) - 1, 0),
            "next_page_uri": next_uri if query is not None else None}
    return web.json_response(page, dumps=errors.dumps)


async def _stream(request: web.Request, client: store.Client, route: routes.Route,
                  body: bytes | None) -> web.StreamResponse:
    stream = request.app[UPSTREAM].stream(
        route.method, client.id, route.tail, query=route.query, body=body,
        headers=routes.upstream_headers(route))
    try:
        async with stream:
            headers = {"Content-Type": stream.content_type}
            if stream.location is not None:
                headers["Location"] = stream.location
            response = web.StreamResponse(status=stream.status, headers=headers)
            await response.prepare(request)
            async for chunk in stream.chunks():
                await response.write(chunk)
            await response.write_eof()
            return response
    except UpstreamTimeout as exc:
        raise TwilioError(*UPSTREAM_TIMEOUT, "The provider did not answer in time") from exc
    except UpstreamUnreachable as exc:
        raise TwilioError(*UPSTREAM_UNREACHABLE, "The provider could not be reached") from exc


# --- documentation of our own codes ---------------------------------------------------------
