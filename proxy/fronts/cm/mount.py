"""The CM.com front as the app mounts it: its settings from the environment, its upstream (CM,
or the sandbox when no product token is set) in a cleanup context, its routes, and CM-shaped
errors on its paths."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy import inbound, upstream
from proxy.front import render_errors
from proxy.fronts.cm import errors, front, settings, webhooks
from proxy.fronts.cm.keys import CM_SETTINGS, HTTP, NAME, UPSTREAM
from proxy.fronts.cm.upstream import CmUpstream, SandboxUpstream
from proxy.keys import SETTINGS
from proxy.settings import Settings

log = structlog.get_logger("proxy.front.cm")


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CM_SETTINGS]
    if config.product_token is None:
        log.warning("sandbox_upstream_active", front=NAME,
                    note="no CM_PRODUCT_TOKEN: allowed requests are answered by the built-in "
                         "sandbox, nothing reaches CM.com")
        app[UPSTREAM] = SandboxUpstream()
        yield
        return
    timeout = app[SETTINGS].rules.upstream_timeout_seconds
    async with upstream.provider_session(app) as session:
        app[UPSTREAM] = CmUpstream(session, config.message_url, config.product_token, timeout)
        yield


async def _not_served(request: web.Request) -> web.Response:
    """Everything under /v1.0/ but the send itself: CM's shape, nothing passed on."""
    if request.path == settings.MESSAGE_PATH and request.method != "POST":
        raise errors.CmError(405, errors.UNKNOWN, f"{request.method} is not allowed here; "
                             "send with POST")
    raise errors.CmError(404, errors.UNKNOWN, "The requested resource was not found; "
                         "consent-proxy passes on POST /v1.0/message only")


class CmFront:
    name = NAME

    def mount(self, app: web.Application, settings_: Settings) -> None:
        app[CM_SETTINGS] = settings.load(settings_.env)
        app.cleanup_ctx.append(_upstream_ctx)
        app.cleanup_ctx.append(upstream.dialer_session(HTTP))
        # CM takes no reply in the webhook's answer: replies leave as messages (webhooks.py).
        inbound.register_replies(app, NAME, inbound.plain)
        app.router.add_post(settings.MESSAGE_PATH, front.send)
        app.router.add_route("*", "/v1.0/{tail:.*}", _not_served)
        webhooks.add_routes(app)
        render_errors(app, errors.API_PREFIX, errors.RENDERER)
        render_errors(app, errors.WEBHOOK_PREFIX, errors.RENDERER)


FRONT = CmFront()
