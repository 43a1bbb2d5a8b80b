"""`appeals users ...`: the registry of staff, changed only through the users log (desk.users), by
the person signed in.

- `bootstrap` creates the first head while there is none (first setup: nobody is signed in yet);
  then a head adds users, sets their roles, resets their passwords, deactivates and reactivates
  them. Anyone signed in may change their own password and set up their own second factor.
- `list`, `log` and `verify` read the registry, the users log and its verification.

Passwords are read with a hidden prompt at a terminal, else from one line of standard input.
Deactivating a user or changing a password ends that user's sessions on both doors.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import click

from cli.common import (
    BadInput,
    VerificationFailed,
    choice,
    emit_json,
    env_of,
    json_option,
    one_line,
    read_secret,
    request_id,
    request_option,
    table,
    text_option,
    when,
)
from cli.config import forget_session
from desk.requests import request_key
from domain.vocab import Role

ROLES = [r.value for r in Role]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _check_username(username: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", username):
        raise BadInput("USERNAME", "letters, digits, dots, dashes and underscores only (at most 100)")
    return username


def _check_person(name: str | None, email: str | None) -> tuple[str, str]:
    from activities.addresses import InvalidMessage
    from activities.addresses import check_address as check_email

    display = text_option(name, "--name")
    if len(display) > 200 or _CONTROL.search(display):
        raise BadInput("--name", "one line of at most 200 characters")
    if not email:
        raise BadInput("--email", "is required")
    try:
        check_email(email, header="--email")
    except InvalidMessage:
        raise BadInput("--email", "expected one plain address (user@domain)") from None
    return display, email


def _new_password(prompt: str, force_stdin: bool) -> str:
    """A new password, checked (length) and hashed with argon2 (web.auth)."""
    from web.auth import PasswordRejected, hash_new_password

    password = read_secret(prompt, "password", confirm=True, force_stdin=force_stdin)
    try:
        return str(hash_new_password(password))
    except PasswordRejected as exc:
        raise BadInput("password", str(exc)) from None


password_stdin = click.option("--password-stdin", is_flag=True,
                              help="Read the password from standard input even at a terminal "
                                   "(it is read from there anyway when input is not a terminal).")


@click.group()
def users() -> None:
    """The users registry the workflow checks roles against."""


@users.command("bootstrap")
@click.argument("username", metavar="USERNAME")
@click.option("--name", help="Display name.")
@click.option("--email", help="Work email address.")
@password_stdin
@click.pass_context
def users_bootstrap(ctx: click.Context, username: str, name: str | None, email: str | None,
                    password_stdin: bool) -> None:
    """Create the first head of secretariat, with her password (first setup only: refused once
    any user is a head). She then signs in with `appeals login` and adds the staff."""
    from desk.users import bootstrap_head

    _check_username(username)
    display, address = _check_person(name, email)
    env = env_of(ctx)
    hashed = _new_password("Password for the first head", password_stdin)
    key = request_key("cli", username, "users bootstrap",
                      {"username": username, "name": display, "email": address})
    bootstrap_head(env.store, username, display, address, hashed, request_id=key)
    click.echo(f"{username} is the first head; sign in with `appeals login {username}`")


@users.command("add")
@click.argument("username", metavar="USERNAME")
@click.option("--name", help="Display name.")
@click.option("--email", help="Work email address.")
@click.option("--role", "roles", multiple=True, metavar="ROLE",
              help="A role (repeat for more): " + ", ".join(ROLES) + ".")
@request_option
@click.pass_context
def users_add(ctx: click.Context, username: str, name: str | None, email: str | None,
              roles: tuple[str, ...]) -> None:
    """Add a user with one or more roles (heads only). Give them a first password with
    `appeals users passwd USERNAME`."""
    from desk.users import add_user

    _check_username(username)
    display, address = _check_person(name, email)
    if not roles:
        raise BadInput("--role", "at least one is required")
    for role in roles:
        choice(role, ROLES, "--role")
    env = env_of(ctx)
    person = env.person()
    add_user(env.store, person, username, display, address, roles,
             request_id=request_id(ctx, person.username))
    click.echo(f"added {username} ({', '.join(sorted(set(roles)))})")


@users.command("list")
@json_option
@click.pass_context
def users_list(ctx: click.Context, as_json: bool) -> None:
    """All users with their roles."""
    env = env_of(ctx)
    env.person()
    rows = env.store.list_users()
    if as_json:
        emit_json(rows)
    elif not rows:
        click.echo("no users")
    else:
        table([[r["username"], r["display_name"], r["email"], ",".join(r["roles"]),
                "" if r["active"] else "inactive"] for r in rows],
              ["username", "name", "email", "roles", ""])


@users.command("set-roles")
@click.argument("username", metavar="USERNAME")
@click.argument("roles", metavar="ROLE...", nargs=-1)
@request_option
@click.pass_context
def users_set_roles(ctx: click.Context, username: str, roles: tuple[str, ...]) -> None:
    """Replace a user's roles (heads only)."""
    from desk.users import set_roles

    if not roles:
        raise BadInput("ROLE", "at least one is required")
    for role in roles:
        choice(role, ROLES, "ROLE")
    env = env_of(ctx)
    person = env.person()
    set_roles(env.store, person, username, roles, request_id=request_id(ctx, person.username))
    click.echo(f"{username}: {', '.join(sorted(set(roles)))}")


@users.command("passwd")
@click.argument("username", metavar="USERNAME", required=False)
@password_stdin
@click.pass_context
def users_passwd(ctx: click.Context, username: str | None, password_stdin: bool) -> None:
    """Set your own password, or (a head) another user's (at least 12 characters; never echoed).
    The user's sessions end, on the command line and the web."""
    from desk.users import set_password

    env = env_of(ctx)
    person = env.person()
    username = username or person.username
    hashed = _new_password("New password", password_stdin)
    set_password(env.store, person, username, hashed)
    if username == person.username:
        forget_session(env.settings)
        click.echo(f"{username}: password set; your sessions have ended: sign in again with "
                   "`appeals login`")
    else:
        click.echo(f"{username}: password set; their sessions have ended")


@users.command("deactivate")
@click.argument("username", metavar="USERNAME")
@click.option("--reason", help="Why their access ends (recorded in the users log).")
@request_option
@click.pass_context
def users_deactivate(ctx: click.Context, username: str, reason: str | None) -> None:
    """End a user's access (heads only): their sessions end at once."""
    from desk.users import deactivate

    text = text_option(reason, "--reason")
    env = env_of(ctx)
    person = env.person()
    deactivate(env.store, person, username, text, request_id=request_id(ctx, person.username))
    click.echo(f"{username}: deactivated; their sessions have ended")


@users.command("reactivate")
@click.argument("username", metavar="USERNAME")
@request_option
@click.pass_context
def users_reactivate(ctx: click.Context, username: str) -> None:
    """Give a deactivated user their access back (heads only)."""
    from desk.users import reactivate

    env = env_of(ctx)
    person = env.person()
    reactivate(env.store, person, username, request_id=request_id(ctx, person.username))
    click.echo(f"{username}: reactivated")


@users.command("log")
@json_option
@click.pass_context
def users_log(ctx: click.Context, as_json: bool) -> None:
    """Every change to users and roles, in order: when, who, what (no credentials)."""
    from desk.users import log

    env = env_of(ctx)
    env.person()
    entries = log(env.store)
    if as_json:
        emit_json(entries)
        return
    if not entries:
        click.echo("no changes")
        return
    table([[e["version"], when(e["at"]), e["actor"], e["event"], _summary(e["details"])]
           for e in entries], ["v", "time (UTC)", "actor", "event", "details"])


def _summary(details: dict[str, Any]) -> str:
    parts = []
    for key in ("username", "roles", "old", "new", "change", "reason"):
        value = details.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        parts.append(f"{key}={one_line(str(value))[:80]}")
    if "adopted" in details:
        parts.append(f"adopted={len(details['adopted'])} users")
    return " ".join(parts)


@users.command("verify")
@json_option
@click.pass_context
def users_verify(ctx: click.Context, as_json: bool) -> None:
    """Verify the users log's chain and compare the users table with it (exit 1 on any
    difference)."""
    from desk.users import verify

    env = env_of(ctx)
    env.person()
    report = verify(env.store)
    if as_json:
        emit_json({k: v for k, v in report.items() if k != "lines"})
    else:
        for line in report["lines"]:
            click.echo(line)
        click.echo("OK" if report["ok"] else "FAILED")
    if not report["ok"]:
        raise SystemExit(VerificationFailed.code)


@users.command("totp-enroll")
@click.pass_context
def users_totp_enroll(ctx: click.Context) -> None:
    """Set up (or replace) your second factor: a new secret is shown once (an otpauth:// URI for
    your authenticator app, and the secret as text), then a current code from the app confirms it
    before it is stored (sealed). From then on `appeals login` and the web ask for the code."""
    from cli.session import show_new_secret, totp_key
    from desk.signin import enrol_totp

    env = env_of(ctx)
    person = env.person()
    settings = env.settings
    enrol_totp(env.store, person.username, now=datetime.now(UTC),
               totp_key=lambda: totp_key(settings), show=show_new_secret,
               code=lambda: read_secret("Code the app shows", "code"))
    click.echo(f"{person.username}: second factor set up; sign-ins now ask for its code")
