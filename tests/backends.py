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
from typing import Any

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


@dataclass
class PostgresRoles:
    """A fresh database owned by a fresh schema-owner role, and a fresh application role (ordinary
    login roles; the test server trusts local connections, so no passwords)."""

    database: str
    owner: str
    app: str

    def url(self, role: str, driver: str = "+psycopg") -> str:
        server = PG_ADMIN_URL.rsplit("/", 1)[0].removeprefix("postgresql://").split("@")[-1]
        return f"postgresql{driver}://{role}@{server}/{self.database}"

    @property
    def owner_url(self) -> str:
        return self.url(self.owner)

    @property
    def app_url(self) -> str:
        return self.url(self.app)

    def connect(self, role: str) -> Any:
        import psycopg
        return psycopg.connect(self.url(role, driver=""), autocommit=True)


@contextlib.contextmanager
def fresh_postgres_roles(set_up: bool = False) -> Iterator[PostgresRoles]:
    """PostgresRoles with unique names, dropped afterwards; with `set_up`, already set up by the
    schema owner (store.roles, as `appeals store init-db` does). Skipped, saying why, when no
    PostgreSQL answers."""
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    n = uuid.uuid4().hex[:10]
    roles = PostgresRoles(f"appeals_roles_{n}", f"appeals_owner_{n}", f"appeals_app_{n}")
    _pg_exec(f"CREATE ROLE {roles.owner} LOGIN")
    try:
        _pg_exec(f"CREATE ROLE {roles.app} LOGIN")
        _pg_exec(f"CREATE DATABASE {roles.database} OWNER {roles.owner}")
        if set_up:
            from store.roles import set_up_database
            set_up_database(roles.owner_url, roles.app)
        yield roles
    finally:
        _pg_exec(f"DROP DATABASE IF EXISTS {roles.database} WITH (FORCE)")
        _pg_exec(f"DROP ROLE IF EXISTS {roles.app}")
        _pg_exec(f"DROP ROLE IF EXISTS {roles.owner}")
