"""The baseline of item 1: a bare pass-through forwarder, `python -m bench.bare_forwarder …`.

The same stack as consent-proxy (aiohttp server, one pooled aiohttp ClientSession with the
connector and timeout of `_upstream_ctx` in proxy/fronts/twilio/mount.py) doing only what any
forwarder must: swap the AccountSid and Basic auth, forward the form, return the upstream
answer with the client's AccountSid swapped back. No authentication, no checks, no database,
no log lines: whatever consent-proxy costs on top of this is the price of the gate.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence

import aiohttp
import uvloop
from aiohttp import web

from bench.load import basic_auth

API = "/2010-04-01/Accounts/{account_sid}/{kind:Messages|Calls}.json"
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_TIMEOUT = 10.0  # upstream.timeout_seconds default, as the proxy runs in the bench


def create_app(base: str, account_sid: str, auth_token: str) -> web.Application:
    authorization = basic_auth(account_sid, auth_token)
    upstream_sid = account_sid.encode()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT),
        ) as session:
            app[SESSION] = session
            yield

    async def forward(request: web.Request) -> web.Response:
        client_sid = request.match_info["account_sid"]
        body = await request.read()
        url = f"{base}/2010-04-01/Accounts/{account_sid}/{request.match_info['kind']}.json"
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json", "User-Agent": "bare-forwarder",
                   "Authorization": authorization}
        async with request.app[SESSION].post(url, data=body, headers=headers,
                                             allow_redirects=False) as resp:
            raw = await resp.read()
            content_type = resp.headers.get("Content-Type", "application/json")
            status = resp.status
        response = web.Response(status=status,
                                body=raw.replace(upstream_sid, client_sid.encode()))
        response.headers["Content-Type"] = content_type
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post(API, forward)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    args = parser.parse_args(argv)
    web.run_app(create_app(args.upstream.rstrip("/"), args.account_sid, args.auth_token),
                host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())  # same event loop as consent-proxy (proxy/cli.py)


if __name__ == "__main__":
    main()
