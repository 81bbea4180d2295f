-- The opt-out loop: every inbound SMS handled, once (Twilio retries with the same MessageSid).
CREATE TABLE inbound_messages (
    message_sid     text PRIMARY KEY,
    received_at     timestamptz NOT NULL,
    sender          text,                 -- our number the message was sent to
    organisation_id text,
    subject_hash    text,
    subject_masked  text,
    intent          text NOT NULL CHECK (intent IN ('stop', 'start', 'help', 'other')),
    body_hash       text NOT NULL,        -- evidence without keeping the text (N12)
    objection_id    bigint REFERENCES objections (id),
    lifted          integer NOT NULL DEFAULT 0,   -- START: objections lifted by this message
    reply           text,                 -- the TwiML answered; replayed on retries
    relay_status    integer
);
CREATE INDEX inbound_messages_subject_idx ON inbound_messages (subject_hash);
