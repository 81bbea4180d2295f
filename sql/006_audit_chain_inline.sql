-- The chain trigger computes the row hash itself instead of calling decision_row_hash().
-- That SQL function is planned afresh in every transaction that calls it from PL/pgSQL,
-- which made it the dearest part of a small group-commit batch. The expression is the same
-- as decision_row_hash's, so every hash is unchanged; `audit verify` still recomputes with
-- decision_row_hash(), and the tests check that both agree.

CREATE OR REPLACE FUNCTION decisions_chain() RETURNS trigger
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
    -- = decision_row_hash(NEW, prev) (sql/005_audit.sql)
    NEW.row_hash := encode(sha256(convert_to(
        (to_jsonb(NEW) - 'row_hash' - 'prev_hash')::text || '|' || coalesce(prev, ''),
        'UTF8')), 'hex');
    RETURN NEW;
END;
$$;
