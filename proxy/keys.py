"""Typed application keys: the resources every handler may reach through `request.app`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import asyncpg
from aiohttp import web

from proxy.settings import Settings

Clock = Callable[[], dt.datetime]

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
