"""Client lifecycle through the admin API: list, rotate, disable, enable. A rotated or
disabled client stops at once, on this gate and on every other gate sharing the database
(PostgreSQL LISTEN/NOTIFY), checked with the official SDK as the dialer."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from twilio.base.exceptions import TwilioRestException

from proxy.clients import APPLICATION_NAME, ClientDirectory
from proxy.keys import CLIENTS
from tests.conftest import Clock, mobile, uid
from tests.fake_twilio import FakeTwilio
from tests.test_twilio_front import _proxy
from tests.world import A, World, in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for something another task or process brings about: polled, bounded."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


def directory(client: TestClient[Any, Any]) -> ClientDirectory:
    found: ClientDirectory = client.app[CLIENTS]
    return found


async def send(world: World, number: str) -> str:
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms,
                                                          body="Hallo"))
    return str(message.sid)


async def refused(world: World, number: str) -> TwilioRestException:
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.messages.create(to=number, from_=world.sms, body="Hallo"))
    return caught.value


async def admin(world: World, action: str, sid: str | None = None) -> tuple[int, Any]:
    resp = await world.admin.post(f"{A}/clients/{sid or world.sid}/{action}",
                                  headers=world.auth)
    return resp.status, await resp.json()


# --- list -------------------------------------------------------------------------------------

async def test_clients_are_listed_without_tokens(world: World) -> None:
    resp = await world.admin.get(f"{A}/clients", params={"organisation": world.org},
                                 headers=world.auth)
    assert resp.status == 200
    text = await resp.text()
    assert world.token not in text
    (mine,) = [c for c in (await resp.json())["clients"] if c["account_sid"] == world.sid]
    assert mine == {"account_sid": world.sid, "client_id": world.sid, "name": "Dialer",
                    "organisations": [world.org], "token_version": 1, "enabled": True,
                    "created_at": mine["created_at"], "disabled_at": None}


# --- rotate -----------------------------------------------------------------------------------

async def test_rotation_stops_the_old_token_at_once_and_the_new_one_works(
        world: World, fake: FakeTwilio) -> None:
    number = mobile()
    await world.consent(number, "sms")
    await send(world, number)
    assert directory(world.admin).holds(world.sid)  # the old credentials are cached
    status, rotated = await admin(world, "rotate")
    assert status == 200, rotated
    assert rotated["token_version"] == 2
    assert rotated["auth_token"] != world.token
    old = await refused(world, number)
    assert (old.status, old.code) == (401, 20003)
    renewed = dataclasses.replace(world, token=rotated["auth_token"])
    assert (await send(renewed, number)).startswith("SM")
    assert len(fake.creates("Messages")) == 2
    resp = await world.admin.get(f"{A}/clients", headers=world.auth)
    assert rotated["auth_token"] not in await resp.text()


# --- disable, enable --------------------------------------------------------------------------

async def test_a_disabled_client_is_refused_everywhere_until_enabled(
        world: World, fake: FakeTwilio, clock: Clock) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sid = await send(world, number)
    status, disabled = await admin(world, "disable")
    assert status == 200
    assert disabled["enabled"] is False
    assert dt.datetime.fromisoformat(disabled["disabled_at"]) == clock.now
    assert (await refused(world, number)).code == 20003
    sdk = world.sdk()
    with pytest.raises(TwilioRestException) as caught:  # pass-through too
        await in_thread(lambda: sdk.messages(sid).fetch())
    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert (await admin(world, "disable"))[1]["disabled_at"] == disabled["disabled_at"]
    status, enabled = await admin(world, "enable")
    assert (status, enabled["enabled"], enabled["disabled_at"]) == (200, True, None)
    await send(world, number)
    assert len(fake.creates("Messages")) == 2


@pytest.mark.parametrize("action", ["rotate", "disable", "enable"])
@pytest.mark.parametrize("sid", ["AC" + "0" * 32, "ACnot-a-sid", "x"])
async def test_unknown_clients_are_404(world: World, pool: asyncpg.Pool, action: str,
                                       sid: str) -> None:
    before = await pool.fetchval("SELECT sum(token_version) FROM clients")
    status, body = await admin(world, action, sid)
    assert (status, body["field"]) == (404, "account_sid")
    assert await pool.fetchval("SELECT sum(token_version) FROM clients") == before


async def test_a_client_id_of_another_shape_is_managed_as_any(world: World,
                                                              pool: asyncpg.Pool) -> None:
    """sql/014: the schema takes any printable client id, not only an AccountSid; the admin
    API manages such a client like one it issued, and names it both ways."""
    client_id = uid("sip-trunk.1")
    await pool.execute("INSERT INTO clients (client_id, name) VALUES ($1, 'SIP trunk')",
                       client_id)
    status, disabled = await admin(world, "disable", client_id)
    assert status == 200, disabled
    assert (disabled["client_id"], disabled["account_sid"], disabled["enabled"]) == (
        client_id, client_id, False)
    status, rotated = await admin(world, "rotate", client_id)
    assert (status, rotated["token_version"]) == (200, 2)
    assert await pool.fetchval("SELECT token_version FROM clients WHERE client_id = $1",
                               client_id) == 2


# --- several gates ----------------------------------------------------------------------------

async def test_rotation_on_one_gate_is_seen_at_once_by_another(
        aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
        tmp_path: Path, auth: dict[str, str]) -> None:
    first = await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)
    second = await _proxy(aiohttp_client, database_url, clock, fake, tmp_path, 10)
    await until(lambda: directory(first).listening and directory(second).listening)
    world = await make_world(first, auth)
    there = dataclasses.replace(world, base=str(second.make_url("")).rstrip("/"))
    number = mobile()
    await world.consent(number, "sms")
    await send(there, number)
    assert directory(second).holds(world.sid)  # cached there for ten seconds...
    status, rotated = await admin(world, "rotate")  # ...and rotated here
    assert status == 200
    await until(lambda: not directory(second).holds(world.sid))  # told by PostgreSQL
    assert (await refused(there, number)).code == 20003
    await send(dataclasses.replace(there, token=rotated["auth_token"]), number)
    await admin(world, "disable")
    await until(lambda: not directory(second).holds(world.sid))
    assert (await refused(dataclasses.replace(there, token=rotated["auth_token"]),
                          number)).code == 20003


async def test_without_its_listener_a_gate_caches_nothing_until_it_is_back(
        world: World, pool: asyncpg.Pool, fake: FakeTwilio) -> None:
    gate = directory(world.admin)
    await until(lambda: gate.listening)
    number = mobile()
    await world.consent(number, "sms")
    await send(world, number)
    assert gate.holds(world.sid)
    killed = await pool.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE application_name = $1 AND datname = current_database()""", APPLICATION_NAME)
    assert killed >= 1
    await until(lambda: not gate.listening)
    assert not gate.holds(world.sid)  # what it held may have changed unheard
    # Changed now, while nobody listens (it retries after a second): the next request reads
    # the client afresh, and nothing it reads is kept.
    await pool.execute("UPDATE clients SET enabled = false, disabled_at = now() "
                       "WHERE client_id = $1", world.sid)
    assert (await refused(world, number)).code == 20003
    assert not gate.listening
    assert not gate.holds(world.sid)
    await pool.execute("UPDATE clients SET enabled = true, disabled_at = NULL "
                       "WHERE client_id = $1", world.sid)
    await until(lambda: gate.listening)  # it reconnects by itself
    await send(world, number)
    assert gate.holds(world.sid)


async def test_a_change_made_by_hand_in_sql_reaches_the_gate(world: World,
                                                             pool: asyncpg.Pool) -> None:
    gate = directory(world.admin)
    await until(lambda: gate.listening)
    number = mobile()
    await world.consent(number, "sms")
    await send(world, number)
    assert gate.holds(world.sid)
    other = uid()
    await pool.execute("INSERT INTO organisations (id, name, sector) VALUES ($1, 'X', "
                       "'commercial')", other)
    await pool.execute("INSERT INTO client_organisations VALUES ($1, $2)", world.sid, other)
    await until(lambda: not gate.holds(world.sid))
