"""The production deployment files, checked statically (there is no Docker engine here; the same
topology runs as local processes in tests/test_production_topology.py)."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import importlib.metadata
import importlib.resources
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from sqlalchemy.engine import make_url

from tests.dev_stack import DevServer, free_port
from tests.test_temporal_tls import Issued, TlsTerminator
from web import auth
from worker.codec_server import load_codec_server_settings, misplaced_secrets
from worker.main import connect
from worker.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SERVICES: dict[str, Any] = COMPOSE["services"]
PROJECT_IMAGE = "urgent-appeals:"
LOCK = ROOT / "requirements.lock"
LOCK_DIGEST_LINE = "# pyproject-sha256: "


def test_the_services_of_the_design_exist() -> None:
    assert {"postgres", "temporal-admin-tools", "temporal", "temporal-setup", "temporal-ui",
            "codec-server", "mailpit", "worker", "web", "event-store-setup"} <= set(SERVICES)
    ui = SERVICES["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] and ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"] == "true"
    setup = " ".join(SERVICES["temporal-setup"]["command"])
    for attribute in ("CaseStage", "CaseRisk", "CaseNextDeadline"):
        assert attribute in setup


def test_every_image_tag_is_pinned() -> None:
    for name, service in SERVICES.items():
        image = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", service["image"])
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest" and "$" not in tag, (name, image)


def test_worker_web_and_codec_server_run_the_project_image() -> None:
    for name in ("worker", "web", "codec-server", "event-store-setup"):
        assert SERVICES[name]["image"].startswith(PROJECT_IMAGE) and SERVICES[name]["build"] == "."
    assert SERVICES["worker"]["command"] == ["appeals", "worker"]
    assert SERVICES["event-store-setup"]["command"] == ["appeals", "store", "init-db"]


def test_only_the_tls_proxy_of_the_web_interface_is_published() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"web-proxy"}
    assert [p.rsplit(":", 1)[1] for p in SERVICES["web-proxy"]["ports"]] == ["443", "80"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES["web-proxy"]["volumes"]


def test_services_wait_for_what_they_need_and_have_health_checks() -> None:
    for name in ("postgres", "temporal", "mailpit"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["worker"]["depends_on"]["temporal-setup"]["condition"] == \
        "service_completed_successfully"
    assert SERVICES["temporal"]["depends_on"]["temporal-admin-tools"]["condition"] == \
        "service_completed_successfully"
    # The event store's tables, triggers and grants exist before the application connects.
    for name in ("worker", "web"):
        assert SERVICES[name]["depends_on"]["event-store-setup"]["condition"] == \
            "service_completed_successfully", name
    assert SERVICES["event-store-setup"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_setting_the_code_reads_is_provided_or_documented() -> None:
    for name in Settings.model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        assert variable in COMPOSE_TEXT or re.search(rf"^#? ?{variable}=", ENV_EXAMPLE, re.M), variable


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    for variable in set(re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", COMPOSE_TEXT)):
        assert re.search(rf"^#? ?{variable}=", ENV_EXAMPLE, re.M) or f"${{{variable}:-" in COMPOSE_TEXT, \
            variable


def test_no_secret_is_written_into_the_compose_file_or_its_environment() -> None:
    # Every secret is a file mounted as a Docker secret: neither a value here nor one taken from
    # .env (which would show in `docker inspect`). Names of non-secrets that look like secrets:
    not_secrets = {"TEMPORAL_CODEC_PASS_ACCESS_TOKEN"}
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            secret = any(word in key for word in ("PASSWORD", "_KEY", "KEYS", "TOKEN", "PWD"))
            if secret and key not in not_secrets:
                assert str(value).startswith("/run/secrets/"), (name, key, value)
    for variable in re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", COMPOSE_TEXT):
        assert not any(word in variable for word in ("PASSWORD", "_KEY", "KEYS", "TOKEN", "PWD")), \
            variable


def test_the_image_contains_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in [*packages, "templates"]:
        assert f"COPY {package} {package}" in dockerfile, package
    assert "FROM python:3.11" in dockerfile and ":latest" not in dockerfile


# ============================================================ the image's dependencies and its lock
@dataclass(frozen=True)
class Step:
    instruction: str  # COPY, RUN, ...
    arguments: str


def dockerfile_steps(text: str | None = None) -> list[Step]:
    """The Dockerfile's instructions in order, continuation lines joined and comments left out."""
    steps, current = [], ""
    for raw in (text if text is not None else (ROOT / "Dockerfile").read_text()).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        instruction, _, arguments = (current + line).partition(" ")
        steps.append(Step(instruction.upper(), arguments.strip()))
        current = ""
    return steps


def image_install_commands(steps: list[Step] | None = None) -> list[str]:
    """The shell commands of the Dockerfile's RUN steps that run pip (what the image installs)."""
    runs = [s.arguments for s in (steps or dockerfile_steps()) if s.instruction == "RUN"]
    return [command for command in runs if re.search(r"\bpip\b", command)]


def lock_digest(pyproject_text: str | None = None) -> str:
    """What requirements.lock is compiled from, as a sha256: requires-python and the main
    dependencies, without whitespace and sorted, so that comments and layout do not count."""
    project = tomllib.loads(pyproject_text or (ROOT / "pyproject.toml").read_text())["project"]
    normalised = {"requires-python": "".join(project["requires-python"].split()),
                  "dependencies": sorted("".join(d.split()) for d in project["dependencies"])}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()


def stamp_lock(path: Path = LOCK) -> None:
    """`make lock`, after uv has written the lock: record on top what it was compiled from."""
    lines = [line for line in path.read_text().splitlines(keepends=True)
             if not line.startswith(LOCK_DIGEST_LINE)]
    path.write_text(f"{LOCK_DIGEST_LINE}{lock_digest()}\n" + "".join(lines))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_pins(text: str) -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes) of every requirement in a lock file."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in text.splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            name = canonical(match[1])
            pins[name] = (match[2], 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
        elif line and not line[0].isspace():
            name = ""  # a comment or an option line ends the current requirement
    return pins


def main_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(d) for d in project["dependencies"]]


def test_the_lock_file_is_current_with_pyproject() -> None:
    header = [line for line in LOCK.read_text().splitlines() if line.startswith(LOCK_DIGEST_LINE)]
    assert header, f"{LOCK.name} has no {LOCK_DIGEST_LINE.strip()} line: run `make lock`"
    assert header[0].removeprefix(LOCK_DIGEST_LINE).strip() == lock_digest(), \
        f"{LOCK.name} is stale: the dependencies in pyproject.toml changed since; run `make lock`"


def test_every_main_dependency_is_pinned_in_the_lock_with_hashes() -> None:
    pins = locked_pins(LOCK.read_text())
    assert pins and all(hashes for _, hashes in pins.values()), "every pin needs its hashes"
    for requirement in main_dependencies():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonical(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"{LOCK.name} pins {name}=={pins[name][0]}, outside {requirement}: run `make lock`"
        for extra in requirement.extras:  # e.g. psycopg[binary] needs psycopg-binary
            for line in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(line)
                if needed.marker is not None and needed.marker.evaluate({"extra": extra}) \
                        and not needed.marker.evaluate({"extra": ""}):
                    assert canonical(needed.name) in pins, f"{needed.name} (for {requirement})"


def test_the_image_installs_the_lock_with_hashes_then_the_project_alone() -> None:
    steps = dockerfile_steps()
    commands = image_install_commands(steps)
    assert any("--require-hashes -r requirements.lock" in c for c in commands), commands
    assert any(re.search(r"pip install .*--no-deps \.(\s|$)", c) for c in commands), commands
    assert "pip check" in commands[-1]
    # The lock is in the image before the step that installs it.
    where = [(s.instruction, i) for i, s in enumerate(steps) if "requirements.lock" in s.arguments]
    assert where and where[0][0] == "COPY" and "RUN" in dict(where), where
    # The lock is compiled for the image's Python.
    python = re.search(r"^FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert python and f"--python-version {python[1]}" in (ROOT / "Makefile").read_text()


def test_the_compose_database_driver_is_a_main_dependency() -> None:
    # The image installs the main dependencies only: a driver in the test extras would be missing.
    url = COMPOSE["x-appeals-env"]["APPEALS_DATABASE_URL"]
    driver = url.split("://", 1)[0].partition("+")[2]
    assert driver == "psycopg" and driver in {canonical(r.name) for r in main_dependencies()}


def test_the_operations_guide_gives_the_image_install_commands() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for command in image_install_commands():
        assert command in guide, command


# ================================================================ connection security and secrets
SECRETS_SCRIPT = ROOT / "deploy" / "init-secrets.sh"
COMPOSE_SECRETS: dict[str, Any] = COMPOSE["secrets"]
# What production refuses as placeholders in .env.example, filled in as an operator would.
OPERATOR_VALUES = {
    "APPEALS_MAIL_FROM": "urgent-appeals@secretariat.test",
    "APPEALS_ESCALATION_CONTACTS": json.dumps({"1": ["duty@secretariat.test"],
                                               "2": ["head@secretariat.test"],
                                               "3": ["board@secretariat.test"]}),
    "APPEALS_SIGNATORY_NAME": "Head of Secretariat",
    "APPEALS_SIGNATORY_ORGANISATION": "Urgent appeals secretariat",
}


def test_the_compose_file_follows_the_compose_specification() -> None:
    # The schema check-jsonschema vendors (a test dependency): nothing is downloaded.
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]


def test_a_broken_compose_file_would_be_caught() -> None:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    broken = {**COMPOSE, "services": {**SERVICES, "web": {**SERVICES["web"], "ports": "443"}}}
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_the_deployment_files_stay_out_of_git() -> None:
    ignored = subprocess.run(["git", "check-ignore", ".env", "secrets/event-cipher.key", ".env.example"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == [".env", "secrets/event-cipher.key"], ignored


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/init-secrets.sh's output, as an operator runs it once."""
    target = tmp_path_factory.mktemp("deployment") / "secrets"
    made = subprocess.run(["sh", str(SECRETS_SCRIPT), str(target)], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    return target


def test_init_secrets_makes_every_file_the_compose_file_mounts_and_keeps_them(secrets_dir: Path) -> None:
    for name, secret in COMPOSE_SECRETS.items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
        assert (secrets_dir / secret["file"].removeprefix("./secrets/")).is_file(), name
    assert secrets_dir.stat().st_mode & 0o077 == 0
    for private in ("event-cipher.key", "decision-signing.key", "web-session.key", "codec-keys",
                    "temporal-client.key", "temporal-server.key", "web-tls.key", "ca/temporal-ca.key"):
        assert (secrets_dir / private).stat().st_mode & 0o077 == 0, private
    before = {p: p.read_bytes() for p in secrets_dir.rglob("*") if p.is_file()}
    again = subprocess.run(["sh", str(SECRETS_SCRIPT), str(secrets_dir)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "made" not in again.stdout, again.stdout
    assert {p: p.read_bytes() for p in secrets_dir.rglob("*") if p.is_file()} == before
    # The CA's key is never given to a service.
    assert not any("ca/" in s["file"] for s in COMPOSE_SECRETS.values())


def service_environment(service: str, secrets_dir: Path) -> dict[str, str]:
    """A service's environment as Compose gives it: .env.example's values (operator's where it has
    placeholders) interpolated, each /run/secrets/NAME replaced by the file init-secrets made, which
    must be mounted into that service."""
    env_file = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.M))
    env_file.update(OPERATOR_VALUES)
    mounted = {s if isinstance(s, str) else s["source"] for s in SERVICES[service].get("secrets", [])}

    def interpolate(text: str) -> str:
        return re.sub(r"\$\{([A-Z_]+)(?::-([^}]*))?\}",
                      lambda m: env_file.get(m[1]) or m[2] or "", text)

    def secret_file(match: re.Match[str]) -> str:
        assert match[1] in mounted, f"{service} names /run/secrets/{match[1]} but does not mount it"
        return str(secrets_dir / COMPOSE_SECRETS[match[1]]["file"].removeprefix("./secrets/"))

    return {key: re.sub(r"^/run/secrets/([a-z_]+)$", secret_file, interpolate(str(value)))
            for key, value in SERVICES[service]["environment"].items()}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("APPEALS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize("service", ["worker", "web"])
def test_the_worker_and_the_web_interface_start_from_the_compose_file_and_the_secrets(
        clean_env: pytest.MonkeyPatch, secrets_dir: Path, service: str) -> None:
    env = service_environment(service, secrets_dir)
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_settings()  # production: it would refuse anything missing
    assert settings.environment == "production"
    tls = settings.temporal_tls_config()
    assert not isinstance(tls, bool)
    assert tls.client_cert == (secrets_dir / "temporal-client.crt").read_bytes()
    assert tls.server_root_ca_cert == (secrets_dir / "temporal-ca.crt").read_bytes()
    url = make_url(settings.database_url)
    assert url.password == (secrets_dir / "events-db-password").read_text().strip()
    assert settings.event_store_cipher_key() == (secrets_dir / "event-cipher.key").read_text().strip()
    assert settings.codec_keyring().current_id == "k1"
    assert settings.smtp_password is None  # the empty file: no SMTP login
    # The audit chain's signing key (production refuses to start without it) and the checkpoints.
    assert settings.chain_signer().key_id.startswith("ed-")
    assert str(settings.checkpoint_dir) == "/var/lib/appeals/checkpoints"


def test_the_web_session_key_is_mounted_where_the_web_interface_reads_it(
        secrets_dir: Path, tmp_path: Path) -> None:
    var_dir = re.search(r"APPEALS_VAR_DIR=(\S+)", (ROOT / "Dockerfile").read_text())
    assert var_dir
    [mount] = [s for s in SERVICES["web"]["secrets"] if isinstance(s, dict)]
    assert mount == {"source": "web_session_key",
                     "target": f"{var_dir[1]}/keys/{auth.SESSION_KEY_FILE}"}
    (tmp_path / "keys").mkdir()
    shutil.copy2(secrets_dir / "web-session.key", tmp_path / "keys" / auth.SESSION_KEY_FILE)
    assert auth.session_key(tmp_path, "production") == (secrets_dir / "web-session.key").read_bytes().strip()


def test_the_codec_server_gets_only_the_codec_keys_and_its_token(
        clean_env: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    service = SERVICES["codec-server"]
    assert set(service["secrets"]) == {"codec_keys", "codec_server_token"}
    assert "volumes" not in service  # not even the address book
    env = service_environment("codec-server", secrets_dir)
    assert misplaced_secrets(env) == [] and not any("TEMPORAL" in k for k in env)
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_codec_server_settings()
    assert settings.codec_server_host == "0.0.0.0" and settings.codec_server_port == 8888
    assert settings.token == (secrets_dir / "codec-server-token").read_text().strip()
    assert settings.codec_server_ui_origins == ["https://temporal-ui.secretariat.example.org"]


def test_temporal_accepts_only_mutual_tls_and_every_client_presents_a_certificate() -> None:
    server = SERVICES["temporal"]["environment"]
    assert server["TEMPORAL_TLS_REQUIRE_CLIENT_AUTH"] == "true"
    for variable in ("TEMPORAL_TLS_SERVER_CA_CERT", "TEMPORAL_TLS_SERVER_CERT", "TEMPORAL_TLS_SERVER_KEY",
                     "TEMPORAL_TLS_FRONTEND_CERT", "TEMPORAL_TLS_FRONTEND_KEY",
                     "TEMPORAL_TLS_CLIENT1_CA_CERT", "TEMPORAL_TLS_CLIENT2_CA_CERT"):
        assert server[variable].startswith("/run/secrets/temporal_"), variable
    assert server["TEMPORAL_TLS_FRONTEND_SERVER_NAME"] == server["TEMPORAL_TLS_INTERNODE_SERVER_NAME"] \
        == COMPOSE["x-temporal-client-env"]["APPEALS_TEMPORAL_ADDRESS"].split(":")[0]
    assert "POSTGRES_PWD" not in server  # read from its secret file by the entrypoint
    assert "--tls-cert-path" in SERVICES["temporal"]["healthcheck"]["test"]
    setup = " ".join(SERVICES["temporal-setup"]["command"])
    assert setup.count("temporal operator") == setup.count("$$TLS") and "--tls-cert-path" in setup
    ui = SERVICES["temporal-ui"]["environment"]
    assert ui["TEMPORAL_TLS_CERT"] and ui["TEMPORAL_TLS_KEY"] and ui["TEMPORAL_TLS_CA"]
    assert ui["TEMPORAL_TLS_ENABLE_HOST_VERIFICATION"] == "true"
    for name in ("worker", "web"):
        env = SERVICES[name]["environment"]
        assert env["APPEALS_TEMPORAL_TLS"] == "true" and env["APPEALS_TEMPORAL_TLS_CERT_FILE"], name


def test_the_certificates_init_secrets_makes_work_with_the_temporal_client(
        dev_server: DevServer, secrets_dir: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The compose worker's settings and certificates against a TLS terminator that presents
    secrets/temporal-server.crt and requires a client certificate of secrets/temporal-ca.crt."""
    host, _, port = dev_server.address.rpartition(":")
    terminator = TlsTerminator((host, int(port)), Issued(secrets_dir / "temporal-server.crt",
                                                         secrets_dir / "temporal-server.key"),
                               secrets_dir / "temporal-ca.crt").start()
    try:
        env = service_environment("worker", secrets_dir)
        env.update(APPEALS_TEMPORAL_ADDRESS=terminator.address, APPEALS_TEMPORAL_NAMESPACE="default",
                   # The terminator listens on 127.0.0.1; the certificate names the service.
                   APPEALS_TEMPORAL_TLS_SERVER_NAME="temporal")
        for name, value in env.items():
            clean_env.setenv(name, value)
        client = asyncio.run(asyncio.wait_for(connect(load_settings()), 30))
        assert client.namespace == "default" and terminator.accepted == ["appeals"]
    finally:
        terminator.stop()


def _stand_in_psql(tmp_path: Path) -> Path:
    """A psql that keeps the SQL it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "psql").write_text(f"#!/bin/sh\ncat > {tmp_path / 'sql'}\n")
    (bin_dir / "psql").chmod(0o755)
    return bin_dir


def init_script_env(tmp_path: Path, **names: str) -> dict[str, str]:
    """deploy/postgres-init.sh's environment as the postgres service gives it (.env.example's
    names, unless given), with a password file per role, each with a quote in it."""
    env_file = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.M))
    postgres = SERVICES["postgres"]["environment"]
    env = {"PATH": os.environ["PATH"]}
    for key, value in postgres.items():
        match = re.fullmatch(r"/run/secrets/([a-z_]+)", str(value))
        if match:
            path = tmp_path / match[1]
            path.write_text(f"it's-{match[1]}\n")
            env[key] = str(path)
        else:
            env[key] = re.sub(r"\$\{([A-Z_]+)\}", lambda m: env_file[m[1]], str(value))
    env.update(names)
    return env


def test_each_database_role_gets_its_password_from_its_secret_file(tmp_path: Path) -> None:
    env = init_script_env(tmp_path)
    env["PATH"] = f"{_stand_in_psql(tmp_path)}:{env['PATH']}"
    run = subprocess.run(["sh", str(ROOT / "deploy" / "postgres-init.sh")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    sql = (tmp_path / "sql").read_text()
    for role, secret in (("temporal", "temporal_db_password"),
                         ("appeals_owner", "events_db_owner_password"),
                         ("appeals", "events_db_password")):
        assert (f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '
                f"'it''s-{secret}';") in sql, role
    assert "SUPERUSER" not in sql.replace("NOSUPERUSER", "")
    postgres = SERVICES["postgres"]["environment"]
    assert postgres["EVENTS_DB_PASSWORD_FILE"] == COMPOSE["x-appeals-env"]["APPEALS_DATABASE_PASSWORD_FILE"]
    assert postgres["EVENTS_DB_OWNER_PASSWORD_FILE"] == \
        SERVICES["event-store-setup"]["environment"]["APPEALS_SCHEMA_DATABASE_PASSWORD_FILE"]


def test_the_init_script_refuses_a_role_named_like_the_superuser(tmp_path: Path) -> None:
    env = init_script_env(tmp_path, TEMPORAL_DB_USER="postgres")
    env["PATH"] = f"{_stand_in_psql(tmp_path)}:{env['PATH']}"
    run = subprocess.run(["sh", str(ROOT / "deploy" / "postgres-init.sh")], env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "superuser" in run.stderr
    assert not (tmp_path / "sql").exists()


def test_no_service_but_postgres_uses_the_superuser_and_temporal_has_its_own_user() -> None:
    """Temporal's database user is not the event store's and not the superuser; the worker and
    the web interface connect as the application's role; only the one-shot set-up has the schema
    owner's password."""
    env_file = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.M))
    names = [env_file[k] for k in ("POSTGRES_USER", "TEMPORAL_DB_USER", "EVENTS_DB_OWNER",
                                   "EVENTS_DB_USER")]
    assert len(set(names)) == 4, names
    for name, service in SERVICES.items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        text = yaml.safe_dump(service)
        if name != "postgres":
            assert "postgres_password" not in mounted and "POSTGRES_USER}" not in text, name
        if name not in ("postgres", "event-store-setup"):
            assert "events_db_owner_password" not in mounted and "EVENTS_DB_OWNER" not in text, name
        if name not in ("postgres", "temporal", "temporal-admin-tools"):
            assert "temporal_db_password" not in mounted and "TEMPORAL_DB_USER" not in text, name
    assert SERVICES["temporal"]["environment"]["POSTGRES_USER"] == "${TEMPORAL_DB_USER}"
    assert "temporal_db_password" in " ".join(SERVICES["temporal"]["entrypoint"])
    tools = " ".join(SERVICES["temporal-admin-tools"]["command"])
    assert tools.count("-u $$TEMPORAL_DB_USER") == tools.count("temporal-sql-tool") == 4
    app_url = COMPOSE["x-appeals-env"]["APPEALS_DATABASE_URL"]
    assert make_url(app_url).username == "${EVENTS_DB_USER}"
    for name in ("worker", "web"):
        assert SERVICES[name]["environment"]["APPEALS_DATABASE_URL"] == app_url
        assert "APPEALS_SCHEMA_DATABASE_URL" not in SERVICES[name]["environment"]
    setup = SERVICES["event-store-setup"]["environment"]
    assert make_url(setup["APPEALS_SCHEMA_DATABASE_URL"]).username == "${EVENTS_DB_OWNER}"
    assert setup["APPEALS_DATABASE_URL"] == app_url


def test_the_event_store_setup_reads_the_owner_and_the_app_role_from_the_compose_file(
        clean_env: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    from store.roles import role_of
    from worker.settings import load_schema_settings

    env = service_environment("event-store-setup", secrets_dir)
    assert set(SERVICES["event-store-setup"]["secrets"]) == {"events_db_owner_password"}
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = load_schema_settings()
    assert settings.schema_database_url is not None and settings.database_url is not None
    owner = make_url(settings.schema_database_url)
    assert owner.username == "appeals_owner" and owner.database == "appeals_events"
    assert owner.password == (secrets_dir / "events-db-owner-password").read_text().strip()
    assert role_of(settings.database_url) == "appeals"


def test_the_init_script_and_init_db_on_the_real_postgres(tmp_path: Path) -> None:
    """deploy/postgres-init.sh run by the real psql against the real PostgreSQL (unique names),
    then `appeals store init-db` as the owner it made: no role it made is a superuser or may create
    roles or databases; Temporal's user owns Temporal's databases and the application's role cannot
    even connect to them; the application's role records a case."""
    import psycopg

    from tests.backends import PG_ADMIN_URL, _pg_exec, new_key, postgres_reason

    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("psql") is None:
        pytest.skip("psql (PostgreSQL's client) is not installed; the init script needs it")
    admin = make_url(PG_ADMIN_URL)
    n = os.urandom(5).hex()
    names = {"TEMPORAL_DB_USER": f"t_temporal_{n}", "EVENTS_DB_OWNER": f"t_owner_{n}",
             "EVENTS_DB_USER": f"t_app_{n}", "EVENTS_DB_NAME": f"t_events_{n}",
             "TEMPORAL_DB_NAME": f"t_temporal_db_{n}",
             "TEMPORAL_VISIBILITY_DB_NAME": f"t_visibility_{n}",
             "POSTGRES_USER": admin.username or "postgres"}
    env = init_script_env(tmp_path, **names, PGHOST=admin.host or "127.0.0.1",
                          PGPORT=str(admin.port or 5432))
    server = f"{admin.host or '127.0.0.1'}:{admin.port or 5432}"
    try:
        run = subprocess.run(["sh", str(ROOT / "deploy" / "postgres-init.sh")], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for role in (names["TEMPORAL_DB_USER"], names["EVENTS_DB_OWNER"], names["EVENTS_DB_USER"]):
                flags = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                                     "WHERE rolname = %s", (role,)).fetchone()
                assert flags == (False, False, False), role
            owners = dict(conn.execute(
                "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
                ([names["TEMPORAL_DB_NAME"], names["TEMPORAL_VISIBILITY_DB_NAME"],
                  names["EVENTS_DB_NAME"]],)).fetchall())
        assert owners == {names["TEMPORAL_DB_NAME"]: names["TEMPORAL_DB_USER"],
                          names["TEMPORAL_VISIBILITY_DB_NAME"]: names["TEMPORAL_DB_USER"],
                          names["EVENTS_DB_NAME"]: names["EVENTS_DB_OWNER"]}
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(f"postgresql://{names['EVENTS_DB_USER']}@{server}/"
                            f"{names['TEMPORAL_DB_NAME']}").close()
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(f"postgresql://{names['TEMPORAL_DB_USER']}@{server}/"
                            f"{names['EVENTS_DB_NAME']}").close()
        # Temporal's user can make its schema in its own database (as the admin tools do).
        with psycopg.connect(f"postgresql://{names['TEMPORAL_DB_USER']}@{server}/"
                             f"{names['TEMPORAL_VISIBILITY_DB_NAME']}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
            conn.execute("CREATE TABLE schema_version (n integer)")
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "store", "init-db"], cwd=ROOT, capture_output=True,
            text=True, timeout=120, env={
                "PATH": os.environ["PATH"],
                "APPEALS_SCHEMA_DATABASE_URL":
                    f"postgresql+psycopg://{names['EVENTS_DB_OWNER']}@{server}/{names['EVENTS_DB_NAME']}",
                "APPEALS_DATABASE_URL":
                    f"postgresql+psycopg://{names['EVENTS_DB_USER']}@{server}/{names['EVENTS_DB_NAME']}"})
        assert done.returncode == 0, done.stderr
        from store.app import CaseStore
        from tests.factories import open_args
        store = CaseStore(f"postgresql+psycopg://{names['EVENTS_DB_USER']}@{server}/"
                          f"{names['EVENTS_DB_NAME']}", new_key())
        try:
            store.open_case(**open_args("UA-2026-0001", actions=["mfa"]))
            assert store.verify("UA-2026-0001").ok
        finally:
            store.close()
    finally:
        for database in ("EVENTS_DB_NAME", "TEMPORAL_DB_NAME", "TEMPORAL_VISIBILITY_DB_NAME"):
            _pg_exec(f'DROP DATABASE IF EXISTS "{names[database]}" WITH (FORCE)')
        for role in ("EVENTS_DB_USER", "EVENTS_DB_OWNER", "TEMPORAL_DB_USER"):
            _pg_exec(f'DROP ROLE IF EXISTS "{names[role]}"')


# ------------------------------------------------------------------ the TLS proxy of the web interface
NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if Path(p).exists()), None)


@pytest.mark.skipif(NGINX is None, reason="nginx not installed (Debian's nginx; .ci/run installs it)")
def test_the_web_proxy_serves_https_with_hsts_and_redirects_plain_http(
        tmp_path: Path, secrets_dir: Path) -> None:
    """deploy/nginx.conf, run by Debian's nginx with only its addresses and paths changed, in
    front of a stand-in for the web interface."""
    seen: dict[str, str] = {}

    class Backend(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.update({k.lower(): v for k, v in self.headers.items()})
            body = b"sign in"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    https_port, http_port = free_port(), free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in {"user nginx;": "", "pid /var/run/nginx.pid;": f"pid {tmp_path}/nginx.pid;",
                     "server web:8000;": f"server 127.0.0.1:{backend.server_port};",
                     "listen 80 default_server;": f"listen 127.0.0.1:{http_port} default_server;",
                     "listen 443 ssl default_server;": f"listen 127.0.0.1:{https_port} ssl default_server;",
                     "/run/secrets/web_tls_crt": str(secrets_dir / "web-tls.crt"),
                     "/run/secrets/web_tls_key": str(secrets_dir / "web-tls.key"),
                     "http {\n": f"http {{\n    client_body_temp_path {tmp_path}/body;\n"
                                 f"    proxy_temp_path {tmp_path}/proxy;\n"
                                 f"    fastcgi_temp_path {tmp_path}/fastcgi;\n"
                                 f"    uwsgi_temp_path {tmp_path}/uwsgi;\n"
                                 f"    scgi_temp_path {tmp_path}/scgi;\n"}.items():
        assert conf.count(old) == 1, old
        conf = conf.replace(old, new)
    (tmp_path / "nginx.conf").write_text(conf)
    command = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr",
               "-g", "daemon off;"]
    checked = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(secrets_dir / "web-tls.crt"))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"https://localhost:{https_port}/sign-in", context=context,
                                            timeout=5) as answer:
                    body, headers = answer.read(), answer.headers
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert body == b"sign in"
        hsts = re.fullmatch(r"max-age=(\d+); includeSubDomains", headers["Strict-Transport-Security"] or "")
        assert hsts and int(hsts[1]) >= 365 * 86400, headers["Strict-Transport-Security"]
        assert "nginx/" not in (headers["Server"] or "")
        assert seen["x-forwarded-proto"] == "https" and seen["host"] == "localhost"
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(f"http://localhost:{http_port}/cases?x=1", timeout=5)
        assert redirect.value.code == 301
        assert redirect.value.headers["Location"] == "https://localhost/cases?x=1"
    finally:
        proc.terminate()
        proc.wait(10)
        backend.shutdown()
