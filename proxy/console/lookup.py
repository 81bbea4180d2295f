"""Number look-up: everything held about a number, what would happen if each sender of its
organisations called or texted it now (a dry run: nothing recorded, nothing consumed), the
officer's actions and the printable evidence report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from proxy import gate, store
from proxy.check import CHECK_CHANNELS, _contact_channel
from proxy.console import auth
from proxy.console.pages import choice, form, render, text
from proxy.errors import BadInput, NotFound
from proxy.keys import CLOCK, GATE, POOL, SETTINGS, WRITER
from proxy.phone import InvalidNumber, parse_number
from proxy.policy.facts import CHANNELS
from proxy.records import OBJECTION_VIA
from proxy.store import overview

# How an officer's objection reached the organisation (objections.via).
OFFICER_VIA = ("agent", "email", "letter")


@dataclass(frozen=True, slots=True)
class WhatIf:
    """One dry-run decision: this sender, this channel, now."""

    sender: str
    organisation: str
    channel: str
    decision: str
    reason: str
    rule: str | None
    explanation: dict[str, str]


def _number(raw: str | None, field: str = "number") -> str:
    if not raw or not raw.strip():
        raise BadInput("required field is missing", field)
    try:
        return parse_number(raw.strip()[:64])
    except InvalidNumber as exc:
        raise BadInput("not a valid phone number", field) from exc


async def what_if(request: web.Request, number: str) -> list[WhatIf]:
    """The engine's answer for every registered sender of the organisations that know the
    number, on every channel: as `POST /admin/v1/check` answers, nothing is recorded."""
    pool, rules = request.config_dict[POOL], request.config_dict[SETTINGS].rules
    now = request.config_dict[CLOCK]()
    await request.config_dict[GATE].apply_spool()  # a spooled STOP counts, as when deciding
    organisations = await overview.organisations_of(pool, number)
    senders = await overview.list_senders(pool, organisations) if organisations else []
    out: list[WhatIf] = []
    for sender in senders:
        for chosen in CHECK_CHANNELS:
            channel, automated = _contact_channel(chosen)
            evaluation = await gate.evaluate(
                gate.store_facts(pool), rules, channel=channel, to_raw=number,
                from_raw=sender.sender, now=now, automated=automated)
            d = evaluation.decision
            out.append(WhatIf(sender.sender, sender.organisation_id, chosen, d.decision,
                              d.reason, d.rule,
                              {"en": d.explanation["en"], "nl": d.explanation["nl"]}))
    return out


@auth.requires("viewer")
async def lookup(request: web.Request) -> web.Response:
    raw = request.rel_url.query.get("number")
    values: dict[str, Any] = {"raw": raw or "", "report": None, "what_if": [],
                              "number": None, "organisations": []}
    if raw:
        number = _number(raw)
        pool = request.config_dict[POOL]
        values["number"] = number
        try:
            values["report"] = await store.subject_report(pool, number)
        except NotFound:
            values["report"] = None
        values["what_if"] = await what_if(request, number)
        values["organisations"] = [o["id"] for o in await overview.list_organisations(pool)]
    values.update(channels=CHANNELS, via=OFFICER_VIA, lift_how=store.LIFT_HOW)
    return render(request, "lookup.html", values)


@auth.requires("viewer")
async def evidence(request: web.Request) -> web.Response:
    number = _number(request.rel_url.query.get("number"))
    await request.config_dict[WRITER].sync()  # outcomes of answered requests may be queued
    report = await store.evidence_report(request.config_dict[POOL], number,
                                         request.config_dict[CLOCK]())
    return render(request, "evidence.html", {"report": report})


def _back(number: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/console/lookup?" + urlencode({"number": number}))


@auth.requires("officer")
async def record_objection(request: web.Request) -> web.Response:
    data = await form(request)
    number = _number(data.get("number"))
    now = request.config_dict[CLOCK]()
    obj = store.ObjectionIn(
        subject=number,
        organisation=text(data, "organisation", required=False, max_len=63),
        channel=choice(data, "channel", CHANNELS, required=False),
        received_at=now,
        via=choice(data, "via", OFFICER_VIA) or "agent",
    )
    assert obj.via in OBJECTION_VIA
    await store.create_objection(request.config_dict[POOL], obj, actor=request[auth.USER].actor)
    raise _back(number)


def _int_path(request: web.Request, key: str) -> int:
    try:
        value = int(request.match_info[key])
    except ValueError as exc:
        raise BadInput("expected an integer id", key) from exc
    if not 0 < value < 2**63:
        raise BadInput("expected a positive integer id", key)
    return value


@auth.requires("officer")
async def withdraw_consent(request: web.Request) -> web.Response:
    data = await form(request)
    number = _number(data.get("number"))
    consent_id = _int_path(request, "id")
    await store.withdraw_consent(request.config_dict[POOL], consent_id,
                                 request.config_dict[CLOCK](), actor=request[auth.USER].actor)
    raise _back(number)


@auth.requires("officer")
async def lift_objection(request: web.Request) -> web.Response:
    """N11: the person asked to lift their objection (by phone, letter, ...); it stops counting
    from now, recorded with who and how."""
    data = await form(request)
    number = _number(data.get("number"))
    await store.lift_objection(
        request.config_dict[POOL], _int_path(request, "id"), at=request.config_dict[CLOCK](),
        actor=request[auth.USER].actor, how=choice(data, "how", store.LIFT_HOW) or "console",
        note=text(data, "note", required=False, max_len=1000))
    raise _back(number)
