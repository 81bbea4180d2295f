"""The admin API under /admin/v1: thin handlers that parse, call the store and answer JSON."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import credentials, store
from proxy.body import read_body
from proxy.errors import BadInput, NotFound
from proxy.fields import ORG_ID, Fields, load_json, parse_sender_id, parse_topic
from proxy.keys import CLIENTS, CLOCK, POOL, SETTINGS
from proxy.phone import InvalidNumber, parse_number
from proxy.policy.facts import (
    CHANNELS,
    CONSENT_KINDS,
    PROVENANCES,
    PURPOSES,
    RELATIONSHIP_KINDS,
    SECTORS,
    SUBJECT_KINDS,
    Organisation,
    Sender,
)

PREFIX = "/admin/v1"
OBJECTION_VIA = ("api", "agent", "ivr", "sms", "email", "letter")
_ORG_FIELDS = ("id", "name", "sector", "customer_term_months", "sms_footer", "stop_reply",
               "content_templates_carry_opt_out")


async def read_json(request: web.Request) -> Any:
    if not request.can_read_body:
        raise BadInput("request body is empty; expected a JSON object")
    return load_json(await read_body(request))


def _path_number(request: web.Request) -> str:
    try:
        return parse_number(request.match_info["number"])
    except InvalidNumber as exc:
        raise BadInput("not a valid phone number", "number") from exc


def _org_json(org: Organisation) -> dict[str, Any]:
    return {
        "id": org.id, "name": org.name, "sector": org.sector,
        "customer_term_months": org.customer_term_months,
        "sms_footer": org.sms_footer, "stop_reply": org.stop_reply,
        "content_templates_carry_opt_out": org.content_templates_carry_opt_out,
    }


def _parse_org(data: Any, org_id: str | None = None) -> Organisation:
    f = Fields(data, _ORG_FIELDS)
    body_id = f.text("id", required=org_id is None, max_len=63)
    if org_id is not None and body_id is not None and body_id != org_id:
        raise BadInput("does not match the id in the path", "id")
    the_id = org_id or body_id
    assert the_id is not None
    if not ORG_ID.match(the_id):
        raise BadInput("expected lowercase letters, digits, '-' or '_' (max 63)", "id")
    sector = f.choice("sector", SECTORS)
    assert sector is not None
    return Organisation(
        id=the_id,
        name=f.text("name") or "",
        sector=sector,
        customer_term_months=f.integer("customer_term_months", low=0, high=240, default=36),
        sms_footer=f.text("sms_footer", required=False, max_len=300),
        stop_reply=f.text("stop_reply", required=False, max_len=600),
        content_templates_carry_opt_out=f.boolean("content_templates_carry_opt_out"),
    )


async def create_organisation(request: web.Request) -> web.Response:
    org = _parse_org(await read_json(request))
    created = await store.create_organisation(request.app[POOL], org)
    return web.json_response(_org_json(created), status=201)


async def get_organisation(request: web.Request) -> web.Response:
    org_id = request.match_info["org_id"]
    if not ORG_ID.match(org_id):  # cannot exist, and may hold what a query cannot carry
        raise NotFound(f"no organisation {org_id!r}", "id")
    org = await store.get_organisation(request.app[POOL], org_id)
    return web.json_response(_org_json(org))


async def put_organisation(request: web.Request) -> web.Response:
    org = _parse_org(await read_json(request), request.match_info["org_id"])
    updated = await store.update_organisation(request.app[POOL], org)
    return web.json_response(_org_json(updated))


def _sender_json(sender: Sender) -> dict[str, Any]:
    return {
        "sender": sender.sender, "organisation": sender.organisation_id, "topic": sender.topic,
        "purpose": sender.purpose, "automated": sender.automated,
        "inbound_webhook": sender.inbound_webhook,
    }


async def create_sender(request: web.Request) -> web.Response:
    f = Fields(await read_json(request),
               ("sender", "organisation", "topic", "purpose", "automated", "inbound_webhook"))
    sender = Sender(
        sender=parse_sender_id(f.text("sender", max_len=40)),
        organisation_id=f.text("organisation", max_len=63) or "",
        topic=parse_topic(f.text("topic"), "topic"),
        purpose=f.choice("purpose", PURPOSES, required=False, default="marketing") or "marketing",
        automated=f.boolean("automated"),
        inbound_webhook=f.url("inbound_webhook"),
    )
    created = await store.create_sender(request.app[POOL], sender)
    return web.json_response(_sender_json(created), status=201)


async def get_sender(request: web.Request) -> web.Response:
    sender = parse_sender_id(request.match_info["sender"])
    return web.json_response(_sender_json(await store.get_sender(request.app[POOL], sender)))


def _proxy_secret(request: web.Request) -> str:
    secret = request.app[SETTINGS].proxy_secret
    if not secret:
        raise BadInput("PROXY_SECRET is not configured; clients cannot be issued")
    return secret


async def create_client(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), ("name", "organisations"))
    name = f.text("name") or ""
    organisations = f.string_list("organisations")
    secret = _proxy_secret(request)
    client = await store.create_client(
        request.app[POOL], credentials.new_account_sid(), name, organisations)
    token = credentials.derive_token(secret, client.id, client.token_version)
    return web.json_response(
        {"account_sid": client.id, "client_id": client.id, "auth_token": token,
         "name": client.name, "organisations": list(client.organisations)},
        status=201,
    )


async def list_clients(request: web.Request) -> web.Response:
    return web.json_response({"clients": await store.list_clients(request.app[POOL])})


def _client_sid(request: web.Request) -> str:
    sid = request.match_info["account_sid"]
    if not store.CLIENT_ID.fullmatch(sid):  # cannot exist (sql/014)
        raise NotFound(f"no client {sid!r}", "account_sid")
    return sid


async def rotate_client(request: web.Request) -> web.Response:
    """A new auth token (shown once); the old one is refused from the commit on, on every
    gate (proxy/clients.py)."""
    sid, secret = _client_sid(request), _proxy_secret(request)
    client = await store.rotate_client(request.app[POOL], sid)
    request.app[CLIENTS].forget(sid)
    token = credentials.derive_token(secret, sid, client["token_version"])
    return web.json_response({**client, "auth_token": token})


async def disable_client(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=False)


async def enable_client(request: web.Request) -> web.Response:
    return await _set_enabled(request, enabled=True)


async def _set_enabled(request: web.Request, *, enabled: bool) -> web.Response:
    sid = _client_sid(request)
    client = await store.set_client_enabled(request.app[POOL], sid, enabled,
                                            request.app[CLOCK]())
    request.app[CLIENTS].forget(sid)
    return web.json_response(client)


async def put_subject(request: web.Request) -> web.Response:
    number = _path_number(request)
    f = Fields(await read_json(request), ("kind", "published_for_marketing", "evidence"))
    created = await store.upsert_subject(
        request.app[POOL], number,
        kind=f.choice("kind", SUBJECT_KINDS, required=False, default="person") or "person",
        published=f.boolean("published_for_marketing"),
        evidence=f.obj("evidence"),
    )
    report = await store.subject_report(request.app[POOL], number)
    return web.json_response(report, status=201 if created else 200)


async def get_subject(request: web.Request) -> web.Response:
    return web.json_response(await store.subject_report(request.app[POOL], _path_number(request)))


async def delete_subject(request: web.Request) -> web.Response:
    number = _path_number(request)
    result = await store.erase_subject(request.app[POOL], number)
    return web.json_response({"erased": True, **result})


def _not_future(value: dt.datetime | None, now: dt.datetime, name: str) -> None:
    if value is not None and value > now + dt.timedelta(minutes=5):
        raise BadInput("lies in the future", name)


async def create_consent(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), (
        "subject", "organisation", "channel", "topics", "kind", "given_at", "expires_at",
        "verified_at", "verification", "first_contact_by", "requested_for", "provenance",
        "evidence"))
    now = request.app[CLOCK]()
    kind = f.choice("kind", CONSENT_KINDS)
    given_at = f.time("given_at")
    assert given_at is not None
    _not_future(given_at, now, "given_at")
    expires_at = f.end("expires_at")  # year 9999: never expires
    if expires_at is not None and expires_at <= given_at:
        raise BadInput("must be after given_at", "expires_at")
    window = f.sub("requested_for", ("start", "end"))
    start = end = None
    if window is not None:
        if kind != "request":
            raise BadInput("only a contact request (kind 'request') has a requested time",
                           "requested_for")
        start, end = window.time("start"), window.time("end")
        assert start is not None
        assert end is not None
        if start >= end:
            raise BadInput("start must be before end", "requested_for.end")
    consent = store.ConsentIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", max_len=63) or "",
        channel=f.choice("channel", CHANNELS) or "voice",
        topics=f.topics("topics"),
        kind=kind or "opt_in",
        given_at=given_at,
        provenance=f.choice("provenance", PROVENANCES) or "unknown",
        expires_at=expires_at,
        verified_at=f.time("verified_at", required=False),
        verification=f.text("verification", required=False, max_len=200),
        first_contact_by=f.time("first_contact_by", required=False),
        requested_start=start,
        requested_end=end,
        evidence=f.obj("evidence"),
    )
    consent_id = await store.create_consent(request.app[POOL], consent)
    return web.json_response({"id": consent_id}, status=201)


def _int_path(request: web.Request, key: str) -> int:
    try:
        value = int(request.match_info[key])
    except ValueError as exc:
        raise BadInput("expected an integer id", key) from exc
    if not 0 < value < 2**63:
        raise BadInput("expected a positive integer id", key)
    return value


async def delete_consent(request: web.Request) -> web.Response:
    consent_id = _int_path(request, "id")
    withdrawn = await store.withdraw_consent(
        request.app[POOL], consent_id, request.app[CLOCK]())
    return web.json_response({"id": consent_id, "withdrawn_at": withdrawn.isoformat()})


async def create_relationship(request: web.Request) -> web.Response:
    f = Fields(await read_json(request), (
        "subject", "organisation", "kind", "topics", "started_at", "ended_at", "provenance",
        "opt_out_offered", "evidence"))
    started_at = f.time("started_at")
    ended_at = f.end("ended_at")  # year 9998: still running
    assert started_at is not None
    if ended_at is not None and ended_at < started_at:
        raise BadInput("must not be before started_at", "ended_at")
    if not f.has("opt_out_offered"):
        raise BadInput("required field is missing (N7: was an opt-out offered at collection?)",
                       "opt_out_offered")
    rel = store.RelationshipIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", max_len=63) or "",
        kind=f.choice("kind", RELATIONSHIP_KINDS) or "customer",
        topics=f.topics("topics"),
        started_at=started_at,
        ended_at=ended_at,
        provenance=f.choice("provenance", PROVENANCES) or "unknown",
        opt_out_offered=f.boolean("opt_out_offered", required=True),
        evidence=f.obj("evidence"),
    )
    rel_id = await store.create_relationship(request.app[POOL], rel)
    return web.json_response({"id": rel_id}, status=201)


async def create_objection(request: web.Request) -> web.Response:
    f = Fields(await read_json(request),
               ("subject", "organisation", "channel", "received_at", "via"))
    now = request.app[CLOCK]()
    received_at = f.time("received_at", required=False) or now
    _not_future(received_at, now, "received_at")
    obj = store.ObjectionIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", required=False, max_len=63),
        channel=f.choice("channel", CHANNELS, required=False),
        received_at=received_at,
        via=f.choice("via", OBJECTION_VIA) or "api",
    )
    obj_id = await store.create_objection(request.app[POOL], obj)
    return web.json_response({"id": obj_id}, status=201)


async def list_decisions(request: web.Request) -> web.Response:
    query = request.rel_url.query
    unknown = set(query) - {"subject", "limit"}
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    number = None
    if query.get("subject"):
        try:
            number = parse_number(query["subject"])
        except InvalidNumber as exc:
            raise BadInput("not a valid phone number", "subject") from exc
    try:
        limit = int(query.get("limit", "50"))
    except ValueError as exc:
        raise BadInput("expected an integer from 1 to 1000", "limit") from exc
    if not 1 <= limit <= 1000:
        raise BadInput("expected an integer from 1 to 1000", "limit")
    decisions = await store.list_decisions(request.app[POOL], number, limit)
    return web.json_response({"decisions": decisions})


def add_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.post(f"{PREFIX}/organisations", create_organisation),
        web.get(f"{PREFIX}/organisations/{{org_id}}", get_organisation),
        web.put(f"{PREFIX}/organisations/{{org_id}}", put_organisation),
        web.post(f"{PREFIX}/senders", create_sender),
        web.get(f"{PREFIX}/senders/{{sender}}", get_sender),
        web.post(f"{PREFIX}/clients", create_client),
        web.get(f"{PREFIX}/clients", list_clients),
        web.post(f"{PREFIX}/clients/{{account_sid}}/rotate", rotate_client),
        web.post(f"{PREFIX}/clients/{{account_sid}}/disable", disable_client),
        web.post(f"{PREFIX}/clients/{{account_sid}}/enable", enable_client),
        web.put(f"{PREFIX}/subjects/{{number}}", put_subject),
        web.get(f"{PREFIX}/subjects/{{number}}", get_subject),
        web.delete(f"{PREFIX}/subjects/{{number}}", delete_subject),
        web.post(f"{PREFIX}/consents", create_consent),
        web.delete(f"{PREFIX}/consents/{{id}}", delete_consent),
        web.post(f"{PREFIX}/relationships", create_relationship),
        web.post(f"{PREFIX}/objections", create_objection),
        web.get(f"{PREFIX}/decisions", list_decisions),
        web.get(f"{PREFIX}/openapi.yaml", openapi_document),
    ])


@functools.cache
def _openapi_yaml() -> bytes:
    """proxy/openapi.yaml (package data), read once."""
    return Path(__file__).with_name("openapi.yaml").read_bytes()


async def openapi_document(_request: web.Request) -> web.Response:
    """The OpenAPI 3.0 description of this API, behind the admin token like every route."""
    return web.Response(body=_openapi_yaml(), content_type="application/yaml")
