"""The Python load generator: the fallback when wrk is missing, and the smoke test's.

Closed loop like wrk: each of `connections` workers sends the next request as soon as the
previous answer is read. On two cores it competes with the servers for CPU far more than wrk
does, so its numbers are lower; the results say which generator was used.
"""

from __future__ import annotations

import asyncio
import random
import resource
import secrets
import time
from dataclasses import dataclass, field

import aiohttp

from bench.load import LoadResult, Target, percentile

TIMEOUT_SECONDS = 10


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    non2xx: int = 0
    errors: int = 0


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                  bodies: list[bytes], deadline: float, seed: int, tally: _Tally,
                  unique: bytes | None) -> None:
    rng = random.Random(seed)
    sent = 0
    while time.perf_counter() < deadline:
        body = rng.choice(bodies)
        if unique is not None:  # field=prefix-worker-n: a value no other request has
            sent += 1
            body += b"%s-%d-%d" % (unique, seed, sent)
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            tally.errors += 1
            continue
        tally.latencies.append(time.perf_counter() - started)
        if status >= 400:
            tally.non2xx += 1


def _bodies(target: Target) -> list[bytes]:
    return [line for line in target.bodies_path.read_bytes().splitlines() if line]


async def run(target: Target, connections: int, seconds: float) -> LoadResult:
    bodies = _bodies(target)
    headers = {"Authorization": target.authorization,
               "Content-Type": "application/x-www-form-urlencoded"}
    tally = _Tally()
    unique = None
    if target.unique_field:
        unique = f"&{target.unique_field}={secrets.token_hex(4)}".encode()
    cpu_before = _self_cpu()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
    ) as session:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(
            _worker(session, target.url + target.path, headers, bodies, deadline, seed, tally,
                    unique)
            for seed in range(connections)))
        elapsed = time.perf_counter() - started
    ordered = sorted(tally.latencies)
    return LoadResult(
        requests=len(ordered), seconds=round(elapsed, 3), rps=round(len(ordered) / elapsed, 1),
        p50_ms=percentile(ordered, 50) * 1000, p90_ms=percentile(ordered, 90) * 1000,
        p99_ms=percentile(ordered, 99) * 1000, max_ms=(ordered[-1] if ordered else 0) * 1000,
        non2xx=tally.non2xx, socket_errors=tally.errors,
        loadgen_cpu_seconds=round(_self_cpu() - cpu_before, 2),
    )
