"""Item 6: the post-dial delay the consent check adds, measured on the wire.

Two Kamailio instances run side by side, both relaying to one SIPp carrier: the shipped
integrations/kamailio/kamailio.cfg ("gated": every INVITE asks consent-proxy) and the same
configuration with the check taken out ("baseline": `route(GATE);` becomes the relay it ends
in, `route(TO_CARRIER);`). SIPp places the calls, alternating rounds, baseline first; tcpdump
on loopback timestamps each INVITE as it reaches Kamailio and as it leaves for the carrier,
and the post-dial delay of a call is the difference (matched by Call-ID). Every gated call is
allowed: each number has a contact request whose requested window covers the run, so calling
hours never deny (N14) and each request is used once (N6).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import pg, seed
from bench.load import percentile
from bench.services import (
    MachineCpu,
    children,
    cpu_seconds,
    machine_cpu,
    median_shares,
    postgres_cpu,
)
from bench.sip_stack import (
    CFG,
    RATE,
    capture,
    place_calls,
    read_capture,
    start_carrier,
    start_kamailio,
    stop,
)
from bench.sizes import Size

GATE_CALL = "\troute(GATE);\n"
BASELINE_CALL = "\troute(TO_CARRIER);\n"
TARGETS = ("baseline", "gated")
TOOLS = ("kamailio", "sipp", "tcpdump")
_PACKET = re.compile(r"^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): UDP", re.M)
_CALL_ID = re.compile(r"^Call-ID:\s*(\S+)", re.M | re.I)
_STATUS = re.compile(r"SIP/2\.0 (\d{3}) ")


def unavailable() -> str | None:
    """Why this benchmark cannot run here, or None."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return (f"{', '.join(absent)} not installed (make bench installs kamailio, "
                "sip-tester and tcpdump as root)")
    if os.geteuid() != 0:
        return "tcpdump needs root to capture on loopback"
    return None


def baseline_config(directory: Path) -> Path:
    """The shipped configuration without the check: the INVITE goes straight to the relay."""
    text = CFG.read_text("utf-8")
    if text.count(GATE_CALL) != 1:
        raise RuntimeError(f"{CFG} no longer calls {GATE_CALL.strip()} once")
    path = directory / "kamailio-baseline.cfg"
    path.write_text(text.replace(GATE_CALL, BASELINE_CALL), "utf-8")
    return path


def sip_number(i: int) -> str:
    return f"{seed.SIP_PREFIX}{i:07d}"


async def seed_requests(database_url: str, count: int, at: dt.datetime) -> list[str]:
    """One contact request per call (voice, the sender's topic), its window around the run."""
    numbers = [sip_number(i) for i in range(count)]
    start, end = at - dt.timedelta(hours=1), at + dt.timedelta(hours=3)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table("subjects", records=[(n,) for n in numbers],
                                         columns=["number"])
        await conn.copy_records_to_table(
            "consents", columns=["subject", "organisation_id", "channel", "topics", "kind",
                                 "given_at", "requested_start", "requested_end", "provenance",
                                 "evidence"],
            records=[(n, seed.ORGANISATION, "voice", [seed.TOPIC], "request", start, start,
                      end, "self_provided", seed.EVIDENCE) for n in numbers])
        await conn.execute("ANALYZE subjects, consents")
    finally:
        await conn.close()
    return numbers


# --- reading the capture ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Packet:
    at: float  # seconds since the epoch, the kernel's timestamp
    source: int  # UDP ports on 127.0.0.1
    destination: int
    call_id: str
    invite: bool  # an INVITE request
    status: int | None  # a response's status code


def packets(text: str) -> list[Packet]:
    """The SIP packets in `tcpdump -r … -tt -n -A` output."""
    found = []
    heads = list(_PACKET.finditer(text))
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        payload = text[head.end(): nxt.start() if nxt else len(text)]
        call = _CALL_ID.search(payload)
        if call is None:
            continue
        # Only a status line has "SIP/2.0 " and a code (a request line ends in "SIP/2.0", a
        # Via has "SIP/2.0/UDP"); searched in all of it, as the IP and UDP header bytes that
        # tcpdump prints before the payload may hold a newline.
        status = _STATUS.search(payload)
        found.append(Packet(float(head.group(1)), int(head.group(2)), int(head.group(3)),
                            call.group(1), "INVITE sip:" in payload,
                            int(status.group(1)) if status else None))
    return found


@dataclass
class Passage:
    """One call through one Kamailio, as seen on the wire."""

    arrived: float  # the first INVITE from the dialer
    left: float | None = None  # the first INVITE to the carrier
    final: int | None = None  # Kamailio's final answer to the dialer

    @property
    def delay_ms(self) -> float | None:
        return None if self.left is None else round((self.left - self.arrived) * 1000, 3)


def passages(seen: Sequence[Packet], entry: int, carrier: int) -> dict[str, Passage]:
    """Call-ID -> what happened to each call that reached the Kamailio listening on `entry`."""
    calls: dict[str, Passage] = {}
    for p in seen:
        if p.invite and p.destination == entry:
            calls.setdefault(p.call_id, Passage(p.at))
    for p in seen:
        call = calls.get(p.call_id)
        if call is None:
            continue
        if p.invite and p.destination == carrier and call.left is None:
            call.left = p.at
        elif (p.source == entry and p.destination != carrier and (p.status or 0) >= 200
              and call.final is None):
            call.final = p.status
    return calls


def delays_ms(text: str, entry: int, carrier: int) -> dict[str, float]:
    """Call-ID -> post-dial delay through the Kamailio listening on `entry`, for each call
    that went on to the carrier."""
    return {call: p.delay_ms for call, p in passages(packets(text), entry, carrier).items()
            if p.delay_ms is not None}


def summary(samples: Sequence[float]) -> dict[str, Any]:
    if not samples:
        return {"calls": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    ordered = sorted(samples)
    return {"calls": len(ordered), "p50_ms": round(percentile(ordered, 50), 3),
            "p99_ms": round(percentile(ordered, 99), 3), "max_ms": round(ordered[-1], 3)}


# --- CPU of a round --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CpuMark:
    at: float
    groups: dict[str, float]  # CPU seconds of each group of processes so far
    reaped: float  # of this process's finished children: the round's dialer SIPp
    postgres: dict[int, float]
    machine: MachineCpu


def cpu_mark(groups: dict[str, list[int]]) -> CpuMark:
    mine = os.times()
    return CpuMark(asyncio.get_running_loop().time(),
                   {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()},
                   mine.children_user + mine.children_system, postgres_cpu(), machine_cpu())


def cpu_round(before: CpuMark, after: CpuMark) -> dict[str, float]:
    """Percent of one core per group between two marks; `other` is what processes outside
    the benchmark used (near 0 on a quiet machine), `machine` and `steal` are in percent of
    all cores' time, as in bench/services.py."""
    wall = after.at - before.at
    share = {name: 100 * (after.groups[name] - before.groups[name]) / wall
             for name in after.groups}
    share["dialer"] = 100 * (after.reaped - before.reaped) / wall
    share["postgres"] = 100 * sum(cpu - before.postgres.get(pid, 0.0)
                                  for pid, cpu in after.postgres.items()) / wall
    total = after.machine.total - before.machine.total
    machine = 100 * (after.machine.busy - before.machine.busy) / total if total else 0.0
    known = sum(share.values())
    share["machine"] = machine
    share["steal"] = 100 * (after.machine.steal - before.machine.steal) / total if total else 0.0
    share["other"] = max(0.0, machine * (os.cpu_count() or 1) - known)
    return {name: round(value, 1) for name, value in share.items()}


# --- the run ------------------------------------------------------------------------------------

def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def proxy_decisions(log: Path, offset: int) -> dict[str, Any]:
    """consent-proxy's own latency for the dial API decisions it logged after `offset`."""
    took = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("route") == "/dial/v1/decisions" and "latency_ms" in entry:
                    took.append(float(entry["latency_ms"]))
    return summary(took)


async def measure(database_url: str, proxy_url: str, proxy_pid: int, dialer: seed.Dialer,
                  size: Size, out: Path, at: dt.datetime, proxy_log: Path) -> dict[str, Any]:
    # A number per call, the measured rounds and a warm-up round of each configuration (the
    # baseline asks nobody, but drawing from the same list keeps the calls alike).
    count = size.sip_calls * (size.rounds + 1) * len(TARGETS)
    numbers = iter(await seed_requests(database_url, count, at))
    with tempfile.TemporaryDirectory(prefix="bench-sip-") as tmp:
        workdir = Path(tmp)
        gate_conf = workdir / "consent-gate.conf"
        gate_conf.write_text(f"[gate]\nurl = {proxy_url}/dial/v1\n"
                             f"username = {dialer.account_sid}\n"
                             f"password = {dialer.auth_token}\n")
        gate_conf.chmod(0o600)
        cfgs = {"baseline": baseline_config(workdir), "gated": CFG}
        started: list[asyncio.subprocess.Process] = []
        try:
            carrier, carrier_port = await start_carrier(workdir)
            started.append(carrier)
            ports: dict[str, int] = {}
            groups = {"proxy": [proxy_pid], "carrier": [carrier.pid], "kamailio": []}
            for name in TARGETS:
                (workdir / name).mkdir()
                process, ports[name] = await start_kamailio(cfgs[name], workdir / name,
                                                            carrier_port, gate_conf)
                started.append(process)
                groups["kamailio"] += [process.pid, *children(process.pid)]
            pcap = out / "sip.pcap.tmp"
            rounds: list[dict[str, Any]] = []
            logged = 0
            with contextlib.ExitStack() as files:
                files.callback(pcap.unlink, missing_ok=True)
                async with capture(pcap, [*ports.values(), carrier_port]) as tcpdump:
                    groups["tcpdump"] = [tcpdump]
                    for number in range(size.rounds + 1):  # round 0 warms both up
                        if number == 1:
                            logged = _log_size(proxy_log)
                        for name in TARGETS:
                            calls = [next(numbers) for _ in range(size.sip_calls)]
                            before = cpu_mark(groups)
                            await place_calls(ports[name], calls, workdir, f"{name}{number}")
                            rounds.append({"target": name, "round": number,
                                           "cpu_percent_of_one_core":
                                               cpu_round(before, cpu_mark(groups))})
                text = await read_capture(pcap)
        finally:
            for process in reversed(started):
                await stop(process)
    result = _results(text, ports, carrier_port, rounds, size)
    # Where the added time goes: consent-proxy's own handling of the measured rounds'
    # decisions, and what one durable commit costs on this server right after them.
    result["proxy_decisions"] = proxy_decisions(proxy_log, logged)
    result["postgres_commit"] = await pg.commit_latency(database_url, size.latency_samples)
    return result


def _results(text: str, ports: dict[str, int], carrier_port: int,
             rounds: list[dict[str, Any]], size: Size) -> dict[str, Any]:
    seen = packets(text)
    per_target: dict[str, dict[str, Any]] = {}
    for name in TARGETS:
        calls = passages(seen, ports[name], carrier_port)
        measured: list[float] = []
        held: dict[str, int] = {}  # calls of the measured rounds that never went on
        arrived = 0
        for r in (r for r in rounds if r["target"] == name):
            mine = {c: p for c, p in calls.items() if f"-{name}{r['round']}-" in c}
            delays = [p.delay_ms for p in mine.values() if p.delay_ms is not None]
            r |= summary(delays)
            if r["round"] > 0:
                arrived += len(mine)
                measured += delays
                for p in mine.values():
                    if p.delay_ms is None:
                        held[str(p.final)] = held.get(str(p.final), 0) + 1
        expected = size.sip_calls * size.rounds
        if arrived != expected:
            raise RuntimeError(f"{name}: {arrived} of {expected} INVITEs seen on the wire")
        # A call answered 503 (no decision within the deadline) never reached the carrier:
        # it has no post-dial delay, and it is counted apart, by the answer it got.
        per_target[name] = summary(measured) | {"not_relayed": sum(held.values()),
                                                "not_relayed_answers": held}
    baseline, gated = per_target["baseline"], per_target["gated"]
    return {
        "method": f"tcpdump on loopback, INVITE in -> INVITE out per Call-ID; SIPp at "
                  f"{RATE} calls/s, {size.sip_calls} calls per round, {size.rounds} rounds "
                  "per configuration, alternating after a warm-up round each; every gated "
                  "call allowed (a contact request per number)",
        "baseline": baseline, "gated": gated,
        "added_p50_ms": round(gated["p50_ms"] - baseline["p50_ms"], 3),
        "added_p99_ms": round(gated["p99_ms"] - baseline["p99_ms"], 3),
        "p50_ratio": round(gated["p50_ms"] / baseline["p50_ms"], 2),
        "round_p50_ms": {name: [r["p50_ms"] for r in rounds
                                if r["target"] == name and r["round"] > 0] for name in TARGETS},
        "cpu_median": {name: median_shares([r["cpu_percent_of_one_core"] for r in rounds
                                            if r["target"] == name and r["round"] > 0])
                       for name in TARGETS},
        "rounds": rounds,
    }
