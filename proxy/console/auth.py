"""Who may use the console: passwords (argon2id), sessions, CSRF tokens, login throttling and
roles. Every rule here is checked on the server; the pages only hide what a role cannot do."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import argon2
import asyncpg
import structlog
from aiohttp import web

from proxy.errors import BadInput, ProxyError
from proxy.store import console_users as users

log = structlog.get_logger("proxy.console")
ROLES = users.ROLES
_RANK = {role: rank for rank, role in enumerate(ROLES)}
SESSION_COOKIE = "cp_console"
LOGIN_CSRF_COOKIE = "cp_login_csrf"
# A session ends 8 hours after sign-in, or earlier after 30 minutes without a request: a
# console left open on an unattended desk does not stay signed in for a working day.
SESSION_LIFETIME = dt.timedelta(hours=8)
SESSION_IDLE = dt.timedelta(minutes=30)
# Throttling: a name or an address with this many failed logins within the window waits
# until the oldest of them leaves it.
THROTTLE_WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
MIN_PASSWORD = 12
MAX_PASSWORD = 256

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory parameters.
_hasher = argon2.PasswordHasher()


class Forbidden(ProxyError):
    """The signed-in user's role may not do this (403)."""

    status = 403


class Throttled(ProxyError):
    """Too many failed logins (429)."""

    status = 429


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The user of the request's session."""

    name: str
    role: str
    csrf_token: str
    must_change_password: bool

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    @property
    def actor(self) -> str:
        """How registry changes name this user."""
        return f"console:{self.name}"


USER = web.RequestKey("console_user", SignedIn)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def new_password() -> str:
    """A generated one-time password: 16 URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


def check_new_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInput(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters",
                       "password")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def log_in(pool: asyncpg.Pool, name: str, password: str, address: str,
                 now: dt.datetime) -> tuple[str, users.ConsoleUser]:
    """Check the password (throttled per name and per address); a new session's token."""
    since = now - THROTTLE_WINDOW
    by_user, by_address, oldest = await users.recent_failures(pool, name, address, since,
                                                               now)
    if by_user >= MAX_FAILURES_PER_USER or by_address >= MAX_FAILURES_PER_ADDRESS:
        until = (oldest or now) + THROTTLE_WINDOW
        log.warning("console_login_throttled", user=name, by_user=by_user,
                    by_address=by_address)
        raise Throttled("too many failed logins; try again after "
                        f"{until.astimezone(dt.UTC):%H:%M} UTC", "name")
    user = await users.get_user(pool, name)
    # Hashing takes tens of milliseconds of CPU: off the event loop. An unknown name is
    # checked against a dummy hash, so the answer takes as long as for a known one.
    stored = user.password_hash if user is not None else _dummy_hash()
    ok = await asyncio.to_thread(password_matches, stored, password)
    if user is None or not ok or user.disabled_at is not None:
        await users.record_failure(pool, name, address, now, since)
        log.warning("console_login_failed", user=name)
        raise web.HTTPUnauthorized(reason="wrong user name or password")
    await users.clear_failures(pool, name)
    log.info("console_login", user=name, role=user.role)
    token = secrets.token_urlsafe(32)
    await users.create_session(pool, token_hash(token), user.name, secrets.token_urlsafe(32),
                               now, now + SESSION_IDLE)
    return token, user


async def session_user(pool: asyncpg.Pool, request: web.Request,
                       now: dt.datetime) -> SignedIn | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 100:
        return None
    session = await users.use_session(pool, token_hash(token), now, idle=SESSION_IDLE,
                                      lifetime=SESSION_LIFETIME)
    if session is None:
        return None
    u = session.user
    return SignedIn(u.name, u.role, session.csrf_token, u.must_change_password)


def secure_cookies(request: web.Request, public_url: str) -> bool:
    """`Secure` cookies behind TLS: the request came over it, or the proxy's public URL is
    https (TLS ends at a reverse proxy in front)."""
    return request.secure or public_url.startswith("https://")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(role: str) -> Callable[[Handler], Handler]:
    """The handler is for users of `role` or above: anyone else is sent to the login page
    (not signed in) or refused with 403."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            user = request.get(USER)
            if user is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther("/console/login")
                raise web.HTTPUnauthorized(reason="not signed in")
            if not user.may(role):
                raise Forbidden(f"the role {user.role!r} may not do this ({role} or above)",
                                "role")
            return await handler(request)

        return checked

    return wrap
