"""The event store: an eventsourcing application persisted through eventsourcing-sqlalchemy.

Events are compressed and encrypted (AES-GCM) before they reach the database, each aggregate under
its own data key wrapped by the master key and bound to its case, version and type (store.cipher);
a closed case can be erased by two heads (`erase`), which destroys its key. Every save also
writes the audit chain, the command's result (so a repeated command id records nothing new) and the
case index, in the same transaction (see store.recorder).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import Environment
from sqlalchemy import Engine, func, select
from sqlalchemy import exc as sa_exc

from domain.case import Case, case_id, new_case
from domain.erasure import Erasure, erasure_id
from domain.errors import CaseRuleError
from domain.intake import parse_intake
from domain.intake import reference as check_reference
from domain.tracked import TrackedCase, open_tracked_case
from domain.users import USERS_LOG_ID, UnknownRole, UsersRuleError
from store import schema, waiting
from store.chain import ChainReport, ChainVerifier, event_name
from store.checkpoints import sealed_chain
from store.cipher import CaseKeyMapper, CaseKeys, EventUnreadable, MasterKeys, is_legacy
from store.index import IndexReader, pre_ping, private_sqlite_file
from store.recorder import AppealsFactory, AuditContext
from store.signing import ChainKeys, ChainSigner
from store.users import UsersLogEntry, UsersRegistry, UsersReport, fingerprint

# The commands a caller may apply to a case, by name (the workflow's activities send these).
COMMANDS = frozenset({
    "record_verification", "grant_consent", "refuse_consent", "withdraw_consent",
    "record_clearance", "record_dispatch", "record_dispatch_failure", "escalate",
    "extend_deadline", "record_response", "add_further_information", "record_checkin",
    "record_reminder", "raise_warning", "close", "hold_dispatch",
    # Cases with per-action tracks (domain.tracked) only.
    "choose_funds", "record_fund_submission",
    # Recorded by a door directly (no workflow: it changes no case state) after checking that the
    # actor is a head: confidential values shown for one view (desk.redaction).
    "reveal_confidential",
    # Recorded by a door directly (they change no step) after checking the roles (desk.cases):
    # a case officer takes a case, or a head (or the holder) hands it to another officer.
    "claim", "reassign",
    # An internal comment by staff (desk.cases.Desk.comment): sent nowhere, changes no step.
    "comment",
    # Risk that moves (domain.tracked): a re-assessment, the heads told of a reprisal, and an
    # officer's go-ahead for public actions held after one.
    "reassess_risk", "record_reprisal_alert", "confirm_public_actions",
})
_log = logging.getLogger(__name__)
# How often a save that lost a race (another writer took the version) is tried again.
MAX_ATTEMPTS = 30
# How many aggregates (cases, the users log) a process keeps in memory, brought up to date on
# each read (eventsourcing's aggregate cache with fast-forward).
AGGREGATE_CACHE = 500


class StoreError(Exception):
    """Errors of the store itself (not of the secretariat's rules)."""


class CaseNotFound(StoreError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"No case with reference {reference}.")
        self.reference = reference


class CaseAlreadyExists(StoreError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"A case with reference {reference} already exists.")


class UnknownCommand(StoreError):
    pass


class CaseErased(StoreError):
    """The case's key was destroyed by an erasure: its events can no longer be read."""

    def __init__(self, reference: str, erasure: Erasure | None = None) -> None:
        when = (f" on {erasure.confirmed_at:%Y-%m-%d}" if erasure is not None
                and erasure.confirmed_at is not None else "")
        super().__init__(f"Case {reference} was erased{when}: its content can no longer be "
                         "read; its trail shows the erasure.")
        self.reference = reference


class CaseUnreadable(StoreError):
    """An event of the case does not decrypt (moved, relabelled or altered); names the case and
    the version, nothing of the content."""

    def __init__(self, reference: str, version: int, reason: str) -> None:
        super().__init__(f"Case {reference} version {version} cannot be read: {reason}.")
        self.reference = reference
        self.version = version


class ErasureRefused(StoreError):
    """An erasure that the rules do not allow (open case, retention, already erased...)."""


@dataclass(frozen=True)
class ErasureOutcome:
    """What `erase` did: "requested" (a second head must confirm) or "erased"."""

    reference: str
    state: str
    record: dict[str, Any]


class ConcurrentWriteError(StoreError):
    pass


@dataclass(frozen=True)
class Command:
    """One named command for `CaseStore.execute_all`, with its own command id."""

    name: str
    args: Mapping[str, Any]
    command_id: str


@dataclass(frozen=True)
class TrailEntry:
    version: int
    at: datetime
    actor: str
    event: str
    command_id: str
    details: dict[str, Any]


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


class CaseStore(Application[UUID]):
    name = "Appeals"

    def __init__(self, database_url: str, cipher_key: str,
                 extra_env: Mapping[str, str] | None = None, *,
                 signer: ChainSigner | None = None,
                 public_keys: Sequence[Ed25519PublicKey] = ()) -> None:
        """`cipher_key`: the master key as base64, optionally followed by previous master keys
        (`CURRENT,PREVIOUS,...`; worker.settings.Settings.event_store_cipher_key). `signer`: the
        key that signs each new chain link (store.signing; the processes that write hold it);
        `public_keys`: further keys whose signatures verify (rotated keys)."""
        masters = MasterKeys.parse(cipher_key)
        env = {
            "PERSISTENCE_MODULE": "store.recorder:AppealsFactory",
            "SQLALCHEMY_URL": database_url,
            "MAPPER_TOPIC": "store.cipher:CaseKeyMapper",
            "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
            "CIPHER_KEY": cipher_key.split(",")[0].strip(),
            "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
            "CREATE_TABLE": "y",
            # Aggregates read before stay in memory and are brought up to date with the events
            # recorded since (by any process): the 1,000th step of a long case does not replay
            # the 999 before it. Each read gets its own copy. An erased case is never served
            # from here (see `get`).
            "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE),
            "AGGREGATE_CACHE_FASTFORWARD": "y",
            **(extra_env or {}),
        }
        private_sqlite_file(database_url)
        super().__init__(env=env)
        pre_ping(self.engine)
        # The session check and the case index's reads (store.index), over this engine.
        self.index = IndexReader(self.engine)
        # Each aggregate's data key (store.cipher); the mapper encrypts and decrypts with them.
        self.keys = CaseKeys(self.engine, masters)
        if isinstance(self.mapper, CaseKeyMapper):
            self.mapper.attach(self.keys)
        self.recorder.signer = signer  # type: ignore[attr-defined]
        self.chain_keys: ChainKeys | None = (
            signer.verifier(public_keys) if signer is not None
            else ChainKeys.of(public_keys) if public_keys else None)
        # Called with the reference after a case's close is saved (a checkpoint is written then:
        # store.checkpoints); errors are the hook's to handle.
        self.after_close: Callable[[str], None] | None = None
        # The users log's replayed state by its version (user_roles).
        self._users_cache: tuple[int, dict[str, dict[str, Any]]] = (-1, {})
        # The signed checkpoints (store.checkpoints; set by the processes that have them): a users
        # log that a checkpoint sealed and that is now gone grants no roles at all.
        self.checkpoint_dir: Path | None = None
        # The users log and the sessions (store.users): the doors' API for users.
        self.users = UsersRegistry(self)

    # ----------------------------------------------------------------------------- commands
    def open_case(self, reference: str, intake: Mapping[str, Any], clearance_required: list[str],
                  deadline_table: dict[str, dict[str, int]], at: datetime, actor: str,
                  command_id: str, tracked: bool = False,
                  proof: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open a case from a raw intake (validated here); the same command id opens it once.
        `tracked`: with one track per action (every case the current workflow opens)."""
        check_reference(reference)
        prior = self.prior_result(command_id)
        if prior is not None:
            return prior
        clean = parse_intake(intake, today=at.date())
        if self._exists(reference):
            raise CaseAlreadyExists(reference)
        opener = open_tracked_case if tracked else new_case
        case = opener(reference, clean, clearance_required, deadline_table, at, actor, command_id)
        return self._save(case, reference, actor, command_id, proof)

    def execute(self, reference: str, command: str, args: Mapping[str, Any], actor: str,
                command_id: str, proof: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply one named command; version conflicts are retried on fresh state, never lost."""
        if command not in COMMANDS:
            raise UnknownCommand(f"Unknown command {command!s:.40}.")
        for attempt in range(MAX_ATTEMPTS):
            prior = self.prior_result(command_id)
            if prior is not None:
                return prior
            case = self.get(reference)
            getattr(case, command)(**args, actor=actor, command_id=command_id)
            try:
                summary = self._save(case, reference, actor, command_id, proof)
            except IntegrityError:
                # Someone else wrote first: wait a little (jittered, so racers spread out),
                # then reload and apply the rules again to the fresh state.
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            if command == "close" and self.after_close is not None:
                self.after_close(reference)
            return summary
        raise ConcurrentWriteError(f"Case {reference} is being changed by others; try again.")

    def execute_all(self, reference: str, commands: Sequence[Command], actor: str, *,
                    case: Case | TrackedCase | None = None) -> dict[str, Any]:
        """Apply several commands, in order, to one case and save all their events in ONE
        transaction (events, chain links in order, signatures, each command's id and result,
        the case index): all of them or none. A command refused by the rules refuses them all.

        Each command id is recorded once: commands already recorded (a retry, or an older
        worker that recorded one of them on its own) are skipped. The answer is the case's
        summary after the save; when every command was recorded before, the last one's first
        result. `case`: the case as the caller loaded it (each read is the caller's own copy),
        to save reading it again; it must not carry pending events. When someone wrote to the
        case since, the save fails on the version, and the commands are applied again to the
        case read afresh (as `execute` does)."""
        for command in commands:
            if command.name not in COMMANDS:
                raise UnknownCommand(f"Unknown command {command.name!s:.40}.")
        if not commands:
            raise StoreError("No command to record.")
        for attempt in range(MAX_ATTEMPTS):
            prior = self.prior_results([c.command_id for c in commands])
            todo = [c for c in commands if c.command_id not in prior]
            if not todo:
                return prior[commands[-1].command_id]
            given = case is not None and attempt == 0
            current = case if given and case is not None else self.get(reference)
            results, start = [], current.version
            try:
                for command in todo:
                    getattr(current, command.name)(**command.args, actor=actor,
                                                   command_id=command.command_id)
                    results.append((command.command_id, current.summary()))
            except CaseRuleError:
                # Refused by the caller's copy: the refusal stands if that copy is current.
                if given and self._newest_version(reference) != start:
                    continue
                raise
            pending = current.collect_events()
            summary = results[-1][1]
            audit = AuditContext(reference=reference, actor=actor,
                                 command_id=todo[-1].command_id, summary=summary,
                                 timestamps=[e.timestamp for e in pending],
                                 threat_types=list(current.intake.get("threat_types") or []),
                                 results=results)
            try:
                self.save(*pending, audit=audit)
            except IntegrityError:
                # Someone else wrote first (the case, or one of these command ids): wait a
                # little, then read the case afresh and apply what is still to be recorded.
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            if any(c.name == "close" for c in todo) and self.after_close is not None:
                self.after_close(reference)
            return summary
        raise ConcurrentWriteError(f"Case {reference} is being changed by others; try again.")

    def _save(self, case: Case | TrackedCase, reference: str, actor: str, command_id: str,
              proof: dict[str, Any] | None = None) -> dict[str, Any]:
        pending = case.collect_events()
        summary = case.summary()
        audit = AuditContext(reference=reference, actor=actor, command_id=command_id,
                             summary=summary, timestamps=[e.timestamp for e in pending],
                             proof=proof,
                             threat_types=list(case.intake.get("threat_types") or []))
        try:
            self.save(*pending, audit=audit)
        except IntegrityError:
            # The same command id may have won a race; then its first result is the answer.
            prior = self.prior_result(command_id)
            if prior is not None:
                return prior
            raise
        return summary

    # -------------------------------------------------------------------------------- reads
    def get(self, reference: str) -> Case | TrackedCase:
        cid = case_id(reference)
        try:
            with self._readable(reference):
                case: Case | TrackedCase = self.repository.get(cid)
                # From the aggregate cache no event is decrypted: the case's key must still be
                # there (erased by this process: at once; by another: within the key cache's
                # lifetime, store.cipher.CACHE_SECONDS).
                self.keys.for_reading(str(cid), case.version)
        except AggregateNotFoundError:
            raise CaseNotFound(reference) from None
        return case

    @contextlib.contextmanager
    def _readable(self, reference: str) -> Iterator[None]:
        """The cipher's errors as the store's, by reference: erased, or an event that does not
        decrypt (moved, relabelled, altered)."""
        from store.cipher import CaseErased as KeyDestroyed
        try:
            yield
        except KeyDestroyed:
            raise CaseErased(reference, self.erasure(reference)) from None
        except EventUnreadable as exc:
            raise CaseUnreadable(reference, exc.version, exc.reason) from None

    def _newest_version(self, reference: str) -> int | None:
        """The version of the case's newest stored event (None: no event)."""
        newest = self.recorder.select_events(case_id(reference), desc=True, limit=1)
        return newest[0].originator_version if newest else None

    def prior_results(self, command_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The first results of those of these command ids that were recorded, by id."""
        c = schema.commands.c
        with self.engine.connect() as conn:
            return {row.command_id: row.result for row in conn.execute(
                select(c.command_id, c.result).where(c.command_id.in_(list(command_ids))))}

    def prior_result(self, command_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            result: dict[str, Any] | None = conn.execute(
                select(schema.commands.c.result)
                .where(schema.commands.c.command_id == command_id)
            ).scalar()
        return result

    def trail(self, reference: str) -> list[TrailEntry]:
        """Every event of the case, decrypted, in order: the audit trail for staff. An erased
        case's own events are shown by their chain rows only (version, time, actor, event name;
        details `{"erased": true}`), followed by the events of its erasure record (requested,
        confirmed: who, when, why; their versions are the record's own)."""
        cid = case_id(reference)
        if self.keys.state(str(cid)) != "destroyed":
            with self._readable(reference):
                events = list(self.repository.event_store.get(cid))
            if not events:
                raise CaseNotFound(reference)
            return [_trail_entry(ev) for ev in events]
        entries = self._erased_trail(str(cid))
        entries.extend(_trail_entry(ev) for ev in
                       self.repository.event_store.get(erasure_id(reference)))
        return entries

    def _erased_trail(self, cid: str) -> list[TrailEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.chain).where(schema.chain.c.case_id == cid)
                                .order_by(schema.chain.c.version)).mappings().all()
        return [TrailEntry(r["version"], schema.utc(r["recorded_at"]) or datetime.now(UTC),
                           r["actor"], r["event_name"], "", {"erased": True}) for r in rows]

    # ------------------------------------------------------------------------------ erasure
    def erasure(self, reference: str) -> Erasure | None:
        """The case's erasure record (asked, confirmed), or None."""
        try:
            record: Erasure = self.repository.get(erasure_id(reference))
        except AggregateNotFoundError:
            return None
        return record

    def erase(self, reference: str, *, actor: str, at: datetime, retention_days: int,
              reason_code: str = "", reason: str = "") -> ErasureOutcome:
        """Erase a closed case, asked by one head and confirmed by another (the caller checks
        that `actor` is an active head). The first call records the request (reason code and
        text, no names); a call by a different head confirms it, destroys the case's data key
        and returns "erased" (the caller then deletes the Temporal history). Refused
        (ErasureRefused): an open case, the retention period not over, a case written (partly)
        before per-case keys, already erased, the same head confirming her own request."""
        check_reference(reference)
        cid = str(case_id(reference))
        record = self.erasure(reference)
        key_state = self.keys.state(cid)
        if key_state == "destroyed":
            who = f" (asked by {record.requested_by}, confirmed by {record.confirmed_by})" \
                if record is not None else ""
            raise ErasureRefused(f"Case {reference} is already erased{who}; nothing was done.")
        if record is None or record.confirmed_by is None:
            self._check_erasable(reference, cid, at, retention_days)
        try:
            if record is None:
                self._check_names(reference, reason)
                record = Erasure.request(reference, reason_code, reason, at, actor,
                                         f"erasure:{reference}:request")
                self._save_erasure(record, reference, actor, "request")
                return ErasureOutcome(reference, "requested", record.public())
            if record.confirmed_by is None:
                record.confirm(at, actor, f"erasure:{reference}:confirm")
                self._save_erasure(record, reference, actor, "confirm")
        except CaseRuleError as exc:
            raise ErasureRefused(exc.message) from None
        except IntegrityError:
            raise ErasureRefused(f"Another head recorded a step of the erasure of {reference} "
                                 "at the same time; look at its trail and try again.") from None
        # Confirmed (now, or by an earlier call interrupted before the key was destroyed).
        self.keys.destroy(cid, at)
        if self.repository.cache is not None:
            with contextlib.suppress(KeyError):
                self.repository.cache.get(case_id(reference), evict=True)
        return ErasureOutcome(reference, "erased", record.public())

    def _check_erasable(self, reference: str, cid: str, at: datetime,
                        retention_days: int) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.case_index.c.stage)
                               .where(schema.case_index.c.reference == reference)).first()
        if row is None:
            raise CaseNotFound(reference)
        if row.stage != "closed":
            raise ErasureRefused(f"Case {reference} is open: close it before erasing it; nothing "
                                 "was done.")
        stored = self.recorder.select_events(UUID(cid))
        if any(is_legacy(e.state) for e in stored):
            raise ErasureRefused(f"Case {reference} has events written before per-case keys "
                                 "(under the master key): it cannot be erased alone; see "
                                 "docs/operations.md, Keys and erasure. Nothing was done.")
        closed = [e for e in self.trail(reference) if e.event == "Closed"]
        if not closed:
            raise ErasureRefused(f"Case {reference} has no closing in its trail; nothing was done.")
        closed_at = closed[-1].details.get("at") or closed[-1].at  # when the case says it closed
        allowed = closed_at + timedelta(days=retention_days)
        if at < allowed:
            raise ErasureRefused(
                f"Case {reference} closed on {closed_at:%Y-%m-%d}; the retention period "
                f"(APPEALS_ERASURE_RETENTION_DAYS={retention_days}) allows its erasure from "
                f"{allowed:%Y-%m-%d}; nothing was done.")

    def _check_names(self, reference: str, reason: str) -> None:
        """The reason stays readable for good: refuse one that names a person of the case (a
        defender, the organisation's contact) or the organisation, by any word of four letters
        or more of their names."""
        intake = self.get(reference).intake
        people = [d.get("name") for d in intake.get("defenders") or []]
        organisation = intake.get("organisation") or {}
        people += [organisation.get("name"), organisation.get("contact_name")]
        words = {w.casefold() for name in people if isinstance(name, str)
                 for w in re.findall(r"\w{4,}", name)}
        said = {w.casefold() for w in re.findall(r"\w{4,}", reason or "")}
        if words & said:
            raise ErasureRefused("reason: it names someone of the case (or the organisation); "
                                 "say why without names. Nothing was done.")

    def _save_erasure(self, record: Erasure, reference: str, actor: str, step: str) -> None:
        pending = record.collect_events()
        audit = AuditContext(reference=reference, actor=actor,
                             command_id=f"erasure:{reference}:{step}",
                             summary={"erasure": step, "reference": reference},
                             timestamps=[e.timestamp for e in pending], kind="erasure")
        self.save(*pending, audit=audit)

    def rotate_master_key(self) -> int:
        """Re-wrap every live data key under the current master key (the new key first in
        APPEALS_EVENT_CIPHER_KEY, the old one in APPEALS_EVENT_CIPHER_PREVIOUS_KEYS). Events are
        not re-encrypted. Returns how many keys were re-wrapped."""
        return self.keys.rewrap()

    def verify(self, reference: str) -> ChainReport:
        return self.chain_verifier().verify_reference(reference)

    def chain_verifier(self) -> ChainVerifier:
        """Links and, with the public keys this store knows, their signatures."""
        return ChainVerifier(self.engine, self.recorder, self.chain_keys)

    def verify_all(self) -> list[ChainReport]:
        return [self.verify(row["reference"]) for row in self.list_cases()]

    # The case index's reads are store.index's (the doors may read it without this store): one
    # implementation, over this store's engine.
    def list_cases(self, **filters: Any) -> list[dict[str, Any]]:
        """The case index, filtered, sorted and paged: store.index.IndexReader.list_cases."""
        return self.index.list_cases(**filters)

    def count_cases(self, *, where: Sequence[Any] = (), **filters: Any) -> int:
        """How many cases list_cases would list with these filters (one COUNT query)."""
        return self.index.count_cases(where=where, **filters)

    def open_case_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Open cases by stage and by risk (urgency until verified): two GROUP BY queries."""
        return self.index.open_case_counts()

    def add_details(self, rows: list[dict[str, Any]]) -> None:
        """Give rows of list_cases(details=False) their `threat_types` and `stage_detail`."""
        self.index.add_details(rows)

    def pending_for(self, username: str, now: datetime, *, details: bool = True,
                    limit: int | None = None, offset: int = 0, sort: str = "deadline",
                    **filters: Any) -> list[dict[str, Any]]:
        """The cases waiting for a decision of this person (store.waiting: by their roles, the
        cases they hold, four eyes, per action), soonest deadline first (or by `sort`), found
        and paged by the database. Each row gets `waiting` (decision names) for this person and
        `overdue` at `now`. `details`: as in list_cases; `limit`, `offset`: one page; `filters`:
        those of list_cases (stage, risk, overdue_at, country, search, threat, state)."""
        return self.pending_page(username, now, details=details, limit=limit, offset=offset,
                                 sort=sort, count=False, **filters)[0]

    def pending_page(self, username: str, now: datetime, *, details: bool = True,
                     limit: int | None = None, offset: int = 0, sort: str = "deadline",
                     count: bool = True, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        """pending_for, and how many cases wait for the person in all with these filters (one
        COUNT; with `count` False, the number of rows returned)."""
        roles = self.user_roles(username)
        where = waiting.condition(username, roles)
        if where is None:
            return [], 0
        filters.setdefault("state", "open")
        rows = self.list_cases(details=details, limit=limit, offset=offset, sort=sort,
                               where=[where], **filters)
        with self.engine.connect() as conn:
            tracks = waiting.track_waits(conn, [r["reference"] for r in rows])
        mine = []
        for row in rows:
            row["overdue"] = bool(row["next_deadline"] and row["next_deadline"] < now)
            names = waiting.decisions(row, tracks.get(row["reference"]), username, roles)
            if names:  # empty only when the case moved on between the two reads
                mine.append({**row, "waiting": names})
        total = self.count_cases(**filters, where=[where]) if count else len(mine)
        return mine, total

    # ------------------------------------------------------------------------------- users
    # The four methods below are first-setup and test helpers: each records through the users log
    # as the actor "bootstrap" (store.users). The doors act for a signed-in person with
    # `self.users.add / set_roles / set_password / set_totp / deactivate / reactivate(..., actor=)`.
    def add_user(self, username: str, display_name: str, email: str, roles: list[str]) -> None:
        with _as_store_error():
            self.users.setup_user(username, display_name, email, roles)

    def set_roles(self, username: str, roles: list[str]) -> None:
        with _as_store_error():
            self.users.setup_roles(username, roles)

    def user_roles(self, username: str) -> set[str]:
        """The roles of an active user; empty for unknown or inactive users. Only roles that both
        the users table and the users log (replayed; the log is chained and signed) give count:
        a role granted by writing the table alone is not granted (and is reported by
        `verify_users` and the store verification)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.users.c.roles, schema.users.c.active)
                               .where(schema.users.c.username == username)).first()
        if row is None or not row.active:
            return set()
        roles = set(filter(None, row.roles.split(",")))
        logged = self._logged_users()
        if logged is None:  # a registry from before the users log: the table is all there is
            return roles
        state = logged.get(username)
        if state is None or not state["active"]:
            _log.warning("a users table row is not in the users log: no roles granted "
                         "(see `appeals users verify`)")
            return set()
        if not roles <= set(state["roles"]):
            _log.warning("a users table row has roles the users log does not give: not granted "
                         "(see `appeals users verify`)")
        return roles & set(state["roles"])

    def _logged_users(self) -> dict[str, dict[str, Any]] | None:
        """The users log's replayed users (None before the log starts), cached by its version."""
        newest = self.recorder.select_events(USERS_LOG_ID, desc=True, limit=1)
        if not newest:
            if self.checkpoint_dir is not None and sealed_chain(self.checkpoint_dir,
                                                                str(USERS_LOG_ID)):
                _log.error("the users log is gone although a checkpoint sealed it: no roles "
                           "granted (see `appeals audit store`)")
                return {}
            return None
        version = newest[0].originator_version
        cached_version, cached = self._users_cache
        if cached_version != version:
            cached = self.users._replayed()
            self._users_cache = (version, cached)
        return cached

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.users.c.username, schema.users.c.display_name,
                                       schema.users.c.email, schema.users.c.roles,
                                       schema.users.c.active)
                                .order_by(schema.users.c.username)).mappings()
            return [dict(r, roles=r["roles"].split(",")) for r in rows]

    # ------------------------------------------------------------------- credentials (web sign-in)
    def set_password(self, username: str, password_hash: str | None) -> None:
        """Store a password hash (made by the caller, e.g. argon2); None removes the password.
        Setup/test helper (actor "bootstrap"); doors use `self.users.set_password(..., actor=)`."""
        with _as_store_error():
            self.users.setup_password(username, password_hash)

    def password_hash(self, username: str) -> str | None:
        """The stored hash of an active user; None when unknown, inactive or without a password."""
        return self._credential(username, schema.users.c.password_hash)

    def set_totp(self, username: str, secret: str | None) -> None:
        """Store (or with None remove) the base32 secret of the user's one-time-code app.
        Setup/test helper (actor "bootstrap"); doors use `self.users.set_totp(..., actor=)`."""
        with _as_store_error():
            self.users.setup_totp(username, secret)

    def totp_secret(self, username: str) -> str | None:
        return self._credential(username, schema.users.c.totp_secret)

    def record_sign_in(self, username: str, at: datetime, *, ok: bool, reason: str = "") -> int:
        """Record one sign-in attempt; `username` is what was typed (cut to the column size).
        Returns the attempt's id (see `settle_sign_in`)."""
        with self.engine.begin() as conn:
            result = conn.execute(schema.sign_ins.insert().values(
                username=username[:100], at=at, ok=ok, reason=reason[:30]))
            key = result.inserted_primary_key
        return int(key[0]) if key and key[0] is not None else 0

    def settle_sign_in(self, attempt: int, *, ok: bool, reason: str = "") -> None:
        """Say how an attempt recorded before its password was checked ended (desk.signin): a
        success, or the reason it failed."""
        t = schema.sign_ins
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == attempt).values(ok=ok, reason=reason[:30]))

    def failed_sign_ins(self, username: str, *, since_success: bool = True,
                        counted_reasons: tuple[str, ...] = ("password", "second_factor")
                        ) -> tuple[int, datetime | None]:
        """How many failures of the given reasons follow the last successful sign-in (or all,
        with since_success False), and when the latest of them was."""
        t = schema.sign_ins
        with self.engine.connect() as conn:
            last_ok = None
            if since_success:
                last_ok = conn.execute(select(func.max(t.c.id)).where(
                    (t.c.username == username[:100]) & t.c.ok)).scalar()
            q = select(func.count(), func.max(t.c.at)).where(
                (t.c.username == username[:100]) & ~t.c.ok & t.c.reason.in_(counted_reasons))
            if last_ok is not None:
                q = q.where(t.c.id > last_ok)
            count, latest = conn.execute(q).one()
        return int(count), schema.utc(latest)

    def sign_in_log(self, username: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        t = schema.sign_ins
        q = select(t.c.username, t.c.at, t.c.ok, t.c.reason).order_by(t.c.id.desc()).limit(limit)
        if username is not None:
            q = q.where(t.c.username == username[:100])
        with self.engine.connect() as conn:
            return [dict(r, at=schema.utc(r["at"])) for r in conn.execute(q).mappings()]

    def user(self, username: str) -> dict[str, Any] | None:
        """One user's registry entry (no credentials), or None."""
        u = schema.users
        with self.engine.connect() as conn:
            row = conn.execute(select(u.c.username, u.c.display_name, u.c.email, u.c.roles,
                                      u.c.active).where(u.c.username == username)).mappings().first()
        return None if row is None else dict(row, roles=list(filter(None, row["roles"].split(","))))

    def users_log(self) -> list[UsersLogEntry]:
        """Every change to users and roles (`appeals users log`); no credentials."""
        return self.users.log()

    def verify_users(self) -> UsersReport:
        """The users log's chain, and any user whose table row differs from the log."""
        return self.users.verify()

    def _credential(self, username: str, column: Any) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(column, schema.users.c.active)
                               .where(schema.users.c.username == username)).first()
        if row is None or not row.active:
            return None
        value: str | None = row[0]
        logged = self._logged_users()
        if logged is not None and value is not None:
            state = logged.get(username)
            name = "password" if column is schema.users.c.password_hash else "second_factor"
            if state is None or not state["active"] or state.get(name) != fingerprint(value):
                _log.warning("a users table credential differs from the users log: not used "
                             "(see `appeals users verify`)")
                return None
        return value

    # ------------------------------------------------------------- case-opening requests (desk)
    def reserve_reference(self, request_id: str, reference: str, username: str,
                          at: datetime) -> str:
        """Bind a case-opening request to the reference it will open, before its workflow is
        started: the reference already bound to this request when there is one (a repeated
        request), else `reference`. CaseAlreadyExists when another request or an opened case
        holds `reference`."""
        r = schema.requests
        for _ in range(2):
            bound = self.reserved_reference(request_id)
            if bound is not None:
                return bound
            if self._exists(reference):
                raise CaseAlreadyExists(reference)
            try:
                with self.engine.begin() as conn:
                    conn.execute(r.insert().values(request_id=request_id, reference=reference,
                                                   username=username[:100], created_at=at))
                return reference
            except sa_exc.IntegrityError:
                continue  # the request was bound meanwhile (read it), or the reference taken
        bound = self.reserved_reference(request_id)
        if bound is not None:
            return bound
        raise CaseAlreadyExists(reference)

    def reserved_reference(self, request_id: str) -> str | None:
        r = schema.requests
        with self.engine.connect() as conn:
            found: str | None = conn.execute(select(r.c.reference)
                                             .where(r.c.request_id == request_id)).scalar()
        return found

    def release_reference(self, request_id: str) -> None:
        """Unbind a request whose reference turned out to be taken in Temporal by another door
        (its workflow was never started by this request)."""
        r = schema.requests
        with self.engine.begin() as conn:
            conn.execute(r.delete().where(r.c.request_id == request_id))

    def reserved_references(self) -> set[str]:
        """Every reference a case-opening request is bound to (opened or still being opened)."""
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(select(schema.requests.c.reference))}

    # ------------------------------------------------------------------------------ plumbing
    @property
    def engine(self) -> Engine:
        engine = self.recorder.datastore.engine  # type: ignore[attr-defined]
        assert engine is not None
        return engine  # type: ignore[no-any-return]

    def _exists(self, reference: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(schema.case_index.c.reference)
                                .where(schema.case_index.c.reference == reference)
                                ).first() is not None



def _trail_entry(ev: Any) -> TrailEntry:
    data = dict(ev.__dict__)
    actor = data.pop("actor", "")
    command = data.pop("command_id", "")
    for key in ("originator_id", "originator_version", "timestamp", "originator_topic"):
        data.pop(key, None)
    return TrailEntry(ev.originator_version, ev.timestamp, actor,
                      event_name(type(ev).__qualname__), command, data)


@contextlib.contextmanager
def _as_store_error() -> Iterator[None]:
    """The old helpers' errors: StoreError for refusals, ValueError for an unknown role."""
    try:
        yield
    except UnknownRole:
        raise
    except UsersRuleError as exc:
        raise StoreError(exc.message) from None


def verifier_without_key(database_url: str, keys: ChainKeys | None = None) -> ChainVerifier:
    """A chain verifier over the raw rows: what an auditor runs, with no cipher key at all (with
    `keys`, the public keys, it checks the links' signatures too)."""
    factory = AppealsFactory(Environment(CaseStore.name, {"SQLALCHEMY_URL": database_url,
                                                          "CREATE_TABLE": "n"}))
    recorder = factory.application_recorder()
    engine = factory.datastore.engine
    assert isinstance(engine, Engine)
    return ChainVerifier(engine, recorder, keys)
