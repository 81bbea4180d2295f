"""Fixtures for the Vonage front (test modules load them with `pytest_plugins`): keys, the
throw-away CA, the fake Vonage upstream, the proxy wired to it and a dialer's world."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Clock
from tests.fake_vonage import FakeVonage
from tests.vonage_world import (
    UP_KEY,
    UP_SECRET,
    KeyPair,
    Tls,
    VonageWorld,
    key_pair,
    make_tls,
    register_application,
    start_proxy,
    vonage_env,
)
from tests.world import make_world


@pytest.fixture(scope="session")
def upstream_app() -> KeyPair:
    return key_pair()


@pytest.fixture(scope="session")
def dialer_app() -> KeyPair:
    return key_pair()


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("vonage-tls"))


@pytest.fixture
def trust_test_ca(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests reads REQUESTS_CA_BUNDLE on every request (the vonage SDK uses requests).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls.bundle)


@pytest.fixture
async def fake_vonage(upstream_app: KeyPair) -> AsyncIterator[FakeVonage]:
    async with FakeVonage(UP_KEY, UP_SECRET, upstream_app.application_id,
                          upstream_app.public_pem) as fake:
        yield fake


@pytest.fixture
def upstream_key_path(upstream_app: KeyPair, tmp_path: Path) -> Path:
    path = tmp_path / "upstream-private.key"
    path.write_text(upstream_app.private_pem)
    return path


@pytest.fixture
async def vproxy(aiohttp_client: Any, database_url: str, clock: Clock, tls: Tls,
                 fake_vonage: FakeVonage, upstream_key_path: Path, tmp_path: Path,
                 trust_test_ca: None) -> TestClient[Any, Any]:
    return await start_proxy(aiohttp_client, database_url, clock, tls,
                             vonage_env(fake_vonage, upstream_key_path), tmp_path)


@pytest.fixture
async def vworld(vproxy: TestClient[Any, Any], auth: dict[str, str],
                 dialer_app: KeyPair) -> VonageWorld:
    world = await make_world(vproxy, auth)
    app = KeyPair(dialer_app.private_pem, dialer_app.public_pem, str(uuid.uuid4()))
    await register_application(world, app)
    return VonageWorld(world, app, f"127.0.0.1:{vproxy.port}")

