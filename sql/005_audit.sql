-- Audit integrity: every decision row carries a hash over its content and the previous row's
-- hash, in commit order. `consent-proxy audit verify` recomputes the chain and names the first
-- row that does not match. Retention (`consent-proxy prune`) removes a prefix of the chain and
-- records where it ended, so the rest still verifies.

ALTER TABLE decisions ADD COLUMN chain_seq bigint, ADD COLUMN prev_hash text,
    ADD COLUMN row_hash text;
CREATE SEQUENCE decision_chain_seq;
CREATE UNIQUE INDEX decisions_chain_seq_idx ON decisions (chain_seq);

-- The canonical content of a row: its jsonb (keys in a fixed order) without the two hash
-- columns, rendered in UTC so the session time zone cannot change it.
CREATE FUNCTION decision_row_hash(d decisions, prev text) RETURNS text
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT encode(sha256(convert_to(
        (to_jsonb(d) - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''),
        'UTF8')), 'hex')
$$;

-- Where pruning cut the chain: the first remaining row must point at the last anchor.
CREATE TABLE audit_anchors (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    through_seq   bigint NOT NULL,
    anchor_hash   text NOT NULL,
    pruned_rows   bigint NOT NULL,
    pruned_before timestamptz NOT NULL,
    pruned_at     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION decisions_chain() RETURNS trigger
LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    prev text;
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
    NEW.row_hash := decision_row_hash(NEW, prev);
    RETURN NEW;
END;
$$;

CREATE TRIGGER decisions_chain BEFORE INSERT ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_chain();

-- Rows from before this migration join the chain in id order.
DO $$
DECLARE
    r record;
    prev text := NULL;
BEGIN
    ALTER TABLE decisions DISABLE TRIGGER decisions_no_update_delete;
    FOR r IN SELECT id FROM decisions ORDER BY id LOOP
        UPDATE decisions SET chain_seq = nextval('decision_chain_seq'), prev_hash = prev
            WHERE id = r.id;
        UPDATE decisions d SET row_hash = decision_row_hash(d, prev) WHERE id = r.id
            RETURNING row_hash INTO prev;
    END LOOP;
    ALTER TABLE decisions ENABLE TRIGGER decisions_no_update_delete;
END;
$$;

ALTER TABLE decisions ALTER COLUMN chain_seq SET NOT NULL,
    ALTER COLUMN row_hash SET NOT NULL;

-- Append-only, except the retention prune: it may delete a prefix of the chain, up to the
-- `consent_proxy.prune_through` it sets for its own transaction.
CREATE OR REPLACE FUNCTION decisions_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    through bigint := nullif(current_setting('consent_proxy.prune_through', true), '')::bigint;
BEGIN
    -- Nested IFs: PL/pgSQL does not short-circuit AND, and OLD differs per table.
    IF TG_OP = 'DELETE' AND through IS NOT NULL THEN
        IF TG_TABLE_NAME = 'decisions' THEN
            IF OLD.chain_seq <= through THEN
                RETURN OLD;
            END IF;
        ELSIF EXISTS (SELECT 1 FROM decisions d
                      WHERE d.id = OLD.decision_id AND d.chain_seq <= through) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
