"""The dial-time decision API as the app mounts it: its routes (api.py), and its errors in
its own shapes (answer.py)."""

from __future__ import annotations

from aiohttp import web

from proxy.dial import answer, api, fastagi
from proxy.errors import ProxyError
from proxy.front import render_errors
from proxy.settings import Settings


class Errors:
    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        return answer.error_response(exc)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return web.json_response({"error": reason, "field": None}, status=status)


class DialFront:
    name = "dial"

    def mount(self, app: web.Application, settings: Settings) -> None:
        api.add_routes(app)
        render_errors(app, api.PREFIX + "/", Errors())
        # Asterisk's FastAGI, when `fastagi.listen` is set. Dial is the last front mounted,
        # so the listener starts after, and stops before, everything it decides with.
        fastagi.install(app)


FRONT = DialFront()
