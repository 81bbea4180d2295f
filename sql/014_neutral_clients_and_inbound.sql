-- Provider-neutral names. A client is a dialer's credentials whatever way in it uses, so it is
-- keyed by `client_id`, not by Twilio's `account_sid`; an inbound message by the provider it
-- came through and that provider's own id, not by Twilio's `message_sid`. Columns are
-- renamed (every row stays as it is), constraints, indexes and the trigger function follow.

-- Clients: the id the admin API issues is still AC + 32 hex digits (the Twilio SDK puts it in
-- its URLs); the schema asks only for a printable id of bounded length.
ALTER TABLE clients RENAME COLUMN account_sid TO client_id;
ALTER TABLE clients DROP CONSTRAINT clients_account_sid_check,
    ADD CONSTRAINT clients_client_id_check CHECK (client_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');

ALTER TABLE client_organisations RENAME COLUMN account_sid TO client_id;
ALTER TABLE client_organisations
    RENAME CONSTRAINT client_organisations_account_sid_fkey TO client_organisations_client_id_fkey;

ALTER TABLE idempotency_keys RENAME COLUMN account_sid TO client_id;
ALTER TABLE idempotency_keys
    RENAME CONSTRAINT idempotency_keys_account_sid_fkey TO idempotency_keys_client_id_fkey;

ALTER TABLE dial_attempts RENAME COLUMN account_sid TO client_id;
ALTER TABLE dial_attempts
    RENAME CONSTRAINT dial_attempts_account_sid_fkey TO dial_attempts_client_id_fkey;

ALTER TABLE relay_targets RENAME COLUMN account_sid TO client_id;

ALTER TABLE decisions RENAME COLUMN account_sid TO client_id;
ALTER INDEX decisions_account_sid_idx RENAME TO decisions_client_id_idx;

-- sql/009's trigger function names the column; the payload is the client id.
CREATE OR REPLACE FUNCTION clients_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('consent_proxy_clients', OLD.client_id);
    ELSE
        PERFORM pg_notify('consent_proxy_clients', NEW.client_id);
    END IF;
    RETURN NULL;
END;
$$;

-- The audit chain (sql/005) hashes a decision row's jsonb, column names included. A row
-- hashed before this migration was hashed with the key `account_sid`, and decisions are never
-- rewritten (the hashes are checkpointed, sql/010). So decision_row_hash, which `audit verify`
-- recomputes with, gives the row's hash under its present column names when that is what the
-- row holds, and otherwise its hash under the old key. It is a function of the row alone (no
-- boundary read at migration time, which a snapshot or a copy into another database would
-- get wrong); passing still takes a SHA-256 preimage of one of the two renderings, and as no
-- column is named `account_sid` any more, the two never coincide. New rows are hashed by the
-- trigger (sql/006) under the present names.
CREATE OR REPLACE FUNCTION decision_row_hash(d decisions, prev text) RETURNS text
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT CASE WHEN h.present = d.row_hash THEN h.present ELSE encode(sha256(convert_to(
               (((to_jsonb(d) - 'client_id') || jsonb_build_object('account_sid', d.client_id))
                - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''), 'UTF8')), 'hex')
           END
    FROM (SELECT encode(sha256(convert_to(
              (to_jsonb(d) - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''),
              'UTF8')), 'hex') AS present) h
$$;

-- An objection made by a provider's message or call names that provider beside the
-- provider's own id, so two providers' ids never collide; every such objection so far came
-- through Twilio. Ones recorded through the admin API name no provider.
ALTER TABLE objections ADD COLUMN source_provider text
    CHECK (source_provider ~ '^[a-z][a-z0-9_-]{0,31}$');
UPDATE objections SET source_provider = 'twilio'
    WHERE source_ref IS NOT NULL AND via IN ('sms', 'ivr');
DROP INDEX objections_source_ref_idx;
CREATE UNIQUE INDEX objections_source_ref_idx
    ON objections (coalesce(source_provider, ''), source_ref) WHERE source_ref IS NOT NULL;

-- Inbound messages: keyed by (provider, message_id). Every message so far came through Twilio;
-- new ones name their provider.
ALTER TABLE inbound_messages RENAME COLUMN message_sid TO message_id;
ALTER TABLE inbound_messages ADD COLUMN provider text NOT NULL DEFAULT 'twilio'
    CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$');
ALTER TABLE inbound_messages ALTER COLUMN provider DROP DEFAULT;
ALTER TABLE inbound_messages DROP CONSTRAINT inbound_messages_pkey,
    ADD CONSTRAINT inbound_messages_pkey PRIMARY KEY (provider, message_id);
