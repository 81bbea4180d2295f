"""A fast fake Twilio upstream for the benchmarks: `python -m bench.upstream --port N …`.

It answers message and call creates with a Twilio-shaped 201 and a fresh SID, checking only
Basic auth and the AccountSid in the path. tests/fake_twilio.py validates every request against
the API spec, which is right for tests and far too slow to sit behind a load run: this one must
never be the bottleneck.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import secrets
from collections.abc import Sequence

import uvloop
from aiohttp import web

from bench.load import basic_auth

API = "/2010-04-01/Accounts/{account_sid}/{kind:Messages|Calls}.json"


def _unauthorized() -> web.Response:
    return web.json_response({"code": 20003, "message": "Authenticate", "status": 401,
                              "more_info": "https://www.twilio.com/docs/errors/20003"},
                             status=401)


def _resource(kind: str, account_sid: str, form: dict[str, str]) -> dict[str, object]:
    sid = ("SM" if kind == "Messages" else "CA") + secrets.token_hex(16)
    now = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    return {
        "sid": sid, "account_sid": account_sid, "to": form.get("To"), "from": form.get("From"),
        "body": form.get("Body"), "status": "queued", "num_segments": "1", "num_media": "0",
        "direction": "outbound-api", "api_version": "2010-04-01", "price": None,
        "price_unit": "EUR", "error_code": None, "error_message": None, "date_created": now,
        "date_updated": now, "date_sent": None, "messaging_service_sid": None,
        "uri": f"/2010-04-01/Accounts/{account_sid}/{kind}/{sid}.json",
    }


def create_app(account_sid: str, auth_token: str) -> web.Application:
    # Compared as one string: the cheapest check that still refuses wrong credentials.
    expected = basic_auth(account_sid, auth_token)

    async def create(request: web.Request) -> web.Response:
        if (request.headers.get("Authorization") != expected
                or request.match_info["account_sid"] != account_sid):
            return _unauthorized()
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        return web.json_response(_resource(request.match_info["kind"], account_sid, form),
                                 status=201)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post(API, create)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--auth-token", required=True)
    args = parser.parse_args(argv)
    web.run_app(create_app(args.account_sid, args.auth_token), host="127.0.0.1",
                port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())  # the same loop as the servers it answers


if __name__ == "__main__":
    main()
