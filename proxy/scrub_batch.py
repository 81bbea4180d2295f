"""The CPU-bound part of a scrub (`POST /admin/v1/scrub`, proxy/check.py): parsing a batch of
numbers, then deciding it on the facts PostgreSQL returned and writing its CSV rows. Pure
functions of their arguments, so the proxy runs them in worker processes (proxy/workers.py)
while its event loop streams the upload in and the answer out."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass

from proxy import store
from proxy.phone import subject_hash, try_parse_number
from proxy.policy import Decision, decide
from proxy.policy.facts import Contact, ContactChannel, Facts, Organisation, Sender
from proxy.settings import RuleSettings


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed batch: its valid numbers in E.164 and their subject_hash, in order, as
    comma-separated text (the form the fact query takes them in, and one string crosses
    between processes at once), and the positions of the lines that are not valid numbers."""

    valid: str
    hashes: str
    invalid: tuple[int, ...]

    def numbers(self, count: int) -> Iterator[str | None]:
        """E.164 for each of the batch's `count` lines, None where it is not valid."""
        valid = iter(self.valid.split(",") if self.valid else ())
        invalid = set(self.invalid)
        return (None if i in invalid else next(valid) for i in range(count))


@dataclass(frozen=True, slots=True)
class ScrubJob:
    """What every number of one scrub is decided against."""

    channel: ContactChannel
    sender: Sender
    organisation: Organisation
    topic: str | None
    rules: RuleSettings
    now: dt.datetime
    automated: bool = False  # N2: `channel=automated_voice`


def parse_numbers(lines: str) -> Parsed:
    """Parse a batch: its lines joined by newlines (no line holds one)."""
    numbers = [try_parse_number(text) for text in lines.split("\n")]
    valid = [n for n in numbers if n is not None]
    return Parsed(",".join(valid), ",".join([subject_hash(n) for n in valid]),
                  tuple(i for i, n in enumerate(numbers) if n is None))


# A number whose facts cannot be read or decided: its own row says so, and the rest of the
# file is decided as usual (a public contract, README "Checking before you dial").
ERROR_ROW = ",error,DECISION_FAILED,\n"


def rows(job: ScrubJob, lines: str, parsed: Parsed, facts_text: str) -> bytes:
    """The CSV rows of a batch: each line as given, with its decision, reason and
    retry_after. `parsed` is parse_numbers(lines), `facts_text` store.fetch_facts_bulk's
    answer for its numbers."""
    unreadable: set[str] = set()
    facts = store.facts_from_bulk(facts_text, job.organisation, parsed.valid, parsed.hashes,
                                  unreadable)
    nothing = Facts(organisation=job.organisation)
    # With nothing on file that bears on a decision, the engine reads `to` only for its shape
    # (a valid E.164 number, +31 or not; the number itself only goes into evidence, which a
    # scrub does not return): numbers of the same length, +31 or not, get the same answer,
    # decided once.
    unheld: dict[tuple[int, bool], str] = {}

    def answer(number: str | None) -> str:
        if number in unreadable:
            return ERROR_ROW
        on_file = facts.get(number) if number else None
        if on_file is not None:
            return _decided(job, number, on_file)
        shape = (len(number), number.startswith("+31")) if number else (0, False)
        line = unheld.get(shape)
        if line is None:
            line = unheld[shape] = _decided(job, number, nothing)
        return line

    texts = lines.split("\n")
    return "".join([number_field(text) + answer(number)
                    for text, number in zip(texts, parsed.numbers(len(texts)), strict=True)
                    ]).encode()


def _decided(job: ScrubJob, number: str | None, facts: Facts) -> str:
    try:
        return _suffix(decide(_contact(job, number), facts, job.rules, job.now))
    except Exception:  # one number the engine cannot decide is its own row
        return ERROR_ROW


def _contact(job: ScrubJob, number: str | None) -> Contact:
    return Contact(job.channel, number, job.sender.sender, job.sender, job.topic,
                   from_key=job.sender.sender, automated=job.automated)


def _suffix(decision: Decision) -> str:
    """The CSV fields after the number, with the line end (none of them ever needs quotes)."""
    retry = decision.retry_after.isoformat() if decision.retry_after else ""
    return f",{decision.decision},{decision.reason},{retry}\n"


def number_field(raw: str) -> str:
    """The number as given, as one CSV field (quoted as the csv module would)."""
    if '"' in raw or "," in raw or "\r" in raw:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow([raw])
        return out.getvalue()
    return raw
