"""The Vonage front's name and its own application keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.fronts.vonage.settings import VonageSettings
from proxy.fronts.vonage.upstream import Upstream

# Its decision rows' `front`, its inbound messages' provider, its metrics label (sql/018).
NAME = "vonage"
# Where allowed sends and calls go: Vonage, or the sandbox.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("vonage_upstream")
CONFIG: web.AppKey[VonageSettings] = web.AppKey("vonage_settings")
# Outgoing HTTP other than the provider: the senders' own inbound webhooks (relays).
HTTP = web.AppKey("vonage_http", aiohttp.ClientSession)
