"""How a way in plugs into the app: the `Front` protocol, and whose error shape a path gets.

A front mounts itself (`mount(app, settings)`: its routes, its resources' cleanup contexts,
its error renderer); the app factory mounts the fronts listed in proxy/fronts/__init__.py and
names none of them. Each front renders the errors of its own paths (`render_errors`): the
app's error middleware asks which renderer owns a path, never which provider it is.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from aiohttp import web

from proxy.errors import ProxyError
from proxy.gate import Answer
from proxy.settings import Settings


class ErrorRenderer(Protocol):
    """Renders the errors of a front's paths in its own protocol."""

    def error(self, request: web.Request, exc: ProxyError) -> web.Response: ...

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response: ...


class Front(Protocol):
    """One way in: turns its wire format into the gate's values and back."""

    @property
    def name(self) -> str: ...

    def mount(self, app: web.Application, settings: Settings) -> None: ...


# Path prefix → renderer, longest prefix first.
RENDERERS: web.AppKey[list[tuple[str, ErrorRenderer]]] = web.AppKey("error_renderers")


def render_errors(app: web.Application, prefix: str, renderer: ErrorRenderer) -> None:
    """Errors on paths below `prefix` are rendered by `renderer` (call before start-up)."""
    if RENDERERS not in app:
        app[RENDERERS] = []
    renderers = app[RENDERERS]
    renderers.append((prefix, renderer))
    renderers.sort(key=lambda item: -len(item[0]))


def renderer_for(app: web.Application, path: str) -> ErrorRenderer | None:
    for prefix, renderer in app.get(RENDERERS, ()):
        if path.startswith(prefix):
            return renderer
    return None


# --- what every HTTP front does the same way around the gate ---------------------------------

def request_hash(request: web.Request, raw: bytes) -> str:
    """What an idempotency key's request must match to be the same request."""
    return hashlib.sha256(request.method.encode() + request.path.encode() + b"\n" + raw
                          ).hexdigest()


def client_scoped(client_id: str, value: str) -> str:
    """A client's own name for something at the provider (an idempotency key, a command or
    conference name) as sent upstream: clients may share one upstream account, so the same
    name of two clients must never meet there."""
    return hashlib.sha256(f"{client_id}:{value}".encode()).hexdigest()


def answer_of(response: web.Response) -> Answer:
    """The answer as the dialer got it, for the decision's outcome and idempotent replays."""
    body = response.body if isinstance(response.body, bytes) else b""
    return Answer(response.status, body, response.headers.get("Content-Type",
                                                               "application/json"))


def replayed(answer: Answer) -> web.Response:
    """The first request's answer, given again to a repeat of its idempotency key."""
    response = web.Response(status=answer.status, body=answer.body)
    response.headers["Content-Type"] = answer.content_type
    return response
