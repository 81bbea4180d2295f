"""The Vonage front beside the Twilio front: one allowed SMS after another through each, on
their built-in sandboxes (no upstream), the app and an aiohttp client in one process, one
connection. What the Vonage front adds or saves against the Twilio front's create, not a
load test.

    .venv/bin/python -m bench.vonage_front [--requests N]

Uses DATABASE_URL, else the local server on 127.0.0.1:5432, with a throw-away database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from proxy import db
from proxy.app import create_app
from proxy.logging import configure_logging
from proxy.settings import load_settings

SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN = "bench-admin-token-0123456789"
SENDER = "+31201234567"


async def _setup(session: aiohttp.ClientSession, numbers: list[str]) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    org = "org-" + uuid.uuid4().hex[:8]
    await session.post("/admin/v1/organisations", json={
        "id": org, "name": "Energie BV", "sector": "commercial"}, headers=auth)
    await session.post("/admin/v1/senders", json={
        "sender": SENDER, "organisation": org, "topic": "energy/electricity"}, headers=auth)
    client: dict[str, Any] = await (await session.post("/admin/v1/clients", json={
        "name": "bench", "organisations": [org]}, headers=auth)).json()
    for number in numbers:
        resp = await session.post("/admin/v1/consents", json={
            "subject": number, "organisation": org, "channel": "sms", "topics": ["energy"],
            "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
            "verified_at": "2026-10-01T12:05:00+02:00", "provenance": "self_provided"},
            headers=auth)
        assert resp.status == 201
    return client


async def _vonage(session: aiohttp.ClientSession, client: dict[str, Any], number: str) -> None:
    resp = await session.post("/sms/json", data={
        "api_key": client["client_id"], "api_secret": client["auth_token"],
        "to": number.removeprefix("+"), "from": SENDER.removeprefix("+"), "text": "Hallo"})
    assert (await resp.json())["messages"][0]["status"] == "0"


async def _twilio(session: aiohttp.ClientSession, client: dict[str, Any], number: str) -> None:
    sid = client["client_id"]
    resp = await session.post(
        f"/2010-04-01/Accounts/{sid}/Messages.json",
        data={"To": number, "From": SENDER, "Body": "Hallo"},
        headers={"Authorization": aiohttp.encode_basic_auth(sid, client["auth_token"])})
    await resp.read()
    assert resp.status == 201


async def main(requests: int) -> None:
    configure_logging("warning")
    name = f"cp_bench_vonage_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = SERVER.rsplit("/", 1)[0] + "/" + name
    try:
        await db.migrate_url(url)
        settings = load_settings({
            "DATABASE_URL": url, "ADMIN_TOKEN": ADMIN, "PROXY_SECRET": "bench-" + "x" * 32,
            "LOG_LEVEL": "warning",
            "OPTOUT_SPOOL_DIR": f"/tmp/{name}-spool"})  # noqa: S108 - a throw-away spool
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        numbers = [f"+3161{i:07d}" for i in range(requests)]
        async with aiohttp.ClientSession(
                base, connector=aiohttp.TCPConnector(limit=1)) as session:
            client = await _setup(session, numbers)
            fronts = {"vonage": _vonage, "twilio": _twilio}
            times: dict[str, list[float]] = {front: [] for front in fronts}
            # Interleaved, each front first every other time: a warming cache or a growing
            # table favours neither.
            for i, number in enumerate(numbers):
                for front in (("vonage", "twilio") if i % 2 else ("twilio", "vonage")):
                    started = time.perf_counter()
                    await fronts[front](session, client, number)
                    times[front].append((time.perf_counter() - started) * 1000)
            for front, taken in times.items():
                taken.sort()
                print(f"{front}: {requests} allowed SMS, p50 {statistics.median(taken):.2f} ms, "
                      f"p99 {taken[int(0.99 * len(taken)) - 1]:.2f} ms")
        await runner.cleanup()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    asyncio.run(main(parser.parse_args().requests))
