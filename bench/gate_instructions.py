"""`python -m bench.gate_instructions`: the gate's CPU work per SMS create, counted in
instructions by valgrind's callgrind, for consent-proxy and for the bare forwarder. The count
is the same on a slow or a fast day of the VM, so the ratio of the two holds a change to the
gate against the baseline where wall-clock rounds on a drifting VM cannot.

It starts what `make bench` starts (a scratch database, the fake upstream, the bare forwarder
and consent-proxy, the last two under callgrind with counting switched off), seeds load 1's
facts, and then, for each of the two: `--warm` creates, counting on, `--n` more, counting
off, and the dump's total over `--n`. By default requests go one at a time, so every group
fetch and group commit holds one request: the database's share is the most it can be. With
`--concurrency N`, N clients send in a closed loop and concurrent requests share fetches and
commits as under load; the proxy's batch-size metric (consent_proxy_batch_items) shows how
much, as round trips per create and items per trip. The mix is load 1's (70 % allowed), the
same sequence for both. Needs valgrind; a few minutes. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bench import pg, seed
from bench.instructions import counted, valgrind_missing, write_counts
from bench.run import start_services
from bench.services import Service
from proxy import db

NUMBERS = 20_000  # load 1's numbers (facts and bodies), as at --size tiny and above


async def _send(session: aiohttp.ClientSession, url: str, dialer: seed.Dialer,
                bodies: Sequence[str], picks: random.Random, count: int,
                concurrency: int = 1) -> Counter[int]:
    """`count` creates, `concurrency` at a time (closed loop: each client sends its next one
    when its answer is in), the bodies in the order `picks` draws them."""
    statuses: Counter[int] = Counter()
    headers = {"Authorization": dialer.authorization,
               "Content-Type": "application/x-www-form-urlencoded"}
    queue = iter([picks.choice(bodies) for _ in range(count)])

    async def client() -> None:
        for body in queue:
            async with session.post(url + dialer.messages_path, data=body,
                                    headers=headers) as resp:
                await resp.read()
                statuses[resp.status] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _total(dump_dir: Path, pid: int) -> int:
    """Instructions in the dump `callgrind_control -d` wrote (counting was on only between
    the two switches)."""
    dumps = sorted(dump_dir.glob(f"callgrind.{pid}.*"))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for pid {pid} in {dump_dir}")
    total = 0
    for line in dumps[-1].read_text().splitlines():
        found = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if found:
            total = max(total, int(found.group(1)))
    return total


async def _count(service: Service, dialer: seed.Dialer, bodies: Sequence[str], dump_dir: Path,
                 warm: int, n: int, concurrency: int, *, proxy: bool) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency + 1)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        await _send(session, service.url, dialer, bodies, random.Random(7), warm, concurrency)
        before = await batches(session, service.url) if proxy else {}
        _control("-i", "on", str(service.pid))
        statuses = await _send(session, service.url, dialer, bodies, random.Random(11), n,
                               concurrency)
        _control("-i", "off", str(service.pid))
        # The last outcomes ride with a commit after the last answer: wait for it.
        await asyncio.sleep(0.5)
        after = await batches(session, service.url) if proxy else {}
    _control("-d", str(service.pid))
    await asyncio.sleep(0.5)
    total = _total(dump_dir, service.pid)
    result = {"instructions_per_request": round(total / n), "statuses": dict(statuses)}
    if proxy:
        result["batches"] = sharing(before, after, n)
    return result


async def batches(session: aiohttp.ClientSession, url: str) -> dict[str, tuple[float, float]]:
    """(round trips, items) of each batcher so far, from the proxy's /metrics."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "consent_proxy_batch_items":
            continue
        for sample in family.samples:
            batcher = sample.labels["batcher"]
            if sample.name.endswith("_count"):
                found.setdefault(batcher, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                found.setdefault(batcher, [0.0, 0.0])[1] = sample.value
    return {batcher: (trips, items) for batcher, (trips, items) in found.items()}


def sharing(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
            requests: int) -> dict[str, dict[str, float]]:
    """Per batcher, between two `batches` readings: round trips per create, items per trip."""
    out = {}
    for batcher, (trips, items) in after.items():
        trips -= before.get(batcher, (0.0, 0.0))[0]
        items -= before.get(batcher, (0.0, 0.0))[1]
        out[batcher] = {"trips_per_request": round(trips / requests, 3),
                        "items_per_trip": round(items / trips, 2) if trips else 0.0}
    return out


async def measure(warm: int, n: int, concurrency: int = 1) -> dict[str, Any]:
    server, _ = await pg.server_url()
    # The dumps, the services' logs and the bodies: a failure's message carries a log's tail.
    with tempfile.TemporaryDirectory() as tmp:
        dump_dir = Path(tmp)
        # `env` execs valgrind, which runs Python in the same process: the pid is the one
        # callgrind_control is given.
        wrap = counted(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={dump_dir}/callgrind.%p"])
        async with contextlib.AsyncExitStack() as exits:
            url = await exits.enter_async_context(pg.scratch_database(server))
            await db.migrate_url(url)
            stack = await start_services(url, dump_dir, exits, wrap=wrap, ready_within=600)
            dialer = await seed.seed_admin(stack.proxy.url, stack.admin_token)
            at = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
            conn = await asyncpg.connect(url)
            try:
                await seed.copy_facts(conn, seed.load_facts(NUMBERS, at))
            finally:
                await conn.close()
            bodies_path = dump_dir / "bodies"
            seed.write_bodies(bodies_path, NUMBERS)
            bodies = [line for line in bodies_path.read_text().splitlines() if line]
            bare = await _count(stack.bare, dialer, bodies, dump_dir, warm, n, concurrency,
                                proxy=False)
            proxy = await _count(stack.proxy, dialer, bodies, dump_dir, warm, n, concurrency,
                                 proxy=True)
    return {
        "requests": n, "warm_up": warm, "concurrency": concurrency, "bare": bare,
        "proxy": proxy,
        "ratio": round(proxy["instructions_per_request"] / bare["instructions_per_request"],
                       3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate_instructions",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=300, help="creates before counting")
    parser.add_argument("--n", type=int, default=200, help="creates counted")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="creates in flight at once (1: one at a time, the gate's dearest "
                             "case; more: group fetch and group commit share trips)")
    parser.add_argument("--out", type=Path, help="also write the counts here as JSON")
    args = parser.parse_args(argv)
    if valgrind_missing("bench.gate_instructions"):
        return 1
    if args.concurrency < 1 or args.n < args.concurrency:
        parser.error("--concurrency: at least 1 and at most --n")
    result = asyncio.run(measure(args.warm, args.n, args.concurrency))
    for name in ("bare", "proxy"):
        print(f"{name:6s} {result[name]['instructions_per_request']:>12,} instructions per "
              f"create  (answers: {result[name]['statuses']})")
    for batcher, seen in result["proxy"]["batches"].items():
        print(f"       {batcher}: {seen['trips_per_request']:g} round trips per create, "
              f"{seen['items_per_trip']:g} items each (concurrency {result['concurrency']})")
    print(f"ratio  {result['ratio']:>12}  consent-proxy / bare forwarder")
    write_counts(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
