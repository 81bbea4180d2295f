"""Every number a call can reach is decided, and Twilio's requests reach the dialer as if from
its own account: the official SDK as the dialer, the fake upstream playing Twilio (signing
with the upstream token), and a dialer test server that checks signatures with its client
token, all on real sockets over real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port
from multidict import MultiDict
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from proxy import credentials
from proxy.app import create_app
from proxy.fronts.twilio import fields as twilio_fields
from proxy.fronts.twilio import relays, twiml
from proxy.fronts.twilio import routes as twilio_routes
from proxy.gate.codes import DENIAL_CODES
from proxy.keys import POOL
from proxy.phone import subject_hash
from tests.conftest import PROXY_SECRET, UP_SID, UP_TOKEN, Clock, make_settings, mobile
from tests.fake_twilio import FakeTwilio
from tests.world import World, in_thread, make_world

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OBJECTION = DENIAL_CODES["OBJECTION_ON_FILE"][1]
NOT_INSPECTABLE = DENIAL_CODES["TWIML_NOT_INSPECTABLE"][1]
BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                  '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
                  '<Response><Say>&lol3;</Say></Response>')


def config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "rules.toml"
    path.write_text(f"[webhooks]\nrelay_timeout_seconds = 1\n{extra}")
    return str(path)


async def start_proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                      tmp_path: Path, extra: str = "") -> TestClient[Any, Any]:
    """The proxy on a port of its own, so PUBLIC_URL is where the fake Twilio reaches it."""
    port = unused_port()
    settings = make_settings(
        database_url, TWILIO_ACCOUNT_SID=UP_SID, TWILIO_AUTH_TOKEN=UP_TOKEN,
        TWILIO_API_BASE=fake.base_url, PUBLIC_URL=f"http://127.0.0.1:{port}",
        PROXY_CONFIG=config(tmp_path, extra))
    server = TestServer(create_app(settings, clock=clock), host="127.0.0.1", port=port)
    client: TestClient[Any, Any] = await aiohttp_client(server)
    return client


@pytest.fixture
async def proxy(aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio,
                tmp_path: Path) -> TestClient[Any, Any]:
    return await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path)


@pytest.fixture
async def world(proxy: TestClient[Any, Any], auth: dict[str, str]) -> World:
    return await make_world(proxy, auth)


@dataclass
class Seen:
    url: str
    method: str
    params: list[tuple[str, str]]
    signature: str


@dataclass
class Dialer:
    """The dialer's own web server: serves TwiML, takes callbacks, records what came."""

    server: TestServer
    seen: list[Seen] = field(default_factory=list)
    twiml: str = "<Response><Say>Hallo</Say></Response>"
    status: int = 200
    delay: float = 0.0
    content_type: str = "text/xml"

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def valid_for(self, account_sid: str, seen: Seen) -> bool:
        token = credentials.derive_token(PROXY_SECRET, account_sid, 1)
        params = {} if seen.method == "GET" else MultiDict(seen.params)
        return bool(RequestValidator(token).validate(seen.url, params, seen.signature))


@pytest.fixture
async def dialer() -> AsyncIterator[Dialer]:
    app = web.Application()
    state: list[Dialer] = []

    async def handle(request: web.Request) -> web.Response:
        me = state[0]
        if request.method == "GET":
            params = list(request.query.items())
        else:
            params = [(k, str(v)) for k, v in (await request.post()).items()]
        me.seen.append(Seen(str(request.url), request.method, params,
                            request.headers.get("X-Twilio-Signature", "")))
        await asyncio.sleep(me.delay)
        if request.path.startswith("/status"):
            return web.Response(status=me.status, text="noted", content_type="text/plain")
        return web.Response(status=me.status, text=me.twiml, content_type=me.content_type)

    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.append(Dialer(server))
    yield state[0]
    await server.close()


async def rows_for(world: World, number: str) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT d.*, o.upstream_status, o.error FROM decisions d
           LEFT JOIN decision_outcomes o ON o.decision_id = d.id
           WHERE d.subject_hash = $1 ORDER BY d.id""", subject_hash(number))
    return rows


async def rows_of_client(world: World) -> list[asyncpg.Record]:
    await world.committed()
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        "SELECT * FROM decisions WHERE client_id = $1 ORDER BY id", world.sid)
    return rows


async def consented(world: World) -> str:
    number = mobile()
    await world.consent(number, "voice")
    return number


async def objected(world: World) -> str:
    number = await consented(world)
    await world.objection(number, organisation=world.org)
    return number


async def call(world: World, to: str, **kwargs: Any) -> Any:
    sdk = world.sdk()
    return await in_thread(lambda: sdk.calls.create(to=to, from_=world.voice, **kwargs))


async def refused(world: World, to: str, **kwargs: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        await call(world, to, **kwargs)
    return caught.value


def updates(fake: FakeTwilio, sid: str) -> list[Any]:
    return [r for r in fake.received if r.method == "POST" and r.path.endswith(f"/{sid}.json")]


# --- inline TwiML at create ---------------------------------------------------------------

async def test_dial_to_an_objected_number_refuses_the_call(world: World, fake: FakeTwilio,
                                                           pool: asyncpg.Pool) -> None:
    to, target = mobile(), await objected(world)
    request_id = await world.consent(to, "voice", kind="request")
    error = await refused(world, to, twiml=f"<Response><Dial>{target}</Dial></Response>")
    assert (error.status, error.code) == (403, OBJECTION)
    assert fake.creates() == []
    (call_row,) = await rows_for(world, to)
    (target_row,) = await rows_for(world, target)
    assert (target_row["decision"], target_row["reason"]) == ("deny", "OBJECTION_ON_FILE")
    assert target_row["details"]["twiml"] == {"source": "create", "element": "Dial",
                                              "call_decision_id": call_row["id"]}
    assert target_row["sender"] == world.voice
    assert call_row["decision"] == "allow"
    assert "TwiML destination refused" in call_row["error"]
    # No call went out: the To's contact request is still there (N6).
    assert call_row["consumed_consent_id"] is None
    assert await pool.fetchval("SELECT consumed_at FROM consents WHERE id = $1",
                               request_id) is None


async def test_allowed_dial_number_is_forwarded_unchanged(world: World, fake: FakeTwilio
                                                          ) -> None:
    to, target = await consented(world), await consented(world)
    document = (f'<Response><Say>Een moment</Say><Dial callerId="{world.voice}">'
                f"<Number>{target}</Number></Dial></Response>")
    created = await call(world, to, twiml=document)
    (received,) = fake.creates()
    assert received.value("Twiml") == document
    (call_row,) = await rows_for(world, to)
    (target_row,) = await rows_for(world, target)
    assert call_row["upstream_status"] == 201
    assert (target_row["decision"], target_row["basis"]) == ("allow", "CONSENT")
    assert target_row["details"]["twiml"]["element"] == "Number"
    assert created.sid.startswith("CA")


async def test_dial_targets_are_found_whatever_the_case(world: World, fake: FakeTwilio) -> None:
    to, target = await consented(world), await objected(world)
    error = await refused(world, to, twiml=f"<Response><dial><number>{target}</number></dial>"
                                           "</Response>")
    assert error.code == OBJECTION
    assert fake.creates() == []


@pytest.mark.parametrize("noun", ["<Client>agent-7</Client>", "<Queue>support</Queue>",
                                  "<Conference>room-1</Conference>"])
async def test_agents_pass(world: World, fake: FakeTwilio, noun: str) -> None:
    to = await consented(world)
    await call(world, to, twiml=f"<Response><Dial>{noun}</Dial></Response>")
    assert len(fake.creates()) == 1
    assert len(await rows_of_client(world)) == 1  # only the To's decision


async def test_sip_is_refused_unless_configured(aiohttp_client: Any, database_url: str,
                                                clock: Clock, fake: FakeTwilio,
                                                tmp_path: Path, auth: dict[str, str]) -> None:
    document = "<Response><Dial><Sip>sip:+31612345678@carrier.example</Sip></Dial></Response>"
    proxy = await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path)
    world = await make_world(proxy, auth)
    error = await refused(world, await consented(world), twiml=document)
    assert (error.status, error.code) == (403, NOT_INSPECTABLE)
    assert fake.creates() == []
    call_row, sip_row = await rows_of_client(world)
    assert call_row["decision"] == "allow"
    assert (sip_row["reason"], sip_row["subject_hash"]) == ("TWIML_NOT_INSPECTABLE", None)
    assert sip_row["organisation_id"] == world.org
    allowing = await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path,
                                 "[twilio]\nallow_sip = true\n")
    world = await make_world(allowing, auth)
    await call(world, await consented(world), twiml=document)
    assert len(fake.creates()) == 1


@pytest.mark.parametrize("document", [
    "not xml at all", "<Response><Dial>+31612345678</Dial>", "<Dial>+31612345678</Dial>",
    BILLION_LAUGHS,
    '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Say>&x;</Say></Response>',
])
async def test_malformed_twiml_is_400_and_stores_nothing(world: World, fake: FakeTwilio,
                                                         document: str) -> None:
    error = await refused(world, await consented(world), twiml=document)
    assert (error.status, error.code) == (400, 20001)
    assert fake.creates() == []
    assert await rows_of_client(world) == []


async def test_bad_url_fields_are_400_before_deciding(world: World, fake: FakeTwilio) -> None:
    error = await refused(world, await consented(world), url="ftp://dialer.example/t")
    assert (error.status, error.code) == (400, 20001)
    error = await refused(world, await consented(world), url="https://d.example/t",
                          status_callback="/relative")
    assert (error.status, error.code) == (400, 20001)
    assert await rows_of_client(world) == []


def test_every_url_field_twilio_documents_is_relayed() -> None:
    # Each URL field (the spec's format "uri") of an operation the front serves leads through
    # a relay; one that no table names would reach Twilio as given (a regenerated spec with a
    # new one fails here).
    spec = json.loads((Path(__file__).parent / "twilio" / "twilio_api_v2010_subset.json")
                      .read_text())
    relayed = {"CreateCall": relays.CALL_CREATE, "UpdateCall": relays.CALL_UPDATE,
               "CreateMessage": relays.MESSAGE_CREATE, "UpdatePayments": relays.PAYMENT_UPDATE}
    served = {op.name for op in twilio_fields.OPERATIONS if op.name in twilio_routes.GATED
              or op.name.startswith(("Fetch", "List", "Update", "Delete"))}
    found = {}
    for methods in spec["paths"].values():
        for operation in methods.values():
            if not isinstance(operation, dict) or operation.get("operationId") not in served:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/x-www-form-urlencoded", {}).get("schema", {})
            uris = {name for name, prop in schema.get("properties", {}).items()
                    if prop.get("format") == "uri"}
            if uris:
                found[operation["operationId"]] = uris
    assert set(found) == set(relayed)
    for name, uris in found.items():
        assert uris <= {f.name for f in relayed[name]}, name


# --- ApplicationSid -----------------------------------------------------------------------

APP_SID = "AP" + "1" * 32


async def test_application_sid_is_refused_and_recorded(world: World, fake: FakeTwilio) -> None:
    to = await consented(world)
    error = await refused(world, to, application_sid=APP_SID)
    assert (error.status, error.code) == (403, NOT_INSPECTABLE)
    assert fake.creates() == []
    call_row, app_row = await rows_for(world, to)
    assert (app_row["decision"], app_row["reason"]) == ("deny", "TWIML_NOT_INSPECTABLE")
    assert app_row["details"]["twiml"]["element"] == "ApplicationSid"
    assert call_row["decision"] == "allow"
    doc = await (await world.admin.get(f"/errors/{NOT_INSPECTABLE}")).json()
    assert (doc["reason"], doc["status"]) == ("TWIML_NOT_INSPECTABLE", 403)


async def test_application_sid_allowed_by_configuration(
        aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio, tmp_path: Path,
        auth: dict[str, str]) -> None:
    proxy = await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path,
                              "[twilio]\nallow_application_sid = true\n")
    world = await make_world(proxy, auth)
    to = await consented(world)
    await call(world, to, application_sid=APP_SID)
    (received,) = fake.creates()
    assert received.value("ApplicationSid") == APP_SID
    assert len(await rows_for(world, to)) == 1


# --- live-call update ---------------------------------------------------------------------

async def test_update_with_twiml_is_decided_like_a_create(world: World, fake: FakeTwilio,
                                                          dialer: Dialer) -> None:
    to = await consented(world)
    created = await call(world, to, url=dialer.url("/twiml"))
    (call_row,) = await rows_for(world, to)
    sdk = world.sdk()
    target = await objected(world)
    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.calls(created.sid).update(
            twiml=f"<Response><Dial>{target}</Dial></Response>"))
    assert (caught.value.status, caught.value.code) == (403, OBJECTION)
    assert updates(fake, created.sid) == []
    (target_row,) = await rows_for(world, target)
    assert target_row["details"]["twiml"] == {"source": "update", "element": "Dial",
                                              "call_decision_id": call_row["id"]}
    assert target_row["sender"] == world.voice  # the From of the call's create decision

    with pytest.raises(TwilioRestException) as caught:
        await in_thread(lambda: sdk.calls(created.sid).update(twiml=BILLION_LAUGHS))
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert updates(fake, created.sid) == []

    allowed = await consented(world)
    document = f"<Response><Dial>{allowed}</Dial></Response>"
    await in_thread(lambda: sdk.calls(created.sid).update(twiml=document))
    (update,) = updates(fake, created.sid)
    assert update.value("Twiml") == document
    (allowed_row,) = await rows_for(world, allowed)
    assert allowed_row["decision"] == "allow"


async def test_update_url_and_callback_lead_through_the_relays(
        world: World, fake: FakeTwilio, dialer: Dialer, proxy: TestClient[Any, Any]) -> None:
    created = await call(world, await consented(world), url=dialer.url("/twiml"))
    sdk = world.sdk()
    await in_thread(lambda: sdk.calls(created.sid).update(
        url=dialer.url("/later"), method="GET", status_callback=dialer.url("/status")))
    (update,) = updates(fake, created.sid)
    public = str(proxy.make_url("")).rstrip("/")
    assert (update.value("Url") or "").startswith(f"{public}/webhooks/twilio/voice/relay/")
    assert (update.value("StatusCallback") or "").startswith(
        f"{public}/webhooks/twilio/callback/")
    assert update.value("Method") == "GET"
    status, text = await fake.fetch_twiml(created.sid)
    assert (status, text) == (200, twiml.DECLARATION + "<Response><Say>Hallo</Say></Response>")
    (seen,) = dialer.seen
    assert (seen.method, seen.url.split("?")[0]) == ("GET", dialer.url("/later"))
    assert dialer.valid_for(world.sid, seen)


# --- callbacks ----------------------------------------------------------------------------

async def outcomes(world: World) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await world.admin.app[POOL].fetch(
        """SELECT c.* FROM contact_outcomes c JOIN decisions d ON d.id = c.decision_id
           WHERE d.client_id = $1 ORDER BY c.id""", world.sid)
    return rows


async def test_status_callback_reaches_the_dialer_as_its_own(
        world: World, fake: FakeTwilio, dialer: Dialer) -> None:
    to = await consented(world)
    created = await call(world, to, url="https://d.example/t",
                         status_callback=dialer.url("/status?campaign=7"),
                         status_callback_event=["answered", "completed"])
    (received,) = fake.creates()
    assert received.values("StatusCallbackEvent") == ["answered", "completed"]
    status, body, content_type = await fake.fire_status_callback(
        created.sid, "completed", CallDuration="42", AnsweredBy="human")
    assert (status, body) == (200, "noted")
    assert content_type.startswith("text/plain")
    (seen,) = dialer.seen
    assert seen.url == dialer.url("/status?campaign=7")
    params = dict(seen.params)
    assert params["AccountSid"] == world.sid  # the dialer sees its own account
    assert params["CallStatus"] == "completed"
    assert dialer.valid_for(world.sid, seen)
    assert not RequestValidator(UP_TOKEN).validate(seen.url, MultiDict(seen.params),
                                                   seen.signature)
    (call_row,) = await rows_for(world, to)
    (outcome,) = await outcomes(world)
    assert outcome["decision_id"] == call_row["id"]
    assert (outcome["field"], outcome["sid"], outcome["status"]) == (
        "StatusCallback", created.sid, "completed")
    assert (outcome["answered_by"], outcome["duration_seconds"]) == ("human", 42)


async def test_a_dialer_that_is_down_changes_nothing_recorded(
        world: World, fake: FakeTwilio) -> None:
    created = await call(world, await consented(world), url="https://d.example/t",
                         status_callback=f"http://127.0.0.1:{unused_port()}/status")
    status, _, _ = await fake.fire_status_callback(created.sid, "busy")
    assert status == 502
    (outcome,) = await outcomes(world)
    assert outcome["status"] == "busy"


async def test_the_proxy_learns_how_a_call_ended_without_a_dialer_callback(
        world: World, fake: FakeTwilio) -> None:
    created = await call(world, await consented(world), url="https://d.example/t")
    assert fake.urls[created.sid]["StatusCallback"].startswith(
        f"{world.base}/webhooks/twilio/callback/")
    status, _, _ = await fake.fire_status_callback(created.sid, "no-answer")
    assert status == 204
    (outcome,) = await outcomes(world)
    assert outcome["status"] == "no-answer"


async def test_message_delivery_is_recorded(world: World, fake: FakeTwilio,
                                            dialer: Dialer) -> None:
    number = mobile()
    await world.consent(number, "sms")
    sdk = world.sdk()
    message = await in_thread(lambda: sdk.messages.create(
        to=number, from_=world.sms, body="Hoi", status_callback=dialer.url("/status")))
    status, _, _ = await fake.fire_status_callback(message.sid, "undelivered",
                                                   ErrorCode="30003")
    assert status == 200
    (outcome,) = await outcomes(world)
    assert (outcome["status"], outcome["error_code"], outcome["sid"]) == (
        "undelivered", "30003", message.sid)
    assert dict(dialer.seen[0].params)["AccountSid"] == world.sid


async def test_forged_or_unknown_relays_are_refused(world: World, fake: FakeTwilio,
                                                    proxy: TestClient[Any, Any]) -> None:
    created = await call(world, await consented(world), url="https://d.example/t")
    url, _ = fake.url_of(created.sid, "StatusCallback")
    path = url.removeprefix(world.base)
    resp = await proxy.post(path, data=fake.call_params(created.sid),
                            headers={"X-Twilio-Signature": "forged"})
    assert resp.status == 403
    assert await outcomes(world) == []
    status, _, _ = await fake.request_url(url[:-4] + "AAAA", fake.call_params(created.sid))
    assert status == 404
    twiml_url, _ = fake.url_of(created.sid, "Url")
    resp = await proxy.post(twiml_url.removeprefix(world.base),
                            data=fake.call_params(created.sid),
                            headers={"X-Twilio-Signature": "forged"})
    assert resp.status == 403


# --- the TwiML relay ----------------------------------------------------------------------

async def test_twiml_relay_keeps_allowed_dials_and_refuses_the_rest(
        world: World, fake: FakeTwilio, dialer: Dialer, proxy: TestClient[Any, Any]) -> None:
    agent, allowed, refused_number = await consented(world), await consented(world), (
        await objected(world))
    dialer.twiml = (
        "<Response><Say>Hallo</Say>"
        f"<Dial>{allowed}</Dial>"
        f'<Dial callerId="{world.voice}"><Number>{refused_number}</Number></Dial>'
        '<Gather action="next?step=2" method="GET"><Say>Kies</Say></Gather>'
        "<Play>/audio/wacht.mp3</Play>"
        f"<Redirect>{dialer.url('/again')}</Redirect></Response>")
    created = await call(world, agent, url=dialer.url("/twiml"))
    status, text = await fake.fetch_twiml(created.sid)
    assert status == 200
    public = str(proxy.make_url("")).rstrip("/")
    relay = re.escape(f"{public}/webhooks/twilio/voice/relay/") + r"[A-Za-z0-9_-]{24}"
    assert re.fullmatch(
        re.escape(twiml.DECLARATION + f"<Response><Say>Hallo</Say><Dial>{allowed}</Dial>"
                  f'<Say language="nl-NL">{twiml.REFUSAL}</Say><Hangup />'
                  '<Gather action="') + relay + re.escape(
                      '" method="GET"><Say>Kies</Say></Gather>'
                      f"<Play>{dialer.url('/audio/wacht.mp3')}</Play><Redirect>")
        + relay + re.escape("</Redirect></Response>"), text), text
    (seen,) = dialer.seen
    assert dict(seen.params)["AccountSid"] == world.sid
    assert dialer.valid_for(world.sid, seen)
    (call_row,) = await rows_for(world, agent)
    (allowed_row,) = await rows_for(world, allowed)
    (refused_row,) = await rows_for(world, refused_number)
    assert allowed_row["decision"] == "allow"
    assert (refused_row["decision"], refused_row["reason"]) == ("deny", "OBJECTION_ON_FILE")
    assert refused_row["details"]["twiml"]["source"] == "relay"
    assert refused_row["details"]["twiml"]["call_decision_id"] == call_row["id"]

    # Twilio follows the Gather's action: the dialer's relative URL, with the dialer's method.
    action = re.search(r'action="([^"]+)"', text)
    assert action is not None
    dialer.twiml = "<Response><Hangup/></Response>"
    status, _, _ = await fake.request_url(action.group(1), fake.call_params(
        created.sid, Digits="1"), "GET")
    assert status == 200
    seen = dialer.seen[-1]
    assert seen.method == "GET"
    assert seen.url.startswith(dialer.url("/next?step=2&"))
    assert dict(parse_qsl(seen.url.split("?", 1)[1]))["Digits"] == "1"
    assert dialer.valid_for(world.sid, seen)


@pytest.mark.parametrize("mode", ["down", "slow", "junk", "error", "audio", "bad_url"])
async def test_twiml_relay_fails_closed(world: World, fake: FakeTwilio, dialer: Dialer,
                                        mode: str) -> None:
    url = dialer.url("/twiml")
    if mode == "down":
        url = f"http://127.0.0.1:{unused_port()}/twiml"
    elif mode == "slow":
        dialer.delay = 2.0  # the relay waits 1 s (config)
    elif mode == "junk":
        dialer.twiml = "<html>Hello</html>"
    elif mode == "error":
        dialer.status = 500
    elif mode == "bad_url":  # a URL no relay can stand in for: never left for Twilio to fetch
        dialer.twiml = "<Response><Say>Hallo</Say><Redirect>ftp://d.example/n</Redirect></Response>"
    else:
        dialer.twiml, dialer.content_type = "ID3\x03binary", "audio/mpeg"
    created = await call(world, await consented(world), url=url)
    status, text = await fake.fetch_twiml(created.sid)
    assert (status, text) == (200, twiml.HANGUP)


# --- twilio.relay_hosts: where a dialer may send the proxy --------------------------------------

async def test_relay_hosts_limit_where_a_dialer_may_send_the_proxy(
        aiohttp_client: Any, database_url: str, clock: Clock, fake: FakeTwilio, tmp_path: Path,
        auth: dict[str, str], dialer: Dialer) -> None:
    """The proxy requests the dialer's URLs from inside the network: with twilio.relay_hosts
    set, a URL on any other host is refused before anything is decided (or, in TwiML fetched
    through the relay, hangs the call up), so no dialer can aim it at an internal address."""
    proxy = await start_proxy(aiohttp_client, database_url, clock, fake, tmp_path,
                              '[twilio]\nrelay_hosts = ["127.0.0.1", "*.dialer.example"]\n')
    world = await make_world(proxy, auth)
    for fields in (
            {"url": "https://intranet.local/twiml"},
            {"url": dialer.url("/twiml"), "status_callback": "http://169.254.169.254/latest"},
            {"twiml": "<Response><Redirect>https://intranet.local/x</Redirect></Response>"},
            {"twiml": '<Response><Gather action="http://10.0.0.5/g"/></Response>'}):
        error = await refused(world, await consented(world), **fields)
        assert (error.status, error.code) == (400, 20001), fields
        assert "relay_hosts" in error.msg
    assert fake.creates() == []
    assert await rows_of_client(world) == []

    created = await call(world, await consented(world), url=dialer.url("/twiml"),
                         status_callback="https://status.dialer.example/calls")
    assert len(fake.creates()) == 1
    dialer.twiml = "<Response><Redirect>https://intranet.local/next</Redirect></Response>"
    status, text = await fake.fetch_twiml(created.sid)
    assert (status, text) == (200, twiml.HANGUP)
    dialer.twiml = f"<Response><Redirect>{dialer.url('/next')}</Redirect></Response>"
    status, text = await fake.fetch_twiml(created.sid)
    assert status == 200
    assert "/webhooks/twilio/voice/relay/" in text


def test_relay_hosts_match_names_and_subdomains() -> None:
    hosts = ("dialer.example.com", "*.callcenter.nl")
    assert relays.host_allowed("https://DIALER.example.com:8443/t", hosts)
    assert relays.host_allowed("https://a.b.callcenter.nl/t", hosts)
    for url in ("https://callcenter.nl/t", "https://evilcallcenter.nl/",
                "https://dialer.example.com.evil.io/", "http://user@169.254.169.254/",
                "http://[::1]/"):
        assert not relays.host_allowed(url, hosts), url
    assert relays.host_allowed("http://10.0.0.5/", ())  # not set: any host
