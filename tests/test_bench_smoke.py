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

from tests import sip_stack
from tests.conftest import REPO

# Every benchmark section, and the numbers in it that must have been measured.
EXPECTED = {
    "gate_overhead": ("throughput_ratio", "added_p50_ms", "added_p99_ms", "bare.rps",
                      "bare.p50_ms", "bare.p99_ms", "proxy.rps", "proxy.p50_ms", "proxy.p99_ms",
                      "postgres_commit.p50_ms", "postgres_commit.max_ms", "dial.rps",
                      "dial.p50_ms", "dial.p99_ms", "dial.one_connection.p50_ms",
                      "dial.one_connection.p99_ms"),
    "engine": ("decisions_per_s",),
    "scrub": ("numbers_per_s", "copy_rows_per_s", "ratio"),
    "memory": ("peak_rss_mb",),
    "store_size": ("small.p50_ms", "small.p99_ms", "large.p50_ms", "large.p99_ms",
                   "p50_ratio"),
    "post_dial": ("baseline.p50_ms", "baseline.p99_ms", "gated.p50_ms", "gated.p99_ms",
                  "added_p50_ms", "added_p99_ms", "p50_ratio"),
    "registry_import": ("rows_per_s", "copy_rows_per_s", "ratio", "seconds", "peak_rss_mb"),
}


def _number(data: dict[str, object], dotted: str) -> object:
    value: object = data
    for key in dotted.split("."):
        assert isinstance(value, dict), dotted
        value = value[key]
    return value


def test_tiny_bench_writes_every_result(tmp_path: Path, server_url: str) -> None:
    # Item 6 runs Debian's kamailio, SIPp and tcpdump: installed here when missing (as root;
    # outside CI a machine without them runs the rest).
    why = sip_stack.install(tmp_path, extra=("tcpdump",))
    if why and os.environ.get("CI"):
        pytest.fail(why)
    # The same PostgreSQL server as the rest of the suite (an embedded one stays up because
    # this pytest process started it); bench/ makes and drops its own database on it.
    env = os.environ | {"DATABASE_URL": server_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", "tiny", "--loadgen", "python",
         "--out", str(tmp_path), *(["--skip", "sip"] if why else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text("utf-8"))
    for section, keys in EXPECTED.items():
        if why and section == "post_dial":
            continue
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
    if not why:
        # Item 6: every measured call of each configuration was seen on the wire, relayed
        # or (a 503 at the deadline on a loaded machine) counted apart.
        sip = results["post_dial"]
        for name in ("baseline", "gated"):
            assert sip[name]["calls"] + sip[name]["not_relayed"] == 20
        assert "6 sip: added p99" in done.stdout
    assert "dial: /dial/v1/decisions p50 / p99 at 1 connection" in done.stdout
    # Every dial request had a call_id of its own: each one was decided, none replayed.
    dial = results["gate_overhead"]["dial"]
    assert dial["non2xx_fraction"] == 0
    assert dial["socket_errors"] == 0
    assert sum(dial["decisions"].values()) >= sum(
        r["requests"] for r in dial["rounds"]) + dial["one_connection"]["requests"]


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


def test_the_sip_baseline_is_the_shipped_configuration_without_the_check(tmp_path: Path) -> None:
    from bench.post_dial import baseline_config
    from bench.sip_stack import CFG

    shipped = CFG.read_text("utf-8").splitlines()
    baseline = baseline_config(tmp_path).read_text("utf-8").splitlines()
    changed = [(a, b) for a, b in zip(shipped, baseline, strict=True) if a != b]
    assert changed == [("\troute(GATE);", "\troute(TO_CARRIER);")]


def test_post_dial_delay_is_read_per_call_id_from_tcpdump_text() -> None:
    from bench.post_dial import delays_ms, packets, passages

    # `tcpdump -r … -tt -n -A`: a header line per packet, the payload (CR dropped) after it.
    text = (
        "1796290756.100000 IP 127.0.0.1.40000 > 127.0.0.1.5070: UDP, length 300\n"
        "E..se.@.@..c..........>.._.rINVITE sip:0612@127.0.0.1 SIP/2.0\nVia: x\n"
        "Call-ID: 1-gated1-ab@127.0.0.1\nCSeq: 1 INVITE\n\n"
        "1796290756.100400 IP 127.0.0.1.40000 > 127.0.0.1.5070: UDP, length 300\n"
        "E..se.@.@..c..........>.._.rINVITE sip:0612@127.0.0.1 SIP/2.0\nVia: x\n"
        "Call-ID: 1-gated1-ab@127.0.0.1\nCSeq: 1 INVITE\n\n"  # a retransmission
        "1796290756.102500 IP 127.0.0.1.5070 > 127.0.0.1.5080: UDP, length 400\n"
        "E..se.@.@..c..........>.._.rINVITE sip:0612@127.0.0.1:5080 SIP/2.0\nVia: y\n"
        "Call-ID: 1-gated1-ab@127.0.0.1\nCSeq: 1 INVITE\n\n"
        "1796290756.103000 IP 127.0.0.1.5080 > 127.0.0.1.5070: UDP, length 200\n"
        "E..se.@.@..c..........>.._.rSIP/2.0 200 OK\nCall-ID: 1-gated1-ab@127.0.0.1\n"
        "CSeq: 1 INVITE\n\n"
        "1796290756.103100 IP 127.0.0.1.5070 > 127.0.0.1.40000: UDP, length 200\n"
        "E..se.@.@..c..........>.._.rSIP/2.0 200 OK\nCall-ID: 1-gated1-ab@127.0.0.1\n"
        "CSeq: 1 INVITE\n\n"
        "1796290756.200000 IP 127.0.0.1.40000 > 127.0.0.1.5070: UDP, length 300\n"
        "E..se.@.@..c..........>.._.rINVITE sip:0613@127.0.0.1 SIP/2.0\nVia: x\n"
        "Call-ID: 2-gated1-ab@127.0.0.1\nCSeq: 1 INVITE\n\n"
        "1796290756.200100 IP 127.0.0.1.5070 > 127.0.0.1.40000: UDP, length 200\n"
        "E..se.@.@..c..........>.._.rSIP/2.0 100 trying\nCall-ID: 2-gated1-ab@127.0.0.1\n"
        "CSeq: 1 INVITE\n\n"
        "1796290756.700000 IP 127.0.0.1.5070 > 127.0.0.1.40000: UDP, length 200\n"
        "E..se.@.@..c..........>.._.rSIP/2.0 503 Service Unavailable\n"
        "Call-ID: 2-gated1-ab@127.0.0.1\nCSeq: 1 INVITE\n\n")  # never reached the carrier
    assert delays_ms(text, entry=5070, carrier=5080) == {"1-gated1-ab@127.0.0.1": 2.5}
    calls = passages(packets(text), entry=5070, carrier=5080)
    assert {c: (p.final, p.delay_ms) for c, p in calls.items()} == {
        "1-gated1-ab@127.0.0.1": (200, 2.5), "2-gated1-ab@127.0.0.1": (503, None)}
