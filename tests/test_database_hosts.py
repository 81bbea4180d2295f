"""More than one database host, a transaction pooler in front, and a gate that drains: the
settings that say so (DATABASE_URL with several hosts, DATABASE_URL_DIRECT,
DATABASE_STATEMENT_CACHE_SIZE, PROXY_DRAIN_SECONDS) and what the gate does with them, against
the real PostgreSQL. The whole deployment runs in tests/test_deploy_ha.py and
tests/test_deploy_failover.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy import db
from proxy.app import create_app
from proxy.db import STORE_ERRORS
from proxy.keys import DRAINING
from proxy.settings import ConfigError, load_settings
from tests.conftest import REPO, Clock, make_settings
from tests.test_faults import free_port


def _hosts(url: str, port: int) -> str:
    """`url` with a host that refuses connections listed before its own."""
    parts = urlsplit(url)
    user, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{user}@127.0.0.1:{port},{hostport}" if user else f"127.0.0.1:{port},{hostport}"
    query = "target_session_attrs=read-write"
    return parts._replace(netloc=netloc, query=query).geturl()


def test_split_hosts_gives_one_url_per_host() -> None:
    urls, timeout, writable = db.split_hosts(
        "postgresql://app:pw@h1:6432,h2:6432/consent?target_session_attrs=read-write"
        "&connect_timeout=3&sslmode=disable")
    assert urls == ["postgresql://app:pw@h1:6432/consent?sslmode=disable",
                    "postgresql://app:pw@h2:6432/consent?sslmode=disable"]
    assert (timeout, writable) == (3.0, True)
    urls, timeout, writable = db.split_hosts("postgresql://h1/consent")
    assert (urls, timeout, writable) == (["postgresql://h1/consent"], 5.0, False)
    assert db.split_hosts("postgresql://h1,h2/c?target_session_attrs=primary")[2] is True
    assert db.split_hosts("postgresql://h1,h2/c?target_session_attrs=any")[2] is False


async def test_a_host_that_refuses_is_passed_over(database_url: str) -> None:
    conn = await db.connect_writable(_hosts(database_url, free_port()))
    try:
        assert await conn.fetchval("SELECT NOT pg_is_in_recovery()") is True
    finally:
        await conn.close()


async def test_a_read_only_host_is_never_used_for_writes(database_url: str) -> None:
    """A server that answers but cannot write (a standby; here read-only by its settings) is
    refused at connect time, with an error the gate answers as the store being unavailable."""
    url = f"{database_url}?target_session_attrs=read-write"
    with pytest.raises(asyncpg.exceptions.TargetServerAttributeNotMatched) as caught:
        await db.connect_writable(url, server_settings={"default_transaction_read_only": "on"})
    assert isinstance(caught.value, STORE_ERRORS)
    # Without target_session_attrs the URL is asyncpg's to handle, as before.
    conn = await db.connect_writable(database_url,
                                     server_settings={"default_transaction_read_only": "on"})
    try:
        with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError) as refused:
            await conn.execute("CREATE TEMP TABLE t (x int)")
        assert isinstance(refused.value, STORE_ERRORS)  # 503, never a 500
    finally:
        await conn.close()


async def test_a_pool_without_statement_cache_and_its_connections_replaced(
        database_url: str) -> None:
    pool = await db.create_pool(_hosts(database_url, free_port()), statement_cache_size=0,
                                min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval("SELECT pg_backend_pid()")
            # Unnamed statements only: nothing a transaction pooler could lose.
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_prepared_statements") == 0
            # No startup parameter a pooler would refuse.
            assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
        await db.discard(pool)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != first
    finally:
        await pool.close()
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    finally:
        await pool.close()


def test_settings_for_more_than_one_gate() -> None:
    config = str(REPO / "config" / "consent-proxy.toml")
    base = {"PROXY_CONFIG": config, "DATABASE_URL": "postgresql://pgbouncer-a,pgbouncer-b/c"}
    settings = load_settings(base)
    assert (settings.database_url_direct, settings.statement_cache_size,
            settings.drain_seconds) == (None, 100, 0)
    assert settings.session_database_url == base["DATABASE_URL"]
    settings = load_settings({**base, "DATABASE_URL_DIRECT": "postgresql://pg-a,pg-b/c",
                              "DATABASE_STATEMENT_CACHE_SIZE": "0",
                              "PROXY_DRAIN_SECONDS": "5"})
    assert settings.session_database_url == "postgresql://pg-a,pg-b/c"
    assert (settings.statement_cache_size, settings.drain_seconds) == (0, 5)


@pytest.mark.parametrize(("key", "value"), [
    ("DATABASE_STATEMENT_CACHE_SIZE", "-1"), ("DATABASE_STATEMENT_CACHE_SIZE", "none"),
    ("PROXY_DRAIN_SECONDS", "-2"), ("PROXY_DRAIN_SECONDS", "3601"),
    ("PROXY_DRAIN_SECONDS", "1.5"),
])
def test_bad_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings({"PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml"),
                       key: value})


async def test_a_draining_gate_is_unready_and_keeps_no_connection_open(
        aiohttp_client: Any, database_url: str, clock: Clock) -> None:
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(database_url), clock=clock))
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert resp.headers.get("Connection", "").lower() != "close"
    client.app[DRAINING].set()
    resp = await client.get("/readyz")
    assert (resp.status, (await resp.json())["status"]) == (503, "draining")
    assert resp.headers["Connection"].lower() == "close"
    resp = await client.get("/healthz")  # still serving
    assert resp.status == 200
    assert resp.headers["Connection"].lower() == "close"


async def test_readyz_is_unready_on_a_read_only_server(
        aiohttp_client: Any, database_url: str, clock: Clock) -> None:
    """A gate whose database cannot be written (a demoted primary; here read-only by a
    setting asyncpg takes from the URL) takes itself out of the balancer."""
    read_only = f"{database_url}?default_transaction_read_only=on"
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(read_only), clock=clock))
    resp = await client.get("/readyz")
    assert (resp.status, (await resp.json())["reason"]) == (503, "CONSENT_STORE_UNAVAILABLE")
