"""The fake Twilio, driven by the official twilio SDK exactly as a dialer drives api.twilio.com."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from tests import fake_twilio
from tests.fake_twilio import (
    CALL_SCHEMA,
    MESSAGE_SCHEMA,
    FakeTwilio,
    read_spec,
    schema_properties,
    segments,
)
from tests.twilio import extract_subset

# twilio-python's async client uses aiohttp's deprecated BasicAuth / `auth=`; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated"),
    pytest.mark.filterwarnings("ignore:BasicAuth is deprecated"),
]

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "fake-auth-token-0123456789abcdef"
OTHER_SID = "AC" + "f" * 32
KEY_SID = "SK" + "1" * 32
KEY_SECRET = "api-key-secret"
TO = "+31612345678"
FROM = "+31970102030"
TWIML_URL = "https://dialer.example/twiml"
MG = "MG" + "a" * 32
CONTENT = "HX" + "b" * 32
CURLY = "\u2019"  # a curly apostrophe: outside GSM-7
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()}


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(SID, TOKEN, api_keys={KEY_SID: KEY_SECRET}) as running:
        yield running


def sync_client(fake: FakeTwilio, *, password: str = TOKEN, **kwargs: Any) -> Any:
    """The blocking SDK client a dialer would use; call it through asyncio.to_thread."""
    client = Client(kwargs.pop("username", SID), password, **kwargs)
    client.http_client.session.trust_env = False  # no proxy from the environment for 127.0.0.1
    client.api.base_url = fake.base_url
    return client


@pytest.fixture
async def async_client(fake: FakeTwilio) -> AsyncIterator[Any]:
    http_client = AsyncTwilioHttpClient()
    client = Client(SID, TOKEN, http_client=http_client)
    client.api.base_url = fake.base_url
    yield client
    await http_client.close()


async def raw_post(fake: FakeTwilio, resource: str, form: list[tuple[str, str]]) -> Any:
    """POST a form by hand, for what the SDK will not send (garbage, repeats, wrong shapes)."""
    url = f"{fake.base_url}/2010-04-01/Accounts/{SID}/{resource}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=form, headers=AUTH) as response,
    ):
        return response.status, await response.json()


async def wait_until(condition: Any, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- creates -----------------------------------------------------------------------------------


async def test_create_message_answers_spec_shaped_201(fake: FakeTwilio) -> None:
    client = sync_client(fake)

    message = await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="Hallo")

    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    assert int(message.sid[2:], 16) >= 0
    assert message.status == "queued"
    assert message.num_segments == "1"
    assert (message.to, message.from_, message.body) == (TO, FROM, "Hallo")
    assert message.account_sid == SID
    assert message.direction == "outbound-api"
    assert message.error_code is None
    assert message.date_created is not None  # the SDK parsed an RFC 2822 date
    assert message.uri == f"/2010-04-01/Accounts/{SID}/Messages/{message.sid}.json"
    stored = fake.messages[message.sid]
    assert set(schema_properties(MESSAGE_SCHEMA)) <= set(stored)
    assert stored["subresource_uris"]["media"].endswith(f"/Messages/{message.sid}/Media.json")


async def test_create_call_answers_spec_shaped_201(fake: FakeTwilio) -> None:
    client = sync_client(fake)

    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, url=TWIML_URL)

    assert call.sid.startswith("CA")
    assert len(call.sid) == 34
    assert call.status == "queued"
    assert (call.to, call._from, call.account_sid) == (TO, FROM, SID)  # the SDK's spelling
    assert call.direction == "outbound-api"
    assert call.uri == f"/2010-04-01/Accounts/{SID}/Calls/{call.sid}.json"
    assert all(call.sid in uri for uri in call.subresource_uris.values())
    assert set(schema_properties(CALL_SCHEMA)) <= set(fake.calls[call.sid])


async def test_every_schema_property_is_on_the_wire(fake: FakeTwilio) -> None:
    status, body = await raw_post(
        fake, "Messages.json", [("To", TO), ("MessagingServiceSid", MG), ("Body", "hoi")]
    )

    assert status == 201
    assert set(schema_properties(MESSAGE_SCHEMA)) <= set(body)
    assert body["from"] is None
    assert body["messaging_service_sid"] == MG
    assert "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in str(body["subresource_uris"])


async def test_async_client_records_repeated_media_urls_in_order(
    fake: FakeTwilio, async_client: Any
) -> None:
    media = ["https://cdn.example/b.png", "https://cdn.example/a.png"]

    message = await async_client.messages.create_async(
        to=TO, from_=FROM, body="Kijk", media_url=media
    )

    assert message.num_media == "2"
    (create,) = fake.creates("Messages")
    assert create.values("MediaUrl") == media
    assert [k for k, _ in create.form] == ["To", "From", "Body", "MediaUrl", "MediaUrl"]
    assert b"MediaUrl=https%3A%2F%2Fcdn.example%2Fb.png&MediaUrl=https%3A%2F%2Fcdn" in create.body
    assert create.username == SID
    assert create.authenticated


async def test_call_records_repeated_status_callback_events(fake: FakeTwilio) -> None:
    client = sync_client(fake)
    events = ["initiated", "ringing", "answered", "completed"]

    await asyncio.to_thread(
        client.calls.create,
        to=TO,
        from_=FROM,
        url=TWIML_URL,
        status_callback="https://dialer.example/status",
        status_callback_event=events,
    )

    (create,) = fake.creates("Calls")
    assert create.values("StatusCallbackEvent") == events
    assert create.value("Url") == TWIML_URL
    assert create.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert create.headers["User-Agent"].startswith("twilio-python/")


async def test_num_segments_follows_the_encoding(fake: FakeTwilio, async_client: Any) -> None:
    gsm = await async_client.messages.create_async(to=TO, from_=FROM, body="a" * 161)
    ucs2 = await async_client.messages.create_async(to=TO, from_=FROM, body=CURLY * 71)

    assert (gsm.num_segments, ucs2.num_segments) == ("2", "2")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters cost two septets
        ("€" * 81, 2),
        ("a" * 152 + "€" + "a" * 152, 3),  # an escape pair is never split
        (CURLY * 70, 1),  # a curly apostrophe makes it UCS-2
        (CURLY * 71, 2),
        ("😀" * 35, 1),  # an emoji is two UTF-16 units
        ("a" * 66 + "😀" + "a" * 66, 3),  # a surrogate pair is never split
    ],
)
def test_segments(body: str, expected: int) -> None:
    assert segments(body) == expected


# --- validation --------------------------------------------------------------------------------

MSG_OK = [("To", TO), ("From", FROM), ("Body", "hoi")]
CALL_OK = [("To", TO), ("From", FROM), ("Url", TWIML_URL)]


@pytest.mark.parametrize(
    ("resource", "form", "code"),
    [
        ("Messages.json", [("From", FROM), ("Body", "hoi")], 21604),
        ("Messages.json", [("To", TO), ("Body", "hoi")], 21603),
        ("Messages.json", [("To", TO), ("MessagingServiceSid", MG)], 21619),
        ("Messages.json", [("To", TO), ("From", FROM), ("Body", "")], 21619),
        ("Messages.json", [("To", TO), ("From", FROM), ("Body", "x" * 1601)], 21617),
        ("Calls.json", [("From", FROM), ("Url", TWIML_URL)], 21201),
        ("Calls.json", [("To", TO), ("Url", TWIML_URL)], 21213),
        ("Calls.json", [("To", TO), ("From", FROM)], 21205),
        ("Calls.json", [*CALL_OK, ("Timeout", "soon")], 20001),
        ("Calls.json", [*CALL_OK, ("Method", "PUT")], 20001),
        ("Messages.json", [("To", TO), ("MessagingServiceSid", "MGnope"), ("Body", "x")], 20001),
        ("Messages.json", [*MSG_OK, ("Body", "twice")], 20001),
    ],
)
async def test_invalid_creates_get_twilio_codes(
    fake: FakeTwilio, resource: str, form: list[tuple[str, str]], code: int
) -> None:
    status, body = await raw_post(fake, resource, form)

    assert (status, body["code"], body["status"]) == (400, code, 400)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert fake.calls == {}
    assert fake.messages == {}


@pytest.mark.parametrize(
    ("resource", "form"),
    [
        ("Messages.json", [("To", TO), ("From", FROM), ("Body", "x" * 1600)]),
        ("Messages.json", [("To", TO), ("MessagingServiceSid", MG), ("ContentSid", CONTENT)]),
        ("Messages.json", [("To", TO), ("From", FROM), ("MediaUrl", "https://cdn.example/a")]),
        ("Calls.json", [("To", TO), ("From", FROM), ("Twiml", "<Response><Say/></Response>")]),
        ("Calls.json", [("To", TO), ("From", FROM), ("ApplicationSid", "AP" + "c" * 32)]),
        ("Calls.json", [*CALL_OK, ("Method", "post"), ("Timeout", "20"), ("Record", "true")]),
    ],
)
async def test_valid_alternatives_are_created(
    fake: FakeTwilio, resource: str, form: list[tuple[str, str]]
) -> None:
    status, body = await raw_post(fake, resource, form)

    assert status == 201, body


async def test_unknown_field_is_refused_by_name(fake: FakeTwilio) -> None:
    status, body = await raw_post(fake, "Messages.json", [*MSG_OK, ("ConsentToken", "x")])

    assert (status, body["code"]) == (400, 20001)
    assert "ConsentToken" in body["message"]


async def test_missing_body_raises_21619_through_the_sdk(fake: FakeTwilio) -> None:
    client = sync_client(fake)

    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM)

    assert (caught.value.status, caught.value.code) == (400, 21619)


# --- authentication ----------------------------------------------------------------------------


async def test_wrong_credentials_raise_20003(fake: FakeTwilio) -> None:
    client = sync_client(fake, password="wrong-token")

    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="hoi")

    assert (caught.value.status, caught.value.code) == (401, 20003)
    assert "Authenticate" in caught.value.msg
    assert fake.received[-1].username == SID
    assert not fake.received[-1].authenticated
    assert fake.messages == {}


async def test_wrong_credentials_raise_20003_async(fake: FakeTwilio) -> None:
    http_client = AsyncTwilioHttpClient()
    client = Client(SID, "wrong-token", http_client=http_client)
    client.api.base_url = fake.base_url
    try:
        with pytest.raises(TwilioRestException) as caught:
            await client.calls.create_async(to=TO, from_=FROM, url=TWIML_URL)
    finally:
        await http_client.close()

    assert (caught.value.status, caught.value.code) == (401, 20003)


async def test_no_credentials_get_the_twilio_401_body(fake: FakeTwilio) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.base_url}/2010-04-01/Accounts/{SID}/Calls.json") as response,
    ):
        body = await response.json()
        assert response.headers["WWW-Authenticate"].startswith("Basic")

    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert fake.received[-1].username is None


async def test_api_key_authenticates_for_the_account(fake: FakeTwilio) -> None:
    client = sync_client(fake, username=KEY_SID, password=KEY_SECRET, account_sid=SID)

    message = await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="hoi")

    assert message.account_sid == SID
    assert fake.received[-1].username == KEY_SID


async def test_another_accounts_path_is_not_found(fake: FakeTwilio) -> None:
    client = sync_client(fake, account_sid=OTHER_SID)

    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="hoi")

    assert (caught.value.status, caught.value.code) == (404, 20404)


# --- fetch, list, update, delete ---------------------------------------------------------------


async def test_fetch_update_and_list_calls(fake: FakeTwilio) -> None:
    client = sync_client(fake)
    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, url=TWIML_URL)
    other = await asyncio.to_thread(
        client.calls.create, to="+31687654321", from_=FROM, url=TWIML_URL
    )

    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    updated = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    listed = await asyncio.to_thread(client.calls.list)
    to_one = await asyncio.to_thread(client.calls.list, to=TO)
    completed = await asyncio.to_thread(client.calls.list, status="completed")

    assert (fetched.sid, fetched.to, fetched.status) == (call.sid, TO, "queued")
    assert (updated.status, fake.calls[call.sid]["status"]) == ("completed", "completed")
    assert updated.end_time is not None
    assert [c.sid for c in listed] == [other.sid, call.sid]  # newest first
    assert [c.sid for c in to_one] == [call.sid]
    assert [c.sid for c in completed] == [call.sid]
    assert fake.received[-1].query_string.startswith("Status=completed")


async def test_list_pages_follow_next_page_uri(fake: FakeTwilio, async_client: Any) -> None:
    for n in range(5):
        await async_client.messages.create_async(to=TO, from_=FROM, body=f"bericht {n}")

    everything = await async_client.messages.list_async(page_size=2)
    page = await async_client.messages.page_async(page_size=2)

    assert [m.body for m in everything] == [f"bericht {n}" for n in (4, 3, 2, 1, 0)]
    assert [r.query_string for r in fake.received if r.method == "GET"][:3] == [
        "PageSize=2",
        "PageSize=2&Page=1",
        "PageSize=2&Page=2",
    ]
    assert page.next_page_url.endswith("Messages.json?PageSize=2&Page=1")


async def test_list_body_has_the_spec_paging_fields(fake: FakeTwilio) -> None:
    url = f"{fake.base_url}/2010-04-01/Accounts/{SID}/Messages.json?PageSize=10"
    async with aiohttp.ClientSession() as session, session.get(url, headers=AUTH) as response:
        body = await response.json()

    assert body == {
        "messages": [],
        "end": 0,
        "first_page_uri": f"/2010-04-01/Accounts/{SID}/Messages.json?PageSize=10&Page=0",
        "next_page_uri": None,
        "page": 0,
        "page_size": 10,
        "previous_page_uri": None,
        "start": 0,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages.json?PageSize=10&Page=0",
    }


async def test_unknown_sids_are_not_found(fake: FakeTwilio) -> None:
    client = sync_client(fake)

    with pytest.raises(TwilioRestException) as call_missing:
        await asyncio.to_thread(client.calls("CA" + "0" * 32).fetch)
    with pytest.raises(TwilioRestException) as message_missing:
        await asyncio.to_thread(client.messages("SM" + "0" * 32).fetch)

    assert (call_missing.value.status, call_missing.value.code) == (404, 20404)
    assert (message_missing.value.status, message_missing.value.code) == (404, 20404)


async def test_delete_message_answers_204(fake: FakeTwilio, async_client: Any) -> None:
    message = await async_client.messages.create_async(to=TO, from_=FROM, body="weg")

    deleted = await async_client.messages(message.sid).delete_async()

    assert deleted is True
    assert fake.messages == {}
    with pytest.raises(TwilioRestException) as caught:
        await async_client.messages(message.sid).fetch_async()
    assert caught.value.code == 20404


async def test_unrouted_paths_get_twilio_errors(fake: FakeTwilio) -> None:
    base = f"{fake.base_url}/2010-04-01/Accounts/{SID}"
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(f"{base}/IncomingPhoneNumbers.json") as response:
            not_found = (response.status, (await response.json())["code"])
        async with session.put(f"{base}/Calls.json") as response:
            not_allowed = (response.status, (await response.json())["code"])

    assert not_found == (404, 20404)
    assert not_allowed == (405, 20004)


def send_raw(fake: FakeTwilio, method: str, target: str, body: bytes = b"") -> tuple[int, Any]:
    """A request with `target` on the request line exactly as given (blocking)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30)
    try:
        headers = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
        conn.request(method, target, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_dot_segments_resolve_as_on_a_real_server(fake: FakeTwilio) -> None:
    """What a server does with `..` (RFC 3986, 5.2.4) after decoding the path: the fake does
    it too, so a proxy that forwards such a path is caught by its tests."""
    call, message = "CA" + "2" * 32, "SM" + "3" * 32
    base = f"/2010-04-01/Accounts/{SID}"
    body = urlencode({"To": TO, "From": FROM, "Url": TWIML_URL}).encode()
    for target in (
        f"{base}/Calls/{call}/../../Calls.json",
        f"{base}/Calls/{call}/%2e%2e/%2E%2E/Calls.json",
        f"{base}/Calls/{call}%2f..%2f..%2fCalls.json",
        f"{base}/Messages/{message}/./../../Calls.json",
    ):
        status, created = await asyncio.to_thread(send_raw, fake, "POST", target, body)
        assert status == 201, (target, created)
        assert fake.received[-1].raw_path == target
        assert fake.received[-1].path == f"{base}/Calls.json"
    assert len(fake.creates("Calls")) == 4
    status, _ = await asyncio.to_thread(
        send_raw, fake, "GET", f"{base}/Calls/{call}/../../../x.json")
    assert status == 404
    assert fake.received[-1].path == "/2010-04-01/Accounts/x.json"
    assert len(fake.received) == 5


async def test_recordings_of_a_call(fake: FakeTwilio, async_client: Any) -> None:
    call = await async_client.calls.create_async(to=TO, from_=FROM, url=TWIML_URL)
    recording = fake.add_recording(call.sid)

    fetched = await async_client.recordings(recording["sid"]).fetch_async()
    listed = await async_client.calls(call.sid).recordings.list_async()
    paused = await async_client.calls(call.sid).recordings(recording["sid"]).update_async(
        status="paused")
    base = f"/2010-04-01/Accounts/{SID}"
    media = await asyncio.to_thread(
        requests.get, f"{fake.base_url}{base}/Recordings/{recording['sid']}.mp3",
        headers=AUTH, timeout=30)

    assert (fetched.call_sid, fetched.account_sid) == (call.sid, SID)
    assert [r.sid for r in listed] == [recording["sid"]]
    assert paused.status == "paused"
    assert media.headers["Content-Type"] == "audio/mpeg"
    assert media.content == f"mp3 audio of {recording['sid']}".encode()
    status, body = await asyncio.to_thread(
        send_raw, fake, "POST", f"{base}/Calls/{call.sid}/Recordings/{recording['sid']}.json",
        b"status=paused")
    assert (status, body["code"]) == (400, 20001)
    assert await async_client.recordings(recording["sid"]).delete_async() is True
    assert fake.recordings == {}


# --- fault modes -------------------------------------------------------------------------------


async def test_fail_with_500_once(fake: FakeTwilio) -> None:
    client = sync_client(fake)
    fake.fail_with(500, times=1)

    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="hoi")
    message = await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="hoi")

    assert (caught.value.status, caught.value.code) == (500, 20500)
    assert message.status == "queued"
    assert len(fake.creates()) == 2
    assert len(fake.messages) == 1


async def test_fail_with_429_until_reset(fake: FakeTwilio, async_client: Any) -> None:
    fake.fail_with(429, 20429)

    for _ in range(3):
        with pytest.raises(TwilioRestException) as caught:
            await async_client.messages.create_async(to=TO, from_=FROM, body="hoi")
        assert (caught.value.status, caught.value.code) == (429, 20429)
    fake.reset()
    message = await async_client.messages.create_async(to=TO, from_=FROM, body="hoi")

    assert message.status == "queued"
    assert len(fake.creates("Messages")) == 4


async def test_fail_with_defaults_the_code_per_status(fake: FakeTwilio) -> None:
    fake.fail_with(503)

    status, body = await raw_post(fake, "Messages.json", MSG_OK)

    assert (status, body["code"], body["message"]) == (503, 20503, "Service Unavailable")


async def test_refuse_then_resume_on_the_same_port(fake: FakeTwilio, async_client: Any) -> None:
    client = sync_client(fake)
    base_url = fake.base_url
    await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="voor")

    await fake.refuse()

    assert not fake.listening
    assert fake.base_url == base_url
    with pytest.raises(requests.exceptions.ConnectionError):
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="tijdens")
    with pytest.raises(aiohttp.ClientConnectionError):
        await async_client.messages.create_async(to=TO, from_=FROM, body="tijdens")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", fake.port)

    await fake.resume()

    assert fake.base_url == base_url
    after = await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="na")
    after_async = await async_client.messages.create_async(to=TO, from_=FROM, body="na")
    assert after.status == after_async.status == "queued"
    assert [m["body"] for m in fake.messages.values()] == ["voor", "na", "na"]


async def test_hang_outlasts_a_short_client_timeout(fake: FakeTwilio) -> None:
    client = sync_client(fake, http_client=TwilioHttpClient(timeout=0.3))
    client.http_client.session.trust_env = False
    fake.hang(30)

    with pytest.raises(requests.exceptions.Timeout):
        await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="traag")

    await wait_until(lambda: fake.hanging == 0)  # the client gave up: the fake stops waiting
    assert len(fake.creates()) == 1
    assert fake.messages == {}
    fake.reset()
    message = await asyncio.to_thread(client.messages.create, to=TO, from_=FROM, body="snel")
    assert message.status == "queued"


async def test_hang_is_cancelled_when_the_async_client_gives_up(
    fake: FakeTwilio, async_client: Any
) -> None:
    fake.hang(30)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            async_client.calls.create_async(to=TO, from_=FROM, url=TWIML_URL), timeout=0.3
        )

    await wait_until(lambda: fake.hanging == 0)
    assert fake.calls == {}


async def test_hang_answers_late_when_the_client_waits(fake: FakeTwilio, async_client: Any) -> None:
    fake.hang(0.3, times=1)
    started = time.monotonic()

    first = await async_client.messages.create_async(to=TO, from_=FROM, body="traag")
    slow = time.monotonic() - started
    second = await async_client.messages.create_async(to=TO, from_=FROM, body="snel")

    assert slow >= 0.3
    assert first.status == second.status == "queued"


async def test_stop_cancels_a_pending_hang() -> None:
    fake = FakeTwilio(SID, TOKEN)
    await fake.start()
    fake.hang(30)
    http_client = AsyncTwilioHttpClient()
    client = Client(SID, TOKEN, http_client=http_client)
    client.api.base_url = fake.base_url
    pending = asyncio.create_task(client.messages.create_async(to=TO, from_=FROM, body="x"))
    await wait_until(lambda: fake.hanging == 1)

    started = time.monotonic()
    await fake.stop()

    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await pending
    await http_client.close()


# --- the spec ----------------------------------------------------------------------------------


def test_shipped_spec_subset_matches_twilios_document() -> None:
    """The shipped subset is exactly what the extractor takes from Twilio's full document
    (the reference copy lies beside the repository in the workspace and in CI)."""
    full = Path(fake_twilio.__file__).resolve().parents[2] / "shared" / "reference" / "twilio"
    document = full / "twilio_api_v2010.json"
    if not document.is_file():
        pytest.skip(f"Twilio's full OpenAPI document is not at {document}")
    expected = extract_subset.subset(json.loads(document.read_text("utf-8")))
    assert fake_twilio.load_spec() == expected


def test_missing_spec_says_how_to_regenerate(tmp_path: Path) -> None:
    missing = tmp_path / "twilio_api_v2010.json"

    with pytest.raises(FileNotFoundError, match=r"extract_subset\.py") as caught:
        read_spec(missing)

    assert str(missing) in str(caught.value)
