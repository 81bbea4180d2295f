-- Relays: the URLs Twilio requests for a dialer's calls and messages point at the proxy, which
-- inspects the TwiML it passes on and records the callbacks before passing them on, signed for
-- the dialer.

-- One row per rewritten URL. `id` is the opaque, random part of the relay URL (at least 128
-- bits, url-safe); `decision_id` the call's or message's own decision; `account_sid` the
-- dialer's client, whose token signs what is passed on. A NULL `url` is a status callback the
-- proxy added for itself: the outcome is recorded and nothing is passed on.
CREATE TABLE relay_targets (
    id          text PRIMARY KEY CHECK (length(id) >= 22),
    decision_id bigint NOT NULL REFERENCES decisions (id),
    account_sid text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('twiml', 'callback')),
    field       text NOT NULL,
    url         text CHECK (url IS NOT NULL OR kind = 'callback'),
    method      text NOT NULL CHECK (method IN ('GET', 'POST')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX relay_targets_decision_idx ON relay_targets (decision_id);

-- How a call or message ended, one row per callback Twilio made: decisions are append-only and
-- hash-chained, so what happened afterwards lives beside them, keyed by decision id. No phone
-- number and no message body is kept here.
CREATE TABLE contact_outcomes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_id      bigint NOT NULL REFERENCES decisions (id),
    relay_id         text NOT NULL,
    field            text NOT NULL,     -- which callback: StatusCallback, Number.statusCallback, …
    sid              text,              -- CallSid / MessageSid
    status           text,              -- CallStatus, MessageStatus, RecordingStatus, …
    answered_by      text,              -- AnsweredBy (machine detection)
    duration_seconds integer,           -- CallDuration
    error_code       text,              -- ErrorCode
    received_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX contact_outcomes_decision_idx ON contact_outcomes (decision_id, id);
-- Written once, like decision_outcomes; only the retention prune removes them, with their
-- decisions (decisions_append_only, sql/005).
CREATE TRIGGER contact_outcomes_no_update_delete
    BEFORE UPDATE OR DELETE ON contact_outcomes
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
