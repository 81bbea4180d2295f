-- The compliance officer's console (proxy/console/): its users, their sessions and failed
-- logins. Console users are not the admin token: each has a name, a role and a password
-- (argon2id; the password itself is never stored).
CREATE TABLE console_users (
    name                 text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    role                 text NOT NULL CHECK (role IN ('viewer', 'officer', 'admin')),
    password_hash        text NOT NULL,
    -- A generated (one-time) password must be replaced at the first login.
    must_change_password boolean NOT NULL DEFAULT false,
    disabled_at          timestamptz,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- The cookie holds a random token; only its SHA-256 is stored, so a copy of this table
-- opens no session. The CSRF token belongs to the session and is checked on every POST.
CREATE TABLE console_sessions (
    token_hash text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_name  text NOT NULL REFERENCES console_users (name) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_name);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- Login throttling, per user name and per address, shared by every running proxy.
CREATE TABLE console_login_failures (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name text NOT NULL,
    address   text NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX console_login_failures_user_idx ON console_login_failures (user_name, at);
CREATE INDEX console_login_failures_address_idx ON console_login_failures (address, at);


-- Whole-chain verifications run from the console (overview page): when, by whom, the result.
CREATE TABLE audit_verifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    verified_at timestamptz NOT NULL,
    actor       text NOT NULL,
    rows        bigint NOT NULL,
    ok          boolean NOT NULL,
    broken_id   bigint,
    why         text
);
