"""The Twilio front's own application keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.fronts.twilio.upstream import Upstream

# Where allowed creates and pass-through requests go: Twilio, or the sandbox.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("twilio_upstream")
# Outgoing HTTP other than the provider: the dialer's own URLs (relays, inbound SMS).
HTTP = web.AppKey("twilio_http", aiohttp.ClientSession)
