"""The command line as a door that proves who acts (issue 12): `appeals login` / `logout`, sessions
in the store that the CLI keeps in the user's configuration directory, attempts recorded before the
password is checked and throttled, user administration by heads only, the second factor, and
nobody acting in another's name.

Every command runs as a subprocess against the real stack (tests.dev_stack): the dev server, a
worker, the SQLite store; each user has a configuration directory of their own (their machine).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from desk.cases import Desk, Person
from desk.errors import NotAllowed
from store import schema
from tests.dev_stack import PASSWORD, ROOT, Stack, appeals_command, fails, ok
from workflows.inputs import ClearanceInput

EXAMPLES = ROOT / "examples"


def machine(stack: Stack, name: str, **extra: str) -> dict[str, str]:
    """The environment of `appeals` on a machine of its own, nobody signed in there yet."""
    env = {k: v for k, v in stack.env.items() if k != "APPEALS_USER"}
    env.update(APPEALS_CONFIG_DIR=str(stack.home / "machines" / name), **extra)
    return env


def login(env: dict[str, str], user: str, password: str = PASSWORD,
          *more: str) -> subprocess.CompletedProcess[str]:
    return appeals_command(env, "login", user, stdin="\n".join([password, *more]) + "\n")


def given_password(stack: Stack, user: str, password: str = PASSWORD) -> None:
    stack.store.set_password(user, PasswordHasher().hash(password))


def attempts(stack: Stack, user: str) -> list[tuple[bool, str]]:
    t = schema.sign_ins
    with stack.store.engine.connect() as conn:
        return [(bool(r.ok), r.reason) for r in conn.execute(
            select(t.c.ok, t.c.reason).where(t.c.username == user).order_by(t.c.id))]


def open_case(stack: Stack) -> str:
    return ok(stack.appeals("case", "open", str(EXAMPLES / "intake.json"))).strip()


# ============================================================================ signing in and out
async def test_commands_act_as_the_person_signed_in_until_they_sign_out(stack: Stack) -> None:
    env = machine(stack, "olga-laptop")
    assert fails(appeals_command(env, "case", "list"), 6) == (
        "Not signed in: sign in first with `appeals login USERNAME` (every command acts as the "
        "person signed in).")
    given_password(stack, "olga")
    assert fails(login(env, "olga", "not her password"), 6) == (
        "The user name, password or code is not right.")
    assert fails(login(env, "nobody", PASSWORD), 6) == "The user name, password or code is not right."
    assert attempts(stack, "olga") == [(False, "password")]
    out = ok(login(env, "olga"))
    assert out.startswith("Signed in as olga until ")
    assert attempts(stack, "olga") == [(False, "password"), (True, "")]
    assert ok(appeals_command(env, "whoami")).strip() == "olga (case_officer)"

    # The session: a 0600 file in a 0700 folder, holding a token the store knows by its hash only.
    folder = Path(env["APPEALS_CONFIG_DIR"])
    files = list(folder.glob("session-*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    token = json.loads(files[0].read_text())["token"]
    with stack.store.engine.connect() as conn:
        stored = [r.id for r in conn.execute(select(schema.sessions.c.id, schema.sessions.c.door)
                                             .where(schema.sessions.c.username == "olga"))]
    assert token not in stored and len(stored) == 1

    # A session file others may read is not used.
    os.chmod(files[0], 0o644)
    assert fails(appeals_command(env, "whoami"), 2).startswith("session: ")
    os.chmod(files[0], 0o600)
    assert ok(appeals_command(env, "logout")).strip() == "Signed out."
    assert not list(folder.glob("session-*.json"))
    assert stack.store.users.session_user(token, datetime.now(UTC)) is None
    assert fails(appeals_command(env, "whoami"), 6).startswith("Not signed in")
    assert ok(appeals_command(env, "logout")).strip() == "Not signed in."


async def test_a_session_unused_for_two_hours_has_ended(stack: Stack) -> None:
    env = stack.cli_env("olga")
    ok(appeals_command(env, "whoami"))
    s = schema.sessions
    with stack.store.engine.begin() as conn:
        conn.execute(update(s).where(s.c.username == "olga")
                     .values(last_seen_at=datetime.now(UTC) - timedelta(hours=3)))
    assert fails(appeals_command(env, "whoami"), 6).startswith("Your session has ended")


async def test_attempts_are_recorded_before_the_password_is_checked_and_throttled(
        stack: Stack) -> None:
    env = machine(stack, "olga-laptop")
    # A deliberately slow hash: the attempt is seen in the store while its password is checked,
    # and a sign-in killed during the check stays a failure.
    stack.store.set_password("olga", PasswordHasher(time_cost=40, memory_cost=65536).hash(PASSWORD))
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "login", "olga"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None
    proc.stdin.write("a guess\n")
    proc.stdin.flush()
    end = time.monotonic() + 60
    while attempts(stack, "olga") != [(False, "checking")]:
        assert time.monotonic() < end and proc.poll() is None, attempts(stack, "olga")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert attempts(stack, "olga") == [(False, "checking")]

    given_password(stack, "olga")
    for _ in range(4):
        fails(login(env, "olga", "another guess"), 6)
    # Five failures in fifteen minutes (the web's rule): the right password is not looked at.
    refused = fails(login(env, "olga"), 6)
    assert refused.startswith("Too many failed sign-ins for this user name. Please wait ")
    assert attempts(stack, "olga") == [(False, "checking")] + [(False, "password")] * 4 + [
        (False, "throttled")]
    assert not list(Path(env["APPEALS_CONFIG_DIR"]).glob("session-*.json"))


# ========================================================================== nobody acts for another
async def test_naming_someone_else_is_refused_and_records_nothing(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    ref = open_case(stack)
    ok(stack.appeals("case", "verify", ref, str(EXAMPLES / "verification.json")))
    before = len(stack.store.trail(ref))
    clear = ("case", "clear", ref, "mfa", "--grant")
    assert fails(stack.appeals("--as", "lina", *clear), 2).startswith("--as: is no longer accepted")
    assert fails(stack.appeals(*clear, "--as", "lina"), 2).startswith("--as: is no longer accepted")
    assert fails(stack.appeals(*clear, APPEALS_USER="lina"), 2).startswith(
        "APPEALS_USER: is no longer read")
    changes = tmp_path / "changes.json"
    changes.write_text(json.dumps({"domestic_steps": "x", "actor": "lina"}))
    assert fails(stack.appeals("case", "inform", ref, "--text", "x", "--changes", str(changes)),
                 2).startswith("--changes: actor cannot be changed after intake")
    # Through the desk itself: a decision in another's name is not sent at all.
    desk = Desk(stack.settings, stack.store, stack.plain)
    with pytest.raises(NotAllowed, match="in the name of the person signed in"):
        await desk.decide(Person("olga"), ref, "record_clearance",
                          ClearanceInput("lina", "mfa", True, ""), request_id="cli-test-1")
    assert len(stack.store.trail(ref)) == before
    history = stack.temporal("workflow", "show", "--workflow-id", ref, "--output", "json")
    assert "cli-test-1" not in history


# ================================================================================ administration
async def test_a_non_head_cannot_add_a_user_or_a_role(stack: Stack) -> None:
    stack.cli_env("olga"), stack.cli_env("hana")  # signed in (their passwords set) first
    log_before = len(stack.store.users_log())
    assert fails(stack.appeals("users", "add", "ivo", "--name", "Ivo Example", "--email",
                               "ivo@secretariat.example.org", "--role", "case_officer"), 4) == (
        "Only an active head may add users; nothing was recorded.")
    assert fails(stack.appeals("users", "set-roles", "olga", "case_officer", "head"), 4) == (
        "Only an active head may change roles; nothing was recorded.")
    assert fails(stack.appeals("users", "deactivate", "lina", "--reason", "x"), 4) == (
        "Only an active head may deactivate users; nothing was recorded.")
    assert fails(stack.appeals("users", "passwd", "lina", stdin="a new long password\n"), 4) == (
        "Only an active head may set another user's password; nothing was recorded.")
    assert len(stack.store.users_log()) == log_before
    assert stack.store.user("ivo") is None and stack.store.user_roles("olga") == {"case_officer"}
    # The first head exists already: nobody bootstraps another.
    assert fails(appeals_command(machine(stack, "new"), "users", "bootstrap", "eve", "--name", "Eve",
                                 "--email", "eve@secretariat.example.org",
                                 stdin="a long password here\n"), 4).startswith(
        "A head already exists")
    # A head may; the user log names her.
    ok(stack.appeals("users", "add", "ivo", "--name", "Ivo Example", "--email",
                     "ivo@secretariat.example.org", "--role", "case_officer", user="hana"))
    added = stack.store.users_log()[-1]
    assert (added.actor, added.event, added.details["username"]) == ("hana", "UserAdded", "ivo")


async def test_the_first_head_is_bootstrapped_once_and_signs_in(stack: Stack, tmp_path: Path) -> None:
    fresh = machine(stack, "first-setup", APPEALS_VAR_DIR=str(tmp_path / "fresh"))
    (tmp_path / "fresh").mkdir()
    args = ("users", "bootstrap", "rosa", "--name", "Rosa Example", "--email",
            "rosa@secretariat.example.org")
    assert fails(appeals_command(fresh, *args, stdin="short\n"), 2).startswith(
        "password: A password needs at least 12 characters")
    out = ok(appeals_command(fresh, *args, stdin="rosa's long passphrase\n"))
    assert "rosa is the first head" in out
    assert fails(appeals_command(fresh, "users", "bootstrap", "sam", "--name", "Sam", "--email",
                                 "sam@secretariat.example.org", stdin="sam's long passphrase\n"),
                 4).startswith("A head already exists")
    ok(login(fresh, "rosa", "rosa's long passphrase"))
    ok(appeals_command(fresh, "users", "add", "tom", "--name", "Tom Example", "--email",
                       "tom@secretariat.example.org", "--role", "case_officer"))
    log = json.loads(ok(appeals_command(fresh, "users", "log", "--json")))
    assert [(e["event"], e["actor"]) for e in log] == [
        ("LogStarted", "bootstrap"), ("FirstHeadBootstrapped", "bootstrap"),
        ("PasswordSet", "rosa"), ("UserAdded", "rosa")]
    assert ok(appeals_command(fresh, "users", "verify")).splitlines()[-1] == "OK"


async def test_a_session_ends_on_a_password_reset_and_on_deactivation(stack: Stack) -> None:
    olga = stack.cli_env("olga")
    ok(appeals_command(olga, "whoami"))
    # A head resets her password: her session ends; the new password signs her in.
    assert "their sessions have ended" in ok(stack.appeals(
        "users", "passwd", "olga", user="hana", stdin="olga's new passphrase\n"))
    assert fails(appeals_command(olga, "whoami"), 6).startswith("Your session has ended")
    fails(login(olga, "olga", PASSWORD), 6)
    ok(login(olga, "olga", "olga's new passphrase"))
    ok(appeals_command(olga, "whoami"))
    # Deactivated: her session ends at once, and she cannot sign in again.
    ok(stack.appeals("users", "deactivate", "olga", "--reason", "Left the secretariat", user="hana"))
    assert fails(appeals_command(olga, "case", "list"), 6).startswith("Your session has ended")
    assert fails(login(olga, "olga", "olga's new passphrase"), 6) == (
        "The user name, password or code is not right.")
    ok(stack.appeals("users", "reactivate", "olga", user="hana"))
    ok(login(olga, "olga", "olga's new passphrase"))
    # Her own password change ends her own session too.
    out = ok(appeals_command(olga, "users", "passwd", stdin="olga's third passphrase\n"))
    assert "your sessions have ended" in out
    assert fails(appeals_command(olga, "whoami"), 6).startswith("Not signed in")


# ============================================================================== the second factor
def interactive(env: dict[str, str], *args: str, first: str | None = None,
                code_for: Any = None) -> tuple[int, str, str]:
    """Run `appeals ARGS`, give `first` on standard input, wait for the secret it shows, answer
    with the code `code_for(secret)`; (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdin is not None and proc.stdout is not None
    if first is not None:
        proc.stdin.write(first + "\n")
        proc.stdin.flush()
    shown = []
    for line in proc.stdout:
        shown.append(line)
        if line.strip().startswith("secret: "):
            secret = line.split(":", 1)[1].strip()
            proc.stdin.write(code_for(secret) + "\n")
            proc.stdin.flush()
            break
    out, err = proc.communicate(timeout=60)
    return proc.returncode, "".join(shown) + out, err


async def test_a_second_factor_is_enrolled_sealed_and_asked_for(stack: Stack) -> None:
    olga = stack.cli_env("olga")
    secrets: list[str] = []

    def remember(secret: str) -> str:
        secrets.append(secret)
        return "000000" if len(secrets) == 1 else pyotp.TOTP(secret).now()

    # A wrong confirming code stores nothing; the right one stores the secret, sealed.
    code, out, err = interactive(olga, "users", "totp-enroll", code_for=remember)
    assert code == 2 and err.startswith("code: does not belong to the new secret"), err
    assert stack.store.totp_secret("olga") is None
    code, out, err = interactive(olga, "users", "totp-enroll", code_for=remember)
    assert code == 0, err
    assert "otpauth://totp/" in out and "second factor set up" in out
    stored = stack.store.totp_secret("olga")
    assert stored and stored.startswith("sealed:v1:") and secrets[1] not in stored
    assert stack.store.users_log()[-1].event == "SecondFactorEnrolled"

    # Signing in now needs the code: wrong, right, and the same code again (refused).
    totp = pyotp.TOTP(secrets[1])
    later = totp.at(datetime.now(UTC) + timedelta(seconds=30))  # the enrolment used this step's
    fails(login(olga, "olga", PASSWORD, "123456"), 6)
    assert attempts(stack, "olga")[-1] == (False, "second_factor")
    ok(login(olga, "olga", PASSWORD, later))
    assert fails(login(olga, "olga", PASSWORD, later), 6) == (
        "The user name, password or code is not right.")
    assert attempts(stack, "olga")[-1] == (False, "code_reused")


async def test_login_can_enrol_a_second_factor(stack: Stack) -> None:
    env = machine(stack, "lina-laptop")
    given_password(stack, "lina")
    code, out, err = interactive(env, "login", "lina", "--enrol-totp", first=PASSWORD,
                                 code_for=lambda secret: pyotp.TOTP(secret).now())
    assert code == 0, err
    assert "otpauth://totp/" in out and "Signed in as lina" in out
    assert ok(appeals_command(env, "whoami")).startswith("lina")
    assert (stack.store.totp_secret("lina") or "").startswith("sealed:v1:")
