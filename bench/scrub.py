"""Item 3: numbers per second of a scrub (`POST /admin/v1/scrub`), next to PostgreSQL's raw
COPY rate for the very same file, measured in the same run."""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import statistics
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import asyncpg

from bench import seed
from bench.services import add_other, children, cpu_share, cpu_snapshot

COPY_REPEATS = 3
# Reasons counted in the streamed answer: a cheap check that the scrub decided what we seeded.
REASONS = (b"ALLOWED", b"OBJECTION_ON_FILE", b"NO_LEGAL_BASIS", b"CONSENT_WRONG_CHANNEL",
           b"INVALID_NUMBER")


def _open(path: Path) -> IO[bytes]:
    return path.open("rb")


async def copy_rate(database_url: str, csv_path: Path) -> dict[str, Any]:
    """COPY the file into a one-column temp table, `COPY_REPEATS` times; the median rate."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMP TABLE raw_numbers (number text)")
        rates, rows = [], 0
        for _ in range(COPY_REPEATS):
            await conn.execute("TRUNCATE raw_numbers")
            started = time.perf_counter()
            status = await conn.copy_to_table("raw_numbers", source=csv_path, format="csv",
                                              header=True)
            elapsed = time.perf_counter() - started
            rows = int(status.split()[-1])
            rates.append(rows / elapsed)
    finally:
        await conn.close()
    return {"rows": rows, "rows_per_s": round(statistics.median(rates)),
            "all_rows_per_s": [round(r) for r in rates]}


class _Tally:
    """Counts rows and reasons in the streamed CSV, only ever looking at whole lines."""

    def __init__(self) -> None:
        self.newlines = 0
        self.reasons = dict.fromkeys(REASONS, 0)
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        cut = data.rfind(b"\n") + 1
        whole, self._carry = data[:cut], data[cut:]
        self.newlines += whole.count(b"\n")
        for reason in REASONS:
            self.reasons[reason] += whole.count(b"," + reason + b",")


class ScrubFailed(RuntimeError):
    """The scrub answered an error, or its stream was cut off before the final chunk."""


async def _send_file(writer: asyncio.StreamWriter, head: bytes, path: Path) -> None:
    writer.write(head)
    with _open(path) as upload:
        while chunk := await asyncio.to_thread(upload.read, 1 << 16):
            writer.write(chunk)
            await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader, tally: _Tally) -> None:
    """The chunked body to its final zero-length chunk; a stream that ends before it is a
    scrub that failed halfway (proxy/check.py cuts it off on purpose)."""
    try:
        while size := int((await reader.readline()).split(b";")[0], 16):
            tally.feed(await reader.readexactly(size))
            await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ValueError) as exc:
        raise ScrubFailed("the scrub stream was cut off before its end") from exc


async def _exchange(host: str, port: int, head: bytes, path: Path,
                    tally: _Tally) -> float:
    """Upload and download at once. The proxy streams rows back while it still reads the
    upload, so a client that first sends everything and only then reads (aiohttp's client
    does, in effect) deadlocks once the answer fills the socket buffers. Returns the moment
    the status line arrived."""
    reader, writer = await asyncio.open_connection(host, port)
    sending = asyncio.create_task(_send_file(writer, head, path))
    try:
        status, headers = await _read_head(reader)
        first_byte = time.perf_counter()
        if status != 200 or headers.get("transfer-encoding") != "chunked":
            body = await reader.read(4096)
            raise ScrubFailed(f"scrub answered {status}: {body.decode(errors='replace')}")
        await _read_chunked(reader, tally)
        await sending
    finally:
        sending.cancel()
        writer.close()
    return first_byte


async def scrub(proxy_url: str, admin_token: str, csv_path: Path, file_bytes: int,
                at: dt.datetime) -> dict[str, Any]:
    """One scrub of the file, streamed from disk; the answer read to its end, rows counted."""
    url = urlsplit(proxy_url)
    assert url.hostname is not None
    assert url.port is not None
    query = urlencode({"channel": "sms", "from": seed.SENDER, "at": at.isoformat()})
    head = (f"POST /admin/v1/scrub?{query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {admin_token}\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {file_bytes}\r\nConnection: close\r\n\r\n")
    tally = _Tally()
    started = time.perf_counter()
    first_byte = await _exchange(url.hostname, url.port, head.encode(), csv_path, tally)
    elapsed = time.perf_counter() - started
    rows = tally.newlines - 1  # the header line
    return {"rows": rows, "seconds": round(elapsed, 3),
            "first_byte_seconds": round(first_byte - started, 3),
            "numbers_per_s": round(rows / elapsed),
            "reasons": {r.decode(): n for r, n in tally.reasons.items()}}


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(database_url: str, proxy_url: str, proxy_pid: int, admin_token: str,
                  workdir: Path, numbers: int, base: dt.datetime) -> dict[str, Any]:
    started = time.perf_counter()
    rows = seed.scrub_facts(numbers, base)
    conn = await asyncpg.connect(database_url)
    try:
        await seed.copy_facts(conn, rows)
    finally:
        await conn.close()
    seeded = time.perf_counter() - started
    csv_path = workdir / "scrub-numbers.csv.tmp"
    lines, size = seed.write_scrub_csv(csv_path, numbers)
    try:
        copy = await copy_rate(database_url, csv_path)
        # A first small scrub starts the proxy's parsing worker, so its CPU can be counted.
        warm = workdir / "scrub-warm.csv.tmp"
        with _open(csv_path) as source:
            warm.write_bytes(b"".join(source.readline() for _ in range(101)))
        try:
            await scrub(proxy_url, admin_token, warm, warm.stat().st_size, base)
        finally:
            warm.unlink()
        pids = {"proxy": proxy_pid} | {f"child {pid}": pid for pid in children(proxy_pid)}
        before, client_before = cpu_snapshot(pids), _self_cpu()
        result = await scrub(proxy_url, admin_token, csv_path, size, base)
        # Workers the proxy started during the scrub count from zero.
        pids |= {f"child {pid}": pid for pid in children(proxy_pid)}
        cpu = cpu_share(before, cpu_snapshot(pids))
        cpu["proxy workers"] = round(sum(cpu.pop(name) for name in pids if name != "proxy"), 1)
        cpu["client"] = round(100 * (_self_cpu() - client_before) / result["seconds"], 1)
        result["cpu_percent_of_one_core"] = add_other(cpu)
    finally:
        csv_path.unlink()
    if result["rows"] != lines:
        raise ScrubFailed(f"scrub answered {result['rows']} rows for {lines} lines")
    return {
        "numbers": lines, "store": rows.counts(), "seed_seconds": round(seeded, 1),
        "file_bytes": size, "at": base.isoformat(), "channel": "sms",
        "scrub": result, "copy": copy, "numbers_per_s": result["numbers_per_s"],
        "copy_rows_per_s": copy["rows_per_s"],
        "ratio": round(result["numbers_per_s"] / copy["rows_per_s"], 3),
    }
