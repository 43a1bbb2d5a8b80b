"""The event store's connection pool survives dropped connections (pre-ping): after the database
server ends the store's connections, as a restart or an idle-connection reaper does, the next
command and read work on fresh connections instead of failing."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from store.app import CaseStore
from tests.backends import PG_ADMIN_URL, fresh_postgres_database, new_key, postgres_reason
from tests.factories import open_args

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store() -> Iterator[tuple[CaseStore, str]]:
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    with fresh_postgres_database() as (url, name):
        store = CaseStore(url, new_key())
        try:
            yield store, name
        finally:
            store.close()


def end_connections(database: str) -> int:
    """pg_terminate_backend for every connection to `database` but this one; how many."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


def test_the_store_works_on_after_the_server_drops_its_connections(
        pg_store: tuple[CaseStore, str]) -> None:
    store, database = pg_store
    store.open_case(**open_args("UA-2026-0101"))
    assert [r["reference"] for r in store.list_cases()] == ["UA-2026-0101"]
    assert end_connections(database) >= 1  # the pool's idle connection is gone
    assert [r["reference"] for r in store.list_cases()] == ["UA-2026-0101"]
    store.open_case(**open_args("UA-2026-0102"))
    assert end_connections(database) >= 1
    assert store.get("UA-2026-0102").reference == "UA-2026-0102"
    assert store.verify("UA-2026-0102").ok


def test_without_pre_ping_a_dropped_connection_fails_the_next_read(
        pg_store: tuple[CaseStore, str]) -> None:
    """The control: the same drop fails a read when the pool does not test its connections, so
    the test above shows the pre-ping at work."""
    from sqlalchemy import exc as sa_exc

    store, database = pg_store
    store.list_cases()
    store.engine.pool._pre_ping = False
    assert end_connections(database) >= 1
    with pytest.raises(sa_exc.OperationalError):
        store.list_cases()
