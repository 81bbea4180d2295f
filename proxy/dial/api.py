"""`POST /dial/v1/decisions` and `POST /dial/v1/decisions/{id}/outcome`: a SIP dialer asks the
gate at dial time and places the call itself; nothing is forwarded. The HTTP side only: the
decision and the outcome are `decisions.py`'s, shared with FastAGI.
"""

from __future__ import annotations

from aiohttp import web

from proxy.dial import answer, decisions
from proxy.dial.request import authenticate, decision_id, dial_request, outcome_status
from proxy.keys import CLOCK, REQUEST_ID

PREFIX = "/dial/v1"
FRONT_NAME = "dial"  # the decision rows' `front` (sql/018)


def is_dial_route(request: web.Request) -> bool:
    return request.path.startswith(PREFIX + "/")


error_response = answer.error_response


async def decide(request: web.Request) -> web.Response:
    client = await authenticate(request)
    dial = await dial_request(request)
    decided = await decisions.decide(request.app, client, dial, request.get(REQUEST_ID),
                                     FRONT_NAME)
    return answer.render(decided.answer, request.app[CLOCK]())


async def outcome(request: web.Request) -> web.Response:
    client = await authenticate(request)
    wanted = decision_id(request)
    status = await outcome_status(request)
    stored = await decisions.record_outcome(request.app, client, wanted, status)
    return web.json_response({"decision_id": wanted, "status": stored})


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/decisions", decide)
    app.router.add_post(PREFIX + r"/decisions/{decision_id:\d+}/outcome", outcome)
