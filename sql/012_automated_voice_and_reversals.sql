-- N2: automated voice (pre-recorded / AI agent, no human) is a channel of its own. Consents and
-- objection scopes may name `automated_voice` beside `voice`, `sms` and `email`. Existing rows
-- keep their channel: a `voice` consent stays a consent to be called by a person, and no
-- longer covers a call from an automated sender; a `voice` objection keeps covering every
-- call, automated ones included.
ALTER TABLE consents DROP CONSTRAINT consents_channel_check,
    ADD CONSTRAINT consents_channel_check
        CHECK (channel IN ('voice', 'automated_voice', 'sms', 'email'));
ALTER TABLE objections DROP CONSTRAINT objections_channel_check,
    ADD CONSTRAINT objections_channel_check
        CHECK (channel IN ('voice', 'automated_voice', 'sms', 'email'));

-- N5: the decision whose call set first_used_at, so that a call that never connected can be
-- undone (a request's consumer is decisions.consumed_consent_id). Calls made before this
-- migration are found by the decision that allowed them at that instant.
ALTER TABLE consents ADD COLUMN first_used_by bigint;
UPDATE consents c SET first_used_by = (
    SELECT d.id FROM decisions d
    WHERE d.decided_at = c.first_used_at AND d.decision = 'allow' AND d.basis = 'CONSENT'
      AND d.channel = 'voice'
      AND d.evidence @> jsonb_build_array(jsonb_build_object('type', 'consent', 'id', c.id))
    ORDER BY d.id LIMIT 1)
WHERE c.first_used_at IS NOT NULL;
CREATE INDEX consents_first_used_by_idx ON consents (first_used_by)
    WHERE first_used_by IS NOT NULL;

-- N5/N6: consumption follows the call, not the attempt. When the provider refused a request or
-- could not be reached (nothing was sent), or the call's status says nobody was reached, what
-- its decision consumed is given back: the contact request is usable again, the consent's
-- first call counts as not made. One row per decision, written once, in the transaction that
-- gives it back; decisions stay as they were decided.
CREATE TABLE consumption_reversals (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_id          bigint NOT NULL UNIQUE REFERENCES decisions (id),
    request_id           bigint,        -- the contact request made usable again (N6)
    first_use_consent_id bigint,        -- the consent whose first call was undone (N5)
    why                  text NOT NULL CHECK (why IN ('provider_refused', 'provider_unreachable',
                                                      'not_sent', 'not_reached')),
    detail               text,          -- e.g. "upstream 400", CallStatus "no-answer"
    reversed_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (request_id IS NOT NULL OR first_use_consent_id IS NOT NULL)
);
-- Written once; only the retention prune removes them, with their decisions (sql/005).
CREATE TRIGGER consumption_reversals_no_update_delete
    BEFORE UPDATE OR DELETE ON consumption_reversals
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
