"""Debian's Kamailio and SIPp for the tests of integrations/kamailio/: installed when missing,
started on free ports in a test's own directory, always stopped, and SIPp's message traces
read back so a test sees what each side really sent and received."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

KAMAILIO = REPO / "integrations" / "kamailio"
CFG = KAMAILIO / "kamailio.cfg"
SCENARIOS = KAMAILIO / "sipp"
# http_client.so is in kamailio-utils-modules, jansson.so in kamailio-extra-modules.
PACKAGES = ("kamailio", "kamailio-extra-modules", "kamailio-json-modules",
            "kamailio-utils-modules", "sip-tester")
# Generous: a loaded two-core machine runs other suites beside this one.
READY_WITHIN = 30.0
SIPP_TIMEOUT_S = 60
STOP_WITHIN = 15.0


# --- installing ------------------------------------------------------------------------------

def _config_loads(workdir: Path) -> bool:
    """`kamailio -c`: the configuration parses and every module it loads is installed."""
    conf = workdir / "check.conf"
    conf.write_text("[gate]\nurl = http://127.0.0.1:9/dial/v1\n")
    done = subprocess.run(
        ["kamailio", "-c", "-f", str(CFG), "-A", 'CARRIER_URI="sip:127.0.0.1:9"',
         "-A", f'GATE_CONFIG="{conf}"'], capture_output=True, text=True, check=False)
    return done.returncode == 0


def missing(workdir: Path, extra: Sequence[str] = ()) -> list[str]:
    found = [tool for tool in ("kamailio", "sipp", *extra) if shutil.which(tool) is None]
    if "kamailio" not in found and not _config_loads(workdir):
        found.append("kamailio modules")
    return found


def install(workdir: Path, extra: Sequence[str] = ()) -> str | None:
    """Install Debian's packages (and `extra` ones, named as their commands) when something is
    missing; None when all is there, else why it cannot be (no root, no apt-get)."""
    absent = missing(workdir, extra)
    if not absent:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{', '.join(absent)} missing, and no root to apt-get install them"
    # Another suite on the machine may hold dpkg's lock for a while.
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", *lock, "update", "-qq"],
                    ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends",
                     *PACKAGES, *extra]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    still = missing(workdir, extra)
    assert not still, f"still missing after apt-get install: {still}"
    return None


def ensure_installed(workdir: Path, extra: Sequence[str] = ()) -> None:
    """`install`, or skip the test where it cannot be done; in CI a test never skips."""
    why = install(workdir, extra)
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


# --- processes -------------------------------------------------------------------------------

def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _udp_bound(port: int) -> bool:
    """Whether some socket is bound to this UDP port (read from the kernel, binding nothing)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                if line.split()[1].endswith(wanted):
                    return True
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


async def _start(args: Sequence[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        # A session of its own: stopping it takes every process it forked.
        return await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the group the process leads, SIGKILL to it if it is not gone in time."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_WITHIN)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    # Children of a group whose leader exited before them.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class Kamailio:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    async def stop(self) -> None:
        await _stop(self.process)


async def start_kamailio(workdir: Path, *, gate_url: str, username: str, password: str,
                         carrier_port: int, **defines: str | int) -> Kamailio:
    """integrations/kamailio/kamailio.cfg as shipped, configured only with -A defines and its
    http_client connection file, listening on a free port of 127.0.0.1."""
    conf = workdir / "consent-gate.conf"
    conf.write_text(f"[gate]\nurl = {gate_url}\nusername = {username}\npassword = {password}\n")
    conf.chmod(0o600)
    port = free_udp_port()
    settings = {"LISTEN": f"udp:127.0.0.1:{port}",
                "CARRIER_URI": f'"sip:127.0.0.1:{carrier_port}"',
                "GATE_CONFIG": f'"{conf}"', **defines}
    args = ["kamailio", "-DD", "-E", "-f", str(CFG), "-w", str(workdir), "-Y", str(workdir),
            "-P", str(workdir / "kamailio.pid"), "-m", "64", "-M", "8"]
    for name, value in settings.items():
        args += ["-A", f"{name}={value}"]
    log = workdir / "kamailio.log"
    kamailio = Kamailio(await _start(args, log), port, log)
    try:
        await _until_answering(kamailio)
    except BaseException:
        await kamailio.stop()
        raise
    return kamailio


async def _until_answering(kamailio: Kamailio) -> None:
    """Kamailio is ready when it answers OPTIONS (the configuration does so itself)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    while loop.time() < deadline:
        if kamailio.process.returncode is not None:
            raise RuntimeError(f"kamailio exited with {kamailio.process.returncode}:\n"
                               f"{tail(kamailio.log)}")
        with contextlib.suppress(TimeoutError):
            reply = await exchange(kamailio.port, options(kamailio.port), within=0.5)
            if reply.start.startswith("SIP/2.0 200"):
                return
    raise RuntimeError(f"kamailio did not answer OPTIONS within {READY_WITHIN:g} s:\n"
                       f"{tail(kamailio.log)}")


@dataclass
class Carrier:
    """SIPp as the carrier (integrations/kamailio/sipp/carrier.xml): answers every INVITE."""

    process: asyncio.subprocess.Process
    port: int
    trace: Path
    log: Path

    def received(self) -> list[Message]:
        return [m for m in read_trace(self.trace) if m.direction == "received"]

    def invites(self) -> list[Message]:
        return [m for m in self.received() if m.method == "INVITE"]

    async def stop(self) -> None:
        await _stop(self.process)


@contextlib.asynccontextmanager
async def carrier(workdir: Path) -> AsyncIterator[Carrier]:
    port = free_udp_port()
    trace, log = workdir / "carrier.msg", workdir / "carrier.log"
    args = ["sipp", "-sf", str(SCENARIOS / "carrier.xml"), "-i", "127.0.0.1", "-p", str(port),
            "-nostdin", "-trace_msg", "-message_file", str(trace), "-trace_err",
            "-error_file", str(workdir / "carrier.err")]
    uas = Carrier(await _start(args, log), port, trace, log)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_WITHIN
        while not _udp_bound(port):
            if uas.process.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"sipp (carrier) did not bind {port}:\n{tail(log)}")
            await asyncio.sleep(0.05)  # until the kernel shows SIPp's socket
        yield uas
    finally:
        await uas.stop()


# --- SIPp's message trace ------------------------------------------------------------------

_ENTRY = re.compile(r"^-{20,} \d{4}-\d\d-\d\d [\d:.]+\n(?:UDP|TCP) message (sent|received)"
                    r"[^\n]*\n\n", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Message:
    direction: str  # "sent" or "received", as SIPp saw it
    start: str  # the start line
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def status(self) -> int | None:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0 ") else None

    @property
    def method(self) -> str | None:
        return None if self.status is not None else self.start.split()[0]

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def to_user(self) -> str:
        found = re.search(r"sips?:([^@;>]+)@", self.header("To") or "")
        return found.group(1) if found else ""


def parse_message(direction: str, text: str) -> Message:
    lines = text.replace("\r\n", "\n").split("\n")
    headers = []
    for line in lines[1:]:
        if not line.strip():
            break
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return Message(direction, lines[0].strip(), tuple(headers))


def read_trace(path: Path) -> list[Message]:
    """Every message in a SIPp -trace_msg file, in order."""
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return []
    found = list(_ENTRY.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)] * bool(found)
    return [parse_message(m.group(1), text[m.end():end]) for m, end in zip(found, ends,
                                                                            strict=True)]


# --- the dialer -----------------------------------------------------------------------------

@dataclass
class Call:
    """One call of the dialer: what it sent and what came back, in order."""

    to: str
    call_id: str
    received: list[Message] = field(default_factory=list)

    @property
    def final(self) -> Message:
        """The final answer to the INVITE."""
        answers = [m for m in self.received if m.cseq_method == "INVITE"
                   and (m.status or 0) >= 200]
        assert answers, f"no final answer to the INVITE of {self.call_id}"
        return answers[0]


@dataclass
class DialRun:
    returncode: int
    calls: dict[str, Call]  # by the number dialled
    errors: str


async def dial(workdir: Path, port: int, calls: Sequence[tuple[str, str]], *,
               scenario: str = "dialer.xml", rate: int = 10, name: str = "dialer",
               extra: Sequence[str] = ()) -> DialRun:
    """SIPp as the dialer: one call per (number, caller ID) to Kamailio on `port`."""
    inf = workdir / f"{name}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{to};{from_};\n" for to, from_ in calls))
    trace, errors = workdir / f"{name}.msg", workdir / f"{name}.err"
    log = workdir / f"{name}.log"
    args = ["sipp", "-sf", str(SCENARIOS / scenario), "-inf", str(inf), "-i", "127.0.0.1",
            "-p", str(free_udp_port()), f"127.0.0.1:{port}", "-m", str(len(calls)),
            "-r", str(rate), "-l", str(len(calls)), "-nostdin",
            # Call-IDs unique across runs: the dial API decides a call_id once a day.
            "-cid_str", f"%u-{uuid.uuid4().hex[:12]}@%s",
            "-timeout", f"{SIPP_TIMEOUT_S}s", "-timeout_error", "-recv_timeout", "30000",
            "-default_behaviors", "all,-abortunexp",
            "-trace_msg", "-message_file", str(trace), "-trace_err", "-error_file", str(errors),
            *extra]
    process = await _start(args, log)
    try:
        returncode = await process.wait()
    finally:
        await _stop(process)
    by_call_id: dict[str, Call] = {}
    for message in read_trace(trace):
        if message.direction == "sent" and message.method == "INVITE":
            by_call_id[message.call_id] = Call(message.to_user, message.call_id)
        elif message.direction == "received" and message.call_id in by_call_id:
            by_call_id[message.call_id].received.append(message)
    problems = tail(errors) if errors.exists() else ""
    return DialRun(returncode, {c.to: c for c in by_call_id.values()}, problems + tail(log))


# --- one request by hand ------------------------------------------------------------------

class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.replies.put_nowait(data)


async def exchange(port: int, request: str, *, within: float = 30.0) -> Message:
    """Send one request over UDP and return the first final answer to it; a negative answer
    to an INVITE is ACKed, as a caller does."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Receiver, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", port))
    try:
        local = transport.get_extra_info("sockname")[1]
        sent = request.replace("LOCALPORT", str(local))
        transport.sendto(sent.encode())
        deadline = loop.time() + within
        while True:
            data = await asyncio.wait_for(protocol.replies.get(), deadline - loop.time())
            reply = parse_message("received", data.decode("utf-8", "replace"))
            if (reply.status or 0) >= 200:
                if sent.startswith("INVITE ") and (reply.status or 0) >= 300:
                    transport.sendto(_ack(sent, reply).encode())
                return reply
    finally:
        transport.close()


def _ack(invite: str, reply: Message) -> str:
    """The ACK of a negative answer: the INVITE's branch and To tag (RFC 3261 17.1.1.3)."""
    lines = invite.split("\r\n")
    uri = lines[0].split()[1]
    keep = [line for line in lines[1:] if line.split(":")[0] in ("Via", "From", "Call-ID")]
    return "\r\n".join([f"ACK {uri} SIP/2.0", *keep, f"To: {reply.header('To')}",
                         "CSeq: 1 ACK", "Max-Forwards: 70", "Content-Length: 0"]) + "\r\n\r\n"


def request(method: str, uri: str, *, from_user: str = "dialer", to_user: str = "",
            to_tag: str = "", call_id: str | None = None, extra: Sequence[str] = ()) -> str:
    """A request from 127.0.0.1:LOCALPORT (filled in by `exchange`)."""
    call = uuid.uuid4().hex
    from_ = f"<sip:{from_user}@127.0.0.1>" if from_user else "<sip:127.0.0.1>"
    to = f"<sip:{to_user}@127.0.0.1>" if to_user else "<sip:127.0.0.1>"
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:LOCALPORT;branch=z9hG4bK{call}",
             f"From: {from_};tag={call[:8]}",
             f"To: {to}" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id or call + '@127.0.0.1'}", f"CSeq: 1 {method}",
             "Contact: <sip:dialer@127.0.0.1:LOCALPORT>", "Max-Forwards: 70", *extra,
             "Content-Length: 0"]
    return "\r\n".join(lines) + "\r\n\r\n"


def options(port: int) -> str:
    return request("OPTIONS", f"sip:127.0.0.1:{port}")
