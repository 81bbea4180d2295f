"""bench/ runs: a tiny benchmark completes and writes every result. Benchmarks are not tests,
so no number is checked against a target here, only that each one was measured."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    "registry_import": ("rows_per_s", "copy_rows_per_s", "ratio", "seconds", "peak_rss_mb"),
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
    # Item 5 times the two stores in alternating rounds and compares their medians.
    store = results["store_size"]
    assert len(store["small"]["rounds"]) == len(store["large"]["rounds"]) == 3
    assert len(store["round_p50_ratios"]) == 3
    assert store["small"]["consent_rows"] < store["large"]["consent_rows"]
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert "gate: consent-proxy, throughput" in done.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_gate_instructions_counts_both_forwarders(tmp_path: Path, server_url: str) -> None:
    env = os.environ | {"DATABASE_URL": server_url}
    out = tmp_path / "gate.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gate_instructions", "--warm", "20", "--n", "20",
         "--concurrency", "4", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text("utf-8"))
    assert sum(result["bare"]["statuses"].values()) == 20
    assert sum(result["proxy"]["statuses"].values()) == 20
    assert set(result["bare"]["statuses"]) == {"201"}, "the bare forwarder forwards all"
    assert "201" in result["proxy"]["statuses"]
    # Counting covered the requests only: a few hundred thousand instructions each, not the
    # start-up's billions.
    for name in ("bare", "proxy"):
        assert 50_000 < result[name]["instructions_per_request"] < 20_000_000, result
    assert result["ratio"] > 1, "the gate does more than forward"
    # The proxy's batch-size metric, read around the counted creates: 20 lookups and 20
    # decisions went out, in at most one trip each.
    shared = result["proxy"]["batches"]
    assert set(shared) == {"group-fetch", "group-commit"}
    fetch = shared["group-fetch"]
    assert fetch["items_per_trip"] >= 1
    assert fetch["trips_per_request"] * fetch["items_per_trip"] == pytest.approx(1, abs=0.05)
    assert 0 < shared["group-commit"]["trips_per_request"] <= 2


def test_gate_instructions_reads_the_dump_total(tmp_path: Path) -> None:
    from bench.gate_instructions import _total

    (tmp_path / "callgrind.41.1").write_text(
        "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123456\n"
        "fn=(1) main\n5 100\ntotals: 123456\n")
    assert _total(tmp_path, 41) == 123456
    with pytest.raises(RuntimeError, match="no dump"):
        _total(tmp_path, 42)


def test_counted_commands_run_python_with_a_fixed_hash_seed() -> None:
    from bench.instructions import counted

    probe = "import sys; print(sys.flags.hash_randomization, hash('consent-proxy'))"
    runs = [subprocess.run(counted([sys.executable, "-c", probe]), capture_output=True,
                           text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].split()[0] == "0"  # randomization off: the seed is fixed


def test_a_run_is_dirty_when_measured_code_changed(tmp_path: Path) -> None:
    from bench.run import dirty

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for path in ("proxy/app.py", "bench/load.lua", "bench/results/latest.json", "notes.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "v1")
    assert not dirty(tmp_path)
    (tmp_path / "bench/results/latest.json").write_text("v2\n")  # every run rewrites it
    (tmp_path / "notes.md").write_text("v2\n")
    assert not dirty(tmp_path)
    (tmp_path / "bench/load.lua").write_text("v2\n")
    assert dirty(tmp_path)
    git("checkout", "--", "bench/load.lua")
    (tmp_path / "proxy/new.py").write_text("x = 1\n")
    assert dirty(tmp_path)
