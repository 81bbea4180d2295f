"""The console as a sub-application under /console/: its middleware (session, CSRF, security
headers), its routes, its static files and its HTML error pages."""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from proxy.console import auth, decisions, login, lookup, manage, overview, upload
from proxy.console.pages import ENV, HtmlErrors, make_env, secure_headers
from proxy.front import render_errors
from proxy.keys import CLOCK, POOL

PREFIX = "/console"
HERE = Path(__file__).resolve().parent
STATIC = "/console/static/"
# Pages a user with a one-time password may still reach.
_BEFORE_NEW_PASSWORD = frozenset({"/console/password", "/console/logout"})


class CsrfRefused(auth.Forbidden):
    """A POST without the session's CSRF token (403)."""


async def _csrf_token(request: web.Request) -> str:
    """The CSRF token a POST carries: the form field `csrf` (for an upload, the form's first
    field, so the file is not read before the check), or the X-CSRF-Token header."""
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or part.name != "csrf":
            return ""
        request[upload.MULTIPART] = reader
        return (await part.read(decode=True))[:200].decode("utf-8", "replace")
    if request.content_type == "application/x-www-form-urlencoded":
        value = (await request.post()).get("csrf")
        if isinstance(value, str):
            return value
    return ""


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(STATIC):
        response = await handler(request)
        secure_headers(response, personal=False)
        return response
    now = request.config_dict[CLOCK]()
    user = await auth.session_user(request.config_dict[POOL], request, now)
    if user is not None:
        request[auth.USER] = user
    if request.method not in ("GET", "HEAD"):
        if user is None and request.path != "/console/login":
            if request.path == "/console/logout":
                raise web.HTTPSeeOther("/console/login")
            raise web.HTTPUnauthorized(reason="not signed in; log in first")
        presented = await _csrf_token(request)
        if request.path == "/console/login":
            expected = request.cookies.get(auth.LOGIN_CSRF_COOKIE, "")
        else:
            expected = user.csrf_token if user is not None else ""
        if not expected or not presented or not auth.same(presented, expected):
            raise CsrfRefused("missing or invalid CSRF token; reload the page and try again",
                              "csrf")
    if (user is not None and user.must_change_password
            and request.path not in _BEFORE_NEW_PASSWORD):
        raise web.HTTPSeeOther("/console/password")
    response = await handler(request)
    secure_headers(response)
    return response


async def _to_overview(_request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/console/")


def mount(app: web.Application) -> None:
    """The console under /console/, its errors rendered as HTML pages."""
    console = web.Application(middlewares=[console_middleware])
    env = make_env(jinja2.FileSystemLoader(HERE / "templates"))
    console[ENV] = env
    console.cleanup_ctx.append(upload.uploads_ctx)
    console.router.add_routes([
        web.get("/", overview.overview, name="overview"),
        web.post("/audit/verify", overview.verify_chain),
        web.get("/login", login.login_form, name="login"),
        web.post("/login", login.login),
        web.post("/logout", login.logout),
        web.get("/password", login.password_form),
        web.post("/password", login.change_password),
        web.get("/lang/{lang}", login.choose_language),
        web.get("/lookup", lookup.lookup),
        web.get("/evidence", lookup.evidence),
        web.post("/objections", lookup.record_objection),
        web.post("/objections/{id}/lift", lookup.lift_objection),
        web.post("/consents/{id}/withdraw", lookup.withdraw_consent),
        web.get("/decisions", decisions.decisions),
        web.get("/decisions.csv", decisions.decisions_csv),
        web.get("/import", upload.import_form),
        web.post("/import", upload.import_file),
        web.post("/import/commit", upload.commit_import),
        web.get("/manage", manage.manage),
        web.post("/manage/organisations", manage.create_organisation),
        web.post("/manage/senders", manage.create_sender),
        web.post("/manage/clients", manage.create_client),
        web.post("/manage/clients/{client_id}/disable", manage.disable_client),
        web.post("/manage/clients/{client_id}/enable", manage.enable_client),
        web.post("/manage/users", manage.create_user),
        web.post("/manage/users/{name}", manage.update_user),
    ])
    console.router.add_static("/static/", HERE / "static", append_version=False)
    app.add_subapp(PREFIX, console)
    app.router.add_get(PREFIX, _to_overview)
    render_errors(app, PREFIX + "/", HtmlErrors(env))
