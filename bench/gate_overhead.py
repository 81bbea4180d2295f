"""Item 1: what the gate costs. The same load generator, in the same run, alternately against
the bare forwarder and consent-proxy; the median of the rounds for each."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bench import loadgen, wrk
from bench.load import LoadResult, Target
from bench.services import add_other, cpu_share, cpu_snapshot, median_shares
from bench.sizes import Size

LoadgenKind = Literal["wrk", "python"]
ORDER = ("bare", "proxy")


@dataclass(frozen=True, slots=True)
class LoadGenerator:
    kind: LoadgenKind
    threads: int  # wrk only
    fallback_reason: str | None = None  # why the Python generator stands in for wrk

    async def run(self, target: Target, connections: int, seconds: float) -> LoadResult:
        if self.kind == "wrk":
            return await wrk.run(target, connections, seconds, self.threads)
        return await loadgen.run(target, connections, seconds)

    def describe(self, target: Target, size: Size) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "kind": self.kind, "connections": size.connections,
            "round_seconds": size.round_seconds, "rounds": size.rounds,
            "warmup_seconds": size.warmup_seconds, "unloaded_seconds": size.unloaded_seconds,
            "closed_loop": True, "fallback_reason": self.fallback_reason,
        }
        if self.kind == "wrk":
            cmd = wrk.command(target, size.connections, size.round_seconds, self.threads)
            cmd[cmd.index("--") + 2] = "'Basic …'"  # the dialer's credentials stay out
            settings |= {"version": wrk.version(), "threads": self.threads,
                         "command": " ".join(cmd)}
        else:
            settings |= {"implementation": "bench/loadgen.py (asyncio + aiohttp, one process)"}
        return settings


async def _round(gen: LoadGenerator, target: Target, connections: int, seconds: float,
                 pids: Mapping[str, int]) -> tuple[LoadResult, dict[str, float]]:
    before = cpu_snapshot(pids)
    result = await gen.run(target, connections, seconds)
    cpu = cpu_share(before, cpu_snapshot(pids))
    cpu["loadgen"] = round(100 * result.loadgen_cpu_seconds / result.seconds, 1)
    return result, add_other(cpu)


def _median(results: list[LoadResult]) -> dict[str, float]:
    return {
        "rps": round(statistics.median(r.rps for r in results), 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in results), 3),
        "non2xx_fraction": round(statistics.median(r.non2xx_fraction for r in results), 4),
        "socket_errors": sum(r.socket_errors for r in results),
    }


def _cpu_median(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per target, the median CPU share of each process over its rounds."""
    out: dict[str, dict[str, float]] = {}
    for name in ORDER:
        shares = [r["cpu_percent_of_one_core"] for r in rounds if r["target"] == name]
        out[name] = median_shares(shares, ("loadgen", "server", "upstream", "postgres",
                                           "other", "machine", "steal"))
    return out


async def _unloaded(gen: LoadGenerator, targets: Mapping[str, Target],
                    size: Size) -> dict[str, Any]:
    """One connection, so no request waits behind another: the gate's own latency."""
    out: dict[str, Any] = {}
    for name in ORDER:
        result = await gen.run(targets[name], 1, size.unloaded_seconds)
        out[name] = {"rps": result.rps, "p50_ms": round(result.p50_ms, 3),
                     "p99_ms": round(result.p99_ms, 3)}
    out["added_p50_ms"] = round(out["proxy"]["p50_ms"] - out["bare"]["p50_ms"], 3)
    out["added_p99_ms"] = round(out["proxy"]["p99_ms"] - out["bare"]["p99_ms"], 3)
    return out


async def measure(gen: LoadGenerator, targets: Mapping[str, Target], pids: Mapping[str, int],
                  size: Size) -> dict[str, Any]:
    """Warm both up, then bare, proxy, bare, proxy, … for `size.rounds` rounds."""
    for name in ORDER:
        await gen.run(targets[name], size.connections, size.warmup_seconds)
    rounds: list[dict[str, Any]] = []
    results: dict[str, list[LoadResult]] = {name: [] for name in ORDER}
    for number in range(1, size.rounds + 1):
        for name in ORDER:
            watched = {"server": pids[name], "upstream": pids["upstream"]}
            result, cpu = await _round(gen, targets[name], size.connections,
                                       size.round_seconds, watched)
            results[name].append(result)
            rounds.append({"target": name, "round": number, **result.to_json(),
                           "cpu_percent_of_one_core": cpu})
    bare, proxy = _median(results["bare"]), _median(results["proxy"])
    return {
        "cpu_median": _cpu_median(rounds),
        "loadgen": gen.describe(targets["proxy"], size),
        "bare": bare,
        "proxy": proxy,
        "throughput_ratio": round(proxy["rps"] / bare["rps"], 3),
        "added_p50_ms": round(proxy["p50_ms"] - bare["p50_ms"], 3),
        "added_p99_ms": round(proxy["p99_ms"] - bare["p99_ms"], 3),
        "unloaded": await _unloaded(gen, targets, size),
        "rounds": rounds,
    }
