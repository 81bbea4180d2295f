"""A gate (re)started while PostgreSQL cannot be reached: during a failover, a deploy or a
restart after a crash. It starts all the same and fails closed, as a running gate does (503 in
the caller's protocol, /readyz 503), instead of exiting, which would leave the balancer nothing
to answer with but a page of its own, or with a restart loop. Once the database answers it
applies what migrations are pending and becomes ready by itself.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest

from proxy.gate.codes import DENIAL_CODES
from tests.test_faults import EmbeddedPostgres, start_proxy, wait_ready

UNAVAILABLE = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]  # (503, 930503)


async def test_a_gate_started_in_an_outage_fails_closed_then_becomes_ready(
        tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="consent-proxy-pg-"))
    pg = await asyncio.to_thread(EmbeddedPostgres, base / "pg")  # a new database: nothing
    gate = None
    try:
        await asyncio.to_thread(pg.stop)
        gate = start_proxy(tmp_path, DATABASE_URL=pg.url)
        async with aiohttp.ClientSession() as session:
            async def answers() -> bool:
                if gate.proc.poll() is not None:
                    pytest.fail(f"the gate exited ({gate.proc.returncode}): "
                                f"{gate.stderr.read_text()[-1500:]}")
                try:
                    async with session.get(f"{gate.base}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(600):
                if await answers():
                    break
                await asyncio.sleep(0.1)
            async with session.get(f"{gate.base}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "unavailable"
            sid = "AC" + "1" * 32
            async with session.post(
                    f"{gate.base}/2010-04-01/Accounts/{sid}/Messages.json",
                    headers={"Authorization": aiohttp.encode_basic_auth(sid, "x" * 32)},
                    data={"To": "+31612345678", "From": "+3197010000000", "Body": "Hoi"}) as resp:
                body = await resp.json()
                assert (resp.status, body["code"], body["status"]) == (
                    503, UNAVAILABLE[1], 503), body
            await asyncio.to_thread(pg.start)
            await wait_ready(gate, timeout=120)  # migrated by itself, then ready
        events = [e["event"] for e in gate.events()]
        assert "migrations_deferred" in events
        assert "migration_applied" in events
    finally:
        if gate is not None:
            gate.kill()
        await asyncio.to_thread(pg.destroy)
        shutil.rmtree(base, ignore_errors=True)


