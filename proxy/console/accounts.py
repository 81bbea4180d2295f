"""Console users from the command line: `consent-proxy user add NAME --role ROLE`."""

from __future__ import annotations

from proxy import db
from proxy.console import auth
from proxy.errors import BadInput
from proxy.store import console_users as users


async def add_user(database_url: str, name: str, role: str, password: str | None, *,
                   only_if_none: bool = False) -> str | None:
    """Create a console user. Without a password one is generated (the user must replace it
    at the first login) and returned; with `only_if_none`, nothing is done (None) when any
    console user exists already."""
    if not users.NAME.fullmatch(name):
        raise BadInput("expected lowercase letters, digits, '.', '_' or '-' (max 63)", "name")
    if role not in auth.ROLES:
        raise BadInput("expected viewer, officer or admin", "role")
    if password is not None:
        auth.check_new_password(password)
    conn = await db.connect(database_url)
    try:
        if only_if_none and await users.count_users(conn):
            return None
        generated = auth.new_password() if password is None else None
        await users.create_user(conn, name, role, auth.hash_password(password or generated or ""),
                                must_change=generated is not None, created_by="cli")
    finally:
        await conn.close()
    return generated
