"""The multi-gate deployment of deploy/ on this machine, with real parts: PostgreSQL as a primary
and a synchronous streaming standby (initdb and pg_basebackup from /usr/lib/postgresql/*/bin,
run as the `postgres` user in a temporary directory on free ports), Debian's PgBouncer beside
each node, `consent-proxy serve` gates and Debian's HAProxy in front.

Every configuration file is the one under deploy/, as it is: only ports and paths differ
(PostgreSQL's on its command line, PgBouncer's by replacing those settings, HAProxy's and
the gates' through the environment they read them from). The main cluster on port 5432 is
never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from tests.conftest import PROXY_SECRET, REPO, UP_SID, UP_TOKEN, mobile, uid
from tests.fake_twilio import FakeTwilio
from tests.test_faults import (
    ProxyProcess,
    admin_post,
    free_port,
    start_proxy,
    upstream_env,
    wait_ready,
)
from tests.world import landline

SMS_PATH = "/webhooks/twilio/sms"
T = TypeVar("T")

DEPLOY = REPO / "deploy"
PACKAGES = ("haproxy", "pgbouncer")
APP_PASSWORD = "ha-test-app-password"
REPLICATION_PASSWORD = "ha-test-replication-password"


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


def ensure_installed() -> None:
    """HAProxy and PgBouncer from Debian, installed when missing (as tests/sip_stack.py
    does); where that cannot be done the test skips, except in CI where it fails."""
    absent = [p for p in PACKAGES if shutil.which(p, path="/usr/sbin:/usr/bin") is None]
    if not absent:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = f"{', '.join(absent)} missing, and no root to apt-get install them"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", *lock, "update", "-qq"],
                    ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends",
                     *absent]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    # Debian starts the packaged services on install: this stack runs its own.
    for service in absent:
        subprocess.run(["service", service, "stop"], capture_output=True, check=False)


def as_postgres(command: Sequence[str], *, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd="/", check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class Node:
    """One PostgreSQL server: deploy/postgres/postgresql.conf and pg_hba.conf (and
    primary.conf on the primary) copied to its etc/, started with its port, socket directory,
    hba_file and cluster_name on the command line."""

    name: str  # its cluster_name: pg_a, pg_b
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def admin_url(self) -> str:  # the superuser over the node's own socket (trust)
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def app_url(self, port: int | None = None) -> str:
        return (f"postgresql://consent_proxy:{APP_PASSWORD}@127.0.0.1:{port or self.port}"
                "/consent_proxy")

    def configure(self, primary: bool) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        names = ["postgresql.conf", "pg_hba.conf"] + (["primary.conf"] if primary else [])
        for name in names:
            shutil.copy(DEPLOY / "postgres" / name, self.etc / name)
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)

    def start(self) -> None:
        options = (f"-c config_file={self.etc}/postgresql.conf -c hba_file={self.etc}/pg_hba.conf"
                   f" -p {self.port} -c unix_socket_directories={self.root}"
                   f" -c listen_addresses=127.0.0.1 -c cluster_name={self.name}")
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l",
                     str(self.root / "server.log"), "-w", "-t", "120", "-o", options, "start"])

    def crash(self) -> None:
        """The server dies at once, as on a lost host: no checkpoint, sessions cut."""
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                     "-w", "-t", "60", "stop"], check=False)

    def stop(self) -> None:
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                     "-t", "60", "stop"], check=False)

    def promote(self) -> None:
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-w", "-t", "120",
                     "promote"])

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text("utf-8", "replace") if path.exists() else ""


@dataclass
class Bouncer:
    """Debian's PgBouncer with deploy/pgbouncer/pgbouncer.ini, beside `node`: only its
    listen port, the node's port and the auth_file path are replaced."""

    node: Node
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        userlist = self.root / "userlist.txt"
        userlist.write_text(f'"consent_proxy" "{APP_PASSWORD}"\n')
        text = (DEPLOY / "pgbouncer" / "pgbouncer.ini").read_text()
        text = replace_setting(text, "listen_port", str(self.port))
        text = replace_setting(text, "auth_file", str(userlist))
        text, count = re.subn(r"(?m)^(consent_proxy = host=127\.0\.0\.1 port=)5432\b",
                              rf"\g<1>{self.node.port}", text)
        assert count == 1, "deploy/pgbouncer/pgbouncer.ini: the consent_proxy line changed"
        ini = self.root / "pgbouncer.ini"
        ini.write_text(text)
        userlist.chmod(0o600)
        subprocess.run(["chown", "-R", "postgres:postgres", str(self.root)], check=True)
        with (self.root / "pgbouncer.log").open("wb") as out:
            self.proc = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", "/usr/sbin/pgbouncer", str(ini)],
                stdout=out, stderr=subprocess.STDOUT)
        _wait_listening(self.port, "PgBouncer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def replace_setting(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
    assert count == 1, f"no single `{key} = ` line to replace"
    return new


@dataclass
class Balancer:
    """Debian's HAProxy with deploy/haproxy.cfg; addresses through its environment."""

    gates: Sequence[ProxyProcess]
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HAPROXY_BIND": f"127.0.0.1:{self.port}",
               **{f"GATE{i}_ADDR": f"127.0.0.1:{g.port}" for i, g in
                  enumerate(self.gates, start=1)}}
        with (self.root / "haproxy.log").open("wb") as out:
            self.proc = subprocess.Popen(
                ["/usr/sbin/haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")],
                env=env, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return (self.root / "haproxy.log").read_text("utf-8", "replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finishes what is under way
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Cluster:
    primary: Node
    standby: Node
    bouncers: list[Bouncer]

    @property
    def pooled_url(self) -> str:
        """DATABASE_URL as deploy/compose.yml builds it: PgBouncer beside each node."""
        hosts = ",".join(f"127.0.0.1:{b.port}" for b in self.bouncers)
        return (f"postgresql://consent_proxy:{APP_PASSWORD}@{hosts}/consent_proxy"
                "?target_session_attrs=read-write")

    @property
    def direct_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in (self.primary, self.standby))
        return (f"postgresql://consent_proxy:{APP_PASSWORD}@{hosts}/consent_proxy"
                "?target_session_attrs=read-write")

    def gate_env(self, drain_seconds: int = 0) -> dict[str, str]:
        return {"DATABASE_URL": self.pooled_url, "DATABASE_URL_DIRECT": self.direct_url,
                "DATABASE_STATEMENT_CACHE_SIZE": "0",
                "PROXY_DRAIN_SECONDS": str(drain_seconds)}

    def stop(self) -> None:
        for bouncer in self.bouncers:
            bouncer.stop()
        for node in (self.standby, self.primary):
            node.stop()


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """A primary, its synchronous standby (streaming, caught up) and a PgBouncer beside each,
    built from deploy/ as deploy/compose.yml does, in a temporary directory that is removed
    afterwards."""
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="consent-proxy-ha-"))
    root.chmod(0o755)
    primary, standby = Node("pg_a", root / "pg_a"), Node("pg_b", root / "pg_b")
    bouncers = [Bouncer(primary, root / "bouncer_a"), Bouncer(standby, root / "bouncer_b")]
    made = Cluster(primary, standby, bouncers)
    try:
        primary.root.mkdir()
        subprocess.run(["chown", "postgres:postgres", str(primary.root)], check=True)
        as_postgres([str(pg_bin() / "initdb"), "-D", str(primary.data), "-U", "postgres",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                     "--locale=C.UTF-8"])
        primary.configure(primary=True)
        primary.start()
        # deploy/postgres/init-primary.sh, as the postgres image runs it on first start.
        as_postgres([str(DEPLOY / "postgres" / "init-primary.sh")],
                    env={"PGHOST": str(primary.root), "PGPORT": str(primary.port),
                         "CONSENT_PROXY_PASSWORD": APP_PASSWORD,
                         "REPLICATION_PASSWORD": REPLICATION_PASSWORD})
        standby.root.mkdir()
        standby.configure(primary=False)
        # deploy/postgres/init-standby.sh, as deploy/compose.yml runs it for pg-b.
        as_postgres([str(DEPLOY / "postgres" / "init-standby.sh")],
                    env={"PGDATA": str(standby.data), "PRIMARY_HOST": "127.0.0.1",
                         "PRIMARY_PORT": str(primary.port),
                         "REPLICATION_PASSWORD": REPLICATION_PASSWORD,
                         "PATH": f"{pg_bin()}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
        standby.start()
        for bouncer in bouncers:
            bouncer.start()
        _wait_streaming(primary)
        yield made
    finally:
        made.stop()
        shutil.rmtree(root, ignore_errors=True)


def _wait_streaming(primary: Node, timeout: float = 60) -> None:
    """Until pg_b streams from the primary as its synchronous standby."""
    deadline = time.monotonic() + timeout
    query = ("SELECT state || ' ' || sync_state FROM pg_stat_replication "
             "WHERE application_name = 'pg_b'")
    while True:
        done = as_postgres(["psql", "-Atq", "-h", str(primary.root), "-p", str(primary.port),
                            "-d", "postgres", "-c", query], check=False)
        if done.stdout.strip() == "streaming sync":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby does not stream synchronously: {done.stdout}")
        time.sleep(0.1)


def _wait_listening(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} does not listen on {port}")
        time.sleep(0.05)


def start_gates(tmp_path: Path, made: Cluster, count: int = 2, drain_seconds: int = 0,
                **env: str) -> list[ProxyProcess]:
    return [start_proxy(tmp_path, **made.gate_env(drain_seconds), **env) for _ in range(count)]


# --- the whole deployment, and a dialer using it ------------------------------------------------

# Every hour of every day open for calls: these gates run on the real clock, and the tests are
# about the deployment, not about calling hours (one minute a day, 23:59-24:00, stays closed).
ALWAYS_OPEN = """[calling_hours]
weekday = "00:00-23:59"
saturday = "00:00-23:59"
sunday = "00:00-23:59"
holiday = "00:00-23:59"
short_day_end = "23:59"
"""


@dataclass
class Stack:
    cluster: Cluster
    gates: list[ProxyProcess]
    balancer: Balancer
    fake: FakeTwilio

    @property
    def base(self) -> str:
        return self.balancer.base

    @property
    def public_url(self) -> str:
        return self.balancer.base


@contextlib.asynccontextmanager
async def running(tmp_path: Path, drain_seconds: int = 0) -> AsyncIterator[Stack]:
    """The cluster, two `consent-proxy serve` gates through PgBouncer, HAProxy in front, and a
    fake Twilio upstream; yielded once HAProxy has both gates in rotation."""
    with cluster() as made:
        async with FakeTwilio(UP_SID, UP_TOKEN) as fake:
            rules = tmp_path / "rules.toml"
            rules.write_text(ALWAYS_OPEN)
            port = free_port()
            env = {**upstream_env(fake), "PROXY_CONFIG": str(rules),
                   "PUBLIC_URL": f"http://127.0.0.1:{port}"}
            gates = start_gates(tmp_path, made, 2, drain_seconds, **env)
            balancer = Balancer(gates, tmp_path, port)
            try:
                for gate in gates:
                    await wait_ready(gate, timeout=120)
                balancer.start()
                await in_rotation(balancer, 2)
                yield Stack(made, gates, balancer, fake)
            finally:
                balancer.stop()
                for gate in gates:
                    gate.kill()


async def in_rotation(balancer: Balancer, count: int, timeout: float = 60) -> None:
    """Until requests through HAProxy have reached `count` different gates (a gate's request
    ids start with a prefix of its own, proxy/app.py new_request_id)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while len(seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy has {len(seen)} gates in rotation: "
                                     f"{balancer.log()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{balancer.base}/readyz") as resp:
                    if resp.status == 200:
                        seen.add(resp.headers["X-Request-Id"][:16])
            await asyncio.sleep(0.05)


def verify_audit(made: Cluster, home: Path) -> subprocess.CompletedProcess[str]:
    """`consent-proxy audit verify` as an operator runs it, through DATABASE_URL_DIRECT."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "DATABASE_URL": made.pooled_url, "DATABASE_URL_DIRECT": made.direct_url,
           "DATABASE_STATEMENT_CACHE_SIZE": "0", "PROXY_SECRET": PROXY_SECRET,
           "PROXY_CONFIG": str(REPO / "config" / "consent-proxy.toml")}
    return subprocess.run([sys.executable, "-m", "proxy.cli", "audit", "verify"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Org:
    """An organisation seeded through HAProxy: an SMS and a voice sender, a dialer."""

    base: str
    organisation: str
    sid: str
    token: str
    sms_sender: str
    voice_sender: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": aiohttp.encode_basic_auth(self.sid, self.token)}


async def seed_org(session: aiohttp.ClientSession, base: str) -> Org:
    org, sms_sender, voice_sender = uid(), landline(), landline()
    await admin_post(session, base, "/organisations",
                     {"id": org, "name": "Energie BV", "sector": "commercial"})
    for sender in (sms_sender, voice_sender):
        await admin_post(session, base, "/senders",
                         {"sender": sender, "organisation": org, "topic": "energy/electricity"})
    creds = await admin_post(session, base, "/clients",
                             {"name": "Dialer", "organisations": [org]})
    return Org(base, org, creds["account_sid"], creds["auth_token"], sms_sender, voice_sender)


async def seed_consents(session: aiohttp.ClientSession, org: Org, channel: str, count: int,
                        kind: str = "opt_in") -> list[str]:
    """`count` numbers with a verified consent of `kind` given two days ago (the gates run
    on the real clock)."""
    given = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    numbers = [mobile() for _ in range(count)]

    async def one(number: str) -> None:
        await admin_post(session, org.base, "/consents", {
            "subject": number, "organisation": org.organisation, "channel": channel,
            "topics": ["energy"], "kind": kind, "given_at": given.isoformat(),
            "verified_at": (given + dt.timedelta(minutes=5)).isoformat(),
            "verification": "sms_code", "provenance": "self_provided"})

    for start in range(0, count, 16):
        await asyncio.gather(*(one(n) for n in numbers[start:start + 16]))
    return numbers


@dataclass(frozen=True)
class Sent:
    """One request as sent and what its caller was told (status None: no HTTP answer)."""

    kind: str  # sms | call | sms_token | dial
    key: str  # the number, token or call_id it shares with others of its group
    request_id: str
    status: int | None
    body: dict[str, Any]
    error: str | None = None


async def send(session: aiohttp.ClientSession, org: Org, kind: str, key: str, number: str,
               request_id: str, base: str | None = None) -> Sent:
    base = base or org.base
    headers = {**org.auth, "X-Request-Id": request_id}
    api = f"{base}/2010-04-01/Accounts/{org.sid}"
    try:
        if kind == "dial":
            async with session.post(f"{base}/dial/v1/decisions", headers=headers, json={
                    "to": number, "from": org.voice_sender, "call_id": key}) as resp:
                return Sent(kind, key, request_id, resp.status,
                            await resp.json(content_type=None))
        if kind == "call":
            data = {"To": number, "From": org.voice_sender, "Url": "https://dialer.example/t"}
            url = f"{api}/Calls.json"
        else:
            data = {"To": number, "From": org.sms_sender, "Body": "Nieuw tarief!"}
            url = f"{api}/Messages.json"
        if kind == "sms_token":
            headers["I-Twilio-Idempotency-Token"] = key
        async with session.post(url, headers=headers, data=data) as resp:
            return Sent(kind, key, request_id, resp.status, await resp.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Sent(kind, key, request_id, None, {}, f"{type(exc).__name__}: {exc}")


async def sms_reply(session: aiohttp.ClientSession, url: str, public_url: str, org: Org,
                    number: str, body: str) -> int:
    """An inbound SMS reply, signed as Twilio signs it (for the public URL), sent to `url`."""
    sid = "SM" + uuid.uuid4().hex
    params = [("MessageSid", sid), ("SmsMessageSid", sid), ("AccountSid", UP_SID),
              ("From", number), ("To", org.sms_sender), ("Body", body), ("NumMedia", "0")]
    signature = RequestValidator(UP_TOKEN).compute_signature(public_url + SMS_PATH,
                                                             MultiDict(params))
    async with session.post(url + SMS_PATH, data=params,
                            headers={"X-Twilio-Signature": signature}) as resp:
        return resp.status


async def run_all(calls: Sequence[Callable[[], Awaitable[T]]], at_once: int) -> list[T]:
    gate = asyncio.Semaphore(at_once)

    async def bounded(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(bounded(c) for c in calls)))
