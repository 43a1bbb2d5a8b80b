"""A clean install, as the image builds it, then one case through it in production mode.

A fresh virtual environment (outside .venv) gets exactly the install commands of the Dockerfile, read
from it (so they cannot drift), in a copy of what the Dockerfile copies; then `pip check`. From that
environment alone, with production settings, run the worker, the web interface and the codec server
(their commands read from docker-compose.yml) against a new PostgreSQL database, the Temporal dev
server and an SMTP sink on loopback; one case goes from opening to dispatch through that
environment's `appeals` command, and the sink must receive the message.

It catches what the development install hides: a runtime dependency that only the test extras bring
(psycopg), files the wheel leaves out (templates, static files), a lock that misses a requirement.
The services run from a directory without code, so nothing is imported from the source tree.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pyotp
import pytest

from tests.backends import PostgresRoles, fresh_postgres_roles, new_key, postgres_reason
from tests.dev_stack import ROOT, free_port, running_dev_server
from tests.smtp_sink import SmtpSink
from tests.test_deployment import SERVICES, dockerfile_steps, image_install_commands
from tests.test_temporal_tls import tls_environment, tls_in_front_of
from worker.settings import ENV_PREFIX, Settings

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"
NAMESPACE = "urgent-appeals"  # as in docker-compose.yml
# The shipped address book's stand-in ministry and EU delegation entries, moved to a domain that is
# not an RFC 2606 example domain (production refuses those) and that can never route anywhere.
DESK_DOMAIN = "clean-install.localhost"
STAFF = {1: ["duty@secretariat.test"], 2: ["head@secretariat.test"], 3: ["board@secretariat.test"]}
# The staff of the one case, with their passwords (on standard input, as a script gives them).
PASSWORDS = {"hana": "hana's clean-install passphrase", "olga": "olga's clean-install passphrase",
             "lina": "lina's clean-install passphrase"}
# Production: ministry liaisons and heads sign in with a second factor (web.auth.SECOND_FACTOR_ROLES).
SECOND_FACTOR = {"hana", "lina"}
# The Temporal UI's origin, the only page the codec server encodes for (docker-compose.yml's).
UI_ORIGIN = "http://127.0.0.1:8080"


# ================================================================================ the clean install
def fresh_environment(venv: Path) -> dict[str, str]:
    """The process environment with `venv` first on the PATH and nothing of .venv or the tests."""
    drop = ("APPEALS_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv))
    return env


def docker_copy(arguments: str, context: Path, workdir: Path) -> None:
    """COPY SRC... DEST of the build context (the repository) into the image's work directory."""
    *sources, dest = [a for a in shlex.split(arguments) if not a.startswith("--")]
    target = workdir / dest
    for source in sources:
        path = context / source
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
            (target if into_dir else target.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name if into_dir else target)


def build_like_the_image(tmp: Path) -> Path:
    """The Dockerfile's COPY steps and pip commands, in its order, into a fresh venv; its path."""
    venv, workdir = tmp / "venv", tmp / "image"
    workdir.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = fresh_environment(venv)
    installs = image_install_commands()
    assert installs, "the Dockerfile installs nothing with pip"
    with (tmp / "install.log").open("w") as log:
        for step in dockerfile_steps():
            if step.instruction == "COPY":
                docker_copy(step.arguments, ROOT, workdir)
            elif step.instruction == "RUN" and step.arguments in installs:
                log.write(f"$ {step.arguments}\n")
                log.flush()
                done = subprocess.run(["/bin/sh", "-c", step.arguments], cwd=workdir, env=env,
                                      stdout=log, stderr=subprocess.STDOUT, timeout=600)
                assert done.returncode == 0, \
                    f"{step.arguments!r} failed:\n{(tmp / 'install.log').read_text()[-4000:]}"
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    return venv


# ====================================================================================== services
@dataclass
class Services:
    """The fresh environment's processes; each writes its output to a log under `logs`."""

    venv: Path
    env: dict[str, str]
    cwd: Path
    logs: Path
    sink: SmtpSink
    roles: PostgresRoles
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    files: list[IO[bytes]] = field(default_factory=list)
    signed_in: set[str] = field(default_factory=set)

    def command(self, argv: list[str]) -> list[str]:
        program = self.venv / "bin" / argv[0]
        assert program.exists(), f"{argv[0]} is not in the fresh environment"
        return [str(program), *argv[1:]]

    def start(self, service: str) -> None:
        """A compose service's command, run from the fresh environment."""
        log = (self.logs / f"{service}.log").open("wb")
        self.files.append(log)
        self.procs[service] = subprocess.Popen(self.command(SERVICES[service]["command"]), cwd=self.cwd,
                                               env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def run_once(self, service: str, env: dict[str, str]) -> str:
        """A one-shot compose service's command, run from the fresh environment with only `env`
        besides; its output, after checking it succeeded."""
        done = subprocess.run(self.command(SERVICES[service]["command"]), cwd=self.cwd,
                              env={**fresh_environment(self.venv), **env}, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, \
            f"{service}: exit {done.returncode}\n{done.stderr}{done.stdout}"
        return done.stdout

    def log(self, service: str) -> str:
        path = self.logs / f"{service}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def wait(self, what: str, ready: Callable[[], bool], seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while not ready():
            for service, proc in self.procs.items():
                assert proc.poll() is None, \
                    f"{service} exited ({proc.returncode}):\n{self.log(service)[-4000:]}"
            assert time.monotonic() < end, f"{what} not ready within {seconds:.0f} s:\n{self.all_logs()}"
            time.sleep(0.3)

    def cli_env(self, user: str) -> dict[str, str]:
        """`appeals` for `user` on their own machine: a configuration directory of their own."""
        return {**self.env, "APPEALS_CONFIG_DIR": str(self.cwd / "config" / user)}

    def appeals(self, *args: str, user: str = "olga", stdin: str = "") -> str:
        """The fresh environment's `appeals` command as `user` (signed in first); its output,
        after checking it succeeded."""
        if user not in self.signed_in and args[:2] != ("users", "bootstrap"):
            self.sign_in(user)
        done = subprocess.run(self.command(["appeals", *args]), cwd=self.cwd, capture_output=True,
                              text=True, timeout=120, env=self.cli_env(user), input=stdin)
        assert done.returncode == 0 and "Traceback" not in done.stderr, \
            f"appeals {' '.join(args)}: exit {done.returncode}\n{done.stderr}{done.stdout}"
        return done.stdout

    def sign_in(self, user: str) -> None:
        """`appeals login USER`, the password on standard input; in production a liaison or head
        sets up a second factor while signing in (the secret shown, a code from it confirms)."""
        second = user in SECOND_FACTOR
        proc = subprocess.Popen(self.command(["appeals", "login", user,
                                              *(["--enrol-totp"] if second else [])]),
                                cwd=self.cwd, env=self.cli_env(user), text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(PASSWORDS[user] + "\n")
        proc.stdin.flush()
        shown = ""
        if second:
            for line in proc.stdout:
                shown += line
                if line.strip().startswith("secret: "):
                    proc.stdin.write(pyotp.TOTP(line.split(":", 1)[1].strip()).now() + "\n")
                    proc.stdin.flush()
                    break
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"appeals login {user}: exit {proc.returncode}\n{err}{shown}{out}"
        self.signed_in.add(user)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for file in self.files:
            file.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)  # before spending a minute on the install
    venv = build_like_the_image(tmp_path)
    run_dir = tmp_path / "run"  # empty: nothing can be imported from the source tree
    (run_dir / "var").mkdir(parents=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    # As in docker-compose.yml: the event store has a schema owner (event-store-setup) and the
    # services connect as the application's role.
    with fresh_postgres_roles() as roles, SmtpSink() as sink, \
            running_dev_server(tmp_path, "--namespace", NAMESPACE) as server, \
            tls_in_front_of(server, tmp_path / "pki") as (terminator, ca):
        # Production reaches Temporal only over mutual TLS: a terminator with the services'
        # client certificate stands in front of the dev server (as in tests/test_temporal_tls.py).
        tls = tls_environment(terminator, ca, ca.issue("appeals-client"))
        env = {**fresh_environment(venv),
               **production_settings(run_dir, tls.pop("APPEALS_TEMPORAL_ADDRESS"), roles.app_url,
                                     sink), **tls}
        running = Services(venv, env, run_dir, logs, sink, roles)
        try:
            yield running
        finally:
            running.stop()


def env_example_settings() -> dict[str, str]:
    """The settings .env.example fills in (its uncommented APPEALS_* lines that are settings)."""
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    found = (re.match(r"(APPEALS_[A-Z0-9_]+)=(.*)$", line)
             for line in (ROOT / ".env.example").read_text().splitlines())
    return {m[1]: m[2].strip() for m in found if m and m[1] in fields}


def production_settings(run_dir: Path, temporal: str, database_url: str,
                        sink: SmtpSink) -> dict[str, str]:
    """.env.example's settings, then what docker-compose.yml sets, with local addresses and new
    keys. A setting .env.example leaves for the operator to fill in needs a value here."""
    # Production never creates keys: the web interface's session key, the key the doors sign
    # decisions with, the key that seals the second factors and the key that signs the audit
    # chain are files under the var dir.
    keys = run_dir / "var" / "keys"
    keys.mkdir(parents=True)
    for name, content in (("web-session.key", secrets.token_urlsafe(32)),
                          ("decision-signing.key", new_key()), ("totp-secrets.key", new_key()),
                          ("chain-signing.key", new_key())):
        fd = os.open(keys / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(content)
    book = run_dir / "address_book.toml"
    shipped = (ROOT / "activities" / "data" / "address_book.toml").read_text()
    book.write_text("".join(line for line in shipped.replace("@example.org", f"@{DESK_DOMAIN}")
                            .splitlines(keepends=True) if line.strip() != "example = true"))
    settings = {**env_example_settings(), **{
        "APPEALS_ENVIRONMENT": "production",
        "APPEALS_VAR_DIR": str(run_dir / "var"),
        "APPEALS_TEMPORAL_ADDRESS": temporal,
        "APPEALS_TEMPORAL_NAMESPACE": NAMESPACE,
        "APPEALS_TASK_QUEUE": "urgent-appeals",
        "APPEALS_DATABASE_URL": database_url,
        "APPEALS_EVENT_CIPHER_KEY": new_key(),
        "APPEALS_CODEC_KEYS": f"k1:{new_key()}",
        "APPEALS_SMTP_HOST": sink.host,
        "APPEALS_SMTP_PORT": str(sink.port),
        "APPEALS_LIVE_SENDING": "false",
        "APPEALS_SMTP_STARTTLS": "false",
        "APPEALS_MAIL_FROM": "urgent-appeals@secretariat.test",
        "APPEALS_ESCALATION_CONTACTS": json.dumps(STAFF),
        "APPEALS_ADDRESS_BOOK_PATH": str(book),
        "APPEALS_METRICS_HOST": "127.0.0.1",
        "APPEALS_METRICS_PORT": str(free_port()),
        "APPEALS_CODEC_SERVER_TOKEN": secrets.token_urlsafe(24),
        "APPEALS_CODEC_SERVER_UI_ORIGINS": json.dumps([UI_ORIGIN]),
        "APPEALS_CODEC_SERVER_PORT": str(free_port()),
        "APPEALS_WEB_HOST": "127.0.0.1",
        "APPEALS_WEB_PORT": str(free_port()),
        "APPEALS_SIGNATORY_NAME": "Clean Install",
        "APPEALS_SIGNATORY_ORGANISATION": "Urgent appeals secretariat (test)",
    }}
    unset = sorted(name for name, value in settings.items() if not value)
    assert not unset, f".env.example leaves {unset} to the operator: give a value above"
    return settings


# ================================================================================ what is checked
def answers(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes | None:
    """The body of a 200 answer, else None (not listening yet, or an error status)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bytes(response.read()) if response.status == 200 else None
    except OSError:
        return None


def run_one_case(s: Services) -> str:
    """One case from opening to dispatch through the `appeals` command, as staff drive it (the
    README walkthrough, cut to the MFA brief); its reference. The only place that knows the flow.
    The first head is bootstrapped and adds the staff; each signs in on their own machine (the
    head and the liaison with a second factor, as production requires)."""
    s.appeals("users", "bootstrap", "hana", "--name", "Hana Sato", "--email",
              "hana@secretariat.test", user="hana", stdin=PASSWORDS["hana"] + "\n")
    s.appeals("users", "add", "olga", "--name", "Olga Petrenko", "--email", "olga@secretariat.test",
              "--role", "case_officer", user="hana")
    s.appeals("users", "add", "lina", "--name", "Lina Haddad", "--email", "lina@secretariat.test",
              "--role", "ministry_liaison", user="hana")
    for user in ("olga", "lina"):
        s.appeals("users", "passwd", user, user="hana", stdin=PASSWORDS[user] + "\n")
    intake = json.loads((EXAMPLES / "intake.json").read_text())
    intake.update(requested_actions=["mfa"], refused_actions=[], eu_grant=None)
    intake_file = s.cwd / "intake.json"
    intake_file.write_text(json.dumps(intake))
    ref = s.appeals("case", "open", str(intake_file)).strip()
    s.appeals("case", "verify", ref, str(EXAMPLES / "verification.json"))
    s.appeals("case", "consent", ref, "mfa", "--grant", "--given-by", "lawyer", "--relationship",
              "her lawyer", "--channel", "phone")
    s.appeals("case", "clear", ref, "mfa", "--grant", user="lina")
    s.wait("dispatch", lambda: json.loads(s.appeals("case", "show", ref, "--json"))["stage"] == "follow_up",
           seconds=120)
    return ref


def test_the_image_install_runs_a_case_in_production_mode(services: Services) -> None:
    s = services
    # Everything below runs the installed package: its files come from the fresh environment.
    where = subprocess.run(
        [str(s.venv / "bin" / "python"), "-c",
         "import activities.messages as m, web.app as w; print(m.TEMPLATES); print(w.STATIC)"],
        cwd=s.cwd, env=s.env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    for directory in where.stdout.split():
        assert Path(directory).is_relative_to(s.venv) and Path(directory).is_dir(), \
            f"{directory} is missing from the installed package (package data in pyproject.toml)"

    # The event store's tables, triggers and grants, by its owner, before anything connects as the
    # application's role (which may create nothing), as the compose file's event-store-setup does.
    setup = s.run_once("event-store-setup", {
        "APPEALS_SCHEMA_DATABASE_URL": s.roles.owner_url, "APPEALS_DATABASE_URL": s.roles.app_url})
    assert f"for {s.roles.app}:" in setup
    s.start("worker")
    s.wait("worker", lambda: "worker polling task queue" in s.log("worker"))
    for service in ("web", "codec-server"):
        s.start(service)
    web = f"http://127.0.0.1:{s.env['APPEALS_WEB_PORT']}"
    codec = f"http://127.0.0.1:{s.env['APPEALS_CODEC_SERVER_PORT']}"
    s.wait("web interface", lambda: answers(f"{web}/sign-in") is not None)
    assert answers(f"{web}/static/app.css"), "the web interface serves no style sheet"
    # The codec server encrypts a payload and decrypts it again, for a caller with the token
    # (encoding only for the Temporal UI's own page: its Origin).
    token = {"Authorization": f"Bearer {s.env['APPEALS_CODEC_SERVER_TOKEN']}",
             "Content-Type": "application/json", "Origin": UI_ORIGIN}
    plain = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                           "data": base64.b64encode(b'"clean install"').decode()}]}
    s.wait("codec server", lambda: answers(f"{codec}/encode", json.dumps(plain).encode(), token) is not None)
    encoded = answers(f"{codec}/encode", json.dumps(plain).encode(), token)
    assert encoded and b"clean install" not in encoded
    assert json.loads(answers(f"{codec}/decode", encoded, token) or b"{}") == plain

    ref = run_one_case(s)

    sent = [rcpt for _, rcpt, m in s.sink.messages if m["X-Appeal-Action"] == "mfa"]
    assert len(sent) == 1 and f"mfa-desk-ke@{DESK_DOMAIN}" in sent[0], (s.sink.messages, s.all_logs())
    assert s.appeals("audit", ref, "--verify").splitlines()[-1] == "OK"
