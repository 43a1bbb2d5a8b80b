"""Credentials for the web interface: argon2 password hashes, TOTP second factor, the slow-down after
repeated failed sign-ins, sessions held on the server and CSRF tokens.

Nothing here logs or returns a password, a code or a secret; failures are recorded in the store by
user name, time and reason only.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from store.app import CaseStore

HASHER = PasswordHasher()
# Verified against when the user is unknown, so that an unknown name takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash("not a password of anyone")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
SESSION_KEY_FILE = "web-session.key"
# Roles that must use a second factor when the interface is told so (production by default).
SECOND_FACTOR_ROLES = frozenset({"ministry_liaison", "head"})


class PasswordRejected(ValueError):
    """A new password that does not meet the minimum (the message says which rule)."""


def set_password(store: CaseStore, username: str, password: str) -> None:
    """Hash a new password with argon2 and store it for an existing user (`appeals users passwd`)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password has at most {MAX_PASSWORD_LENGTH} characters.")
    store.set_password(username, HASHER.hash(password))


def enable_totp(store: CaseStore, username: str, issuer: str = "Urgent appeals") -> str:
    """Create and store a new TOTP secret for the user; returns the otpauth:// URI to show once as a
    QR code or text in the user's authenticator app. Sign-in then requires the current code."""
    secret = pyotp.random_base32()
    store.set_totp(username, secret)
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def disable_totp(store: CaseStore, username: str) -> None:
    store.set_totp(username, None)


def check_password(stored_hash: str | None, password: str) -> bool:
    """Constant-ish time: an unknown user or a missing hash still costs one argon2 verification."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_totp(secret: str, code: str, at: datetime) -> bool:
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return False
    return bool(pyotp.TOTP(secret).verify(code, for_time=at, valid_window=1))


@dataclass(frozen=True)
class ThrottlePolicy:
    """After `free_attempts` consecutive failures for a user name, each further try must wait
    `base_seconds` * 2^(failures - free_attempts) after the last failure (at most `max_seconds`);
    a try during the wait is refused without looking at the password."""

    free_attempts: int = 5
    base_seconds: float = 30.0
    max_seconds: float = 900.0

    def wait(self, failures: int, last_failure: datetime | None, now: datetime) -> float:
        """Seconds still to wait before the next try is looked at (0: go ahead)."""
        if failures < self.free_attempts or last_failure is None:
            return 0.0
        delay = min(self.max_seconds, self.base_seconds * 2 ** (failures - self.free_attempts))
        remaining = (last_failure + timedelta(seconds=delay) - now).total_seconds()
        return max(0.0, remaining)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass
class ServerSession:
    username: str
    csrf: str
    started: float
    seen: float


@dataclass
class SessionRegistry:
    """Signed-in sessions, held in the server's memory: the cookie carries only a random id (signed),
    so signing out (or a restart) ends a session for good, and idle sessions expire."""

    idle_seconds: float = 30 * 60
    max_seconds: float = 12 * 3600
    monotonic: Callable[[], float] = time.monotonic
    _sessions: dict[str, ServerSession] = field(default_factory=dict)

    def start(self, username: str) -> tuple[str, ServerSession]:
        self._prune()
        sid = new_token()
        now = self.monotonic()
        session = ServerSession(username, new_token(), now, now)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> ServerSession | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self.monotonic()
        if now - session.seen > self.idle_seconds or now - session.started > self.max_seconds:
            self._sessions.pop(sid, None)
            return None
        session.seen = now
        return session

    def end(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _prune(self) -> None:
        now = self.monotonic()
        for sid, s in list(self._sessions.items()):
            if now - s.seen > self.idle_seconds or now - s.started > self.max_seconds:
                del self._sessions[sid]


def session_key(var_dir: Path, environment: str) -> bytes:
    """The key that signs session cookies: `<var_dir>/keys/web-session.key` (mode 0600), created in
    development; production refuses to start without it (or pass `session_key` to build_app)."""
    path = var_dir / "keys" / SESSION_KEY_FILE
    if not path.exists():
        if environment != "development":
            raise RuntimeError(f"The web session key file {path} is missing; create it with 32 random "
                               "bytes (mode 0600), e.g. `head -c 32 /dev/urandom | base64 > FILE`.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
    if path.stat().st_mode & 0o077:
        raise RuntimeError(f"The web session key file {path} must be readable by its owner only (0600).")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise RuntimeError(f"The web session key in {path} is too short (at least 32 characters).")
    return key


def utcnow() -> datetime:
    return datetime.now(UTC)
