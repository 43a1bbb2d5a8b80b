"""An eventsourcing-sqlalchemy recorder that writes the audit chain, the command result and the
case index in the same database transaction as the events.

eventsourcing-sqlalchemy calls `_insert_events(session, stored_events, **kwargs)` inside the
transaction that inserts the events, with the keyword arguments given to `Application.save()`;
the application passes an `AuditContext` there. Either everything is recorded or nothing is.

Saves of the users log (store.users) carry `kind="users"`: they write the chain and the command
like a case, not the case index, and their `apply` callback writes the users table (and revokes
sessions) in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from eventsourcing.persistence import StoredEvent
from eventsourcing_sqlalchemy.factory import SQLAlchemyFactory
from eventsourcing_sqlalchemy.recorders import SQLAlchemyApplicationRecorder
from sqlalchemy import CursorResult, delete, insert, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from domain.view import waiting_for
from store import schema
from store.chain import (
    GENESIS,
    event_hash,
    event_name,
    link_hash,
    link_message,
)
from store.signing import ChainSigner


class UnsignedWriteRefused(RuntimeError):
    """A store without the signing key may not extend a chain whose links are signed."""


@dataclass(frozen=True)
class AuditContext:
    """What the recorder needs beside the encrypted events (no personal data in here)."""

    reference: str
    actor: str
    command_id: str
    summary: dict[str, Any]
    timestamps: Sequence[datetime]
    # The signed assertion behind a person's decision: id, username, decision, update_id,
    # expires_at (none for the system's own steps).
    proof: dict[str, Any] | None = None
    # "case" writes the case index; "users" (the users log) and "erasure" (a case's erasure
    # record, domain.erasure) do not.
    kind: Literal["case", "users", "erasure"] = "case"
    # Further writes in the same transaction (the users log: the users table and sessions).
    apply: Callable[[Session], None] | None = None
    # The case's threat types (codes) for the queue (schema.case_threats); None: left as they are.
    threat_types: Sequence[str] | None = None
    # The users log: `store.chain.users_digest` of every user after the change, as the replayed
    # log says (signed with each of the save's links).
    state_digest: str | None = None
    # A save of several commands (CaseStore.execute_all): every command id it records with that
    # command's result, in order; None: `command_id` alone, with `summary`.
    results: Sequence[tuple[str, dict[str, Any]]] | None = None


# PostgreSQL's SQLSTATE for "permission denied".
INSUFFICIENT_PRIVILEGE = "42501"
# The transaction-level advisory lock that serialises inserts into the events table on
# PostgreSQL (see AuditingRecorder._lock_table): a fixed number, the same in every process.
EVENTS_INSERT_LOCK = 0x61707065616C73  # "appeals"


class SchemaNotReady(Exception):
    """The event store's tables are missing and this database role may not create them."""

    def __init__(self) -> None:
        super().__init__(
            "the event store's tables are missing or incomplete and this database role may not "
            "create them: run `appeals store init-db` as the schema owner "
            "(APPEALS_SCHEMA_DATABASE_URL; docs/operations.md, \"Database roles\")")


class AuditingRecorder(SQLAlchemyApplicationRecorder):
    # The key that signs each new chain link (store.signing); set by store.app.CaseStore. Without
    # one, links are written unsigned (test fixtures, a store opened by old code), and refused on
    # a chain whose newest link is signed.
    signer: ChainSigner | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tables.extend(schema.metadata.sorted_tables)

    def create_table(self) -> None:
        """Create what is missing. The worker and the web interface start together in
        production: on PostgreSQL two concurrent CREATE TABLEs of the same table collide
        (pg_type's unique index) although both checked first, so the loser looks again.
        The application's role on PostgreSQL (store.roles) may not create tables: when they all
        exist nothing is created; when one is missing, SchemaNotReady says what to run."""
        for attempt in range(5):
            try:
                super().create_table()
                return
            except sa_exc.ProgrammingError as exc:
                if getattr(exc.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
                    raise SchemaNotReady() from None
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except sa_exc.IntegrityError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _lock_table(self, session: Session) -> None:
        """eventsourcing-sqlalchemy takes `LOCK TABLE <events> IN EXCLUSIVE MODE` on PostgreSQL
        so that inserts commit in the order of their ids; PostgreSQL allows that lock only to a
        role that may UPDATE, DELETE or TRUNCATE the table, which the application's role may
        not (store.roles). A transaction-level advisory lock serialises the inserts the same
        way (any role may take it; it is released at commit or rollback). A process of an older
        version still locking the table is serialised with these too: its EXCLUSIVE lock and
        the ROW EXCLUSIVE lock of an insert exclude each other."""
        assert self.datastore.engine is not None
        if self.datastore.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": EVENTS_INSERT_LOCK})
        else:
            super()._lock_table(session)

    def _insert_events(self, session: Session, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> None:
        audit: AuditContext | None = kwargs.get("audit")
        if audit is None:
            raise ValueError("every save must carry an AuditContext (actor and command id)")
        if not stored_events:
            return
        case_id = str(stored_events[0].originator_id)
        now = datetime.now(UTC)
        results = audit.results if audit.results is not None else [(audit.command_id,
                                                                      audit.summary)]
        session.execute(insert(schema.commands), [
            dict(command_id=command_id, case_id=case_id, result=result, recorded_at=now)
            for command_id, result in results])
        if audit.kind == "case":
            self._write_index(session, case_id, audit)
        if audit.apply is not None:
            audit.apply(session)
        self._append_chain(session, case_id, stored_events, audit)
        if audit.proof is not None:
            session.execute(insert(schema.decision_proofs).values(
                command_id=audit.command_id, case_id=case_id, recorded_at=datetime.now(UTC),
                **audit.proof))

    def _append_chain(self, session: Session, case_id: str, stored_events: Sequence[StoredEvent],
                      audit: AuditContext) -> None:
        prev = session.execute(
            select(schema.chain.c.hash).where(schema.chain.c.case_id == case_id)
            .order_by(schema.chain.c.version.desc()).limit(1)
        ).scalar()
        if prev is not None and self.signer is None:
            sg = schema.chain_signatures
            if session.execute(select(sg.c.version).where(sg.c.case_id == case_id)
                               .limit(1)).first() is not None:
                raise UnsignedWriteRefused(
                    "this chain's links are signed: writing to it needs the chain signing key "
                    "(APPEALS_CHAIN_SIGNING_KEY_FILE)")
        prev = prev or GENESIS
        digest = audit.state_digest if audit.kind == "users" else None
        rows, signatures = [], []
        for stored, at in zip(stored_events, audit.timestamps, strict=True):
            version = stored.originator_version
            name = event_name(stored.topic)
            ev_hash = event_hash(case_id, version, stored.topic, stored.state)
            at = at.astimezone(UTC)
            link = link_hash(prev, ev_hash, case_id, version, name, audit.actor, at)
            rows.append(dict(case_id=case_id, version=version, event_name=name,
                             event_hash=ev_hash, prev_hash=prev, hash=link, actor=audit.actor,
                             recorded_at=at))
            if self.signer is not None:
                kid, signature = self.signer.sign(link_message(
                    stored.topic, case_id, version, at, audit.actor, ev_hash, prev, link, digest))
                signatures.append(dict(case_id=case_id, version=version, key_id=kid,
                                       signature=signature, state_digest=digest))
            prev = link
        session.execute(insert(schema.chain), rows)
        if signatures:
            session.execute(insert(schema.chain_signatures), signatures)

    def _write_index(self, session: Session, case_id: str, audit: AuditContext) -> None:
        s = audit.summary
        now = datetime.now(UTC)
        values = dict(
            case_id=case_id, version=s["version"], stage=s["stage"], urgency=s["urgency"],
            risk_level=s["risk_level"], country=s["country"],
            next_deadline=datetime.fromisoformat(s["deadline"]) if s["deadline"] else None,
            escalation_level=s["escalation_level"], assignee=s["assignee"],
            verifier=s["verifier"], outcome=s["outcome"], updated_at=now,
        )
        result = session.execute(
            update(schema.case_index).where(schema.case_index.c.reference == audit.reference)
            .values(**values)
        )
        changed = cast(CursorResult[Any], result).rowcount
        if not changed:
            session.execute(insert(schema.case_index).values(
                reference=audit.reference, opened_at=now, **values))
        if "tracks" in s:
            self._write_tracks(session, audit.reference, s["tracks"])
        if audit.threat_types is not None:
            t = schema.case_threats
            session.execute(delete(t).where(t.c.reference == audit.reference))
            codes = sorted({str(code) for code in audit.threat_types})
            if codes:
                session.execute(insert(t), [dict(reference=audit.reference, threat_type=code)
                                            for code in codes])

    @staticmethod
    def _write_tracks(session: Session, reference: str, tracks: dict[str, Any]) -> None:
        t = schema.track_index
        session.execute(delete(t).where(t.c.reference == reference))
        rows = [dict(reference=reference, action=action, step=track["step"],
                     waiting_for=waiting_for(track),
                     deadline=datetime.fromisoformat(track["deadline"]) if track["deadline"]
                     else None, escalation_level=track["escalation_level"])
                for action, track in tracks.items()]
        if rows:
            session.execute(insert(t), rows)


class AppealsFactory(SQLAlchemyFactory):
    application_recorder_class = AuditingRecorder


Factory = AppealsFactory
