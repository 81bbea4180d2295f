"""`python -m bench.ha`: what more than one gate costs, measured on the deployment of deploy/
(HAProxy, PgBouncer beside each node, a PostgreSQL primary with a synchronous streaming
standby), built by tests/ha_stack.py from the very configuration files under deploy/.

Three phases in one run, on one cluster, each the same closed-loop load of allowed SMS creates
(`--requests` at `--at-once` callers, the Python generator in this process):

  direct     one gate straight to the primary (asyncpg's statement cache on): the baseline
  pooled     one gate through PgBouncer (transaction pooling, DATABASE_STATEMENT_CACHE_SIZE=0)
  two-gates  two gates through PgBouncer behind HAProxy

For each: answers per second (and the ratio to the baseline), CPU seconds per decision of the
gates, of the primary's server processes, of the standby and of PgBouncer; per decision the
primary's commits, WAL bytes (pg_current_wal_lsn difference), WAL records and WAL syncs
(pg_stat_wal: one per flush, the fsyncs of the log); through PgBouncer the transactions and
queries (round trips) per decision (SHOW STATS); the gates' decisions per commit (the group
commit's batch sizes, /metrics); and how often a backend waited for the audit chain's lock (an
advisory lock, sql/006) or for the standby (SyncRep), sampled from pg_stat_activity every few
milliseconds. Results: bench/results/ha.json; the diary is in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import pg, services
from bench.services import REPO, cpu_seconds
from tests import ha_stack
from tests.ha_stack import Balancer, Cluster, Org, seed_consents, seed_org, send
from tests.test_faults import ProxyProcess, free_port, start_proxy, wait_ready

OUT = REPO / "bench" / "results" / "ha.json"
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def server_cpu(node: ha_stack.Node) -> float:
    """CPU seconds of one PostgreSQL server: the postmaster (with its reaped children) and
    every live child (backends, WAL writer, WAL sender or receiver, ...)."""
    postmaster = int((node.data / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    total = sum(int(f) for f in fields[11:15]) / _TICKS
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat(int(entry.name))[1]) == postmaster:
                    total += cpu_seconds(int(entry.name))
    return total


def with_children(pid: int) -> float:
    """CPU seconds of a process and its live children (PgBouncer runs under runuser)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat(int(entry.name))[1]) == pid:
                    total += cpu_seconds(int(entry.name))
    return total


@dataclass
class Probe:
    """Counters read before and after a phase."""

    at: float
    gates: float
    primary: float
    standby: float
    bouncers: float
    wal_lsn: str
    wal: dict[str, int]
    commits: int
    pooler: dict[str, int]


async def read_probe(made: Cluster, gates: Sequence[ProxyProcess]) -> Probe:
    conn = await asyncpg.connect(made.primary.admin_url)
    try:
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        wal = dict(await conn.fetchrow(
            "SELECT wal_records, wal_fpi, wal_bytes::bigint, wal_write, wal_sync "
            "FROM pg_stat_wal") or {})
        commits = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = 'consent_proxy'")
    finally:
        await conn.close()
    pooler = {"xacts": 0, "queries": 0}
    for bouncer in made.bouncers:
        stats = await pooler_stats(bouncer)
        pooler["xacts"] += stats.get("total_xact_count", 0)
        pooler["queries"] += stats.get("total_query_count", 0)
    return Probe(time.monotonic(), sum(cpu_seconds(g.proc.pid) for g in gates),
                 server_cpu(made.primary), server_cpu(made.standby),
                 sum(with_children(b.proc.pid) for b in made.bouncers if b.proc is not None),
                 lsn, wal, commits, pooler)


async def pooler_stats(bouncer: ha_stack.Bouncer) -> dict[str, int]:
    """PgBouncer's SHOW STATS for the consent_proxy database (its admin console speaks the
    simple query protocol only: psql; stats_users in pgbouncer.ini)."""
    done = await asyncio.to_thread(
        ha_stack.as_postgres,
        ["psql", "-At", "-F", "\t", "-h", "127.0.0.1", "-p", str(bouncer.port), "-U",
         "consent_proxy", "-d", "pgbouncer", "-c", "SHOW STATS"],
        env={"PGPASSWORD": ha_stack.APP_PASSWORD}, check=False)
    header = ["database", "total_xact_count", "total_query_count"]
    for line in done.stdout.splitlines():
        cells = line.split("\t")
        if cells and cells[0] == "consent_proxy":
            return {name: int(cells[i]) for i, name in enumerate(header) if i}
    return {}


class Waits:
    """pg_stat_activity sampled every `every` seconds on the primary: how many backends wait
    for the audit chain's advisory lock, and for the synchronous standby."""

    def __init__(self, admin_url: str, every: float = 0.02) -> None:
        self._url, self._every = admin_url, every
        self.samples = 0
        self.advisory: list[int] = []
        self.syncrep: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Waits:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            while True:
                row = await conn.fetchrow(
                    "SELECT count(*) FILTER (WHERE wait_event = 'advisory') AS advisory, "
                    "count(*) FILTER (WHERE wait_event = 'SyncRep') AS syncrep "
                    "FROM pg_stat_activity WHERE datname = 'consent_proxy'")
                assert row is not None
                self.samples += 1
                self.advisory.append(row["advisory"])
                self.syncrep.append(row["syncrep"])
                await asyncio.sleep(self._every)
        finally:
            await conn.close()

    def summary(self) -> dict[str, float]:
        n = max(1, self.samples)
        return {"samples": self.samples,
                "chain_lock_waiting_share": round(sum(1 for a in self.advisory if a) / n, 3),
                "chain_lock_waiters_mean": round(statistics.fmean(self.advisory or [0]), 2),
                "syncrep_waiters_mean": round(statistics.fmean(self.syncrep or [0]), 2)}


async def batch_sizes(gates: Sequence[ProxyProcess]) -> tuple[float, float]:
    """(decisions and outcomes committed, commits) of the gates' group commits so far."""
    items = trips = 0.0
    async with aiohttp.ClientSession() as session:
        for gate in gates:
            async with session.get(f"{gate.base}/metrics") as resp:
                text = await resp.text()
            for name, value in re.findall(
                    r'^consent_proxy_batch_items_(sum|count)\{batcher="group-commit"\} (\S+)$',
                    text, re.MULTILINE):
                if name == "sum":
                    items += float(value)
                else:
                    trips += float(value)
    return items, trips


async def phase(name: str, base: str, gates: Sequence[ProxyProcess], made: Cluster, org: Org,
                numbers: Sequence[str], requests: int, at_once: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    items0, trips0 = await batch_sizes(gates)
    before = await read_probe(made, gates)
    statuses: list[int | None] = []
    latencies: list[float] = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=at_once),
            timeout=aiohttp.ClientTimeout(total=60)) as session, Waits(
            made.primary.admin_url) as waits:

        async def caller() -> None:
            for i in counter:
                started = time.perf_counter()
                sent = await send(session, org, "sms", "", numbers[i % len(numbers)],
                                  f"{run}-{i}", base=base)
                latencies.append(time.perf_counter() - started)
                statuses.append(sent.status)

        await asyncio.gather(*(caller() for _ in range(at_once)))
    after = await read_probe(made, gates)
    items1, trips1 = await batch_sizes(gates)
    ok = sum(1 for s in statuses if s == 201)
    wall = after.at - before.at
    per = 1 / ok if ok else float("nan")
    latencies.sort()
    wal_bytes = await _lsn_diff(made, before.wal_lsn, after.wal_lsn)
    return {
        "phase": name, "gates": len(gates), "requests": requests, "at_once": at_once,
        "answered_201": ok, "other_answers": len(statuses) - ok,
        "seconds": round(wall, 2), "rps": round(ok / wall, 1),
        "p50_ms": round(1e3 * latencies[len(latencies) // 2], 2),
        "p99_ms": round(1e3 * latencies[int(len(latencies) * 0.99)], 2),
        "cpu_ms_per_decision": {
            "gates": round(1e3 * (after.gates - before.gates) * per, 3),
            "primary": round(1e3 * (after.primary - before.primary) * per, 3),
            "standby": round(1e3 * (after.standby - before.standby) * per, 3),
            "pgbouncer": round(1e3 * (after.bouncers - before.bouncers) * per, 3)},
        "per_decision": {
            "commits": round((after.commits - before.commits) * per, 3),
            "wal_bytes": round(wal_bytes * per, 1),
            "wal_records": round((after.wal["wal_records"] - before.wal["wal_records"]) * per,
                                 2),
            "wal_fpi": round((after.wal["wal_fpi"] - before.wal["wal_fpi"]) * per, 3),
            "wal_syncs": round((after.wal["wal_sync"] - before.wal["wal_sync"]) * per, 3),
            "pooler_xacts": round((after.pooler["xacts"] - before.pooler["xacts"]) * per, 3),
            "pooler_queries": round(
                (after.pooler["queries"] - before.pooler["queries"]) * per, 3)},
        "group_commit_items_per_commit": round(
            (items1 - items0) / (trips1 - trips0), 2) if trips1 > trips0 else None,
        "waits": waits.summary(),
    }


async def _lsn_diff(made: Cluster, start: str, end: str) -> float:
    conn = await asyncpg.connect(made.primary.admin_url)
    try:
        return float(await conn.fetchval(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", end, start))
    finally:
        await conn.close()


def capacity(direct: Mapping[str, Any], pooled: Mapping[str, Any]) -> dict[str, Any]:
    """On paper: decisions one gate core makes per second, decisions one primary core
    carries per second (its CPU only; the disk's syncs per decision beside it), and so how
    many busy gate cores one primary core carries."""
    gate_ms = pooled["cpu_ms_per_decision"]["gates"]
    primary_ms = pooled["cpu_ms_per_decision"]["primary"]
    return {"decisions_per_gate_core_second": round(1e3 / gate_ms, 1),
            "decisions_per_primary_core_second": round(1e3 / primary_ms, 1),
            "gate_cores_per_primary_core": round(gate_ms / primary_ms, 2),
            "direct_gate_cores_per_primary_core": round(
                direct["cpu_ms_per_decision"]["gates"]
                / direct["cpu_ms_per_decision"]["primary"], 2)}


async def main(requests: int, at_once: int, numbers_count: int, tmp: Path) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    up_sid, up_token, up_port = "AC" + secrets.token_hex(16), secrets.token_hex(16), free_port()
    with ha_stack.cluster() as made:
        # bench/upstream.py: the minimal upstream (tests/fake_twilio.py checks every request
        # against the spec and would be the bottleneck).
        upstream = await services.start(
            "upstream", ["-m", "bench.upstream", "--port", str(up_port), "--account-sid",
                         up_sid, "--auth-token", up_token],
            port=up_port, ready_path="/healthz", log_path=tmp / "upstream.log")
        rules = tmp / "rules.toml"
        rules.write_text(ha_stack.ALWAYS_OPEN)
        env = {"TWILIO_ACCOUNT_SID": up_sid, "TWILIO_AUTH_TOKEN": up_token,
               "TWILIO_API_BASE": upstream.url, "PROXY_CONFIG": str(rules),
               "LOG_LEVEL": "info"}
        direct = start_proxy(tmp, DATABASE_URL=made.direct_url, **env)
        pooled = [start_proxy(tmp, **made.gate_env(), **env) for _ in range(2)]
        balancer = Balancer(pooled, tmp)
        try:
            for gate in (direct, *pooled):
                await wait_ready(gate, timeout=120)
            balancer.start()
            await ha_stack.in_rotation(balancer, 2)
            async with aiohttp.ClientSession() as session:
                org = await seed_org(session, balancer.base)
                numbers = await seed_consents(session, org, "sms", numbers_count)
            # One durable commit on the primary, acknowledged by the synchronous standby: how
            # long the audit chain's lock is held at the least by each decision commit.
            sync_commit = await pg.commit_latency(made.primary.app_url(), 1000)
            # A warm-up for each gate: connections made, statements cached.
            for gate in (direct, *pooled):
                await phase("warm-up", gate.base, [gate], made, org, numbers, 200, 8)
            results.append(await phase("direct", direct.base, [direct], made, org,
                                       numbers, requests, at_once))
            results.append(await phase("pooled", pooled[0].base, [pooled[0]], made, org,
                                       numbers, requests, at_once))
            results.append(await phase("two-gates", balancer.base, pooled, made, org,
                                       numbers, requests, at_once))
        finally:
            balancer.stop()
            for gate in (direct, *pooled):
                gate.kill()
            await services.stop(upstream)
    base = results[0]["rps"]
    for result in results:
        result["rps_ratio_to_direct"] = round(result["rps"] / base, 3) if base else None
    planned = capacity(results[0], results[1])
    # The chain's lock lets one decision commit through at a time, across every gate: at most
    # 1 / (commit time) decision commits per second, each carrying a group-commit batch.
    planned["chain_commits_per_second_at_most"] = round(1e3 / sync_commit["p50_ms"], 1)
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "nproc": os.cpu_count(), "sync_commit": sync_commit, "phases": results,
            "capacity": planned}


def table(report: Mapping[str, Any]) -> str:
    lines = ["phase      gates   rps  ratio  p50ms  p99ms  gate-ms  pg-ms  stby-ms  bnc-ms  "
             "commits  WAL-B  syncs  queries  per-commit  chain-wait"]
    for p in report["phases"]:
        cpu, per = p["cpu_ms_per_decision"], p["per_decision"]
        lines.append(
            f"{p['phase']:<10} {p['gates']:>5} {p['rps']:>5.0f} {p['rps_ratio_to_direct']:>6}"
            f" {p['p50_ms']:>6} {p['p99_ms']:>6} {cpu['gates']:>8} {cpu['primary']:>6}"
            f" {cpu['standby']:>8} {cpu['pgbouncer']:>7} {per['commits']:>8}"
            f" {per['wal_bytes']:>6.0f} {per['wal_syncs']:>6} {per['pooler_queries']:>8}"
            f" {p['group_commit_items_per_commit']!s:>11}"
            f" {p['waits']['chain_lock_waiting_share']:>11}")
    lines.append("sync commit: " + json.dumps(report["sync_commit"]))
    lines.append(json.dumps(report["capacity"]))
    return "\n".join(lines)


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ha", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--at-once", type=int, default=32)
    parser.add_argument("--numbers", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        report = asyncio.run(main(args.requests, args.at_once, args.numbers, Path(tmp)))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))


if __name__ == "__main__":
    cli()
