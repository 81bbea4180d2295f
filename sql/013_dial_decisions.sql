-- Dial-time decisions (proxy/dial/): a SIP dialer asks the gate before it places a call.

-- One row per (client, call_id): the SIP Call-ID or the dialer's attempt id. A retransmitted
-- INVITE asks again with the same call_id and gets the first answer, without a second
-- decision. The row is claimed (inserted) before deciding, so of two identical requests at
-- once only one decides; `answer` is NULL while that decision is being made. After 24 hours
-- a call_id may be used again (the claim takes the row over).
CREATE TABLE dial_attempts (
    account_sid  text NOT NULL REFERENCES clients (account_sid) ON DELETE CASCADE,
    call_id      text NOT NULL CHECK (length(call_id) BETWEEN 1 AND 256),
    request_hash text NOT NULL,          -- to, from and automated as given
    claimed_at   timestamptz NOT NULL,
    decision_id  bigint REFERENCES decisions (id),
    answer       jsonb,                  -- the decision as answered (no phone number)
    PRIMARY KEY (account_sid, call_id)
);
CREATE INDEX dial_attempts_decision_idx ON dial_attempts (decision_id);

-- How a dial-time attempt ended, as its dialer reports it: one row per decision, written
-- once (a repeated report changes nothing). An attempt that reached nobody gives back what
-- its decision consumed (consumption_reversals, N5/N6).
CREATE TABLE dial_outcomes (
    decision_id bigint PRIMARY KEY REFERENCES decisions (id),
    status      text NOT NULL CHECK (status IN ('answered', 'no_answer', 'busy', 'failed',
                                                'rejected')),
    reported_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Written once; only the retention prune removes them, with their decisions (sql/005).
CREATE TRIGGER dial_outcomes_no_update_delete
    BEFORE UPDATE OR DELETE ON dial_outcomes
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
