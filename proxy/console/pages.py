"""What every console page shares: rendering a template with the user, the language and the
CSRF token; the security headers; the HTML error page; reading forms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from proxy.console import i18n
from proxy.console.auth import USER
from proxy.errors import BadInput, ProxyError

ENV = web.AppKey("console_jinja", jinja2.Environment)
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# No inline script or style anywhere: scripts and styles come from /console/static only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def secure_headers(response: web.StreamResponse, *, personal: bool = True) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if personal:  # pages may hold numbers and names: never kept in a cache
        response.headers["Cache-Control"] = "no-store"


def local_time(value: dt.datetime | str | None) -> str:
    """An instant as Amsterdam wall-clock time (what officers read)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(AMSTERDAM).strftime("%Y-%m-%d %H:%M")


def make_env(templates: Any) -> jinja2.Environment:
    env = jinja2.Environment(loader=templates, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["local"] = local_time
    return env


def context(request: web.Request, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    lang = i18n.language(request)
    user = request.get(USER)
    return {
        "t": i18n.translator(lang), "lang": lang, "languages": i18n.LANGUAGES, "user": user,
        "csrf": user.csrf_token if user is not None else "", "path": request.path,
        "path_qs": request.path_qs, **(values or {}),
    }


def render(request: web.Request, template: str, values: Mapping[str, Any] | None = None, *,
           status: int = 200) -> web.Response:
    env = request.config_dict[ENV]
    body = env.get_template(template).render(context(request, values))
    response = web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8")
    secure_headers(response)
    return response


class HtmlErrors:
    """Errors on /console paths as HTML pages, in the user's language (proxy/front.py)."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env

    def _page(self, request: web.Request, status: int, message: str,
              field: str | None) -> web.Response:
        body = self.env.get_template("error.html").render(context(request, {
            "status": status, "message": message, "field": field}))
        response = web.Response(text=body, status=status, content_type="text/html",
                                charset="utf-8")
        secure_headers(response)
        return response

    def error(self, request: web.Request, exc: ProxyError) -> web.Response:
        return self._page(request, exc.status, exc.message, exc.field)

    def http_error(self, request: web.Request, status: int, reason: str) -> web.Response:
        return self._page(request, status, reason, None)


async def form(request: web.Request) -> dict[str, str]:
    """The posted form (urlencoded; the CSRF check has read it already). Files are refused
    here: only the import page takes one, through its own reader."""
    data = await request.post()
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise BadInput("a file is not expected here", key)
        out.setdefault(key, value)
    return out


def text(data: Mapping[str, str], key: str, *, required: bool = True,
         max_len: int = 200) -> str | None:
    value = data.get(key, "").strip()
    if not value:
        if required:
            raise BadInput("required field is missing", key)
        return None
    if len(value) > max_len:
        raise BadInput(f"longer than {max_len} characters", key)
    return value


def choice(data: Mapping[str, str], key: str, options: tuple[str, ...], *,
           required: bool = True) -> str | None:
    value = text(data, key, required=required)
    if value is not None and value not in options:
        raise BadInput("expected one of " + ", ".join(options), key)
    return value
