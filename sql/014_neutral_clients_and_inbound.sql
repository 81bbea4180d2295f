-- Provider-neutral names. A client is a dialer's credentials whatever way in it uses, so it is
-- keyed by `client_id`, not by Twilio's `account_sid`; an inbound message by the provider it
-- came through and that provider's own id, not by Twilio's `message_sid`. Columns are
-- renamed (every row stays as it is), constraints, indexes and the trigger function follow.

-- Clients: the id the admin API issues is still AC + 32 hex digits (the Twilio SDK puts it in
-- its URLs); the schema asks only for a printable id of bounded length.
ALTER TABLE clients RENAME COLUMN account_sid TO client_id;
ALTER TABLE clients DROP CONSTRAINT clients_account_sid_check,
    ADD CONSTRAINT clients_client_id_check CHECK (client_id ~ '^[A-Za-z0-9._-]{1,64}$');

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
-- rewritten (the hashes are checkpointed, sql/010), so decision_row_hash, which `audit
-- verify` recomputes with, reads the rows up to the chain's head at this moment under their
-- old key; later rows are hashed (by the trigger, sql/006) and checked as they are. The
-- rename above holds an exclusive lock on decisions, so no row is written meanwhile.
DO $$
BEGIN
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION decision_row_hash(d decisions, prev text) RETURNS text
        LANGUAGE sql STABLE SET timezone = 'UTC' AS $b$
            SELECT encode(sha256(convert_to(
                (CASE WHEN d.chain_seq <= %s
                      THEN (to_jsonb(d) - 'client_id')
                           || jsonb_build_object('account_sid', d.client_id)
                      ELSE to_jsonb(d) END
                 - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''),
                'UTF8')), 'hex')
        $b$
    $f$, coalesce((SELECT max(chain_seq) FROM decisions), 0));
END;
$$;

-- Inbound messages: keyed by (provider, message_id). Every message so far came through Twilio;
-- new ones name their provider.
ALTER TABLE inbound_messages RENAME COLUMN message_sid TO message_id;
ALTER TABLE inbound_messages ADD COLUMN provider text NOT NULL DEFAULT 'twilio'
    CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$');
ALTER TABLE inbound_messages ALTER COLUMN provider DROP DEFAULT;
ALTER TABLE inbound_messages DROP CONSTRAINT inbound_messages_pkey,
    ADD CONSTRAINT inbound_messages_pkey PRIMARY KEY (provider, message_id);
