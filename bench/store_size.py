"""Item 5: decision latency must not grow with the store (index paths only).

Measured in-process with `proxy.gate.evaluate`, the function every route decides through
(number parsing, the one fact query, the engine), over a one-connection asyncpg pool made by
`proxy.db.create_pool`: the database path without HTTP in front of it, which is the part that
could grow with the table. Sequential, one decision at a time; the small store (a twin
database with load 1's facts only) and the grown one are timed in alternating rounds.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from bench import seed
from bench.load import percentile
from bench.services import add_other, cpu_share, cpu_snapshot, median_shares
from proxy import db, gate, store
from proxy.phone import subject_hash
from proxy.settings import RuleSettings

WARMUP = 100  # prepared statement, generic plan, the pool's connection
# Rounds of the alternating measurement: the VM's speed drifts over minutes, so the two
# sizes are timed in turn, small, large, small, …, and compared by their medians.
ROUNDS = 3


async def latency(database_url: str, rules: RuleSettings, numbers: Sequence[str],
                  at: dt.datetime) -> dict[str, Any]:
    pool = await db.create_pool(database_url, min_size=1, max_size=1)
    load = gate.store_facts(pool)
    try:
        for number in numbers[:WARMUP]:
            await gate.evaluate(load, rules, channel="sms", to_raw=number, from_raw=seed.SENDER,
                                now=at)
        times, allowed = [], 0
        before = cpu_snapshot({"bench": os.getpid()})
        for number in numbers:
            started = time.perf_counter()
            evaluation = await gate.evaluate(load, rules, channel="sms", to_raw=number,
                                             from_raw=seed.SENDER, now=at)
            times.append(time.perf_counter() - started)
            allowed += evaluation.decision.allowed
        cpu = add_other(cpu_share(before, cpu_snapshot({"bench": os.getpid()})))
    finally:
        await pool.close()
    ordered = sorted(times)
    return {"samples": len(ordered), "p50_ms": round(percentile(ordered, 50) * 1000, 3),
            "p99_ms": round(percentile(ordered, 99) * 1000, 3),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
            "allowed_fraction": round(allowed / len(ordered), 3),
            "cpu_percent_of_one_core": cpu}


async def alternate(stores: Mapping[str, str], rules: RuleSettings, numbers: Sequence[str],
                    at: dt.datetime, rounds: int = ROUNDS) -> dict[str, dict[str, Any]]:
    """The same numbers against each store (name -> database URL) in turn, `rounds` times;
    per store the median of its rounds, with every round kept."""
    timed: dict[str, list[dict[str, Any]]] = {name: [] for name in stores}
    for _ in range(rounds):
        for name, url in stores.items():
            timed[name].append(await latency(url, rules, numbers, at))
    return {name: _median_round(results) for name, results in timed.items()}


def _median_round(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "samples": sum(r["samples"] for r in results),
        **{key: round(statistics.median(r[key] for r in results), 3)
           for key in ("p50_ms", "p99_ms", "mean_ms", "allowed_fraction")},
        "cpu_percent_of_one_core": median_shares([r["cpu_percent_of_one_core"]
                                                  for r in results]),
        "rounds": list(results),
    }


async def table_facts(conn: asyncpg.Connection) -> dict[str, Any]:
    return {
        "consent_rows": await seed.consent_rows(conn),
        "consents_total_bytes": await conn.fetchval(
            "SELECT pg_total_relation_size('consents')"),
        "subject_rows": await conn.fetchval("SELECT count(*) FROM subjects"),
    }


async def explain(database_url: str, number: str) -> str:
    """The plan of the fact query (proxy/store/facts.py) for one number, as PostgreSQL ran it for
    the proxy (the same session settings: a generic plan)."""
    conn = await db.connect(database_url)
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + store._FACTS_SQL,
                                [seed.SENDER], [number], [subject_hash(number)])
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


GROWN_TABLES = ("consents", "subjects")  # what item 5 grows
FACT_TABLES = ("consents", "subjects", "relationships", "objections")


def index_scans_only(plan: str, tables: Sequence[str] = GROWN_TABLES) -> bool:
    """No sequential scan of these tables: every lookup went through an index. (On tiny
    tables PostgreSQL rightly prefers a sequential scan, so `tiny` runs check only what
    item 5 grows.)"""
    return not any(f"Seq Scan on {table}" in plan for table in tables)


def allowed_load_numbers(count: int) -> list[str]:
    return [seed.load_number(i) for i in range(count) if seed.LOAD_MIX[i % 10] == "allowed"]


def sample_grown(added: int, count: int, rng_seed: int = 11) -> list[str]:
    """Random subjects of the grown part: cold rows spread over the whole table."""
    rng = random.Random(rng_seed)
    return [seed.grown_number(rng.randrange(max(1, added // 3))) for _ in range(count)]
