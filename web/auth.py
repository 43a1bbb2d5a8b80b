"""Credentials for the web interface: argon2 passwords, the TOTP second factor sealed at rest, the
throttle on sign-in attempts, and CSRF tokens. Sessions are the store's (`store.users`), so that
signing out, a password change or a deactivation ends them at once, from either door.

How a sign-in attempt is looked at (`Gate.attempt`):

1. The client address is reduced to a keyed hash (nothing here keeps an address or a user name in
   memory or in a log; `appeals_sign_ins` keeps the typed user name, as before).
2. The attempt takes its place in three moving windows (the `limits` library), *before* anything
   is checked: per user name from this address, per client address over all user names, and per
   user name over all addresses (the ceiling against many addresses, which spares addresses the
   user signed in from lately). A window that is full refuses the attempt unchecked, so thirty
   parallel guesses get no more checks than the windows hold. Refused attempts take no place, so
   guessing on cannot keep a window full: it empties as time moves on.
3. The attempt is recorded in `appeals_sign_ins`, then the password is checked, at most
   `concurrent_checks` argon2 verifications at a time; then the one-time code, if the user has a
   second factor. A code is accepted once (`appeals_totp_steps`).
4. A wrong password, a wrong code, a code used before and an unknown user all get one answer,
   `GENERIC_REFUSAL`, so that nobody learns which part was right.

Nothing here logs or returns a password, a code, a secret or an address.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from desk.secrets import SealError, is_sealed, seal, unseal
from domain.users import UsersRuleError
from store import schema
from store.app import CaseStore

log = logging.getLogger("appeals.web")

HASHER = PasswordHasher()
# Verified against when the user is unknown, so that an unknown name takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash("not a password of anyone")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
SESSION_KEY_FILE = "web-session.key"
# Roles that must use a second factor when the interface is told so (production by default).
SECOND_FACTOR_ROLES = frozenset({"ministry_liaison", "head"})
ISSUER = "Urgent appeals"
# The one answer to a wrong password, a wrong or reused code and an unknown user.
GENERIC_REFUSAL = "The user name, password or code is not right."
# Sign-in attempts, sessions and known addresses older than this are deleted (daily).
SIGN_IN_RETENTION = timedelta(days=90)
SESSION_RETENTION = timedelta(days=7)


class PasswordRejected(ValueError):
    """A new password that does not meet the minimum (the message says which rule)."""


def hash_new_password(password: str) -> str:
    """The argon2 hash of a new password, after checking its length."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(f"A password has at most {MAX_PASSWORD_LENGTH} characters.")
    return HASHER.hash(password)


def set_password(store: CaseStore, username: str, password: str, *, actor: str | None = None) -> None:
    """Hash a new password with argon2 and store it for an existing user. With `actor` (the
    signed-in person: the user or a head) through the users log, which ends the user's sessions;
    without, as the setup actor (`appeals users passwd`, test fixtures)."""
    hashed = hash_new_password(password)
    if actor is None:
        store.set_password(username, hashed)
    else:
        store.users.set_password(username, hashed, actor=actor)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str, issuer: str = ISSUER) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def seal_totp(key: bytes, username: str, secret: str) -> str:
    """What the users table keeps for a TOTP secret: sealed under the TOTP key, bound to the user."""
    return seal(key, secret, context=f"totp:{username}")


def enable_totp(store: CaseStore, username: str, key: bytes, *, actor: str | None = None,
                issuer: str = ISSUER) -> str:
    """Create a TOTP secret for the user and store it sealed (through the users log as `actor`,
    or as the setup actor); returns the otpauth:// URI for the user's authenticator app. The web
    page (`/account/second-factor`) enrols with a confirming code instead."""
    secret = new_totp_secret()
    sealed = seal_totp(key, username, secret)
    if actor is None:
        store.set_totp(username, sealed)
    else:
        store.users.set_totp(username, sealed, actor=actor)
    return provisioning_uri(secret, username, issuer)


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


def totp_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step (TOTP counter) whose code this is, within one step either side of `at`
    (clock drift); None when the code matches none."""
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = totp.timecode(at)
    found = None
    for step in (now - 1, now, now + 1):  # every step compared, in constant time
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def accept_step(engine: Engine, username: str, step: int) -> bool:
    """Remember `step` as the user's last accepted code, if it is later than the last one; False
    when it is not (the code, or a later one, was accepted before). Atomic across processes."""
    t = schema.totp_steps
    for _ in range(5):
        with engine.begin() as conn:
            moved = conn.execute(update(t).where((t.c.username == username) & (t.c.last_step < step))
                                 .values(last_step=step))
            if moved.rowcount:
                return True
            if conn.execute(select(t.c.last_step).where(t.c.username == username)).first():
                return False
        try:
            with engine.begin() as conn:
                conn.execute(insert(t).values(username=username, last_step=step))
            return True
        except IntegrityError:
            continue  # another attempt wrote the first step meanwhile: compare with it
    return False


def open_totp(key: bytes, username: str, stored: str) -> tuple[str, bool]:
    """The secret from the users table's value, and whether it was stored in plain text (from
    before sealing; it is sealed at the user's next sign-in). SealError when it does not open."""
    if is_sealed(stored):
        return unseal(key, stored, context=f"totp:{username}"), False
    return stored, True


@dataclass(frozen=True)
class ThrottlePolicy:
    """The moving windows an attempt must find room in before its password is checked (in the
    `limits` notation, e.g. "5 per 15 minutes"), and the checks allowed at a time.

    - `per_pair`: per user name from one client address; a successful sign-in empties it, so the
      real user at her own address is never held back by guesses from elsewhere.
    - `per_address`: per client address over all user names (one password tried on many accounts).
    - `per_account`: per user name over all addresses: the ceiling for guesses from many addresses.
      It decays as the window moves on, and spares addresses the user signed in from within
      `known_address_days`.
    - `concurrent_checks`: argon2 verifications at a time in this process.
    """

    per_pair: str = "5 per 15 minutes"
    per_address: str = "30 per 15 minutes"
    per_account: str = "20 per hour"
    concurrent_checks: int = 4
    known_address_days: int = 90


@dataclass(frozen=True)
class Outcome:
    """What came of one attempt. `reason` is what `appeals_sign_ins` records ("" on success)."""

    ok: bool
    reason: str = ""
    enrol: bool = False  # the password is right, the role needs a second factor and has none
    wait: float = 0.0  # throttled: seconds until an attempt will be looked at again


class Gate:
    """The web's sign-in checks over the store: throttle, recorded attempts, password, code."""

    def __init__(self, store: CaseStore, policy: ThrottlePolicy, *, totp_key: bytes,
                 address_key: bytes, second_factor_roles: frozenset[str]) -> None:
        self.store = store
        self.policy = policy
        self.totp_key = totp_key
        self.address_key = address_key
        self.second_factor_roles = second_factor_roles
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.pair: RateLimitItem = parse(policy.per_pair)
        self.per_address: RateLimitItem = parse(policy.per_address)
        self.account: RateLimitItem = parse(policy.per_account)
        self.checks = asyncio.Semaphore(policy.concurrent_checks)

    # ------------------------------------------------------------------------------ identities
    def _keyed(self, kind: str, value: str) -> str:
        digest = hmac.new(self.address_key, f"{kind}\x00{value}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def address(self, host: str | None) -> str:
        """The keyed hash that stands for a client address (memory and the database keep only it)."""
        return self._keyed("address", host or "")

    # -------------------------------------------------------------------------------- throttle
    def admit(self, user: str, address: str, known: bool, *, now: float | None = None) -> float:
        """Take the attempt's place in every window (0.0), or the seconds until there is room
        (nothing taken). No await here: the test and the take are one step of the event loop."""
        windows = [(self.pair, (user, address)), (self.per_address, (address,))]
        if not known:
            windows.append((self.account, (user,)))
        full = [(item, ids) for item, ids in windows if not self.limiter.test(item, "sign-in", *ids)]
        if full:
            clock = now if now is not None else time.time()
            wait = max(self.limiter.get_window_stats(item, "sign-in", *ids).reset_time - clock
                       for item, ids in full)
            return max(wait, 1.0)
        for item, ids in windows:
            self.limiter.hit(item, "sign-in", *ids)
        if known:  # counted, but never refused for it
            self.limiter.hit(self.account, "sign-in", user)
        return 0.0

    # -------------------------------------------------------------------------------- attempts
    async def attempt(self, username: str, password: str, code: str | None, host: str | None,
                      now: datetime) -> Outcome:
        """One sign-in attempt (`code` None: the password only, e.g. to confirm a password change
        by the signed-in user)."""
        address = self.address(host)
        user = self._keyed("user", username)
        known = await asyncio.to_thread(self._known, username, address, now)
        wait = self.admit(user, address, known)
        if wait > 0:
            await asyncio.to_thread(self._record, username, now, False, "throttled")
            return Outcome(False, "throttled", wait=wait)
        # Recorded before the check; a check that fails on an error stays "checking": a failure.
        row = await asyncio.to_thread(self._record, username, now, False, "checking")
        outcome = await self._check(username, password, code, now)
        await asyncio.to_thread(self._finish, row, outcome)
        if outcome.ok:
            self.limiter.clear(self.pair, "sign-in", user, address)
            await asyncio.to_thread(self._remember, username, address, now)
        return outcome

    async def _check(self, username: str, password: str, code: str | None, now: datetime) -> Outcome:
        store = self.store
        async with self.checks:
            stored = await asyncio.to_thread(store.password_hash, username)
            right = await asyncio.to_thread(check_password, stored, password)
        if not right:
            return Outcome(False, "password")
        if code is None:
            return Outcome(True)
        sealed = await asyncio.to_thread(store.totp_secret, username)
        if sealed is None:
            roles = await asyncio.to_thread(store.user_roles, username)
            if roles & self.second_factor_roles:
                return Outcome(True, "enrol", enrol=True)
            return Outcome(True)
        try:
            secret, plain = open_totp(self.totp_key, username, sealed)
        except SealError:
            log.error("a second-factor secret does not open with the TOTP key; a head must remove "
                      "it and the user enrol again")
            return Outcome(False, "second_factor_unreadable")
        step = totp_step(secret, code, now)
        if step is None:
            return Outcome(False, "second_factor")
        if not await asyncio.to_thread(accept_step, store.engine, username, step):
            return Outcome(False, "code_reused")
        if plain:
            await asyncio.to_thread(self._reseal, username, secret)
        return Outcome(True)

    def _reseal(self, username: str, secret: str) -> None:
        """A secret stored in plain text (before sealing) is sealed once its user has signed in
        with it: recorded in the users log as the user's own enrolment."""
        try:
            self.store.users.set_totp(username, seal_totp(self.totp_key, username, secret),
                                      actor=username)
            log.warning("a second-factor secret stored in plain text was sealed")
        except UsersRuleError:
            log.warning("a second-factor secret stored in plain text could not be sealed")

    # ---------------------------------------------------------------------------- the database
    def _record(self, username: str, at: datetime, ok: bool, reason: str) -> int:
        with self.store.engine.begin() as conn:
            result = conn.execute(insert(schema.sign_ins).values(
                username=username[:100], at=at, ok=ok, reason=reason[:30]))
            key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def _finish(self, row: int, outcome: Outcome) -> None:
        t = schema.sign_ins
        with self.store.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == row).values(ok=outcome.ok,
                                                               reason=outcome.reason[:30]))

    def _known(self, username: str, address: str, now: datetime) -> bool:
        t = schema.sign_in_addresses
        since = now - timedelta(days=self.policy.known_address_days)
        with self.store.engine.connect() as conn:
            last = conn.execute(select(t.c.last_success_at).where(
                (t.c.username == username[:100]) & (t.c.address == address))).scalar()
        seen = schema.utc(last)
        return seen is not None and seen >= since

    def _remember(self, username: str, address: str, now: datetime) -> None:
        t = schema.sign_in_addresses
        where = (t.c.username == username) & (t.c.address == address)
        for _ in range(3):
            with self.store.engine.begin() as conn:
                if conn.execute(update(t).where(where).values(last_success_at=now)).rowcount:
                    return
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(insert(t).values(username=username, address=address,
                                                  last_success_at=now))
                return
            except IntegrityError:
                continue

    def prune(self, now: datetime) -> dict[str, int]:
        """Delete sign-in attempts and known addresses older than SIGN_IN_RETENTION (the known
        addresses: older than `known_address_days`), and sessions ended or expired more than
        SESSION_RETENTION ago; how many of each."""
        users = self.store.users
        t = schema.sign_in_addresses
        keep = timedelta(days=self.policy.known_address_days)
        with self.store.engine.begin() as conn:
            addresses = conn.execute(delete(t).where(t.c.last_success_at < now - keep)).rowcount
        return {"sign_ins": users.prune_sign_ins(now - SIGN_IN_RETENTION),
                "sessions": users.prune_sessions(now - SESSION_RETENTION),
                "addresses": int(addresses)}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def csrf_for(key: bytes, session_token: str) -> str:
    """The CSRF token of a session: derived from its token, so it changes with every session and
    needs no storage."""
    return hmac.new(key, f"csrf\x00{session_token}".encode(), hashlib.sha256).hexdigest()


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

