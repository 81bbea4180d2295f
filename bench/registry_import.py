"""Item 6: a bulk consent import (`consent-proxy import consents FILE`, the same code as
`POST /admin/v1/imports`) of a generated file, in rows per second, next to PostgreSQL's plain
COPY of the very same file into a table of the same columns, measured in the same run. The
import runs in a process of its own, whose peak RSS shows the memory it needed."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.services import REPO

COPY_REPEATS = 3
ORGANISATION = "bench-import"
HEADER = ("source_id,subject,organisation,channel,topics,kind,given_at,verified_at,"
          "verification,provenance,consent_text_version,consent_text_sha256,"
          "collection_method,policy_url,evidence_ref,evidence.ip\n")
_COPY_TABLE = """CREATE TEMP TABLE raw_consents (
    source_id text, subject text, organisation text, channel text, topics text, kind text,
    given_at timestamptz, verified_at timestamptz, verification text, provenance text,
    consent_text_version text, consent_text_sha256 text, collection_method text,
    policy_url text, evidence_ref text, evidence_ip text)"""
# Runs the command line's import, then reports the process's own peak RSS (KiB) on stderr.
_RUN = """
import resource, sys
from proxy.cli import main
code = main(["import", "consents", sys.argv[1]])
print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
raise SystemExit(code)
"""


def write_file(path: Path, rows: int) -> int:
    """`rows` consents, as an organisation's CRM would export them; returns the file's size."""
    sha = "9f2c" + "0" * 60
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER)
        for start in range(0, rows, 10_000):
            out.write("".join(
                f"crm-{i},+3168{i:07d},{ORGANISATION},voice,energy;energy/gas,opt_in,"
                "2026-10-01T12:00:00+02:00,2026-10-01T12:05:00+02:00,sms_code,self_provided,"
                f"v3,{sha},web_form,https://energie.example/privacy,form-{i},203.0.113.7\n"
                for i in range(start, min(rows, start + 10_000))))
    return path.stat().st_size


async def copy_rate(database_url: str, path: Path) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(_COPY_TABLE)
        rates, rows = [], 0
        for _ in range(COPY_REPEATS):
            await conn.execute("TRUNCATE raw_consents")
            started = time.perf_counter()
            status = await conn.copy_to_table("raw_consents", source=path, format="csv",
                                              header=True, timeout=None)
            rates.append(int(status.split()[-1]) / (time.perf_counter() - started))
            rows = int(status.split()[-1])
    finally:
        await conn.close()
    return {"rows": rows, "rows_per_s": round(statistics.median(rates)),
            "all_rows_per_s": [round(r) for r in rates]}


def run_import(database_url: str, path: Path) -> dict[str, Any]:
    env = os.environ | {"DATABASE_URL": database_url, "LOG_LEVEL": "warning"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _RUN, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    maxrss = next(int(line.split()[1]) for line in done.stderr.splitlines()
                  if line.startswith("maxrss_kb "))
    return {"report": report, "seconds": round(seconds, 2),
            "peak_rss_mb": round(maxrss / 1024, 1)}


async def measure(database_url: str, workdir: Path, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO organisations (id, name, sector) VALUES ($1, 'Bench import BV',
               'commercial') ON CONFLICT (id) DO NOTHING""", ORGANISATION)
    finally:
        await conn.close()
    path = workdir / "import-consents.csv.tmp"
    size = write_file(path, rows)
    try:
        copy = await copy_rate(database_url, path)
        result = run_import(database_url, path)
    finally:
        path.unlink()
    report = result["report"]
    if report["inserted"] != rows or report["errors"]:
        raise RuntimeError(f"the import did not insert every row: {report}")
    rate = rows / result["seconds"]
    return {
        "rows": rows, "file_bytes": size, "seconds": result["seconds"],
        "rows_per_s": round(rate), "copy_rows_per_s": copy["rows_per_s"], "copy": copy,
        "ratio": round(rate / copy["rows_per_s"], 3), "peak_rss_mb": result["peak_rss_mb"],
        "measured": "wall time of `consent-proxy import consents FILE` (process start "
                    "included), one transaction; COPY of the same file into a temp table of "
                    "the same columns, median of 3",
    }
