"""Tamper and leak checks beyond tests/test_store.py (issue 8, item 4): reordered chain rows, and a
scan of a real `pg_dump` of the event store."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sqlalchemy import text

from store.app import verifier_without_key
from tests.backends import PG_ADMIN_URL, Backend, fresh_postgres_database, new_key
from tests.factories import DEFENDER_NAME, INCIDENT_TEXT
from tests.test_store import REF, every_event_kind

CHAIN_FIELDS = ("event_name", "event_hash", "prev_hash", "hash", "actor", "recorded_at")


def test_two_swapped_chain_rows_are_reported(backend: Backend) -> None:
    s = backend.open()
    every_event_kind(s)
    with s.engine.begin() as conn:
        rows = {r["version"]: dict(r) for r in conn.execute(text(
            "SELECT * FROM appeals_chain WHERE version IN (3, 4)")).mappings()}
        for version, other in ((3, 4), (4, 3)):
            sets = ", ".join(f"{f} = :{f}" for f in CHAIN_FIELDS)
            conn.execute(text(f"UPDATE appeals_chain SET {sets} WHERE version = :v"),  # noqa: S608
                         {**{f: rows[other][f] for f in CHAIN_FIELDS}, "v": version})
    s.close()
    report = verifier_without_key(backend.url).verify_reference(REF)
    assert (report.ok, report.broken_version) == (False, 3)


def test_a_pg_dump_of_the_event_store_holds_no_plaintext_names() -> None:
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    with fresh_postgres_database() as (url, name):
        backend = Backend("postgres", url, new_key(), pg_database=name)
        s = backend.open()
        every_event_kind(s)
        s.close()
        dump_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        dump = subprocess.run(["pg_dump", "--no-owner", dump_url], capture_output=True, check=True,
                              timeout=60).stdout
        assert b"appeals_events" in dump and len(dump) > 1000
        for needle in (DEFENDER_NAME, "Qwoxlandt", INCIDENT_TEXT, "Vrennick", "Initials only",
                       "Dalia Orvenne"):
            assert needle.encode() not in dump, needle
            assert needle.encode().hex().encode() not in dump, needle
