"""What the Vonage front's tests share: RSA keys for the upstream and the dialer's
applications, a throw-away CA (trustme) so the proxy serves TLS to the vonage SDK (which speaks
HTTPS only), the proxy wired to the fake Vonage, and a dialer with its application registered.
The fixtures are in tests/vonage_fixtures.py."""

from __future__ import annotations

import os
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import trustme
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from vonage import Auth, HttpClientOptions, Vonage

from proxy.app import create_app
from tests.conftest import Clock, make_settings
from tests.fake_vonage import FakeVonage
from tests.world import World, write_config

UP_KEY = "upkey123"
UP_SECRET = "upstream-api-secret"
SIGNATURE_SECRET = "test-vonage-signature-secret-0123456789"
SIGNATURE_METHOD = "sha256"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    application_id: str


def key_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return KeyPair(private, public, str(uuid.uuid4()))


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    bundle: str  # the system's CAs and the test CA, for requests (REQUESTS_CA_BUNDLE)


def make_tls(directory: Path) -> Tls:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    system = os.environ.get("REQUESTS_CA_BUNDLE") or ssl.get_default_verify_paths().cafile
    bundle = directory / "bundle.pem"
    system_pem = Path(system).read_text() if system and Path(system).exists() else ""
    bundle.write_text(system_pem + "\n" + ca.cert_pem.bytes().decode())
    return Tls(server, client, str(bundle))


def vonage_env(fake: FakeVonage, key_path: Path, **extra: str) -> dict[str, str]:
    return {"VONAGE_API_KEY": UP_KEY, "VONAGE_API_SECRET": UP_SECRET,
            "VONAGE_REST_BASE": fake.base_url, "VONAGE_API_BASE": fake.base_url,
            "VONAGE_APPLICATION_ID": fake.application_id,
            "VONAGE_PRIVATE_KEY_PATH": str(key_path),
            "VONAGE_SIGNATURE_SECRET": SIGNATURE_SECRET,
            "VONAGE_SIGNATURE_METHOD": SIGNATURE_METHOD, **extra}


async def start_proxy(aiohttp_client: Any, database_url: str, clock: Clock, tls: Tls,
                      env: dict[str, str], tmp_path: Path,
                      timeout: float = 10) -> TestClient[Any, Any]:
    settings = make_settings(database_url, PROXY_CONFIG=write_config(tmp_path, timeout), **env)
    # TestServer takes its TLS context when started (aiohttp_client's server_kwargs drop it).
    server = TestServer(create_app(settings, clock=clock))
    await server.start_server(ssl=tls.server)
    client: TestClient[Any, Any] = await aiohttp_client(
        server, connector=aiohttp.TCPConnector(ssl=tls.client))
    return client


@dataclass
class VonageWorld:
    """An organisation, its senders and a dialer whose Vonage application is registered."""

    world: World
    app: KeyPair
    host: str

    def sdk(self, *, with_app: bool = True) -> Vonage:
        auth = Auth(api_key=self.world.sid, api_secret=self.world.token,
                    application_id=self.app.application_id if with_app else None,
                    private_key=self.app.private_pem if with_app else None)
        return Vonage(auth, HttpClientOptions(api_host=self.host, rest_host=self.host,
                                              timeout=30, max_retries=0))


async def register_application(world: World, app: KeyPair) -> None:
    resp = await world.admin.put(
        f"/admin/v1/clients/{world.sid}/vonage-applications/{app.application_id}",
        json={"public_key": app.public_pem}, headers=world.auth)
    assert resp.status == 200, await resp.text()
