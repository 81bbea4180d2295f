#!/bin/sh
# First start of the standby: copy the primary (PRIMARY_HOST, PRIMARY_PORT) into an empty
# $PGDATA and follow it (-R writes primary_conninfo and standby.signal; the slot keeps the WAL
# it has not received yet). Does nothing when $PGDATA holds a cluster already. Runs as the
# database's system user (deploy/compose.yml: gosu; tests/test_deploy_ha.py: runuser).
set -eu
: "${PGDATA:?}" "${PRIMARY_HOST:?}" "${REPLICATION_PASSWORD:?}"
if [ -s "$PGDATA/PG_VERSION" ]; then
    exit 0
fi
until pg_isready -q -h "$PRIMARY_HOST" -p "${PRIMARY_PORT:-5432}"; do
    sleep 1
done
PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p "${PRIMARY_PORT:-5432}" \
    -U replicator -D "$PGDATA" -X stream -S pg_b -R --checkpoint=fast --no-password
chmod 0700 "$PGDATA"
