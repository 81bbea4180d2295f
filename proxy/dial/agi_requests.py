"""What a FastAGI request asks, read from its header: a dial decision (`decide`) or the
outcome of an allowed call (`outcome`). Every refusal names the argument (`BadInput`).

    AGI(agi://gate:4573/decide,${NUMBER}[,from=…][,automated=true][,client=AC…][,call_id=…])
    AGI(agi://gate:4573/outcome,${CONSENT_DECISION_ID},${DIALSTATUS}[,client=AC…])

The first arguments are positional; the rest are `name=value`, in any order, each at most
once. The caller ID is the channel's (`agi_callerid`); `from=` names it where the channel has
none, and must name the same number where it has one (N16: the call goes out with the
channel's caller ID, so that is what is decided on). A channel presenting its caller ID as
restricted or unavailable (`agi_callingpres`) is withheld, whatever the number. The call_id
is the channel's `agi_uniqueid` unless `call_id=` names one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from proxy.dial.agi import Header
from proxy.dial.request import CALL_ID, DialRequest, OutcomeStatus
from proxy.errors import BadInput

DECIDE, OUTCOME = "decide", "outcome"
DECIDE_OPTIONS = frozenset({"from", "automated", "client", "call_id"})
OUTCOME_OPTIONS = frozenset({"client"})
CLIENT_ID = re.compile(r"AC[0-9a-f]{32}")
MAX_NUMBER = 64  # as the dial API's `to` and `from`
# What Asterisk sends for a channel without a caller ID (agi_callerid).
NO_CALLER_ID = frozenset({"", "unknown"})
# Asterisk's presentation bits (AST_PRES_RESTRICTION in callerid.h): 0x20 restricted, 0x40
# unavailable; 0x00 allowed. The screening bits (0x03) say nothing about presentation.
PRES_RESTRICTION = 0x60
# The caller ID the gate decides on for a channel that withholds its own (N16).
WITHHELD = "restricted"
# How a call ended in Asterisk (the Dial application's DIALSTATUS) as the dial API's outcome.
# CANCEL: the calling side gave up while it rang, so nobody was reached (`cancelled`, as a
# SIP proxy reports a CANCEL); CONGESTION and CHANUNAVAIL: the network or the channel could
# not carry the call.
DIALSTATUS: dict[str, OutcomeStatus] = {
    "ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer", "CANCEL": "cancelled",
    "CONGESTION": "failed", "CHANUNAVAIL": "failed",
}


def _options(args: Sequence[str], allowed: frozenset[str], first: int) -> dict[str, str]:
    """`name=value` arguments from position `first` on; an empty one (a trailing comma in
    the dialplan) counts as absent."""
    found: dict[str, str] = {}
    for position, arg in enumerate(args, start=first):
        if not arg:
            continue
        name, sep, value = arg.partition("=")
        if not sep or name not in allowed:
            raise BadInput(f"expected name=value with a name of {', '.join(sorted(allowed))}",
                           f"arg_{position}")
        if name in found:
            raise BadInput("may appear only once", name)
        found[name] = value
    return found


def _client(options: dict[str, str]) -> str | None:
    client = options.get("client")
    if client is not None and not CLIENT_ID.fullmatch(client):
        raise BadInput("expected a client's id (AC followed by 32 hex digits)", "client")
    return client


def dial_request(header: Header) -> tuple[DialRequest, str | None]:
    """The dial request of a `decide`, and the client a `client=` argument names (or None)."""
    args = header.args
    to = args[0].strip() if args else ""
    if not to:
        raise BadInput("the number to call is the first argument: "
                       "AGI(agi://gate:4573/decide,${NUMBER})", "arg_1")
    if len(to) > MAX_NUMBER:
        raise BadInput(f"at most {MAX_NUMBER} characters", "arg_1")
    options = _options(args[1:], DECIDE_OPTIONS, 2)
    from_ = _caller_id(header, options)
    automated = options.get("automated", "false").lower()
    if automated not in ("true", "false"):
        raise BadInput("expected true or false", "automated")
    call_id = options.get("call_id", header.env.get("agi_uniqueid", ""))
    if not CALL_ID.fullmatch(call_id):
        raise BadInput("expected 1-256 printable ASCII characters without spaces",
                       "call_id" if "call_id" in options else "agi_uniqueid")
    return DialRequest(to, from_, call_id, automated == "true"), _client(options)


def _caller_id(header: Header, options: dict[str, str]) -> str:
    """The caller ID the call goes out with: the channel's, or `from=` where it has none."""
    channel = header.env.get("agi_callerid", "").strip()
    named = options.get("from")
    if len(channel) > MAX_NUMBER:
        raise BadInput(f"at most {MAX_NUMBER} characters", "agi_callerid")
    if named is not None:
        named = named.strip()
        if len(named) > MAX_NUMBER:
            raise BadInput(f"at most {MAX_NUMBER} characters", "from")
        # N16: deciding on one number while the channel presents another would let a
        # dialplan show a number nobody decided on (another organisation's).
        if channel.lower() not in NO_CALLER_ID and named != channel:
            raise BadInput("differs from the channel's caller ID (agi_callerid); the call "
                           "goes out with that one: set CALLERID(num) instead", "from")
    # N16: a presentation other than allowed sends the call out withheld.
    if _presentation(header) & PRES_RESTRICTION:
        return WITHHELD
    return named if named is not None else channel


def _presentation(header: Header) -> int:
    text = header.env.get("agi_callingpres", "0").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise BadInput("expected Asterisk's caller ID presentation (a number)",
                       "agi_callingpres")
    return int(text)


def outcome_request(header: Header) -> tuple[int, OutcomeStatus, str | None]:
    """The decision id and outcome of an `outcome`, and the client `client=` names."""
    args = header.args
    if len(args) < 2:
        raise BadInput("expected the decision id and the DIALSTATUS: "
                       "AGI(agi://gate:4573/outcome,${CONSENT_DECISION_ID},${DIALSTATUS})",
                       "arg_2" if args else "arg_1")
    text = args[0].strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:  # beyond a bigint: none
        raise BadInput("expected the decision id (CONSENT_DECISION_ID)", "arg_1")
    status = DIALSTATUS.get(args[1].strip().upper())
    if status is None:
        raise BadInput(f"expected a DIALSTATUS of {', '.join(DIALSTATUS)}", "arg_2")
    return int(text), status, _client(_options(args[2:], OUTCOME_OPTIONS, 3))
