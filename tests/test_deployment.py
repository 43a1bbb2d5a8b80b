"""The production deployment files, checked statically (there is no Docker engine here; the same
topology runs as local processes in tests/test_production_topology.py)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from worker.settings import ENV_PREFIX, Settings

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
            "codec-server", "mailpit", "worker", "web"} <= set(SERVICES)
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
    for name in ("worker", "web", "codec-server"):
        assert SERVICES[name]["image"].startswith(PROJECT_IMAGE) and SERVICES[name]["build"] == "."
    assert SERVICES["worker"]["command"] == ["appeals", "worker"]


def test_only_the_web_interface_is_published() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == {"web"}


def test_services_wait_for_what_they_need_and_have_health_checks() -> None:
    for name in ("postgres", "temporal", "mailpit"):
        assert "healthcheck" in SERVICES[name], name
    assert SERVICES["worker"]["depends_on"]["temporal-setup"]["condition"] == \
        "service_completed_successfully"
    assert SERVICES["temporal"]["depends_on"]["temporal-admin-tools"]["condition"] == \
        "service_completed_successfully"


def test_every_setting_the_code_reads_is_provided_or_documented() -> None:
    for name in Settings.model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        assert variable in COMPOSE_TEXT or re.search(rf"^#? ?{variable}=", ENV_EXAMPLE, re.M), variable


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    for variable in set(re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", COMPOSE_TEXT)):
        assert re.search(rf"^#? ?{variable}=", ENV_EXAMPLE, re.M) or f"${{{variable}:-" in COMPOSE_TEXT, \
            variable


def test_no_secret_is_written_into_the_compose_file() -> None:
    for service in SERVICES.values():
        for key, value in (service.get("environment") or {}).items():
            secret = any(word in key for word in ("PASSWORD", "_KEY", "KEYS", "TOKEN", "PWD"))
            if secret and not key.endswith("PASS_ACCESS_TOKEN"):
                assert str(value).startswith("${"), key


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
