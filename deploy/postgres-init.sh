#!/bin/sh
# Runs once when the PostgreSQL volume is created: the event store gets its own database and user,
# separate from Temporal's, so that each can be backed up, restored and permissioned on its own.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER "$EVENTS_DB_USER" WITH PASSWORD '$EVENTS_DB_PASSWORD';
CREATE DATABASE "$EVENTS_DB_NAME" OWNER "$EVENTS_DB_USER";
SQL
