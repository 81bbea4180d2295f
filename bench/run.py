"""`python -m bench.run`: start everything, run the seven benchmarks, print one table and write
latest.json and latest.png. `make bench` runs it at full size.

Everything started here is stopped here, and the scratch database is dropped, also on failure,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench import (
    dial_api,
    engine,
    gate_overhead,
    pg,
    post_dial,
    registry_import,
    report,
    scrub,
    seed,
    services,
    store_size,
    wrk,
)
from bench.gate_overhead import LoadGenerator
from bench.load import Target
from bench.services import REPO, Service
from bench.sizes import SIZES, Size
from proxy import db
from proxy.logging import configure_logging
from proxy.settings import RuleSettings, load_rules

SECTIONS = ("gate", "engine", "scrub", "store-size", "sip", "import")
CONFIG = REPO / "config" / "consent-proxy.toml"
# wrk threads: measured on the 2-core bench machine, 3 x 15 s alternating, wrk used under 10 %
# of one core either way; -t2 gave the bare forwarder more throughput (median 3,500 vs 3,190
# req/s) and consent-proxy the same (630 vs 635), so -t2 saturates better. bench/README.md.
WRK_THREADS = 2


@dataclass(frozen=True, slots=True)
class Options:
    size: Size
    loadgen: str
    wrk_threads: int
    skip: frozenset[str]
    out: Path


@dataclass(frozen=True, slots=True)
class Stack:
    """The running services and what a run needs to talk to them."""

    database_url: str
    upstream: Service
    bare: Service
    proxy: Service
    admin_token: str


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else the Python load generator")
    parser.add_argument("--wrk-threads", type=int, default=WRK_THREADS)
    parser.add_argument("--skip", action="append", default=[], metavar="SECTION",
                        help=f"skip one of {', '.join(SECTIONS)} (repeat or comma-separate)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    skip = frozenset(s.strip() for item in args.skip for s in item.split(",") if s.strip())
    if skip - set(SECTIONS):
        parser.error(f"--skip: unknown section {sorted(skip - set(SECTIONS))[0]!r}")
    return Options(SIZES[args.size], args.loadgen, args.wrk_threads, skip, args.out.resolve())


def choose_loadgen(kind: str, threads: int) -> LoadGenerator:
    if kind == "python":
        return LoadGenerator("python", threads)
    if wrk.available():
        return LoadGenerator("wrk", threads)
    if kind == "wrk":
        raise SystemExit("bench: --loadgen wrk, but wrk is not installed (apt-get install wrk)")
    return LoadGenerator("python", threads, fallback_reason="wrk not found on PATH")


def cpu_speed_ms() -> float:
    """A fixed pure-Python loop, best of three, in ms: the bench VM's CPU speed drifts, and
    this tells a reader whether two runs ran on an equally fast machine."""
    best = math.inf
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def _git(*args: str, repo: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    return done.stdout.strip()


# What a run measures: the proxy, its schema and settings, its dependencies and the bench
# itself (load script, forwarder, upstream). Not bench/results, which every run rewrites.
MEASURED = ("proxy", "sql", "config", "pyproject.toml", "bench", ":(exclude)bench/results")


def dirty(repo: Path = REPO) -> bool:
    """Whether what a run measures differs from the commit it names."""
    return bool(_git("status", "--porcelain", "--", *MEASURED, repo=repo))


def machine_meta(opts: Options) -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "size": opts.size.name, "size_parameters": dataclasses.asdict(opts.size),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu_model": cpu_model, "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "aiohttp": metadata.version("aiohttp"), "asyncpg": metadata.version("asyncpg"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": dirty(),
        "skipped": sorted(opts.skip), "cpu_speed_ms_start": cpu_speed_ms(),
    }


# --- services --------------------------------------------------------------------------------

async def start_services(database_url: str, out: Path, stack: contextlib.AsyncExitStack, *,
                         wrap: Sequence[str] = (), ready_within: float = 60) -> Stack:
    """The fake upstream, the bare forwarder and consent-proxy; `wrap` runs the last two
    under another command (valgrind, for bench/gate_instructions.py)."""
    up_sid, up_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    up_port, bare_port, proxy_port = (services.free_port() for _ in range(3))
    upstream = await services.start(
        "upstream", ["-m", "bench.upstream", "--port", str(up_port), "--account-sid", up_sid,
                     "--auth-token", up_token],
        port=up_port, ready_path="/healthz", log_path=out / "upstream.log.tmp")
    stack.push_async_callback(services.stop, upstream)
    bare = await services.start(
        "bare forwarder", ["-m", "bench.bare_forwarder", "--port", str(bare_port),
                           "--upstream", upstream.url, "--account-sid", up_sid,
                           "--auth-token", up_token],
        port=bare_port, ready_path="/healthz", log_path=out / "bare.log.tmp", wrap=wrap,
        ready_within=ready_within)
    stack.push_async_callback(services.stop, bare)
    admin_token = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if k != "PUBLIC_URL"} | {
        "DATABASE_URL": database_url, "PROXY_HOST": "127.0.0.1", "PROXY_PORT": str(proxy_port),
        "PROXY_CONFIG": str(CONFIG), "PROXY_SECRET": secrets.token_hex(32),
        "ADMIN_TOKEN": admin_token, "TWILIO_ACCOUNT_SID": up_sid,
        "TWILIO_AUTH_TOKEN": up_token, "TWILIO_API_BASE": upstream.url, "LOG_LEVEL": "info",
    }
    proxy = await services.start(
        "consent-proxy", ["-m", "proxy.cli", "serve"], port=proxy_port, ready_path="/readyz",
        log_path=out / "proxy.log.tmp", env=env, wrap=wrap, ready_within=ready_within)
    stack.push_async_callback(services.stop, proxy)
    return Stack(database_url, upstream, bare, proxy, admin_token)


# --- the seven benchmarks --------------------------------------------------------------------

async def run_gate(stack: Stack, gen: LoadGenerator, dialer: seed.Dialer, bodies: Path,
                   dial_bodies: Path, size: Size) -> dict[str, Any]:
    targets = {name: Target(name, service.url, dialer.messages_path, dialer.authorization,
                            bodies)
               for name, service in (("bare", stack.bare), ("proxy", stack.proxy))}
    pids = {"bare": stack.bare.pid, "proxy": stack.proxy.pid, "upstream": stack.upstream.pid}
    result = await gate_overhead.measure(gen, targets, pids, size)
    result["postgres_commit"] = await pg.commit_latency(stack.database_url,
                                                        size.latency_samples)
    conn = await asyncpg.connect(stack.database_url)
    try:
        mix = await conn.fetch("SELECT decision, reason, count(*) AS n FROM decisions "
                               "GROUP BY decision, reason ORDER BY n DESC")
    finally:
        await conn.close()
    result["proxy_decisions"] = {f"{r['decision']} {r['reason']}": r["n"] for r in mix}
    # The dial API beside the Twilio front: same run, same proxy, same load generator.
    result["dial"] = await dial_api.measure(
        gen, dial_api.target(stack.proxy.url, dialer.authorization, dial_bodies), pids, size,
        stack.database_url)
    return result


async def prepare_small_store(twin_url: str, size: Size, at: dt.datetime) -> dict[str, Any]:
    """Item 5's small store: a twin database with load 1's facts only (as the main one holds
    before it grows), kept to the end for the rounds that alternate between the two."""
    await db.migrate_url(twin_url)
    conn = await asyncpg.connect(twin_url)
    try:
        await seed.seed_sender(conn)
        await seed.copy_facts(conn, seed.load_facts(size.load_numbers, at))
        return await store_size.table_facts(conn)
    finally:
        await conn.close()


async def run_store_size(stack: Stack, twin_url: str, small_facts: dict[str, Any],
                         rules: RuleSettings, size: Size, at: dt.datetime) -> dict[str, Any]:
    numbers = seed.sample(store_size.allowed_load_numbers(size.load_numbers),
                          size.latency_samples, seed=5)
    conn = await asyncpg.connect(stack.database_url)
    try:
        grown = await seed.grow_consents(conn, size.store_large, at)
        facts = await store_size.table_facts(conn)
    finally:
        await conn.close()
    timed = await store_size.alternate({"small": twin_url, "large": stack.database_url},
                                       rules, numbers, at)
    small, large = small_facts | timed["small"], facts | timed["large"]
    cold_numbers = store_size.sample_grown(int(grown["added"]), size.latency_samples)
    cold = await store_size.latency(stack.database_url, rules, cold_numbers, at)
    plans = {"load_number": await store_size.explain(stack.database_url, numbers[0]),
             "grown_number": await store_size.explain(stack.database_url, cold_numbers[0])}
    return {
        "method": "in-process proxy.gate.evaluate over a 1-connection pool, sequential, "
                  "SMS, the same sampled numbers at both sizes; the small store (a twin "
                  f"database) and the large one timed in turn, {store_size.ROUNDS} rounds "
                  "each, medians",
        "small": small, "large": large, "large_cold": cold, "grow": grown,
        "p50_ratio": round(large["p50_ms"] / small["p50_ms"], 3),
        "p99_ratio": round(large["p99_ms"] / small["p99_ms"], 3),
        "round_p50_ratios": [round(b["p50_ms"] / a["p50_ms"], 3)
                             for a, b in zip(small["rounds"], large["rounds"], strict=True)],
        "index_scans_only": all(store_size.index_scans_only(p) for p in plans.values()),
        "index_scans_only_all_fact_tables": all(
            store_size.index_scans_only(p, store_size.FACT_TABLES) for p in plans.values()),
        "explain": plans,
    }


async def run_all(opts: Options, gen: LoadGenerator, results: dict[str, Any]) -> None:
    rules = load_rules(CONFIG)
    server, source = await pg.server_url()
    results["meta"]["database_server"] = f"{source}: {pg.redacted(server)}"
    results["meta"]["proxy_log"] = str(opts.out / "proxy.log.tmp")
    async with contextlib.AsyncExitStack() as exits:
        database_url = await exits.enter_async_context(pg.scratch_database(server))
        await db.migrate_url(database_url)
        stack = await start_services(database_url, opts.out, exits)
        dialer = await seed.seed_admin(stack.proxy.url, stack.admin_token)
        # Every seeded fact lies before `at`, which is also the fixed moment of the scrub and
        # of item 5 (the proxy's own clock decides load 1, also after all the facts).
        at = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        conn = await asyncpg.connect(database_url)
        try:
            await seed.copy_facts(conn, seed.load_facts(opts.size.load_numbers, at))
            if "gate" not in opts.skip:
                await seed.copy_facts(conn, seed.dial_facts(opts.size.load_numbers, at))
            results["meta"]["postgres_version"] = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        bodies, dial_bodies = opts.out / "bodies.tmp", opts.out / "dial-bodies.tmp"
        body_mix = seed.write_bodies(bodies, opts.size.load_numbers)
        exits.callback(bodies.unlink, missing_ok=True)
        dial_mix = seed.write_dial_bodies(dial_bodies, opts.size.load_numbers)
        exits.callback(dial_bodies.unlink, missing_ok=True)
        twin = None
        if "store-size" not in opts.skip:
            twin_url = await exits.enter_async_context(pg.scratch_database(server))
            twin = twin_url, await prepare_small_store(twin_url, opts.size, at)
        if "gate" not in opts.skip:
            gate = await run_gate(stack, gen, dialer, bodies, dial_bodies, opts.size)
            gate["dial"]["body_mix"] = dial_mix
            results["gate_overhead"] = gate | {"body_mix": body_mix}
            results["memory"] = {
                "peak_rss_mb": round(services.peak_rss_mb(stack.proxy.pid), 1),
                "rss_after_load_mb": round(services.rss_mb(stack.proxy.pid), 1),
                "measured": "VmHWM of the consent-proxy process after load 1 (includes start-up)",
            }
        if "sip" not in opts.skip:
            why = post_dial.unavailable()
            results["post_dial"] = {"skipped": True, "reason": why} if why else (
                await post_dial.measure(database_url, stack.proxy.url, stack.proxy.pid, dialer,
                                        opts.size, opts.out, at, opts.out / "proxy.log.tmp"))
        if "engine" not in opts.skip:
            results["engine"] = engine.measure(opts.size.engine_decisions, rules)
        if "scrub" not in opts.skip:
            results["scrub"] = await scrub.measure(
                database_url, stack.proxy.url, stack.proxy.pid, stack.admin_token, opts.out,
                opts.size.scrub_numbers, at)
            if "memory" in results:
                results["memory"]["peak_rss_after_scrub_mb"] = round(
                    services.peak_rss_mb(stack.proxy.pid), 1)
                # The scrub's number parsing runs in a worker process of the proxy's own.
                results["memory"]["scrub_worker_peak_rss_mb"] = [
                    round(services.peak_rss_mb(pid), 1)
                    for pid in services.children(stack.proxy.pid)]
        if twin is not None:
            results["store_size"] = await run_store_size(stack, *twin, rules, opts.size, at)
        if "import" not in opts.skip:
            results["registry_import"] = await registry_import.measure(
                database_url, opts.out, opts.size.import_rows)


def _skips(opts: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reasons = {"gate_overhead": "gate", "memory": "gate", "engine": "engine",
               "scrub": "scrub", "store_size": "store-size", "post_dial": "sip",
               "registry_import": "import"}
    for key, section in reasons.items():
        if section in opts.skip:
            out[key] = {"skipped": True, "reason": f"--skip {section}"}
    return out


async def _main(opts: Options, gen: LoadGenerator, results: dict[str, Any]) -> int:
    # SIGTERM (e.g. a test timeout) cancels the run like Ctrl-C does, so the exit stack still
    # stops every service and drops the database.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = time.perf_counter()
    try:
        await run_all(opts, gen, results)
    except Exception:
        # What was measured before the failure, for the post-mortem; latest.json keeps the
        # last complete run.
        report.write_json(results, opts.out / "partial.json.tmp")
        print(f"bench: failed; partial results in {opts.out / 'partial.json.tmp'}",
              file=sys.stderr)
        raise
    results["meta"]["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    results["meta"]["cpu_speed_ms_end"] = cpu_speed_ms()
    report.write_json(results, opts.out / "latest.json")
    report.chart(results, opts.out / "latest.png")
    print(report.table(results))
    print(f"\nwritten: {opts.out / 'latest.json'}, {opts.out / 'latest.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    configure_logging("warning")  # the migrations' info lines would interleave the table
    gen = choose_loadgen(opts.loadgen, opts.wrk_threads)
    results: dict[str, Any] = {"meta": machine_meta(opts)} | _skips(opts)
    try:
        return asyncio.run(_main(opts, gen, results))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; services stopped, scratch database dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
