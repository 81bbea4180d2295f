"""Debian's Kamailio, SIPp and tcpdump for item 6 (bench/post_dial.py): each started on a free
port of 127.0.0.1 and waited for, always stopped with everything it forked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bench import seed
from bench.services import REPO, log_tail

KAMAILIO = REPO / "integrations" / "kamailio"
CFG = KAMAILIO / "kamailio.cfg"
SCENARIOS = KAMAILIO / "sipp"
RATE = 20  # calls per second, as a dialer places them
READY_WITHIN = 30.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _spawn(args: Sequence[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)


async def stop(process: asyncio.subprocess.Process, signum: int = signal.SIGTERM) -> None:
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
    port = free_udp_port()
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
            await stop(process)
            raise RuntimeError(f"kamailio ({cfg.name}) did not start:\n{log_tail(log)}")
    return process, port


def _udp_bound(port: int) -> bool:
    wanted = f":{port:04X}"
    return any(line.split()[1].endswith(wanted)
               for line in Path("/proc/net/udp").read_text().splitlines()[1:])


async def start_carrier(workdir: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = free_udp_port()
    log = workdir / "carrier.log"
    process = await _spawn(["sipp", "-sf", str(SCENARIOS / "carrier.xml"), "-i", "127.0.0.1",
                            "-p", str(port), "-nostdin"], log)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    while not _udp_bound(port):
        if process.returncode is not None or loop.time() > deadline:
            await stop(process)
            raise RuntimeError(f"sipp (carrier) did not start:\n{log_tail(log)}")
        await asyncio.sleep(0.05)  # until the kernel shows SIPp's socket
    return process, port


@contextlib.asynccontextmanager
async def capture(pcap: Path, ports: Sequence[int]) -> AsyncIterator[int]:
    """tcpdump on loopback for what is sent to and from the SIP ports, from the moment it
    says it is listening until it has written everything sent before the block ended."""
    marker_port = free_udp_port()
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
        await stop(process, signal.SIGINT)


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
         "-p", str(free_udp_port()), f"127.0.0.1:{port}", "-m", str(len(numbers)),
         "-r", str(RATE), "-nostdin", "-cid_str", f"%u-{name}-{uuid.uuid4().hex[:8]}@%s",
         "-timeout", "120s", "-timeout_error", "-default_behaviors", "all,-abortunexp"], log)
    try:
        returncode = await process.wait()
    finally:
        await stop(process)
    if returncode != 0:
        raise RuntimeError(f"sipp (dialer, {name}) exited with {returncode}:\n{log_tail(log)}")



async def read_capture(pcap: Path) -> str:
    """The capture as text: timestamps as seconds since the epoch, payloads in ASCII."""
    process = await asyncio.create_subprocess_exec(
        "tcpdump", "-r", str(pcap), "-tt", "-n", "-A", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tcpdump -r: {stderr.decode(errors='replace')}")
    return stdout.decode("ascii", "replace")
