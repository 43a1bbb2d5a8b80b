"""Users and sessions: the registry of staff through the users log, and the session registry of
both doors.

Every change to users and roles is an event of the users log (domain.users), saved by the case
store: encrypted like case events, chained (chain rows keyed by USERS_LOG_ID, verified by
`verify`) and, in the same transaction, applied to `appeals_users`, which stays the read model the
doors check roles and credentials against. `verify` also replays the log and compares it with that
table, so that a change made in the table alone (a role granted by an UPDATE) is reported by
username.

Each change names its actor, the signed-in person the door acts for; the rules of who may change
what are the log's (domain.users). The `setup_*` helpers record as the actor `bootstrap`, with the
head checks passed: they are for first setup and test fixtures, never for a door acting for a person.

When the log starts (its first change), users already in the table are adopted into it (the event
`LogStarted` lists them), so a registry from before the log keeps working.

Sessions: `create_session` returns a random token once and stores only its SHA-256; a session
ends when it expires, is revoked (sign-out, `revoke_sessions`, deactivation or a password change,
the last two in the same transaction as the change) or its user is deactivated.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.orm import Session

from domain.users import (
    BOOTSTRAP,
    RESERVED_NAMES,
    USERS_LOG_ID,
    NotPermitted,
    UnknownUser,
    UserInactive,
    UsersLog,
    public_details,
)
from store import schema
from store.chain import USERS_LOG_NAME, ChainReport, event_name, users_digest
from store.index import MAX_TOKEN_LENGTH, session_user, token_id
from store.recorder import AuditContext

if TYPE_CHECKING:
    from store.app import CaseStore

DOORS = frozenset({"web", "cli"})
# How often a change that lost a race for the log's next version is tried again.
MAX_ATTEMPTS = 30
# The read model's columns that the log decides, and the credentials it fingerprints.
_COMPARED = ("display_name", "email", "roles", "active")
_CREDENTIALS = (("password", "password_hash"), ("second_factor", "totp_secret"))


def fingerprint(value: str) -> str:
    """SHA-256 of a stored credential value (an argon2 hash, a TOTP secret or its ciphertext): what
    the log keeps instead of the value, enough to tell whether the table's value was swapped and of
    no use for guessing a password (the argon2 hash carries its own random salt)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class UsersLogEntry:
    """One change in the users log, for `appeals users log` (no credential in `details`)."""

    version: int
    at: datetime
    actor: str
    event: str
    command_id: str
    details: dict[str, Any]


@dataclass(frozen=True)
class UserDifference:
    """A user whose row in the users table is not what the users log says."""

    username: str
    problem: str

    def describe(self) -> str:
        return f"user {self.username}: {self.problem}"


@dataclass(frozen=True)
class UsersReport:
    """The users log's chain and the users table compared with the log's replayed state."""

    chain: ChainReport
    differences: tuple[UserDifference, ...]

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.differences

    def describe(self) -> list[str]:
        lines = [self.chain.describe()]
        if not self.differences:
            lines.append("users table: matches the users log")
        lines.extend(d.describe() for d in self.differences)
        return lines


class UsersRegistry:
    """The users log and the sessions, over a CaseStore (its cipher, engine and recorder)."""

    def __init__(self, app: CaseStore) -> None:
        self.app = app

    # ----------------------------------------------------------------------------- the doors
    def bootstrap_head(self, username: str, display_name: str, email: str, *,
                       command_id: str | None = None) -> None:
        """Create the first head; refused (BootstrapRefused) once any user has the head role."""
        self._change(BOOTSTRAP, username, command_id,
                     lambda log, cid: log.bootstrap_head(username, display_name, email, cid))

    def add(self, username: str, display_name: str, email: str, roles: Iterable[str], *,
            actor: str, command_id: str | None = None) -> None:
        self._check_actor(actor)
        wanted = list(roles)
        self._change(actor, username, command_id,
                     lambda log, cid: log.add_user(actor, username, display_name, email, wanted,
                                                   cid))

    def set_roles(self, username: str, roles: Iterable[str], *, actor: str,
                  command_id: str | None = None) -> None:
        self._check_actor(actor)
        wanted = list(roles)
        self._change(actor, username, command_id,
                     lambda log, cid: log.set_roles(actor, username, wanted, cid))

    def set_password(self, username: str, password_hash: str | None, *, actor: str,
                     command_id: str | None = None) -> None:
        """Store a password hash made by the caller (argon2); None removes the password. The user
        themselves or a head; the user's sessions are revoked in the same transaction."""
        self._check_actor(actor)
        self._set_password(actor, username, password_hash, command_id)

    def set_totp(self, username: str, secret: str | None, *, actor: str,
                 command_id: str | None = None) -> None:
        """Store (None: remove) the value the door checks one-time codes against, as given (a
        ciphertext of the secret is best). Enrolling: the user or a head; removing: a head."""
        self._check_actor(actor)
        self._set_totp(actor, username, secret, command_id)

    def deactivate(self, username: str, reason: str, *, actor: str,
                   command_id: str | None = None) -> None:
        """A head ends someone's access (their sessions are revoked in the same transaction)."""
        self._check_actor(actor)
        self._change(actor, username, command_id,
                     lambda log, cid: log.deactivate(actor, username, reason, cid), revoke=True)

    def reactivate(self, username: str, *, actor: str, command_id: str | None = None) -> None:
        self._check_actor(actor)
        self._change(actor, username, command_id,
                     lambda log, cid: log.reactivate(actor, username, cid))

    # ------------------------------------------------------------- first setup and test fixtures
    def setup_user(self, username: str, display_name: str, email: str,
                   roles: Iterable[str]) -> None:
        """Add a user as the actor `bootstrap` (first setup, fixtures); doors use `add`."""
        wanted = list(roles)
        self._change(BOOTSTRAP, username, None,
                     lambda log, cid: log.add_user(BOOTSTRAP, username, display_name, email,
                                                   wanted, cid))

    def setup_roles(self, username: str, roles: Iterable[str]) -> None:
        wanted = list(roles)
        self._change(BOOTSTRAP, username, None,
                     lambda log, cid: log.set_roles(BOOTSTRAP, username, wanted, cid))

    def setup_password(self, username: str, password_hash: str | None) -> None:
        self._set_password(BOOTSTRAP, username, password_hash, None)

    def setup_totp(self, username: str, secret: str | None) -> None:
        self._set_totp(BOOTSTRAP, username, secret, None)

    # ------------------------------------------------------------------------------- reads
    def log(self) -> list[UsersLogEntry]:
        """Every change to users and roles, in order, decrypted; credentials left out."""
        entries = []
        for ev in self.app.repository.event_store.get(USERS_LOG_ID):
            data = dict(ev.__dict__)
            actor = data.pop("actor", "")
            command = data.pop("command_id", "")
            for key in ("originator_id", "originator_version", "timestamp", "originator_topic"):
                data.pop(key, None)
            entries.append(UsersLogEntry(ev.originator_version, ev.timestamp,  # type: ignore[attr-defined]
                                         actor, event_name(type(ev).__qualname__), command,
                                         public_details(data)))
        return entries

    def verify(self) -> UsersReport:
        """The log's chain, and every user whose table row differs from the replayed log."""
        chain = self.app.chain_verifier().verify_users_log()
        logged = self._replayed()
        with self.app.engine.connect() as conn:
            table = {row["username"]: row for row in conn.execute(select(schema.users)).mappings()}
        differences = []
        for name in sorted(set(logged) | set(table)):
            if name not in table:
                differences.append(UserDifference(name, "in the users log but not in the users "
                                                        "table"))
                continue
            if name not in logged:
                differences.append(UserDifference(name, "in the users table but not in the users "
                                                        "log"))
                continue
            row, state = _read_model(table[name]), logged[name]
            fields = [f for f in _COMPARED if row[f] != state[f]]
            fields += [f for f, _ in _CREDENTIALS if row[f] != state[f]]
            if fields:
                differences.append(UserDifference(
                    name, f"{', '.join(fields)} in the users table differ from the users log"))
        return UsersReport(chain, tuple(differences))

    def _replayed(self) -> dict[str, dict[str, Any]]:
        try:
            log: UsersLog = self.app.repository.get(USERS_LOG_ID)
        except AggregateNotFoundError:
            return {}
        return log.users

    # ---------------------------------------------------------------------------- sessions
    def create_session(self, username: str, door: str, lifetime: timedelta, *,
                       now: datetime | None = None) -> str:
        """A new session for an active user; the token is returned once (only its hash is
        stored). `door`: "web" or "cli"."""
        if door not in DOORS:
            raise ValueError("door must be web or cli")
        if lifetime <= timedelta(0):
            raise ValueError("a session's lifetime must be positive")
        now = (now or datetime.now(UTC)).astimezone(UTC)
        token = secrets.token_urlsafe(32)
        with self.app.engine.begin() as conn:
            active = conn.execute(select(schema.users.c.active)
                                  .where(schema.users.c.username == username)).scalar()
            if active is None:
                raise UnknownUser(f"No user {username!s:.100}.")
            if not active:
                raise UserInactive(f"User {username} is deactivated.")
            conn.execute(insert(schema.sessions).values(
                id=token_id(token), username=username, door=door, created_at=now,
                expires_at=now + lifetime, last_seen_at=now))
        return token

    def session_user(self, token: str, now: datetime, *,
                     idle: timedelta | None = None) -> str | None:
        """The username of a live session, else None (store.index.session_user: the one check,
        which the doors also run without this store)."""
        return session_user(self.app.engine, token, now, idle=idle)

    def end_session(self, token: str, *, now: datetime | None = None) -> bool:
        """Sign-out: revoke the one session of this token (True when there was a live one)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        s = schema.sessions
        with self.app.engine.begin() as conn:
            result = conn.execute(update(s).where((s.c.id == token_id(token))
                                                  & s.c.revoked_at.is_(None))
                                  .values(revoked_at=now or datetime.now(UTC)))
        return bool(result.rowcount)

    def revoke_sessions(self, username: str, *, now: datetime | None = None) -> int:
        """Revoke every session of the user, on both doors; how many were live."""
        with self.app.engine.begin() as conn:
            result = conn.execute(_revoke(username, now or datetime.now(UTC)))
        return int(result.rowcount)

    def prune_sessions(self, before: datetime) -> int:
        """Delete sessions that expired or were revoked before `before`; how many."""
        s = schema.sessions
        with self.app.engine.begin() as conn:
            result = conn.execute(delete(s).where((s.c.expires_at < before)
                                                  | (s.c.revoked_at < before)))
        return int(result.rowcount)

    def prune_sign_ins(self, before: datetime) -> int:
        """Delete sign-in attempts recorded before `before`; how many."""
        t = schema.sign_ins
        with self.app.engine.begin() as conn:
            result = conn.execute(delete(t).where(t.c.at < before))
        return int(result.rowcount)

    # ---------------------------------------------------------------------------- plumbing
    @staticmethod
    def _check_actor(actor: str) -> None:
        if not isinstance(actor, str) or not actor or actor.lower() in RESERVED_NAMES:
            raise NotPermitted("Changes to users are made by a signed-in person; "
                               f"{actor!s:.20} is not one.")

    def _set_password(self, actor: str, username: str, password_hash: str | None,
                      command_id: str | None) -> None:
        fp = None if password_hash is None else fingerprint(password_hash)
        self._change(actor, username, command_id,
                     lambda log, cid: log.set_password(actor, username, fp, cid),
                     credentials={"password_hash": password_hash}, revoke=True)

    def _set_totp(self, actor: str, username: str, secret: str | None,
                  command_id: str | None) -> None:
        if secret is None:
            self._change(actor, username, command_id,
                         lambda log, cid: log.remove_second_factor(actor, username, cid),
                         credentials={"totp_secret": None})
        else:
            fp = fingerprint(secret)
            self._change(actor, username, command_id,
                         lambda log, cid: log.enrol_second_factor(actor, username, fp, cid),
                         credentials={"totp_secret": secret})

    def _change(self, actor: str, username: str, command_id: str | None,
                command: Callable[[UsersLog, str], None], *,
                credentials: dict[str, str | None] | None = None, revoke: bool = False) -> None:
        """Apply one command to the log and save its events with the users table's new row (and
        revoked sessions) in one transaction; a lost race is retried on the fresh log, a repeated
        command id records nothing. Refusals (domain.users errors) record nothing."""
        from store.app import ConcurrentWriteError  # store.app imports this module

        cid = command_id or f"users-{uuid.uuid4()}"
        for attempt in range(MAX_ATTEMPTS):
            if self.app.prior_result(cid) is not None:
                return
            log = self._load(actor, cid)
            command(log, cid)
            pending = log.collect_events()
            if all(event_name(type(e).__qualname__) == "LogStarted" for e in pending):
                return  # nothing changed (the log is started by its first change)
            state = dict(log.users[username])
            audit = AuditContext(
                reference=USERS_LOG_NAME, actor=actor, command_id=cid,
                summary={"users_log_version": log.version, "username": username,
                         "events": [event_name(type(e).__qualname__) for e in pending]},
                timestamps=[e.timestamp for e in pending], kind="users",
                apply=_writer(username, state, credentials or {}, revoke),
                state_digest=users_digest(log.users))
            try:
                self.app.save(*pending, audit=audit)
                return
            except IntegrityError:
                if self.app.prior_result(cid) is not None:
                    return
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise ConcurrentWriteError("The users log is being changed by others; try again.")

    def _load(self, actor: str, command_id: str) -> UsersLog:
        """The log, or a new one (started by the actor of its first change)."""
        try:
            return cast(UsersLog, self.app.repository.get(USERS_LOG_ID))
        except AggregateNotFoundError:
            return UsersLog(adopted=self._table_users(), actor=actor, command_id=command_id)

    def _table_users(self) -> list[dict[str, Any]]:
        """The users in the table before the log started, as the log adopts them."""
        with self.app.engine.connect() as conn:
            rows = conn.execute(select(schema.users).order_by(schema.users.c.username)).mappings()
            return [{"username": r["username"], **_read_model(r)} for r in rows]


def _read_model(row: Any) -> dict[str, Any]:
    """A users table row in the log's terms (roles sorted, credentials as fingerprints)."""
    out = {"display_name": row["display_name"], "email": row["email"],
           "roles": sorted(filter(None, row["roles"].split(","))), "active": bool(row["active"])}
    for name, column in _CREDENTIALS:
        out[name] = None if row[column] is None else fingerprint(row[column])
    return out


def _revoke(username: str, now: datetime) -> Any:
    s = schema.sessions
    return (update(s).where((s.c.username == username) & s.c.revoked_at.is_(None))
            .values(revoked_at=now))


def _writer(username: str, state: dict[str, Any], credentials: dict[str, str | None],
            revoke: bool) -> Callable[[Session], None]:
    """The users table's row after the change (and the revoked sessions), written by the recorder
    in the transaction of the log's events."""

    def apply(session: Session) -> None:
        u = schema.users
        values = {"display_name": state["display_name"], "email": state["email"],
                  "roles": ",".join(sorted(state["roles"])), "active": state["active"],
                  **credentials}
        result = session.execute(update(u).where(u.c.username == username).values(**values))
        if not cast(CursorResult[Any], result).rowcount:
            session.execute(insert(u).values(username=username, created_at=datetime.now(UTC),
                                             **values))
        if revoke:
            session.execute(_revoke(username, datetime.now(UTC)))

    return apply
