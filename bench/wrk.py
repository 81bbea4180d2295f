"""wrk as the load generator of item 1 (Debian package `wrk`, scripted by bench/load.lua)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import secrets
import shutil
import subprocess
from pathlib import Path

from bench.load import LoadResult, Target

LUA = Path(__file__).with_name("load.lua")
TIMEOUT_SECONDS = 10  # as the proxy's upstream timeout: a slower answer is an error anyway


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    # `wrk -v` prints its version line and exits with 1.
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()[0]
    return first.split(" [")[0].strip()  # "wrk debian/4.1.0-3+b2 [epoll] Copyright …"


def command(target: Target, connections: int, seconds: float, threads: int) -> list[str]:
    # A unique field's values start with a prefix of this run's own: each wrk process counts
    # from 1 again.
    unique = [target.unique_field, secrets.token_hex(4)] if target.unique_field else []
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{math.ceil(seconds)}s", "--latency",
            f"--timeout={TIMEOUT_SECONDS}s", "-s", str(LUA), target.url + target.path, "--",
            target.path, target.authorization, str(target.bodies_path), *unique]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(target: Target, connections: int, seconds: float, threads: int) -> LoadResult:
    threads = min(threads, connections)
    # Only waited-for children count in RUSAGE_CHILDREN: the services still run, so the
    # difference is wrk's own CPU time.
    cpu_before = _children_cpu()
    process = await asyncio.create_subprocess_exec(
        *command(target, connections, seconds, threads),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await process.communicate()
    except BaseException:  # cancelled (Ctrl-C, SIGTERM): wrk must not outlive the run
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    cpu = _children_cpu() - cpu_before
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()[-2000:]}")
    return parse(out.decode(), cpu)


def parse(output: str, cpu_seconds: float) -> LoadResult:
    """The JSON line load.lua's done() printed after wrk's own report."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no result line:\n{output[-2000:]}")
    data = json.loads(lines[-1])
    seconds = data["duration_us"] / 1e6
    return LoadResult(
        requests=data["requests"], seconds=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1),
        p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000, non2xx=data["non2xx"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"]
        + data["timeouts"],
        loadgen_cpu_seconds=round(cpu_seconds, 2),
    )
