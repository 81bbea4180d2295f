"""The primary lost under load, the standby promoted: the deployment of deploy/compose.yml (two
gates behind HAProxy, PgBouncer beside each PostgreSQL node, a synchronous streaming standby;
tests/ha_stack.py) with Debian's HAProxy and PgBouncer and real PostgreSQL servers.

While no writable primary is reachable every gate fails closed: 503 in the caller's own
protocol (Twilio's error JSON, the dial API's deny), nothing forwarded. Once the standby is
promoted the gates find it by themselves (DATABASE_URL lists both nodes with
target_session_attrs=read-write), with no restart. Every decision a caller was told about is
on the new primary (synchronous_commit = on, the standby in synchronous_standby_names), and
the audit chain verifies across the failover.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from proxy.gate.codes import DENIAL_CODES
from tests import ha_stack
from tests.ha_stack import Sent, seed_consents, seed_org, send
from tests.test_faults import wait_for

# proxy/fronts/twilio/upstream.py still uses aiohttp.BasicAuth, which aiohttp 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UNAVAILABLE = DENIAL_CODES["CONSENT_STORE_UNAVAILABLE"]  # (503, 930503)


@dataclass(frozen=True)
class Timed:
    sent: Sent
    asked: float  # monotonic, when the request left
    answered: float


def failed_closed(s: Sent) -> bool:
    """503 in the caller's own protocol, nothing decided."""
    if s.status != UNAVAILABLE[0]:
        return False
    if s.kind == "dial":
        return (s.body.get("reason"), s.body.get("decision_id"), s.body["sip"]["status"]) == (
            "CONSENT_STORE_UNAVAILABLE", None, 503)
    return s.body.get("code") == UNAVAILABLE[1] and s.body.get("status") == 503


def succeeded(s: Sent) -> bool:
    return (s.kind, s.status) in {("sms", 201), ("dial", 200)}


async def test_primary_lost_standby_promoted_nothing_committed_is_lost(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    async with ha_stack.running(tmp_path) as stack, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120)) as session:
        org = await seed_org(session, stack.base)
        sms_numbers = await seed_consents(session, org, "sms", 30)
        voice_numbers = await seed_consents(session, org, "voice", 30)
        pids = [g.proc.pid for g in stack.gates]
        answers: list[Timed] = []
        stop = asyncio.Event()
        counter = iter(range(10**6))

        async def caller(n: int) -> None:
            while not stop.is_set():
                i = next(counter)
                kind = "dial" if i % 3 == 0 else "sms"
                number = (voice_numbers if kind == "dial" else sms_numbers)[i % 30]
                asked = time.monotonic()
                sent = await send(session, org, kind, f"{run}-{i}@pbx", number, f"{run}-{i}")
                answers.append(Timed(sent, asked, time.monotonic()))

        def count(condition: Callable[[Timed], bool]) -> int:
            return sum(1 for a in answers if condition(a))

        workers = [asyncio.create_task(caller(n)) for n in range(32)]
        try:
            await wait_for(lambda: len(answers) >= 300, 120, "300 answers before the failure")
            crashed = time.monotonic()
            await asyncio.to_thread(stack.cluster.primary.crash)
            # Fail closed while no primary is reachable: 40 answers asked after the crash.
            await wait_for(lambda: count(lambda a: a.asked > crashed) >= 40, 120,
                           "answers while the primary is down")
            promoted_at = time.monotonic()
            await asyncio.to_thread(stack.cluster.standby.promote)
            promoted = time.monotonic()
            # Recovery by itself: 300 successes asked after the promotion.
            await wait_for(lambda: count(lambda a: a.asked > promoted and succeeded(a.sent))
                           >= 300, 180, "the gates to use the promoted standby")
        finally:
            stop.set()
            await asyncio.gather(*workers)
        alive = [g.proc.poll() is None and g.proc.pid == pid
                 for g, pid in zip(stack.gates, pids, strict=True)]
        new_primary = await asyncpg.connect(stack.cluster.standby.app_url())
        try:
            rows = {r["request_id"]: r for r in await new_primary.fetch(
                "SELECT id, request_id, decision FROM decisions WHERE request_id LIKE $1",
                f"{run}-%")}
            in_recovery = await new_primary.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await new_primary.close()
        forwarded = [int(r.headers["X-Consent-Decision-Id"]) for r in stack.fake.creates()]
        audit = ha_stack.verify_audit(stack.cluster, tmp_path)
        events = [e for g in stack.gates for e in g.events()]

    first_back = min(a.answered for a in answers if a.asked > promoted and succeeded(a.sent))
    down = [a for a in answers if crashed < a.asked and a.answered < promoted_at]
    print(f"\n[failover] {len(answers)} answers; {len(down)} while no primary "
          f"({sum(failed_closed(a.sent) for a in down)} fail-closed 503s); first success "
          f"{first_back - promoted:.2f} s after the promotion completed")
    assert all(alive), "a gate was restarted or died"
    assert in_recovery is False
    # No answer without a protocol: no reset, no HAProxy page, no 500.
    broken = [a.sent for a in answers if a.sent.status is None or (
        a.sent.status >= 500 and not failed_closed(a.sent))]
    assert not broken, broken[:5]
    # While no primary was reachable, nothing succeeded: each answer failed closed.
    assert down, "no request was answered while the primary was down"
    assert all(failed_closed(a.sent) for a in down), [a.sent for a in down
                                                        if not failed_closed(a.sent)][:5]
    # Every decision a caller was told about is on the new primary.
    told = [a.sent for a in answers if succeeded(a.sent)]
    lost = [s for s in told if s.request_id not in rows]
    assert not lost, lost[:5]
    for s in told:
        assert rows[s.request_id]["decision"] == "allow", s
        if s.kind == "dial":
            assert rows[s.request_id]["id"] == s.body["decision_id"]
    # Nothing went out without a decision that survived, nor twice.
    allowed = {r["id"] for r in rows.values() if r["decision"] == "allow"}
    assert set(forwarded) <= allowed
    assert len(forwarded) == len(set(forwarded))
    # A request refused for the outage was forwarded by no gate.
    refused_ids = {rows[a.sent.request_id]["id"] for a in answers
                   if failed_closed(a.sent) and a.sent.request_id in rows}
    assert not refused_ids & set(forwarded)
    # The client-change listener moved to the new primary as well.
    assert sum(1 for e in events if e.get("event") == "client_events_listening") >= 4
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert audit.stdout.startswith("audit chain ok:"), audit.stdout
