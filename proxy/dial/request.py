"""What a dial API request says: its body (JSON or a form) read into frozen values, every
refusal naming its field (422), and the client from HTTP Basic (401)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec
import orjson
from aiohttp import BasicAuth, web

from proxy import credentials, form, store
from proxy.body import read_body
from proxy.errors import BadInput, NotFound, Unauthorized
from proxy.fields import Fields, load_json
from proxy.keys import CLIENTS, SETTINGS

CALL_ID = re.compile(r"[\x21-\x7e]{1,256}")  # a SIP Call-ID or an attempt id: printable ASCII
_ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
MAX_FIELDS = 20

# cancelled: the attempt was called off before anyone answered (the caller's CANCEL, or a
# SIP proxy that dropped an "allow" that came after its deadline).
OutcomeStatus = Literal["answered", "no_answer", "busy", "failed", "rejected", "cancelled"]
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = (
    "answered", "no_answer", "busy", "failed", "rejected", "cancelled")


class DialRequest(msgspec.Struct, frozen=True, gc=False):
    to: str
    from_: str
    call_id: str
    automated: bool  # N2: true makes the call automated voice whatever the sender says

    def fingerprint(self) -> str:
        """What must match for a repeated call_id to be the same request."""
        return hashlib.sha256(orjson.dumps([self.to, self.from_, self.automated])).hexdigest()


async def authenticate(request: web.Request) -> store.Client:
    """HTTP Basic with a client's account_sid:auth_token, as on the Twilio front. A disabled
    or unknown client, or a wrong token, is 401."""
    header = request.headers.get("Authorization", "")
    try:
        basic = BasicAuth.decode(header, encoding="utf-8") if header else None
    except ValueError:
        basic = None
    secret = request.app[SETTINGS].proxy_secret
    client = None
    if basic is not None and secret and _ACCOUNT_SID.fullmatch(basic.login):
        client = await request.app[CLIENTS].get(request, basic.login)
    if client is None or basic is None or not secret or not credentials.token_matches(
            secret, client.id, client.token_version, basic.password):
        raise Unauthorized("missing or invalid credentials (HTTP Basic: account_sid and "
                           "auth_token of a client)")
    return client


async def _fields(request: web.Request, allowed: tuple[str, ...]) -> Fields:
    raw = await read_body(request)
    if not raw:
        raise BadInput("request body is empty; expected a JSON object or a form")
    if request.content_type == "application/json":
        return Fields(load_json(raw), allowed)
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadInput("expected Content-Type application/json or "
                       "application/x-www-form-urlencoded")
    try:
        pairs = form.decode(raw.decode("utf-8"), MAX_FIELDS)
    except (UnicodeDecodeError, form.TooManyFields) as exc:
        raise BadInput("malformed form body") from exc
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:  # a second `to` would be decided on once and could reach anyone
            raise BadInput("may appear only once", key)
        if "\x00" in value:
            raise BadInput("contains a NUL character", key)
        data[key] = _form_boolean(key, value) if key == "automated" else value
    return Fields(data, allowed)


def _form_boolean(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise BadInput("expected true or false", key)
    return value.lower() == "true"


def _required(f: Fields, key: str, max_len: int) -> str:
    value = f.text(key, max_len=max_len)
    assert value is not None  # required: Fields raised otherwise
    return value


async def dial_request(request: web.Request) -> DialRequest:
    f = await _fields(request, ("to", "from", "call_id", "automated"))
    to, from_ = _required(f, "to", 64), _required(f, "from", 64)
    call_id = _required(f, "call_id", 256)
    if not CALL_ID.fullmatch(call_id):
        raise BadInput("expected 1-256 printable ASCII characters (no spaces)", "call_id")
    return DialRequest(to, from_, call_id, f.boolean("automated"))


async def outcome_status(request: web.Request) -> OutcomeStatus:
    f = await _fields(request, ("status",))
    status = f.choice("status", OUTCOME_STATUSES)
    assert status is not None  # required
    return status


def decision_id(request: web.Request) -> int:
    """The path's decision id (the route admits digits only); beyond a bigint none exists."""
    text = request.match_info["decision_id"]
    if len(text) > 18:
        raise NotFound("no such decision of this client", "decision_id")
    return int(text)
