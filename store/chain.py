"""The audit chain: hashing and verification.

Verification needs only the stored rows, not the cipher key, so an auditor can check a copy of the
database without being able to read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent
from sqlalchemy import Engine, select

from domain.case import case_id as case_id_for
from domain.users import USERS_LOG_ID
from store import schema

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

    def describe(self) -> str:
        name = self.reference or self.case_id
        if self.ok:
            return f"{name}: audit chain verified ({self.events} events)"
        return f"{name}: audit chain broken at version {self.broken_version}: {self.reason}"


class ChainVerifier:
    """Recomputes each case's chain from the stored events (read raw: no key needed)."""

    def __init__(self, engine: Engine, recorder: AggregateRecorder) -> None:
        self.engine = engine
        self.recorder = recorder

    def verify(self, case_id: str, reference: str | None = None) -> ChainReport:
        events = self.recorder.select_events(UUID(case_id))
        with self.engine.connect() as conn:
            links = conn.execute(
                select(schema.chain).where(schema.chain.c.case_id == case_id)
                .order_by(schema.chain.c.version)
            ).mappings().all()
        return check_chain(case_id, reference, events, [dict(row) for row in links])

    def verify_reference(self, reference: str) -> ChainReport:
        return self.verify(str(case_id_for(reference)), reference)

    def verify_users_log(self) -> ChainReport:
        """The chain of the users log (every change to users and roles)."""
        return self.verify(str(USERS_LOG_ID), USERS_LOG_NAME)


def check_chain(case_id: str, reference: str | None, events: Sequence[StoredEvent],
                links: Sequence[Mapping[str, Any]]) -> ChainReport:
    """The first broken link, comparing chain rows with the stored events in version order."""

    def broken(version: int, reason: str) -> ChainReport:
        return ChainReport(case_id, reference, len(events), False, version, reason)

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
        prev = row["hash"]
    if len(events) > len(links):
        return broken(len(links) + 1, "a stored event has no chain row")
    return ChainReport(case_id, reference, len(events), True)
