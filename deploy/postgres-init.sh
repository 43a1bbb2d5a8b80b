#!/bin/sh
# Runs once, as PostgreSQL's superuser, when the PostgreSQL volume is created (docs/operations.md,
# "Database roles"). Nothing else uses the superuser: each service gets a role of its own, none a
# superuser, none able to create roles or databases:
# - Temporal's user owns Temporal's two databases and nothing else (the admin tools create its
#   schema as that user; the server runs as it).
# - The event store has its own database, owned by its schema owner (who creates the tables, the
#   append-only triggers and the grants: `appeals store init-db`, the event-store-setup service),
#   and an application role for the worker and the web interface, which may connect to that
#   database only and, once init-db has run, only add to and read the audit trail.
# Passwords come from the files *_PASSWORD_FILE names (Docker secrets), or from *_PASSWORD.
set -eu
read_password() {  # read_password NAME: $NAME, or the text of the file $NAME_FILE names
    file=$(eval "printf '%s' \"\${${1}_FILE:-}\"")
    if [ -n "$file" ]; then
        value=$(cat "$file")
    else
        value=$(eval "printf '%s' \"\${${1}:-}\"")
    fi
    if [ -z "$value" ]; then
        echo "postgres-init: set ${1}_FILE (or ${1})" >&2
        exit 1
    fi
    # A quote in the password must not end the SQL string.
    printf '%s' "$value" | sed "s/'/''/g"
}
: "${TEMPORAL_DB_USER:?set TEMPORAL_DB_USER (Temporal's own database user)}"
: "${EVENTS_DB_OWNER:?set EVENTS_DB_OWNER (the event store's schema owner)}"
: "${EVENTS_DB_USER:?set EVENTS_DB_USER (the application's database user)}"
: "${EVENTS_DB_NAME:?set EVENTS_DB_NAME}"
for name in "$TEMPORAL_DB_USER" "$EVENTS_DB_OWNER" "$EVENTS_DB_USER"; do
    if [ "$name" = "$POSTGRES_USER" ]; then
        echo "postgres-init: $name is the superuser (POSTGRES_USER); give each role its own name" >&2
        exit 1
    fi
done
if [ "$EVENTS_DB_OWNER" = "$EVENTS_DB_USER" ] || [ "$TEMPORAL_DB_USER" = "$EVENTS_DB_OWNER" ] \
        || [ "$TEMPORAL_DB_USER" = "$EVENTS_DB_USER" ]; then
    echo "postgres-init: TEMPORAL_DB_USER, EVENTS_DB_OWNER and EVENTS_DB_USER must differ" >&2
    exit 1
fi
TEMPORAL_DB_NAME=${TEMPORAL_DB_NAME:-temporal}
TEMPORAL_VISIBILITY_DB_NAME=${TEMPORAL_VISIBILITY_DB_NAME:-temporal_visibility}
temporal_password=$(read_password TEMPORAL_DB_PASSWORD)
owner_password=$(read_password EVENTS_DB_OWNER_PASSWORD)
app_password=$(read_password EVENTS_DB_PASSWORD)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE "$TEMPORAL_DB_USER" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$temporal_password';
CREATE DATABASE "$TEMPORAL_DB_NAME" OWNER "$TEMPORAL_DB_USER";
CREATE DATABASE "$TEMPORAL_VISIBILITY_DB_NAME" OWNER "$TEMPORAL_DB_USER";
REVOKE ALL ON DATABASE "$TEMPORAL_DB_NAME" FROM PUBLIC;
REVOKE ALL ON DATABASE "$TEMPORAL_VISIBILITY_DB_NAME" FROM PUBLIC;
CREATE ROLE "$EVENTS_DB_OWNER" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$owner_password';
CREATE ROLE "$EVENTS_DB_USER" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$app_password';
CREATE DATABASE "$EVENTS_DB_NAME" OWNER "$EVENTS_DB_OWNER";
REVOKE ALL ON DATABASE "$EVENTS_DB_NAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE "$EVENTS_DB_NAME" TO "$EVENTS_DB_USER";
\connect "$EVENTS_DB_NAME"
-- PostgreSQL before 15 lets everyone create tables in "public"; the application's role may not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
\connect "$TEMPORAL_VISIBILITY_DB_NAME"
-- Temporal's visibility schema asks for this extension; made here so that its user needs no more.
CREATE EXTENSION IF NOT EXISTS btree_gin;
SQL
