-- A client's applications at a provider whose API authenticates with a JWT the caller signs
-- with its own private key (Vonage's Voice API: RS256, `application_id` claim). The proxy keeps
-- the application's public key to verify those JWTs; the private key stays with the dialer.
-- One application belongs to one client; a client may register several.
CREATE TABLE client_applications (
    provider       text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]{0,31}$'),
    application_id text NOT NULL CHECK (application_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    client_id      text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    public_key     text NOT NULL CHECK (length(public_key) BETWEEN 1 AND 20000),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, application_id)
);
CREATE INDEX client_applications_client_idx ON client_applications (client_id);

-- The JWT ids (`jti`) seen within their lifetime: a JWT is accepted once (replay). Rows past
-- `expires_at` are dead weight and may be deleted at any time.
CREATE TABLE client_jwt_ids (
    provider       text NOT NULL,
    application_id text NOT NULL,
    jti            text NOT NULL CHECK (length(jti) BETWEEN 1 AND 200),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (provider, application_id, jti)
);
CREATE INDEX client_jwt_ids_expiry_idx ON client_jwt_ids (expires_at);
