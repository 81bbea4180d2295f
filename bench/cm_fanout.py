"""How long one CM.com send takes as its recipients grow: each recipient is its own decision.

    .venv/bin/python -m bench.cm_fanout [--rounds 5]

The app in-process on a real port (the CM front's built-in sandbox as upstream, so only the
proxy is measured), a scratch database on the server `make test` uses, one organisation, its
sender and a client; every recipient has a verified SMS consent. For 1, 10, 100 and 1,000
recipients in one `msg`, the median wall time of `POST /v1.0/message` over the rounds, and the
decisions per second that makes. Not part of `make bench`: a single-front measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from bench.pg import scratch_database, server_url
from bench.services import REPO
from proxy import credentials, db
from proxy.app import create_app
from proxy.logging import configure_logging
from proxy.settings import load_settings

ADMIN = "bench-admin-token-0123456789"
SECRET = "bench-proxy-secret-0123456789abcdef"  # noqa: S105 (a scratch run's)
SIZES = (1, 10, 100, 1000)


async def _setup(session: aiohttp.ClientSession, base: str, count: int
                 ) -> tuple[str, str, list[str]]:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    a = base + "/admin/v1"

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with session.post(a + path, json=body, headers=auth) as resp:
            assert resp.status in (200, 201), await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    await post("/organisations", {"id": "bench-cm", "name": "Bench BV",
                                  "sector": "commercial"})
    await post("/senders", {"sender": "+31201110000", "organisation": "bench-cm",
                            "topic": "energy"})
    client = await post("/clients", {"name": "bench", "organisations": ["bench-cm"]})
    numbers = [f"+3161{i:07d}" for i in range(count)]
    limit = asyncio.Semaphore(16)

    async def consent(number: str) -> None:
        async with limit:
            await post("/consents", {
                "subject": number, "organisation": "bench-cm", "channel": "sms",
                "topics": ["energy"], "kind": "opt_in", "given_at": "2026-01-01T00:00:00Z",
                "verified_at": "2026-01-01T00:05:00Z", "provenance": "self_provided"})

    await asyncio.gather(*(consent(n) for n in numbers))
    key = credentials.api_key(client["client_id"], client["auth_token"])
    return key, "+31201110000", numbers


async def main(rounds: int) -> dict[str, Any]:
    configure_logging("warning")
    server, _where = await server_url()
    async with scratch_database(server) as url:
        await db.migrate_url(url)
        env = {"DATABASE_URL": url, "ADMIN_TOKEN": ADMIN, "PROXY_SECRET": SECRET,
               "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml"),
               "OPTOUT_SPOOL_DIR": tempfile.mkdtemp(prefix="cm-bench-spool-"),
               "LOG_LEVEL": "warning"}
        app = create_app(load_settings(env))
        async with TestServer(app) as http, aiohttp.ClientSession() as session:
            base = str(http.make_url("")).rstrip("/")
            key, sender, numbers = await _setup(session, base, max(SIZES))
            results: dict[str, Any] = {}
            for size in SIZES:
                body = json.dumps({"messages": {"authentication": {"producttoken": key},
                                   "msg": [{"from": sender, "body": {"content": "Bench"},
                                            "to": [{"number": n} for n in numbers[:size]]}]}})
                times = []
                for _ in range(rounds + 1):  # the first round warms up
                    started = time.perf_counter()
                    async with session.post(base + "/v1.0/message", data=body,
                                            headers={"Content-Type": "application/json"}
                                            ) as resp:
                        answer = await resp.json()
                    times.append(time.perf_counter() - started)
                    assert resp.status == 200, answer
                    assert answer["details"] == f"Created {size} message(s)", answer
                median = statistics.median(times[1:])
                results[str(size)] = {"median_ms": round(median * 1000, 1),
                                      "decisions_per_s": round(size / median)}
            return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args().rounds)), indent=2))
