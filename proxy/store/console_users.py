"""The console's users, their sessions and failed logins (sql/017). Passwords arrive here
already hashed (proxy/console/auth.py); session tokens as their SHA-256. A user made or
changed is a registry event (sql/016), with who did it."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import asyncpg

from proxy.errors import Conflict, NotFound
from proxy.store.events import record_event

ROLES = ("viewer", "officer", "admin")
# What the schema accepts as a user name (sql/017).
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    name: str
    role: str
    password_hash: str
    must_change_password: bool
    disabled_at: dt.datetime | None
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    user: ConsoleUser
    csrf_token: str
    expires_at: dt.datetime


def _user(row: asyncpg.Record) -> ConsoleUser:
    return ConsoleUser(row["name"], row["role"], row["password_hash"],
                       row["must_change_password"], row["disabled_at"], row["created_by"],
                       row["created_at"])


async def create_user(conn: asyncpg.Pool | asyncpg.Connection, name: str, role: str,
                      password_hash: str, *, must_change: bool, created_by: str) -> ConsoleUser:
    async with _conn(conn) as c, c.transaction():
        try:
            row = await c.fetchrow(
                """INSERT INTO console_users (name, role, password_hash, must_change_password,
                       created_by) VALUES ($1, $2, $3, $4, $5) RETURNING *""",
                name, role, password_hash, must_change, created_by)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"console user {name!r} already exists", "name") from exc
        await record_event(c, actor=created_by, action="create", kind="console_user",
                           record_id=name, details={"role": role})
    return _user(row)


async def count_users(conn: asyncpg.Pool | asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM console_users")
    return count


async def get_user(conn: asyncpg.Pool | asyncpg.Connection, name: str) -> ConsoleUser | None:
    row = await conn.fetchrow("SELECT * FROM console_users WHERE name = $1", name)
    return None if row is None else _user(row)


async def list_users(conn: asyncpg.Pool | asyncpg.Connection) -> list[ConsoleUser]:
    return [_user(r) for r in await conn.fetch("SELECT * FROM console_users ORDER BY name")]


async def set_password(conn: asyncpg.Pool | asyncpg.Connection, name: str, password_hash: str,
                       *, must_change: bool, actor: str) -> None:
    """A new password ends every session of the user (a stolen session dies with the old
    password)."""
    async with _conn(conn) as c, c.transaction():
        done = await c.fetchval(
            """UPDATE console_users SET password_hash = $2, must_change_password = $3
               WHERE name = $1 RETURNING 1""", name, password_hash, must_change)
        if done is None:
            raise NotFound(f"no console user {name!r}", "name")
        await c.execute("DELETE FROM console_sessions WHERE user_name = $1", name)
        await record_event(c, actor=actor, action="set_password", kind="console_user",
                           record_id=name)


async def update_user(conn: asyncpg.Pool | asyncpg.Connection, name: str, *, role: str,
                      disabled_at: dt.datetime | None, actor: str) -> ConsoleUser:
    """Change a user's role or disable it; a disabled user's sessions end at once."""
    async with _conn(conn) as c, c.transaction():
        # A user disabled before keeps the instant it was disabled at.
        row = await c.fetchrow(
            """UPDATE console_users SET role = $2,
                      disabled_at = CASE WHEN $3::timestamptz IS NULL THEN NULL
                                         ELSE coalesce(disabled_at, $3) END
               WHERE name = $1 RETURNING *""", name, role, disabled_at)
        if row is None:
            raise NotFound(f"no console user {name!r}", "name")
        if disabled_at is not None:
            await c.execute("DELETE FROM console_sessions WHERE user_name = $1", name)
        await record_event(c, actor=actor, action="update", kind="console_user",
                           record_id=name,
                           details={"role": role, "enabled": disabled_at is None})
    return _user(row)


async def create_session(conn: asyncpg.Pool | asyncpg.Connection, token_hash: str, name: str,
                         csrf_token: str, now: dt.datetime, expires_at: dt.datetime) -> None:
    async with _conn(conn) as c, c.transaction():
        # Expired sessions go as new ones come; none outlives its expiry by much.
        await c.execute("DELETE FROM console_sessions WHERE expires_at <= $1", now)
        await c.execute(
            """INSERT INTO console_sessions (token_hash, user_name, csrf_token, created_at,
                   expires_at) VALUES ($1, $2, $3, $4, $5)""",
            token_hash, name, csrf_token, now, expires_at)


async def use_session(conn: asyncpg.Pool | asyncpg.Connection, token_hash: str,
                      now: dt.datetime, *, idle: dt.timedelta, lifetime: dt.timedelta
                      ) -> ConsoleSession | None:
    """The live session of this token with its (enabled) user, or None. Using it keeps it
    alive for `idle` more, never past `lifetime` after it was created."""
    row = await conn.fetchrow(
        """WITH s AS (
               UPDATE console_sessions
               SET expires_at = least(created_at + $3::interval, $2 + $4::interval)
               WHERE token_hash = $1 AND expires_at > $2
               RETURNING user_name, csrf_token, expires_at)
           SELECT u.*, s.csrf_token, s.expires_at FROM s
           JOIN console_users u ON u.name = s.user_name
           WHERE u.disabled_at IS NULL""",
        token_hash, now, lifetime, idle)
    if row is None:
        return None
    return ConsoleSession(_user(row), row["csrf_token"], row["expires_at"])


async def delete_session(conn: asyncpg.Pool | asyncpg.Connection, token_hash: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = $1", token_hash)


async def recent_failures(conn: asyncpg.Pool | asyncpg.Connection, name: str, address: str,
                          since: dt.datetime, now: dt.datetime
                          ) -> tuple[int, int, dt.datetime | None]:
    """Failed logins after `since` up to `now`: for this user name, from this address, and
    the oldest of them that counts (the throttle lifts a window after it)."""
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE user_name = $1) AS by_user,
                  count(*) FILTER (WHERE address = $2) AS by_address,
                  min(at) AS oldest
           FROM console_login_failures
           WHERE (user_name = $1 OR address = $2) AND at > $3 AND at <= $4""",
        name, address, since, now)
    assert row is not None
    return row["by_user"], row["by_address"], row["oldest"]


async def record_failure(conn: asyncpg.Pool | asyncpg.Connection, name: str, address: str,
                         at: dt.datetime, keep_after: dt.datetime) -> None:
    async with _conn(conn) as c, c.transaction():
        await c.execute("DELETE FROM console_login_failures WHERE at <= $1", keep_after)
        await c.execute(
            "INSERT INTO console_login_failures (user_name, address, at) VALUES ($1, $2, $3)",
            name, address, at)


async def clear_failures(conn: asyncpg.Pool | asyncpg.Connection, name: str) -> None:
    await conn.execute("DELETE FROM console_login_failures WHERE user_name = $1", name)


class _conn:
    """A connection for a transaction: the given one, or one acquired from the pool."""

    def __init__(self, conn: asyncpg.Pool | asyncpg.Connection) -> None:
        self._given = conn
        self._acquired: asyncpg.pool.PoolAcquireContext | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self._given, asyncpg.Pool):
            self._acquired = self._given.acquire()
            return await self._acquired.__aenter__()
        return self._given

    async def __aexit__(self, *exc: object) -> None:
        if self._acquired is not None:
            await self._acquired.__aexit__(*exc)
