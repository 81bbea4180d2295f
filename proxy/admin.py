"""The admin API under /admin/v1: thin handlers that parse, call the store and answer JSON."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import credentials, records, store
from proxy.body import read_body
from proxy.errors import BadInput, NotFound
from proxy.fields import ORG_ID, Fields, load_json, parse_sender_id, parse_topic
from proxy.imports import routes as transfer
from proxy.keys import CLIENTS, CLOCK, POOL, SETTINGS
from proxy.phone import InvalidNumber, parse_number
from proxy.policy.facts import PURPOSES, SECTORS, Organisation, Sender

PREFIX = "/admin/v1"
ACTOR = records.ADMIN_ACTOR
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
    created = await store.create_organisation(request.app[POOL], org, actor=ACTOR)
    return web.json_response(_org_json(created), status=201)


async def get_organisation(request: web.Request) -> web.Response:
    org_id = request.match_info["org_id"]
    if not ORG_ID.match(org_id):  # cannot exist, and may hold what a query cannot carry
        raise NotFound(f"no organisation {org_id!r}", "id")
    org = await store.get_organisation(request.app[POOL], org_id)
    return web.json_response(_org_json(org))


async def put_organisation(request: web.Request) -> web.Response:
    org = _parse_org(await read_json(request), request.match_info["org_id"])
    updated = await store.update_organisation(request.app[POOL], org, actor=ACTOR)
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
    created = await store.create_sender(request.app[POOL], sender, actor=ACTOR)
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
        request.app[POOL], credentials.new_account_sid(), name, organisations, actor=ACTOR)
    token = credentials.derive_token(secret, client.id, client.token_version)
    return web.json_response(
        {"account_sid": client.id, "client_id": client.id, "auth_token": token,
         "name": client.name, "organisations": list(client.organisations)},
        status=201,
    )


def _page_query(request: web.Request) -> dict[str, Any]:
    """?organisation=&subject=&after=&limit= of the list routes; unknown parameters refused."""
    query = request.rel_url.query
    unknown = set(query) - {"organisation", "subject", "after", "limit"}
    if unknown:
        raise BadInput("unknown query parameter", sorted(unknown)[0])
    return {"organisation": query.get("organisation") or None,
            "subject": query.get("subject") or None, "after": query.get("after") or None,
            "limit": _limit(query)}


def _limit(query: Any) -> int:
    try:
        limit = int(query.get("limit", "50"))
    except ValueError as exc:
        raise BadInput("expected an integer from 1 to 1000", "limit") from exc
    if not 1 <= limit <= 1000:
        raise BadInput("expected an integer from 1 to 1000", "limit")
    return limit


def _lister(name: str, list_page: Any) -> Any:
    async def handler(request: web.Request) -> web.Response:
        items, cursor = await list_page(request.app[POOL], **_page_query(request))
        return web.json_response({name: items, "next": cursor})
    handler.__name__ = f"list_{name}"
    return handler


list_clients = _lister("clients", store.list_clients)
list_organisations = _lister("organisations", store.list_organisations)
list_senders = _lister("senders", store.list_senders)
list_consents = _lister("consents", store.list_consents)
list_objections = _lister("objections", store.list_objections)


def _client_sid(request: web.Request) -> str:
    sid = request.match_info["account_sid"]
    if not store.CLIENT_ID.fullmatch(sid):  # cannot exist (sql/014)
        raise NotFound(f"no client {sid!r}", "account_sid")
    return sid


async def rotate_client(request: web.Request) -> web.Response:
    """A new auth token (shown once); the old one is refused from the commit on, on every
    gate (proxy/clients.py)."""
    sid, secret = _client_sid(request), _proxy_secret(request)
    client = await store.rotate_client(request.app[POOL], sid, actor=ACTOR)
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
                                            request.app[CLOCK](), actor=ACTOR)
    request.app[CLIENTS].forget(sid)
    return web.json_response(client)


async def put_subject(request: web.Request) -> web.Response:
    number = _path_number(request)
    subject = records.parse_subject(await read_json(request), request.app[CLOCK](), number)
    created = await store.upsert_subject(
        request.app[POOL], number, kind=subject.kind,
        published=subject.published_for_marketing, evidence=subject.evidence, actor=ACTOR)
    report = await store.subject_report(request.app[POOL], number)
    return web.json_response(report, status=201 if created else 200)


async def get_subject(request: web.Request) -> web.Response:
    return web.json_response(await store.subject_report(request.app[POOL], _path_number(request)))


async def delete_subject(request: web.Request) -> web.Response:
    number = _path_number(request)
    result = await store.erase_subject(request.app[POOL], number, actor=ACTOR)
    return web.json_response({"erased": True, **result})


async def create_consent(request: web.Request) -> web.Response:
    consent = records.parse_consent(await read_json(request), request.app[CLOCK]())
    consent_id = await store.create_consent(request.app[POOL], consent, actor=ACTOR)
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
        request.app[POOL], consent_id, request.app[CLOCK](), actor=ACTOR)
    return web.json_response({"id": consent_id, "withdrawn_at": withdrawn.isoformat()})


async def create_relationship(request: web.Request) -> web.Response:
    rel = records.parse_relationship(await read_json(request), request.app[CLOCK]())
    rel_id = await store.create_relationship(request.app[POOL], rel, actor=ACTOR)
    return web.json_response({"id": rel_id}, status=201)


async def create_objection(request: web.Request) -> web.Response:
    obj = records.parse_objection(await read_json(request), request.app[CLOCK]())
    obj_id = await store.create_objection(request.app[POOL], obj, actor=ACTOR)
    return web.json_response({"id": obj_id}, status=201)


async def lift_objection(request: web.Request) -> web.Response:
    """N11: the person's own request lifts their objection; recorded with who and how."""
    objection_id = _int_path(request, "id")
    f = Fields(await read_json(request), ("how", "note"))
    how = f.choice("how", store.LIFT_HOW)
    assert how is not None
    lifted = await store.lift_objection(
        request.app[POOL], objection_id, at=request.app[CLOCK](), actor=ACTOR, how=how,
        note=f.text("note", required=False, max_len=1000))
    return web.json_response(lifted)


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
    limit = _limit(query)
    decisions = await store.list_decisions(request.app[POOL], number, limit)
    return web.json_response({"decisions": decisions})


def add_routes(app: web.Application) -> None:
    app.router.add_routes([
        web.post(f"{PREFIX}/organisations", create_organisation),
        web.get(f"{PREFIX}/organisations", list_organisations),
        web.get(f"{PREFIX}/organisations/{{org_id}}", get_organisation),
        web.put(f"{PREFIX}/organisations/{{org_id}}", put_organisation),
        web.post(f"{PREFIX}/senders", create_sender),
        web.get(f"{PREFIX}/senders", list_senders),
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
        web.get(f"{PREFIX}/consents", list_consents),
        web.delete(f"{PREFIX}/consents/{{id}}", delete_consent),
        web.post(f"{PREFIX}/relationships", create_relationship),
        web.post(f"{PREFIX}/objections", create_objection),
        web.get(f"{PREFIX}/objections", list_objections),
        web.post(f"{PREFIX}/objections/{{id}}/lift", lift_objection),
        web.post(f"{PREFIX}/imports", transfer.post_import),
        web.get(f"{PREFIX}/exports", transfer.get_export),
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
