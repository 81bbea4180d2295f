"""The Telnyx front as the app mounts it: its configuration (TELNYX_* from Settings.env), its
routes, its upstream (Telnyx, or the sandbox when no API key is set) and Telnyx-shaped errors
on `/v2/`; its messaging webhook (webhooks.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy import upstream
from proxy.front import render_errors
from proxy.fronts.telnyx import errors, front, passthrough, settings, webhooks
from proxy.fronts.telnyx.keys import CONFIG, HTTP, NAME, UPSTREAM
from proxy.fronts.telnyx.upstream import SandboxUpstream, TelnyxUpstream
from proxy.keys import SETTINGS
from proxy.settings import Settings

log = structlog.get_logger("proxy.fronts.telnyx")


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    if config.api_key is None:
        log.warning("sandbox_upstream_active", front=NAME,
                    note="no TELNYX_API_KEY: allowed requests are answered by the built-in "
                         "sandbox, nothing reaches Telnyx")
        app[UPSTREAM] = SandboxUpstream()
        yield
        return
    timeout = app[SETTINGS].rules.upstream_timeout_seconds
    async with upstream.provider_session(app) as session:
        app[UPSTREAM] = TelnyxUpstream(session, config.api_base, config.api_key, timeout)
        yield


class TelnyxFront:
    name = NAME

    def mount(self, app: web.Application, settings_: Settings) -> None:
        app[CONFIG] = settings.load(settings_.env)
        app.cleanup_ctx.append(_upstream_ctx)
        app.cleanup_ctx.append(upstream.dialer_session(HTTP))
        app.router.add_post("/v2/messages", front.create_message)
        app.router.add_post("/v2/calls", front.create_call)
        app.router.add_route("*", "/v2/{tail:.*}", passthrough.passthrough)
        webhooks.add_routes(app)
        render_errors(app, errors.PREFIX, errors.RENDERER)


FRONT = TelnyxFront()
