-- A decision row names the way in it came through: a provider's front (`twilio`, `telnyx`,
-- `cm`, `vonage`, …) or a dial-time check (`dial`, `fastagi`). Rows decided before this
-- migration name none (NULL); they came through the Twilio front or the dial-time checks.
ALTER TABLE decisions ADD COLUMN front text CHECK (front ~ '^[a-z][a-z0-9_-]{0,31}$');
CREATE INDEX decisions_front_idx ON decisions (front, decided_at) WHERE front IS NOT NULL;

-- The audit chain hashes a row's jsonb, column names included (sql/005, sql/014), and rows are
-- never rewritten. A row from before this migration was hashed without a `front` key, and
-- to_jsonb() of it now holds `"front": null`: so a row whose front is NULL is hashed without
-- the key, exactly as it was, and a row that names its front with it. The same expression is
-- in the chain trigger (sql/006) and in decision_row_hash, which `audit verify` recomputes with.
CREATE OR REPLACE FUNCTION decision_row_hash(d decisions, prev text) RETURNS text
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT CASE WHEN h.present = d.row_hash THEN h.present ELSE encode(sha256(convert_to(
               (((h.j - 'client_id') || jsonb_build_object('account_sid', d.client_id))
                - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''), 'UTF8')), 'hex')
           END
    FROM (SELECT j, encode(sha256(convert_to(
              (j - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''),
              'UTF8')), 'hex') AS present
          FROM (SELECT CASE WHEN d.front IS NULL THEN to_jsonb(d) - 'front'
                            ELSE to_jsonb(d) END AS j) AS r) h
$$;

CREATE OR REPLACE FUNCTION decisions_chain() RETURNS trigger
LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    prev text;
    j jsonb;
BEGIN
    -- One chain across every instance: the lock is held until this transaction commits, so
    -- chain order is commit order. Group commit keeps it to one lock per batch.
    PERFORM pg_advisory_xact_lock(7364915280331627601);
    SELECT row_hash INTO prev FROM decisions ORDER BY chain_seq DESC LIMIT 1;
    IF prev IS NULL THEN
        SELECT anchor_hash INTO prev FROM audit_anchors ORDER BY id DESC LIMIT 1;
    END IF;
    NEW.chain_seq := nextval('decision_chain_seq');
    NEW.prev_hash := prev;
    -- = decision_row_hash(NEW, prev) (above)
    j := to_jsonb(NEW) - 'row_hash' - 'prev_hash';
    IF NEW.front IS NULL THEN
        j := j - 'front';
    END IF;
    NEW.row_hash := encode(sha256(convert_to(j::text || '|' || coalesce(prev, ''), 'UTF8')),
                           'hex');
    RETURN NEW;
END;
$$;
