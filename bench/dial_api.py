"""Item 1, dial time: `POST /dial/v1/decisions` measured beside the Twilio front's creates, in
the same run on the same machine, with the same load generator: its own latency at one
connection (target: p99 <= 5 ms) and its throughput at 32 connections, each request with a
call_id of its own (a repeated one is answered from the first decision)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import asyncpg

from bench.gate_overhead import LoadGenerator
from bench.load import LoadResult, Target
from bench.services import add_other, cpu_share, cpu_snapshot, median_shares
from bench.sizes import Size

PATH = "/dial/v1/decisions"
P99_MAX_MS = 5.0  # at one connection


def target(url: str, authorization: str, bodies: Any) -> Target:
    return Target("dial", url, PATH, authorization, bodies, unique_field="call_id")


async def _mix(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT decision, reason, count(*) AS n FROM decisions "
                                "WHERE details ? 'dial' GROUP BY decision, reason "
                                "ORDER BY n DESC")
    finally:
        await conn.close()
    return {f"{r['decision']} {r['reason']}": r["n"] for r in rows}


async def measure(gen: LoadGenerator, dial: Target, pids: Mapping[str, int], size: Size,
                  database_url: str) -> dict[str, Any]:
    """A warm-up, `size.rounds` rounds at `size.connections` (medians), then one connection
    for `size.unloaded_seconds`."""
    await gen.run(dial, size.connections, size.warmup_seconds)
    results: list[LoadResult] = []
    rounds: list[dict[str, Any]] = []
    watched = {"server": pids["proxy"], "upstream": pids["upstream"]}
    for number in range(1, size.rounds + 1):
        before = cpu_snapshot(watched)
        result = await gen.run(dial, size.connections, size.round_seconds)
        cpu = cpu_share(before, cpu_snapshot(watched))
        cpu["loadgen"] = round(100 * result.loadgen_cpu_seconds / result.seconds, 1)
        results.append(result)
        rounds.append({"target": "dial", "round": number, **result.to_json(),
                       "cpu_percent_of_one_core": add_other(cpu)})
    one = await gen.run(dial, 1, size.unloaded_seconds)
    return {
        "path": PATH,
        "rps": round(statistics.median(r.rps for r in results), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in results), 3),
        "non2xx_fraction": round(statistics.median(r.non2xx_fraction for r in results), 4),
        "socket_errors": sum(r.socket_errors for r in results),
        "one_connection": {"requests": one.requests, "rps": one.rps,
                           "p50_ms": round(one.p50_ms, 3),
                           "p99_ms": round(one.p99_ms, 3),
                           "non2xx_fraction": round(one.non2xx_fraction, 4)},
        "cpu_median": median_shares([r["cpu_percent_of_one_core"] for r in rounds],
                                    ("loadgen", "server", "upstream", "postgres", "other",
                                     "machine", "steal")),
        "decisions": await _mix(database_url),
        "rounds": rounds,
    }
