"""One parser per registry record kind, shared by the single-record admin API and the bulk
import (proxy/imports/): a POST and an import row of the same values are accepted and refused
alike. Each takes the JSON object of the single-record API (an import row is read into that
shape first) and the present instant, and raises BadInput naming the first field wrong."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from proxy.errors import BadInput
from proxy.fields import Fields
from proxy.policy.facts import (
    CHANNELS,
    CONSENT_KINDS,
    PROVENANCES,
    RELATIONSHIP_KINDS,
    SUBJECT_KINDS,
)
from proxy.store.registry import ConsentIn, ObjectionIn, Record, RelationshipIn, SubjectIn

# Who the registry's events (sql/016) name for a change made through the admin API.
ADMIN_ACTOR = "admin-api"
OBJECTION_VIA = ("api", "agent", "ivr", "sms", "email", "letter")
COLLECTION_METHODS = ("web_form", "app", "phone", "sms", "email", "paper", "in_person", "other")
_SHA256 = re.compile(r"[0-9a-f]{64}")

CONSENT_FIELDS = (
    "source_id", "subject", "organisation", "channel", "topics", "kind", "given_at",
    "expires_at", "verified_at", "verification", "first_contact_by", "requested_for",
    "provenance", "consent_text_version", "consent_text_sha256", "collection_method",
    "policy_url", "evidence_ref", "evidence")
RELATIONSHIP_FIELDS = (
    "source_id", "subject", "organisation", "kind", "topics", "started_at", "ended_at",
    "provenance", "opt_out_offered", "evidence")
OBJECTION_FIELDS = ("source_id", "subject", "organisation", "channel", "received_at", "via")
SUBJECT_FIELDS = ("number", "kind", "published_for_marketing", "evidence")


def not_future(value: dt.datetime | None, now: dt.datetime, name: str) -> None:
    if value is not None and value > now + dt.timedelta(minutes=5):
        raise BadInput("lies in the future", name)


def _source_id(f: Fields) -> str | None:
    return f.text("source_id", required=False, max_len=200)


def parse_consent(data: Any, now: dt.datetime) -> ConsentIn:
    f = Fields(data, CONSENT_FIELDS)
    kind = f.choice("kind", CONSENT_KINDS)
    given_at = f.time("given_at")
    assert given_at is not None
    not_future(given_at, now, "given_at")
    expires_at = f.end("expires_at")  # year 9999: never expires
    if expires_at is not None and expires_at <= given_at:
        raise BadInput("must be after given_at", "expires_at")
    window = f.sub("requested_for", ("start", "end"))
    start = end = None
    if window is not None:
        if kind != "request":
            raise BadInput("only a contact request (kind 'request') has a requested time",
                           "requested_for")
        start, end = window.time("start"), window.time("end")
        assert start is not None
        assert end is not None
        if start >= end:
            raise BadInput("start must be before end", "requested_for.end")
    sha = f.text("consent_text_sha256", required=False, max_len=64)
    if sha is not None and not _SHA256.fullmatch(sha):
        raise BadInput("expected a SHA-256 digest as 64 lowercase hex digits",
                       "consent_text_sha256")
    return ConsentIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", max_len=63) or "",
        channel=f.choice("channel", CHANNELS) or "voice",
        topics=f.topics("topics"),
        kind=kind or "opt_in",
        given_at=given_at,
        provenance=f.choice("provenance", PROVENANCES) or "unknown",
        expires_at=expires_at,
        verified_at=f.time("verified_at", required=False),
        verification=f.text("verification", required=False, max_len=200),
        first_contact_by=f.time("first_contact_by", required=False),
        requested_start=start,
        requested_end=end,
        evidence=f.obj("evidence"),
        consent_text_version=f.text("consent_text_version", required=False, max_len=100),
        consent_text_sha256=sha,
        collection_method=f.choice("collection_method", COLLECTION_METHODS, required=False),
        policy_url=f.url("policy_url"),
        evidence_ref=f.text("evidence_ref", required=False, max_len=200),
        source_id=_source_id(f),
    )


def parse_relationship(data: Any, now: dt.datetime) -> RelationshipIn:
    f = Fields(data, RELATIONSHIP_FIELDS)
    started_at = f.time("started_at")
    ended_at = f.end("ended_at")  # year 9998: still running
    assert started_at is not None
    if ended_at is not None and ended_at < started_at:
        raise BadInput("must not be before started_at", "ended_at")
    if not f.has("opt_out_offered"):
        raise BadInput("required field is missing (N7: was an opt-out offered at collection?)",
                       "opt_out_offered")
    return RelationshipIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", max_len=63) or "",
        kind=f.choice("kind", RELATIONSHIP_KINDS) or "customer",
        topics=f.topics("topics"),
        started_at=started_at,
        ended_at=ended_at,
        provenance=f.choice("provenance", PROVENANCES) or "unknown",
        opt_out_offered=f.boolean("opt_out_offered", required=True),
        evidence=f.obj("evidence"),
        source_id=_source_id(f),
    )


def parse_objection(data: Any, now: dt.datetime) -> ObjectionIn:
    f = Fields(data, OBJECTION_FIELDS)
    received_at = f.time("received_at", required=False) or now
    not_future(received_at, now, "received_at")
    return ObjectionIn(
        subject=f.number("subject") or "",
        organisation=f.text("organisation", required=False, max_len=63),
        channel=f.choice("channel", CHANNELS, required=False),
        received_at=received_at,
        via=f.choice("via", OBJECTION_VIA) or "api",
        source_id=_source_id(f),
    )


def parse_subject(data: Any, now: dt.datetime, number: str | None = None) -> SubjectIn:
    """What is known about a number. `number`: the number in the path of the single-record
    API (PUT /subjects/{number}), which the body then does not carry; an import row carries
    it as `number`."""
    f = Fields(data, SUBJECT_FIELDS[1:] if number is not None else SUBJECT_FIELDS)
    the_number = number if number is not None else f.number("number")
    assert the_number is not None
    return SubjectIn(
        number=the_number,
        kind=f.choice("kind", SUBJECT_KINDS, required=False, default="person") or "person",
        published_for_marketing=f.boolean("published_for_marketing"),
        evidence=f.obj("evidence"),
    )


PARSERS: dict[str, Callable[[Any, dt.datetime], Record]] = {
    "consents": parse_consent,
    "relationships": parse_relationship,
    "objections": parse_objection,
    "subjects": parse_subject,
}
FIELDS = {"consents": CONSENT_FIELDS, "relationships": RELATIONSHIP_FIELDS,
          "objections": OBJECTION_FIELDS, "subjects": SUBJECT_FIELDS}
