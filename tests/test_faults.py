"""Faults caused for real, against real processes: PostgreSQL stopped under load, an upstream
that refuses, hangs or fails, SIGTERM in the middle of traffic, and slow or oversized clients.

Nothing is mocked: the proxy is either `consent-proxy serve` in a subprocess or the app on a
real port, PostgreSQL is a real server (a dedicated embedded one where it gets stopped), and
the upstream is tests/fake_twilio.py on a real port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from proxy import db
from proxy.app import create_app
from proxy.fronts.twilio import webhooks
from proxy.settings import ConfigError, load_rules, parse_rules
from tests.conftest import (
    ADMIN_TOKEN,
    PROXY_SECRET,
    REPO,
    UP_SID,
    UP_TOKEN,
    Clock,
    make_settings,
    mobile,
    uid,
)
from tests.fake_twilio import FakeTwilio
from tests.world import World, landline, make_world, write_config

A = "/admin/v1"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# proxy/fronts/twilio/upstream.py still uses aiohttp.BasicAuth, which aiohttp 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- helpers: a `consent-proxy serve` subprocess ------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ProxyProcess:
    """`consent-proxy serve` in a subprocess; its JSON log goes to a file (a pipe nobody
    reads would fill up under load and block the proxy)."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.read_text("utf-8", "replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_proxy(tmp_path: Path, **env: str) -> ProxyProcess:
    port = free_port()
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "PROXY_PORT": str(port), "PROXY_SECRET": PROXY_SECRET, "ADMIN_TOKEN": ADMIN_TOKEN,
            "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml"), "LOG_LEVEL": "info",
            **env}
    name = uuid.uuid4().hex[:6]
    stdout, stderr = tmp_path / f"proxy-{name}.out", tmp_path / f"proxy-{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], cwd=tmp_path,
                                env=full, stdout=out, stderr=err)
    return ProxyProcess(proc, port, stdout, stderr)


def upstream_env(fake: FakeTwilio) -> dict[str, str]:
    return {"TWILIO_ACCOUNT_SID": UP_SID, "TWILIO_AUTH_TOKEN": UP_TOKEN,
            "TWILIO_API_BASE": fake.base_url}


async def wait_ready(proxy: ProxyProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proxy.proc.poll() is not None:
                raise AssertionError(f"proxy exited early ({proxy.proc.returncode}): "
                                     f"{proxy.stderr.read_text()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{proxy.base}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("proxy did not become ready")


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# --- helpers: a dialer seeded through the admin API of a running proxy --------------------------

@dataclass
class Dialer:
    base: str
    sid: str
    token: str
    sender: str
    numbers: list[str]

    @property
    def messages_url(self) -> str:
        return f"{self.base}/2010-04-01/Accounts/{self.sid}/Messages.json"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(self.sid, self.token)}


async def admin_post(session: aiohttp.ClientSession, base: str, path: str,
                     body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(f"{base}{A}{path}", json=body, headers=ADMIN) as resp:
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def seed(session: aiohttp.ClientSession, base: str, count: int) -> Dialer:
    """An organisation with a marketing SMS sender, a dialer, and `count` numbers with a
    verified SMS opt-in (given two days ago: these proxies run on the real clock)."""
    org, sender = uid(), landline()
    await admin_post(session, base, "/organisations",
                     {"id": org, "name": "Energie BV", "sector": "commercial"})
    await admin_post(session, base, "/senders",
                     {"sender": sender, "organisation": org, "topic": "energy/electricity"})
    creds = await admin_post(session, base, "/clients",
                             {"name": "Dialer", "organisations": [org]})
    given = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    numbers = [mobile() for _ in range(count)]
    for number in numbers:
        await admin_post(session, base, "/consents", {
            "subject": number, "organisation": org, "channel": "sms", "topics": ["energy"],
            "kind": "opt_in", "given_at": given.isoformat(),
            "verified_at": (given + dt.timedelta(minutes=5)).isoformat(),
            "verification": "sms_code", "provenance": "self_provided"})
    return Dialer(base, creds["account_sid"], creds["auth_token"], sender, numbers)


async def send_sms(session: aiohttp.ClientSession, dialer: Dialer, number: str,
                   request_id: str) -> tuple[int, dict[str, Any]]:
    async with session.post(dialer.messages_url,
                            headers={**dialer.auth, "X-Request-Id": request_id},
                            data={"To": number, "From": dialer.sender,
                                  "Body": "Nieuw tarief!"}) as resp:
        return resp.status, await resp.json(content_type=None)


def assert_twilio_error(status: int, body: dict[str, Any], code: int) -> None:
    """Twilio's error shape, which the official SDKs turn into a TwilioRestException."""
    assert body["status"] == status, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert str(body["more_info"]).startswith("http")


# --- 1. PostgreSQL stopped under load ------------------------------------------------------------

class EmbeddedPostgres:
    """A dedicated embedded PostgreSQL (pgserver) that the test may stop and start again."""

    def __init__(self, data_dir: Path) -> None:
        from pgserver.postgres_server import PostgresServer

        self.url = db.start_embedded(data_dir)
        self._server = PostgresServer._instances[data_dir.resolve()]
        self.pgdata: Path = self._server.pgdata

    def _pg_ctl(self, *args: str) -> None:
        from pgserver import _commands

        # As pgserver does it: as the `pgserver` system user when running as root.
        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # created at import time
        pg_ctl(list(args), pgdata=self.pgdata, user=self._server.system_user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # `restart` on a stopped server starts it with the options of its previous run
        # (postmaster.opts: no TCP, the same unix-socket directory), so the URL stays valid.
        self._pg_ctl("-w", "-l", str(self.pgdata / "log"), "restart")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        self._server.cleanup()  # forgets the handle; the server is already stopped
        shutil.rmtree(self.pgdata, ignore_errors=True)


@dataclass
class Sent:
    request_id: str
    sent: float
    done: float
    status: int
    body: dict[str, Any]


async def test_postgres_stopped_under_load_fails_closed_and_recovers(tmp_path: Path) -> None:
    pg = await asyncio.to_thread(EmbeddedPostgres, tmp_path / "pg")
    try:
        await db.migrate_url(pg.url)
        async with FakeTwilio(UP_SID, UP_TOKEN) as fake:
            proxy = start_proxy(tmp_path, DATABASE_URL=pg.url, **upstream_env(fake))
            try:
                await wait_ready(proxy)
                await _postgres_down_and_up(proxy, pg, fake)
                proxy.proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proxy.proc.wait, 60)
            finally:
                proxy.kill()
            assert code == 0, proxy.stderr.read_text()
    finally:
        await asyncio.to_thread(pg.destroy)


async def _postgres_down_and_up(proxy: ProxyProcess, pg: EmbeddedPostgres,
                                fake: FakeTwilio) -> None:
    run = uuid.uuid4().hex[:8]
    pid = proxy.proc.pid
    results: list[Sent] = []
    stop_load = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        dialer = await seed(session, proxy.base, 8)

        async def worker(n: int) -> None:
            i = 0
            while not stop_load.is_set():
                request_id = f"pg-{run}-{n}-{i}"
                i += 1
                sent = time.monotonic()
                status, body = await send_sms(session, dialer, dialer.numbers[n], request_id)
                results.append(Sent(request_id, sent, time.monotonic(), status, body))
                await asyncio.sleep(0.005)

        async def readyz() -> tuple[int, dict[str, Any]]:
            async with session.get(f"{proxy.base}/readyz") as resp:
                return resp.status, await resp.json()

        workers = [asyncio.create_task(worker(n)) for n in range(8)]
        try:
            await asyncio.sleep(1.5)
            assert any(r.status == 201 for r in results), [r.body for r in results[:3]]

            await asyncio.to_thread(pg.stop)
            stopped_at = time.monotonic()
            # A request whose decision was committed just before the stop may still be on its
            # way upstream; after this pause nothing may reach the provider any more.
            await asyncio.sleep(0.5)
            forwarded_at_down = len(fake.creates())
            ready_while_down = []
            for _ in range(10):
                ready_while_down.append(await readyz())
                await asyncio.sleep(0.25)
            forwarded_while_down = len(fake.creates()) - forwarded_at_down
            restart_begun = time.monotonic()

            await asyncio.to_thread(pg.start)
            restarted_at = time.monotonic()
            ready_at: float | None = None
            ok_at: float | None = None
            while time.monotonic() < restarted_at + 20 and (ready_at is None or ok_at is None):
                if ready_at is None and (await readyz())[0] == 200:
                    ready_at = time.monotonic()
                ok_at = min((r.done for r in results
                             if r.status == 201 and r.sent >= restarted_at), default=None)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # traffic keeps flowing after the recovery
        finally:
            stop_load.set()
            await asyncio.gather(*workers)

    assert proxy.proc.poll() is None  # recovered without a restart
    assert proxy.proc.pid == pid
    down = [r for r in results if r.sent >= stopped_at and r.done <= restart_begun]
    print(f"\n[pg down/up] requests {len(results)}, while down {len(down)}, "
          f"readyz 200 after {ready_at and ready_at - restarted_at:.2f}s, first 201 after "
          f"{ok_at and ok_at - restarted_at:.2f}s (restart took "
          f"{restarted_at - restart_begun:.2f}s)")

    # While PostgreSQL is down: every gated request is refused unchecked, nothing goes out.
    assert len(down) >= 20
    for r in down:
        assert r.status == 503, (r.status, r.body)
        assert_twilio_error(503, r.body, 930503)
        assert r.body["reason"] == "CONSENT_STORE_UNAVAILABLE"
    assert forwarded_while_down == 0
    assert all(status == 503 and body["reason"] == "CONSENT_STORE_UNAVAILABLE"
               for status, body in ready_while_down), ready_while_down

    # It comes back by itself.
    assert ready_at is not None, "/readyz did not return to 200 within 20 s of the restart"
    assert ok_at is not None, "no create succeeded within 20 s of the restart"
    assert {r.status for r in results} <= {201, 503}, {r.status for r in results}
    events = proxy.events()
    assert not [e for e in events if e["event"] == "request_crashed"]

    # Nothing was forwarded without a committed decision row, nothing twice, and every 201
    # the dialer got is the resource the provider created.
    creates = fake.creates()
    forwarded = [int(r.headers["X-Consent-Decision-Id"]) for r in creates]
    assert len(forwarded) == len(set(forwarded))
    created = [r for r in results if r.status == 201]
    assert {r.body["sid"] for r in created} == set(fake.messages)
    # The store may fail between the provider's answer and the outcome row: the dialer still
    # gets the 201 (a 503 would make it send again) and the SID goes to the log instead.
    # An answer does not wait for its outcome row: the last ones are committed (or logged as
    # not recorded) just after the load stops.
    conn = await asyncpg.connect(pg.url)
    try:
        deadline = time.monotonic() + 10
        while True:
            events = proxy.events()
            not_recorded = {e["decision_id"]: e["sid"] for e in events
                            if e["event"] == "outcome_not_recorded"}
            rows = {r["request_id"]: r for r in await conn.fetch(
                """SELECT d.id, d.request_id, d.decision, o.upstream_status, o.upstream_sid
                   FROM decisions d LEFT JOIN decision_outcomes o ON o.decision_id = d.id""")}
            settled = all(r.request_id in rows and (
                rows[r.request_id]["upstream_sid"] is not None
                or rows[r.request_id]["id"] in not_recorded) for r in created)
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    by_id = {r["id"]: r for r in rows.values()}
    for decision_id in forwarded:
        assert by_id[decision_id]["decision"] == "allow"
    for r in created:
        row = rows[r.request_id]
        assert row["id"] in forwarded
        if row["id"] in not_recorded:
            assert not_recorded[row["id"]] == r.body["sid"]
        else:
            assert (row["upstream_status"], row["upstream_sid"]) == (201, r.body["sid"])
    for r in results:
        if r.status == 503 and r.request_id in rows:  # decided, but the commit failed
            assert rows[r.request_id]["id"] not in forwarded
    print(f"[pg down/up] 201: {len(created)}, forwarded: {len(forwarded)}, outcome rows "
          f"lost to the outage (logged outcome_not_recorded): {len(not_recorded)}")


# --- 2. upstream refusing, hanging, failing; no retries, no leaks -------------------------------

def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


# mode -> (HTTP status, Twilio code, upstream_status recorded, error recorded), in the order
# the batches cycle through them. After `refuse` and `hang` the proxy holds no connection to
# the upstream (refused, or dropped on timeout): those are the points to compare for leaks.
UPSTREAM_MODES: dict[str, tuple[int, int, int | None, str]] = {
    "refuse": (502, 930502, None, "upstream unreachable"),
    "fail500": (500, 20500, 500, "upstream 500"),
    "fail429": (429, 20429, 429, "upstream 429"),
    "hang": (504, 930504, None, "upstream timeout"),
}
BATCH = 50


async def test_upstream_faults_are_twilio_shaped_never_retried_and_leak_nothing(
    aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio, tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    settings = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID,
                             TWILIO_AUTH_TOKEN=UP_TOKEN, TWILIO_API_BASE=fake.base_url,
                             PROXY_CONFIG=write_config(tmp_path, 1.0))
    proxy: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    world = await make_world(proxy, ADMIN)
    numbers = [mobile() for _ in range(5)]
    for number in numbers:
        await world.consent(number, "sms")
    url = f"/2010-04-01/Accounts/{world.sid}/Messages.json"
    run = uuid.uuid4().hex[:8]
    modes = list(UPSTREAM_MODES)
    answers: dict[str, tuple[str, int, dict[str, Any]]] = {}
    samples: list[tuple[str, int, int]] = []

    auth = {"Authorization": aiohttp.encode_basic_auth(world.sid, world.token)}

    async def post(number: str, request_id: str) -> tuple[int, dict[str, Any]]:
        resp = await proxy.post(url, headers={**auth, "X-Request-Id": request_id},
                                data={"To": number, "From": world.sms, "Body": "Hallo"})
        return resp.status, await resp.json(content_type=None)

    for batch in range(20):
        mode = modes[batch % len(modes)]
        if mode == "fail500":
            fake.fail_with(500)
        elif mode == "fail429":
            fake.fail_with(429, 20429)
        elif mode == "hang":
            fake.hang(5.0)  # far beyond upstream.timeout_seconds = 1 (room for a slow machine)
        else:
            await fake.refuse()
        ids = [f"up-{run}-{batch}-{i}" for i in range(BATCH)]
        results = await asyncio.gather(*(post(numbers[i % 5], rid) for i, rid in enumerate(ids)))
        if mode == "refuse":
            await fake.resume()
        fake.reset()
        for rid, (status, body) in zip(ids, results, strict=True):
            answers[rid] = (mode, status, body)
        # A timed-out create must not stay open upstream: the proxy drops the connection,
        # so the fake's hanging handler is cancelled at once instead of after its 5 s.
        await wait_for(lambda: fake.hanging == 0, 2.0, "hanging upstream creates to end")
        await asyncio.sleep(0.1)  # let closed transports finish closing
        samples.append((mode, len(asyncio.all_tasks()), open_sockets()))

    # Every answer is Twilio-shaped with the status the fault calls for.
    for _rid, (mode, status, body) in answers.items():
        want_status, want_code, _, _ = UPSTREAM_MODES[mode]
        assert status == want_status, (mode, status, body)
        assert_twilio_error(want_status, body, want_code)
        if mode in ("hang", "refuse"):
            assert isinstance(body["decision_id"], int)

    # No retries: every create that reached the provider reached it exactly once, and the
    # ones refused at connect never arrived.
    forwarded = [int(r.headers["X-Consent-Decision-Id"]) for r in fake.creates()]
    assert len(forwarded) == len(set(forwarded)) == 750

    # Every decision has its outcome row with the provider's status or the failure.
    await world.committed()
    rows = await pool.fetch(
        """SELECT d.id, d.request_id, d.decision, o.decision_id AS outcome, o.upstream_status,
                  o.error FROM decisions d LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.request_id LIKE $1""", f"up-{run}-%")
    assert len(rows) == 1000
    for row in rows:
        mode = answers[row["request_id"]][0]
        _, _, upstream_status, error = UPSTREAM_MODES[mode]
        assert row["decision"] == "allow"
        assert row["outcome"] == row["id"], row
        assert (row["upstream_status"], row["error"]) == (upstream_status, error), (mode, row)
        assert (row["id"] in forwarded) == (mode != "refuse")

    # Bounded resources. Baseline: after the first 50 requests (refused upstream), when this
    # process holds the test client's 50 keep-alive connections to the proxy (both ends, plus
    # a server task each) and nothing towards the upstream. Whenever the upstream connections
    # are gone again (after every refuse and hang batch, including the last one) tasks and
    # sockets are back at the baseline: nothing accumulates over 1,000 requests. In between,
    # the proxy keeps at most one keep-alive connection per concurrent request (both ends
    # here, and one fake-side server task each).
    _, base_tasks, base_sockets = samples[0]
    _, end_tasks, end_sockets = samples[-1]
    print(f"\n[upstream faults] tasks baseline {base_tasks} end {end_tasks} max "
          f"{max(s[1] for s in samples)}; sockets baseline {base_sockets} end {end_sockets} "
          f"max {max(s[2] for s in samples)}")
    print("[upstream faults] per batch (mode, tasks, sockets):", samples)
    assert samples[-1][0] == "hang"
    for mode, tasks, sockets in samples:
        keep_alive = BATCH if mode.startswith("fail") else 0
        assert tasks <= base_tasks + keep_alive + 5, (mode, tasks, sockets)
        assert sockets <= base_sockets + 2 * keep_alive + 5, (mode, tasks, sockets)


# --- 3. SIGTERM during load ----------------------------------------------------------------------

async def test_sigterm_lets_in_flight_creates_finish_and_exits_0(database_url: str,
                                                                 tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    async with FakeTwilio(UP_SID, UP_TOKEN) as fake:
        proxy = start_proxy(tmp_path, DATABASE_URL=database_url, **upstream_env(fake))
        try:
            await wait_ready(proxy)
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=30)) as session:
                dialer = await seed(session, proxy.base, 4)
                fake.hang(1.5)
                ids = [f"term-{run}-{i}" for i in range(20)]
                in_flight = [asyncio.create_task(send_sms(session, dialer, dialer.numbers[i % 4],
                                                          rid)) for i, rid in enumerate(ids)]
                # Every create has its decision committed and sits at the provider.
                await wait_for(lambda: fake.hanging == 20, 10, "20 creates in flight upstream")
                signalled = time.monotonic()
                proxy.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                late = f"term-{run}-late"
                async with aiohttp.ClientSession() as fresh:
                    with pytest.raises(aiohttp.ClientConnectorError):
                        await send_sms(fresh, dialer, dialer.numbers[0], late)
                answers = await asyncio.gather(*in_flight)
            code = await asyncio.to_thread(proxy.proc.wait, 40)
            exited_after = time.monotonic() - signalled
        finally:
            proxy.kill()
    print(f"\n[sigterm] exit {code} {exited_after:.2f}s after SIGTERM")
    assert code == 0, proxy.stderr.read_text()
    assert exited_after < 30  # cli.py: shutdown_timeout=30
    assert [status for status, _ in answers] == [201] * 20, answers
    assert "proxy_stopped" in [e["event"] for e in proxy.events()]

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT d.request_id, d.decision, count(o.decision_id) AS outcomes,
                      max(o.upstream_status) AS upstream_status, max(o.upstream_sid) AS sid
               FROM decisions d LEFT JOIN decision_outcomes o ON o.decision_id = d.id
               WHERE d.request_id LIKE $1 GROUP BY d.id""", f"term-{run}-%")
    finally:
        await conn.close()
    by_request = {r["request_id"]: r for r in rows}
    assert set(by_request) == set(ids)  # and nothing at all for the late request
    for rid, (_, body) in zip(ids, answers, strict=True):
        row = by_request[rid]
        assert (row["decision"], row["outcomes"], row["upstream_status"], row["sid"]) == (
            "allow", 1, 201, body["sid"])
    assert len(fake.creates()) == 20


# --- 4. slow and oversized clients ---------------------------------------------------------------

async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body = await reader.read()
    return int(status_line.split()[1]), headers, body


async def raw_request(host: str, port: int, head: str,
                      trickle: int = 0) -> tuple[int, bytes, float]:
    """Send `head` (request line and headers) as is; then, when `trickle`, that many body
    bytes one per second. Returns the status, body and seconds until the answer."""
    reader, writer = await asyncio.open_connection(host, port)

    async def dribble() -> None:
        with contextlib.suppress(OSError):
            for _ in range(trickle):
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(1.0)

    started = time.monotonic()
    writer.write(head.encode("latin-1"))
    await writer.drain()
    sender = asyncio.create_task(dribble())
    try:
        status, _headers, body = await asyncio.wait_for(read_response(reader), 15)
    finally:
        sender.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return status, body, time.monotonic() - started


async def test_slow_and_oversized_clients_get_4xx_and_others_are_served(
    aiohttp_client: Any, database_url: str, clock: Clock, tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[limits]\nbody_timeout_seconds = 1\nmax_body_bytes = 65536\n")
    settings = make_settings(database_url, PROXY_CONFIG=str(rules))  # sandbox upstream
    proxy: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    world: World = await make_world(proxy, ADMIN)
    number = mobile()
    await world.consent(number, "sms")
    host, port = proxy.server.host, proxy.server.port
    assert port is not None
    messages = f"/2010-04-01/Accounts/{world.sid}/Messages.json"
    basic = aiohttp.encode_basic_auth(world.sid, world.token)

    async def create(pairs: list[tuple[str, str]] | bytes) -> tuple[int, dict[str, Any]]:
        resp = await proxy.post(messages, data=pairs, headers={**FORM, "Authorization": basic})
        return resp.status, await resp.json(content_type=None)

    def sms(*extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [("To", number), ("From", world.sms), ("Body", "Hallo"), *extra]

    # Clients announce 1000 body bytes and send one per second.
    slow_twilio = asyncio.create_task(raw_request(host, port, (
        f"POST {messages} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {basic}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"),
        trickle=1000))
    slow_admin = asyncio.create_task(raw_request(host, port, (
        f"POST {A}/organisations HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: {ADMIN['Authorization']}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"), trickle=1000))
    # And a webhook: it is public, so it must not wait for a body forever either.
    slow_webhook = asyncio.create_task(raw_request(host, port, (
        f"POST {webhooks.SMS_PATH} HTTP/1.1\r\nHost: {host}\r\nX-Twilio-Signature: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"),
        trickle=1000))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    status, body = await create(sms())  # meanwhile, an ordinary dialer is served at once
    served_in = time.monotonic() - started
    assert status == 201, body
    assert served_in < 1.0
    assert not slow_twilio.done()
    assert not slow_admin.done()
    assert not slow_webhook.done()

    status, raw, waited = await slow_twilio
    assert status == 408
    assert_twilio_error(408, json.loads(raw), 20408)
    assert 0.9 <= waited < 5
    status, raw, waited = await slow_admin
    assert status == 408
    assert set(json.loads(raw)) == {"error", "field"}
    assert "body_timeout_seconds" in json.loads(raw)["error"]
    assert 0.9 <= waited < 5
    status, raw, waited = await slow_webhook
    assert status == 408
    assert "body_timeout_seconds" in json.loads(raw)["error"]
    assert 0.9 <= waited < 5
    print(f"\n[slow clients] ordinary create served in {served_in * 1000:.0f} ms while three "
          f"clients trickled; every slow client got 408 after {waited:.2f}s")

    # Bodies over limits.max_body_bytes.
    status, body = await create(b"To=%2B31612345678&Body=" + b"x" * 70_000)
    assert status == 413
    assert_twilio_error(413, body, 20413)
    resp = await proxy.post(f"{A}/organisations", headers=ADMIN,
                            data=json.dumps({"id": "x" * 70_000}))
    assert resp.status == 413
    assert set(await resp.json()) == {"error", "field"}

    # At most 200 form fields (MediaUrl is a field that may repeat).
    media = [("MediaUrl", f"https://media.example/{i}.png") for i in range(198)]
    status, body = await create(sms(*media[:197]))
    assert status == 201, body  # 200 fields: still a request (the sandbox ignores the rest)
    status, body = await create(sms(*media))
    assert status == 400
    assert_twilio_error(400, body, 20001)
    assert "Too many form fields" in body["message"]

    # aiohttp's own header limits (max_line_size / max_field_size 8190, max_headers 128):
    # answered 400 by the HTTP parser before any handler runs, never a 500 or a crash.
    limits = {
        "request line over 8 KiB": f"GET /healthz?q={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
        "header line over 8 KiB": f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}"
                                  "\r\n\r\n",
        "200 headers": "GET /healthz HTTP/1.1\r\nHost: x\r\n"
                       + "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n",
    }
    seen = {}
    for what, head in limits.items():
        status, _, _ = await raw_request(host, port, head)
        seen[what] = status
        assert 400 <= status < 500, (what, status)
    status, _, _ = await raw_request(  # under the header limit: an ordinary request
        host, port, "GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"X-H{i}: v\r\n" for i in range(100)) + "\r\n")
    assert status == 200
    print(f"[header limits] {seen}; 100 headers: {status}")

    # The worker is fine afterwards.
    assert (await proxy.get("/healthz")).status == 200
    status, body = await create(sms())
    assert status == 201, body


# --- the setting itself --------------------------------------------------------------------------

def test_body_timeout_setting_is_validated() -> None:
    assert parse_rules({}).body_timeout_seconds == 30
    assert load_rules(REPO / "config" / "consent-proxy.toml").body_timeout_seconds == 30
    assert parse_rules({"limits": {"body_timeout_seconds": 2.5}}).body_timeout_seconds == 2.5
    for bad in (0, -1, 301, "30", True):
        with pytest.raises(ConfigError, match=r"limits\.body_timeout_seconds"):
            parse_rules({"limits": {"body_timeout_seconds": bad}})
