"""Store backends for tests: a real SQLite file, and a fresh database on the real PostgreSQL.

PostgreSQL tests skip, saying so plainly, only when no server answers at the configured URL.
"""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store.app import CaseStore, sqlite_url

PG_ADMIN_URL = os.environ.get("APPEALS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def postgres_reason() -> str | None:
    """None when PostgreSQL answers, else why not (shown in the skip message)."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means: skip, and say why
        return f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}); its tests were skipped"


@dataclass
class Backend:
    name: str
    url: str
    key: str
    sqlite_path: Path | None = None
    pg_database: str | None = None

    def open(self, key: str | None = None) -> CaseStore:
        return CaseStore(self.url, key or self.key)


def _pg_exec(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "events.sqlite"
        yield Backend("sqlite", sqlite_url(str(path)), new_key(), sqlite_path=path)
        return
    with fresh_postgres_database() as (url, name):
        yield Backend("postgres", url, new_key(), pg_database=name)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[tuple[str, str]]:
    """A new, empty database on the real PostgreSQL (SQLAlchemy URL, name), dropped afterwards;
    the test is skipped, saying why, when no server answers."""
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"appeals_test_{uuid.uuid4().hex[:12]}"
    _pg_exec(f"CREATE DATABASE {name}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}", name
    finally:
        _pg_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def store(backend: Backend) -> Iterator[CaseStore]:
    app = backend.open()
    try:
        yield app
    finally:
        app.close()
