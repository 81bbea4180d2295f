"""Shared scaffolding for end-to-end tests: an organisation, its senders and a dialer."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp.test_utils import TestClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from proxy.keys import WRITER
from tests.conftest import uid

A = "/admin/v1"
T = TypeVar("T")


@dataclass
class World:
    """One organisation with a voice and an SMS sender, and a dialer's credentials."""

    base: str
    org: str
    voice: str
    sms: str
    sid: str
    token: str
    admin: TestClient[Any, Any]
    auth: dict[str, str]

    def sdk(self) -> TwilioClient:
        client = TwilioClient(self.sid, self.token)
        client.api.base_url = self.base
        return client

    def async_sdk(self) -> TwilioClient:
        client = TwilioClient(self.sid, self.token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = self.base
        return client

    async def consent(self, number: str, channel: str, **extra: Any) -> int:
        body = {"subject": number, "organisation": self.org, "channel": channel,
                "topics": ["energy"], "kind": "opt_in",
                "given_at": "2026-10-01T12:00:00+02:00",
                "verified_at": "2026-10-01T12:05:00+02:00", "provenance": "self_provided",
                **extra}
        resp = await self.admin.post(f"{A}/consents", json=body, headers=self.auth)
        assert resp.status == 201, await resp.text()
        consent_id: int = (await resp.json())["id"]
        return consent_id

    async def committed(self) -> None:
        """Wait until the outcomes of answered requests are committed: an answer does not
        wait for its outcome row (proxy/writer.py)."""
        await self.admin.app[WRITER].sync()

    async def objection(self, number: str, **extra: Any) -> None:
        body = {"subject": number, "via": "api", "received_at": "2026-11-01T10:00:00+01:00",
                **extra}
        resp = await self.admin.post(f"{A}/objections", json=body, headers=self.auth)
        assert resp.status == 201


# Senders are registered once per database: numbers drawn at random clashed now and then (a
# 409 in make_world). A counter from a random start gives each world of the run its own.
_LANDLINES = itertools.count(random.randrange(10**6, 5 * 10**6))


def landline() -> str:
    return f"+3120{next(_LANDLINES)}"


async def make_world(admin: TestClient[Any, Any], auth: dict[str, str],
                     footer: str | None = None) -> World:
    org = uid()
    body: dict[str, Any] = {"id": org, "name": "Energie BV", "sector": "commercial"}
    if footer:
        body["sms_footer"] = footer
    assert (await admin.post(f"{A}/organisations", json=body, headers=auth)).status == 201
    voice, text = landline(), landline()
    for sender in (voice, text):
        resp = await admin.post(f"{A}/senders", json={
            "sender": sender, "organisation": org, "topic": "energy/electricity"}, headers=auth)
        assert resp.status == 201
    resp = await admin.post(f"{A}/clients", json={"name": "Dialer", "organisations": [org]},
                            headers=auth)
    creds = await resp.json()
    base = str(admin.make_url("")).rstrip("/")
    return World(base, org, voice, text, creds["account_sid"], creds["auth_token"], admin, auth)


async def in_thread(fn: Callable[[], T]) -> T:
    """The sync SDK blocks on `requests`; run it beside the event loop serving the proxy."""
    return await asyncio.to_thread(fn)


def write_config(tmp_path: Path, timeout: float = 10) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(f"[upstream]\ntimeout_seconds = {timeout}\n")
    return str(path)


