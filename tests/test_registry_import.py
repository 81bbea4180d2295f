"""Bulk import and export of the registry (POST /admin/v1/imports, GET /admin/v1/exports,
proxy/imports/) against a real PostgreSQL: every kind, dry run and commit, bad rows, all or
nothing, re-import, upsert, NDJSON, an export re-imported, and a 100,000-row file."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from proxy import imports
from proxy.phone import subject_hash
from tests.conftest import AMS, BULK_PREFIX, REPO, mobile, uid

A = "/admin/v1"
NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=AMS)
TEXT_SHA = hashlib.sha256(b"Ja, bel mij over energie.").hexdigest()


async def make_org(client: Any, auth: dict[str, str]) -> str:
    org = uid()
    resp = await client.post(f"{A}/organisations", headers=auth,
                             json={"id": org, "name": "Energie BV", "sector": "commercial"})
    assert resp.status == 201, await resp.text()
    return org


def consents_csv(org: str, rows: list[tuple[str, str]], **extra: str) -> str:
    """(source_id, number) rows as a consents CSV with evidence columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["source_id", "subject", "organisation", "channel", "topics", "kind",
              "given_at", "verified_at", "provenance", "consent_text_version",
              "consent_text_sha256", "collection_method", "policy_url", "evidence_ref",
              "evidence.form", *extra]
    writer.writerow(header)
    for source_id, number in rows:
        writer.writerow([source_id, number, org, "voice", "energy;energy/gas", "opt_in",
                         "2026-10-01T12:00:00+02:00", "2026-10-01T12:05:00+02:00",
                         "self_provided", "v3", TEXT_SHA, "web_form",
                         "https://energie-bv.example/privacy", f"sub-{source_id}",
                         "bel-mij", *extra.values()])
    return out.getvalue()


async def post_import(client: Any, auth: dict[str, str], kind: str, body: str | bytes,
                      content_type: str = "text/csv", **params: str) -> tuple[int, Any]:
    resp = await client.post(f"{A}/imports", params={"kind": kind, **params}, data=body,
                             headers={**auth, "Content-Type": content_type})
    return resp.status, await resp.json()


async def consent_rows(pool: asyncpg.Pool, org: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT * FROM consents WHERE organisation_id = $1 ORDER BY source_id", org)
    return rows


# --- consents: commit, evidence, re-import, upsert -------------------------------------------

async def test_consent_import_commits_every_row_with_its_evidence(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    numbers = [mobile() for _ in range(3)]
    body = consents_csv(org, [(f"crm-{i}", n) for i, n in enumerate(numbers)])
    status, report = await post_import(client, auth, "consents", body)
    assert status == 200, report
    assert report == {"kind": "consents", "format": "csv", "mode": "insert", "dry_run": False,
                      "committed": True, "rows": 3, "inserted": 3, "updated": 0,
                      "skipped": 0, "errors": 0, "errors_listed": []}
    rows = await consent_rows(pool, org)
    assert [r["subject"] for r in rows] == numbers
    first = rows[0]
    assert first["topics"] == ["energy", "energy/gas"]
    assert first["consent_text_version"] == "v3"
    assert first["consent_text_sha256"] == TEXT_SHA
    assert first["collection_method"] == "web_form"
    assert first["policy_url"] == "https://energie-bv.example/privacy"
    assert first["evidence_ref"] == "sub-crm-0"
    assert first["evidence"] == {"form": "bel-mij"}
    # the evidence shows up in the evidence report
    resp = await client.get(f"{A}/subjects/{numbers[0]}/evidence", headers=auth)
    assert resp.status == 200
    (held,) = (await resp.json())["consents"]
    assert held["consent_text_sha256"] == TEXT_SHA
    assert held["evidence_ref"] == "sub-crm-0"
    assert held["collection_method"] == "web_form"
    # one event for the import, naming who
    event = await pool.fetchrow(
        """SELECT * FROM registry_events WHERE action = 'import' AND kind = 'consent'
           ORDER BY id DESC LIMIT 1""")
    assert event["actor"] == "admin-api"
    assert event["details"]["inserted"] == 3


async def test_dry_run_reports_and_changes_nothing(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    body = consents_csv(org, [("a", mobile()), ("b", mobile())])
    events = await pool.fetchval("SELECT count(*) FROM registry_events")
    status, report = await post_import(client, auth, "consents", body, dry_run="true")
    assert status == 200
    assert (report["dry_run"], report["committed"], report["inserted"]) == (True, False, 2)
    assert await consent_rows(pool, org) == []
    assert await pool.fetchval("SELECT count(*) FROM registry_events") == events


async def test_one_bad_row_changes_nothing_and_names_line_field_and_message(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    rows = [(f"r{i}", mobile()) for i in range(5)]
    rows[3] = ("r3", "06-123")  # line 5: the header is line 1
    before = await pool.fetchval("SELECT count(*) FROM subjects")
    status, answer = await post_import(client, auth, "consents", consents_csv(org, rows))
    assert status == 422
    assert answer["error"] == "1 rows are wrong; nothing was imported"
    report = answer["report"]
    assert report["committed"] is False
    assert report["errors"] == 1
    assert report["errors_listed"] == [
        {"line": 5, "field": "subject", "message": "not a valid phone number"}]
    assert await consent_rows(pool, org) == []
    assert await pool.fetchval("SELECT count(*) FROM subjects") == before
    # the same errors as CSV
    resp = await client.post(f"{A}/imports", params={"kind": "consents"},
                             data=consents_csv(org, rows),
                             headers={**auth, "Content-Type": "text/csv", "Accept": "text/csv"})
    assert resp.status == 422
    assert await resp.text() == "line,field,message\n5,subject,not a valid phone number\n"


async def test_rows_are_judged_like_the_single_record_api(
        client: Any, auth: dict[str, str]) -> None:
    """Each refusal of POST /consents is the same field and message as an import row."""
    org = await make_org(client, auth)
    number = mobile()
    cases = [
        ({"given_at": "2026-10-01T12:00:00"}, "given_at"),
        ({"given_at": "2027-10-01T12:00:00+02:00"}, "given_at"),
        ({"channel": "fax"}, "channel"),
        ({"topics": "Energy"}, "topics[0]"),
        ({"consent_text_sha256": "ABC"}, "consent_text_sha256"),
        ({"collection_method": "telepathy"}, "collection_method"),
        ({"policy_url": "ftp://x"}, "policy_url"),
        ({"organisation": "no-such-org"}, "organisation"),
    ]
    for change, field in cases:
        single = {"subject": number, "organisation": org, "channel": "voice",
                  "topics": ["energy"], "kind": "opt_in",
                  "given_at": "2026-10-01T12:00:00+02:00", "provenance": "self_provided"}
        row = {**single, "topics": "energy"}
        single.update({k: ([v] if k == "topics" else v) for k, v in change.items()})
        row.update(change)
        resp = await client.post(f"{A}/consents", json=single, headers=auth)
        refused = await resp.json()
        assert resp.status in (404, 422), refused
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
        status, answer = await post_import(client, auth, "consents", out.getvalue())
        assert status == 422, answer
        (listed,) = answer["report"]["errors_listed"]
        assert (listed["field"], listed["message"]) == (field, refused["error"]), change
        assert refused["field"] == field


async def test_reimport_skips_and_different_content_is_an_error_or_an_upsert(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    rows = [("x1", mobile()), ("x2", mobile())]
    body = consents_csv(org, rows)
    assert (await post_import(client, auth, "consents", body))[0] == 200
    status, report = await post_import(client, auth, "consents", body)
    assert status == 200
    assert (report["inserted"], report["skipped"]) == (0, 2)
    assert len(await consent_rows(pool, org)) == 2
    # x2 now names another number: refused in insert mode, nothing changes
    changed = consents_csv(org, [rows[0], ("x2", mobile())])
    status, answer = await post_import(client, auth, "consents", changed)
    assert status == 422
    assert answer["report"]["errors_listed"] == [
        {"line": 3, "field": "source_id",
         "message": "this source_id is on file with different content (mode=upsert "
                    "replaces it)"}]
    assert [r["subject"] for r in await consent_rows(pool, org)] == [n for _, n in rows]
    # mode=upsert replaces it, and records the update as its own event
    status, report = await post_import(client, auth, "consents", changed, mode="upsert")
    assert status == 200, report
    assert (report["inserted"], report["updated"], report["skipped"]) == (0, 1, 1)
    held = await consent_rows(pool, org)
    assert held[1]["subject"] != rows[1][1]
    event = await pool.fetchrow(
        """SELECT * FROM registry_events WHERE kind = 'consent' AND action = 'update'
             AND record_id = $1""", str(held[1]["id"]))
    assert event["details"] == {"source_id": "x2", "import_line": 3}
    assert event["actor"] == "admin-api"


async def test_a_source_id_repeated_within_the_file(client: Any, auth: dict[str, str],
                                                   pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    number = mobile()
    same = consents_csv(org, [("d", number), ("d", number)])
    status, report = await post_import(client, auth, "consents", same)
    assert status == 200
    assert (report["inserted"], report["skipped"]) == (1, 1)
    other = consents_csv(org, [("e", number), ("e", mobile())])
    status, answer = await post_import(client, auth, "consents", other)
    assert status == 422
    assert answer["report"]["errors_listed"] == [
        {"line": 3, "field": "source_id",
         "message": "repeats the source_id of line 2 with different content"}]


async def test_single_record_api_takes_a_source_id_too(client: Any, auth: dict[str, str]
                                                       ) -> None:
    org = await make_org(client, auth)
    body = {"subject": mobile(), "organisation": org, "channel": "sms", "topics": ["energy"],
            "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00",
            "provenance": "self_provided", "source_id": "web-1"}
    assert (await client.post(f"{A}/consents", json=body, headers=auth)).status == 201
    resp = await client.post(f"{A}/consents", json=body, headers=auth)
    assert resp.status == 409
    assert (await resp.json())["field"] == "source_id"


# --- the other kinds, NDJSON --------------------------------------------------------------------

async def test_relationships_objections_and_subjects_import(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    a, b = mobile(), mobile()
    rel = ("source_id,subject,organisation,kind,topics,started_at,provenance,"
           "opt_out_offered,evidence.contract\n"
           f"k1,{a},{org},customer,energy,2024-01-01T00:00:00+01:00,self_provided,true,C-1\n")
    status, report = await post_import(client, auth, "relationships", rel)
    assert status == 200, report
    row = await pool.fetchrow("SELECT * FROM relationships WHERE organisation_id = $1", org)
    assert (row["subject"], row["opt_out_offered"], row["evidence"]) == (a, True,
                                                                          {"contract": "C-1"})
    obj = ("source_id,subject,organisation,channel,received_at,via\n"
           f"o1,{a},{org},sms,2026-11-01T09:00:00+01:00,letter\n"
           f"o2,{b},,,,agent\n")
    status, report = await post_import(client, auth, "objections", obj)
    assert status == 200, report
    held = await pool.fetch(
        "SELECT * FROM objections WHERE source_id IN ('o1', 'o2') AND subject = ANY($1)",
        [a, b])
    by_source = {r["source_id"]: r for r in held}
    assert by_source["o1"]["subject_hash"] == subject_hash(a)
    assert by_source["o2"]["organisation_id"] is None
    assert by_source["o2"]["received_at"] == NOW  # absent: now, as the single-record API
    subj = ("number,kind,published_for_marketing,evidence.kvk\n"
            f"{b},business,false,12345678\n")
    status, report = await post_import(client, auth, "subjects", subj)
    assert status == 200, report
    # b had no subject row yet; a has one (made by the relationship) with other content
    assert (report["inserted"], report["skipped"]) == (1, 0)
    row = await pool.fetchrow("SELECT * FROM subjects WHERE number = $1", b)
    assert (row["kind"], row["evidence"]) == ("business", {"kvk": "12345678"})
    status, answer = await post_import(
        client, auth, "subjects", f"number,kind\n{a},business\n")
    assert status == 422
    assert answer["report"]["errors_listed"][0]["field"] == "number"
    status, report = await post_import(
        client, auth, "subjects", f"number,kind\n{a},business\n", mode="upsert")
    assert (status, report["updated"]) == (200, 1)
    assert await pool.fetchval("SELECT kind FROM subjects WHERE number = $1", a) == "business"


async def test_ndjson_import_with_nested_fields(client: Any, auth: dict[str, str],
                                                pool: asyncpg.Pool) -> None:
    org = await make_org(client, auth)
    number = mobile()
    lines = [
        {"source_id": "n1", "subject": number, "organisation": org, "channel": "voice",
         "topics": ["energy"], "kind": "request", "given_at": "2026-11-01T12:00:00+01:00",
         "requested_for": {"start": "2026-12-01T10:00:00+01:00",
                           "end": "2026-12-01T12:00:00+01:00"},
         "provenance": "self_provided", "evidence": {"call": {"id": 7, "agent": "x"}}},
        "not json",
        [1, 2],
        {"subject": number},
    ]
    body = "\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n\n"
    status, answer = await post_import(client, auth, "consents", body,
                                       content_type="application/x-ndjson")
    assert status == 422
    listed = answer["report"]["errors_listed"]
    assert [(e["line"], e["field"]) for e in listed] == [(2, None), (3, None),
                                                          (4, "kind")]
    status, report = await post_import(client, auth, "consents",
                                       json.dumps(lines[0]) + "\n", format="ndjson")
    assert status == 200, report
    row = (await consent_rows(pool, org))[0]
    assert row["evidence"] == {"call": {"id": 7, "agent": "x"}}
    assert row["requested_start"] == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("body", "field"), [
    ("subject,colour\n", "colour"),
    ("subject,subject\n", None),
    ("", None),
    (b"subject\n\xff\xfe\n", None),
    ('subject\n"0612345678\n', None),
])
async def test_a_bad_file_is_refused_as_a_whole(client: Any, auth: dict[str, str],
                                                body: str | bytes, field: str | None) -> None:
    status, answer = await post_import(client, auth, "consents", body)
    assert status == 422, answer
    assert set(answer) == {"error", "field"}
    assert answer["field"] == field


@pytest.mark.parametrize(("params", "field"), [
    ({"kind": "people"}, "kind"), ({"kind": "consents", "mode": "merge"}, "mode"),
    ({"kind": "consents", "dry_run": "yes"}, "dry_run"), ({"kind": "consents", "x": "1"}, "x"),
])
async def test_bad_import_parameters(client: Any, auth: dict[str, str], params: dict[str, str],
                                     field: str) -> None:
    resp = await client.post(f"{A}/imports", params=params, data="subject\n",
                             headers={**auth, "Content-Type": "text/csv"})
    assert resp.status == 422
    assert (await resp.json())["field"] == field


# --- export ---------------------------------------------------------------------------------

async def _export(client: Any, auth: dict[str, str], kind: str, org: str, fmt: str) -> str:
    resp = await client.get(f"{A}/exports", headers=auth,
                            params={"kind": kind, "organisation": org, "format": fmt})
    assert resp.status == 200, await resp.text()
    text: str = await resp.text()
    return text


_CONTENT = ("subject", "channel", "topics", "kind", "given_at", "expires_at", "verified_at",
            "verification", "first_contact_by", "requested_start", "requested_end",
            "provenance", "evidence", "consent_text_version", "consent_text_sha256",
            "collection_method", "policy_url", "evidence_ref", "source_id")


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_an_export_reimports_to_identical_records(
        client: Any, auth: dict[str, str], pool: asyncpg.Pool, fmt: str) -> None:
    org, other = await make_org(client, auth), await make_org(client, auth)
    body = consents_csv(org, [(f"s{i}", mobile()) for i in range(4)])
    assert (await post_import(client, auth, "consents", body))[0] == 200
    # one without a source_id, through the single-record API
    resp = await client.post(f"{A}/consents", headers=auth, json={
        "subject": mobile(), "organisation": org, "channel": "sms", "topics": ["energy"],
        "kind": "request", "given_at": "2026-11-01T12:00:00+01:00", "provenance": "purchased",
        "requested_for": {"start": "2026-12-01T10:00:00+01:00",
                          "end": "2026-12-01T11:00:00+01:00"},
        "expires_at": "2027-01-01T00:00:00+01:00"})
    assert resp.status == 201
    exported = await _export(client, auth, "consents", org, fmt)
    # the same file again into the same organisation: all on file already or (no source_id)
    # new; into another organisation it makes identical records
    status, report = await post_import(client, auth, "consents",
                                       exported.replace(org, other), format=fmt)
    assert status == 200, report
    assert report["inserted"] == 5

    def content(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
        return sorted((tuple(r[c] for c in _CONTENT) for r in rows), key=repr)

    assert content(await consent_rows(pool, other)) == content(await consent_rows(pool, org))
    status, report = await post_import(client, auth, "consents", exported, format=fmt)
    assert (status, report["skipped"], report["inserted"]) == (200, 4, 1)


async def test_export_leaves_out_what_is_no_longer_in_force(
        client: Any, auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    body = consents_csv(org, [("w", mobile()), ("k", mobile())])
    assert (await post_import(client, auth, "consents", body))[0] == 200
    resp = await client.get(f"{A}/consents", params={"organisation": org}, headers=auth)
    withdrawn = (await resp.json())["consents"][0]["id"]
    assert (await client.delete(f"{A}/consents/{withdrawn}", headers=auth)).status == 200
    lines = (await _export(client, auth, "consents", org, "ndjson")).splitlines()
    assert [json.loads(x)["source_id"] for x in lines] == ["k"]


async def test_export_of_every_kind_reimports_cleanly(
        client: Any, auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    number = mobile()
    for kind, body in (
        ("relationships", "source_id,subject,organisation,kind,topics,started_at,provenance,"
                          f"opt_out_offered\nr,{number},{org},donor,charity,"
                          "2024-01-01T00:00:00+01:00,self_provided,false\n"),
        ("objections", f"source_id,subject,organisation,via\no,{number},{org},letter\n"),
        ("subjects", f"number,kind,evidence.kvk\n{number},business,1\n"),
    ):
        status, report = await post_import(client, auth, kind, body, mode="upsert")
        assert status == 200, report
        for fmt in ("csv", "ndjson"):
            exported = await _export(client, auth, kind, org, fmt)
            status, report = await post_import(client, auth, kind, exported, format=fmt)
            assert status == 200, (kind, fmt, report, exported)
            assert (report["rows"], report["skipped"]) == (1, 1), (kind, fmt, exported)


# --- the library functions the console calls ----------------------------------------------------

async def _body(text: str, size: int = 7) -> AsyncIterator[bytes]:
    data = text.encode()
    for i in range(0, len(data), size):  # odd-sized chunks: records cut anywhere
        yield data[i:i + size]


async def test_run_import_reads_records_cut_across_chunks(pool: asyncpg.Pool,
                                                          client: Any, auth: dict[str, str]
                                                          ) -> None:
    org = await make_org(client, auth)
    text = ("source_id,subject,organisation,channel,topics,kind,given_at,provenance,"
            "evidence.note\n"
            f'q,{mobile()},{org},sms,energy,opt_in,2026-10-01T12:00:00+02:00,unknown,'
            '"two\nlines, ""quoted"""\n')
    report = await imports.run_import(pool, kind="consents", body=_body(text), fmt="csv",
                                      dry_run=False, mode="insert", actor="console:anna",
                                      now=NOW)
    assert (report.committed, report.inserted, report.errors) == (True, 1, ())
    row = (await consent_rows(pool, org))[0]
    assert row["evidence"] == {"note": 'two\nlines, "quoted"'}
    event = await pool.fetchrow("""SELECT * FROM registry_events WHERE action = 'import'
                                   AND actor = 'console:anna' ORDER BY id DESC LIMIT 1""")
    assert event is not None
    chunks = [c async for c in imports.export_rows(pool, kind="consents", organisation=org,
                                                   fmt="csv")]
    assert b'"two\nlines, ""quoted"""' in b"".join(chunks)


async def test_errors_are_counted_all_and_listed_up_to_the_cap(pool: asyncpg.Pool) -> None:
    rows = imports.MAX_LISTED_ERRORS + 500
    text = "subject,via\n" + "not-a-number,api\n" * rows
    report = await imports.run_import(pool, kind="objections", body=_body(text, 1 << 16),
                                      fmt="csv", dry_run=False, mode="insert", actor="cli",
                                      now=NOW)
    assert report.error_count == rows
    assert len(report.errors) == imports.MAX_LISTED_ERRORS
    assert report.errors[0] == imports.RowError(2, "subject", "not a valid phone number")
    assert report.errors_csv().count("\n") == imports.MAX_LISTED_ERRORS + 1
    assert not report.committed


async def test_a_hundred_thousand_row_file(pool: asyncpg.Pool, client: Any,
                                           auth: dict[str, str]) -> None:
    """Streamed, staged with COPY in batches, written set-based: seconds, not minutes."""
    org = await make_org(client, auth)
    n = 100_000

    async def body() -> AsyncIterator[bytes]:
        yield (b"source_id,subject,organisation,channel,topics,kind,given_at,provenance\n")
        for start in range(0, n, 10_000):
            yield "".join(
                f"b{i},{BULK_PREFIX}{i:07d},{org},voice,energy,opt_in,2026-10-01T12:00:00+02:00,"
                "self_provided\n" for i in range(start, start + 10_000)).encode()

    report = await imports.run_import(pool, kind="consents", body=body(), fmt="csv",
                                      dry_run=False, mode="insert", actor="cli", now=NOW)
    assert (report.committed, report.rows, report.inserted, report.error_count) == (
        True, n, n, 0)
    assert await pool.fetchval(
        "SELECT count(*) FROM consents WHERE organisation_id = $1", org) == n
    again = await imports.run_import(pool, kind="consents", body=body(), fmt="csv",
                                     dry_run=True, mode="insert", actor="cli", now=NOW)
    assert (again.skipped, again.inserted) == (n, 0)


# --- the command line ---------------------------------------------------------------------------

def _cli(database_url: str, *args: str, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False, env=env, input=stdin)


async def test_cli_import_and_export(client: Any, auth: dict[str, str], pool: asyncpg.Pool,
                                     database_url: str, tmp_path: Path) -> None:
    org = await make_org(client, auth)
    path = tmp_path / "consents.csv"
    path.write_text(consents_csv(org, [("c1", mobile()), ("c2", "0612")]))
    errors = tmp_path / "errors.csv"
    done = await asyncio.to_thread(_cli, database_url, "import", "consents", str(path),
                                   "--errors", str(errors))
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["errors"] == 1
    assert errors.read_text() == "line,field,message\n3,subject,not a valid phone number\n"
    assert await consent_rows(pool, org) == []
    path.write_text(consents_csv(org, [("c1", mobile())]))
    done = await asyncio.to_thread(_cli, database_url, "import", "consents", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inserted"] == 1
    event = await pool.fetchrow("""SELECT actor FROM registry_events WHERE action = 'import'
                                   ORDER BY id DESC LIMIT 1""")
    assert event["actor"] == "cli"
    done = await asyncio.to_thread(_cli, database_url, "export", "consents",
                                   "--organisation", org, "--format", "ndjson")
    assert done.returncode == 0, done.stderr
    exported = done.stdout
    assert json.loads(exported)["source_id"] == "c1"
    done = await asyncio.to_thread(_cli, database_url, "import", "consents", "-",
                                   "--format", "ndjson", "--dry-run", stdin=exported)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["skipped"] == 1
    done = await asyncio.to_thread(_cli, database_url, "import", "consents",
                                   str(tmp_path / "missing.csv"))
    assert done.returncode == 2


async def test_evidence_that_is_no_text_is_exported_as_json_in_csv(
        client: Any, auth: dict[str, str]) -> None:
    org = await make_org(client, auth)
    resp = await client.post(f"{A}/consents", headers=auth, json={
        "subject": mobile(), "organisation": org, "channel": "sms", "topics": ["a", "b/c"],
        "kind": "opt_in", "given_at": "2026-10-01T12:00:00+02:00", "provenance": "unknown",
        "evidence": {"ids": [1, 2], "ok": True, "n": 3, "text": "x"}})
    assert resp.status == 201
    rows = list(csv.DictReader(io.StringIO(await _export(client, auth, "consents", org, "csv"))))
    assert [(r["topics"], r["evidence.ids"], r["evidence.ok"], r["evidence.n"],
             r["evidence.text"]) for r in rows] == [("a;b/c", "[1, 2]", "true", "3", "x")]
