"""The opt-out loop (N11, N12): Twilio webhooks that turn replies into objections at once.

`POST /webhooks/twilio/sms`            STOP / START / HELP replies; anything else is relayed.
`POST /webhooks/twilio/voice/objection` TwiML stating the right to object in a call;
`…/objection/gather`                    pressing 9 records the objection.

Every request must carry a valid `X-Twilio-Signature` for PUBLIC_URL + path + query.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import (
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from proxy import credentials, gate, inbound, store
from proxy.body import read_body
from proxy.errors import BadInput
from proxy.fronts.twilio.keys import HTTP, NAME
from proxy.keys import CLOCK, POOL, SETTINGS
from proxy.phone import try_parse_number
from proxy.policy.facts import Channel, Organisation, Sender

log = structlog.get_logger("proxy.webhooks")

SMS_PATH = "/webhooks/twilio/sms"
VOICE_PATH = "/webhooks/twilio/voice/objection"
GATHER_PATH = VOICE_PATH + "/gather"
OBJECT_DIGIT = "9"
VOICE_PROMPT = ("U heeft altijd het recht om bezwaar te maken tegen telefonische verkoop door "
                "{organisation}. Druk nu op 9 als u niet meer door {organisation} benaderd wilt "
                "worden. Druk op een andere toets of wacht om verder te gaan.")
VOICE_RECORDED = "Uw bezwaar is vastgelegd. {organisation} neemt geen contact meer met u op."
VOICE_NOT_RECORDED = "Er is geen bezwaar vastgelegd."


class SignatureInvalid(web.HTTPForbidden):
    pass


async def signed_form(request: web.Request) -> MultiDictProxy[str]:
    """The form, after checking Twilio's signature over PUBLIC_URL + path + query."""
    settings = request.app[SETTINGS]
    await read_body(request)  # within limits.body_timeout_seconds; post() parses it
    raw = await request.post()
    form = MultiDictProxy(MultiDict((k, v) for k, v in raw.items() if isinstance(v, str)))
    signature = request.headers.get("X-Twilio-Signature", "")
    url = settings.public_url + request.raw_path
    token = settings.twilio_auth_token
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    if not token or not signature or not RequestValidator(token).validate(
            url, form, signature, algorithm=algorithm):
        why = ("TWILIO_AUTH_TOKEN is not set" if not token else
               "no signature" if not signature else "signature does not match")
        log.warning("webhook_signature_invalid", route=request.path, why=why)
        raise SignatureInvalid(text=f"Forbidden: {why}")
    return form


def twiml(xml: str) -> web.Response:
    return web.Response(text=xml, content_type="text/xml")


def twiml_reply(text: str | None) -> str:
    """A reply as Twilio takes it: TwiML with one <Message>, or an empty <Response/>."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


EMPTY_TWIML = twiml_reply(None)


def _text(template: str | None, default: str, org: Organisation) -> str:
    return (template or default).replace("{organisation}", org.name)


async def _sender(request: web.Request, raw: str | None) -> tuple[Sender, Organisation] | None:
    key = gate.sender_key(raw)
    return await store.load_sender(request.app[POOL], key) if key else None


# --- inbound SMS --------------------------------------------------------------------------

async def inbound_sms(request: web.Request) -> web.Response:
    """STOP, START and HELP (proxy/inbound.py), answered in TwiML; anything else relayed to
    the sender's webhook, whose TwiML is Twilio's answer."""
    form = await signed_form(request)
    message_sid = form.get("MessageSid") or form.get("SmsSid")
    if not message_sid:
        raise BadInput("MessageSid is missing", "MessageSid")
    handled = await inbound.handle_sms(request.app, inbound.InboundSms(
        NAME, message_sid, request.app[CLOCK](), form.get("To", ""), form.get("From", ""),
        form.get("Body", "")))
    if handled.relay is None:
        return twiml(handled.answer)
    reply, status = await _forward_inbound(request, form, handled.relay.url,
                                           handled.relay.organisation)
    await inbound.relayed(request.app, handled.relay, reply, status)
    return twiml(reply)


async def _forward_inbound(request: web.Request, form: MultiDictProxy[str], url: str,
                           org: Organisation) -> tuple[str, int | None]:
    settings = request.app[SETTINGS]
    client = await store.relay_client(request.app[POOL], org.id)
    if client is None or not settings.proxy_secret:
        log.warning("inbound_relay_skipped", why="no client for the organisation",
                    organisation=org.id)
        return EMPTY_TWIML, None
    account_sid, version = client
    token = credentials.derive_token(settings.proxy_secret, account_sid, version)
    # The dialer sees its own account, as on the REST side.
    pairs = [(k, account_sid if k == "AccountSid" else v) for k, v in form.items()]
    signature = RequestValidator(token).compute_signature(url, MultiDict(pairs))
    timeout = aiohttp.ClientTimeout(total=settings.rules.relay_timeout_seconds)
    try:
        async with request.app[HTTP].post(
            url, data=urlencode(pairs), timeout=timeout, allow_redirects=False,
            headers={"X-Twilio-Signature": signature,
                     "Content-Type": "application/x-www-form-urlencoded"},
        ) as resp:
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("inbound_relay_failed", error=type(exc).__name__)
        return EMPTY_TWIML, None
    if not 200 <= status < 300 or not _is_twiml(text):
        log.warning("inbound_relay_failed", status=status)
        return EMPTY_TWIML, status
    return text, status


def _is_twiml(text: str) -> bool:
    try:
        root = ET.fromstring(text)  # noqa: S314 - our client's answer, parsed only to check it
    except ET.ParseError:
        return False
    return root.tag == "Response"


# --- objection during a call --------------------------------------------------------------

def _call_parties(form: MultiDictProxy[str]) -> tuple[str | None, str | None]:
    """(the person, our number): outbound calls are From us To them, inbound the reverse."""
    if form.get("Direction", "").startswith("outbound"):
        return try_parse_number(form.get("To")), form.get("From")
    return try_parse_number(form.get("From")), form.get("To")


def _return_to(request: web.Request) -> str | None:
    target = request.query.get("return_to")
    if target and target.startswith(("https://", "http://")):
        return target
    return None


def _voice_end(response: VoiceResponse, request: web.Request) -> web.Response:
    target = _return_to(request)
    if target:
        response.redirect(target, method="POST")
    else:
        response.hangup()
    return twiml(str(response))


async def voice_objection(request: web.Request) -> web.Response:
    """N12: state the right to object; a <Gather> of one digit, 9 objects."""
    form = await signed_form(request)
    _person, ours = _call_parties(form)
    found = await _sender(request, ours)
    response = VoiceResponse()
    if found is None:
        log.warning("voice_objection_unroutable")
        return _voice_end(response, request)
    _sender_row, org = found
    action = request.app[SETTINGS].public_url + GATHER_PATH
    if request.query_string:
        action += "?" + request.query_string
    gather = response.gather(num_digits=1, action=action, method="POST", timeout=8)
    gather.say(_text(None, VOICE_PROMPT, org), language="nl-NL")
    return _voice_end(response, request)


async def voice_gather(request: web.Request) -> web.Response:
    form = await signed_form(request)
    person, ours = _call_parties(form)
    found = await _sender(request, ours)
    response = VoiceResponse()
    call_sid = form.get("CallSid")
    if form.get("Digits") != OBJECT_DIGIT or found is None or person is None or not call_sid:
        if form.get("Digits") == OBJECT_DIGIT:
            log.warning("voice_objection_unroutable")
        response.say(VOICE_NOT_RECORDED, language="nl-NL")
        return _voice_end(response, request)
    _sender_row, org = found
    scope = request.app[SETTINGS].rules.optout.scope
    channel: Channel | None = None if scope == "organisation" else "voice"
    objection_id = await store.object_by_voice(request.app[POOL], store.ObjectionIn(
        subject=person, organisation=org.id, channel=channel,
        received_at=request.app[CLOCK](), via="ivr", source_ref=f"{call_sid}:objection",
        source_provider=NAME))
    log.info("objection_recorded", objection_id=objection_id, via="ivr", organisation=org.id,
             channel=channel, subject=person, duplicate=objection_id is None)
    response.say(_text(None, VOICE_RECORDED, org), language="nl-NL")
    return _voice_end(response, request)


def add_routes(app: web.Application) -> None:
    app.router.add_post(SMS_PATH, inbound_sms)
    app.router.add_post(VOICE_PATH, voice_objection)
    app.router.add_post(GATHER_PATH, voice_gather)
