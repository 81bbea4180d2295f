"""Attacks on the Telnyx front by a sender with valid credentials: raw bytes where the attack
is in the bytes, the fake Telnyx upstream's record as the proof of what went out."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import mobile
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import api_key, fake_telnyx, telnyx_proxy, telnyx_world
from tests.world import World

__all__ = ["fake_telnyx", "telnyx_proxy", "telnyx_world"]  # fixtures used below


async def _post(world: World, path: str, raw: bytes,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {api_key(world)}", "Content-Type": "application/json",
            **(headers or {})}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(f"{world.base}{path}", headers=hdrs, data=raw)
        return resp.status, await resp.json(content_type=None)


async def _decisions(world: World, pool: asyncpg.Pool) -> int:
    await world.committed()
    found: int = await pool.fetchval("SELECT count(*) FROM decisions")
    return found


# A JSON escape of half a UTF-16 pair is valid JSON ASCII but no writable text: it must be
# refused before anything is decided, never reach the store, the upstream or an error body.
@pytest.mark.parametrize(("path", "template"), [
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "hoi \\ud800"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s\\udfff", "text": "hoi"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "x", '
                     b'"webhook_url": "https://a/\\ud83d"}'),
    ("/v2/messages", b'{"to": "%(to)s", "from": "%(sms)s", "text": "x", "\\ud800": 1}'),
    ("/v2/messages", b'{"\\ud800": 1, "\\ud800": 2}'),
    ("/v2/calls", b'{"to": "%(to)s", "from": "%(voice)s", "connection_id": "c\\ud800"}'),
    ("/v2/calls", b'{"to": "%(to)s", "from": "%(voice)s", "connection_id": "c", '
                  b'"custom_headers": [{"name": "X-A", "value": "\\udc00"}]}'),
])
async def test_lone_surrogates_are_refused_before_deciding(
        telnyx_world: World, fake_telnyx: FakeTelnyx, pool: asyncpg.Pool, path: str,
        template: bytes) -> None:
    number = mobile()
    await telnyx_world.consent(number, "sms" if path == "/v2/messages" else "voice")
    before = await _decisions(telnyx_world, pool)
    raw = template % {b"to": number.encode(), b"sms": telnyx_world.sms.encode(),
                      b"voice": telnyx_world.voice.encode()}
    status, answer = await _post(telnyx_world, path, raw)
    assert status == 400, answer
    assert answer["errors"][0]["code"] == "10015"
    assert await _decisions(telnyx_world, pool) == before
    assert fake_telnyx.received == []
