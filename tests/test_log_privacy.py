"""A full scenario through every route family: no log line holds a full phone number, an SMS
body or a token."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import MultiDict
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from proxy.app import create_app
from tests.conftest import (
    ADMIN_TOKEN,
    PROXY_SECRET,
    UP_SID,
    UP_TOKEN,
    Clock,
    make_settings,
    mobile,
)
from tests.fake_twilio import FakeTwilio
from tests.world import in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PUBLIC = "https://gate.example.nl"
BODY = "Geheime aanbieding 4711 voor u"


async def test_no_number_body_or_token_in_any_log_line(
    aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio, tmp_path: Path,
    auth: dict[str, str], log_output: io.StringIO,
) -> None:
    settings = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID, TWILIO_AUTH_TOKEN=UP_TOKEN,
                             TWILIO_API_BASE=fake.base_url, PUBLIC_URL=PUBLIC)
    proxy: TestClient[Any, Any] = await aiohttp_client(create_app(settings, clock=clock))
    world = await make_world(proxy, auth)
    allowed, denied, stopper = mobile(), mobile(), mobile()
    await world.consent(allowed, "sms")
    await world.consent(stopper, "voice")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(to="0" + allowed[3:],
                                                          from_=world.sms, body=BODY))
    with pytest.raises(TwilioRestException):
        await in_thread(lambda: sdk.messages.create(to=denied, from_=world.sms, body=BODY))
    with pytest.raises(TwilioRestException):
        await in_thread(lambda: sdk.calls.create(to=denied, from_=world.voice, url="https://x"))
    params = [("MessageSid", "SM" + "1" * 32), ("From", stopper), ("To", world.sms),
              ("Body", "Stop aub"), ("AccountSid", UP_SID)]
    signature = RequestValidator(UP_TOKEN).compute_signature(PUBLIC + "/webhooks/twilio/sms",
                                                             MultiDict(params))
    resp = await proxy.post("/webhooks/twilio/sms", data=params,
                            headers={"X-Twilio-Signature": signature})
    assert resp.status == 200
    forged = await proxy.post("/webhooks/twilio/sms", data=params,
                              headers={"X-Twilio-Signature": "forged"})
    assert forged.status == 403
    await proxy.post("/admin/v1/check", json={"channel": "voice", "to": allowed,
                                              "from": world.voice}, headers=auth)
    await proxy.get(f"/admin/v1/subjects/{allowed}", headers=auth)
    await proxy.get(f"/admin/v1/subjects/{allowed}/evidence", headers=auth)

    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line.strip()]
    assert len(lines) >= 10
    raw = log_output.getvalue()
    for number in (allowed, denied, stopper):
        national = number[3:]
        assert national not in raw, number
        assert re.sub(r"\D", "", number) not in re.sub(r"[^\d\n]", "", raw).replace("\n", " ")
    for secret in (BODY, "Stop aub", ADMIN_TOKEN, PROXY_SECRET, UP_TOKEN, world.token):
        assert secret not in raw, secret
    decided = [e for e in lines if e.get("decision")]
    assert {e["decision"] for e in decided} == {"allow", "deny"}
    assert all(e["to"].startswith("+31 6 ****") for e in decided)
    # What was sent can be traced from the log alone (the SID is no personal data).
    (sent,) = [e for e in decided if e["decision"] == "allow"]
    assert (sent["sid"], sent["upstream_status"]) == (message.sid, 201)
    assert any(e["event"] == "objection_recorded" for e in lines)
