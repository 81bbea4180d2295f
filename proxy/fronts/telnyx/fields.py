"""The JSON bodies of `POST /v2/messages` and `POST /v2/calls`, read and validated as Telnyx
does, with the fields that would let what goes out differ from what was decided refused.

Pure functions of the parsed body; raise TelnyxError (400/422 in Telnyx's shape). Field lists
are those of Telnyx's API v2 (the `telnyx` SDK's MessageSendParams and CallDialParams).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from proxy.fronts.telnyx.errors import TelnyxError
from proxy.gate.codes import SCHEDULED_SEND_NOT_GATED

MAX_DEPTH = 8
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# A JSON escape may spell half a UTF-16 pair (`"\\ud800"`): Python reads it as a lone
# surrogate, which no UTF-8 writer (the upstream request, our error body, the store) accepts.
_UNWRITABLE = re.compile("[\x00\ud800-\udfff]")

MESSAGE_FIELDS = frozenset({
    "to", "from", "messaging_profile_id", "text", "subject", "media_urls", "webhook_url",
    "webhook_failover_url", "use_profile_webhooks", "type", "auto_detect", "encoding",
    "send_at"})
# Telnyx holds a message with `send_at` and sends it later, past any objection made in
# between: refused like Twilio's SendAt, present at all (even null).
SCHEDULE_FIELD = "send_at"
SCHEDULED_MESSAGE = (
    "consent-proxy decides at the moment a message is sent, so it does not pass on messages "
    "scheduled for later (send_at): an objection made before the send time would not stop "
    "them. Send the message at the desired time instead.")

CALL_FIELDS = frozenset({
    "answering_machine_detection", "answering_machine_detection_config", "assistant",
    "audio_url", "billing_group_id", "bridge_intent", "bridge_on_answer", "client_state",
    "command_id", "conference_config", "connection_id", "conversation_relay_config",
    "custom_headers", "deepfake_detection", "dialogflow_config", "diversion",
    "enable_dialogflow", "from", "from_display_name", "link_to", "media_encryption",
    "media_name", "park_after_unbridge", "preferred_codecs", "prevent_double_bridge",
    "privacy", "record", "record_channels", "record_custom_file_name", "record_format",
    "record_max_length", "record_timeout_secs", "record_track", "record_trim",
    "retry_on_timeout", "route_to_mobile", "send_digits_on_answer", "send_silence_when_idle",
    "sip_auth_password", "sip_auth_username", "sip_headers", "sip_region",
    "sip_transport_protocol", "sound_modifications", "stream_auth_token",
    "stream_bidirectional_codec", "stream_bidirectional_mode",
    "stream_bidirectional_sampling_rate", "stream_bidirectional_target_legs", "stream_codec",
    "stream_establish_before_call_originate", "stream_track", "stream_url",
    "supervise_call_control_id", "supervisor_role", "time_limit_secs", "timeout_secs", "to",
    "transcription", "transcription_config", "webhook_retries_policies", "webhook_url",
    "webhook_url_method", "webhook_urls", "webhook_urls_method"})

# Call fields Telnyx documents that the proxy refuses, with why: each joins the person
# decided on to another call, or changes the caller ID from the one decided.
REFUSED_CALL_FIELDS: Mapping[str, str] = {
    "link_to": "it joins the new call to another call's session, which may be bridged to "
    "the person without a decision",
    "bridge_intent": "it bridges the call to another call and replaces the From decided on "
    "with that call's (N16)",
    "bridge_on_answer": "it bridges the answered call to another call",
    "park_after_unbridge": "it only applies to calls bridged with link_to",
    "supervise_call_control_id": "it makes the person called a listener on another call",
    "supervisor_role": "it makes the person called a listener on another call",
}
# An AI assistant's tools that reach nobody (the SDK's CallAssistantRequestParam.Tool): a
# `transfer` tool connects the person to numbers the assistant picks, undecided.
ASSISTANT_TOOLS = frozenset({"webhook", "hangup", "retrieval", "book_appointment",
                             "check_availability"})
# N2: a call that plays a recording or an AI voice on answer is automated voice.
AUTOMATED_CALL_FIELDS = ("assistant", "conversation_relay_config", "dialogflow_config",
                         "audio_url", "media_name")


class DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # The gate decides on one `to`: a parser that keeps the other would send there.
            raise DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes, content_type: str) -> dict[str, Any]:
    """The body as one JSON object: UTF-8, no duplicate keys, no NaN, no NUL or lone
    surrogate, not too deep."""
    if not content_type.startswith("application/json"):
        raise TelnyxError(415, "10014", "Expected an application/json body")
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise TelnyxError(400, "10015", "The request body is not valid UTF-8") from exc
    except DuplicateKey as exc:
        name = _UNWRITABLE.sub("?", str(exc)[:64])
        raise TelnyxError(400, "10015", f"Field {name!r} appears more than once",
                          pointer=f"/{name}") from exc
    except (ValueError, RecursionError) as exc:
        raise TelnyxError(400, "10015", "The request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise TelnyxError(400, "10015", "The request body must be a JSON object")
    _check_value(body, 0)
    return body


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TelnyxError(400, "10015", "The request body is nested too deeply")
    if isinstance(value, str):
        if _UNWRITABLE.search(value):
            raise TelnyxError(400, "10015", "A value contains a NUL character or a lone "
                              "UTF-16 surrogate")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        # Forwarded as JSON: a number past 64 bits could not be written out again.
        if not -(2**63) <= value < 2**64:
            raise TelnyxError(400, "10015", "A number is out of range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TelnyxError(400, "10015", "A number is out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _UNWRITABLE.search(key):
                raise TelnyxError(400, "10015", "A field name contains a NUL character or a "
                                  "lone UTF-16 surrogate")
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)


def _unknown(body: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    for name in body:
        if name not in known:
            raise TelnyxError(400, "10015", f"Unknown parameter {name[:64]!r}: Telnyx "
                              f"documents no such field for {what}", pointer=f"/{name[:64]}")


def _string(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise TelnyxError(422, "10004", f"The '{name}' parameter is required",
                              pointer=f"/{name}")
        return None
    if not isinstance(value, str):
        raise TelnyxError(422, "10015", f"The '{name}' parameter must be a string",
                          pointer=f"/{name}")
    return value


def _e164(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if isinstance(value, list):
        raise TelnyxError(422, "10015", f"The '{name}' address should be a single valid "
                          "number: consent-proxy decides one destination per request",
                          pointer=f"/{name}")
    number = _string(body, name, required=True)
    assert number is not None
    if not _E164.fullmatch(number):
        raise TelnyxError(422, "10016", f"The '{name}' parameter must be in +E.164 format",
                          pointer=f"/{name}")
    return number


def _typed(body: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]]) -> None:
    for name, kind in types.items():
        if name in body and body[name] is not None and not isinstance(body[name], kind):
            raise TelnyxError(422, "10015", f"The '{name}' parameter has the wrong type",
                              pointer=f"/{name}")


def _choice(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if name in body and body[name] is not None and body[name] not in allowed:
        raise TelnyxError(422, "10015", f"The '{name}' parameter must be one of "
                          f"{', '.join(allowed)}", pointer=f"/{name}")


def validate_message(body: Mapping[str, Any]) -> None:
    """`to` (+E.164), `from` or `messaging_profile_id`, `text` or `media_urls`; no schedule."""
    _unknown(body, MESSAGE_FIELDS, "POST /v2/messages")
    if SCHEDULE_FIELD in body:
        raise TelnyxError(SCHEDULED_SEND_NOT_GATED[0], str(SCHEDULED_SEND_NOT_GATED[1]),
                          SCHEDULED_MESSAGE, title="Scheduled send not gated",
                          pointer=f"/{SCHEDULE_FIELD}", reason="SCHEDULED_SEND_NOT_GATED")
    _e164(body, "to")
    for name in ("from", "messaging_profile_id", "text", "subject", "webhook_url",
                 "webhook_failover_url"):
        _string(body, name)
    if not (_string(body, "from") or _string(body, "messaging_profile_id")):
        raise TelnyxError(422, "10004", "A 'from' address or a 'messaging_profile_id' is "
                          "required", pointer="/from")
    _typed(body, {"media_urls": list, "use_profile_webhooks": bool, "auto_detect": bool})
    media = body.get("media_urls") or []
    if not all(isinstance(url, str) for url in media):
        raise TelnyxError(422, "10015", "'media_urls' must be a list of URLs",
                          pointer="/media_urls")
    if not (_string(body, "text") or media):
        raise TelnyxError(422, "10004", "A message needs 'text' or 'media_urls'",
                          pointer="/text")
    _choice(body, "type", ("SMS", "MMS"))
    _choice(body, "encoding", ("auto", "gsm7", "ucs2"))


def validate_call(body: Mapping[str, Any]) -> bool:
    """`connection_id`, `to` (one +E.164 number), `from`; the refused fields absent. Returns
    whether the call is automated voice (N2)."""
    _unknown(body, CALL_FIELDS, "POST /v2/calls")
    _string(body, "connection_id", required=True)
    _e164(body, "to")
    _string(body, "from", required=True)
    # A string, so that the front can scope it to the client (front.py): a number would go
    # upstream as it came and meet another client's.
    _string(body, "command_id")
    for name, why in REFUSED_CALL_FIELDS.items():
        if name in body:
            raise TelnyxError(422, "10015", f"Parameter {name!r} is not accepted by "
                              f"consent-proxy: {why}", pointer=f"/{name}")
    _choice(body, "privacy", ("none",))  # N16: the caller ID is never hidden
    _typed(body, {"custom_headers": list, "sip_headers": list, "conference_config": dict,
                  "assistant": dict})
    if body.get("assistant") is not None:
        _assistant(body["assistant"])
    conference = body.get("conference_config") or {}
    if "id" in conference:
        # A conference id names any conference of the upstream account, other clients'
        # too: the person called would be joined to calls the gate knows nothing of.
        raise TelnyxError(422, "10015", "conference_config.id is not accepted by "
                          "consent-proxy: join a conference by conference_name",
                          pointer="/conference_config/id")
    if "conference_name" in conference and not isinstance(conference["conference_name"], str):
        raise TelnyxError(422, "10015", "conference_config.conference_name must be a string",
                          pointer="/conference_config/conference_name")
    for item in body.get("custom_headers") or []:
        # Only the application's own X- headers: never one that names another caller
        # (P-Asserted-Identity, Diversion, …; N16).
        header = item.get("name") if isinstance(item, dict) else None
        if not isinstance(header, str) or not header.lower().startswith("x-"):
            raise TelnyxError(422, "10015", "custom_headers may only name X- headers",
                              pointer="/custom_headers")
    for item in body.get("sip_headers") or []:
        if not isinstance(item, dict) or item.get("name") != "User-to-User":
            raise TelnyxError(422, "10015", "sip_headers may only name User-to-User",
                              pointer="/sip_headers")
    return any(body.get(name) for name in AUTOMATED_CALL_FIELDS) or body.get(
        "enable_dialogflow") is True


def _assistant(assistant: Mapping[str, Any]) -> None:
    """An AI assistant only with its tools given in the request (they replace the stored ones,
    which the proxy cannot see), none of which can transfer the call; no MCP servers."""
    tools = assistant.get("tools")
    if not isinstance(tools, list):
        raise TelnyxError(422, "10015", "assistant.tools is required by consent-proxy: the "
                          "assistant's stored tools may transfer the call to someone not "
                          "decided on; list the tools it may use", pointer="/assistant/tools")
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in ASSISTANT_TOOLS:
            raise TelnyxError(422, "10015", f"assistant tool {str(kind)[:32]!r} is not accepted "
                              "by consent-proxy: it may reach someone not decided on (tools "
                              f"accepted: {', '.join(sorted(ASSISTANT_TOOLS))})",
                              pointer="/assistant/tools")
    if assistant.get("mcp_servers"):
        raise TelnyxError(422, "10015", "assistant.mcp_servers is not accepted by "
                          "consent-proxy: their tools may reach someone not decided on",
                          pointer="/assistant/mcp_servers")
