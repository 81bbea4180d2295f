"""The Twilio front's name and its own application keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.fronts.twilio.upstream import Upstream

# Its decision rows' `front`, its inbound messages' and objections' provider (sql/014, 018).
NAME = "twilio"
# Where allowed creates and pass-through requests go: Twilio, or the sandbox.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("twilio_upstream")
# Outgoing HTTP other than the provider: the dialer's own URLs (relays, inbound SMS).
HTTP = web.AppKey("twilio_http", aiohttp.ClientSession)
