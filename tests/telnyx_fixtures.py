"""Fixtures for the Telnyx front: a fake Telnyx upstream, a proxy pointed at it, a world and
the official SDK speaking to the proxy with a client's API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from telnyx import AsyncTelnyx

from proxy import credentials
from proxy.app import create_app
from proxy.keys import POOL
from proxy.phone import subject_hash
from tests.conftest import Clock, make_settings
from tests.fake_telnyx import FakeTelnyx
from tests.world import World, make_world, write_config

UP_KEY = "KEY0123456789ABCDEF_upstream"


@pytest.fixture
async def fake_telnyx() -> AsyncIterator[FakeTelnyx]:
    async with FakeTelnyx(UP_KEY) as upstream:
        yield upstream


async def telnyx_proxy_app(aiohttp_client: Any, database_url: str, clock: Clock,
                           fake: FakeTelnyx, tmp_path: Path, timeout: float = 10,
                           **env: str) -> TestClient[Any, Any]:
    settings = make_settings(database_url, **{
        "TELNYX_API_KEY": UP_KEY, "TELNYX_API_BASE": fake.base_url,
        "TELNYX_PUBLIC_KEY": fake.public_key, "PROXY_CONFIG": write_config(tmp_path, timeout),
        **env})
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return client


@pytest.fixture
async def telnyx_proxy(aiohttp_client: Any, database_url: str, clock: Clock,
                       fake_telnyx: FakeTelnyx, tmp_path: Path) -> TestClient[Any, Any]:
    return await telnyx_proxy_app(aiohttp_client, database_url, clock, fake_telnyx, tmp_path)


@pytest.fixture
async def telnyx_world(telnyx_proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(telnyx_proxy, auth)


def api_key(world: World) -> str:
    return credentials.api_key(world.sid, world.token)


def telnyx_sdk(world: World, key: str | None = None) -> AsyncTelnyx:
    """The official SDK as a sender uses it: only the base URL and the API key changed."""
    return AsyncTelnyx(api_key=key or api_key(world), base_url=f"{world.base}/v2",
                       max_retries=0)


async def telnyx_decisions(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.upstream_sid, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows
