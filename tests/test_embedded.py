"""`consent-proxy serve` with DATABASE_URL unset: embedded PostgreSQL that keeps its data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ADMIN = "embedded-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(cwd: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROXY_PORT": str(port),
           "PROXY_SECRET": "embedded-secret", "HOME": str(cwd), **extra}
    return subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"proxy exited early: {proc.communicate()}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("proxy did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def test_embedded_database_persists_across_restart(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, port, ADMIN_TOKEN=ADMIN)
    try:
        await wait_ready(port, proc)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                f"http://127.0.0.1:{port}/admin/v1/organisations", headers=headers,
                json={"id": "persist", "name": "Blijft Bestaan", "sector": "commercial"})
            assert resp.status == 201
    finally:
        code, out, _err = stop(proc)
    assert code == 0
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
    assert "embedded_database_started" in events
    assert "sandbox_upstream_active" in events
    assert (tmp_path / ".data" / "postgres" / "PG_VERSION").exists()

    port = free_port()
    proc = start(tmp_path, port)  # no ADMIN_TOKEN: one is generated and printed once
    try:
        await wait_ready(port, proc)
        await asyncio.sleep(0.2)
    finally:
        code, out, err = stop(proc)
    assert code == 0
    token = err.split("generated for this run:")[1].split()[0]
    assert token not in out
    proc = start(tmp_path, port, ADMIN_TOKEN=ADMIN)
    try:
        await wait_ready(port, proc)
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"http://127.0.0.1:{port}/admin/v1/organisations/persist",
                                     headers={"Authorization": f"Bearer {ADMIN}"})
            assert resp.status == 200
            assert (await resp.json())["name"] == "Blijft Bestaan"
    finally:
        code, _out, _err = stop(proc)
    assert code == 0
