"""The production deployment files, checked statically (there is no Docker engine here; the same
topology runs as local processes in tests/test_production_topology.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from worker.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
SERVICES: dict[str, Any] = COMPOSE["services"]
PROJECT_IMAGE = "urgent-appeals:"


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
