#!/bin/sh
# First start of the primary (the postgres image runs /docker-entrypoint-initdb.d/*.sh once;
# tests/test_deploy_ha.py runs it after initdb): the application's role and database, the
# replication role and the standby's slot. Passwords from the environment, never from a file.
set -eu
: "${CONSENT_PROXY_PASSWORD:?}" "${REPLICATION_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --no-psqlrc -U "${POSTGRES_USER:-postgres}" -d postgres \
     -v app_password="$CONSENT_PROXY_PASSWORD" -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
-- No standby follows yet: these commits must not wait for one (primary.conf).
SET synchronous_commit = local;
SET password_encryption = 'scram-sha-256';
CREATE ROLE consent_proxy LOGIN PASSWORD :'app_password';
CREATE DATABASE consent_proxy OWNER consent_proxy;
CREATE ROLE replicator REPLICATION LOGIN PASSWORD :'repl_password';
SELECT pg_create_physical_replication_slot('pg_b');
SQL
