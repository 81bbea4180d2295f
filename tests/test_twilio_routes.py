"""The Twilio front serves canonical paths of documented shapes only
(proxy/fronts/twilio/routes.py).

A dialer once sent `POST …/Calls/{its own CA}/../../Calls.json` (and `%2e%2e`, `..%2f`,
…) and it reached Twilio as a plain create, undecided. Here the requests go out as raw bytes
(http.client sends the path exactly as given, no client-side normalisation) to a real proxy
on a real port, with the fake Twilio behind it resolving paths as a real server does, and the
tests assert on what the fake received and on the decision rows.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.client
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.fronts.twilio import fields as twilio_fields
from proxy.fronts.twilio import messages as twilio_messages
from proxy.fronts.twilio import routes as twilio_routes
from proxy.fronts.twilio.errors import TwilioError
from proxy.fronts.twilio.front import DECISION_HEADER, IDEMPOTENCY_HEADER
from proxy.fronts.twilio.keys import UPSTREAM
from proxy.fronts.twilio.upstream import CANONICAL_TAIL, SandboxUpstream
from tests.conftest import AMS, UP_SID, UP_TOKEN, Clock, make_settings, mobile
from tests.fake_twilio import FakeTwilio, Received, resolve_path
from tests.twilio import extract_fields
from tests.world import World, in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T = TypeVar("T")
ACCOUNT = "/2010-04-01/Accounts/"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "twilio"


# --- raw requests ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    location: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(base: str, method: str, target: str, *, body: bytes = b"",
             headers: Mapping[str, str] | None = None) -> Answer:
    """One request with `target` exactly as given on the request line (blocking)."""
    url = urlsplit(base)
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, target, body=body or None, headers=dict(headers or {}))
        response = conn.getresponse()
        return Answer(response.status, response.read(),
                      response.getheader("Content-Type", ""), response.getheader("Location"))
    finally:
        conn.close()


def basic(sid: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}


# --- the world: two dialers on one upstream account -------------------------------------------

@dataclass
class Scene:
    world: World
    other: World
    fake: FakeTwilio
    pool: asyncpg.Pool
    loop: asyncio.AbstractEventLoop
    consented: str
    objected: str
    call: str  # the world's own call, message and recording
    message: str
    recording: str
    other_call: str  # the other dialer's
    other_message: str
    other_recording: str

    @property
    def own(self) -> str:
        return ACCOUNT + self.world.sid

    def auth(self) -> dict[str, str]:
        return basic(self.world.sid, self.world.token)

    def run(self, coro: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the test's loop from a thread (hypothesis runs in one)."""
        async def call() -> T:
            return await coro()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=60)

    async def decisions(self) -> int:
        count: int = await self.pool.fetchval("SELECT count(*) FROM decisions")
        return count

    def create_body(self, kind: str, to: str | None = None) -> bytes:
        to = to or self.objected
        if kind == "Calls":
            return urlencode({"To": to, "From": self.world.voice,
                              "Url": "https://dialer.example/twiml"}).encode()
        return urlencode({"To": to, "From": self.world.sms, "Body": "Aanbieding"}).encode()


async def _scene(aiohttp_client: Any, database_url: str, fake: FakeTwilio, pool: asyncpg.Pool,
                 auth: dict[str, str]) -> Scene:
    clock = Clock(dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS))  # a Monday: calls may go
    settings_ = make_settings(database_url, TWILIO_ACCOUNT_SID=UP_SID,
                              TWILIO_AUTH_TOKEN=UP_TOKEN, TWILIO_API_BASE=fake.base_url)
    proxy: TestClient[Any, Any] = await aiohttp_client(create_app(settings_, clock=clock))
    world, other = await make_world(proxy, auth), await make_world(proxy, auth)
    consented, objected = mobile(), mobile()
    sids: list[str] = []
    for w in (world, other):
        await w.consent(consented, "voice")
        await w.consent(consented, "sms")
        call = await _create(w, "Calls", {"To": consented, "From": w.voice,
                                          "Url": "https://dialer.example/twiml"})
        message = await _create(w, "Messages", {"To": consented, "From": w.sms, "Body": "Hoi"})
        sids += [call, message, fake.add_recording(call)["sid"]]
    await world.objection(objected)
    await world.committed()
    fake.received.clear()
    return Scene(world, other, fake, pool, asyncio.get_running_loop(), consented, objected,
                 *sids)


async def _create(world: World, kind: str, form: dict[str, str]) -> str:
    answer = await asyncio.to_thread(
        send_raw, world.base, "POST", f"{ACCOUNT}{world.sid}/{kind}.json",
        body=urlencode(form).encode(), headers={**basic(world.sid, world.token), **FORM})
    assert answer.status == 201, answer
    sid: str = answer.json()["sid"]
    return sid


@pytest.fixture
async def scene(aiohttp_client: Any, database_url: str, fake: FakeTwilio, pool: asyncpg.Pool,
                auth: dict[str, str]) -> Scene:
    return await _scene(aiohttp_client, database_url, fake, pool, auth)


async def _send(scene: Scene, method: str, target: str, *, body: bytes = b"",
                headers: Mapping[str, str] | None = None) -> Answer:
    all_headers = {**scene.auth(), **(FORM if body else {}), **(headers or {})}
    return await asyncio.to_thread(send_raw, scene.world.base, method, target, body=body,
                                   headers=all_headers)


# --- the holes closed --------------------------------------------------------------------------

def _traversals(s: Scene) -> list[str]:
    own, ca, sm = s.own, s.call, s.message
    return [
        f"{own}/Calls/{ca}/../../Calls.json",
        f"{own}/Calls/{ca}/%2e%2e/%2e%2e/Calls.json",
        f"{own}/Calls/{ca}/%2E%2E/%2e%2E/Calls.json",
        f"{own}/Calls/{ca}/..%2f..%2fCalls.json",
        f"{own}/Calls/{ca}/..%2F..%2FCalls.json",
        f"{own}/Calls/{ca}%2f..%2f..%2fCalls.json",
        f"{own}/Calls/{ca}%2F..%2F..%2FCalls.json",
        f"{own}/Calls/{ca}/./../../Messages.json",
        f"{own}/Messages/{sm}/../../Messages.json",
        f"{own}/Messages/{sm}/%2e%2e/%2e%2e/Messages.json",
        f"{own}/Calls/{ca}%5c..%5c..%5cCalls.json",
        f"{own}/Calls/{ca}%5C..%5C..%5CCalls.json",
        f"{own}/Calls/{ca}\\..\\..\\Calls.json",
        f"{own}/%43alls.json",
        f"{own}/Calls%2ejson",
        f"{own}/Calls.json;x=1",
        f"{own}/Calls;x=1/{ca}.json",
        f"{own}/Calls/{ca}.json;/../../Calls.json",
        f"{own}//Calls.json",
        f"{own}/Calls//{ca}.json",
        f"{own}/Calls/{ca}.json/",
        f"{own}/./Calls.json",
        f"{own}/Calls.json#x",
        f"{ACCOUNT}%41{s.world.sid[1:]}/Calls.json",
        f"{ACCOUNT}{s.world.sid}%2fCalls.json",
    ]


def _reads(s: Scene) -> list[str]:
    own, ca, sm = s.own, s.call, s.message
    return [
        f"{own}/Calls/{ca}/../../IncomingPhoneNumbers.json",
        f"{own}/Calls/{ca}/%2e%2e/%2e%2e/IncomingPhoneNumbers.json",
        f"{own}/Calls/{ca}/../../Balance.json",
        f"{own}/Calls/{ca}/../{s.other_call}.json",
        f"{own}/Calls/{ca}%2f..%2f{s.other_call}.json",
        f"{own}/Messages/{sm}/../{s.other_message}.json",
        f"{own}/Messages/{sm}/%2E%2E/{s.other_message}/Media.json",
        f"{own}/Calls/{ca}/../../Recordings/{s.other_recording}.json",
        f"{own}/Calls/{ca}/../../../{s.other.sid}/Calls/{s.other_call}.json",
        f"{own}/Calls/{ca}/../../../{UP_SID}/Calls.json",
        f"{own}/Calls/{ca}/../../Calls.json?PageSize=1000",
        f"{own}/Recordings/{s.recording}/../../Calls.json",
        f"{own}/Recordings/{s.recording}.json/../../../Messages.json",
    ]


async def _nothing_reached(scene: Scene, answer: Answer, before: int, what: str) -> None:
    assert (answer.status, answer.json()["code"]) == (404, 20404), (what, answer)
    assert answer.json()["status"] == 404
    assert scene.fake.received == [], (what, scene.fake.received)
    assert await scene.decisions() == before, what


async def test_traversal_to_a_create_is_refused_and_nothing_is_sent(scene: Scene) -> None:
    """The critical hole: a create to a number that objected, sent as a pass-through."""
    before = await scene.decisions()
    for target in _traversals(scene):
        for kind in ("Calls", "Messages"):
            answer = await _send(scene, "POST", target, body=scene.create_body(kind))
            await _nothing_reached(scene, answer, before, f"POST {target}")


async def test_traversal_reads_and_deletes_nothing(scene: Scene) -> None:
    """Another client's calls and messages, the account's lists and phone numbers."""
    before = await scene.decisions()
    for target in _traversals(scene) + _reads(scene):
        for method in ("GET", "DELETE"):
            answer = await _send(scene, method, target)
            await _nothing_reached(scene, answer, before, f"{method} {target}")
    assert scene.other_call in scene.fake.calls
    assert scene.other_message in scene.fake.messages


async def test_create_on_a_non_canonical_path_with_a_consented_number_is_refused_too(
        scene: Scene) -> None:
    """Not decided either: refused before anything happens, whatever the decision would be."""
    before = await scene.decisions()
    for target in (f"{scene.own}/%43alls.json", f"{scene.own}/Calls.json;a=b",
                   f"{scene.own}/./Calls.json", f"{scene.own}/Calls/../Calls.json"):
        answer = await _send(scene, "POST", target,
                             body=scene.create_body("Calls", scene.consented))
        await _nothing_reached(scene, answer, before, target)


async def test_another_clients_resources_are_not_found(scene: Scene) -> None:
    """Canonical paths with the other dialer's SIDs: 404, and nothing but the recording's
    own lookup (to learn its call) reaches upstream."""
    own = scene.own
    for method, target in [
        ("GET", f"{own}/Calls/{scene.other_call}.json"),
        ("POST", f"{own}/Calls/{scene.other_call}.json"),
        ("DELETE", f"{own}/Calls/{scene.other_call}.json"),
        ("GET", f"{own}/Calls/{scene.other_call}/Recordings.json"),
        ("GET", f"{own}/Messages/{scene.other_message}.json"),
        ("DELETE", f"{own}/Messages/{scene.other_message}.json"),
        ("GET", f"{own}/Messages/{scene.other_message}/Media.json"),
        ("GET", f"{own}/Recordings/{scene.other_recording}.json"),
        ("GET", f"{own}/Recordings/{scene.other_recording}.mp3"),
        ("DELETE", f"{own}/Recordings/{scene.other_recording}.json"),
        ("GET", f"{ACCOUNT}{scene.other.sid}/Calls/{scene.other_call}.json"),
    ]:
        body = b"Status=completed" if method == "POST" else b""
        answer = await _send(scene, method, target, body=body)
        assert (answer.status, answer.json()["code"]) == (404, 20404), (method, target)
    lookups = {(r.method, r.path) for r in scene.fake.received}
    assert lookups == {("GET", f"{ACCOUNT}{UP_SID}/Recordings/{scene.other_recording}.json")}
    assert scene.other_call in scene.fake.calls
    assert scene.other_recording in scene.fake.recordings


async def test_account_resources_and_creates_below_are_not_passed_through(
        scene: Scene) -> None:
    own = scene.own
    for method, target, status, code in [
        ("GET", f"{own}/IncomingPhoneNumbers.json", 403, 930403),
        ("GET", f"{own}/Balance.json", 403, 930403),
        ("POST", f"{own}/Calls/{scene.call}/Recordings.json", 403, 930403),
        ("PUT", f"{own}/Calls/{scene.call}.json", 405, 20004),
        ("PATCH", f"{own}/Messages/{scene.message}.json", 405, 20004),
        ("DELETE", f"{own}/Calls.json", 405, 20004),
        ("POST", f"{own}/Recordings/{scene.recording}.json", 405, 20004),
        ("GET", f"{own}/Messages/{scene.message}/Feedback.json", 404, 20404),
        ("POST", f"{own}/Calls/{scene.call}/Streams.json", 404, 20404),
        ("GET", f"{own}/Calls/{scene.call}", 404, 20404),
        ("GET", f"{own}/Calls/{scene.call}.xml", 404, 20404),
        ("GET", f"{own}/Calls/XX{scene.call[2:]}.json", 404, 20404),
        ("GET", f"{own}/Calls/{scene.call}/Unknown.json", 404, 20404),
    ]:
        answer = await _send(scene, method, target)
        assert (answer.status, answer.json()["code"]) == (status, code), (method, target)
    assert scene.fake.received == []


# --- what is passed through, and how --------------------------------------------------------

async def test_served_shapes_reach_the_upstream_rebuilt(scene: Scene) -> None:
    own, up = scene.own, ACCOUNT + UP_SID
    ca, sm, re_ = scene.call, scene.message, scene.recording
    cases = [
        ("GET", f"{own}/Calls/{ca}.json", b"", f"{up}/Calls/{ca}.json", 200),
        ("GET", f"{own}/Calls/{ca}/Recordings.json", b"", f"{up}/Calls/{ca}/Recordings.json",
         200),
        ("POST", f"{own}/Calls/{ca}/Recordings/{re_}.json", b"Status=paused",
         f"{up}/Calls/{ca}/Recordings/{re_}.json", 200),
        ("GET", f"{own}/Calls/{ca}/Notifications.json", b"",
         f"{up}/Calls/{ca}/Notifications.json", 404),  # the fake has none: passed anyway
        ("GET", f"{own}/Messages/{sm}.json", b"", f"{up}/Messages/{sm}.json", 200),
        ("GET", f"{own}/Messages/{sm}/Media.json", b"", f"{up}/Messages/{sm}/Media.json", 404),
        ("GET", f"{own}/Recordings/{re_}.json", b"", f"{up}/Recordings/{re_}.json", 200),
        ("GET", f"{own}/Recordings/{re_}.mp3", b"", f"{up}/Recordings/{re_}.mp3", 200),
        ("GET", f"{own}/Recordings/{re_}.wav", b"", f"{up}/Recordings/{re_}.wav", 200),
        ("POST", f"{own}/Calls/{ca}.json", b"Status=completed", f"{up}/Calls/{ca}.json", 200),
        ("POST", f"{own}/Messages/{sm}.json", b"Body=", f"{up}/Messages/{sm}.json", 200),
        ("DELETE", f"{own}/Recordings/{re_}.json", b"", f"{up}/Recordings/{re_}.json", 204),
    ]
    for method, target, body, upstream_path, status in cases:
        scene.fake.received.clear()
        answer = await _send(scene, method, target, body=body)
        assert answer.status == status, (method, target, answer)
        forwarded = scene.fake.received[-1]
        assert (forwarded.method, forwarded.path, forwarded.raw_path) == (
            method, upstream_path, upstream_path)
        assert forwarded.username == UP_SID
        assert forwarded.body == body
    assert scene.fake.calls[scene.call]["status"] == "completed"
    assert scene.fake.messages[scene.message]["body"] == ""
    assert scene.recording not in scene.fake.recordings


async def test_recording_media_is_streamed_as_upstream_sent_it(scene: Scene) -> None:
    answer = await _send(scene, "GET", f"{scene.own}/Recordings/{scene.recording}.mp3")
    assert answer.status == 200
    assert answer.content_type == "audio/mpeg"
    assert answer.body == f"mp3 audio of {scene.recording}".encode()


async def test_a_redirect_to_where_media_is_stored_reaches_the_dialer(scene: Scene) -> None:
    # Twilio may answer a media request with a redirect to its storage: the proxy follows
    # none itself (it would fetch from wherever upstream points), the dialer gets it whole.
    scene.fake.media_location = "https://media.example/stored/RE.mp3?Signature=abc"
    answer = await _send(scene, "GET", f"{scene.own}/Recordings/{scene.recording}.mp3")
    assert (answer.status, answer.location) == (302, scene.fake.media_location)


async def test_list_queries_are_reencoded_and_lists_filtered(scene: Scene) -> None:
    target = f"{scene.own}/Calls.json?PageSize=20&To=%2B31+6&Status=queued&x"
    answer = await _send(scene, "GET", target)
    assert answer.status == 200
    assert [c["sid"] for c in answer.json()["calls"]] == []  # the filter matches none
    (listed,) = scene.fake.received
    assert listed.raw_path.partition("?")[2] == "PageSize=20&To=%2B31+6&Status=queued&x="
    answer = await _send(scene, "GET", f"{scene.own}/Calls.json")
    assert [c["sid"] for c in answer.json()["calls"]] == [scene.call]
    answer = await _send(scene, "GET", f"{scene.own}/Recordings.json")
    assert [r["sid"] for r in answer.json()["recordings"]] == [scene.recording]
    scene.fake.received.clear()
    for bad in ("To=%FF", "a=%00"):
        answer = await _send(scene, "GET", f"{scene.own}/Calls.json?{bad}")
        assert (answer.status, answer.json()["code"]) == (400, 20001), bad
    answer = await _send(scene, "POST", f"{scene.own}/Calls/{scene.call}.json?Status=canceled",
                         body=b"Status=completed")
    assert (answer.status, answer.json()["code"]) == (400, 20001)
    assert scene.fake.received == []


async def test_a_get_or_delete_with_a_body_is_refused(scene: Scene) -> None:
    for method, tail in [("GET", f"Calls/{scene.call}.json"), ("GET", "Calls.json"),
                         ("DELETE", f"Calls/{scene.call}.json")]:
        answer = await _send(scene, method, f"{scene.own}/{tail}", body=b"Status=completed")
        assert (answer.status, answer.json()["code"]) == (400, 20001), (method, tail)
    assert scene.fake.received == []


# --- headers --------------------------------------------------------------------------------

CLIENT_HEADERS = {
    DECISION_HEADER: "1", IDEMPOTENCY_HEADER: "client-token", "X-Twilio-Signature": "forged",
    "Cookie": "session=1", "X-Forwarded-For": "10.0.0.1", "X-Evil": "1",
    "Accept": "text/html", "I-Twilio-Unknown": "x",
}


async def test_client_headers_never_reach_upstream(scene: Scene) -> None:
    own = scene.own
    for method, target, body in [
        ("GET", f"{own}/Calls/{scene.call}.json", b""),
        ("POST", f"{own}/Calls/{scene.call}.json", b"Status=completed"),
        ("GET", f"{own}/Calls.json", b""),
        ("GET", f"{own}/Recordings/{scene.recording}.wav", b""),
        ("DELETE", f"{own}/Messages/{scene.message}.json", b""),
    ]:
        scene.fake.received.clear()
        answer = await _send(scene, method, target, body=body, headers=CLIENT_HEADERS)
        assert answer.status < 400, (method, target, answer)
        for forwarded in scene.fake.received:
            names = {name.lower() for name in forwarded.headers}
            assert not names & {name.lower() for name in CLIENT_HEADERS if name != "Accept"}
            assert forwarded.headers.get("Accept") != "text/html"
            expected = {"host", "user-agent", "authorization", "accept", "accept-encoding",
                        "content-length", "content-type"}
            assert names <= expected, (target, names)


async def test_create_carries_the_proxys_decision_id_not_the_clients(scene: Scene) -> None:
    answer = await _send(scene, "POST", f"{scene.own}/Messages.json",
                         body=scene.create_body("Messages", scene.consented),
                         headers={DECISION_HEADER: "1", "X-Evil": "1"})
    assert answer.status == 201, answer
    (create,) = scene.fake.received
    decision = await scene.pool.fetchval(
        "SELECT max(id) FROM decisions WHERE client_id = $1", scene.world.sid)
    assert create.headers[DECISION_HEADER] == str(decision) != "1"
    assert "X-Evil" not in create.headers


# --- form fields ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["to", "TO", "To ", " To", "To[]", "body", "Body[]",
                                  "Unknown", "X-Evil", "StatusCallback\x00"])
@pytest.mark.parametrize("kind", ["Calls", "Messages"])
async def test_undocumented_fields_are_refused_before_deciding(
        scene: Scene, kind: str, name: str) -> None:
    before = await scene.decisions()
    body = scene.create_body(kind) + b"&" + urlencode({name: scene.objected}).encode()
    answer = await _send(scene, "POST", f"{scene.own}/{kind}.json", body=body)
    assert (answer.status, answer.json()["code"]) == (400, 20001), answer
    assert repr(name)[1:-1] in answer.json()["message"]
    assert scene.fake.received == []
    assert await scene.decisions() == before


async def test_a_lowercase_to_alone_is_named_not_taken_for_to(scene: Scene) -> None:
    body = urlencode({"to": scene.objected, "From": scene.world.sms, "Body": "x"}).encode()
    answer = await _send(scene, "POST", f"{scene.own}/Messages.json", body=body)
    assert (answer.status, answer.json()["code"]) == (400, 20001)
    assert "'to'" in answer.json()["message"]


@pytest.mark.parametrize(("target", "name"), [
    ("Calls/{call}.json", "to"), ("Calls/{call}.json", "To"), ("Calls/{call}.json", "status"),
    ("Messages/{message}.json", "To"), ("Messages/{message}.json", "body"),
    ("Calls/{call}/Recordings/{recording}.json", "status"),
])
async def test_updates_take_only_their_documented_fields(scene: Scene, target: str,
                                                         name: str) -> None:
    path = target.format(call=scene.call, message=scene.message, recording=scene.recording)
    answer = await _send(scene, "POST", f"{scene.own}/{path}",
                         body=urlencode({name: "completed"}).encode())
    assert (answer.status, answer.json()["code"]) == (400, 20001)
    assert repr(name) in answer.json()["message"]
    assert scene.fake.received == []


@pytest.mark.parametrize("kind", ["Calls", "Messages"])
async def test_every_documented_create_field_is_forwarded(scene: Scene, kind: str) -> None:
    operation = "CreateCall" if kind == "Calls" else "CreateMessage"
    (fields,) = [op.fields for op in twilio_fields.OPERATIONS if op.name == operation]
    # A schedule is refused whatever its value (test_sms_content.py), and so are the fields
    # that would change the sender decided on (below): the rest all go out.
    fields = fields - set(twilio_messages.SCHEDULE_FIELDS) - {
        name for op, name in twilio_routes.REFUSED_FIELDS if op == operation}
    values = dict(parse_qsl(scene.create_body(kind, scene.consented).decode()))
    pairs = [(name, values.get(name, "")) for name in sorted(fields)]
    answer = await _send(scene, "POST", f"{scene.own}/{kind}.json",
                         body=urlencode(pairs).encode())
    assert answer.status == 201, answer
    (create,) = scene.fake.received
    assert [name for name, _ in create.form] == sorted(fields)


@pytest.mark.parametrize(("operation", "name"), sorted(twilio_routes.REFUSED_FIELDS))
async def test_fields_that_would_change_the_sender_are_refused(scene: Scene, operation: str,
                                                              name: str) -> None:
    # N16: CallToken and CallerId would show another caller ID, FallbackFrom would send from
    # an undecided sender. Refused before anything is decided, whatever the value.
    kind = "Calls" if operation == "CreateCall" else "Messages"
    before = await scene.decisions()
    body = scene.create_body(kind, scene.consented) + f"&{name}=%2B3120555012".encode()
    answer = await _send(scene, "POST", f"{scene.own}/{kind}.json", body=body)
    assert (answer.status, answer.json()["code"]) == (400, 20001), answer
    assert f"Parameter {name!r} is not accepted" in answer.json()["message"]
    assert scene.fake.received == []
    assert await scene.decisions() == before


# --- property: nothing outside the allow-list reaches the upstream -----------------------------

PIECES = ["Calls", "Messages", "Recordings", "Calls.json", "Messages.json", "Recordings.json",
          "Media.json", "Notifications.json", "Feedback.json", "IncomingPhoneNumbers.json",
          "Recordings", "Media", "..", ".", "%2e%2e", "%2E%2e", "%2e", "", ";x=1", "..;",
          "%2f", "%2F", "%5c", "\\", "%43alls.json", "x.json", "Twilio.CURRENT.json"]
JOINERS = ["/"] * 6 + ["//", "%2f", "%2F", "\\", "%5C", "/./", "/../"]
SUFFIXES = [""] * 4 + [".json", ".mp3", ".wav", ".json/", ";a", "?PageSize=1", "?x=%zz",
                       "?To=%2B31&To=1", "#f", "%2ejson"]


@dataclass(frozen=True)
class Shape:
    method: str
    target: str
    body: str  # "create" | "update" | ""


# Every served shape, to fill with SIDs (own, foreign, made up) and to break in one place.
OPERATIONS = (*twilio_fields.OPERATIONS, *twilio_routes.MEDIA)
BREAKS = ["/..", "/.", "/../..", "%2e%2e/", "..%2f", "%2F", "%2f..%2f", "//", ";x=1", "\\",
          "%5c", "%5C..", "%43", "#", "/", "%2E"]


@st.composite
def shapes(draw: st.DrawFn, s: Scene) -> Shape:
    """A quarter free-form (pieces, joiners, suffixes), the rest served shapes filled with
    SIDs, a third of those broken in one place (a dot segment, an escape, `;`, `//`, `\\`)."""
    hexes = s.call[2:]
    sids = [s.call, s.message, s.recording, s.other_call, s.other_message, s.other_recording,
            s.call.lower(), "CA" + s.call[2:].upper(), "CA" + "0" * 32, "Twilio.CURRENT",
            *(prefix + hexes for prefix in ("NO", "ME", "TR", "XR", "XH", "ZY", "PK", "MZ"))]
    account = draw(st.sampled_from([s.world.sid] * 6 + [
        s.other.sid, UP_SID, f"%41{s.world.sid[1:]}", s.world.sid.upper(), ""]))
    mode = draw(st.sampled_from(["free", "served", "served", "broken"]))
    method = ""
    if mode == "free":
        piece = st.one_of(st.sampled_from(PIECES), st.sampled_from(sids),
                          st.sampled_from(sids).map(lambda sid: sid + ".json"),
                          st.text(alphabet="aCl./%;\\2eEfF5s", max_size=6))
        parts = draw(st.lists(piece, min_size=1, max_size=6))
        tail = parts[0]
        for part in parts[1:]:
            tail += draw(st.sampled_from(JOINERS)) + part
        tail += draw(st.sampled_from(SUFFIXES))
    else:
        operation = draw(st.sampled_from(OPERATIONS))
        patterns = dict(operation.parameters)

        def fill(found: re.Match[str]) -> str:  # mostly a SID of the right kind
            fitting = [sid for sid in sids if re.fullmatch(patterns[found.group(1)] or ".*", sid)]
            any_sid: bool = draw(st.integers(0, 4)) == 0
            return draw(st.sampled_from(sids if any_sid or not fitting else fitting))

        tail = re.sub(r"\{(\w+)\}", fill, operation.path)
        if draw(st.integers(0, 2)):
            account, method = s.world.sid, operation.method
        if mode == "broken":
            cut = draw(st.integers(0, len(tail)))
            tail = tail[:cut] + draw(st.sampled_from(BREAKS)) + tail[cut:]
        tail += draw(st.sampled_from(["", "", "", "?PageSize=1", "?x=%zz"]))
    target = f"{ACCOUNT}{account}/{tail}"
    method = method or draw(st.sampled_from(["GET", "GET", "POST", "POST", "DELETE", "PUT"]))
    body = draw(st.sampled_from(["create", "update", ""])) if method == "POST" else ""
    return Shape(method, target, body)


def _allowed_upstream(s: Scene, forwarded: Received, decided: Mapping[int, str]) -> str | None:
    """Why this request may have reached the upstream; None when it may not have."""
    if not forwarded.path.startswith(f"{ACCOUNT}{UP_SID}/") or forwarded.raw_path.partition(
            "?")[0] != forwarded.path:
        return None
    try:
        route = twilio_routes.resolve(forwarded.method, forwarded.raw_path)
    except TwilioError:
        return None
    if route.operation in twilio_routes.GATED:
        decision_id = forwarded.headers.get(DECISION_HEADER, "")
        ok = decision_id.isdigit() and decided.get(int(decision_id)) == "allow"
        return "a decided create" if ok else None
    if route.owner is None:
        return "a filtered list"
    kind, sid = route.owner
    if kind == "Recordings":
        return "a recording of an own call" if sid == s.recording else (
            "the lookup of a recording's call" if route.operation == "FetchRecording"
            and forwarded.method == "GET" else None)
    return "an own resource" if sid in (s.call, s.message) else None


_NON_CANONICAL = re.compile(r"%|;|\\|//|/\.\.?(?:/|$)|#")


async def test_property_nothing_outside_the_allow_list_reaches_upstream(
        aiohttp_client: Any, database_url: str, fake: FakeTwilio, pool: asyncpg.Pool,
        auth: dict[str, str]) -> None:
    s = await _scene(aiohttp_client, database_url, fake, pool, auth)
    seen: dict[str, int] = {}

    def check(shape: Shape) -> None:
        last = s.run(lambda: pool.fetchval("SELECT coalesce(max(id), 0) FROM decisions"))
        upstream_before = len(fake.received)
        body = {"create": s.create_body("Calls" if "Calls" in shape.target else "Messages",
                                        s.objected if "Messages" in shape.target
                                        else s.consented),
                "update": b"Status=completed", "": b""}[shape.body]
        headers = {**s.auth(), **(FORM if body else {}), DECISION_HEADER: "1"}
        answer = send_raw(s.world.base, shape.method, shape.target, body=body, headers=headers)
        reached = fake.received[upstream_before:]
        rows = s.run(lambda: pool.fetch("SELECT id, decision FROM decisions WHERE id > $1",
                                        last))
        decided = {r["id"]: r["decision"] for r in rows}
        where = f"{shape} -> {answer.status} {answer.body[:200]!r}"
        assert answer.status < 500, where
        path = shape.target.split("?", 1)[0]
        if _NON_CANONICAL.search(path):
            assert answer.status == 404, where
            assert (reached, rows) == ([], []), where
        for forwarded in reached:
            why = _allowed_upstream(s, forwarded, decided)
            assert why is not None, f"{forwarded.method} {forwarded.path} reached: {where}"
            seen[why] = seen.get(why, 0) + 1
        if rows:  # only a create is decided, and only on its own canonical path
            assert shape.method == "POST", where
            assert resolve_path(path) == path, where
        seen[str(answer.status)] = seen.get(str(answer.status), 0) + 1

    def run() -> None:
        test = given(shape=shapes(s))(check)
        own = s.own
        for target in (_traversals(s) + _reads(s))[:12]:
            test = example(shape=Shape("POST", target, "create"))(test)
        test = example(shape=Shape("POST", f"{own}/Calls.json", "create"))(test)
        test = example(shape=Shape("GET", f"{own}/Calls/{s.call}.json", ""))(test)
        test = example(shape=Shape("GET", f"{own}/Recordings/{s.recording}.mp3", ""))(test)
        test = example(shape=Shape("GET", f"{own}/Recordings/{s.other_recording}.json", ""))(
            test)
        settings(max_examples=200, derandomize=True, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))(test)()

    await asyncio.to_thread(run)
    print(f"\n[routes] answers and what reached the upstream: {seen}")
    # The run went everywhere: refused, passed through, decided.
    assert {"404", "a decided create", "an own resource", "a recording of an own call",
            "the lookup of a recording's call"} <= set(seen), seen


# --- the resolver on its own ------------------------------------------------------------------

SID = "AC" + "1" * 32
CA, SM, RE = "CA" + "2" * 32, "SM" + "3" * 32, "RE" + "4" * 32


@pytest.mark.parametrize(("method", "tail", "operation", "owner"), [
    ("POST", "Calls.json", "CreateCall", None),
    ("POST", "Messages.json", "CreateMessage", None),
    ("GET", "Calls.json", "ListCall", None),
    ("GET", "Recordings.json", "ListRecording", None),
    ("GET", f"Calls/{CA}.json", "FetchCall", ("Calls", CA)),
    ("POST", f"Calls/{CA}.json", "UpdateCall", ("Calls", CA)),
    ("DELETE", f"Messages/{SM}.json", "DeleteMessage", ("Messages", SM)),
    ("GET", f"Messages/MM{SM[2:]}.json", "FetchMessage", ("Messages", "MM" + SM[2:])),
    ("GET", f"Calls/{CA}/Events.json", "ListCallEvent", ("Calls", CA)),
    ("POST", f"Calls/{CA}/Recordings/Twilio.CURRENT.json", "UpdateCallRecording",
     ("Calls", CA)),
    ("POST", f"Calls/{CA}/Streams/my-stream.json", "UpdateStream", ("Calls", CA)),
    ("DELETE", f"Calls/{CA}/UserDefinedMessageSubscriptions/ZY{CA[2:]}.json",
     "DeleteUserDefinedMessageSubscription", ("Calls", CA)),
    ("GET", f"Messages/{SM}/Media/ME{SM[2:]}.json", "FetchMedia", ("Messages", SM)),
    ("GET", f"Recordings/{RE}.mp3", "FetchRecordingMedia", ("Recordings", RE)),
    ("GET", f"Recordings/{RE}/AddOnResults/XR{RE[2:]}/Payloads/XH{RE[2:]}/Data.json",
     "FetchRecordingAddOnResultPayloadData", ("Recordings", RE)),
])
def test_resolve_finds_the_documented_shape(method: str, tail: str, operation: str,
                                            owner: tuple[str, str] | None) -> None:
    route = twilio_routes.resolve(method, f"{ACCOUNT}{SID}/{tail}")
    assert (route.operation, route.tail, route.owner) == (operation, tail, owner)


@pytest.mark.parametrize(("method", "tail", "status"), [
    ("GET", f"Calls/{CA}/Recordings/Twilio.CURRENT.json", 405),  # only its update takes a name
    ("GET", f"Calls/{CA}/Streams/..json", 404),
    ("POST", f"Calls/{CA}/Streams/...json", 404),
    ("POST", f"Calls/{CA}/Recordings.json", 403),
    ("GET", f"calls/{CA}.json", 403),
    ("GET", f"Calls/ca{CA[2:]}.json", 404),
    ("GET", f"Calls/{CA}x.json", 404),
    ("HEAD", "Calls.json", 405),
])
def test_resolve_refuses(method: str, tail: str, status: int) -> None:
    with pytest.raises(TwilioError) as caught:
        twilio_routes.resolve(method, f"{ACCOUNT}{SID}/{tail}")
    assert caught.value.status == status


@given(st.text(alphabet="/.%2eEfF5cC;\\aA_-?#=&", max_size=30))
@settings(max_examples=300, deadline=None, database=None)
def test_property_every_route_tail_is_canonical(tail: str) -> None:
    """Whatever is resolved gives a path the upstream accepts unchanged
    (proxy/fronts/twilio/upstream.py refuses any other), and it is the path the request named."""
    for prefix in (f"Calls/{CA}", f"Recordings/{RE}", "Calls", ""):
        raw = f"{ACCOUNT}{SID}/{prefix}{tail}"
        try:
            route = twilio_routes.resolve("GET", raw)
        except TwilioError as exc:
            refused = exc.status
        else:
            refused = 0
        if refused:
            assert refused in (400, 403, 404, 405)
            continue
        assert CANONICAL_TAIL.fullmatch(route.tail)
        assert raw.split("?", 1)[0] == f"{ACCOUNT}{SID}/{route.tail}"
        assert resolve_path(f"/{route.tail}") == f"/{route.tail}"


def test_every_served_operation_is_documented() -> None:
    documented = {op.name for op in twilio_fields.OPERATIONS}
    assert documented >= twilio_routes.GATED
    assert documented >= set(twilio_routes.FILTERED_LISTS)
    for op in twilio_fields.OPERATIONS:  # a POST without documented fields takes nothing
        assert (op.method == "POST") == bool(op.fields), op.name


# --- the generated field list -----------------------------------------------------------------

def test_generated_fields_match_the_shipped_spec() -> None:
    generated = extract_fields.render(json.loads(extract_fields.SUBSET.read_text("utf-8")))
    assert extract_fields.OUT.read_text("utf-8") == generated


def test_generated_fields_match_twilios_full_document() -> None:
    document = REFERENCE / "twilio_api_v2010.json"
    if not document.is_file():
        pytest.skip(f"Twilio's full OpenAPI document is not at {document}")
    generated = extract_fields.render(json.loads(document.read_text("utf-8")))
    assert extract_fields.OUT.read_text("utf-8") == generated


# --- the sandbox resolves like a server, and is not reached either ----------------------------

async def test_sandbox_resolves_dot_segments_like_a_server() -> None:
    sandbox = SandboxUpstream()
    body = urlencode({"To": "+31612345678", "From": "+31201234567", "Url": "x"}).encode()
    answer = await sandbox.send("POST", SID, f"Calls/{CA}/../../Calls.json", body=body)
    assert answer.status == 201
    created = answer.json()["sid"]
    fetched = await sandbox.send("GET", SID, f"Messages/{SM}/../../Calls/{created}.json")
    assert fetched.status == 200


async def test_traversal_through_the_sandbox_creates_nothing(
        aiohttp_client: Any, database_url: str, clock: Clock, auth: dict[str, str],
        pool: asyncpg.Pool) -> None:
    proxy: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(database_url), clock=clock))
    world = await make_world(proxy, auth)
    number = mobile()
    await world.consent(number, "voice")
    sdk = world.sdk()
    call = await in_thread(lambda: sdk.calls.create(to=number, from_=world.voice,
                                                    url="https://x/t"))
    sandbox = proxy.app[UPSTREAM]
    assert isinstance(sandbox, SandboxUpstream)
    before = (len(sandbox._resources), await pool.fetchval("SELECT count(*) FROM decisions"))
    objected = mobile()
    await world.objection(objected)
    body = urlencode({"To": objected, "From": world.voice, "Url": "https://x/t"}).encode()
    for target in (f"{ACCOUNT}{world.sid}/Calls/{call.sid}/../../Calls.json",
                   f"{ACCOUNT}{world.sid}/Calls/{call.sid}%2f..%2f..%2fCalls.json"):
        answer = await asyncio.to_thread(send_raw, world.base, "POST", target, body=body,
                                         headers={**basic(world.sid, world.token), **FORM})
        assert answer.status == 404
    after = (len(sandbox._resources), await pool.fetchval("SELECT count(*) FROM decisions"))
    assert after == before
