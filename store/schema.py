"""Tables written beside the events, in the same transaction.

- `appeals_chain`: the audit chain. One row per stored event with the SHA-256 of the stored
  (encrypted, compressed) event and the hash of the previous row, so that any later edit, deletion
  or reordering is detectable without the cipher key.
- `appeals_chain_signatures`: the Ed25519 signature of each link (store.signing), so that a link
  recomputed by someone without the signing key is detected.
- `appeals_commands`: the first result of each command id, so a repeated command records nothing.
- `appeals_case_index`: the read model that lists and inboxes read.
- `appeals_users`: the registry of staff and their roles that every decision is checked against.
- `appeals_sign_ins`: the web sign-in attempts (failed ones and the successes that end a series of
  failures), so that repeated failures are slowed down and can be reviewed.
- `appeals_sessions`: signed-in sessions of both doors, by the SHA-256 of their token (the token
  itself is never stored), so that a session can be revoked from anywhere.
- `appeals_requests`: the reference each case-opening request (by its idempotency key, desk.requests)
  was given, written before its workflow is started, so that a repeated request finds its case.
- `appeals_totp_steps`: per user, the last one-time-code time step the web accepted, so that each
  code is accepted once.
- `appeals_sign_in_addresses`: per user, the client addresses (a keyed hash, never the address)
  of recent successful web sign-ins, which the per-account ceiling on failed sign-ins spares.

- `appeals_case_keys`: each aggregate's data key, wrapped by the master key (store.cipher);
  erasure destroys a case's.

`appeals_users` is the read model of the users log (domain.users, store.users) and the place of the
credential hashes; it is written only in the same transaction as the log's events.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

EVENTS_TABLE = "appeals_events"

chain = Table(
    "appeals_chain",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("event_name", String(100), nullable=False),
    Column("event_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# The Ed25519 signature of each chain link written since links are signed (store.signing): by the
# key `key_id`, over the link's event type (full topic), case, version, time, actor, event hash
# (of the ciphertext) and previous link (store.chain.link_message). A new table so that chain rows
# written before stay as they were; a link without a row here is "legacy unsigned", allowed only
# before a chain's first signed link and sealed by the checkpoints (store.checkpoints).
# `state_digest`: on the users log's links, the SHA-256 of every user as the replayed log says after
# the save (store.chain.users_digest), so that a row changed in the users table alone is detected
# with the public key only.
chain_signatures = Table(
    "appeals_chain_signatures",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("key_id", String(40), nullable=False),
    Column("signature", String(100), nullable=False),
    Column("state_digest", String(64), nullable=True),
)

commands = Table(
    "appeals_commands",
    metadata,
    Column("command_id", String(200), primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("result", JSON, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

case_index = Table(
    "appeals_case_index",
    metadata,
    Column("reference", String(40), primary_key=True),
    Column("case_id", String(36), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("stage", String(20), nullable=False, index=True),
    Column("urgency", String(10), nullable=False),
    Column("risk_level", String(10), nullable=True, index=True),
    Column("country", String(2), nullable=False),
    Column("next_deadline", DateTime(timezone=True), nullable=True, index=True),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("assignee", String(100), nullable=False, index=True),
    Column("verifier", String(100), nullable=True),
    Column("outcome", String(30), nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# One row per action of a case with per-action tracks: what each action waits for, so that
# inboxes find a clearance waiting on one action while another still waits for consent.
track_index = Table(
    "appeals_track_index",
    metadata,
    Column("reference", String(40), primary_key=True),
    Column("action", String(20), primary_key=True),
    Column("step", String(20), nullable=False, index=True),
    Column("waiting_for", String(40), nullable=False, default=""),
    Column("deadline", DateTime(timezone=True), nullable=True),
    Column("escalation_level", Integer, nullable=False, default=0),
)

# The threat types of each case (codes of domain.vocab.ThreatType, no personal data): the queue's
# column and filter. Written with the case index; a case stored before this table shows none
# until its next recorded step.
case_threats = Table(
    "appeals_case_threats",
    metadata,
    Column("reference", String(40), primary_key=True),
    Column("threat_type", String(40), primary_key=True),
)

# Who signed each decision (desk.assertions): the assertion's id, the signed-in user and what it
# was issued for, written in the same transaction as the decision's events.
decision_proofs = Table(
    "appeals_decision_proofs",
    metadata,
    Column("command_id", String(200), primary_key=True),
    Column("case_id", String(36), nullable=False, index=True),
    Column("assertion_id", String(64), nullable=False, unique=True),
    Column("username", String(100), nullable=False),
    Column("decision", String(40), nullable=False),
    Column("update_id", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "appeals_users",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("roles", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("password_hash", Text, nullable=True),
    Column("totp_secret", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sign_ins = Table(
    "appeals_sign_ins",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("ok", Boolean, nullable=False),
    # "password", "second_factor", "throttled", "inactive" for failures; "" for a success.
    Column("reason", String(30), nullable=False, default=""),
)


sessions = Table(
    "appeals_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # hex SHA-256 of the session token
    Column("username", String(100), nullable=False, index=True),
    Column("door", String(10), nullable=False),  # "web" or "cli"
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


# A form whose sending found the session ended (web): kept sealed (AES-GCM under the TOTP key,
# bound to its owner and id) until its owner signs in again on that browser, for a day at most.
drafts = Table(
    "appeals_drafts",
    metadata,
    Column("id", String(64), primary_key=True),  # hex SHA-256 of the draft's token
    Column("username", String(100), nullable=False, index=True),
    Column("path", String(300), nullable=False),  # where the form was sent
    Column("sealed", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

totp_steps = Table(
    "appeals_totp_steps",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("last_step", BigInteger, nullable=False),  # TOTP counter: Unix time // 30
)

sign_in_addresses = Table(
    "appeals_sign_in_addresses",
    metadata,
    Column("username", String(100), primary_key=True),
    Column("address", String(64), primary_key=True),  # HMAC-SHA256 of the address, hex, cut
    Column("last_success_at", DateTime(timezone=True), nullable=False, index=True),
)

# A case opening's idempotency key -> the reference it was given (desk.cases): a repeated request
# (after an unknown outcome) opens nothing new and answers with the same case.
requests = Table(
    "appeals_requests",
    metadata,
    Column("request_id", String(200), primary_key=True),
    Column("reference", String(40), nullable=False, unique=True),
    Column("username", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# One data key per aggregate (each case, the users log, each erasure record; store.cipher): 32
# random bytes wrapped (AES-GCM) by the master key named by `key_id` (a fingerprint, not the key).
# Erasure overwrites `wrapped_key` with NULL and sets `destroyed_at`; re-wrapping after a master key
# rotation rewrites `key_id` and `wrapped_key`. The only table the application updates in place.
case_keys = Table(
    "appeals_case_keys",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("destroyed_at", DateTime(timezone=True), nullable=True),
)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; everything here is stored in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
