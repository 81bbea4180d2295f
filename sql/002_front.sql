-- The Twilio front: idempotency tokens and lookups by upstream SID.

-- I-Twilio-Idempotency-Token: a repeated token from the same client within 24 hours gets the
-- first response again, without forwarding (a retried dial would be a second call).
CREATE TABLE idempotency_keys (
    account_sid   text NOT NULL REFERENCES clients (account_sid) ON DELETE CASCADE,
    token         text NOT NULL CHECK (length(token) BETWEEN 1 AND 256),
    request_hash  text NOT NULL,
    decision_id   bigint REFERENCES decisions (id),
    created_at    timestamptz NOT NULL,
    status        integer,              -- NULL while the first request is still in flight
    response      bytea,
    content_type  text,
    PRIMARY KEY (account_sid, token)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Pass-through requests may only touch calls and messages the client itself created.
CREATE INDEX decision_outcomes_upstream_sid_idx ON decision_outcomes (upstream_sid)
    WHERE upstream_sid IS NOT NULL;
CREATE INDEX decisions_account_sid_idx ON decisions (account_sid, id);

-- A consumed contact request is linked from the decision that used it (N6), written in the
-- same statement as the decision itself.
ALTER TABLE decisions ADD COLUMN consumed_consent_id bigint;
ALTER TABLE consents DROP COLUMN consumed_by;
