"""Two gates behind HAProxy, through PgBouncer (transaction pooling) beside a PostgreSQL primary
and its synchronous streaming standby: the deployment of deploy/compose.yml, run with Debian's
HAProxy and PgBouncer and the very configuration files under deploy/ (tests/ha_stack.py).

Under mixed load from 64 callers at once, every request is decided once whichever gate takes
it: a contact request is used once, an idempotency token is forwarded once, a retransmitted
dial decision is one decision, a STOP taken by one gate blocks on the other, and the audit
chain verifies. A gate stopped with SIGTERM leaves HAProxy's rotation before its listener
closes: no caller sees an error, nothing forwarded goes unanswered.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from proxy.gate.codes import DENIAL_CODES, IDEMPOTENCY_IN_FLIGHT
from tests import ha_stack
from tests.ha_stack import Sent, Stack, run_all, seed_consents, seed_org, send, sms_reply
from tests.test_faults import wait_for

# proxy/fronts/twilio/upstream.py still uses aiohttp.BasicAuth, which aiohttp 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AT_ONCE = 64
TIMEOUT = aiohttp.ClientTimeout(total=120)


async def rows_for(stack: Stack, pattern: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.cluster.primary.app_url())
    try:
        found: list[asyncpg.Record] = await conn.fetch(
            """SELECT d.id, d.request_id, d.channel, d.decision, d.reason, d.basis,
                      d.details, count(o.decision_id) AS outcomes
               FROM decisions d LEFT JOIN decision_outcomes o ON o.decision_id = d.id
               WHERE d.request_id LIKE $1 GROUP BY d.id ORDER BY d.id""", pattern)
        return found
    finally:
        await conn.close()


def forwarded_decisions(stack: Stack) -> Counter[int]:
    """How often each decision id reached the provider (X-Consent-Decision-Id)."""
    return Counter(int(r.headers["X-Consent-Decision-Id"]) for r in stack.fake.creates())


def served_by(gate: Any, route_part: str) -> int:
    return sum(1 for e in gate.events()
               if e.get("event") == "request_handled" and route_part in e.get("route", ""))


async def test_two_gates_decide_every_request_once_under_load(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    async with ha_stack.running(tmp_path) as stack, aiohttp.ClientSession(
            timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=AT_ONCE)) as session:
        org = await seed_org(session, stack.base)
        sms_numbers = await seed_consents(session, org, "sms", 41)
        voice_numbers = await seed_consents(session, org, "voice", 40)
        requested = await seed_consents(session, org, "voice", 50, kind="request")

        # A STOP taken by the first gate blocks on the second at once.
        stopped = sms_numbers.pop()
        first, second = (g.base for g in stack.gates)
        assert await sms_reply(session, first, stack.public_url, org, stopped, "STOP") == 200
        after_stop = await send(session, org, "sms", stopped, stopped, f"{run}-after-stop",
                                base=second)

        plan: list[Callable[[], Awaitable[list[Sent]]]] = []
        counter = iter(range(10**6))

        def rid() -> str:
            return f"{run}-{next(counter)}"

        def one(kind: str, key: str, number: str) -> Callable[[], Awaitable[list[Sent]]]:
            request_id = rid()

            async def go() -> list[Sent]:
                return [await send(session, org, kind, key, number, request_id)]
            return go

        def token_group(token: str, number: str) -> Callable[[], Awaitable[list[Sent]]]:
            ids = [rid() for _ in range(3)]

            async def go() -> list[Sent]:  # the request, then two replays of it at once
                head = await send(session, org, "sms_token", token, number, ids[0])
                return [head, *await asyncio.gather(
                    *(send(session, org, "sms_token", token, number, i) for i in ids[1:]))]
            return go

        def retransmitted(call_id: str, number: str) -> Callable[[], Awaitable[list[Sent]]]:
            ids = [rid() for _ in range(3)]

            async def go() -> list[Sent]:  # one INVITE sent three times at once
                return list(await asyncio.gather(
                    *(send(session, org, "dial", call_id, number, i) for i in ids)))
            return go

        plan += [one("sms", f"s{i}", rng.choice(sms_numbers)) for i in range(900)]
        plan += [one("call", number, number) for number in requested for _ in range(3)]
        plan += [token_group(f"tok-{run}-{i}", rng.choice(sms_numbers)) for i in range(100)]
        plan += [one("dial", f"c-{run}-{i}@pbx", rng.choice(voice_numbers)) for i in range(500)]
        plan += [retransmitted(f"r-{run}-{i}@pbx", rng.choice(voice_numbers))
                 for i in range(50)]
        rng.shuffle(plan)
        started = time.monotonic()
        groups = await run_all(plan, AT_ONCE)
        elapsed = time.monotonic() - started
        sent = [s for group in groups for s in group]
        assert len(sent) == 2000
        rows = await rows_for(stack, f"{run}-%")
        conn = await asyncpg.connect(stack.cluster.primary.app_url())
        try:
            used_up = await conn.fetchval(
                "SELECT count(*) FROM consents WHERE organisation_id = $1 AND kind = 'request' "
                "AND consumed_at IS NOT NULL", org.organisation)
        finally:
            await conn.close()
        audit = ha_stack.verify_audit(stack.cluster, tmp_path)
        per_gate = [served_by(g, "Messages.json") + served_by(g, "Calls.json")
                    + served_by(g, "/dial/v1/decisions") for g in stack.gates]

    print(f"\n[two gates] 2000 requests, {AT_ONCE} at once, in {elapsed:.1f} s "
          f"({2000 / elapsed:.0f}/s); per gate {per_gate}")
    failed = [s for s in sent if s.status is None or s.status >= 500]
    assert not failed, failed[:5]
    assert all(n > 0 for n in per_gate), per_gate  # HAProxy used both gates

    # The STOP: the second gate denied the message as unsubscribed, and recorded why.
    assert after_stop.status == 400, after_stop
    assert after_stop.body["code"] == 21610, after_stop
    (stop_row,) = [r for r in rows if r["request_id"] == f"{run}-after-stop"]
    assert (stop_row["decision"], stop_row["reason"]) == ("deny", "OBJECTION_ON_FILE")

    by_request = {r["request_id"]: r for r in rows}
    assert len(by_request) == len(rows), "a request id with two decision rows"
    forwarded = forwarded_decisions(stack)
    assert max(forwarded.values()) == 1, "a decision forwarded twice"
    by_kind: dict[str, list[Sent]] = defaultdict(list)
    for s in sent:
        by_kind[s.kind].append(s)

    # Plain creates: one decision each, allowed and forwarded once.
    for s in by_kind["sms"]:
        row = by_request[s.request_id]
        assert s.status == 201, s
        assert row["decision"] == "allow", row
        assert forwarded[row["id"]] == 1

    # Contact requests (N6): three calls each, through either gate; exactly one is allowed.
    no_basis = DENIAL_CODES["NO_LEGAL_BASIS"]
    calls: dict[str, list[Sent]] = defaultdict(list)
    for s in by_kind["call"]:
        calls[s.key].append(s)
    for number, answers in calls.items():
        statuses = sorted(a.status or 0 for a in answers)
        assert statuses == [201, no_basis[0], no_basis[0]], (number, answers)
        decided = [by_request[a.request_id] for a in answers]
        assert sorted(r["decision"] for r in decided) == ["allow", "deny", "deny"]
    assert used_up == len(calls) == 50  # each contact request used up, once

    # Idempotency tokens: the request and its two replays, one decision, forwarded once, the
    # replays answered with the first answer.
    tokens: dict[str, list[Sent]] = defaultdict(list)
    for s in by_kind["sms_token"]:
        tokens[s.key].append(s)
    for token, answers in tokens.items():
        assert [a.status for a in answers] == [201, 201, 201], (token, answers)
        assert len({a.body["sid"] for a in answers}) == 1
        decided = [by_request[a.request_id] for a in answers if a.request_id in by_request]
        assert len(decided) == 1, (token, decided)
        assert forwarded[decided[0]["id"]] == 1, (token, decided)

    # Dial decisions: one row each; a retransmitted one is decided once, every copy answered
    # with that decision (or 409 when the first was not answered within 5 s).
    dials: dict[str, list[Sent]] = defaultdict(list)
    for s in by_kind["dial"]:
        dials[s.key].append(s)
    for call_id, answers in dials.items():
        decided = [by_request[a.request_id] for a in answers if a.request_id in by_request]
        assert len(decided) == 1, (call_id, decided)
        assert decided[0]["decision"] == "allow", (call_id, decided)
        ids = {a.body["decision_id"] for a in answers if a.status == 200}
        assert ids == {decided[0]["id"]}, (call_id, answers)
        assert all(a.status in (200, IDEMPOTENCY_IN_FLIGHT[0]) for a in answers), answers

    # Nothing else was decided, and nothing undecided was forwarded.
    expected = 900 + 150 + 100 + 500 + 50 + 1  # + the message after the STOP
    assert len(rows) == expected
    assert set(forwarded) <= {r["id"] for r in rows if r["decision"] == "allow"}
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert audit.stdout.startswith("audit chain ok:"), audit.stdout


async def test_sigterm_takes_a_gate_out_before_it_stops(tmp_path: Path) -> None:
    """PROXY_DRAIN_SECONDS: the gate answers /readyz 503 while still serving, HAProxy takes it
    out, then its listener closes and what it was doing finishes: no caller sees an error."""
    run = uuid.uuid4().hex[:8]
    async with ha_stack.running(tmp_path, drain_seconds=4) as stack, aiohttp.ClientSession(
            timeout=TIMEOUT) as session:
        org = await seed_org(session, stack.base)
        numbers = await seed_consents(session, org, "sms", 20)
        stack.fake.hang(0.5)  # every create spends half a second at the provider
        results: list[Sent] = []
        stop = asyncio.Event()
        counter = iter(range(10**6))

        async def caller(n: int) -> None:
            while not stop.is_set():
                results.append(await send(session, org, "sms", "", numbers[n % 20],
                                          f"{run}-{next(counter)}"))

        workers = [asyncio.create_task(caller(n)) for n in range(16)]
        try:
            await wait_for(lambda: len(results) >= 60, 120, "60 answers")
            leaving = stack.gates[0]
            leaving.proc.send_signal(signal.SIGTERM)
            signalled = len(results)
            code = await asyncio.to_thread(leaving.proc.wait, 90)
            await wait_for(lambda: len(results) >= signalled + 60, 120,
                                      "60 answers after the gate stopped")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        rows = await rows_for(stack, f"{run}-%")
        events = leaving.events()

    assert code == 0, leaving.stderr.read_text()
    names = [e["event"] for e in events]
    assert "proxy_draining" in names
    assert "proxy_stopped" in names
    after = names.index("proxy_draining")
    served_draining = sum(1 for e in events[after:] if e["event"] == "request_handled"
                          and "Messages.json" in e.get("route", ""))
    errors = [r for r in results if r.status != 201]
    print(f"\n[sigterm] {len(results)} answers; the leaving gate served {served_draining} "
          f"while draining; {len(errors)} errors")
    assert not errors, errors[:5]
    by_request = {r["request_id"]: r for r in rows}
    assert set(by_request) == {r.request_id for r in results}
    forwarded = forwarded_decisions(stack)
    assert sorted(forwarded) == sorted(r["id"] for r in rows)  # each once, each answered
    assert max(forwarded.values()) == 1

