"""Logs are JSON lines with masked numbers, and never carry tokens or message bodies."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import structlog

from proxy.app import new_request_id
from proxy.phone import mask, mask_text, parse_number
from tests.conftest import ADMIN_TOKEN, mobile, uid

FULL_NUMBER = re.compile(r"(?:\+|00)?31\s?-?6\d{8}|06-?\d{8}")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+31612345678", "+31 6 ****5678"), ("+31201234567", "+31 2 ****4567"),
     ("+4915123456789", "+49 1 ****6789")],
)
def test_mask(number: str, masked: str) -> None:
    assert mask(number) == masked


@pytest.mark.parametrize(
    "text",
    ["bel +31612345678 nu", "bel 06-12345678 nu", "to=%2B31612345678&x=1",
     "0031 6 12345678", "31612345678", "+31 6 1234 5678"],
)
def test_mask_text_hides_numbers(text: str) -> None:
    out = mask_text(text)
    assert "5678" in out
    assert not FULL_NUMBER.search(out.replace(" ", "")), out
    assert "1234567" not in out.replace(" ", "")


def test_mask_text_leaves_dates_and_ids_alone() -> None:
    text = "2026-11-28T09:41:56.123456+00:00 request 3f2a9c81d4e54b1a latency 12.5"
    assert mask_text(text) == text


def test_hex_digests_reach_the_log_unchanged(log_output: io.StringIO) -> None:
    """An audit checkpoint's hash and MAC are the copy kept outside the database: a digest
    that starts like an international number ("00" and digits) must not be masked."""
    digest = "0031612345678" + "ab" * 25 + "c"
    assert mask_text(digest) != digest  # as free text it would be
    structlog.get_logger("t").info("audit_checkpoint", seq=7, hash=digest, mac=digest.upper())
    (event,) = lines(log_output)
    assert event["hash"] == digest
    assert event["mac"] != digest.upper()  # only lowercase hex, as the proxy writes digests


def test_processor_redacts_secrets_and_bodies(log_output: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info("message_received", to="+31612345678", note="call 06-12345678 please",
             body="Stop aub", auth_token="abcdef", nested={"Body": "hi", "from": "0612345678"})
    (event,) = lines(log_output)
    assert event["event"] == "message_received"
    assert event["to"] == "+31 6 ****5678"
    assert event["body"] == "[redacted]"
    assert event["auth_token"] == "[redacted]"
    assert event["nested"]["Body"] == "[redacted]"
    assert "12345678" not in json.dumps(event)


async def test_a_full_admin_scenario_logs_no_number_or_token(
    client: Any, auth: dict[str, str], log_output: io.StringIO
) -> None:
    number = mobile()
    org_id = uid()
    headers = {**auth, "X-Request-Id": "scenario-1"}
    await client.post("/admin/v1/organisations",
                      json={"id": org_id, "name": "X", "sector": "commercial"}, headers=headers)
    await client.put(f"/admin/v1/subjects/{number}", json={"kind": "person"}, headers=headers)
    await client.get(f"/admin/v1/subjects/{number}", headers=headers)
    await client.get("/admin/v1/decisions", params={"subject": number}, headers=headers)
    await client.post("/admin/v1/consents", json={"subject": "0" + number[3:]}, headers=headers)
    await client.delete(f"/admin/v1/subjects/{number}", headers=headers)
    await client.get(f"/admin/v1/subjects/{number}", headers={"Authorization": "Bearer nope"})
    events = lines(log_output)
    handled = [e for e in events if e["event"] == "request_handled"]
    assert len(handled) == 7
    assert all(e["request_id"] == "scenario-1" for e in handled[:6])
    assert {"method", "route", "status", "latency_ms", "timestamp", "level"} <= set(handled[0])
    raw = log_output.getvalue()
    national = number[3:]
    assert national not in raw
    assert parse_number(number) not in raw
    assert ADMIN_TOKEN not in raw


async def test_request_fields_are_redacted_too(
    client: Any, auth: dict[str, str], log_output: io.StringIO
) -> None:
    """The request's own fields (its id, and what the handler adds) are redacted once, when
    they are bound, and ride on every line of the request."""
    number = mobile()
    await client.get("/healthz", headers={"X-Request-Id": f"dialer-{number[1:]}"})
    await client.get("/healthz")
    first, second = [e for e in lines(log_output) if e["event"] == "request_handled"]
    assert first["request_id"] == f"dialer-{mask(number)}"
    assert re.fullmatch(r"[0-9a-f]{32}", second["request_id"])
    assert number[3:] not in log_output.getvalue()
    stamp = first["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp


def test_add_to_request_outside_a_request_is_a_no_op(log_output: io.StringIO) -> None:
    from proxy.logging import add_to_request, bind_request, end_request

    add_to_request(to="+31612345678")
    token = bind_request("r-1")
    add_to_request(to="+31612345678", token="secret")
    structlog.get_logger("t").info("inside")
    end_request(token)
    structlog.get_logger("t").info("outside")
    inside, outside = lines(log_output)
    assert (inside["request_id"], inside["to"], inside["token"]) == (
        "r-1", "+31 6 ****5678", "[redacted]")
    assert "request_id" not in outside
    assert "to" not in outside


def test_generated_request_ids_are_unique_32_hex_digits() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


async def test_a_redirect_is_logged_with_its_own_status(
    client: Any, log_output: io.StringIO
) -> None:
    """A handler that raises a redirect (the console sends a visitor without a session to its
    login page) is logged as that redirect, not as a 500, and carries its request id."""
    resp = await client.get("/console/", allow_redirects=False)
    assert resp.status in (302, 303)
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-Id"])
    handled = [e for e in lines(log_output) if e.get("event") == "request_handled"]
    assert [e["status"] for e in handled] == [resp.status]
