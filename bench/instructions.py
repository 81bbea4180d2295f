"""`python -m bench.instructions`: the CPU work of the scrub's worker path and of the engine,
counted in instructions by valgrind's callgrind. The count is the same on a slow or a fast day
of the VM, so two versions of the code can be compared on a machine whose speed drifts.

Each item runs this module under callgrind at two sizes; the difference in instructions over
the difference in size is the work per unit (start-up and imports cancel out, and for the
scrub items so does building the batch: the same run without the work is subtracted). Needs
valgrind (Debian package `valgrind`); takes a few minutes. Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import engine
from bench.services import REPO
from proxy import scrub_batch, store, workers
from proxy.phone import subject_hash
from proxy.policy.facts import Organisation, Sender
from proxy.settings import load_rules

RULES = REPO / "config" / "consent-proxy.toml"
# What each item counts, per number (the scrub's worker path, proxy/scrub_batch.py) or per
# decision (the engine benchmark's cases, bench/engine.py).
ITEMS = {
    "scrub_parse": "parse_numbers: phonenumbers and subject_hash, per number",
    "scrub_facts": "store.facts_from_bulk: fact objects from the query's JSON, per number",
    "scrub_rows": "scrub_batch.rows: facts, decisions and CSV rows, per number",
    "engine": "policy.decide over the engine benchmark's cases, per decision",
}
SIZES = (1_000, 5_000)
# Counted under callgrind with a fixed hash seed: with a random one, the order of some sets
# and dicts changes from run to run, and the counts with it (by about 1 %), which is as much
# as the changes these counts are meant to tell apart.
HASH_SEED = "0"
NOW = dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC)


def _batch(count: int) -> tuple[str, scrub_batch.Parsed, str]:
    """A scrub batch shaped like the bench's store: seven numbers in ten with a consent (one
    in seven of those for voice only), one in five with a relationship, one in twenty with an
    objection; one line in ten written with spaces (phonenumbers' full parse)."""
    lines = "\n".join(f"+31 6 {20_000_000 + i}" if i % 10 == 0 else f"06{20_000_000 + i}"
                      for i in range(count))
    numbers = [f"+316{20_000_000 + i}" for i in range(count)]
    hashes = [subject_hash(n) for n in numbers]
    consents = [[i, n, "org", "voice" if i % 7 == 0 else "sms", ["energy"], "opt_in",
                 "2026-10-01T10:00:00.123456", "self_provided", None, "2026-10-01T10:05:00",
                 None, None, None, "2026-11-01T00:00:00" if i % 13 == 0 else None,
                 "2026-11-01T09:00:00" if i % 3 else None, None]
                for i, n in enumerate(numbers) if i % 10 < 7]
    relationships = [[i, n, "org", "customer", ["energy"], "2024-01-01T00:00:00",
                      "self_provided", None, True] for i, n in enumerate(numbers) if i % 5 == 0]
    objections = [[i, hashes[i], None, None, "2026-01-01T00:00:00", "api"]
                  for i in range(0, count, 20)]
    parsed = scrub_batch.Parsed(",".join(numbers), ",".join(hashes), ())
    return lines, parsed, json.dumps([None, consents, relationships, objections])


def workload(item: str, count: int) -> None:
    """Set up, then do `count` units of `item` (what runs under callgrind)."""
    rules = load_rules(RULES)
    if item == "engine":  # as the engine benchmark runs it: in the bench's own process
        engine.measure(count, rules, repeats=1)
        return
    workers.start_worker()  # the collector settings of a scrub worker
    organisation = Organisation("org", "Org", "commercial")
    job = scrub_batch.ScrubJob("sms", Sender("+31201234567", "org", "energy"), organisation,
                               None, rules, NOW)
    lines, parsed, facts = _batch(count)
    if item == "none":
        return
    if item == "scrub_parse":
        scrub_batch.parse_numbers(lines)
    elif item == "scrub_facts":
        store.facts_from_bulk(facts, organisation, parsed.valid, parsed.hashes)
    elif item == "scrub_rows":
        scrub_batch.rows(job, lines, parsed, facts)
    else:
        raise SystemExit(f"unknown item {item!r}")


def counted(command: Sequence[str]) -> list[str]:
    """`command` (valgrind running Python) with the fixed hash seed."""
    return ["env", f"PYTHONHASHSEED={HASH_SEED}", *command]


def instructions(item: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            counted(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
                     sys.executable, "-m", "bench.instructions", "--workload", item,
                     str(count)]),
            cwd=REPO, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind failed for {item}: {done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_unit(item: str, sizes: tuple[int, int] = SIZES) -> int:
    small, large = (instructions(item, n) for n in sizes)
    return round((large - small) / (sizes[1] - sizes[0]))


def measure() -> dict[str, int]:
    batch = per_unit("none")  # building a scrub batch, which every scrub item does first
    out = {item: per_unit(item) - (0 if item == "engine" else batch) for item in ITEMS}
    # The engine's share of a scrub row, and the CSV: what rows does beyond building facts.
    out["scrub_decide_and_csv"] = out["scrub_rows"] - out["scrub_facts"]
    return out


def valgrind_missing(prog: str) -> bool:
    """True (and says so) when valgrind or callgrind_control is not installed."""
    if shutil.which("valgrind") and shutil.which("callgrind_control"):
        return False
    print(f"{prog}: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
    return True


def write_counts(path: Path | None, counts: object) -> None:
    """`--out`: the counts as JSON, when asked for."""
    if path is not None:
        path.write_text(json.dumps(counts, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--workload", nargs=2, metavar=("ITEM", "COUNT"),
                        help="internal: run one workload (under callgrind)")
    parser.add_argument("--out", type=Path, help="also write the counts here as JSON")
    args = parser.parse_args(argv)
    if args.workload:
        workload(args.workload[0], int(args.workload[1]))
        return 0
    if valgrind_missing("bench.instructions"):
        return 1
    counts = measure()
    for item, value in counts.items():
        what = ITEMS.get(item, "scrub_rows less scrub_facts")
        print(f"{item:22s} {value:>10,} instructions  {what}")
    write_counts(args.out, counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
