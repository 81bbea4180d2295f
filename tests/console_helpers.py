"""Shared by the console's tests: console users, logging in through the login form, CSRF
tokens read from the pages as a browser would."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from proxy.console import auth
from proxy.store import console_users as users
from tests.conftest import uid

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct horse battery staple"


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


async def make_user(pool: asyncpg.Pool, role: str, *, password: str = PASSWORD,
                    must_change: bool = False) -> str:
    name = uid(role)
    await users.create_user(pool, name, role, auth.hash_password(password),
                            must_change=must_change, created_by="test")
    return name


async def log_in(client: TestClient[Any, Any], name: str, password: str = PASSWORD,
                 *, status: int = 303) -> str:
    """Log in through the form; returns the page the login led to (or the refusal)."""
    page = await client.get("/console/login")
    assert page.status == 200
    token = csrf_of(await page.text())
    resp = await client.post("/console/login", data={"csrf": token, "name": name,
                                                     "password": password},
                             allow_redirects=False)
    assert resp.status == status, await resp.text()
    return resp.headers.get("Location", "") if status == 303 else await resp.text()


async def page_csrf(client: TestClient[Any, Any], path: str = "/console/") -> str:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())
