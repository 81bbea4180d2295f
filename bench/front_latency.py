"""One-connection latency of an allowed SMS through the Twilio front and the Telnyx front:
`python -m bench.front_latency [--requests N]`.

Everything in one process on one event loop: a fresh database on the server `make test` uses,
the proxy (create_app, both fronts pointed at minimal fake upstreams that answer at once), and
one client sending allowed SMS one after another, alternating Twilio and Telnyx, each to its
own consented number. It compares the two fronts' own cost on the same gate; the client's
work is in both numbers alike. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
import uuid
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from bench import upstream as twilio_upstream
from bench.load import basic_auth
from bench.pg import scratch_database, server_url
from bench.seed import seed_admin
from proxy import credentials, db
from proxy.app import create_app
from proxy.logging import configure_logging
from proxy.settings import load_settings

ADMIN = "bench-admin-token-0123456789"
UP_SID, UP_TOKEN, UP_KEY = "AC" + "e" * 32, "bench-up-token", "KEYbench"


def telnyx_upstream() -> web.Application:
    async def send(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {UP_KEY}":
            return web.json_response({"errors": [{"code": "10009"}]}, status=401)
        body = await request.json()
        return web.json_response({"data": {"record_type": "message", "id": str(uuid.uuid4()),
                                           "to": [{"phone_number": body["to"]}],
                                           "text": body["text"]}})

    app = web.Application()
    app.router.add_post("/v2/messages", send)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


async def run(requests: int) -> None:
    configure_logging("warning")  # the request log is not what is compared
    server, _where = await server_url()
    async with scratch_database(server) as url:
        await db.migrate_url(url)
        runners = []
        runner, twilio_base = await _serve(twilio_upstream.create_app(UP_SID, UP_TOKEN))
        runners.append(runner)
        runner, telnyx_base = await _serve(telnyx_upstream())
        runners.append(runner)
        settings = load_settings({
            "DATABASE_URL": url, "ADMIN_TOKEN": ADMIN, "PROXY_SECRET": "bench-secret-" + "x" * 20,
            "LOG_LEVEL": "warning", "TWILIO_ACCOUNT_SID": UP_SID, "TWILIO_AUTH_TOKEN": UP_TOKEN,
            "TWILIO_API_BASE": twilio_base, "TELNYX_API_KEY": UP_KEY,
            "TELNYX_API_BASE": f"{telnyx_base}/v2"})
        runner, proxy = await _serve(create_app(settings))
        runners.append(runner)
        try:
            dialer = await seed_admin(proxy, ADMIN)
            numbers = [f"+3161{i:07d}" for i in range(2 * requests + 40)]
            given = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
                for number in numbers:
                    async with admin.post(f"{proxy}/admin/v1/consents", json={
                            "subject": number, "organisation": "bench-energie",
                            "channel": "sms", "topics": ["energy"], "kind": "opt_in",
                            "given_at": given, "verified_at": given,
                            "provenance": "self_provided"}) as resp:
                        assert resp.status == 201, await resp.text()
            key = credentials.api_key(dialer.account_sid, dialer.auth_token)
            twilio_auth = basic_auth(dialer.account_sid, dialer.auth_token)
            times: dict[str, list[float]] = {"twilio": [], "telnyx": []}
            connector = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=connector) as session:
                for i in range(requests + 20):
                    for front in ("twilio", "telnyx"):
                        number = numbers.pop()
                        started = time.perf_counter()
                        if front == "twilio":
                            resp = await session.post(
                                f"{proxy}{dialer.messages_path}",
                                data={"To": number, "From": "+31201234567", "Body": "Hallo"},
                                headers={"Authorization": twilio_auth})
                        else:
                            resp = await session.post(
                                f"{proxy}/v2/messages", json={
                                    "to": number, "from": "+31201234567", "text": "Hallo"},
                                headers={"Authorization": f"Bearer {key}"})
                        await resp.read()
                        elapsed = time.perf_counter() - started
                        assert resp.status in (200, 201), (front, resp.status)
                        if i >= 20:  # the first 20 of each warm up
                            times[front].append(elapsed)
            for front, values in times.items():
                print(f"{front:7} n={len(values)} p50={_percentile(values, 50):.2f} ms "
                      f"p95={_percentile(values, 95):.2f} ms")
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
