"""The overview: decisions and opt-outs per day, denial reasons (SVG drawn here from SQL
aggregates), and health: the database, the opt-out spool, the audit chain."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from proxy import store
from proxy.console import auth, charts, i18n
from proxy.console.pages import AMSTERDAM, render
from proxy.db import STORE_ERRORS
from proxy.keys import CLOCK, OPTOUT_SPOOL, POOL
from proxy.store import overview as aggregates

DAYS = 30
TOP_REASONS = 8
# objections.via as the chart groups it: a STOP reply, a keypress in a call, an agent's record.
OPTOUT_GROUPS = (("sms", "via_sms", "bar-stop"), ("ivr", "via_ivr", "bar-ivr"),
                 ("agent", "via_agent", "bar-agent"))


def _days(today: dt.date) -> list[dt.date]:
    return [today - dt.timedelta(days=DAYS - 1 - i) for i in range(DAYS)]


def _per_day(days: list[dt.date], counts: list[aggregates.DayCount], keys: set[str] | None,
             key: str | None) -> list[int]:
    """Counts per day of `key` (or, with key None, of every key not in `keys`)."""
    by_day = dict.fromkeys(days, 0)
    for c in counts:
        if c.day in by_day and ((c.key == key) if key is not None else
                                (keys is not None and c.key not in keys)):
            by_day[c.day] += c.count
    return [by_day[d] for d in days]


@auth.requires("viewer")
async def overview(request: web.Request) -> web.Response:
    t = i18n.translator(i18n.language(request))
    pool = request.config_dict[POOL]
    now = request.config_dict[CLOCK]()
    today = now.astimezone(AMSTERDAM).date()
    days = _days(today)
    since = dt.datetime.combine(days[0], dt.time(0), AMSTERDAM)
    decided = await aggregates.decisions_per_day(pool, since)
    reasons = await aggregates.denial_reasons(pool, since)
    optouts = await aggregates.optouts_per_day(pool, since)
    denied_total = sum(n for _r, n in reasons)
    via_keys = {key for key, _label, _css in OPTOUT_GROUPS}
    values: dict[str, Any] = {
        "decisions_chart": charts.stacked_days(t("decisions_per_day"), days, [
            (t("allow"), "bar-allow", _per_day(days, decided, None, "allow")),
            (t("deny"), "bar-deny", _per_day(days, decided, None, "deny")),
        ]),
        "optouts_chart": charts.stacked_days(t("optouts_per_day"), days, [
            *((t(label), css, _per_day(days, optouts, None, key))
              for key, label, css in OPTOUT_GROUPS),
            (t("via_other"), "bar-other", _per_day(days, optouts, via_keys, None)),
        ]),
        "reasons_chart": charts.bars(t("top_denials"), reasons[:TOP_REASONS]),
        "share_chart": charts.bars(t("denial_share"), reasons, percent_of=denied_total),
        "has_decisions": bool(decided), "has_denials": bool(reasons),
        "health": await _health(request),
    }
    return render(request, "overview.html", values)


async def _health(request: web.Request) -> dict[str, Any]:
    pool = request.config_dict[POOL]
    health: dict[str, Any] = {"spool": request.config_dict[OPTOUT_SPOOL].entries}
    try:
        health["checkpoint"] = await aggregates.checkpoint_state(pool)
        health["verification"] = await aggregates.last_verification(pool)
        health["database"] = True
    except STORE_ERRORS:
        health.update(database=False, checkpoint=None, verification=None)
    return health


@auth.requires("officer")
async def verify_chain(request: web.Request) -> web.Response:
    """Walk the whole decision chain now (`consent-proxy audit verify` without the log's
    checkpoints) and keep the result, with who asked, for the overview."""
    pool = request.config_dict[POOL]
    async with pool.acquire() as conn:
        report = await store.verify_chain(conn)
    await aggregates.record_verification(pool, request.config_dict[CLOCK](),
                                         request[auth.USER].actor, report.rows, report.ok,
                                         report.broken_id, report.why)
    raise web.HTTPSeeOther("/console/")
