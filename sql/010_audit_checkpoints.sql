-- Truncation of the decision log is detectable. The hash chain (005) shows a changed or a
-- removed row in the middle, but not rows removed from its end: nothing else remembered the
-- head. Checkpoints do: the head's chain_seq and row_hash, taken every minute by every running
-- proxy, at its stop and by `consent-proxy audit checkpoint`, each with an HMAC-SHA256 keyed
-- from PROXY_SECRET over seq, hash and time, and each also written to the log (a copy outside
-- the database). `consent-proxy audit verify` fails when a checkpointed row is gone or changed,
-- or a checkpoint's MAC does not verify. Several proxies may checkpoint at once: rows only.
CREATE TABLE audit_checkpoints (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_seq bigint NOT NULL,
    row_hash  text NOT NULL,
    taken_at  timestamptz NOT NULL,
    mac       text NOT NULL,
    source    text NOT NULL CHECK (source IN ('timer', 'stop', 'cli'))
);
CREATE INDEX audit_checkpoints_chain_seq_idx ON audit_checkpoints (chain_seq);

-- Append-only like the decisions, except the retention prune: it removes the checkpoints of
-- the rows it removes, up to the `consent_proxy.prune_through` it sets for its transaction.
CREATE FUNCTION audit_checkpoints_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    through bigint := nullif(current_setting('consent_proxy.prune_through', true), '')::bigint;
BEGIN
    IF TG_OP = 'DELETE' AND through IS NOT NULL THEN
        IF OLD.chain_seq <= through THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_append_only();
