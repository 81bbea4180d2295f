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
import os
import re
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import pg, seed
from bench.load import percentile
from bench.services import (
    REPO,
    MachineCpu,
    children,
    cpu_seconds,
    log_tail,
    machine_cpu,
    median_shares,
    postgres_cpu,
)
from bench.sizes import Size

KAMAILIO = REPO / "integrations" / "kamailio"
CFG = KAMAILIO / "kamailio.cfg"
SCENARIOS = KAMAILIO / "sipp"
GATE_CALL = "\troute(GATE);\n"
BASELINE_CALL = "\troute(TO_CARRIER);\n"
TARGETS = ("baseline", "gated")
TOOLS = ("kamailio", "sipp", "tcpdump")
RATE = 20  # calls per second, as a dialer places them
READY_WITHIN = 30.0
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


# --- processes -------------------------------------------------------------------------------

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _spawn(args: Sequence[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)


async def _stop(process: asyncio.subprocess.Process, signum: int = signal.SIGTERM) -> None:
    """The process and everything it forked (its own session), SIGKILL after 15 s."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _answers_options(port: int) -> bool:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(
        Receiver, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port))
    try:
        local = transport.get_extra_info("sockname")[1]
        tag = uuid.uuid4().hex
        transport.sendto((
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{tag}\r\n"
            f"From: <sip:bench@127.0.0.1>;tag={tag[:8]}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: {tag}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode())
        return (await asyncio.wait_for(got, 0.5)).startswith(b"SIP/2.0 200")
    except TimeoutError:
        return False
    finally:
        transport.close()


async def start_kamailio(cfg: Path, workdir: Path, carrier_port: int,
                         gate_conf: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_udp_port()
    log = workdir / "kamailio.log"
    args = ["kamailio", "-DD", "-E", "-f", str(cfg), "-w", str(workdir), "-Y", str(workdir),
            "-P", str(workdir / "kamailio.pid"), "-m", "64", "-M", "8",
            "-A", f"LISTEN=udp:127.0.0.1:{port}",
            "-A", f'CARRIER_URI="sip:127.0.0.1:{carrier_port}"',
            "-A", f'GATE_CONFIG="{gate_conf}"']
    process = await _spawn(args, log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    while not await _answers_options(port):
        if process.returncode is not None or loop.time() > deadline:
            await _stop(process)
            raise RuntimeError(f"kamailio ({cfg.name}) did not start:\n{log_tail(log)}")
    return process, port


def _udp_bound(port: int) -> bool:
    wanted = f":{port:04X}"
    return any(line.split()[1].endswith(wanted)
               for line in Path("/proc/net/udp").read_text().splitlines()[1:])


async def start_carrier(workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = _free_udp_port()
    log = workdir / "carrier.log"
    process = await _spawn(["sipp", "-sf", str(SCENARIOS / "carrier.xml"), "-i", "127.0.0.1",
                            "-p", str(port), "-nostdin"], log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    while not _udp_bound(port):
        if process.returncode is not None or loop.time() > deadline:
            await _stop(process)
            raise RuntimeError(f"sipp (carrier) did not start:\n{log_tail(log)}")
        await asyncio.sleep(0.05)  # until the kernel shows SIPp's socket
    return process, port


@contextlib.asynccontextmanager
async def capture(pcap: Path, ports: Sequence[int]) -> AsyncIterator[int]:
    """tcpdump on loopback for what is sent to and from the SIP ports, from the moment it
    says it is listening until it has written everything sent before the block ended."""
    marker_port = _free_udp_port()
    expression = "udp and (" + " or ".join(
        [f"dst port {p}" for p in [*ports, marker_port]] + [f"src port {p}" for p in ports]) + ")"
    process = await asyncio.create_subprocess_exec(
        "tcpdump", "-i", "lo", "-n", "-U", "-s", "0", "-w", str(pcap), expression,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), READY_WITHIN)
        if b"listening on" not in line:
            raise RuntimeError(f"tcpdump: {line.decode(errors='replace')}")
        yield process.pid
        await _drained(pcap, marker_port)
    finally:
        await _stop(process, signal.SIGINT)


def _holds(path: Path, data: bytes) -> bool:
    return data in path.read_bytes()


async def _drained(pcap: Path, port: int) -> None:
    """Stopped at once, tcpdump drops what the kernel still buffers for it: a marker sent
    last, once in the file (-U writes each packet as it comes), means all came before it."""
    marker = f"bench-marker-{uuid.uuid4().hex}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(marker, ("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    while not _holds(pcap, marker):
        if loop.time() > deadline:
            raise RuntimeError("tcpdump did not write the end marker")
        await asyncio.sleep(0.05)  # until tcpdump has written it


async def place_calls(port: int, numbers: Sequence[str], workdir: Path, name: str) -> None:
    """SIPp as the dialer: one allowed call per number at RATE per second."""
    inf = workdir / f"{name}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{n};{seed.SENDER};\n" for n in numbers))
    log = workdir / f"{name}.log"
    process = await _spawn(
        ["sipp", "-sf", str(SCENARIOS / "dialer.xml"), "-inf", str(inf), "-i", "127.0.0.1",
         "-p", str(_free_udp_port()), f"127.0.0.1:{port}", "-m", str(len(numbers)),
         "-r", str(RATE), "-nostdin", "-cid_str", f"%u-{name}-{uuid.uuid4().hex[:8]}@%s",
         "-timeout", "120s", "-timeout_error", "-default_behaviors", "all,-abortunexp"], log)
    try:
        returncode = await process.wait()
    finally:
        await _stop(process)
    if returncode != 0:
        raise RuntimeError(f"sipp (dialer, {name}) exited with {returncode}:\n{log_tail(log)}")


# --- reading the capture ----------------------------------------------------------------------

async def read_capture(pcap: Path) -> str:
    """The capture as text: timestamps as seconds since the epoch, payloads in ASCII."""
    process = await asyncio.create_subprocess_exec(
        "tcpdump", "-r", str(pcap), "-tt", "-n", "-A", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tcpdump -r: {stderr.decode(errors='replace')}")
    return stdout.decode("ascii", "replace")


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
    ordered = sorted(samples)
    return {"calls": len(ordered), "p50_ms": round(percentile(ordered, 50), 3),
            "p99_ms": round(percentile(ordered, 99), 3), "max_ms": round(ordered[-1], 3)}


# --- the run ------------------------------------------------------------------------------------

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
    return summary(took) if took else {"calls": 0}


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
                await _stop(process)
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
            r |= summary(delays) if delays else {"calls": 0}
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
