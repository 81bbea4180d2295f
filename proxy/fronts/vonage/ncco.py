"""A Voice API call request taken apart: every phone number it can reach, before anything is
decided (400 for what Vonage would refuse or what the gate cannot see).

Destinations: each phone endpoint in `to`, and each phone endpoint of the NCCO's `connect`
actions (from the action's `from`, else the call's, written out). Refused with the field named:

- `answer_url`: the NCCO it returns is fetched by Vonage later, never seen by the gate;
- `random_from_number`: the caller ID must be a registered sender (N16);
- a phone endpoint's `shaken` (a STIR/SHAKEN Identity of the dialer's own: N16), and its
  `dtmfAnswer` (digits played on answer can make a PBX behind the decided number dial out);
- `sip`, `websocket` and `vbc` endpoints: they reach beyond what the gate can decide (a SIP
  trunk or extension can forward anywhere); `app` endpoints (the application's own users,
  the call's agents) pass;
- NCCO actions whose answer is a new NCCO the gate would never see: `input` and `notify`
  (their eventUrl, or the call's event_url, answers with the next NCCO), a `connect` with
  `eventType: synchronous`, and a phone endpoint's `onAnswer` URL;
- unknown fields and actions.

A `connect` action's `eventUrl` (one URL, POST) is relayed through the proxy as the call's
`event_url` is: the vonage SDKs document its events as synchronous by default, and a
synchronous event's answer is a new NCCO.

A `conversation` goes out under a name of the client's own (`<client_id>:<name>`): the
upstream application's conversations are shared by every client of the proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from proxy.fronts.vonage import wire

CALL_FIELDS = frozenset({
    "to", "from", "random_from_number", "ncco", "answer_url", "answer_method", "event_url",
    "event_method", "machine_detection", "advanced_machine_detection", "length_timer",
    "ringing_timer"})
SAFE_ACTIONS = frozenset({"talk", "stream", "record", "conversation", "wait"})
UNSEEN_ACTIONS = frozenset({"input", "notify"})
PHONE_FIELDS = frozenset({"type", "number", "dtmfAnswer", "shaken", "onAnswer"})
# A connect action's options (NCCO reference; the vonage SDK's `Connect`): one not listed
# could change whom or how the action reaches, unseen by the gate.
CONNECT_FIELDS = frozenset({
    "action", "endpoint", "from", "randomFromNumber", "eventType", "timeout", "limit",
    "machineDetection", "advancedMachineDetection", "advanced_machine_detection", "eventUrl",
    "eventMethod", "ringbackTone"})
MAX_ACTIONS = 100
MAX_ENDPOINTS = 20


class BadCall(ValueError):
    """What Vonage would refuse, or the gate cannot see: a 400 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Target:
    """A phone number the call reaches: where it is written, and from which caller ID."""

    where: tuple[str | int, ...]  # the path to its endpoint object in the request body
    number: str  # as the dialer wrote it
    caller_id: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    body: dict[str, Any]
    call_from: str
    targets: tuple[Target, ...]  # targets[0] is the call's own `to`


def _phone(field: str, endpoint: Any, *, allow_on_answer: bool = False) -> str:
    if not isinstance(endpoint, dict):
        raise BadCall(field, "must be an endpoint object")
    kind = endpoint.get("type")
    if kind == "app":
        return ""
    if kind in ("sip", "websocket", "vbc"):
        raise BadCall(f"{field}.type", f"a {kind} endpoint reaches beyond what consent-proxy "
                      "can decide; only phone and app endpoints are accepted")
    if kind != "phone":
        raise BadCall(f"{field}.type", "must be phone or app")
    unknown = set(endpoint) - PHONE_FIELDS
    if unknown:
        raise BadCall(f"{field}.{sorted(unknown)[0]}", "unknown field")
    if "shaken" in endpoint:
        # N16: a STIR/SHAKEN Identity of the dialer's own would present a caller ID the
        # gate did not decide.
        raise BadCall(f"{field}.shaken", "the caller ID the carrier sees is the decided "
                      "sender; consent-proxy does not pass a dialer's own Identity header")
    if "dtmfAnswer" in endpoint:
        # Digits played the moment the line answers drive whatever answers it: a PBX or
        # voicemail system behind a decided number can dial out (DISA, remote call
        # forwarding) to a number the gate never decided.
        raise BadCall(f"{field}.dtmfAnswer", "digits sent on answer can make the system "
                      "that answers dial a number consent-proxy has not decided")
    if "onAnswer" in endpoint and not allow_on_answer:
        raise BadCall(f"{field}.onAnswer", "the NCCO its URL returns is fetched later and "
                      "never seen by consent-proxy")
    number = endpoint.get("number")
    if not isinstance(number, str) or not number.strip():
        raise BadCall(f"{field}.number", "a phone number is required")
    return number


def _from(field: str, value: Any) -> str:
    if isinstance(value, dict):
        if value.get("type") != "phone":
            raise BadCall(f"{field}.type", "the caller ID must be a phone number")
        unknown = set(value) - {"type", "number"}
        if unknown:
            # N16: what the carrier presents is the decided sender and nothing else.
            raise BadCall(f"{field}.{sorted(unknown)[0]}", "unknown field")
        value = value.get("number")
    if not isinstance(value, str) or not value.strip():
        raise BadCall(field, "a caller ID phone number is required")
    return value


def _connect(index: int, action: dict[str, Any], call_from: str) -> list[Target]:
    field = f"ncco[{index}]"
    unknown = set(action) - CONNECT_FIELDS
    if unknown:
        raise BadCall(f"{field}.{sorted(unknown)[0]}", "unknown field")
    if action.get("randomFromNumber"):
        raise BadCall(f"{field}.randomFromNumber", "the caller ID must be a registered "
                      "sender")
    if action.get("eventType") == "synchronous":
        raise BadCall(f"{field}.eventType", "a synchronous eventUrl answers with a new NCCO "
                      "that consent-proxy never sees")
    # The vonage SDKs document `synchronous` as the default eventType: whatever the
    # action's eventUrl answers may be a new NCCO. It is relayed like the call's event_url,
    # and the relay answers no NCCO.
    _event_url(action, "eventUrl", "eventMethod", f"{field}.")
    caller_id = _from(f"{field}.from", action["from"]) if "from" in action else call_from
    endpoints = action.get("endpoint")
    if not isinstance(endpoints, list) or not 1 <= len(endpoints) <= MAX_ENDPOINTS:
        raise BadCall(f"{field}.endpoint", f"must be a list of 1 to {MAX_ENDPOINTS} endpoints")
    out = []
    for j, endpoint in enumerate(endpoints):
        number = _phone(f"{field}.endpoint[{j}]", endpoint)
        if number:
            out.append(Target(("ncco", index, "endpoint", j), number, caller_id))
    return out


def _event_url(body: dict[str, Any], url_key: str = "event_url",
               method_key: str = "event_method", where: str = "") -> None:
    """One absolute http(s) URL, requested with POST: it is relayed through the proxy
    (proxy/fronts/vonage/events.py)."""
    if url_key in body:
        urls = body[url_key]
        if not isinstance(urls, list) or len(urls) != 1 or not isinstance(urls[0], str) \
                or urlsplit(urls[0]).scheme not in ("http", "https") \
                or not urlsplit(urls[0]).netloc:
            raise BadCall(where + url_key, "must be a list of one absolute http(s) URL")
    if body.get(method_key, "POST") != "POST":
        raise BadCall(where + method_key, "only POST events are relayed")


def plan(body: dict[str, Any]) -> Plan:
    unknown = set(body) - CALL_FIELDS
    if unknown:
        raise BadCall(sorted(unknown)[0], "unknown field")
    if "answer_url" in body:
        raise BadCall("answer_url", "the NCCO it returns is fetched by Vonage later and never "
                      "seen by consent-proxy; send the NCCO inline in `ncco`")
    if body.get("random_from_number"):
        raise BadCall("random_from_number", "the caller ID must be a registered sender; set "
                      "`from`")
    _event_url(body)
    call_from = _from("from", body.get("from"))
    to = body.get("to")
    if not isinstance(to, list) or not 1 <= len(to) <= MAX_ENDPOINTS:
        raise BadCall("to", f"must be a list of 1 to {MAX_ENDPOINTS} endpoints")
    targets = []
    for i, endpoint in enumerate(to):
        if isinstance(endpoint, dict) and endpoint.get("type") == "app":
            raise BadCall(f"to[{i}].type", "must be phone")
        targets.append(Target(("to", i), _phone(f"to[{i}]", endpoint), call_from))
    actions = body.get("ncco")
    if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS:
        raise BadCall("ncco", f"must be a list of 1 to {MAX_ACTIONS} actions")
    for index, action in enumerate(actions):
        name = action.get("action") if isinstance(action, dict) else None
        if not isinstance(name, str):
            raise BadCall(f"ncco[{index}].action", "each action is an object whose `action` "
                          "is a string")
        if name == "connect":
            assert isinstance(action, dict)
            targets += _connect(index, action, call_from)
        elif name == "conversation":
            if not isinstance(action.get("name"), str) or not action["name"]:
                raise BadCall(f"ncco[{index}].name", "a conversation needs a name")
        elif name in UNSEEN_ACTIONS:
            raise BadCall(f"ncco[{index}].action", f"{name}: its answer is a new NCCO that "
                          "consent-proxy never sees")
        elif name == "transfer":
            raise BadCall(f"ncco[{index}].action", "transfer: moving the call's legs into "
                          "another conversation is not accepted")
        elif name not in SAFE_ACTIONS:
            raise BadCall(f"ncco[{index}].action", "unknown action")
    return Plan(body, call_from, tuple(targets))


def rewritten(plan: Plan, numbers: Sequence[str], call_from: str,
              connect_from: dict[int, str], client_id: str) -> dict[str, Any]:
    """The body as it goes out: each target's number as decided (Vonage spelling), the caller
    IDs as registered, conversation names the client's own. Everything else as the dialer
    sent it."""
    body: dict[str, Any] = wire.deep_copy(plan.body)
    for action in body["ncco"]:
        if action["action"] == "conversation":
            # Every client's calls go out through one upstream application, whose
            # conversation names are shared: another client's call joining "sales" would
            # put its callee in this client's call. A client id holds no `:`.
            action["name"] = f"{client_id}:{action['name']}"
    for target, number in zip(plan.targets, numbers, strict=True):
        node: Any = body
        for step in target.where:
            node = node[step]
        node["number"] = number
    if isinstance(body.get("from"), dict):
        body["from"]["number"] = call_from
    else:
        body["from"] = {"type": "phone", "number": call_from}
    for index, number in connect_from.items():
        action = body["ncco"][index]
        if isinstance(action.get("from"), dict):
            action["from"]["number"] = number
        else:
            action["from"] = number
    return body
