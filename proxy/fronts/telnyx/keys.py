"""The Telnyx front's name and its own application keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.fronts.telnyx.settings import TelnyxSettings
from proxy.fronts.telnyx.upstream import Upstream

# Its decision rows' `front`, its inbound messages' provider and its metrics label (sql/018).
NAME = "telnyx"
# Where allowed creates and pass-through requests go: Telnyx, or the sandbox.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("telnyx_upstream")
# Its configuration, read from the environment when the front is mounted.
CONFIG: web.AppKey[TelnyxSettings] = web.AppKey("telnyx_settings")
# Outgoing HTTP other than Telnyx: relays of inbound messages to the sender's own webhook.
HTTP = web.AppKey("telnyx_http", aiohttp.ClientSession)
