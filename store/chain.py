"""The audit chain: hashing, link signatures and verification.

Verification needs only the stored rows and the public keys (store.signing), not the cipher key,
so an auditor can check a copy of the database without being able to read it.

The SHA-256 link hashes alone prove nothing against someone who can write the database: anyone who
reads this module can recompute them. What such a person cannot make is the Ed25519 signature each
link has carried since links are signed (`appeals_chain_signatures`, `link_message`), nor a
checkpoint outside the database (store.checkpoints) that seals every chain's head. Links written
before signing have no signature ("legacy unsigned"): they are accepted only before a chain's
first signed link, and only a checkpoint protects them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent
from sqlalchemy import Connection, Engine, inspect, select

from domain.case import case_id as case_id_for
from domain.users import USERS_LOG_ID
from store import schema
from store.signing import ChainKeys

GENESIS = "0" * 64
# How reports name the users log (domain.users), whose chain rows are keyed by its id.
USERS_LOG_NAME = "users log"


def event_hash(case_id: str, version: int, topic: str, state: bytes) -> str:
    """SHA-256 of the event as stored: encrypted state plus what places it in the case."""
    digest = hashlib.sha256()
    for part in (case_id.encode(), str(version).encode(), topic.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(state)
    return digest.hexdigest()


def link_hash(prev_hash: str, ev_hash: str, case_id: str, version: int, event_name: str,
              actor: str, recorded_at: datetime) -> str:
    fields = (prev_hash, ev_hash, case_id, str(version), event_name, actor,
              recorded_at.isoformat())
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def link_message(topic: str, case_id: str, version: int, recorded_at: datetime, actor: str,
                 ev_hash: str, prev_hash: str, link: str, state_digest: str | None) -> bytes:
    """What a link's signature covers: the event's type (its full topic), case, version, recorded
    time, actor, the hash of its ciphertext and the previous link (and the link's own hash), and
    on the users log the digest of the users table after the save. Length-prefixed parts."""
    out = bytearray(b"appeals-chain-link/1")
    for part in (topic, case_id, str(version), recorded_at.astimezone(UTC).isoformat(), actor,
                 ev_hash, prev_hash, link, state_digest or ""):
        data = part.encode()
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


def users_digest(users: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 over every user as the users log decides them (username, name, address, roles,
    active, the fingerprint of each credential), in username order. Computed from the replayed
    log by each save of the users log and signed with its links (never from the table, so that a
    row tampered with before a later change is not signed along); compared by the verification with
    `users_table_digest`, so that a row changed in the table alone shows without the cipher key."""
    digest = hashlib.sha256(b"appeals-users/1")
    for username in sorted(users):
        user = users[username]
        parts = (username, user["display_name"], user["email"], ",".join(sorted(user["roles"])),
                 "1" if user["active"] else "0", user["password"] or "",
                 user["second_factor"] or "")
        for part in parts:
            data = str(part).encode()
            digest.update(len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


def users_table_digest(conn: Connection | Any) -> str:
    """`users_digest` of the users table as it is (credentials by their SHA-256 fingerprint)."""
    u = schema.users
    rows = conn.execute(select(u.c.username, u.c.display_name, u.c.email, u.c.roles, u.c.active,
                               u.c.password_hash, u.c.totp_secret))
    return users_digest({row.username: {
        "display_name": row.display_name, "email": row.email,
        "roles": list(filter(None, row.roles.split(","))), "active": bool(row.active),
        "password": _fp(row.password_hash), "second_factor": _fp(row.totp_secret)}
        for row in rows})


def _fp(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def event_name(topic: str) -> str:
    """'domain.case:Case.ConsentGranted' -> 'ConsentGranted' (no personal data in topics)."""
    return topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1]


@dataclass(frozen=True)
class ChainReport:
    case_id: str
    reference: str | None
    events: int
    ok: bool
    broken_version: int | None = None
    reason: str | None = None
    # Links verified by their signature, and links from before signing (no signature; only a
    # checkpoint protects them). Both 0 when signatures were not checked (no public key given).
    signed: int = 0
    unsigned: int = 0

    def describe(self) -> str:
        name = self.reference or self.case_id
        if self.ok:
            extra = ""
            if self.unsigned:
                extra = (f"; {self.unsigned} unsigned link{'s' if self.unsigned != 1 else ''} "
                         "from before signing, covered only by a checkpoint")
            return f"{name}: audit chain verified ({self.events} events{extra})"
        return f"{name}: audit chain broken at version {self.broken_version}: {self.reason}"


class ChainVerifier:
    """Recomputes each case's chain from the stored events (read raw: no key needed)."""

    def __init__(self, engine: Engine, recorder: AggregateRecorder,
                 keys: ChainKeys | None = None) -> None:
        self.engine = engine
        self.recorder = recorder
        self.keys = keys
        # A copy of a database that code from before signing wrote has no signature table (the
        # auditor's verifier creates nothing): every link there is legacy unsigned.
        self.signed_store = inspect(engine).has_table(schema.chain_signatures.name)

    def verify(self, case_id: str, reference: str | None = None) -> ChainReport:
        return self.verify_links(case_id, reference)[0]

    def verify_links(self, case_id: str, reference: str | None = None
                     ) -> tuple[ChainReport, dict[int, str]]:
        """The report, and the chain's link hashes by version (for the checkpoints).

        The store may be written meanwhile: links are read before the events, and when a save
        committed in between (more events than links) once more, keeping the links of the events
        read (a save writes its events, links and signatures in one transaction). The users
        table is compared twice for the same reason before a difference is reported."""
        users_log = case_id == str(USERS_LOG_ID)
        for attempt in range(2):
            links, signatures, table_digest = self._links(case_id, users_log)
            events = self.recorder.select_events(UUID(case_id))
            if len(events) > len(links):
                links, signatures, table_digest = self._links(case_id, users_log)
                links = [row for row in links if row["version"] <= len(events)]
            report = check_chain(case_id, reference, events, links, signatures=signatures,
                                 keys=self.keys)
            if not (report.ok and users_log and links):
                break
            head = signatures.get(links[-1]["version"])
            if head is None or head.get("state_digest") in (None, table_digest):
                break
            if attempt == 1:
                report = replace(report, ok=False, broken_version=links[-1]["version"],
                                 reason="the users table differs from the state signed with the "
                                        "users log's newest link (a row was changed in the "
                                        "table alone)")
        return report, {row["version"]: row["hash"] for row in links}

    def _links(self, case_id: str, users_log: bool
               ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], str | None]:
        sg = schema.chain_signatures
        with self.engine.connect() as conn:
            links = [dict(row) for row in conn.execute(
                select(schema.chain).where(schema.chain.c.case_id == case_id)
                .order_by(schema.chain.c.version)).mappings()]
            signatures = {row["version"]: dict(row) for row in conn.execute(
                select(sg).where(sg.c.case_id == case_id)).mappings()} if self.signed_store else {}
            table_digest = users_table_digest(conn) if users_log else None
        return links, signatures, table_digest

    def verify_reference(self, reference: str) -> ChainReport:
        return self.verify(str(case_id_for(reference)), reference)

    def verify_users_log(self) -> ChainReport:
        """The chain of the users log (every change to users and roles)."""
        return self.verify(str(USERS_LOG_ID), USERS_LOG_NAME)


def check_chain(case_id: str, reference: str | None, events: Sequence[StoredEvent],
                links: Sequence[Mapping[str, Any]], *,
                signatures: Mapping[int, Mapping[str, Any]] | None = None,
                keys: ChainKeys | None = None) -> ChainReport:
    """The first broken link, comparing chain rows with the stored events in version order, and
    with `keys` each link's signature (`signatures`: the chain's signature rows by version). Once
    a link is signed every later one must be: a removed signature is not a legacy link."""

    def broken(version: int, reason: str) -> ChainReport:
        return ChainReport(case_id, reference, len(events), False, version, reason)

    signatures = signatures or {}
    signed = unsigned = 0
    prev = GENESIS
    for position, row in enumerate(links, start=1):
        version = row["version"]
        if version != position:
            return broken(position, "a chain row is missing")
        if position > len(events):
            return broken(version, "the stored event is missing")
        stored = events[position - 1]
        if stored.originator_version != version:
            return broken(version, "stored events are missing or out of order")
        if event_hash(case_id, version, stored.topic, stored.state) != row["event_hash"]:
            return broken(version, "the stored event differs from the one recorded")
        if row["prev_hash"] != prev:
            return broken(version, "the chain row does not follow the previous one")
        recorded_at = schema.utc(row["recorded_at"])
        assert recorded_at is not None
        expected = link_hash(prev, row["event_hash"], case_id, version, row["event_name"],
                             row["actor"], recorded_at)
        if expected != row["hash"]:
            return broken(version, "the chain row was altered")
        if keys is not None:
            sig = signatures.get(version)
            if sig is None:
                if signed:
                    return broken(version, "the link has no signature although earlier links "
                                           "are signed (a signature was removed)")
                unsigned += 1
            else:
                why = keys.verify(sig["key_id"], sig["signature"], link_message(
                    stored.topic, case_id, version, recorded_at, row["actor"],
                    row["event_hash"], row["prev_hash"], row["hash"], sig.get("state_digest")))
                if why is not None:
                    return broken(version, f"the link's signature: {why} (its event type, case, "
                                           "version, time, actor, content or place was changed)")
                signed += 1
        prev = row["hash"]
    if len(events) > len(links):
        return broken(len(links) + 1, "a stored event has no chain row")
    return ChainReport(case_id, reference, len(events), True, signed=signed, unsigned=unsigned)
