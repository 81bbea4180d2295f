"""The CM.com front's name and its own application keys."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from proxy.fronts.cm.settings import CmSettings
from proxy.fronts.cm.upstream import Upstream

# Its decision rows' `front`, its inbound messages' and objections' provider (sql/014, 018).
NAME = "cm"
# Where allowed messages go: CM, or the sandbox.
UPSTREAM: web.AppKey[Upstream] = web.AppKey("cm_upstream")
CM_SETTINGS = web.AppKey("cm_settings", CmSettings)
# Outgoing HTTP other than CM: the sender's own webhook for relayed inbound messages.
HTTP = web.AppKey("cm_http", aiohttp.ClientSession)
