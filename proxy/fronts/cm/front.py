"""The CM.com drop-in front: `POST /v1.0/message` as CM's SDKs send it.

A request holds `msg` entries, each with recipients: every recipient is one contact and one
decision row, decided and committed before anything leaves. Only the allowed recipients are
forwarded, in one upstream request (the upstream product token swapped in, each recipient's
number as decided, the footer appended where N17 asks for it), and CM's answer is merged with
the denials so each recipient gets its own entry, in the order of the request.

CM has no idempotency key. `reference` and the `customGrouping` fields are the sender's own
labels (a whole batch may share one reference), passed on unchanged and never used to
deduplicate: a request sent again is decided again and sent again, as CM itself would.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from aiohttp import web

from proxy import credentials, sms, store
from proxy.body import read_body
from proxy.fronts.cm import answers
from proxy.fronts.cm import request as cm_request
from proxy.fronts.cm.errors import (
    AUTHENTICATION_FAILED,
    INVALID_BODY,
    REQUEST_MALFORMED,
    UNKNOWN,
    CmError,
    dumps,
)
from proxy.fronts.cm.keys import NAME, UPSTREAM
from proxy.fronts.cm.request import Msg
from proxy.fronts.cm.settings import MESSAGE_PATH
from proxy.fronts.cm.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from proxy.gate import Answer, Caller, Evaluation, Gate, GiveBack, Outcome, Proposal, consumption
from proxy.gate.codes import UPSTREAM_TIMEOUT, UPSTREAM_UNREACHABLE
from proxy.gate.evaluation import sender_key
from proxy.gate.values import Committed
from proxy.keys import CLIENTS, GATE, METRICS, REQUEST_ID, SETTINGS
from proxy.logging import add_to_request

log = structlog.get_logger("proxy.front.cm")

TOKEN_HEADER = "X-CM-PRODUCTTOKEN"  # noqa: S105 (a header name)
# CM's header authentication, beside the body's token
_CLIENT_ID = re.compile(r"AC[0-9a-f]{32}")
# Decisions of one request decided at once (they share the group commit), at most this many.
CONCURRENT_DECISIONS = 16


# --- authentication -------------------------------------------------------------------------

async def authenticate(request: web.Request, data: dict[str, Any]) -> store.Client:
    """The product token is the client's API key, `<client_id>.<token>`
    (credentials.api_key), in the body or in X-CM-PRODUCTTOKEN (both: they must agree).
    Anything else: 400, errorCode 101, as CM answers an unknown product token."""
    tokens = set(request.headers.getall(TOKEN_HEADER, []))
    body_token = cm_request.product_token(data)
    if body_token is not None:
        tokens.add(body_token)
    secret = request.app[SETTINGS].proxy_secret
    split = credentials.split_api_key(tokens.pop()) if len(tokens) == 1 else None
    client = None
    if split is not None and secret and _CLIENT_ID.fullmatch(split[0]):
        client = await request.app[CLIENTS].get(request, split[0])
    if client is None or split is None or not secret or not credentials.token_matches(
            secret, client.id, client.token_version, split[1]):
        raise CmError(400, AUTHENTICATION_FAILED,
                      "No account found for the given authentication")
    return client


# --- deciding -------------------------------------------------------------------------------

class Refusal(msgspec.Struct, frozen=True, gc=False):
    code: int
    details: str
    reason: str


class Contact(msgspec.Struct, frozen=True, gc=False):
    """One recipient of one msg, decided (a gate.Recordable): the text it would receive."""

    evaluation: Evaluation
    details: dict[str, Any]
    msg: Msg
    number: str  # as the client spelled it: CM's answer names it so
    body: str
    parts: int
    refusal: Refusal | None = None


def _with_footer(evaluation: Evaluation, msg: Msg, number: str, position: int) -> Contact:
    """N17: the organisation's footer on a marketing SMS; never truncated: a text that no
    longer fits the parts CM may send is refused."""
    org, decision = evaluation.facts.organisation, evaluation.decision
    where = {"msg": msg.index, "recipient": position}
    if org is None or not decision.allowed or "OPT_OUT_APPENDED" not in decision.obligations:
        seg = cm_request.parts(msg.content)
        details = where | {"segments_before": seg.count, "segments_after": seg.count,
                           "encoding": seg.encoding, "footer_appended": False}
        return Contact(evaluation, details, msg, number, msg.content, seg.count)
    sender = sender_key(msg.from_) or msg.from_
    footer = sms.render_footer(org.sms_footer, sender=sender, organisation=org.name)
    result = sms.apply_footer(msg.content, footer, needed=True)
    # Parts as CM counts them (its UCS-2 parts hold 66): CM cuts what does not fit, the footer
    # first, as it comes last.
    before, after = cm_request.parts(msg.content), cm_request.parts(result.body)
    details = where | {"segments_before": before.count, "segments_after": after.count,
                       "encoding_before": before.encoding, "encoding": after.encoding,
                       "footer_appended": True}
    if after.count > msg.allowed_parts or result.too_long:
        refusal = Refusal(INVALID_BODY, f"the text with the opt-out footer needs "
                          f"{after.count} parts ({after.encoding}) and "
                          f"maximumNumberOfMessageParts allows {msg.allowed_parts}; allow more "
                          "parts or shorten the text", "OPT_OUT_FOOTER_DOES_NOT_FIT")
        return Contact(evaluation, details | {"footer_appended": False}, msg, number,
                       msg.content, before.count, refusal)
    return Contact(evaluation, details, msg, number, result.body, after.count)


async def _decide_one(gate: Gate, caller: Caller, msg: Msg, position: int,
                      limit: asyncio.Semaphore) -> Committed[Contact]:
    number = msg.recipients[position]
    proposal = Proposal("sms", number, msg.from_, body=msg.content)
    decided_at = gate.clock()

    async def decide() -> Contact:
        return _with_footer(await gate.decide(proposal, caller), msg, number, position)

    async with limit:
        return await gate.commit(caller, await decide(), decided_at=decided_at, again=decide)


async def _decide_all(gate: Gate, caller: Caller, req: cm_request.SendRequest
                      ) -> list[Committed[Contact]]:
    """Every recipient decided and committed. If any decision fails (the store is down), the
    ones committed are finished as not sent and the failure is raised: nothing goes out."""
    limit = asyncio.Semaphore(CONCURRENT_DECISIONS)
    results = await asyncio.gather(
        *(_decide_one(gate, caller, msg, j, limit)
          for msg in req.msgs for j in range(len(msg.recipients))),
        return_exceptions=True)
    committed = [r for r in results if isinstance(r, Committed)]
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return committed
    answer = Answer(503, b"", "application/json")
    for done in committed:
        await gate.finish(done.decision_id, answer, outcome=Outcome(
            error="not forwarded: another recipient of the request could not be decided"),
            give_back=GiveBack("not_sent", "request failed") if done.decision.allowed
            else None)
    raise failure


# --- the handler ----------------------------------------------------------------------------

def _check_path(request: web.Request) -> None:
    """Matched on the raw path: an escaped or dotted spelling that the router resolved to the
    send path is not it."""
    if request.raw_path.split("?", 1)[0] != MESSAGE_PATH:
        raise CmError(404, UNKNOWN, "The requested resource was not found")


async def send(request: web.Request) -> web.Response:
    _check_path(request)
    raw = await read_body(request)
    content_type = request.headers.get("Content-Type", "application/json")
    if "json" not in content_type.lower():
        raise CmError(400, REQUEST_MALFORMED, "Expected a JSON body (application/json)")
    data = cm_request.decode(raw)
    client = await authenticate(request, data)
    req = cm_request.parse(data)
    gate = request.app[GATE]
    caller = Caller.of(client, request.get(REQUEST_ID), NAME)
    decided = await _decide_all(gate, caller, req)
    entries: list[dict[str, Any]] = []
    finishing: list[Callable[[Answer], Awaitable[None]]] = []
    going: list[tuple[int, Committed[Contact]]] = []  # (entry index, contact) to forward
    for done in decided:
        contact, decision_id = done.entry, done.decision_id
        reference = contact.msg.reference
        if not done.decision.allowed:
            entries.append(answers.denied(contact.number, reference, done.decision,
                                          decision_id))
            finishing.append(_finisher(gate, decision_id, None))
        elif contact.refusal is not None:
            refusal = contact.refusal
            entries.append(answers.refused(contact.number, reference, refusal.code,
                                           refusal.details, refusal.reason, decision_id))
            finishing.append(_finisher(gate, decision_id, Outcome(error=refusal.details),
                                       GiveBack("not_sent", refusal.reason)))
        else:
            going.append((len(entries), done))
            entries.append({})  # filled from the provider's answer
            finishing.append(_noop)
    fault = None
    if going:
        fault = await _forward(request, going, entries, finishing)
    status, body = answers.summary(entries, fault)
    response = web.json_response(body, status=status, dumps=dumps)
    add_to_request(recipients=len(decided), forwarded=len(going),
                   accepted=sum(1 for e in entries if e["status"] == answers.ACCEPTED),
                   decision_ids=[d.decision_id for d in decided[:50]])
    answer = Answer(status, response.body if isinstance(response.body, bytes) else b"",
                    "application/json; charset=utf-8")
    for finish in finishing:
        await finish(answer)
    return response


async def _noop(_answer: Answer) -> None:
    return None


def _finisher(gate: Gate, decision_id: int, outcome: Outcome | None,
              give_back: GiveBack | None = None) -> Callable[[Answer], Awaitable[None]]:
    async def finish(answer: Answer) -> None:
        await gate.finish(decision_id, answer, outcome=outcome, give_back=give_back)

    return finish


# --- forwarding -----------------------------------------------------------------------------

def cm_number(e164: str) -> str:
    """CM's own spelling of a number: 00, the country code, the number (no +)."""
    return "00" + e164.removeprefix("+")


def _digits(number: Any) -> str:
    text = "".join(ch for ch in str(number) if ch.isdigit())
    return text.removeprefix("00")


def _sender(contact: Contact) -> str:
    """The sender as registered (a look-alike spelling leaves as the plain one), numbers in
    CM's spelling."""
    registered = contact.evaluation.contact.sender
    sender = registered.sender if registered is not None else contact.msg.from_
    return cm_number(sender) if sender.startswith("+") else sender


def _upstream_msgs(going: list[tuple[int, Committed[Contact]]]
                   ) -> tuple[list[dict[str, Any]], list[tuple[int, Committed[Contact], str]]]:
    """One upstream msg per (msg, text): recipients whose texts differ (a footer for one and
    not another) cannot share a msg. Returns the msgs and, in the order sent, each
    recipient's entry index, contact and number as sent."""
    groups: dict[tuple[int, str, str], list[tuple[int, Committed[Contact]]]] = {}
    for index, done in going:
        contact = done.entry
        groups.setdefault((contact.msg.index, contact.body, _sender(contact)), []).append(
            (index, done))
    msgs, sent = [], []
    for (_, body, sender), members in groups.items():
        msg = members[0][1].entry.msg
        numbers = []
        for index, done in members:
            to = done.entry.evaluation.contact.to
            assert to is not None  # an allowed contact has its E.164 number
            numbers.append({"number": cm_number(to)})
            sent.append((index, done, cm_number(to)))
        # Only SMS: without allowedChannels CM may pick any channel of the account.
        msgs.append({"from": sender, "to": numbers,
                     "body": {"type": msg.body_type, "content": body},
                     "allowedChannels": ["SMS"], **msg.fields})
    return msgs, sent


async def _forward(request: web.Request, going: list[tuple[int, Committed[Contact]]],
                   entries: list[dict[str, Any]],
                   finishing: list[Callable[[Answer], Awaitable[None]]],
                   ) -> tuple[int, int, str] | None:
    """The decisions are committed: now, and only now, the allowed recipients leave. Fills
    their entries and finishers; returns the fault that the summary must carry, if any."""
    app = request.app
    gate = app[GATE]
    upstream = app[UPSTREAM]
    msgs, sent = _upstream_msgs(going)
    started = time.perf_counter()
    try:
        answer = await upstream.send(upstream.payload(msgs))
    except (UpstreamUnreachable, UpstreamTimeout) as exc:
        timeout = isinstance(exc, UpstreamTimeout)
        status, code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNREACHABLE
        label = "timeout" if timeout else "unreachable"
        app[METRICS].upstream_responses.labels(NAME, label).inc()
        log.warning("upstream_failed", error=label, recipients=len(sent))
        details = ("The provider did not answer in time; the messages may or may not have "
                   "been sent. They are not retried automatically." if timeout else
                   "The provider could not be reached; nothing was sent.")
        for index, done, _ in sent:
            contact = done.entry
            entries[index] = answers.entry(
                contact.number, contact.msg.reference,
                answers.UNKNOWN_STATUS if timeout else answers.REJECTED_STATUS, 0, details,
                code, reason="UPSTREAM_TIMEOUT" if timeout else "UPSTREAM_UNREACHABLE",
                decision_id=done.decision_id)
            # N6: nothing was sent when CM could not be reached; after a timeout it may have.
            finishing[index] = _finisher(gate, done.decision_id,
                                         Outcome(error=f"upstream {label}"),
                                         None if timeout else consumption.after_upstream(None))
        return status, code, details
    app[METRICS].upstream_latency.labels(NAME).observe(time.perf_counter() - started)
    app[METRICS].upstream_responses.labels(NAME, str(answer.status)).inc()
    return _merge(gate, answer, sent, entries, finishing)


def _merge(gate: Gate, answer: UpstreamResponse,
           sent: list[tuple[int, Committed[Contact], str]], entries: list[dict[str, Any]],
           finishing: list[Callable[[Answer], Awaitable[None]]],
           ) -> tuple[int, int, str] | None:
    """CM's entries matched to what was sent, by number, in order."""
    body = answer.json()
    ok = isinstance(body, dict) and isinstance(body.get("messages"), list)
    pending: defaultdict[str, deque[dict[str, Any]]] = defaultdict(deque)
    for item in (body["messages"] if ok else []):
        if isinstance(item, dict):
            pending[_digits(item.get("to"))].append(item)
    code = body.get("errorCode") if ok and isinstance(body.get("errorCode"), int) else UNKNOWN
    # Said by CM about the proxy's own request (a 101 is the upstream product token's), so
    # the sender does not take it for its own.
    details = (f"CM answered: {body.get('details')}" if ok else
               f"The provider answered HTTP {answer.status} without a CM answer")
    if answer.status >= 400:
        log.warning("upstream_refused", status=answer.status, error_code=code)
    unknown = 0
    for index, done, number in sent:
        contact = done.entry
        found = pending[_digits(number)].popleft() if pending[_digits(number)] else None
        if found is None:  # no entry for it: the request's own result stands for it
            accepted = answer.status == 200 and ok and code == 0
            # N6: a request CM took (not an HTTP error) without saying what became of this
            # recipient may have sent it: not known, and nothing it consumed is given back.
            fate = (answers.ACCEPTED if accepted else answers.REJECTED_STATUS
                    if answer.status >= 400 else answers.UNKNOWN_STATUS)
            found = {"status": fate, "parts": contact.parts if accepted else 0,
                     "messageDetails": details, "messageErrorCode": code}
        status, parts = found.get("status"), found.get("parts")
        if status not in (answers.ACCEPTED, answers.REJECTED_STATUS):
            status = answers.UNKNOWN_STATUS  # CM answers only these two
        message_code = found.get("messageErrorCode")
        entries[index] = answers.entry(
            contact.number, contact.msg.reference, status,
            parts if isinstance(parts, int) else 0,
            found.get("messageDetails") if isinstance(found.get("messageDetails"), str)
            else None, message_code if isinstance(message_code, int) else code,
            decision_id=done.decision_id)
        if status == answers.ACCEPTED:
            outcome = Outcome(answer.status)
            give_back = None
        elif status == answers.UNKNOWN_STATUS:
            unknown += 1
            outcome = Outcome(answer.status, error="upstream answer does not say whether it "
                              "was sent")
            give_back = None
        else:
            # The number and the text stay out of the outcome row: CM's details may hold them.
            outcome = Outcome(answer.status, error=f"upstream rejected: messageErrorCode "
                              f"{entries[index]['messageErrorCode']}")
            give_back = GiveBack("provider_refused", f"upstream {answer.status}")
        finishing[index] = _finisher(gate, done.decision_id, outcome, give_back)
    if answer.status >= 400 and not (ok and body.get("messages")):
        return answer.status, code, details  # refused as a whole: its own status and code
    if unknown:  # an answer that is not CM's: a bad gateway, and the sends' fate unknown
        return 502, UNKNOWN, details
    return None
