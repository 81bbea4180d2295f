-- Who changed what in the registry: one row per mutation (an organisation, sender or client
-- made or changed, a consent, relationship or objection recorded, a withdrawal, a lift, an
-- erasure, an import committed), written in the mutation's own transaction. Append-only.
-- `actor` says who: "admin-api", "cli", "console:<user name>". No event holds a phone number:
-- a subject is named by its one-way hash (an erasure must leave no number behind, N11).
CREATE TABLE registry_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor     text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    action    text NOT NULL CHECK (action ~ '^[a-z][a-z_]{0,31}$'),
    kind      text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    record_id text,
    details   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX registry_events_record_idx ON registry_events (kind, record_id, id);

CREATE FUNCTION registry_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER registry_events_no_update_delete
    BEFORE UPDATE OR DELETE ON registry_events
    FOR EACH ROW EXECUTE FUNCTION registry_events_append_only();
CREATE TRIGGER registry_events_no_truncate
    BEFORE TRUNCATE ON registry_events
    FOR EACH STATEMENT EXECUTE FUNCTION registry_events_append_only();

-- Re-importing a file creates no duplicates: a record may carry the organisation's own id for
-- it (`source_id`), unique per organisation and kind, with a digest of its content
-- (`source_hash`) so that a repeat with the same content is told from one with other content.
ALTER TABLE consents
    ADD COLUMN source_id text CHECK (length(source_id) BETWEEN 1 AND 200),
    ADD COLUMN source_hash text CHECK (source_hash ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX consents_source_id_idx ON consents (organisation_id, source_id)
    WHERE source_id IS NOT NULL;
ALTER TABLE relationships
    ADD COLUMN source_id text CHECK (length(source_id) BETWEEN 1 AND 200),
    ADD COLUMN source_hash text CHECK (source_hash ~ '^[0-9a-f]{64}$');
CREATE UNIQUE INDEX relationships_source_id_idx ON relationships (organisation_id, source_id)
    WHERE source_id IS NOT NULL;
ALTER TABLE objections
    ADD COLUMN source_id text CHECK (length(source_id) BETWEEN 1 AND 200),
    ADD COLUMN source_hash text CHECK (source_hash ~ '^[0-9a-f]{64}$');
-- An objection to every organisation (organisation_id NULL) has its source ids of its own.
CREATE UNIQUE INDEX objections_source_id_idx
    ON objections (coalesce(organisation_id, ''), source_id) WHERE source_id IS NOT NULL;

-- Evidence of a consent worth the name (ACM: demonstrable and tied to the person; in the
-- spirit of ISO/IEC 27560 and the Kantara consent receipt): which text was agreed to (its
-- version and SHA-256), how it was collected, the privacy policy shown, and a reference to
-- the proof itself (a form submission id, a recording id).
ALTER TABLE consents
    ADD COLUMN consent_text_version text CHECK (length(consent_text_version) BETWEEN 1 AND 100),
    ADD COLUMN consent_text_sha256 text CHECK (consent_text_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN collection_method text CHECK (collection_method IN (
        'web_form', 'app', 'phone', 'sms', 'email', 'paper', 'in_person', 'other')),
    ADD COLUMN policy_url text CHECK (policy_url ~ '^https?://'),
    ADD COLUMN evidence_ref text CHECK (length(evidence_ref) BETWEEN 1 AND 200);

-- N11: a person may lift their own objection (by phone, letter, ...): who recorded it and how
-- the person asked. lifted_at (sql/001) is when it stops counting, as for a START (N12).
ALTER TABLE objections
    ADD COLUMN lifted_how text CHECK (lifted_how IN (
        'phone', 'email', 'letter', 'in_person', 'console', 'sms')),
    ADD COLUMN lifted_by text CHECK (length(lifted_by) BETWEEN 1 AND 200),
    ADD COLUMN lifted_note text CHECK (length(lifted_note) <= 1000);
