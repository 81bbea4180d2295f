"""Fixtures for the CM.com front: a fake CM gateway on a real port, the proxy pointed at it,
and the official SDK (`cm-text-sdk-python`) as the sender."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cm_text import TextClient

from proxy import credentials
from proxy.app import create_app
from proxy.keys import POOL
from proxy.phone import subject_hash
from tests.conftest import Clock, make_settings
from tests.fake_cm import FakeCm
from tests.world import World, make_world, write_config

UP_CM_TOKEN = "11111111-2222-3333-4444-555555555555"  # the upstream product token


@pytest.fixture
async def fake_cm() -> AsyncIterator[FakeCm]:
    async with FakeCm(UP_CM_TOKEN) as fake:
        yield fake


async def cm_proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeCm | None,
                   tmp_path: Path, upstream_timeout: float = 10, **env: str
                   ) -> TestClient[Any, Any]:
    extra = {"CM_PRODUCT_TOKEN": UP_CM_TOKEN, "CM_API_BASE": fake.base_url} if fake else {}
    settings = make_settings(database_url, PROXY_CONFIG=write_config(tmp_path, upstream_timeout),
                             **extra, **env)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    return client


@pytest.fixture
async def cm_world(aiohttp_client: Any, database_url: str, clock: Clock, fake_cm: FakeCm,
                   tmp_path: Path, auth: dict[str, str]) -> World:
    proxy = await cm_proxy(aiohttp_client, database_url, clock, fake_cm, tmp_path,
                           CM_WEBHOOK_SECRET="cm-webhook-secret-0123456789")
    return await make_world(proxy, auth)


def api_key(world: World) -> str:
    """The client's product token for CM's SDKs: `<client_id>.<token>`."""
    return credentials.api_key(world.sid, world.token)


def sdk(world: World, key: str | None = None) -> TextClient:
    return TextClient(key or api_key(world), gateway=f"{world.base}/v1.0/message")


async def rows_for(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.upstream_sid, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows
