"""Starting the worker process: a bad configuration gives a clear message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dev_stack import ROOT
from worker.main import ConfigurationError, checked_address_book
from worker.settings import load_settings


def start_worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPEALS_")}
    values = {"APPEALS_VAR_DIR": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "worker"], cwd=ROOT, env={**clean, **values},
                          capture_output=True, text=True, timeout=60)


def test_a_bad_setting_stops_the_worker_with_the_variable_named(tmp_path: Path) -> None:
    result = start_worker(tmp_path, APPEALS_SMTP_HOST="smtp.example.org")
    assert result.returncode == 2
    assert "APPEALS_SMTP_HOST" in result.stderr and "Traceback" not in result.stderr


def test_production_refuses_the_shipped_example_ministry_addresses(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    checked_address_book(settings)  # development: the shipped stand-ins are fine
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(ConfigurationError, match="APPEALS_ADDRESS_BOOK_PATH.*eu_delegation, mfa_desk"):
        checked_address_book(production)
