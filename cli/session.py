"""`appeals login`, `appeals logout`, `appeals whoami`: the person on this machine signs in, and every
other command acts as them.

`login` reads the password with a hidden prompt at a terminal, or one line of standard input
otherwise (`appeals login olga <<< "$PASSWORD"`); then, for a user with a second factor, the current
one-time code the same way. The attempt is recorded before the password is checked and throttled by
the web's rule (desk.signin). In production, ministry liaisons and heads must have a second factor
(as on the web); `--enrol-totp` sets one up during the sign-in. The session is personal and
expires (12 hours, or 2 hours without a command); it lives in the configuration directory
(cli.config), and the store can end it at any time.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from cli.common import (
    BadInput,
    emit_json,
    env_of,
    json_option,
    one_line,
    read_secret,
    refuse_named_user,
)
from cli.config import (
    SESSION_IDLE,
    SESSION_LIFETIME,
    Session,
    forget_session,
    save_session,
)


def second_factor_roles(settings: object) -> frozenset[str]:
    """Roles that must have a second factor to sign in: the web's rule (production only)."""
    from web.auth import SECOND_FACTOR_ROLES
    return SECOND_FACTOR_ROLES if getattr(settings, "environment", "") == "production" \
        else frozenset()


def totp_key(settings: object) -> bytes:
    from worker.keys import KeyMaterialError
    try:
        key: bytes = settings.totp_key()  # type: ignore[attr-defined]
    except KeyMaterialError as exc:
        raise BadInput("settings", one_line(str(exc))) from None
    return key


def show_new_secret(uri: str, secret: str) -> None:
    """A new second factor, shown once: for the authenticator app (scan or type it)."""
    click.echo("New second factor (shown once): add it to your authenticator app.")
    click.echo(f"  {uri}")
    click.echo(f"  secret: {secret}")
    sys.stdout.flush()


@click.command("login")
@click.argument("username", metavar="USERNAME", required=False)
@click.option("--enrol-totp", "enrol", is_flag=True,
              help="Set up a (new) second factor while signing in: shows a new secret once and "
                   "asks for a code from the app to confirm it.")
@click.pass_context
def login(ctx: click.Context, username: str | None, enrol: bool) -> None:
    """Sign in: every other command then acts as you (until `appeals logout`, or the session
    expires). The password (and the one-time code, if you have a second factor) is asked with a
    hidden prompt, or read line by line from standard input when it is not a terminal."""
    from desk.signin import sign_in

    refuse_named_user()
    env = env_of(ctx)
    if not username:
        if not sys.stdin.isatty():
            raise BadInput("USERNAME", "is required")
        username = str(click.prompt("User name", err=True)).strip()
    password = read_secret("Password", "password")
    settings, store = env.settings, env.store
    now = datetime.now(UTC)
    signed = sign_in(
        store, username, password, now=now, totp_key=lambda: totp_key(settings),
        code=lambda: read_secret("One-time code", "code"),
        second_factor_roles=second_factor_roles(settings),
        enrol=show_new_secret if enrol else None,
        enrol_code=lambda: read_secret("Code the app shows for the new secret", "code"))
    earlier = forget_session(settings)
    if earlier is not None:
        store.users.end_session(earlier.token)
    token = store.users.create_session(signed, "cli", SESSION_LIFETIME, now=now)
    expires = now + SESSION_LIFETIME
    save_session(settings, Session(signed, token, expires))
    idle = int(SESSION_IDLE.total_seconds() // 3600)
    click.echo(f"Signed in as {signed} until {expires:%Y-%m-%d %H:%M} UTC (or {idle} hours "
               "without a command).")


@click.command("logout")
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Sign out: end this machine's session (in the store too)."""
    from cli.config import read_session

    env = env_of(ctx)
    settings = env.settings
    try:
        session = read_session(settings)
    except BadInput:
        session = None
    if session is not None:
        env.store.users.end_session(session.token)
    forget_session(settings)
    click.echo("Signed out." if session is not None else "Not signed in.")


@click.command("whoami")
@json_option
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Who is signed in, with their roles."""
    env = env_of(ctx)
    person = env.person()
    roles = sorted(env.store.user_roles(person.username))
    if as_json:
        emit_json({"username": person.username, "roles": roles})
    else:
        click.echo(f"{person.username} ({', '.join(roles)})")
