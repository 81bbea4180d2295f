"""Management, for console administrators: organisations, senders, clients (dialers' credentials)
and console users. Through the same store functions and validation as the admin API."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from proxy import credentials, store
from proxy.admin import _parse_org
from proxy.console import auth
from proxy.console.pages import choice, form, render, text
from proxy.errors import BadInput
from proxy.fields import parse_sender_id, parse_topic
from proxy.keys import CLIENTS, CLOCK, POOL, SETTINGS
from proxy.policy.facts import PURPOSES, SECTORS, Sender
from proxy.store import console_users as users
from proxy.store import overview
from proxy.store.listing import MAX_LIMIT

USER_NAME_HELP = "lowercase letters, digits, '.', '_' or '-' (max 63)"


async def _page(request: web.Request, shown: dict[str, Any] | None = None) -> web.Response:
    pool = request.config_dict[POOL]
    return render(request, "manage.html", {
        "organisations": await overview.list_organisations(pool),
        "senders": await overview.list_senders(pool),
        # The first thousand (the admin API pages through the rest).
        "clients": (await store.list_clients(pool, limit=MAX_LIMIT))[0],
        "users": await users.list_users(pool),
        "sectors": SECTORS, "purposes": PURPOSES, "roles": auth.ROLES,
        "shown": shown or {},
    })


@auth.requires("admin")
async def manage(request: web.Request) -> web.Response:
    return await _page(request)


def _saved() -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/console/manage")


@auth.requires("admin")
async def create_organisation(request: web.Request) -> web.Response:
    data = await form(request)
    months = text(data, "customer_term_months", required=False) or "36"
    if not months.isdigit():
        raise BadInput("expected a whole number of months", "customer_term_months")
    org = _parse_org({"id": text(data, "id", max_len=63), "name": text(data, "name"),
                      "sector": choice(data, "sector", SECTORS),
                      "customer_term_months": int(months[:4])})
    await store.create_organisation(request.config_dict[POOL], org,
                                   actor=request[auth.USER].actor)
    raise _saved()


@auth.requires("admin")
async def create_sender(request: web.Request) -> web.Response:
    data = await form(request)
    sender = Sender(
        sender=parse_sender_id(text(data, "sender", max_len=40)),
        organisation_id=text(data, "organisation", max_len=63) or "",
        topic=parse_topic(text(data, "topic"), "topic"),
        purpose=choice(data, "purpose", PURPOSES) or "marketing",  # type: ignore[arg-type]
        automated=data.get("automated") == "on",
    )
    await store.create_sender(request.config_dict[POOL], sender,
                             actor=request[auth.USER].actor)
    raise _saved()


@auth.requires("admin")
async def create_client(request: web.Request) -> web.Response:
    data = await form(request)
    name = text(data, "name") or ""
    organisations = [o.strip() for o in (text(data, "organisations", max_len=2000) or "")
                     .replace(",", " ").split() if o.strip()]
    secret = request.config_dict[SETTINGS].proxy_secret
    if not secret:
        raise BadInput("PROXY_SECRET is not configured; clients cannot be issued")
    client = await store.create_client(request.config_dict[POOL], credentials.new_account_sid(),
                                       name, organisations, actor=request[auth.USER].actor)
    token = credentials.derive_token(secret, client.id, client.token_version)
    return await _page(request, {"client": {"name": client.id, "token": token}})


async def _set_client(request: web.Request, *, enabled: bool) -> web.Response:
    client_id = request.match_info["client_id"]
    if not store.CLIENT_ID.fullmatch(client_id):
        raise BadInput("not a client id", "client_id")
    await store.set_client_enabled(request.config_dict[POOL], client_id, enabled,
                                   request.config_dict[CLOCK](), actor=request[auth.USER].actor)
    request.config_dict[CLIENTS].forget(client_id)
    raise _saved()


@auth.requires("admin")
async def disable_client(request: web.Request) -> web.Response:
    return await _set_client(request, enabled=False)


@auth.requires("admin")
async def enable_client(request: web.Request) -> web.Response:
    return await _set_client(request, enabled=True)


def user_name(raw: str | None) -> str:
    name = (raw or "").strip().lower()
    if not users.NAME.fullmatch(name):
        raise BadInput(f"expected {USER_NAME_HELP}", "name")
    return name


@auth.requires("admin")
async def create_user(request: web.Request) -> web.Response:
    data = await form(request)
    name = user_name(data.get("name"))
    role = choice(data, "role", auth.ROLES) or "viewer"
    password = auth.new_password()
    hashed = await asyncio.to_thread(auth.hash_password, password)
    await users.create_user(request.config_dict[POOL], name, role, hashed, must_change=True,
                            created_by=request[auth.USER].actor)
    return await _page(request, {"user": {"name": name, "password": password}})


@auth.requires("admin")
async def update_user(request: web.Request) -> web.Response:
    data = await form(request)
    name = user_name(request.match_info["name"])
    role = choice(data, "role", auth.ROLES) or "viewer"
    me = request[auth.USER]
    enabled = data.get("enabled") == "on"
    if name == me.name and (role != "admin" or not enabled):
        # The console would otherwise lose its last way to manage users by a slip.
        raise BadInput("you cannot demote or disable yourself", "role")
    await users.update_user(request.config_dict[POOL], name, role=role,
                            disabled_at=None if enabled else request.config_dict[CLOCK](),
                            actor=me.actor)
    raise _saved()
