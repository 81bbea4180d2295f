"""Logging in and out, changing one's password, choosing the language."""

from __future__ import annotations

import asyncio
import secrets

from aiohttp import web

from proxy.console import auth, i18n
from proxy.console.pages import form, render
from proxy.errors import BadInput
from proxy.keys import CLOCK, POOL, SETTINGS
from proxy.store import console_users as users


def _secure(request: web.Request) -> bool:
    return auth.secure_cookies(request, request.config_dict[SETTINGS].public_url)


def _login_page(request: web.Request, *, error: str | None = None, status: int = 200,
                name: str = "") -> web.Response:
    token = request.cookies.get(auth.LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "error": error,
                                              "name": name}, status=status)
    # The login form's CSRF token: a cookie the form repeats (double submit).
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/console/", httponly=True,
                        samesite="Strict", secure=_secure(request))
    return response


async def login_form(request: web.Request) -> web.Response:
    if request.get(auth.USER) is not None:
        raise web.HTTPSeeOther("/console/")
    return _login_page(request)


async def login(request: web.Request) -> web.Response:
    data = await form(request)
    name = (data.get("name") or "").strip().lower()[:63]
    password = data.get("password") or ""
    now = request.config_dict[CLOCK]()
    address = request.remote or "unknown"
    try:
        token, user = await auth.log_in(request.config_dict[POOL], name, password, address, now)
    except auth.Throttled as exc:
        return _login_page(request, error=exc.message, status=429, name=name)
    except web.HTTPUnauthorized as exc:
        return _login_page(request, error=exc.reason, status=401, name=name)
    response = web.HTTPSeeOther("/console/password" if user.must_change_password
                                else "/console/")
    response.set_cookie(auth.SESSION_COOKIE, token, path="/console/", httponly=True,
                        samesite="Strict", secure=_secure(request),
                        max_age=int(auth.SESSION_LIFETIME.total_seconds()))
    response.del_cookie(auth.LOGIN_CSRF_COOKIE, path="/console/")
    raise response


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        await users.delete_session(request.config_dict[POOL], auth.token_hash(token))
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/console/")
    raise response


@auth.requires("viewer")
async def password_form(request: web.Request) -> web.Response:
    return render(request, "password.html")


@auth.requires("viewer")
async def change_password(request: web.Request) -> web.Response:
    user = request[auth.USER]
    data = await form(request)
    pool = request.config_dict[POOL]
    current = await users.get_user(pool, user.name)
    assert current is not None
    ok = await asyncio.to_thread(auth.password_matches, current.password_hash,
                                 data.get("current", ""))
    if not ok:
        raise BadInput("the current password is wrong", "current")
    new = data.get("password", "")
    auth.check_new_password(new)
    if new != data.get("repeat", ""):
        raise BadInput(i18n.translator(i18n.language(request))("passwords_differ"), "repeat")
    await users.set_password(pool, user.name, await asyncio.to_thread(auth.hash_password, new),
                             must_change=False, actor=user.actor)
    # Every session of the user ended with the old password: sign in again.
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(auth.SESSION_COOKIE, path="/console/")
    raise response


async def choose_language(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    if lang not in i18n.LANGUAGES:
        raise web.HTTPNotFound()
    target = request.rel_url.query.get("next", "/console/")
    if not target.startswith("/console/") or "//" in target or "\\" in target:
        target = "/console/"  # never a redirect off the console
    response = web.HTTPSeeOther(target)
    response.set_cookie(i18n.LANG_COOKIE, lang, path="/console/", samesite="Strict",
                        max_age=365 * 24 * 3600, secure=_secure(request))
    raise response
