"""The gated Telnyx creates under a seeded stream of hostile JSON bodies: real proxy, real
PostgreSQL, the fake Telnyx upstream.

Whatever arrives: never a 5xx; a request refused by validation stores no decision; nothing
reaches the upstream unless it was allowed, and then the sender gets the upstream's answer."""

from __future__ import annotations

import json
import random
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from proxy.fronts.telnyx.fields import CALL_FIELDS, MESSAGE_FIELDS
from tests.conftest import mobile
from tests.fake_telnyx import FakeTelnyx
from tests.telnyx_fixtures import api_key, fake_telnyx, telnyx_proxy, telnyx_world
from tests.world import World

__all__ = ["fake_telnyx", "telnyx_proxy", "telnyx_world"]  # fixtures used below

ROUNDS = 150  # per route
FULL_WIDTH = "".join(chr(0xFF10 + int(d)) for d in "0612345678")  # a look-alike 0612345678
ODD_STRINGS = ["", " ", "\x00", "+31 6 1234 5678", FULL_WIDTH, "'; DROP TABLE x;--",
               "\r\nX-Injected: 1", "a" * 5000, "sip:x@y", "+316123456789012345", "NaN",
               "🎉" * 40, "STOP", "\ud800"]


def _value(rng: random.Random, world: World, number: str, depth: int = 0) -> Any:
    kind = rng.randrange(11 if depth < 3 else 7)
    if kind == 0:
        return number
    if kind == 1:
        return rng.choice([world.sms, world.voice])
    if kind == 2:
        return rng.choice(ODD_STRINGS)
    if kind == 3:
        return rng.choice([0, -1, 2**63, 2**64, 1.5, 1e308, -(2**70)])
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5:
        return "Hallo " * rng.randrange(1, 300)
    if kind == 6:
        return "https://dialer.example/" + str(rng.randrange(100))
    if kind in (7, 8):
        return [_value(rng, world, number, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["name", "value", "x"]): _value(rng, world, number, depth + 1)
            for _ in range(rng.randrange(3))}


def _body(rng: random.Random, world: World, number: str, known: frozenset[str]) -> bytes:
    names = [*sorted(known), "To", "to ", "from_", "cc", "send_at", "__proto__"]
    body: dict[str, Any] = {}
    core = ("to", "from", "text") if "text" in known else ("to", "from", "connection_id")
    for name in core:
        if rng.random() < 0.85:
            body[name] = _value(rng, world, number) if rng.random() < 0.3 else (
                number if name == "to" else world.sms if name == "from" and "text" in known
                else world.voice if name == "from" else "c" if name == "connection_id"
                else "Hallo")
    for _ in range(rng.randrange(4)):
        body[rng.choice(names)] = _value(rng, world, number)
    raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.1 and len(body) > 1:  # a key twice
        first = next(iter(body))
        raw = raw[:-1] + b', "' + first.encode() + b'": "+31612345678"}'
    return raw


async def _run(world: World, proxy: TestClient[Any, Any], fake: FakeTelnyx,
               pool: asyncpg.Pool, path: str, known: frozenset[str], channel: str,
               seed: int) -> None:
    rng = random.Random(seed)
    number = mobile()
    await world.consent(number, channel)
    headers = {"Authorization": f"Bearer {api_key(world)}", "Content-Type": "application/json"}
    statuses: set[int] = set()
    for _ in range(ROUNDS):
        raw = _body(rng, world, number, known)
        before = await pool.fetchval("SELECT count(*) FROM decisions")
        sent = len(fake.received)
        resp = await proxy.post(path, data=raw, headers=headers)
        answer = await resp.json(content_type=None)
        statuses.add(resp.status)
        assert resp.status < 500, (raw[:300], answer)
        assert "errors" in answer or resp.status == 200, answer
        decided = await pool.fetchval("SELECT count(*) FROM decisions") - before
        forwarded = len(fake.received) - sent
        if forwarded:  # the fake is as strict as Telnyx: what goes out must pass it
            assert (resp.status, decided) == (200, 1), (raw[:300], answer)
            assert "data" in answer
            assert fake.received[-1].json["to"] == number
            continue
        error = answer["errors"][0]
        reason = error.get("meta", {}).get("reason")
        if error["code"] in ("10004", "10014", "10015", "10016", "930052") and (
                reason != "OPT_OUT_FOOTER_DOES_NOT_FIT"):
            assert decided == 0, (raw[:300], answer)  # refused before anything is decided
        else:
            assert decided == 1, (raw[:300], answer)  # a denial: exactly one row
            assert isinstance(error["meta"]["decision_id"], int) or reason == (
                "OPT_OUT_FOOTER_DOES_NOT_FIT")
    assert 200 in statuses  # the stream reached the upstream too
    assert statuses & {400, 422}  # and the validation


async def test_fuzzed_messages(telnyx_world: World, telnyx_proxy: TestClient[Any, Any],
                               fake_telnyx: FakeTelnyx, pool: asyncpg.Pool) -> None:
    await _run(telnyx_world, telnyx_proxy, fake_telnyx, pool, "/v2/messages",
               MESSAGE_FIELDS, "sms", 17)


async def test_fuzzed_calls(telnyx_world: World, telnyx_proxy: TestClient[Any, Any],
                            fake_telnyx: FakeTelnyx, pool: asyncpg.Pool) -> None:
    await _run(telnyx_world, telnyx_proxy, fake_telnyx, pool, "/v2/calls", CALL_FIELDS,
               "voice", 23)
