-- Row shapes holding exactly what the decision engine reads: the fact queries return arrays of
-- these instead of whole table rows, so evidence documents are never fetched or decoded on the
-- hot path.
CREATE TYPE subject_fact AS (number text, kind text, published_for_marketing boolean);

CREATE TYPE consent_fact AS (
    id bigint, subject text, organisation_id text, channel text, topics text[], kind text,
    given_at timestamptz, provenance text, expires_at timestamptz, verified_at timestamptz,
    first_contact_by timestamptz, requested_start timestamptz, requested_end timestamptz,
    withdrawn_at timestamptz, first_used_at timestamptz, consumed_at timestamptz);

CREATE TYPE relationship_fact AS (
    id bigint, subject text, organisation_id text, kind text, topics text[],
    started_at timestamptz, provenance text, ended_at timestamptz, opt_out_offered boolean);

CREATE TYPE objection_fact AS (
    id bigint, subject_hash text, organisation_id text, channel text, received_at timestamptz,
    via text);
