"""The Vonage front as the app mounts it: its configuration (from the environment), its
upstream (Vonage, or the sandbox for a channel without credentials) in a cleanup context, its
routes, the admin route for client applications, and Vonage-shaped errors on its paths."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy import upstream
from proxy.front import render_errors
from proxy.fronts.vonage import applications, calls, errors, events, messages, webhooks
from proxy.fronts.vonage import settings as vonage_settings
from proxy.fronts.vonage.keys import CONFIG, HTTP, NAME, UPSTREAM
from proxy.fronts.vonage.upstream import SandboxUpstream, VonageUpstream
from proxy.keys import SETTINGS
from proxy.settings import Settings

log = structlog.get_logger("proxy.front")


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    sandbox = SandboxUpstream()
    if config.sms_sandbox or config.voice_sandbox:
        log.warning("sandbox_upstream_active", front=NAME, sms=config.sms_sandbox,
                    voice=config.voice_sandbox,
                    note="without VONAGE_API_KEY (SMS) or VONAGE_APPLICATION_ID (calls), "
                         "allowed requests are answered by the built-in sandbox")
    async with upstream.provider_session(app) as session:
        app[UPSTREAM] = VonageUpstream(
            session, rest_base=config.rest_base, api_base=config.api_base,
            api_key=config.api_key, api_secret=config.api_secret,
            application_id=config.application_id, private_key=config.private_key,
            timeout=app[SETTINGS].rules.upstream_timeout_seconds, sandbox=sandbox)
        yield


class VonageFront:
    name = NAME

    def mount(self, app: web.Application, settings: Settings) -> None:
        app[CONFIG] = vonage_settings.load(settings.env)
        app.cleanup_ctx.append(_upstream_ctx)
        app.cleanup_ctx.append(upstream.dialer_session(HTTP))
        app.router.add_post(messages.PATH, messages.send)
        app.router.add_post(calls.CALLS, calls.create)
        app.router.add_get(calls.CALL, calls.get_call, allow_head=False)
        app.router.add_put(calls.CALL, calls.update_call)
        webhooks.add_routes(app)
        events.add_routes(app)
        applications.add_admin_route(app)
        render_errors(app, errors.SMS_PREFIX, errors.SMS_RENDERER)
        render_errors(app, errors.VOICE_PREFIX, errors.VOICE_RENDERER)


FRONT = VonageFront()
