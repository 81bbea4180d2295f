-- consent-proxy schema, version 1.
-- Every fact the Dutch rule pack (nl-rules N1-N17) reads has a column here.
-- Phone numbers are E.164 text. Objections and decisions key the number by a one-way
-- hash (subject_hash) so that erasing a subject keeps the number blocked (N11) and the
-- append-only decision log never holds a full number.

CREATE TABLE organisations (
    id                   text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    sector               text NOT NULL CHECK (sector IN ('commercial', 'charity', 'lottery', 'press')),
    customer_term_months integer NOT NULL DEFAULT 36 CHECK (customer_term_months BETWEEN 0 AND 240), -- N7
    sms_footer           text CHECK (length(sms_footer) <= 300),      -- N12/N17, NULL: default text
    stop_reply           text CHECK (length(stop_reply) <= 600),      -- N12, NULL: default text
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- N16: a caller ID / SMS sender belongs to exactly one organisation and says what it is about.
CREATE TABLE senders (
    sender          text PRIMARY KEY,
    organisation_id text NOT NULL REFERENCES organisations (id),
    topic           text NOT NULL,
    purpose         text NOT NULL CHECK (purpose IN ('marketing', 'service')),   -- N3
    automated       boolean NOT NULL DEFAULT false,                             -- N2
    inbound_webhook text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX senders_organisation_idx ON senders (organisation_id);

-- Dialer credentials. The auth token is never stored: it is derived from PROXY_SECRET,
-- the account SID and token_version (see proxy/credentials.py).
CREATE TABLE clients (
    account_sid   text PRIMARY KEY CHECK (account_sid ~ '^AC[0-9a-f]{32}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_version integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE client_organisations (
    account_sid     text NOT NULL REFERENCES clients (account_sid) ON DELETE CASCADE,
    organisation_id text NOT NULL REFERENCES organisations (id),
    PRIMARY KEY (account_sid, organisation_id)
);

-- N1/N9: who the number belongs to.
CREATE TABLE subjects (
    number                  text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    kind                    text NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'business')),
    published_for_marketing boolean NOT NULL DEFAULT false,
    evidence                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- N5/N6: opt-in consents and contact requests.
CREATE TABLE consents (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject          text NOT NULL REFERENCES subjects (number) ON DELETE CASCADE,
    organisation_id  text NOT NULL REFERENCES organisations (id),
    channel          text NOT NULL CHECK (channel IN ('voice', 'sms', 'email')),
    topics           text[] NOT NULL CHECK (cardinality(topics) >= 1),
    kind             text NOT NULL CHECK (kind IN ('opt_in', 'request')),
    given_at         timestamptz NOT NULL,
    expires_at       timestamptz,
    verified_at      timestamptz,
    verification     text,
    first_contact_by timestamptz,                                             -- N5: 6-month term
    requested_start  timestamptz,                                             -- N6/N14
    requested_end    timestamptz,
    provenance       text NOT NULL CHECK (provenance IN ('self_provided', 'purchased', 'enriched', 'unknown')), -- N10
    evidence         jsonb NOT NULL DEFAULT '{}'::jsonb,
    withdrawn_at     timestamptz,
    first_used_at    timestamptz,                                             -- N5: first allowed contact
    consumed_at      timestamptz,                                             -- N6: single use
    consumed_by      bigint,                                                  -- the decision that used it
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (requested_start IS NULL OR requested_end IS NULL OR requested_start < requested_end),
    CHECK (expires_at IS NULL OR expires_at > given_at)
);
CREATE INDEX consents_subject_org_idx ON consents (subject, organisation_id);

-- N7/N8: customer and charity relationships.
CREATE TABLE relationships (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject         text NOT NULL REFERENCES subjects (number) ON DELETE CASCADE,
    organisation_id text NOT NULL REFERENCES organisations (id),
    kind            text NOT NULL CHECK (kind IN ('customer', 'donor', 'volunteer', 'attendee', 'petition')),
    topics          text[] NOT NULL CHECK (cardinality(topics) >= 1),
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    provenance      text NOT NULL CHECK (provenance IN ('self_provided', 'purchased', 'enriched', 'unknown')),
    opt_out_offered boolean NOT NULL,
    evidence        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX relationships_subject_org_idx ON relationships (subject, organisation_id);

-- N11: objections beat everything. organisation_id NULL = every organisation,
-- channel NULL = every channel. `subject` is cleared on erasure; subject_hash stays.
CREATE TABLE objections (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject_hash    text NOT NULL,
    subject         text,
    organisation_id text REFERENCES organisations (id),
    channel         text CHECK (channel IN ('voice', 'sms', 'email')),
    received_at     timestamptz NOT NULL,
    via             text NOT NULL CHECK (via IN ('api', 'agent', 'ivr', 'sms', 'email', 'letter')),
    source_ref      text,                  -- e.g. the MessageSid of a STOP reply
    body_hash       text,
    lifted_at       timestamptz,           -- N12: START lifts SMS-keyword objections
    lifted_ref      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX objections_subject_hash_idx ON objections (subject_hash) WHERE lifted_at IS NULL;
CREATE UNIQUE INDEX objections_source_ref_idx ON objections (source_ref) WHERE source_ref IS NOT NULL;

-- One row per gated request. Append-only: enforced by the trigger below.
CREATE TABLE decisions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decided_at      timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    request_id      text,
    account_sid     text,
    channel         text NOT NULL CHECK (channel IN ('voice', 'sms')),
    sender          text,
    organisation_id text,
    subject_hash    text,
    subject_masked  text,
    topic           text,
    decision        text NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason          text NOT NULL,
    basis           text,
    rule            text,
    evidence        jsonb NOT NULL DEFAULT '[]'::jsonb,
    retry_after     timestamptz,
    obligations     text[] NOT NULL DEFAULT '{}',
    details         jsonb NOT NULL DEFAULT '{}'::jsonb   -- e.g. SMS segments before/after
);
CREATE INDEX decisions_subject_hash_idx ON decisions (subject_hash, id DESC);
CREATE INDEX decisions_decided_at_idx ON decisions (decided_at);

CREATE FUNCTION decisions_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'decisions is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER decisions_no_update_delete
    BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
CREATE TRIGGER decisions_no_truncate
    BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only();

-- What happened after an allow: filled once per decision, never changed.
CREATE TABLE decision_outcomes (
    decision_id     bigint PRIMARY KEY REFERENCES decisions (id),
    upstream_status integer,
    upstream_sid    text,
    error           text,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER decision_outcomes_no_update_delete
    BEFORE UPDATE OR DELETE ON decision_outcomes
    FOR EACH ROW EXECUTE FUNCTION decisions_append_only();
