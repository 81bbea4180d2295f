"""What differs between the kinds an import or export handles: the staging table's columns,
a parsed record as a staged row, how a staged row finds the record it repeats, and the
set-based statements that insert and update from the staging table. Everything else is one
procedure for all kinds (proxy/imports/run.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy import records
from proxy.phone import subject_hash
from proxy.store.registry import (
    ConsentIn,
    ObjectionIn,
    Record,
    RelationshipIn,
    SubjectIn,
    content_hash,
)

STAGE = "import_stage"  # one batch of rows at a time
SEEN = "import_seen"  # the first line of each key (organisation, source_id) in the file
# Every staged row: its line, its key (organisation, source_id; a subject's is its number),
# the digest of its content, and what the import will do with it.
_COMMON = (("line", "integer"), ("key_org", "text"), ("source_id", "text"),
           ("source_hash", "text"), ("target_id", "bigint"),
           ("action", "text NOT NULL DEFAULT 'insert'"), ("error_field", "text"),
           ("error_message", "text"))
_COPIED = ("line", "key_org", "source_id", "source_hash")


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # as in ?kind=: consents, relationships, objections, subjects
    singular: str  # as in registry_events.kind
    table: str
    columns: tuple[tuple[str, str], ...]  # content columns, named as in `table`
    staged: Callable[[Any, int], tuple[Any, ...]]  # (record, line) -> the copied values
    match: str  # joins STAGE s to `table` t: the record a staged row repeats
    existing_hash: str  # the digest of t's content, in SQL
    key_field: str  # the field a repeat's error names
    has_subject: bool  # rows name a subject that must exist (sql/001 foreign key)
    organisation_required: bool
    # The SQL of a record's organisation as its key names it (objections: '' for every
    # organisation); None: the kind belongs to no organisation (subjects).
    organisation_key: str | None

    def organisations(self, batch: list[tuple[Any, ...]]) -> set[str]:
        """The organisations a staged batch names (key_org, the second value)."""
        return {row[1] for row in batch} if self.organisation_key is not None else set()

    @property
    def fields(self) -> tuple[str, ...]:
        return records.FIELDS[self.name]

    def parse(self, data: Any, now: Any) -> Record:
        return records.PARSERS[self.name](data, now)

    def stage_ddl(self) -> list[str]:
        cols = ", ".join(f"{name} {kind}" for name, kind in (*_COMMON, *self.columns))
        return [f"CREATE TEMP TABLE {STAGE} ({cols}) ON COMMIT DROP",
                f"""CREATE TEMP TABLE {SEEN} (key_org text, source_id text, line integer,
                        source_hash text, PRIMARY KEY (key_org, source_id)) ON COMMIT DROP"""]

    @property
    def copy_columns(self) -> list[str]:
        return [*_COPIED, *(name for name, _ in self.columns)]

    def insert_sql(self) -> str:
        cols = ", ".join(name for name, _ in self.columns)
        extra = "" if self.name == "subjects" else ", source_id, source_hash"
        return (f"INSERT INTO {self.table} ({cols}{extra}) SELECT {cols}{extra} FROM {STAGE} "
                "WHERE action = 'insert'")

    def keyed_before_sql(self) -> str:
        """Of the organisations in $1, those already holding a record of this kind with a
        source_id (an index probe each)."""
        return (f"""SELECT k FROM unnest($1::text[]) AS k WHERE EXISTS (
                        SELECT 1 FROM {self.table} t
                        WHERE {self.organisation_key} = k AND t.source_id IS NOT NULL)""")

    def update_sql(self) -> str:
        """Upserted rows replace the content of the records they repeat; each update is
        recorded as its own event ($1: the actor)."""
        sets = ", ".join(f"{name} = s.{name}" for name, _ in self.columns)
        if self.name == "subjects":
            return (f"""WITH u AS (UPDATE subjects t SET {sets}, updated_at = now()
                        FROM {STAGE} s WHERE s.action = 'update' AND t.number = s.number
                        RETURNING s.key_org AS record_id, s.line)
                    INSERT INTO registry_events (actor, action, kind, record_id, details)
                    SELECT $1, 'update', 'subject', record_id,
                           jsonb_build_object('import_line', line) FROM u ORDER BY line""")
        return (f"""WITH u AS (UPDATE {self.table} t SET {sets}, source_hash = s.source_hash
                    FROM {STAGE} s WHERE s.action = 'update' AND t.id = s.target_id
                    RETURNING t.id, s.source_id, s.line)
                INSERT INTO registry_events (actor, action, kind, record_id, details)
                SELECT $1, 'update', '{self.singular}', id::text,
                       jsonb_build_object('source_id', source_id, 'import_line', line)
                FROM u ORDER BY line""")


def _consent(c: ConsentIn, line: int) -> tuple[Any, ...]:
    return (line, c.organisation, c.source_id, _digest(c), c.subject, c.organisation,
            c.channel, list(c.topics), c.kind, c.given_at, c.expires_at, c.verified_at,
            c.verification, c.first_contact_by, c.requested_start, c.requested_end,
            c.provenance, c.evidence, c.consent_text_version, c.consent_text_sha256,
            c.collection_method, c.policy_url, c.evidence_ref)


def _relationship(r: RelationshipIn, line: int) -> tuple[Any, ...]:
    return (line, r.organisation, r.source_id, _digest(r), r.subject, r.organisation, r.kind,
            list(r.topics), r.started_at, r.ended_at, r.provenance, r.opt_out_offered,
            r.evidence)


def _objection(o: ObjectionIn, line: int) -> tuple[Any, ...]:
    return (line, o.organisation or "", o.source_id, _digest(o), subject_hash(o.subject),
            o.subject, o.organisation, o.channel, o.received_at, o.via)


def _subject(s: SubjectIn, line: int) -> tuple[Any, ...]:
    # A subject's key is its number; its events name it by the one-way hash (key_org).
    return (line, subject_hash(s.number), s.number, content_hash(s), s.number, s.kind,
            s.published_for_marketing, s.evidence)


def _digest(record: ConsentIn | RelationshipIn | ObjectionIn) -> str | None:
    return None if record.source_id is None else content_hash(record)



KINDS: dict[str, Kind] = {
    "consents": Kind(
        "consents", "consent", "consents",
        (("subject", "text"), ("organisation_id", "text"), ("channel", "text"),
         ("topics", "text[]"), ("kind", "text"), ("given_at", "timestamptz"),
         ("expires_at", "timestamptz"), ("verified_at", "timestamptz"),
         ("verification", "text"), ("first_contact_by", "timestamptz"),
         ("requested_start", "timestamptz"), ("requested_end", "timestamptz"),
         ("provenance", "text"), ("evidence", "jsonb"), ("consent_text_version", "text"),
         ("consent_text_sha256", "text"), ("collection_method", "text"),
         ("policy_url", "text"), ("evidence_ref", "text")),
        _consent, "t.organisation_id = s.key_org AND t.source_id = s.source_id",
        "t.source_hash", "source_id", has_subject=True, organisation_required=True,
        organisation_key="t.organisation_id"),
    "relationships": Kind(
        "relationships", "relationship", "relationships",
        (("subject", "text"), ("organisation_id", "text"), ("kind", "text"),
         ("topics", "text[]"), ("started_at", "timestamptz"), ("ended_at", "timestamptz"),
         ("provenance", "text"), ("opt_out_offered", "boolean"), ("evidence", "jsonb")),
        _relationship, "t.organisation_id = s.key_org AND t.source_id = s.source_id",
        "t.source_hash", "source_id", has_subject=True, organisation_required=True,
        organisation_key="t.organisation_id"),
    "objections": Kind(
        "objections", "objection", "objections",
        (("subject_hash", "text"), ("subject", "text"), ("organisation_id", "text"),
         ("channel", "text"), ("received_at", "timestamptz"), ("via", "text")),
        _objection,
        "coalesce(t.organisation_id, '') = s.key_org AND t.source_id = s.source_id",
        "t.source_hash", "source_id", has_subject=False, organisation_required=False,
        organisation_key="coalesce(t.organisation_id, '')"),
    "subjects": Kind(
        "subjects", "subject", "subjects",
        (("number", "text"), ("kind", "text"), ("published_for_marketing", "boolean"),
         ("evidence", "jsonb")),
        _subject, "t.number = s.number",
        # the same content: the staged digest itself, else anything that differs from it
        "CASE WHEN (t.kind, t.published_for_marketing, t.evidence) = "
        "(s.kind, s.published_for_marketing, s.evidence) THEN s.source_hash END",
        "number", has_subject=False, organisation_required=False, organisation_key=None),
}
