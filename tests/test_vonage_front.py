"""The Vonage front end to end: the official vonage SDK as the dialer over TLS, real sockets,
real PostgreSQL, and a fake Vonage upstream that records what reached it."""

from __future__ import annotations

import asyncpg
from vonage_sms import SmsMessage

from proxy.keys import POOL
from proxy.phone import subject_hash
from tests.conftest import mobile
from tests.fake_vonage import FakeVonage
from tests.vonage_fixtures import VonageWorld
from tests.world import World, in_thread

pytest_plugins = ["tests.vonage_fixtures"]


async def decisions_for(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.upstream_sid, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows


def digits(number: str) -> str:
    return number.removeprefix("+")


# --- SMS ------------------------------------------------------------------------------------

async def test_allowed_sms_gets_the_footer_and_upstream_credentials(
        vworld: VonageWorld, fake_vonage: FakeVonage) -> None:
    w = vworld.world
    number = mobile()
    await w.consent(number, "sms")
    sdk = vworld.sdk(with_app=False)
    response = await in_thread(lambda: sdk.sms.send(SmsMessage(
        to=digits(number), from_=digits(w.sms), text="Uw nieuwe tarief: 10% korting!",
        client_ref="ref-1")))
    assert response.messages[0].status == "0"
    (received,) = fake_vonage.sms()
    assert received.authenticated
    assert received.headers["Authorization"].startswith("Basic ")
    assert received.value("to") == digits(number)
    assert received.value("from") == digits(w.sms)
    assert received.value("client-ref") == "ref-1"
    assert received.value("text") == (
        f"Uw nieuwe tarief: 10% korting!\nAfmelden? Sms STOP naar {w.sms}")
    assert not any(k in ("api_key", "api_secret") for k, _ in received.form)
    (row,) = await decisions_for(w, number)
    assert row["decision"] == "allow"
    assert row["front"] == "vonage"
    assert row["details"]["footer_appended"] is True
    assert row["upstream_status"] == 200
    assert row["upstream_sid"] == response.messages[0].message_id
    assert received.headers["X-Consent-Decision-Id"] == str(row["id"])
