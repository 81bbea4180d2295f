"""What the benchmarks run against: an organisation, its SMS sender and a dialer (through the
admin API, as an operator would), and bulk facts (COPY straight into the real schema: a
million POSTs would benchmark the admin API instead).

Number ranges never overlap: load 1 draws from +3161…, the scrub store is +3162…, the rows that
grow the store for item 5 are +3163…, the dial API's numbers (item 1, beside load 1) +3164…,
the calls of item 6 go to +3165…. All are valid Dutch mobile numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from bench.load import basic_auth
from proxy.phone import subject_hash

ORGANISATION = "bench-energie"
SENDER = "+31201234567"
TOPIC = "energy"  # the sender's topic; consents for ["energy"] cover it
SMS_TEXT = "Energie BV: uw vaste tarief loopt af. Bekijk ons aanbod op energie-bv.nl"
EVIDENCE = json.dumps({"form": "https://energie-bv.nl/bel-mij", "ip": "203.0.113.7"})
CONSENT_COLUMNS = ("subject", "organisation_id", "channel", "topics", "kind", "given_at",
                   "verified_at", "verification", "provenance", "evidence")
RELATIONSHIP_COLUMNS = ("subject", "organisation_id", "kind", "topics", "started_at",
                        "provenance", "opt_out_offered")
OBJECTION_COLUMNS = ("subject_hash", "subject", "organisation_id", "channel", "received_at",
                     "via")
# Load 1: i % 10 picks the category, so 70 % are allowed and 30 % denied in three ways.
LOAD_MIX = {**dict.fromkeys(range(7), "allowed"), 7: "wrong_channel", 8: "objection",
            9: "nothing"}


def load_number(i: int) -> str:
    return f"+3161{i:07d}"


def scrub_number(i: int) -> str:
    return f"+3162{i:07d}"


GROW_PREFIX = "+3163"
SIP_PREFIX = "+3165"  # item 6: the numbers SIPp calls through Kamailio


def dial_number(i: int) -> str:
    return f"+3164{i:07d}"


@dataclass(frozen=True, slots=True)
class Dialer:
    account_sid: str
    auth_token: str

    @property
    def authorization(self) -> str:
        return basic_auth(self.account_sid, self.auth_token)

    @property
    def messages_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")
        return await resp.json()


async def seed_admin(proxy_url: str, admin_token: str) -> Dialer:
    """The organisation, its SMS sender and a dialer's credentials, through the admin API."""
    base = f"{proxy_url}/admin/v1"
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await _post(session, f"{base}/organisations", {
            "id": ORGANISATION, "name": "Energie BV", "sector": "commercial"})
        await _post(session, f"{base}/senders", {
            "sender": SENDER, "organisation": ORGANISATION, "topic": TOPIC,
            "purpose": "marketing"})
        creds = await _post(session, f"{base}/clients", {
            "name": "bench dialer", "organisations": [ORGANISATION]})
    return Dialer(creds["account_sid"], creds["auth_token"])


def _consent(number: str, channel: str, given_at: dt.datetime) -> tuple[Any, ...]:
    """A verified, self-provided opt-in (N5, N10) for the organisation's topic."""
    return (number, ORGANISATION, channel, [TOPIC], "opt_in", given_at,
            given_at + dt.timedelta(minutes=5), "sms_code", "self_provided", EVIDENCE)


def _objection(number: str, organisation: str | None, at: dt.datetime,
               via: str) -> tuple[Any, ...]:
    return (subject_hash(number), number, organisation, None, at, via)


@dataclass
class Rows:
    """Rows for one COPY per table."""

    subjects: list[tuple[Any, ...]]
    consents: list[tuple[Any, ...]]
    relationships: list[tuple[Any, ...]]
    objections: list[tuple[Any, ...]]

    def counts(self) -> dict[str, int]:
        return {"subjects": len(self.subjects), "consents": len(self.consents),
                "relationships": len(self.relationships), "objections": len(self.objections)}


def load_facts(count: int, base: dt.datetime) -> Rows:
    """Load 1's numbers: allowed ones have an SMS consent; of the denied, one in three has a
    voice consent only (CONSENT_WRONG_CHANNEL), one an objection, one nothing on file."""
    facts = Rows([], [], [], [])
    given = base - dt.timedelta(days=60)
    for i in range(count):
        number, kind = load_number(i), LOAD_MIX[i % 10]
        if kind in ("allowed", "wrong_channel"):
            facts.subjects.append((number,))
            facts.consents.append(_consent(number, "sms" if kind == "allowed" else "voice",
                                           given))
        elif kind == "objection":
            facts.objections.append(_objection(number, ORGANISATION, given, "api"))
    return facts


def dial_facts(count: int, base: dt.datetime) -> Rows:
    """The dial API's numbers, mixed as load 1's but for calls: allowed ones have a voice
    consent, one in ten an SMS consent only (CONSENT_WRONG_CHANNEL), one an objection, one
    nothing on file. Outside the calling hours (N13) every call is denied."""
    facts = Rows([], [], [], [])
    given = base - dt.timedelta(days=60)
    for i in range(count):
        number, kind = dial_number(i), LOAD_MIX[i % 10]
        if kind in ("allowed", "wrong_channel"):
            facts.subjects.append((number,))
            facts.consents.append(_consent(number, "voice" if kind == "allowed" else "sms",
                                           given))
        elif kind == "objection":
            facts.objections.append(_objection(number, ORGANISATION, given, "api"))
    return facts


def write_dial_bodies(path: Path, count: int, seed: int = 3) -> dict[str, int]:
    """One dial API form body per line (to, from), shuffled; the load generator appends a
    call_id of each request's own."""
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    mix: dict[str, int] = {}
    with path.open("w", encoding="ascii") as out:
        for i in order:
            mix[LOAD_MIX[i % 10]] = mix.get(LOAD_MIX[i % 10], 0) + 1
            out.write(urlencode({"to": dial_number(i), "from": SENDER}) + "\n")
    return mix


def scrub_facts(count: int, base: dt.datetime, seed: int = 42) -> Rows:
    """The scrub store: every number a subject; 30 % with a consent (one in five of them for
    voice only), 10 % a customer relationship (N7 soft opt-in holds for SMS), 5 % an objection
    (half for this organisation, half for all)."""
    rng = random.Random(seed)
    facts = Rows([], [], [], [])
    for i in range(count):
        number = scrub_number(i)
        given = base - dt.timedelta(days=rng.randrange(1, 700))
        facts.subjects.append((number,))
        draw = rng.random()
        if draw < 0.30:
            facts.consents.append(_consent(number, "voice" if draw < 0.06 else "sms", given))
        elif draw < 0.40:
            facts.relationships.append((number, ORGANISATION, "customer", ["energy/gas"],
                                        given, "self_provided", True))
        if rng.random() < 0.05:
            organisation = ORGANISATION if rng.random() < 0.5 else None
            facts.objections.append(_objection(number, organisation, given, "letter"))
    return facts


async def seed_sender(conn: asyncpg.Connection) -> None:
    """The organisation and its SMS sender written straight into a store with no proxy in
    front (item 5's small twin), as seed_admin's admin calls leave them."""
    await conn.execute("INSERT INTO organisations (id, name, sector) VALUES ($1, $2, $3)",
                       ORGANISATION, "Energie BV", "commercial")
    await conn.execute("INSERT INTO senders (sender, organisation_id, topic, purpose) "
                       "VALUES ($1, $2, $3, 'marketing')", SENDER, ORGANISATION, TOPIC)


async def copy_facts(conn: asyncpg.Connection, facts: Rows) -> None:
    """COPY every row in; subjects first (consents and relationships reference them)."""
    await conn.copy_records_to_table("subjects", records=facts.subjects, columns=["number"])
    await conn.copy_records_to_table("consents", records=facts.consents,
                                     columns=list(CONSENT_COLUMNS))
    await conn.copy_records_to_table("relationships", records=facts.relationships,
                                     columns=list(RELATIONSHIP_COLUMNS))
    await conn.copy_records_to_table("objections", records=facts.objections,
                                     columns=list(OBJECTION_COLUMNS))
    await conn.execute("ANALYZE subjects, consents, relationships, objections")


def write_bodies(path: Path, count: int, seed: int = 1) -> dict[str, int]:
    """One form body per line (To, From, Body), shuffled: what the load generators send."""
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    mix: dict[str, int] = {}
    with path.open("w", encoding="ascii") as out:
        for i in order:
            mix[LOAD_MIX[i % 10]] = mix.get(LOAD_MIX[i % 10], 0) + 1
            out.write(urlencode({"To": load_number(i), "From": SENDER, "Body": SMS_TEXT}) + "\n")
    return mix


def _scrub_lines(count: int, rng: random.Random) -> Iterator[str]:
    order = list(range(count))
    rng.shuffle(order)
    for line, i in enumerate(order):
        number = scrub_number(i)
        if line % 1000 == 999:
            yield rng.choice(("06123", "not a number", "+31 6 12", "0000000000"))
        elif rng.random() < 0.5:
            yield "0" + number[3:]  # national form: 0612345678
        else:
            yield number


def write_scrub_csv(path: Path, count: int, seed: int = 7) -> tuple[int, int]:
    """The scrub upload: a header, then `count` lines, half E.164 and half national, one in a
    thousand unparsable. Returns (data lines, bytes)."""
    rng = random.Random(seed)
    with path.open("w", encoding="ascii") as out:
        out.write("number\n")
        for text in _scrub_lines(count, rng):
            out.write(text + "\n")
    return count, path.stat().st_size


async def consent_rows(conn: asyncpg.Connection) -> int:
    rows: int = await conn.fetchval("SELECT count(*) FROM consents")
    return rows


# Grows the consent table on the server, in one statement per table: three consents (SMS,
# voice, e-mail) for each new subject, spread over a year of given_at.
_GROW_SUBJECTS = f"""
INSERT INTO subjects (number)
SELECT '{GROW_PREFIX}' || lpad(g::text, 7, '0') FROM generate_series(0, $1::int - 1) AS g
"""
_GROW_CONSENTS = f"""
INSERT INTO consents (subject, organisation_id, channel, topics, kind, given_at, verified_at,
                      verification, provenance, evidence)
SELECT '{GROW_PREFIX}' || lpad((g / 3)::text, 7, '0'), $2,
       (ARRAY['sms', 'voice', 'email'])[g % 3 + 1], ARRAY['{TOPIC}'], 'opt_in',
       $3::timestamptz - make_interval(days => 1 + g % 365),
       $3::timestamptz - make_interval(days => 1 + g % 365) + interval '5 minutes',
       'sms_code', 'self_provided', $4::jsonb
FROM generate_series(0, $1::int - 1) AS g
"""


async def grow_consents(conn: asyncpg.Connection, target: int,
                        base: dt.datetime) -> dict[str, float]:
    """Add consents until the table holds `target` rows, then VACUUM ANALYZE (a long-lived
    table is vacuumed; without it the first reads would pay for hint bits)."""
    missing = target - await consent_rows(conn)
    if missing <= 0:
        return {"added": 0, "seconds": 0.0}
    if math.ceil(missing / 3) > 10_000_000:
        raise ValueError("the +3163 range holds 10,000,000 subjects")
    started = time.perf_counter()
    await conn.execute(_GROW_SUBJECTS, math.ceil(missing / 3))
    await conn.execute(_GROW_CONSENTS, missing, ORGANISATION, base, EVIDENCE)
    inserted = time.perf_counter()
    await conn.execute("VACUUM (ANALYZE) subjects")
    await conn.execute("VACUUM (ANALYZE) consents")
    return {"added": missing, "insert_seconds": round(inserted - started, 1),
            "vacuum_analyze_seconds": round(time.perf_counter() - inserted, 1)}


def grown_number(i: int) -> str:
    return f"{GROW_PREFIX}{i:07d}"


def sample(items: Sequence[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(items) for _ in range(count)]
