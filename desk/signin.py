"""Sign-in for a door without a server process of its own (the command line): the password and the
one-time code checked with the web's own functions (web.auth: argon2, TOTP sealed at rest, each code
accepted once), the attempt recorded in `appeals_sign_ins` *before* the password is checked, and
the web's throttle numbers (web.auth.ThrottlePolicy) applied to the attempts recorded there.

The web keeps its windows in the memory of its process; each `appeals` command is a process of its
own, so here the windows are counted from the recorded attempts, which both doors write:

- per user name (the web's `per_pair`: the command line is one "address"): failed attempts since
  the user's last successful sign-in, within that window (5 per 15 minutes);
- per user name over everything (`per_account`): failed attempts within that window (20 per hour).

An attempt is recorded as "checking" before anything is checked (so that parallel guesses are all
counted, and one that dies mid-check stays a failure), then settled: "" and ok on success, else the
reason ("password", "second_factor", "code_reused", "no_second_factor", ...). A throttled attempt is
recorded as "throttled" and not looked at; it takes no place in the windows.

Nothing here prints or logs a password, a code or a secret; the door passes callbacks that ask for
the code (only once the password is right) and show a new secret (enrolment).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from desk.errors import InvalidRequest, NotSignedIn
from desk.secrets import SealError
from store import schema

# Failures that take a place in the windows (a throttled attempt does not).
NOT_COUNTED = ("throttled",)
_WINDOW = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.I)
_UNIT = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Window:
    amount: int
    seconds: int


def window(text: str) -> Window:
    """`"5 per 15 minutes"` (the notation of web.auth.ThrottlePolicy) as amount and seconds."""
    m = _WINDOW.match(text)
    if m is None:
        raise ValueError(f"not a throttle window: {text!r}")
    return Window(int(m.group(1)), int(m.group(2) or 1) * _UNIT[m.group(3).lower()])


def _policy() -> Any:
    from web.auth import ThrottlePolicy
    return ThrottlePolicy()


def throttle_wait(store: Any, username: str, now: datetime, policy: Any = None) -> float:
    """Seconds until an attempt for this user name will be looked at (0.0: now)."""
    policy = policy or _policy()
    t = schema.sign_ins
    name = username[:100]
    failed = (t.c.username == name) & ~t.c.ok & t.c.reason.not_in(NOT_COUNTED)
    wait = 0.0
    with store.engine.connect() as conn:
        last_ok = conn.execute(select(func.max(t.c.id)).where((t.c.username == name) & t.c.ok)
                               ).scalar()
        for text, since_success in ((policy.per_pair, True), (policy.per_account, False)):
            w = window(text)
            q = select(t.c.at).where(failed & (t.c.at > now - timedelta(seconds=w.seconds)))
            if since_success and last_ok is not None:
                q = q.where(t.c.id > last_ok)
            times = sorted(at for a in conn.execute(q).scalars() if (at := schema.utc(a)))
            if len(times) >= w.amount:
                # Room again when enough of them have left the window.
                freed = times[len(times) - w.amount]
                wait = max(wait, (freed + timedelta(seconds=w.seconds) - now).total_seconds())
    return max(wait, 1.0) if wait > 0 else 0.0


def _after(wait: float) -> str:
    return f"{max(1, round(wait / 60))} minutes" if wait >= 90 else f"{int(wait) + 1} seconds"


Show = Callable[[str, str], None]  # (otpauth:// URI, secret) -> shown to the person once


def sign_in(store: Any, username: str, password: str, *, now: datetime,
            totp_key: Callable[[], bytes], code: Callable[[], str],
            second_factor_roles: frozenset[str], enrol: Show | None = None,
            enrol_code: Callable[[], str] | None = None, policy: Any = None) -> str:
    """Check one sign-in attempt; the username when it may sign in, else NotSignedIn with the
    sentence to show. `code` is asked only when the password is right and the user has a second
    factor; with `enrol` (and `enrol_code`), a new second factor is set up after the checks (shown
    once, confirmed with a current code, stored sealed)."""
    from web import auth

    if not username:
        raise InvalidRequest("USERNAME", "is required")
    if not password:
        raise InvalidRequest("password", "is required")
    wait = throttle_wait(store, username, now, policy)
    if wait > 0:
        store.record_sign_in(username, now, ok=False, reason="throttled")
        raise NotSignedIn(f"Too many failed sign-ins for this user name. Please wait "
                          f"{_after(wait)} before trying again; every try before then is "
                          "refused, even with the right password.")
    attempt = store.record_sign_in(username, now, ok=False, reason="checking")

    def refuse(reason: str, message: str = auth.GENERIC_REFUSAL) -> NotSignedIn:
        store.settle_sign_in(attempt, ok=False, reason=reason)
        return NotSignedIn(message)

    if not auth.check_password(store.password_hash(username), password):
        raise refuse("password")
    sealed = store.totp_secret(username)
    if sealed is None:
        if enrol is None and store.user_roles(username) & second_factor_roles:
            raise refuse("no_second_factor", "Your role needs a second factor (a one-time code "
                         "app) and none is set up for you: sign in with `appeals login "
                         "--enrol-totp` to set it up now.")
    else:
        try:
            secret, plain = auth.open_totp(totp_key(), username, sealed)
        except SealError:
            raise refuse("second_factor_unreadable", "Your second factor cannot be read (the "
                         "key it was sealed with is not this one); ask a head to remove it, "
                         "then enrol again.") from None
        step = auth.totp_step(secret, code(), now)
        if step is None:
            raise refuse("second_factor")
        if not auth.accept_step(store.engine, username, step):
            raise refuse("code_reused")
        if plain:  # stored before sealing: sealed now, as the user's own enrolment
            store.users.set_totp(username, auth.seal_totp(totp_key(), username, secret),
                                 actor=username)
    if enrol is not None:
        try:
            enrol_totp(store, username, now=now, totp_key=totp_key, show=enrol,
                       code=enrol_code or code)
        except InvalidRequest as exc:
            raise refuse("second_factor", exc.message) from None
    store.settle_sign_in(attempt, ok=True)
    return username


def enrol_totp(store: Any, username: str, *, now: datetime, totp_key: Callable[[], bytes],
               show: Show, code: Callable[[], str]) -> None:
    """Set up a new second factor for `username` (the person themselves): a new secret is shown
    once (as an otpauth:// URI and as text), a current code from the app confirms it, and only
    then is it stored, sealed, through the users log (actor: the user)."""
    from web import auth

    key = totp_key()  # before anything is shown: a missing key stops here
    secret = auth.new_totp_secret()
    show(auth.provisioning_uri(secret, username), secret)
    step = auth.totp_step(secret, code(), now)
    if step is None:
        raise InvalidRequest("code", "does not belong to the new secret (or has expired); nothing "
                             "was changed: try again with the code the app shows now")
    store.users.set_totp(username, auth.seal_totp(key, username, secret), actor=username)
    auth.accept_step(store.engine, username, step)  # this code is not accepted again
