"""bench/ runs: a tiny benchmark completes and writes every result. Benchmarks are not tests,
so no number is checked against a target here, only that each one was measured."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Every benchmark section, and the numbers in it that must have been measured.
EXPECTED = {
    "gate_overhead": ("throughput_ratio", "added_p50_ms", "added_p99_ms", "bare.rps",
                      "bare.p50_ms", "bare.p99_ms", "proxy.rps", "proxy.p50_ms", "proxy.p99_ms",
                      "postgres_commit.p50_ms", "postgres_commit.max_ms"),
    "engine": ("decisions_per_s",),
    "scrub": ("numbers_per_s", "copy_rows_per_s", "ratio"),
    "memory": ("peak_rss_mb",),
    "store_size": ("small.p50_ms", "small.p99_ms", "large.p50_ms", "large.p99_ms",
                   "p50_ratio"),
}


def _number(data: dict[str, object], dotted: str) -> object:
    value: object = data
    for key in dotted.split("."):
        assert isinstance(value, dict), dotted
        value = value[key]
    return value


def test_tiny_bench_writes_every_result(tmp_path: Path, server_url: str) -> None:
    # The same PostgreSQL server as the rest of the suite (an embedded one stays up because
    # this pytest process started it); bench/ makes and drops its own database on it.
    env = os.environ | {"DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", "tiny", "--loadgen", "python",
         "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text("utf-8"))
    for section, keys in EXPECTED.items():
        for key in keys:
            value = _number(results[section], key)
            assert isinstance(value, int | float), f"{section}.{key} = {value!r}"
            assert math.isfinite(value), f"{section}.{key} = {value!r}"
    assert results["targets"], "the table's targets are in the JSON too"
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert "gate: consent-proxy, throughput" in done.stdout
