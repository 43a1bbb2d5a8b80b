"""The event cipher: one data key per aggregate (each case, the users log, each erasure record),
wrapped by the master key, and ciphertext bound to the event's case, version and type.

Stored state, from this version on (format 1):

    MAGIC (4 bytes) | nonce (12) | AES-GCM(data key, zlib(state), aad=(case id, version, topic))

so an event whose ciphertext is moved to another case or version, or whose type (topic) is
changed, fails to decrypt (EventUnreadable, naming the case id and version only).

Events written before (format 0: eventsourcing's AESCipher under the master key, no associated
data, no marker) still decrypt with the master key or a previous master key: cases that were
running keep running. A format-0 state that happens to begin with MAGIC (a 1 in 2**32 chance of
its random nonce) is still read, because a failed format-1 decryption falls back to format 0.

Data keys: 32 random bytes, created when the aggregate's first event is written, stored in
`appeals_case_keys` wrapped with AES-GCM under the current master key (associated data: the
aggregate id, so a wrapped key moved to another case does not unwrap). Rotating the master key
re-wraps the data keys (`CaseKeys.rewrap`); it never re-encrypts events. Erasure (`destroy`)
overwrites the wrapped key and marks it destroyed: the case's events can no longer be read.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic
from sqlalchemy import Engine, insert, select, update
from sqlalchemy import exc as sa_exc

from store import schema

MAGIC = b"\xa5AK1"
NONCE = 12
KEY_LENGTH = 32
# How long a process keeps an unwrapped data key for reads (writes always look at the table, so
# an erased case takes no new event from a process that still holds its key).
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 2000
_WRAP_CONTEXT = b"appeals-case-key\x1f"


class EventUnreadable(Exception):
    """An event that does not decrypt: moved, relabelled, altered, or its key destroyed.
    The message names the case id and version, never the content."""

    def __init__(self, case_id: str, version: int, reason: str) -> None:
        super().__init__(f"case {case_id} version {version}: the event cannot be read ({reason})")
        self.case_id = case_id
        self.version = version
        self.reason = reason


class CaseErased(EventUnreadable):
    """The case's data key was destroyed (erased): its events are unreadable for good."""

    def __init__(self, case_id: str, version: int) -> None:
        super().__init__(case_id, version, "the case was erased: its key is destroyed")


class MasterKeyError(Exception):
    """A data key wrapped by a master key that is not configured, or that does not unwrap."""


def key_id(master: bytes) -> str:
    """The id a master key is recorded by beside the keys it wraps (as worker.keys does)."""
    return "fp-" + hashlib.sha256(master).hexdigest()[:12]


def associated_data(case_id: str, version: int, topic: str) -> bytes:
    """What binds a ciphertext to its place: length-prefixed case id, version and topic."""
    out = b""
    for part in (case_id.encode(), str(version).encode(), topic.encode()):
        out += len(part).to_bytes(4, "big") + part
    return out


@dataclass(frozen=True)
class MasterKeys:
    """The current master key (wraps new and re-wrapped data keys) and previous ones (accepted
    for unwrapping, and for events written before per-case keys)."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        """"CURRENT[,PREVIOUS...]", each base64 of 32 bytes (worker.settings builds this)."""
        keys = [base64.b64decode(part.strip()) for part in text.split(",") if part.strip()]
        if not keys or any(len(k) != KEY_LENGTH for k in keys):
            raise MasterKeyError("the event cipher key must be base64 of 32 bytes")
        return cls(keys[0], tuple(k for k in keys[1:] if k != keys[0]))

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def by_id(self) -> dict[str, bytes]:
        return {key_id(k): k for k in (self.current, *self.previous)}

    def all(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


def wrap(master: bytes, case_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(master).encrypt(nonce, data_key, _WRAP_CONTEXT + case_id.encode())


def unwrap(master: bytes, case_id: str, wrapped: bytes) -> bytes:
    return AESGCM(master).decrypt(wrapped[:NONCE], wrapped[NONCE:],
                                  _WRAP_CONTEXT + case_id.encode())


class CaseKeys:
    """The data keys of all aggregates, in `appeals_case_keys`, with a small in-process cache."""

    def __init__(self, engine: Engine, masters: MasterKeys) -> None:
        self.engine = engine
        self.masters = masters
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- lookups
    def _row(self, case_id: str) -> Any:
        t = schema.case_keys
        with self.engine.connect() as conn:
            return conn.execute(select(t.c.key_id, t.c.wrapped_key, t.c.destroyed_at)
                                .where(t.c.case_id == case_id)).first()

    def _unwrapped(self, case_id: str, row: Any) -> bytes:
        master = self.masters.by_id().get(row.key_id)
        if master is None:
            raise MasterKeyError(
                f"case {case_id}: its data key is wrapped by master key {row.key_id}, which is "
                "not configured (APPEALS_EVENT_CIPHER_KEY or APPEALS_EVENT_CIPHER_PREVIOUS_KEYS)")
        try:
            return unwrap(master, case_id, bytes(row.wrapped_key))
        except InvalidTag:
            raise MasterKeyError(f"case {case_id}: its wrapped data key does not unwrap (altered "
                                 "or moved from another case)") from None

    def for_reading(self, case_id: str, version: int) -> bytes | None:
        """The data key of an aggregate; None when it has none (only format-0 events)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(case_id)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        row = self._row(case_id)
        if row is None:
            return None
        if row.destroyed_at is not None or row.wrapped_key is None:
            self.forget(case_id)
            raise CaseErased(case_id, version)
        key = self._unwrapped(case_id, row)
        self._remember(case_id, key, now)
        return key

    def for_writing(self, case_id: str, version: int) -> bytes:
        """The data key to encrypt a new event with: created (and stored wrapped) with the
        aggregate's first event; refused for an erased case."""
        for _ in range(3):
            row = self._row(case_id)
            if row is not None:
                if row.destroyed_at is not None or row.wrapped_key is None:
                    self.forget(case_id)
                    raise CaseErased(case_id, version)
                with self._lock:
                    hit = self._cache.get(case_id)
                if hit is not None:
                    return hit[1]
                key = self._unwrapped(case_id, row)
                self._remember(case_id, key, time.monotonic())
                return key
            key = os.urandom(KEY_LENGTH)
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(schema.case_keys).values(
                        case_id=case_id, key_id=self.masters.current_id,
                        wrapped_key=wrap(self.masters.current, case_id, key),
                        created_at=datetime.now(UTC)))
            except sa_exc.IntegrityError:
                continue  # another process created it first: use theirs
            self._remember(case_id, key, time.monotonic())
            return key
        raise MasterKeyError(f"case {case_id}: its data key could not be created")

    def _remember(self, case_id: str, key: bytes, now: float) -> None:
        with self._lock:
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.clear()
            self._cache[case_id] = (now, key)

    def forget(self, case_id: str) -> None:
        with self._lock:
            self._cache.pop(case_id, None)

    # --------------------------------------------------------------------- administration
    def state(self, case_id: str) -> str:
        """"none" (no data key: no event written since per-case keys), "live" or "destroyed"."""
        row = self._row(case_id)
        if row is None:
            return "none"
        return "destroyed" if row.destroyed_at is not None else "live"

    def destroy(self, case_id: str, at: datetime) -> None:
        """Overwrite the wrapped key and mark it destroyed (erasure). On SQLite the old bytes
        are zeroed on disk too (secure_delete and a WAL checkpoint); PostgreSQL keeps the old
        row version until VACUUM, and backups keep it: see docs/operations.md."""
        t = schema.case_keys
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete = ON")
            conn.execute(update(t).where(t.c.case_id == case_id)
                         .values(wrapped_key=None, destroyed_at=at))
        self.forget(case_id)
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def rewrap(self) -> int:
        """Re-wrap every live data key under the current master key (after a rotation: the new
        key is current, the old one among the previous keys). Events are not touched. Returns
        how many keys were re-wrapped."""
        t = schema.case_keys
        current = self.masters.current_id
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.case_id, t.c.key_id, t.c.wrapped_key, t.c.destroyed_at)
                                .where(t.c.destroyed_at.is_(None) & (t.c.key_id != current))
                                ).all()
        done = 0
        for row in rows:
            key = self._unwrapped(row.case_id, row)
            with self.engine.begin() as conn:
                conn.execute(update(t).where((t.c.case_id == row.case_id)
                                             & (t.c.key_id == row.key_id)
                                             & t.c.destroyed_at.is_(None))
                             .values(key_id=current,
                                     wrapped_key=wrap(self.masters.current, row.case_id, key)))
            done += 1
        return done


class CaseKeyMapper(Mapper[UUID]):
    """eventsourcing's Mapper with the per-aggregate AES-GCM cipher (see the module's text).

    Built by the application's factory (MAPPER_TOPIC) with the master-key AESCipher (format 0)
    and the zlib compressor; the store attaches its CaseKeys (`attach`) once the engine exists."""

    keys: CaseKeys | None = None
    masters: MasterKeys | None = None

    def attach(self, keys: CaseKeys) -> None:
        self.keys = keys
        self.masters = keys.masters
        # Decryption is this class's own (format 1, else format 0 under any master key); the
        # library's path below it only decompresses and decodes.
        self.cipher = None

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        if self.keys is None:  # not attached (never in the store): the library's format 0
            return super().to_stored_event(domain_event)
        topic = get_topic(domain_event.__class__)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        plain = self.transcoder.encode(state)
        if self.compressor:
            plain = self.compressor.compress(plain)
        case_id = str(originator_id)
        key = self.keys.for_writing(case_id, version)
        nonce = os.urandom(NONCE)
        sealed = AESGCM(key).encrypt(nonce, plain, associated_data(case_id, version, topic))
        return StoredEvent(originator_id=originator_id, originator_version=version,
                           topic=topic, state=MAGIC + nonce + sealed)

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        if self.keys is None:
            return super().to_domain_event(stored_event)
        case_id = str(stored_event.originator_id)
        version = stored_event.originator_version
        plain = self._decrypt(case_id, version, stored_event.topic, stored_event.state)
        # The library's own path from here on: decompress, decode, upcast (no cipher).
        return super().to_domain_event(StoredEvent(
            originator_id=stored_event.originator_id, originator_version=version,
            topic=stored_event.topic, state=plain))

    def _decrypt(self, case_id: str, version: int, topic: str, state: bytes) -> bytes:
        assert self.keys is not None and self.masters is not None
        if state.startswith(MAGIC):
            key = self.keys.for_reading(case_id, version)
            if key is not None:
                body = state[len(MAGIC):]
                try:
                    return AESGCM(key).decrypt(body[:NONCE], body[NONCE:],
                                               associated_data(case_id, version, topic))
                except InvalidTag:
                    pass  # maybe a format-0 state whose nonce begins like MAGIC
            legacy = _legacy(self.masters.all(), state)
            if legacy is not None:
                return legacy
            if key is None:
                raise EventUnreadable(case_id, version, "the case has no data key")
            raise EventUnreadable(case_id, version, "it does not belong to this case, version "
                                  "and type, or it was altered")
        legacy = _legacy(self.masters.all(), state)
        if legacy is None:
            raise EventUnreadable(case_id, version, "written before per-case keys, and no "
                                  "configured master key decrypts it")
        return legacy


def _legacy(masters: Sequence[bytes], state: bytes) -> bytes | None:
    """Format 0: eventsourcing's AESCipher (nonce, tag, ciphertext) under a master key."""
    if len(state) < NONCE + 16:
        return None
    nonce, tag, body = state[:NONCE], state[NONCE:NONCE + 16], state[NONCE + 16:]
    for master in masters:
        try:
            return AESGCM(master).decrypt(nonce, body + tag, None)
        except InvalidTag:
            continue
    return None


def is_legacy(state: bytes) -> bool:
    """Whether a stored state was written before per-case keys (no format marker)."""
    return not state.startswith(MAGIC)
