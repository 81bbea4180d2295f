"""Subprocesses of a bench run: start on a free port, wait until ready, always stop.

Also reads what the kernel knows about them (/proc): CPU time and peak resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


class ServiceFailed(RuntimeError):
    """A service exited or did not become ready; the message carries the tail of its log."""


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _open_log(path: Path) -> IO[bytes]:
    # A plain file, not a pipe: a pipe nobody reads would stall a chatty service.
    return path.open("wb")


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def start(name: str, args: Sequence[str], *, port: int, ready_path: str, log_path: Path,
                env: Mapping[str, str] | None = None, ready_within: float = 60,
                wrap: Sequence[str] = ()) -> Service:
    """Start `python -m …` (args after the interpreter) and wait for 200 on `ready_path`.
    `wrap`: a command that runs the interpreter (valgrind for bench/gate_instructions.py)."""
    log = _open_log(log_path)
    try:
        process = await asyncio.create_subprocess_exec(
            *wrap, sys.executable, *args, cwd=REPO, env=dict(env or os.environ),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
    finally:
        log.close()  # the child holds its own descriptor
    service = Service(name, process, port, log_path)
    try:
        await _wait_ready(service, ready_path, ready_within)
    except BaseException:
        await stop(service)
        raise
    return service


async def _wait_ready(service: Service, path: str, within: float) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if service.process.returncode is not None:
                raise ServiceFailed(f"{service.name} exited with {service.process.returncode}:\n"
                                    f"{log_tail(service.log_path)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(service.url + path) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise ServiceFailed(f"{service.name} not ready on {path} within {within:.0f} s:\n"
                        f"{log_tail(service.log_path)}")


async def stop(service: Service, grace: float = 15) -> None:
    """SIGTERM (the proxy drains in-flight requests), then SIGKILL after `grace` seconds."""
    process = service.process
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


# --- what the kernel knows -------------------------------------------------------------------

def peak_rss_mb(pid: int) -> float:
    """VmHWM: the highest resident set size the process has had, in MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def children(pid: int) -> list[int]:
    """The direct child processes (the proxy's scrub workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces; the fields after its closing parenthesis do not.
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named postgres (server, backends, background workers)."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                out[int(entry.name)] = cpu_seconds(int(entry.name))
        except OSError:
            continue  # exited while we looked
    return out


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Jiffies over all cores since boot. `steal`: time the hypervisor gave this VM's cores
    to someone else while they had work; neither busy nor idle here."""

    busy: float
    steal: float
    total: float


def machine_cpu(stat: str | None = None) -> MachineCpu:
    """From the first line of /proc/stat (user nice system idle iowait irq softirq steal …)."""
    first = (stat if stat is not None else Path("/proc/stat").read_text()).split("\n", 1)[0]
    values = [int(v) for v in first.split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7]
    total = sum(values[:8])  # guest time is already counted in user
    return MachineCpu(float(total - idle - steal), float(steal), float(total))


@dataclass
class CpuSnapshot:
    at: float
    processes: dict[str, float]
    postgres: dict[int, float]
    machine: MachineCpu


def cpu_snapshot(pids: Mapping[str, int]) -> CpuSnapshot:
    return CpuSnapshot(time.perf_counter(), {name: cpu_seconds(pid) for name, pid in pids.items()},
                       postgres_cpu(), machine_cpu())


def cpu_share(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Percent of one core used by each process between two snapshots (a process missing
    from `before` started in between); `machine` is the percent of all cores together
    (100 = every core busy) and `steal` the percent of all cores' time the hypervisor took
    away (the VM waited for a physical CPU: every figure of that round runs slow)."""
    wall = after.at - before.at
    share = {name: round(100 * (after.processes[name] - before.processes.get(name, 0.0)) / wall, 1)
             for name in after.processes}
    pg = sum(cpu - before.postgres.get(pid, 0.0) for pid, cpu in after.postgres.items())
    share["postgres"] = round(100 * pg / wall, 1)
    busy = after.machine.busy - before.machine.busy
    steal = after.machine.steal - before.machine.steal
    total = after.machine.total - before.machine.total
    share["machine"] = round(100 * busy / total, 1) if total else 0.0
    share["steal"] = round(100 * steal / total, 1) if total else 0.0
    return share


def median_shares(shares: Sequence[Mapping[str, float]],
                  keys: Sequence[str] | None = None) -> dict[str, float]:
    """Per key (default: those of the first), the median of several rounds' CPU shares."""
    return {key: round(statistics.median(s[key] for s in shares), 1)
            for key in (keys if keys is not None else list(shares[0]))}


def add_other(share: dict[str, float]) -> dict[str, float]:
    """Add `other`: CPU (percent of one core) of everything not listed, i.e. processes outside
    the bench and the kernel's own work. Near 0 on a quiet machine."""
    known = sum(v for k, v in share.items() if k not in ("machine", "steal", "other"))
    share["other"] = round(max(0.0, share["machine"] * (os.cpu_count() or 1) - known), 1)
    return share
