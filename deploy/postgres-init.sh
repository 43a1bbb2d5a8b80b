#!/bin/sh
# Runs once when the PostgreSQL volume is created: the event store gets its own database and user,
# separate from Temporal's, so that each can be backed up, restored and permissioned on its own.
# The user's password comes from the file EVENTS_DB_PASSWORD_FILE names (a Docker secret), or from
# EVENTS_DB_PASSWORD.
set -eu
if [ -n "${EVENTS_DB_PASSWORD_FILE:-}" ]; then
    EVENTS_DB_PASSWORD=$(cat "$EVENTS_DB_PASSWORD_FILE")
fi
: "${EVENTS_DB_PASSWORD:?set EVENTS_DB_PASSWORD_FILE (or EVENTS_DB_PASSWORD)}"
# A quote in the password must not end the SQL string.
quoted=$(printf '%s' "$EVENTS_DB_PASSWORD" | sed "s/'/''/g")
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER "$EVENTS_DB_USER" WITH PASSWORD '$quoted';
CREATE DATABASE "$EVENTS_DB_NAME" OWNER "$EVENTS_DB_USER";
SQL
