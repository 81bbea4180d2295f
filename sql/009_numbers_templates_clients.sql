-- N17: an organisation may declare that its content templates (Twilio ContentSid) carry its
-- opt-out line; without that, a marketing SMS sent as a template is refused.
ALTER TABLE organisations
    ADD COLUMN content_templates_carry_opt_out boolean NOT NULL DEFAULT false;

-- Client lifecycle: a disabled client is refused on every route, and its token no longer signs
-- relayed webhooks. Rotation bumps token_version (the token is derived from it).
ALTER TABLE clients
    ADD COLUMN enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN disabled_at timestamptz,
    ADD CONSTRAINT clients_disabled_at_check CHECK (enabled = (disabled_at IS NULL));

-- Every gate caches clients briefly; a change to a client (rotation, disabling, its
-- organisations, also one made by hand in SQL) is announced on this channel with its
-- account_sid, from the changing transaction, so each gate drops it at once on commit.
CREATE FUNCTION clients_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('consent_proxy_clients', OLD.account_sid);
    ELSE
        PERFORM pg_notify('consent_proxy_clients', NEW.account_sid);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER clients_notify
    AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION clients_notify();
CREATE TRIGGER client_organisations_notify
    AFTER INSERT OR UPDATE OR DELETE ON client_organisations
    FOR EACH ROW EXECUTE FUNCTION clients_notify();
