"""Typed application keys: the resources every handler may reach through `request.app`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
from aiohttp import web

from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.checkpoints import Checkpointer
    from proxy.clients import ClientDirectory
    from proxy.metrics import Metrics
    from proxy.optout_spool import OptOutSpool, SpoolDrain
    from proxy.reader import GroupFetch
    from proxy.upstream import Upstream
    from proxy.workers import Workers
    from proxy.writer import GroupCommit

Clock = Callable[[], dt.datetime]

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CLIENTS: web.AppKey[ClientDirectory] = web.AppKey("clients")
REQUEST_ID = web.RequestKey("request_id", str)
# Outgoing HTTP other than the provider (relayed webhooks).
HTTP = web.AppKey("http", aiohttp.ClientSession)
WRITER: web.AppKey[GroupCommit] = web.AppKey("writer")
READER: web.AppKey[GroupFetch] = web.AppKey("reader")
WORKERS: web.AppKey[Workers] = web.AppKey("workers")
OPTOUT_SPOOL: web.AppKey[OptOutSpool] = web.AppKey("optout_spool")
SPOOL_DRAIN: web.AppKey[SpoolDrain] = web.AppKey("spool_drain")
CHECKPOINTS: web.AppKey[Checkpointer] = web.AppKey("checkpoints")
