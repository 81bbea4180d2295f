"""The Twilio front as the app mounts it: its routes, its upstream (Twilio, or the sandbox when
no account is set) and its HTTP session for the dialer's own URLs, each in a cleanup context,
and Twilio-shaped errors on its API paths."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy import inbound, upstream
from proxy.front import render_errors
from proxy.fronts.twilio import errors, front, passthrough, relays, webhooks
from proxy.fronts.twilio.keys import HTTP, NAME, UPSTREAM
from proxy.fronts.twilio.upstream import SandboxUpstream, TwilioUpstream
from proxy.keys import SETTINGS
from proxy.settings import Settings

log = structlog.get_logger("proxy.fronts.twilio")


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.sandbox:
        log.warning("sandbox_upstream_active", front=NAME,
                    note="no TWILIO_ACCOUNT_SID: allowed requests are answered by the built-in "
                         "sandbox, nothing reaches Twilio")
        app[UPSTREAM] = SandboxUpstream()
        yield
        return
    assert settings.twilio_account_sid
    assert settings.twilio_auth_token
    async with upstream.provider_session(app) as session:
        app[UPSTREAM] = TwilioUpstream(
            session, settings.twilio_api_base, settings.twilio_account_sid,
            settings.twilio_auth_token, settings.rules.upstream_timeout_seconds)
        yield


class TwilioFront:
    name = NAME

    def mount(self, app: web.Application, settings: Settings) -> None:
        app.cleanup_ctx.append(_upstream_ctx)
        app.cleanup_ctx.append(upstream.dialer_session(HTTP))
        app.router.add_post(f"{front.API}/Calls.json", front.create_call)
        app.router.add_post(f"{front.API}/Messages.json", front.create_message)
        app.router.add_route("*", front.API + "/{tail:.+}", passthrough.passthrough)
        webhooks.add_routes(app)
        inbound.register_replies(app, NAME, webhooks.twiml_reply)
        relays.add_routes(app)
        render_errors(app, errors.PREFIX, errors.RENDERER)


FRONT = TwilioFront()
