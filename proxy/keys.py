"""Typed application keys: the resources every handler may reach through `request.app`. Keys
of one front's own (its upstream, say) live in that front."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from proxy.gate.values import Clock
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.checkpoints import Checkpointer
    from proxy.clients import ClientDirectory
    from proxy.gate import Gate
    from proxy.metrics import Metrics
    from proxy.optout_spool import OptOutSpool, SpoolDrain
    from proxy.reader import GroupFetch
    from proxy.workers import Workers
    from proxy.writer import GroupCommit

__all__ = ["CHECKPOINTS", "CLIENTS", "CLOCK", "DRAINING", "GATE", "METRICS", "OPTOUT_SPOOL", "POOL",
           "READER", "REQUEST_ID", "SETTINGS", "SPOOL_DRAIN", "WORKERS", "WRITER", "Clock"]

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
CLIENTS: web.AppKey[ClientDirectory] = web.AppKey("clients")
REQUEST_ID = web.RequestKey("request_id", str)
# The provider-neutral steps of every gated request (proxy/gate/), built at start-up.
GATE: web.AppKey[Gate] = web.AppKey("gate")
WRITER: web.AppKey[GroupCommit] = web.AppKey("writer")
READER: web.AppKey[GroupFetch] = web.AppKey("reader")
WORKERS: web.AppKey[Workers] = web.AppKey("workers")
OPTOUT_SPOOL: web.AppKey[OptOutSpool] = web.AppKey("optout_spool")
SPOOL_DRAIN: web.AppKey[SpoolDrain] = web.AppKey("spool_drain")
CHECKPOINTS: web.AppKey[Checkpointer] = web.AppKey("checkpoints")
# Set on SIGTERM (cli.py serve): /readyz answers 503 and connections are not kept alive.
DRAINING = web.AppKey("draining", asyncio.Event)
